//! `kill -9` of a running `megatest run` at random moments, then `megatest resume` until the
//! session completes: nothing lost, nothing counted twice, every checkpoint valid.

use crate::support::*;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

fn spawn(command: &mut Command) -> Child {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Let `child` run for `millis`, then SIGKILL it; true if it was still running.
fn kill_after(child: &mut Child, millis: u64) -> bool {
    std::thread::sleep(Duration::from_millis(millis));
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// Usage the agents received, summed from their own logs: (calls, total tokens).
fn usage_seen_by_agents(session: &Path) -> (i64, i64) {
    let (mut calls, mut tokens) = (0, 0);
    for agent in std::fs::read_dir(session.join("agents")).unwrap() {
        let log =
            std::fs::read_to_string(agent.unwrap().path().join("agent.log")).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("\"model_response\"")) {
            // An agent killed while writing leaves a torn last line: that answer is not counted
            // as seen (the per-kill tolerance below covers it).
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            calls += 1;
            tokens += event["usage"]["total_tokens"].as_i64().unwrap();
        }
    }
    (calls, tokens)
}

/// `used_tokens` of the budget state saved in `session.db`.
fn saved_budget_used(session: &Path) -> i64 {
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let state: String = db
        .query_row("SELECT state FROM budget_state WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    serde_json::from_str::<serde_json::Value>(&state).unwrap()["used_tokens"]
        .as_i64()
        .unwrap()
}

#[test]
fn kill_9_at_random_moments_and_resume_loses_nothing() {
    let mut rng = fastrand::Rng::with_seed(20261121);
    let mut resumed_mid_session = 0;
    // The quickstart, evaluated at its end only and each phase ended when its tasks are done:
    // kills land in sessions, checks and the finalization evaluation alike, and the loop stays
    // within the suite's time.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("quickstart.toml");
    let text = std::fs::read_to_string(root().join("configs/quickstart.toml")).unwrap();
    std::fs::write(
        &config,
        text + "\n[evaluation]\nphases = [\"finalization\"]\n[scheduling]\nphase_end = \"tasks_done\"\n",
    )
    .unwrap();
    for iteration in 0..12 {
        let runs = tempfile::tempdir().unwrap();
        let id = format!("k9-{iteration}");
        let mut run = spawn(&mut run_command(
            &config,
            runs.path(),
            &["--session-id", &id],
            &[],
        ));
        let mut kills = u32::from(kill_after(&mut run, rng.u64(50..2800)));
        let session = runs.path().join(&id);
        if !session.join("session.db").exists() {
            continue; // killed before the session existed: nothing to resume
        }
        // Every other iteration, the resumed daemon is killed too.
        if iteration % 2 == 1
            && std::fs::read_to_string(session.join("status"))
                .unwrap_or_default()
                .trim()
                == "running"
        {
            let mut resumed = spawn(megatest().arg("resume").arg(&session));
            kills += u32::from(kill_after(&mut resumed, rng.u64(50..1500)));
        }
        let status = std::fs::read_to_string(session.join("status")).unwrap_or_default();
        if status.trim() != "complete" {
            resumed_mid_session += 1;
            let output = megatest().arg("resume").arg(&session).output().unwrap();
            assert_exit(&output, 0);
        }
        let report = read_json(&session.join("final_report.json"));
        assert_eq!(report["status"], "complete", "iteration {iteration}");
        assert_eq!(
            report["tasks"]["done"], 10,
            "iteration {iteration}: {}",
            report["tasks"]
        );
        // Nothing counted twice, nothing lost: the ledger holds every answer an agent received;
        // it may hold one more per kill (committed, then the daemon died before sending it).
        let (seen_calls, seen_tokens) = usage_seen_by_agents(&session);
        let (ledger_calls, ledger_tokens) = (
            ledger_sum(&session, "1"),
            ledger_sum(&session, "prompt_tokens + completion_tokens"),
        );
        assert!(
            ledger_calls >= seen_calls && ledger_calls - seen_calls <= kills as i64,
            "iteration {iteration}: ledger {ledger_calls} calls, agents saw {seen_calls}"
        );
        assert!(ledger_tokens >= seen_tokens, "iteration {iteration}");
        assert_eq!(
            report["usage"]["total_tokens"].as_i64().unwrap(),
            ledger_tokens
        );
        // The budget state (saved on the metrics tick, caught up from the ledger on resume)
        // agrees.
        assert_eq!(
            saved_budget_used(&session),
            ledger_tokens,
            "iteration {iteration}"
        );
        // Every checkpoint is valid, the project's tests pass, no agent survived.
        let (code, table) = verify(&session);
        assert_eq!(code, Some(0), "iteration {iteration}: {table}");
        let tests = Command::new("python3")
            .args(["-m", "unittest", "discover", "-s", "tests", "-t", "."])
            .current_dir(session.join("project"))
            .output()
            .unwrap();
        assert!(
            tests.status.success(),
            "iteration {iteration}: {}",
            String::from_utf8_lossy(&tests.stderr)
        );
        for pid in agent_pids(&session) {
            assert!(
                wait_for(Duration::from_secs(2), || !alive(pid)),
                "iteration {iteration}: agent {pid} survived"
            );
        }
    }
    assert!(
        resumed_mid_session >= 9,
        "only {resumed_mid_session} of 12 kills hit a running session"
    );
}

/// A call the proxy answered and spooled, whose commit the daemon did not live to make, is
/// committed by `megatest resume` (once: a spooled call already in the ledger is skipped) and
/// counted in the report; a torn last spool line is skipped.
#[test]
fn resume_commits_spooled_calls_the_ledger_lacks() {
    let runs = tempfile::tempdir().unwrap();
    let mut run = spawn(&mut run_command(
        &root().join("configs/quickstart.toml"),
        runs.path(),
        &["--session-id", "spool"],
        &[],
    ));
    let session = runs.path().join("spool");
    let committed = || {
        session.join("session.db").exists()
            && rusqlite::Connection::open(session.join("session.db"))
                .and_then(|db| {
                    db.query_row("SELECT COUNT(*) FROM ledger", [], |r| r.get::<_, i64>(0))
                })
                .unwrap_or(0)
                >= 2
    };
    assert!(wait_for(Duration::from_secs(30), committed));
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(session.join("status"))
            .unwrap()
            .trim(),
        "running"
    );
    // Spool one call that is already committed and one that is not, then a torn line.
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let (known_id, agent, role): (i64, String, String) = db
        .query_row(
            "SELECT call_id, agent_id, role FROM ledger ORDER BY seq LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    // Make the saved budget state one that counts only the first ledger row (as if the last
    // metrics tick came right after it): resume must count the rest from the ledger.
    let first_tokens: i64 = db
        .query_row(
            "SELECT prompt_tokens + completion_tokens FROM ledger ORDER BY seq LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let first_seq: i64 = db
        .query_row("SELECT MIN(seq) FROM ledger", [], |r| r.get(0))
        .unwrap();
    let state: String = db
        .query_row("SELECT state FROM budget_state", [], |r| r.get(0))
        .unwrap_or_else(|_| "{}".into());
    let mut state: serde_json::Value = serde_json::from_str(&state).unwrap();
    if state.get("total_tokens").is_some() {
        state["used_tokens"] = first_tokens.into();
        state["ledger_seq"] = first_seq.into();
        db.execute(
            "UPDATE budget_state SET state = ?1 WHERE id = 1",
            [state.to_string()],
        )
        .unwrap();
    }
    drop(db);
    let call = |call_id: i64| {
        serde_json::json!({
            "at": "2026-11-21T00:00:00.000Z", "session_secs": 1.0,
            "row": {"call_id": call_id, "agent_id": agent, "role": role, "phase": "development",
                    "task_id": null, "model_requested": "scripted", "model_served": "scripted",
                    "prompt_tokens": 1234, "completion_tokens": 56, "cached_tokens": 0,
                    "tool_names": ["write_file"], "latency_ms": 3.0, "status": 200,
                    "error_kind": null, "attempts": 1, "cost_usd": null}
        })
        .to_string()
    };
    let new_id = 777_000_777;
    let spool = session.join("ledger.spool");
    let mut text = std::fs::read_to_string(&spool).unwrap_or_default();
    text.push_str(&format!(
        "{}\n{}\n{{\"at\": \"2026-",
        call(known_id),
        call(new_id)
    ));
    std::fs::write(&spool, text).unwrap();
    let before = ledger_sum(&session, "1");

    let output = megatest().arg("resume").arg(&session).output().unwrap();
    assert_exit(&output, 0);
    let count = |id: i64| {
        scalar(
            &session,
            "SELECT COUNT(*) FROM ledger WHERE call_id = ?1",
            &[&id.to_string()],
        )
    };
    assert_eq!(count(known_id), 1, "a committed call is not imported again");
    assert_eq!(count(new_id), 1, "the spooled call is committed");
    assert_eq!(
        scalar(
            &session,
            "SELECT prompt_tokens + completion_tokens FROM ledger WHERE call_id = ?1",
            &[&new_id.to_string()]
        ),
        1290
    );
    assert!(ledger_sum(&session, "1") > before);
    let imported = scalar(
        &session,
        "SELECT json_extract(data, '$.imported') FROM events WHERE kind = 'ledger_spool_imported'",
        &[],
    );
    assert!(imported >= 1, "the import is in the event log");
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "complete");
    let ledger_tokens = ledger_sum(&session, "prompt_tokens + completion_tokens");
    assert_eq!(
        report["usage"]["total_tokens"].as_i64().unwrap(),
        ledger_tokens
    );
    assert_eq!(saved_budget_used(&session), ledger_tokens);
    assert_eq!(
        std::fs::read(&spool).unwrap().len(),
        0,
        "emptied once settled"
    );
}

#[test]
fn resume_refuses_a_completed_or_running_session() {
    let runs = tempfile::tempdir().unwrap();
    let output = run_session(
        &root().join("configs/quickstart.toml"),
        runs.path(),
        &[],
        &[],
    );
    assert_exit(&output, 0);
    let session = only_session(runs.path());
    let output = megatest().arg("resume").arg(&session).output().unwrap();
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("already ended"));

    let mut running = spawn(
        megatest()
            .arg("run")
            .arg(fixture_config())
            .args(["--provider", "sim", "--session-id", "live", "--runs-dir"])
            .arg(runs.path()),
    );
    let live = runs.path().join("live");
    assert!(wait_for(Duration::from_secs(30), || agent_pids(&live)
        .len()
        >= 2));
    let output = megatest().arg("resume").arg(&live).output().unwrap();
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("still running"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(running.wait().unwrap().code(), Some(143));
    // An interrupted session resumes; it runs in real time, so stop it again once it runs.
    let mut resumed = spawn(megatest().arg("resume").arg(&live));
    assert!(wait_for(Duration::from_secs(30), || scalar(
        &live,
        "SELECT COUNT(*) FROM events WHERE kind = 'session_resumed'",
        &[]
    ) == 1));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(resumed.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(resumed.wait().unwrap().code(), Some(143));
}

#[test]
fn restore_rolls_back_exactly_falls_back_from_a_corrupt_checkpoint_and_continues() {
    use megatest::checkpoint::snapshot::{load_manifest, snapshot, ObjectStore, StatCache};
    let runs = tempfile::tempdir().unwrap();
    let output = run_session(
        &root().join("configs/quickstart.toml"),
        runs.path(),
        &["--session-id", "r"],
        &[],
    );
    assert_exit(&output, 0);
    let session = runs.path().join("r");
    // Corrupt checkpoint 3: restoring it must fall back to checkpoint 2.
    let third = session.join("checkpoints/checkpoint_003.json");
    std::fs::write(
        &third,
        std::fs::read_to_string(&third)
            .unwrap()
            .replacen("refinement", "refinemenT", 1),
    )
    .unwrap();
    let output = megatest()
        .args(["restore", "--checkpoint", "3", "--no-resume"])
        .arg(&session)
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("checkpoint 3 is invalid") && stderr.contains("using checkpoint 2 instead"),
        "{stderr}"
    );
    // The workspace is exactly what checkpoint 2 recorded.
    let second = read_json(&session.join("checkpoints/checkpoint_002.json"));
    let objects = ObjectStore::open(&session.join("checkpoints/objects")).unwrap();
    let recorded = load_manifest(
        &objects,
        second["file_system_state"]["manifest"].as_str().unwrap(),
    )
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let (now, _, _) = snapshot(
        &session.join("project"),
        &ObjectStore::open(scratch.path()).unwrap(),
        &mut StatCache::default(),
        1 << 30,
        None,
    )
    .unwrap();
    assert_eq!(now.entries, recorded.entries);
    assert!(!session.join("project/tinyq/cli.py").exists());
    assert_eq!(
        std::fs::read_to_string(session.join("status")).unwrap(),
        "interrupted\n"
    );
    // Continue from there: the later phases run again; later checkpoints stay.
    let output = megatest().arg("resume").arg(&session).output().unwrap();
    assert_exit(&output, 0);
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "complete");
    assert_eq!(report["tasks"]["done"], 10);
    assert_eq!(report["rollbacks"].as_array().unwrap().len(), 1);
    assert_eq!(report["rollbacks"][0]["sequence"], 2);
    assert_eq!(report["rollbacks"][0]["requested"], 3);
    assert!(session.join("checkpoints/checkpoint_004.json").exists());
    // Checkpoint 5 kept the state that was rolled away; 6 and 7 are the re-run phases.
    let kept = read_json(&session.join("checkpoints/checkpoint_005.json"));
    assert_eq!(kept["trigger"], "before_restore");
    assert_eq!(report["rollbacks"][0]["checkpoint_before"], 5);
    assert!(session.join("checkpoints/checkpoint_007.json").exists());
    assert!(session.join("project/tinyq/cli.py").exists());
    // Checkpoint 3 still does not verify, but the rollback found it: not an unnoticed loss.
    let verified = criterion(&report, "all checkpoints created and verified (seed)");
    assert_eq!(verified["met"], true, "{verified}");
    assert!(
        verified["evidence"]
            .as_str()
            .unwrap()
            .contains("replaced during the session: 3"),
        "{verified}"
    );
    let interventions = criterion(&report, "zero manual interventions (seed)");
    assert_eq!(interventions["met"], false);
    assert_eq!(interventions["evidence"], "1 rollback");
}

/// A session directory whose workspace is gone (removed by hand, or copied from S3 without
/// one) resumes with `project/` written from its newest checkpoint that verifies; without a
/// checkpoint to write it from, resume refuses and touches nothing.
#[test]
fn resume_writes_a_missing_workspace_from_the_newest_checkpoint_or_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let mut run = spawn(&mut run_command(
        &root().join("configs/quickstart.toml"),
        &runs,
        &["--session-id", "w1"],
        &[],
    ));
    let session = runs.join("w1");
    assert!(wait_for(Duration::from_secs(120), || session
        .join("checkpoints/checkpoint_001.json")
        .exists()));
    kill_after(&mut run, 0);
    std::fs::remove_dir_all(session.join("project")).unwrap();
    // A copy without checkpoints either: refused, nothing written.
    let bare = dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    for name in ["session.db", "status"] {
        std::fs::copy(session.join(name), bare.join(name)).unwrap();
    }
    let refused = megatest().arg("resume").arg(&bare).output().unwrap();
    assert_exit(&refused, 2);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no checkpoint of the session verifies")
    );
    assert!(!bare.join("project").exists());
    // The session itself: its workspace comes back and it runs to its end.
    let output = megatest().arg("resume").arg(&session).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_exit(&output, 0);
    assert!(
        stderr.contains("was missing: written from checkpoint"),
        "{stderr}"
    );
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "complete", "{stderr}");
    assert_eq!(report["tasks"]["done"], 10);
}
