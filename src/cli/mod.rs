//! Command-line interface: one file per subcommand, dispatched from [`run`].

mod agent;
mod checkpoints;
mod compare;
mod control;
mod ecs;
mod evaluate;
mod fork;
mod presets;
mod report;
mod restore;
mod resume;
mod run;
mod validate;

use crate::config::raw::Provider;
use crate::config::Overrides;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Supervisor for multi-hour, multi-agent AI coding sessions.
#[derive(Debug, Parser)]
#[command(name = "megatest", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run one session: agents build the project through the four phases; writes
    /// test_runs/<session_id>/ and exits 0 (criteria met), 1 (a critical criterion failed),
    /// 2 (usage or config error, nothing started), 3 (aborted), 130/143 (interrupted).
    Run(run::RunArgs),
    /// Check a config file (and overrides) without starting anything; exit 0 or 2.
    Validate(validate::ValidateArgs),
    /// Evaluate a project directory: build, tests, the hidden acceptance suite, coverage, doc
    /// coverage, security scan, LOC; exit 0 (critical criteria hold), 1 (one fails), 2 (usage).
    Evaluate(evaluate::EvaluateArgs),
    /// Continue a session whose daemon died (kill -9 included) or was interrupted: leftover
    /// agents are stopped, state is rebuilt from session.db, the session runs on.
    Resume(resume::ResumeArgs),
    /// Roll the workspace and task board back to a checkpoint and continue from there.
    Restore(restore::RestoreArgs),
    /// List a session's checkpoints; --verify checks their hashes and objects (exit 1 if any
    /// is invalid).
    Checkpoints(checkpoints::CheckpointsArgs),
    /// megatest's reference agent: a tool-calling loop against MEGATEST_BASE_URL (used by
    /// `run` for agents of kind "builtin").
    Agent(agent::AgentCommandArgs),
    /// Inside an agent run: vote on the review or gate the agent's task is (approve, reject or
    /// abstain, with a reason); megatest puts itself on every agent's PATH.
    Vote(agent::VoteArgs),
    /// Inside an agent run: a note into the session's working memory.
    Note(agent::NoteArgs),
    /// Inside an agent run: a proposal of the agent's own (an architecture decision, …) put to
    /// a vote of the other agents.
    Propose(agent::ProposeArgs),
    /// How a session is going: live through its control API while it runs, from its files
    /// when it does not.
    Status(control::StatusArgs),
    /// Take a checkpoint of a running session now; prints its sequence and path.
    Checkpoint(control::SessionArg),
    /// Pause a running session: agents stopped, model calls held.
    Pause(control::SessionArg),
    /// Continue a paused session.
    Continue(control::SessionArg),
    /// Stop a running session gracefully (final checkpoint, report; resumable).
    Stop(control::SessionArg),
    /// Print session.log (or an agent's output with --agent); -f follows it.
    Logs(control::LogsArgs),
    /// A table of the sessions in the runs directory.
    Sessions(control::SessionsArgs),
    /// Remove sessions that ended longer ago than --older-than (never a running one).
    Clean(control::CleanArgs),
    /// The agent CLI presets: the release each was proven with, the installed version, where
    /// tool calls come from, notes (`--json` for machines).
    Presets(presets::PresetsArgs),
    /// Rebuild an ended session's report.html, final_report.json, junit.xml or Markdown
    /// summary from its session.db (exit 1: no final report yet, 2: no such session).
    Report(report::ReportArgs),
    /// Ended sessions side by side (tokens, cost, criteria, acceptance, coverage, LOC, …),
    /// the differences to the first marked: the A/B comparison of configurations.
    Compare(compare::CompareArgs),
    /// A new session from any checkpoint of any session (workspace, board, working memory),
    /// with its own ledger and budgets and a forked_from link; runs it to its end.
    Fork(fork::ForkArgs),
    /// Sessions on AWS ECS Fargate (Spot) with their directories in S3: launch, watch,
    /// status, logs, stop, stop-all, collect, costs.
    Ecs(Box<ecs::EcsArgs>),
}

/// Provider names accepted on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ProviderArg {
    Scripted,
    Sim,
    OpenaiCompatible,
    Anthropic,
}

impl From<ProviderArg> for Provider {
    fn from(value: ProviderArg) -> Self {
        match value {
            ProviderArg::Scripted => Provider::Scripted,
            ProviderArg::Sim => Provider::Sim,
            ProviderArg::OpenaiCompatible => Provider::OpenaiCompatible,
            ProviderArg::Anthropic => Provider::Anthropic,
        }
    }
}

/// Overrides shared by `run` and `validate`; each also reads its environment variable.
#[derive(Debug, Clone, Args)]
pub(crate) struct OverrideArgs {
    /// Project type (spec under system_tests/long_running/projects/), overrides session.project_type
    #[arg(long, env = "MEGATEST_PROJECT")]
    pub project: Option<String>,
    /// Session length in hours (1-24), overrides session.duration_hours; phases scale in proportion
    #[arg(long, env = "MEGATEST_HOURS")]
    pub hours: Option<f64>,
    /// Number of agents (2-16), overrides session.agent_count and agent.concurrent_agents
    #[arg(long, env = "MEGATEST_AGENTS")]
    pub agents: Option<u32>,
    /// Session seconds per wall second: 3600 runs a 6 h session in 6 s
    #[arg(long, env = "MEGATEST_TIME_SCALE")]
    pub time_scale: Option<f64>,
    /// Model provider, overrides [model].provider
    #[arg(long, env = "MEGATEST_PROVIDER", value_enum)]
    pub provider: Option<ProviderArg>,
    /// Model name agents ask for upstream, overrides [model].name
    #[arg(long, env = "MEGATEST_MODEL")]
    pub model: Option<String>,
    /// Session id (default: mega-YYYYmmdd-HHMMSS-<8 hex>), overrides session.id
    #[arg(long, env = "MEGATEST_SESSION_ID")]
    pub session_id: Option<String>,
    /// Control API address (127.0.0.1:0 picks a free port), overrides [api].address
    #[arg(long, env = "MEGATEST_API_ADDR")]
    pub api_addr: Option<String>,
}

impl OverrideArgs {
    /// The overrides as the config loader takes them.
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            project: self.project.clone(),
            hours: self.hours,
            agents: self.agents,
            time_scale: self.time_scale,
            provider: self.provider.map(Provider::from),
            session_id: self.session_id.clone(),
            api_addr: self.api_addr.clone(),
            sync: None,
            model: self.model.clone(),
        }
    }
}

/// The default config path.
pub fn default_config() -> PathBuf {
    PathBuf::from("configs/mega_test_config.toml")
}

/// Parse the command line and run; returns the process exit code.
pub fn run() -> anyhow::Result<i32> {
    // reqwest is built without a default TLS crypto provider: install ring (no C toolchain
    // beyond gcc, and no aws-lc build).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Vote(args) => agent::vote(args),
        Command::Note(args) => agent::note(args),
        Command::Propose(args) => agent::propose(args),
        Command::Checkpoints(args) => checkpoints::run(args),
        Command::Resume(args) => resume::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Report(args) => report::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Fork(args) => fork::run(args),
        Command::Ecs(args) => ecs::run(*args),
        Command::Status(args) => control::status(args),
        Command::Checkpoint(target) => control::action(target, "checkpoint"),
        Command::Pause(target) => control::action(target, "pause"),
        Command::Continue(target) => control::action(target, "continue"),
        Command::Stop(target) => control::action(target, "stop"),
        Command::Logs(args) => control::logs(args),
        Command::Sessions(args) => control::sessions(args),
        Command::Clean(args) => control::clean(args),
        Command::Presets(args) => presets::presets(args),
    }
}
