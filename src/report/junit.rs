//! JUnit XML of an evaluation (quick-junit): one test suite for the checks (build, tests), one
//! for the acceptance cases (severity and kind as properties, the failure tail as the message)
//! and one for the criteria (a criterion not judged is skipped, with the reason).

use crate::eval::evaluation::Evaluation;
use crate::eval::CriterionResult;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
use std::time::Duration;

fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value.max(0.0)).unwrap_or_default()
}

fn failed(message: &str) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
    status.set_message(message.to_string());
    status
}

/// The evaluation and its criteria as JUnit XML.
pub fn evaluation_junit(
    eval: &Evaluation,
    criteria: &[CriterionResult],
) -> Result<String, quick_junit::SerializeError> {
    let mut report = Report::new(format!("megatest evaluate {}", eval.project_type));
    let mut checks = TestSuite::new("checks");
    for check in &eval.checks {
        let status = if check.passed {
            TestCaseStatus::success()
        } else {
            failed(&crate::eval::describe_check(check))
        };
        let mut case = TestCase::new(check.name.clone(), status);
        case.set_time(secs(check.wall_secs))
            .set_classname("checks")
            .set_system_out(check.output_tail.clone());
        checks.add_test_case(case);
    }
    report.add_test_suite(checks);
    let mut acceptance = TestSuite::new("acceptance");
    if eval.acceptance.status == "not_run" {
        let reason = eval.acceptance.reason.clone().unwrap_or_default();
        let mut case = TestCase::new("acceptance suite", failed(&reason));
        case.set_classname("acceptance");
        acceptance.add_test_case(case);
    }
    for result in &eval.acceptance.cases {
        let status = match result.outcome.as_str() {
            "passed" => TestCaseStatus::success(),
            "skipped" => TestCaseStatus::skipped(),
            _ => failed(result.message.as_deref().unwrap_or("failed")),
        };
        let mut case = TestCase::new(result.id.clone(), status);
        case.set_time(secs(result.wall_secs))
            .set_classname(format!("acceptance.{}", result.severity))
            .add_property(("severity", result.severity.as_str()))
            .add_property(("kind", result.kind.as_str()));
        acceptance.add_test_case(case);
    }
    report.add_test_suite(acceptance);
    let mut judged = TestSuite::new("criteria");
    for criterion in criteria {
        let status = match criterion.met {
            Some(true) => TestCaseStatus::success(),
            Some(false) => failed(&criterion.evidence),
            None => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(criterion.evidence.clone());
                status
            }
        };
        let mut case = TestCase::new(criterion.criterion.clone(), status);
        case.set_classname(format!(
            "criteria.{}",
            serde_json::json!(criterion.tier).as_str().unwrap_or("")
        ));
        judged.add_test_case(case);
    }
    report.add_test_suite(judged);
    report.to_string()
}

fn text<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}

/// A session's JUnit XML, from its final report's JSON document: suite `checks` (every
/// phase's end checks, the output tail on failure), suite `acceptance` (the newest
/// evaluation's cases; a suite that could not run is one failed case with the reason), suite
/// `criteria` (every success criterion; not judged = skipped with the reason). Its failures
/// are the report's `failures.total`.
///
/// Errors: the XML could not be written.
pub fn session_junit(report: &serde_json::Value) -> Result<String, quick_junit::SerializeError> {
    let mut junit = Report::new(format!("megatest {}", text(report, "session_id")));
    let mut checks = TestSuite::new("checks");
    for phase in report["phases"].as_array().into_iter().flatten() {
        for check in phase["checks"].as_array().into_iter().flatten() {
            let status = if check["passed"] == true {
                TestCaseStatus::success()
            } else {
                let why = if check["timed_out"] == true {
                    "timed out".to_string()
                } else {
                    format!("exit code {}", check["exit_code"])
                };
                let mut status = failed(&format!("{}: {why}", text(check, "command")));
                status.set_description(text(check, "output_tail").to_string());
                status
            };
            let mut case = TestCase::new(
                format!("{}: {}", text(phase, "name"), text(check, "name")),
                status,
            );
            case.set_time(secs(check["wall_secs"].as_f64().unwrap_or(0.0)))
                .set_classname(format!("checks.{}", text(phase, "name")));
            checks.add_test_case(case);
        }
    }
    junit.add_test_suite(checks);
    let mut acceptance = TestSuite::new("acceptance");
    let suite = &report["evaluation"]["acceptance"];
    if suite["status"] == "not_run" {
        let mut case = TestCase::new("acceptance suite", failed(text(suite, "reason")));
        case.set_classname("acceptance");
        acceptance.add_test_case(case);
    }
    for result in suite["cases"].as_array().into_iter().flatten() {
        let status = match text(result, "outcome") {
            "passed" => TestCaseStatus::success(),
            "skipped" => TestCaseStatus::skipped(),
            _ => {
                let message = result["message"].as_str().unwrap_or("failed");
                let mut status = failed(message.lines().next().unwrap_or("failed"));
                status.set_description(message.to_string());
                status
            }
        };
        let mut case = TestCase::new(text(result, "id").to_string(), status);
        case.set_time(secs(result["wall_secs"].as_f64().unwrap_or(0.0)))
            .set_classname(format!("acceptance.{}", text(result, "severity")))
            .add_property(("severity", text(result, "severity")))
            .add_property(("kind", text(result, "kind")));
        acceptance.add_test_case(case);
    }
    junit.add_test_suite(acceptance);
    let mut judged = TestSuite::new("criteria");
    for criterion in report["success_criteria"].as_array().into_iter().flatten() {
        let status = match criterion["met"].as_bool() {
            Some(true) => TestCaseStatus::success(),
            Some(false) => failed(text(criterion, "evidence")),
            None => {
                let mut status = TestCaseStatus::skipped();
                status.set_message(text(criterion, "evidence").to_string());
                status
            }
        };
        let mut case = TestCase::new(text(criterion, "criterion").to_string(), status);
        case.set_classname(format!("criteria.{}", text(criterion, "tier")));
        judged.add_test_case(case);
    }
    junit.add_test_suite(judged);
    junit.to_string()
}
