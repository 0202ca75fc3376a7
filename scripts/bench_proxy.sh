#!/usr/bin/env bash
# Added latency and throughput of megatest's metering proxy against LiteLLM's proxy, on the same
# fake upstream (fixed latency) and the same open-loop load, streaming and not.
#
#   scripts/bench_proxy.sh            # RPS=500 BENCH_SECONDS=10 UPSTREAM_LATENCY_MS=20
#   SKIP_LITELLM=1 scripts/bench_proxy.sh   # megatest only (quick; prints ratio=nan)
#
# Added latency = percentile through a proxy − the same percentile straight to the upstream.
# LiteLLM (PyPI litellm[proxy]) is installed into target/bench-venv on first use.
# The last line reads ratio=<megatest added p50 / LiteLLM added p50> (non-streaming).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RPS="${RPS:-500}"
BENCH_SECONDS="${BENCH_SECONDS:-10}"
UPSTREAM_LATENCY_MS="${UPSTREAM_LATENCY_MS:-20}"
KEY=sk-bench-upstream

cargo build --release --quiet --bin megatest --example fake_upstream --example proxy_load
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
[ -n "$LITELLM_URL" ] && TARGETS="$TARGETS litellm"

# 4. The runs: warm-up, then the same load straight, through megatest, through LiteLLM.
load() { "$BIN/examples/proxy_load" --url "$1" --key "$2" --rps "$RPS" --seconds "$BENCH_SECONDS" $3; }
for target in "$UPSTREAM $KEY" "$MEGATEST_URL $MEGATEST_KEY" "${LITELLM_URL:-skip} $LITELLM_KEY"; do
    set -- $target
    [ "$1" = skip ] && continue
    "$BIN/examples/proxy_load" --url "$1" --key "$2" --rps 50 --seconds 2 > /dev/null
done
: > "$WORK/results.jsonl"
for mode in "" "--stream"; do
    for name in $TARGETS; do
        case $name in
            direct) line="$(load "$UPSTREAM" "$KEY" "$mode")" ;;
            megatest) line="$(load "$MEGATEST_URL" "$MEGATEST_KEY" "$mode")" ;;
            litellm) line="$(load "$LITELLM_URL" "$LITELLM_KEY" "$mode")" ;;
        esac
        echo "{\"target\": \"$name\", \"result\": $line}" >> "$WORK/results.jsonl"
        echo "$name ${mode:---json}: $line" >&2
    done
done

python3 - "$WORK/results.jsonl" "$RPS" "$UPSTREAM_LATENCY_MS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rps, latency = sys.argv[2], sys.argv[3]
by = {(r["target"], r["result"]["stream"]): r["result"] for r in rows}
print(f"proxy benchmark: {rps} req/s open loop, upstream latency {latency} ms, 2-core machine")
print(f"{'mode':8} {'target':9} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10} {'req/s':>8} {'errors':>7}")
ratio = None
for stream in (False, True):
    base = by[("direct", stream)]
    added = {}
    for target in ("direct", "megatest", "litellm"):
        r = by.get((target, stream))
        if r is None:
            added[target] = float("nan")
            continue
        a50, a99 = r["p50_ms"] - base["p50_ms"], r["p99_ms"] - base["p99_ms"]
        added[target] = a50
        print(f"{'stream' if stream else 'json':8} {target:9} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {a50:10.3f} {a99:10.3f} {r['throughput_rps']:8.1f} {r['errors']:7d}")
    if not stream:
        ratio = added["megatest"] / added["litellm"] if added["litellm"] > 0 else float("nan")
for stream in (False, True):
    r = by[("megatest", stream)]
    if r.get("reported_overhead_p50_ms") is not None:
        print(f"{'stream' if stream else 'json':8} megatest's own x-megatest-overhead-ms: p50 {r['reported_overhead_p50_ms']:.3f} ms, p99 {r['reported_overhead_p99_ms']:.3f} ms")
print(f"ratio={ratio:.6g}")
PY
