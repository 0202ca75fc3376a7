//! `megatest fork`: a new session from a checkpoint of another, with its own ledger.

use crate::support::*;

fn builtin_sim_config(dir: &std::path::Path) -> std::path::PathBuf {
    let spec = root().join("system_tests/long_running/projects/quickstart");
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[session]\nduration_hours = 1\nagent_count = 2\nproject_type = \"quickstart\"\n\
             [agent]\nconcurrent_agents = 2\nroles = [\"Architect\", \"Tester\"]\nmax_total_agents = 2\n\
             [limits]\nmax_test_runtime_min = 1\n[project]\nspec_dir = {:?}\n\
             [model]\nprovider = \"sim\"\n[agents]\nkind = \"builtin\"\n\
             [scheduling]\nphase_end = \"tasks_done\"\ntask_check = \"none\"\n\
             [api]\naddress = \"127.0.0.1:0\"\n",
            spec.display().to_string()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_fork_from_checkpoint_2_runs_to_its_end_with_its_own_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let config = builtin_sim_config(dir.path());
    let runs = dir.path().join("runs");
    let output = run_session(
        &config,
        &runs,
        &["--time-scale", "600", "--session-id", "source"],
        &[],
    );
    assert!(matches!(output.status.code(), Some(0 | 1)), "{output:?}");
    let source = runs.join("source");
    let before = std::fs::read(source.join("final_report.json")).unwrap();
    let source_calls = scalar(&source, "SELECT COUNT(*) FROM ledger", &[]);
    assert!(source_calls > 0, "the sim model was called");
    let fork = |checkpoint: &str, id: &str| {
        megatest()
            .args(["fork", checkpoint, "--session-id", id, "--runs-dir"])
            .arg(&runs)
            .output()
            .unwrap()
    };
    let output = fork("source:2", "fork-a");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(matches!(output.status.code(), Some(0 | 1)), "{stderr}");
    assert!(
        stderr.contains("session fork-a forked from checkpoint 2 of source"),
        "{stderr}"
    );
    let forked = runs.join("fork-a");
    let report = read_json(&forked.join("final_report.json"));
    assert_eq!(report["session_id"], "fork-a");
    assert_eq!(report["forked_from"]["session_id"], "source");
    assert_eq!(report["forked_from"]["checkpoint"], 2);
    let at = report["forked_from"]["checkpoint_session_secs"]
        .as_f64()
        .unwrap();
    // Its own ledger: only the fork's calls, all after the checkpoint's moment, and the report
    // counts exactly those.
    let calls = scalar(&forked, "SELECT COUNT(*) FROM ledger", &[]);
    assert!(calls > 0, "the fork worked: {stderr}");
    assert_eq!(report["usage"]["model_calls"], calls);
    assert_eq!(
        scalar(
            &forked,
            "SELECT COUNT(*) FROM ledger WHERE session_secs < ?1",
            &[&at.to_string()]
        ),
        0
    );
    assert_eq!(report["status"], "complete", "{stderr}");
    // The checkpoints up to 2 are the source's, later ones the fork's own.
    for seq in ["001", "002"] {
        let name = format!("checkpoints/checkpoint_{seq}.json");
        assert_eq!(
            std::fs::read(source.join(&name)).unwrap(),
            std::fs::read(forked.join(&name)).unwrap()
        );
    }
    assert!(forked.join("checkpoints/checkpoint_003.json").exists());
    let verify = megatest()
        .args(["checkpoints", forked.to_str().unwrap(), "--verify"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{verify:?}");
    // The source is untouched.
    assert_eq!(
        std::fs::read(source.join("final_report.json")).unwrap(),
        before
    );
    assert_eq!(
        scalar(&source, "SELECT COUNT(*) FROM ledger", &[]),
        source_calls
    );

    // Refused, with nothing made or changed: an id in use, a checkpoint that does not exist,
    // something that names no checkpoint.
    let listing = |d: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let sessions = listing(&runs);
    let forked_files = listing(&forked);
    for (checkpoint, id, says) in [
        ("source:2", "fork-a", "exists already"),
        ("source:99", "fork-b", "has no checkpoint 99"),
        ("nonsense", "fork-c", "names no checkpoint"),
    ] {
        let output = fork(checkpoint, id);
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(says),
            "{output:?}"
        );
    }
    assert_eq!(listing(&runs), sessions);
    assert_eq!(listing(&forked), forked_files);
}
