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

mod control;
mod recover;
pub mod rejections;
mod watch;

use crate::agent::{self, CommandVars};
use crate::backend::local::{self, LaunchSpec, RunEnd, RunOutcome};
use crate::budget::{self, Admission, BudgetSignal, Budgets};
use crate::clock::SessionClock;
use crate::config::raw::{AgentKind, NotifyEvent, Provider, RecoveryAction, Severity};
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
    pub config: Config,
    pub provider: Provider,
    pub spec: ProjectSpec,
    /// Taken by [`Session::run`] when it starts the proxy.
    pub backend: Option<Backend>,
    /// How reports label the model.
    pub model_label: String,
    pub session_id: String,
    pub dir: PathBuf,
    pub command_template: Option<String>,
    /// The overrides the config was loaded with (recorded for `megatest resume`).
    pub overrides: crate::config::Overrides,
    /// The control API's socket, bound before anything is written (taken by `Session::run`).
    pub api_listener: Option<std::net::TcpListener>,
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
    let api = &config.raw.api;
    let api_listener =
        Some(crate::api::bind(&api.address, api.allow_non_loopback).map_err(PrepareError)?);
    Ok(Prepared {
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
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Pending,
    Running,
    Done,
    Failed,
}

impl TaskState {
    fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }
}

struct Task {
    spec: TaskSpec,
    phase_idx: usize,
    state: TaskState,
    attempts: u32,
    agent_id: Option<String>,
    claimed_session_secs: Option<f64>,
    finished_session_secs: Option<f64>,
    last_error: Option<String>,
    /// `restart_agent` / `compress_and_retry`: only this agent runs it next.
    reserved_for: Option<usize>,
    /// `reassign`: another agent than this one, when there is one.
    avoid: Option<usize>,
    /// Session second before which the task is not started again (recovery backoff).
    not_before: f64,
    /// `compress_and_retry`: the handoff summary for the next run's prompt.
    handoff: Option<String>,
    /// Held by an open escalation.
    held: bool,
}

struct Running {
    task_idx: usize,
    attempt: u32,
    stop: CancellationToken,
    /// Process group of the run (its leader's pid).
    pgid: u32,
    /// Set when megatest stops the run for a recovery (hang, compress and retry).
    ended_by: Option<(FailureKind, RecoveryAction, String)>,
    /// The cgroup's OOM-kill count when the run started.
    oom_kills_at_start: Option<u64>,
    /// The agent reported the task done (`POST /api/agent/task_done`).
    done_claimed: bool,
}

struct AgentSlot {
    id: String,
    role: String,
    key: String,
    dir: PathBuf,
    running: Option<Running>,
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
    tasks: Vec<Task>,
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
    /// Writes `metrics_current.json` and `metrics/metrics.jsonl` off the session task.
    metrics_writer: crate::fsutil::BackgroundWriter,
    budgets: Budgets,
    /// `ledger.spool`: the proxy appends each answered call, the session commits it.
    spool: Arc<LedgerSpool>,
    budget_exhaustion_logged: bool,
    /// Taken while a snapshot runs off the session task.
    checkpointer: Option<crate::checkpoint::Checkpointer>,
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
    /// From the spec's coverage command at the last phase end.
    coverage: Option<Figure<f64>>,
    /// `POST /api/checkpoint` requests waiting for the next checkpoint.
    checkpoint_replies: Vec<tokio::sync::oneshot::Sender<crate::protocol::ControlReply>>,
    /// The control API (None until started).
    api: Option<crate::api::ApiHandle>,
    /// Ends the control API: cancelled last, after the report, so event streams see the end.
    api_shutdown: CancellationToken,
    /// Requests with an unknown agent key: counted, sampled into `events`.
    rejections: rejections::Rejections,
}

impl Session {
    /// Create the session directory and its files (`config.json`, `agents.toml`, `status`,
    /// `session.db` with the plan). Errors leave what was created for inspection.
    pub fn create(prepared: Prepared) -> Result<Session> {
        let dir = prepared.dir.clone();
        std::fs::create_dir_all(dir.join("project"))
            .with_context(|| format!("create session directory {}", dir.display()))?;
        for sub in ["metrics", "checkpoints", "agents"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        write_json_atomic(&dir.join("config.json"), &prepared.config.redacted_json())?;
        write_atomic(&dir.join("status"), b"running\n")?;
        let store = Store::open(&dir.join("session.db"))?;
        let clock = SessionClock::start(prepared.config.time_scale);
        let started_at = now();
        let config = &prepared.config;
        store.insert_session(
            &prepared.session_id,
            &config.raw.session.project_type,
            prepared.provider.as_str(),
            &config.model_name(),
            config.time_scale,
            &started_at,
        )?;
        let mut agents = Vec::new();
        for (idx, role) in config.agent_roles.iter().enumerate() {
            let id = format!("agent-{}", idx + 1);
            let key = format!(
                "mt-{id}-{:016x}{:016x}",
                fastrand::u64(..),
                fastrand::u64(..)
            );
            let agent_dir = dir.join("agents").join(&id);
            std::fs::create_dir_all(agent_dir.join("prompts"))?;
            let kind = match config.raw.agents.kind {
                AgentKind::Builtin => "builtin",
                AgentKind::Command => "command",
            };
            store.insert_agent(&id, idx, role, kind)?;
            agents.push(AgentSlot {
                id,
                role: role.clone(),
                key,
                dir: agent_dir,
                running: None,
                runs: 0,
                tasks_done: 0,
                failed_runs: 0,
                events_offset: 0,
                last_activity: None,
                active: Instant::now(),
                log_len: 0,
                calls_in_flight: 0,
            });
        }
        let mut tasks = Vec::new();
        for (phase_idx, phase) in config.phases.iter().enumerate() {
            store.insert_phase(phase_idx, &phase.name, phase.session_secs)?;
            for task in prepared.spec.tasks_of(&phase.name) {
                store.insert_task(&task.id, &phase.name, &task.role, &task.title)?;
                tasks.push(Task {
                    spec: task.clone(),
                    phase_idx,
                    state: TaskState::Pending,
                    attempts: 0,
                    agent_id: None,
                    claimed_session_secs: None,
                    finished_session_secs: None,
                    last_error: None,
                    reserved_for: None,
                    avoid: None,
                    not_before: 0.0,
                    handoff: None,
                    held: false,
                });
            }
        }
        let phases = config
            .phases
            .iter()
            .map(|_| PhaseRecord {
                started: None,
                ended: None,
                ended_because: None,
                checks: Vec::new(),
            })
            .collect();
        store.set_session_origin(
            &prepared.session_id,
            &prepared
                .config
                .path
                .canonicalize()
                .unwrap_or(prepared.config.path.clone())
                .display()
                .to_string(),
            &serde_json::to_value(&prepared.overrides)?,
            std::process::id(),
        )?;
        Session::assemble(prepared, store, clock, started_at, agents, tasks, phases)
    }

    /// The rest of a session around its state: channels, budgets, prices, checkpointer.
    fn assemble(
        prepared: Prepared,
        store: Store,
        clock: SessionClock,
        started_at: String,
        agents: Vec<AgentSlot>,
        tasks: Vec<Task>,
        phases: Vec<PhaseRecord>,
    ) -> Result<Session> {
        let config = &prepared.config;
        let dir = prepared.dir.clone();
        let (events_tx, events_rx) = mpsc::channel(1024);
        let metrics_writer = crate::fsutil::BackgroundWriter::start("metrics-writer")?;

        let budgets = Budgets::new(
            &config.raw.limits,
            config.raw.model.max_cost_usd,
            agents.len(),
        );
        let prices = budget::price_table(&config.raw.model.prices);
        let checkpointer = crate::checkpoint::Checkpointer::open(&dir.join("checkpoints"))?;
        let spool = Arc::new(LedgerSpool::open(&dir)?);
        let (recovery, _) = recover::RecoveryState::new(config, &dir.join("project"), &dir)?;
        Ok(Session {
            recovery,
            checkpoint_replies: Vec::new(),
            last_sample: None,
            sampling: false,
            coverage: None,
            api: None,
            api_shutdown: CancellationToken::new(),
            rejections: rejections::Rejections::default(),
            budgets,
            spool,
            budget_exhaustion_logged: false,
            checkpointer: Some(checkpointer),
            checkpoint_due: None,
            tool_calls_since_checkpoint: 0,
            tokens_since_checkpoint: 0,
            checkpoints_taken: 0,
            last_checkpoint: None,
            prices,
            workspace: dir.join("project"),
            prepared,
            store,
            clock,
            started_at,
            agents,
            tasks,
            phases,
            current_phase: None,
            totals: LedgerTotals::default(),
            errors: 0,
            events_tx,
            events_rx,
            proxy_root: String::new(),
            proxy_task: None,
            shutdown: None,
            last_code_stats: None,
            metrics_writer,
        })
    }

    /// Rebuild a session from its `session.db` after its daemon died (`megatest resume`): tasks
    /// that were in flight go back to the board, counters, budgets and the ledger continue, the
    /// session clock continues from the last recorded session time (downtime is not session
    /// time), agents get new keys. Leftover agent processes must have been stopped before.
    pub fn reopen(prepared: Prepared) -> Result<(Session, f64)> {
        let dir = prepared.dir.clone();
        let store = Store::open(&dir.join("session.db"))?;
        let config = &prepared.config;
        let offset = store.last_session_secs()?;
        let last_event_at = store.last_event_at()?;
        let downtime_wall_secs = last_event_at
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| {
                (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_milliseconds() as f64
                    / 1000.0
            })
            .unwrap_or(0.0);
        let started_at = store.started_at()?.unwrap_or_else(now);
        let clock = SessionClock::resume(config.time_scale, offset);
        let run_counts = store.agent_run_counts()?;
        let mut agents = Vec::new();
        for crate::store::AgentRecord {
            id,
            role,
            events_offset,
        } in store.agents()?
        {
            let (runs, tasks_done, failed_runs) = run_counts.get(&id).copied().unwrap_or_default();
            store.set_agent_status(&id, "idle")?;
            agents.push(AgentSlot {
                key: format!(
                    "mt-{id}-{:016x}{:016x}",
                    fastrand::u64(..),
                    fastrand::u64(..)
                ),
                dir: dir.join("agents").join(&id),
                id,
                role,
                running: None,
                runs,
                tasks_done,
                failed_runs,
                events_offset,
                last_activity: None,
                active: Instant::now(),
                log_len: 0,
                calls_in_flight: 0,
            });
        }
        let recorded: std::collections::HashMap<String, crate::store::TaskRecord> = store
            .tasks()?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let mut tasks = Vec::new();
        for (phase_idx, phase) in config.phases.iter().enumerate() {
            for spec in prepared.spec.tasks_of(&phase.name) {
                let crate::store::TaskRecord {
                    state,
                    attempts,
                    agent_id,
                    claimed_session_secs: claimed,
                    finished_session_secs: finished,
                    last_error,
                    ..
                } = recorded.get(&spec.id).cloned().with_context(|| {
                    format!("task {} of the spec is not in session.db", spec.id)
                })?;
                let state = match state.as_str() {
                    "done" => TaskState::Done,
                    "failed" => TaskState::Failed,
                    _ => TaskState::Pending,
                };
                tasks.push(Task {
                    spec: spec.clone(),
                    phase_idx,
                    state,
                    attempts,
                    agent_id,
                    claimed_session_secs: claimed,
                    finished_session_secs: finished,
                    last_error,
                    reserved_for: None,
                    avoid: None,
                    not_before: 0.0,
                    handoff: None,
                    held: false,
                });
            }
        }
        let mut checks: std::collections::HashMap<String, Vec<CheckRow>> =
            std::collections::HashMap::new();
        for row in store.checks()? {
            checks.entry(row.phase.clone()).or_default().push(row);
        }
        let phase_rows = store.phase_records()?;
        let phases = config
            .phases
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let row = phase_rows.get(i).cloned().unwrap_or_default();
                PhaseRecord {
                    started: row.started_session_secs.zip(row.started_wall_secs),
                    ended: row.ended_session_secs.zip(row.ended_wall_secs),
                    ended_because: row.ended_because,
                    checks: checks.remove(&plan.name).unwrap_or_default(),
                }
            })
            .collect();
        let mut session =
            Session::assemble(prepared, store, clock, started_at, agents, tasks, phases)?;
        for task_idx in 0..session.tasks.len() {
            session.sync_task(task_idx)?;
        }
        match session.store.budget_state()? {
            Some(state) => {
                let mut budgets: Budgets = serde_json::from_value(state)?;
                budgets.reservations.clear();
                budgets.reserved_tokens = 0;
                session.budgets = budgets;
            }
            // Died before the first save: every ledger row is to be counted.
            None => session.budgets.ledger_seq = Some(0),
        }
        session.replay_ledger_into_budgets()?;
        session.import_spool()?;
        session.totals = session.store.ledger_totals(None)?;
        session.errors = session.store.error_counts()?.values().sum();
        let checkpoints = session.store.checkpoints()?;
        session.checkpoints_taken = checkpoints.len() as u32;
        session.last_checkpoint = checkpoints.last().cloned();
        let id = session.prepared.session_id.clone();
        let origin_path = session
            .prepared
            .config
            .path
            .canonicalize()
            .unwrap_or(session.prepared.config.path.clone());
        session.store.set_session_origin(
            &id,
            &origin_path.display().to_string(),
            &serde_json::to_value(&session.prepared.overrides)?,
            std::process::id(),
        )?;
        write_atomic(&session.dir().join("status"), b"running\n")?;
        session.event(
            "session_resumed",
            None,
            None,
            None,
            serde_json::json!({"session_secs": offset, "downtime_wall_secs": downtime_wall_secs}),
        )?;
        let mut session = session;
        session.chaos_fired_before()?;
        Ok((session, downtime_wall_secs))
    }

    pub fn dir(&self) -> &Path {
        &self.prepared.dir
    }

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
        let ids = self
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let _events_watch =
            watch::watch_agent_events(&self.dir().join("agents"), ids, self.events_tx.clone());
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
                let all_met = self.critical_criteria().iter().all(|c| c.met == Some(true));
                ("complete", if all_met { 0 } else { 1 }, message)
            }
            Ok(Ending::Completed) => {
                let all_met = self.critical_criteria().iter().all(|c| c.met == Some(true));
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
        if status == "interrupted" && self.prepared.config.raw.checkpoint.enabled {
            if let Err(err) = self.take_checkpoint("shutdown").await {
                tracing::error!(message = "shutdown checkpoint failed", error = %format!("{err:#}"));
            }
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
            serde_json::json!({"status": status, "exit_code": exit_code, "because": because}),
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
        self.api_shutdown.cancel();
        if let Some(api) = &self.api {
            api.drain(Duration::from_secs(2)).await;
        }
        tracing::info!(message = "session ended", status, exit_code, because = %because);
        let resume = self.restore_after_stop()?;
        Ok(SessionEnd { exit_code, resume })
    }

    /// Resume: count into the budgets the ledger rows committed after the saved budget state
    /// (it is saved on the metrics tick, not with every row), then save it.
    fn replay_ledger_into_budgets(&mut self) -> Result<()> {
        let after = match self.budgets.ledger_seq {
            Some(seq) => seq,
            // A state from before `ledger_seq` was saved with every row: it counts them all.
            None => self.store.last_ledger_seq()?,
        };
        let rows = self.store.ledger_rows_after(after)?;
        let replayed = rows.len();
        for (seq, secs, agent_id, tokens, tool_calls, cost) in rows {
            let agent_idx = self.agents.iter().position(|a| a.id == agent_id);
            self.budgets
                .replay(agent_idx, tokens, tool_calls, cost, secs);
            self.budgets.ledger_seq = Some(seq);
        }
        if self.budgets.ledger_seq.is_none() {
            self.budgets.ledger_seq = Some(after);
        }
        if replayed > 0 {
            tracing::info!(
                message = "budget state caught up with the ledger",
                rows = replayed
            );
        }
        self.save_budgets()
    }

    /// Resume: commit the calls `ledger.spool` holds that the ledger lacks (answered just
    /// before the daemon died, their commit not done), counting them into the budgets; then
    /// empty the spool. Logs `ledger_spool_imported` when there was anything to import.
    fn import_spool(&mut self) -> Result<()> {
        let (calls, torn) = crate::store::spool::read(self.dir())?;
        let known = self.store.ledger_call_ids()?;
        let mut imported = 0u64;
        for call in calls {
            if known.contains(&call.row.call_id) {
                continue;
            }
            let mut row = call.row;
            row.cost_usd = budget::row_cost_usd(&self.prices, &row);
            let actual = row.prompt_tokens + row.completion_tokens;
            let tool_calls = row.tool_names.len() as u64;
            let agent_idx = self.agents.iter().position(|a| a.id == row.agent_id);
            let seq = self
                .store
                .record_model_call(&call.at, call.session_secs, &row)?;
            self.budgets.replay(
                agent_idx,
                actual,
                tool_calls,
                row.cost_usd,
                call.session_secs,
            );
            self.budgets.ledger_seq = Some(seq);
            imported += 1;
        }
        if imported > 0 {
            self.save_budgets()?;
        }
        if imported > 0 || torn > 0 {
            tracing::warn!(
                message = "ledger spool imported: calls answered before the daemon stopped",
                imported,
                torn_lines = torn
            );
            self.event(
                "ledger_spool_imported",
                None,
                None,
                None,
                serde_json::json!({"imported": imported, "torn_lines": torn}),
            )?;
        }
        self.spool.truncate_if_settled()?;
        Ok(())
    }

    /// After the proxy's shutdown: let calls still in flight finish (at most
    /// [`PROXY_SETTLE`] wall time) and count every model call the proxy handed over, so that
    /// the report's totals hold every ledger row. Only ledger events are handled now; requests
    /// for admission are dropped (the proxy answers 503, the session is ending).
    async fn settle_proxy(&mut self) {
        let Some(mut task) = self.proxy_task.take() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + PROXY_SETTLE;
        let mut finished = false;
        loop {
            let event = if finished {
                match self.events_rx.try_recv() {
                    Ok(event) => event,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    _ = &mut task => { finished = true; continue; }
                    _ = tokio::time::sleep_until(deadline) => {
                        tracing::warn!(message = "model calls still in flight at the end of the session; not waiting for them");
                        finished = true;
                        continue;
                    }
                    event = self.events_rx.recv() => match event {
                        Some(event) => event,
                        None => break,
                    },
                }
            };
            let handled = match event {
                event @ (Event::ModelCall { .. }
                | Event::ProxyError { .. }
                | Event::AgentToolCalls { .. }) => self.handle(event),
                _ => Ok(()),
            };
            if let Err(err) = handled {
                tracing::error!(message = "cannot record a model call at the end of the session", error = %format!("{err:#}"));
            }
        }
    }

    async fn start_proxy(&mut self, shutdown: CancellationToken) -> Result<()> {
        let config = &self.prepared.config;
        let settings = ProxySettings {
            served_name: config.model_name(),
            max_context_size: config.raw.limits.max_context_size,
            default_max_tokens: config.raw.model.default_max_tokens,
            policy: proxy::upstream::RetryPolicy::from_config(&config.raw.model),
            faults: config.raw.model.faults.clone(),
            chaos: config
                .raw
                .chaos
                .enabled
                .then(|| config.raw.chaos.upstream.clone()),
            recovery: self.recovery.table.clone(),
            paused: self.recovery.paused_tx.subscribe(),
        };
        let backend = self
            .prepared
            .backend
            .take()
            .context("the proxy was already started")?;
        let proxy = proxy::start(
            self.events_tx.clone(),
            backend,
            settings,
            self.clock,
            self.spool.clone(),
            shutdown.clone(),
        )
        .await
        .context("start the model endpoint on 127.0.0.1")?;
        self.proxy_root = proxy.root_url();
        self.proxy_task = Some(proxy.task);
        tracing::info!(message = "model endpoint listening", url = %self.proxy_root, provider = self.prepared.provider.as_str());
        self.write_agents_toml()?;
        if let Some(listener) = self.prepared.api_listener.take() {
            let token = crate::api::new_token();
            let api = crate::api::serve(
                listener,
                self.events_tx.clone(),
                token.clone(),
                self.dir().join("session.db"),
                self.api_shutdown.clone(),
            )?;
            let addr = api.addr;
            write_private(
                &self.dir().join("api.token"),
                format!("{token}\n").as_bytes(),
            )?;
            write_atomic(&self.dir().join("api.addr"), format!("{addr}\n").as_bytes())?;
            self.api = Some(api);
            tracing::info!(message = "control API listening", addr = %addr);
            crate::console::say(format_args!(
                "megatest: control API on http://{addr} (token in {})",
                self.dir().join("api.token").display()
            ));
        }
        self.event(
            "session_started",
            None,
            None,
            None,
            serde_json::json!({"proxy": self.proxy_root, "api": self.api.as_ref().map(|a| a.addr.to_string()), "model": self.prepared.config.model_name(),
                               "provider": self.prepared.provider.as_str(), "time_scale": self.clock.time_scale()}),
        )?;
        Ok(())
    }

    /// `agents.toml`: what each agent CLI is handed (mode 0600: it holds per-agent keys), and
    /// per-agent `selfware.toml` for the selfware preset.
    fn write_agents_toml(&self) -> Result<()> {
        let model = self.prepared.config.model_name();
        let base_url = format!("{}/v1", self.proxy_root);
        let mut out = String::from("# Per-agent settings handed to agent CLIs. The keys are megatest per-agent keys, not provider keys.\n");
        for agent in &self.agents {
            out.push_str(&format!(
                "\n[[agent]]\nid = {:?}\nrole = {:?}\nbase_url = {:?}\nmodel = {:?}\napi_key = {:?}\n",
                agent.id, agent.role, base_url, model, agent.key
            ));
            let selfware = format!(
                "endpoint = {base_url:?}\nmodel = {model:?}\napi_key = {:?}\n",
                agent.key
            );
            write_private(&agent.dir.join("selfware.toml"), selfware.as_bytes())?;
        }
        write_private(&self.dir().join("agents.toml"), out.as_bytes())
    }

    async fn run_phases(&mut self) -> Result<Ending> {
        let metrics_every = self
            .clock
            .wall(self.prepared.config.raw.monitoring.health_check_interval)
            .max(MIN_METRICS_INTERVAL);
        let mut metrics_tick = tokio::time::interval(metrics_every);
        let checkpoint_every = self
            .clock
            .wall(self.prepared.config.raw.checkpoint.interval_minutes * 60.0);
        let mut checkpoint_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + checkpoint_every,
            checkpoint_every,
        );
        checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let export_every = self
            .clock
            .wall(self.prepared.config.raw.monitoring.metrics_export_interval)
            .max(MIN_METRICS_INTERVAL);
        let mut export_tick = tokio::time::interval(export_every);
        export_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watchdog_tick =
            tokio::time::interval(recover::watchdog_period(&self.prepared.config));
        watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for phase_idx in 0..self.prepared.config.phases.len() {
            let plan = self.prepared.config.phases[phase_idx].clone();
            if self.phases[phase_idx].ended.is_some() {
                continue; // a resumed session: this phase ended before the crash
            }
            self.current_phase = Some(phase_idx);
            let started = match self.phases[phase_idx].started {
                Some(started) => started,
                None => {
                    let started = (self.clock.session_secs(), self.clock.wall_secs());
                    self.phases[phase_idx].started = Some(started);
                    self.store.start_phase(phase_idx, started.0, started.1)?;
                    started
                }
            };
            self.event(
                "phase_started",
                None,
                Some(&plan.name),
                None,
                serde_json::json!({"planned_session_secs": plan.session_secs}),
            )?;
            tracing::info!(message = "phase started", phase = %plan.name, planned_session_secs = plan.session_secs);
            // The time box counts from the phase's recorded start (earlier, in a resumed session).
            let deadline = tokio::time::Instant::from_std(
                self.clock.instant_at(started.0 + plan.session_secs),
            );
            let because = loop {
                if self.shutdown.is_some() {
                    break "interrupted";
                }
                if self.budgets.exhausted.is_some() {
                    break "budget_exhausted";
                }
                if self.recovery.stop.is_some() {
                    break "recovery_stop";
                }
                if self.recovery.pause.is_none() && self.checkpoint_due.is_some() {
                    // A new checkpoint must not hide a corrupt latest one.
                    let verified = self.verify_latest_checkpoint();
                    self.recoverable(verified)?;
                    if self.recovery.stop.is_some() {
                        continue;
                    }
                    if let Some(trigger) = self.checkpoint_due.take() {
                        let taken = self.take_checkpoint(trigger).await;
                        self.answer_checkpoint_requests(
                            taken.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")),
                        );
                        self.recoverable(taken)?;
                    }
                }
                self.schedule(phase_idx)?;
                if self.phase_tasks_settled(phase_idx) {
                    break "tasks_done";
                }
                let wakeup = self.next_not_before(phase_idx);
                tokio::select! {
                    event = self.events_rx.recv() => {
                        if let Some(event) = event {
                            if matches!(event, Event::ModelCall { .. }) {
                                // Let the proxy put the answer on the wire before this commit.
                                tokio::task::yield_now().await;
                            }
                            let handled = self.handle(event);
                            self.recoverable(handled)?;
                        }
                    }
                    _ = tokio::time::sleep_until(wakeup) => {}
                    _ = export_tick.tick() => {
                        self.write_metrics(self.status_word());
                    }
                    _ = watchdog_tick.tick() => {
                        let checked = self.watchdog();
                        self.recoverable(checked)?;
                    }
                    _ = tokio::time::sleep_until(deadline) => break "time_up",
                    _ = checkpoint_tick.tick() => {
                        if self.prepared.config.raw.checkpoint.enabled {
                            self.checkpoint_due.get_or_insert("interval");
                        }
                    }
                    _ = metrics_tick.tick() => {
                        for agent_idx in 0..self.agents.len() {
                            self.drain_events_file(agent_idx)?;
                        }
                        let saved = self.save_budgets();
                        self.recoverable(saved)?;
                        if let Err(err) = self.spool.truncate_if_settled() {
                            tracing::warn!(message = "cannot empty the ledger spool", error = %format!("{err:#}"));
                        }
                        self.store.checkpoint_wal();
                        self.start_sample();
                        let verified = self.verify_latest_checkpoint();
                        self.recoverable(verified)?;
                        let memory = self.check_memory();
                        self.recoverable(memory)?;
                    }
                }
            };
            if because == "recovery_stop" {
                self.stop_all_agents().await;
                self.end_phase(phase_idx, because)?;
                let message = self.recovery.stop.clone().unwrap_or_default();
                return Ok(Ending::RecoveryStop(message));
            }
            self.stop_all_agents().await;
            if let Some(signal) = self.shutdown {
                self.end_phase(phase_idx, "interrupted")?;
                return Ok(Ending::Interrupted(signal));
            }
            self.run_checks(phase_idx).await?;
            if let Some(signal) = self.shutdown {
                self.end_phase(phase_idx, "interrupted")?;
                return Ok(Ending::Interrupted(signal));
            }
            self.end_phase(phase_idx, because)?;
            if self.prepared.config.raw.checkpoint.enabled || self.checkpoint_due.is_some() {
                let trigger = if self.prepared.config.raw.checkpoint.enabled {
                    "phase_end"
                } else {
                    "manual"
                };
                self.checkpoint_due = None;
                let taken = self.take_checkpoint(trigger).await;
                self.recoverable(taken)?;
            }
            let tasks = self.task_counts(Some(phase_idx));
            self.notice(
                NotifyEvent::PhaseComplete,
                &format!(
                    "phase {} ended ({because}): {} of {} tasks done",
                    plan.name, tasks.done, tasks.total
                ),
                serde_json::json!({"phase": plan.name, "because": because, "tasks": tasks}),
            )?;
            if let Some(message) = self.recovery.stop.clone() {
                return Ok(Ending::RecoveryStop(message));
            }
            if let Some(message) = self.budgets.exhausted.clone() {
                return Ok(Ending::BudgetExhausted(message));
            }
        }
        self.current_phase = None;
        Ok(Ending::Completed)
    }

    fn end_phase(&mut self, phase_idx: usize, because: &str) -> Result<()> {
        let ended = (self.clock.session_secs(), self.clock.wall_secs());
        let record = &mut self.phases[phase_idx];
        record.ended = Some(ended);
        record.ended_because = Some(because.to_string());
        self.store.end_phase(phase_idx, ended.0, ended.1, because)?;
        let name = self.prepared.config.phases[phase_idx].name.clone();
        let counts = self.task_counts(Some(phase_idx));
        self.event(
            "phase_completed",
            None,
            Some(&name),
            None,
            serde_json::json!({"because": because, "tasks": counts}),
        )?;
        tracing::info!(message = "phase ended", phase = %name, because, done = counts.done, failed = counts.failed, pending = counts.pending);
        Ok(())
    }

    /// True when no task of the phase is pending or running.
    fn phase_tasks_settled(&self, phase_idx: usize) -> bool {
        self.tasks
            .iter()
            .filter(|t| t.phase_idx == phase_idx)
            .all(|t| matches!(t.state, TaskState::Done | TaskState::Failed))
    }

    /// A step of the loop failed: a full disk (ENOSPC, SQLITE_FULL) or a permission failure
    /// goes to the recovery table; anything else ends the session as before.
    fn recoverable(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(err) if recover::is_disk_full(&err) => self.disk_full_error(&err),
            Err(err) if recover::is_permission_denied(&err) => self.failure(
                FailureKind::PermissionDenied,
                None,
                None,
                &format!("{err:#}"),
            ),
            Err(err) => Err(err),
        }
    }

    /// When the earliest task of the phase held back by a recovery backoff may start (far in
    /// the future when none is).
    fn next_not_before(&self, phase_idx: usize) -> tokio::time::Instant {
        let now = self.clock.session_secs();
        let earliest = self
            .tasks
            .iter()
            .filter(|t| {
                t.phase_idx == phase_idx && t.state == TaskState::Pending && t.not_before > now
            })
            .map(|t| t.not_before)
            .fold(f64::INFINITY, f64::min);
        if earliest.is_finite() {
            tokio::time::Instant::from_std(self.clock.instant_at(earliest))
        } else {
            tokio::time::Instant::now() + Duration::from_secs(86_400)
        }
    }

    /// Hand claimable tasks of the phase to idle agents, up to the concurrency limit. A task
    /// goes to an agent of its role; when no agent has that role, to any agent. A pending task
    /// whose dependency failed can never run: it fails too (`last_error` names the dependency).
    fn schedule(&mut self, phase_idx: usize) -> Result<()> {
        self.fail_blocked_tasks(phase_idx)?;
        if self.recovery.pause.is_some() || self.recovery.stop.is_some() {
            return Ok(());
        }
        loop {
            let running = self.agents.iter().filter(|a| a.running.is_some()).count();
            if running >= self.prepared.config.concurrency {
                return Ok(());
            }
            let Some((agent_idx, task_idx)) = self.next_assignment(phase_idx) else {
                return Ok(());
            };
            self.start_run(agent_idx, task_idx)?;
        }
    }

    fn fail_blocked_tasks(&mut self, phase_idx: usize) -> Result<()> {
        loop {
            let failed = |id: &str| {
                self.tasks
                    .iter()
                    .any(|t| t.spec.id == id && t.state == TaskState::Failed)
            };
            let blocked = self.tasks.iter().position(|t| {
                t.phase_idx == phase_idx
                    && t.state == TaskState::Pending
                    && t.spec.after.iter().any(|d| failed(d))
            });
            let Some(task_idx) = blocked else {
                return Ok(());
            };
            let dependency = self.tasks[task_idx]
                .spec
                .after
                .iter()
                .find(|d| failed(d))
                .cloned()
                .unwrap_or_default();
            let now = self.clock.session_secs();
            let task = &mut self.tasks[task_idx];
            task.state = TaskState::Failed;
            task.finished_session_secs = Some(now);
            task.last_error = Some(format!("not started: its dependency {dependency} failed"));
            let task_id = task.spec.id.clone();
            self.sync_task(task_idx)?;
            self.event(
                "task_blocked",
                None,
                None,
                Some(&task_id),
                serde_json::json!({"dependency": dependency}),
            )?;
        }
    }

    fn next_assignment(&self, phase_idx: usize) -> Option<(usize, usize)> {
        let done = |id: &str| {
            self.tasks
                .iter()
                .any(|t| t.spec.id == id && t.state == TaskState::Done)
        };
        let now = self.clock.session_secs();
        let claimable = self.tasks.iter().enumerate().filter(|(_, t)| {
            t.phase_idx == phase_idx
                && t.state == TaskState::Pending
                && !t.held
                && t.not_before <= now
                && t.spec.after.iter().all(|d| done(d))
        });
        for (task_idx, task) in claimable {
            let role_exists = self.agents.iter().any(|a| a.role == task.spec.role);
            let idle = self
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| a.running.is_none());
            // Prefer an agent other than the one whose last run of this task failed, unless a
            // recovery reserved the task for its agent (restart_agent, compress_and_retry).
            let mut candidates: Vec<usize> = idle
                .filter(|(_, a)| !role_exists || a.role == task.spec.role)
                .map(|(i, _)| i)
                .filter(|&i| task.reserved_for.is_none_or(|r| r == i))
                .collect();
            if let Some(last) = &task.agent_id {
                candidates.sort_by_key(|&i| self.agents[i].id == *last || task.avoid == Some(i));
            }
            if let Some(&agent_idx) = candidates.first() {
                return Some((agent_idx, task_idx));
            }
        }
        None
    }

    fn start_run(&mut self, agent_idx: usize, task_idx: usize) -> Result<()> {
        let session_secs = self.clock.session_secs();
        let config = &self.prepared.config;
        let phase = &config.phases[self.tasks[task_idx].phase_idx];
        let task = &mut self.tasks[task_idx];
        task.attempts += 1;
        task.state = TaskState::Running;
        task.agent_id = Some(self.agents[agent_idx].id.clone());
        task.claimed_session_secs = Some(session_secs);
        task.reserved_for = None;
        task.avoid = None;
        let handoff = task.handoff.take();
        let attempt = task.attempts;
        let agent = &self.agents[agent_idx];
        let prompt_file = agent
            .dir
            .join("prompts")
            .join(format!("{}.{attempt}.md", task.spec.id));
        let mut prompt = compose_prompt(
            &self.prepared.spec,
            phase,
            &agent.role,
            &task.spec,
            attempt,
            task.last_error.as_deref(),
        );
        if let Some(handoff) = handoff {
            prompt.push('\n');
            prompt.push_str(&handoff);
        }
        std::fs::write(&prompt_file, prompt)?;
        let model = config.model_name();
        let mut env = agent::inherited_env();
        env.extend(
            config
                .raw
                .agents
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let events_file = agent
            .dir
            .join("events.jsonl")
            .to_string_lossy()
            .into_owned();
        env.extend(agent::agent_env(
            &self.proxy_root,
            &agent.key,
            &model,
            &agent.id,
            &agent.role,
            &task.spec.id,
            &events_file,
        ));
        let workspace = self.workspace.to_string_lossy().into_owned();
        let (program, args) = match &self.prepared.command_template {
            // The running binary itself, even after it was rebuilt or replaced on disk
            // (`current_exe` would name the deleted path).
            None => (
                PathBuf::from(SELF_EXE),
                vec![
                    "agent".to_string(),
                    "--prompt-file".to_string(),
                    prompt_file.to_string_lossy().into_owned(),
                    "--max-iterations".to_string(),
                    config.raw.agent.max_iterations.to_string(),
                    "--role".to_string(),
                    agent.role.clone(),
                ],
            ),
            Some(template) => {
                let base_url = format!("{}/v1", self.proxy_root);
                let agent_config = agent
                    .dir
                    .join("selfware.toml")
                    .to_string_lossy()
                    .into_owned();
                let vars = CommandVars {
                    prompt_file: &prompt_file.to_string_lossy(),
                    workspace: &workspace,
                    model: &model,
                    base_url: &base_url,
                    agent_id: &agent.id,
                    task_id: &task.spec.id,
                    agent_config: &agent_config,
                };
                (
                    "sh".into(),
                    vec!["-c".to_string(), agent::render_command(template, &vars)],
                )
            }
        };
        let spec = LaunchSpec {
            program,
            args,
            env,
            cwd: self.workspace.clone(),
            log_path: agent.dir.join("agent.log"),
        };
        let task_id = task.spec.id.clone();
        let agent_id = agent.id.clone();
        let phase_name = phase.name.clone();
        let process = match local::spawn(&spec) {
            Ok(process) => process,
            Err(err) => {
                // A failed start is an agent crash for the recovery table (restart, up to
                // `[agents].max_task_attempts`), never a silently failed task.
                let message = format!("agent start failed: {err:#}");
                self.settle_failed_run(task_idx, &message);
                if self.tasks[task_idx].state == TaskState::Failed {
                    let message = format!("{message} (last of agents.max_task_attempts)");
                    self.failure_without_action(
                        FailureKind::AgentCrash,
                        Some(agent_idx),
                        Some(task_idx),
                        &message,
                        "failed",
                    )?;
                    self.settle_recoveries(task_idx)?;
                } else {
                    self.failure(
                        FailureKind::AgentCrash,
                        Some(agent_idx),
                        Some(task_idx),
                        &message,
                    )?;
                }
                self.sync_task(task_idx)?;
                return Ok(());
            }
        };
        let pid = process.pid;
        let run_id =
            self.store
                .insert_agent_run(&agent_id, &task_id, attempt, Some(pid), session_secs)?;
        self.sync_task(task_idx)?;
        self.store.set_agent_status(&agent_id, "running")?;
        self.event(
            "agent_started",
            Some(&agent_id),
            Some(&phase_name),
            Some(&task_id),
            serde_json::json!({"pid": pid, "pgid": pid, "attempt": attempt, "run_id": run_id}),
        )?;
        tracing::info!(message = "agent started", agent = %agent_id, task = %task_id, attempt, pid);
        let stop = CancellationToken::new();
        let timeout = self.clock.wall(config.raw.agent.step_timeout_secs);
        let grace = Duration::from_secs_f64(config.raw.agents.stop_grace_secs);
        let events = self.events_tx.clone();
        let stop_for_task = stop.clone();
        tokio::spawn(async move {
            let outcome = local::supervise(process, timeout, grace, stop_for_task).await;
            let _ = events
                .send(Event::AgentRunEnded {
                    agent_idx,
                    task_idx,
                    run_id,
                    outcome,
                })
                .await;
        });
        let slot = &mut self.agents[agent_idx];
        slot.runs += 1;
        slot.running = Some(Running {
            task_idx,
            attempt,
            stop,
            pgid: pid,
            ended_by: None,
            oom_kills_at_start: recover::cgroup_oom_kills(),
            done_claimed: false,
        });
        slot.last_activity = Some(now());
        slot.active = Instant::now();
        slot.log_len = std::fs::metadata(slot.dir.join("agent.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(())
    }

    /// A run that did not finish its task: back to the board, or failed after
    /// `[agents].max_task_attempts` runs.
    fn settle_failed_run(&mut self, task_idx: usize, message: &str) {
        let max = self.prepared.config.raw.agents.max_task_attempts;
        let task = &mut self.tasks[task_idx];
        task.last_error = Some(message.to_string());
        task.state = if task.attempts >= max {
            TaskState::Failed
        } else {
            TaskState::Pending
        };
        if task.state == TaskState::Failed {
            task.finished_session_secs = Some(self.clock.session_secs());
        }
    }

    fn sync_task(&self, task_idx: usize) -> Result<()> {
        let t = &self.tasks[task_idx];
        self.store.update_task(
            &t.spec.id,
            t.state.as_str(),
            t.attempts,
            t.agent_id.as_deref(),
            t.claimed_session_secs,
            t.finished_session_secs,
            t.last_error.as_deref(),
        )
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
            Event::ModelCall { call, reservation } => {
                let crate::store::spool::SpooledCall {
                    at,
                    session_secs,
                    mut row,
                } = *call;
                row.cost_usd = budget::row_cost_usd(&self.prices, &row);
                let now_secs = self.clock.session_secs();
                let actual = row.prompt_tokens + row.completion_tokens;
                let tool_calls = row.tool_names.len() as u64;
                self.count_toward_checkpoint(tool_calls, actual);
                let agent_idx = self.agents.iter().position(|a| a.id == row.agent_id);
                if let Some(agent_idx) = agent_idx {
                    let agent = &mut self.agents[agent_idx];
                    agent.last_activity = Some(now());
                    agent.active = Instant::now();
                    if reservation.is_some() {
                        agent.calls_in_flight = agent.calls_in_flight.saturating_sub(1);
                    }
                    if row.status == 200 && row.error_kind.is_none() {
                        self.clean_call(agent_idx)?;
                    }
                }
                // Committed first; counted after. The budget state is saved on the metrics tick
                // (resume replays the rows after its `ledger_seq`), or at once on a signal.
                let seq = self.store.record_model_call(&at, session_secs, &row)?;
                self.spool.committed();
                let signals =
                    self.budgets
                        .reconcile(reservation, actual, tool_calls, row.cost_usd, now_secs);
                self.budgets.ledger_seq = Some(seq);
                if !signals.is_empty() {
                    self.save_budgets()?;
                }
                for signal in signals {
                    match signal {
                        BudgetSignal::Alert { used, total } => {
                            tracing::warn!(message = "token budget at 80 %", used, total);
                            let data = serde_json::json!({"used": used, "total": total});
                            self.event("budget_alert", None, None, None, data.clone())?;
                            self.alert(
                                NotifyEvent::Budget,
                                Severity::Degraded,
                                &format!("token budget at 80 %: {used} of {total} tokens"),
                                data,
                            )?;
                        }
                        BudgetSignal::Exhausted { message } => self.budget_exhausted(&message)?,
                    }
                }
                if self.prepared.config.raw.monitoring.agent_activity_logging {
                    tracing::info!(message = "agent activity: model call", agent = %row.agent_id, task = ?row.task_id, model = %row.model_served, status = row.status, prompt_tokens = row.prompt_tokens, completion_tokens = row.completion_tokens, tools = ?row.tool_names);
                }
                self.totals.model_calls += 1;
                self.totals.prompt_tokens += row.prompt_tokens;
                self.totals.completion_tokens += row.completion_tokens;
                self.totals.cached_tokens += row.cached_tokens;
                self.totals.total_tokens += row.prompt_tokens + row.completion_tokens;
                for name in &row.tool_names {
                    self.totals.tool_calls += 1;
                    *self
                        .totals
                        .tool_calls_by_name
                        .entry(name.clone())
                        .or_default() += 1;
                }
            }
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
                    let killed = local::kill_all_groups();
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
            Event::Sampled(sample) => {
                self.sampling = false;
                self.last_code_stats = Some(sample.code.clone());
                self.last_sample = Some(*sample);
            }
        }
        Ok(())
    }

    /// Start a graceful stop: agents' runs are stopped, the loop ends, the report follows.
    fn begin_shutdown(&mut self, signal: ShutdownSignal) -> Result<()> {
        tracing::warn!(message = "stopping gracefully", cause = signal.name());
        self.shutdown = Some(signal);
        self.event(
            "signal",
            None,
            None,
            None,
            serde_json::json!({"signal": signal.name()}),
        )?;
        if self.recovery.pause.is_some() {
            self.unpause("stop")?;
        }
        for agent in &self.agents {
            if let Some(running) = &agent.running {
                running.stop.cancel();
            }
        }
        Ok(())
    }

    fn run_ended(
        &mut self,
        agent_idx: usize,
        task_idx: usize,
        run_id: i64,
        outcome: RunOutcome,
    ) -> Result<()> {
        let session_secs = self.clock.session_secs();
        // Tool calls the run reported in its events file count for its task: read them while
        // the run is still the agent's current one. Nothing here may keep the run from ending.
        if let Err(err) = self.drain_events_file(agent_idx) {
            tracing::error!(message = "cannot count an agent's reported tool calls", agent = %self.agents[agent_idx].id, error = %format!("{err:#}"));
        }
        let (ended_by, oom_kills_at_start, done_claimed) =
            match self.agents[agent_idx].running.take() {
                Some(running) => (
                    running.ended_by,
                    running.oom_kills_at_start,
                    running.done_claimed,
                ),
                None => (None, None, false),
            };
        let outcome_word = match (outcome.end, outcome.succeeded()) {
            (_, true) => "finished",
            // Stopped because the agent reported its task done (`POST /api/agent/task_done`).
            (RunEnd::Stopped, _) if done_claimed => "finished",
            (RunEnd::Exited, false) => "exited_nonzero",
            (RunEnd::TimedOut, _) => "step_timeout",
            (RunEnd::Stopped, _) => "stopped",
        };
        self.store.end_agent_run(
            run_id,
            session_secs,
            outcome.exit_code,
            outcome.signal,
            outcome_word,
        )?;
        let agent_id = self.agents[agent_idx].id.clone();
        let task_id = self.tasks[task_idx].spec.id.clone();
        let phase = self.prepared.config.phases[self.tasks[task_idx].phase_idx]
            .name
            .clone();
        self.store.set_agent_status(&agent_id, "idle")?;
        self.event(
            "agent_exited",
            Some(&agent_id),
            Some(&phase),
            Some(&task_id),
            serde_json::json!({"outcome": outcome, "result": outcome_word}),
        )?;
        tracing::info!(message = "agent exited", agent = %agent_id, task = %task_id, result = outcome_word, code = ?outcome.exit_code, signal = ?outcome.signal);
        match outcome_word {
            "finished" => {
                let task = &mut self.tasks[task_idx];
                task.state = TaskState::Done;
                task.finished_session_secs = Some(session_secs);
                task.last_error = None;
                self.agents[agent_idx].tasks_done += 1;
                self.success_seen();
                self.settle_recoveries(task_idx)?;
            }
            "stopped" if ended_by.is_none() => {
                // Stopped by megatest (phase end, shutdown): not the agent's failure.
                let task = &mut self.tasks[task_idx];
                task.state = TaskState::Pending;
                task.last_error = Some("stopped by megatest before it finished".into());
            }
            word => {
                self.run_failed(
                    agent_idx,
                    task_idx,
                    word,
                    &outcome,
                    ended_by,
                    oom_kills_at_start,
                )?;
            }
        }
        self.sync_task(task_idx)
    }

    /// Count a model call's or agent report's tool calls and tokens toward the checkpoint
    /// thresholds (`[checkpoint].tool_call_threshold`, `token_threshold`).
    fn count_toward_checkpoint(&mut self, tool_calls: u64, tokens: u64) {
        self.tool_calls_since_checkpoint += tool_calls;
        self.tokens_since_checkpoint += tokens;
        let c = &self.prepared.config.raw.checkpoint;
        if !c.enabled || self.checkpoint_due.is_some() {
            return;
        }
        if self.tool_calls_since_checkpoint >= c.tool_call_threshold {
            self.checkpoint_due = Some("tool_calls");
        } else if self.tokens_since_checkpoint >= c.token_threshold {
            self.checkpoint_due = Some("tokens");
        }
    }

    /// Take a checkpoint: freeze the running agents' process groups (SIGSTOP), snapshot the
    /// workspace off the session task, continue them (SIGCONT) — after at most
    /// [`crate::checkpoint::FREEZE_LIMIT`] — then write and record `checkpoint_NNN.json`.
    async fn take_checkpoint(&mut self, trigger: &'static str) -> Result<()> {
        let Some(mut checkpointer) = self.checkpointer.take() else {
            return Ok(());
        };
        // Groups stopped already (a pause, a hang) stay stopped: only those frozen here continue.
        let groups: Vec<i32> = self
            .agents
            .iter()
            .filter_map(|a| a.running.as_ref())
            .filter(|r| !local::process_stopped(r.pgid as i32))
            .map(|r| r.pgid as i32)
            .filter(|group| local::freeze_group(*group))
            .collect();
        let frozen = Instant::now();
        let workspace = self.workspace.clone();
        // The snapshot and `git rev-parse` run on the blocking pool, never on the session task.
        let mut job = tokio::task::spawn_blocking(move || {
            let result = checkpointer.snapshot(&workspace);
            let git_commit = crate::checkpoint::git_head(&workspace);
            (checkpointer, result, git_commit)
        });
        let (joined, consistent) = match tokio::time::timeout(
            crate::checkpoint::FREEZE_LIMIT,
            &mut job,
        )
        .await
        {
            Ok(joined) => (joined, true),
            Err(_) => {
                for group in &groups {
                    local::thaw_group(*group);
                }
                tracing::warn!(message = "snapshot outlasted the freeze limit: agents continued; checkpoint marked inconsistent");
                (job.await, false)
            }
        };
        for group in &groups {
            local::thaw_group(*group);
        }
        let frozen_ms = frozen.elapsed().as_secs_f64() * 1000.0;
        let (checkpointer, result, git_commit) = joined.context("the snapshot task panicked")?;
        self.checkpointer = Some(checkpointer);
        let (manifest, stats) = result?;
        let content = self.checkpoint_content(
            trigger,
            &manifest,
            &stats,
            (consistent, frozen_ms),
            git_commit,
        )?;
        let checkpointer = self.checkpointer.as_mut().expect("put back above");
        let session_secs = self.clock.session_secs();
        let row = checkpointer.write_recorded(
            &self.store,
            content,
            trigger,
            session_secs,
            manifest,
            &stats,
            consistent,
            frozen_ms,
        )?;
        let seq = row.seq;
        let phase = self
            .current_phase
            .map(|p| self.prepared.config.phases[p].name.clone());
        self.event(
            "checkpoint",
            None,
            phase.as_deref(),
            None,
            serde_json::to_value(&row)?,
        )?;
        tracing::info!(
            message = "checkpoint written",
            seq,
            trigger,
            files = stats.files,
            new_bytes = stats.new_bytes,
            frozen_ms
        );
        self.notice(
            NotifyEvent::Checkpoint,
            &format!("checkpoint {seq} written ({trigger})"),
            serde_json::json!({"seq": seq, "trigger": trigger, "path": row.path}),
        )?;
        self.tool_calls_since_checkpoint = 0;
        self.tokens_since_checkpoint = 0;
        self.checkpoints_taken += 1;
        self.enforce_store_limit()?;
        self.last_checkpoint = Some(row);
        Ok(())
    }

    /// Keep the checkpoint store within `[limits].disk_space_limit_gb`: prune unreferenced
    /// objects; if that is not enough, record `disk_full` for the recovery table.
    fn enforce_store_limit(&mut self) -> Result<()> {
        let limit = (self.prepared.config.raw.limits.disk_space_limit_gb * 1e9) as u64;
        let checkpointer = self
            .checkpointer
            .as_mut()
            .expect("present between snapshots");
        let Some(pruned) = checkpointer.enforce_limit(limit)? else {
            return Ok(());
        };
        let data = serde_json::to_value(&pruned)?;
        self.event("checkpoint_store_pruned", None, None, None, data)?;
        if pruned.kept_bytes > limit {
            let message = format!(
                "checkpoint store holds {} bytes, over limits.disk_space_limit_gb ({} bytes), with nothing left to prune",
                pruned.kept_bytes, limit
            );
            self.failure(FailureKind::DiskFull, None, None, &message)?;
        }
        Ok(())
    }

    /// The seed's `SessionCheckpoint` fields plus megatest's (trigger, task board, budgets).
    fn checkpoint_content(
        &mut self,
        trigger: &str,
        manifest: &str,
        stats: &crate::checkpoint::snapshot::SnapshotStats,
        (consistent, frozen_ms): (bool, f64),
        git_commit: Option<String>,
    ) -> Result<serde_json::Value> {
        let notes = self.store.events_of_kind("note")?;
        let agent_states: Vec<serde_json::Value> = self
            .agents
            .iter()
            .map(|a| {
                let totals = self.store.ledger_totals(Some(&a.id)).unwrap_or_default();
                serde_json::json!({
                    "id": a.id,
                    "role": a.role,
                    "status": if a.running.is_some() { "running" } else { "idle" },
                    "current_task": a.running.as_ref().map(|r| self.tasks[r.task_idx].spec.id.clone()),
                    "attempt": a.running.as_ref().map(|r| r.attempt),
                    "tokens": totals.total_tokens,
                    "tool_calls": totals.tool_calls,
                    "last_activity": a.last_activity,
                    "process_ids": a.running.as_ref().map(|r| vec![r.pgid]).unwrap_or_default(),
                    "process_group": a.running.as_ref().map(|r| r.pgid),
                    "handoff_notes": crate::checkpoint::notes_of(&notes, &a.id),
                })
            })
            .collect();
        let test_results: Vec<&CheckRow> = self
            .phases
            .iter()
            .rev()
            .find(|p| !p.checks.is_empty())
            .map(|p| p.checks.iter().collect())
            .unwrap_or_default();
        Ok(serde_json::json!({
            "timestamp": now(),
            "session_id": self.id(),
            "trigger": trigger,
            "phase": self.current_phase.map(|p| self.prepared.config.phases[p].name.clone()),
            "session_secs": self.clock.session_secs(),
            "wall_secs": self.clock.wall_secs(),
            "agent_states": agent_states,
            "working_memory": crate::checkpoint::working_memory(&notes),
            "file_system_state": {
                "manifest": manifest,
                "files": stats.files,
                "dirs": stats.dirs,
                "symlinks": stats.symlinks,
                "bytes": stats.bytes,
                "new_objects": stats.new_objects,
                "new_bytes": stats.new_bytes,
                "cache_hits": stats.cache_hits,
                "not_stored": stats.not_stored,
                "consistent": consistent,
                "frozen_ms": frozen_ms,
            },
            "test_results": test_results,
            "metrics": self.current_metrics("running"),
            "git_commit": git_commit,
            "task_board": self.tasks.iter().map(|t| serde_json::json!({
                "id": t.spec.id, "phase": t.spec.phase, "role": t.spec.role, "state": t.state.as_str(),
                "attempts": t.attempts, "agent_id": t.agent_id, "last_error": t.last_error,
            })).collect::<Vec<_>>(),
            "budgets": self.budgets,
        }))
    }

    /// Who holds `agent_key`, with the phase and task it is working on; None (and an
    /// `auth_rejected` event) for an unknown key.
    fn call_context(&mut self, agent_key: &str) -> Result<Option<CallContext>> {
        let context = self
            .agents
            .iter()
            .enumerate()
            .find(|(_, a)| a.key == agent_key)
            .map(|(idx, a)| {
                let running = a.running.as_ref();
                CallContext {
                    agent_idx: idx,
                    agent_id: a.id.clone(),
                    role: a.role.clone(),
                    phase: self
                        .current_phase
                        .map(|p| self.prepared.config.phases[p].name.clone()),
                    task_id: running.map(|r| self.tasks[r.task_idx].spec.id.clone()),
                    attempt: running.map(|r| r.attempt).unwrap_or(0),
                }
            });
        if context.is_none() {
            if let Some(count) = self.rejections.reject(Instant::now()) {
                self.record_rejections(count)?;
            }
        }
        Ok(context)
    }

    /// One `auth_rejected` row for `count` requests with an unknown agent key (sampled, see
    /// [`rejections`]).
    fn record_rejections(&mut self, count: u64) -> Result<()> {
        let total = self.rejections.total;
        self.event(
            "auth_rejected",
            None,
            None,
            None,
            serde_json::json!({"reason": "unknown agent key", "count": count, "total": total}),
        )
        .map(|_| ())
    }

    /// Reserve `tokens` for one call of `agent_idx`; logs throttling, busy and exhaustion. The
    /// state is saved when the call is throttled and on every metrics tick, not with each
    /// reservation: a reservation only matters while its call is in flight, and a daemon crash
    /// ends every call in flight.
    fn reserve(&mut self, agent_idx: usize, tokens: u64) -> Result<Admission> {
        let now_secs = self.clock.session_secs();
        let admission = self.budgets.reserve(agent_idx, tokens, now_secs);
        let agent_id = self.agents[agent_idx].id.clone();
        match &admission {
            Admission::Granted {
                wait_session_secs,
                batch_note,
                ..
            } => {
                if *wait_session_secs > 0.0 || *batch_note {
                    let data = serde_json::json!({"wait_session_secs": wait_session_secs, "batch_note": batch_note, "tokens": tokens});
                    self.event("throttled", Some(&agent_id), None, None, data)?;
                    // Throttled time is not in the ledger: save it now.
                    self.save_budgets()?;
                }
            }
            Admission::Busy => {
                let data = serde_json::json!({"tokens": tokens, "reserved": self.budgets.reserved_tokens, "used": self.budgets.used_tokens});
                self.event("budget_busy", Some(&agent_id), None, None, data)?;
            }
            Admission::Exhausted { message } => {
                let message = message.clone();
                self.budget_exhausted(&message)?;
            }
        }
        Ok(admission)
    }

    /// Count tool calls an agent reported itself, like those seen in model answers.
    /// `events_offset`: the agent's events-file offset after these calls (saved with them).
    fn agent_tool_calls(
        &mut self,
        agent_idx: usize,
        names: Vec<String>,
        events_offset: Option<u64>,
    ) -> Result<()> {
        let agent = &self.agents[agent_idx];
        let task = agent
            .running
            .as_ref()
            .map(|r| self.tasks[r.task_idx].spec.id.clone());
        let phase = self
            .current_phase
            .map(|p| self.prepared.config.phases[p].name.clone());
        let now_secs = self.clock.session_secs();
        let agent_id = agent.id.clone();
        if self.prepared.config.raw.monitoring.agent_activity_logging && !names.is_empty() {
            tracing::info!(message = "agent activity: reported tool calls", agent = %agent_id, task = ?task, tools = ?names);
        }
        self.count_toward_checkpoint(names.len() as u64, 0);
        self.store.record_agent_tool_calls(
            &now(),
            now_secs,
            &agent_id,
            phase.as_deref(),
            task.as_deref(),
            &names,
            events_offset,
        )?;
        if names.is_empty() {
            return Ok(());
        }
        self.budgets
            .charge_tool_calls(agent_idx, names.len() as u64, now_secs);
        self.totals.tool_calls += names.len() as u64;
        self.totals.agent_reported_tool_calls += names.len() as u64;
        for name in names {
            *self.totals.tool_calls_by_name.entry(name).or_default() += 1;
        }
        self.save_budgets()
    }

    /// Read the complete lines an agent appended to its `events.jsonl` since the last read.
    ///
    /// The file is untrusted input: it is read as bytes (at most [`EVENTS_READ_LIMIT`] per
    /// call), decoded lossily, and lines that are not JSON (invalid UTF-8 included) are counted
    /// and reported as one `parse_failure` error; nothing in the file can fail the session. The
    /// read offset is saved in `session.db` with the tool calls it counted, so a resumed session
    /// never counts a line twice. Errors: only the store's (a failed commit).
    fn drain_events_file(&mut self, agent_idx: usize) -> Result<()> {
        let path = self.agents[agent_idx].dir.join("events.jsonl");
        let offset = self.agents[agent_idx].events_offset;
        let chunk = match crate::fsutil::read_complete_lines(&path, offset, EVENTS_READ_LIMIT) {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::warn!(message = "cannot read an agent's events file", path = %path.display(), error = %err);
                return Ok(());
            }
        };
        let (names, mut bad) = event::parse_agent_events(&String::from_utf8_lossy(&chunk.lines));
        bad += chunk.skipped_lines;
        self.agents[agent_idx].events_offset = chunk.next_offset;
        self.agent_tool_calls(agent_idx, names, Some(chunk.next_offset))?;
        if bad > 0 {
            let message = format!(
                "{bad} lines of {} are not JSON (skipped; untrusted agent output)",
                path.display()
            );
            let task_idx = self.agents[agent_idx].running.as_ref().map(|r| r.task_idx);
            self.failure_without_action(
                FailureKind::ParseFailure,
                Some(agent_idx),
                task_idx,
                &message,
                "skipped",
            )?;
        }
        Ok(())
    }

    /// Enter the end-of-budget path once: log and record it; the phase loop sees
    /// `budgets.exhausted`, stops the agents, runs the phase checks and ends the session.
    fn budget_exhausted(&mut self, message: &str) -> Result<()> {
        if self.budget_exhaustion_logged {
            return Ok(());
        }
        self.budget_exhaustion_logged = true;
        tracing::warn!(
            message = "budget exhausted: ending the session",
            detail = message
        );
        self.event(
            "budget_exhausted",
            None,
            None,
            None,
            serde_json::json!({"message": message}),
        )?;
        Ok(())
    }

    fn save_budgets(&self) -> Result<()> {
        self.store
            .save_budget_state(&serde_json::to_value(&self.budgets)?)
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

    /// Stop every running agent and process events until all their runs have ended. A second
    /// signal meanwhile SIGKILLs every group at once.
    async fn stop_all_agents(&mut self) {
        for agent in &self.agents {
            if let Some(running) = &agent.running {
                running.stop.cancel();
            }
        }
        while self.agents.iter().any(|a| a.running.is_some()) {
            match self.events_rx.recv().await {
                Some(event) => {
                    let ended = match &event {
                        Event::AgentRunEnded { agent_idx, .. } => Some(*agent_idx),
                        _ => None,
                    };
                    if let Err(err) = self.handle(event) {
                        tracing::error!(message = "event while stopping agents failed", error = %format!("{err:#}"));
                    }
                    // A run that ended is over even when recording its end failed: waiting
                    // for it again would wait for ever.
                    if let Some(agent_idx) = ended {
                        if let Some(agent) = self.agents.get_mut(agent_idx) {
                            agent.running = None;
                        }
                    }
                }
                None => break,
            }
        }
    }

    /// The phase checks: the spec's build and test commands in `project/`, each bounded by
    /// `[limits].max_test_runtime_min` (wall minutes: real commands are not time-scaled). Events
    /// are still served meanwhile; a signal cancels the running check.
    async fn run_checks(&mut self, phase_idx: usize) -> Result<()> {
        let phase = self.prepared.config.phases[phase_idx].name.clone();
        let timeout =
            Duration::from_secs_f64(self.prepared.config.raw.limits.max_test_runtime_min * 60.0);
        let commands = self.prepared.spec.commands.clone();
        let mut checks = vec![("build", commands.build), ("test", commands.test)];
        if let Some(coverage) = commands.coverage {
            checks.push(("coverage", coverage));
        }
        for (name, command) in checks {
            let workspace = self.workspace.clone();
            let phase_name = phase.clone();
            let cancel = CancellationToken::new();
            let cancel_for_check = cancel.clone();
            let mut check = tokio::spawn(async move {
                tokio::select! {
                    row = eval::run_check(&phase_name, name, &command, &workspace, timeout) => Some(row),
                    _ = cancel_for_check.cancelled() => None,
                }
            });
            let row = loop {
                tokio::select! {
                    result = &mut check => break result.ok().flatten(),
                    event = self.events_rx.recv() => {
                        if let Some(event) = event {
                            self.handle(event)?;
                            if self.shutdown.is_some() {
                                cancel.cancel();
                            }
                        }
                    }
                }
            };
            let Some(row) = row else { return Ok(()) };
            self.store.insert_check(&row)?;
            self.event(
                "check",
                None,
                Some(&phase),
                None,
                serde_json::json!({"name": row.name, "passed": row.passed, "exit_code": row.exit_code, "wall_secs": row.wall_secs}),
            )?;
            tracing::info!(message = "phase check", phase = %phase, check = name, passed = row.passed, exit_code = ?row.exit_code, wall_secs = row.wall_secs);
            if name == "coverage" {
                // A measurement, not a gate: its figure or why there is none.
                self.coverage = Some(match (row.passed, eval::parse_coverage(&row.output_tail)) {
                    (true, Some(fraction)) => Figure::measured(fraction),
                    (true, None) => Figure::missing(
                        "the coverage command printed no percentage on its last line",
                    ),
                    (false, _) => Figure::missing(format!(
                        "the coverage command failed (is its tool installed?): {}",
                        eval::describe_check(&row)
                    )),
                });
                self.phases[phase_idx].checks.push(row);
                continue;
            }
            let message = format!("phase {phase} check failed: {}", eval::describe_check(&row));
            self.check_result(name, row.passed, row.timed_out, &message)?;
            self.phases[phase_idx].checks.push(row);
        }
        self.last_code_stats = Some(metrics::code_stats(&self.workspace));
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
        self.store.append_event(
            &now(),
            self.clock.session_secs(),
            kind,
            agent_id,
            phase,
            task_id,
            &data,
        )
    }

    fn task_counts(&self, phase_idx: Option<usize>) -> TaskCounts {
        let mut counts = TaskCounts::default();
        for task in self
            .tasks
            .iter()
            .filter(|t| phase_idx.is_none_or(|p| t.phase_idx == p))
        {
            counts.total += 1;
            match task.state {
                TaskState::Pending => counts.pending += 1,
                TaskState::Running => counts.running += 1,
                TaskState::Done => counts.done += 1,
                TaskState::Failed => counts.failed += 1,
            }
        }
        counts
    }

    /// Start a metrics sample off the session task (one at a time); its result arrives as
    /// [`Event::Sampled`].
    fn start_sample(&mut self) {
        if self.sampling || !self.prepared.config.raw.monitoring.enabled {
            return;
        }
        self.sampling = true;
        let workspace = self.workspace.clone();
        let since = chrono::DateTime::parse_from_rfc3339(&self.started_at)
            .map(|t| std::time::SystemTime::from(t.with_timezone(&chrono::Utc)))
            .unwrap_or(std::time::UNIX_EPOCH);
        let agents: Vec<(String, u32)> = self
            .agents
            .iter()
            .filter_map(|a| a.running.as_ref().map(|r| (a.id.clone(), r.pgid)))
            .collect();
        let events = self.events_tx.clone();
        tokio::task::spawn_blocking(move || {
            let sample = metrics::sample(&workspace, since, &agents);
            let _ = events.blocking_send(Event::Sampled(Box::new(sample)));
        });
    }

    /// Write `metrics_current.json`; with `[monitoring].export_metrics` also append it to
    /// `metrics/metrics.jsonl` and, with `metrics_format = "prometheus"`, write
    /// `metrics/metrics.prom` (text format). Failures are logged, never fatal (the ledger and
    /// event log are the record).
    fn write_metrics(&mut self, status: &str) {
        let monitoring = &self.prepared.config.raw.monitoring;
        if !monitoring.enabled {
            return;
        }
        let (export, prometheus) = (
            monitoring.export_metrics,
            monitoring.metrics_format == crate::config::raw::MetricsFormat::Prometheus,
        );
        let metrics = self.current_metrics(status);
        let Ok(mut bytes) = serde_json::to_vec_pretty(&metrics) else {
            return;
        };
        bytes.push(b'\n');
        self.metrics_writer
            .replace(&self.dir().join("metrics_current.json"), bytes);
        if !export {
            return;
        }
        if let Ok(mut line) = serde_json::to_vec(&metrics) {
            line.push(b'\n');
            self.metrics_writer
                .append(&self.dir().join("metrics").join("metrics.jsonl"), line);
        }
        if prometheus {
            let text = crate::metrics::prometheus::prometheus_text(&self.status_json());
            self.metrics_writer.replace(
                &self.dir().join("metrics").join("metrics.prom"),
                text.into_bytes(),
            );
        }
    }

    /// The seed's `SessionMetrics` now.
    fn current_metrics(&self, status: &str) -> SessionMetrics {
        let elapsed_session = self.clock.session_secs();
        let elapsed_minutes = elapsed_session / 60.0;
        let remaining: f64 = self
            .prepared
            .config
            .phases
            .iter()
            .enumerate()
            .map(
                |(i, plan)| match (&self.phases[i].started, &self.phases[i].ended) {
                    (_, Some(_)) => 0.0,
                    (Some((start, _)), None) => {
                        (plan.session_secs - (elapsed_session - start)).max(0.0)
                    }
                    (None, None) => plan.session_secs,
                },
            )
            .sum();
        let last_test = self
            .phases
            .iter()
            .rev()
            .flat_map(|p| p.checks.iter())
            .find(|c| c.name == "test");
        SessionMetrics {
            session_id: self.id().to_string(),
            status: status.to_string(),
            phase: self
                .current_phase
                .map(|p| self.prepared.config.phases[p].name.clone()),
            updated_at: now(),
            elapsed_session_secs: elapsed_session,
            elapsed_wall_secs: self.clock.wall_secs(),
            remaining_session_secs: if status == "running" { remaining } else { 0.0 },
            model_calls: self.totals.model_calls,
            total_tokens: self.totals.total_tokens,
            tokens_per_minute: if elapsed_minutes > 0.0 {
                Figure::measured(self.totals.total_tokens as f64 / elapsed_minutes)
            } else {
                Figure::missing("no session time has passed yet")
            },
            tool_calls: self.totals.tool_calls,
            tasks: self.task_counts(None),
            agents: self
                .agents
                .iter()
                .map(|a| AgentStatus {
                    id: a.id.clone(),
                    role: a.role.clone(),
                    status: if a.running.is_some() {
                        "running".into()
                    } else {
                        "idle".into()
                    },
                    task: a
                        .running
                        .as_ref()
                        .map(|r| self.tasks[r.task_idx].spec.id.clone()),
                })
                .collect(),
            lines_of_code: match &self.last_code_stats {
                Some(stats) => Figure::measured(stats.lines_of_code),
                None => {
                    Figure::missing("measured with tokei at each phase end; no phase has ended yet")
                }
            },
            test_pass_rate: match last_test {
                // The contract's test command gives pass/fail for the whole suite, not per test.
                Some(check) => Figure::measured(if check.passed { 1.0 } else { 0.0 }),
                None => Figure::missing("no phase test check has run yet"),
            },
            test_coverage: self.coverage_figure(),
            files_modified: match &self.last_sample {
                Some(sample) => Figure::measured(sample.files_modified),
                None => Figure::missing("the metrics sampler has not reported yet"),
            },
            agent_utilisation: self.agent_utilisation(elapsed_session),
            consensus_votes_cast: Figure::missing("this version has no consensus voting"),
            daemon_memory_bytes: match self
                .last_sample
                .as_ref()
                .and_then(|s| s.daemon_memory_bytes)
            {
                Some(bytes) => Figure::measured(bytes),
                None => Figure::missing("the metrics sampler has not reported yet"),
            },
            agent_memory_bytes: self
                .last_sample
                .as_ref()
                .map(|s| s.agent_memory_bytes.clone())
                .unwrap_or_default(),
            checkpoints: self.checkpoints_taken,
            errors: self.errors,
        }
    }

    /// Line coverage from the spec's coverage command at the last phase end, or why none.
    fn coverage_figure(&self) -> Figure<f64> {
        self.coverage.clone().unwrap_or_else(|| {
            Figure::missing(if self.prepared.spec.commands.coverage.is_some() {
                "measured by the spec's coverage command at each phase end; no phase has ended yet"
            } else {
                "the project spec has no coverage command ([commands].coverage)"
            })
        })
    }

    /// Run session seconds of all agents / (agents × elapsed session seconds).
    fn agent_utilisation(&self, elapsed: f64) -> Figure<f64> {
        if elapsed <= 0.0 || self.agents.is_empty() {
            return Figure::missing("no session time has passed yet");
        }
        let busy = self.store.busy_session_secs(elapsed).unwrap_or(0.0);
        Figure::measured((busy / (elapsed * self.agents.len() as f64)).clamp(0.0, 1.0))
    }

    fn budget_report(&self, usage: &LedgerTotals) -> BudgetReport {
        let b = &self.budgets;
        let unpriced: Vec<String> = self.store.unpriced_models().unwrap_or_default();
        BudgetReport {
            total_token_budget: b.total_tokens,
            used_tokens: usage.total_tokens,
            used_fraction: usage.total_tokens as f64 / b.total_tokens.max(1) as f64,
            alert_raised: b.alerted,
            exhausted: b.exhausted.clone(),
            cost_usd: if unpriced.is_empty() {
                Figure::measured(self.store.priced_cost().unwrap_or(0.0))
            } else {
                Figure::missing(format!(
                    "no price for model(s) {}: add them to [model.prices] (USD per million tokens)",
                    unpriced.join(", ")
                ))
            },
            max_cost_usd: b.max_cost_usd,
            throttled_session_secs: self
                .agents
                .iter()
                .zip(&b.throttled_secs)
                .map(|(a, secs)| (a.id.clone(), *secs))
                .collect(),
        }
    }

    /// The criteria that decide the exit code: every phase ran, and the last phase's build and
    /// test checks passed.
    fn critical_criteria(&self) -> Vec<CriterionResult> {
        let last = self.phases.len().saturating_sub(1);
        let last_name = self
            .prepared
            .config
            .phases
            .get(last)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let all_ran = self.phases.iter().all(|p| p.ended.is_some());
        let mut out = vec![CriterionResult {
            phase: "session".into(),
            criterion: "every phase ran to its end".into(),
            met: Some(all_ran),
            evidence: format!(
                "{} of {} phases ended",
                self.phases.iter().filter(|p| p.ended.is_some()).count(),
                self.phases.len()
            ),
            critical: true,
        }];
        for (name, text) in [
            ("build", "the project builds at the end"),
            ("test", "the project's tests pass at the end"),
        ] {
            let check = self
                .phases
                .get(last)
                .and_then(|p| p.checks.iter().find(|c| c.name == name));
            out.push(CriterionResult {
                phase: last_name.clone(),
                criterion: text.into(),
                met: Some(check.is_some_and(|c| c.passed)),
                evidence: match check {
                    Some(c) => eval::describe_check(c),
                    None => format!("the {name} check of the last phase did not run"),
                },
                critical: true,
            });
        }
        out
    }

    /// Non-critical criteria from the upstream `[project.target]` and `[project.performance]`
    /// targets that can be measured now: lines of code (tokei), build and test wall time (the
    /// last phase's checks). Test coverage is `null` until it is measured.
    fn target_criteria(&self, code: Option<&CodeStats>) -> Vec<CriterionResult> {
        let raw = &self.prepared.config.raw.project;
        let last_checks = self
            .phases
            .last()
            .map(|p| p.checks.as_slice())
            .unwrap_or(&[]);
        let mut out = Vec::new();
        let target = raw.target.lines_of_code;
        out.push(CriterionResult {
            phase: "session".into(),
            criterion: format!("at least {target} lines of code (project.target.lines_of_code)"),
            met: code.map(|c| c.lines_of_code as u64 >= target),
            evidence: match code {
                Some(c) => format!(
                    "tokei counted {} lines of code in {} files",
                    c.lines_of_code, c.files
                ),
                None => "the workspace could not be counted".into(),
            },
            critical: false,
        });
        for (name, limit, key) in [
            (
                "build",
                raw.performance.build_time_secs,
                "project.performance.build_time_secs",
            ),
            (
                "test",
                raw.performance.test_execution_time_secs,
                "project.performance.test_execution_time_secs",
            ),
        ] {
            let check = last_checks.iter().find(|c| c.name == name);
            out.push(CriterionResult {
                phase: "session".into(),
                criterion: format!("the final {name} takes at most {limit} s ({key})"),
                met: check.filter(|c| c.passed).map(|c| c.wall_secs <= limit),
                evidence: match check {
                    Some(c) if c.passed => format!("{} (wall time)", eval::describe_check(c)),
                    Some(c) => {
                        format!("not judged: the {name} failed: {}", eval::describe_check(c))
                    }
                    None => format!("not judged: the final {name} check did not run"),
                },
                critical: false,
            });
        }
        out.push(CriterionResult {
            phase: "session".into(),
            criterion: format!(
                "test coverage at least {:.0} % (project.target.test_coverage)",
                raw.target.test_coverage * 100.0
            ),
            met: self
                .coverage
                .as_ref()
                .and_then(|c| c.value)
                .map(|c| c >= raw.target.test_coverage),
            evidence: match self.coverage.as_ref() {
                Some(Figure { value: Some(c), .. }) => {
                    format!("the spec's coverage command measured {:.1} %", c * 100.0)
                }
                Some(Figure { reason, .. }) => format!(
                    "not judged: {}",
                    reason.as_deref().unwrap_or("no coverage figure")
                ),
                None => {
                    "not judged: the project spec has no coverage command ([commands].coverage)"
                        .into()
                }
            },
            critical: false,
        });
        out.extend(self.recovery_criteria());
        out
    }

    /// The seed's recovery criteria, judged from `recoveries`: "recovery from at least 1
    /// simulated failure" (a failure while `[chaos]` was on, recovered) and "auto-recovery from
    /// 3+ error scenarios" (three failure kinds recovered without an operator).
    fn recovery_criteria(&self) -> Vec<CriterionResult> {
        let rows = self.store.recoveries().unwrap_or_default();
        let recovered: Vec<&crate::store::RecoveryRow> = rows
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("recovered"))
            .collect();
        let mut kinds: Vec<&str> = recovered.iter().map(|r| r.failure_kind.as_str()).collect();
        kinds.sort();
        kinds.dedup();
        let chaos = self.prepared.config.raw.chaos.enabled;
        vec![
            CriterionResult {
                phase: "session".into(),
                criterion: "recovery from at least 1 simulated failure".into(),
                met: chaos.then_some(!recovered.is_empty()),
                evidence: if chaos {
                    format!(
                        "[chaos] was on: {} of {} failures recovered",
                        recovered.len(),
                        rows.len()
                    )
                } else {
                    "not judged: no failure was simulated ([chaos] is off)".into()
                },
                critical: false,
            },
            CriterionResult {
                phase: "session".into(),
                criterion: "auto-recovery from 3+ error scenarios".into(),
                met: (!rows.is_empty()).then_some(kinds.len() >= 3),
                evidence: if rows.is_empty() {
                    "not judged: no failure happened".into()
                } else {
                    format!(
                        "{} failure kinds recovered automatically: {}",
                        kinds.len(),
                        kinds.join(", ")
                    )
                },
                critical: false,
            },
        ]
    }

    fn final_report(&mut self, status: &str, exit_code: i32, because: &str) -> FinalReport {
        let recoveries = self.store.recoveries().unwrap_or_default();
        let config = &self.prepared.config;
        let stats = self
            .workspace
            .is_dir()
            .then(|| metrics::code_stats(&self.workspace));
        if let Some(stats) = &stats {
            self.last_code_stats = Some(stats.clone());
        }
        let target_criteria = self.target_criteria(stats.as_ref());
        let code = match stats {
            Some(stats) => Figure::measured(stats),
            None => Figure::missing("the workspace does not exist"),
        };
        let usage = self.store.ledger_totals(None).unwrap_or_else(|err| {
            tracing::error!(message = "cannot read the ledger", error = %format!("{err:#}"));
            self.totals.clone()
        });
        let phases: Vec<PhaseReport> = config
            .phases
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let record = &self.phases[i];
                PhaseReport {
                    name: plan.name.clone(),
                    ended_because: record.ended_because.clone().unwrap_or_else(|| {
                        if record.started.is_some() {
                            status.to_string()
                        } else {
                            "not_started".into()
                        }
                    }),
                    planned_session_secs: plan.session_secs,
                    session_secs: record.started.map(|(s, _)| {
                        record
                            .ended
                            .map(|(e, _)| e)
                            .unwrap_or(self.clock.session_secs())
                            - s
                    }),
                    wall_secs: record.started.map(|(_, s)| {
                        record
                            .ended
                            .map(|(_, e)| e)
                            .unwrap_or(self.clock.wall_secs())
                            - s
                    }),
                    objectives: plan.objectives.clone(),
                    tasks: self.task_counts(Some(i)),
                    checks: record.checks.clone(),
                    success_criteria: eval::judge_criteria(
                        &plan.name,
                        &plan.success_criteria,
                        &record.checks,
                    ),
                }
            })
            .collect();
        let mut criteria = self.critical_criteria();
        criteria.extend(target_criteria);
        criteria.extend(phases.iter().flat_map(|p| p.success_criteria.clone()));
        let agents = self
            .agents
            .iter()
            .map(|a| {
                let totals = self.store.ledger_totals(Some(&a.id)).unwrap_or_default();
                AgentReport {
                    id: a.id.clone(),
                    role: a.role.clone(),
                    runs: a.runs,
                    tasks_done: a.tasks_done,
                    tasks_failed_runs: a.failed_runs,
                    model_calls: totals.model_calls,
                    total_tokens: totals.total_tokens,
                    tool_calls: totals.tool_calls,
                }
            })
            .collect();
        FinalReport {
            schema_version: REPORT_SCHEMA_VERSION,
            session_id: self.id().to_string(),
            project: ProjectInfo {
                project_type: config.raw.session.project_type.clone(),
                test_name: config.raw.metadata.name.clone(),
                test_version: config.raw.metadata.version.clone(),
                name: self.prepared.spec.name.clone(),
                spec_dir: self.prepared.spec.dir.display().to_string(),
                workspace: self.workspace.display().to_string(),
            },
            status: status.to_string(),
            exit_code,
            ended_because: because.to_string(),
            started_at: self.started_at.clone(),
            ended_at: now(),
            duration: Durations {
                planned_session_secs: config.session_secs(),
                session_secs: self.clock.session_secs(),
                wall_secs: self.clock.wall_secs(),
                time_scale: self.clock.time_scale(),
            },
            model: ModelInfo {
                provider: self.prepared.provider.as_str().to_string(),
                name: config.model_name(),
                builtin: self.prepared.provider.is_builtin(),
                label: self.prepared.model_label.clone(),
            },
            agent_count: self.agents.len(),
            agent_kind: match (&config.raw.agents.kind, &config.raw.agents.preset) {
                (AgentKind::Builtin, _) => "builtin (megatest agent)".into(),
                (AgentKind::Command, Some(preset)) => format!("command (preset {preset})"),
                (AgentKind::Command, None) => "command".into(),
            },
            phases,
            budget: self.budget_report(&usage),
            rollbacks: self
                .store
                .events_of_kind("checkpoint_restored")
                .unwrap_or_default()
                .into_iter()
                .map(|row| {
                    let mut value = serde_json::from_str::<serde_json::Value>(&row.data).unwrap_or_default();
                    value["at"] = serde_json::Value::String(row.at);
                    value["session_secs"] = serde_json::Value::from(row.session_secs);
                    value
                })
                .collect(),
            checkpoints: CheckpointSummary { count: self.checkpoints_taken, last: self.last_checkpoint.clone() },
            usage,
            tasks: self.task_counts(None),
            task_list: self
                .tasks
                .iter()
                .map(|t| TaskReport {
                    id: t.spec.id.clone(),
                    phase: t.spec.phase.clone(),
                    role: t.spec.role.clone(),
                    state: t.state.as_str().to_string(),
                    attempts: t.attempts,
                    agent_id: t.agent_id.clone(),
                    last_error: t.last_error.clone(),
                })
                .collect(),
            agents,
            errors: self.store.error_counts().unwrap_or_default(),
            recovery_outcomes: recoveries.iter().fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.outcome.clone().unwrap_or_else(|| "open".into()))
                    .or_default() += 1;
                m
            }),
            recoveries,
            chaos: config.raw.chaos.enabled.then(|| {
                let fired: Vec<serde_json::Value> = self
                    .store
                    .events_of_kind("chaos")
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|row| serde_json::from_str(&row.data).ok())
                    .collect();
                serde_json::json!({
                    "warning": "fault injection was ON: failures in this session were injected on purpose",
                    "config": config.raw.chaos,
                    "injected": fired,
                })
            }),
            code,
            test_coverage: self.coverage_figure(),
            success_criteria: criteria,
            not_yet_enforced: config.not_yet_enforced.clone(),
        }
    }
}

/// The prompt of one task run: project, role, phase objectives, requirements, contract, task.
fn compose_prompt(
    spec: &ProjectSpec,
    phase: &crate::config::PhasePlan,
    role: &str,
    task: &TaskSpec,
    attempt: u32,
    last_error: Option<&str>,
) -> String {
    let mut out = format!(
        "# {} — {} phase — task {}\n\nYou are the **{role}** of a team building {}: {}\n\n## Your task: {}\n\n{}\n",
        spec.name, phase.name, task.id, spec.name, spec.description, task.title, task.prompt.trim()
    );
    if attempt > 1 {
        out.push_str(&format!(
            "\nThis is attempt {attempt}. The previous run ended with: {}\n",
            last_error.unwrap_or("unknown")
        ));
    }
    if !phase.objectives.is_empty() {
        out.push_str("\n## Phase objectives\n\n");
        for objective in &phase.objectives {
            out.push_str(&format!("- {objective}\n"));
        }
    }
    let contract = spec.doc("CONTRACT.md");
    if !contract.is_empty() {
        out.push_str(&format!(
            "\n## Interface contract (must hold)\n\n{contract}\n"
        ));
    }
    let requirements = spec.doc("REQUIREMENTS.md");
    if !requirements.is_empty() {
        out.push_str(&format!("\n## Requirements\n\n{requirements}\n"));
    }
    out.push_str(
        "\nWork in the current directory (the project workspace). Finish when your task is done.\n",
    );
    out
}

/// Log a failed step of the session's end; the end goes on (see [`Session::run`]).
fn log_end_step(what: &str, result: Result<()>) {
    if let Err(err) = result {
        tracing::error!(message = "cannot write at the session's end", what, error = %format!("{err:#}"));
        crate::console::say(format_args!(
            "megatest: cannot write {what} at the session's end: {err:#}"
        ));
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
