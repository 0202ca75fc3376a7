//! Backends start agent runs and hand out a handle on each run's group of processes: the
//! [`AgentBackend`] and [`AgentGroup`] traits. [`local`] runs them as child processes of
//! megatest, each in its own process group and, where cgroup v2 is writable, its own cgroup
//! ([`cgroup`]); the ECS backend of a later issue implements the
//! same traits.
//!
//! Architecture invariant: signals reach agents only through this module (an [`AgentGroup`]'s
//! freeze / thaw / kill, a run's stop token, and the daemon-level sweeps in [`local`]).
//! Guarded by `tests/it/architecture.rs` (`signals_are_sent_only_by_the_backend`).

pub mod cgroup;
pub mod ecs;
pub mod escapees;
pub mod local;
pub mod procfs;
pub mod sandbox;

use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What to start.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The program (`sh` for a command template, `/proc/self/exe` for the built-in agent).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The complete environment (the process inherits nothing else).
    pub env: Vec<(String, String)>,
    /// The working directory (the session's workspace).
    pub cwd: PathBuf,
    /// stdout and stderr are appended here.
    pub log_path: PathBuf,
    /// Resource limits set on the process before it starts (inherited by its children).
    pub limits: ResourceLimits,
}

/// Per-process resource limits (`setrlimit`), from `[agents]` `memory_limit_mb`,
/// `cpu_limit_secs`, `max_processes`; None: unlimited (as inherited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResourceLimits {
    /// RLIMIT_DATA, bytes.
    pub memory_bytes: Option<u64>,
    /// RLIMIT_CPU, CPU seconds.
    pub cpu_secs: Option<u64>,
    /// RLIMIT_NPROC, processes of the user.
    pub processes: Option<u64>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// The leader exited by itself.
    Exited,
    /// The step timeout passed and the group was stopped.
    TimedOut,
    /// megatest asked it to stop (phase end, shutdown).
    Stopped,
}

/// How a run ended and with what status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RunOutcome {
    /// Why it ended.
    pub end: RunEnd,
    /// The leader's exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended the leader, when one did.
    pub signal: Option<i32>,
}

impl RunOutcome {
    /// True when the leader exited by itself with status 0.
    pub fn succeeded(&self) -> bool {
        self.end == RunEnd::Exited && self.exit_code == Some(0)
    }
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The agent's log file could not be opened or created.
    #[error("open agent log {path}: {source}")]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The program could not be started (missing, not executable, resource limits).
    #[error("start {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The program exited before its process id could be read.
    #[error("agent exited before its pid was read")]
    NoPid,
}

/// Wall-time bounds of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// The run is stopped when it lasts longer (`[agent].step_timeout_secs`, scaled).
    pub timeout: Duration,
    /// Between the polite stop (SIGTERM locally) and the kill (`[agents].stop_grace_secs`).
    pub grace: Duration,
}

/// A handle on one run's group of processes. Cheap to share; every method is non-blocking and
/// answers whether it had an effect (false: the group is gone or the request was refused).
pub trait AgentGroup: Send + Sync + std::fmt::Debug {
    /// The id recorded in `session.db` and checkpoints (locally: the process group id, which
    /// is the leader's pid).
    fn id(&self) -> u32;
    /// Suspend every process of the group (SIGSTOP locally).
    fn freeze(&self) -> bool;
    /// Continue a frozen group (SIGCONT locally).
    fn thaw(&self) -> bool;
    /// True when the group's leader is suspended, by megatest or anyone else.
    fn is_frozen(&self) -> bool;
    /// Kill every process of the group at once, frozen or not (SIGKILL locally).
    fn kill(&self) -> bool;
}

/// A started run: its group handle and the future that supervises it to its end.
pub struct StartedRun {
    /// The handle on the run's processes.
    pub group: Arc<dyn AgentGroup>,
    /// Resolves when the run has ended and nothing of its group is left: the leader exited,
    /// [`RunLimits::timeout`] passed, or the stop token was cancelled (then the group is stopped
    /// politely, given [`RunLimits::grace`], and killed).
    pub ended: BoxFuture<'static, RunOutcome>,
}

/// Where agent runs execute.
pub trait AgentBackend: Send + Sync {
    /// Start `spec` in a new group, supervised within `limits`; cancelling `stop` ends it.
    ///
    /// Errors: [`StartError`] when nothing was started.
    fn start(
        &self,
        spec: &LaunchSpec,
        limits: RunLimits,
        stop: CancellationToken,
    ) -> Result<StartedRun, StartError>;

    /// A handle on the group recorded as `id` (for groups a persisted pause froze).
    fn group(&self, id: u32) -> Arc<dyn AgentGroup>;

    /// Kill every run this backend started that is still alive, at once (a second signal, an
    /// exit path). Returns how many groups were killed.
    fn kill_all(&self) -> usize;

    /// Kill the processes that left their run's group (see [`escapees`]) unless their agent is
    /// in `busy` (agent ids with a run going); returns those killed.
    fn sweep_escapees(&self, busy: &std::collections::HashSet<String>) -> Vec<escapees::Escapee>;

    /// The session is over: kill what is left and remove what the backend made on the host
    /// (the local backend's cgroup directory). Idempotent.
    fn shutdown(&self);

    /// Where runs get cgroups of their own; Err: why they do not (they are process groups with
    /// rlimits then).
    fn cgroups(&self) -> Result<CgroupInfo, String>;
}

/// The cgroup directory a backend puts its runs in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CgroupInfo {
    /// The backend's directory (`…/megatest-<pid>-<n>`); each run is a group in it.
    pub dir: PathBuf,
    /// The controllers run groups have (`memory`, `pids`; possibly none: then only kill and
    /// freeze are by cgroup, and the limits are rlimits).
    pub controllers: Vec<String>,
}
