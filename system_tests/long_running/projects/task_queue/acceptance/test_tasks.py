"""TQ.* semantics from REQUIREMENTS and CONTRACT, through redis-py."""

import threading
import time

import pytest

from conftest import connect, stats, wait_until


def push(client, queue, payload, *options):
    task_id = client.execute_command("TQ.PUSH", queue, payload, *options)
    assert isinstance(task_id, bytes) and task_id, f"TQ.PUSH replied {task_id!r}"
    return task_id


def pop(client, queue, *options):
    return client.execute_command("TQ.POP", queue, *options)


@pytest.mark.severity("critical")
@pytest.mark.kind("integration")
def test_push_pop_ack(client):
    task_id = push(client, "jobs", "hello")
    got = pop(client, "jobs")
    assert got is not None and [got[0], got[1]] == [task_id, b"hello"]
    assert client.execute_command("TQ.ACK", task_id) == 1
    assert client.execute_command("TQ.ACK", task_id) == 0, "a second ack completes nothing"
    assert pop(client, "jobs") is None
    assert stats(client, "jobs") == {"ready": 0, "delayed": 0, "leased": 0, "dead": 0}


@pytest.mark.severity("critical")
@pytest.mark.kind("integration")
def test_ids_are_unique(client):
    ids = [push(client, "ids", f"p{i}") for i in range(200)]
    assert len(set(ids)) == 200


@pytest.mark.severity("critical")
@pytest.mark.kind("integration")
def test_priorities_then_fifo(client):
    for payload, priority in [("low-1", 0), ("high-1", 10), ("low-2", 0), ("mid", 5), ("high-2", 10), ("neg", -3)]:
        push(client, "prio", payload, "PRIORITY", priority)
    order = [pop(client, "prio")[1].decode() for _ in range(6)]
    assert order == ["high-1", "high-2", "mid", "low-1", "low-2", "neg"]


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_delayed_tasks_wait(client):
    push(client, "later", "delayed", "DELAY", 600)
    push(client, "later", "now")
    assert pop(client, "later")[1] == b"now"
    assert pop(client, "later") is None, "a delayed task is not ready yet"
    assert stats(client, "later")["delayed"] == 1
    assert wait_until(lambda: stats(client, "later")["ready"] == 1, timeout=3)
    assert pop(client, "later")[1] == b"delayed"


@pytest.mark.severity("critical")
@pytest.mark.kind("integration")
def test_expired_lease_is_redelivered(client):
    task_id = push(client, "lease", "work")
    assert pop(client, "lease", "LEASE", 300)[0] == task_id
    assert pop(client, "lease") is None, "a leased task is invisible"
    assert stats(client, "lease")["leased"] == 1
    time.sleep(0.5)
    again = pop(client, "lease", "LEASE", 300)
    assert again is not None and again[0] == task_id
    assert client.execute_command("TQ.ACK", task_id) == 1


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_nack_redelivers_and_counts(client):
    task_id = push(client, "nack", "work")
    pop(client, "nack")
    assert client.execute_command("TQ.NACK", task_id) == 1
    assert client.execute_command("TQ.NACK", task_id) == 0, "not leased any more"
    assert pop(client, "nack")[0] == task_id
    info = client.info()
    assert info["tasks_redelivered"] >= 1


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_max_deliveries_then_dead_letter_queue(client):
    task_id = push(client, "poison", "bad")
    for _ in range(3):
        got = pop(client, "poison", "LEASE", 5000)
        assert got is not None and got[0] == task_id
        assert client.execute_command("TQ.NACK", task_id) == 1
    assert pop(client, "poison") is None, "after 3 deliveries the task is dead"
    assert stats(client, "poison")["dead"] == 1
    dead = pop(client, "poison:dead")
    assert dead is not None and [dead[0], dead[1]] == [task_id, b"bad"]
    assert client.info()["tasks_dead_lettered"] == 1


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_bpop_times_out_and_wakes_up(client, rq_server):
    started = time.monotonic()
    assert client.execute_command("TQ.BPOP", "empty", "0.5") is None
    waited = time.monotonic() - started
    assert 0.4 <= waited < 3.0, f"TQ.BPOP with 0.5 s returned after {waited:.2f} s"

    other = connect(rq_server.port)
    result = {}

    def blocked():
        result["value"] = client.execute_command("TQ.BPOP", "wake", "5")
        result["at"] = time.monotonic()

    waiter = threading.Thread(target=blocked)
    waiter.start()
    time.sleep(0.3)
    pushed_at = time.monotonic()
    task_id = push(other, "wake", "hello")
    waiter.join(6)
    assert result.get("value") is not None and result["value"][0] == task_id
    assert result["at"] - pushed_at < 1.0, "the blocked pop wakes up when a task arrives"
    other.close()


@pytest.mark.severity("medium")
@pytest.mark.kind("integration")
def test_info_counters(client):
    before = client.info()
    for key in ("tasks_pushed", "tasks_acked", "tasks_redelivered", "tasks_dead_lettered", "connected_clients"):
        assert key in before, f"INFO has no {key}"
    ids = [push(client, "info", f"p{i}") for i in range(5)]
    for _ in range(2):
        task = pop(client, "info")
        client.execute_command("TQ.ACK", task[0])
    after = client.info()
    assert after["tasks_pushed"] - before["tasks_pushed"] == 5
    assert after["tasks_acked"] - before["tasks_acked"] == 2
    assert after["connected_clients"] >= 1
    assert len(ids) == 5


@pytest.mark.severity("medium")
@pytest.mark.kind("integration")
def test_stats_count_each_state(client):
    push(client, "st", "a")
    push(client, "st", "b")
    push(client, "st", "c", "DELAY", 60000)
    pop(client, "st")
    assert stats(client, "st") == {"ready": 1, "delayed": 1, "leased": 1, "dead": 0}
