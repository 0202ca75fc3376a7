//! The live dashboard at `GET /` of the control API, driven in headless Chromium (Playwright
//! from PyPI on Debian's chromium) by `probes/dashboard.py` while a real session runs: sign-in
//! by cookie, numbers that move with the session and match `megatest status`, the agent log
//! tail, and the operator actions with their confirmations.

use crate::support::*;
use std::time::Duration;

#[test]
fn the_live_dashboard_follows_a_running_session_and_drives_it_with_confirmations() {
    let Some(chromium) = chromium() else {
        return;
    };
    let python = python_venv("dashboard-venv", &["playwright==1.65.2"]);
    let dir = tempfile::tempdir().unwrap();
    // The upstream config with two agents: its consensus needs three votes, so every review
    // deadlocks and escalates — and stays open (long timeout) until the operator answers.
    let config = dir.path().join("mega_test_config.toml");
    let mut text = std::fs::read_to_string(fixture_config()).unwrap();
    text.push_str("\n[recovery]\nescalation_timeout_minutes = 600\n");
    std::fs::write(&config, text).unwrap();
    let runs = dir.path().join("runs");
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = megatest()
        .arg("run")
        .arg(&config)
        .args(["--provider", "sim", "--hours", "1", "--time-scale", "20"])
        .args(["--agents", "2", "--session-id", "dash", "--runs-dir"])
        .arg(&runs)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let session = runs.join("dash");
    assert!(
        wait_for(Duration::from_secs(60), || session
            .join("api.addr")
            .exists()
            && session.join("api.token").exists()),
        "the session did not start: {}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    let shots = dir.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let probe = std::process::Command::new(&python)
        .arg(root().join("tests/it/probes/dashboard.py"))
        .arg(&chromium)
        .arg(env!("CARGO_BIN_EXE_megatest"))
        .arg(&session)
        .arg(&shots)
        .output()
        .unwrap();
    if !probe.status.success() {
        let _ = child.kill();
    }
    let code = child.wait().unwrap().code();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        probe.status.success(),
        "the dashboard probe failed:\n{}\n{}\nmegatest:\n{stderr}",
        String::from_utf8_lossy(&probe.stdout),
        String::from_utf8_lossy(&probe.stderr)
    );
    // Stopped from the dashboard: the graceful stop's exit code and report.
    assert_eq!(code, Some(143), "{stderr}");
    let report = read_json(&session.join("final_report.json"));
    assert!(
        report["ended_because"]
            .as_str()
            .unwrap()
            .contains("/api/stop"),
        "{}",
        report["ended_because"]
    );
    // The operator's actions are in the event log, the escalation answered from its row.
    for action in ["checkpoint", "pause", "continue", "stop"] {
        assert!(
            scalar(
                &session,
                "SELECT COUNT(*) FROM events WHERE kind = 'operator' AND json_extract(data, '$.action') = ?1",
                &[action],
            ) >= 1,
            "no operator {action}"
        );
    }
    assert!(
        scalar(
            &session,
            "SELECT COUNT(*) FROM events WHERE kind = 'escalation_decided'",
            &[]
        ) >= 1
    );
    // The token stayed out of the logs.
    let token = std::fs::read_to_string(session.join("api.token")).unwrap();
    let log = std::fs::read_to_string(session.join("session.log")).unwrap();
    assert!(!log.contains(token.trim()) && !stderr.contains(token.trim()));
    for shot in [
        "dashboard-running.png",
        "dashboard-paused-dark.png",
        "dashboard-ended.png",
    ] {
        let bytes = std::fs::read(shots.join(shot)).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{shot}"
        );
    }
}
