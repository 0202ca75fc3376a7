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

/// `megatest evaluate DIR --config CONFIG --runs-dir RUNS --json RUNS/evaluation.json [extra]`
/// with `MEGATEST_TOOLS_DIR` = `tools` when given → (its output, the JSON).
fn evaluate_with_config(
    dir: &Path,
    config: &Path,
    runs: &Path,
    tools: Option<&Path>,
    extra: &[&str],
) -> (std::process::Output, Value) {
    let json = runs.join("evaluation.json");
    let mut command = megatest();
    if let Some(tools) = tools {
        command.env("MEGATEST_TOOLS_DIR", tools);
    }
    let output = command
        .arg("evaluate")
        .arg(dir)
        .arg("--config")
        .arg(config)
        .arg("--runs-dir")
        .arg(runs)
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .unwrap();
    let document = if json.exists() {
        read_json(&json)
    } else {
        Value::Null
    };
    (output, document)
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
    // Neither a project type nor a config.
    let output = megatest()
        .arg("evaluate")
        .arg(empty.path())
        .output()
        .unwrap();
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("--project"));
    // A bad config is named with its line, and no scratch directory is left behind.
    let config = empty.path().join("bad.toml");
    std::fs::write(&config, "[session]\nproject_type = 7\n").unwrap();
    let runs = tempfile::tempdir().unwrap();
    let output = megatest()
        .arg("evaluate")
        .arg(empty.path())
        .arg("--config")
        .arg(&config)
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:2:", config.display())),
        "{stderr}"
    );
    assert!(!runs.path().join(".evaluations").exists());
}

#[test]
fn a_config_sets_the_targets_and_clippy_findings_are_security_findings() {
    // The RedQueue reference with one clippy `correctness` lint added (an approximate pi).
    let suite = Suite::of_spec(&spec_dir("task_queue")).unwrap().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("project");
    copy_tree(&suite.reference, &dir).unwrap();
    let main = dir.join("src/main.rs");
    let mut source = std::fs::read_to_string(&main).unwrap();
    source.push_str("\n/// Pi, approximately.\npub fn pi() -> f64 {\n    3.14159\n}\n");
    std::fs::write(&main, source).unwrap();
    let config = work.path().join("evaluate.toml");
    std::fs::write(
        &config,
        "[session]\nproject_type = \"task_queue\"\n[evaluation]\nacceptance = false\n\
         [project.target]\ndocumentation_coverage = 0.55\n",
    )
    .unwrap();
    let (output, document) = evaluate_with_config(&dir, &config, work.path(), None, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Builds, its tests pass; the suite is off, so its critical cases are not judged.
    assert_exit(&output, 0);
    let evaluation = &document["evaluation"];
    assert_eq!(evaluation["acceptance"]["status"], "not_run", "{stdout}");
    let security = &evaluation["security"];
    assert_eq!(security["lints"]["value"], 1, "{security}");
    assert_eq!(security["unsafe_count"]["value"], 0, "{security}");
    assert_eq!(security["findings"]["value"]["high"], 1, "{security}");
    assert!(
        security["details"][0]
            .as_str()
            .unwrap()
            .contains("src/main.rs:")
            && security["details"][0]
                .as_str()
                .unwrap()
                .contains("clippy::approx_constant"),
        "{security}"
    );
    assert!(security["advisories"]["reason"]
        .as_str()
        .unwrap()
        .contains("cargo"));
    let criteria = document["criteria"].as_array().unwrap();
    let named = |text: &str| {
        criteria
            .iter()
            .find(|c| c["criterion"].as_str().unwrap().contains(text))
            .unwrap_or_else(|| panic!("no criterion {text}: {criteria:?}"))
    };
    assert_eq!(named("security scan clean")["met"], false);
    assert!(named("documentation coverage ≥ 55 %")["criterion"]
        .as_str()
        .unwrap()
        .contains("project.target.documentation_coverage"));
    assert!(!work
        .path()
        .join(".evaluations")
        .read_dir()
        .unwrap()
        .any(|_| true));
}

/// A Rust project whose test covers 2 of its 8 lines (cargo-tarpaulin's count).
const PARTLY_COVERED: &str = "/// Covered by the test.\nfn covered(x: u32) -> u32 {\n    x + 1\n}\n\n\
/// Run only by `main`.\nfn uncovered(x: u32) -> u32 {\n    if x > 3 {\n        x * 2\n    } else {\n        x - 1\n    }\n}\n\n\
fn main() {\n    println!(\"{}\", uncovered(covered(1)));\n}\n\n\
#[cfg(test)]\nmod tests {\n    #[test]\n    fn covered_adds_one() {\n        assert_eq!(super::covered(1), 2);\n    }\n}\n";

/// `[evaluation].install_tools`: without it, Rust coverage is null and says how to get
/// cargo-tarpaulin; with `--install-tools`, megatest installs it (into a tools directory cached
/// under `target/`, as a runs directory would keep it) and measures the line coverage with it.
#[test]
fn rust_coverage_is_measured_with_the_cargo_tarpaulin_megatest_installs_when_allowed() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("project");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"redqueue\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/main.rs"), PARTLY_COVERED).unwrap();
    let config = work.path().join("evaluate.toml");
    std::fs::write(
        &config,
        "[session]\nproject_type = \"task_queue\"\n[evaluation]\nacceptance = false\n",
    )
    .unwrap();
    let run = |tools: &Path, extra: &[&str]| -> Value {
        let (output, document) =
            evaluate_with_config(&dir, &config, work.path(), Some(tools), extra);
        assert_exit(&output, 0);
        document["evaluation"]["test_coverage"].clone()
    };
    let on_path = std::process::Command::new("cargo")
        .args(["tarpaulin", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !on_path {
        let coverage = run(&work.path().join("no-tools"), &[]);
        assert!(coverage["value"].is_null(), "{coverage}");
        let reason = coverage["reason"].as_str().unwrap();
        assert!(
            reason.contains("cargo-tarpaulin is not installed") && reason.contains("install_tools"),
            "{reason}"
        );
    }
    let tools = root().join("target/megatest-tools");
    let coverage = run(&tools, &["--install-tools"]);
    assert_eq!(coverage["value"].as_f64(), Some(0.25), "{coverage}");
    if !on_path {
        assert!(tools
            .join("cargo-tarpaulin-0.37.5/bin/cargo-tarpaulin")
            .exists());
    }
}
