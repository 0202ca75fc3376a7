//! Raw configuration: the TOML file as written, one serde struct per section.
//!
//! The upstream Selfware sections (`[metadata]` … `[notifications]`) keep their upstream key names
//! and meanings (`../shared/fixtures/selfware/mega_test_config.toml`). megatest's own sections are
//! `[model]`, `[agents]`, `[project]` (keys beside the upstream `[project.target]` and
//! `[project.performance]`), `[api]`, `[recovery]` and `[chaos]`. Every struct denies unknown keys, so a typo is an error
//! with its line and column, never a silently ignored setting.

pub use crate::recovery::{
    BackoffStrategy, Classification, ErrorHandling, ErrorRule, RecoveryAction, Severity,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole file. Every section is optional; defaults are the upstream file's values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub metadata: Metadata,
    pub session: Session,
    pub checkpoint: Checkpoint,
    pub agent: Agent,
    pub consensus: Consensus,
    pub limits: Limits,
    pub monitoring: Monitoring,
    pub error_handling: ErrorHandling,
    pub project: Project,
    pub phases: Vec<Phase>,
    pub notifications: Notifications,
    pub model: Model,
    pub agents: Agents,
    pub api: Api,
    pub recovery: Recovery,
    pub chaos: Chaos,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            name: "Mega Project Test".into(),
            version: "1.0.0".into(),
            description: String::new(),
        }
    }
}

/// `[session]`: upstream ranges `duration_hours` 1–24, `agent_count` 2–16.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Session {
    /// `"auto"` for `mega-YYYYmmdd-HHMMSS-<8 hex>`, or an explicit id.
    pub id: String,
    /// Session length in session hours (fractions allowed).
    pub duration_hours: f64,
    pub agent_count: u32,
    /// Name of a project spec under `system_tests/long_running/projects/`.
    pub project_type: String,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            id: "auto".into(),
            duration_hours: 6.0,
            agent_count: 6,
            project_type: "task_queue".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checkpoint {
    pub enabled: bool,
    pub interval_minutes: f64,
    pub tool_call_threshold: u64,
    pub token_threshold: u64,
    pub auto_recovery: bool,
    pub max_recovery_attempts: u32,
    pub backoff_strategy: BackoffStrategy,
    pub backoff_initial_seconds: f64,
    pub backoff_max_seconds: f64,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            enabled: true,
            interval_minutes: 10.0,
            tool_call_threshold: 100,
            token_threshold: 500_000,
            auto_recovery: true,
            max_recovery_attempts: 5,
            backoff_strategy: BackoffStrategy::Exponential,
            backoff_initial_seconds: 30.0,
            backoff_max_seconds: 300.0,
        }
    }
}

impl Checkpoint {
    /// The recovery keys of `[checkpoint]` for [`crate::recovery::RecoveryTable::new`].
    pub fn retry_policy(&self) -> crate::recovery::RetryPolicy {
        crate::recovery::RetryPolicy {
            auto_recovery: self.auto_recovery,
            max_attempts: self.max_recovery_attempts,
            backoff: crate::recovery::Backoff {
                strategy: self.backoff_strategy,
                initial_secs: self.backoff_initial_seconds,
                max_secs: self.backoff_max_seconds,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    /// Model calls one agent may make on one task before it must stop.
    pub max_iterations: u32,
    /// Session seconds one task run may take (divided by the time scale).
    pub step_timeout_secs: f64,
    pub concurrent_agents: u32,
    pub roles: Vec<String>,
    pub min_trust_score: f64,
    pub max_trust_score: f64,
    pub dynamic_spawning: bool,
    pub max_total_agents: u32,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            max_iterations: 10_000,
            step_timeout_secs: 600.0,
            concurrent_agents: 6,
            roles: Vec::new(),
            min_trust_score: 0.3,
            max_trust_score: 1.0,
            dynamic_spawning: false,
            max_total_agents: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsensusStrategy {
    Unanimous,
    Majority,
    Weighted,
    Priority,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Consensus {
    pub enabled: bool,
    pub min_votes: u32,
    pub vote_timeout_secs: f64,
    pub strategy: ConsensusStrategy,
    pub threshold: f64,
}

impl Default for Consensus {
    fn default() -> Self {
        Consensus {
            enabled: true,
            min_votes: 3,
            vote_timeout_secs: 300.0,
            strategy: ConsensusStrategy::Weighted,
            threshold: 0.6,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub total_token_budget: u64,
    pub tokens_per_agent_per_hour: u64,
    pub tool_calls_per_agent_per_hour: u64,
    pub max_context_size: u64,
    pub disk_space_limit_gb: f64,
    /// Wall minutes one phase check (build, test) may run; real commands are not time-scaled.
    pub max_test_runtime_min: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            total_token_budget: 5_000_000,
            tokens_per_agent_per_hour: 200_000,
            tool_calls_per_agent_per_hour: 500,
            max_context_size: 128_000,
            disk_space_limit_gb: 2.0,
            max_test_runtime_min: 30.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFormat {
    Json,
    Prometheus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    pub enabled: bool,
    /// Session seconds between `metrics_current.json` samples.
    pub health_check_interval: f64,
    pub metrics_export_interval: f64,
    pub dashboard_update_interval: f64,
    pub log_level: LogLevel,
    pub agent_activity_logging: bool,
    pub export_metrics: bool,
    pub metrics_format: MetricsFormat,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            enabled: true,
            health_check_interval: 30.0,
            metrics_export_interval: 60.0,
            dashboard_update_interval: 30.0,
            log_level: LogLevel::Info,
            agent_activity_logging: true,
            export_metrics: true,
            metrics_format: MetricsFormat::Json,
        }
    }
}

/// `[project]`: megatest's `spec_dir` beside the upstream `[project.target]` and
/// `[project.performance]` tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Project {
    /// Directory of the project spec; relative paths are relative to the config file. Default:
    /// `system_tests/long_running/projects/<session.project_type>`.
    pub spec_dir: Option<String>,
    pub target: Target,
    pub performance: Performance,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Target {
    pub lines_of_code: u64,
    pub test_coverage: f64,
    pub documentation_coverage: f64,
    pub max_bugs_critical: u32,
    pub max_bugs_high: u32,
    pub max_bugs_medium: u32,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            lines_of_code: 5000,
            test_coverage: 0.8,
            documentation_coverage: 0.9,
            max_bugs_critical: 0,
            max_bugs_high: 2,
            max_bugs_medium: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Performance {
    pub build_time_secs: f64,
    pub test_execution_time_secs: f64,
    pub memory_usage_mb: f64,
    pub binary_size_mb: f64,
}

impl Default for Performance {
    fn default() -> Self {
        Performance {
            build_time_secs: 60.0,
            test_execution_time_secs: 120.0,
            memory_usage_mb: 512.0,
            binary_size_mb: 50.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    /// Session minutes.
    pub duration_minutes: f64,
    #[serde(default)]
    pub objectives: Vec<String>,
    #[serde(default)]
    pub success_criteria: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Checkpoint,
    PhaseComplete,
    Error,
    Complete,
    Budget,
    Escalation,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notifications {
    pub enabled: bool,
    pub webhook_url: Option<String>,
    pub events: Vec<NotifyEvent>,
    pub email: Option<Email>,
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            enabled: false,
            webhook_url: None,
            events: vec![
                NotifyEvent::PhaseComplete,
                NotifyEvent::Error,
                NotifyEvent::Complete,
            ],
            email: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub smtp_server: String,
    pub smtp_port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from_address: String,
    pub to_addresses: Vec<String>,
}

/// Which model answers the agents (megatest section `[model]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// Deterministic built-in model that replays the project spec's script.
    Scripted,
    /// Seeded stochastic built-in model for load and long runs.
    Sim,
    /// Any OpenAI-compatible endpoint (passthrough: issue 3).
    OpenaiCompatible,
    /// Anthropic Messages API (passthrough: issue 3).
    Anthropic,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Scripted => "scripted",
            Provider::Sim => "sim",
            Provider::OpenaiCompatible => "openai-compatible",
            Provider::Anthropic => "anthropic",
        }
    }

    pub fn is_builtin(self) -> bool {
        matches!(self, Provider::Scripted | Provider::Sim)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Model {
    /// None means "not configured": `megatest run` refuses to start rather than pick a fake model.
    pub provider: Option<Provider>,
    /// Upstream base URL for passthrough providers, e.g. `https://api.openai.com/v1`
    /// (Anthropic default: `https://api.anthropic.com/v1`).
    pub base_url: Option<String>,
    /// Model name sent upstream; for built-in models the name they answer to.
    pub name: Option<String>,
    /// Name of the environment variable holding the provider API key (the key itself never
    /// appears in a file megatest writes).
    pub api_key_env: Option<String>,
    /// Models tried in order when the requested one keeps failing.
    pub fallbacks: Vec<String>,
    /// Wall seconds one upstream attempt may take (real providers are not time-scaled).
    pub timeout_secs: f64,
    /// Backoff retries of one call per model after a timeout, connection error, 429, 5xx or
    /// malformed body (default 5, the seed's `max_recovery_attempts`); `retry_immediate`'s
    /// first three retries of a timeout come on top.
    pub max_retries: u32,
    /// Exponential backoff with full jitter between retries: U(0, min(max, base × 2^attempt)),
    /// wall milliseconds. A 429's `Retry-After` (capped at `retry_max_ms`) takes precedence.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// A model that failed this many calls in a row is skipped for `cooldown_secs` (wall).
    pub cooldown_after_failures: u32,
    pub cooldown_secs: f64,
    /// Completion tokens reserved for a request that names no `max_tokens`.
    pub default_max_tokens: u64,
    /// Session cost budget in USD; None = no cost budget.
    pub max_cost_usd: Option<f64>,
    /// Prices in USD per million tokens, by model name; merged over the built-in defaults.
    pub prices: BTreeMap<String, Price>,
    pub sim: SimModel,
    /// Faults the built-in models inject (off by default).
    pub faults: Faults,
}

/// `[model.faults]`: probabilities (0.0–1.0) per model call that the built-in `scripted` and
/// `sim` models fail the way real providers do, so every proxy path runs offline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// HTTP 429 with `Retry-After: 1`.
    pub rate_limit: f64,
    /// HTTP 500.
    pub server_error: f64,
    /// No answer within the timeout.
    pub timeout: f64,
    /// HTTP 200 with a body that is not JSON.
    pub malformed_json: f64,
    /// A tool call whose arguments are not valid JSON.
    pub malformed_tool_args: f64,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            provider: None,
            base_url: None,
            name: None,
            api_key_env: None,
            fallbacks: Vec::new(),
            timeout_secs: 600.0,
            max_retries: 5,
            retry_base_ms: 500,
            retry_max_ms: 8000,
            cooldown_after_failures: 3,
            cooldown_secs: 60.0,
            default_max_tokens: 4096,
            max_cost_usd: None,
            prices: BTreeMap::new(),
            sim: SimModel::default(),
            faults: Faults::default(),
        }
    }
}

/// A model's price in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cached prompt tokens; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

/// `[model.sim]`: the rates of the `sim` model. Durations are session seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimModel {
    pub seed: u64,
    /// Mean session seconds one model call takes.
    pub latency_secs: f64,
    /// Mean completion tokens per call.
    pub completion_tokens_mean: u64,
    /// Tool-calling steps per task, drawn uniformly from this inclusive range.
    pub steps_min: u32,
    pub steps_max: u32,
}

impl Default for SimModel {
    fn default() -> Self {
        SimModel {
            seed: 42,
            latency_secs: 20.0,
            completion_tokens_mean: 400,
            steps_min: 3,
            steps_max: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// `megatest agent`, the reference tool-calling agent.
    Builtin,
    /// Any agent CLI from `command` or a `preset`.
    Command,
}

/// `[agents]`: how agent processes are started (megatest section).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agents {
    pub kind: AgentKind,
    /// A documented preset (`mini-swe-agent`, `aider`, `claude-code`, `codex`, `selfware`).
    pub preset: Option<String>,
    /// Command template run through `sh -c`; placeholders `{prompt_file}`, `{workspace}`,
    /// `{model}`, `{base_url}`, `{agent_id}`, `{task_id}`.
    pub command: Option<String>,
    /// Extra environment for agent processes.
    pub env: BTreeMap<String, String>,
    /// Wall seconds between SIGTERM and SIGKILL when stopping an agent's process group.
    pub stop_grace_secs: f64,
    /// Runs of one task before it is marked failed.
    pub max_task_attempts: u32,
}

impl Default for Agents {
    fn default() -> Self {
        Agents {
            kind: AgentKind::Builtin,
            preset: None,
            command: None,
            env: BTreeMap::new(),
            stop_grace_secs: 3.0,
            max_task_attempts: 3,
        }
    }
}

/// `[api]`: the control API (issue 6) and its address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    pub address: String,
    pub allow_non_loopback: bool,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            address: "127.0.0.1:8080".into(),
            allow_non_loopback: false,
        }
    }
}

/// `[recovery]` (megatest): detection limits and escalation of the recovery table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recovery {
    /// Session minutes without a model call, tool call, output or workspace change after which
    /// a running agent is `agent_hang` (the 10 minutes; scaled like every duration).
    pub agent_idle_minutes: f64,
    /// Wall seconds the idle limit never goes below: tools run in real time, so at a high time
    /// scale a few scaled minutes would flag an agent that is running the test suite.
    pub agent_idle_floor_secs: f64,
    /// Session minutes an escalation waits for an operator decision before
    /// `escalation_default` applies.
    pub escalation_timeout_minutes: f64,
    /// What an unanswered escalation does: `stop_session` or `log_and_continue`.
    pub escalation_default: RecoveryAction,
    /// Free space (MiB) on the runs filesystem under which the session is `disk_full` (at most
    /// 10 % of that filesystem).
    pub min_free_disk_mb: u64,
    /// A ballast file of this many MiB kept in the session directory and deleted when the disk
    /// fills, so the ledger, the event log and the report can still be written (at most 5 % of
    /// the filesystem). 0 = none.
    pub disk_reserve_mb: u64,
    /// Memory available to new allocations (sysinfo, MiB) under which the machine is under
    /// memory pressure: the agent with the largest process tree gets `out_of_memory`.
    pub min_available_memory_mb: u64,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            agent_idle_minutes: 10.0,
            agent_idle_floor_secs: 10.0,
            escalation_timeout_minutes: 30.0,
            escalation_default: RecoveryAction::StopSession,
            min_free_disk_mb: 16,
            disk_reserve_mb: 4,
            min_available_memory_mb: 256,
        }
    }
}

/// `[chaos]` (megatest): fault injection, off by default and loud in the report when on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Chaos {
    pub enabled: bool,
    /// `[chaos.upstream]`: per-attempt probabilities of upstream faults, injected by the proxy
    /// in front of any backend (the built-in models and a real provider alike).
    pub upstream: Faults,
    /// Faults at given session times.
    pub events: Vec<ChaosEvent>,
}

/// One timed fault of `[[chaos.events]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChaosEvent {
    /// Session minutes after the start.
    pub at_minutes: f64,
    pub fault: ChaosFault,
    /// The agent (`agent-1` …) for `kill_agent` / `hang_agent`; default: the first running one.
    pub agent: Option<String>,
    /// For `fill_disk`: session minutes until the filler file is deleted again (the operator
    /// freeing space); default 1.
    pub hold_minutes: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChaosFault {
    /// SIGKILL the agent's process group.
    KillAgent,
    /// SIGSTOP the agent's process group (it hangs until megatest notices).
    HangAgent,
    /// Write a filler file in the session directory until the filesystem is full.
    FillDisk,
    /// Flip bytes in the latest checkpoint file.
    CorruptCheckpoint,
}
