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
pub use super::objects::ObjectStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a manifest entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (stored as its target).
    Symlink,
}

/// One path of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Bytes (files only).
    pub size: u64,
    /// SHA-256 of the content (files only).
    pub hash: Option<String>,
    /// False for files over the size cap: listed with their hash, content not kept.
    pub stored: bool,
    /// Symlink target as written.
    pub target: Option<String>,
}

/// The workspace at one moment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// Every path, in walk order.
    pub entries: Vec<ManifestEntry>,
}

/// Figures of one snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Files listed.
    pub files: u64,
    /// Directories listed.
    pub dirs: u64,
    /// Symbolic links listed.
    pub symlinks: u64,
    /// Bytes of all files listed.
    pub bytes: u64,
    /// Files whose hash came from the stat cache (not read).
    pub cache_hits: u64,
    /// Objects written by this snapshot, and their bytes (manifest included).
    pub new_objects: u64,
    /// Bytes of those objects.
    pub new_bytes: u64,
    /// Files over the size cap (listed, not stored).
    pub not_stored: u64,
}

/// (size, mtime ns, ctime ns, inode) → hash of files already read (and stored, when under
/// the size cap). Objects are never removed behind the cache's back: pruning the store must
/// clear it; `megatest checkpoints --verify` finds objects removed by hand.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatCache {
    entries: HashMap<String, (u64, i64, i64, u64, String)>,
}

fn stat_key(meta: &std::fs::Metadata) -> (u64, i64, i64, u64) {
    (
        meta.len(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        meta.ino(),
    )
}

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

/// Order of a walk: depth first, names sorted within a directory.
fn walk_order(entries: &mut [ManifestEntry]) {
    entries.sort_by_cached_key(|entry| walk_key(&entry.path));
}

/// Sort key of a path in walk order: with `/` as `\0`, plain byte order compares component
/// by component (`a` < `a/b` < `a.txt`).
fn walk_key(path: &str) -> Vec<u8> {
    path.bytes()
        .map(|b| if b == b'/' { 0 } else { b })
        .collect()
}

/// Snapshot `workspace` into `store`, reading only files the cache does not vouch for. Files
/// over `size_cap` bytes are hashed but not stored. The manifest is stored as a delta against
/// `base` when given (and its chain is short enough), else complete. Returns the manifest, the
/// new base (hash and depth), and figures.
pub fn snapshot(
    workspace: &Path,
    store: &ObjectStore,
    cache: &mut StatCache,
    size_cap: u64,
    base: Option<&ManifestBase>,
) -> Result<(Manifest, ManifestBase, SnapshotStats)> {
    let (manifest, mut stats) = walk(workspace, Some(store), cache, size_cap)?;
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
pub fn capture(
    workspace: &Path,
    store: &ObjectStore,
    cache: &mut StatCache,
    size_cap: u64,
) -> Result<(Manifest, SnapshotStats)> {
    walk(workspace, Some(store), cache, size_cap)
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

/// The manifest of `workspace`; file contents go to `store` when given (else only hashed).
fn walk(
    workspace: &Path,
    store: Option<&ObjectStore>,
    cache: &mut StatCache,
    size_cap: u64,
) -> Result<(Manifest, SnapshotStats)> {
    let mut stats = SnapshotStats::default();
    let mut entries = Vec::new();
    // Phase 1, in parallel: walk and lstat (the syscall-heavy part).
    let found: std::sync::Mutex<Vec<(String, PathBuf, std::fs::Metadata)>> =
        std::sync::Mutex::new(Vec::new());
    let failure: std::sync::Mutex<Option<CheckpointError>> = std::sync::Mutex::new(None);
    ignore::WalkBuilder::new(workspace)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(false)
        .git_global(false)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .filter_entry(|entry| {
            !crate::project::GENERATED_DIRS
                .iter()
                .any(|name| entry.file_name() == *name)
        })
        .threads(2)
        .build_parallel()
        .run(|| {
            Box::new(|item| {
                let outcome = item
                    .map_err(|source| CheckpointError::Walk {
                        step: workspace.display().to_string(),
                        source,
                    })
                    .and_then(|item| {
                        let path = item.path().to_path_buf();
                        let relative = path.strip_prefix(workspace).unwrap_or(&path);
                        if relative.as_os_str().is_empty() {
                            return Ok(());
                        }
                        let name = relative.to_string_lossy().replace('\\', "/");
                        let meta = std::fs::symlink_metadata(&path)
                            .step(|| format!("stat {}", path.display()))?;
                        found
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((name, path, meta));
                        Ok(())
                    });
                match outcome {
                    Ok(()) => ignore::WalkState::Continue,
                    Err(err) => {
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(err);
                        ignore::WalkState::Quit
                    }
                }
            })
        });
    if let Some(err) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(err).step(|| format!("walk {}", workspace.display()));
    }
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort_by_cached_key(|entry| walk_key(&entry.0));
    // Phase 2, in walk order: the stat cache, reading and storing what changed.
    for (name, path, meta) in found {
        let path = path.as_path();
        let mode = meta.permissions().mode() & 0o7777;
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            stats.symlinks += 1;
            let target = std::fs::read_link(path)?.to_string_lossy().into_owned();
            entries.push(ManifestEntry {
                path: name,
                kind: EntryKind::Symlink,
                mode,
                size: 0,
                hash: None,
                stored: false,
                target: Some(target),
            });
        } else if file_type.is_dir() {
            stats.dirs += 1;
            entries.push(ManifestEntry {
                path: name,
                kind: EntryKind::Dir,
                mode,
                size: 0,
                hash: None,
                stored: false,
                target: None,
            });
        } else if file_type.is_file() {
            stats.files += 1;
            stats.bytes += meta.len();
            let key = stat_key(&meta);
            let cached = cache
                .entries
                .get(&name)
                .filter(|c| (c.0, c.1, c.2, c.3) == key)
                .map(|c| c.4.clone());
            let stored = meta.len() <= size_cap && store.is_some();
            let hash = match cached {
                Some(hash) => {
                    stats.cache_hits += 1;
                    hash
                }
                _ => {
                    let mut file =
                        std::fs::File::open(path).step(|| format!("read {}", path.display()))?;
                    let hash = if stored {
                        let mut bytes = Vec::with_capacity(meta.len() as usize);
                        file.read_to_end(&mut bytes)?;
                        let hash = sha256_hex(&bytes);
                        if let Some(written) =
                            store.expect("stored implies a store").put(&hash, &bytes)?
                        {
                            stats.new_objects += 1;
                            stats.new_bytes += written;
                        }
                        hash
                    } else {
                        let mut hasher = Sha256::new();
                        std::io::copy(&mut file, &mut hasher)?;
                        hex::encode(hasher.finalize())
                    };
                    cache
                        .entries
                        .insert(name.clone(), (key.0, key.1, key.2, key.3, hash.clone()));
                    hash
                }
            };
            if !stored {
                stats.not_stored += 1;
            }
            entries.push(ManifestEntry {
                path: name,
                kind: EntryKind::File,
                mode,
                size: meta.len(),
                hash: Some(hash),
                stored,
                target: None,
            });
        }
    }
    Ok((Manifest { entries }, stats))
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
    let (current, _) = walk(workspace, None, &mut StatCache::default(), 0)?;
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
