"""Fixtures for the RedQueue suite: the server the agents built (started per case with the
CONTRACT's start command), a real `redis-server` as the reference for the Redis commands, and a
raw RESP connection that returns replies byte for byte."""

import os
import resource
import shutil
import socket
import subprocess
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from megatest_acceptance import free_port, wait_for_port

# 1,000 concurrent clients need more descriptors than the usual soft limit (the started server
# inherits the raised limit).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < 4096:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, _hard), _hard))


def encode(*args):
    """A RESP2 request: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Raw:
    """A plain socket speaking RESP; replies are returned as the exact bytes received."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def _line_end(self, pos):
        while True:
            end = self.buffer.find(b"\r\n", pos)
            if end >= 0:
                return end
            self._fill()

    def _reply_end(self, pos):
        end = self._line_end(pos)
        kind = self.buffer[pos:pos + 1]
        if kind in (b"+", b"-", b":"):
            return end + 2
        if kind == b"$":
            size = int(self.buffer[pos + 1:end])
            if size < 0:
                return end + 2
            while len(self.buffer) < end + 2 + size + 2:
                self._fill()
            return end + 2 + size + 2
        if kind == b"*":
            count = int(self.buffer[pos + 1:end])
            pos = end + 2
            for _ in range(max(count, 0)):
                pos = self._reply_end(pos)
            return pos
        raise AssertionError(f"not a RESP reply: {self.buffer[pos:pos + 40]!r}")

    def reply(self):
        """The next complete reply, as raw bytes."""
        if not self.buffer:
            self._fill()
        end = self._reply_end(0)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def call(self, *args):
        self.send(encode(*args))
        return self.reply()


def connect(port, timeout=10):
    """redis-py speaking RESP2 (as the CONTRACT requires), without the RESP3 HELLO newer clients
    send first (its CLIENT SETINFO gets an unknown-command error, which redis-py ignores)."""
    # No retries: a reply that does not come within `timeout` is a failure, not a reason to ask
    # again (redis-py retries three times with back-off by default).
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout, protocol=2,
                       retry=Retry(NoBackoff(), 0))


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory):
    """A real redis-server (the Debian package) on its own port, without persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)", pytrace=False)
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_for_port(port):
        proc.kill()
        pytest.fail("redis-server did not start", pytrace=False)
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def reference(redis_port):
    """A raw connection to the real Redis, flushed."""
    conn = Raw(redis_port)
    conn.call("FLUSHALL")
    yield conn
    conn.close()


@pytest.fixture
def rq_server(servers):
    """What the agents built, started for this case (fsync `always`, the default)."""
    return servers.start()


@pytest.fixture
def rq(rq_server):
    """A raw connection to the started RedQueue."""
    conn = Raw(rq_server.port)
    yield conn
    conn.close()


@pytest.fixture
def client(rq_server):
    """redis-py against the started RedQueue (bytes, no decoding)."""
    conn = connect(rq_server.port)
    yield conn
    conn.close()


def stats(client, queue):
    """TQ.STATS as a dict of str → int."""
    flat = client.execute_command("TQ.STATS", queue)
    return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
