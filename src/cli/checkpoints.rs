//! `megatest checkpoints SESSION [--verify]`: list a session's checkpoints; with `--verify`,
//! check each one's hash and every object it references. Exit 0 when all are valid, 1 when any
//! is not, 2 when the session is not found.

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    /// Session id (under --runs-dir) or path of a session directory
    pub session: String,
    /// Verify every checkpoint: its own SHA-256, and presence and hash of its objects
    #[arg(long)]
    pub verify: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

/// The session directory `session` names: a path, or an id under `runs_dir`.
pub fn session_dir(session: &str, runs_dir: &std::path::Path) -> Option<PathBuf> {
    let as_path = PathBuf::from(session);
    if as_path.join("session.db").is_file() {
        return Some(as_path);
    }
    let under = runs_dir.join(session);
    under.join("session.db").is_file().then_some(under)
}

/// [`session_dir`], or None after telling the operator on stderr.
pub fn find_session(session: &str, runs_dir: &std::path::Path) -> Option<PathBuf> {
    let found = session_dir(session, runs_dir);
    if found.is_none() {
        eprintln!(
            "megatest: no session {session:?} (neither a session directory nor an id under {})",
            runs_dir.display()
        );
    }
    found
}

pub fn run(args: CheckpointsArgs) -> anyhow::Result<i32> {
    let Some(dir) = find_session(&args.session, &args.runs_dir) else {
        return Ok(2);
    };
    let infos = crate::checkpoint::inspect(&dir.join("checkpoints"), args.verify)?;
    let bad = infos.iter().filter(|i| !i.problems.is_empty()).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
    } else {
        println!(
            "{:>4}  {:<10} {:<25} {:<13} {:>7} {:>12}  status",
            "seq", "trigger", "timestamp", "phase", "files", "new bytes"
        );
        for info in &infos {
            let status = match (args.verify, info.problems.is_empty()) {
                (false, _) => "not verified".to_string(),
                (true, true) => "valid".to_string(),
                (true, false) => format!("INVALID: {}", info.problems.join("; ")),
            };
            println!(
                "{:>4}  {:<10} {:<25} {:<13} {:>7} {:>12}  {status}",
                info.sequence,
                info.trigger.as_deref().unwrap_or("-"),
                info.timestamp.as_deref().unwrap_or("-"),
                info.phase.as_deref().unwrap_or("-"),
                info.files.map(|f| f.to_string()).unwrap_or("-".into()),
                info.new_bytes.map(|f| f.to_string()).unwrap_or("-".into()),
            );
        }
        if infos.is_empty() {
            println!("(no checkpoints in {})", dir.join("checkpoints").display());
        }
    }
    Ok(if bad > 0 { 1 } else { 0 })
}
