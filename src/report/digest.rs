//! The few things every human-facing report leads with, read from a final report's JSON
//! document (so that reports of any session — also one that ended before a field existed —
//! render): the verdict, the headline figures, the criteria by tier, the failing acceptance
//! cases. Pure; used by the terminal summary, `report.html`, the Markdown summary and
//! `megatest compare`.

use serde_json::Value;

/// A figure of the report (`{"value": x}` or `{"value": null, "reason": "…"}`) or a bare
/// number: Ok(value) or Err(why it is null).
pub fn figure(value: &Value) -> Result<f64, String> {
    if let Some(v) = value.as_f64() {
        return Ok(v);
    }
    match value.get("value").and_then(Value::as_f64) {
        Some(v) => Ok(v),
        None => Err(value
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("not measured")
            .to_string()),
    }
}

/// The verdict: `passed` (complete, exit 0), `failed` (complete with a critical criterion
/// failed), `aborted` (status failed) or `interrupted`; and whether it is a pass.
pub fn verdict(report: &Value) -> (&'static str, bool) {
    match (report["status"].as_str(), report["exit_code"].as_i64()) {
        (Some("complete"), Some(0)) => ("passed", true),
        (Some("complete"), _) => ("failed", false),
        (Some("interrupted"), _) => ("interrupted", false),
        _ => ("aborted", false),
    }
}

/// The tiers in the order reports show them, with their headings.
pub const TIERS: [(&str, &str); 5] = [
    ("critical", "Critical"),
    ("important", "Important"),
    ("nice_to_have", "Nice to have"),
    ("target", "Targets"),
    ("phase", "Phase criteria"),
];

/// (met, not met, not judged) of the criteria in `tier`.
pub fn tier_counts(report: &Value, tier: &str) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for criterion in criteria(report).filter(|c| c["tier"] == tier) {
        match criterion["met"].as_bool() {
            Some(true) => counts.0 += 1,
            Some(false) => counts.1 += 1,
            None => counts.2 += 1,
        }
    }
    counts
}

fn criteria(report: &Value) -> impl Iterator<Item = &Value> {
    report["success_criteria"].as_array().into_iter().flatten()
}

/// The criteria of `tier`, failures first, then not judged, then met (stable otherwise).
pub fn criteria_of<'a>(report: &'a Value, tier: &str) -> Vec<&'a Value> {
    let mut list: Vec<&Value> = criteria(report).filter(|c| c["tier"] == tier).collect();
    list.sort_by_key(|c| match c["met"].as_bool() {
        Some(false) => 0,
        None => 1,
        Some(true) => 2,
    });
    list
}

/// One line per tier that has criteria: `critical 5/5 met`, `important 2/3 met, 1 not judged`.
pub fn criteria_line(report: &Value) -> String {
    TIERS
        .iter()
        .filter_map(|(tier, heading)| {
            let (met, unmet, open) = tier_counts(report, tier);
            (met + unmet + open > 0).then(|| {
                let mut text = format!(
                    "{} {met}/{} met",
                    heading.to_lowercase(),
                    met + unmet + open
                );
                if open > 0 {
                    text.push_str(&format!(" ({open} not judged)"));
                }
                text
            })
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The newest evaluation's acceptance cases, failures first.
pub fn acceptance_cases(report: &Value) -> Vec<&Value> {
    let mut cases: Vec<&Value> = report["evaluation"]["acceptance"]["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    cases.sort_by_key(|c| match c["outcome"].as_str() {
        Some("passed") => 2,
        Some("skipped") => 1,
        _ => 0,
    });
    cases
}

/// (passed, total) acceptance cases; None when no suite ran (with the reason).
pub fn acceptance_rate(report: &Value) -> Result<(usize, usize), String> {
    let acceptance = &report["evaluation"]["acceptance"];
    if acceptance.is_null() {
        return Err("no evaluation ran".into());
    }
    if acceptance["status"] == "not_run" {
        return Err(acceptance["reason"]
            .as_str()
            .unwrap_or("the acceptance suite did not run")
            .to_string());
    }
    let cases = acceptance_cases(report);
    let passed = cases.iter().filter(|c| c["outcome"] == "passed").count();
    Ok((passed, cases.len()))
}

/// USD with cents, or `unknown (reason)`.
pub fn cost_text(report: &Value) -> String {
    usd_text(&figure(&report["budget"]["cost_usd"]))
}

/// A cost figure as text: `$1.23`, or `unknown (reason)`.
pub fn usd_text(cost: &Result<f64, String>) -> String {
    match cost {
        Ok(usd) => format!("${usd:.2}"),
        Err(reason) => format!("unknown ({reason})"),
    }
}

/// The headline figures as (label, value) pairs, in the order reports show them.
pub fn headline(report: &Value) -> Vec<(&'static str, String)> {
    let usage = &report["usage"];
    let number = |v: &Value| v.as_f64().map_or("–".to_string(), super::svg::short);
    let duration = &report["duration"];
    let mut figures = vec![
        (
            "Duration",
            format!(
                "{} session ({} wall, time scale {})",
                super::svg::duration(duration["session_secs"].as_f64().unwrap_or(f64::NAN)),
                super::svg::duration(duration["wall_secs"].as_f64().unwrap_or(f64::NAN)),
                number(&duration["time_scale"])
            ),
        ),
        (
            "Tokens",
            format!(
                "{} in {} model calls ({} prompt, {} completion)",
                number(&usage["total_tokens"]),
                number(&usage["model_calls"]),
                number(&usage["prompt_tokens"]),
                number(&usage["completion_tokens"])
            ),
        ),
        ("Cost", cost_text(report)),
        (
            "Tool calls",
            match figure(&report["tool_calls"]) {
                Ok(v) => super::svg::short(v),
                Err(reason) => format!("unknown ({reason})"),
            },
        ),
        (
            "Tasks",
            format!(
                "{} of {} done, {} failed",
                number(&report["tasks"]["done"]),
                number(&report["tasks"]["total"]),
                number(&report["tasks"]["failed"])
            ),
        ),
    ];
    if let Some(resumed) = report["interruptions"]["resumed"]
        .as_u64()
        .filter(|n| *n > 0)
    {
        figures.push((
            "Interruptions",
            format!(
                "resumed {resumed}× after {} of downtime (wall)",
                super::svg::duration(
                    report["interruptions"]["downtime_wall_secs"]
                        .as_f64()
                        .unwrap_or(0.0)
                )
            ),
        ));
    }
    figures.push((
        "Acceptance",
        match acceptance_rate(report) {
            Ok((passed, total)) => format!("{passed} of {total} cases passed"),
            Err(reason) => format!("not run ({reason})"),
        },
    ));
    figures.push((
        "Coverage",
        match figure(&report["test_coverage"]) {
            Ok(v) => format!("{:.0}%", v * 100.0),
            Err(reason) => format!("unknown ({reason})"),
        },
    ));
    figures.push((
        "Code",
        match report["code"]["value"]["lines_of_code"].as_f64() {
            Some(loc) => format!(
                "{} lines in {} files",
                super::svg::short(loc),
                number(&report["code"]["value"]["files"])
            ),
            None => format!(
                "unknown ({})",
                report["code"]["reason"].as_str().unwrap_or("not measured")
            ),
        },
    ));
    figures.push(("Checkpoints", number(&report["checkpoints"]["count"])));
    let recoveries = report["recoveries"].as_array().map_or(0, Vec::len);
    let outcomes = report["recovery_outcomes"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{} {k}", number(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    figures.push((
        "Recoveries",
        if recoveries == 0 {
            "none".to_string()
        } else {
            format!("{recoveries} ({outcomes})")
        },
    ));
    figures
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_verdict_follows_status_and_exit_code() {
        let of = |status: &str, code: i64| verdict(&json!({"status": status, "exit_code": code}));
        assert_eq!(of("complete", 0), ("passed", true));
        assert_eq!(of("complete", 1), ("failed", false));
        assert_eq!(of("interrupted", 130), ("interrupted", false));
        assert_eq!(of("failed", 3), ("aborted", false));
        assert_eq!(verdict(&json!({})), ("aborted", false));
    }

    #[test]
    fn criteria_are_counted_by_tier_and_listed_failures_first() {
        let report = json!({"success_criteria": [
            {"criterion": "a", "tier": "critical", "met": true},
            {"criterion": "b", "tier": "critical", "met": false},
            {"criterion": "c", "tier": "important", "met": null},
            {"criterion": "d", "tier": "important", "met": true},
        ]});
        assert_eq!(tier_counts(&report, "critical"), (1, 1, 0));
        let order: Vec<&str> = criteria_of(&report, "critical")
            .iter()
            .map(|c| c["criterion"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["b", "a"]);
        assert_eq!(
            criteria_line(&report),
            "critical 1/2 met · important 1/2 met (1 not judged)"
        );
    }

    #[test]
    fn null_figures_carry_their_reason() {
        assert_eq!(figure(&json!({"value": 2.5})), Ok(2.5));
        assert_eq!(figure(&json!(3)), Ok(3.0));
        assert_eq!(
            figure(&json!({"value": null, "reason": "no price"})),
            Err("no price".to_string())
        );
        let report = json!({"budget": {"cost_usd": {"value": null, "reason": "no price for sim"}}});
        assert_eq!(cost_text(&report), "unknown (no price for sim)");
        let none = json!({"evaluation": null});
        assert_eq!(acceptance_rate(&none), Err("no evaluation ran".to_string()));
    }
}
