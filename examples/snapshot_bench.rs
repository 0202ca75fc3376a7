//! Helper of `scripts/bench_checkpoint.sh`: `snapshot_bench DIR FILES MEGABYTES CHANGED`.
//!
//! Builds a deterministic tree of FILES files (~MEGABYTES MB) in DIR, then, on that one tree
//! and in this order: a full megatest snapshot and `git add -A && git write-tree` (warming the
//! page cache and git's index); the same with nothing changed; CHANGED files rewritten; the
//! incremental megatest snapshot and the incremental git step. megatest's snapshot is timed
//! in-process with its stat cache in memory, walking the whole tree (no workspace watch); git's
//! steps are timed as the commands they are. Then, with a workspace watch as a session has one,
//! ROUNDS rounds (100) of: one task snapshot (`capture`, the per-task diff's snapshot), 10 files
//! rewritten, the task diff (second capture, changed files, unified diff), and one checkpoint
//! taken as the session's checkpoint job takes it — the pre-copy (agents running), a real
//! process group (`sleep`) stopped with SIGSTOP, the snapshot of what changed since, SIGCONT —
//! whose frozen window is timed. Prints one JSON object of wall milliseconds and bytes stored.

use megatest::checkpoint::diff;
use megatest::checkpoint::snapshot::{
    capture, precopy, snapshot, ManifestBase, ObjectStore, StatCache,
};
use megatest::checkpoint::watch::WorkspaceWatch;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn file_path(root: &Path, i: usize) -> std::path::PathBuf {
    root.join(format!("d{:02}/e{:02}/f{i:05}.txt", i % 50, (i / 50) % 20))
}

fn content(i: usize, size: usize, salt: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(i as u64 * 7919 + salt);
    (0..size)
        .map(|_| b"abcdefghijklmnopqrstuvwxyz \n"[rng.usize(..28)])
        .collect()
}

fn git(root: &Path, script: &str) -> f64 {
    let started = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{script} failed");
    started.elapsed().as_secs_f64() * 1000.0
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            du(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: snapshot_bench DIR FILES MEGABYTES CHANGED"
    );
    let work = Path::new(&args[1]);
    let (files, mb, changed): (usize, usize, usize) =
        (args[2].parse()?, args[3].parse()?, args[4].parse()?);
    let tree = work.join("tree");
    let size = mb * 1024 * 1024 / files;
    for i in 0..files {
        let path = file_path(&tree, i);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, content(i, size, 0))?;
    }
    git(
        &tree,
        "git init -q && git config user.email bench@localhost && git config user.name bench",
    );
    let store = ObjectStore::open(&work.join("megatest-objects"))?;
    let mut cache = StatCache::default();
    let mut timed = |base: Option<&ManifestBase>| -> anyhow::Result<(f64, ManifestBase, u64)> {
        let started = Instant::now();
        let (_, base, stats) = snapshot(&tree, &store, &mut cache, 64 * 1024 * 1024, base)?;
        Ok((
            started.elapsed().as_secs_f64() * 1000.0,
            base,
            stats.new_bytes,
        ))
    };
    let (full_megatest, base, _) = timed(None)?;
    let full_git = git(&tree, "git add -A && git write-tree");
    let (noop_megatest, base, _) = timed(Some(&base))?;
    let noop_git = git(&tree, "git add -A && git write-tree");
    for k in 0..changed {
        let i = (k * 97) % files;
        std::fs::write(file_path(&tree, i), content(i, size, 1 + k as u64))?;
    }
    let git_before = du(&tree.join(".git/objects"));
    let (incremental_megatest, mut base, megatest_new_bytes) = timed(Some(&base))?;
    let incremental_git = git(&tree, "git add -A && git write-tree");
    let git_new_bytes = du(&tree.join(".git/objects")) - git_before;
    // Task snapshots and frozen windows, ROUNDS rounds of 10 changed files.
    const ROUNDS: usize = 100;
    let mut agent = Command::new("sleep");
    agent.arg("1000").process_group(0);
    let mut agent = agent.spawn()?;
    let group = Pid::from_raw(agent.id() as i32);
    let watch = WorkspaceWatch::start(&tree);
    let mut task_cache = StatCache::watching(watch.clone());
    let mut cache = StatCache::watching(watch);
    let (mut task_ms, mut diff_ms, mut frozen_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut precopy_ms = Vec::new();
    for round in 0..ROUNDS {
        let started = Instant::now();
        let (before, _) = capture(&tree, &store, &mut task_cache, 64 * 1024 * 1024)?;
        task_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        for k in 0..10 {
            let i = (round * 131 + k * 977) % files;
            std::fs::write(file_path(&tree, i), content(i, size, 1000 + round as u64))?;
        }
        let started = Instant::now();
        let (after, _) = capture(&tree, &store, &mut task_cache, 64 * 1024 * 1024)?;
        let changes = diff::changes(&before, &after);
        let text = diff::render(&before, &after, &changes, &store);
        diff_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            changes.len() == 10 && !text.is_empty(),
            "round {round}: {} changes",
            changes.len()
        );
        let started = Instant::now();
        precopy(&tree, &store, &mut cache, 64 * 1024 * 1024)?;
        precopy_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        killpg(group, Signal::SIGSTOP)?;
        let (_, next, _) = snapshot(&tree, &store, &mut cache, 64 * 1024 * 1024, Some(&base))?;
        killpg(group, Signal::SIGCONT)?;
        frozen_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        base = next;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let percentile = |samples: &mut Vec<f64>, p: f64| -> f64 {
        samples.sort_by(f64::total_cmp);
        samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1]
    };
    println!(
        "{}",
        serde_json::json!({
            "files": files, "bytes": size * files, "changed": changed, "changed_bytes": size * changed,
            "full_megatest_ms": full_megatest, "full_git_ms": full_git,
            "noop_megatest_ms": noop_megatest, "noop_git_ms": noop_git,
            "incremental_megatest_ms": incremental_megatest, "incremental_git_ms": incremental_git,
            "megatest_new_bytes": megatest_new_bytes, "git_new_bytes": git_new_bytes,
            "rounds": ROUNDS,
            "task_snapshot_p50_ms": percentile(&mut task_ms, 0.5),
            "task_snapshot_p99_ms": percentile(&mut task_ms, 0.99),
            "task_diff_p50_ms": percentile(&mut diff_ms, 0.5),
            "task_diff_p99_ms": percentile(&mut diff_ms, 0.99),
            "precopy_p50_ms": percentile(&mut precopy_ms, 0.5),
            "frozen_p50_ms": percentile(&mut frozen_ms, 0.5),
            "frozen_p99_ms": percentile(&mut frozen_ms, 0.99),
        })
    );
    Ok(())
}
