//! The session: one task that owns all state and drives the phases.
//!
//! Theory of operation. [`prepare`] checks everything that can be checked without touching the
//! disk (provider, project spec, script, agent command, session id); nothing exists on disk
//! until it succeeds. [`Session::create`] lays out the session directory. [`Session::run`] then
//! starts the metering proxy and walks the phases: each phase puts its planned tasks on the
//! board, hands claimable tasks to idle agents (role match first), and ends when its time box
//! (session clock) is up or all its tasks are done or failed; running agents are then stopped
//! (TERM → grace → KILL of each process group), the spec's build and test commands run in
//! `project/` as the phase checks, and the next phase begins. Every input — proxy calls, agent
//! exits, signals — arrives as an [`Event`] on one channel; only this task writes state, and
//! every change is committed to `session.db` before it counts. At any end (complete, failed,
//! interrupted) `final_report.json` and `status` are written.

mod board;
mod checkpointing;
mod confirming;
mod control;
mod diffs;
mod evaluating;
mod gating;
mod lifecycle;
mod metering;
pub use metering::ACTIVITY_TARGET;
mod phases;
mod proposals;
mod recover;
pub mod rejections;
mod reporting;
mod runs;
mod spawning;
mod swarm;
mod ticks;
mod voting;
mod watch;

use crate::agent::{self, CommandVars};
use crate::backend::{AgentBackend, AgentGroup, LaunchSpec, RunEnd, RunLimits, RunOutcome};
use crate::budget::{self, Admission, BudgetSignal, Budgets};
use crate::clock::SessionClock;
use crate::config::raw::{AgentKind, NotifyEvent, Provider, RecoveryAction, SandboxMode, Severity};
use crate::config::Config;
use crate::eval::{self, CriterionResult};
use crate::fsutil::{write_atomic, write_json_atomic, write_private};
use crate::metrics::{self, CodeStats};
use crate::project::{ProjectSpec, Script, TaskSpec};
use crate::protocol::{self as event, CallContext, Event, ShutdownSignal};
use crate::proxy::{self, Backend, BuiltinModel, ProxySettings};
use crate::recovery::FailureKind;
use crate::report::*;
use crate::store::spool::LedgerSpool;
use crate::store::{CheckRow, LedgerTotals, Store};
use anyhow::{Context, Result};
use board::{AgentView, Board, Task, TaskState};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Smallest wall interval between `metrics_current.json` writes, whatever the time scale (so a
/// 30 s health-check interval at time scale 3600 does not rewrite the file every 8 ms).
pub const MIN_METRICS_INTERVAL: Duration = Duration::from_millis(250);

/// Wall time the end of a session waits for model calls still in flight (their agents have
/// been stopped; a call the upstream is still answering is metered if it ends by then).
pub const PROXY_SETTLE: Duration = Duration::from_secs(2);

/// The running megatest binary for `megatest agent` (the kernel keeps the inode of a replaced
/// or deleted binary reachable here).
pub const SELF_EXE: &str = "/proc/self/exe";

/// Bytes of an agent's `events.jsonl` read per drain (a longer single line is skipped as bad).
pub const EVENTS_READ_LIMIT: usize = 4 << 20;

/// A problem found before the session started: exit code 2, nothing on disk.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PrepareError(pub String);

/// Everything checked and resolved before the session directory is created.
pub struct Prepared {
    /// The validated config.
    pub config: Config,
    /// The model provider.
    pub provider: Provider,
    /// The project spec.
    pub spec: ProjectSpec,
    /// Taken by [`Session::run`] when it starts the proxy.
    pub backend: Option<Backend>,
    /// How reports label the model.
    pub model_label: String,
    /// The session's id.
    pub session_id: String,
    /// The session directory (not created yet).
    pub dir: PathBuf,
    /// The agents' command template (None: the built-in agent).
    pub command_template: Option<String>,
    /// The `[agents].preset` used (its environment and tool-call source), if any.
    pub preset: Option<&'static agent::Preset>,
    /// The overrides the config was loaded with (recorded for `megatest resume`).
    pub overrides: crate::config::Overrides,
    /// The control API's socket, bound before anything is written (taken by `Session::run`).
    pub api_listener: Option<std::net::TcpListener>,
    /// Where agent runs execute (local process groups unless the daemon chooses another).
    pub agent_backend: Arc<dyn AgentBackend>,
    /// Agent runs go through the sandbox (`[agents].sandbox` resolved: `bwrap`, or `auto` where
    /// bubblewrap runs).
    pub sandboxed: bool,
}

/// Check that a session can start, without writing anything.
///
/// Errors ([`PrepareError`], exit 2): no provider configured, a passthrough provider (lands
/// with the proxy issue), an unloadable spec, a scripted run whose script misses a task, a
/// session directory that already exists.
pub fn prepare(
    config: Config,
    overrides: &crate::config::Overrides,
    runs_dir: &Path,
) -> Result<Prepared, PrepareError> {
    let session_id = match config.raw.session.id.as_str() {
        "auto" => format!(
            "mega-{}-{:08x}",
            chrono::Local::now().format("%Y%m%d-%H%M%S"),
            fastrand::u32(..)
        ),
        id => id.to_string(),
    };
    let dir = runs_dir.join(&session_id);
    if dir.exists() {
        return Err(PrepareError(format!(
            "session directory {} already exists; choose another --session-id",
            dir.display()
        )));
    }
    prepare_in(config, overrides, session_id, dir)
}

/// [`prepare`] for an existing session directory (`megatest resume`).
pub fn prepare_resume(
    config: Config,
    overrides: &crate::config::Overrides,
    session_id: String,
    dir: PathBuf,
) -> Result<Prepared, PrepareError> {
    prepare_in(config, overrides, session_id, dir)
}

fn prepare_in(
    config: Config,
    overrides: &crate::config::Overrides,
    session_id: String,
    dir: PathBuf,
) -> Result<Prepared, PrepareError> {
    // Absolute from here on: agents run in other directories, and recorded paths (checkpoints)
    // are joined to it again later.
    let dir = std::path::absolute(&dir)
        .map_err(|err| PrepareError(format!("session directory {}: {err}", dir.display())))?;
    let provider = config.provider().ok_or_else(|| {
        PrepareError(format!(
            "no model provider configured in {}: set [model].provider (scripted, sim, openai-compatible, anthropic) \
             or MEGATEST_PROVIDER / --provider; for a run without a key or network use `scripted` (the quickstart \
             project) or `sim` (any project)",
            config.path.display()
        ))
    })?;
    let spec = ProjectSpec::load(&config.spec_dir).map_err(|e| PrepareError(format!("{e:#}")))?;
    let mut config = config;
    let sandboxed = match config.raw.agents.sandbox {
        SandboxMode::None => false,
        SandboxMode::Bwrap => {
            crate::backend::sandbox::probe().map_err(|reason| {
                PrepareError(format!(
                    "{}: [agents] sandbox = \"bwrap\" but {reason}",
                    config.path.display()
                ))
            })?;
            true
        }
        SandboxMode::Auto => match crate::backend::sandbox::probe() {
            Ok(()) => true,
            Err(reason) => {
                config.warnings.push(format!(
                    "[agents] sandbox = \"auto\": agents run without a sandbox because {reason}"
                ));
                false
            }
        },
    };
    let builtin = match provider {
        Provider::Scripted => {
            let script = Script::load(&spec.dir).map_err(|e| PrepareError(format!("{e:#}")))?;
            let missing: Vec<&str> = config
                .phases
                .iter()
                .flat_map(|p| spec.tasks_of(&p.name))
                .filter(|t| !script.tasks.contains_key(&t.id))
                .map(|t| t.id.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(PrepareError(format!(
                    "the scripted model has no script for task(s) {} of project {:?} ({}); use provider `sim` for this project",
                    missing.join(", "),
                    config.raw.session.project_type,
                    spec.dir.join("script.toml").display()
                )));
            }
            Some(BuiltinModel::Scripted(Arc::new(script)))
        }
        Provider::Sim => Some(BuiltinModel::Sim(config.raw.model.sim.clone())),
        Provider::OpenaiCompatible | Provider::Anthropic => None,
    };
    let backend = proxy::backend_for(&config.raw.model, provider, builtin)
        .map_err(|e| PrepareError(format!("{}: {e:#}", config.path.display())))?;
    let model_label = backend.label();
    let command_template = match config.raw.agents.kind {
        AgentKind::Builtin => None,
        AgentKind::Command => Some(
            match (&config.raw.agents.command, &config.raw.agents.preset) {
                (Some(command), _) => command.clone(),
                (None, Some(preset)) => agent::preset(preset)
                    .map(|p| p.template.to_string())
                    .unwrap_or_default(),
                (None, None) => unreachable!("validated in config"),
            },
        ),
    };
    // A preset's template, environment and tool-call source apply when no `command` replaces it.
    let preset = match (&config.raw.agents.kind, &config.raw.agents.command) {
        (AgentKind::Command, None) => config.raw.agents.preset.as_deref().and_then(agent::preset),
        _ => None,
    };
    if let Some(preset) = preset {
        // The installed CLI against the version the preset was proven with (a scratch HOME:
        // the probe leaves nothing in the user's).
        let path = std::env::var("PATH").unwrap_or_default();
        if let Some(Some(warning)) = agent::presets::with_scratch_home(|home| {
            agent::presets::check_installed(preset, &path, home)
        }) {
            config.warnings.push(warning);
        }
    }
    let api = &config.raw.api;
    let api_listener =
        Some(crate::api::bind(&api.address, api.allow_non_loopback).map_err(PrepareError)?);
    Ok(Prepared {
        sandboxed,
        agent_backend: Arc::new(crate::backend::local::LocalBackend::new()),
        api_listener,
        overrides: overrides.clone(),
        config,
        provider,
        spec,
        backend: Some(backend),
        model_label,
        session_id,
        dir,
        command_template,
        preset,
    })
}

struct Running {
    task_idx: usize,
    attempt: u32,
    stop: CancellationToken,
    /// The run's processes (the backend's handle; locally the process group).
    group: Arc<dyn AgentGroup>,
    /// Set when megatest stops the run for a recovery (hang, compress and retry).
    ended_by: Option<(FailureKind, RecoveryAction, String)>,
    /// The cgroup's OOM-kill count when the run started.
    oom_kills_at_start: Option<u64>,
    /// The agent reported the task done (`POST /api/agent/task_done`).
    done_claimed: bool,
    /// Bytes of the agent's `agent.log` when the run started (its output starts there).
    log_offset: u64,
    /// The workspace just before the run started (its task diff is against it).
    snapshot_before: Option<diffs::Before>,
}

struct AgentSlot {
    id: String,
    role: String,
    key: String,
    dir: PathBuf,
    running: Option<Running>,
    /// Retired by dynamic spawning: never runs again, its key is refused.
    retired: bool,
    /// Its trust score is at `[agent].min_trust_score` (as of the last recomputation).
    distrusted: bool,
    /// Session second it became idle (None before its first idle moment was recorded).
    idle_since: Option<f64>,
    /// Its last runs that all failed (0 after a finished run).
    failures_in_row: u32,
    runs: u32,
    tasks_done: u32,
    failed_runs: u32,
    /// Bytes of `events.jsonl` already read.
    events_offset: u64,
    /// When it last started a run, called the model or reported a tool call.
    last_activity: Option<String>,
    /// The same, or its output grew, as an instant (hang detection).
    active: Instant,
    /// Bytes of `agent.log` at the last watchdog look.
    log_len: u64,
    /// Model calls admitted and not yet recorded: an agent waiting on its model is not idle.
    calls_in_flight: u32,
}

struct PhaseRecord {
    started: Option<(f64, f64)>,
    ended: Option<(f64, f64)>,
    ended_because: Option<String>,
    checks: Vec<CheckRow>,
    /// The evaluation at its end (`[evaluation].phases`).
    evaluation: Option<Box<eval::evaluation::Evaluation>>,
}

/// How the loop ended.
enum Ending {
    Completed,
    Interrupted(ShutdownSignal),
    /// The token or cost budget ran out: the current phase's checks ran, later phases did not.
    BudgetExhausted(String),
    /// A recovery rule stopped the session (`stop_session`, a fatal failure, an unanswered
    /// escalation): exit 3, the report says why.
    RecoveryStop(String),
}

/// How `Session::run` ended.
#[derive(Debug, Clone, Copy)]
pub struct SessionEnd {
    /// The exit code of this run (DESIGN.md).
    pub exit_code: i32,
    /// A `restore_checkpoint` rule rolled the session back: continue it (`megatest resume`).
    pub resume: bool,
}

/// A live session.
pub struct Session {
    prepared: Prepared,
    store: Store,
    clock: SessionClock,
    started_at: String,
    workspace: PathBuf,
    agents: Vec<AgentSlot>,
    board: Board,
    phases: Vec<PhaseRecord>,
    current_phase: Option<usize>,
    totals: LedgerTotals,
    errors: u64,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    proxy_root: String,
    /// The proxy's server task (ends once its connections have closed after shutdown).
    proxy_task: Option<tokio::task::JoinHandle<()>>,
    shutdown: Option<ShutdownSignal>,
    last_code_stats: Option<CodeStats>,
    /// Proposals agents raised (`proposals.rs`), in order.
    proposals: Vec<proposals::Proposal>,
    /// Review and gate votes in progress (`voting.rs`).
    votes: Vec<voting::OpenVote>,
    /// Something changed the agents' trust scores since dynamic spawning last looked
    /// (`spawning.rs`).
    trust_stale: bool,
    /// Each check's last result, for blame (`diffs.rs`).
    check_history: diffs::CheckHistory,
    /// Task snapshots for per-task diffs (`diffs.rs`).
    task_snapshots: diffs::TaskSnapshots,
    /// Task checks in flight (`confirming.rs`).
    task_checks: confirming::TaskChecks,
    /// The current phase's gate and follow-up work (`gating.rs`).
    gate: gating::GateState,
    /// Review tasks whose running reviewer voted through the API (their verdict lines then
    /// do not count).
    api_ballots: std::collections::HashSet<usize>,
    /// The end-of-session verification of the checkpoints, for the newest sequence it saw.
    checkpoint_audit: std::cell::RefCell<Option<(Option<u32>, crate::checkpoint::Audit)>>,
    /// Writes `metrics_current.json` and `metrics/metrics.jsonl` off the session task.
    metrics_writer: crate::fsutil::BackgroundWriter,
    /// The trust scores last recorded as a `trust_scores` event (the report's trust chart).
    trust_recorded: BTreeMap<String, f64>,
    budgets: Budgets,
    /// `ledger.spool`: the proxy appends each answered call, the session commits it.
    spool: Arc<LedgerSpool>,
    budget_exhaustion_logged: bool,
    /// Taken while a checkpoint runs off the session task (None for good only if it was lost).
    checkpointer: Option<crate::checkpoint::Checkpointer>,
    /// A checkpoint job runs; its result comes as [`Event::CheckpointTaken`].
    checkpoint_in_flight: bool,
    /// What asked for a checkpoint that has not been taken yet.
    checkpoint_due: Option<&'static str>,
    tool_calls_since_checkpoint: u64,
    tokens_since_checkpoint: u64,
    checkpoints_taken: u32,
    last_checkpoint: Option<crate::store::CheckpointRow>,
    prices: std::collections::BTreeMap<String, crate::config::raw::Price>,
    /// The recovery table's session state (see [`recover`]).
    recovery: recover::RecoveryState,
    /// The metrics sampler's last measurements, and whether a sample is being taken.
    last_sample: Option<crate::metrics::Sample>,
    sampling: bool,
    /// The newest evaluation (acceptance suite, coverage, …) of any phase end.
    evaluation: Option<Box<eval::evaluation::Evaluation>>,
    /// `POST /api/checkpoint` requests waiting for the next checkpoint.
    checkpoint_replies: Vec<tokio::sync::oneshot::Sender<crate::protocol::ControlReply>>,
    /// Of those, the ones the checkpoint in flight answers (asked before it started).
    checkpoint_replies_in_flight: Vec<tokio::sync::oneshot::Sender<crate::protocol::ControlReply>>,
    /// The control API (None until started).
    api: Option<crate::api::ApiHandle>,
    /// Pushes the session directory to S3 (`--sync`; None without).
    sync: Option<crate::backend::ecs::sync::SyncHandle>,
    /// Ends the control API: cancelled last, after the report, so event streams see the end.
    api_shutdown: CancellationToken,
    /// Requests with an unknown agent key: counted, sampled into `events`.
    rejections: rejections::Rejections,
    /// The periodic timers (from the first phase on).
    ticks: Option<ticks::Ticks>,
    /// What the session is doing (which ticks apply).
    mode: ticks::Mode,
}

impl Session {
    /// The session directory.
    pub fn dir(&self) -> &Path {
        &self.prepared.dir
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.prepared.session_id
    }

    /// The config file the session was started from (recorded in `session.db`).
    pub fn config_path(&self) -> Option<PathBuf> {
        self.store
            .session_origin()
            .ok()
            .and_then(|o| o.config_path)
            .map(PathBuf::from)
    }

    /// A sender for events from outside (signals).
    pub fn events(&self) -> mpsc::Sender<Event> {
        self.events_tx.clone()
    }

    /// Run the session to its end and return the exit code (DESIGN.md: 0, 1, 3, 130, 143).
    /// `final_report.json` and `status` are written on every path that returns.
    pub async fn run(mut self) -> Result<SessionEnd> {
        let proxy_shutdown = CancellationToken::new();
        let _events_watch = watch::watch_agent_events(
            &self.dir().join("agents"),
            spawning::agent_index,
            self.events_tx.clone(),
        );
        let outcome = match self.start_proxy(proxy_shutdown.clone()).await {
            Ok(()) => self.run_phases().await,
            Err(err) => Err(err),
        };
        let (status, exit_code, because) = match outcome {
            Ok(Ending::Interrupted(signal)) => (
                "interrupted",
                signal.exit_code(),
                format!("{} received: graceful stop", signal.name()),
            ),
            Ok(Ending::RecoveryStop(message)) => ("failed", 3, message),
            Ok(Ending::BudgetExhausted(message)) => {
                let all_met = crate::report::verdict::critical_hold(&self.critical_criteria());
                ("complete", if all_met { 0 } else { 1 }, message)
            }
            Ok(Ending::Completed) => {
                let all_met = crate::report::verdict::critical_hold(&self.critical_criteria());
                if all_met {
                    (
                        "complete",
                        0,
                        "all phases ran; every critical success criterion met".to_string(),
                    )
                } else {
                    (
                        "complete",
                        1,
                        "all phases ran; a critical success criterion failed".to_string(),
                    )
                }
            }
            Err(err) => {
                tracing::error!(message = "session aborted", error = %format!("{err:#}"));
                // Stop whatever still runs before reporting.
                self.stop_all_agents().await;
                ("failed", 3, format!("aborted: {err:#}"))
            }
        };
        // No watchdog or hang detection while the session ends; a checkpoint still in flight
        // finishes (or is recorded as failed) before the end is written.
        self.mode = ticks::Mode::Stopping;
        if status == "interrupted" && self.prepared.config.raw.checkpoint.enabled {
            if let Err(err) = self.checkpoint_now("shutdown").await {
                tracing::error!(message = "shutdown checkpoint failed", error = %format!("{err:#}"));
            }
        }
        if let Err(err) = self.settle_checkpoint().await {
            tracing::error!(message = "checkpoint failed at the session's end", error = %format!("{err:#}"));
        }
        proxy_shutdown.cancel();
        self.settle_proxy().await;
        if let Err(err) = self.spool.truncate_if_settled() {
            tracing::warn!(message = "cannot empty the ledger spool", error = %format!("{err:#}"));
        }
        if let Some(count) = self.rejections.flush(Instant::now()) {
            if let Err(err) = self.record_rejections(count) {
                tracing::warn!(message = "cannot record rejected requests", error = %format!("{err:#}"));
            }
        }
        if let Err(err) = self.close_recoveries() {
            tracing::error!(message = "cannot close the open recoveries", error = %format!("{err:#}"));
        }
        if let Err(err) = self.save_budgets() {
            tracing::error!(message = "cannot save the budget state", error = %format!("{err:#}"));
        }
        // Every end writes its report and its true status: a failed step is logged and the
        // rest still runs (the disk reserve was given back in `close_recoveries`).
        let report = self.final_report(status, exit_code, &because);
        let written = write_json_atomic(&self.dir().join("final_report.json"), &report);
        log_end_step("final_report.json", written);
        let summary = self.publish_reports(&report);
        let ended =
            self.store
                .end_session(self.id(), status, exit_code, &because, &report.ended_at);
        log_end_step("the sessions row", ended);
        self.write_metrics(status);
        self.metrics_writer.flush();
        let written = write_atomic(&self.dir().join("status"), format!("{status}\n").as_bytes());
        log_end_step("status", written);
        self.store.truncate_wal();
        let _ = self.event(
            "session_ended",
            None,
            None,
            None,
            // The figures of metrics_current.json: a live dashboard shows them as the last word.
            serde_json::json!({"status": status, "exit_code": exit_code, "because": because,
                "metrics": self.current_metrics(status)}),
        );
        let _ = self.notice(
            NotifyEvent::Complete,
            &format!(
                "session {} ended: {status}, exit {exit_code} ({because})",
                self.id()
            ),
            serde_json::json!({"status": status, "exit_code": exit_code, "because": because}),
        );
        self.flush_alerts().await;
        // The last push: everything the end wrote, within ECS's longest stop timeout.
        if let Some(sync) = &self.sync {
            if !sync.now(Duration::from_secs(100)).await {
                tracing::error!(message = "the last sync did not complete", url = %sync.url);
            }
        }
        self.api_shutdown.cancel();
        if let Some(api) = &self.api {
            api.drain(Duration::from_secs(2)).await;
        }
        tracing::info!(message = "session ended", status, exit_code, because = %because);
        if let Some(summary) = summary {
            crate::console::say(summary);
        }
        let resume = self.restore_after_stop()?;
        // What this run decided — a stop, a restore, a pause — ended with it: a resumed run
        // (after a restore, or by `megatest resume`) starts from the board, not from these.
        self.recovery.stop = None;
        self.recovery.restore = None;
        self.recovery.pause = None;
        if let Err(err) = self.save_recovery_state() {
            tracing::warn!(message = "cannot save the recovery state", error = %format!("{err:#}"));
        }
        Ok(SessionEnd { exit_code, resume })
    }

    fn handle(&mut self, event: Event) -> Result<()> {
        match event {
            Event::Authenticate { agent_key, reply } => {
                let context = self.call_context(&agent_key)?;
                let _ = reply.send(context);
            }
            Event::Admit {
                agent_key,
                tokens,
                reply,
            } => {
                let Some(context) = self.call_context(&agent_key)? else {
                    let _ = reply.send(None);
                    return Ok(());
                };
                let mut admission = self.reserve(context.agent_idx, tokens)?;
                self.agents[context.agent_idx].active = Instant::now();
                if let Admission::Granted {
                    corrective_note, ..
                } = &mut admission
                {
                    *corrective_note = self.recovery.corrective_due.remove(&context.agent_idx);
                    self.agents[context.agent_idx].calls_in_flight += 1;
                }
                let _ = reply.send(Some((context, admission)));
            }
            Event::ProxyError {
                agent_id,
                task_id,
                kind,
                attempt,
                model,
                message,
            } => {
                let detail = format!("{message} (model {model}, attempt {attempt})");
                self.record_error(&kind, Some(&agent_id), task_id.as_deref(), &detail)?;
            }
            Event::ModelCall { call, reservation } => self.model_call(call, reservation)?,
            Event::CheckpointRequest => {
                tracing::info!(message = "checkpoint requested (SIGUSR2)");
                self.checkpoint_due = Some("manual");
            }
            Event::CallRecovery(recovery) => self.call_recovery(*recovery)?,
            Event::AgentToolCalls { agent_idx, names } => {
                if let Some(agent) = self.agents.get_mut(agent_idx) {
                    agent.active = Instant::now();
                }
                self.agent_tool_calls(agent_idx, names, None)?;
            }
            Event::AgentEventsAppended { agent_idx } => {
                if agent_idx < self.agents.len() {
                    self.drain_events_file(agent_idx)?;
                }
            }
            Event::AgentRunEnded {
                agent_idx,
                task_idx,
                run_id,
                outcome,
            } => {
                self.run_ended(agent_idx, task_idx, run_id, outcome)?;
            }
            Event::Signal(signal) => {
                if self.shutdown.is_some() {
                    // A second signal: stop now.
                    let killed = self.prepared.agent_backend.kill_all();
                    tracing::warn!(
                        message = "second signal: killing all agent process groups now",
                        signal = signal.name(),
                        killed
                    );
                } else {
                    self.begin_shutdown(signal)?;
                }
            }
            Event::StatusRequest => self.write_status()?,
            Event::Reload => self.reload()?,
            Event::Api(request) => self.api(request)?,
            Event::Tick(tick) => self.on_tick(tick)?,
            Event::CheckFinished(_) | Event::EvaluationFinished(_) => {
                // Only a phase check's own wait expects it; a stray one (a check cancelled
                // after its wait ended) has nothing to change.
            }
            Event::Sampled(sample) => {
                self.sampling = false;
                self.last_code_stats = Some(sample.code.clone());
                self.last_sample = Some(*sample);
            }
            Event::TaskCheckFinished { job, task_idx, row } => {
                self.task_check_finished(job, task_idx, *row)?;
            }
            Event::CheckpointTaken(taken) => self.finish_checkpoint(*taken)?,
            Event::CheckpointVerified { seq, problem } => self.checkpoint_verified(seq, problem)?,
            Event::ProxyStopped => {
                // Only the end-of-session settle waits for it.
            }
        }
        Ok(())
    }

    fn record_error(
        &mut self,
        kind: &str,
        agent_id: Option<&str>,
        task_id: Option<&str>,
        message: &str,
    ) -> Result<()> {
        self.errors += 1;
        let phase = self
            .current_phase
            .map(|p| self.prepared.config.phases[p].name.clone());
        tracing::warn!(message = "error", error_kind = kind, agent = ?agent_id, task = ?task_id, detail = message);
        self.event(
            "error",
            agent_id,
            phase.as_deref(),
            task_id,
            serde_json::json!({"error_kind": kind, "message": message}),
        )?;
        Ok(())
    }

    fn event(
        &self,
        kind: &str,
        agent_id: Option<&str>,
        phase: Option<&str>,
        task_id: Option<&str>,
        data: serde_json::Value,
    ) -> Result<i64> {
        Ok(self.store.append_event(
            &now(),
            self.clock.session_secs(),
            kind,
            agent_id,
            phase,
            task_id,
            &data,
        )?)
    }

    fn task_counts(&self, phase_idx: Option<usize>) -> TaskCounts {
        self.board.counts(phase_idx)
    }
}

impl Session {
    /// Replace the `status` file with `word`: atomic for readers, without fsyncs (cheap on
    /// the session task; `session.db` holds the truth, and the end of the session writes its
    /// final word durably).
    pub(super) fn set_status_file(&self, word: &str) {
        let path = self.dir().join("status");
        if let Err(err) = crate::fsutil::replace_file(&path, format!("{word}\n").as_bytes()) {
            tracing::warn!(message = "cannot write the status file", error = %format!("{err:#}"));
        }
    }
}

/// Log a failed step of the session's end; the end goes on (see [`Session::run`]).
pub(super) fn log_end_step<E: Into<anyhow::Error>>(what: &str, result: Result<(), E>) {
    if let Err(err) = result.map_err(Into::into) {
        tracing::error!(message = "cannot write at the session's end", what, error = %format!("{err:#}"));
        crate::console::say(format_args!(
            "megatest: cannot write {what} at the session's end: {err:#}"
        ));
    }
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
