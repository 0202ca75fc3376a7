#!/usr/bin/env bash
# kill -9 soak: run the quickstart session, SIGKILL megatest at a random moment (and, every other
# round, the resumed daemon too), `megatest resume` until it completes; then check the session:
# status complete, every checkpoint valid, the project's tests pass, no agent process left.
#
#   scripts/kill9_loop.sh [ROUNDS]      # default 50
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${1:-50}"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin megatest
BIN="$ROOT/target/release/megatest"
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
cd "$ROOT"
passed=0; failed=0
for round in $(seq 1 "$ROUNDS"); do
    id="k9-$round"; session="$WORK/$id"
    "$BIN" run configs/quickstart.toml --runs-dir "$WORK" --session-id "$id" --api-addr 127.0.0.1:0 >/dev/null 2>&1 &
    pid=$!
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.05, 2.8), 2))')"
    kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    [ -f "$session/session.db" ] || { passed=$((passed + 1)); continue; }
    if [ $((round % 2)) -eq 0 ] && [ "$(cat "$session/status")" = running ]; then
        "$BIN" resume "$session" >/dev/null 2>&1 &
        pid=$!
        sleep "$(python3 -c 'import random; print(round(random.uniform(0.05, 1.5), 2))')"
        kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    fi
    ok=1
    if [ "$(cat "$session/status")" != complete ]; then
        "$BIN" resume "$session" >/dev/null 2>&1 || ok=0
    fi
    [ "$(cat "$session/status" 2>/dev/null)" = complete ] || ok=0
    "$BIN" checkpoints --verify "$session" >/dev/null 2>&1 || ok=0
    (cd "$session/project" && python3 -m unittest discover -s tests -t . >/dev/null 2>&1) || ok=0
    if pgrep -f "MEGATEST_TASK_ID" >/dev/null 2>&1 || grep -lz "$session" /proc/[0-9]*/environ >/dev/null 2>&1; then ok=0; fi
    if [ "$ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "round $round failed: $session" >&2; cp -r "$session" "/tmp/kill9-failed-$round"; fi
done
echo "kill -9 soak: $ROUNDS rounds"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
