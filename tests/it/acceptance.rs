//! The hidden acceptance suites are themselves tested: `megatest evaluate` passes each suite's
//! reference implementation (exit 0, every case passed) and fails each of its mutants (exit 1,
//! naming a failing case); an empty directory fails with "build failed".

use crate::support::*;
use megatest::eval::suite::{copy_tree, Suite};
use serde_json::Value;
use std::path::Path;

fn spec_dir(project: &str) -> std::path::PathBuf {
    root()
        .join("system_tests/long_running/projects")
        .join(project)
}

/// `megatest evaluate DIR --project P --json F [extra]` → (exit code, stdout, the JSON).
fn evaluate(dir: &Path, project: &str, extra: &[&str]) -> (i32, String, Value) {
    let scratch = tempfile::tempdir().unwrap();
    let json = scratch.path().join("evaluation.json");
    let junit = scratch.path().join("evaluation.xml");
    let output = megatest()
        .arg("evaluate")
        .arg(dir)
        .args(["--project", project, "--runs-dir"])
        .arg(scratch.path())
        .arg("--json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        json.exists(),
        "no evaluation JSON\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml") && xml.contains("<testsuite name=\"acceptance\""));
    (output.status.code().unwrap_or(-1), stdout, read_json(&json))
}

fn failing_cases(evaluation: &Value) -> Vec<String> {
    evaluation["evaluation"]["acceptance"]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["outcome"] == "failed")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// The reference, built with the spec's build command, passes every case and its own tests;
/// each mutant (a copy of the built reference with one bug, evaluated as it is) fails at least
/// one case and exits by the critical tier.
fn reference_passes_and_mutants_fail(project: &str) {
    let suite = Suite::of_spec(&spec_dir(project)).unwrap().unwrap();
    assert!(suite.mutants.len() >= 5, "{project}: at least five mutants");
    let work = tempfile::tempdir().unwrap();
    let reference = work.path().join("reference");
    copy_tree(&suite.reference, &reference).unwrap();
    let (code, stdout, evaluation) = evaluate(&reference, project, &[]);
    let checks = evaluation["evaluation"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{stdout}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{stdout}");
    let acceptance = &evaluation["evaluation"]["acceptance"];
    assert_eq!(acceptance["status"], "passed", "{stdout}");
    assert_eq!(acceptance["failed"], 0, "{stdout}");
    assert!(acceptance["total"].as_u64().unwrap() >= 8, "{stdout}");
    assert_eq!(code, 0, "{stdout}");
    // Four mutants at a time: the suites mostly wait (leases, timeouts, restarts), and a
    // machine with 2 cores still serves every started server in time.
    for batch in suite.mutants.chunks(4) {
        std::thread::scope(|scope| {
            for mutant in batch {
                let (work, reference) = (work.path(), &reference);
                scope.spawn(move || {
                    let dir = work.join(&mutant.name);
                    copy_tree(reference, &dir).unwrap();
                    mutant.apply(&dir).unwrap();
                    check_mutant(&mutant.name, &dir, project);
                });
            }
        });
    }
}

/// A mutant fails at least one case (named in the table) and exits by the critical tier.
fn check_mutant(name: &str, dir: &Path, project: &str) {
    let (code, stdout, evaluation) = evaluate(dir, project, &["--no-build", "--fail-fast"]);
    let failing = failing_cases(&evaluation);
    assert!(
        !failing.is_empty(),
        "mutant {name} of {project} passed every case:\n{stdout}"
    );
    assert_eq!(evaluation["evaluation"]["acceptance"]["status"], "failed");
    assert!(
        stdout.contains(&failing[0]),
        "the table names the failing case\n{stdout}"
    );
    let critical_failed = evaluation["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["tier"] == "critical" && c["met"] == false);
    assert_eq!(
        code,
        if critical_failed { 1 } else { 0 },
        "mutant {name}: the exit code follows the critical tier\n{stdout}"
    );
    let bugs = &evaluation["evaluation"]["bugs"];
    let total = bugs["critical"].as_u64().unwrap()
        + bugs["high"].as_u64().unwrap()
        + bugs["medium"].as_u64().unwrap();
    assert!(total >= failing.len() as u64, "failed cases count as bugs");
}

#[test]
fn quickstart_suite_passes_its_reference_and_catches_every_mutant() {
    reference_passes_and_mutants_fail("quickstart");
}

#[test]
fn task_queue_suite_passes_its_reference_and_catches_every_mutant() {
    // The reference is a Python RedQueue behind a launcher the contract's cargo build makes.
    reference_passes_and_mutants_fail("task_queue");
}

#[test]
fn database_suite_passes_its_reference_and_catches_every_mutant() {
    // The reference is a line-protocol adapter over SQLite behind a cargo-built launcher.
    reference_passes_and_mutants_fail("database");
}

#[test]
fn microservices_suite_passes_its_reference_and_catches_every_mutant() {
    // The reference is a standard-library Python mesh started by scripts/start.sh.
    reference_passes_and_mutants_fail("microservices");
}

#[test]
fn an_empty_directory_fails_with_build_failed() {
    let empty = tempfile::tempdir().unwrap();
    let (code, stdout, evaluation) = evaluate(empty.path(), "quickstart", &[]);
    assert_eq!(code, 1, "{stdout}");
    let acceptance = &evaluation["evaluation"]["acceptance"];
    assert!(
        acceptance["reason"]
            .as_str()
            .unwrap()
            .starts_with("build failed"),
        "{acceptance}"
    );
    assert_eq!(acceptance["passed"], 0);
    assert!(stdout.contains("build failed"), "{stdout}");
    // The cases failed with the reason, not with an unrelated error.
    let first = &acceptance["cases"][0]["message"];
    assert!(first.as_str().unwrap().contains("build failed"), "{first}");
}

#[test]
fn evaluate_usage_errors_exit_2() {
    let output = megatest()
        .args(["evaluate", "/no/such/dir", "--project", "quickstart"])
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let empty = tempfile::tempdir().unwrap();
    let output = megatest()
        .arg("evaluate")
        .arg(empty.path())
        .args(["--project", "no_such_type"])
        .output()
        .unwrap();
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("quickstart"));
}
