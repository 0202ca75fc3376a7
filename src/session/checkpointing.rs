//! Checkpoints of a running session: the tool-call and token thresholds, starting a
//! checkpoint off the session task and recording its result (an event), the checkpoint
//! document's session parts, the store's size limit.

use super::*;
use crate::checkpoint::document::{AgentState, FileSystemState, Parts};
use crate::checkpoint::{job, CheckpointDocument};

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

    /// Start a checkpoint off the session task ([`crate::checkpoint::job::take`]): its result
    /// comes back as [`Event::CheckpointTaken`]. Does nothing while one is in flight (the
    /// trigger stays due) or when the checkpointer was lost.
    pub(super) fn begin_checkpoint(&mut self, trigger: &'static str) -> Result<()> {
        if self.checkpoint_in_flight || self.checkpointer.is_none() {
            return Ok(());
        }
        let document = self.checkpoint_document(trigger, FileSystemState::default(), None)?;
        let Some(checkpointer) = self.checkpointer.take() else {
            return Ok(());
        };
        let request = job::Request {
            checkpointer,
            workspace: self.workspace.clone(),
            document,
            latest: self
                .last_checkpoint
                .as_ref()
                .map(|row| (self.dir().join(&row.path), row.sha256.clone(), row.seq)),
            groups: self
                .agents
                .iter()
                .filter_map(|a| a.running.as_ref())
                .map(|r| r.group.clone())
                .collect(),
            trigger,
        };
        self.checkpoint_in_flight = true;
        // Requests made from now on get the next checkpoint, taken after they asked.
        self.checkpoint_replies_in_flight = std::mem::take(&mut self.checkpoint_replies);
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let taken = job::take(request).await;
            let _ = events.send(Event::CheckpointTaken(Box::new(taken))).await;
        });
        Ok(())
    }

    /// Take a checkpoint and wait for it, handling every other event meanwhile (a checkpoint
    /// already in flight finishes first). Returns how this one ended.
    pub(super) async fn checkpoint_now(&mut self, trigger: &'static str) -> Result<()> {
        let earlier = self.settle_checkpoint().await;
        self.recoverable(earlier)?;
        self.begin_checkpoint(trigger)?;
        self.settle_checkpoint().await
    }

    /// Wait for the checkpoint in flight (if any), handling every other event meanwhile;
    /// returns how it ended.
    pub(super) async fn settle_checkpoint(&mut self) -> Result<()> {
        while self.checkpoint_in_flight {
            match self.next_event(None, None).await {
                Event::CheckpointTaken(taken) => return self.finish_checkpoint(*taken),
                event => self.dispatch(event).await?,
            }
        }
        Ok(())
    }

    /// Record what [`Self::begin_checkpoint`] started: the row, the `checkpoint` event, the
    /// notification, the store limit; answer waiting `POST /api/checkpoint` requests. A corrupt
    /// newest checkpoint is `data_corruption` (and the trigger stays due); a failed snapshot or
    /// write is returned for the recovery table.
    pub(super) fn finish_checkpoint(&mut self, taken: job::Taken) -> Result<()> {
        self.checkpoint_in_flight = false;
        self.checkpointer = taken.checkpointer;
        if self.checkpointer.is_none() {
            tracing::error!(message = "the checkpoint store is lost: no more checkpoints this run");
        }
        let (document, seq, path, sha256, stats) = match taken.outcome {
            job::Outcome::Written {
                document,
                seq,
                path,
                sha256,
                stats,
            } => (document, seq, path, sha256, stats),
            job::Outcome::LatestCorrupt { seq, problem } => {
                // Its requests wait for the checkpoint taken instead.
                let waiting = std::mem::take(&mut self.checkpoint_replies_in_flight);
                self.checkpoint_replies.extend(waiting);
                self.checkpoint_corrupt(seq, &problem)?;
                if self.recovery.stop.is_none() {
                    self.checkpoint_due.get_or_insert(taken.trigger);
                }
                return Ok(());
            }
            job::Outcome::Failed(err) => {
                self.answer_checkpoint_requests(Err(format!("{err:#}")));
                return Err(err.into());
            }
        };
        let row = crate::checkpoint::row_of(&document, seq, &path, sha256);
        let recorded = self.store.insert_checkpoint(&row);
        if let Err(err) = recorded {
            self.answer_checkpoint_requests(Err(format!("{err:#}")));
            return Err(err.into());
        }
        let phase = document.phase.clone();
        self.event(
            "checkpoint",
            None,
            phase.as_deref(),
            None,
            serde_json::to_value(&row)?,
        )?;
        let fs = &document.file_system_state;
        tracing::info!(
            message = "checkpoint written",
            seq,
            trigger = %row.trigger,
            files = stats.files,
            new_bytes = stats.new_bytes,
            frozen_ms = fs.frozen_ms
        );
        self.notice(
            NotifyEvent::Checkpoint,
            &format!("checkpoint {seq} written ({})", row.trigger),
            serde_json::json!({"seq": seq, "trigger": row.trigger, "path": row.path}),
        )?;
        self.tool_calls_since_checkpoint = 0;
        self.tokens_since_checkpoint = 0;
        self.checkpoints_taken += 1;
        self.last_checkpoint = Some(row);
        self.answer_checkpoint_requests(Ok(()));
        if let Some(sync) = &self.sync {
            sync.soon();
        }
        self.enforce_store_limit()
    }

    /// Keep the checkpoint store within `[limits].disk_space_limit_gb`: prune unreferenced
    /// objects; if that is not enough, record `disk_full` for the recovery table.
    pub(super) fn enforce_store_limit(&mut self) -> Result<()> {
        let limit = (self.prepared.config.raw.limits.disk_space_limit_gb * 1e9) as u64;
        let Some(checkpointer) = self.checkpointer.as_mut() else {
            return Ok(());
        };
        let Some(pruned) = checkpointer.enforce_limit(limit)? else {
            return Ok(());
        };
        // The task snapshots' stat cache may vouch for objects the prune removed.
        self.task_snapshots.forget();
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
        let notes = self.memory_events("note");
        let handoffs = self.memory_events("handoff");
        let decisions = self.memory_events("vote_closed");
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
        // The newest phase's checks, and its evaluation's acceptance run as one more row.
        let test_results = self
            .phases
            .iter()
            .rev()
            .find(|p| !p.checks.is_empty())
            .map(|p| {
                let mut rows = p.checks.clone();
                rows.extend(
                    p.evaluation
                        .as_deref()
                        .map(eval::evaluation::acceptance_row),
                );
                rows
            })
            .unwrap_or_default();
        let task_board = self.board.entries();
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
            handoffs: &handoffs,
            decisions: &decisions,
            file_system_state,
            test_results,
            metrics: Some(serde_json::to_value(self.current_metrics("running"))?),
            git_commit,
            task_board,
            budgets: serde_json::to_value(&self.budgets)?,
        }))
    }
}
