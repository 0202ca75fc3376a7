//! One cgroup v2 group per agent run, where the unified hierarchy is writable.
//!
//! Theory of operation: a backend makes a directory of its own, `megatest-<pid>-<n>`, under the
//! cgroup megatest itself runs in ([`CgroupTree::create`]), and enables in it the `memory` and
//! `pids` controllers its parent delegates. Every run gets a child group,
//! `<agent>.<seq>` ([`CgroupTree::new_run`]), with `memory.max` and `pids.max` from `[agents]`
//! `memory_limit_mb` / `max_processes` where those controllers are there; the run's first process
//! moves itself in before it execs (`cgroup.procs`), so everything it starts — `setsid`
//! daemons and double forks included, and processes inside bubblewrap's namespaces whose
//! environment megatest cannot read — stays in the group. The group is frozen with
//! `cgroup.freeze`, killed at once with `cgroup.kill` (Linux ≥ 5.14) and removed at the run's
//! end; the escapee sweep reads a process's agent from its group's name.
//!
//! Where cgroup v2 is missing, read-only or too old, [`CgroupTree::create`] says why and runs
//! are process groups with rlimits (see `local`); `final_report.json`'s `containment` says which.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Prefix of the directory a backend makes for its runs.
pub const TREE_PREFIX: &str = "megatest-";

/// Why runs do not get cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 filesystem is mounted (a cgroup v1-only host).
    #[error("no cgroup v2 hierarchy is mounted (/proc/self/mountinfo)")]
    NoUnifiedHierarchy,
    /// megatest's own group is not named in `/proc/self/cgroup`.
    #[error("megatest's own cgroup v2 group is not in /proc/self/cgroup")]
    NoOwnGroup,
    /// The group could not be created or written (read-only mount, no delegation).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The kernel has no `cgroup.kill` (Linux < 5.14).
    #[error("{0}: no cgroup.kill (Linux 5.14 or newer is needed)")]
    NoKill(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The mount point of the cgroup2 filesystem in a `/proc/self/mountinfo` text (pure).
pub fn unified_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mount_point = before.split_whitespace().nth(4)?;
        (after.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The cgroup v2 path (`0::<path>`) in a `/proc/<pid>/cgroup` text (pure).
pub fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim_end)
}

/// The agent of a run group path `…/megatest-<pid>-<n>/<agent>.<seq>` (pure); None for any
/// other path.
pub fn agent_of_path(path: &str) -> Option<String> {
    let mut parts = path.rsplit('/');
    let run = parts.next()?;
    let tree = parts.next()?;
    if !tree.starts_with(TREE_PREFIX) {
        return None;
    }
    let (agent, seq) = run.rsplit_once('.')?;
    (!agent.is_empty() && seq.parse::<u64>().is_ok()).then(|| agent.to_string())
}

/// The run group process `pid` is in, when it is one of megatest's (reads `/proc/<pid>/cgroup`).
pub fn run_group_of(pid: i32) -> Option<RunCgroup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let relative = unified_path(&text)?;
    agent_of_path(relative)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = unified_mount(&mountinfo)?.join(relative.trim_start_matches('/'));
    path.is_dir().then(|| RunCgroup::at(path))
}

/// The agent process `pid` runs for, from its run group's name.
pub fn agent_of_process(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    agent_of_path(unified_path(&text)?)
}

/// A backend's directory of run groups.
#[derive(Debug)]
pub struct CgroupTree {
    dir: PathBuf,
    controllers: BTreeSet<String>,
    seq: AtomicU64,
}

static TREES: AtomicU64 = AtomicU64::new(0);

impl CgroupTree {
    /// Make a tree under the group megatest runs in. Stale trees of dead megatest processes
    /// found there are killed and removed first.
    ///
    /// Errors: [`CgroupError`] saying why runs cannot have groups here.
    pub fn create() -> Result<CgroupTree, CgroupError> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(io_error(Path::new("/proc/self/mountinfo")))?;
        let mount = unified_mount(&mountinfo).ok_or(CgroupError::NoUnifiedHierarchy)?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(io_error(Path::new("/proc/self/cgroup")))?;
        let relative = unified_path(&own).ok_or(CgroupError::NoOwnGroup)?;
        Self::create_under(&mount.join(relative.trim_start_matches('/')))
    }

    /// Make a tree in `parent` (a cgroup v2 directory).
    ///
    /// Errors: as [`CgroupTree::create`].
    pub fn create_under(parent: &Path) -> Result<CgroupTree, CgroupError> {
        remove_stale_trees(parent);
        let n = TREES.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("{TREE_PREFIX}{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).map_err(io_error(&dir))?;
        if !dir.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&dir);
            return Err(CgroupError::NoKill(dir));
        }
        // Making a group is not enough: the delegation rules may still refuse moving a
        // process into it. Try with a short-lived child, as every run's first process will.
        if let Err(err) = probe_entering(&dir) {
            remove_tree(&dir);
            return Err(err);
        }
        let offered = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        let mut controllers = BTreeSet::new();
        for wanted in ["memory", "pids"] {
            if offered.split_whitespace().any(|c| c == wanted)
                && std::fs::write(dir.join("cgroup.subtree_control"), format!("+{wanted}")).is_ok()
            {
                controllers.insert(wanted.to_string());
            }
        }
        Ok(CgroupTree {
            dir,
            controllers,
            seq: AtomicU64::new(0),
        })
    }

    /// The tree's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The controllers its run groups have (`memory`, `pids`; possibly none).
    pub fn controllers(&self) -> &BTreeSet<String> {
        &self.controllers
    }

    /// True when run groups can limit memory (`memory.max`).
    pub fn limits_memory(&self) -> bool {
        self.controllers.contains("memory")
    }

    /// True when run groups can limit processes (`pids.max`).
    pub fn limits_processes(&self) -> bool {
        self.controllers.contains("pids")
    }

    /// A new run group for `agent` (characters other than `[A-Za-z0-9_-]` become `_`), with
    /// `memory.max` = `memory_bytes` and `pids.max` = `processes` where the controllers are.
    ///
    /// Errors: [`CgroupError::Io`] when the group cannot be made or limited (it is removed).
    pub fn new_run(
        &self,
        agent: &str,
        memory_bytes: Option<u64>,
        processes: Option<u64>,
    ) -> Result<RunCgroup, CgroupError> {
        let name: String = agent
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = if name.is_empty() { "run".into() } else { name };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{name}.{seq}"));
        std::fs::create_dir(&path).map_err(io_error(&path))?;
        let run = RunCgroup::at(path);
        let mut limits = Vec::new();
        if let (Some(bytes), true) = (memory_bytes, self.limits_memory()) {
            limits.push(("memory.max", bytes.to_string()));
            // No swap: the limit is the run's memory, not memory plus swap.
            limits.push(("memory.swap.max", "0".to_string()));
        }
        if let (Some(count), true) = (processes, self.limits_processes()) {
            limits.push(("pids.max", count.to_string()));
        }
        for (file, value) in limits {
            let target = run.path.join(file);
            if file == "memory.swap.max" && !target.exists() {
                continue;
            }
            if let Err(source) = std::fs::write(&target, value) {
                let _ = std::fs::remove_dir(&run.path);
                return Err(CgroupError::Io {
                    path: target,
                    source,
                });
            }
        }
        Ok(run)
    }

    /// Kill every process of every run group at once (last-resort cleanup).
    pub fn kill_all(&self) -> bool {
        std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok()
    }

    /// Kill every process of the tree and remove its groups and directory (idempotent; a run
    /// started afterwards gets no cgroup).
    pub fn remove(&self) {
        self.kill_all();
        remove_tree(&self.dir);
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Start `true` moving itself into a `probe` group of `dir` (as runs do), then remove it.
fn probe_entering(dir: &Path) -> Result<(), CgroupError> {
    use std::os::unix::process::CommandExt;
    let path = dir.join("probe");
    std::fs::create_dir(&path).map_err(io_error(&path))?;
    let probe = RunCgroup::at(path.clone());
    let entering = probe.clone();
    let mut command = std::process::Command::new("true");
    command.stdin(std::process::Stdio::null());
    // SAFETY: open, write and close only (see `RunCgroup::enter_from_child`).
    unsafe {
        command.pre_exec(move || entering.enter_from_child());
    }
    let result = command.status();
    probe.remove_blocking();
    match result {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(CgroupError::Io {
            path: path.join("cgroup.procs"),
            source: std::io::Error::other(format!("a probe process ended with {status}")),
        }),
        Err(source) => Err(CgroupError::Io {
            path: path.join("cgroup.procs"),
            source,
        }),
    }
}

/// Kill and remove `megatest-<pid>-<n>` trees in `parent` whose megatest process is gone.
fn remove_stale_trees(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TREE_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if !super::procfs::process_alive(pid) {
            let _ = std::fs::write(entry.path().join("cgroup.kill"), "1");
            remove_tree(&entry.path());
        }
    }
}

/// Remove a tree's run groups (waiting up to a second for each to empty) and the tree.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                RunCgroup::at(entry.path()).remove_blocking();
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// One run's group.
#[derive(Debug, Clone)]
pub struct RunCgroup {
    path: PathBuf,
    procs: CString,
}

impl RunCgroup {
    fn at(path: PathBuf) -> RunCgroup {
        let procs = CString::new(path.join("cgroup.procs").as_os_str().as_bytes())
            .unwrap_or_else(|_| CString::from(c"/nonexistent"));
        RunCgroup { path, procs }
    }

    /// The group's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Move the calling process into the group. Async-signal-safe (open, write, close on a
    /// path prepared before the fork): for `pre_exec`. Errors: the operating system's.
    pub fn enter_from_child(&self) -> std::io::Result<()> {
        use nix::libc;
        // SAFETY: plain system calls on a NUL-terminated path owned by self.
        unsafe {
            let fd = libc::open(self.procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if written != 1 {
                return Err(error);
            }
        }
        Ok(())
    }

    /// Kill every process of the group at once (`cgroup.kill`); false when the group is gone.
    pub fn kill(&self) -> bool {
        std::fs::write(self.path.join("cgroup.kill"), "1").is_ok()
    }

    /// Freeze (true) or thaw (false) every process of the group (`cgroup.freeze`).
    pub fn set_frozen(&self, frozen: bool) -> bool {
        std::fs::write(
            self.path.join("cgroup.freeze"),
            if frozen { "1" } else { "0" },
        )
        .is_ok()
    }

    /// True when the group is frozen (`frozen 1` in `cgroup.events`).
    pub fn is_frozen(&self) -> bool {
        self.event("frozen") == Some(1)
    }

    /// True while any process is in the group (`populated 1` in `cgroup.events`).
    pub fn is_populated(&self) -> bool {
        self.event("populated") == Some(1)
    }

    fn event(&self, key: &str) -> Option<u64> {
        let text = std::fs::read_to_string(self.path.join("cgroup.events")).ok()?;
        text.lines().find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then(|| value.trim().parse().ok())?
        })
    }

    /// The pids in the group now (`cgroup.procs`).
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// Kill what is left, wait (up to 2 wall seconds) for the group to empty, remove it.
    /// True when it is gone.
    pub async fn remove(&self) -> bool {
        for _ in 0..200 {
            if !self.is_populated() {
                break;
            }
            self.set_frozen(false);
            self.kill();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        std::fs::remove_dir(&self.path).is_ok() || !self.path.exists()
    }

    /// [`RunCgroup::remove`] for threads without a runtime (drop paths): up to one second.
    pub fn remove_blocking(&self) -> bool {
        for _ in 0..100 {
            if !self.is_populated() {
                break;
            }
            self.set_frozen(false);
            self.kill();
            std::thread::sleep(Duration::from_millis(10));
        }
        std::fs::remove_dir(&self.path).is_ok() || !self.path.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unified_mount_and_own_path_are_read_from_proc_texts() {
        let mountinfo = "\
36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory
37 25 0:32 / /sys/fs/cgroup/unified rw,relatime shared:15 - cgroup2 cgroup2 rw
40 1 8:1 / / rw - ext4 /dev/sda1 rw";
        assert_eq!(
            unified_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(unified_mount("40 1 8:1 / / rw - ext4 /dev/sda1 rw"), None);
        let own = "4:memory:/x\n0::/user.slice/session-3.scope\n";
        assert_eq!(unified_path(own), Some("/user.slice/session-3.scope"));
        assert_eq!(unified_path("4:memory:/x\n"), None);
    }

    #[test]
    fn a_run_groups_name_gives_its_agent() {
        assert_eq!(
            agent_of_path("/megatest-411-0/agent-2.7"),
            Some("agent-2".to_string())
        );
        assert_eq!(
            agent_of_path("/a/b/megatest-9-3/w.x.12"),
            Some("w.x".to_string())
        );
        for other in [
            "/",
            "/megatest-411-0",
            "/user.slice/agent-2.7",
            "/megatest-1-0/agent-2",
            "/megatest-1-0/.3",
        ] {
            assert_eq!(agent_of_path(other), None, "{other}");
        }
    }
}
