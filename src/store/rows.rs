//! The store's row types: what loaders return and writers take (no `rusqlite` type among
//! them).

use serde::Serialize;
use std::collections::BTreeMap;

/// What `megatest sessions` / `status` read of a session without opening it for writing.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    /// The session's id.
    pub id: String,
    /// `[session].project_type`.
    pub project_type: String,
    /// `running`, `paused`, `complete`, `failed` or `interrupted`.
    pub status: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339; None while it runs (or after a crash).
    pub ended_at: Option<String>,
    /// The ending daemon's exit code.
    pub exit_code: Option<i32>,
    /// Why it ended.
    pub ended_because: Option<String>,
    /// The pid of the daemon that runs or ran it.
    pub daemon_pid: Option<u32>,
}

/// One row of the event log, as `GET /api/events` streams it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// The event's sequence number (`events.seq`): the SSE event id.
    pub id: i64,
    /// RFC 3339 wall time.
    pub at: String,
    /// Session seconds.
    pub session_secs: f64,
    /// `session_started`, `agent_started`, `checkpoint`, `error`, `note`, ….
    pub kind: String,
    /// The agent it concerns.
    pub agent_id: Option<String>,
    /// The phase it happened in.
    pub phase: Option<String>,
    /// The task it concerns.
    pub task_id: Option<String>,
    /// JSON text.
    pub data: String,
}

/// One failure and what the recovery table did about it (`final_report.json` `recoveries`).
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryRow {
    /// Its row id.
    pub id: i64,
    /// The failure kind (`agent_crash`, `disk_full`, …).
    pub failure_kind: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// RFC 3339 wall time of detection.
    pub detected_at: String,
    /// Session seconds at detection.
    pub detected_session_secs: f64,
    /// `default:<kind>` or `error_handling.rules[i]`.
    pub rule: String,
    /// The recovery action taken (`retry_immediate`, `restart_agent`, …).
    pub action: String,
    /// Attempts the action took (retries within a call, restarts of a task, checks of a pause).
    pub attempts: u32,
    /// `recovered`, `escalated` or `failed`; None while the recovery is still open.
    pub outcome: Option<String>,
    /// Session seconds from detection to the outcome; None while open.
    pub time_to_recover_session_secs: Option<f64>,
    /// The agent it concerns.
    pub agent_id: Option<String>,
    /// The task it concerns.
    pub task_id: Option<String>,
    /// What was seen (message, log tail).
    pub detail: String,
}

/// The session row's origin fields (`megatest resume` reads them).
#[derive(Debug, Clone)]
pub struct SessionOrigin {
    /// The session's id.
    pub id: String,
    /// Its recorded status.
    pub status: String,
    /// The config file the session was started from (absolute).
    pub config_path: Option<String>,
    /// JSON of `config::Overrides`.
    pub overrides: Option<String>,
    /// The pid of the daemon that last ran it.
    pub daemon_pid: Option<u32>,
}

/// One checkpoint's row.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRow {
    /// Its sequence number (1, 2, …).
    pub seq: u32,
    /// RFC 3339 wall time it was written.
    pub at: String,
    /// Session seconds it was taken at.
    pub session_secs: f64,
    /// What asked for it (`time`, `tool_calls`, `tokens`, `phase_end`, `manual`, …).
    pub trigger: String,
    /// Its `checkpoint_NNN.json`.
    pub path: String,
    /// SHA-256 of its content (without the `sha256` field).
    pub sha256: String,
    /// The previous checkpoint's sequence.
    pub parent: Option<u32>,
    /// Hash of the workspace manifest in the object store.
    pub manifest: String,
    /// Files listed in the snapshot.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Objects the snapshot wrote.
    pub new_objects: u64,
    /// Bytes of those objects.
    pub new_bytes: u64,
    /// Agents stayed frozen for the whole snapshot.
    pub consistent: bool,
    /// Wall milliseconds the agents were frozen.
    pub frozen_ms: f64,
}

/// What the budgets count of one ledger row: (seq, session seconds, agent id, prompt +
/// completion tokens, tool calls, cost in USD).
pub type CountedCall = (i64, f64, String, u64, u64, Option<f64>);

/// One model call as the proxy saw it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LedgerRow {
    /// Random id the proxy gives the call: links a `ledger.spool` line to its ledger row.
    pub call_id: i64,
    /// The calling agent.
    pub agent_id: String,
    /// Its role.
    pub role: String,
    /// The phase then.
    pub phase: Option<String>,
    /// The agent's task then.
    pub task_id: Option<String>,
    /// The model the agent asked for.
    pub model_requested: String,
    /// The model that answered (after fallbacks).
    pub model_served: String,
    /// Prompt tokens, as the provider reported them.
    pub prompt_tokens: u64,
    /// Completion tokens, as the provider reported them.
    pub completion_tokens: u64,
    /// Cached prompt tokens (of `prompt_tokens`).
    pub cached_tokens: u64,
    /// The tool calls in the answer, by name.
    pub tool_names: Vec<String>,
    /// Wall milliseconds from request to response.
    pub latency_ms: f64,
    /// HTTP status returned to the agent.
    pub status: u16,
    /// The failure kind when the call failed.
    pub error_kind: Option<String>,
    /// Upstream attempts this call took (retries and fallbacks included).
    pub attempts: u32,
    /// USD, from the price table; None when the served model has no price.
    pub cost_usd: Option<f64>,
}

/// Totals over the ledger.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerTotals {
    /// Ledger rows.
    pub model_calls: u64,
    /// Sum of prompt tokens.
    pub prompt_tokens: u64,
    /// Sum of completion tokens.
    pub completion_tokens: u64,
    /// Sum of cached prompt tokens.
    pub cached_tokens: u64,
    /// Prompt plus completion tokens.
    pub total_tokens: u64,
    /// Tool calls from model answers plus those agents reported.
    pub tool_calls: u64,
    /// Of `tool_calls`, those agents reported through the events endpoint or file.
    pub agent_reported_tool_calls: u64,
    /// Tool calls per tool name.
    pub tool_calls_by_name: BTreeMap<String, u64>,
}

/// One phase check's result.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct CheckRow {
    /// The phase it ran at the end of.
    pub phase: String,
    /// `build`, `test`, `coverage`, … (the spec's command name).
    pub name: String,
    /// The shell command run.
    pub command: String,
    /// Its exit code (None: killed or not started).
    pub exit_code: Option<i32>,
    /// Exit code 0 within the time limit.
    pub passed: bool,
    /// Stopped at `[limits].max_test_runtime_min`.
    pub timed_out: bool,
    /// Wall seconds it ran.
    pub wall_secs: f64,
    /// The last bytes of its output.
    pub output_tail: String,
}
