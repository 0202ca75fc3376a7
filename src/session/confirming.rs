//! Task-level confirmation (`[scheduling].task_check`): an agent's exit code 0 is a claim. When
//! no review judges the work (`[consensus]` off), the task's check — its own `check` command from
//! the spec, else the spec's build command — runs in `project/` off the session task while the
//! task stays running (the agent is free for other work). Passed: the task is done (confirmed).
//! Failed: a failed attempt — back to its role with the check's output in the next prompt, failed
//! for good after `[agents].max_task_attempts`. A check still going when its phase ends (or the
//! session stops) is cancelled and its task goes back on the board. Each result is a
//! `task_checked` event; an agent's refuted claims count against its trust score.

use super::*;
use crate::config::scheduling::TaskCheck;

/// A task check in flight.
pub(super) struct TaskCheckJob {
    id: u64,
    /// The agent whose claim it checks.
    agent_idx: usize,
    cancel: CancellationToken,
}

/// The task checks in flight, by board index of their task.
#[derive(Default)]
pub(super) struct TaskChecks {
    jobs: std::collections::HashMap<usize, TaskCheckJob>,
    next_id: u64,
}

impl Session {
    /// The command that confirms finished task `task_idx`, when its work needs one: no review
    /// judges it and `[scheduling].task_check = "build"`. None: the exit code stands.
    pub(super) fn task_check_command(&self, task_idx: usize) -> Option<String> {
        let config = &self.prepared.config.raw;
        let task = &self.board.tasks[task_idx];
        if config.scheduling.task_check != TaskCheck::Build
            || config.consensus.enabled
            || task.review_of.is_some()
        {
            return None;
        }
        let command = task
            .spec
            .check
            .clone()
            .unwrap_or_else(|| self.prepared.spec.commands.build.clone());
        (!command.trim().is_empty()).then_some(command)
    }

    /// Agent `agent_idx` finished task `task_idx`: run `command` to confirm it. The task stays
    /// running until [`Session::task_check_finished`].
    pub(super) fn begin_task_check(
        &mut self,
        task_idx: usize,
        agent_idx: usize,
        command: String,
    ) -> Result<()> {
        let checks = &mut self.task_checks;
        checks.next_id += 1;
        let id = checks.next_id;
        let cancel = CancellationToken::new();
        checks.jobs.insert(
            task_idx,
            TaskCheckJob {
                id,
                agent_idx,
                cancel: cancel.clone(),
            },
        );
        let task = &self.board.tasks[task_idx];
        let phase = self.prepared.config.phases[task.phase_idx].name.clone();
        let name = format!("task_check:{}", task.spec.id);
        let workspace = self.workspace.clone();
        let timeout =
            Duration::from_secs_f64(self.prepared.config.raw.limits.max_test_runtime_min * 60.0);
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let row = tokio::select! {
                row = eval::run_check(&phase, &name, &command, &workspace, timeout) => Some(row),
                _ = cancel.cancelled() => None,
            };
            let _ = events
                .send(Event::TaskCheckFinished {
                    job: id,
                    task_idx,
                    row: Box::new(row),
                })
                .await;
        });
        Ok(())
    }

    /// A task check's result: the task is done, or its attempt failed.
    pub(super) fn task_check_finished(
        &mut self,
        job: u64,
        task_idx: usize,
        row: Option<CheckRow>,
    ) -> Result<()> {
        if self
            .task_checks
            .jobs
            .get(&task_idx)
            .is_none_or(|j| j.id != job)
        {
            return Ok(()); // cancelled or replaced: already settled
        }
        let Some(TaskCheckJob { agent_idx, .. }) = self.task_checks.jobs.remove(&task_idx) else {
            return Ok(());
        };
        let Some(row) = row else { return Ok(()) };
        let now = self.clock.session_secs();
        let task_id = self.board.tasks[task_idx].spec.id.clone();
        let agent_id = self.agents[agent_idx].id.clone();
        let phase = self.prepared.config.phases[self.board.tasks[task_idx].phase_idx]
            .name
            .clone();
        tracing::info!(message = "task check", task = %task_id, agent = %agent_id, passed = row.passed, exit_code = ?row.exit_code, wall_secs = row.wall_secs);
        self.event(
            "task_checked",
            Some(&agent_id),
            Some(&phase),
            Some(&task_id),
            serde_json::json!({
                "passed": row.passed,
                "command": row.command,
                "exit_code": row.exit_code,
                "timed_out": row.timed_out,
                "wall_secs": row.wall_secs,
                "output_tail": if row.passed { None } else { Some(&row.output_tail) },
            }),
        )?;
        self.trust_stale = true;
        if row.passed {
            let task = &mut self.board.tasks[task_idx];
            task.state = TaskState::Done;
            task.finished_session_secs = Some(now);
            task.last_error = None;
            let agent = &mut self.agents[agent_idx];
            agent.tasks_done += 1;
            agent.failures_in_row = 0;
        } else {
            let message = format!(
                "the task check did not confirm the work: {}",
                eval::describe_check(&row)
            );
            let max = self.prepared.config.raw.agents.max_task_attempts;
            self.board.settle_failed_run(task_idx, &message, max, now);
            self.agents[agent_idx].failures_in_row += 1;
        }
        self.settle_recoveries(task_idx)?;
        self.sync_task(task_idx)
    }

    /// How finished tasks were confirmed, for the report.
    pub(super) fn task_confirmation(&self) -> crate::report::TaskConfirmation {
        let config = &self.prepared.config.raw;
        let by = if config.consensus.enabled {
            "review"
        } else if config.scheduling.task_check == TaskCheck::Build {
            "task_check"
        } else {
            "exit_code"
        };
        let (mut passed, mut failed) = (0, 0);
        for event in self
            .store
            .events_of_kind("task_checked")
            .unwrap_or_default()
        {
            let data: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
            match data["passed"].as_bool() {
                Some(true) => passed += 1,
                Some(false) => failed += 1,
                None => {}
            }
        }
        crate::report::TaskConfirmation {
            by: by.to_string(),
            checks_passed: passed,
            checks_failed: failed,
        }
    }

    /// Cancel every task check in flight (a phase end, a stop): their tasks go back on the
    /// board (their attempt stays counted).
    pub(super) fn cancel_task_checks(&mut self) -> Result<()> {
        let jobs: Vec<(usize, TaskCheckJob)> = self.task_checks.jobs.drain().collect();
        for (task_idx, job) in jobs {
            job.cancel.cancel();
            let task = &mut self.board.tasks[task_idx];
            if task.state == TaskState::Running {
                task.state = TaskState::Pending;
                task.last_error =
                    Some("its task check had not finished when the phase ended".into());
            }
            self.sync_task(task_idx)?;
        }
        Ok(())
    }
}
