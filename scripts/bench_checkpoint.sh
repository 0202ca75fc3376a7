#!/usr/bin/env bash
# Incremental checkpoint snapshot: megatest's object store against `git add -A && git write-tree`
# on the same tree (default 10 000 files, ~100 MB; 100 files changed), page cache and git index
# warm. megatest is timed in-process with its stat cache in memory, walking the whole tree;
# git as its commands. Storage growth: object bytes megatest wrote, and the growth of
# .git/objects. Then, with the workspace watch a session has: the per-task diff's snapshot, a
# checkpoint's pre-copy and the agents' frozen window of a checkpoint (a real process group
# stopped and continued around the snapshot), p50/p99 over 100 rounds of 10 changed files.
# The last line reads ratio=<megatest time / git time>.
#
#   scripts/bench_checkpoint.sh        # FILES=10000 MEGABYTES=100 CHANGED=100
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FILES="${FILES:-10000}"; MEGABYTES="${MEGABYTES:-100}"; CHANGED="${CHANGED:-100}"
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --example snapshot_bench
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
echo "building $FILES files (~$MEGABYTES MB) and snapshotting…" >&2
"$ROOT/target/release/examples/snapshot_bench" "$WORK" "$FILES" "$MEGABYTES" "$CHANGED" > "$WORK/result.json"
python3 - "$WORK/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"checkpoint benchmark: {r['files']} files, {r['bytes'] / 1e6:.1f} MB, {r['changed']} changed ({r['changed_bytes']} bytes)")
print(f"{'':28} {'megatest ms':>12} {'git ms':>10}")
for step in ("full", "noop", "incremental"):
    label = {"full": "full snapshot", "noop": "nothing changed", "incremental": f"incremental ({r['changed']} changed)"}[step]
    print(f"{label:28} {r[step + '_megatest_ms']:12.1f} {r[step + '_git_ms']:10.1f}")
growth = r["megatest_new_bytes"] - r["changed_bytes"]
print(f"incremental storage growth: megatest {r['megatest_new_bytes']} bytes ({growth:+d} vs the changed bytes), "
      f"git {r['git_new_bytes']} bytes")
print(f"over {r['rounds']} rounds of 10 changed files:")
print(f"  task snapshot (per-task diff, one capture)  p50 {r['task_snapshot_p50_ms']:.1f} ms  p99 {r['task_snapshot_p99_ms']:.1f} ms  (target <= 50 ms)")
print(f"  task diff (second capture + changes + diff) p50 {r['task_diff_p50_ms']:.1f} ms  p99 {r['task_diff_p99_ms']:.1f} ms")
print(f"  checkpoint pre-copy (agents running)       p50 {r['precopy_p50_ms']:.1f} ms")
print(f"  agents frozen by a checkpoint               p50 {r['frozen_p50_ms']:.1f} ms  p99 {r['frozen_p99_ms']:.1f} ms  (target p99 <= 20 ms)")
print(f"ratio={r['incremental_megatest_ms'] / r['incremental_git_ms']:.4f}")
PY
