//! Writing the human-facing reports of a session directory (the IO edge of [`super::html`],
//! [`super::junit`] and [`super::markdown`]): `report.html` and `junit.xml` beside
//! `final_report.json`, and GitHub Actions' step summary. Used at every session end and by
//! `megatest report`.

use crate::store::Timeline;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The report formats `megatest report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `report.html`: the self-contained page.
    Html,
    /// `final_report.json`: the document itself.
    Json,
    /// `junit.xml`.
    Junit,
    /// `summary.md`: the Markdown summary (as appended to `GITHUB_STEP_SUMMARY`).
    Md,
}

impl Format {
    /// The file it is written to in the session directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Format::Html => "report.html",
            Format::Json => "final_report.json",
            Format::Junit => "junit.xml",
            Format::Md => "summary.md",
        }
    }
}

/// A report could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// JUnit serialisation failed.
    #[error("junit.xml: {0}")]
    Junit(#[from] quick_junit::SerializeError),
    /// JSON serialisation failed.
    #[error("final_report.json: {0}")]
    Json(#[from] serde_json::Error),
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] crate::fsutil::WriteError),
    /// The step summary could not be appended to.
    #[error("append to {path}: {source}")]
    Append {
        /// `GITHUB_STEP_SUMMARY`'s file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// `report` (a final report's document) in `format`; `artifacts` says where the session's
/// files are (for the Markdown summary).
///
/// Errors: JUnit or JSON serialisation.
pub fn render(
    format: Format,
    report: &Value,
    timeline: &Timeline,
    artifacts: &str,
) -> Result<String, ReportError> {
    Ok(match format {
        Format::Html => super::html::render(report, timeline),
        Format::Json => serde_json::to_string_pretty(report)? + "\n",
        Format::Junit => super::junit::session_junit(report)?,
        Format::Md => super::markdown::render(report, artifacts),
    })
}

/// Write `format` into `dir` atomically; returns the path written.
///
/// Errors: rendering or the write failed (the old file, if any, is left as it was).
pub fn write(
    dir: &Path,
    format: Format,
    report: &Value,
    timeline: &Timeline,
) -> Result<PathBuf, ReportError> {
    let path = dir.join(format.file_name());
    let text = render(format, report, timeline, &dir.display().to_string())?;
    crate::fsutil::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Where the artifacts of this GitHub Actions run are listed (its run page), from
/// `GITHUB_SERVER_URL`, `GITHUB_REPOSITORY` and `GITHUB_RUN_ID`; None outside Actions.
pub fn actions_run_url() -> Option<String> {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    Some(format!(
        "{}/{}/actions/runs/{} (artifacts)",
        var("GITHUB_SERVER_URL")?,
        var("GITHUB_REPOSITORY")?,
        var("GITHUB_RUN_ID")?
    ))
}

/// Append the Markdown summary of `report` to the file `GITHUB_STEP_SUMMARY` names, when it
/// is set; returns the file appended to.
///
/// Errors: the file cannot be opened or written.
pub fn append_step_summary(report: &Value, dir: &Path) -> Result<Option<PathBuf>, ReportError> {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    let artifacts = match actions_run_url() {
        Some(url) => format!("{} — {url}", dir.display()),
        None => dir.display().to_string(),
    };
    let text = super::markdown::render(report, &artifacts);
    let append = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    };
    append().map_err(|source| ReportError::Append {
        path: path.clone(),
        source,
    })?;
    Ok(Some(path))
}

/// The short block printed at the end of every run: verdict, criteria, tokens, cost, and
/// where `report.html` is.
pub fn terminal_summary(report: &Value, html: Option<&Path>) -> String {
    let (verdict, _) = super::digest::verdict(report);
    let usage = &report["usage"];
    let short = |v: &Value| v.as_f64().map_or("–".to_string(), super::svg::short);
    let mut lines = vec![
        format!(
            "megatest: session {} {} (exit code {}): {}",
            report["session_id"].as_str().unwrap_or("?"),
            verdict.to_uppercase(),
            report["exit_code"],
            report["ended_because"].as_str().unwrap_or("")
        ),
        format!("  criteria  {}", super::digest::criteria_line(report)),
        format!(
            "  tokens    {} in {} model calls · cost {}",
            short(&usage["total_tokens"]),
            short(&usage["model_calls"]),
            super::digest::cost_text(report)
        ),
        format!(
            "  tasks     {} of {} done · {} checkpoints · duration {}",
            short(&report["tasks"]["done"]),
            short(&report["tasks"]["total"]),
            short(&report["checkpoints"]["count"]),
            super::svg::duration(
                report["duration"]["session_secs"]
                    .as_f64()
                    .unwrap_or(f64::NAN)
            )
        ),
    ];
    match html {
        Some(path) => lines.push(format!("  report    {}", path.display())),
        None => lines.push("  report    report.html could not be written (see session.log)".into()),
    }
    lines.join("\n")
}
