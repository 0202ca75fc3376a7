//! `megatest resume SESSION`: continue a session whose daemon died (kill -9 included) or was
//! interrupted. Leftover agent process groups of the dead daemon are found by their recorded
//! process group ids and killed; the config is loaded again from the recorded path with the
//! recorded overrides; the session is rebuilt from `session.db` and runs on.

use crate::cli::checkpoints::find_session;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Session id (under --runs-dir) or path of a session directory
    pub session: String,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

pub fn run(args: ResumeArgs) -> anyhow::Result<i32> {
    let Some(dir) = find_session(&args.session, &args.runs_dir) else {
        return Ok(2);
    };
    crate::daemon::resume(&dir)
}
