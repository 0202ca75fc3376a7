//! The live dashboard's views (`GET /api/dashboard` of the control API): `report.html`'s
//! timeline, tokens, tool-call and trust sections drawn from a running session's status
//! document and its [`Timeline`] so far, and the live agents table, budget and open
//! escalations. Pure: HTML fragments keyed by view; every string from the session (task ids,
//! agent ids, failure kinds) is escaped.

use super::html;
use super::svg::{self, esc};
use crate::store::Timeline;
use serde_json::{json, Value};
use std::fmt::Write;

/// `{"timeline", "tokens", "tools", "trust", "agents", "budget", "escalations"}`: each an HTML
/// fragment, from `status` (the document of `GET /api/status`) and `timeline`. Times are
/// session seconds; the time axis ends at the session's elapsed time.
pub fn views(status: &Value, timeline: &Timeline) -> Value {
    let now = status["elapsed_session_secs"].as_f64().unwrap_or(0.0);
    let x_max = now.max(html::seen_end(timeline)).max(1.0);
    let agents: Vec<String> = status["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    let mut timeline_view = String::new();
    html::timeline_section(
        &mut timeline_view,
        &live_phases(status, x_max),
        &agents,
        timeline,
        x_max,
    );
    let mut tokens = String::new();
    html::tokens_section(&mut tokens, timeline, x_max);
    let mut tools = String::new();
    html::tools_section(&mut tools, timeline);
    let trust = if timeline.trust.is_empty() {
        "<section id=\"trust\"><h2>Trust scores</h2><p class=\"muted\">None recorded yet \
         (scores are sampled when a vote closes and at each metrics export).</p></section>"
            .to_string()
    } else {
        let mut trust = String::new();
        html::trust_section(&mut trust, &[], timeline, x_max);
        trust
    };
    json!({
        "timeline": timeline_view,
        "tokens": tokens,
        "tools": tools,
        "trust": trust,
        "agents": agents_table(status),
        "budget": budget(status),
        "escalations": escalations(status),
    })
}

/// (name, start, end) session seconds of the phases that started; a running phase ends at
/// `now`. From the status document's `phases`.
pub fn live_phases(status: &Value, now: f64) -> Vec<(String, f64, f64)> {
    status["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|phase| {
            let start = phase["started_session_secs"].as_f64()?;
            let end = phase["ended_session_secs"].as_f64().unwrap_or(now);
            Some((
                phase["name"].as_str().unwrap_or("phase").to_string(),
                start,
                end.max(start),
            ))
        })
        .collect()
}

fn agents_table(status: &Value) -> String {
    let mut out = String::from(
        "<table><tr><th>Agent</th><th>Role</th><th>State</th><th>Task</th><th>Attempt</th>\
         <th>Tasks done</th><th>Failed runs</th><th>Calls waiting</th><th>Quiet for</th></tr>",
    );
    let number = |v: &Value| v.as_f64().map_or("–".to_string(), svg::short);
    for agent in status["agents"].as_array().into_iter().flatten() {
        let state = agent["status"].as_str().unwrap_or("");
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(agent["id"].as_str().unwrap_or("")),
            esc(agent["role"].as_str().unwrap_or("")),
            if state == "running" { "ok" } else { "muted" },
            esc(state),
            esc(agent["task"].as_str().unwrap_or("–")),
            number(&agent["attempt"]),
            number(&agent["tasks_done"]),
            number(&agent["failed_runs"]),
            number(&agent["calls_in_flight"]),
            agent["idle_wall_secs"]
                .as_f64()
                .map_or("–".into(), |s| format!("{s:.0} s wall")),
        );
    }
    out.push_str("</table>");
    out
}

fn budget(status: &Value) -> String {
    let budget = &status["budget"];
    let mut out = String::from("<table>");
    html::budget_rows(
        &mut out,
        budget["tokens_used"].as_f64(),
        budget["tokens_total"].as_f64(),
        &budget["cost_usd"],
        budget["max_cost_usd"].as_f64(),
        budget["exhausted"].as_str(),
    );
    if budget["exhausted"].is_null() && budget["alert_raised"].as_bool() == Some(true) {
        out.push_str(
            "<tr><th>Alert</th><td class=\"open\" colspan=\"2\">the budget alert threshold was passed</td></tr>",
        );
    }
    out.push_str("</table>");
    out
}

/// Open escalations, each with its two decisions as buttons (`data-escalation` = the
/// recovery id, `data-decision` = `continue` | `stop`) that the dashboard's script confirms.
fn escalations(status: &Value) -> String {
    let open = status["escalations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if open.is_empty() {
        return "<p class=\"muted\">No open escalation.</p>".into();
    }
    let mut out = String::from(
        "<table><tr><th>Escalation</th><th>Failure</th><th>Task</th><th>Deadline</th><th>Default</th><th>Decide</th></tr>",
    );
    for escalation in &open {
        let Some(id) = escalation["recovery_id"].as_i64() else {
            continue;
        };
        let _ = write!(
            out,
            "<tr><td>#{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>\
             <button data-escalation=\"{id}\" data-decision=\"continue\">Continue</button> \
             <button data-escalation=\"{id}\" data-decision=\"stop\" class=\"danger\">Stop session</button></td></tr>",
            esc(escalation["failure_kind"].as_str().unwrap_or("")),
            esc(escalation["task_id"].as_str().unwrap_or("–")),
            escalation["deadline_session_secs"]
                .as_f64()
                .map_or("–".into(), svg::duration),
            esc(escalation["default"].as_str().unwrap_or("")),
        );
    }
    out.push_str("</table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CallPoint, RunSpan};

    #[test]
    fn live_views_draw_the_session_so_far_and_escape_what_agents_wrote() {
        let evil = "<img src=x onerror=alert(1)>";
        let status = json!({
            "elapsed_session_secs": 120.0,
            "phases": [
                {"name": "bootstrap", "planned_session_secs": 60.0, "started_session_secs": 0.0, "ended_session_secs": 50.0},
                {"name": "development", "planned_session_secs": 600.0, "started_session_secs": 50.0, "ended_session_secs": null},
                {"name": "refinement", "planned_session_secs": 600.0, "started_session_secs": null, "ended_session_secs": null}],
            "agents": [{"id": "agent-1", "role": "Coder", "status": "running", "task": evil, "attempt": 1,
                        "tasks_done": 2, "failed_runs": 0, "calls_in_flight": 1, "idle_wall_secs": 0.4}],
            "budget": {"tokens_used": 5000, "tokens_total": 10000, "cost_usd": {"value": null, "reason": "no price"}},
            "escalations": [{"recovery_id": 7, "failure_kind": evil, "task_id": "t1", "deadline_session_secs": 300.0, "default": "continue"}],
        });
        let timeline = Timeline {
            runs: vec![RunSpan {
                agent_id: "agent-1".into(),
                task_id: evil.into(),
                attempt: 1,
                start: 55.0,
                end: None,
                outcome: None,
                exit_code: None,
            }],
            calls: vec![CallPoint {
                at: 60.0,
                agent_id: "agent-1".into(),
                model: "sim".into(),
                task_id: Some("t1".into()),
                tokens: 900,
                cost_usd: None,
                tool_calls: 3,
            }],
            ..Default::default()
        };
        // Started phases only; the running one reaches now.
        assert_eq!(
            live_phases(&status, 120.0),
            vec![
                ("bootstrap".to_string(), 0.0, 50.0),
                ("development".to_string(), 50.0, 120.0)
            ]
        );
        let views = views(&status, &timeline);
        let all = views.to_string();
        assert!(!all.contains("<img"), "agent text must be escaped");
        assert!(views["timeline"].as_str().unwrap().contains("development"));
        assert!(views["tokens"].as_str().unwrap().contains("<svg"));
        assert!(views["tools"].as_str().unwrap().contains("t1"));
        assert!(views["trust"]
            .as_str()
            .unwrap()
            .contains("None recorded yet"));
        assert!(views["budget"].as_str().unwrap().contains("5.0k of 10.0k"));
        let escalations = views["escalations"].as_str().unwrap();
        assert!(escalations.contains("data-escalation=\"7\" data-decision=\"stop\""));
        assert!(views["agents"].as_str().unwrap().contains("0 s wall"));
    }
}
