//! Report shapes: `final_report.json` ([`FinalReport`], after the seed's `TestReport`) and
//! `metrics_current.json` ([`SessionMetrics`]). Every figure is measured; one that could not be
//! is a [`Figure`] with `value: null` and a `reason`.

use crate::eval::CriterionResult;
use crate::metrics::CodeStats;
use crate::store::{CheckRow, LedgerTotals};
use serde::Serialize;
use std::collections::BTreeMap;

/// Version of the report shapes; bumped on incompatible changes.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// A measured value, or null with the reason it is missing.
#[derive(Debug, Clone, Serialize)]
pub struct Figure<T: Serialize> {
    pub value: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl<T: Serialize> Figure<T> {
    pub fn measured(value: T) -> Self {
        Figure {
            value: Some(value),
            reason: None,
        }
    }

    pub fn missing(reason: impl Into<String>) -> Self {
        Figure {
            value: None,
            reason: Some(reason.into()),
        }
    }
}

/// The model that answered the agents.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub provider: String,
    pub name: String,
    /// True for the built-in `scripted` and `sim` models.
    pub builtin: bool,
    pub label: String,
}

/// Durations of the session: session seconds (time-scaled) and wall seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Durations {
    pub planned_session_secs: f64,
    pub session_secs: f64,
    pub wall_secs: f64,
    pub time_scale: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskCounts {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub pending: usize,
    pub running: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    /// `time_up`, `tasks_done`, `interrupted`, `aborted`, or `not_started`.
    pub ended_because: String,
    pub planned_session_secs: f64,
    pub session_secs: Option<f64>,
    pub wall_secs: Option<f64>,
    pub objectives: Vec<String>,
    pub tasks: TaskCounts,
    pub checks: Vec<CheckRow>,
    pub success_criteria: Vec<CriterionResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    pub id: String,
    pub role: String,
    pub runs: u32,
    pub tasks_done: u32,
    pub tasks_failed_runs: u32,
    pub model_calls: u64,
    pub total_tokens: u64,
    pub tool_calls: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub id: String,
    pub phase: String,
    pub role: String,
    pub state: String,
    pub attempts: u32,
    pub agent_id: Option<String>,
    pub last_error: Option<String>,
}

/// Budgets and what they allowed (`[limits]`, `[model].max_cost_usd`).
#[derive(Debug, Clone, Serialize)]
pub struct BudgetReport {
    pub total_token_budget: u64,
    pub used_tokens: u64,
    pub used_fraction: f64,
    /// The 80 % alert was raised.
    pub alert_raised: bool,
    /// Why the budget ended the session, if it did.
    pub exhausted: Option<String>,
    /// USD from the price table; null with the reason when a call's model has no price.
    pub cost_usd: Figure<f64>,
    pub max_cost_usd: Option<f64>,
    /// Session seconds each agent waited for its token or tool-call rate.
    pub throttled_session_secs: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    pub count: u32,
    pub last: Option<crate::store::CheckpointRow>,
}

/// `final_report.json`, written at every end (complete, failed, interrupted).
#[derive(Debug, Clone, Serialize)]
pub struct FinalReport {
    pub schema_version: u32,
    pub session_id: String,
    pub project: ProjectInfo,
    /// `complete`, `failed` or `interrupted`.
    pub status: String,
    pub exit_code: i32,
    pub ended_because: String,
    pub started_at: String,
    pub ended_at: String,
    pub duration: Durations,
    pub model: ModelInfo,
    pub agent_count: usize,
    pub agent_kind: String,
    pub phases: Vec<PhaseReport>,
    /// Token and tool-call totals from the ledger in `session.db`.
    pub usage: LedgerTotals,
    pub budget: BudgetReport,
    /// Checkpoints written, and the last one.
    pub checkpoints: CheckpointSummary,
    /// `megatest restore` rollbacks of this session (the `checkpoint_restored` events).
    pub rollbacks: Vec<serde_json::Value>,
    pub tasks: TaskCounts,
    pub task_list: Vec<TaskReport>,
    pub agents: Vec<AgentReport>,
    /// Error events by kind.
    pub errors: BTreeMap<String, u64>,
    /// Every failure and what the recovery table did about it, oldest first.
    pub recoveries: Vec<crate::store::RecoveryRow>,
    /// Recoveries by outcome (`recovered`, `escalated`, `failed`).
    pub recovery_outcomes: BTreeMap<String, u64>,
    /// `[chaos]` as configured when fault injection was on (None: no faults were injected),
    /// with the faults that fired.
    pub chaos: Option<serde_json::Value>,
    pub code: Figure<CodeStats>,
    pub test_coverage: Figure<f64>,
    pub success_criteria: Vec<CriterionResult>,
    pub not_yet_enforced: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectInfo {
    pub project_type: String,
    /// `[metadata].name` and `.version` of the config.
    pub test_name: String,
    pub test_version: String,
    pub name: String,
    pub spec_dir: String,
    pub workspace: String,
}

/// One agent's live state in [`SessionMetrics`].
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    pub id: String,
    pub role: String,
    pub status: String,
    pub task: Option<String>,
}

/// `metrics_current.json`, after the seed's `SessionMetrics`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionMetrics {
    pub session_id: String,
    pub status: String,
    pub phase: Option<String>,
    pub updated_at: String,
    pub elapsed_session_secs: f64,
    pub elapsed_wall_secs: f64,
    /// Planned session seconds left if every remaining phase uses its whole time box.
    pub remaining_session_secs: f64,
    pub model_calls: u64,
    pub total_tokens: u64,
    pub tokens_per_minute: Figure<f64>,
    pub tool_calls: u64,
    pub tasks: TaskCounts,
    pub agents: Vec<AgentStatus>,
    pub lines_of_code: Figure<usize>,
    pub test_pass_rate: Figure<f64>,
    /// Fraction of lines covered, from the spec's `[commands].coverage` at the last phase end.
    pub test_coverage: Figure<f64>,
    /// Workspace files modified since the session started (sampler).
    pub files_modified: Figure<u64>,
    /// Fraction of agent-time spent on task runs: run session seconds / (agents × elapsed).
    pub agent_utilisation: Figure<f64>,
    pub consensus_votes_cast: Figure<u64>,
    /// Resident memory of megatest itself, bytes (sampler, sysinfo).
    pub daemon_memory_bytes: Figure<u64>,
    /// Resident memory of each running agent's process tree, bytes (sampler, sysinfo).
    pub agent_memory_bytes: BTreeMap<String, u64>,
    pub checkpoints: u32,
    pub errors: u64,
}
