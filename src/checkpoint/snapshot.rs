//! Snapshots of the workspace in a content-addressed object store.
//!
//! Theory of operation: a snapshot walks `project/` (honouring `.gitignore`, and always skipping
//! build output and dependencies: [`crate::project::GENERATED_DIRS`]) and produces a [`Manifest`]: one entry per
//! directory, file and symlink with its mode, size, SHA-256 and symlink target. File contents
//! go to `checkpoints/objects/<2 hex>/<62 hex>`, stored once however many manifests reference
//! them. A [`StatCache`] remembers (size, mtime, ctime, inode) → hash, so unchanged files are
//! recognised without being read again. Files over the size cap are listed with their hash but
//! not stored. The manifest itself is stored as an object too, so a checkpoint names its
//! workspace by one hash.

use super::error::{CheckpointError, Result, Step};
pub use super::objects::{sha256_hex, ObjectStore};
use super::walk::{walk, walk_order, Reach};
pub use super::walk::{EntryKind, Manifest, ManifestEntry, SnapshotStats, StatCache};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Longest chain of delta manifests before a complete one is stored again.
pub const MAX_DELTA_DEPTH: u32 = 16;

/// A manifest as stored: complete (`base` None), or the changes against the manifest `base`.
/// Deltas keep a checkpoint's storage growth near the bytes that changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredManifest {
    base: Option<String>,
    /// Deltas between this one and a complete manifest (0: complete).
    depth: u32,
    /// Entries new or different from the base (all entries when complete).
    upserts: Vec<ManifestEntry>,
    /// Paths of the base that are gone.
    removed: Vec<String>,
}

/// The previous snapshot, which the next one may be stored relative to.
#[derive(Debug, Clone)]
pub struct ManifestBase {
    /// The manifest's hash.
    pub hash: String,
    /// The complete manifest.
    pub manifest: Manifest,
    /// Deltas between it and a complete manifest (0: complete).
    pub depth: u32,
}

/// Snapshot `workspace` into `store`, reading only files the cache does not vouch for. Files
/// over `size_cap` bytes are hashed but not stored. The manifest is stored as a delta against
/// `base` when given (and its chain is short enough), else complete. Returns the manifest, the
/// new base (hash and depth), and figures. With a watching `cache`, only the paths changed
/// since its last walk are examined (see [`super::watch`]).
pub fn snapshot(
    workspace: &Path,
    store: &ObjectStore,
    cache: &mut StatCache,
    size_cap: u64,
    base: Option<&ManifestBase>,
) -> Result<(Manifest, ManifestBase, SnapshotStats)> {
    let (manifest, mut stats) = walk(workspace, Some(store), cache, size_cap, Reach::Changed)?;
    if let Some(base) = base.filter(|b| b.manifest.entries == manifest.entries) {
        // Nothing changed: the base names this workspace already.
        return Ok((manifest, base.clone(), stats));
    }
    let stored = match base {
        Some(base) if base.depth < MAX_DELTA_DEPTH => {
            let old: HashMap<&str, &ManifestEntry> = base
                .manifest
                .entries
                .iter()
                .map(|e| (e.path.as_str(), e))
                .collect();
            let new: std::collections::HashSet<&str> =
                manifest.entries.iter().map(|e| e.path.as_str()).collect();
            StoredManifest {
                base: Some(base.hash.clone()),
                depth: base.depth + 1,
                upserts: manifest
                    .entries
                    .iter()
                    .filter(|e| old.get(e.path.as_str()) != Some(e))
                    .cloned()
                    .collect(),
                removed: base
                    .manifest
                    .entries
                    .iter()
                    .filter(|e| !new.contains(e.path.as_str()))
                    .map(|e| e.path.clone())
                    .collect(),
            }
        }
        _ => StoredManifest {
            base: None,
            depth: 0,
            upserts: manifest.entries.clone(),
            removed: Vec::new(),
        },
    };
    let bytes = serde_json::to_vec(&stored)?;
    let hash = sha256_hex(&bytes);
    if let Some(written) = store.put(&hash, &bytes)? {
        stats.new_objects += 1;
        stats.new_bytes += written;
    }
    let depth = stored.depth;
    Ok((
        manifest.clone(),
        ManifestBase {
            hash,
            manifest,
            depth,
        },
        stats,
    ))
}

/// The workspace as it is now, its files' contents put into `store` (objects only: no manifest
/// is stored). What a task snapshot is: [`crate::checkpoint::diff`] compares two of them.
/// With a watching `cache`, only the paths changed since its last walk are examined.
pub fn capture(
    workspace: &Path,
    store: &ObjectStore,
    cache: &mut StatCache,
    size_cap: u64,
) -> Result<(Manifest, SnapshotStats)> {
    walk(workspace, Some(store), cache, size_cap, Reach::Changed)
}

/// The pre-copy of a checkpoint, taken while the agents still run: walk the whole workspace
/// (inotify misses writes through shared memory maps; this walk does not), store what changed
/// and remember the manifest, so the snapshot taken with the agents frozen re-examines only the
/// paths changed since (with a watching `cache`; without one it walks everything again, but
/// reads only what changed). When the walk put new directories under watch, a second, watched
/// walk picks up what changed before their watches existed.
pub fn precopy(
    workspace: &Path,
    store: &ObjectStore,
    cache: &mut StatCache,
    size_cap: u64,
) -> Result<SnapshotStats> {
    let (_, mut stats) = walk(workspace, Some(store), cache, size_cap, Reach::Everything)?;
    if cache.has_pending() {
        let (_, more) = walk(workspace, Some(store), cache, size_cap, Reach::Changed)?;
        stats.new_objects += more.new_objects;
        stats.new_bytes += more.new_bytes;
    }
    Ok(stats)
}

/// The complete manifest stored under `hash`, following its delta chain; every object of the
/// chain is verified on the way.
pub fn load_manifest(store: &ObjectStore, hash: &str) -> Result<Manifest> {
    let mut chain = Vec::new();
    let mut next = Some(hash.to_string());
    while let Some(hash) = next {
        store
            .verify(&hash)
            .map_err(|problem| CheckpointError::Corrupt(format!("manifest {problem}")))?;
        let stored: StoredManifest = serde_json::from_slice(&store.get(&hash)?)
            .step(|| format!("manifest {hash} is unreadable"))?;
        if chain.len() > MAX_DELTA_DEPTH as usize {
            return Err(CheckpointError::Corrupt(format!(
                "manifest chain from {hash} is longer than {MAX_DELTA_DEPTH}"
            )));
        }
        next = stored.base.clone();
        chain.push(stored);
    }
    let mut entries: std::collections::BTreeMap<String, ManifestEntry> =
        std::collections::BTreeMap::new();
    for stored in chain.into_iter().rev() {
        for path in &stored.removed {
            entries.remove(path);
        }
        for entry in stored.upserts {
            entries.insert(entry.path.clone(), entry);
        }
    }
    let mut entries: Vec<ManifestEntry> = entries.into_values().collect();
    walk_order(&mut entries);
    Ok(Manifest { entries })
}

/// What [`restore`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreStats {
    /// Files written.
    pub written: u64,
    /// Files already identical.
    pub unchanged: u64,
    /// Paths removed.
    pub removed: u64,
    /// Symbolic links recreated.
    pub symlinks: u64,
    /// Files over the size cap when snapshotted: their content could not be brought back.
    pub not_restorable: Vec<String>,
}

/// Make `workspace` what manifest `manifest_hash` describes: files (content and mode), symlinks
/// and directories come back; what the manifest does not list is removed — except what the
/// snapshot ignored (`.gitignore`d paths and [`crate::project::GENERATED_DIRS`] directories), which is left
/// alone. Files already identical are not rewritten.
///
/// Errors: the manifest or an object is missing or corrupt (checked before anything changes),
/// or a filesystem operation fails.
pub fn restore(workspace: &Path, store: &ObjectStore, manifest_hash: &str) -> Result<RestoreStats> {
    let problems = verify_manifest(store, manifest_hash);
    if !problems.is_empty() {
        return Err(CheckpointError::Corrupt(format!(
            "checkpoint cannot be restored: {}",
            problems.join("; ")
        )));
    }
    let manifest = load_manifest(store, manifest_hash)?;
    let mut stats = RestoreStats::default();
    // What exists now (the same walk as a snapshot, so ignored paths are never touched).
    let (current, _) = walk(
        workspace,
        None,
        &mut StatCache::default(),
        0,
        Reach::Everything,
    )?;
    let wanted: std::collections::HashMap<&str, &ManifestEntry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    // Remove what should not be there (deepest first), or what has the wrong kind.
    for entry in current.entries.iter().rev() {
        let keep = wanted
            .get(entry.path.as_str())
            .is_some_and(|w| w.kind == entry.kind);
        if !keep {
            let path = workspace.join(&entry.path);
            let result = match entry.kind {
                EntryKind::Dir => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            if let Err(err) = result {
                if err.kind() != std::io::ErrorKind::NotFound {
                    return Err(err).step(|| format!("remove {}", path.display()));
                }
            }
            stats.removed += 1;
        }
    }
    let existing: std::collections::HashMap<&str, &ManifestEntry> = current
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    for entry in &manifest.entries {
        let path = workspace.join(&entry.path);
        match entry.kind {
            EntryKind::Dir => {
                std::fs::create_dir_all(&path).step(|| format!("create {}", path.display()))?;
            }
            EntryKind::Symlink => {
                let target = entry.target.clone().unwrap_or_default();
                let same = std::fs::read_link(&path)
                    .ok()
                    .is_some_and(|t| t.to_string_lossy() == target);
                if !same {
                    let _ = std::fs::remove_file(&path);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::os::unix::fs::symlink(&target, &path)
                        .step(|| format!("symlink {}", path.display()))?;
                }
                stats.symlinks += 1;
                continue;
            }
            EntryKind::File => {
                let unchanged = existing
                    .get(entry.path.as_str())
                    .is_some_and(|e| e.hash == entry.hash);
                if unchanged {
                    stats.unchanged += 1;
                } else if !entry.stored {
                    stats.not_restorable.push(entry.path.clone());
                    continue;
                } else {
                    let bytes = store.get(entry.hash.as_deref().unwrap_or_default())?;
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    crate::fsutil::write_atomic(&path, &bytes)?;
                    stats.written += 1;
                }
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(entry.mode))
            .step(|| format!("chmod {}", path.display()))?;
    }
    Ok(stats)
}

/// Every object a stored manifest needs: its delta chain and the stored files' contents.
pub fn referenced_objects(
    store: &ObjectStore,
    manifest_hash: &str,
) -> Result<std::collections::HashSet<String>> {
    let mut needed = std::collections::HashSet::new();
    let mut next = Some(manifest_hash.to_string());
    while let Some(hash) = next {
        let stored: StoredManifest = serde_json::from_slice(&store.get(&hash)?)?;
        next = stored.base.clone();
        needed.insert(hash);
    }
    for entry in load_manifest(store, manifest_hash)?.entries {
        if let (true, Some(hash)) = (entry.stored, entry.hash) {
            needed.insert(hash);
        }
    }
    Ok(needed)
}

/// Problems of a stored manifest: the manifest object itself, then every stored file object.
pub fn verify_manifest(store: &ObjectStore, manifest_hash: &str) -> Vec<String> {
    let manifest = match load_manifest(store, manifest_hash) {
        Ok(manifest) => manifest,
        Err(err) => return vec![format!("{err:#}")],
    };
    let mut problems = Vec::new();
    for entry in manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.stored)
    {
        if let Some(hash) = &entry.hash {
            if let Err(problem) = store.verify(hash) {
                problems.push(format!("{}: {problem}", entry.path));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_are_not_read_again_and_objects_are_shared() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("src")).unwrap();
        std::fs::create_dir_all(ws.join("target/debug")).unwrap();
        std::fs::write(ws.join("src/a.rs"), "fn a() {}\n").unwrap();
        std::fs::write(ws.join("src/b.rs"), "fn a() {}\n").unwrap();
        std::fs::write(ws.join("target/debug/big"), vec![0u8; 1000]).unwrap();
        std::fs::write(ws.join(".gitignore"), "*.log\n").unwrap();
        std::fs::write(ws.join("x.log"), "ignored").unwrap();
        std::fs::write(ws.join("huge.bin"), vec![7u8; 2048]).unwrap();
        std::os::unix::fs::symlink("src/a.rs", ws.join("link")).unwrap();
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let mut cache = StatCache::default();
        let (manifest, base, stats) = snapshot(&ws, &store, &mut cache, 1024, None).unwrap();
        let hash = base.hash.clone();
        let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".gitignore",
                "huge.bin",
                "link",
                "src",
                "src/a.rs",
                "src/b.rs"
            ]
        );
        assert_eq!(
            (stats.files, stats.symlinks, stats.dirs, stats.not_stored),
            (4, 1, 1, 1)
        );
        // a.rs and b.rs share one object; huge.bin is not stored; plus the manifest.
        assert_eq!(stats.new_objects, 3);
        assert!(verify_manifest(&store, &hash).is_empty());
        let (_, base2, again) = snapshot(&ws, &store, &mut cache, 1024, Some(&base)).unwrap();
        let hash2 = base2.hash.clone();
        assert_eq!(
            (again.cache_hits, again.new_objects, again.new_bytes),
            (4, 0, 0)
        );
        assert_eq!(hash, hash2);
        std::fs::write(ws.join("src/a.rs"), "fn changed() {}\n").unwrap();
        let (after, base3, changed) =
            snapshot(&ws, &store, &mut cache, 1024, Some(&base2)).unwrap();
        assert_eq!(changed.cache_hits, 3);
        assert_eq!(
            changed.new_objects, 2,
            "the changed file and the delta manifest"
        );
        assert_eq!(base3.depth, 1);
        assert!(
            changed.new_bytes < 400,
            "a delta of one entry, got {} bytes",
            changed.new_bytes
        );
        assert_eq!(
            load_manifest(&store, &base3.hash).unwrap().entries,
            after.entries
        );
        assert!(verify_manifest(&store, &base3.hash).is_empty());
        // A broken base breaks the delta that stands on it.
        std::fs::write(store.path_of(&hash), "x").unwrap();
        assert!(verify_manifest(&store, &base3.hash)[0].contains("corrupt"));
    }

    #[test]
    fn restore_round_trip_brings_back_content_modes_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("src/deep")).unwrap();
        std::fs::write(ws.join("src/a.rs"), "one").unwrap();
        std::fs::write(ws.join("src/deep/b.rs"), "two").unwrap();
        std::fs::write(ws.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(ws.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("src/a.rs", ws.join("link")).unwrap();
        std::fs::create_dir_all(ws.join("target")).unwrap();
        std::fs::write(ws.join("target/keep.o"), "build output").unwrap();
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let (before, base, _) =
            snapshot(&ws, &store, &mut StatCache::default(), 1 << 20, None).unwrap();
        let hash = base.hash;
        // Change, delete, add, chmod, re-point the link, replace a dir by a file.
        std::fs::write(ws.join("src/a.rs"), "changed").unwrap();
        std::fs::remove_file(ws.join("src/deep/b.rs")).unwrap();
        std::fs::write(ws.join("new.txt"), "added").unwrap();
        std::fs::create_dir_all(ws.join("newdir/x")).unwrap();
        std::fs::set_permissions(ws.join("run.sh"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::remove_file(ws.join("link")).unwrap();
        std::os::unix::fs::symlink("run.sh", ws.join("link")).unwrap();
        let stats = restore(&ws, &store, &hash).unwrap();
        assert!(stats.written >= 2 && stats.removed >= 3, "{stats:?}");
        let (after, _, _) =
            snapshot(&ws, &store, &mut StatCache::default(), 1 << 20, None).unwrap();
        assert_eq!(before.entries, after.entries);
        assert_eq!(
            std::fs::read_to_string(ws.join("target/keep.o")).unwrap(),
            "build output",
            "ignored paths are left alone"
        );
    }

    #[test]
    fn restore_refuses_a_checkpoint_with_a_missing_object_before_touching_anything() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join("a"), "alpha").unwrap();
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let (_, base, _) = snapshot(&ws, &store, &mut StatCache::default(), 1 << 20, None).unwrap();
        let hash = base.hash;
        std::fs::write(ws.join("b"), "new").unwrap();
        std::fs::remove_file(store.path_of(&sha256_hex(b"alpha"))).unwrap();
        assert!(restore(&ws, &store, &hash).is_err());
        assert!(ws.join("b").exists(), "nothing was changed");
    }

    #[test]
    fn verification_finds_missing_and_corrupt_objects() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join("a"), "alpha").unwrap();
        std::fs::write(ws.join("b"), "beta").unwrap();
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let (_, base, _) = snapshot(&ws, &store, &mut StatCache::default(), 1 << 20, None).unwrap();
        let hash = base.hash;
        std::fs::remove_file(store.path_of(&sha256_hex(b"alpha"))).unwrap();
        std::fs::write(store.path_of(&sha256_hex(b"beta")), "gamma").unwrap();
        let problems = verify_manifest(&store, &hash);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("a: object") && problems[0].ends_with("missing"));
        assert!(problems[1].ends_with("corrupt"));
    }
}
