//! The swarm with real agent processes: review votes on finished work (verdict lines in the
//! agents' output, rework with the reviewers' reasons) and a consensus deadlock escalated to
//! the operator and answered through the control API.

use crate::control::answer_the_escalation;
use crate::recovery::{mini_config, SIM};
use crate::support::*;

/// Reviewers that reject every piece of work (a command agent that prints a verdict line when
/// its task is a review).
const REJECTING: &str = "case \"$MEGATEST_TASK_ID\" in review-*) echo 'VERDICT: reject — no tests for it';; esac; exit 0";

#[test]
fn rejected_work_is_reworked_with_the_reasons_until_the_rounds_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{SIM}\n[consensus]\nenabled = true\nmin_votes = 2\nstrategy = \"majority\"\nthreshold = 0.6\nvote_timeout_secs = 600\n"
    );
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder")],
        3,
        REJECTING,
        "build = \"true\"\ntest = \"true\"",
        &extra,
    );
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    let session = only_session(&runs);
    let report = read_json(&session.join("final_report.json"));
    let consensus = &report["consensus"];
    let votes = consensus["votes"].as_array().unwrap();
    // Three rounds ([agents].max_task_attempts = 3), each rejected by both other agents.
    assert_eq!(votes.len(), 3, "{consensus}");
    for vote in votes {
        assert_eq!(vote["outcome"], "rejected", "{vote}");
        assert_eq!(vote["subject"], "t1");
        let ballots = vote["ballots"].as_array().unwrap();
        assert_eq!(ballots.len(), 2, "{vote}");
        for ballot in ballots {
            assert_ne!(
                ballot["voter"], vote["author"],
                "the author never votes on its work"
            );
            assert_eq!(ballot["choice"], "reject");
            assert_eq!(ballot["reason"], "no tests for it");
            assert_eq!(ballot["via"], "verdict_line");
        }
    }
    assert_eq!(consensus["by_outcome"]["rejected"], 3);
    assert_eq!(consensus["ballots_cast"], 6);
    let task = report["task_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "t1")
        .unwrap();
    assert_eq!(task["state"], "failed", "{task}");
    assert!(
        task["last_error"]
            .as_str()
            .unwrap()
            .contains("rejected by 3 review rounds"),
        "{task}"
    );
    // The rework prompts carried the reviewers' reasons.
    let prompts: Vec<String> = std::fs::read_dir(session.join("agents"))
        .unwrap()
        .flatten()
        .flat_map(|agent| {
            std::fs::read_dir(agent.path().join("prompts"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|p| p.file_name().to_string_lossy().starts_with("t1."))
        .map(|p| std::fs::read_to_string(p.path()).unwrap())
        .collect();
    assert_eq!(prompts.len(), 3);
    assert_eq!(
        prompts
            .iter()
            .filter(|p| p.contains("no tests for it"))
            .count(),
        2
    );
    // Rejected work lowers its author's trust; agreeing reviewers gain.
    let agents = report["agents"].as_array().unwrap();
    assert!(agents
        .iter()
        .any(|a| a["trust_record"]["reviews_rejected"].as_u64().unwrap() > 0));
    assert!(agents
        .iter()
        .any(|a| a["trust_record"]["votes_agreed"].as_u64().unwrap() > 0));
    // The only task failed: the final build and test still pass, so the exit code is the
    // critical tier's (no failure recovered → 1 when one happened, else 0).
    assert!(matches!(output.status.code(), Some(0 | 1)));
}

#[test]
fn a_quorum_larger_than_the_voters_deadlocks_and_the_operator_decides() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{SIM}\n[consensus]\nenabled = true\nmin_votes = 3\nstrategy = \"weighted\"\n\n[recovery]\nescalation_timeout_minutes = 600\n"
    );
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder")],
        2,
        "exit 0",
        "build = \"true\"\ntest = \"true\"",
        &extra,
    );
    let runs = dir.path().join("runs");
    let mut child = megatest()
        .arg("run")
        .arg(&config)
        .args([
            "--session-id",
            "deadlock",
            "--time-scale",
            "60",
            "--runs-dir",
        ])
        .arg(&runs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let session = runs.join("deadlock");
    answer_the_escalation(&session, "consensus_deadlock", "continue");
    let code = child.wait().unwrap().code();
    let report = read_json(&session.join("final_report.json"));
    assert!(matches!(code, Some(0 | 1)), "{}", report["ended_because"]);
    let vote = &report["consensus"]["votes"][0];
    assert_eq!(vote["outcome"], "deadlock", "{vote}");
    assert!(
        vote["reason"]
            .as_str()
            .unwrap()
            .contains("no quorum possible: 1 eligible voters"),
        "{vote}"
    );
    // A vote that can never reach its quorum puts no review on the board.
    assert!(
        report["task_list"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !t["id"].as_str().unwrap().starts_with("review-")),
        "{}",
        report["task_list"]
    );
    let deadlock = report["recoveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["failure_kind"] == "consensus_deadlock")
        .unwrap();
    assert_eq!(deadlock["action"], "escalate");
    assert_eq!(deadlock["outcome"], "escalated");
    assert_eq!(report["status"], "complete");
}

/// Reviewers that vote through the control API (`POST /api/agent/votes` with their own key) and
/// print no verdict line; everything else finishes at once.
const API_VOTER: &str = r#"case "$MEGATEST_TASK_ID" in review-*) python3 - <<'PY' || exit 1
import json, os, urllib.request
request = urllib.request.Request(
    os.environ["MEGATEST_API_URL"] + "/api/agent/votes",
    data=json.dumps({"choice": "approve", "reason": "checked through the API"}).encode(),
    headers={"Authorization": "Bearer " + os.environ["MEGATEST_AGENT_KEY"], "Content-Type": "application/json"},
    method="POST",
)
print(urllib.request.urlopen(request, timeout=10).read().decode())
PY
;; esac; exit 0"#;

#[test]
fn reviewers_vote_through_the_control_api() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{SIM}\n[consensus]\nenabled = true\nmin_votes = 2\nstrategy = \"unanimous\"\nvote_timeout_secs = 600\n\n[api]\naddress = \"127.0.0.1:0\"\n"
    );
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder"), ("t2", "Tester")],
        3,
        API_VOTER,
        "build = \"true\"\ntest = \"true\"",
        &extra,
    );
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    assert_exit(&output, 0);
    let report = read_json(&only_session(&runs).join("final_report.json"));
    let votes = report["consensus"]["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 2, "{}", report["consensus"]);
    for vote in votes {
        assert_eq!(vote["outcome"], "approved", "{vote}");
        assert_eq!(vote["strategy"], "unanimous");
        for ballot in vote["ballots"].as_array().unwrap() {
            assert_eq!(ballot["via"], "api", "{ballot}");
            assert_eq!(ballot["reason"], "checked through the API");
        }
    }
    assert_eq!(report["tasks"]["done"], 2);
}
