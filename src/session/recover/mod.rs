//! The session half of the recovery table ([`crate::recovery`]): detection of the failures
//! only the session can see (agent crash, hang, out of memory, test failure, full disk, …),
//! the session-level actions (restart, reassign, compress and retry, pause and alert, escalate,
//! stop), the `recoveries` rows, alerts, and `[chaos]` injection.
//!
//! Times: `not_before`, escalation deadlines and pause times are session seconds; the watchdog
//! runs every [`watchdog_period`] of wall time.

mod alerts;
mod chaos;
mod pause;
mod persist;
mod probes;
mod watchdog;
pub(in crate::session) use probes::*;

use super::{Session, TaskState};
use crate::config::raw::{ChaosFault, NotifyEvent, RecoveryAction};
use crate::protocol::CallRecovery;
use crate::recovery::plan::{self, Effect};
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
    /// The JSON last saved to `recovery_state` (see [`persist`]).
    saved: String,
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
                saved: String::new(),
            },
            paused_rx,
        ))
    }
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
        let decision = self.record_and_decide(kind, agent_idx, task_idx, message)?;
        self.act(kind, decision, agent_idx, task_idx, message)
    }

    /// Record a failure as an error event and decide it by the recovery table.
    fn record_and_decide(
        &mut self,
        kind: FailureKind,
        agent_idx: Option<usize>,
        task_idx: Option<usize>,
        message: &str,
    ) -> Result<Decision> {
        let agent_id = agent_idx.map(|a| self.agents[a].id.clone());
        let task_id = task_idx.map(|t| self.board.tasks[t].spec.id.clone());
        self.record_error(
            kind.as_str(),
            agent_id.as_deref(),
            task_id.as_deref(),
            message,
        )?;
        Ok(self.recovery.table().decide(kind, message))
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
        let decision = self.record_and_decide(kind, agent_idx, task_idx, message)?;
        let id = self.open_recovery(kind, &decision, agent_idx, task_idx, message)?;
        self.resolve(id, outcome, 0)
    }

    /// Open a recovery row for `decision` and carry out the effects
    /// [`crate::recovery::plan::plan`] lists for it.
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
        let action = plan::session_action(&decision);
        tracing::warn!(message = "recovery", failure_kind = kind.as_str(), rule = %decision.rule, action = action_str(action), agent = ?agent_idx.map(|a| &self.agents[a].id), detail = message);
        let latest_checkpoint = if action == RecoveryAction::RestoreCheckpoint {
            self.store.last_checkpoint()?.map(|c| c.seq)
        } else {
            None
        };
        let effects = plan::plan(plan::Situation {
            kind,
            decision: &decision,
            has_task: task_idx.is_some(),
            message,
            latest_checkpoint,
            consecutive_errors: self.recovery.consecutive_errors,
            max_consecutive_errors: self.recovery.table().max_consecutive_errors,
            paused: self.recovery.pause.is_some(),
        });
        for effect in effects {
            match effect {
                Effect::Requeue(action) => {
                    self.requeue(id, kind, action, agent_idx, task_idx, message)?
                }
                Effect::AwaitCheck(check) => {
                    self.recovery.check_open.entry(check).or_default().push(id)
                }
                Effect::AwaitTask => {
                    if let Some(task_idx) = task_idx {
                        self.recovery
                            .task_open
                            .entry(task_idx)
                            .or_default()
                            .push(id);
                    }
                }
                Effect::ReleaseTask => {
                    if let Some(task_idx) = task_idx {
                        self.release_task(task_idx, None, message);
                    }
                }
                Effect::Resolve(outcome) => self.resolve(id, outcome, 1)?,
                Effect::Pause => self.pause(id, kind, message)?,
                Effect::Escalate => self.escalate(id, kind, task_idx, message)?,
                Effect::Restore(seq) => self.recovery.restore = Some((id, seq)),
                Effect::Stop(reason) => self.recovery.stop = Some(reason),
                Effect::PauseForConsecutiveErrors(message) => {
                    let decision = Decision {
                        rule: "error_handling.max_consecutive_errors".into(),
                        severity: crate::config::raw::Severity::Critical,
                        action: RecoveryAction::PauseAndAlert,
                    };
                    let id = self.open_recovery(kind, &decision, None, None, &message)?;
                    self.pause(id, kind, &message)?;
                }
            }
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
            task_id: task_idx.map(|t| self.board.tasks[t].spec.id.clone()),
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
            .and_then(|id| self.board.tasks.iter().position(|t| &t.spec.id == id));
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
        let attempt = self.board.tasks[task_idx].attempts;
        if self.board.tasks[task_idx].state == TaskState::Failed {
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
        let task = &mut self.board.tasks[task_idx];
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
        let task = &mut self.board.tasks[task_idx];
        task.reserved_for = None;
        task.avoid = agent_idx;
    }

    /// What a fresh run of the task needs to know instead of the previous run's context:
    /// the failure, the tool calls the previous runs made and the tail of the agent's output.
    fn handoff_summary(&self, agent_idx: Option<usize>, task_idx: usize, message: &str) -> String {
        let task = &self.board.tasks[task_idx];
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
        outcome: &crate::backend::RunOutcome,
        ended_by: Option<(FailureKind, RecoveryAction, String)>,
        oom_kills_before: Option<u64>,
    ) -> Result<()> {
        self.agents[agent_idx].failed_runs += 1;
        self.agents[agent_idx].failures_in_row += 1;
        if let Some((kind, action, message)) = ended_by {
            // The recovery is open already; now that the run is gone, requeue.
            self.settle_failed_run(task_idx, &message);
            if self.board.tasks[task_idx].state != TaskState::Failed {
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
        if self.board.tasks[task_idx].state == TaskState::Failed {
            // The last allowed attempt: no retry, but a row with its outcome.
            let message = format!("{message} (last of agents.max_task_attempts)");
            self.failure_without_action(kind, Some(agent_idx), Some(task_idx), &message, "failed")?;
            return self.settle_recoveries(task_idx);
        }
        self.failure(kind, Some(agent_idx), Some(task_idx), &message)
    }

    /// Close a task's open recoveries: recovered when it is done, failed when it failed.
    pub(super) fn settle_recoveries(&mut self, task_idx: usize) -> Result<()> {
        let outcome = match self.board.tasks[task_idx].state {
            TaskState::Done => "recovered",
            TaskState::Failed => "failed",
            _ => return Ok(()),
        };
        let attempts = self.board.tasks[task_idx].attempts;
        for id in self
            .recovery
            .task_open
            .remove(&task_idx)
            .unwrap_or_default()
        {
            self.resolve(id, outcome, attempts)?;
        }
        let task = &mut self.board.tasks[task_idx];
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

    /// Verify the newest checkpoint's seal off the session task; the answer comes back as
    /// [`Event::CheckpointVerified`].
    pub(super) fn start_verify_latest(&self) {
        let Some(last) = self.last_checkpoint.as_ref() else {
            return;
        };
        let (seq, path, sha256) = (last.seq, self.dir().join(&last.path), last.sha256.clone());
        let events = self.events_tx.clone();
        tokio::task::spawn_blocking(move || {
            let problem = crate::checkpoint::verify_sealed(&path, &sha256);
            let _ =
                events.blocking_send(crate::protocol::Event::CheckpointVerified { seq, problem });
        });
    }

    /// The newest checkpoint was verified: a mismatch is `data_corruption` (when it is still
    /// the newest).
    pub(super) fn checkpoint_verified(&mut self, seq: u32, problem: Option<String>) -> Result<()> {
        let Some(problem) = problem else {
            return Ok(());
        };
        if self.last_checkpoint.as_ref().map(|row| row.seq) != Some(seq) {
            return Ok(());
        }
        self.checkpoint_corrupt(seq, &problem)
    }

    /// Checkpoint `seq` does not verify: it is no longer the one to trust, and the failure is
    /// `data_corruption` for the recovery table.
    pub(super) fn checkpoint_corrupt(&mut self, seq: u32, problem: &str) -> Result<()> {
        self.last_checkpoint = None;
        self.failure(
            FailureKind::DataCorruption,
            None,
            None,
            &format!("checkpoint {seq} is corrupt: {problem}"),
        )
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
