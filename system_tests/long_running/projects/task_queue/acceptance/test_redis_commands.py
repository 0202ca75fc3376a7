"""The Redis commands RedQueue shares with Redis, compared byte for byte with a real
redis-server on the same command sequences (CONTRACT: "reply byte for byte as Redis 7 does")."""

import pytest

from conftest import encode

SEQUENCES = {
    "ping": [("PING",), ("PING", "hello"), ("ping",), ("PING", "")],
    "push_and_pop": [
        ("LPUSH", "k", "a", "b", "c"),
        ("RPUSH", "k", "d"),
        ("LLEN", "k"),
        ("LPOP", "k"),
        ("RPOP", "k"),
        ("LLEN", "k"),
        ("LPOP", "k"),
        ("LPOP", "k"),
        ("LPOP", "k"),
        ("LLEN", "k"),
        ("RPOP", "k"),
    ],
    "counts": [
        ("RPUSH", "c", "1", "2", "3", "4", "5"),
        ("LPOP", "c", "2"),
        ("RPOP", "c", "2"),
        ("LPOP", "c", "10"),
        ("LPOP", "c", "2"),
        ("LPOP", "missing"),
        ("RPOP", "missing", "3"),
        ("LLEN", "missing"),
    ],
    "binary_and_empty_values": [
        ("RPUSH", "b", b"\x00\xff\r\n", ""),
        ("LPOP", "b"),
        ("LPOP", "b"),
        ("LLEN", "b"),
    ],
    "case_insensitive": [("lpush", "ci", "x"), ("LlEn", "ci"), ("rpop", "ci")],
}

WRONG_ARITY = [("PING", "a", "b"), ("LPUSH", "k"), ("RPUSH",), ("LPOP",), ("RPOP", "k", "1", "2"), ("LLEN",), ("LLEN", "a", "b")]
BAD_COUNTS = [("LPOP", "k", "-1"), ("RPOP", "k", "x")]


def run(conn, sequence):
    return [conn.call(*command) for command in sequence]


@pytest.mark.severity("critical")
@pytest.mark.kind("integration")
@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_sequences_match_redis(name, rq, reference):
    expected = run(reference, SEQUENCES[name])
    assert run(rq, SEQUENCES[name]) == expected


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_wrong_arity_errors_match_redis(rq, reference):
    for command in WRONG_ARITY:
        assert rq.call(*command) == reference.call(*command), command


@pytest.mark.severity("medium")
@pytest.mark.kind("integration")
def test_bad_counts_match_redis(rq, reference):
    rq.call("RPUSH", "k", "v")
    reference.call("RPUSH", "k", "v")
    for command in BAD_COUNTS:
        assert rq.call(*command) == reference.call(*command), command


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_unknown_command_is_an_error(rq):
    assert rq.call("NOSUCHCOMMAND", "a").startswith(b"-ERR unknown command")
    assert rq.call("PING") == b"+PONG\r\n", "the connection still works"


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_pipelined_batch_matches_redis(rq, reference):
    batch = []
    for i in range(200):
        batch.append(("RPUSH", "p", f"v{i}"))
        if i % 3 == 0:
            batch.append(("LPOP", "p"))
        if i % 7 == 0:
            batch.append(("LLEN", "p"))
    batch.append(("LPUSH",))
    batch.append(("PING",))
    payload = b"".join(encode(*c) for c in batch)
    rq.send(payload)
    reference.send(payload)
    for command in batch:
        assert rq.reply() == reference.reply(), command


@pytest.mark.severity("medium")
@pytest.mark.kind("integration")
def test_inline_commands_match_redis(rq, reference):
    for line in (b"PING\r\n", b"RPUSH inline a b\r\n", b"LLEN inline\r\n", b"LPOP inline\r\n"):
        rq.send(line)
        reference.send(line)
        assert rq.reply() == reference.reply(), line


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_lists_and_task_queues_share_the_key_space(rq):
    wrongtype = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    rq.call("RPUSH", "alist", "x")
    assert rq.call("TQ.PUSH", "alist", "payload") == wrongtype
    assert rq.call("TQ.PUSH", "aqueue", "payload").startswith(b"$")
    assert rq.call("LPUSH", "aqueue", "x") == wrongtype
    assert rq.call("LLEN", "aqueue") == wrongtype
