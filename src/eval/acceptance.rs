//! Running a hidden acceptance suite against a project directory and reading its results.
//!
//! megatest runs `python -m pytest SUITE -p megatest_acceptance` in the suite's venv (see
//! [`super::provision`]), in a scratch directory, in its own process group, bounded by a wall-clock
//! timeout (`[limits].max_test_runtime_min` in a session). The plugin writes one JSON document
//! (cases with severity, kind, outcome and failure tail; measurements; the started server's
//! peak RSS) which [`summarise`] turns into an [`AcceptanceReport`]. Failed cases count as bugs
//! of their severity (the upstream `max_bugs_critical` / `_high` / `_medium`).

use super::suite::Suite;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One case of an acceptance suite as it ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaseResult {
    /// pytest's node id, e.g. `acceptance/test_cli.py::test_pop_on_an_empty_queue_fails`.
    pub id: String,
    /// The test function's name.
    pub name: String,
    /// `critical`, `high` or `medium`.
    pub severity: String,
    /// `integration`, `e2e`, `durability`, `robustness` or `performance`.
    pub kind: String,
    /// `passed`, `failed` or `skipped`.
    pub outcome: String,
    /// Wall seconds of set-up, call and tear-down.
    pub wall_secs: f64,
    /// The tail of the failure (assertion, server output), None when it passed.
    pub message: Option<String>,
}

/// A figure a case measured (throughput, ratios, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Measurement {
    /// The value (null when the case could not measure it).
    pub value: Option<f64>,
    /// Its unit, e.g. `ops/s`.
    pub unit: String,
    /// The project's target for it, when it has one.
    pub target: Option<f64>,
    /// How it was measured, or why it is null.
    pub note: Option<String>,
}

/// Failed cases by severity: the upstream `max_bugs_*` counts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BugCounts {
    /// Failed critical cases.
    pub critical: u64,
    /// Failed high cases.
    pub high: u64,
    /// Failed medium cases.
    pub medium: u64,
}

impl BugCounts {
    /// All bugs.
    pub fn total(&self) -> u64 {
        self.critical + self.high + self.medium
    }
}

/// What an acceptance run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptanceReport {
    /// The suite's directory.
    pub suite: String,
    /// `passed` (every case passed), `failed` (a case failed) or `not_run` (see `reason`).
    pub status: String,
    /// Why the suite failed or did not run (build failure, no venv, timeout, …).
    pub reason: Option<String>,
    /// Cases run.
    pub total: usize,
    /// Cases passed.
    pub passed: usize,
    /// Cases failed (their set-up, call or tear-down failed).
    pub failed: usize,
    /// Failed cases by severity.
    pub bugs: BugCounts,
    /// Every case, failures first.
    pub cases: Vec<CaseResult>,
    /// Figures the cases measured.
    pub measurements: BTreeMap<String, Measurement>,
    /// Peak resident memory of the started server's process group during the run, bytes
    /// (sampled every 0.2 s; None when no server was started).
    pub peak_rss_bytes: Option<u64>,
    /// Wall seconds of the whole run (venv set-up excluded).
    pub wall_secs: f64,
    /// The JUnit XML pytest wrote, when it did.
    pub junit_xml: Option<PathBuf>,
}

impl AcceptanceReport {
    /// A suite that did not run, with the reason.
    pub fn not_run(suite: &Path, reason: impl Into<String>) -> Self {
        AcceptanceReport {
            suite: suite.display().to_string(),
            status: "not_run".into(),
            reason: Some(reason.into()),
            total: 0,
            passed: 0,
            failed: 0,
            bugs: BugCounts::default(),
            cases: Vec::new(),
            measurements: BTreeMap::new(),
            peak_rss_bytes: None,
            wall_secs: 0.0,
            junit_xml: None,
        }
    }

    /// True when the suite ran and no critical case failed.
    pub fn critical_cases_pass(&self) -> Option<bool> {
        (self.status != "not_run").then_some(self.bugs.critical == 0)
    }

    /// Cases of `kind` (`integration`, `e2e`, …): (passed, total); None when the suite did not
    /// run or has no such case.
    pub fn kind_result(&self, kind: &str) -> Option<(usize, usize)> {
        let of_kind: Vec<_> = self.cases.iter().filter(|c| c.kind == kind).collect();
        (!of_kind.is_empty()).then(|| {
            (
                of_kind.iter().filter(|c| c.outcome == "passed").count(),
                of_kind.len(),
            )
        })
    }
}

/// The plugin's results document.
#[derive(Debug, Deserialize)]
struct ResultsFile {
    cases: Vec<CaseResult>,
    #[serde(default)]
    measurements: BTreeMap<String, Measurement>,
    #[serde(default)]
    peak_rss_bytes: Option<u64>,
}

/// Turn the plugin's results document into a report. `build_failure` (why the project did not
/// build) becomes the reason when cases failed.
pub fn summarise(
    suite: &Path,
    results_json: &str,
    build_failure: Option<&str>,
    wall_secs: f64,
) -> Result<AcceptanceReport, serde_json::Error> {
    let results: ResultsFile = serde_json::from_str(results_json)?;
    let mut cases = results.cases;
    cases.sort_by_key(|c| (c.outcome == "passed", severity_rank(&c.severity)));
    let mut bugs = BugCounts::default();
    for case in cases.iter().filter(|c| c.outcome == "failed") {
        match case.severity.as_str() {
            "critical" => bugs.critical += 1,
            "high" => bugs.high += 1,
            _ => bugs.medium += 1,
        }
    }
    let passed = cases.iter().filter(|c| c.outcome == "passed").count();
    let failed = bugs.total() as usize;
    let reason = match (failed, build_failure) {
        (0, _) => None,
        (_, Some(why)) => Some(format!("build failed: {why}")),
        (n, None) => Some(format!(
            "{n} of {} cases failed ({} critical, {} high, {} medium)",
            cases.len(),
            bugs.critical,
            bugs.high,
            bugs.medium
        )),
    };
    Ok(AcceptanceReport {
        suite: suite.display().to_string(),
        status: if failed == 0 && !cases.is_empty() {
            "passed".into()
        } else {
            "failed".into()
        },
        reason: if cases.is_empty() {
            Some("the suite ran no case".into())
        } else {
            reason
        },
        total: cases.len(),
        passed,
        failed,
        bugs,
        cases,
        measurements: results.measurements,
        peak_rss_bytes: results.peak_rss_bytes,
        wall_secs,
        junit_xml: None,
    })
}

fn severity_rank(severity: &str) -> u8 {
    match severity {
        "critical" => 0,
        "high" => 1,
        _ => 2,
    }
}

/// How to run a suite.
#[derive(Debug, Clone)]
pub struct RunSpec<'a> {
    /// The suite.
    pub suite: &'a Suite,
    /// The suite's venv (made by [`super::provision::ensure`]).
    pub venv: &'a Path,
    /// The project under test.
    pub project_dir: &'a Path,
    /// The CONTRACT's start command (empty when the spec has none).
    pub start_command: &'a str,
    /// Why the build failed, when it did (cases then fail with "build failed: …").
    pub build_failure: Option<&'a str>,
    /// Where results, JUnit XML and the cases' scratch files go (created).
    pub out_dir: &'a Path,
    /// Wall-clock bound of the whole run.
    pub timeout: Duration,
    /// Stop at the first failing case (pytest `-x`): quicker triage, fewer cases reported.
    pub fail_fast: bool,
}

/// Run the suite. Never fails: what went wrong is the report's `reason` (`not_run`).
pub async fn run(spec: RunSpec<'_>) -> AcceptanceReport {
    let started = Instant::now();
    let suite_dir = &spec.suite.dir;
    if let Err(err) = std::fs::create_dir_all(spec.out_dir) {
        return AcceptanceReport::not_run(
            suite_dir,
            format!("cannot create {}: {err}", spec.out_dir.display()),
        );
    }
    let results_path = spec.out_dir.join("acceptance_results.json");
    let junit_path = spec.out_dir.join("acceptance_junit.xml");
    let _ = std::fs::remove_file(&results_path);
    let scratch = spec.out_dir.join("scratch");
    let mut command = tokio::process::Command::new(spec.venv.join("bin/python"));
    command
        .args(["-m", "pytest"])
        .arg(suite_dir)
        .args(["-p", "megatest_acceptance", "-p", "no:cacheprovider", "-q"])
        .args(["-o", "junit_family=xunit1", "--basetemp"])
        .arg(&scratch)
        .arg("--junitxml")
        .arg(&junit_path)
        .arg("--results-json")
        .arg(&results_path)
        .arg("--project-dir")
        .arg(spec.project_dir)
        .arg("--start-command")
        .arg(spec.start_command)
        .arg("--build-failure")
        .arg(spec.build_failure.unwrap_or(""))
        .args(spec.fail_fast.then_some("-x"))
        .current_dir(spec.out_dir)
        .env_clear()
        .envs(crate::agent::inherited_env())
        .env("PYTHONPATH", &spec.suite.support_dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            return AcceptanceReport::not_run(suite_dir, format!("cannot start pytest: {err}"))
        }
    };
    let pgid = child.id().map(|pid| pid as i32);
    let waited = tokio::time::timeout(spec.timeout, child.wait_with_output()).await;
    if let Some(pgid) = pgid {
        crate::backend::local::kill_group(pgid);
    }
    let output = match waited {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => {
            return AcceptanceReport::not_run(suite_dir, format!("waiting for pytest: {err}"))
        }
        Err(_) => {
            return AcceptanceReport::not_run(
                suite_dir,
                format!(
                    "the suite did not finish within {} s (limits.max_test_runtime_min)",
                    spec.timeout.as_secs()
                ),
            )
        }
    };
    let wall_secs = started.elapsed().as_secs_f64();
    // The cases' scratch files (data directories, queue files) are not kept.
    let _ = std::fs::remove_dir_all(&scratch);
    match std::fs::read_to_string(&results_path) {
        Ok(text) => match summarise(suite_dir, &text, spec.build_failure, wall_secs) {
            Ok(mut report) => {
                report.junit_xml = junit_path.exists().then_some(junit_path);
                report
            }
            Err(err) => AcceptanceReport::not_run(
                suite_dir,
                format!("{}: not a results document: {err}", results_path.display()),
            ),
        },
        Err(_) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            AcceptanceReport::not_run(
                suite_dir,
                format!(
                    "pytest wrote no results ({}): {}",
                    output.status,
                    super::tail(text.as_bytes()).trim()
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(outcomes: &[(&str, &str, &str)]) -> String {
        let cases: Vec<_> = outcomes
            .iter()
            .map(|(name, severity, outcome)| {
                serde_json::json!({"id": format!("t.py::{name}"), "name": name, "severity": severity,
                    "kind": if name.starts_with("e2e") { "e2e" } else { "integration" },
                    "outcome": outcome, "wall_secs": 0.1, "message": null})
            })
            .collect();
        serde_json::json!({"cases": cases, "measurements": {"tput": {"value": 5.0, "unit": "ops/s", "target": 10.0, "note": null}}, "peak_rss_bytes": 1024})
            .to_string()
    }

    #[test]
    fn failures_count_as_bugs_of_their_severity_and_come_first() {
        let text = results(&[
            ("a", "critical", "passed"),
            ("b", "medium", "failed"),
            ("c", "critical", "failed"),
            ("e2e_d", "high", "failed"),
            ("e", "high", "skipped"),
        ]);
        let report = summarise(Path::new("s"), &text, None, 1.0).unwrap();
        assert_eq!(
            report.bugs,
            BugCounts {
                critical: 1,
                high: 1,
                medium: 1
            }
        );
        assert_eq!((report.total, report.passed, report.failed), (5, 1, 3));
        assert_eq!(report.status, "failed");
        assert_eq!(report.critical_cases_pass(), Some(false));
        assert_eq!(report.cases[0].name, "c");
        assert_eq!(report.kind_result("e2e"), Some((0, 1)));
        assert_eq!(report.kind_result("durability"), None);
        assert_eq!(report.measurements["tput"].value, Some(5.0));
        assert!(report.reason.unwrap().starts_with("3 of 5 cases failed"));
    }

    #[test]
    fn a_build_failure_is_the_reason_and_an_empty_run_is_not_a_pass() {
        let text = results(&[("a", "critical", "failed")]);
        let report = summarise(Path::new("s"), &text, Some("exit 101"), 1.0).unwrap();
        assert_eq!(report.reason.as_deref(), Some("build failed: exit 101"));
        let empty = summarise(Path::new("s"), &results(&[]), None, 1.0).unwrap();
        assert_eq!(empty.status, "failed");
        assert_eq!(
            AcceptanceReport::not_run(Path::new("s"), "x").critical_cases_pass(),
            None
        );
    }
}
