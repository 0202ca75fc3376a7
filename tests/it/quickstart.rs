//! The embedded default: the quickstart session on the scripted model, end to end.

use crate::support::*;
use std::process::Command;

#[test]
fn quickstart_session_builds_a_project_whose_tests_pass() {
    let runs = tempfile::tempdir().unwrap();
    let config = root().join("configs/quickstart.toml");
    let output = run_session(&config, runs.path(), &[], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{stderr}");
    let session = only_session(runs.path());

    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "complete");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["model"]["provider"], "scripted");
    assert!(report["model"]["label"]
        .as_str()
        .unwrap()
        .contains("scripted"));
    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["bootstrap", "development", "refinement", "finalization"]
    );
    for phase in phases {
        let checks = phase["checks"].as_array().unwrap();
        let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["build", "test"], "{phase}");
        assert!(checks.iter().all(|c| c["passed"] == true), "{phase}");
    }
    assert_eq!(report["tasks"]["done"], report["tasks"]["total"]);
    assert_eq!(report["tasks"]["total"], 10);
    assert!(report["code"]["value"]["lines_of_code"].as_u64().unwrap() > 100);
    // The hidden acceptance suite ran at the ends of development, refinement and finalization
    // (never at bootstrap); at the end every case passes and coverage is measured.
    assert_eq!(scalar(&session, "SELECT COUNT(*) FROM evaluations", &[]), 3);
    assert_eq!(
        scalar(
            &session,
            "SELECT COUNT(*) FROM evaluations WHERE phase = 'bootstrap'",
            &[]
        ),
        0
    );
    let evaluation = &report["evaluation"];
    assert_eq!(evaluation["phase"], "finalization");
    assert_eq!(evaluation["acceptance"]["status"], "passed", "{evaluation}");
    assert!(evaluation["acceptance"]["total"].as_u64().unwrap() >= 10);
    let coverage = report["test_coverage"]["value"].as_f64().unwrap();
    assert!(
        (0.5..=1.0).contains(&coverage),
        "{}",
        report["test_coverage"]
    );
    assert!(evaluation["doc_coverage"]["fraction"]["value"]
        .as_f64()
        .is_some());
    assert_eq!(evaluation["security"]["findings"]["value"]["high"], 0);
    // The seed's three tiers are judged; the critical tier includes the acceptance suite.
    let criteria = report["success_criteria"].as_array().unwrap();
    for tier in ["critical", "important", "nice_to_have"] {
        assert!(
            criteria
                .iter()
                .any(|c| c["tier"] == tier && c["met"].is_boolean()),
            "no judged {tier} criterion"
        );
    }
    assert!(criteria.iter().any(|c| c["tier"] == "critical"
        && c["criterion"] == "the acceptance suite's critical cases pass"
        && c["met"] == true));
    let judged = |name: &str| {
        criteria
            .iter()
            .find(|c| c["criterion"] == name)
            .unwrap_or_else(|| panic!("no criterion {name:?}"))
            .clone()
    };
    for (name, met) in [
        (
            "the session completes without fatal errors (seed)",
            Some(true),
        ),
        ("all checkpoints created and verified (seed)", Some(true)),
        ("recovery from at least one failure (seed)", None),
        ("zero manual interventions (seed)", Some(true)),
        ("under the token budget (seed)", Some(true)),
        ("agent trust scores > 0.8 (seed)", Some(true)),
        ("Final checkpoint validates", Some(true)),
    ] {
        let criterion = judged(name);
        assert_eq!(criterion["met"].as_bool(), met, "{criterion}");
    }
    assert!(
        judged("all checkpoints created and verified (seed)")["evidence"]
            .as_str()
            .unwrap()
            .contains("4 at phase ends")
    );
    // Every finished task's work was reviewed by the two other agents and approved, and each
    // phase ended early through its gate: its criteria measured as met, then two agents voted.
    let consensus = &report["consensus"];
    let votes = consensus["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 14, "{consensus}");
    for vote in votes {
        assert_eq!(vote["outcome"], "approved", "{vote}");
        let ballots = vote["ballots"].as_array().unwrap();
        assert_eq!(ballots.len(), 2, "{vote}");
        assert!(ballots
            .iter()
            .all(|b| b["choice"] == "approve" && b["voter"] != vote["author"]));
    }
    let gates: Vec<&str> = votes
        .iter()
        .filter(|v| v["kind"] == "gate")
        .map(|v| v["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        gates,
        [
            "gate-bootstrap",
            "gate-development",
            "gate-refinement",
            "gate-finalization"
        ]
    );
    for phase in report["phases"].as_array().unwrap() {
        assert_eq!(phase["ended_because"], "gate_vote", "{phase}");
        assert!(
            phase["session_secs"].as_f64().unwrap()
                < phase["planned_session_secs"].as_f64().unwrap(),
            "{phase}"
        );
        assert_eq!(phase["checks"].as_array().unwrap().len(), 2, "{phase}");
    }
    assert_eq!(report["concurrency"]["follow_up_tasks"], 0);
    assert_eq!(report["concurrency"]["peak_busy_agents"]["value"], 3);
    assert_eq!(
        report["tasks"]["done"], 10,
        "reviews are not counted as tasks"
    );
    for agent in report["agents"].as_array().unwrap() {
        let score = agent["trust_score"].as_f64().unwrap();
        assert!((0.3..=1.0).contains(&score), "{agent}");
        assert!(
            agent["trust_record"]["tasks_done"].as_u64().unwrap() > 0,
            "{agent}"
        );
    }
    // The phases' criteria are judged offline too; online the acceptance suite joins the tests.
    let tests = judged("All tests passing");
    assert_eq!(tests["met"], true, "{tests}");
    assert!(tests["evidence"]
        .as_str()
        .unwrap()
        .contains("acceptance suite: 14 of 14 cases passed"));
    let keys = report["not_yet_enforced"].to_string();
    assert!(
        !keys.contains("max_bugs")
            && !keys.contains("memory_usage_mb")
            && !keys.contains("trust")
            && !keys.contains("spawning"),
        "{keys}"
    );
    let metrics = read_json(&session.join("metrics_current.json"));
    assert_eq!(metrics["acceptance_pass_rate"]["value"], 1.0);
    assert_eq!(metrics["consensus_votes_cast"]["value"], 28);
    assert_eq!(
        std::fs::read_to_string(session.join("status")).unwrap(),
        "complete\n"
    );

    // The project's own tests pass when run by hand afterwards.
    let by_hand = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests", "-t", "."])
        .current_dir(session.join("project"))
        .output()
        .unwrap();
    assert!(
        by_hand.status.success(),
        "{}",
        String::from_utf8_lossy(&by_hand.stderr)
    );
    assert!(String::from_utf8_lossy(&by_hand.stderr).contains("Ran 12 tests"));

    // The report's token total equals the sum of `usage` the model sent, as each agent saw it.
    let mut sent_tokens = 0;
    let mut sent_calls = 0;
    for agent in std::fs::read_dir(session.join("agents")).unwrap() {
        let log =
            std::fs::read_to_string(agent.unwrap().path().join("agent.log")).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("\"model_response\"")) {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            sent_tokens += event["usage"]["total_tokens"].as_u64().unwrap();
            sent_calls += 1;
        }
    }
    assert!(sent_calls > 20);
    assert_eq!(
        report["usage"]["total_tokens"].as_u64().unwrap(),
        sent_tokens
    );
    assert_eq!(report["usage"]["model_calls"].as_u64().unwrap(), sent_calls);

    // Every model call and tool call is in the event log with agent, phase and task.
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE kind = 'model_call'"),
        sent_calls as i64
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE kind = 'tool_call'"),
        report["usage"]["tool_calls"].as_i64().unwrap()
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events WHERE kind IN ('model_call','tool_call') AND (agent_id IS NULL OR phase IS NULL OR task_id IS NULL)"),
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM tasks WHERE state = 'done' AND id NOT LIKE 'review-%'"),
        10
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM tasks WHERE state = 'done' AND id LIKE 'review-%'"),
        28,
        "two reviews of each task and two gate votes of each phase"
    );
    assert_eq!(
        count("PRAGMA user_version"),
        megatest::store::MIGRATIONS.len() as i64
    );

    // The files the layout promises.
    for file in [
        "config.json",
        "agents.toml",
        "session.log",
        "metrics_current.json",
        "metrics/metrics.jsonl",
    ] {
        assert!(session.join(file).is_file(), "{file} missing");
    }
    let config = read_json(&session.join("config.json"));
    assert_eq!(config["not_yet_enforced"], serde_json::json!([]));
}

/// README's first command as an operator types it: the default runs directory (`test_runs/`,
/// relative to the working directory). Agents run elsewhere and checkpoints are read back, so
/// every recorded path must still resolve.
#[test]
fn main_job_runs_from_a_relative_runs_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let output = megatest()
        .current_dir(cwd.path())
        .args(["run", "--session-id", "readme"])
        .arg(root().join("configs/quickstart.toml"))
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let session = cwd.path().join("test_runs/readme");
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "complete", "{}", report["ended_because"]);
    assert_eq!(report["tasks"]["done"], 10);
    let verify = megatest()
        .current_dir(cwd.path())
        .args(["checkpoints", "--verify", "test_runs/readme"])
        .output()
        .unwrap();
    assert_exit(&verify, 0);
}
