//! Checkpoints of a running session: the tool-call and token thresholds, the freeze around
//! a snapshot (off the session task), the checkpoint document, the store's size limit.

use super::*;
use crate::checkpoint::document::{AgentState, FileSystemState, Parts};
use crate::checkpoint::CheckpointDocument;
use crate::store::BoardEntry;

impl Session {
    /// Count a model call's or agent report's tool calls and tokens toward the checkpoint
    /// thresholds (`[checkpoint].tool_call_threshold`, `token_threshold`).
    pub(super) fn count_toward_checkpoint(&mut self, tool_calls: u64, tokens: u64) {
        self.tool_calls_since_checkpoint += tool_calls;
        self.tokens_since_checkpoint += tokens;
        let c = &self.prepared.config.raw.checkpoint;
        if !c.enabled || self.checkpoint_due.is_some() {
            return;
        }
        if self.tool_calls_since_checkpoint >= c.tool_call_threshold {
            self.checkpoint_due = Some("tool_calls");
        } else if self.tokens_since_checkpoint >= c.token_threshold {
            self.checkpoint_due = Some("tokens");
        }
    }

    /// Take a checkpoint: freeze the running agents' process groups (SIGSTOP), snapshot the
    /// workspace off the session task, continue them (SIGCONT) — after at most
    /// [`crate::checkpoint::FREEZE_LIMIT`] — then write and record `checkpoint_NNN.json`.
    pub(super) async fn take_checkpoint(&mut self, trigger: &'static str) -> Result<()> {
        let Some(mut checkpointer) = self.checkpointer.take() else {
            return Ok(());
        };
        // Groups stopped already (a pause, a hang) stay stopped: only those frozen here continue.
        let groups: Vec<Arc<dyn AgentGroup>> = self
            .agents
            .iter()
            .filter_map(|a| a.running.as_ref())
            .filter(|r| !r.group.is_frozen() && r.group.freeze())
            .map(|r| r.group.clone())
            .collect();
        let frozen = Instant::now();
        let workspace = self.workspace.clone();
        // The snapshot and `git rev-parse` run on the blocking pool, never on the session task.
        let mut job = tokio::task::spawn_blocking(move || {
            let result = checkpointer.snapshot(&workspace);
            let git_commit = crate::checkpoint::git_head(&workspace);
            (checkpointer, result, git_commit)
        });
        let (joined, consistent) = match tokio::time::timeout(
            crate::checkpoint::FREEZE_LIMIT,
            &mut job,
        )
        .await
        {
            Ok(joined) => (joined, true),
            Err(_) => {
                for group in &groups {
                    group.thaw();
                }
                tracing::warn!(message = "snapshot outlasted the freeze limit: agents continued; checkpoint marked inconsistent");
                (job.await, false)
            }
        };
        for group in &groups {
            group.thaw();
        }
        let frozen_ms = frozen.elapsed().as_secs_f64() * 1000.0;
        let (checkpointer, result, git_commit) = joined.context("the snapshot task panicked")?;
        self.checkpointer = Some(checkpointer);
        let (manifest, stats) = result?;
        let document = self.checkpoint_document(
            trigger,
            FileSystemState::of(&manifest, &stats, consistent, frozen_ms),
            git_commit,
        )?;
        let checkpointer = self.checkpointer.as_mut().expect("put back above");
        let row = checkpointer.write_recorded(&self.store, &document)?;
        let seq = row.seq;
        let phase = self
            .current_phase
            .map(|p| self.prepared.config.phases[p].name.clone());
        self.event(
            "checkpoint",
            None,
            phase.as_deref(),
            None,
            serde_json::to_value(&row)?,
        )?;
        tracing::info!(
            message = "checkpoint written",
            seq,
            trigger,
            files = stats.files,
            new_bytes = stats.new_bytes,
            frozen_ms
        );
        self.notice(
            NotifyEvent::Checkpoint,
            &format!("checkpoint {seq} written ({trigger})"),
            serde_json::json!({"seq": seq, "trigger": trigger, "path": row.path}),
        )?;
        self.tool_calls_since_checkpoint = 0;
        self.tokens_since_checkpoint = 0;
        self.checkpoints_taken += 1;
        self.enforce_store_limit()?;
        self.last_checkpoint = Some(row);
        Ok(())
    }

    /// Keep the checkpoint store within `[limits].disk_space_limit_gb`: prune unreferenced
    /// objects; if that is not enough, record `disk_full` for the recovery table.
    pub(super) fn enforce_store_limit(&mut self) -> Result<()> {
        let limit = (self.prepared.config.raw.limits.disk_space_limit_gb * 1e9) as u64;
        let checkpointer = self
            .checkpointer
            .as_mut()
            .expect("present between snapshots");
        let Some(pruned) = checkpointer.enforce_limit(limit)? else {
            return Ok(());
        };
        let data = serde_json::to_value(&pruned)?;
        self.event("checkpoint_store_pruned", None, None, None, data)?;
        if pruned.kept_bytes > limit {
            let message = format!(
                "checkpoint store holds {} bytes, over limits.disk_space_limit_gb ({} bytes), with nothing left to prune",
                pruned.kept_bytes, limit
            );
            self.failure(FailureKind::DiskFull, None, None, &message)?;
        }
        Ok(())
    }

    /// This session's view for [`CheckpointDocument::build`]: agents with their runs and
    /// metered totals, the last phase's checks, the current metrics, the board, the budgets.
    pub(super) fn checkpoint_document(
        &mut self,
        trigger: &str,
        file_system_state: FileSystemState,
        git_commit: Option<String>,
    ) -> Result<CheckpointDocument> {
        let notes = self.store.events_of_kind("note")?;
        let agents = self
            .agents
            .iter()
            .map(|a| {
                let totals = self.store.ledger_totals(Some(&a.id)).unwrap_or_default();
                let mut state = AgentState::stopped(&a.id, &a.role);
                state.status = if a.running.is_some() {
                    "running"
                } else {
                    "idle"
                }
                .into();
                state.current_task = a
                    .running
                    .as_ref()
                    .map(|r| self.board.tasks[r.task_idx].spec.id.clone());
                state.attempt = a.running.as_ref().map(|r| r.attempt);
                state.tokens = Some(totals.total_tokens);
                state.tool_calls = Some(totals.tool_calls);
                state.last_activity = a.last_activity.clone();
                state.process_group = a.running.as_ref().map(|r| r.group.id());
                state.process_ids = state.process_group.into_iter().collect();
                state
            })
            .collect();
        let test_results = self
            .phases
            .iter()
            .rev()
            .find(|p| !p.checks.is_empty())
            .map(|p| p.checks.clone())
            .unwrap_or_default();
        let task_board = self
            .board
            .tasks
            .iter()
            .map(|t| BoardEntry {
                id: t.spec.id.clone(),
                phase: t.spec.phase.clone(),
                role: t.spec.role.clone(),
                state: t.state.as_str().to_string(),
                attempts: t.attempts,
                agent_id: t.agent_id.clone(),
                last_error: t.last_error.clone(),
            })
            .collect();
        Ok(CheckpointDocument::build(Parts {
            session_id: self.id(),
            trigger,
            phase: self
                .current_phase
                .map(|p| self.prepared.config.phases[p].name.clone()),
            session_secs: self.clock.session_secs(),
            wall_secs: Some(self.clock.wall_secs()),
            agents,
            notes: &notes,
            file_system_state,
            test_results,
            metrics: Some(serde_json::to_value(self.current_metrics("running"))?),
            git_commit,
            task_board,
            budgets: serde_json::to_value(&self.budgets)?,
        }))
    }
}
