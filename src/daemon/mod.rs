//! The composition root of a running session: the tokio runtime, logging, signals, the config
//! watch and the live progress around one [`Session`]; the resume preparation (leftover agent
//! groups killed, config reloaded from the recorded path and overrides); and the
//! restore-then-resume loop a `restore_checkpoint` recovery asks for. `cli/` parses arguments
//! and calls [`run`] or [`resume`]; nothing below this module calls back up into `cli/`.

pub mod progress;

use crate::config::Overrides;
use crate::protocol::{Event, ShutdownSignal};
use crate::session::{self, Session};
use crate::store::Store;
use anyhow::Result;
use std::path::Path;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Run a new prepared session to its end (continuing it after a checkpoint restore); returns
/// the exit code.
pub fn run(prepared: session::Prepared) -> Result<i32> {
    run_loop(prepared, false)
}

/// Continue the session in `dir` whose daemon died or was interrupted; returns the exit code
/// (2 when it cannot be resumed, with the reason on stderr).
pub fn resume(dir: &Path) -> Result<i32> {
    match prepare_resume(dir)? {
        Ok(prepared) => run_loop(prepared, true),
        Err(code) => Ok(code),
    }
}

/// Checkpoint restores (`restore_checkpoint` recoveries) one daemon carries out before it stops.
pub const MAX_RESTORES: u32 = 5;

/// Drive the session; when it stopped for a checkpoint restore (already rolled back), resume
/// it from `session.db` in the same process, as often as that happens.
fn run_loop(mut prepared: session::Prepared, mut reopen: bool) -> Result<i32> {
    // Agents' detached processes (setsid) come back to this process when their parent dies,
    // so the session can stop them (`backend::escapees`).
    crate::backend::escapees::become_subreaper();
    let mut restores = 0;
    loop {
        let dir = prepared.dir.clone();
        let end = drive(prepared, reopen)?;
        if !end.resume {
            return Ok(end.exit_code);
        }
        restores += 1;
        if restores > MAX_RESTORES {
            // A session that keeps rolling back makes no progress: stop, resumable by hand.
            crate::console::say(format_args!(
                "megatest: session {} was restored {MAX_RESTORES} times by this daemon; stopping (exit 3); `megatest resume` continues it",
                dir.display()
            ));
            return Ok(3);
        }
        crate::console::say(format_args!(
            "megatest: continuing session {} from the restored checkpoint",
            dir.display()
        ));
        prepared = match prepare_resume(&dir)? {
            Ok(prepared) => prepared,
            Err(code) => return Ok(code),
        };
        reopen = true;
    }
}

/// True when `pid` is a live megatest process other than this one.
pub fn daemon_alive(pid: u32) -> bool {
    pid != std::process::id()
        && crate::backend::local::process_alive(pid as i32)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("megatest"))
}

/// Kill the process groups of agent runs that never ended, if they still belong to this
/// session (a member's environment names the session directory). Returns how many were killed.
fn kill_orphans(store: &Store, dir: &Path) -> anyhow::Result<usize> {
    let needle = dir
        .canonicalize()
        .unwrap_or(dir.to_path_buf())
        .display()
        .to_string();
    Ok(crate::backend::local::kill_leftover_groups(
        &store.open_run_pgids()?,
        &needle,
    ))
}

/// Everything `megatest resume` checks and repairs before the session is reopened: Ok(prepared)
/// or Err(exit code 2) with the reason on stderr.
fn prepare_resume(dir: &Path) -> Result<std::result::Result<session::Prepared, i32>> {
    let dir = dir.to_path_buf();
    let store = Store::open(&dir.join("session.db"))?;
    let crate::store::SessionOrigin {
        id,
        status,
        config_path,
        overrides,
        daemon_pid: pid,
    } = store.session_origin()?;
    if matches!(status.as_str(), "complete" | "failed") {
        crate::console::say(format_args!(
            "megatest: session {id} already ended ({status}); nothing to resume"
        ));
        return Ok(Err(2));
    }
    if let Some(pid) = pid.filter(|pid| daemon_alive(*pid)) {
        crate::console::say(format_args!(
            "megatest: session {id} is still running (megatest pid {pid}); stop it first"
        ));
        return Ok(Err(2));
    }
    let Some(config_path) = config_path else {
        crate::console::say(format_args!(
            "megatest: session {id} does not record its config; it cannot be resumed"
        ));
        return Ok(Err(2));
    };
    let overrides: Overrides = serde_json::from_str(overrides.as_deref().unwrap_or("{}"))?;
    let killed = kill_orphans(&store, &dir)?;
    let last = store.last_session_secs()?;
    let closed = store.close_open_runs(last, "lost_with_daemon")?;
    if killed + closed > 0 {
        crate::console::say(format_args!("megatest: stopped {killed} leftover agent process group(s); {closed} run(s) marked lost_with_daemon"));
    }
    drop(store);
    let config = match crate::config::load(Path::new(&config_path), &overrides) {
        Ok(config) => config,
        Err(err) => {
            crate::console::say(format_args!(
                "megatest: the session's config no longer loads:\n{err}"
            ));
            return Ok(Err(2));
        }
    };
    let prepared = match crate::session::prepare_resume(config, &overrides, id, dir) {
        Ok(prepared) => prepared,
        Err(err) => {
            crate::console::say(format_args!("megatest: {err}"));
            return Ok(Err(2));
        }
    };
    Ok(Ok(prepared))
}

/// Run a prepared session — created anew, or reopened from its `session.db` (`resume`) — on a
/// tokio runtime with logging and signals; returns the exit code.
fn drive(prepared: session::Prepared, reopen: bool) -> Result<session::SessionEnd> {
    let log_level = prepared.config.raw.monitoring.log_level;
    // Live progress: bars on a terminal, plain status lines otherwise.
    let progress_every = std::time::Duration::from_secs_f64(
        prepared.config.raw.monitoring.dashboard_update_interval / prepared.config.time_scale,
    );
    let multi =
        std::io::IsTerminal::is_terminal(&std::io::stderr()).then(indicatif::MultiProgress::new);
    let warnings = prepared.config.warnings.clone();
    let preset = prepared.preset;
    let not_yet = prepared.config.not_yet_enforced.clone();
    // One worker thread: the session task, the proxy and the API then hand requests to each
    // other without cross-thread wake-ups (measured by scripts/bench_proxy.sh at 500 req/s: 0.1
    // ms less added latency than with two workers). Blocking work (checkpoints, phase checks,
    // the sampler, fsyncs) runs on the blocking pool or its own thread, never on the worker.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // Last resort: a panic anywhere still takes every agent process group down with it.
    let default_hook = std::panic::take_hook();
    let agent_backend = prepared.agent_backend.clone();
    let backend_on_panic = agent_backend.clone();
    std::panic::set_hook(Box::new(move |info| {
        backend_on_panic.kill_all();
        default_hook(info);
    }));
    // The session runs as a task on the worker thread, not on the `block_on` thread: a proxy
    // handler's round trip to the session (Admit, ModelCall) then stays on that one thread
    // instead of waking another (measured: ~0.1 ms less added latency per call).
    let backend_at_end = agent_backend.clone();
    let session_task = runtime.spawn(async move {
        let signals = install_signals();
        let session = if reopen {
            let (session, downtime) = Session::reopen(prepared)?;
            crate::console::say(format_args!("megatest: resuming session {} after {downtime:.1} s of downtime", session.id()));
            session
        } else {
            Session::create(prepared)?
        };
        let _log_guard = init_logging(session.dir(), log_level.as_str(), multi.clone());
        tracing::info!(message = if reopen { "session resumed" } else { "session created" }, session_id = session.id(), dir = %session.dir().display());
        crate::console::say(format_args!("megatest: session {} in {}", session.id(), session.dir().display()));
        for warning in &warnings {
            tracing::warn!(message = "config", warning = %warning);
        }
        if let Some(preset) = preset {
            crate::console::say(format_args!(
                "megatest: agents run preset {} (proven with {} {}): {}",
                preset.name, preset.proven.package, preset.proven.version, preset.notes
            ));
        }
        for key in &not_yet {
            tracing::info!(message = "parsed and validated, not yet enforced", key = %key);
        }
        forward_signals(signals, session.events());
        let _config_watch = session
            .config_path()
            .and_then(|path| watch_config(&path, session.events()));
        let progress_stop = tokio_util::sync::CancellationToken::new();
        let progress = tokio::spawn(progress::run(
            session.events(),
            progress_every,
            multi,
            progress_stop.clone(),
        ));
        let code = session.run().await;
        progress_stop.cancel();
        let _ = progress.await;
        backend_at_end.kill_all();
        code
    });
    let end = runtime
        .block_on(session_task)
        .unwrap_or_else(|join| Err(anyhow::anyhow!("session task failed: {join}")));
    agent_backend.shutdown();
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    end
}

/// `session.log` is rotated when it passes this many bytes.
pub const LOG_ROTATE_BYTES: usize = 64 << 20;
/// Rotated logs kept beside `session.log` (`session.log.1` is the newest).
pub const LOG_FILES_KEPT: usize = 5;

/// Log to stderr and to `session.log` in the session directory. `RUST_LOG` overrides
/// `[monitoring].log_level`.
fn init_logging(
    dir: &std::path::Path,
    level: &str,
    progress: Option<indicatif::MultiProgress>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::Layer;
    // Colours only on a terminal; per-call activity lines on the terminal only when asked for.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let verbose = matches!(level, "debug" | "trace");
    let stderr = match progress {
        Some(multi) => BoxMakeWriter::new(progress::ProgressWriter(multi)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("megatest={level},warn")));
    // Rotated by size: session.log, then session.log.1 … .5 (oldest dropped).
    let file = file_rotate::FileRotate::new(
        dir.join("session.log"),
        file_rotate::suffix::AppendCount::new(LOG_FILES_KEPT),
        file_rotate::ContentLimit::BytesSurpassed(LOG_ROTATE_BYTES),
        file_rotate::compression::Compression::None,
        None,
    );
    let (writer, guard) = tracing_appender::non_blocking(file);
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(stderr)
                .with_target(false)
                .with_ansi(ansi)
                .log_internal_errors(false)
                .with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
                    verbose || meta.target() != crate::session::ACTIVITY_TARGET
                })),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .log_internal_errors(false),
        )
        .try_init();
    result.ok().map(|_| guard)
}

/// Watch the session's config file (its directory, so that an editor's rename-into-place is
/// seen too); a change is a reload, as SIGHUP (at most one per 500 ms). None when the watch
/// cannot be set up (logged): SIGHUP still works.
fn watch_config(
    path: &std::path::Path,
    events: tokio::sync::mpsc::Sender<Event>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let path = path.canonicalize().ok()?;
    let dir = path.parent()?.to_path_buf();
    let name = path.file_name()?.to_os_string();
    let last = std::sync::Mutex::new(std::time::Instant::now() - std::time::Duration::from_secs(1));
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(name.as_os_str()));
        if !ours || event.kind.is_access() || event.kind.is_remove() {
            return;
        }
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= std::time::Duration::from_millis(500) {
            *last = std::time::Instant::now();
            let _ = events.try_send(Event::Reload);
        }
    };
    let mut watcher = notify::recommended_watcher(handler)
        .map_err(|err| tracing::warn!(message = "config file watch unavailable", error = %err))
        .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|err| tracing::warn!(message = "config file watch unavailable", error = %err))
        .ok()?;
    Some(watcher)
}

/// Register megatest's signal handlers (SIGTERM, SIGINT, SIGUSR2, SIGUSR1, SIGHUP). Done before the session is
/// created or reopened, so a signal arriving meanwhile waits in its stream instead of killing
/// the daemon with the default action.
fn install_signals() -> Vec<(tokio::signal::unix::Signal, Event)> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut installed = Vec::new();
    for (kind, event) in [
        (
            SignalKind::terminate(),
            Event::Signal(ShutdownSignal::Terminate),
        ),
        (
            SignalKind::interrupt(),
            Event::Signal(ShutdownSignal::Interrupt),
        ),
        (SignalKind::user_defined2(), Event::CheckpointRequest),
        (SignalKind::user_defined1(), Event::StatusRequest),
        (SignalKind::hangup(), Event::Reload),
    ] {
        match signal(kind) {
            Ok(stream) => installed.push((stream, event)),
            Err(err) => tracing::warn!(message = "cannot install signal handler", error = %err),
        }
    }
    installed
}

/// Forward each installed signal to the session as its event.
fn forward_signals(
    installed: Vec<(tokio::signal::unix::Signal, Event)>,
    events: tokio::sync::mpsc::Sender<Event>,
) {
    for (mut stream, event) in installed {
        let events = events.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let copy = match &event {
                    Event::Signal(signal) => Event::Signal(*signal),
                    Event::StatusRequest => Event::StatusRequest,
                    Event::Reload => Event::Reload,
                    _ => Event::CheckpointRequest,
                };
                if events.send(copy).await.is_err() {
                    break;
                }
            }
        });
    }
}
