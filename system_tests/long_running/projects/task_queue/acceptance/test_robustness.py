"""Malformed RESP never crashes the server; 1,000 clients at once are served."""

import asyncio
import random
import socket

import pytest

from conftest import Raw, encode

FRAMES = [
    b"*abc\r\n",
    b"*2\r\n$4\r\nPING\r\n$-5\r\n",
    b"*1\r\n$999999999999\r\n",
    b"*1\r\n$4\r\nPINGXX\r\n",
    b"*-7\r\n",
    b"$\r\n",
    b"*3\r\n:1\r\n:2\r\n:3\r\n",
    b"\x00\x01\x02\xff\xfe\r\n",
    b"*1\r\n$3\r\nPING\r\n",
    b"*100000000\r\n",
    b"\r\n\r\n\r\n",
    b"*2\r\n$7\r\nTQ.PUSH\r\n",
]


@pytest.mark.severity("critical")
@pytest.mark.kind("robustness")
def test_malformed_frames_never_crash_it(rq_server):
    rng = random.Random(20261129)
    frames = list(FRAMES)
    for _ in range(60):
        frames.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        prefix = rng.choice([b"*", b"$", b"*1\r\n$", b"*2\r\n$3\r\nfoo\r\n$"])
        frames.append(prefix + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) + b"\r\n")
    for frame in frames:
        try:
            conn = Raw(rq_server.port, timeout=1.0)
            conn.send(frame)
            conn.sock.shutdown(socket.SHUT_WR)  # end of input: the server answers or closes
            try:
                while conn.sock.recv(4096):
                    pass
            except OSError:
                pass
            conn.close()
        except OSError:
            pass
        assert rq_server.alive(), f"the server died on {frame[:60]!r}\n{rq_server.tail()}"
    check = Raw(rq_server.port)
    assert check.call("PING") == b"+PONG\r\n"
    check.close()


@pytest.mark.severity("high")
@pytest.mark.kind("robustness")
def test_a_protocol_error_on_one_connection_leaves_others_alone(rq_server):
    good = Raw(rq_server.port)
    assert good.call("RPUSH", "keep", "v") == b":1\r\n"
    bad = Raw(rq_server.port)
    bad.send(b"*1\r\n$x\r\n")
    try:
        reply = bad.reply()
        assert reply.startswith(b"-"), f"a malformed request got {reply!r}"
    except (ConnectionError, OSError):
        pass  # closing the broken connection is allowed
    bad.close()
    assert good.call("LLEN", "keep") == b":1\r\n"
    good.close()


@pytest.mark.severity("high")
@pytest.mark.kind("robustness")
def test_a_thousand_concurrent_clients(rq_server):
    async def one(i):
        reader, writer = await asyncio.open_connection("127.0.0.1", rq_server.port)
        return reader, writer

    async def scenario():
        connections = []
        for start in range(0, 1000, 100):
            connections += await asyncio.gather(*(one(i) for i in range(start, start + 100)))
        # Every client is connected at once; each now pushes a task and pings.
        for i, (_, writer) in enumerate(connections):
            writer.write(encode("TQ.PUSH", "crowd", f"c{i}") + encode("PING"))
        replies = 0
        for reader, writer in connections:
            first = await asyncio.wait_for(reader.readline(), 20)
            assert first.startswith(b"$"), first
            await asyncio.wait_for(reader.readline(), 20)  # the id
            assert await asyncio.wait_for(reader.readline(), 20) == b"+PONG\r\n"
            replies += 1
        info_conn = Raw(rq_server.port)
        info = info_conn.call("INFO").decode()
        info_conn.close()
        for _, writer in connections:
            writer.close()
        return replies, info

    replies, info = asyncio.run(scenario())
    assert replies == 1000
    clients = [int(line.split(":")[1]) for line in info.splitlines() if line.startswith("connected_clients:")]
    assert clients and clients[0] >= 1000, f"INFO connected_clients while 1,000 were connected: {clients}"
