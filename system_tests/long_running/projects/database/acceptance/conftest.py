"""Fixtures for the MiniDB suite: the server the agents built (started per case with the
CONTRACT's start command), a line-protocol client, and SQLite (Python's sqlite3 module, the real
SQLite library) as the reference the logic files are compared with."""

import json
import math
import socket
import sqlite3
from pathlib import Path

import pytest


class Client:
    """One connection speaking the line protocol: a statement out, one JSON object back."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def close(self):
        self.file.close()
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)
        line = self.file.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        return json.loads(line)

    def q(self, sql):
        return self.send_raw(sql.encode() + b"\n")

    def ok(self, sql):
        answer = self.q(sql)
        assert "error" not in answer, f"{sql!r} failed: {answer}"
        return answer

    def rows(self, sql):
        return self.ok(sql)["rows"]


@pytest.fixture
def db(servers):
    """What the agents built, started for this case."""
    return servers.start()


@pytest.fixture
def client(db):
    conn = Client(db.port)
    yield conn
    conn.close()


def normalise(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, bytes):
        return value.decode()
    return value


def same_value(a, b):
    a, b = normalise(a), normalise(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not (
        isinstance(a, int) and isinstance(b, int)
    ):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b and type(a) is type(b)


def same_rows(got, expected, ordered):
    """Rows equal (REAL with tolerance); order-insensitive unless `ordered`."""
    if len(got) != len(expected):
        return False
    key = lambda row: json.dumps([normalise(v) for v in row], sort_keys=True)
    if not ordered:
        got, expected = sorted(got, key=key), sorted(expected, key=key)
    return all(
        len(g) == len(e) and all(same_value(x, y) for x, y in zip(g, e)) for g, e in zip(got, expected)
    )


def parse_logic(path):
    """A sqllogictest-style file: records separated by blank lines, each `statement ok`,
    `statement error` or `query` followed by one SQL statement; `#` lines are comments (the first
    `# severity:` and `# kind:` lines mark the case)."""
    records, meta = [], {}
    for block in Path(path).read_text().split("\n\n"):
        lines = []
        for line in block.strip().splitlines():
            if line.startswith("#"):
                if ":" in line:
                    name, _, value = line[1:].partition(":")
                    meta.setdefault(name.strip(), value.strip())
                continue
            lines.append(line)
        if not lines:
            continue
        records.append((lines[0].strip(), " ".join(l.strip() for l in lines[1:])))
    return records, meta


def run_reference(records):
    """SQLite's answers for each record: ("ok"|"error", rows)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    out = []
    for kind, sql in records:
        try:
            rows = [list(r) for r in conn.execute(sql).fetchall()]
            out.append(("ok", rows))
        except sqlite3.Error as err:
            out.append(("error", str(err)))
    conn.close()
    return out


LOGIC_DIR = Path(__file__).parent / "logic"
