//! Helper of `scripts/bench_checkpoint.sh`: `snapshot_bench DIR FILES MEGABYTES CHANGED`.
//!
//! Builds a deterministic tree of FILES files (~MEGABYTES MB) in DIR, then, on that one tree
//! and in this order: a full megatest snapshot and `git add -A && git write-tree` (warming the
//! page cache and git's index); the same with nothing changed; CHANGED files rewritten; the
//! incremental megatest snapshot and the incremental git step. megatest's snapshot is timed
//! in-process with its stat cache in memory, as a session takes it; git's steps are timed as the
//! commands they are. Prints one JSON object of wall milliseconds and bytes stored.

use megatest::checkpoint::snapshot::{snapshot, ManifestBase, ObjectStore, StatCache};
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
    let (incremental_megatest, _, megatest_new_bytes) = timed(Some(&base))?;
    let incremental_git = git(&tree, "git add -A && git write-tree");
    let git_new_bytes = du(&tree.join(".git/objects")) - git_before;
    println!(
        "{}",
        serde_json::json!({
            "files": files, "bytes": size * files, "changed": changed, "changed_bytes": size * changed,
            "full_megatest_ms": full_megatest, "full_git_ms": full_git,
            "noop_megatest_ms": noop_megatest, "noop_git_ms": noop_git,
            "incremental_megatest_ms": incremental_megatest, "incremental_git_ms": incremental_git,
            "megatest_new_bytes": megatest_new_bytes, "git_new_bytes": git_new_bytes,
        })
    );
    Ok(())
}
