#!/usr/bin/env bash
# Run one megatest session: ./run_mega_test.sh [project_type] [duration_hours] [agent_count]
#
#   project_type    task_queue | database | microservices   (default task_queue)
#   duration_hours  1-24                                    (default 6)
#   agent_count     2-16                                    (default 6)
#
# Environment:
#   CONFIG_FILE            config to load (default configs/mega_test_config.toml)
#   MEGATEST_PROVIDER      scripted | sim | openai-compatible | anthropic (overrides [model].provider)
#   MEGATEST_TIME_SCALE    session seconds per wall second (3600 runs 6 h in 6 s)
#   MEGATEST_SESSION_ID, MEGATEST_RUNS_DIR   passed through to `megatest run`
#   MEGATEST_API_ADDR      control API address (default 127.0.0.1:8080; 127.0.0.1:0 = any free port)
#   MEGATEST_BIN           use this megatest binary instead of building target/release/megatest
#
# Exits with megatest's code: 0 criteria met, 1 a critical criterion failed, 2 usage/config
# error, 3 aborted, 130/143 interrupted.
set -euo pipefail

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PROJECT_TYPE="${1:-task_queue}"
DURATION_HOURS="${2:-6}"
AGENT_COUNT="${3:-6}"
[ $# -le 3 ] || usage

case "$PROJECT_TYPE" in
    task_queue|database|microservices) ;;
    -h|--help) usage ;;
    *) echo "error: project type must be task_queue, database or microservices (got '$PROJECT_TYPE')" >&2; exit 2 ;;
esac
if ! [[ "$DURATION_HOURS" =~ ^[0-9]+$ ]] || [ "$DURATION_HOURS" -lt 1 ] || [ "$DURATION_HOURS" -gt 24 ]; then
    echo "error: duration_hours must be a whole number from 1 to 24 (got '$DURATION_HOURS')" >&2
    exit 2
fi
if ! [[ "$AGENT_COUNT" =~ ^[0-9]+$ ]] || [ "$AGENT_COUNT" -lt 2 ] || [ "$AGENT_COUNT" -gt 16 ]; then
    echo "error: agent_count must be a whole number from 2 to 16 (got '$AGENT_COUNT')" >&2
    exit 2
fi

CONFIG_FILE="${CONFIG_FILE:-$ROOT/configs/mega_test_config.toml}"
if [ ! -f "$CONFIG_FILE" ]; then
    echo "error: config file not found: $CONFIG_FILE" >&2
    exit 2
fi

# Fail at once, before any build, when no model provider is configured: megatest never
# substitutes a fake model on its own.
if [ -z "${MEGATEST_PROVIDER:-}" ] && ! grep -Eq '^[[:space:]]*provider[[:space:]]*=' "$CONFIG_FILE"; then
    cat >&2 <<MSG
error: no model provider configured.
  Real model:  set [model] provider, base_url, name and api_key_env in $CONFIG_FILE
               (see configs/mega_test_config.toml), or export MEGATEST_PROVIDER.
  Offline:     MEGATEST_PROVIDER=sim MEGATEST_TIME_SCALE=3600 $0 $PROJECT_TYPE $DURATION_HOURS $AGENT_COUNT
               (seeded simulated model: load and long-run behaviour, not code quality), or
               cargo run --release -- run configs/quickstart.toml (the scripted quickstart).
MSG
    exit 2
fi

BIN="${MEGATEST_BIN:-$ROOT/target/release/megatest}"
if [ -z "${MEGATEST_BIN:-}" ]; then
    newest_source="$(find "$ROOT/src" "$ROOT/Cargo.toml" -newer "$BIN" -print -quit 2>/dev/null || true)"
    if [ ! -x "$BIN" ] || [ -n "$newest_source" ]; then
        echo "building megatest (release)…" >&2
        cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
    fi
fi

export MEGATEST_PROJECT="$PROJECT_TYPE" MEGATEST_HOURS="$DURATION_HOURS" MEGATEST_AGENTS="$AGENT_COUNT"
echo "megatest: project=$PROJECT_TYPE hours=$DURATION_HOURS agents=$AGENT_COUNT config=$CONFIG_FILE" >&2
cd "$ROOT"
exec "$BIN" run "$CONFIG_FILE"
