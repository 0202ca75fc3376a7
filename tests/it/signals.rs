//! Signals to a real `megatest run`.

use crate::support::*;
use std::time::Duration;

/// Start the fixture on `sim` in real time (so agents are mid-call), wait until both claimable
/// bootstrap tasks run (the other two wait for `rq-architecture`), send `signal`, and return (exit code, session dir).
fn interrupt_running_session(
    signal: nix::sys::signal::Signal,
) -> (Option<i32>, std::path::PathBuf, tempfile::TempDir) {
    let runs = tempfile::tempdir().unwrap();
    let mut child = megatest()
        .arg("run")
        .arg(fixture_config())
        .args([
            "--provider",
            "sim",
            "--session-id",
            "interrupt-me",
            "--runs-dir",
        ])
        .arg(runs.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let session = runs.path().join("interrupt-me");
    let started = wait_for(Duration::from_secs(30), || {
        session.join("session.db").exists() && agent_pids(&session).len() >= 2
    });
    assert!(started, "agents did not start");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
    let status = child.wait().unwrap();
    (status.code(), session, runs)
}

#[test]
fn sigterm_stops_gracefully_with_exit_143_and_a_report() {
    let (code, session, _runs) = interrupt_running_session(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, Some(143));
    assert_eq!(
        std::fs::read_to_string(session.join("status")).unwrap(),
        "interrupted\n"
    );
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "interrupted");
    assert_eq!(report["exit_code"], 143);
    assert!(report["ended_because"]
        .as_str()
        .unwrap()
        .contains("SIGTERM"));
    assert_eq!(report["phases"][0]["ended_because"], "interrupted");
    assert_eq!(report["phases"][1]["ended_because"], "not_started");
    for pid in agent_pids(&session) {
        assert!(!alive(pid), "agent {pid} survived");
    }
}

#[test]
fn sigint_stops_gracefully_with_exit_130() {
    let (code, session, _runs) = interrupt_running_session(nix::sys::signal::Signal::SIGINT);
    assert_eq!(code, Some(130));
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "interrupted");
    for pid in agent_pids(&session) {
        assert!(!alive(pid), "agent {pid} survived");
    }
}
