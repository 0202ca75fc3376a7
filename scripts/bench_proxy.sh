#!/usr/bin/env bash
# Added latency and throughput of megatest's metering proxy against LiteLLM's proxy, on the same
# fake upstream (fixed latency) and the same open-loop load, streaming and not.
#
#   scripts/bench_proxy.sh            # RPS=500 BENCH_SECONDS=10 ROUNDS=5 UPSTREAM_LATENCY_MS=20
#   SKIP_LITELLM=1 scripts/bench_proxy.sh   # megatest only (quick; prints ratio=nan)
#   NULL_PROXY=1 scripts/bench_proxy.sh     # also examples/null_proxy.rs: the bare HTTP hop
#
# Added latency = percentile through a proxy − the same percentile straight to the upstream, over
# the samples of all rounds pooled (BENCH_SECONDS per target and mode, in ROUNDS interleaved runs).
# LiteLLM (PyPI litellm[proxy]) is installed into target/bench-venv on first use.
# The last line reads ratio=<megatest added p50 / LiteLLM added p50> (non-streaming).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RPS="${RPS:-500}"
BENCH_SECONDS="${BENCH_SECONDS:-10}"
UPSTREAM_LATENCY_MS="${UPSTREAM_LATENCY_MS:-20}"
KEY=sk-bench-upstream

cargo build --release --quiet --bin megatest --example fake_upstream --example proxy_load --example null_proxy
BIN="$ROOT/target/release"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_for() { # wait_for <seconds> <command…>
    local limit=$1; shift
    for _ in $(seq 1 $((limit * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "bench_proxy: timed out waiting for: $*" >&2; return 1
}

# 1. The upstream.
"$BIN/examples/fake_upstream" --latency-ms "$UPSTREAM_LATENCY_MS" --key "$KEY" > "$WORK/fake.out" &
PIDS+=($!)
wait_for 10 grep -q listening "$WORK/fake.out"
UPSTREAM="$(sed -n 's/^listening //p' "$WORK/fake.out")/v1"

# 2. megatest: a session whose one agent sleeps; the load uses that agent's key.
mkdir -p "$WORK/spec"
cat > "$WORK/spec/spec.toml" <<TOML
name = "bench"
description = "proxy benchmark"
language = "none"
[commands]
build = "true"
test = "true"
[[tasks]]
id = "hold"
phase = "bench"
role = "Coder"
title = "hold the session open"
prompt = "-"
TOML
cat > "$WORK/config.toml" <<TOML
[session]
duration_hours = 1
agent_count = 2
[agent]
step_timeout_secs = 3600
concurrent_agents = 2
roles = ["Coder"]
max_total_agents = 2
[limits]
total_token_budget = 1000000000000
tokens_per_agent_per_hour = 1000000000000
tool_calls_per_agent_per_hour = 1000000000
[monitoring]
log_level = "warn"
health_check_interval = ${BENCH_HEALTH_CHECK_SECS:-30}
[project]
spec_dir = "$WORK/spec"
[[phases]]
name = "bench"
duration_minutes = 60
[model]
provider = "openai-compatible"
base_url = "$UPSTREAM"
name = "gpt-fake"
api_key_env = "BENCH_UPSTREAM_KEY"
[agents]
kind = "command"
command = "sleep 86400"
TOML
BENCH_UPSTREAM_KEY="$KEY" "$BIN/megatest" run "$WORK/config.toml" --runs-dir "$WORK/runs" --session-id bench --api-addr 127.0.0.1:0 2> "$WORK/megatest.err" &
PIDS+=($!)
wait_for 20 test -f "$WORK/runs/bench/agents.toml"
MEGATEST_URL="$(sed -n 's/^base_url = "\(.*\)"$/\1/p' "$WORK/runs/bench/agents.toml" | head -1)"
MEGATEST_KEY="$(sed -n 's/^api_key = "\(.*\)"$/\1/p' "$WORK/runs/bench/agents.toml" | head -1)"

# 3. LiteLLM, in its own venv (it pins many packages).
LITELLM_KEY=sk-bench-litellm-master
LITELLM_URL=""
if [ -z "${SKIP_LITELLM:-}" ]; then
VENV="$ROOT/target/bench-venv"
if [ ! -x "$VENV/bin/litellm" ]; then
    echo "installing litellm[proxy] into $VENV (once)…" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check 'litellm[proxy]'
fi
LITELLM_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$WORK/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-fake
    litellm_params:
      model: openai/gpt-fake
      api_base: $UPSTREAM
      api_key: $KEY
litellm_settings:
  drop_params: true
YAML
# Like megatest's per-agent keys, LiteLLM authenticates every call (it refuses to start without).
LITELLM_MASTER_KEY="$LITELLM_KEY" LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/litellm" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" > "$WORK/litellm.log" 2>&1 &
PIDS+=($!)
wait_for 90 python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$LITELLM_PORT/health/liveliness', timeout=1)" \
    || { tail -20 "$WORK/litellm.log" >&2; exit 1; }
LITELLM_URL="http://127.0.0.1:$LITELLM_PORT/v1"
fi
TARGETS="direct megatest"
if [ -n "${NULL_PROXY:-}" ]; then
"$BIN/examples/null_proxy" "$UPSTREAM" "$KEY" > "$WORK/null.out" &
PIDS+=($!)
wait_for 10 grep -q listening "$WORK/null.out"
NULL_URL="$(sed -n 's/^listening //p' "$WORK/null.out")/v1"
TARGETS="$TARGETS null"
fi
[ -n "$LITELLM_URL" ] && TARGETS="$TARGETS litellm"

# 4. The runs: ROUNDS interleaved rounds per mode (direct, megatest, LiteLLM, rotating which goes
#    first), each run BENCH_SECONDS/ROUNDS long after its own warm-up; every sample is kept and the
#    percentiles are taken over the pooled samples, so drift of the machine hits all targets alike.
ROUNDS="${ROUNDS:-5}"
ROUND_SECONDS="$(python3 -c "print($BENCH_SECONDS / $ROUNDS)")"
url_of() { case $1 in null) echo "$NULL_URL" ;; direct) echo "$UPSTREAM" ;; megatest) echo "$MEGATEST_URL" ;; litellm) echo "$LITELLM_URL" ;; esac; }
key_of() { case $1 in null) echo "$KEY" ;; direct) echo "$KEY" ;; megatest) echo "$MEGATEST_KEY" ;; litellm) echo "$LITELLM_KEY" ;; esac; }
: > "$WORK/results.jsonl"
for mode in json stream; do
    flag=""; [ "$mode" = stream ] && flag="--stream"
    set -- $TARGETS
    for round in $(seq 1 "$ROUNDS"); do
        for name in "$@"; do
            line="$("$BIN/examples/proxy_load" --url "$(url_of "$name")" --key "$(key_of "$name")" --rps "$RPS" \
                --seconds "$ROUND_SECONDS" --warmup-seconds 0.5 --samples "$WORK/samples-$name-$mode" $flag)"
            echo "{\"target\": \"$name\", \"mode\": \"$mode\", \"round\": $round, \"result\": $line}" >> "$WORK/results.jsonl"
            echo "round $round $mode $name: $line" >&2
        done
        first=$1; shift; set -- "$@" "$first"
    done
done

python3 - "$WORK" "$RPS" "$UPSTREAM_LATENCY_MS" "$ROUNDS" "$ROUND_SECONDS" <<'PY'
import json, statistics, sys
work, rps, latency, rounds, round_secs = sys.argv[1:6]
rows = [json.loads(l) for l in open(f"{work}/results.jsonl")]

def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    rank = round(p / 100 * (len(sorted_values) - 1))
    return sorted_values[min(rank, len(sorted_values) - 1)]

def samples(target, mode):
    try:
        fields = open(f"{work}/samples-{target}-{mode}").read().split()
    except FileNotFoundError:
        return [], []
    latencies = sorted(float(v) for v in fields[0::2])
    overheads = sorted(float(v) for v in fields[1::2] if v != "-")
    return latencies, overheads

print(f"proxy benchmark: {rps} req/s open loop, upstream latency {latency} ms, "
      f"{rounds} interleaved rounds of {float(round_secs):g} s per target, 2-core machine")
print(f"{'mode':7} {'target':9} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} "
      f"{'added p50 per round min/med/max':>32} {'req/s':>7} {'errors':>6}")
ratio = float("nan")
for mode in ("json", "stream"):
    base, _ = samples("direct", mode)
    added = {}
    for target in ("direct", "megatest", "litellm", "null"):
        lat, over = samples(target, mode)
        runs = [r for r in rows if r["target"] == target and r["mode"] == mode]
        if not runs:
            continue
        a50, a99 = pct(lat, 50) - pct(base, 50), pct(lat, 99) - pct(base, 99)
        added[target] = a50
        per_round = []
        for r in runs:
            d = next(x for x in rows if x["target"] == "direct" and x["mode"] == mode and x["round"] == r["round"])
            per_round.append(r["result"]["p50_ms"] - d["result"]["p50_ms"])
        spread = f"{min(per_round):.3f}/{statistics.median(per_round):.3f}/{max(per_round):.3f}"
        throughput = statistics.mean(r["result"]["throughput_rps"] for r in runs)
        errors = sum(r["result"]["errors"] for r in runs)
        print(f"{mode:7} {target:9} {len(lat):6d} {pct(lat, 50):8.2f} {pct(lat, 99):8.2f} {a50:10.3f} {a99:10.3f} "
              f"{spread:>32} {throughput:7.1f} {errors:6d}")
        if over:
            print(f"{'':17} megatest's own x-megatest-overhead-ms: p50 {pct(over, 50):.3f} ms, p99 {pct(over, 99):.3f} ms")
    if mode == "json" and added.get("litellm", 0) > 0:
        ratio = added["megatest"] / added["litellm"]
print(f"ratio={ratio:.6g}")
PY
