"""Durability (fsync `always`, the default): every acknowledged push survives kill -9, and a log
whose tail was cut short by a crash is replayed up to the cut."""

import os

import pytest

from conftest import connect as connect_port


def connect(server):
    return connect_port(server.port)


def drain(client, queue):
    payloads = []
    while True:
        got = client.execute_command("TQ.POP", queue)
        if got is None:
            return payloads
        payloads.append(got[1].decode())


@pytest.mark.severity("critical")
@pytest.mark.kind("durability")
def test_acknowledged_pushes_survive_kill_9(servers, tmp_path):
    data = tmp_path / "data"
    first = servers.start(data_dir=data)
    client = connect(first)
    pushed = [f"task-{i}" for i in range(300)]
    for payload in pushed:
        client.execute_command("TQ.PUSH", "durable", payload)
    done = client.execute_command("TQ.POP", "durable")
    assert client.execute_command("TQ.ACK", done[0]) == 1
    client.close()
    first.kill()
    second = servers.start(data_dir=data)
    client = connect(second)
    survived = drain(client, "durable")
    client.close()
    assert sorted(survived) == sorted(pushed[1:]), "every acknowledged push, and not the acked task"


@pytest.mark.severity("high")
@pytest.mark.kind("durability")
def test_graceful_restart_keeps_everything(servers, tmp_path):
    data = tmp_path / "data"
    first = servers.start(data_dir=data)
    client = connect(first)
    for i in range(50):
        client.execute_command("TQ.PUSH", "graceful", f"g{i}", "PRIORITY", i % 3)
    client.close()
    assert first.stop() is not None, "SIGTERM stops the server"
    second = servers.start(data_dir=data)
    client = connect(second)
    assert len(drain(client, "graceful")) == 50
    client.close()


@pytest.mark.severity("high")
@pytest.mark.kind("durability")
def test_a_truncated_log_tail_is_survived(servers, tmp_path):
    data = tmp_path / "data"
    first = servers.start(data_dir=data)
    client = connect(first)
    for i in range(100):
        client.execute_command("TQ.PUSH", "torn", f"t{i}")
    client.close()
    first.kill()
    files = [p for p in data.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert files, "the server wrote nothing into its data directory"
    newest = max(files, key=lambda p: (p.stat().st_mtime, p.stat().st_size))
    with open(newest, "r+b") as handle:
        handle.truncate(max(0, newest.stat().st_size - 3))
    second = servers.start(data_dir=data)
    client = connect(second)
    survived = drain(client, "torn")
    client.close()
    assert len(survived) >= 99, f"only {len(survived)} of 100 tasks after a torn tail"


@pytest.mark.severity("high")
@pytest.mark.kind("e2e")
def test_sigterm_stops_the_server(servers):
    server = servers.start()
    client = connect(server)
    assert client.ping()
    client.close()
    assert server.stop() is not None, "the server did not stop on SIGTERM"
    assert not server.alive()
