#!/usr/bin/env bash
# The whole test suite: unit tests and the integration tests (real megatest processes, real
# agent processes, real signals, real SQLite). Needs cargo and python3 (the quickstart project
# and the agent probes are Python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v python3 >/dev/null || { echo "scripts/test.sh: python3 is required (apt-get install -y python3)" >&2; exit 1; }
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; else echo "scripts/test.sh: rustfmt not installed, format check skipped" >&2; fi
# The crate lints (missing_docs is denied in src/lib.rs; clippy::unwrap_used outside tests).
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --locked --all-targets -- -D warnings
else
    echo "scripts/test.sh: clippy not installed, lints skipped (rustup component add clippy)" >&2
fi
# Doc links resolve (the public docs are part of the code).
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --lib --quiet
cargo test --locked "$@"
