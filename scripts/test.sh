#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests (real megatest processes, real
# agent processes, real signals, real SQLite). Needs cargo and python3 (the quickstart project
# and the agent probes are Python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is required (apt-get install -y python3)" >&2; exit 1; }
cargo fmt --check
cargo test --locked "$@"
