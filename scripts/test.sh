#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests (real megatest processes, real
# agent processes, real signals, real SQLite). Needs cargo and python3 (the quickstart project
# and the agent probes are Python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is required (apt-get install -y python3)" >&2; exit 1; }
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; else echo "scripts/test.sh: rustfmt not installed, format check skipped" >&2; fi
cargo test --locked "$@"
