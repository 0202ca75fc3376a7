//! Raw configuration: the TOML file as written, one serde struct per section.
//!
//! The upstream Selfware sections (`[metadata]` … `[notifications]`) keep their upstream key names
//! and meanings (`../shared/fixtures/selfware/mega_test_config.toml`). megatest's own sections are
//! `[model]`, `[agents]`, `[project]` (keys beside the upstream `[project.target]` and
//! `[project.performance]`), `[api]`, `[recovery]`, `[chaos]`, `[evaluation]` and `[scheduling]`. Every struct denies unknown keys, so a typo is an error
//! with its line and column, never a silently ignored setting.

pub use super::scheduling::{PhaseEnd, Scheduling};
pub use super::targets::{Performance, Project, Target};
pub use crate::recovery::{
    BackoffStrategy, Classification, ErrorHandling, ErrorRule, RecoveryAction, Severity,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole file. Every section is optional; defaults are the upstream file's values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[metadata]`: the test's name, version and description (reported, not acted on).
    pub metadata: Metadata,
    /// `[session]`: id, duration, agent count, project (required in every file).
    pub session: Session,
    /// `[checkpoint]`: checkpoint triggers and the retry policy of the recovery table.
    pub checkpoint: Checkpoint,
    /// `[agent]`: per-agent limits and roles (upstream).
    pub agent: Agent,
    /// `[consensus]`: review votes among agents. A file without the section holds no votes.
    #[serde(default = "Consensus::absent")]
    pub consensus: Consensus,
    /// `[limits]`: token, tool-call, context, disk and test-runtime limits.
    pub limits: Limits,
    /// `[monitoring]`: metrics sampling, export, progress and logging.
    pub monitoring: Monitoring,
    /// `[error_handling]`: the recovery table's rules (upstream `auto_recovery` / `manual_intervention`).
    pub error_handling: ErrorHandling,
    /// `[project]`: the project spec and its `[project.target]` / `[project.performance]` targets.
    pub project: Project,
    /// `[[phases]]`: the time-boxed phases in order (default: the upstream four).
    pub phases: Vec<Phase>,
    /// `[notifications]`: webhook (and, not yet delivered, e-mail) alerts.
    pub notifications: Notifications,
    /// `[model]` (megatest): which model answers the agents, retries, prices.
    pub model: Model,
    /// `[agents]` (megatest): how agent processes are started.
    pub agents: Agents,
    /// `[api]` (megatest): the control API's address.
    pub api: Api,
    /// `[recovery]` (megatest): detection limits and escalation.
    pub recovery: Recovery,
    /// `[chaos]` (megatest): fault injection.
    pub chaos: Chaos,
    /// `[evaluation]` (megatest): when the produced project is evaluated.
    pub evaluation: EvaluationSettings,
    /// `[scheduling]` (megatest): how phases end and how much follow-up work they get.
    pub scheduling: Scheduling,
}

/// `[evaluation]` (megatest): at which phase ends the produced project is evaluated (the
/// hidden acceptance suite, coverage, documentation coverage, security scan, performance) after
/// the phase checks. Each evaluation is bounded by `[limits].max_test_runtime_min` (wall).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationSettings {
    /// Names of the phases at whose end the evaluation runs; unset: every phase but the first
    /// (with the upstream phases: development, refinement, finalization); `[]`: never.
    pub phases: Option<Vec<String>>,
    /// Run the acceptance suite (false: only the build and test checks are judged).
    pub acceptance: bool,
    /// Install a missing coverage tool megatest knows (cargo-tarpaulin for Rust, see
    /// [`crate::eval::provision::CARGO_TOOLS`]) from its registry before measuring (minutes of
    /// compiling, once per runs directory); false: its figure is null with how to install it.
    pub install_tools: bool,
}

impl Default for EvaluationSettings {
    fn default() -> Self {
        EvaluationSettings {
            phases: None,
            acceptance: true,
            install_tools: false,
        }
    }
}

/// `[metadata]`: descriptive only; copied into `config.json` and the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metadata {
    /// The test's name (default `Mega Project Test`).
    pub name: String,
    /// The test plan's version (default `1.0.0`).
    pub version: String,
    /// Free text.
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
    /// Agents started (upstream range 2–16); roles come from `[agent].roles`.
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

/// `[checkpoint]`: when checkpoints are taken and how failed steps are retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checkpoint {
    /// Take checkpoints at all (false: none, not even at phase ends).
    pub enabled: bool,
    /// Session minutes between time-triggered checkpoints.
    pub interval_minutes: f64,
    /// Tool calls (all agents) since the last checkpoint that trigger the next one.
    pub tool_call_threshold: u64,
    /// Tokens (all agents) since the last checkpoint that trigger the next one.
    pub token_threshold: u64,
    /// Apply the recovery table's actions automatically (false: every failure escalates).
    pub auto_recovery: bool,
    /// Retries of one failing step before its rule escalates.
    pub max_recovery_attempts: u32,
    /// `exponential`, `linear` or `fixed` waits between those retries.
    pub backoff_strategy: BackoffStrategy,
    /// First wait, session seconds.
    pub backoff_initial_seconds: f64,
    /// Longest wait, session seconds.
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

/// `[agent]`: per-agent limits and roles (upstream keys).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    /// Model calls one agent may make on one task before it must stop.
    pub max_iterations: u32,
    /// Session seconds one task run may take (divided by the time scale).
    pub step_timeout_secs: f64,
    /// Agents that may run a task at the same time (capped at `agent_count`).
    pub concurrent_agents: u32,
    /// Roles handed to the agents in order, cycled (empty: Architect, Coder, Tester, Reviewer).
    pub roles: Vec<String>,
    /// Lowest trust score (0–1) before an agent's votes stop counting (swarm work).
    pub min_trust_score: f64,
    /// Highest trust score (0–1).
    pub max_trust_score: f64,
    /// Start extra agents when work waits (swarm work).
    pub dynamic_spawning: bool,
    /// Upper bound on agents including spawned ones (≥ `agent_count`).
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

/// How a consensus vote is decided (`[consensus].strategy`; defined with the decision rules).
pub use crate::swarm::consensus::Strategy as ConsensusStrategy;

/// `[consensus]`: review votes among agents (`swarm::consensus`; the session's `voting.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Consensus {
    /// Hold votes at all.
    pub enabled: bool,
    /// Votes needed for a decision (≥ 1).
    pub min_votes: u32,
    /// Session seconds a vote stays open.
    pub vote_timeout_secs: f64,
    /// How the votes are counted.
    pub strategy: ConsensusStrategy,
    /// Approving share (0–1) that passes a weighted vote.
    pub threshold: f64,
}

impl Consensus {
    /// A file without `[consensus]`: no votes.
    pub fn absent() -> Consensus {
        Consensus {
            enabled: false,
            ..Consensus::default()
        }
    }
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

/// `[limits]`: the budgets, enforced at admission by the proxy and the session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Tokens (prompt + completion, all agents) the whole session may use.
    pub total_token_budget: u64,
    /// Tokens one agent may use per session hour (a token bucket; calls wait).
    pub tokens_per_agent_per_hour: u64,
    /// Tool calls one agent may make per session hour (first a "batch your operations" note, then throttled).
    pub tool_calls_per_agent_per_hour: u64,
    /// Largest prompt, in estimated tokens; a larger one is refused as `context_overflow`.
    pub max_context_size: u64,
    /// Size of the checkpoint store (GB = 10^9 bytes) before it is pruned, then `disk_full`.
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

/// `[monitoring].log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation (default).
    Info,
    /// Problems only.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    /// The level as `tracing`'s filter syntax writes it.
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

/// `[monitoring].metrics_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsFormat {
    /// `metrics/metrics.jsonl` only.
    Json,
    /// Also `metrics/metrics.prom` (text exposition format).
    Prometheus,
}

/// `[monitoring]`: metrics sampling, export, progress and logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    /// Write metrics files at all.
    pub enabled: bool,
    /// Session seconds between `metrics_current.json` samples.
    pub health_check_interval: f64,
    /// Session seconds between appends to `metrics/metrics.jsonl`.
    pub metrics_export_interval: f64,
    /// Session seconds between terminal progress updates (at least 1 wall second).
    pub dashboard_update_interval: f64,
    /// Level of `session.log` and stderr (`RUST_LOG` overrides).
    pub log_level: LogLevel,
    /// Log every model call and reported tool call at info level.
    pub agent_activity_logging: bool,
    /// Append samples to `metrics/metrics.jsonl` (and `.prom`).
    pub export_metrics: bool,
    /// Export format.
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

/// One `[[phases]]` entry: a time box with objectives and success criteria.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Its name (`bootstrap`, `development`, …); unique.
    pub name: String,
    /// Session minutes.
    pub duration_minutes: f64,
    /// Objectives handed to the agents in their prompts.
    #[serde(default)]
    pub objectives: Vec<String>,
    /// Upstream free-text criteria, judged at the phase end where measurable.
    #[serde(default)]
    pub success_criteria: Vec<String>,
}

/// What a notification is about (`[notifications].events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    /// A checkpoint was written.
    Checkpoint,
    /// A phase ended.
    PhaseComplete,
    /// A failure the recovery table handled.
    Error,
    /// The session ended.
    Complete,
    /// A budget alert or exhaustion.
    Budget,
    /// An escalation waits for an operator.
    Escalation,
}

/// `[notifications]`: alerts to the outside world.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notifications {
    /// Send notifications at all.
    pub enabled: bool,
    /// Where JSON notifications are POSTed (redacted in `config.json`).
    pub webhook_url: Option<String>,
    /// Which events are sent.
    pub events: Vec<NotifyEvent>,
    /// SMTP settings (parsed; no SMTP delivery yet).
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

/// `[notifications.email]` (parsed and validated; not delivered).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    /// SMTP host.
    pub smtp_server: String,
    /// SMTP port.
    pub smtp_port: u16,
    /// SMTP user.
    pub username: Option<String>,
    /// SMTP password (redacted in `config.json`).
    pub password: Option<String>,
    /// Sender address.
    pub from_address: String,
    /// Recipients.
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
    /// The provider's name as the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Scripted => "scripted",
            Provider::Sim => "sim",
            Provider::OpenaiCompatible => "openai-compatible",
            Provider::Anthropic => "anthropic",
        }
    }

    /// True for the built-in models (no network, no key).
    pub fn is_builtin(self) -> bool {
        matches!(self, Provider::Scripted | Provider::Sim)
    }
}

/// `[model]` (megatest): which model answers the agents, and how calls are retried.
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
    /// Longest backoff wait, wall milliseconds.
    pub retry_max_ms: u64,
    /// A model that failed this many calls in a row is skipped for `cooldown_secs` (wall).
    pub cooldown_after_failures: u32,
    /// Wall seconds a failing model is skipped.
    pub cooldown_secs: f64,
    /// Completion tokens reserved for a request that names no `max_tokens`.
    pub default_max_tokens: u64,
    /// Session cost budget in USD; None = no cost budget.
    pub max_cost_usd: Option<f64>,
    /// Prices in USD per million tokens, by model name; merged over the built-in defaults.
    pub prices: BTreeMap<String, Price>,
    /// `[model.sim]`: the `sim` model's rates.
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
    /// USD per million prompt tokens.
    pub input: f64,
    /// USD per million completion tokens.
    pub output: f64,
    /// Cached prompt tokens; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

/// `[model.sim]`: the rates of the `sim` model. Durations are session seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimModel {
    /// Random seed (the same seed gives the same session).
    pub seed: u64,
    /// Mean session seconds one model call takes.
    pub latency_secs: f64,
    /// Mean completion tokens per call.
    pub completion_tokens_mean: u64,
    /// Tool-calling steps per task, drawn uniformly from this inclusive range.
    pub steps_min: u32,
    /// Upper end of that range.
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

/// `[agents].kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// `megatest agent`, the reference tool-calling agent.
    Builtin,
    /// Any agent CLI from `command` or a `preset`.
    Command,
}

/// `[agents].sandbox`: what agent processes may see and change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// `bwrap` where bubblewrap runs, else `none` with a warning (the default).
    #[default]
    Auto,
    /// No sandbox: agents can read and write what the user can.
    None,
    /// bubblewrap (see [`crate::backend::sandbox`]): the filesystem read-only but for the
    /// workspace and the agent's own directory; the session's other files and the acceptance
    /// suites hidden.
    Bwrap,
}

/// `[agents]`: how agent processes are started (megatest section).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Agents {
    /// `builtin` (the reference agent) or `command` (any CLI).
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
    /// `auto` (default: `bwrap` where bubblewrap runs, else `none` with a warning), `none` or
    /// `bwrap` (every agent run under bubblewrap; a session that asks for it where bubblewrap
    /// cannot run is refused).
    pub sandbox: SandboxMode,
    /// Memory each agent process may allocate, MiB (RLIMIT_DATA: its heap and private
    /// writable mappings); unset: no limit.
    pub memory_limit_mb: Option<u64>,
    /// CPU seconds each agent process may use (RLIMIT_CPU: SIGXCPU, then SIGKILL a second
    /// later); unset: no limit.
    pub cpu_limit_secs: Option<u64>,
    /// Processes the agent's user may have (RLIMIT_NPROC: counted per user, not per agent, and
    /// not enforced for root); unset: no limit.
    pub max_processes: Option<u64>,
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
            sandbox: SandboxMode::Auto,
            memory_limit_mb: None,
            cpu_limit_secs: None,
            max_processes: None,
        }
    }
}

/// `[api]`: the control API (issue 6) and its address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// `host:port` to listen on (port 0: any free port; the bound address is written to `api.addr`).
    pub address: String,
    /// Allow a non-loopback address (the API is token-protected, but plain HTTP).
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
    /// Wall seconds the idle limit and `[agent].step_timeout_secs` never go below: tools run
    /// in real time, so at a high time scale a few scaled minutes would flag an agent that is
    /// running the test suite.
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
    /// Inject the faults below (reported loudly in `final_report.json`).
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
    /// Which fault.
    pub fault: ChaosFault,
    /// The agent (`agent-1` …) for `kill_agent` / `hang_agent`; default: the first running one.
    pub agent: Option<String>,
    /// For `fill_disk`: session minutes until the filler file is deleted again (the operator
    /// freeing space); default 1.
    pub hold_minutes: Option<f64>,
}

/// A timed fault of `[[chaos.events]]`.
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
