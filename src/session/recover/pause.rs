//! Pauses and escalations: agents frozen and calls held, the cause watched, continued;
//! escalations waiting for an operator's decision or their deadline.

use super::*;

impl Session {
    /// SIGSTOP the running agents' groups that are not stopped already and close the proxy's
    /// gate; returns the groups stopped here (only those are continued later).
    pub(in crate::session) fn hold_everything(&mut self) -> Vec<i32> {
        let mut groups = Vec::new();
        for agent in &self.agents {
            if let Some(running) = &agent.running {
                if !running.group.is_frozen() && running.group.freeze() {
                    groups.push(running.group.id() as i32);
                }
            }
        }
        let _ = self.recovery.paused_tx.send(true);
        groups
    }

    /// Stop the agents (SIGSTOP their groups), hold the proxy's calls, free the disk reserve,
    /// clean up, alert. The watchdog continues the session when the cause is gone.
    pub(in crate::session) fn pause(
        &mut self,
        id: i64,
        kind: FailureKind,
        message: &str,
    ) -> Result<()> {
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
    pub(in crate::session) fn record_pause(
        &mut self,
        recovery_id: Option<i64>,
        kind: Option<FailureKind>,
        groups: Vec<i32>,
        mut data: serde_json::Value,
    ) -> Result<()> {
        self.set_status_file("paused");
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
    pub(in crate::session) fn operator_pause(&mut self) -> Result<()> {
        let groups = self.hold_everything();
        self.record_pause(None, None, groups, serde_json::json!({"operator": true}))?;
        tracing::warn!(message = "session paused by the operator");
        Ok(())
    }

    /// Continue a paused session: SIGCONT the groups megatest stopped, release held calls.
    pub(in crate::session) fn unpause(&mut self, how: &str) -> Result<()> {
        let Some(pause) = self.recovery.pause.take() else {
            return Ok(());
        };
        for id in &pause.groups {
            self.prepared.agent_backend.group(*id as u32).thaw();
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
        self.set_status_file("running");
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
    pub(in crate::session) fn escalate(
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
            self.board.tasks[task_idx].held = true;
        }
        self.recovery.escalations.push(Escalation {
            recovery_id: id,
            kind,
            task_idx,
            deadline_session_secs: self.clock.session_secs() + timeout,
        });
        self.set_status_file("escalated");
        self.event(
            "escalation",
            None,
            None,
            None,
            serde_json::json!({"recovery_id": id, "timeout_session_secs": timeout, "default": action_str(self.prepared.config.raw.recovery.escalation_default), "reason": message}),
        )?;
        Ok(())
    }

    /// Open escalations, for the status document.
    pub(in crate::session) fn open_escalations(&self) -> Vec<serde_json::Value> {
        self.recovery
            .escalations
            .iter()
            .map(|e| {
                serde_json::json!({
                    "recovery_id": e.recovery_id,
                    "failure_kind": e.kind.as_str(),
                    "task_id": e.task_idx.map(|t| self.board.tasks[t].spec.id.clone()),
                    "deadline_session_secs": e.deadline_session_secs,
                    "default": action_str(self.prepared.config.raw.recovery.escalation_default),
                })
            })
            .collect()
    }

    /// `POST /api/escalations/{id}/decision`: `continue` releases the held task (a deadlocked
    /// review's work is accepted), `stop` stops the session (exit 3). The recovery's outcome is `escalated` either way.
    pub(in crate::session) fn decide_escalation(
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
        if let Err(err) = self.release_escalated(escalation.kind, escalation.task_idx) {
            tracing::error!(message = "cannot release the escalated task", error = %format!("{err:#}"));
        }
        if decision == "stop" {
            self.recovery.stop = Some(format!(
                "the operator decided to stop on escalation {recovery_id} ({})",
                escalation.kind.as_str()
            ));
        } else if self.recovery.escalations.is_empty() && self.recovery.pause.is_none() {
            self.set_status_file("running");
        }
        Ok(serde_json::json!({"recovery_id": recovery_id, "decision": decision}))
    }
}
