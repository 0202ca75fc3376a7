//! Malformed configs: exit 2, file/line/column in the message, nothing left on disk.

use crate::support::*;

/// Write the upstream fixture with `from` replaced by `to`; return the path and the 1-based line
/// of the change.
fn broken_fixture(dir: &std::path::Path, from: &str, to: &str) -> (std::path::PathBuf, usize) {
    let text = std::fs::read_to_string(fixture_config()).unwrap();
    let offset = text
        .find(from)
        .unwrap_or_else(|| panic!("{from:?} not in the fixture"));
    let line = text[..offset].matches('\n').count() + 1;
    let path = dir.join("mega_test_config.toml");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    (path, line)
}

fn assert_rejected(from: &str, to: &str, expect_in_message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let (config, line) = broken_fixture(dir.path(), from, to);
    for verb in ["run", "validate"] {
        let mut command = megatest();
        command
            .arg(verb)
            .arg(&config)
            .args(["--provider", "sim", "--time-scale", "3600"]);
        if verb == "run" {
            command.arg("--runs-dir").arg(&runs);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{verb} {from:?} → {to:?}: {stderr}"
        );
        let location = format!("{}:{line}:", config.display());
        assert!(
            stderr.contains(&location),
            "{verb}: expected {location} in:\n{stderr}"
        );
        assert!(
            stderr.contains(expect_in_message),
            "{verb}: expected {expect_in_message:?} in:\n{stderr}"
        );
    }
    assert_no_session(&runs);
}

#[test]
fn typo_key_is_rejected_with_its_line() {
    assert_rejected(
        "agent_count = 6",
        "agent_cuont = 6",
        "unknown field `agent_cuont`",
    );
}

#[test]
fn wrong_type_is_rejected_with_its_line() {
    assert_rejected(
        "duration_hours = 6",
        "duration_hours = \"six\"",
        "duration_hours",
    );
}

#[test]
fn out_of_range_agent_count_is_rejected_with_its_line() {
    assert_rejected("agent_count = 6", "agent_count = 40", "between 2 and 16");
}

#[test]
fn zero_phase_duration_is_rejected_with_its_line() {
    assert_rejected(
        "duration_minutes = 120",
        "duration_minutes = 0",
        "phases[1].duration_minutes",
    );
}

#[test]
fn max_total_agents_below_agent_count_is_rejected() {
    assert_rejected(
        "max_total_agents = 8",
        "max_total_agents = 4",
        "must be >= session.agent_count",
    );
}

#[test]
fn bad_toml_is_rejected_with_its_line() {
    assert_rejected("[limits]", "[limits", "");
}

#[test]
fn unknown_enum_value_is_rejected_with_its_line() {
    assert_rejected(
        "strategy = \"weighted\"",
        "strategy = \"loudest\"",
        "unknown variant",
    );
}

#[test]
fn out_of_range_override_names_the_flag_and_leaves_nothing() {
    let runs = tempfile::tempdir().unwrap();
    let args = ["--provider", "sim", "--agents", "1"];
    let output = run_session(&fixture_config(), runs.path(), &args, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("session.agent_count") && stderr.contains("--agents"),
        "{stderr}"
    );
    assert_no_session(runs.path());
}

#[test]
fn upstream_fixture_validates_unmodified() {
    let output = megatest()
        .arg("validate")
        .arg(fixture_config())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("6 agents, 4 phases over 6 h"), "{stdout}");
    assert!(!stdout.contains("not yet enforced"), "{stdout}");
    assert!(
        !stdout.contains("consensus.*"),
        "consensus is enforced: {stdout}"
    );
}

#[test]
fn run_without_a_provider_refuses_to_start_and_says_how() {
    let runs = tempfile::tempdir().unwrap();
    let output = run_session(&fixture_config(), runs.path(), &[], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no model provider configured") && stderr.contains("sim"),
        "{stderr}"
    );
    assert_no_session(runs.path());

    let script = root().join("system_tests/long_running/run_mega_test.sh");
    let output = std::process::Command::new(&script)
        .env_remove("MEGATEST_PROVIDER")
        .env("MEGATEST_BIN", env!("CARGO_BIN_EXE_megatest"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no model provider configured") && stderr.contains("MEGATEST_PROVIDER=sim"),
        "{stderr}"
    );
}

/// `megatest validate` and `megatest run` on `path`, each with a 10 s limit: (exit code, stderr).
/// A run that hangs (a FIFO read) is killed and reported as None.
fn both_verbs(path: &std::path::Path, runs: &std::path::Path) -> Vec<(Option<i32>, String)> {
    let mut results = Vec::new();
    for verb in ["validate", "run"] {
        let mut command = megatest();
        command
            .arg(verb)
            .arg(path)
            .args(["--provider", "sim", "--time-scale", "3600"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if verb == "run" {
            command.arg("--runs-dir").arg(runs);
        }
        let mut child = command.spawn().unwrap();
        let finished = wait_for(std::time::Duration::from_secs(10), || {
            child.try_wait().unwrap().is_some()
        });
        if !finished {
            let _ = child.kill();
        }
        let output = child.wait_with_output().unwrap();
        results.push((
            finished.then_some(output.status.code()).flatten(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    results
}

#[test]
fn config_edge_cases_empty_or_comment_only_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    for text in ["", "# only a comment\n\n"] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        for (code, stderr) in both_verbs(&path, &runs) {
            assert_eq!(code, Some(2), "{text:?}: {stderr}");
            assert!(stderr.contains("[session] section is missing"), "{stderr}");
        }
    }
    assert_no_session(&runs);
}

#[test]
fn config_edge_cases_duplicate_table_names_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[session]\nagent_count = 2\n\n[session]\nagent_count = 3\n",
    )
    .unwrap();
    for (code, stderr) in both_verbs(&path, &runs) {
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("c.toml:4:"), "{stderr}");
        assert!(stderr.contains("duplicate key `session`"), "{stderr}");
    }
    assert_no_session(&runs);
}

#[test]
fn config_edge_cases_fifo_is_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let path = dir.path().join("c.toml");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (code, stderr) in both_verbs(&path, &runs) {
        assert_eq!(code, Some(2), "hung or wrong exit: {stderr}");
        assert!(stderr.contains("not a regular file"), "{stderr}");
    }
    assert_no_session(&runs);
}

#[test]
fn config_edge_cases_list_sizes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let path = dir.path().join("c.toml");
    let roles = vec!["\"Coder\""; 5000].join(", ");
    std::fs::write(
        &path,
        format!("[session]\nagent_count = 2\n\n[agent]\nroles = [{roles}]\n"),
    )
    .unwrap();
    for (code, stderr) in both_verbs(&path, &runs) {
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("c.toml:5:"), "{stderr}");
        assert!(
            stderr.contains("agent.roles") && stderr.contains("5000 entries"),
            "{stderr}"
        );
    }
    // 200,000 roles: the file itself is over the size limit.
    let roles = vec!["\"Coder\""; 200_000].join(",");
    std::fs::write(
        &path,
        format!("[session]\nagent_count = 2\n[agent]\nroles = [{roles}]\n"),
    )
    .unwrap();
    for (code, stderr) in both_verbs(&path, &runs) {
        assert_eq!(code, Some(2), "{stderr}");
    }
    assert_no_session(&runs);
}

#[test]
fn config_edge_cases_array_elements_keep_their_index() {
    assert_rejected(
        "name = \"refinement\"",
        "nam = \"refinement\"",
        "phases[2].nam",
    );
}

#[test]
fn an_evaluation_phase_that_does_not_exist_is_rejected_with_its_line() {
    // The fixture has no [evaluation]: add one as a root inline table before its first table.
    assert_rejected(
        "[metadata]",
        "evaluation = { phases = [\"development\", \"polish\"] }\n[metadata]",
        "no phase is named \"polish\"",
    );
}

#[test]
fn a_memory_limit_no_agent_could_start_under_is_rejected_with_its_line() {
    assert_rejected(
        "[metadata]",
        "agents = { memory_limit_mb = 4 }\n[metadata]",
        "agents.memory_limit_mb`: must be >= 16",
    );
}
