//! The closed set of inputs to the session task. Everything that can change session state
//! arrives as one [`Event`]; the session task is the only writer of that state.

use crate::backend::RunOutcome;
use crate::store::spool::SpooledCall;
use tokio::sync::oneshot;

/// Who is calling the model endpoint, as the session knows it from the per-agent key.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The agent's index in the session (0-based, configuration order).
    pub agent_idx: usize,
    /// `agent-1`, ….
    pub agent_id: String,
    /// The agent's role.
    pub role: String,
    /// The phase the session is in (None between phases).
    pub phase: Option<String>,
    /// The task the agent is running (None when idle).
    pub task_id: Option<String>,
    /// Which run of that task this is (1 for the first).
    pub attempt: u32,
}

/// The events of `kind` other than tool calls in a report from an agent (same shapes as
/// [`parse_agent_events`]), as JSON objects: `{"type": "note", "text": "…"}`,
/// `{"type": "vote", "choice": "approve", "reason": "…"}`; lines that are not JSON are skipped
/// (counted by [`parse_agent_events`]).
pub fn parse_agent_events_of(text: &str, kind: &str) -> Vec<serde_json::Value> {
    fn collect(value: &serde_json::Value, kind: &str, found: &mut Vec<serde_json::Value>) {
        match value {
            serde_json::Value::Array(items) => {
                items.iter().for_each(|item| collect(item, kind, found))
            }
            serde_json::Value::Object(map) => {
                if let Some(events) = map.get("events") {
                    return collect(events, kind, found);
                }
                if map.get("type").and_then(|t| t.as_str()) == Some(kind) {
                    found.push(value.clone());
                }
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        collect(&value, kind, &mut found);
        return found;
    }
    for line in text.lines() {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
            collect(&value, kind, &mut found);
        }
    }
    found
}

/// The texts of the notes in a report from an agent (see [`parse_agent_events_of`]).
pub fn parse_agent_notes(text: &str) -> Vec<String> {
    parse_agent_events_of(text, "note")
        .iter()
        .filter_map(|note| note["text"].as_str().map(str::to_string))
        .collect()
}

/// Tool-call names in a report from an agent: a JSON object, an array of objects, or JSON
/// lines. An event is `{"type": "tool_call", "name": "bash"}` (or `{"tool": "bash"}`); other
/// event types are ignored. Returns the names and the number of lines that were not JSON.
pub fn parse_agent_events(text: &str) -> (Vec<String>, usize) {
    fn collect(value: &serde_json::Value, names: &mut Vec<String>) {
        match value {
            serde_json::Value::Array(items) => items.iter().for_each(|item| collect(item, names)),
            serde_json::Value::Object(map) => {
                if let Some(events) = map.get("events") {
                    return collect(events, names);
                }
                let kind = map
                    .get("type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("tool_call");
                let name = map
                    .get("name")
                    .or_else(|| map.get("tool"))
                    .and_then(|n| n.as_str());
                if let (true, Some(name)) = (kind == "tool_call", name) {
                    names.push(name.to_string());
                }
            }
            _ => {}
        }
    }
    let mut names = Vec::new();
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        collect(&value, &mut names);
        return (names, 0);
    }
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => collect(&value, &mut names),
            Err(_) => bad += 1,
        }
    }
    (names, bad)
}

#[cfg(test)]
mod tests {
    #[test]
    fn agent_events_in_every_shape() {
        let (names, bad) = super::parse_agent_events(r#"{"type": "tool_call", "name": "bash"}"#);
        assert_eq!((names, bad), (vec!["bash".to_string()], 0));
        let (names, _) = super::parse_agent_events(
            r#"{"events": [{"tool": "edit"}, {"type": "note", "name": "x"}]}"#,
        );
        assert_eq!(names, ["edit"]);
        let notes = super::parse_agent_notes(
            "{\"type\": \"note\", \"text\": \"a\"}\nnot json\n{\"events\": [{\"type\": \"note\", \"text\": \"b\"}, {\"tool\": \"x\"}]}\n",
        );
        assert_eq!(notes, ["a", "b"]);
        let (names, bad) =
            super::parse_agent_events("{\"tool\": \"a\"}\nnot json\n{\"tool\": \"b\"}\n");
        assert_eq!((names, bad), (vec!["a".to_string(), "b".to_string()], 1));
    }
}

/// An operator signal, mapped to its intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownSignal {
    /// SIGTERM: graceful stop, exit 143.
    Terminate,
    /// SIGINT: graceful stop, exit 130.
    Interrupt,
    /// `POST /api/stop`: graceful stop, exit 143 (as SIGTERM).
    Api,
}

impl ShutdownSignal {
    /// The exit code a session stopped this way ends with.
    pub fn exit_code(self) -> i32 {
        match self {
            ShutdownSignal::Terminate | ShutdownSignal::Api => 143,
            ShutdownSignal::Interrupt => 130,
        }
    }

    /// The signal's or request's name for logs and events.
    pub fn name(self) -> &'static str {
        match self {
            ShutdownSignal::Terminate => "SIGTERM",
            ShutdownSignal::Interrupt => "SIGINT",
            ShutdownSignal::Api => "POST /api/stop",
        }
    }
}

/// The recovery record of one model call that failed at least once (see
/// [`crate::recovery`]): one [`CallFailure`] per failed attempt. In-call actions are finished
/// records; a session-level action (the rule chose e.g. `compress_and_retry` or `escalate`)
/// is carried out by the session.
#[derive(Debug, Clone)]
pub struct CallRecovery {
    /// The calling agent's index.
    pub agent_idx: usize,
    /// The calling agent's id.
    pub agent_id: String,
    /// Its task then.
    pub task_id: Option<String>,
    /// Every failed attempt, in order.
    pub failures: Vec<CallFailure>,
    /// Upstream attempts of the call.
    pub attempts: u32,
    /// The call got an answer in the end.
    pub recovered: bool,
}

/// One failed attempt of a call and what the proxy did next.
#[derive(Debug, Clone)]
pub struct CallFailure {
    /// What failed.
    pub kind: crate::recovery::FailureKind,
    /// What the recovery table decided for it.
    pub decision: crate::recovery::Decision,
    /// The in-call action taken (`retry_with_backoff`, `switch_model`, …); None when the call
    /// ended with this failure.
    pub action: Option<&'static str>,
    /// The attempt (1-based) that failed.
    pub attempt: u32,
    /// Wall seconds from this failure to the end of the call.
    pub wall_secs: f64,
    /// What the upstream said (status line, error text).
    pub message: String,
}

/// Every input of the session loop.
#[derive(Debug)]
pub enum Event {
    /// The proxy asks who holds `agent_key`; None in the reply means 401.
    Authenticate {
        /// The key the request carried.
        agent_key: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Option<CallContext>>,
    },
    /// The proxy asks, for one call, who holds `agent_key` and to reserve `tokens` for it
    /// ([`crate::budget::Budgets::reserve`]); None in the reply means 401.
    Admit {
        /// The key the request carried.
        agent_key: String,
        /// Tokens to reserve: prompt estimate plus `max_tokens`.
        tokens: u64,
        /// Where the answer goes: the caller and its admission.
        reply: oneshot::Sender<Option<(CallContext, crate::budget::Admission)>>,
    },
    /// The proxy finished a model call. The session commits the ledger row, then reconciles the
    /// reservation (if any) and counts the call. The proxy does not wait for the commit: it sends
    /// this event before the answer's last byte leaves, so an agent's next request (a later event
    /// on the same channel) is admitted after this one is counted.
    ModelCall {
        /// The row with the time it was spooled (the ledger row gets the same `at`).
        call: Box<SpooledCall>,
        /// The reservation [`Event::Admit`] made, reconciled now.
        reservation: Option<u64>,
    },
    /// The proxy saw an upstream failure or a refused request (classified, with its attempt).
    ProxyError {
        /// The calling agent.
        agent_id: String,
        /// Its task then.
        task_id: Option<String>,
        /// The failure kind (`rate_limit`, `timeout`, …).
        kind: String,
        /// The attempt (1-based) that failed.
        attempt: u32,
        /// The model that failed.
        model: String,
        /// What the upstream said.
        message: String,
    },
    /// A call that failed at least once ended: what the recovery table chose for its first
    /// failure, what the proxy did, and whether the call got an answer in the end.
    CallRecovery(Box<CallRecovery>),
    /// Tool calls an agent reported itself (events endpoint or events file).
    AgentToolCalls {
        /// The reporting agent's index.
        agent_idx: usize,
        /// The tool names reported.
        names: Vec<String>,
    },
    /// An agent appended to its `events.jsonl` (from the file watch): read the new lines.
    AgentEventsAppended {
        /// The agent whose file grew.
        agent_idx: usize,
    },
    /// An agent process run ended (by itself, by timeout, or stopped).
    AgentRunEnded {
        /// The agent whose run ended.
        agent_idx: usize,
        /// The task it ran (index on the board).
        task_idx: usize,
        /// The `agent_runs` row.
        run_id: i64,
        /// How it ended.
        outcome: RunOutcome,
    },
    /// SIGTERM or SIGINT arrived.
    Signal(ShutdownSignal),
    /// An operator asked for a checkpoint now (SIGUSR2).
    CheckpointRequest,
    /// SIGUSR1: write a status summary (`status.json`, `session.log`, stderr).
    StatusRequest,
    /// SIGHUP or a change of the config file: reload limits, rules and notifications.
    Reload,
    /// A request through the control API ([`crate::api`]).
    Api(ApiRequest),
    /// The metrics sampler's measurements (taken off the session task).
    Sampled(Box<crate::metrics::Sample>),
    /// A phase check finished (None: it was cancelled by a stop).
    CheckFinished(Box<Option<crate::store::CheckRow>>),
    /// A task check finished (`session/confirming.rs`): job `job` of task `task_idx`; None
    /// when it was cancelled.
    TaskCheckFinished {
        /// The job's id (a result of a job that was replaced is ignored).
        job: u64,
        /// The board index of the task it confirms.
        task_idx: usize,
        /// The check's result.
        row: Box<Option<crate::store::CheckRow>>,
    },
    /// A phase end's evaluation finished (None: it was cancelled by a stop).
    EvaluationFinished(Box<Option<crate::eval::evaluation::Evaluation>>),
    /// A timer of the session fired.
    Tick(Tick),
    /// A checkpoint job started by the session ended (written, refused, or failed).
    CheckpointTaken(Box<crate::checkpoint::job::Taken>),
    /// The newest checkpoint's seal was checked off the session task (the metrics tick).
    CheckpointVerified {
        /// Its sequence number.
        seq: u32,
        /// What is wrong with it; None when it verifies.
        problem: Option<String>,
    },
    /// The proxy's server task ended (after its shutdown, once its connections closed).
    ProxyStopped,
}

/// The session's timers (see `session::ticks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// `[monitoring].health_check_interval`: drain agents' events files, save the budget and
    /// recovery state, checkpoint the WAL, sample metrics, verify the newest checkpoint.
    Metrics,
    /// `[checkpoint].interval_minutes`: a checkpoint is due.
    Checkpoint,
    /// `[monitoring].metrics_export_interval`: write the metrics files.
    Export,
    /// The watchdog: idle agents, disk, escalation deadlines, chaos, a pause's cause.
    Watchdog,
    /// A task held back by a recovery backoff may start now.
    Backoff,
    /// The current phase's time box is over.
    TimeBox,
}

/// Why the session refused a control request. The control API maps each variant to its HTTP
/// status (404, 409); the session never deals in status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// What the request names does not exist (an unknown escalation id).
    #[error("{code}: {message}")]
    NotFound {
        /// A stable machine-readable code (`no_escalation`, …).
        code: &'static str,
        /// What was not found.
        message: String,
    },
    /// The session's state does not allow it now (already paused, stopping, no task, …).
    #[error("{code}: {message}")]
    Conflict {
        /// A stable machine-readable code (`already_paused`, …).
        code: &'static str,
        /// Why not now.
        message: String,
    },
}

/// The session's answer to a control request: a JSON document, or why it refused.
pub type ControlReply = Result<serde_json::Value, ControlError>;

/// Requests of the control API; each carries the channel its answer goes back on.
#[derive(Debug)]
pub enum ApiRequest {
    /// The status document (`GET /api/status`, `/metrics`, `/api/escalations`).
    Status {
        /// Where the document goes.
        reply: oneshot::Sender<serde_json::Value>,
    },
    /// Take a checkpoint now; answered once it is written.
    Checkpoint {
        /// Where the answer goes.
        reply: oneshot::Sender<ControlReply>,
    },
    /// Pause the session (freeze agents, hold calls).
    Pause {
        /// Where the answer goes.
        reply: oneshot::Sender<ControlReply>,
    },
    /// Continue a paused session.
    Continue {
        /// Where the answer goes.
        reply: oneshot::Sender<ControlReply>,
    },
    /// Stop the session gracefully (as SIGTERM).
    Stop {
        /// Where the answer goes.
        reply: oneshot::Sender<ControlReply>,
    },
    /// An operator decision on an open escalation (`continue` or `stop`).
    Decide {
        /// The escalation's recovery id.
        recovery_id: i64,
        /// `continue` or `stop`.
        decision: String,
        /// Where the answer goes.
        reply: oneshot::Sender<ControlReply>,
    },
    /// An agent's note into working memory.
    Note {
        /// The agent's index.
        agent_idx: usize,
        /// The note.
        text: String,
        /// Where the answer goes.
        reply: oneshot::Sender<ControlReply>,
    },
    /// An agent casts a ballot in the vote its current review task belongs to.
    Vote {
        /// The agent's index.
        agent_idx: usize,
        /// `approve`, `reject` or `abstain`.
        choice: crate::swarm::consensus::Choice,
        /// Why.
        reason: String,
        /// Where the answer goes.
        reply: oneshot::Sender<ControlReply>,
    },
    /// An agent puts a proposal of its own to a vote of the other agents.
    Propose {
        /// The agent's index.
        agent_idx: usize,
        /// A one-line title.
        title: String,
        /// What it proposes and why.
        text: String,
        /// Where the answer goes.
        reply: oneshot::Sender<ControlReply>,
    },
    /// An agent reports its current task done.
    TaskDone {
        /// The agent's index.
        agent_idx: usize,
        /// Where the answer goes.
        reply: oneshot::Sender<ControlReply>,
    },
}
