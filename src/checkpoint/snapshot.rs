//! Snapshots of the workspace in a content-addressed object store.
//!
//! Theory of operation: a snapshot walks `project/` (honouring `.gitignore`, and always skipping
//! build output and dependencies: [`ALWAYS_IGNORED`]) and produces a [`Manifest`]: one entry per
//! directory, file and symlink with its mode, size, SHA-256 and symlink target. File contents
//! go to `checkpoints/objects/<2 hex>/<62 hex>`, stored once however many manifests reference
//! them. A [`StatCache`] remembers (size, mtime, ctime, inode) → hash, so unchanged files are
//! recognised without being read again. Files over the size cap are listed with their hash but
//! not stored. The manifest itself is stored as an object too, so a checkpoint names its
//! workspace by one hash.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Directories never snapshotted: build output, dependencies, virtualenvs, VCS internals.
pub const ALWAYS_IGNORED: &[&str] = &[
    "target",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".git",
    ".mypy_cache",
    ".pytest_cache",
];

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
}

/// One path of the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
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
    pub entries: Vec<ManifestEntry>,
}

/// Figures of one snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of all files listed.
    pub bytes: u64,
    /// Files whose hash came from the stat cache (not read).
    pub cache_hits: u64,
    /// Objects written by this snapshot, and their bytes (manifest included).
    pub new_objects: u64,
    pub new_bytes: u64,
    /// Files over the size cap (listed, not stored).
    pub not_stored: u64,
}

/// The content-addressed store under `checkpoints/objects/`.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    root: PathBuf,
}

impl ObjectStore {
    pub fn open(root: &Path) -> Result<ObjectStore> {
        std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
        Ok(ObjectStore {
            root: root.to_path_buf(),
        })
    }

    pub fn path_of(&self, hash: &str) -> PathBuf {
        self.root.join(&hash[..2]).join(&hash[2..])
    }

    pub fn contains(&self, hash: &str) -> bool {
        self.path_of(hash).is_file()
    }

    /// Store `bytes` under `hash` unless present; returns the bytes written, None if present.
    pub fn put(&self, hash: &str, bytes: &[u8]) -> Result<Option<u64>> {
        let path = self.path_of(hash);
        if path.is_file() {
            return Ok(None);
        }
        std::fs::create_dir_all(path.parent().unwrap())?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).with_context(|| format!("write object {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)?;
        Ok(Some(bytes.len() as u64))
    }

    pub fn get(&self, hash: &str) -> Result<Vec<u8>> {
        let path = self.path_of(hash);
        std::fs::read(&path).with_context(|| format!("object {hash} missing ({})", path.display()))
    }

    /// True when the object exists and its content hashes to its name.
    pub fn verify(&self, hash: &str) -> std::result::Result<(), String> {
        match std::fs::read(self.path_of(hash)) {
            Err(_) => Err(format!("object {hash} is missing")),
            Ok(bytes) if sha256_hex(&bytes) != hash => Err(format!("object {hash} is corrupt")),
            Ok(_) => Ok(()),
        }
    }
}

/// (size, mtime ns, ctime ns, inode) → hash of files already read.
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

/// Snapshot `workspace` into `store`, reading only files the cache does not vouch for. Files
/// over `size_cap` bytes are hashed but not stored. Returns the manifest, the hash of the stored
/// manifest object, and figures.
pub fn snapshot(
    workspace: &Path,
    store: &ObjectStore,
    cache: &mut StatCache,
    size_cap: u64,
) -> Result<(Manifest, String, SnapshotStats)> {
    let mut stats = SnapshotStats::default();
    let mut entries = Vec::new();
    let walker = ignore::WalkBuilder::new(workspace)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(false)
        .git_global(false)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .filter_entry(|entry| !ALWAYS_IGNORED.iter().any(|name| entry.file_name() == *name))
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    for item in walker {
        let item = item.with_context(|| format!("walk {}", workspace.display()))?;
        let path = item.path();
        let relative = path.strip_prefix(workspace).unwrap_or(path);
        if relative.as_os_str().is_empty() {
            continue;
        }
        let name = relative.to_string_lossy().replace('\\', "/");
        let meta =
            std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
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
            let stored = meta.len() <= size_cap;
            let hash = match cached {
                Some(hash) if !stored || store.contains(&hash) => {
                    stats.cache_hits += 1;
                    hash
                }
                _ => {
                    let mut file = std::fs::File::open(path)
                        .with_context(|| format!("read {}", path.display()))?;
                    let hash = if stored {
                        let mut bytes = Vec::with_capacity(meta.len() as usize);
                        file.read_to_end(&mut bytes)?;
                        let hash = sha256_hex(&bytes);
                        if let Some(written) = store.put(&hash, &bytes)? {
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
    let manifest = Manifest { entries };
    let bytes = serde_json::to_vec(&manifest)?;
    let manifest_hash = sha256_hex(&bytes);
    if let Some(written) = store.put(&manifest_hash, &bytes)? {
        stats.new_objects += 1;
        stats.new_bytes += written;
    }
    Ok((manifest, manifest_hash, stats))
}

/// Problems of a stored manifest: the manifest object itself, then every stored file object.
pub fn verify_manifest(store: &ObjectStore, manifest_hash: &str) -> Vec<String> {
    if let Err(problem) = store.verify(manifest_hash) {
        return vec![format!("manifest {problem}")];
    }
    let manifest: Manifest = match store
        .get(manifest_hash)
        .and_then(|b| Ok(serde_json::from_slice(&b)?))
    {
        Ok(manifest) => manifest,
        Err(err) => return vec![format!("manifest {manifest_hash} is unreadable: {err:#}")],
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
        let (manifest, hash, stats) = snapshot(&ws, &store, &mut cache, 1024).unwrap();
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
        let (_, hash2, again) = snapshot(&ws, &store, &mut cache, 1024).unwrap();
        assert_eq!(
            (again.cache_hits, again.new_objects, again.new_bytes),
            (4, 0, 0)
        );
        assert_eq!(hash, hash2);
        std::fs::write(ws.join("src/a.rs"), "fn changed() {}\n").unwrap();
        let (_, _, changed) = snapshot(&ws, &store, &mut cache, 1024).unwrap();
        assert_eq!(changed.cache_hits, 3);
        assert_eq!(
            changed.new_objects, 2,
            "the changed file and the new manifest"
        );
    }

    #[test]
    fn verification_finds_missing_and_corrupt_objects() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join("a"), "alpha").unwrap();
        std::fs::write(ws.join("b"), "beta").unwrap();
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let (_, hash, _) = snapshot(&ws, &store, &mut StatCache::default(), 1 << 20).unwrap();
        std::fs::remove_file(store.path_of(&sha256_hex(b"alpha"))).unwrap();
        std::fs::write(store.path_of(&sha256_hex(b"beta")), "gamma").unwrap();
        let problems = verify_manifest(&store, &hash);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("a: object") && problems[0].ends_with("missing"));
        assert!(problems[1].ends_with("corrupt"));
    }
}
