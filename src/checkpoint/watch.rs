//! Which workspace paths changed since a snapshot last looked: one inotify instance on the
//! workspace's snapshotted directories, so a snapshot re-examines only those paths instead of
//! walking (and `lstat`ing) the whole tree.
//!
//! Theory of operation: a [`WorkspaceWatch`] keeps a log of changed paths, each with a sequence
//! number. A snapshot that saw the workspace at sequence `s` asks for the paths logged after `s`
//! ([`WorkspaceWatch::changes_since`]); reading the inotify queue without blocking at that moment
//! is the barrier (the kernel queues an event during the syscall that caused it, so every change
//! completed before the call is in the answer). Only directories a snapshot listed are watched
//! (never `target/`, `.git/`, ignored trees); a directory watched for the first time is logged as
//! changed, so changes between its listing and its watch are picked up by the next snapshot.
//! When events may be missing — the kernel queue overflowed, the log outgrew
//! [`LOG_LIMIT`], a watch could not be added (`fs.inotify.max_user_watches`), inotify is not
//! available — the answer is [`Changes::Everything`] and the snapshot walks the whole tree.
//!
//! Not seen by inotify: writes through a shared memory map. Checkpoints therefore walk the whole
//! tree before they freeze the agents (see [`super::snapshot::precopy`]); task snapshots rely on
//! the events.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Changed paths kept at most; beyond it the log is dropped and every snapshot walks the tree
/// once.
pub const LOG_LIMIT: usize = 65_536;

/// How a logged path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Only the entry itself (a directory's mode or times): its contents are unchanged.
    Entry,
    /// The entry and everything under it (created, removed, renamed, written).
    Subtree,
}

/// What changed since a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Unknown: walk everything.
    Everything,
    /// These paths (relative, `/`-separated) and how; nothing else changed.
    Paths(BTreeMap<String, Scope>),
}

/// The watch on one workspace, shared by the snapshots that read it (the checkpoints' and the
/// task snapshots').
#[derive(Debug)]
pub struct WorkspaceWatch {
    root: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// None: no events (never available, or given up): every answer is `Everything`.
    inotify: Option<Inotify>,
    /// Watch → the directory it watches (relative; "" is the root).
    dirs: HashMap<WatchDescriptor, String>,
    /// Directory → its watch.
    watched: HashMap<String, WatchDescriptor>,
    /// (sequence, path, scope), sequences increasing.
    log: Vec<(u64, String, Scope)>,
    /// The newest sequence number handed out.
    seq: u64,
    /// Changes up to this sequence may be missing from the log.
    lost: u64,
}

const MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MODIFY)
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR)
    .union(AddWatchFlags::IN_DONT_FOLLOW);

impl WorkspaceWatch {
    /// A watch on `root` (no directory watched yet: the first snapshot adds them). Never fails:
    /// without inotify (logged) every answer is [`Changes::Everything`].
    pub fn start(root: &Path) -> Arc<WorkspaceWatch> {
        let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(inotify) => Some(inotify),
            Err(err) => {
                tracing::warn!(message = "no workspace events: every snapshot walks the whole workspace", error = %err);
                None
            }
        };
        Arc::new(WorkspaceWatch {
            root: root.to_path_buf(),
            state: Mutex::new(State {
                inotify,
                lost: 1,
                seq: 1,
                ..State::default()
            }),
        })
    }

    /// The watched workspace.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The current sequence number and what changed after `seen` (None: never looked).
    pub fn changes_since(&self, seen: Option<u64>) -> (u64, Changes) {
        let mut state = self.lock();
        state.drain();
        let now = state.seq;
        match seen {
            Some(seen) if seen >= state.lost && state.inotify.is_some() => {
                let mut paths = BTreeMap::new();
                let start = state.log.partition_point(|(seq, _, _)| *seq <= seen);
                for (_, path, scope) in &state.log[start..] {
                    let entry = paths.entry(path.clone()).or_insert(*scope);
                    *entry = (*entry).max(*scope);
                }
                (now, Changes::Paths(paths))
            }
            _ => (now, Changes::Everything),
        }
    }

    /// Watch these directories (relative to the root; "" is the root) — those a snapshot just
    /// listed. A directory not watched before is logged as changed (its listing may predate its
    /// watch). A watch that cannot be added gives events up (logged once): snapshots walk
    /// everything from then on.
    pub fn watch<'a>(&self, dirs: impl IntoIterator<Item = &'a str>) {
        let mut state = self.lock();
        let Some(inotify) = state.inotify.take() else {
            return;
        };
        for dir in dirs {
            let path = if dir.is_empty() {
                self.root.clone()
            } else {
                self.root.join(dir)
            };
            match inotify.add_watch(&path, MASK) {
                Ok(wd) => {
                    if state.dirs.get(&wd).map(String::as_str) == Some(dir) {
                        continue;
                    }
                    if let Some(old) = state.watched.insert(dir.to_string(), wd) {
                        state.dirs.remove(&old);
                    }
                    state.dirs.insert(wd, dir.to_string());
                    if !dir.is_empty() {
                        state.record(dir.to_string(), Scope::Subtree);
                    }
                }
                // Gone since it was listed: its parent's events say so.
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => {}
                Err(err) => {
                    tracing::warn!(
                        message = "cannot watch a workspace directory: every snapshot walks the whole workspace from now on",
                        path = %path.display(),
                        error = %err,
                        hint = "raise fs.inotify.max_user_watches"
                    );
                    state.dirs.clear();
                    state.watched.clear();
                    state.log.clear();
                    return;
                }
            }
        }
        state.inotify = Some(inotify);
    }

    /// Directories watched now.
    pub fn watched(&self) -> usize {
        self.lock().watched.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn record(&mut self, path: String, scope: Scope) {
        self.seq += 1;
        if self.log.len() >= LOG_LIMIT {
            self.log.clear();
            self.lost = self.seq;
            return;
        }
        self.log.push((self.seq, path, scope));
    }

    fn give_up_log(&mut self) {
        self.seq += 1;
        self.lost = self.seq;
        self.log.clear();
    }

    /// Read every queued event into the log.
    fn drain(&mut self) {
        loop {
            let Some(inotify) = &self.inotify else {
                return;
            };
            let events = match inotify.read_events() {
                Ok(events) if !events.is_empty() => events,
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(message = "workspace events unreadable: every snapshot walks the whole workspace from now on", error = %err);
                    self.inotify = None;
                    return;
                }
            };
            for event in events {
                let name = event.name.as_ref().map(|n| n.to_string_lossy());
                self.apply(event.wd, event.mask, name.as_deref());
            }
        }
    }

    fn apply(&mut self, wd: WatchDescriptor, mask: AddWatchFlags, name: Option<&str>) {
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            self.give_up_log();
            return;
        }
        let Some(dir) = self.dirs.get(&wd).cloned() else {
            return;
        };
        if mask.contains(AddWatchFlags::IN_IGNORED) {
            self.dirs.remove(&wd);
            if self.watched.get(&dir) == Some(&wd) {
                self.watched.remove(&dir);
            }
            return;
        }
        match classify(&dir, mask, name) {
            Effect::Nothing => {}
            Effect::Everything => self.give_up_log(),
            Effect::Changed(path, scope) => {
                if mask.contains(AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_ISDIR) {
                    self.unwatch_under(&path);
                }
                self.record(path, scope);
            }
        }
    }

    /// Stop watching `dir` and the directories under it (it moved away: their paths are stale).
    fn unwatch_under(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        let stale: Vec<String> = self
            .watched
            .keys()
            .filter(|path| *path == dir || path.starts_with(&prefix))
            .cloned()
            .collect();
        for path in stale {
            if let Some(wd) = self.watched.remove(&path) {
                self.dirs.remove(&wd);
                if let Some(inotify) = &self.inotify {
                    let _ = inotify.rm_watch(wd);
                }
            }
        }
    }
}

/// What one event means for snapshots.
#[derive(Debug, PartialEq, Eq)]
enum Effect {
    Nothing,
    Everything,
    Changed(String, Scope),
}

/// The pure core: an event on the watch of `dir` (relative; "" is the root), with `mask`, about
/// the entry `name` in it (None: about `dir` itself).
fn classify(dir: &str, mask: AddWatchFlags, name: Option<&str>) -> Effect {
    match name {
        Some(name) => {
            let path = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            // A subdirectory's own mode or times: its contents did not change.
            let entry_only = mask.contains(AddWatchFlags::IN_ISDIR)
                && !mask.intersects(
                    AddWatchFlags::IN_CREATE
                        | AddWatchFlags::IN_DELETE
                        | AddWatchFlags::IN_MOVED_FROM
                        | AddWatchFlags::IN_MOVED_TO,
                );
            let scope = if entry_only {
                Scope::Entry
            } else {
                Scope::Subtree
            };
            Effect::Changed(path, scope)
        }
        None if dir.is_empty() => {
            if mask.intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF) {
                Effect::Everything
            } else {
                Effect::Nothing
            }
        }
        // A watched directory's own change; removal and renaming arrive from its parent too.
        None if mask.contains(AddWatchFlags::IN_ATTRIB) => {
            Effect::Changed(dir.to_string(), Scope::Entry)
        }
        None => Effect::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_changed_paths() {
        let f = AddWatchFlags::empty;
        let cases: &[(&str, AddWatchFlags, Option<&str>, Effect)] = &[
            (
                "",
                AddWatchFlags::IN_MODIFY,
                Some("a.rs"),
                Effect::Changed("a.rs".into(), Scope::Subtree),
            ),
            (
                "src",
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ISDIR,
                Some("m"),
                Effect::Changed("src/m".into(), Scope::Subtree),
            ),
            (
                "src",
                AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_ISDIR,
                Some("m"),
                Effect::Changed("src/m".into(), Scope::Entry),
            ),
            (
                "src",
                AddWatchFlags::IN_ATTRIB,
                None,
                Effect::Changed("src".into(), Scope::Entry),
            ),
            ("src", AddWatchFlags::IN_DELETE_SELF, None, Effect::Nothing),
            ("", AddWatchFlags::IN_DELETE_SELF, None, Effect::Everything),
            ("", AddWatchFlags::IN_MOVE_SELF, None, Effect::Everything),
            ("", AddWatchFlags::IN_ATTRIB, None, Effect::Nothing),
            ("", f(), None, Effect::Nothing),
        ];
        for (dir, mask, name, want) in cases {
            assert_eq!(
                classify(dir, *mask, *name),
                *want,
                "{dir} {mask:?} {name:?}"
            );
        }
    }

    #[test]
    fn a_change_is_answered_once_per_reader_and_new_directories_are_logged() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        let watch = WorkspaceWatch::start(dir.path());
        assert_eq!(watch.changes_since(None).1, Changes::Everything);
        let (seen, _) = watch.changes_since(None);
        watch.watch(["", "src"]);
        assert_eq!(watch.watched(), 2);
        let (seen, changes) = watch.changes_since(Some(seen));
        let want = BTreeMap::from([("src".to_string(), Scope::Subtree)]);
        assert_eq!(changes, Changes::Paths(want), "a newly watched directory");
        // Watching again adds nothing.
        watch.watch(["", "src"]);
        std::fs::write(dir.path().join("src/a.rs"), "fn a() {}").unwrap();
        std::fs::create_dir(dir.path().join("src/m")).unwrap();
        let (later, changes) = watch.changes_since(Some(seen));
        let want = BTreeMap::from([
            ("src/a.rs".to_string(), Scope::Subtree),
            ("src/m".to_string(), Scope::Subtree),
        ]);
        assert_eq!(changes, Changes::Paths(want));
        // Another reader that looked before sees the same; one that looked after sees nothing.
        assert!(matches!(watch.changes_since(Some(seen)).1, Changes::Paths(p) if p.len() == 2));
        assert_eq!(
            watch.changes_since(Some(later)).1,
            Changes::Paths(BTreeMap::new())
        );
        // A directory renamed away is unwatched (its paths are stale), then both names change.
        watch.watch(["src/m"]);
        let (seen, _) = watch.changes_since(Some(later));
        std::fs::rename(dir.path().join("src"), dir.path().join("lib")).unwrap();
        let (_, changes) = watch.changes_since(Some(seen));
        let want = BTreeMap::from([
            ("lib".to_string(), Scope::Subtree),
            ("src".to_string(), Scope::Subtree),
        ]);
        assert_eq!(changes, Changes::Paths(want));
        assert_eq!(watch.watched(), 1, "only the root is still watched");
    }

    #[test]
    fn an_overflowing_log_makes_every_reader_walk_everything() {
        let mut state = State {
            seq: 1,
            lost: 1,
            ..State::default()
        };
        for i in 0..=LOG_LIMIT {
            state.record(format!("f{i}"), Scope::Subtree);
        }
        assert!(state.log.is_empty());
        assert_eq!(state.lost, state.seq);
    }
}
