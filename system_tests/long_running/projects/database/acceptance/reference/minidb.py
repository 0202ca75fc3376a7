#!/usr/bin/env python3
"""Reference MiniDB for the acceptance suite (not a product): the CONTRACT's line protocol as an
adapter over Python's sqlite3 (WAL, synchronous=FULL), so the suite can be checked against an
implementation that passes it. `./target/release/minidb --port PORT --data-dir DIR`, or
`--data-dir DIR --exec "SQL"`."""

import argparse
import asyncio
import json
import os
import re
import signal
import sqlite3
import sys

sqlite3.register_converter("BOOLEAN", lambda raw: raw not in (b"0", b""))
sqlite3.register_adapter(bool, int)

DML = re.compile(r"^\s*(INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?!QUERY\b)", re.IGNORECASE)
NEAR = re.compile(r'near "([^"]*)"')


def open_db(data_dir):
    os.makedirs(data_dir, exist_ok=True)
    conn = sqlite3.connect(
        os.path.join(data_dir, "minidb.sqlite"),
        isolation_level=None,
        detect_types=sqlite3.PARSE_DECLTYPES,
        check_same_thread=False,
        timeout=5,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def position_of(sql, message):
    """1-based column of the token sqlite names in its message (`near "X"`), else 1."""
    found = NEAR.search(message)
    if found and found.group(1):
        index = sql.find(found.group(1))
        if index >= 0:
            return index + 1
    if "incomplete input" in message:
        return len(sql) + 1
    return 1


def value(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


def execute(conn, line):
    sql = line.strip()
    if sql.endswith(";"):
        sql = sql[:-1]
    if not sql:
        return {"error": "empty statement", "position": 1}
    if EXPLAIN.match(sql):
        sql_plan = "EXPLAIN QUERY PLAN " + EXPLAIN.sub("", sql, count=1)
        try:
            rows = conn.execute(sql_plan).fetchall()
        except sqlite3.Error as err:
            return {"error": str(err), "position": position_of(sql, str(err))}
        return {"columns": ["plan"], "rows": [[row[3]] for row in rows]}
    try:
        cursor = conn.execute(sql)
        rows = cursor.fetchall()
    except sqlite3.Error as err:
        return {"error": str(err), "position": position_of(sql, str(err))}
    if cursor.description:
        columns = [d[0] for d in cursor.description]
        return {"columns": columns, "rows": [[value(v) for v in row] for row in rows]}
    answer = {"columns": [], "rows": []}
    if DML.match(sql):
        answer["affected"] = cursor.rowcount
    return answer


async def serve(port, data_dir):
    async def handle(reader, writer):
        conn = open_db(data_dir)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                text = line.decode("utf-8", "replace")
                if not text.strip():
                    continue
                answer = execute(conn, text)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            conn.close()
            writer.close()

    open_db(data_dir).close()
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=1 << 20)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--exec", dest="statement")
    args = parser.parse_args()
    if args.statement is not None:
        conn = open_db(args.data_dir)
        print(json.dumps(execute(conn, args.statement)))
        conn.close()
        return 0
    if args.port is None:
        parser.error("--port or --exec is required")
    asyncio.run(serve(args.port, args.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
