//! `megatest restore SESSION --checkpoint N|PATH [--no-resume]`: roll the workspace and the task
//! board back to a checkpoint, then continue the session from there (as `megatest resume`).
//!
//! Non-destructive: later checkpoints stay, the ledger stays (tokens spent after the checkpoint
//! remain spent and counted), and the rollback is an event the report lists. The checkpoint is
//! verified first; a corrupt or truncated one is reported and the previous valid one is used.
//! The phase the checkpoint was taken in gets back the time box it had left then.

use crate::cli::checkpoints::find_session;
use crate::store::Store;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Session id (under --runs-dir) or path of a session directory
    pub session: String,
    /// Checkpoint sequence number, or path of a checkpoint_NNN.json
    #[arg(long)]
    pub checkpoint: String,
    /// Only roll back; leave the session interrupted instead of continuing it
    #[arg(long)]
    pub no_resume: bool,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<i32> {
    let Some(dir) = find_session(&args.session, &args.runs_dir) else {
        return Ok(2);
    };
    let wanted: u32 = match args.checkpoint.parse() {
        Ok(seq) => seq,
        Err(_) => PathBuf::from(&args.checkpoint)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.strip_prefix("checkpoint_")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .with_context(|| {
                format!(
                    "{:?} is neither a sequence number nor a checkpoint_NNN.json path",
                    args.checkpoint
                )
            })?,
    };
    {
        let store = Store::open(&dir.join("session.db"))?;
        if let Some(pid) = store
            .session_origin()?
            .daemon_pid
            .filter(|pid| crate::daemon::daemon_alive(*pid))
        {
            eprintln!(
                "megatest: the session is running (megatest pid {pid}); stop it before restoring"
            );
            return Ok(2);
        }
    }
    let rollback = crate::checkpoint::restore::roll_back(&dir, wanted)?;
    for line in rollback.to_string().lines() {
        crate::console::say(format_args!("megatest: {line}"));
    }
    if rollback.used().is_none() {
        return Ok(2);
    }
    if args.no_resume {
        return Ok(0);
    }
    crate::daemon::resume(&dir)
}
