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

/// `megatest vote CHOICE [REASON…]` (on every agent's PATH): cast a ballot in the vote of the
/// review task the agent runs, as a line of `$MEGATEST_EVENTS_FILE`.
#[derive(Debug, Args)]
pub struct VoteArgs {
    /// approve, reject or abstain
    pub choice: String,
    /// Why (free text)
    pub reason: Vec<String>,
    /// The agent's events file (set by megatest for every agent run)
    #[arg(long, env = "MEGATEST_EVENTS_FILE")]
    pub events_file: PathBuf,
}

/// `megatest note TEXT…` (on every agent's PATH): a note into the session's working memory, as
/// a line of `$MEGATEST_EVENTS_FILE`.
#[derive(Debug, Args)]
pub struct NoteArgs {
    /// The note
    #[arg(required = true)]
    pub text: Vec<String>,
    /// The agent's events file (set by megatest for every agent run)
    #[arg(long, env = "MEGATEST_EVENTS_FILE")]
    pub events_file: PathBuf,
}

/// `megatest propose TITLE [TEXT…]` (on every agent's PATH): put a proposal of the agent's own
/// to a vote of the other agents, as a line of `$MEGATEST_EVENTS_FILE`.
#[derive(Debug, Args)]
pub struct ProposeArgs {
    /// A one-line title (at most 200 characters)
    pub title: String,
    /// What is proposed and why
    pub text: Vec<String>,
    /// The agent's events file (set by megatest for every agent run)
    #[arg(long, env = "MEGATEST_EVENTS_FILE")]
    pub events_file: PathBuf,
}

/// Append one JSON line to `path` (one `write` of the whole line, so concurrent writers do not
/// interleave).
fn append_event(path: &std::path::Path, event: serde_json::Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut line = event.to_string();
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    file.write_all(line.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

pub fn vote(args: VoteArgs) -> anyhow::Result<i32> {
    let Some(choice) = crate::swarm::consensus::Choice::parse(&args.choice) else {
        eprintln!(
            "megatest vote: the choice must be approve, reject or abstain (got {:?})",
            args.choice
        );
        return Ok(2);
    };
    append_event(
        &args.events_file,
        serde_json::json!({"type": "vote", "choice": choice, "reason": args.reason.join(" ")}),
    )?;
    Ok(0)
}

pub fn note(args: NoteArgs) -> anyhow::Result<i32> {
    append_event(
        &args.events_file,
        serde_json::json!({"type": "note", "text": args.text.join(" ")}),
    )?;
    Ok(0)
}

pub fn propose(args: ProposeArgs) -> anyhow::Result<i32> {
    if args.title.trim().is_empty() {
        eprintln!("megatest propose: the title must not be blank");
        return Ok(2);
    }
    append_event(
        &args.events_file,
        serde_json::json!({"type": "proposal", "title": args.title, "text": args.text.join(" ")}),
    )?;
    Ok(0)
}
