//! The walk behind every snapshot: the [`Manifest`] of a workspace and the contents of its
//! files put into the object store. A full walk lists everything (honouring `.gitignore`, and
//! always skipping build output and dependencies: [`crate::project::GENERATED_DIRS`]); with a
//! [`WorkspaceWatch`], a walk re-examines only the paths changed since the reader's last one and
//! keeps the rest of its last manifest. Both read a file only when the [`StatCache`] does not
//! vouch for it.
//!
//! Measured by `scripts/bench_checkpoint.sh` (10,000 files, 10 changed): a full walk costs about
//! as much as `find` with stat over the tree (≈ 60 ms here, the `lstat` of every path); a
//! watched one, the changed paths and their directories' listings.

use super::error::{CheckpointError, Result, Step};
use super::objects::{sha256_hex, ObjectStore};
use super::watch::{Changes, Scope, WorkspaceWatch};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Paths this walk listed and `lstat`ed: every path in a full walk, the changed ones and
    /// the directories above them in a watched one.
    #[serde(default)]
    pub examined: u64,
}

/// What one reader of the workspace (the checkpoints, the task snapshots) remembers between
/// snapshots: (size, mtime ns, ctime ns, inode) → hash of files already read (and stored, when
/// under the size cap), and — with a [`WorkspaceWatch`] — the manifest it saw last and when, so
/// the next snapshot re-examines only the paths changed since. Objects are never removed behind
/// the cache's back: pruning the store must [`StatCache::forget`] it; `megatest checkpoints
/// --verify` finds objects removed by hand.
#[derive(Debug, Clone, Default)]
pub struct StatCache {
    entries: HashMap<String, (u64, i64, i64, u64, String)>,
    watch: Option<Arc<WorkspaceWatch>>,
    /// (the watch's sequence number, the manifest seen then).
    seen: Option<(u64, Manifest)>,
}

impl StatCache {
    /// A cache whose snapshots of `watch`'s workspace re-examine only what changed.
    pub fn watching(watch: Arc<WorkspaceWatch>) -> StatCache {
        StatCache {
            watch: Some(watch),
            ..StatCache::default()
        }
    }

    /// True when the watch logged changes after this cache's last walk.
    pub fn has_pending(&self) -> bool {
        match (&self.watch, &self.seen) {
            (Some(watch), Some((seq, _))) => {
                watch.changes_since(Some(*seq)).1 != Changes::Paths(BTreeMap::new())
            }
            _ => false,
        }
    }

    /// Forget every hash and the last manifest (the store was pruned); the watch stays.
    pub fn forget(&mut self) {
        self.entries.clear();
        self.seen = None;
    }
}

fn stat_key(meta: &std::fs::Metadata) -> (u64, i64, i64, u64) {
    (
        meta.len(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        meta.ino(),
    )
}

/// Walk order: depth first, names sorted within a directory. With `/` read as `\0`, plain byte
/// order compares component by component (`a` < `a/b` < `a.txt`).
pub(super) fn walk_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// Put `entries` in walk order.
pub(super) fn walk_order(entries: &mut [ManifestEntry]) {
    entries.sort_by(|a, b| walk_cmp(&a.path, &b.path));
}

/// How much a walk looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Everything, whatever the watch says.
    Everything,
    /// What changed since the reader's last walk, when its watch can tell.
    Changed,
}

/// The manifest of `workspace` and figures; file contents go to `store` when given (else only
/// hashed). With a watching `cache` and [`Reach::Changed`], only the paths changed since the
/// cache's last walk are examined.
///
/// Errors: the workspace cannot be walked, or a file cannot be read or stored.
pub(super) fn walk(
    workspace: &Path,
    store: Option<&ObjectStore>,
    cache: &mut StatCache,
    size_cap: u64,
    reach: Reach,
) -> Result<(Manifest, SnapshotStats)> {
    let watch = cache
        .watch
        .clone()
        .filter(|watch| watch.root() == workspace);
    let mut stats = SnapshotStats::default();
    let Some(watch) = watch else {
        let entries = walk_all(workspace, store, cache, size_cap, &mut stats)?;
        return Ok(totals(Manifest { entries }, stats));
    };
    let (now, changes) = watch.changes_since(cache.seen.as_ref().map(|(seq, _)| *seq));
    let seen = cache.seen.take();
    let (manifest, listed_dirs) = match (changes, seen) {
        (Changes::Paths(paths), Some((_, manifest)))
            if reach == Reach::Changed
                && !paths.keys().any(|p| RULE_FILES.contains(&p.as_str()))
                && !linked_rules(&manifest) =>
        {
            // A nested rule file changes what is ignored below it: its directory is re-walked.
            let mut paths = paths;
            let rules: Vec<String> = paths
                .keys()
                .filter_map(|p| p.rsplit_once('/'))
                .filter(|(_, name)| RULE_FILES.contains(name))
                .map(|(dir, _)| dir.to_string())
                .collect();
            for dir in rules {
                paths.insert(dir, Scope::Subtree);
            }
            if paths.is_empty() {
                (manifest, Vec::new())
            } else {
                let targets = Arc::new(Targets::new(paths));
                let found = list(workspace, Some(targets.clone()))?;
                stats.examined = found.len() as u64;
                let found: Vec<_> = found
                    .into_iter()
                    .filter(|(name, _, _)| targets.covers(name))
                    .collect();
                let fresh = examine(found, store, cache, size_cap, &mut stats)?;
                let dirs = directories(&fresh);
                let mut entries: Vec<ManifestEntry> = manifest
                    .entries
                    .into_iter()
                    .filter(|e| !targets.covers(&e.path))
                    .chain(fresh)
                    .collect();
                walk_order(&mut entries);
                (Manifest { entries }, dirs)
            }
        }
        _ => {
            let entries = walk_all(workspace, store, cache, size_cap, &mut stats)?;
            let mut dirs = directories(&entries);
            dirs.push(String::new());
            (Manifest { entries }, dirs)
        }
    };
    watch.watch(listed_dirs.iter().map(String::as_str));
    cache.seen = Some((now, manifest.clone()));
    Ok(totals(manifest, stats))
}

/// The files whose rules the walk honours (`ignore`'s git-ignore and `.ignore` files).
const RULE_FILES: [&str; 2] = [".gitignore", ".ignore"];

/// Every path of `workspace` (see [`walk`]).
fn walk_all(
    workspace: &Path,
    store: Option<&ObjectStore>,
    cache: &mut StatCache,
    size_cap: u64,
    stats: &mut SnapshotStats,
) -> Result<Vec<ManifestEntry>> {
    let found = list(workspace, None)?;
    stats.examined = found.len() as u64;
    examine(found, store, cache, size_cap, stats)
}

/// True when a rule file is a symbolic link: what it says can change without an event on it,
/// so only full walks are trusted.
fn linked_rules(manifest: &Manifest) -> bool {
    manifest.entries.iter().any(|e| {
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        e.kind == EntryKind::Symlink && RULE_FILES.contains(&name)
    })
}

fn directories(entries: &[ManifestEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .map(|e| e.path.clone())
        .collect()
}

/// The counts of `manifest` in `stats` (which holds what was read and written).
fn totals(manifest: Manifest, mut stats: SnapshotStats) -> (Manifest, SnapshotStats) {
    let read = stats.files;
    stats.files = 0;
    for entry in &manifest.entries {
        match entry.kind {
            EntryKind::Dir => stats.dirs += 1,
            EntryKind::Symlink => stats.symlinks += 1,
            EntryKind::File => {
                stats.files += 1;
                stats.bytes += entry.size;
                if !entry.stored {
                    stats.not_stored += 1;
                }
            }
        }
    }
    stats.cache_hits = stats.files.saturating_sub(read);
    (manifest, stats)
}

/// The changed paths a watched walk re-examines.
struct Targets {
    /// Changed paths and how.
    paths: BTreeMap<String, Scope>,
    /// Every directory above a changed path (walked through, not re-examined).
    above: HashSet<String>,
}

impl Targets {
    fn new(paths: BTreeMap<String, Scope>) -> Targets {
        let mut above = HashSet::new();
        for path in paths.keys() {
            let mut rest = path.as_str();
            while let Some((parent, _)) = rest.rsplit_once('/') {
                if !above.insert(parent.to_string()) {
                    break;
                }
                rest = parent;
            }
        }
        Targets { paths, above }
    }

    /// True when `path` is re-examined: changed itself, or under a changed subtree.
    fn covers(&self, path: &str) -> bool {
        if self.paths.contains_key(path) {
            return true;
        }
        let mut rest = path;
        while let Some((parent, _)) = rest.rsplit_once('/') {
            if self.paths.get(parent) == Some(&Scope::Subtree) {
                return true;
            }
            rest = parent;
        }
        false
    }

    /// True when the walk enters or lists `path`.
    fn admits(&self, path: &str) -> bool {
        self.above.contains(path) || self.covers(path)
    }
}

type Found = (String, PathBuf, std::fs::Metadata);

/// Phase 1: walk and `lstat` (everything, in parallel; or only what `targets` admits, serially).
fn list(workspace: &Path, targets: Option<Arc<Targets>>) -> Result<Vec<Found>> {
    let mut builder = ignore::WalkBuilder::new(workspace);
    builder
        .hidden(false)
        .git_ignore(true)
        .git_exclude(false)
        .git_global(false)
        .require_git(false)
        .parents(false)
        .follow_links(false);
    let root = workspace.to_path_buf();
    let serial = targets.is_some();
    builder.filter_entry(move |entry| {
        let generated = crate::project::GENERATED_DIRS
            .iter()
            .any(|name| entry.file_name() == *name);
        !generated
            && targets.as_ref().is_none_or(|targets| {
                let relative = entry.path().strip_prefix(&root).unwrap_or(entry.path());
                targets.admits(&relative.to_string_lossy())
            })
    });
    let visit =
        |item: std::result::Result<ignore::DirEntry, ignore::Error>| -> Result<Option<Found>> {
            let item = item.map_err(|source| CheckpointError::Walk {
                step: workspace.display().to_string(),
                source,
            })?;
            let path = item.path().to_path_buf();
            let relative = path.strip_prefix(workspace).unwrap_or(&path);
            if relative.as_os_str().is_empty() {
                return Ok(None);
            }
            let name = relative.to_string_lossy().replace('\\', "/");
            let meta =
                std::fs::symlink_metadata(&path).step(|| format!("stat {}", path.display()))?;
            Ok(Some((name, path, meta)))
        };
    if serial {
        let mut found = Vec::new();
        for item in builder.build() {
            found.extend(visit(item)?);
        }
        found.sort_by(|a, b| walk_cmp(&a.0, &b.0));
        return Ok(found);
    }
    let found = std::sync::Mutex::new(Vec::new());
    let failure: std::sync::Mutex<Option<CheckpointError>> = std::sync::Mutex::new(None);
    builder.threads(2).build_parallel().run(|| {
        Box::new(|item| match visit(item) {
            Ok(entry) => {
                found
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(entry);
                ignore::WalkState::Continue
            }
            Err(err) => {
                failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(err);
                ignore::WalkState::Quit
            }
        })
    });
    if let Some(err) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(err).step(|| format!("walk {}", workspace.display()));
    }
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort_by(|a, b| walk_cmp(&a.0, &b.0));
    Ok(found)
}

/// Phase 2, in walk order: the stat cache, reading and storing what changed. `stats.files`
/// counts the files read, `new_objects`/`new_bytes` what was stored.
fn examine(
    found: Vec<Found>,
    store: Option<&ObjectStore>,
    cache: &mut StatCache,
    size_cap: u64,
    stats: &mut SnapshotStats,
) -> Result<Vec<ManifestEntry>> {
    let mut entries = Vec::with_capacity(found.len());
    for (name, path, meta) in found {
        let path = path.as_path();
        let mode = meta.permissions().mode() & 0o7777;
        let file_type = meta.file_type();
        let mut entry = ManifestEntry {
            path: name,
            kind: EntryKind::Dir,
            mode,
            size: 0,
            hash: None,
            stored: false,
            target: None,
        };
        if file_type.is_symlink() {
            entry.kind = EntryKind::Symlink;
            entry.target = Some(std::fs::read_link(path)?.to_string_lossy().into_owned());
        } else if file_type.is_file() {
            entry.kind = EntryKind::File;
            entry.size = meta.len();
            entry.stored = meta.len() <= size_cap && store.is_some();
            let key = stat_key(&meta);
            let cached = cache
                .entries
                .get(&entry.path)
                .filter(|c| (c.0, c.1, c.2, c.3) == key)
                .map(|c| c.4.clone());
            let hash = match cached {
                Some(hash) => hash,
                None => {
                    stats.files += 1;
                    let hash = read_file(path, &meta, store.filter(|_| entry.stored), stats)?;
                    cache.entries.insert(
                        entry.path.clone(),
                        (key.0, key.1, key.2, key.3, hash.clone()),
                    );
                    hash
                }
            };
            entry.hash = Some(hash);
        } else if !file_type.is_dir() {
            // Sockets, FIFOs, devices: not part of a snapshot.
            continue;
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Hash the file at `path`, storing its content when `store` is given.
fn read_file(
    path: &Path,
    meta: &std::fs::Metadata,
    store: Option<&ObjectStore>,
    stats: &mut SnapshotStats,
) -> Result<String> {
    let mut file = std::fs::File::open(path).step(|| format!("read {}", path.display()))?;
    let Some(store) = store else {
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher)?;
        return Ok(hex::encode(hasher.finalize()));
    };
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    let hash = sha256_hex(&bytes);
    if let Some(written) = store.put(&hash, &bytes)? {
        stats.new_objects += 1;
        stats.new_bytes += written;
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(ws: &Path, store: &ObjectStore) -> Manifest {
        walk(
            ws,
            Some(store),
            &mut StatCache::default(),
            1 << 20,
            Reach::Everything,
        )
        .unwrap()
        .0
    }

    /// The entries only one side has, or has differently.
    fn differences(a: &Manifest, b: &Manifest) -> Vec<String> {
        let only = |x: &Manifest, y: &Manifest, side: &str| -> Vec<String> {
            x.entries
                .iter()
                .filter(|e| !y.entries.contains(e))
                .map(|e| format!("{side}: {e:?}"))
                .collect()
        };
        let mut out = only(a, b, "watched");
        out.extend(only(b, a, "full"));
        out
    }

    #[test]
    fn a_watched_walk_sees_what_a_full_walk_sees_after_any_changes() {
        // Seed 3 writes a .gitignore through a symbolic link.
        for seed in [3, 7, 36, 51] {
            random_changes(seed);
        }
    }

    fn random_changes(seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("src/deep")).unwrap();
        std::fs::write(ws.join("src/deep/a.rs"), "a").unwrap();
        std::fs::write(ws.join(".gitignore"), "*.log\n").unwrap();
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let watch = WorkspaceWatch::start(&ws);
        let mut cache = StatCache::watching(watch.clone());
        let mut rng = fastrand::Rng::with_seed(seed);
        let dirs = [
            "",
            "src",
            "src/deep",
            "lib",
            "lib/x",
            "target",
            "src/deep/more",
        ];
        let names = ["a.rs", "b.txt", "c.log", "d", ".gitignore"];
        let mut incremental = 0;
        for round in 0..300 {
            let at = ws.join(dirs[rng.usize(..dirs.len())]);
            let path = at.join(names[rng.usize(..names.len())]);
            // Errors are fine: the operation may not apply to what is there now.
            let op = match rng.u8(..9) {
                3 | 4 if at == ws => 1,
                op => op,
            };
            let _ = match op {
                0 => std::fs::create_dir_all(&at),
                1 => std::fs::write(&path, format!("round {round}")),
                2 => std::fs::remove_file(&path),
                3 => std::fs::remove_dir_all(&at),
                4 => std::fs::rename(&at, ws.join(dirs[rng.usize(1..dirs.len())])),
                5 => std::fs::set_permissions(&path, PermissionsExt::from_mode(0o700)),
                6 => std::os::unix::fs::symlink("src", &path),
                7 => std::fs::write(&path, if rng.bool() { "*.txt\n" } else { "deep/\n" }),
                _ => std::fs::write(&path, "x"),
            };
            if rng.u8(..3) > 0 {
                continue;
            }
            let (seen, stats) =
                walk(&ws, Some(&store), &mut cache, 1 << 20, Reach::Changed).unwrap();
            let want = full(&ws, &store);
            assert_eq!(
                differences(&seen, &want),
                Vec::<String>::new(),
                "seed {seed} round {round}"
            );
            assert_eq!(
                seen, want,
                "seed {seed} round {round}: the same entries in the same order"
            );
            assert_eq!(
                stats.files,
                want.entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::File)
                    .count() as u64
            );
            incremental += 1;
        }
        assert!(incremental > 50);
        assert!(watch.watched() > 0, "directories are watched");
    }

    #[test]
    fn a_changed_ignore_file_re_walks_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("sub")).unwrap();
        std::fs::write(ws.join("sub/x.txt"), "x").unwrap();
        std::fs::write(ws.join("sub/y.rs"), "y").unwrap();
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let mut cache = StatCache::watching(WorkspaceWatch::start(&ws));
        walk(&ws, Some(&store), &mut cache, 1 << 20, Reach::Everything).unwrap();
        walk(&ws, Some(&store), &mut cache, 1 << 20, Reach::Changed).unwrap();
        for (rules, file) in [(".ignore", "*.txt\n"), (".gitignore", "*.rs\n")] {
            std::fs::write(ws.join("sub").join(rules), file).unwrap();
            let (seen, _) = walk(&ws, Some(&store), &mut cache, 1 << 20, Reach::Changed).unwrap();
            assert_eq!(seen, full(&ws, &store), "after sub/{rules}");
        }
    }

    #[test]
    fn a_watched_walk_reads_only_the_changed_paths() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        for d in 0..10 {
            std::fs::create_dir_all(ws.join(format!("d{d}"))).unwrap();
            for f in 0..10 {
                std::fs::write(ws.join(format!("d{d}/f{f}")), format!("{d}{f}")).unwrap();
            }
        }
        let store = ObjectStore::open(&dir.path().join("objects")).unwrap();
        let mut cache = StatCache::watching(WorkspaceWatch::start(&ws));
        walk(&ws, Some(&store), &mut cache, 1 << 20, Reach::Everything).unwrap();
        walk(&ws, Some(&store), &mut cache, 1 << 20, Reach::Changed).unwrap();
        std::fs::write(ws.join("d3/f4"), "changed").unwrap();
        let (manifest, stats) =
            walk(&ws, Some(&store), &mut cache, 1 << 20, Reach::Changed).unwrap();
        assert_eq!(manifest, full(&ws, &store));
        assert_eq!(
            (stats.files, stats.cache_hits, stats.new_objects),
            (100, 99, 1)
        );
        assert!(
            stats.examined <= 2,
            "the changed file and its directory, not the tree: {}",
            stats.examined
        );
        let full_walk = walk(
            &ws,
            Some(&store),
            &mut StatCache::default(),
            1 << 20,
            Reach::Everything,
        );
        assert_eq!(full_walk.unwrap().1.examined, 110);
        let (_, stats) = walk(&ws, Some(&store), &mut cache, 1 << 20, Reach::Changed).unwrap();
        assert_eq!(stats.cache_hits, 100, "nothing changed: nothing read");
    }
}
