"""The CONTRACT's protocol details, errors with positions, transactions, isolation, EXPLAIN and
crash recovery."""

import random
import subprocess

import pytest

from conftest import Client


def setup_table(client, rows=5):
    client.ok("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, n INTEGER)")
    for i in range(1, rows + 1):
        client.ok(f"INSERT INTO t VALUES ({i}, 'v{i}', {i * 10})")


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_answers_have_the_contract_shape(client):
    created = client.ok("CREATE TABLE s (id INTEGER PRIMARY KEY, name TEXT, ok BOOLEAN)")
    assert created["columns"] == [] and created["rows"] == []
    assert client.ok("INSERT INTO s VALUES (1, 'a', TRUE)")["affected"] == 1
    client.ok("INSERT INTO s VALUES (2, 'b', FALSE)")
    client.ok("INSERT INTO s VALUES (3, NULL, TRUE)")
    assert client.ok("UPDATE s SET name = 'x' WHERE ok = TRUE")["affected"] == 2
    answer = client.ok("SELECT id, name, ok FROM s ORDER BY id")
    assert answer["columns"] == ["id", "name", "ok"]
    assert answer["rows"] == [[1, "x", True], [2, "b", False], [3, "x", True]]
    assert all(type(row[2]) is bool for row in answer["rows"]), f"BOOLEAN is true/false: {answer['rows']}"
    assert client.ok("DELETE FROM s WHERE id > 1")["affected"] == 2
    assert client.ok("SELECT COUNT(*) FROM s")["rows"] == [[1]]


@pytest.mark.severity("high")
@pytest.mark.kind("robustness")
def test_malformed_sql_is_an_error_with_a_position(client):
    setup_table(client)
    for sql in ["SELEC * FROM t", "SELECT * FROM t WHERE", "INSERT INTO t VALUES (1,", "CREATE TABLE (a INTEGER)",
                "SELECT id FROM t ORDER", "UPDATE t SET WHERE id = 1", ")))", "DELETE t"]:
        answer = client.q(sql)
        assert "error" in answer and answer["error"], f"{sql!r} got {answer}"
        position = answer.get("position")
        assert isinstance(position, int) and 1 <= position <= len(sql) + 1, f"{sql!r}: position {position!r}"
    assert client.q("SELEC * FROM t")["position"] == 1, "the first token does not fit"
    assert client.rows("SELECT COUNT(*) FROM t") == [[5]], "the connection stays usable"


@pytest.mark.severity("critical")
@pytest.mark.kind("robustness")
def test_random_input_never_crashes_it(db, client):
    setup_table(client)
    rng = random.Random(20261129)
    words = ["SELECT", "FROM", "WHERE", "INSERT", "INTO", "VALUES", "(", ")", ",", "'", "t", "id", "*", "=", "<",
             "ORDER", "BY", "GROUP", "JOIN", "ON", "NULL", "1", "-", "9999999999999999999999", "''", "\\", "BEGIN",
             "COMMIT", "ROLLBACK", "EXPLAIN", "CREATE", "INDEX", "DROP", "TABLE", "é", "\x01", ";", "AND", "OR"]
    for _ in range(200):
        sql = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 12)))
        answer = client.q(sql)
        assert isinstance(answer, dict) and ("error" in answer or "rows" in answer), f"{sql!r}: {answer}"
        assert db.alive(), f"the server died on {sql!r}\n{db.tail()}"
    client.q("ROLLBACK")
    other = Client(db.port)
    assert other.ok("SELECT COUNT(*) FROM t")["rows"], "another connection is still served"
    other.close()
    assert db.alive()


@pytest.mark.severity("critical")
@pytest.mark.kind("integration")
def test_rollback_and_commit(client):
    setup_table(client, rows=2)
    client.ok("BEGIN")
    client.ok("INSERT INTO t VALUES (3, 'v3', 30)")
    client.ok("DELETE FROM t WHERE id = 1")
    assert client.rows("SELECT COUNT(*) FROM t") == [[2]]
    client.ok("ROLLBACK")
    assert client.rows("SELECT id FROM t ORDER BY id") == [[1], [2]]
    client.ok("BEGIN")
    client.ok("INSERT INTO t VALUES (3, 'v3', 30)")
    client.ok("COMMIT")
    assert client.rows("SELECT id FROM t ORDER BY id") == [[1], [2], [3]]


@pytest.mark.severity("high")
@pytest.mark.kind("integration")
def test_other_connections_see_only_committed_changes(db, client):
    setup_table(client, rows=2)
    reader = Client(db.port)
    client.ok("BEGIN")
    client.ok("INSERT INTO t VALUES (3, 'v3', 30)")
    assert reader.rows("SELECT COUNT(*) FROM t") == [[2]], "an uncommitted insert is visible"
    client.ok("COMMIT")
    assert reader.rows("SELECT COUNT(*) FROM t") == [[3]]
    reader.close()


@pytest.mark.severity("medium")
@pytest.mark.kind("integration")
def test_explain_names_the_index_for_equality_and_range(client):
    client.ok("CREATE TABLE e (id INTEGER PRIMARY KEY, age INTEGER NOT NULL, name TEXT)")
    for i in range(1, 50):
        client.ok(f"INSERT INTO e VALUES ({i}, {i % 17}, 'n{i}')")
    client.ok("CREATE INDEX e_age ON e (age)")
    for sql in ["EXPLAIN SELECT name FROM e WHERE age = 5", "EXPLAIN SELECT name FROM e WHERE age > 10",
                "EXPLAIN SELECT name FROM e WHERE age >= 3 AND age < 6"]:
        answer = client.ok(sql)
        plan = " ".join(str(cell) for row in answer["rows"] for cell in row)
        assert "e_age" in plan, f"{sql}: the plan does not name the index: {plan!r}"


@pytest.mark.severity("critical")
@pytest.mark.kind("durability")
def test_kill_9_keeps_committed_rows_and_drops_uncommitted(servers, tmp_path):
    data = tmp_path / "data"
    first = servers.start(data_dir=data)
    client = Client(first.port)
    setup_table(client, rows=20)
    client.ok("BEGIN")
    client.ok("INSERT INTO t VALUES (100, 'committed', 1)")
    client.ok("COMMIT")
    client.ok("BEGIN")
    client.ok("INSERT INTO t VALUES (200, 'uncommitted', 2)")
    client.ok("DELETE FROM t WHERE id <= 10")
    first.kill()
    client.close()
    second = servers.start(data_dir=data)
    client = Client(second.port)
    ids = [row[0] for row in client.rows("SELECT id FROM t ORDER BY id")]
    client.close()
    assert 100 in ids, "a committed row was lost"
    assert 200 not in ids, "an uncommitted row survived"
    assert ids[:10] == list(range(1, 11)), "an uncommitted delete survived"
    assert len(ids) == 21


@pytest.mark.severity("high")
@pytest.mark.kind("e2e")
def test_exec_mode_sees_what_the_server_committed(servers, project, tmp_path):
    data = tmp_path / "data"
    server = servers.start(data_dir=data)
    client = Client(server.port)
    setup_table(client, rows=3)
    client.close()
    assert server.stop() is not None, "the server did not stop on SIGTERM"
    done = project.run(["./target/release/minidb", "--data-dir", str(data), "--exec", "SELECT v FROM t ORDER BY id"])
    assert done.returncode == 0, done.stderr[-500:]
    import json

    assert json.loads(done.stdout.strip().splitlines()[-1])["rows"] == [["v1"], ["v2"], ["v3"]]


@pytest.mark.severity("medium")
@pytest.mark.kind("robustness")
def test_many_concurrent_readers(db, client):
    setup_table(client, rows=50)
    readers = [Client(db.port) for _ in range(30)]
    for reader in readers:
        reader.sock.sendall(b"SELECT SUM(n) FROM t\n")
    for reader in readers:
        import json

        assert json.loads(reader.file.readline())["rows"] == [[sum(i * 10 for i in range(1, 51))]]
        reader.close()
