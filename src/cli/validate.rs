//! `megatest validate CONFIG`: parse, override and validate; nothing else.

use crate::cli::OverrideArgs;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Config file (upstream Selfware format plus megatest's sections)
    pub config: PathBuf,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

pub fn run(args: ValidateArgs) -> anyhow::Result<i32> {
    // `megatest validate … | head` ends quietly.
    crate::cli::control::quiet_on_closed_pipe();
    match crate::config::load(&args.config, &args.overrides.overrides()) {
        Ok(config) => {
            println!(
                "{}: ok — project {:?} ({}), {} agents, {} phases over {} h, provider {}",
                config.path.display(),
                config.raw.session.project_type,
                config.spec_dir.display(),
                config.agent_roles.len(),
                config.phases.len(),
                config.raw.session.duration_hours,
                config
                    .provider()
                    .map(|p| p.as_str())
                    .unwrap_or("not configured"),
            );
            for warning in &config.warnings {
                println!("warning: {warning}");
            }
            for key in &config.not_yet_enforced {
                println!("not yet enforced: {key}");
            }
            Ok(0)
        }
        Err(err) => {
            eprintln!("megatest: invalid config:\n{err}");
            Ok(2)
        }
    }
}
