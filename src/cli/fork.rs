//! `megatest fork CHECKPOINT --session-id NEW [--config PATH] [--provider …] [--time-scale …]
//! [--api-addr …] [--no-run]`: a new session from any checkpoint of any session (see
//! `checkpoint::fork`), run to its end like `megatest resume` unless `--no-run`. CHECKPOINT is
//! a `checkpoint_NNN.json` path or `SESSION:N` (an id under --runs-dir, or a directory). Exit
//! codes as `megatest run`; 2 when the fork is refused (nothing is created).

use crate::cli::checkpoints::find_session;
use crate::config::Overrides;
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct ForkArgs {
    /// The checkpoint: path of a checkpoint_NNN.json, or SESSION:N
    pub checkpoint: String,
    /// The new session's id (its directory under --runs-dir)
    #[arg(long)]
    pub session_id: String,
    /// Another config for the fork (default: the source session's); same project and agents
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The fork's model provider
    #[arg(long, value_enum)]
    pub provider: Option<super::ProviderArg>,
    /// The fork's time scale (session seconds per wall second)
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// The fork's control API address
    #[arg(long)]
    pub api_addr: Option<String>,
    /// Only make the fork (interrupted); `megatest resume NEW` runs it later
    #[arg(long)]
    pub no_run: bool,
    /// Directory holding session directories (the new one goes here too)
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

/// (session directory, checkpoint sequence) that `text` names.
fn locate(text: &str, runs_dir: &Path) -> Option<(PathBuf, u32)> {
    let path = PathBuf::from(text);
    if path.is_file() {
        let sequence = path
            .file_name()?
            .to_str()?
            .strip_prefix("checkpoint_")?
            .strip_suffix(".json")?
            .parse()
            .ok()?;
        let dir = path.parent()?.parent()?.to_path_buf();
        return dir.join("session.db").is_file().then_some((dir, sequence));
    }
    let (session, sequence) = text.rsplit_once(':')?;
    Some((find_session(session, runs_dir)?, sequence.parse().ok()?))
}

pub fn run(args: ForkArgs) -> anyhow::Result<i32> {
    let Some((source, sequence)) = locate(&args.checkpoint, &args.runs_dir) else {
        crate::console::say(format_args!(
            "megatest: {:?} names no checkpoint: give a checkpoint_NNN.json path or SESSION:N",
            args.checkpoint
        ));
        return Ok(2);
    };
    let valid_id = !args.session_id.is_empty()
        && args
            .session_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !args.session_id.starts_with('.');
    if !valid_id {
        crate::console::say(format_args!(
            "megatest: --session-id {:?}: use letters, digits, '-', '_' and '.'",
            args.session_id
        ));
        return Ok(2);
    }
    let source = std::path::absolute(&source)?;
    let new_dir = std::path::absolute(args.runs_dir.join(&args.session_id))?;
    let source_db = crate::store::Store::open(&source.join("session.db"))?;
    let origin = source_db.session_origin()?;
    drop(source_db);
    let config_path = match &args.config {
        Some(path) => std::path::absolute(path)?.display().to_string(),
        None => match origin.config_path {
            Some(path) => path,
            None => {
                crate::console::say(format_args!(
                    "megatest: session {} does not record its config: give --config",
                    origin.id
                ));
                return Ok(2);
            }
        },
    };
    let mut overrides: Overrides =
        serde_json::from_str(origin.overrides.as_deref().unwrap_or("{}"))?;
    overrides.session_id = Some(args.session_id.clone());
    if let Some(provider) = args.provider {
        overrides.provider = Some(provider.into());
    }
    if let Some(scale) = args.time_scale {
        overrides.time_scale = Some(scale);
    }
    if let Some(address) = args.api_addr {
        overrides.api_addr = Some(address);
    }
    // The config must load before anything is made.
    if let Err(err) = crate::config::load(Path::new(&config_path), &overrides) {
        crate::console::say(format_args!(
            "megatest: the fork's config does not load:\n{err}"
        ));
        return Ok(2);
    }
    let forked = match crate::checkpoint::fork::fork(&source, sequence, &new_dir, &args.session_id)?
    {
        Ok(forked) => forked,
        Err(refused) => {
            crate::console::say(format_args!("megatest: fork refused: {refused}"));
            return Ok(2);
        }
    };
    let db = crate::store::Store::open(&new_dir.join("session.db"))?;
    db.set_session_origin(
        &args.session_id,
        &config_path,
        &serde_json::to_value(&overrides)?,
        0,
    )?;
    db.mark_interrupted()?;
    drop(db);
    crate::console::say(format_args!(
        "megatest: session {} forked from checkpoint {} of {} (session second {:.1}; {} files) into {}",
        args.session_id,
        forked.origin.checkpoint,
        forked.origin.session_id,
        forked.origin.checkpoint_session_secs,
        forked.files,
        new_dir.display()
    ));
    if args.no_run {
        return Ok(0);
    }
    crate::daemon::resume(&new_dir)
}
