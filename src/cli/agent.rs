//! `megatest agent`: run the reference agent on one task (see [`crate::agent::reference`]).

use crate::agent::reference::{self, AgentArgs};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct AgentCommandArgs {
    /// File holding the task prompt
    #[arg(long)]
    pub prompt_file: PathBuf,
    /// Model calls allowed before giving up (exit 3)
    #[arg(long, default_value_t = 50)]
    pub max_iterations: u32,
    /// The agent's role, named in its system prompt
    #[arg(long, env = "MEGATEST_ROLE", default_value = "Coder")]
    pub role: String,
    /// OpenAI-compatible base URL including /v1
    #[arg(long, env = "MEGATEST_BASE_URL")]
    pub base_url: String,
    /// Bearer key for the base URL
    #[arg(long, env = "MEGATEST_AGENT_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Model name to ask for
    #[arg(long, env = "MEGATEST_MODEL")]
    pub model: String,
}

pub fn run(args: AgentCommandArgs) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let exit = runtime.block_on(reference::run(AgentArgs {
        prompt_file: args.prompt_file,
        max_iterations: args.max_iterations,
        base_url: args.base_url,
        api_key: args.api_key,
        model: args.model,
        role: args.role,
    }))?;
    Ok(exit as i32)
}
