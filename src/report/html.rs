//! `report.html`: one self-contained page (inline CSS and SVG; no script, no font, no network)
//! built from the final report's JSON document and the session's [`Timeline`]. Pure: the
//! caller writes it. Every string from the session (task titles, evidence, agent output) is
//! untrusted and escaped.

use super::digest;
use super::svg::{self, esc, Lane, Point, Series, Span};
use crate::store::Timeline;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The report's style sheet (light and dark, print); the live dashboard uses it too.
pub const STYLE: &str = r#"
:root{--bg:#fff;--fg:#1b1f24;--muted:#5b6470;--card:#f4f6f8;--grid:#d8dde3;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;
--c0:#0969da;--c1:#bf3989;--c2:#1a7f37;--c3:#bc4c00;--c4:#8250df;--c5:#0a7d8c;--c6:#9a6700;--c7:#57606a}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--card:#161b22;--grid:#30363d;
--ok:#3fb950;--bad:#f85149;--warn:#d29922;--c0:#4493f8;--c1:#db61a2;--c2:#3fb950;--c3:#f0883e;--c4:#a371f7;--c5:#39c5cf;--c6:#d29922;--c7:#9198a1}}
@media print{:root{--bg:#fff;--fg:#000;--card:#fff;--muted:#444}section{break-inside:avoid}nav{display:none}}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif}
main{max-width:1100px;margin:0 auto;padding:20px}h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid var(--grid);padding-bottom:4px}
.muted,.tick{color:var(--muted);fill:var(--muted)}.tick{font-size:11px}.phase{font-size:11px;fill:var(--fg)}
.verdict{display:inline-block;padding:3px 12px;border-radius:14px;font-weight:700;color:#fff;text-transform:uppercase;letter-spacing:.04em}
.verdict.ok{background:var(--ok);color:#fff}.verdict.bad{background:var(--bad);color:#fff}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:8px;margin-top:14px}
.card{background:var(--card);border-radius:6px;padding:8px 12px}.card b{display:block;font-size:12px;color:var(--muted);font-weight:600}
.tiers{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:8px}
.tier{background:var(--card);border-radius:6px;padding:8px 12px;border-left:5px solid var(--ok)}.tier.bad{border-left-color:var(--bad)}.tier.open{border-left-color:var(--warn)}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--grid);vertical-align:top}
th{color:var(--muted);font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:var(--ok)}.bad{color:var(--bad)}.open{color:var(--warn)}
svg.chart{width:100%;height:auto;display:block}svg .grid{stroke:var(--grid);stroke-width:1}
svg .span.ok{fill:var(--ok)}svg .span.bad{fill:var(--bad)}svg .span.muted{fill:var(--c7)}
svg .mark{fill:var(--c0);stroke:var(--bg)}svg .mark.bad{fill:var(--bad)}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;margin:4px 0 0 120px}.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
pre{white-space:pre-wrap;font-size:12px;background:var(--card);padding:6px;border-radius:4px;max-height:160px;overflow:auto;margin:4px 0}
nav{font-size:13px;margin-top:10px}nav a{margin-right:12px;color:var(--c0)}
.bar{background:var(--grid);border-radius:4px;height:12px;overflow:hidden}.bar>i{display:block;height:100%;background:var(--c0)}.bar.over>i{background:var(--bad)}
"#;

/// The page for `report` (a final report's JSON document) and `timeline`.
pub fn render(report: &Value, timeline: &Timeline) -> String {
    let (verdict, ok) = digest::verdict(report);
    let id = report["session_id"].as_str().unwrap_or("session");
    let mut page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>megatest {} — {verdict}</title><style>{STYLE}</style></head><body><main>",
        esc(id)
    );
    let _ = write!(
        page,
        "<header><h1>{} <span class=\"verdict {}\">{verdict}</span></h1>\
         <div class=\"muted\">{} · {} · exit code {} · {}</div>\
         <div>{}</div></header>",
        esc(report["project"]["name"]
            .as_str()
            .unwrap_or("megatest session")),
        if ok { "ok" } else { "bad" },
        esc(id),
        esc(report["model"]["label"]
            .as_str()
            .or(report["model"]["name"].as_str())
            .unwrap_or("")),
        report["exit_code"],
        esc(&format!(
            "{} → {}",
            report["started_at"].as_str().unwrap_or("?"),
            report["ended_at"].as_str().unwrap_or("?")
        )),
        esc(report["ended_because"].as_str().unwrap_or("")),
    );
    page.push_str(
        "<nav><a href=\"#criteria\">Criteria</a><a href=\"#timeline\">Timeline</a>\
         <a href=\"#tokens\">Tokens</a><a href=\"#tools\">Tool calls</a><a href=\"#acceptance\">Acceptance</a>\
         <a href=\"#code\">Code</a><a href=\"#trust\">Trust</a><a href=\"#budget\">Budget</a><a href=\"#agents\">Agents</a></nav>",
    );
    page.push_str("<div class=\"cards\">");
    for (label, value) in digest::headline(report) {
        let _ = write!(
            page,
            "<div class=\"card\"><b>{label}</b>{}</div>",
            esc(&value)
        );
    }
    page.push_str("</div>");
    tier_cards(&mut page, report);
    let x_max = timeline_end(report, timeline);
    let agents: Vec<String> = report["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect();
    timeline_section(&mut page, &report_phases(report), &agents, timeline, x_max);
    tokens_section(&mut page, timeline, x_max);
    tools_section(&mut page, timeline);
    acceptance_section(&mut page, report);
    criteria_section(&mut page, report);
    code_section(&mut page, report);
    let end_scores: Vec<(String, f64)> = report["agents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["id"].as_str()?.to_string(), a["trust_score"].as_f64()?)))
        .collect();
    trust_section(&mut page, &end_scores, timeline, x_max);
    budget_section(&mut page, report);
    agents_section(&mut page, report);
    let _ = writeln!(
        page,
        "<p class=\"muted\">Written by megatest from session.db and final_report.json \
         (schema {}). Times are session seconds.</p></main></body></html>",
        report["schema_version"]
    );
    page
}

fn timeline_end(report: &Value, timeline: &Timeline) -> f64 {
    let reported = report["duration"]["session_secs"].as_f64().unwrap_or(0.0);
    reported.max(seen_end(timeline))
}

/// Session seconds of the latest thing `timeline` holds.
pub(super) fn seen_end(timeline: &Timeline) -> f64 {
    timeline
        .runs
        .iter()
        .map(|r| r.end.unwrap_or(r.start))
        .chain(timeline.marks.iter().map(|m| m.at))
        .chain(timeline.calls.iter().map(|c| c.at))
        .fold(0.0, f64::max)
}

fn met_cell(met: &Value) -> &'static str {
    match met.as_bool() {
        Some(true) => "<td class=\"ok\">✔ met</td>",
        Some(false) => "<td class=\"bad\">✘ not met</td>",
        None => "<td class=\"open\">– not judged</td>",
    }
}

fn tier_cards(page: &mut String, report: &Value) {
    page.push_str("<div class=\"tiers\" style=\"margin-top:8px\">");
    for (tier, heading) in digest::TIERS.iter().take(3) {
        let (met, unmet, open) = digest::tier_counts(report, tier);
        let class = if unmet > 0 {
            "tier bad"
        } else if open > 0 {
            "tier open"
        } else {
            "tier"
        };
        let _ = write!(
            page,
            "<div class=\"{class}\"><b>{heading}</b><br>{met} of {} met{}</div>",
            met + unmet + open,
            if open > 0 {
                format!(", {open} not judged")
            } else {
                String::new()
            }
        );
    }
    page.push_str("</div>");
}

fn criteria_section(page: &mut String, report: &Value) {
    page.push_str("<section id=\"criteria\"><h2>Success criteria</h2>");
    for (tier, heading) in digest::TIERS {
        let list = digest::criteria_of(report, tier);
        if list.is_empty() {
            continue;
        }
        let _ = write!(
            page,
            "<h3>{heading}</h3><table><tr><th>Criterion</th><th>Phase</th><th>Result</th><th>Evidence</th></tr>"
        );
        for criterion in list {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td>{}<td>{}</td></tr>",
                esc(criterion["criterion"].as_str().unwrap_or("")),
                esc(criterion["phase"].as_str().unwrap_or("")),
                met_cell(&criterion["met"]),
                esc(criterion["evidence"].as_str().unwrap_or("")),
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</section>");
}

/// (name, start, end) in session seconds of the phases a final report lists, end to end.
fn report_phases(report: &Value) -> Vec<(String, f64, f64)> {
    let mut phases = Vec::new();
    let mut at = 0.0;
    for phase in report["phases"].as_array().into_iter().flatten() {
        let Some(secs) = phase["session_secs"].as_f64() else {
            continue;
        };
        phases.push((
            phase["name"].as_str().unwrap_or("phase").to_string(),
            at,
            at + secs,
        ));
        at += secs;
    }
    phases
}

/// The timeline section: `phases` as (name, start, end) session seconds, a lane for each of
/// `agents` (and any other agent `timeline` names) after the session's own lane.
pub(super) fn timeline_section(
    page: &mut String,
    phases: &[(String, f64, f64)],
    agents: &[String],
    timeline: &Timeline,
    x_max: f64,
) {
    let mut lanes: BTreeMap<String, Lane> = BTreeMap::new();
    let session_lane = "session".to_string();
    lanes.insert(
        session_lane.clone(),
        Lane {
            name: session_lane.clone(),
            spans: vec![],
            points: vec![],
        },
    );
    let lane = |lanes: &mut BTreeMap<String, Lane>, id: &str| {
        lanes
            .entry(id.to_string())
            .or_insert_with(|| Lane {
                name: id.to_string(),
                spans: vec![],
                points: vec![],
            })
            .spans
            .len()
    };
    for id in agents {
        lane(&mut lanes, id);
    }
    for run in &timeline.runs {
        lane(&mut lanes, &run.agent_id);
        // `agent_runs.outcome`: finished, exited_nonzero, step_timeout, stopped, or open.
        let class = match run.outcome.as_deref() {
            Some("finished") => "ok",
            Some("exited_nonzero" | "step_timeout") => "bad",
            _ => "muted",
        };
        if let Some(l) = lanes.get_mut(&run.agent_id) {
            l.spans.push(Span {
                start: run.start,
                end: run.end.unwrap_or(x_max),
                class,
                label: format!(
                    "{} attempt {}: {} ({} – {}{})",
                    run.task_id,
                    run.attempt,
                    run.outcome.as_deref().unwrap_or("open"),
                    svg::duration(run.start),
                    run.end.map_or("?".into(), svg::duration),
                    run.exit_code
                        .map_or(String::new(), |c| format!(", exit {c}"))
                ),
            });
        }
    }
    for mark in &timeline.marks {
        let id = mark
            .agent_id
            .clone()
            .unwrap_or_else(|| session_lane.clone());
        lane(&mut lanes, &id);
        if let Some(l) = lanes.get_mut(&id) {
            l.points.push(Point {
                at: mark.at,
                kind: mark.kind.clone(),
                ok: mark.ok,
                label: mark.label.clone(),
            });
        }
    }
    let session = lanes.remove(&session_lane);
    let ordered: Vec<Lane> = session.into_iter().chain(lanes.into_values()).collect();
    let _ = write!(
        page,
        "<section id=\"timeline\"><h2>Timeline</h2><p class=\"muted\">One lane per agent: its task \
         runs (green finished, red failed or timed out, grey stopped or open); ◆ checkpoints, ■ checks, ▲ recoveries \
         and escalations, ● votes (red: failed, rejected or escalated). Hover for details.</p>{}</section>",
        svg::timeline(phases, &ordered, x_max)
    );
}

fn cumulative<K: Ord + Clone>(
    points: impl Iterator<Item = (K, f64, f64)>,
) -> BTreeMap<K, Vec<(f64, f64)>> {
    let mut series: BTreeMap<K, Vec<(f64, f64)>> = BTreeMap::new();
    for (key, at, value) in points {
        let list = series.entry(key).or_default();
        let total = list.last().map_or(0.0, |p| p.1) + value;
        list.push((at, total));
    }
    series
}

fn to_series<K: ToString>(map: BTreeMap<K, Vec<(f64, f64)>>) -> Vec<Series> {
    map.into_iter()
        .map(|(name, points)| Series {
            name: name.to_string(),
            points,
        })
        .collect()
}

/// Tokens (and cost, where priced) per agent and per model over time.
pub(super) fn tokens_section(page: &mut String, timeline: &Timeline, x_max: f64) {
    let calls = &timeline.calls;
    let by_agent = cumulative(
        calls
            .iter()
            .map(|c| (c.agent_id.clone(), c.at, c.tokens as f64)),
    );
    let by_model = cumulative(
        calls
            .iter()
            .map(|c| (c.model.clone(), c.at, c.tokens as f64)),
    );
    let _ = write!(
        page,
        "<section id=\"tokens\"><h2>Tokens and cost over time</h2><h3>Tokens per agent (cumulative)</h3>{}\
         <h3>Tokens per model (cumulative)</h3>{}",
        svg::line_chart("tokens per agent", &to_series(by_agent), x_max, "tok"),
        svg::line_chart("tokens per model", &to_series(by_model), x_max, "tok"),
    );
    let priced: Vec<_> = calls.iter().filter(|c| c.cost_usd.is_some()).collect();
    if priced.is_empty() {
        page.push_str(
            "<p class=\"muted\">Cost over time: no call had a price (cost is null, not 0).</p>",
        );
    } else {
        let by_agent = cumulative(
            priced
                .iter()
                .map(|c| (c.agent_id.clone(), c.at, c.cost_usd.unwrap_or(0.0))),
        );
        let _ = write!(
            page,
            "<h3>Cost per agent (cumulative, USD)</h3>{}",
            svg::line_chart("cost per agent", &to_series(by_agent), x_max, "$")
        );
    }
    page.push_str("</section>");
}

/// Tool calls per task, most first (the top 25).
pub(super) fn tools_section(page: &mut String, timeline: &Timeline) {
    let mut per_task: BTreeMap<String, f64> = BTreeMap::new();
    for call in &timeline.calls {
        let task = call.task_id.clone().unwrap_or_else(|| "(no task)".into());
        *per_task.entry(task).or_default() += call.tool_calls as f64;
    }
    let mut items: Vec<(String, f64)> = per_task.into_iter().collect();
    items.sort_by(|a, b| b.1.total_cmp(&a.1));
    const SHOWN: usize = 25;
    let more = items.len().saturating_sub(SHOWN);
    items.truncate(SHOWN);
    let _ = write!(
        page,
        "<section id=\"tools\"><h2>Tool calls per task</h2>{}{}</section>",
        svg::bar_chart("tool calls per task", &items, "calls"),
        if more > 0 {
            format!("<p class=\"muted\">… and {more} more tasks with fewer tool calls.</p>")
        } else {
            String::new()
        }
    );
}

fn acceptance_section(page: &mut String, report: &Value) {
    page.push_str("<section id=\"acceptance\"><h2>Acceptance suite</h2>");
    match digest::acceptance_rate(report) {
        Err(reason) => {
            let _ = write!(page, "<p class=\"open\">Not run: {}</p>", esc(&reason));
        }
        Ok((passed, total)) => {
            let _ = write!(
                page,
                "<p>{passed} of {total} cases passed (phase {}). Failures first.</p>\
                 <table><tr><th>Case</th><th>Severity</th><th>Kind</th><th>Outcome</th><th>Wall s</th></tr>",
                esc(report["evaluation"]["phase"].as_str().unwrap_or("?"))
            );
            for case in digest::acceptance_cases(report) {
                let outcome = case["outcome"].as_str().unwrap_or("?");
                let class = match outcome {
                    "passed" => "ok",
                    "skipped" => "open",
                    _ => "bad",
                };
                let _ = write!(
                    page,
                    "<tr><td>{}{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td class=\"num\">{:.2}</td></tr>",
                    esc(case["id"].as_str().unwrap_or("")),
                    case["message"]
                        .as_str()
                        .map_or(String::new(), |m| format!("<pre>{}</pre>", esc(m))),
                    esc(case["severity"].as_str().unwrap_or("")),
                    esc(case["kind"].as_str().unwrap_or("")),
                    esc(outcome),
                    case["wall_secs"].as_f64().unwrap_or(0.0),
                );
            }
            page.push_str("</table>");
        }
    }
    page.push_str("</section>");
}

fn code_section(page: &mut String, report: &Value) {
    page.push_str("<section id=\"code\"><h2>Code against targets</h2>");
    let targets = digest::criteria_of(report, "target");
    if targets.is_empty() {
        page.push_str("<p class=\"muted\">No targets configured.</p>");
    } else {
        page.push_str("<table><tr><th>Target</th><th>Result</th><th>Measured</th></tr>");
        for target in targets {
            let _ = write!(
                page,
                "<tr><td>{}</td>{}<td>{}</td></tr>",
                esc(target["criterion"].as_str().unwrap_or("")),
                met_cell(&target["met"]),
                esc(target["evidence"].as_str().unwrap_or(""))
            );
        }
        page.push_str("</table>");
    }
    if let Some(languages) = report["code"]["value"]["by_language"].as_object() {
        let mut items: Vec<(String, f64)> = languages
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
            .collect();
        items.sort_by(|a, b| b.1.total_cmp(&a.1));
        let _ = write!(
            page,
            "<h3>Lines of code by language</h3>{}",
            svg::bar_chart("lines of code by language", &items, "lines")
        );
    }
    page.push_str("</section>");
}

/// Trust scores over time; `end_scores` (agent, score) as bars when no samples were recorded.
pub(super) fn trust_section(
    page: &mut String,
    end_scores: &[(String, f64)],
    timeline: &Timeline,
    x_max: f64,
) {
    page.push_str("<section id=\"trust\"><h2>Trust scores</h2>");
    if timeline.trust.is_empty() {
        let items = end_scores;
        let _ = write!(
            page,
            "<p class=\"muted\">At the end (no samples over time were recorded).</p>{}",
            svg::bar_chart("trust scores", items, "")
        );
    } else {
        let mut by_agent: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for sample in &timeline.trust {
            for (agent, score) in &sample.scores {
                by_agent
                    .entry(agent.clone())
                    .or_default()
                    .push((sample.at, *score));
            }
        }
        page.push_str(&svg::line_chart(
            "trust scores over time",
            &to_series(by_agent),
            x_max,
            "",
        ));
    }
    page.push_str("</section>");
}

/// A horizontal bar: `used` of `limit` (red past the limit).
pub(super) fn meter(used: f64, limit: f64) -> String {
    let fraction = if limit > 0.0 { used / limit } else { 0.0 };
    format!(
        "<div class=\"bar{}\"><i style=\"width:{:.1}%\"></i></div>",
        if fraction > 1.0 { " over" } else { "" },
        (fraction * 100.0).clamp(0.0, 100.0)
    )
}

fn budget_section(page: &mut String, report: &Value) {
    let budget = &report["budget"];
    page.push_str("<section id=\"budget\"><h2>Budget</h2><table>");
    budget_rows(
        page,
        budget["used_tokens"].as_f64(),
        budget["total_token_budget"].as_f64(),
        &budget["cost_usd"],
        budget["max_cost_usd"].as_f64(),
        budget["exhausted"].as_str(),
    );
    page.push_str("</table></section>");
}

/// The budget table's rows (report and live dashboard): tokens `used` against `limit`, the
/// cost (a figure: USD or null with the reason) against `max_cost`, what was exhausted.
pub(super) fn budget_rows(
    out: &mut String,
    used: Option<f64>,
    limit: Option<f64>,
    cost: &Value,
    max_cost: Option<f64>,
    exhausted: Option<&str>,
) {
    match (used, limit) {
        (Some(used), Some(limit)) => {
            let _ = write!(
                out,
                "<tr><th>Tokens</th><td class=\"num\">{} of {}</td><td style=\"width:40%\">{}</td></tr>",
                svg::short(used),
                svg::short(limit),
                meter(used, limit)
            );
        }
        (Some(used), None) => {
            let _ = write!(
                out,
                "<tr><th>Tokens</th><td class=\"num\">{}</td><td>no token budget</td></tr>",
                svg::short(used)
            );
        }
        _ => {}
    }
    let cost = digest::figure(cost);
    let _ = write!(
        out,
        "<tr><th>Cost</th><td class=\"num\">{}</td><td>{}</td></tr>",
        esc(&digest::usd_text(&cost)),
        match (cost, max_cost) {
            (Ok(used), Some(limit)) => meter(used, limit),
            (_, Some(limit)) => format!("limit ${limit:.2}"),
            _ => "no cost limit".into(),
        }
    );
    if let Some(exhausted) = exhausted {
        let _ = write!(
            out,
            "<tr><th>Exhausted</th><td class=\"bad\" colspan=\"2\">{}</td></tr>",
            esc(exhausted)
        );
    }
}

fn agents_section(page: &mut String, report: &Value) {
    page.push_str(
        "<section id=\"agents\"><h2>Agents</h2><table><tr><th>Agent</th><th>Role</th><th>Runs</th>\
         <th>Tasks done</th><th>Failed runs</th><th>Model calls</th><th>Tokens</th><th>Tool calls</th><th>Trust</th></tr>",
    );
    let number = |v: &Value| v.as_f64().map_or("–".to_string(), svg::short);
    for agent in report["agents"].as_array().into_iter().flatten() {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(agent["id"].as_str().unwrap_or("")),
            esc(agent["role"].as_str().unwrap_or("")),
            number(&agent["runs"]),
            number(&agent["tasks_done"]),
            number(&agent["tasks_failed_runs"]),
            number(&agent["model_calls"]),
            number(&agent["total_tokens"]),
            digest::figure(&agent["tool_calls"]).map_or("–".into(), svg::short),
            agent["trust_score"]
                .as_f64()
                .map_or("–".into(), |t| format!("{t:.2}")),
        );
    }
    page.push_str("</table>");
    let recoveries = report["recoveries"].as_array().cloned().unwrap_or_default();
    if !recoveries.is_empty() {
        page.push_str(
            "<h3>Recoveries</h3><table><tr><th>At</th><th>Failure</th><th>Agent</th><th>Action</th><th>Outcome</th></tr>",
        );
        for r in &recoveries {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                svg::duration(r["detected_session_secs"].as_f64().unwrap_or(f64::NAN)),
                esc(r["failure_kind"].as_str().unwrap_or("")),
                esc(r["agent_id"].as_str().unwrap_or("")),
                esc(r["action"].as_str().unwrap_or("")),
                esc(r["outcome"].as_str().unwrap_or("open")),
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CallPoint, RunSpan};
    use serde_json::json;

    #[test]
    fn the_page_is_self_contained_and_escapes_what_agents_wrote() {
        let evil = "<img src=x onerror=alert(1)>";
        let report = json!({
            "session_id": "s1", "status": "complete", "exit_code": 1,
            "project": {"name": evil},
            "duration": {"session_secs": 100.0, "wall_secs": 10.0, "time_scale": 10.0},
            "phases": [{"name": "bootstrap", "session_secs": 40.0}, {"name": "development", "session_secs": 60.0}],
            "success_criteria": [{"criterion": evil, "tier": "critical", "met": false, "evidence": evil, "phase": "session"}],
            "agents": [{"id": "agent-1", "role": "Coder", "trust_score": 0.5}],
            "evaluation": {"phase": "finalization", "acceptance": {"status": "ran", "cases": [
                {"id": "t::ok", "outcome": "passed", "severity": "high", "kind": "e2e", "wall_secs": 0.1},
                {"id": evil, "outcome": "failed", "severity": "critical", "kind": "e2e", "wall_secs": 0.2, "message": evil}]}},
        });
        let timeline = Timeline {
            runs: vec![RunSpan {
                agent_id: "agent-1".into(),
                task_id: evil.into(),
                attempt: 1,
                start: 1.0,
                end: Some(30.0),
                outcome: Some("finished".into()),
                exit_code: Some(0),
            }],
            calls: vec![CallPoint {
                at: 5.0,
                agent_id: "agent-1".into(),
                model: "sim".into(),
                task_id: Some(evil.into()),
                tokens: 1200,
                cost_usd: None,
                tool_calls: 2,
            }],
            ..Default::default()
        };
        let page = render(&report, &timeline);
        assert!(page.contains("verdict bad\">failed"), "the verdict leads");
        assert!(!page.contains("<img"), "agent text must be escaped");
        assert!(!page.contains("<script"), "no script");
        for external in ["src=\"http", "href=\"http", "url(http", "@import"] {
            assert!(!page.contains(external), "no network: {external}");
        }
        // Failing acceptance cases come before passing ones.
        let failed = page.find("class=\"bad\">failed</td>").unwrap();
        assert!(page.contains("1 of 2 cases passed"));
        assert!(page.find("t::ok").unwrap() > failed);
        assert!(page.contains("no call had a price"));
    }
}
