//! `megatest resume SESSION`: continue a session whose daemon died (kill -9 included) or was
//! interrupted. Leftover agent process groups of the dead daemon are found by their recorded
//! process group ids and killed; the config is loaded again from the recorded path with the
//! recorded overrides; the session is rebuilt from `session.db` and runs on.
//!
//! `megatest resume s3://BUCKET/PREFIX/ID` first pulls a session that `--sync` pushed there
//! (an ECS task stopped by a Spot interruption, another machine) into `--runs-dir/ID`: its
//! workspace is written from its newest checkpoint, its paths made this machine's, its config
//! taken from `config.source.toml` when the recorded file is not here; then it runs on, still
//! syncing to the same place.

use crate::cli::checkpoints::find_session;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Session id (under --runs-dir), path of a session directory, or the s3://BUCKET/PREFIX/ID
    /// a synced session was pushed to
    pub session: String,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

pub fn run(args: ResumeArgs) -> anyhow::Result<i32> {
    if args.session.starts_with("s3://") {
        return from_s3(&args);
    }
    let Some(dir) = find_session(&args.session, &args.runs_dir) else {
        return Ok(2);
    };
    // A copy collected from S3 by an older megatest, or a workspace removed by hand: written
    // again from the newest checkpoint that verifies, or refused (agents need one to work in).
    if !dir.join("project").is_dir() {
        match crate::checkpoint::restore::restore_workspace(&dir)? {
            Some((seq, written)) => crate::console::say(format_args!(
                "megatest: {} was missing: written from checkpoint {seq} ({written} files)",
                dir.join("project").display()
            )),
            None => {
                eprintln!(
                    "megatest: {} is missing and no checkpoint of the session verifies to write it from: the session cannot go on",
                    dir.join("project").display()
                );
                return Ok(2);
            }
        }
    }
    crate::daemon::resume(&dir)
}

/// Make a session directory pulled from S3 this machine's: its workspace written from its
/// newest checkpoint that verifies (S3 holds none), its recorded paths moved under `dir`, and
/// its config taken from `config.source.toml` when the recorded file is not here. Returns
/// (checkpoint sequence, files written) of the workspace, None when no checkpoint verifies.
///
/// Errors: the checkpoint store, the workspace or `session.db` cannot be read or written.
pub(crate) fn adopt_pulled(dir: &std::path::Path) -> anyhow::Result<Option<(u32, u64)>> {
    let restored = crate::checkpoint::restore::restore_workspace(dir)?;
    let mut store = crate::store::Store::open(&dir.join("session.db"))?;
    let recorded = store.session_origin()?.config_path;
    let source = dir.join(crate::backend::ecs::sync::SOURCE_CONFIG);
    let config = match recorded {
        Some(path) if std::path::Path::new(&path).is_file() => None,
        _ if source.is_file() => Some(source),
        _ => None,
    };
    store.relocate(dir, config.as_deref())?;
    store.close()?;
    Ok(restored)
}

fn from_s3(args: &ResumeArgs) -> anyhow::Result<i32> {
    use crate::backend::ecs::{sync, Aws, AwsSettings};
    let url = match sync::S3Url::parse(&args.session) {
        Ok(url) => url,
        Err(err) => {
            eprintln!("megatest: {err}");
            return Ok(2);
        }
    };
    let Some(id) = url.last_segment().map(str::to_string) else {
        eprintln!(
            "megatest: {} names no session: give s3://BUCKET/PREFIX/SESSION_ID",
            args.session
        );
        return Ok(2);
    };
    let dir = args.runs_dir.join(&id);
    if dir.join("session.db").exists() {
        eprintln!(
            "megatest: {} holds session {id} already: resume it with `megatest resume {id}`, or move it away to pull {url} again",
            dir.display()
        );
        return Ok(2);
    }
    let pulled = crate::backend::ecs::block_on(async {
        let aws = Aws::connect(&AwsSettings::default()).await?;
        sync::check_bucket(&aws, &url.bucket).await?;
        sync::pull(&aws, &url, &dir).await
    });
    let files = match pulled {
        Ok(files) => files,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("megatest: resume {url}: {err}");
            return Ok(2);
        }
    };
    if !dir.join("session.db").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("megatest: {url} holds no session (no session.db among {files} files)");
        return Ok(2);
    }
    let dir = std::fs::canonicalize(&dir)?;
    let restored = adopt_pulled(&dir)?;
    crate::console::say(format_args!(
        "megatest: pulled {files} files of session {id} from {url} into {}{}",
        dir.display(),
        match restored {
            Some((seq, written)) => format!("; workspace from checkpoint {seq} ({written} files)"),
            None => "; no checkpoint to write the workspace from".into(),
        }
    ));
    crate::daemon::resume(&dir)
}
