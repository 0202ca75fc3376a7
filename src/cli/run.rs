//! `megatest run [CONFIG]`: validate and prepare (nothing on disk before both pass), then hand
//! the session to [`crate::daemon::run`].

use crate::cli::OverrideArgs;
use crate::session;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (default configs/mega_test_config.toml)
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

pub fn run(args: RunArgs) -> Result<i32> {
    let path = args
        .config
        .clone()
        .unwrap_or_else(crate::cli::default_config);
    let overrides = args.overrides.overrides();
    let config = match crate::config::load(&path, &overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("megatest: invalid config:\n{err}");
            return Ok(2);
        }
    };
    let prepared = match session::prepare(config, &overrides, &args.runs_dir) {
        Ok(prepared) => prepared,
        Err(err) => {
            eprintln!("megatest: {err}");
            return Ok(2);
        }
    };
    crate::daemon::run(prepared)
}
