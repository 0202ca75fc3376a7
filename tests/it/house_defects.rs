//! Regression tests for the reliability defects of issue 11, each named after its defect.
//! Real daemons, real agent processes, real signals, real SQLite.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

const SIM: &str = "[model]\nprovider = \"sim\"";

fn spawn_run(config: &Path, runs: &Path, id: &str, envs: &[(&str, &str)]) -> Child {
    run_command(config, runs, &["--session-id", id], envs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `megatest resume SESSION`, started, output discarded.
fn spawn_resume(session: &Path) -> Child {
    megatest()
        .arg("resume")
        .arg(session)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn status_word(session: &Path) -> String {
    std::fs::read_to_string(session.join("status"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Every line of every agent's `events.jsonl` in `session`.
fn events_file_lines(session: &Path) -> i64 {
    let mut lines = 0;
    let Ok(agents) = std::fs::read_dir(session.join("agents")) else {
        return 0;
    };
    for agent in agents {
        let text = std::fs::read(agent.unwrap().path().join("events.jsonl")).unwrap_or_default();
        lines += text.iter().filter(|b| **b == b'\n').count() as i64;
    }
    lines
}

/// [`scalar`], or 0 while `session.db` does not exist yet.
fn count(session: &Path, sql: &str) -> i64 {
    let query = || -> rusqlite::Result<i64> {
        let db = rusqlite::Connection::open_with_flags(
            session.join("session.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        db.query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
            .map(|n| n.unwrap_or(0))
    };
    query().unwrap_or(0)
}

fn agent_tool_call_rows(session: &Path) -> i64 {
    count(
        session,
        "SELECT COUNT(*) FROM events WHERE kind = 'tool_call' AND json_extract(data, '$.source') = 'agent'",
    )
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// Wait (at most `limit`) for `child` to exit; its exit code, or None if it is still running.
fn exit_within(child: &mut Child, limit: Duration) -> Option<Option<i32>> {
    if wait_for(limit, || child.try_wait().unwrap().is_some()) {
        Some(child.wait().unwrap().code())
    } else {
        None
    }
}

#[test]
fn defect_1_events_file_tool_calls_are_counted_once_after_resume() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // Each run reports one tool call in its events file, then works for a while.
    let command =
        r#"printf '{"type": "tool_call", "name": "bash"}\n' >> "$MEGATEST_EVENTS_FILE"; sleep 30"#;
    // Events files are drained every session second as well (the file watch aside), so the
    // count does not depend on how the lines are noticed, only on the offsets kept.
    let config = command_config(
        dir.path(),
        SIM,
        command,
        &[],
        "[monitoring]\nhealth_check_interval = 1\n",
    );
    let mut run = spawn_run(&config, &runs, "d1", &[]);
    let session = runs.join("d1");
    assert!(
        wait_for(Duration::from_secs(30), || agent_tool_call_rows(&session)
            >= 1),
        "the reported tool calls were not counted"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    let before = events_file_lines(&session);
    let mut resumed = spawn_resume(&session);
    // The resumed daemon counts its own runs' lines and must not count the old ones again.
    assert!(
        wait_for(Duration::from_secs(30), || events_file_lines(&session)
            > before
            && agent_tool_call_rows(&session) >= events_file_lines(&session)),
        "the resumed runs' tool calls were not counted"
    );
    std::thread::sleep(Duration::from_millis(1500)); // a few metrics ticks: drains happen
    sigterm(&resumed);
    assert!(exit_within(&mut resumed, Duration::from_secs(30)).is_some());
    assert_eq!(agent_tool_call_rows(&session), events_file_lines(&session));
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(
        report["usage"]["agent_reported_tool_calls"].as_i64(),
        Some(events_file_lines(&session)),
        "{}",
        report["usage"]
    );
}

#[test]
fn defect_2_non_utf8_agent_events_never_wedge_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let command = r#"printf '\377\376 not json\n' >> "$MEGATEST_EVENTS_FILE"; printf '{"tool": "edit"}\n' >> "$MEGATEST_EVENTS_FILE""#;
    let config = command_config(dir.path(), SIM, command, &[], "");
    let mut run = spawn_run(&config, &runs, "d2", &[]);
    let code = exit_within(&mut run, Duration::from_secs(60));
    let session = runs.join("d2");
    assert!(
        matches!(code, Some(Some(0 | 1))),
        "exit {code:?}, status {}",
        status_word(&session)
    );
    assert_eq!(status_word(&session), "complete");
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["exit_code"].as_i64(), code.flatten().map(i64::from));
    // The good lines counted, the bad ones reported as skipped parse failures.
    assert_eq!(
        agent_tool_call_rows(&session),
        events_file_lines(&session) / 2
    );
    let skipped = scalar(
        &session,
        "SELECT COUNT(*) FROM recoveries WHERE failure_kind = 'parse_failure' AND outcome = 'skipped'",
        &[],
    );
    assert!(skipped >= 1, "no recovery row for the unreadable lines");
}

#[test]
fn defect_2_a_daemon_with_garbage_events_still_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let command = r#"printf '\377\376 not json\n' >> "$MEGATEST_EVENTS_FILE"; sleep 1000"#;
    let config = command_config(dir.path(), SIM, command, &[], "");
    let mut run = spawn_run(&config, &runs, "d2s", &[]);
    let session = runs.join("d2s");
    assert!(wait_for(Duration::from_secs(30), || count(
        &session,
        "SELECT COUNT(*) FROM recoveries WHERE failure_kind = 'parse_failure'",
    ) >= 1));
    sigterm(&run);
    let code = exit_within(&mut run, Duration::from_secs(30));
    assert_eq!(code, Some(Some(143)), "the daemon did not stop on SIGTERM");
    assert_eq!(status_word(&session), "interrupted");
    assert!(session.join("final_report.json").exists());
}

#[test]
fn defect_3_a_replaced_binary_still_starts_builtin_agents() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let copy = dir.path().join("megatest");
    std::fs::copy(env!("CARGO_BIN_EXE_megatest"), &copy).unwrap();
    let mut command = std::process::Command::new(&copy);
    for (name, _) in std::env::vars() {
        if name.starts_with("MEGATEST_") {
            command.env_remove(name);
        }
    }
    let mut run = command
        .arg("run")
        .arg(root().join("configs/quickstart.toml"))
        .args(["--session-id", "d3", "--runs-dir"])
        .arg(&runs)
        .env("MEGATEST_API_ADDR", "127.0.0.1:0")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Rebuilt or replaced while the session runs: every agent start comes after this.
    std::fs::remove_file(&copy).unwrap();
    std::fs::write(&copy, b"#!/bin/sh\nexit 99\n").unwrap();
    let code = exit_within(&mut run, Duration::from_secs(120)).flatten();
    let session = runs.join("d3");
    assert_eq!(code, Some(0), "status {}", status_word(&session));
    let failed_starts = scalar(
        &session,
        "SELECT COUNT(*) FROM events WHERE kind = 'error' AND data LIKE '%start failed%'",
        &[],
    );
    assert_eq!(failed_starts, 0);
}

#[test]
fn defect_4_a_closed_stdout_under_github_actions_does_not_kill_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let mut run = run_command(
        &root().join("configs/quickstart.toml"),
        &runs,
        &["--session-id", "d4"],
        &[("GITHUB_ACTIONS", "true")],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // `megatest run … | head -0`: both pipes closed at once.
    drop(run.stdout.take());
    drop(run.stderr.take());
    let code = exit_within(&mut run, Duration::from_secs(120)).flatten();
    let session = runs.join("d4");
    assert_eq!(code, Some(0), "status {}", status_word(&session));
    assert_eq!(status_word(&session), "complete");
    assert!(session.join("final_report.json").exists());
    // Annotations were attempted (alerts were raised) and lost, not fatal.
    assert!(
        scalar(
            &session,
            "SELECT COUNT(*) FROM events WHERE kind = 'alert'",
            &[]
        ) > 0
    );
}

#[test]
fn defect_6_a_tasks_last_failed_attempt_is_a_recovery_row() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let config = command_config(dir.path(), SIM, "exit 1", &[], "");
    let mut run = spawn_run(&config, &runs, "d6", &[]);
    exit_within(&mut run, Duration::from_secs(60)).expect("session did not end");
    let session = runs.join("d6");
    let failed_tasks = scalar(
        &session,
        "SELECT COUNT(*) FROM tasks WHERE state = 'failed'",
        &[],
    );
    assert!(failed_tasks > 0);
    // max_task_attempts = 1: each first run is the last one, and each is a closed row.
    let rows = scalar(
        &session,
        "SELECT COUNT(*) FROM recoveries WHERE failure_kind = 'agent_crash' AND outcome = 'failed'",
        &[],
    );
    let crashes = scalar(
        &session,
        "SELECT COUNT(*) FROM agent_runs WHERE outcome = 'exited_nonzero'",
        &[],
    );
    assert_eq!(rows, crashes);
    assert_eq!(
        scalar(
            &session,
            "SELECT COUNT(*) FROM recoveries WHERE outcome IS NULL",
            &[]
        ),
        0
    );
}

/// The pids the agents' commands wrote to `<agent dir>/orphans`.
fn recorded_orphans(session: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(agents) = std::fs::read_dir(session.join("agents")) else {
        return pids;
    };
    for agent in agents {
        let path: PathBuf = agent.unwrap().path().join("orphans");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    pids
}

#[test]
fn defect_8_resume_kills_group_members_whose_leader_exited() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // The leader leaves a child in its group and exits 2 s later.
    let command =
        r#"sleep 600 & echo $! >> "$(dirname "$MEGATEST_EVENTS_FILE")/orphans"; exec sleep 3"#;
    let config = command_config(dir.path(), SIM, command, &[], "");
    let mut run = spawn_run(&config, &runs, "d8", &[]);
    let session = runs.join("d8");
    assert!(wait_for(Duration::from_secs(30), || recorded_orphans(
        &session
    )
    .len()
        >= 2));
    run.kill().unwrap();
    run.wait().unwrap();
    // Children of runs the daemon ended are gone already; those of the runs it left behind
    // stay, and their leaders exit, leaving groups no live leader names any more.
    let orphans: Vec<i32> = recorded_orphans(&session)
        .into_iter()
        .filter(|pid| alive(*pid))
        .collect();
    assert!(!orphans.is_empty());
    std::thread::sleep(Duration::from_millis(3500));
    assert!(orphans.iter().all(|pid| alive(*pid)));
    let mut resumed = spawn_resume(&session);
    let gone = wait_for(Duration::from_secs(20), || {
        orphans.iter().all(|pid| !alive(*pid))
    });
    sigterm(&resumed);
    let _ = exit_within(&mut resumed, Duration::from_secs(30));
    for pid in recorded_orphans(&session) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        gone,
        "orphans of the dead daemon survived the resume: {orphans:?}"
    );
}

#[test]
fn defect_9_unauthenticated_requests_are_counted_and_sampled() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let config = command_config(dir.path(), SIM, "sleep 1000", &[], "");
    let mut run = spawn_run(&config, &runs, "d9", &[]);
    let session = runs.join("d9");
    assert!(wait_for(Duration::from_secs(30), || session
        .join("agents.toml")
        .exists()
        && !agent_pids(&session).is_empty()));
    let agents = std::fs::read_to_string(session.join("agents.toml")).unwrap();
    let base = agents
        .lines()
        .find_map(|l| l.strip_prefix("base_url = "))
        .unwrap()
        .trim_matches('"')
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_string();
    let requests = 1500;
    for _ in 0..requests {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&base).unwrap();
        let body = br#"{"model": "sim", "messages": []}"#;
        write!(
            stream,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    sigterm(&run);
    assert!(exit_within(&mut run, Duration::from_secs(30)).is_some());
    let rows = scalar(
        &session,
        "SELECT COUNT(*) FROM events WHERE kind = 'auth_rejected'",
        &[],
    );
    let counted = scalar(
        &session,
        "SELECT SUM(json_extract(data, '$.count')) FROM events WHERE kind = 'auth_rejected'",
        &[],
    );
    assert_eq!(counted, requests, "every rejection is counted");
    assert!(
        rows <= 20,
        "{rows} rows for {requests} rejections: not sampled"
    );
    // The WAL does not outlive the session.
    let wal = std::fs::metadata(session.join("session.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal, 0, "the WAL was left at {wal} bytes");
}

fn api_of(session: &Path) -> (String, String) {
    let read = |name: &str| {
        std::fs::read_to_string(session.join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    (read("api.addr"), read("api.token"))
}

#[test]
fn defect_5_an_open_escalation_survives_kill_9_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // The first run crashes; the rule escalates and holds the task for an operator.
    let command = "if [ -e .crashed-$MEGATEST_TASK_ID ]; then exit 0; fi; touch .crashed-$MEGATEST_TASK_ID; exit 3";
    let extra = "[[error_handling.rules]]\nkind = \"agent_crash\"\nseverity = \"critical\"\naction = \"escalate\"\n\n[recovery]\nescalation_timeout_minutes = 600\n";
    let config = command_config(dir.path(), SIM, command, &[], extra);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_task_attempts = 1", "max_task_attempts = 3");
    std::fs::write(&config, text).unwrap();
    let mut run = run_command(
        &config,
        &runs,
        &["--session-id", "d5", "--time-scale", "60"],
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let session = runs.join("d5");
    assert!(wait_for(Duration::from_secs(30), || status_word(&session)
        == "escalated"));
    // Saved on the next tick at the latest.
    assert!(wait_for(Duration::from_secs(10), || count(
        &session,
        "SELECT COUNT(*) FROM recovery_state WHERE state LIKE '%\"escalations\":[{%'"
    ) == 1));
    run.kill().unwrap();
    run.wait().unwrap();
    let (old_addr, _) = api_of(&session);
    let mut resumed = spawn_resume(&session);
    // The resumed daemon (its own API address) is escalated too.
    assert!(wait_for(Duration::from_secs(30), || api_of(&session).0 != old_addr));
    assert_eq!(status_word(&session), "escalated");
    let (addr, token) = api_of(&session);
    let (status, body) = crate::control::http(&addr, "GET", "/api/escalations", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    let open: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    let id = open[0]["recovery_id"].as_i64().unwrap();
    let (status, body) = crate::control::http(
        &addr,
        "POST",
        &format!("/api/escalations/{id}/decision"),
        Some(&token),
        Some(br#"{"decision": "continue"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let code = exit_within(&mut resumed, Duration::from_secs(60)).flatten();
    assert!(matches!(code, Some(0 | 1)), "exit {code:?}");
    let outcome = count(
        &session,
        &format!("SELECT COUNT(*) FROM recoveries WHERE id = {id} AND outcome = 'escalated'"),
    );
    assert_eq!(outcome, 1);
}
