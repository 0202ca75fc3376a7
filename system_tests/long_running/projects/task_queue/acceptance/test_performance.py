"""Pipelined TQ.PUSH throughput, reported against the 50,000/s target and as a ratio to
`redis-benchmark` LPUSH against the real redis-server in the same run. A measurement: the case
fails only when replies are wrong or missing."""

import re
import shutil
import subprocess
import time

import pytest

from conftest import Raw, encode

TOTAL = 50_000
BATCH = 1_000
TARGET = 50_000  # REQUIREMENTS: 50,000 TQ.PUSH/s on one core with pipelining


@pytest.mark.severity("medium")
@pytest.mark.kind("performance")
def test_pipelined_push_throughput(rq_server, redis_port, measure):
    conn = Raw(rq_server.port, timeout=30)
    batch = b"".join(encode("TQ.PUSH", "bench", f"payload-{i % 100}") for i in range(BATCH))
    started = time.perf_counter()
    for _ in range(TOTAL // BATCH):
        conn.send(batch)
        for _ in range(BATCH):
            reply = conn.reply()
            assert reply.startswith(b"$"), f"TQ.PUSH replied {reply[:60]!r}"
    elapsed = time.perf_counter() - started
    conn.close()
    rate = TOTAL / elapsed
    measure("tq_push_per_sec", rate, "ops/s", target=TARGET,
            note=f"{TOTAL} pipelined TQ.PUSH in batches of {BATCH} over one connection")
    benchmark = shutil.which("redis-benchmark")
    if benchmark is None:
        measure("tq_push_vs_redis_lpush", None, "ratio", note="redis-benchmark is not installed (apt-get install redis-tools)")
        return
    out = subprocess.run(
        [benchmark, "-p", str(redis_port), "-t", "lpush", "-n", str(TOTAL), "-P", str(BATCH // 10), "-c", "1", "-q"],
        capture_output=True, text=True, timeout=120,
    ).stdout
    found = re.findall(r"LPUSH: ([\d.]+) requests per second", out.replace("\r", "\n"))
    if not found:
        measure("tq_push_vs_redis_lpush", None, "ratio", note=f"redis-benchmark printed no LPUSH figure: {out[-200:]}")
        return
    redis_rate = float(found[-1])
    measure("redis_lpush_per_sec", redis_rate, "ops/s", note="redis-benchmark -t lpush -c 1 -P 100 on the same machine")
    measure("tq_push_vs_redis_lpush", rate / redis_rate, "ratio", note="TQ.PUSH/s divided by Redis LPUSH/s")
