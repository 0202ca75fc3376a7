//! Evaluation of the produced code: phase checks (the spec's build and test commands run for
//! real in `project/`) and the success criteria derived from them.

pub mod acceptance;
pub mod evaluation;
pub mod measure;
pub mod provision;
pub mod suite;

use crate::store::CheckRow;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes of combined stdout/stderr kept from each check.
pub const OUTPUT_TAIL_BYTES: usize = 4096;

/// Run `command` with `sh -c` in `workspace` (stderr merged into stdout) in its own process
/// group, killed as a group after `timeout` (wall). Never fails: a command that cannot start is
/// a failed check with the reason in its output.
pub async fn run_check(
    phase: &str,
    name: &str,
    command: &str,
    workspace: &Path,
    timeout: Duration,
) -> CheckRow {
    run_check_env(phase, name, command, workspace, timeout, &[]).await
}

/// [`run_check`] with `env` added to (or replacing in) the inherited environment.
pub async fn run_check_env(
    phase: &str,
    name: &str,
    command: &str,
    workspace: &Path,
    timeout: Duration,
    env: &[(String, String)],
) -> CheckRow {
    let started = Instant::now();
    let spawned = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(workspace)
        .env_clear()
        .envs(crate::agent::inherited_env())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut row = CheckRow {
        phase: phase.to_string(),
        name: name.to_string(),
        command: command.to_string(),
        exit_code: None,
        passed: false,
        timed_out: false,
        wall_secs: 0.0,
        output_tail: String::new(),
    };
    let child = match spawned {
        Ok(child) => child,
        Err(err) => {
            row.output_tail = format!("cannot start sh: {err}");
            return row;
        }
    };
    let pgid = child.id().map(|pid| pid as i32);
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => {
            row.exit_code = output.status.code();
            row.passed = output.status.success();
            row.output_tail = tail(&output.stdout);
        }
        Ok(Err(err)) => row.output_tail = format!("waiting for the check failed: {err}"),
        Err(_) => {
            row.timed_out = true;
            row.output_tail = format!(
                "timed out after {} s (limits.max_test_runtime_min)",
                timeout.as_secs()
            );
        }
    }
    if let Some(pgid) = pgid {
        crate::backend::local::kill_group(pgid);
    }
    row.wall_secs = started.elapsed().as_secs_f64();
    row
}

/// The last [`OUTPUT_TAIL_BYTES`] of `bytes`, on a character boundary.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= OUTPUT_TAIL_BYTES {
        return text.into_owned();
    }
    let mut start = text.len() - OUTPUT_TAIL_BYTES;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// One line saying how a check ended, for criteria evidence.
pub fn describe_check(check: &CheckRow) -> String {
    let ending = match (check.timed_out, check.exit_code) {
        (true, _) => "timed out".to_string(),
        (false, Some(code)) => format!("exited {code}"),
        (false, None) => "was killed by a signal or did not start".to_string(),
    };
    format!(
        "`{}` {ending} after {:.1} s",
        check.command, check.wall_secs
    )
}

/// How one upstream success criterion (free text from `[[phases]].success_criteria`) is judged.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CriterionResult {
    /// The phase it belongs to.
    pub phase: String,
    /// The criterion as written in the config.
    pub criterion: String,
    /// true / false when judged; null when no objective check exists for it yet.
    pub met: Option<bool>,
    /// How it was judged, or why it was not.
    pub evidence: String,
    /// Critical criteria decide the exit code (0 all met, 1 otherwise); `tier == critical`.
    pub critical: bool,
    /// The seed's tier it belongs to.
    pub tier: Tier,
}

/// The tiers of the seed's success criteria, plus the upstream targets and phase criteria.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Decides the exit code: a criterion judged false fails the session (null does not).
    Critical,
    /// The seed's "important" tier.
    Important,
    /// The seed's "nice to have" tier.
    NiceToHave,
    /// An upstream `[project.target]` / `[project.performance]` target or a seed grade.
    Target,
    /// An upstream `[[phases]].success_criteria` entry.
    Phase,
}

/// Line coverage from a coverage command's output: the last number on its last non-empty line,
/// a percentage (`87`, `87.5%`) or a fraction (`0.875`). Returns a fraction in 0..=1.
/// `coverage report --format=total` prints exactly such a line.
pub fn parse_coverage(output: &str) -> Option<f64> {
    let line = output.lines().rev().find(|l| !l.trim().is_empty())?;
    let number: String = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .rfind(|part| !part.is_empty() && part.parse::<f64>().is_ok())?
        .to_string();
    let value: f64 = number.parse().ok()?;
    let fraction = if line.contains('%') || value > 1.0 {
        value / 100.0
    } else {
        value
    };
    (0.0..=1.0).contains(&fraction).then_some(fraction)
}

/// The number in a criterion such as "Test coverage >= 70%" or "Documentation 100% complete",
/// as a fraction.
fn percent_in(text: &str) -> Option<f64> {
    let at = text.find('%')?;
    let digits: String = text[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse::<f64>().ok().map(|v| v / 100.0)
}

fn check_result(check: Option<&CheckRow>, name: &str) -> (Option<bool>, String) {
    match check {
        Some(check) => (Some(check.passed), describe_check(check)),
        None => (None, format!("not judged: the {name} check did not run")),
    }
}

fn no_evaluation() -> (Option<bool>, String) {
    (
        None,
        "not judged: no evaluation ran at this phase's end ([evaluation].phases)".into(),
    )
}

fn suite_not_run(evaluation: &evaluation::Evaluation) -> (Option<bool>, String) {
    (
        None,
        format!(
            "not judged: the acceptance suite did not run: {}",
            evaluation.acceptance.reason.as_deref().unwrap_or("")
        ),
    )
}

fn kind_cases(evaluation: &evaluation::Evaluation, kind: &str) -> (Option<bool>, String) {
    let acceptance = &evaluation.acceptance;
    match acceptance.kind_result(kind) {
        Some((passed, total)) => (
            Some(passed == total),
            format!("{passed} of {total} {kind} cases of the acceptance suite passed"),
        ),
        None if acceptance.status == "not_run" => suite_not_run(evaluation),
        None => (
            None,
            format!("not judged: the acceptance suite has no {kind} case"),
        ),
    }
}

/// What a phase's success criteria are judged from.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseEvidence<'a> {
    /// The checks run at the phase's end.
    pub checks: &'a [CheckRow],
    /// The evaluation at the phase's end, if one ran.
    pub evaluation: Option<&'a evaluation::Evaluation>,
    /// The session's newest checkpoint and what is wrong with it (empty: it verifies), from
    /// [`crate::checkpoint::audit`]; None when none was recorded or nothing was verified.
    pub newest_checkpoint: Option<&'a (u32, Vec<String>)>,
}

/// Judge a phase's upstream success criteria (free text) from its checks and its evaluation.
/// The mapping (by what the criterion mentions, first match wins):
///
/// | criterion mentions | judged by |
/// | --- | --- |
/// | "integration test" | the acceptance suite's `integration` cases all pass |
/// | "e2e" / "end-to-end" | its `e2e` cases all pass |
/// | "core feature" | its critical cases pass |
/// | "critical/high bug", "bugs fixed" | no critical or high bug (failed cases, scan findings) |
/// | "security scan" | the security scan found nothing |
/// | "security issue" | the scan found no critical or high finding |
/// | "coverage" | the evaluation's line coverage ≥ the criterion's percentage |
/// | "documentation" | documentation coverage ≥ the criterion's percentage (100 % if none) |
/// | "performance target" | every figure the suite measured against a target reaches it |
/// | "ci pipeline" | the build and test checks both pass |
/// | "compile" / "build" | the build check |
/// | "tests pass" / "tests passing" | the test check (and the acceptance suite, when it ran) |
/// | "release artifact" | the binary the start command runs exists |
/// | "checkpoint" | the session's newest checkpoint verifies (seal and every object) |
///
/// Anything else ("interfaces defined", "architecture document complete") is `null` with the
/// reason.
pub fn judge_criteria(
    phase: &str,
    criteria: &[String],
    evidence: PhaseEvidence<'_>,
) -> Vec<CriterionResult> {
    let PhaseEvidence {
        checks,
        evaluation,
        newest_checkpoint,
    } = evidence;
    let find = |name: &str| checks.iter().find(|c| c.name == name);
    criteria
        .iter()
        .map(|criterion| {
            let lower = criterion.to_lowercase();
            let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
            let (met, evidence) = match evaluation {
                _ if has(&["integration test"]) => match evaluation {
                    Some(e) => kind_cases(e, "integration"),
                    None => no_evaluation(),
                },
                _ if has(&["e2e", "end-to-end", "end to end"]) => match evaluation {
                    Some(e) => kind_cases(e, "e2e"),
                    None => no_evaluation(),
                },
                Some(e) if has(&["core feature"]) => match e.acceptance.critical_cases_pass() {
                    Some(pass) => (
                        Some(pass),
                        format!(
                            "{} critical acceptance cases failed ({} of {} cases passed)",
                            e.acceptance.bugs.critical, e.acceptance.passed, e.acceptance.total
                        ),
                    ),
                    None => suite_not_run(e),
                },
                Some(e) if has(&["critical/high bug", "bugs fixed"]) => {
                    match e.acceptance.status.as_str() {
                        "not_run" => suite_not_run(e),
                        _ => (
                            Some(e.bugs.critical + e.bugs.high == 0),
                            format!(
                                "{} critical and {} high bugs (acceptance failures and scan findings)",
                                e.bugs.critical, e.bugs.high
                            ),
                        ),
                    }
                }
                Some(e) if has(&["security scan"]) => (
                    e.security.clean(),
                    match &e.security.findings.value {
                        Some(f) => format!("{}: {} findings", e.security.method, f.total()),
                        None => format!(
                            "not judged: {}",
                            e.security.findings.reason.as_deref().unwrap_or("")
                        ),
                    },
                ),
                Some(e) if has(&["security issue"]) => match &e.security.findings.value {
                    Some(f) => (
                        Some(f.critical + f.high == 0),
                        format!("{}: {} critical, {} high findings", e.security.method, f.critical, f.high),
                    ),
                    None => (
                        None,
                        format!("not judged: {}", e.security.findings.reason.as_deref().unwrap_or("")),
                    ),
                },
                Some(e) if has(&["coverage"]) => {
                    let limit = percent_in(&lower);
                    match (e.test_coverage.value, limit) {
                        (Some(value), Some(limit)) => (
                            Some(value >= limit),
                            format!("{:.1} % of lines covered", value * 100.0),
                        ),
                        (None, _) => (
                            None,
                            format!("not judged: {}", e.test_coverage.reason.as_deref().unwrap_or("")),
                        ),
                        (Some(_), None) => (None, "not judged: the criterion names no percentage".into()),
                    }
                }
                Some(e) if has(&["documentation"]) => {
                    let limit = percent_in(&lower).unwrap_or(1.0);
                    match e.doc_coverage.fraction.value {
                        Some(value) => (
                            Some(value >= limit),
                            format!("documentation coverage {:.1} % ({})", value * 100.0, e.doc_coverage.method),
                        ),
                        None => (
                            None,
                            format!(
                                "not judged: {}",
                                e.doc_coverage.fraction.reason.as_deref().unwrap_or("")
                            ),
                        ),
                    }
                }
                Some(e) if has(&["performance target"]) => {
                    let targeted = e.targeted_measurements();
                    if targeted.is_empty() {
                        (None, "not judged: the acceptance suite measured no figure with a target".into())
                    } else {
                        (
                            Some(targeted.iter().all(|(_, v, t)| v >= t)),
                            targeted
                                .iter()
                                .map(|(n, v, t)| format!("{n}: {v:.0} (target {t:.0})"))
                                .collect::<Vec<_>>()
                                .join("; "),
                        )
                    }
                }
                _ if has(&["ci pipeline"]) => match (find("build"), find("test")) {
                    (Some(b), Some(t)) => (
                        Some(b.passed && t.passed),
                        format!("{}; {}", describe_check(b), describe_check(t)),
                    ),
                    _ => (None, "not judged: the build and test checks did not both run".into()),
                },
                _ if has(&["compile", "build"]) => check_result(find("build"), "build"),
                _ if has(&["tests pass", "tests passing"]) => {
                    let (met, evidence) = check_result(find("test"), "test");
                    match evaluation.map(|e| &e.acceptance) {
                        Some(a) if a.status != "not_run" => (
                            met.map(|m| m && a.status == "passed"),
                            format!("{evidence}; acceptance suite: {} of {} cases passed", a.passed, a.total),
                        ),
                        _ => (met, evidence),
                    }
                }
                Some(e) if has(&["release artifact"]) => (
                    e.performance.binary_size_mb.value.map(|_| true),
                    match e.performance.binary_size_mb.value {
                        Some(mb) => format!("the start command's binary exists ({mb:.1} MiB)"),
                        None => format!(
                            "not judged: {}",
                            e.performance.binary_size_mb.reason.as_deref().unwrap_or("")
                        ),
                    },
                ),
                _ if has(&["checkpoint"]) => match newest_checkpoint {
                    Some((seq, problems)) if problems.is_empty() => (
                        Some(true),
                        format!("checkpoint {seq} matches its seal and every object it references verifies"),
                    ),
                    Some((seq, problems)) => (
                        Some(false),
                        format!("checkpoint {seq} does not verify: {}", problems.join("; ")),
                    ),
                    None => (None, "not judged: no checkpoint was recorded".into()),
                },
                None if has(&[
                    "core feature",
                    "bug",
                    "security",
                    "coverage",
                    "documentation",
                    "performance",
                    "release artifact",
                ]) => no_evaluation(),
                _ => (
                    None,
                    "not judged: no objective measurement exists for this criterion".into(),
                ),
            };
            CriterionResult {
                phase: phase.to_string(),
                criterion: criterion.clone(),
                met,
                evidence,
                critical: false,
                tier: Tier::Phase,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, passed: bool) -> CheckRow {
        CheckRow {
            phase: "p".into(),
            name: name.into(),
            command: "x".into(),
            exit_code: Some(if passed { 0 } else { 1 }),
            passed,
            timed_out: false,
            wall_secs: 0.1,
            output_tail: String::new(),
        }
    }

    #[test]
    fn coverage_figures_from_percentages_and_fractions() {
        assert_eq!(
            parse_coverage("Name Stmts Miss Cover\nTOTAL 120 30 75%\n"),
            Some(0.75)
        );
        assert_eq!(parse_coverage("87\n"), Some(0.87));
        assert_eq!(parse_coverage("0.5"), Some(0.5));
        assert_eq!(parse_coverage("no numbers here"), None);
        assert_eq!(parse_coverage("coverage 250"), None);
    }

    #[test]
    fn criteria_map_to_checks_or_null() {
        let criteria = vec![
            "Project compiles successfully".to_string(),
            "All tests passing".to_string(),
            "Test coverage >= 70%".to_string(),
            "Architecture document complete".to_string(),
        ];
        let checks = [check("build", true), check("test", false)];
        let evidence = PhaseEvidence {
            checks: &checks,
            ..PhaseEvidence::default()
        };
        let results = judge_criteria("p", &criteria, evidence);
        let met: Vec<_> = results.iter().map(|r| r.met).collect();
        assert_eq!(met, vec![Some(true), Some(false), None, None]);
        let final_checkpoint = ["Final checkpoint validates".to_string()];
        assert_eq!(
            judge_criteria("p", &final_checkpoint, evidence)[0].met,
            None
        );
        let good = (4, vec![]);
        let with = |newest| PhaseEvidence {
            newest_checkpoint: Some(newest),
            ..evidence
        };
        assert_eq!(
            judge_criteria("p", &final_checkpoint, with(&good))[0].met,
            Some(true)
        );
        let bad = (4, vec!["a.rs: missing".to_string()]);
        let judged = judge_criteria("p", &final_checkpoint, with(&bad));
        assert_eq!(judged[0].met, Some(false));
        assert!(judged[0].evidence.contains("a.rs: missing"));
    }

    #[test]
    fn criteria_about_the_suite_are_null_with_the_reason_when_it_did_not_run() {
        let json = serde_json::json!({
            "project_type": "t", "project_dir": "d", "phase": "p", "checks": [],
            "acceptance": acceptance::AcceptanceReport::not_run(std::path::Path::new("s"), "no venv: pip failed"),
            "test_coverage": {"value": null, "reason": "r"},
            "doc_coverage": {"fraction": {"value": null, "reason": "r"}, "method": ""},
            "security": {"method": "", "unsafe_count": {"value": null, "reason": "r"},
                         "findings": {"value": null, "reason": "r"}, "lints": {"value": null, "reason": "r"},
                         "advisories": {"value": null, "reason": "r"},
                         "details": []},
            "code": {"value": null, "reason": "r"},
            "performance": {"build_secs": {"value": null}, "test_secs": {"value": null},
                            "memory_usage_mb": {"value": null}, "binary_size_mb": {"value": null},
                            "measured": {}},
            "bugs": {"critical": 0, "high": 0, "medium": 0},
            "wall_secs": 0.0
        });
        let evaluation: evaluation::Evaluation = serde_json::from_value(json).unwrap();
        let criteria: Vec<String> = [
            "Core features functional",
            "All critical/high bugs fixed",
            "Integration tests pass",
            "E2E tests pass",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect();
        for result in judge_criteria(
            "p",
            &criteria,
            PhaseEvidence {
                evaluation: Some(&evaluation),
                ..PhaseEvidence::default()
            },
        ) {
            assert_eq!(result.met, None, "{}", result.criterion);
            assert!(
                result.evidence.contains("did not run: no venv: pip failed"),
                "{}: {}",
                result.criterion,
                result.evidence
            );
        }
    }

    #[tokio::test]
    async fn check_records_exit_code_and_tail_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let row = run_check(
            "p",
            "test",
            "echo out; echo err >&2; exit 4",
            dir.path(),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!((row.exit_code, row.passed), (Some(4), false));
        assert_eq!(row.output_tail, "out\nerr\n");
        let slow = run_check(
            "p",
            "test",
            "sleep 5",
            dir.path(),
            Duration::from_millis(200),
        )
        .await;
        assert!(slow.timed_out && !slow.passed);
    }
}
