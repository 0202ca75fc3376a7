"""sqllogictest-style files (`logic/*.test`) run over the line protocol and through SQLite on the
same statements; results compared (order-insensitive unless the query has ORDER BY; REAL with
a tolerance)."""

import pytest

from conftest import LOGIC_DIR, parse_logic, run_reference, same_rows


def logic_cases():
    for path in sorted(LOGIC_DIR.glob("*.test")):
        _, meta = parse_logic(path)
        marks = [pytest.mark.severity(meta.get("severity", "high")), pytest.mark.kind("integration")]
        yield pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", list(logic_cases()))
def test_logic_file_matches_sqlite(path, client):
    records, _ = parse_logic(path)
    expected = run_reference(records)
    for (kind, sql), (outcome, reference) in zip(records, expected):
        answer = client.q(sql)
        if kind == "statement ok":
            assert outcome == "ok", f"the logic file is wrong: SQLite failed {sql!r}: {reference}"
            assert "error" not in answer, f"{sql!r} failed: {answer}"
        elif kind == "statement error":
            assert outcome == "error", f"the logic file is wrong: SQLite accepted {sql!r}"
            assert "error" in answer, f"{sql!r} should fail, got {answer}"
        else:
            assert "error" not in answer, f"{sql!r} failed: {answer}"
            ordered = "ORDER BY" in sql.upper()
            assert same_rows(answer["rows"], reference, ordered), (
                f"{sql!r}\n got      {answer['rows']}\n expected {reference} (SQLite)"
            )
