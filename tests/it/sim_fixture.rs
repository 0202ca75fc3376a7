//! The upstream fixture config at time scale on the `sim` model.

use crate::support::*;

#[test]
fn upstream_fixture_runs_one_hour_at_time_scale_3600_on_sim() {
    let runs = tempfile::tempdir().unwrap();
    let args = ["--hours", "1", "--time-scale", "3600", "--provider", "sim"];
    let output = run_session(&fixture_config(), runs.path(), &args, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The sim writes plausible files but no Cargo project: the checks fail for real → exit 1.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let session = only_session(runs.path());
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "complete");
    assert_eq!(report["model"]["provider"], "sim");
    assert!(report["model"]["label"]
        .as_str()
        .unwrap()
        .contains("not an LLM"));
    assert_eq!(report["agent_count"], 6);
    // The upstream [consensus] (weighted, 3 votes, threshold 0.6): finished work goes to
    // review votes; at this time scale a phase (0.17 s of wall time) often ends before its
    // reviews do, and those votes are abandoned — none stays open.
    let consensus = &report["consensus"];
    assert_eq!(consensus["strategy"], "weighted");
    let votes = consensus["votes"].as_array().unwrap();
    assert!(!votes.is_empty(), "{consensus}");
    assert!(votes.iter().all(|v| v["outcome"] != "open"), "{consensus}");
    // 60/120/120/60 minutes scaled to one hour.
    let planned: Vec<f64> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["planned_session_secs"].as_f64().unwrap())
        .collect();
    assert_eq!(planned, [600.0, 1200.0, 1200.0, 600.0]);
    for phase in report["phases"].as_array().unwrap() {
        assert_ne!(phase["ended_because"], "not_started");
        let checks = phase["checks"].as_array().unwrap();
        assert_eq!(checks.len(), 2);
        assert!(checks
            .iter()
            .all(|c| c["passed"] == false && !c["output_tail"].as_str().unwrap().is_empty()));
    }
    assert!(report["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(report["usage"]["tool_calls"].as_u64().unwrap() > 0);
    let criteria = report["success_criteria"].as_array().unwrap();
    assert!(criteria
        .iter()
        .any(|c| c["critical"] == true && c["met"] == false));
    assert!(report["errors"]["test_failure"].as_u64().unwrap() >= 1);
    // The hidden RedQueue suite ran against what the sim wrote (no server): every case fails
    // with the reason, and the failures are the bug counts.
    let acceptance = &report["evaluation"]["acceptance"];
    assert_eq!(acceptance["status"], "failed", "{acceptance}");
    assert!(acceptance["reason"]
        .as_str()
        .unwrap()
        .starts_with("build failed"));
    assert_eq!(acceptance["passed"], 0);
    let cases = acceptance["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    assert!(cases
        .iter()
        .all(|c| c["message"].as_str().unwrap_or("").contains("build failed")));
    let bugs = &report["evaluation"]["bugs"];
    assert!(bugs["critical"].as_u64().unwrap() >= 5, "{bugs}");
    assert_eq!(
        bugs["critical"].as_u64().unwrap()
            + bugs["high"].as_u64().unwrap()
            + bugs["medium"].as_u64().unwrap(),
        cases.len() as u64
    );
    let acceptance_criterion = criteria
        .iter()
        .find(|c| c["criterion"] == "the acceptance suite's critical cases pass")
        .unwrap();
    assert_eq!(acceptance_criterion["met"], false);
    assert!(criteria.iter().any(|c| c["criterion"]
        .as_str()
        .unwrap()
        .contains("max_bugs_critical")
        && c["met"] == false));
    // Session time is wall time × 3600 (the one clock), except while megatest measures the
    // workspace itself (phase checks, evaluations), which runs at wall speed.
    let session_secs = report["duration"]["session_secs"].as_f64().unwrap();
    let wall_secs = report["duration"]["wall_secs"].as_f64().unwrap();
    assert!(
        session_secs < wall_secs * 3600.0 && session_secs > wall_secs * 100.0,
        "{session_secs} session s in {wall_secs} wall s"
    );
    let phases: f64 = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["session_secs"].as_f64())
        .sum();
    assert!(phases <= session_secs + 1.0, "{phases} > {session_secs}");
}
