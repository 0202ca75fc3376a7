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

#[test]
fn a_second_sigterm_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // Agents ignore SIGTERM and the grace period is long: the first SIGTERM waits on them.
    let config = command_config(
        dir.path(),
        "[model]\nprovider = \"sim\"",
        "trap '' TERM; while :; do sleep 0.1; done",
        &[],
        "",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("stop_grace_secs = 0.5", "stop_grace_secs = 600");
    std::fs::write(&config, text).unwrap();
    let runs = dir.path().join("runs");
    let mut child = megatest()
        .arg("run")
        .arg(&config)
        .args(["--session-id", "twice", "--runs-dir"])
        .arg(&runs)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let session = runs.join("twice");
    assert!(wait_for(Duration::from_secs(30), || !agent_pids(&session).is_empty()));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(wait_for(Duration::from_secs(10), || scalar(
        &session,
        "SELECT COUNT(*) FROM events WHERE kind = 'signal'",
        &[]
    ) == 1));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    let log = std::fs::read_to_string(session.join("session.log")).unwrap();
    assert!(
        log.contains("second signal: killing all agent process groups now"),
        "{log}"
    );
    for pid in agent_pids(&session) {
        assert!(!alive(pid), "agent {pid} survived");
    }
    assert_eq!(
        read_json(&session.join("final_report.json"))["status"],
        "interrupted"
    );
}
