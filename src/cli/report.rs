//! `megatest report SESSION [--format html|json|junit|md] [--output PATH]`: rebuild a report of
//! an ended session from its `session.db` (the final report kept there, the timeline), or from
//! its `final_report.json` for sessions that ended before session.db kept the report. Writes
//! into the session directory unless `--output` says elsewhere (`-`: stdout). Exit 0 when
//! written, 1 when the session has no final report yet, 2 when it is not found.

use crate::report::files::{self, Format};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Session id (under --runs-dir) or path of a session directory
    pub session: String,
    /// What to write
    #[arg(long, value_enum, default_value = "html")]
    pub format: Format,
    /// Where to write it (`-`: stdout); default: the session directory (report.html,
    /// final_report.json, junit.xml or summary.md)
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

pub fn run(args: ReportArgs) -> anyhow::Result<i32> {
    let Some(dir) = super::checkpoints::find_session(&args.session, &args.runs_dir) else {
        return Ok(2);
    };
    let store = crate::store::Store::open(&dir.join("session.db"))?;
    let Some(document) = final_report(&store, &dir, &args.session)? else {
        return Ok(1);
    };
    let timeline = store.timeline()?;
    let artifacts = dir.display().to_string();
    let text = files::render(args.format, &document, &timeline, &artifacts)?;
    let target = args
        .output
        .unwrap_or_else(|| dir.join(args.format.file_name()));
    if target.as_os_str() == "-" {
        crate::console::print(text.trim_end());
    } else {
        crate::fsutil::write_atomic(&target, text.as_bytes())?;
        crate::console::say(format_args!("megatest: wrote {}", target.display()));
    }
    Ok(0)
}

/// The final report of the session in `dir`: the one session.db keeps, else its
/// `final_report.json`; None (said on stderr, naming `session` as the operator gave it) when
/// the session has not ended.
///
/// Errors: unreadable database, or a `final_report.json` that is not JSON.
pub(crate) fn final_report(
    store: &crate::store::Store,
    dir: &std::path::Path,
    session: &str,
) -> anyhow::Result<Option<serde_json::Value>> {
    if let Some(document) = store.final_report()? {
        return Ok(Some(document));
    }
    let file = dir.join("final_report.json");
    match std::fs::read(&file) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).map_err(|err| {
                anyhow::anyhow!("{}: {err}", file.display())
            })?))
        }
        Err(_) => {
            let status = crate::store::session_summary(&dir.join("session.db"))
                .map_or_else(|_| "unknown".into(), |s| s.status);
            crate::console::say(format_args!(
                "megatest: session {} has no final report yet (status {status}): it is written \
                 when the session ends; `megatest status {session}` shows a running one",
                dir.display(),
            ));
            Ok(None)
        }
    }
}
