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
