//! Checkpoints of a running session: the tool-call and token thresholds, the freeze around
//! a snapshot (off the session task), the checkpoint document, the store's size limit.

use super::*;

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
        let groups: Vec<i32> = self
            .agents
            .iter()
            .filter_map(|a| a.running.as_ref())
            .filter(|r| !local::process_stopped(r.pgid as i32))
            .map(|r| r.pgid as i32)
            .filter(|group| local::freeze_group(*group))
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
                    local::thaw_group(*group);
                }
                tracing::warn!(message = "snapshot outlasted the freeze limit: agents continued; checkpoint marked inconsistent");
                (job.await, false)
            }
        };
        for group in &groups {
            local::thaw_group(*group);
        }
        let frozen_ms = frozen.elapsed().as_secs_f64() * 1000.0;
        let (checkpointer, result, git_commit) = joined.context("the snapshot task panicked")?;
        self.checkpointer = Some(checkpointer);
        let (manifest, stats) = result?;
        let content = self.checkpoint_content(
            trigger,
            &manifest,
            &stats,
            (consistent, frozen_ms),
            git_commit,
        )?;
        let checkpointer = self.checkpointer.as_mut().expect("put back above");
        let session_secs = self.clock.session_secs();
        let row = checkpointer.write_recorded(
            &self.store,
            content,
            trigger,
            session_secs,
            manifest,
            &stats,
            consistent,
            frozen_ms,
        )?;
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

    /// The seed's `SessionCheckpoint` fields plus megatest's (trigger, task board, budgets).
    pub(super) fn checkpoint_content(
        &mut self,
        trigger: &str,
        manifest: &str,
        stats: &crate::checkpoint::snapshot::SnapshotStats,
        (consistent, frozen_ms): (bool, f64),
        git_commit: Option<String>,
    ) -> Result<serde_json::Value> {
        let notes = self.store.events_of_kind("note")?;
        let agent_states: Vec<serde_json::Value> = self
            .agents
            .iter()
            .map(|a| {
                let totals = self.store.ledger_totals(Some(&a.id)).unwrap_or_default();
                serde_json::json!({
                    "id": a.id,
                    "role": a.role,
                    "status": if a.running.is_some() { "running" } else { "idle" },
                    "current_task": a.running.as_ref().map(|r| self.board.tasks[r.task_idx].spec.id.clone()),
                    "attempt": a.running.as_ref().map(|r| r.attempt),
                    "tokens": totals.total_tokens,
                    "tool_calls": totals.tool_calls,
                    "last_activity": a.last_activity,
                    "process_ids": a.running.as_ref().map(|r| vec![r.pgid]).unwrap_or_default(),
                    "process_group": a.running.as_ref().map(|r| r.pgid),
                    "handoff_notes": crate::checkpoint::notes_of(&notes, &a.id),
                })
            })
            .collect();
        let test_results: Vec<&CheckRow> = self
            .phases
            .iter()
            .rev()
            .find(|p| !p.checks.is_empty())
            .map(|p| p.checks.iter().collect())
            .unwrap_or_default();
        Ok(serde_json::json!({
            "timestamp": now(),
            "session_id": self.id(),
            "trigger": trigger,
            "phase": self.current_phase.map(|p| self.prepared.config.phases[p].name.clone()),
            "session_secs": self.clock.session_secs(),
            "wall_secs": self.clock.wall_secs(),
            "agent_states": agent_states,
            "working_memory": crate::checkpoint::working_memory(&notes),
            "file_system_state": {
                "manifest": manifest,
                "files": stats.files,
                "dirs": stats.dirs,
                "symlinks": stats.symlinks,
                "bytes": stats.bytes,
                "new_objects": stats.new_objects,
                "new_bytes": stats.new_bytes,
                "cache_hits": stats.cache_hits,
                "not_stored": stats.not_stored,
                "consistent": consistent,
                "frozen_ms": frozen_ms,
            },
            "test_results": test_results,
            "metrics": self.current_metrics("running"),
            "git_commit": git_commit,
            "task_board": self.board.tasks.iter().map(|t| serde_json::json!({
                "id": t.spec.id, "phase": t.spec.phase, "role": t.spec.role, "state": t.state.as_str(),
                "attempts": t.attempts, "agent_id": t.agent_id, "last_error": t.last_error,
            })).collect::<Vec<_>>(),
            "budgets": self.budgets,
        }))
    }
}
