//! `megatest compare A B [C…]`: ended sessions side by side — duration, tokens, cost, tool
//! calls, tasks, criteria, acceptance pass rate, coverage, LOC, tokens/LOC, recoveries, trust —
//! with the differences to the first (the baseline) marked. Exit 0, 1 when a session has no
//! final report yet, 2 when one is not found.

use crate::report::compare;
use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompareFormat {
    /// An aligned table for the terminal
    Table,
    /// A Markdown table
    Md,
    /// JSON (`sessions`, `rows` with `cells`: value, text, delta; `differs`)
    Json,
    /// A self-contained HTML page
    Html,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Two or more sessions (ids under --runs-dir, or session directories); the first is the
    /// baseline
    #[arg(required = true, num_args = 2..)]
    pub sessions: Vec<String>,
    /// How to print the comparison
    #[arg(long, value_enum, default_value = "table")]
    pub format: CompareFormat,
    /// Write it to this file instead of stdout
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

pub fn run(args: CompareArgs) -> anyhow::Result<i32> {
    let mut reports = Vec::new();
    for session in &args.sessions {
        let Some(dir) = super::checkpoints::find_session(session, &args.runs_dir) else {
            return Ok(2);
        };
        let store = crate::store::Store::open(&dir.join("session.db"))?;
        let Some(report) = super::report::final_report(&store, &dir, session)? else {
            return Ok(1);
        };
        reports.push(report);
    }
    let comparison = compare::compare(&reports);
    let text = match args.format {
        CompareFormat::Table => compare::table(&comparison),
        CompareFormat::Md => compare::markdown(&comparison),
        CompareFormat::Json => serde_json::to_string_pretty(&comparison)? + "\n",
        CompareFormat::Html => compare::html(&comparison),
    };
    match args.output {
        Some(path) => {
            crate::fsutil::write_atomic(&path, text.as_bytes())?;
            crate::console::say(format_args!("megatest: wrote {}", path.display()));
        }
        None => crate::console::print(text.trim_end()),
    }
    Ok(0)
}
