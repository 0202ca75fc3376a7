//! The session half of the recovery table ([`crate::recovery`]): detection of the failures
//! only the session can see (agent crash, hang, out of memory, test failure, full disk, …),
//! the session-level actions (restart, reassign, compress and retry, pause and alert, escalate,
//! stop), the `recoveries` rows, alerts, and `[chaos]` injection.
//!
//! Times: `not_before`, escalation deadlines and pause times are session seconds; the watchdog
//! runs every [`watchdog_period`] of wall time.

use super::{Session, TaskState};
use crate::config::raw::{ChaosFault, NotifyEvent, RecoveryAction};
use crate::protocol::CallRecovery;
use crate::recovery::{action_str, is_in_call, severity_str, Decision, FailureKind};
use crate::store::RecoveryRow;
use anyhow::Result;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest filler `[chaos]` `fill_disk` writes: beyond it the fault is skipped (logged),
/// so a chaos run never fills a large real disk.
pub const CHAOS_FILL_CAP_BYTES: u64 = 2 << 30;

/// Recovery state the session keeps beside its task board.
pub(super) struct RecoveryState {
    /// Shared with the proxy; replaced on a config reload.
    pub table: Arc<std::sync::RwLock<crate::recovery::RecoveryTable>>,
    /// Open recoveries per task index: resolved when the task finishes (recovered) or fails.
    task_open: HashMap<usize, Vec<i64>>,
    /// Open `test_failure` recoveries per check name: recovered when that check passes.
    check_open: HashMap<String, Vec<i64>>,
    /// Open `parse_failure` recoveries per agent: recovered by its next clean call.
    parse_open: HashMap<usize, i64>,
    /// Agents whose next request gets the corrective note (`retry_with_modification`).
    pub corrective_due: HashSet<usize>,
    pub pause: Option<Pause>,
    pub paused_tx: tokio::sync::watch::Sender<bool>,
    consecutive_errors: u32,
    escalations: Vec<Escalation>,
    /// Wall milliseconds since the Unix epoch of the last workspace change (`notify`).
    workspace_changed_ms: Arc<AtomicU64>,
    _watcher: Option<notify::RecommendedWatcher>,
    /// The ballast file (`[recovery].disk_reserve_mb`), deleted when the disk fills.
    reserve: Option<PathBuf>,
    chaos_fired: Vec<bool>,
    /// A `fill_disk` filler and the session second it is deleted again.
    chaos_fill: Option<(PathBuf, f64)>,
    /// Set by `stop_session` (and an unanswered escalation that defaults to it).
    pub stop: Option<String>,
    /// Memory pressure was reported and has not cleared yet.
    memory_pressure: bool,
    system: sysinfo::System,
    /// Set by `restore_checkpoint`: (recovery id, checkpoint to restore). After the report,
    /// the session is rolled back to it (or the previous valid one) and continues.
    pub restore: Option<(i64, u32)>,
    notifier: Notifier,
}

/// A paused session (`pause_and_alert`).
pub(super) struct Pause {
    /// The recovery that paused the session; None for an operator's pause.
    recovery_id: Option<i64>,
    /// The failure to wait out; None for an operator's pause (only an operator continues it).
    kind: Option<FailureKind>,
    since_session_secs: f64,
    checks: u32,
    /// Process groups megatest stopped (SIGSTOP) for the pause.
    groups: Vec<i32>,
}

struct Escalation {
    recovery_id: i64,
    kind: FailureKind,
    task_idx: Option<usize>,
    deadline_session_secs: f64,
}

impl RecoveryState {
    /// The current table (read lock; the proxy reads it too).
    pub fn table(&self) -> std::sync::RwLockReadGuard<'_, crate::recovery::RecoveryTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A reloaded table (SIGHUP): the proxy sees it at its next failure.
    pub fn set_table(&self, table: crate::recovery::RecoveryTable) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// A reloaded `[notifications]`.
    pub fn set_notifier(&mut self, config: &crate::config::raw::Notifications) {
        self.notifier = Notifier::new(config);
    }

    pub fn new(
        config: &crate::config::Config,
        workspace: &std::path::Path,
        dir: &std::path::Path,
    ) -> Result<(RecoveryState, tokio::sync::watch::Receiver<bool>)> {
        let table = crate::recovery::RecoveryTable::new(
            &config.raw.error_handling,
            &config.raw.checkpoint.retry_policy(),
        )
        .map_err(|(key, message)| anyhow::anyhow!("{key}: {message}"))?;
        let (paused_tx, paused_rx) = tokio::sync::watch::channel(false);
        let workspace_changed_ms = Arc::new(AtomicU64::new(unix_ms()));
        let watcher = watch_workspace(workspace, workspace_changed_ms.clone());
        let reserve = make_reserve(dir, disk_limits(config, dir).1);
        Ok((
            RecoveryState {
                table: Arc::new(std::sync::RwLock::new(table)),
                task_open: HashMap::new(),
                check_open: HashMap::new(),
                parse_open: HashMap::new(),
                corrective_due: HashSet::new(),
                pause: None,
                paused_tx,
                consecutive_errors: 0,
                escalations: Vec::new(),
                workspace_changed_ms,
                _watcher: watcher,
                reserve,
                chaos_fired: vec![false; config.raw.chaos.events.len()],
                chaos_fill: None,
                stop: None,
                restore: None,
                memory_pressure: false,
                system: sysinfo::System::new(),
                notifier: Notifier::new(&config.raw.notifications),
            },
            paused_rx,
        ))
    }
}

/// Watch the workspace recursively; every change stamps `changed_ms`. None (logged) when the
/// watch cannot be set up: hang detection then relies on calls, tool calls and output.
fn watch_workspace(
    workspace: &std::path::Path,
    changed_ms: Arc<AtomicU64>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            changed_ms.store(unix_ms(), Ordering::Relaxed);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(message = "workspace watch unavailable", error = %err);
            return None;
        }
    };
    if let Err(err) = watcher.watch(workspace, notify::RecursiveMode::Recursive) {
        tracing::warn!(message = "workspace watch unavailable", error = %err);
        return None;
    }
    Some(watcher)
}

fn make_reserve(dir: &std::path::Path, bytes: u64) -> Option<PathBuf> {
    if bytes == 0 {
        return None;
    }
    let path = dir.join(".disk_reserve");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    };
    match write() {
        Ok(()) => Some(path),
        Err(err) => {
            let _ = std::fs::remove_file(&path);
            tracing::warn!(message = "could not write the disk reserve", error = %err);
            None
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How often the watchdog checks idle agents, the disk, escalations, chaos events and a
/// paused session: every 500 ms of wall time, or a quarter of the scaled idle limit if that is
/// shorter (at least 20 ms).
pub(super) fn watchdog_period(config: &crate::config::Config) -> Duration {
    Duration::from_secs_f64((idle_limit(config).as_secs_f64() / 4.0).clamp(0.02, 0.5))
}

/// Wall time without activity after which a running agent is `agent_hang`:
/// `[recovery].agent_idle_minutes` scaled, but never under `agent_idle_floor_secs`.
pub(super) fn idle_limit(config: &crate::config::Config) -> Duration {
    let r = &config.raw.recovery;
    Duration::from_secs_f64(
        (r.agent_idle_minutes * 60.0 / config.time_scale).max(r.agent_idle_floor_secs),
    )
}

/// The disk limits for the filesystem holding `dir`: (free bytes under which it is full,
/// bytes of the ballast reserve). `[recovery].min_free_disk_mb` and `disk_reserve_mb`, but at
/// most 10 % and 5 % of the filesystem, so a small runs filesystem is not full from the start.
pub fn disk_limits(config: &crate::config::Config, dir: &std::path::Path) -> (u64, u64) {
    let r = &config.raw.recovery;
    let total = nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(u64::MAX);
    (
        (r.min_free_disk_mb << 20).min(total / 10),
        (r.disk_reserve_mb << 20).min(total / 20),
    )
}

/// Free bytes for unprivileged writers on the filesystem holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// True when `err` (anywhere in its chain) is a full disk: ENOSPC / EDQUOT, or SQLite's
/// SQLITE_FULL.
pub fn is_disk_full(err: &anyhow::Error) -> bool {
    crate::store::is_sqlite_full(err)
        || err.chain().any(|cause| {
            cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(io.raw_os_error(), Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT)
                    || io.kind() == std::io::ErrorKind::StorageFull
            })
        })
}

/// True when `err` is a permission failure (EACCES / EPERM).
pub fn is_permission_denied(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    })
}

/// Out-of-memory evidence in an agent's log tail (allocation failures of common runtimes).
pub fn oom_in_log(tail: &str) -> bool {
    const SIGNS: [&str; 6] = [
        "MemoryError",
        "Cannot allocate memory",
        "out of memory",
        "memory allocation of",
        "std::bad_alloc",
        "JavaScript heap out of memory",
    ];
    SIGNS.iter().any(|s| tail.contains(s))
}

/// Permission failures in an agent's log tail (EACCES / EPERM as the C library, Python and
/// Node print them).
pub fn permission_denied_in_log(tail: &str) -> bool {
    const SIGNS: [&str; 3] = ["Permission denied", "Operation not permitted", "EACCES"];
    SIGNS.iter().any(|s| tail.contains(s))
}

/// The kernel's count of OOM kills in megatest's cgroup (cgroup v2 `memory.events`), if
/// readable.
pub fn cgroup_oom_kills() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let events =
        std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.events", path.trim())).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

fn tail_of(path: &std::path::Path, bytes: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

impl Session {
    /// A failure the session detected: log it (`error` event), choose the rule, open a
    /// recovery, alert, and carry out the action.
    pub(super) fn failure(
        &mut self,
        kind: FailureKind,
        agent_idx: Option<usize>,
        task_idx: Option<usize>,
        message: &str,
    ) -> Result<()> {
        let agent_id = agent_idx.map(|a| self.agents[a].id.clone());
        let task_id = task_idx.map(|t| self.tasks[t].spec.id.clone());
        self.record_error(
            kind.as_str(),
            agent_id.as_deref(),
            task_id.as_deref(),
            message,
        )?;
        let decision = self.recovery.table().decide(kind, message);
        self.act(kind, decision, agent_idx, task_idx, message)
    }

    /// A failure that gets no action: recorded as an error and as a `recoveries` row that is
    /// closed at once with `outcome` (a task's last allowed attempt failed: `failed`; bad
    /// lines in an agent's events file skipped: `skipped`). Every failure ends as a row.
    pub(super) fn failure_without_action(
        &mut self,
        kind: FailureKind,
        agent_idx: Option<usize>,
        task_idx: Option<usize>,
        message: &str,
        outcome: &str,
    ) -> Result<()> {
        let agent_id = agent_idx.map(|a| self.agents[a].id.clone());
        let task_id = task_idx.map(|t| self.tasks[t].spec.id.clone());
        self.record_error(
            kind.as_str(),
            agent_id.as_deref(),
            task_id.as_deref(),
            message,
        )?;
        let decision = self.recovery.table().decide(kind, message);
        let id = self.open_recovery(kind, &decision, agent_idx, task_idx, message)?;
        self.resolve(id, outcome, 0)
    }

    /// Open a recovery row for `decision` and carry out its action.
    fn act(
        &mut self,
        kind: FailureKind,
        decision: Decision,
        agent_idx: Option<usize>,
        task_idx: Option<usize>,
        message: &str,
    ) -> Result<()> {
        let id = self.open_recovery(kind, &decision, agent_idx, task_idx, message)?;
        self.recovery.consecutive_errors += 1;
        let limit = self.recovery.table().max_consecutive_errors;
        let mut action = decision.action;
        // In-call actions for a failure the session saw: a retry means running the task again.
        if is_in_call(action) && action != RecoveryAction::LogAndContinue {
            action = RecoveryAction::RestartAgent;
        }
        tracing::warn!(message = "recovery", failure_kind = kind.as_str(), rule = %decision.rule, action = action_str(action), agent = ?agent_idx.map(|a| &self.agents[a].id), detail = message);
        match action {
            RecoveryAction::RestartAgent
            | RecoveryAction::CompressAndRetry
            | RecoveryAction::Reassign => {
                self.requeue(id, kind, action, agent_idx, task_idx, message)?
            }
            RecoveryAction::LogAndContinue => match (kind, task_idx) {
                (FailureKind::TestFailure | FailureKind::TestRuntimeExceeded, _) => {
                    let check = message.split(':').next().unwrap_or("").to_string();
                    self.recovery.check_open.entry(check).or_default().push(id);
                }
                (_, Some(task_idx)) => {
                    self.recovery
                        .task_open
                        .entry(task_idx)
                        .or_default()
                        .push(id);
                    self.release_task(task_idx, None, message);
                }
                _ => self.resolve(id, "recovered", 1)?,
            },
            RecoveryAction::PauseAndAlert => self.pause(id, kind, message)?,
            RecoveryAction::Escalate => self.escalate(id, kind, task_idx, message)?,
            RecoveryAction::StopSession => {
                if let Some(task_idx) = task_idx {
                    self.release_task(task_idx, None, message);
                }
                self.resolve(id, "failed", 1)?;
                self.recovery.stop = Some(format!(
                    "recovery rule {} stopped the session after {}: {message}",
                    decision.rule,
                    kind.as_str()
                ));
            }
            RecoveryAction::RestoreCheckpoint => {
                if let Some(task_idx) = task_idx {
                    self.release_task(task_idx, None, message);
                }
                let latest = self.store.last_checkpoint()?.map(|c| c.seq);
                match latest {
                    Some(seq) => {
                        self.recovery.restore = Some((id, seq));
                        self.recovery.stop = Some(format!(
                            "{} is fatal: the session stopped to restore checkpoint {seq} (or the last valid one before it) and continue — {message}",
                            kind.as_str()
                        ));
                    }
                    None => {
                        self.resolve(id, "failed", 1)?;
                        self.recovery.stop = Some(format!(
                            "{} is fatal: the session stopped and has no checkpoint to restore — {message}",
                            kind.as_str()
                        ));
                    }
                }
            }
            RecoveryAction::RetryImmediate
            | RecoveryAction::RetryWithBackoff
            | RecoveryAction::SwitchModel
            | RecoveryAction::RetryWithModification => unreachable!("mapped above"),
        }
        if self.recovery.consecutive_errors >= limit && self.recovery.pause.is_none() {
            let message = format!(
                "{} failures in a row without a success (error_handling.max_consecutive_errors = {limit})",
                self.recovery.consecutive_errors
            );
            let decision = Decision {
                rule: "error_handling.max_consecutive_errors".into(),
                severity: crate::config::raw::Severity::Critical,
                action: RecoveryAction::PauseAndAlert,
            };
            let id = self.open_recovery(kind, &decision, None, None, &message)?;
            self.pause(id, kind, &message)?;
        }
        Ok(())
    }

    /// Something went right (a clean model call, a finished task): the consecutive-error count
    /// starts again.
    pub(super) fn success_seen(&mut self) {
        self.recovery.consecutive_errors = 0;
    }

    fn open_recovery(
        &mut self,
        kind: FailureKind,
        decision: &Decision,
        agent_idx: Option<usize>,
        task_idx: Option<usize>,
        message: &str,
    ) -> Result<i64> {
        let row = RecoveryRow {
            id: 0,
            failure_kind: kind.as_str().into(),
            severity: severity_str(decision.severity).into(),
            detected_at: super::now(),
            detected_session_secs: self.clock.session_secs(),
            rule: decision.rule.clone(),
            action: action_str(decision.action).into(),
            attempts: 0,
            outcome: None,
            time_to_recover_session_secs: None,
            agent_id: agent_idx.map(|a| self.agents[a].id.clone()),
            task_id: task_idx.map(|t| self.tasks[t].spec.id.clone()),
            detail: message.into(),
        };
        let id = self.store.insert_recovery(&row)?;
        let event = if decision.action == RecoveryAction::Escalate {
            NotifyEvent::Escalation
        } else {
            NotifyEvent::Error
        };
        self.alert(
            event,
            decision.severity,
            &format!("{}: {message}", kind.as_str()),
            serde_json::json!({"recovery_id": id, "failure_kind": kind.as_str(), "rule": decision.rule, "action": action_str(decision.action), "agent_id": row.agent_id, "task_id": row.task_id}),
        )?;
        Ok(id)
    }

    pub(super) fn resolve(&mut self, id: i64, outcome: &str, attempts: u32) -> Result<()> {
        let now = self.clock.session_secs();
        self.store.resolve_recovery(id, outcome, attempts, now)?;
        self.event(
            "recovery_resolved",
            None,
            None,
            None,
            serde_json::json!({"recovery_id": id, "outcome": outcome, "attempts": attempts}),
        )?;
        Ok(())
    }

    /// A call that failed at least once ended (from the proxy): one recovery row per failed
    /// attempt, or the session-level action of the failure that ended the call.
    pub(super) fn call_recovery(&mut self, r: CallRecovery) -> Result<()> {
        let agent_idx = Some(r.agent_idx).filter(|&a| a < self.agents.len());
        let task_idx = r
            .task_id
            .as_ref()
            .and_then(|id| self.tasks.iter().position(|t| &t.spec.id == id));
        let now = self.clock.session_secs();
        let scale = self.prepared.config.time_scale;
        for failure in r.failures {
            let action = failure.decision.action;
            if failure.action.is_none() && !r.recovered && !is_in_call(action) {
                // The call ended here; the rule's action is the session's to carry out.
                self.act(
                    failure.kind,
                    failure.decision,
                    agent_idx,
                    task_idx,
                    &failure.message,
                )?;
                continue;
            }
            if failure.kind == FailureKind::ParseFailure
                && failure.action.is_none()
                && !r.recovered
                && action == RecoveryAction::RetryWithModification
                && r.attempts == failure.attempt
            {
                // An answer with malformed tool-call arguments went to the agent: its next
                // request carries the corrective note; the recovery closes with its next
                // clean call.
                let id = self.open_recovery(
                    failure.kind,
                    &failure.decision,
                    agent_idx,
                    task_idx,
                    &failure.message,
                )?;
                if let Some(agent_idx) = agent_idx {
                    self.recovery.corrective_due.insert(agent_idx);
                    if let Some(old) = self.recovery.parse_open.insert(agent_idx, id) {
                        self.resolve(old, "failed", 1)?;
                    }
                }
                continue;
            }
            let took = failure.wall_secs * scale;
            let row = RecoveryRow {
                id: 0,
                failure_kind: failure.kind.as_str().into(),
                severity: severity_str(failure.decision.severity).into(),
                detected_at: super::now(),
                detected_session_secs: (now - took).max(0.0),
                rule: failure.decision.rule.clone(),
                action: failure.action.unwrap_or(action_str(action)).into(),
                attempts: r.attempts - failure.attempt + u32::from(!r.recovered),
                outcome: Some(if r.recovered { "recovered" } else { "failed" }.into()),
                time_to_recover_session_secs: Some(took),
                agent_id: Some(r.agent_id.clone()),
                task_id: r.task_id.clone(),
                detail: format!("attempt {}: {}", failure.attempt, failure.message),
            };
            let id = self.store.insert_recovery(&row)?;
            if !r.recovered {
                self.recovery.consecutive_errors += 1;
                self.alert(
                    NotifyEvent::Error,
                    failure.decision.severity,
                    &format!("{}: {} — not recovered after {} attempts", failure.kind.as_str(), failure.message, r.attempts),
                    serde_json::json!({"recovery_id": id, "failure_kind": failure.kind.as_str(), "agent_id": r.agent_id}),
                )?;
            }
        }
        if r.recovered {
            self.success_seen();
        }
        Ok(())
    }

    /// A clean model call of `agent_idx` (status 200, no parse failure).
    pub(super) fn clean_call(&mut self, agent_idx: usize) -> Result<()> {
        self.success_seen();
        if let Some(id) = self.recovery.parse_open.remove(&agent_idx) {
            self.resolve(id, "recovered", 2)?;
        }
        Ok(())
    }

    /// Put a task back on the board after `restart_agent` (same agent, after the backoff),
    /// `compress_and_retry` (same agent, fresh context with a handoff summary) or `reassign`
    /// (another agent when there is one). If the agent is still running the task, its run is
    /// stopped first and this happens when the run has ended.
    fn requeue(
        &mut self,
        id: i64,
        kind: FailureKind,
        action: RecoveryAction,
        agent_idx: Option<usize>,
        task_idx: Option<usize>,
        message: &str,
    ) -> Result<()> {
        let Some(task_idx) = task_idx else {
            // Nothing to run again (e.g. a call outside any task): nothing left to recover.
            return self.resolve(id, "recovered", 1);
        };
        self.recovery
            .task_open
            .entry(task_idx)
            .or_default()
            .push(id);
        if let Some(agent_idx) = agent_idx {
            let running = self.agents[agent_idx]
                .running
                .as_mut()
                .filter(|r| r.task_idx == task_idx);
            if let Some(running) = running {
                running.ended_by = Some((kind, action, message.to_string()));
                running.stop.cancel();
                return Ok(());
            }
        }
        let attempt = self.tasks[task_idx].attempts;
        if self.tasks[task_idx].state == TaskState::Failed {
            return Ok(()); // out of attempts: resolved as failed by the caller's settle
        }
        let handoff = (action == RecoveryAction::CompressAndRetry)
            .then(|| self.handoff_summary(agent_idx, task_idx, message));
        let wait = self
            .recovery
            .table()
            .backoff
            .session_secs(attempt.saturating_sub(1));
        let now = self.clock.session_secs();
        let task = &mut self.tasks[task_idx];
        match action {
            RecoveryAction::RestartAgent | RecoveryAction::CompressAndRetry => {
                task.reserved_for = agent_idx;
                task.not_before = now + wait;
                task.handoff = handoff;
            }
            _ => {
                task.reserved_for = None;
                task.avoid = agent_idx;
                task.not_before = 0.0;
            }
        }
        Ok(())
    }

    /// Back on the board without preference (log_and_continue, stop).
    fn release_task(&mut self, task_idx: usize, agent_idx: Option<usize>, _message: &str) {
        let task = &mut self.tasks[task_idx];
        task.reserved_for = None;
        task.avoid = agent_idx;
    }

    /// What a fresh run of the task needs to know instead of the previous run's context:
    /// the failure, the tool calls the previous runs made and the tail of the agent's output.
    fn handoff_summary(&self, agent_idx: Option<usize>, task_idx: usize, message: &str) -> String {
        let task = &self.tasks[task_idx];
        let mut out = format!(
            "## Handoff summary (compress_and_retry)\n\nThe previous run of task {} stopped: {message}\nStart from the workspace as it is now; do not repeat finished work.\n",
            task.spec.id
        );
        let tools = self
            .store
            .tool_counts_of_task(&task.spec.id, 10)
            .unwrap_or_default();
        if !tools.is_empty() {
            out.push_str("\nTool calls so far: ");
            let list: Vec<String> = tools.iter().map(|(t, n)| format!("{t} ×{n}")).collect();
            out.push_str(&list.join(", "));
            out.push('\n');
        }
        if let Some(agent_idx) = agent_idx {
            let tail = tail_of(&self.agents[agent_idx].dir.join("agent.log"), 1500);
            if !tail.trim().is_empty() {
                out.push_str(&format!(
                    "\nEnd of the previous run's output:\n\n```\n{}\n```\n",
                    tail.trim()
                ));
            }
        }
        out
    }

    /// The run of `task_idx` by `agent_idx` ended without finishing: classify, then recover.
    /// `ended_by` is set when megatest itself stopped the run for a recovery.
    pub(super) fn run_failed(
        &mut self,
        agent_idx: usize,
        task_idx: usize,
        word: &str,
        outcome: &crate::backend::local::RunOutcome,
        ended_by: Option<(FailureKind, RecoveryAction, String)>,
        oom_kills_before: Option<u64>,
    ) -> Result<()> {
        self.agents[agent_idx].failed_runs += 1;
        if let Some((kind, action, message)) = ended_by {
            // The recovery is open already; now that the run is gone, requeue.
            self.settle_failed_run(task_idx, &message);
            if self.tasks[task_idx].state != TaskState::Failed {
                let id = self
                    .recovery
                    .task_open
                    .get_mut(&task_idx)
                    .and_then(|v| v.pop());
                if let Some(id) = id {
                    self.requeue(id, kind, action, Some(agent_idx), Some(task_idx), &message)?;
                }
            }
            return self.settle_recoveries(task_idx);
        }
        let tail = tail_of(&self.agents[agent_idx].dir.join("agent.log"), 4096);
        let oom_killed = matches!((oom_kills_before, cgroup_oom_kills()), (Some(a), Some(b)) if b > a)
            && outcome.signal == Some(nix::libc::SIGKILL);
        let (kind, message) = if word == "step_timeout" {
            (
                FailureKind::AgentHang,
                format!(
                    "agent run exceeded agent.step_timeout_secs ({} session s)",
                    self.prepared.config.raw.agent.step_timeout_secs
                ),
            )
        } else if oom_killed || oom_in_log(&tail) {
            let how = match outcome.signal {
                Some(signal) => format!("killed by signal {signal}"),
                None => format!("exit code {:?}", outcome.exit_code),
            };
            (
                FailureKind::OutOfMemory,
                format!(
                    "agent run ran out of memory ({how}{})",
                    if oom_killed { ", OOM killer" } else { "" }
                ),
            )
        } else {
            let how = match outcome.signal {
                Some(signal) => format!("killed by signal {signal}"),
                None => format!("exit code {:?}", outcome.exit_code),
            };
            if outcome.signal.is_none() && permission_denied_in_log(&tail) {
                let line = tail
                    .lines()
                    .rev()
                    .find(|l| permission_denied_in_log(l))
                    .unwrap_or("")
                    .trim();
                (
                    FailureKind::PermissionDenied,
                    format!("agent run {word} ({how}) after a permission failure: {line}"),
                )
            } else {
                (FailureKind::AgentCrash, format!("agent run {word}: {how}"))
            }
        };
        self.settle_failed_run(task_idx, &message);
        if self.tasks[task_idx].state == TaskState::Failed {
            // The last allowed attempt: no retry, but a row with its outcome.
            let message = format!("{message} (last of agents.max_task_attempts)");
            self.failure_without_action(kind, Some(agent_idx), Some(task_idx), &message, "failed")?;
            return self.settle_recoveries(task_idx);
        }
        self.failure(kind, Some(agent_idx), Some(task_idx), &message)
    }

    /// Close a task's open recoveries: recovered when it is done, failed when it failed.
    pub(super) fn settle_recoveries(&mut self, task_idx: usize) -> Result<()> {
        let outcome = match self.tasks[task_idx].state {
            TaskState::Done => "recovered",
            TaskState::Failed => "failed",
            _ => return Ok(()),
        };
        let attempts = self.tasks[task_idx].attempts;
        for id in self
            .recovery
            .task_open
            .remove(&task_idx)
            .unwrap_or_default()
        {
            self.resolve(id, outcome, attempts)?;
        }
        let task = &mut self.tasks[task_idx];
        task.reserved_for = None;
        task.handoff = None;
        Ok(())
    }

    /// A phase check's result: a failure opens a `test_failure` (or `test_runtime_exceeded`)
    /// recovery; a pass closes the open ones of that check.
    pub(super) fn check_result(
        &mut self,
        name: &str,
        passed: bool,
        timed_out: bool,
        message: &str,
    ) -> Result<()> {
        if passed {
            let attempts = 1 + self
                .recovery
                .check_open
                .get(name)
                .map_or(0, |v| v.len() as u32);
            for id in self.recovery.check_open.remove(name).unwrap_or_default() {
                self.resolve(id, "recovered", attempts)?;
            }
            return Ok(());
        }
        let kind = if timed_out {
            FailureKind::TestRuntimeExceeded
        } else {
            FailureKind::TestFailure
        };
        self.failure(kind, None, None, &format!("{name}: {message}"))
    }

    /// SIGSTOP the running agents' groups that are not stopped already and close the proxy's
    /// gate; returns the groups stopped here (only those are continued later).
    fn hold_everything(&mut self) -> Vec<i32> {
        let mut groups = Vec::new();
        for agent in &self.agents {
            if let Some(running) = &agent.running {
                let pgid = running.pgid as i32;
                if !crate::backend::local::process_stopped(pgid)
                    && crate::backend::local::freeze_group(pgid)
                {
                    groups.push(pgid);
                }
            }
        }
        let _ = self.recovery.paused_tx.send(true);
        groups
    }

    /// Stop the agents (SIGSTOP their groups), hold the proxy's calls, free the disk reserve,
    /// clean up, alert. The watchdog continues the session when the cause is gone.
    fn pause(&mut self, id: i64, kind: FailureKind, message: &str) -> Result<()> {
        if self.recovery.pause.is_some() {
            // Already paused: this failure is covered by the pause in progress.
            return self.resolve(id, "recovered", 1);
        }
        let groups = self.hold_everything();
        let mut freed = 0u64;
        if kind == FailureKind::DiskFull {
            if let Some(reserve) = self.recovery.reserve.take() {
                freed += std::fs::metadata(&reserve).map(|m| m.len()).unwrap_or(0);
                let _ = std::fs::remove_file(&reserve);
            }
            // Clean up: objects no checkpoint references.
            if let Some(checkpointer) = self.checkpointer.as_mut() {
                if let Ok(Some(pruned)) = checkpointer.enforce_limit(0) {
                    freed += pruned.removed_bytes;
                }
            }
        }
        let data = serde_json::json!({"recovery_id": id, "failure_kind": kind.as_str(), "freed_bytes": freed, "reason": message});
        self.record_pause(Some(id), Some(kind), groups, data)?;
        tracing::warn!(
            message = "session paused",
            failure_kind = kind.as_str(),
            reason = message,
            freed_bytes = freed
        );
        Ok(())
    }

    /// Enter the paused state: `status` file, the [`Pause`], a `paused` event (`data` plus the
    /// stopped groups).
    fn record_pause(
        &mut self,
        recovery_id: Option<i64>,
        kind: Option<FailureKind>,
        groups: Vec<i32>,
        mut data: serde_json::Value,
    ) -> Result<()> {
        let _ = crate::fsutil::write_atomic(&self.dir().join("status"), b"paused\n");
        data["stopped_groups"] = serde_json::json!(groups);
        self.recovery.pause = Some(Pause {
            recovery_id,
            kind,
            since_session_secs: self.clock.session_secs(),
            checks: 0,
            groups,
        });
        self.event("paused", None, None, None, data)?;
        Ok(())
    }

    /// `POST /api/pause`: stop the agents and hold the model calls until an operator continues.
    pub(super) fn operator_pause(&mut self) -> Result<()> {
        let groups = self.hold_everything();
        self.record_pause(None, None, groups, serde_json::json!({"operator": true}))?;
        tracing::warn!(message = "session paused by the operator");
        Ok(())
    }

    /// Open escalations, for the status document.
    pub(super) fn open_escalations(&self) -> Vec<serde_json::Value> {
        self.recovery
            .escalations
            .iter()
            .map(|e| {
                serde_json::json!({
                    "recovery_id": e.recovery_id,
                    "failure_kind": e.kind.as_str(),
                    "task_id": e.task_idx.map(|t| self.tasks[t].spec.id.clone()),
                    "deadline_session_secs": e.deadline_session_secs,
                    "default": action_str(self.prepared.config.raw.recovery.escalation_default),
                })
            })
            .collect()
    }

    /// `POST /api/escalations/{id}/decision`: `continue` releases the held task, `stop` stops
    /// the session (exit 3). The recovery's outcome is `escalated` either way.
    pub(super) fn decide_escalation(
        &mut self,
        recovery_id: i64,
        decision: &str,
    ) -> crate::protocol::ControlReply {
        let Some(i) = self
            .recovery
            .escalations
            .iter()
            .position(|e| e.recovery_id == recovery_id)
        else {
            return Err(crate::protocol::ControlError::NotFound {
                code: "no_escalation",
                message: format!("no open escalation with recovery id {recovery_id}"),
            });
        };
        let escalation = self.recovery.escalations.remove(i);
        let result = (|| -> Result<()> {
            self.resolve(recovery_id, "escalated", 1)?;
            self.event(
                "escalation_decided",
                None,
                None,
                None,
                serde_json::json!({"recovery_id": recovery_id, "decision": decision}),
            )?;
            Ok(())
        })();
        if let Err(err) = result {
            return Err(crate::protocol::ControlError::Conflict {
                code: "store",
                message: format!("{err:#}"),
            });
        }
        if let Some(task_idx) = escalation.task_idx {
            self.tasks[task_idx].held = false;
        }
        if decision == "stop" {
            self.recovery.stop = Some(format!(
                "the operator decided to stop on escalation {recovery_id} ({})",
                escalation.kind.as_str()
            ));
        } else if self.recovery.escalations.is_empty() && self.recovery.pause.is_none() {
            let _ = crate::fsutil::write_atomic(&self.dir().join("status"), b"running\n");
        }
        Ok(serde_json::json!({"recovery_id": recovery_id, "decision": decision}))
    }

    /// Whether the cause of the pause is gone.
    fn pause_cause_gone(&self, kind: FailureKind) -> bool {
        match kind {
            FailureKind::DiskFull => {
                let (min, reserve) = disk_limits(&self.prepared.config, self.dir());
                free_bytes(self.dir()).is_some_and(|free| free >= min + reserve)
            }
            FailureKind::PermissionDenied => {
                let probe = self.workspace.join(".megatest_write_probe");
                let ok = std::fs::write(&probe, b"probe").is_ok();
                let _ = std::fs::remove_file(&probe);
                ok
            }
            // Other pauses (max_consecutive_errors, manual rules) last one backoff interval.
            _ => self.recovery.pause.as_ref().is_some_and(|p| {
                self.clock.session_secs() - p.since_session_secs
                    >= self.recovery.table().backoff.session_secs(0)
            }),
        }
    }

    /// Continue a paused session: SIGCONT the groups megatest stopped, release held calls.
    pub(super) fn unpause(&mut self, how: &str) -> Result<()> {
        let Some(pause) = self.recovery.pause.take() else {
            return Ok(());
        };
        for pgid in &pause.groups {
            crate::backend::local::thaw_group(*pgid);
        }
        let _ = self.recovery.paused_tx.send(false);
        // Paused time is nobody's idleness.
        for agent in &mut self.agents {
            agent.active = Instant::now();
        }
        if pause.kind == Some(FailureKind::DiskFull) && self.recovery.reserve.is_none() {
            self.recovery.reserve =
                make_reserve(self.dir(), disk_limits(&self.prepared.config, self.dir()).1);
        }
        let _ = crate::fsutil::write_atomic(&self.dir().join("status"), b"running\n");
        self.recovery.consecutive_errors = 0;
        if let Some(id) = pause.recovery_id {
            self.resolve(id, "recovered", pause.checks.max(1))?;
        }
        let paused_for = self.clock.session_secs() - pause.since_session_secs;
        self.event(
            "continued",
            None,
            None,
            None,
            serde_json::json!({"recovery_id": pause.recovery_id, "paused_session_secs": paused_for, "how": how}),
        )?;
        tracing::warn!(
            message = "session continued",
            how,
            paused_session_secs = paused_for
        );
        Ok(())
    }

    /// Status `escalated`, alert, hold the task; the watchdog applies
    /// `[recovery].escalation_default` when no decision came within the timeout.
    fn escalate(
        &mut self,
        id: i64,
        kind: FailureKind,
        task_idx: Option<usize>,
        message: &str,
    ) -> Result<()> {
        if self.recovery.escalations.iter().any(|e| e.kind == kind) {
            // One open escalation per failure kind: this one waits on the same decision.
            return self.resolve(id, "escalated", 1);
        }
        let timeout = self.prepared.config.raw.recovery.escalation_timeout_minutes * 60.0;
        if let Some(task_idx) = task_idx {
            self.tasks[task_idx].held = true;
        }
        self.recovery.escalations.push(Escalation {
            recovery_id: id,
            kind,
            task_idx,
            deadline_session_secs: self.clock.session_secs() + timeout,
        });
        let _ = crate::fsutil::write_atomic(&self.dir().join("status"), b"escalated\n");
        self.event(
            "escalation",
            None,
            None,
            None,
            serde_json::json!({"recovery_id": id, "timeout_session_secs": timeout, "default": action_str(self.prepared.config.raw.recovery.escalation_default), "reason": message}),
        )?;
        Ok(())
    }

    /// Periodic checks: idle agents, the disk, escalation deadlines, `[chaos]` events, and
    /// whether a paused session can continue.
    pub(super) fn watchdog(&mut self) -> Result<()> {
        let now = self.clock.session_secs();
        self.chaos(now)?;
        // A paused session: continue once the cause is gone.
        if let Some(pause) = self.recovery.pause.as_mut() {
            pause.checks += 1;
            if let Some(kind) = pause.kind {
                if self.pause_cause_gone(kind) {
                    self.unpause("cause gone")?;
                }
            }
            return Ok(());
        }
        // Disk: free space on the runs filesystem.
        let (min, _) = disk_limits(&self.prepared.config, self.dir());
        if let Some(free) = free_bytes(self.dir()) {
            if free < min {
                let message = format!(
                    "{free} bytes free on the filesystem of {}, under {min} bytes (recovery.min_free_disk_mb, at most 10 % of the filesystem)",
                    self.dir().display(),
                );
                return self.failure(FailureKind::DiskFull, None, None, &message);
            }
        }
        // Escalations past their deadline.
        let due: Vec<usize> = self
            .recovery
            .escalations
            .iter()
            .enumerate()
            .filter(|(_, e)| e.deadline_session_secs <= now)
            .map(|(i, _)| i)
            .collect();
        for i in due.into_iter().rev() {
            let escalation = self.recovery.escalations.remove(i);
            self.resolve(escalation.recovery_id, "escalated", 1)?;
            let default = self.prepared.config.raw.recovery.escalation_default;
            self.event(
                "escalation_timeout",
                None,
                None,
                None,
                serde_json::json!({"recovery_id": escalation.recovery_id, "applied": action_str(default)}),
            )?;
            if let Some(task_idx) = escalation.task_idx {
                self.tasks[task_idx].held = false;
            }
            if default == RecoveryAction::StopSession {
                self.recovery.stop = Some(format!(
                    "no operator decision within recovery.escalation_timeout_minutes for recovery {}: escalation_default = stop_session",
                    escalation.recovery_id
                ));
            } else if self.recovery.escalations.is_empty() {
                let _ = crate::fsutil::write_atomic(&self.dir().join("status"), b"running\n");
            }
        }
        // Idle agents.
        let idle_limit = idle_limit(&self.prepared.config);
        let workspace_changed = self.recovery.workspace_changed_ms.load(Ordering::Relaxed);
        let running_count = self.agents.iter().filter(|a| a.running.is_some()).count();
        let mut hung = Vec::new();
        for (agent_idx, agent) in self.agents.iter_mut().enumerate() {
            let Some(running) = agent.running.as_ref() else {
                continue;
            };
            if running.ended_by.is_some() {
                continue;
            }
            if agent.calls_in_flight > 0 {
                agent.active = Instant::now();
                continue;
            }
            let log_len = std::fs::metadata(agent.dir.join("agent.log"))
                .map(|m| m.len())
                .unwrap_or(0);
            if log_len != agent.log_len {
                agent.log_len = log_len;
                agent.active = Instant::now();
            }
            // A workspace change is this agent's only when it is the only one running.
            if running_count == 1 {
                let since = unix_ms().saturating_sub(workspace_changed);
                if let Some(at) = Instant::now().checked_sub(Duration::from_millis(since)) {
                    if at > agent.active {
                        agent.active = at;
                    }
                }
            }
            if agent.active.elapsed() > idle_limit {
                hung.push((agent_idx, running.task_idx));
            }
        }
        for (agent_idx, task_idx) in hung {
            let message = format!(
                "no model call, tool call, output or workspace change for {:.0} session s (recovery.agent_idle_minutes = {})",
                self.agents[agent_idx].active.elapsed().as_secs_f64() * self.prepared.config.time_scale,
                self.prepared.config.raw.recovery.agent_idle_minutes
            );
            self.failure(
                FailureKind::AgentHang,
                Some(agent_idx),
                Some(task_idx),
                &message,
            )?;
        }
        Ok(())
    }

    /// A write failed with a full disk (ENOSPC / SQLITE_FULL) somewhere in the session.
    pub(super) fn disk_full_error(&mut self, err: &anyhow::Error) -> Result<()> {
        let message = format!("write failed: {err:#}");
        // Make room for the error event first.
        if let Some(reserve) = self.recovery.reserve.take() {
            let _ = std::fs::remove_file(&reserve);
        }
        if self.recovery.pause.is_some() {
            return Ok(());
        }
        self.failure(FailureKind::DiskFull, None, None, &message)
    }

    /// Fire the `[[chaos.events]]` that are due, release a `fill_disk` filler whose hold ended.
    fn chaos(&mut self, now: f64) -> Result<()> {
        if let Some((path, release_at)) = &self.recovery.chaos_fill {
            if now >= *release_at {
                let _ = std::fs::remove_file(path);
                self.event(
                    "chaos",
                    None,
                    None,
                    None,
                    serde_json::json!({"fault": "fill_disk", "released": path}),
                )?;
                self.recovery.chaos_fill = None;
            }
        }
        let chaos = &self.prepared.config.raw.chaos;
        if !chaos.enabled {
            return Ok(());
        }
        let due: Vec<usize> = chaos
            .events
            .iter()
            .enumerate()
            .filter(|(i, e)| !self.recovery.chaos_fired[*i] && e.at_minutes * 60.0 <= now)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let event = self.prepared.config.raw.chaos.events[i].clone();
            let target = match &event.agent {
                Some(id) => self
                    .agents
                    .iter()
                    .position(|a| &a.id == id && a.running.is_some()),
                None => self
                    .agents
                    .iter()
                    .position(|a| a.running.as_ref().is_some_and(|r| r.ended_by.is_none())),
            };
            let fault = serde_json::to_value(event.fault)?;
            let data = match event.fault {
                ChaosFault::KillAgent | ChaosFault::HangAgent => {
                    // An agent fault waits until its agent is running.
                    let Some(agent_idx) = target else { continue };
                    let pgid = self.agents[agent_idx]
                        .running
                        .as_ref()
                        .map(|r| r.pgid)
                        .unwrap_or(0) as i32;
                    let signal = if event.fault == ChaosFault::KillAgent {
                        crate::backend::local::kill_group(pgid);
                        "SIGKILL"
                    } else {
                        crate::backend::local::freeze_group(pgid);
                        "SIGSTOP"
                    };
                    serde_json::json!({"fault": fault, "agent_id": self.agents[agent_idx].id, "pgid": pgid, "signal": signal})
                }
                ChaosFault::FillDisk => {
                    let path = self.dir().join("chaos_fill");
                    let (min, _) = disk_limits(&self.prepared.config, self.dir());
                    let free = free_bytes(self.dir()).unwrap_or(0);
                    let want = free.saturating_sub(min / 2);
                    if want > CHAOS_FILL_CAP_BYTES {
                        serde_json::json!({"fault": fault, "skipped": format!("filling {want} bytes is over the {CHAOS_FILL_CAP_BYTES}-byte cap")})
                    } else {
                        let written = fill(&path, want);
                        let hold = event.hold_minutes.unwrap_or(1.0) * 60.0;
                        self.recovery.chaos_fill = Some((path.clone(), now + hold));
                        serde_json::json!({"fault": fault, "path": path, "bytes": written, "hold_session_secs": hold})
                    }
                }
                ChaosFault::CorruptCheckpoint => {
                    match self.store.last_checkpoint()?.map(|c| c.path) {
                        Some(path) => {
                            let path = self.dir().join(path);
                            let mut bytes = std::fs::read(&path).unwrap_or_default();
                            let mid = bytes.len() / 2;
                            if let Some(b) = bytes.get_mut(mid) {
                                *b ^= 0x5a;
                            }
                            let _ = std::fs::write(&path, &bytes);
                            serde_json::json!({"fault": fault, "path": path})
                        }
                        None => continue,
                    }
                }
            };
            self.recovery.chaos_fired[i] = true;
            let mut data = data;
            data["index"] = serde_json::json!(i);
            tracing::warn!(message = "chaos", detail = %data);
            self.event("chaos", None, None, None, data)?;
        }
        Ok(())
    }

    /// Memory pressure (sysinfo): available memory under `[recovery].min_available_memory_mb`
    /// is `out_of_memory` for the running agent with the largest process tree (its resident
    /// memory summed over the leader and its descendants). Reported once until it clears.
    pub(super) fn check_memory(&mut self) -> Result<()> {
        let min = self.prepared.config.raw.recovery.min_available_memory_mb << 20;
        self.recovery.system.refresh_memory();
        let available = self.recovery.system.available_memory();
        if available >= min {
            self.recovery.memory_pressure = false;
            return Ok(());
        }
        if self.recovery.memory_pressure || self.recovery.pause.is_some() {
            return Ok(());
        }
        let system = &mut self.recovery.system;
        system.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
        let tree_memory = |leader: u32| crate::metrics::tree_memory(system, leader);
        let biggest = self
            .agents
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                a.running
                    .as_ref()
                    .filter(|r| r.ended_by.is_none())
                    .map(|r| (i, r.task_idx, tree_memory(r.pgid)))
            })
            .max_by_key(|(_, _, bytes)| *bytes);
        let Some((agent_idx, task_idx, bytes)) = biggest else {
            return Ok(());
        };
        self.recovery.memory_pressure = true;
        let message = format!(
            "memory pressure: {} MiB available, under recovery.min_available_memory_mb ({} MiB); {} uses {} MiB",
            available >> 20,
            min >> 20,
            self.agents[agent_idx].id,
            bytes >> 20
        );
        self.failure(
            FailureKind::OutOfMemory,
            Some(agent_idx),
            Some(task_idx),
            &message,
        )
    }

    /// A reopened session: `[[chaos.events]]` that fired before do not fire again.
    pub(super) fn chaos_fired_before(&mut self) -> Result<()> {
        let fired: Vec<Option<i64>> = self
            .store
            .events_of_kind("chaos")?
            .iter()
            .map(|row| {
                serde_json::from_str::<serde_json::Value>(&row.data)
                    .ok()
                    .and_then(|d| d["index"].as_i64())
            })
            .collect();
        for i in fired.into_iter().flatten() {
            if let Some(slot) = self.recovery.chaos_fired.get_mut(i as usize) {
                *slot = true;
            }
        }
        Ok(())
    }

    /// After the report of a session a `restore_checkpoint` rule stopped: roll back (keeping
    /// the current state as a `before_restore` checkpoint) and close the recovery. True when the
    /// session can continue from the restored state.
    pub(super) fn restore_after_stop(&mut self) -> Result<bool> {
        let Some((id, seq)) = self.recovery.restore.take() else {
            return Ok(false);
        };
        let restored = crate::checkpoint::restore::roll_back(self.dir(), seq);
        let now = self.clock.session_secs();
        match restored {
            Ok(rollback) => {
                for line in rollback.to_string().lines() {
                    crate::console::say(format_args!("megatest: {line}"));
                }
                match rollback.used() {
                    Some(used) => {
                        self.store.resolve_recovery(id, "recovered", 1, now)?;
                        tracing::warn!(
                            message =
                                "checkpoint restored after data corruption; the session continues",
                            checkpoint = used
                        );
                        Ok(true)
                    }
                    None => {
                        self.store.resolve_recovery(id, "failed", 1, now)?;
                        Ok(false)
                    }
                }
            }
            Err(err) => {
                self.store.resolve_recovery(id, "failed", 1, now)?;
                tracing::error!(message = "restore failed", error = %format!("{err:#}"));
                Ok(false)
            }
        }
    }

    /// Verify the newest checkpoint's seal; a mismatch is `data_corruption`.
    pub(super) fn verify_latest_checkpoint(&mut self) -> Result<()> {
        let Some(last) = self.last_checkpoint.clone() else {
            return Ok(());
        };
        let path = self.dir().join(&last.path);
        let problem = match std::fs::read(&path) {
            Err(err) => Some(format!("cannot read {}: {err}", path.display())),
            Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Err(err) => Some(format!("{} is not JSON: {err}", path.display())),
                Ok(content) => {
                    let sha = crate::checkpoint::content_hash(&content)?;
                    (sha != last.sha256 || content["sha256"].as_str() != Some(&last.sha256)).then(
                        || {
                            format!(
                                "{} has sha256 {sha}, recorded {}",
                                path.display(),
                                last.sha256
                            )
                        },
                    )
                }
            },
        };
        if let Some(problem) = problem {
            self.last_checkpoint = None;
            self.failure(
                FailureKind::DataCorruption,
                None,
                None,
                &format!("checkpoint {} is corrupt: {problem}", last.seq),
            )?;
        }
        Ok(())
    }

    /// Close what is still open at the end of the session: open recoveries are `failed`
    /// (a test that never passed again, a task that never finished), unanswered escalations
    /// `escalated`.
    pub(super) fn close_recoveries(&mut self) -> Result<()> {
        if self.recovery.pause.is_some() {
            self.unpause("session end")?;
        }
        for escalation in std::mem::take(&mut self.recovery.escalations) {
            self.resolve(escalation.recovery_id, "escalated", 1)?;
        }
        if let Some(reserve) = self.recovery.reserve.take() {
            let _ = std::fs::remove_file(reserve);
        }
        if let Some((fill, _)) = self.recovery.chaos_fill.take() {
            let _ = std::fs::remove_file(fill);
        }
        let open = self.store.open_recovery_ids()?;
        let restoring = self.recovery.restore.map(|(id, _)| id);
        for id in open.into_iter().filter(|id| Some(*id) != restoring) {
            self.resolve(id, "failed", 1)?;
        }
        Ok(())
    }

    /// Wait (at most 10 s wall) for webhook deliveries still in flight.
    pub(super) async fn flush_alerts(&mut self) {
        let pending = self.recovery.notifier.take_pending();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::future::join_all(pending),
        )
        .await;
    }

    /// An informational alert (checkpoint, phase complete, session complete).
    pub(super) fn notice(
        &self,
        event: NotifyEvent,
        text: &str,
        data: serde_json::Value,
    ) -> Result<()> {
        tracing::info!(message = "notice", event = notify_event_name(event), text);
        self.alert(event, crate::config::raw::Severity::Transient, text, data)
    }

    /// An alert: `session.log`, the event log, a workflow annotation under GitHub Actions, and
    /// the webhook when `[notifications]` asks for this event.
    pub(super) fn alert(
        &self,
        event: NotifyEvent,
        severity: crate::config::raw::Severity,
        text: &str,
        data: serde_json::Value,
    ) -> Result<()> {
        let name = notify_event_name(event);
        self.event(
            "alert",
            None,
            None,
            None,
            serde_json::json!({"event": name, "severity": severity_str(severity), "text": text, "data": data}),
        )?;
        self.recovery
            .notifier
            .send(&self.prepared.session_id, name, severity, text, data);
        Ok(())
    }
}

/// Write zeros to `path` until `want` bytes or the first error (ENOSPC); returns bytes written.
fn fill(path: &std::path::Path, want: u64) -> u64 {
    use std::io::Write;
    let Ok(mut file) = std::fs::File::create(path) else {
        return 0;
    };
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < want {
        let n = (want - written).min(chunk.len() as u64) as usize;
        match file.write(&chunk[..n]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = file.sync_all();
    written
}

pub fn notify_event_name(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::Checkpoint => "checkpoint",
        NotifyEvent::PhaseComplete => "phase_complete",
        NotifyEvent::Error => "error",
        NotifyEvent::Complete => "complete",
        NotifyEvent::Budget => "budget",
        NotifyEvent::Escalation => "escalation",
    }
}

/// Alert delivery: `[notifications]` webhook (JSON POST, 5 s timeout, 3 attempts with 1 s / 2 s
/// pauses, on its own task so the session never waits) and GitHub Actions annotations.
pub(super) struct Notifier {
    /// Deliveries in flight; [`Notifier::flush`] waits for them at the end of the session.
    pending: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    client: Option<reqwest::Client>,
    url: Option<String>,
    events: Vec<NotifyEvent>,
    github_actions: bool,
}

impl Notifier {
    fn new(config: &crate::config::raw::Notifications) -> Notifier {
        let url = config.webhook_url.clone().filter(|_| config.enabled);
        let client = url.as_ref().and_then(|_| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .ok()
        });
        Notifier {
            pending: std::sync::Mutex::new(Vec::new()),
            client,
            url,
            events: config.events.clone(),
            github_actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
        }
    }

    pub fn send(
        &self,
        session_id: &str,
        event: &'static str,
        severity: crate::config::raw::Severity,
        text: &str,
        data: serde_json::Value,
    ) {
        use crate::config::raw::Severity;
        if self.github_actions {
            let level = match severity {
                Severity::Critical | Severity::Fatal => "error",
                Severity::Transient => "notice",
                _ => "warning",
            };
            // Workflow commands: newlines and % are escaped as the runner expects.
            let text = text
                .replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A");
            crate::console::print(format_args!("::{level} title=megatest {event}::{text}"));
        }
        let (Some(client), Some(url)) = (&self.client, &self.url) else {
            return;
        };
        if !self.events.iter().any(|e| notify_event_name(*e) == event) {
            return;
        }
        let body = serde_json::json!({
            "session_id": session_id,
            "event": event,
            "severity": severity_str(severity),
            "text": text,
            "data": data,
            "at": super::now(),
        });
        let client = client.clone();
        let url = url.clone();
        let delivery = tokio::spawn(async move {
            for attempt in 0..3u32 {
                match client.post(&url).json(&body).send().await {
                    Ok(response) if response.status().is_success() => return,
                    Ok(response) => tracing::warn!(
                        message = "webhook refused the alert",
                        status = response.status().as_u16(),
                        attempt
                    ),
                    Err(err) => {
                        tracing::warn!(message = "webhook unreachable", error = %err, attempt)
                    }
                }
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
        });
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|d| !d.is_finished());
            pending.push(delivery);
        }
    }

    /// The deliveries in flight (to wait for before the daemon exits).
    fn take_pending(&self) -> Vec<tokio::task::JoinHandle<()>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
