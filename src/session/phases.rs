//! The phase loop: each phase's time box (ended early only by its gate, `gating.rs`),
//! scheduling onto idle agents, the loop's timers, phase ends and the phase checks (the spec's build and test commands; the evaluation after
//! them is in `evaluating.rs`).

use super::*;
use crate::protocol::Tick;

impl Session {
    pub(super) async fn run_phases(&mut self) -> Result<Ending> {
        self.ticks = Some(ticks::Ticks::new(&self.prepared.config, &self.clock));
        for phase_idx in 0..self.prepared.config.phases.len() {
            let plan = self.prepared.config.phases[phase_idx].clone();
            if self.phases[phase_idx].ended.is_some() {
                continue; // a resumed session: this phase ended before the crash
            }
            self.current_phase = Some(phase_idx);
            let prefix = format!("{}{}-", gating::FOLLOW_UP_PREFIX, plan.name);
            self.gate =
                gating::GateState::with_generated(self.store.count_tasks_with_prefix(&prefix)?);
            let started = match self.phases[phase_idx].started {
                Some(started) => started,
                None => {
                    let started = (self.clock.session_secs(), self.clock.wall_secs());
                    self.phases[phase_idx].started = Some(started);
                    self.store.start_phase(phase_idx, started.0, started.1)?;
                    started
                }
            };
            self.event(
                "phase_started",
                None,
                Some(&plan.name),
                None,
                serde_json::json!({"planned_session_secs": plan.session_secs}),
            )?;
            tracing::info!(message = "phase started", phase = %plan.name, planned_session_secs = plan.session_secs);
            // The time box counts from the phase's recorded start (earlier, in a resumed session);
            // its wall deadline is computed again each turn (a measurement slows session time).
            let time_box_end = started.0 + plan.session_secs;
            let because = loop {
                if self.shutdown.is_some() {
                    break "interrupted";
                }
                if self.budgets.exhausted.is_some() {
                    break "budget_exhausted";
                }
                if self.recovery.stop.is_some() {
                    break "recovery_stop";
                }
                self.check_vote_timeouts()?;
                if self.recovery.pause.is_none()
                    && !self.checkpoint_in_flight
                    && self.checkpointer.is_some()
                {
                    // The job verifies the newest checkpoint first: a new one must not hide a
                    // corrupt one. Its result comes back as Event::CheckpointTaken.
                    if let Some(trigger) = self.checkpoint_due.take() {
                        let begun = self.begin_checkpoint(trigger);
                        self.recoverable(begun)?;
                    }
                }
                // No run starts while a snapshot runs: every running agent is in its freeze.
                if !self.checkpoint_in_flight {
                    self.schedule(phase_idx)?;
                }
                if self.phase_tasks_settled(phase_idx) && self.votes.is_empty() {
                    if let Some(because) = self.phase_settled(phase_idx).await? {
                        break because;
                    }
                    if self.shutdown.is_some() {
                        continue;
                    }
                    // Follow-up work or a gate vote went on the board: schedule it first.
                    if !self.phase_tasks_settled(phase_idx) {
                        continue;
                    }
                }
                let wakeup = self.next_not_before(phase_idx);
                let deadline = tokio::time::Instant::from_std(self.clock.instant_at(time_box_end));
                match self.next_event(Some(wakeup), Some(deadline)).await {
                    Event::Tick(Tick::TimeBox) => break "time_box",
                    event => self.dispatch(event).await?,
                }
            };
            if because == "recovery_stop" {
                self.stop_all_agents().await;
                self.mode = ticks::Mode::Running;
                self.end_phase(phase_idx, because)?;
                let message = self.recovery.stop.clone().unwrap_or_default();
                return Ok(Ending::RecoveryStop(message));
            }
            self.stop_all_agents().await;
            self.close_votes_at_phase_end()?;
            if let Some(signal) = self.shutdown {
                self.mode = ticks::Mode::Running;
                self.end_phase(phase_idx, "interrupted")?;
                return Ok(Ending::Interrupted(signal));
            }
            self.run_checks(phase_idx).await?;
            self.mode = ticks::Mode::Running;
            if let Some(signal) = self.shutdown {
                self.end_phase(phase_idx, "interrupted")?;
                return Ok(Ending::Interrupted(signal));
            }
            self.end_phase(phase_idx, because)?;
            if self.prepared.config.raw.checkpoint.enabled || self.checkpoint_due.is_some() {
                let trigger = if self.prepared.config.raw.checkpoint.enabled {
                    "phase_end"
                } else {
                    "manual"
                };
                self.checkpoint_due = None;
                let taken = self.checkpoint_now(trigger).await;
                self.recoverable(taken)?;
            }
            let tasks = self.task_counts(Some(phase_idx));
            self.notice(
                NotifyEvent::PhaseComplete,
                &format!(
                    "phase {} ended ({because}): {} of {} tasks done",
                    plan.name, tasks.done, tasks.total
                ),
                serde_json::json!({"phase": plan.name, "because": because, "tasks": tasks}),
            )?;
            if let Some(message) = self.recovery.stop.clone() {
                return Ok(Ending::RecoveryStop(message));
            }
            if let Some(message) = self.budgets.exhausted.clone() {
                return Ok(Ending::BudgetExhausted(message));
            }
        }
        self.current_phase = None;
        Ok(Ending::Completed)
    }

    pub(super) fn end_phase(&mut self, phase_idx: usize, because: &str) -> Result<()> {
        let ended = (self.clock.session_secs(), self.clock.wall_secs());
        let record = &mut self.phases[phase_idx];
        record.ended = Some(ended);
        record.ended_because = Some(because.to_string());
        self.store.end_phase(phase_idx, ended.0, ended.1, because)?;
        let name = self.prepared.config.phases[phase_idx].name.clone();
        let counts = self.task_counts(Some(phase_idx));
        self.event(
            "phase_completed",
            None,
            Some(&name),
            None,
            serde_json::json!({"because": because, "tasks": counts}),
        )?;
        tracing::info!(message = "phase ended", phase = %name, because, done = counts.done, failed = counts.failed, pending = counts.pending);
        Ok(())
    }

    /// True when no task of the phase is pending or running.
    pub(super) fn phase_tasks_settled(&self, phase_idx: usize) -> bool {
        self.board.settled(phase_idx)
    }

    /// A step of the loop failed: a full disk (ENOSPC, SQLITE_FULL) or a permission failure
    /// goes to the recovery table; anything else ends the session as before.
    pub(super) fn recoverable(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(err) if recover::is_disk_full(&err) => self.disk_full_error(&err),
            Err(err) if recover::is_permission_denied(&err) => self.failure(
                FailureKind::PermissionDenied,
                None,
                None,
                &format!("{err:#}"),
            ),
            Err(err) => Err(err),
        }
    }

    /// Session seconds a task waits for an agent of its role before another role's idle agent
    /// takes it: [`board::CROSS_ROLE_GRACE_SECS`], at most `[recovery].agent_idle_minutes`.
    pub(super) fn cross_role_grace(&self) -> f64 {
        board::CROSS_ROLE_GRACE_SECS
            .min(self.prepared.config.raw.recovery.agent_idle_minutes * 60.0)
    }

    /// When the scheduler must look again without another event: a recovery backoff or a
    /// cross-role grace period ends (far in the future when nothing waits on time).
    pub(super) fn next_not_before(&self, phase_idx: usize) -> tokio::time::Instant {
        let wakeup = self.board.next_wakeup(
            phase_idx,
            self.clock.session_secs(),
            self.cross_role_grace(),
        );
        let earliest = [wakeup, self.next_vote_deadline(), self.next_retirement()]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp);
        match earliest {
            Some(earliest) => tokio::time::Instant::from_std(self.clock.instant_at(earliest)),
            None => tokio::time::Instant::now() + Duration::from_secs(86_400),
        }
    }

    /// Hand claimable tasks of the phase to idle agents, up to the concurrency limit
    /// (`[agent].concurrent_agents`), after dynamic spawning had its say (`spawning.rs`: with
    /// it a fresh agent of the task's role may take a task that waited). Role-preferring: a task goes to an idle agent of its
    /// role; after the cross-role grace period (at once when no agent has the role) to any
    /// idle agent, recorded as a `cross_role_assignment` event. A pending task whose dependency
    /// failed can never run: it fails too (`last_error` names the dependency).
    pub(super) fn schedule(&mut self, phase_idx: usize) -> Result<()> {
        self.fail_blocked_tasks(phase_idx)?;
        if self.recovery.pause.is_some() || self.recovery.stop.is_some() {
            return Ok(());
        }
        self.board.note_ready(phase_idx, self.clock.session_secs());
        self.manage_agents(phase_idx)?;
        loop {
            let running = self.agents.iter().filter(|a| a.running.is_some()).count();
            if running >= self.concurrency() {
                return Ok(());
            }
            let Some(assignment) = self.next_assignment(phase_idx) else {
                return Ok(());
            };
            let (agent_idx, task_idx) = (assignment.agent_idx, assignment.task_idx);
            if assignment.cross_role {
                let task = &self.board.tasks[task_idx];
                let waited = task
                    .ready_since
                    .map(|since| self.clock.session_secs() - since);
                let (task_id, task_role) = (task.spec.id.clone(), task.spec.role.clone());
                let agent = &self.agents[agent_idx];
                let (agent_id, agent_role) = (agent.id.clone(), agent.role.clone());
                tracing::info!(message = "task taken by another role", task = %task_id, task_role = %task_role, agent = %agent_id, agent_role = %agent_role);
                self.event(
                    "cross_role_assignment",
                    Some(&agent_id),
                    None,
                    Some(&task_id),
                    serde_json::json!({"task_role": task_role, "agent_role": agent_role, "waited_session_secs": waited}),
                )?;
            }
            self.start_run(agent_idx, task_idx)?;
        }
    }

    pub(super) fn fail_blocked_tasks(&mut self, phase_idx: usize) -> Result<()> {
        while let Some((task_idx, dependency)) = self.board.next_blocked(phase_idx) {
            self.board
                .block(task_idx, &dependency, self.clock.session_secs());
            let task_id = self.board.tasks[task_idx].spec.id.clone();
            self.sync_task(task_idx)?;
            self.event(
                "task_blocked",
                None,
                None,
                Some(&task_id),
                serde_json::json!({"dependency": dependency}),
            )?;
        }
        Ok(())
    }

    pub(super) fn next_assignment(&self, phase_idx: usize) -> Option<board::Assignment> {
        let agents: Vec<AgentView<'_>> = self
            .agents
            .iter()
            .map(|a| AgentView {
                id: &a.id,
                role: &a.role,
                idle: a.running.is_none() && !a.retired,
                live: !a.retired,
            })
            .collect();
        self.board.next_assignment(
            phase_idx,
            self.clock.session_secs(),
            &agents,
            self.cross_role_grace(),
        )
    }

    /// Wait in `next_event` for the event `pick` accepts (a job's result), dispatching every
    /// other event meanwhile; a shutdown cancels `cancel` (the job then reports None).
    pub(super) async fn wait_for_job<T>(
        &mut self,
        cancel: &CancellationToken,
        mut pick: impl FnMut(Event) -> std::result::Result<T, Event>,
    ) -> Result<T> {
        loop {
            match pick(self.next_event(None, None).await) {
                Ok(found) => return Ok(found),
                Err(event) => {
                    self.dispatch(event).await?;
                    if self.shutdown.is_some() {
                        cancel.cancel();
                    }
                }
            }
        }
    }

    /// The phase checks at the phase's end: the spec's build and test commands in `project/`,
    /// then the evaluation when the phase evaluates (or a budget ended it), recorded as the
    /// phase's. A phase its gate ended keeps what the gate measured (nothing ran since but its
    /// gate vote). A signal cancels the running check.
    pub(super) async fn run_checks(&mut self, phase_idx: usize) -> Result<()> {
        // megatest's own measurement: session time runs at wall speed meanwhile.
        let _measuring = self.clock.real_time();
        let (rows, evaluation) = match self.gate.take_measured() {
            Some(measured) => measured,
            None => {
                let Some(rows) = self.run_check_commands(phase_idx).await? else {
                    return Ok(());
                };
                (rows, None)
            }
        };
        self.record_checks(phase_idx, rows)?;
        match evaluation {
            Some(evaluation) => self.record_evaluation(phase_idx, evaluation)?,
            // A phase the budget ended is the session's last: it is judged even when
            // [evaluation].phases leaves it out.
            None if self.prepared.config.phases[phase_idx].evaluate
                || self.budgets.exhausted.is_some() =>
            {
                let checks = self.phases[phase_idx].checks.clone();
                if let Some(evaluation) = self.evaluate(phase_idx, checks).await? {
                    self.record_evaluation(phase_idx, evaluation)?;
                }
            }
            None => {}
        }
        // tokei walks the whole workspace: on the blocking pool, not the session task.
        let workspace = self.workspace.clone();
        match tokio::task::spawn_blocking(move || metrics::code_stats(&workspace)).await {
            Ok(stats) => self.last_code_stats = Some(stats),
            Err(err) => tracing::warn!(message = "code statistics failed", error = %err),
        }
        Ok(())
    }

    /// Run the spec's build and test commands in `project/`, each bounded by
    /// `[limits].max_test_runtime_min` (wall minutes: real commands are not time-scaled), off the
    /// session task; events are served meanwhile. None when a signal cancelled them.
    pub(super) async fn run_check_commands(
        &mut self,
        phase_idx: usize,
    ) -> Result<Option<Vec<CheckRow>>> {
        let phase = self.prepared.config.phases[phase_idx].name.clone();
        let timeout =
            Duration::from_secs_f64(self.prepared.config.raw.limits.max_test_runtime_min * 60.0);
        let commands = self.prepared.spec.commands.clone();
        let checks = [("build", commands.build), ("test", commands.test)];
        let mut rows = Vec::new();
        for (name, command) in checks {
            let workspace = self.workspace.clone();
            let phase_name = phase.clone();
            let cancel = CancellationToken::new();
            let cancel_for_check = cancel.clone();
            let events = self.events_tx.clone();
            // The check runs on its own task; its result comes back as an event.
            tokio::spawn(async move {
                let row = tokio::select! {
                    row = eval::run_check(&phase_name, name, &command, &workspace, timeout) => Some(row),
                    _ = cancel_for_check.cancelled() => None,
                };
                let _ = events.send(Event::CheckFinished(Box::new(row))).await;
            });
            self.mode = ticks::Mode::Checking;
            let row = self
                .wait_for_job(&cancel, |event| match event {
                    Event::CheckFinished(row) => Ok(*row),
                    other => Err(other),
                })
                .await?;
            self.mode = ticks::Mode::Running;
            let Some(row) = row else { return Ok(None) };
            tracing::info!(message = "check", phase = %phase, check = name, passed = row.passed, exit_code = ?row.exit_code, wall_secs = row.wall_secs);
            rows.push(row);
        }
        self.blame_checks(&rows)?;
        Ok(Some(rows))
    }

    /// Record `rows` as phase `phase_idx`'s checks: `session.db`, events, and a failed check to
    /// the recovery table.
    fn record_checks(&mut self, phase_idx: usize, rows: Vec<CheckRow>) -> Result<()> {
        let phase = self.prepared.config.phases[phase_idx].name.clone();
        for row in rows {
            self.store.insert_check(&row)?;
            self.event(
                "check",
                None,
                Some(&phase),
                None,
                serde_json::json!({"name": row.name, "passed": row.passed, "exit_code": row.exit_code, "wall_secs": row.wall_secs}),
            )?;
            tracing::info!(message = "phase check", phase = %phase, check = %row.name, passed = row.passed, exit_code = ?row.exit_code, wall_secs = row.wall_secs);
            let message = format!("phase {phase} check failed: {}", eval::describe_check(&row));
            self.check_result(&row.name, row.passed, row.timed_out, &message)?;
            self.phases[phase_idx].checks.push(row);
        }
        Ok(())
    }
}
