//! Operator control of a live session: the control API's requests ([`ApiRequest`]), SIGUSR1
//! status summaries, SIGHUP / config-file reloads, and the status document they share.

use super::Session;
use crate::protocol::{ApiRequest, ShutdownSignal};
use crate::protocol::{ControlError, ControlReply};
use anyhow::Result;
use serde_json::{json, Value};

fn refused(code: &'static str, message: impl Into<String>) -> ControlReply {
    Err(ControlError::Conflict {
        code,
        message: message.into(),
    })
}

impl Session {
    /// The status document (`GET /api/status`, `status.json`, `megatest status`).
    pub(super) fn status_json(&self) -> Value {
        let word = self.status_word();
        let metrics = self.current_metrics(word);
        let usage = self.totals.clone();
        let budget = self.budget_report(&usage);
        let agents: Vec<Value> = self
            .agents
            .iter()
            .map(|a| {
                json!({
                    "id": a.id,
                    "role": a.role,
                    "status": if a.running.is_some() { "running" } else { "idle" },
                    "task": a.running.as_ref().map(|r| self.board.tasks[r.task_idx].spec.id.clone()),
                    "attempt": a.running.as_ref().map(|r| r.attempt),
                    "pid": a.running.as_ref().map(|r| r.group.id()),
                    "last_activity": a.last_activity,
                    "idle_wall_secs": a.active.elapsed().as_secs_f64(),
                    "calls_in_flight": a.calls_in_flight,
                    "tasks_done": a.tasks_done,
                    "failed_runs": a.failed_runs,
                })
            })
            .collect();
        let recoveries = self.store.recoveries().unwrap_or_default();
        let mut by_outcome = serde_json::Map::new();
        for r in &recoveries {
            let key = r.outcome.clone().unwrap_or_else(|| "open".into());
            let n = by_outcome.get(&key).and_then(Value::as_u64).unwrap_or(0);
            by_outcome.insert(key, json!(n + 1));
        }
        let open: Vec<&crate::store::RecoveryRow> =
            recoveries.iter().filter(|r| r.outcome.is_none()).collect();
        json!({
            "session_id": self.id(),
            "status": word,
            "phase": self.current_phase.map(|p| self.prepared.config.phases[p].name.clone()),
            "time_scale": self.prepared.config.time_scale,
            "elapsed_session_secs": metrics.elapsed_session_secs,
            "elapsed_wall_secs": metrics.elapsed_wall_secs,
            "remaining_session_secs": metrics.remaining_session_secs,
            "agents": agents,
            "tokens": usage,
            "budget": {
                "tokens_used": budget.used_tokens,
                "tokens_total": budget.total_token_budget,
                "used_fraction": budget.used_fraction,
                "alert_raised": budget.alert_raised,
                "exhausted": budget.exhausted,
                "cost_usd": budget.cost_usd,
                "max_cost_usd": budget.max_cost_usd,
            },
            "checkpoints": self.checkpoints_taken,
            "last_checkpoint": self.last_checkpoint,
            "recoveries": {"by_outcome": by_outcome, "open": open, "total": recoveries.len()},
            "escalations": self.open_escalations(),
            "phase_elapsed_session_secs": self.current_phase.and_then(|p| self.phases[p].started).map(|(start, _)| metrics.elapsed_session_secs - start),
            "phase_planned_session_secs": self.current_phase.map(|p| self.prepared.config.phases[p].session_secs),
            "phases": self.prepared.config.phases.iter().zip(&self.phases).map(|(plan, record)| json!({
                "name": plan.name,
                "planned_session_secs": plan.session_secs,
                "started_session_secs": record.started.map(|(session, _)| session),
                "ended_session_secs": record.ended.map(|(session, _)| session),
            })).collect::<Vec<Value>>(),
            "phase_index": self.current_phase,
            "phase_count": self.prepared.config.phases.len(),
            "last_event": self.store.last_event().ok().flatten().map(|(kind, at)| json!({"kind": kind, "at": at})),
            "metrics": metrics,
            "updated_at": super::now(),
        })
    }

    /// `running`, `paused`, `escalated` or `stopping`.
    pub(super) fn status_word(&self) -> &'static str {
        if self.shutdown.is_some() || self.recovery.stop.is_some() {
            "stopping"
        } else if self.recovery.pause.is_some() {
            "paused"
        } else if !self.open_escalations().is_empty() {
            "escalated"
        } else {
            "running"
        }
    }

    /// Carry out one control API request.
    pub(super) fn api(&mut self, request: ApiRequest) -> Result<()> {
        match request {
            ApiRequest::Status { reply } => {
                let _ = reply.send(self.status_json());
            }
            ApiRequest::Checkpoint { reply } => {
                if self.recovery.pause.is_some() {
                    let _ = reply.send(refused(
                        "paused",
                        "the session is paused: continue it first",
                    ));
                } else if self.shutdown.is_some() {
                    let _ = reply.send(refused(
                        "stopping",
                        "the session is stopping (its shutdown checkpoint is coming)",
                    ));
                } else {
                    self.event(
                        "operator",
                        None,
                        None,
                        None,
                        json!({"action": "checkpoint"}),
                    )?;
                    self.checkpoint_due.get_or_insert("manual");
                    self.checkpoint_replies.push(reply);
                }
            }
            ApiRequest::Pause { reply } => {
                let answer = if self.recovery.pause.is_some() {
                    refused("already_paused", "the session is paused already")
                } else {
                    self.event("operator", None, None, None, json!({"action": "pause"}))?;
                    self.operator_pause()?;
                    Ok(json!({"status": "paused"}))
                };
                let _ = reply.send(answer);
            }
            ApiRequest::Continue { reply } => {
                let answer = if self.recovery.pause.is_none() {
                    refused("not_paused", "the session is not paused")
                } else {
                    self.event("operator", None, None, None, json!({"action": "continue"}))?;
                    self.unpause("operator")?;
                    Ok(json!({"status": "running"}))
                };
                let _ = reply.send(answer);
            }
            ApiRequest::Stop { reply } => {
                let answer = if self.shutdown.is_some() {
                    refused("stopping", "the session is stopping already")
                } else {
                    self.event("operator", None, None, None, json!({"action": "stop"}))?;
                    self.begin_shutdown(ShutdownSignal::Api)?;
                    Ok(json!({"status": "stopping", "exit_code": ShutdownSignal::Api.exit_code()}))
                };
                let _ = reply.send(answer);
            }
            ApiRequest::Decide {
                recovery_id,
                decision,
                reply,
            } => {
                let answer = self.decide_escalation(recovery_id, &decision);
                let _ = reply.send(answer);
            }
            ApiRequest::Note {
                agent_idx,
                text,
                reply,
            } => {
                let seq = self.record_note(agent_idx, &text, "api")?;
                let _ = reply.send(Ok(json!({"note": seq})));
            }
            ApiRequest::Vote {
                agent_idx,
                choice,
                reason,
                reply,
            } => {
                let answer = self.api_ballot(agent_idx, choice, &reason, "api");
                let _ = reply.send(answer);
            }
            ApiRequest::Propose {
                agent_idx,
                title,
                text,
                reply,
            } => {
                let answer = self.raise_proposal(agent_idx, &title, &text, "api")?;
                let _ = reply.send(answer);
            }
            ApiRequest::TaskDone { agent_idx, reply } => {
                let answer = match self.agents[agent_idx].running.as_mut() {
                    None => refused("no_task", "this agent is not running a task"),
                    Some(running) => {
                        running.done_claimed = true;
                        running.stop.cancel();
                        let task = self.board.tasks[running.task_idx].spec.id.clone();
                        Ok(json!({"task": task, "status": "done"}))
                    }
                };
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }

    /// Answer every `POST /api/checkpoint` that asked before the checkpoint just taken (or
    /// failed) started.
    pub(super) fn answer_checkpoint_requests(&mut self, taken: Result<(), String>) {
        let answer = match taken {
            Ok(()) => match &self.last_checkpoint {
                Some(row) => Ok(
                    json!({"sequence": row.seq, "path": self.dir().join(&row.path), "trigger": row.trigger, "sha256": row.sha256}),
                ),
                None => refused("no_checkpoint", "checkpoints are off for this session"),
            },
            Err(message) => refused("checkpoint_failed", message),
        };
        for reply in self.checkpoint_replies_in_flight.drain(..) {
            let _ = reply.send(answer.clone());
        }
    }

    /// SIGUSR1: the seed's "send SIGUSR1 for status" — `status.json`, a summary line in
    /// `session.log` and on stderr.
    pub(super) fn write_status(&self) -> Result<()> {
        let status = self.status_json();
        crate::fsutil::write_json_atomic(&self.dir().join("status.json"), &status)?;
        let m = &status["metrics"];
        let summary = format!(
            "session {} {}: phase {} — {:.0} of {:.0} session s, {} tokens, tasks {}/{} done, {} agents running, {} checkpoints, {} recoveries",
            self.id(),
            status["status"].as_str().unwrap_or(""),
            status["phase"].as_str().unwrap_or("-"),
            m["elapsed_session_secs"].as_f64().unwrap_or(0.0),
            m["elapsed_session_secs"].as_f64().unwrap_or(0.0) + m["remaining_session_secs"].as_f64().unwrap_or(0.0),
            m["total_tokens"],
            m["tasks"]["done"],
            m["tasks"]["total"],
            self.agents.iter().filter(|a| a.running.is_some()).count(),
            self.checkpoints_taken,
            status["recoveries"]["total"],
        );
        tracing::info!(message = "status (SIGUSR1)", summary = %summary);
        crate::console::say(format_args!("megatest: {summary}"));
        Ok(())
    }

    /// SIGHUP (or a change of the config file): reload `[limits]`, `[error_handling]` and the
    /// recovery keys of `[checkpoint]`, `[recovery]` and `[notifications]` from the config
    /// file. An invalid file keeps the running config and logs why.
    pub(super) fn reload(&mut self) -> Result<()> {
        let origin = self.store.session_origin()?;
        let Some(path) = origin.config_path else {
            tracing::warn!(message = "reload skipped: the session does not record its config file");
            return Ok(());
        };
        let config = match crate::config::load(
            std::path::Path::new(&path),
            &self.prepared.overrides,
        ) {
            Ok(config) => config,
            Err(err) => {
                let message = err.to_string();
                tracing::warn!(message = "reload rejected: the running config stays", file = %path, error = %message);
                self.event(
                    "config_reload_rejected",
                    None,
                    None,
                    None,
                    json!({"file": path, "error": message}),
                )?;
                return Ok(());
            }
        };
        let table = match crate::recovery::RecoveryTable::new(
            &config.raw.error_handling,
            &config.raw.checkpoint.retry_policy(),
        ) {
            Ok(table) => table,
            Err((key, message)) => {
                tracing::warn!(message = "reload rejected", key = %key, error = %message);
                return Ok(());
            }
        };
        let raw = &mut self.prepared.config.raw;
        let before = json!({"limits": raw.limits, "error_handling": raw.error_handling, "notifications": raw.notifications.enabled});
        raw.limits = config.raw.limits.clone();
        raw.error_handling = config.raw.error_handling.clone();
        raw.notifications = config.raw.notifications.clone();
        raw.recovery = config.raw.recovery.clone();
        raw.checkpoint.auto_recovery = config.raw.checkpoint.auto_recovery;
        raw.checkpoint.max_recovery_attempts = config.raw.checkpoint.max_recovery_attempts;
        raw.checkpoint.backoff_strategy = config.raw.checkpoint.backoff_strategy;
        raw.checkpoint.backoff_initial_seconds = config.raw.checkpoint.backoff_initial_seconds;
        raw.checkpoint.backoff_max_seconds = config.raw.checkpoint.backoff_max_seconds;
        self.budgets
            .set_limits(&config.raw.limits, config.raw.model.max_cost_usd);
        self.recovery.set_table(table);
        self.recovery.set_notifier(&config.raw.notifications);
        let after = json!({"limits": config.raw.limits, "error_handling": config.raw.error_handling, "notifications": config.raw.notifications.enabled});
        tracing::info!(message = "config reloaded", file = %path);
        self.event(
            "config_reloaded",
            None,
            None,
            None,
            json!({"file": path, "before": before, "after": after}),
        )?;
        Ok(())
    }
}
