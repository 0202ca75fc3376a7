//! What the reports draw over time, read from `session.db`: agent runs, checkpoints, marks
//! (checks, recoveries, escalations, votes), metered calls and trust scores; and the final
//! report itself, kept in `session.db` so that every report can be rebuilt from it alone.

use super::error::Result;
use super::Store;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::collections::BTreeMap;

/// One agent run: a bar in the agent's lane.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSpan {
    /// The agent.
    pub agent_id: String,
    /// The task.
    pub task_id: String,
    /// Its attempt number (1 = first).
    pub attempt: u32,
    /// Session seconds it started.
    pub start: f64,
    /// Session seconds it ended (None: open — the session crashed or still runs).
    pub end: Option<f64>,
    /// `finished`, `exited_nonzero`, `step_timeout` or `stopped` (None while open).
    pub outcome: Option<String>,
    /// The leader's exit code.
    pub exit_code: Option<i32>,
}

/// A point event on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mark {
    /// Session seconds.
    pub at: f64,
    /// `checkpoint`, `check`, `recovery`, `escalation`, `vote`.
    pub kind: String,
    /// The agent's lane it belongs to (None: the session's lane).
    pub agent_id: Option<String>,
    /// False for a failed check, a rejected vote, an escalation; true otherwise.
    pub ok: bool,
    /// One line saying what it was.
    pub label: String,
}

/// One metered model call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallPoint {
    /// Session seconds it was recorded.
    pub at: f64,
    /// The agent.
    pub agent_id: String,
    /// The model that answered.
    pub model: String,
    /// Its task.
    pub task_id: Option<String>,
    /// Prompt + completion tokens.
    pub tokens: u64,
    /// USD (None: the model has no price).
    pub cost_usd: Option<f64>,
    /// Tool calls in the answer.
    pub tool_calls: u64,
}

/// Trust scores at one moment (the `trust_scores` events).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrustSample {
    /// Session seconds.
    pub at: f64,
    /// Score (0–1) per agent.
    pub scores: BTreeMap<String, f64>,
}

/// Everything the reports draw over time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    /// Agent runs, oldest first.
    pub runs: Vec<RunSpan>,
    /// Checkpoints, checks, recoveries, escalations and votes, oldest first.
    pub marks: Vec<Mark>,
    /// Metered calls, oldest first.
    pub calls: Vec<CallPoint>,
    /// Trust scores as they changed, oldest first.
    pub trust: Vec<TrustSample>,
}

impl Store {
    /// The session's timeline. Errors: the database cannot be read.
    pub fn timeline(&self) -> Result<Timeline> {
        let mut statement = self.conn.prepare(
            "SELECT agent_id, task_id, attempt, started_session_secs, ended_session_secs, \
             outcome, exit_code FROM agent_runs ORDER BY started_session_secs, id",
        )?;
        let runs = statement
            .query_map([], |r| {
                Ok(RunSpan {
                    agent_id: r.get(0)?,
                    task_id: r.get(1)?,
                    attempt: r.get(2)?,
                    start: r.get(3)?,
                    end: r.get(4)?,
                    outcome: r.get(5)?,
                    exit_code: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut statement = self.conn.prepare(
            "SELECT session_secs, agent_id, model_served, task_id, \
             prompt_tokens + completion_tokens, cost_usd, tool_calls FROM ledger ORDER BY seq",
        )?;
        let calls = statement
            .query_map([], |r| {
                Ok(CallPoint {
                    at: r.get(0)?,
                    agent_id: r.get(1)?,
                    model: r.get(2)?,
                    task_id: r.get(3)?,
                    tokens: r.get::<_, i64>(4)?.max(0) as u64,
                    cost_usd: r.get(5)?,
                    tool_calls: r.get::<_, i64>(6)?.max(0) as u64,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut marks = Vec::new();
        for checkpoint in self.checkpoints()? {
            marks.push(Mark {
                at: checkpoint.session_secs,
                kind: "checkpoint".into(),
                agent_id: None,
                ok: checkpoint.consistent,
                label: format!("checkpoint {} ({})", checkpoint.seq, checkpoint.trigger),
            });
        }
        for recovery in self.recoveries()? {
            marks.push(Mark {
                at: recovery.detected_session_secs,
                kind: "recovery".into(),
                agent_id: recovery.agent_id.clone(),
                ok: recovery.outcome.as_deref() == Some("recovered"),
                label: format!(
                    "{}: {} ({})",
                    recovery.failure_kind,
                    recovery.action,
                    recovery.outcome.as_deref().unwrap_or("open")
                ),
            });
        }
        for vote in self.votes()? {
            marks.push(Mark {
                at: vote.closed_session_secs.unwrap_or(vote.opened_session_secs),
                kind: "vote".into(),
                agent_id: vote.author.clone(),
                ok: vote.outcome == "approved",
                label: format!("{} vote on {}: {}", vote.kind, vote.subject, vote.outcome),
            });
        }
        let mut trust = Vec::new();
        for (kind, at, agent, task, data) in
            self.events_of_kinds(&["check", "task_checked", "escalation", "trust_scores"])?
        {
            let value: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            match kind.as_str() {
                "trust_scores" => {
                    let scores = value
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                                .collect()
                        })
                        .unwrap_or_default();
                    trust.push(TrustSample { at, scores });
                }
                "escalation" => marks.push(Mark {
                    at,
                    kind: "escalation".into(),
                    agent_id: agent,
                    ok: false,
                    label: value["reason"]
                        .as_str()
                        .or(value["failure_kind"].as_str())
                        .map_or_else(|| "escalation".to_string(), |r| format!("escalation: {r}")),
                }),
                _ => {
                    let name = match (value["name"].as_str(), &task) {
                        (Some(name), _) => name.to_string(),
                        (None, Some(task)) => format!("check of {task}"),
                        (None, None) => "check".to_string(),
                    };
                    let passed = value["passed"].as_bool().unwrap_or(true);
                    marks.push(Mark {
                        at,
                        kind: "check".into(),
                        agent_id: agent,
                        ok: passed,
                        label: format!("{name}: {}", if passed { "passed" } else { "failed" }),
                    });
                }
            }
        }
        marks.sort_by(|a, b| a.at.total_cmp(&b.at));
        Ok(Timeline {
            runs,
            marks,
            calls,
            trust,
        })
    }

    /// (kind, session seconds, agent, task, data) of the events of `kinds`, oldest first.
    #[allow(clippy::type_complexity)]
    fn events_of_kinds(
        &self,
        kinds: &[&str],
    ) -> Result<Vec<(String, f64, Option<String>, Option<String>, String)>> {
        let placeholders = vec!["?"; kinds.len()].join(",");
        let mut statement = self.conn.prepare(&format!(
            "SELECT kind, session_secs, agent_id, task_id, data FROM events \
             WHERE kind IN ({placeholders}) \
             ORDER BY seq"
        ))?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(kinds), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Keep `report` (`final_report.json`'s document) in `session.db`, replacing an earlier
    /// one (a resumed session ends again). Errors: the write failed.
    pub fn save_final_report(&self, report: &serde_json::Value) -> Result<()> {
        self.conn.execute(
            "INSERT INTO final_report (id, document) VALUES (1, ?1) \
             ON CONFLICT(id) DO UPDATE SET document = excluded.document",
            params![report.to_string()],
        )?;
        Ok(())
    }

    /// The final report kept by [`Store::save_final_report`] (None: the session has not ended,
    /// or ended before megatest kept it). Errors: unreadable database or document.
    pub fn final_report(&self) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT document FROM final_report WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}
