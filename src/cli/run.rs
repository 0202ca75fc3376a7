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
    /// Push the session directory to s3://BUCKET/PREFIX after every checkpoint and at every
    /// end (credentials, region and endpoint from the usual AWS variables)
    #[arg(long, env = "MEGATEST_SYNC", value_name = "S3_URL")]
    pub sync: Option<String>,
}

pub fn run(args: RunArgs) -> Result<i32> {
    let mut path = args
        .config
        .clone()
        .unwrap_or_else(crate::cli::default_config);
    if let Some(url) = path.to_str().filter(|p| p.starts_with("s3://")) {
        // An ECS task's config, uploaded by `megatest ecs launch`.
        match fetch_config(url, &args.runs_dir) {
            Ok(local) => path = local,
            Err(err) => {
                eprintln!("megatest: config {url}: {err}");
                return Ok(2);
            }
        }
    }
    let mut overrides = args.overrides.overrides();
    if let Some(url) = &args.sync {
        // Checked before anything is written: a session that cannot sync does not start.
        let settings = crate::backend::ecs::AwsSettings::default();
        if let Err(err) = crate::backend::ecs::sync::check_location(url, &settings) {
            eprintln!("megatest: --sync {url}: {err}");
            return Ok(2);
        }
        overrides.sync = Some(url.clone());
    }
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

/// Download the config at `url` (`s3://bucket/key`) to `<runs_dir>/.configs/<bucket>/<key>`.
fn fetch_config(url: &str, runs_dir: &std::path::Path) -> Result<PathBuf> {
    use crate::backend::ecs::{sync, Aws, AwsSettings};
    let location = sync::S3Url::parse(url)?;
    let Some((parent, name)) = location.prefix.rsplit_once('/') else {
        anyhow::bail!("{url} names no file");
    };
    let folder = sync::S3Url {
        bucket: location.bucket.clone(),
        prefix: parent.to_string(),
    };
    let text = crate::backend::ecs::block_on(async {
        let aws = Aws::connect(&AwsSettings::default()).await?;
        sync::read_text(&aws, &folder, name).await
    })?;
    let Some(text) = text else {
        anyhow::bail!("no such object");
    };
    let local = runs_dir
        .join(".configs")
        .join(&location.bucket)
        .join(&location.prefix);
    if let Some(dir) = local.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::fsutil::write_atomic(&local, text.as_bytes())?;
    Ok(std::path::absolute(&local)?)
}
