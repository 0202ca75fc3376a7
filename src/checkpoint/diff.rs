//! Per-task diffs: what changed in the workspace between two task snapshots (manifests taken by
//! [`super::snapshot::capture`] at the start and the end of a task run), as a list of changed
//! files ([`changes`], pure) and a unified diff read from the object store ([`render`]).
//!
//! The workspace is shared: a diff holds every change made while the run ran, its concurrent
//! runs' changes included (the session records how many runs overlapped).

use super::snapshot::{EntryKind, Manifest, ManifestEntry, ObjectStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// How a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// New since the first snapshot.
    Added,
    /// Content, mode or link target differ.
    Modified,
    /// Gone since the first snapshot.
    Removed,
}

/// One changed file or symbolic link (directories are not listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// Relative to the workspace, `/`-separated.
    pub path: String,
    /// How it changed.
    pub change: ChangeKind,
    /// Bytes after the change (0 when removed).
    pub bytes: u64,
}

/// Most bytes of unified diff [`render`] writes; the rest is named, not shown.
pub const DIFF_LIMIT_BYTES: usize = 256 * 1024;
/// Largest file (bytes) whose content [`render`] diffs line by line.
pub const DIFF_FILE_LIMIT_BYTES: u64 = 1024 * 1024;

/// The files and links that differ between `before` and `after`, in path order.
pub fn changes(before: &Manifest, after: &Manifest) -> Vec<FileChange> {
    let content = |e: &ManifestEntry| e.kind != EntryKind::Dir;
    let old: BTreeMap<&str, &ManifestEntry> = before
        .entries
        .iter()
        .filter(|e| content(e))
        .map(|e| (e.path.as_str(), e))
        .collect();
    let new: BTreeMap<&str, &ManifestEntry> = after
        .entries
        .iter()
        .filter(|e| content(e))
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut out = Vec::new();
    for (path, entry) in &new {
        let change = match old.get(path) {
            None => ChangeKind::Added,
            Some(was)
                if was.hash != entry.hash
                    || was.kind != entry.kind
                    || was.target != entry.target
                    || was.mode != entry.mode =>
            {
                ChangeKind::Modified
            }
            Some(_) => continue,
        };
        out.push(FileChange {
            path: path.to_string(),
            change,
            bytes: entry.size,
        });
    }
    for path in old.keys().filter(|p| !new.contains_key(*p)) {
        out.push(FileChange {
            path: path.to_string(),
            change: ChangeKind::Removed,
            bytes: 0,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// A unified diff of `changes` (`--- a/path` / `+++ b/path` per file), contents read from
/// `store` by the hashes in `before` and `after`. Binary files, files over
/// [`DIFF_FILE_LIMIT_BYTES`] and contents no longer in the store are named with a note; output
/// stops at [`DIFF_LIMIT_BYTES`] with the files left out named.
pub fn render(
    before: &Manifest,
    after: &Manifest,
    changes: &[FileChange],
    store: &ObjectStore,
) -> String {
    let index = |m: &Manifest| -> BTreeMap<String, ManifestEntry> {
        m.entries
            .iter()
            .map(|e| (e.path.clone(), e.clone()))
            .collect()
    };
    let (old, new) = (index(before), index(after));
    let mut out = String::new();
    let mut left_out = Vec::new();
    for change in changes {
        if out.len() >= DIFF_LIMIT_BYTES {
            left_out.push(change.path.as_str());
            continue;
        }
        let text = |entry: Option<&ManifestEntry>| -> Result<String, &'static str> {
            let Some(entry) = entry else {
                return Ok(String::new());
            };
            match entry.kind {
                EntryKind::Symlink => {
                    Ok(format!("-> {}\n", entry.target.clone().unwrap_or_default()))
                }
                EntryKind::Dir => Ok(String::new()),
                EntryKind::File if entry.size > DIFF_FILE_LIMIT_BYTES => Err("too large to show"),
                EntryKind::File => {
                    let hash = entry.hash.as_deref().ok_or("content not recorded")?;
                    let bytes = store.get(hash).map_err(|_| "content no longer stored")?;
                    if bytes.contains(&0) {
                        return Err("binary");
                    }
                    String::from_utf8(bytes).map_err(|_| "binary")
                }
            }
        };
        let path = &change.path;
        match (text(old.get(path)), text(new.get(path))) {
            (Ok(a), Ok(b)) => {
                let diff = similar::TextDiff::configure()
                    .timeout(Duration::from_millis(200))
                    .diff_lines(&a, &b);
                let from = if change.change == ChangeKind::Added {
                    "/dev/null".to_string()
                } else {
                    format!("a/{path}")
                };
                let to = if change.change == ChangeKind::Removed {
                    "/dev/null".to_string()
                } else {
                    format!("b/{path}")
                };
                let _ = write!(out, "{}", diff.unified_diff().header(&from, &to));
                if a == b {
                    // Mode change only.
                    let _ = writeln!(out, "--- a/{path}\n+++ b/{path}\n(mode changed)");
                }
            }
            (a, b) => {
                let why = a.err().or(b.err()).unwrap_or("not shown");
                let _ = writeln!(
                    out,
                    "--- a/{path}\n+++ b/{path}\n({:?}: {why})",
                    change.change
                );
            }
        }
    }
    if !left_out.is_empty() {
        let _ = writeln!(
            out,
            "\n({} more changed files not shown, over {DIFF_LIMIT_BYTES} bytes of diff: {})",
            left_out.len(),
            left_out.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::snapshot::{capture, StatCache};

    #[test]
    fn changes_and_their_unified_diff_between_two_captures() {
        let dir = tempfile::tempdir().unwrap();
        let (workspace, objects) = (dir.path().join("w"), dir.path().join("objects"));
        std::fs::create_dir_all(workspace.join("src")).unwrap();
        std::fs::write(workspace.join("src/lib.rs"), "fn a() {}\nfn b() {}\n").unwrap();
        std::fs::write(workspace.join("gone.txt"), "bye\n").unwrap();
        std::fs::write(workspace.join("same.txt"), "same\n").unwrap();
        std::fs::write(workspace.join("blob.bin"), [0u8, 1, 2]).unwrap();
        let store = ObjectStore::open(&objects).unwrap();
        let mut cache = StatCache::default();
        let (before, _) = capture(&workspace, &store, &mut cache, 1 << 20).unwrap();
        std::fs::write(workspace.join("src/lib.rs"), "fn a() {}\nfn c() {}\n").unwrap();
        std::fs::remove_file(workspace.join("gone.txt")).unwrap();
        std::fs::create_dir_all(workspace.join("tests")).unwrap();
        std::fs::write(workspace.join("tests/t.rs"), "#[test]\nfn t() {}\n").unwrap();
        std::fs::write(workspace.join("blob.bin"), [0u8, 9]).unwrap();
        let (after, _) = capture(&workspace, &store, &mut cache, 1 << 20).unwrap();
        let found = changes(&before, &after);
        let summary: Vec<(&str, ChangeKind)> =
            found.iter().map(|c| (c.path.as_str(), c.change)).collect();
        assert_eq!(
            summary,
            vec![
                ("blob.bin", ChangeKind::Modified),
                ("gone.txt", ChangeKind::Removed),
                ("src/lib.rs", ChangeKind::Modified),
                ("tests/t.rs", ChangeKind::Added),
            ]
        );
        let diff = render(&before, &after, &found, &store);
        assert!(
            diff.contains("--- a/src/lib.rs\n+++ b/src/lib.rs\n"),
            "{diff}"
        );
        assert!(diff.contains("-fn b() {}\n+fn c() {}\n"), "{diff}");
        assert!(diff.contains("--- /dev/null\n+++ b/tests/t.rs\n"), "{diff}");
        assert!(diff.contains("--- a/gone.txt\n+++ /dev/null\n"), "{diff}");
        assert!(diff.contains("-bye\n"), "{diff}");
        assert!(diff.contains("(Modified: binary)"), "{diff}");
        assert!(!diff.contains("same.txt"), "{diff}");
        // No change: nothing listed.
        assert!(changes(&after, &after).is_empty());
    }
}
