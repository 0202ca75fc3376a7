//! Checkpoints of real sessions: triggers, sealing, shared objects, verification.

use crate::support::*;
use std::path::Path;
use std::time::Duration;

fn triggers(session: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let mut stmt = db
        .prepare("SELECT trigger FROM checkpoints ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn phase_end_checkpoints_share_objects_and_tampering_is_detected() {
    let runs = tempfile::tempdir().unwrap();
    let output = run_session(
        &root().join("configs/quickstart.toml"),
        runs.path(),
        &[],
        &[],
    );
    assert_exit(&output, 0);
    let session = only_session(runs.path());
    assert_eq!(triggers(&session), ["phase_end"; 4]);
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["checkpoints"]["count"], 4);
    let (code, table) = verify(&session);
    assert_eq!(code, Some(0), "{table}");
    assert_eq!(table.matches(" valid").count(), 4, "{table}");

    // The last checkpoint's manifest matches the workspace byte for byte.
    let last = read_json(&session.join("checkpoints/checkpoint_004.json"));
    assert_eq!(last["sequence"], 4);
    assert_eq!(last["parent"], 3);
    assert_eq!(last["trigger"], "phase_end");
    assert_eq!(last["phase"], "finalization");
    assert_eq!(last["agent_states"].as_array().unwrap().len(), 3);
    // The ten planned tasks, the two reviews of each, and the two gate votes of each phase.
    let board = last["task_board"].as_array().unwrap();
    assert_eq!(board.len(), 38);
    assert_eq!(
        board
            .iter()
            .filter(|t| t["id"].as_str().unwrap().starts_with("review-"))
            .count(),
        28
    );
    assert_eq!(
        board
            .iter()
            .filter(|t| t["id"].as_str().unwrap().starts_with("review-gate-"))
            .count(),
        8
    );
    assert!(last["budgets"]["used_tokens"].as_u64().unwrap() > 0);
    let manifest_hash = last["file_system_state"]["manifest"].as_str().unwrap();
    let objects = session.join("checkpoints/objects");
    let store = megatest::checkpoint::snapshot::ObjectStore::open(&objects).unwrap();
    let manifest = megatest::checkpoint::snapshot::load_manifest(&store, manifest_hash).unwrap();
    let queue = manifest
        .entries
        .iter()
        .find(|e| e.path == "tinyq/queue.py")
        .unwrap();
    let queue_hash = queue.hash.clone().unwrap();
    let content = std::fs::read(session.join("project/tinyq/queue.py")).unwrap();
    use sha2::Digest;
    assert_eq!(queue_hash, hex::encode(sha2::Sha256::digest(&content)));

    // Objects are stored once: fewer objects than files listed over all checkpoints.
    let listed: u64 = (1..=4)
        .map(|seq| {
            read_json(&session.join(format!("checkpoints/checkpoint_{seq:03}.json")))
                ["file_system_state"]["files"]
                .as_u64()
                .unwrap()
        })
        .sum();
    let stored = walk_files(&objects);
    assert!(
        stored < listed as usize,
        "{stored} objects for {listed} listed files"
    );

    // A modified checkpoint and a missing object are both found.
    let second = session.join("checkpoints/checkpoint_002.json");
    let text = std::fs::read_to_string(&second)
        .unwrap()
        .replacen("development", "developmenT", 1);
    std::fs::write(&second, text).unwrap();
    let object = objects.join(&queue_hash[..2]).join(&queue_hash[2..]);
    std::fs::remove_file(object).unwrap();
    let (code, table) = verify(&session);
    assert_eq!(code, Some(1), "{table}");
    let line = |seq: &str| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(seq))
            .unwrap()
            .to_string()
    };
    assert!(line("2 ").contains("does not match its sha256"), "{table}");
    assert!(
        line("4 ").contains("tinyq/queue.py") && line("4 ").contains("missing"),
        "{table}"
    );
    assert!(line("1 ").ends_with("valid"), "{table}");
}

fn walk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { walk_files(&p) } else { 1 })
        .sum()
}

#[test]
fn tool_call_threshold_triggers_checkpoints_and_disabled_means_none() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(root().join("configs/quickstart.toml")).unwrap();
    let spec = root().join("system_tests/long_running/projects/quickstart");
    let with = |extra: &str, name: &str| {
        let text = format!(
            "{base}\n[checkpoint]\n{extra}\n[project]\nspec_dir = {:?}\n",
            spec.display().to_string()
        );
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let runs = dir.path().join("runs-threshold");
    let output = run_session(
        &with("tool_call_threshold = 5", "threshold.toml"),
        &runs,
        &[],
        &[],
    );
    assert_exit(&output, 0);
    let session = only_session(&runs);
    let seen = triggers(&session);
    assert!(
        seen.iter().filter(|t| *t == "tool_calls").count() >= 3,
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|t| *t == "phase_end").count(), 4);
    assert_eq!(verify(&session).0, Some(0));

    let runs = dir.path().join("runs-disabled");
    // Without checkpoints "Final checkpoint validates" can never be met: the last phase would
    // wait out its time box, so this run ends its phases when their tasks are done.
    let output = run_session(
        &with(
            "enabled = false\n[scheduling]\nphase_end = \"tasks_done\"",
            "disabled.toml",
        ),
        &runs,
        &[],
        &[],
    );
    assert_exit(&output, 0);
    assert!(triggers(&only_session(&runs)).is_empty());
}

#[test]
fn sigusr2_checkpoints_now_and_sigterm_checkpoints_before_stopping() {
    let runs = tempfile::tempdir().unwrap();
    let mut child = megatest()
        .arg("run")
        .arg(fixture_config())
        .args(["--provider", "sim", "--session-id", "usr2", "--runs-dir"])
        .arg(runs.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let session = runs.path().join("usr2");
    assert!(
        wait_for(Duration::from_secs(30), || agent_pids(&session).len() >= 2),
        "agents did not start"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2).unwrap();
    let manual = wait_for(Duration::from_secs(30), || {
        rusqlite::Connection::open(session.join("session.db"))
            .and_then(|db| {
                db.query_row(
                    "SELECT COUNT(*) FROM checkpoints WHERE trigger = 'manual'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .unwrap_or(0)
            == 1
    });
    assert!(manual, "no manual checkpoint after SIGUSR2");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    assert_eq!(triggers(&session), ["manual", "shutdown"]);
    let manual = read_json(&session.join("checkpoints/checkpoint_001.json"));
    let running: Vec<_> = manual["agent_states"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == "running")
        .collect();
    assert!(
        !running.is_empty(),
        "the manual checkpoint saw no running agent"
    );
    assert!(running
        .iter()
        .all(|a| a["process_group"].is_u64() && a["current_task"].is_string()));
    assert_eq!(manual["file_system_state"]["consistent"], true);
    assert_eq!(verify(&session).0, Some(0));
}

#[test]
fn a_store_over_the_disk_limit_is_pruned_and_then_reported_full() {
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(root().join("configs/quickstart.toml")).unwrap();
    let spec = root().join("system_tests/long_running/projects/quickstart");
    // 1 KB: every checkpoint's own objects exceed it.
    let text = base.replace("[limits]\n", "[limits]\ndisk_space_limit_gb = 0.000001\n")
        + &format!("\n[project]\nspec_dir = {:?}\n", spec.display().to_string());
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, text).unwrap();
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &[], &[]);
    assert_exit(&output, 0);
    let session = only_session(&runs);
    assert_eq!(
        scalar(
            &session,
            "SELECT COUNT(*) FROM events WHERE kind = 'checkpoint_store_pruned'",
            &[]
        ),
        4
    );
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["errors"]["disk_full"], 4, "{}", report["errors"]);
    // Pruning never breaks a checkpoint.
    let (code, table) = verify(&session);
    assert_eq!(code, Some(0), "{table}");
}
