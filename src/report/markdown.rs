//! The Markdown summary of a session (GitHub Actions' `GITHUB_STEP_SUMMARY`, `megatest report
//! --format md`): verdict, criteria, tokens, cost, phases, failing acceptance cases, and where
//! the artifacts are. Pure; built from the final report's JSON document.

use super::digest;
use serde_json::Value;
use std::fmt::Write;

/// A table cell: one line, `|` escaped, HTML neutralised, at most 300 characters (agent text
/// is untrusted).
pub fn cell(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut = super::svg::truncate(&one_line, 300);
    super::svg::esc(&cut).replace('|', "\\|")
}

/// The summary of `report`; `artifacts` names where the session's files are (a directory,
/// or the GitHub Actions run page that lists the uploaded artifacts).
pub fn render(report: &Value, artifacts: &str) -> String {
    let (verdict, ok) = digest::verdict(report);
    let mut out = format!(
        "## {} megatest {}: {}\n\n{} (exit code {})\n\n",
        if ok { "✅" } else { "❌" },
        cell(report["session_id"].as_str().unwrap_or("session")),
        verdict.to_uppercase(),
        cell(report["ended_because"].as_str().unwrap_or("")),
        report["exit_code"],
    );
    out.push_str("| | |\n|---|---|\n");
    let _ = writeln!(
        out,
        "| Project | {} |",
        cell(report["project"]["name"].as_str().unwrap_or(""))
    );
    let _ = writeln!(
        out,
        "| Model | {} |",
        cell(
            report["model"]["label"]
                .as_str()
                .or(report["model"]["name"].as_str())
                .unwrap_or("")
        )
    );
    let _ = writeln!(
        out,
        "| Criteria | {} |",
        cell(&digest::criteria_line(report))
    );
    for (label, value) in digest::headline(report) {
        let _ = writeln!(out, "| {label} | {} |", cell(&value));
    }
    let failing: Vec<&Value> = digest::TIERS
        .iter()
        .flat_map(|(tier, _)| digest::criteria_of(report, tier))
        .filter(|c| c["met"] == false)
        .collect();
    if !failing.is_empty() {
        out.push_str("\n### Criteria not met\n\n| Tier | Criterion | Evidence |\n|---|---|---|\n");
        for criterion in failing {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(criterion["tier"].as_str().unwrap_or("")),
                cell(criterion["criterion"].as_str().unwrap_or("")),
                cell(criterion["evidence"].as_str().unwrap_or(""))
            );
        }
    }
    out.push_str("\n### Phases\n\n| Phase | Ended because | Session time | Tasks done | Checks passed |\n|---|---|---|---|---|\n");
    for phase in report["phases"].as_array().into_iter().flatten() {
        let checks = phase["checks"].as_array().cloned().unwrap_or_default();
        let passed = checks.iter().filter(|c| c["passed"] == true).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}/{} | {passed}/{} |",
            cell(phase["name"].as_str().unwrap_or("")),
            cell(phase["ended_because"].as_str().unwrap_or("")),
            phase["session_secs"]
                .as_f64()
                .map_or("not started".into(), super::svg::duration),
            phase["tasks"]["done"],
            phase["tasks"]["total"],
            checks.len(),
        );
    }
    let failed_cases: Vec<&Value> = digest::acceptance_cases(report)
        .into_iter()
        .filter(|c| c["outcome"] != "passed" && c["outcome"] != "skipped")
        .collect();
    if !failed_cases.is_empty() {
        out.push_str(
            "\n### Failing acceptance cases\n\n| Case | Severity | Message |\n|---|---|---|\n",
        );
        for case in failed_cases {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                cell(case["id"].as_str().unwrap_or("")),
                cell(case["severity"].as_str().unwrap_or("")),
                cell(case["message"].as_str().unwrap_or(""))
            );
        }
    }
    let _ = writeln!(
        out,
        "\n### Artifacts\n\n`report.html` (open in a browser), `final_report.json`, `junit.xml`, \
         `session.db`, `session.log`: {}\n",
        cell(artifacts)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_leads_with_the_verdict_and_lists_what_failed() {
        let report = json!({
            "session_id": "s1", "status": "complete", "exit_code": 1,
            "ended_because": "a critical success criterion failed",
            "success_criteria": [
                {"criterion": "tests | pass", "tier": "critical", "met": false, "evidence": "3 <failed>\nof 9"},
                {"criterion": "docs", "tier": "important", "met": true, "evidence": ""}],
            "phases": [{"name": "bootstrap", "ended_because": "time_box", "session_secs": 60.0,
                        "tasks": {"done": 1, "total": 2}, "checks": [{"passed": true}, {"passed": false}]}],
            "evaluation": {"acceptance": {"status": "ran", "cases": [
                {"id": "a::x", "outcome": "failed", "severity": "critical", "message": "boom"},
                {"id": "a::y", "outcome": "passed", "severity": "high"}]}},
        });
        let md = render(&report, "https://github.com/o/r/actions/runs/1");
        assert!(md.starts_with("## ❌ megatest s1: FAILED"), "{md}");
        assert!(md.contains("critical 0/1 met · important 1/1 met"), "{md}");
        assert!(
            md.contains("| critical | tests \\| pass | 3 &lt;failed&gt; of 9 |"),
            "{md}"
        );
        assert!(
            md.contains("| bootstrap | time_box | 1m 00s | 1/2 | 1/2 |"),
            "{md}"
        );
        assert!(md.contains("| a::x | critical | boom |"), "{md}");
        assert!(!md.contains("a::y"), "passing cases are not listed: {md}");
        assert!(md.contains("actions/runs/1"));
    }
}
