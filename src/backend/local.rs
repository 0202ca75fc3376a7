//! The local backend: agent processes as children of megatest.
//!
//! Theory of operation: every agent run is `sh -c <command>` (or `megatest agent`) started as
//! the leader of a new process group (`setpgid(0, 0)`), with a cleared environment (only
//! [`crate::agent::INHERITED_ENV`] plus the agent's own variables), `RLIMIT_CORE = 0`, a capped
//! `RLIMIT_NOFILE`, stdin from `/dev/null` and stdout/stderr appended to the agent's log file.
//! [`supervise`] waits for the leader, a step timeout or a stop request; stopping is SIGTERM to
//! the whole group, a grace period, then SIGKILL to the whole group. After the leader has exited
//! for any reason the group gets a SIGKILL as well, so no grandchild outlives its run.
//!
//! Architecture invariant: every live process group is in a process-wide registry;
//! [`kill_all_groups`] (called on every exit path of `megatest run`, panics included) SIGKILLs them.

use super::cgroup::{self, CgroupTree, RunCgroup};
use super::escapees::{self, Escapee};
pub use super::procfs::{process_alive, process_stopped};
use super::{
    AgentBackend, AgentGroup, LaunchSpec, RunEnd, RunLimits, RunOutcome, StartError, StartedRun,
};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Soft and hard `RLIMIT_NOFILE` for agent processes (lowered only, never raised).
pub const NOFILE_LIMIT: u64 = 4096;

static LIVE_GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// A started agent process; its pid is also its process group id.
#[derive(Debug)]
pub struct AgentProcess {
    /// The leader's pid (= the process group id).
    pub pid: u32,
    child: tokio::process::Child,
}

/// The local backend: runs are child processes, each the leader of its own process group and,
/// where cgroup v2 is writable, in a cgroup of its own ([`super::cgroup`]).
#[derive(Debug)]
pub struct LocalBackend {
    cgroups: Result<Arc<CgroupTree>, String>,
    /// Escapees the end of their run's cgroup killed, until the next sweep reports them.
    killed_at_run_end: Arc<Mutex<Vec<Escapee>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for LocalBackend {
    fn default() -> Self {
        LocalBackend::new()
    }
}

impl LocalBackend {
    /// A backend whose runs get cgroups where the host allows (why not is kept for the report).
    pub fn new() -> LocalBackend {
        let cgroups = CgroupTree::create().map(Arc::new).map_err(|err| {
            tracing::debug!(message = "agent runs are process groups without cgroups", reason = %err);
            err.to_string()
        });
        LocalBackend {
            cgroups,
            killed_at_run_end: Default::default(),
        }
    }
}

impl AgentBackend for LocalBackend {
    fn start(
        &self,
        spec: &LaunchSpec,
        limits: RunLimits,
        stop: CancellationToken,
    ) -> Result<StartedRun, StartError> {
        let mut spec = spec.clone();
        let cgroup = match &self.cgroups {
            Ok(tree) => {
                let agent = spec
                    .env
                    .iter()
                    .find(|(k, _)| k == "MEGATEST_AGENT_ID")
                    .map_or("run", |(_, v)| v.as_str());
                match tree.new_run(agent, spec.limits.memory_bytes, spec.limits.processes) {
                    Ok(run) => {
                        // What the group limits is not limited per process as well.
                        if tree.limits_memory() {
                            spec.limits.memory_bytes = None;
                        }
                        if tree.limits_processes() {
                            spec.limits.processes = None;
                        }
                        Some(Arc::new(run))
                    }
                    Err(err) => {
                        tracing::warn!(message = "agent run started without its cgroup", error = %err);
                        None
                    }
                }
            }
            Err(_) => None,
        };
        let process = match spawn_in(&spec, cgroup.as_deref()) {
            Ok(process) => process,
            Err(err) => {
                if let Some(cgroup) = &cgroup {
                    cgroup.remove_blocking();
                }
                return Err(err);
            }
        };
        let group: Arc<dyn AgentGroup> = Arc::new(LocalGroup {
            pgid: process.pid,
            cgroup: cgroup.clone(),
        });
        // The run keeps the backend's cgroup directory (removed with its last user).
        let tree = self.cgroups.as_ref().ok().cloned();
        let killed = self.killed_at_run_end.clone();
        let ended = Box::pin(async move {
            let _tree = tree;
            let outcome = supervise_in(
                process,
                cgroup.as_deref(),
                limits.timeout,
                limits.grace,
                stop,
            )
            .await;
            if let Some(cgroup) = cgroup {
                // Alive after the group kill: they left the process group; the next sweep
                // reports them as the escapees the cgroup kill took.
                let left: Vec<Escapee> = cgroup
                    .pids()
                    .into_iter()
                    .filter(|pid| process_alive(*pid))
                    .map(|pid| Escapee {
                        pid,
                        agent: cgroup::agent_of_process(pid),
                        command: escapees::command_line(pid),
                    })
                    .collect();
                if !left.is_empty() && cgroup.kill() {
                    lock(&killed).extend(left);
                }
                if !cgroup.remove().await {
                    tracing::warn!(message = "an agent run's cgroup could not be removed", cgroup = %cgroup.path().display());
                }
            }
            outcome
        });
        Ok(StartedRun { group, ended })
    }

    fn group(&self, id: u32) -> Arc<dyn AgentGroup> {
        Arc::new(LocalGroup {
            pgid: id,
            cgroup: cgroup::run_group_of(id as i32).map(Arc::new),
        })
    }

    fn sweep_escapees(&self, busy: &std::collections::HashSet<String>) -> Vec<Escapee> {
        let mut killed = std::mem::take(&mut *lock(&self.killed_at_run_end));
        killed.extend(escapees::sweep(busy));
        killed
    }

    fn kill_all(&self) -> usize {
        if let Ok(tree) = &self.cgroups {
            tree.kill_all();
        }
        kill_all_groups()
    }

    fn shutdown(&self) {
        self.kill_all();
        if let Ok(tree) = &self.cgroups {
            tree.remove();
        }
    }

    fn cgroups(&self) -> Result<super::CgroupInfo, String> {
        match &self.cgroups {
            Ok(tree) => Ok(super::CgroupInfo {
                dir: tree.dir().to_path_buf(),
                controllers: tree.controllers().iter().cloned().collect(),
            }),
            Err(reason) => Err(reason.clone()),
        }
    }
}

/// A local run's processes: its process group (named by the leader's pid) and, when it has
/// one, its cgroup (which also holds the processes that left the process group).
#[derive(Debug, Clone)]
pub struct LocalGroup {
    /// The process group id (the leader's pid).
    pub pgid: u32,
    /// The run's cgroup.
    pub cgroup: Option<Arc<RunCgroup>>,
}

impl AgentGroup for LocalGroup {
    fn id(&self) -> u32 {
        self.pgid
    }
    fn freeze(&self) -> bool {
        let frozen = self.cgroup.as_ref().is_some_and(|c| c.set_frozen(true));
        signal_group(self.pgid as i32, Signal::SIGSTOP) || frozen
    }
    fn thaw(&self) -> bool {
        let thawed = self.cgroup.as_ref().is_some_and(|c| c.set_frozen(false));
        signal_group(self.pgid as i32, Signal::SIGCONT) || thawed
    }
    fn is_frozen(&self) -> bool {
        process_stopped(self.pgid as i32) || self.cgroup.as_ref().is_some_and(|c| c.is_frozen())
    }
    fn kill(&self) -> bool {
        let killed = self.cgroup.as_ref().is_some_and(|c| {
            c.set_frozen(false);
            c.is_populated() && c.kill()
        });
        kill_group(self.pgid as i32) || killed
    }
}

/// Start `spec` as the leader of a new process group and register the group.
///
/// Errors: the log file cannot be opened, or the program cannot be started.
pub fn spawn(spec: &LaunchSpec) -> Result<AgentProcess, StartError> {
    spawn_in(spec, None)
}

/// [`spawn`], the process moving itself into `cgroup` before it execs (so its first child is
/// in the group already).
///
/// Errors: as [`spawn`]; a failed move into the cgroup fails the start.
pub fn spawn_in(spec: &LaunchSpec, cgroup: Option<&RunCgroup>) -> Result<AgentProcess, StartError> {
    let log_error = |source| StartError::LogFile {
        path: spec.log_path.clone(),
        source,
    };
    if let Some(parent) = spec.log_path.parent() {
        std::fs::create_dir_all(parent).map_err(log_error)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_path)
        .map_err(log_error)?;
    let log_out = log.try_clone().map_err(log_error)?;
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(log_out)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    let limits = spec.limits;
    let cgroup = cgroup.cloned();
    // SAFETY: setrlimit, open, write and close are async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        command.pre_exec(move || {
            use nix::sys::resource::{getrlimit, setrlimit, Resource};
            if let Some(cgroup) = &cgroup {
                cgroup.enter_from_child()?;
            }
            setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(std::io::Error::from)?;
            for (resource, limit) in [
                (Resource::RLIMIT_DATA, limits.memory_bytes),
                (Resource::RLIMIT_CPU, limits.cpu_secs),
                (Resource::RLIMIT_NPROC, limits.processes),
            ] {
                if let Some(limit) = limit {
                    // The hard limit one unit higher: RLIMIT_CPU sends SIGXCPU at the soft
                    // limit and SIGKILL at the hard one.
                    let (_, hard) = getrlimit(resource).map_err(std::io::Error::from)?;
                    let wanted = if resource == Resource::RLIMIT_CPU {
                        limit + 1
                    } else {
                        limit
                    };
                    setrlimit(resource, limit.min(hard), wanted.min(hard))
                        .map_err(std::io::Error::from)?;
                }
            }
            let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
            setrlimit(
                Resource::RLIMIT_NOFILE,
                soft.min(NOFILE_LIMIT),
                hard.min(NOFILE_LIMIT),
            )
            .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = command.spawn().map_err(|source| StartError::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    let pid = child.id().ok_or(StartError::NoPid)?;
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(pid as i32);
    Ok(AgentProcess { pid, child })
}

/// Wait for `process` to exit, `timeout` (wall) to pass, or `stop` to be cancelled; on the
/// latter two, stop the group (SIGTERM, `grace`, SIGKILL). Always SIGKILLs what is left of the
/// group at the end and unregisters it.
pub async fn supervise(
    process: AgentProcess,
    timeout: Duration,
    grace: Duration,
    stop: CancellationToken,
) -> RunOutcome {
    supervise_in(process, None, timeout, grace, stop).await
}

/// [`supervise`] a run that has `cgroup`: a stop thaws the group first. What is left in the
/// group at the end (processes that left the process group) is the caller's to kill.
pub async fn supervise_in(
    mut process: AgentProcess,
    cgroup: Option<&RunCgroup>,
    timeout: Duration,
    grace: Duration,
    stop: CancellationToken,
) -> RunOutcome {
    let pgid = process.pid as i32;
    let (end, status) = tokio::select! {
        status = process.child.wait() => (RunEnd::Exited, status.ok()),
        _ = tokio::time::sleep(timeout) => (RunEnd::TimedOut, stop_group(&mut process, cgroup, grace).await),
        _ = stop.cancelled() => (RunEnd::Stopped, stop_group(&mut process, cgroup, grace).await),
    };
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&pgid);
    RunOutcome {
        end,
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
    }
}

/// SIGTERM the group, wait up to `grace` for the leader, then SIGKILL the group and reap.
async fn stop_group(
    process: &mut AgentProcess,
    cgroup: Option<&RunCgroup>,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let group = Pid::from_raw(process.pid as i32);
    if let Some(cgroup) = cgroup {
        cgroup.set_frozen(false);
    }
    let _ = killpg(group, Signal::SIGTERM);
    // A stopped group (a hang, a pause) must run to see its SIGTERM.
    let _ = killpg(group, Signal::SIGCONT);
    if let Ok(status) = tokio::time::timeout(grace, process.child.wait()).await {
        let _ = killpg(group, Signal::SIGKILL);
        return status.ok();
    }
    let _ = killpg(group, Signal::SIGKILL);
    process.child.wait().await.ok()
}

/// Send `signal` to process group `pgid`; refused (false) for group ids ≤ 1, which name the
/// caller's own group or every process. True when the signal was delivered.
fn signal_group(pgid: i32, signal: Signal) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), signal).is_ok()
}

/// Kill a process group at once: SIGKILL (SIGCONT first, so a frozen group dies too).
pub fn kill_group(pgid: i32) -> bool {
    signal_group(pgid, Signal::SIGCONT);
    signal_group(pgid, Signal::SIGKILL)
}

/// SIGKILL every registered process group (last-resort cleanup on exit or panic). Returns how
/// many groups were signalled.
pub fn kill_all_groups() -> usize {
    let groups: Vec<i32> = match LIVE_GROUPS.lock() {
        Ok(mut set) => std::mem::take(&mut *set).into_iter().collect(),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner())
            .into_iter()
            .collect(),
    };
    for pgid in &groups {
        let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
    }
    groups.len()
}

/// The process group id of process `pid` (from `/proc/<pid>/stat`), None when it is gone.
fn process_group(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name: state, ppid, pgrp, …
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Kill what is left of the recorded process groups `pgids` of a dead daemon, but only groups
/// that belong to it: a group is killed when any live member's environment contains `needle`
/// (the session directory). Every member is looked at, not only the leader, so a group whose
/// leader already exited (`sh -c 'sleep 600 & exec …'`) is still recognised. Returns how many
/// groups were killed (SIGCONT first, so a frozen group dies too).
pub fn kill_leftover_groups(pgids: &[i64], needle: &str) -> usize {
    let recorded: BTreeSet<i32> = pgids.iter().map(|p| *p as i32).collect();
    let mut ours = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(pgid) = process_group(pid).filter(|g| recorded.contains(g)) else {
            continue;
        };
        if ours.contains(&pgid) {
            continue;
        }
        let belongs = std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()));
        if belongs {
            ours.insert(pgid);
        }
    }
    let mut killed = 0;
    for pgid in ours {
        let group = Pid::from_raw(pgid);
        let _ = killpg(group, Signal::SIGCONT);
        if killpg(group, Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// True if process `pid` is suspended: stopped (state `T`) or in a frozen cgroup of megatest's
/// (a frozen task shows as sleeping).
pub fn process_paused(pid: i32) -> bool {
    process_stopped(pid) || cgroup::run_group_of(pid).is_some_and(|c| c.is_frozen())
}

/// Number of registered live groups.
pub fn live_group_count() -> usize {
    LIVE_GROUPS.lock().map(|s| s.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, dir: &std::path::Path) -> LaunchSpec {
        LaunchSpec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: crate::agent::inherited_env(),
            cwd: dir.to_path_buf(),
            log_path: dir.join("agent.log"),
            limits: Default::default(),
        }
    }

    #[test]
    fn a_leftover_group_without_its_leader_is_found_by_a_member() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let needle = format!("MARK={}", dir.path().display());
        // The leader starts a background child and exits: only the child is left in the group.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 600 & echo $! > child.pid"])
            .env("MARK", dir.path())
            .current_dir(dir.path())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id() as i64;
        leader.wait().unwrap();
        let child: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(process_alive(child));
        // A group recorded for another session (other needle) is left alone.
        assert_eq!(kill_leftover_groups(&[pgid], "MARK=/elsewhere"), 0);
        assert!(process_alive(child));
        assert_eq!(kill_leftover_groups(&[pgid], &needle), 1);
        assert!(!alive(child), "the orphan {child} survived");
    }

    #[tokio::test]
    async fn exit_code_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let process = spawn(&sh("echo hi; exit 7", dir.path())).unwrap();
        let outcome = supervise(
            process,
            Duration::from_secs(10),
            Duration::from_secs(1),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(
            outcome,
            RunOutcome {
                end: RunEnd::Exited,
                exit_code: Some(7),
                signal: None
            }
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap(),
            "hi\n"
        );
    }

    #[tokio::test]
    async fn timeout_kills_a_term_ignoring_group() {
        let dir = tempfile::tempdir().unwrap();
        let process = spawn(&sh(
            "trap '' TERM; sleep 30 & echo $! > child.pid; wait",
            dir.path(),
        ))
        .unwrap();
        let outcome = supervise(
            process,
            Duration::from_millis(300),
            Duration::from_millis(200),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome.end, RunEnd::TimedOut);
        assert_eq!(outcome.signal, Some(libc_sigkill()));
        let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            !crate::backend::local::tests::alive(pid),
            "grandchild {pid} survived"
        );
    }

    #[tokio::test]
    async fn a_group_handle_freezes_thaws_and_kills_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RunLimits {
            timeout: Duration::from_secs(30),
            grace: Duration::from_millis(200),
        };
        let started = LocalBackend::new()
            .start(
                &sh("sleep 30", dir.path()),
                limits,
                CancellationToken::new(),
            )
            .unwrap();
        let group = started.group.clone();
        assert!(group.freeze());
        // Up to 10 s: under load the stop reaches every member late. A stop can also be undone
        // before it is seen (a SIGCONT crossing it, e.g. the kernel's orphaned-group rule on a
        // loaded CI runner), so the freeze is repeated every second, as a pause would be.
        for attempt in 1..=500 {
            if group.is_frozen() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            if attempt % 50 == 0 {
                assert!(group.freeze());
            }
        }
        assert!(
            group.is_frozen(),
            "group {} never showed as stopped: {:?} {:?}",
            group.id(),
            std::fs::read_to_string(format!("/proc/{}/stat", group.id())),
            std::fs::read_to_string(dir.path().join("agent.log"))
        );
        assert!(group.thaw());
        // A handle re-attached by id reaches the same group.
        assert!(LocalBackend::new().group(group.id()).kill());
        let outcome = started.ended.await;
        assert_eq!(outcome.end, RunEnd::Exited);
        assert_eq!(outcome.signal, Some(libc_sigkill()));
    }

    /// True when this host lets megatest make cgroup v2 groups (checked without megatest's
    /// code: a directory made and removed in the unified hierarchy).
    fn host_allows_cgroups() -> bool {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some(mount) = mountinfo.lines().find_map(|l| {
            let (before, after) = l.split_once(" - ")?;
            after
                .starts_with("cgroup2 ")
                .then(|| before.split(' ').nth(4).unwrap().to_string())
        }) else {
            return false;
        };
        let relative = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let probe = std::path::Path::new(&mount)
            .join(relative.trim_start_matches('/'))
            .join(format!("probe-{}", std::process::id()));
        let made = std::fs::create_dir(&probe).is_ok();
        let kill = probe.join("cgroup.kill").exists();
        let _ = std::fs::remove_dir(&probe);
        made && kill
    }

    #[tokio::test]
    async fn a_runs_cgroup_freezes_and_kills_what_left_its_process_group() {
        let backend = LocalBackend::new();
        let info = backend.cgroups();
        if !host_allows_cgroups() {
            let reason = info.expect_err("cgroups on a host that refuses them");
            eprintln!("no cgroup v2 here ({reason}): only the fallback is checked");
            return;
        }
        let info = info.expect("the host allows cgroups but the backend made none");
        let dir = tempfile::tempdir().unwrap();
        let limits = RunLimits {
            timeout: Duration::from_secs(60),
            grace: Duration::from_millis(200),
        };
        // The escapee leaves the process group (setsid) and ticks into a file.
        let script = "setsid sh -c 'while :; do echo x >> tick; sleep 0.02; done' & \
                      echo $! > escapee.pid; sleep 60";
        let mut spec = sh(script, dir.path());
        spec.env
            .push(("MEGATEST_AGENT_ID".into(), "agent-7".into()));
        let started = backend
            .start(&spec, limits, CancellationToken::new())
            .unwrap();
        let group = started.group.clone();
        let tick = dir.path().join("tick");
        let size = || std::fs::metadata(&tick).map(|m| m.len()).unwrap_or(0);
        for _ in 0..500 {
            if size() > 0 && dir.path().join("escapee.pid").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let escapee: i32 = std::fs::read_to_string(dir.path().join("escapee.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // In its run's group, named after its agent, although its environment is not read.
        assert_eq!(
            cgroup::agent_of_process(escapee).as_deref(),
            Some("agent-7")
        );
        assert!(cgroup::run_group_of(escapee)
            .unwrap()
            .path()
            .starts_with(&info.dir));
        assert!(group.freeze());
        for _ in 0..500 {
            if group.is_frozen() && cgroup::run_group_of(escapee).unwrap().is_frozen() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let frozen_at = size();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            size(),
            frozen_at,
            "the escapee ran on while its run was frozen"
        );
        assert!(group.thaw());
        for _ in 0..500 {
            if size() > frozen_at {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(size() > frozen_at, "the escapee was not thawed");
        // A handle re-attached by id finds the run's cgroup, and its kill takes the escapee.
        let run_dir = cgroup::run_group_of(escapee).unwrap().path().to_path_buf();
        assert!(backend.group(group.id()).kill());
        assert!(!alive(escapee), "the escapee {escapee} survived the kill");
        let outcome = started.ended.await;
        assert_eq!(outcome.signal, Some(libc_sigkill()));
        assert!(!run_dir.exists(), "the run's cgroup was not removed");
        drop(backend);
        assert!(
            !info.dir.exists(),
            "the backend's cgroup directory was not removed"
        );
    }

    #[test]
    fn a_failed_start_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = sh("true", dir.path());
        spec.program = dir.path().join("no-such-program");
        let err = spawn(&spec).unwrap_err();
        assert!(matches!(err, StartError::Spawn { .. }), "{err}");
        spec.log_path = dir.path().join("agent.log/under/a/file");
        std::fs::write(dir.path().join("agent.log"), "").unwrap();
        assert!(matches!(
            spawn(&spec).unwrap_err(),
            StartError::LogFile { .. }
        ));
    }

    fn libc_sigkill() -> i32 {
        Signal::SIGKILL as i32
    }

    /// True if `pid` is still alive after up to a second of polling.
    fn alive(pid: i32) -> bool {
        for _ in 0..50 {
            if !process_alive(pid) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}
