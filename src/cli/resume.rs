//! `megatest resume SESSION`: continue a session whose daemon died (kill -9 included) or was
//! interrupted. Leftover agent process groups of the dead daemon are found by their recorded
//! process group ids and killed; the config is loaded again from the recorded path with the
//! recorded overrides; the session is rebuilt from `session.db` and runs on.

use crate::cli::checkpoints::find_session;
use crate::config::Overrides;
use crate::store::Store;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Session id (under --runs-dir) or path of a session directory
    pub session: String,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
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

pub fn run(args: ResumeArgs) -> anyhow::Result<i32> {
    let Some(dir) = find_session(&args.session, &args.runs_dir) else {
        return Ok(2);
    };
    let store = Store::open(&dir.join("session.db"))?;
    let crate::store::SessionOrigin {
        id,
        status,
        config_path,
        overrides,
        daemon_pid: pid,
    } = store.session_origin()?;
    if matches!(status.as_str(), "complete" | "failed") {
        eprintln!("megatest: session {id} already ended ({status}); nothing to resume");
        return Ok(2);
    }
    if let Some(pid) = pid.filter(|pid| daemon_alive(*pid)) {
        eprintln!("megatest: session {id} is still running (megatest pid {pid}); stop it first");
        return Ok(2);
    }
    let Some(config_path) = config_path else {
        eprintln!("megatest: session {id} does not record its config; it cannot be resumed");
        return Ok(2);
    };
    let overrides: Overrides = serde_json::from_str(overrides.as_deref().unwrap_or("{}"))?;
    let killed = kill_orphans(&store, &dir)?;
    let last = store.last_session_secs()?;
    let closed = store.close_open_runs(last, "lost_with_daemon")?;
    if killed + closed > 0 {
        eprintln!("megatest: stopped {killed} leftover agent process group(s); {closed} run(s) marked lost_with_daemon");
    }
    drop(store);
    let config = match crate::config::load(Path::new(&config_path), &overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("megatest: the session's config no longer loads:\n{err}");
            return Ok(2);
        }
    };
    let prepared = match crate::session::prepare_resume(config, &overrides, id, dir) {
        Ok(prepared) => prepared,
        Err(err) => {
            eprintln!("megatest: {err}");
            return Ok(2);
        }
    };
    crate::cli::run::drive(prepared, true)
}
