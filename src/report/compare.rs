//! `megatest compare`: sessions side by side (the seed's A/B testing of configurations). Pure:
//! final reports' JSON documents in, a [`Comparison`] out, rendered as a terminal table,
//! Markdown, JSON or HTML. The first session is the baseline: every other value carries its
//! difference to it, and rows whose values differ are marked.

use super::digest::{self, figure};
use super::svg::{esc, short};
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write;

/// One compared figure of one session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// The number, when the figure is one and was measured.
    pub value: Option<f64>,
    /// As shown (a number, a word, or `null (reason)`).
    pub text: String,
    /// The difference to the baseline (`+12 %`, `-3`), for numbers other than the baseline's.
    pub delta: Option<String>,
}

/// One figure across the sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// What it is.
    pub metric: String,
    /// Its unit (`tokens`, `USD`, `%`, `s`; empty for counts and words).
    pub unit: String,
    /// One cell per session, in the order given.
    pub cells: Vec<Cell>,
    /// True when not every session has the same value.
    pub differs: bool,
}

/// Sessions side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The sessions' ids, the baseline first.
    pub sessions: Vec<String>,
    /// Every compared figure.
    pub rows: Vec<Row>,
}

type Extract = fn(&Value) -> Result<f64, String>;
type Describe = fn(&Value) -> String;

fn at(report: &Value, pointer: &str) -> Result<f64, String> {
    figure(report.pointer(pointer).unwrap_or(&Value::Null))
}

fn tier(report: &Value, name: &str) -> Result<f64, String> {
    let (met, unmet, open) = digest::tier_counts(report, name);
    if met + unmet + open == 0 {
        return Err("no criteria".into());
    }
    Ok(met as f64)
}

const NUMBERS: &[(&str, &str, Extract)] = &[
    ("exit code", "", |r| at(r, "/exit_code")),
    ("duration (session)", "s", |r| {
        at(r, "/duration/session_secs")
    }),
    ("duration (wall)", "s", |r| at(r, "/duration/wall_secs")),
    ("model calls", "", |r| at(r, "/usage/model_calls")),
    ("tokens", "", |r| at(r, "/usage/total_tokens")),
    ("prompt tokens", "", |r| at(r, "/usage/prompt_tokens")),
    ("completion tokens", "", |r| {
        at(r, "/usage/completion_tokens")
    }),
    ("cost", "USD", |r| at(r, "/budget/cost_usd")),
    ("tool calls", "", |r| at(r, "/tool_calls")),
    ("tasks done", "", |r| at(r, "/tasks/done")),
    ("tasks total", "", |r| at(r, "/tasks/total")),
    ("tasks failed", "", |r| at(r, "/tasks/failed")),
    ("critical criteria met", "", |r| tier(r, "critical")),
    ("important criteria met", "", |r| tier(r, "important")),
    ("nice-to-have criteria met", "", |r| tier(r, "nice_to_have")),
    ("targets met", "", |r| tier(r, "target")),
    ("acceptance pass rate", "%", |r| {
        let (passed, total) = digest::acceptance_rate(r)?;
        if total == 0 {
            return Err("no cases".into());
        }
        Ok(100.0 * passed as f64 / total as f64)
    }),
    ("coverage", "%", |r| {
        at(r, "/test_coverage").map(|v| v * 100.0)
    }),
    ("lines of code", "", |r| at(r, "/code/value/lines_of_code")),
    ("tokens per line of code", "", |r| {
        let loc = at(r, "/code/value/lines_of_code")?;
        if loc <= 0.0 {
            return Err("no code".into());
        }
        Ok(at(r, "/usage/total_tokens")? / loc)
    }),
    ("recoveries", "", |r| {
        Ok(r["recoveries"].as_array().ok_or("not recorded")?.len() as f64)
    }),
    ("checkpoints", "", |r| at(r, "/checkpoints/count")),
    ("mean trust score", "", |r| {
        let scores: Vec<f64> = r["agents"]
            .as_array()
            .ok_or("no agents")?
            .iter()
            .filter_map(|a| a["trust_score"].as_f64())
            .collect();
        if scores.is_empty() {
            return Err("no trust scores".into());
        }
        Ok(scores.iter().sum::<f64>() / scores.len() as f64)
    }),
];

fn number_text(value: f64, unit: &str) -> String {
    match unit {
        "USD" => format!("${value:.2}"),
        "%" => format!("{value:.1} %"),
        "s" => super::svg::duration(value),
        _ if value.fract() != 0.0 && value.abs() < 1000.0 => format!("{value:.2}"),
        _ => short(value),
    }
}

fn delta_text(value: f64, base: f64, unit: &str) -> Option<String> {
    if value == base {
        return None;
    }
    let diff = value - base;
    let sign = if diff > 0.0 { "+" } else { "-" };
    Some(if unit == "%" {
        format!("{sign}{:.1} pt", diff.abs())
    } else if base != 0.0 {
        format!("{sign}{:.0} %", (diff / base * 100.0).abs())
    } else {
        format!("{sign}{}", number_text(diff.abs(), unit))
    })
}

/// Compare `reports` (final reports' documents; the first is the baseline).
pub fn compare(reports: &[Value]) -> Comparison {
    let sessions = reports
        .iter()
        .map(|r| r["session_id"].as_str().unwrap_or("?").to_string())
        .collect();
    let mut rows = Vec::new();
    let words: [(&str, Describe); 4] = [
        ("verdict", |r| digest::verdict(r).0.to_string()),
        ("project", |r| {
            r["project"]["project_type"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        }),
        ("model", |r| {
            format!(
                "{} {}",
                r["model"]["provider"].as_str().unwrap_or("?"),
                r["model"]["name"].as_str().unwrap_or("?")
            )
        }),
        ("agents", |r| {
            format!(
                "{} × {}",
                r["agent_count"],
                r["agent_kind"].as_str().unwrap_or("?")
            )
        }),
    ];
    for (metric, text) in words {
        let cells: Vec<Cell> = reports
            .iter()
            .map(|r| Cell {
                value: None,
                text: text(r),
                delta: None,
            })
            .collect();
        let differs = cells.iter().any(|c| c.text != cells[0].text);
        rows.push(Row {
            metric: metric.into(),
            unit: String::new(),
            cells,
            differs,
        });
    }
    for (metric, unit, extract) in NUMBERS {
        let values: Vec<Result<f64, String>> = reports.iter().map(extract).collect();
        let base = values.first().and_then(|v| v.as_ref().ok()).copied();
        let cells: Vec<Cell> = values
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Ok(value) => Cell {
                    value: Some(*value),
                    text: number_text(*value, unit),
                    delta: base
                        .filter(|_| i > 0)
                        .and_then(|b| delta_text(*value, b, unit)),
                },
                Err(reason) => Cell {
                    value: None,
                    text: format!("null ({reason})"),
                    delta: None,
                },
            })
            .collect();
        let differs = cells.iter().any(|c| c.text != cells[0].text);
        rows.push(Row {
            metric: (*metric).into(),
            unit: (*unit).into(),
            cells,
            differs,
        });
    }
    Comparison { sessions, rows }
}

fn shown(cell: &Cell) -> String {
    match &cell.delta {
        Some(delta) => format!("{} ({delta})", cell.text),
        None => cell.text.clone(),
    }
}

/// A plain table for the terminal; `*` marks rows that differ.
pub fn table(comparison: &Comparison) -> String {
    let cut = |t: &str| super::svg::truncate(t, 34);
    let mut columns: Vec<Vec<String>> = vec![std::iter::once("".to_string())
        .chain(
            comparison
                .rows
                .iter()
                .map(|r| format!("{} {}", if r.differs { "*" } else { " " }, r.metric)),
        )
        .collect()];
    for (i, session) in comparison.sessions.iter().enumerate() {
        let header = if i == 0 {
            format!("{} (baseline)", cut(session))
        } else {
            cut(session)
        };
        columns.push(
            std::iter::once(header)
                .chain(comparison.rows.iter().map(|r| cut(&shown(&r.cells[i]))))
                .collect(),
        );
    }
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| c.iter().map(|t| t.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in 0..columns[0].len() {
        let cells: Vec<String> = columns
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{:<w$}", c[line], w = *w))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out.push_str("* the sessions differ; (…) the difference to the baseline\n");
    out
}

/// A Markdown table; differing rows in bold.
pub fn markdown(comparison: &Comparison) -> String {
    let cell = super::markdown::cell;
    let mut out = String::from("| Figure |");
    for (i, session) in comparison.sessions.iter().enumerate() {
        let _ = write!(
            out,
            " {}{} |",
            cell(session),
            if i == 0 { " (baseline)" } else { "" }
        );
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(comparison.sessions.len()));
    out.push('\n');
    for row in &comparison.rows {
        let name = if row.differs {
            format!("**{}**", cell(&row.metric))
        } else {
            cell(&row.metric)
        };
        let _ = write!(out, "| {name} |");
        for c in &row.cells {
            let _ = write!(out, " {} |", cell(&shown(c)));
        }
        out.push('\n');
    }
    out
}

/// A self-contained HTML page; differing rows highlighted.
pub fn html(comparison: &Comparison) -> String {
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>megatest compare</title>\
         <style>body{font:14px system-ui,sans-serif;margin:20px;color:#1b1f24;background:#fff}\
         @media (prefers-color-scheme:dark){body{color:#e6edf3;background:#0d1117}tr.differs{background:#3b2e00}}\
         table{border-collapse:collapse}th,td{padding:4px 10px;border-bottom:1px solid #8884;text-align:left}\
         tr.differs{background:#fff8c5}.delta{color:#888;font-size:12px}</style></head><body>\
         <h1>megatest compare</h1><p>The first session is the baseline; highlighted rows differ.</p><table><tr><th>Figure</th>",
    );
    for session in &comparison.sessions {
        let _ = write!(out, "<th>{}</th>", esc(session));
    }
    out.push_str("</tr>");
    for row in &comparison.rows {
        let _ = write!(
            out,
            "<tr{}><td>{}</td>",
            if row.differs {
                " class=\"differs\""
            } else {
                ""
            },
            esc(&row.metric)
        );
        for c in &row.cells {
            let _ = write!(
                out,
                "<td>{}{}</td>",
                esc(&c.text),
                c.delta.as_ref().map_or(String::new(), |d| format!(
                    " <span class=\"delta\">{}</span>",
                    esc(d)
                ))
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(id: &str, tokens: u64, cost: Value, loc: u64, exit: i64) -> Value {
        json!({"session_id": id, "status": "complete", "exit_code": exit,
               "usage": {"total_tokens": tokens, "model_calls": 10},
               "budget": {"cost_usd": cost},
               "code": {"value": {"lines_of_code": loc}},
               "tasks": {"done": 4, "total": 4, "failed": 0}})
    }

    #[test]
    fn differences_to_the_baseline_are_marked_and_nulls_keep_their_reason() {
        let a = session("a", 1000, json!({"value": 2.0}), 100, 0);
        let b = session(
            "b",
            1500,
            json!({"value": null, "reason": "no price"}),
            100,
            1,
        );
        let c = compare(&[a, b]);
        let row = |name: &str| c.rows.iter().find(|r| r.metric == name).unwrap();
        assert_eq!(c.sessions, ["a", "b"]);
        assert!(row("tokens").differs);
        assert_eq!(row("tokens").cells[1].delta.as_deref(), Some("+50 %"));
        assert_eq!(row("tokens").cells[0].delta, None);
        assert_eq!(row("cost").cells[1].text, "null (no price)");
        assert_eq!(row("cost").cells[0].text, "$2.00");
        assert!(!row("model calls").differs);
        assert_eq!(row("verdict").cells[1].text, "failed");
        assert!(row("verdict").differs);
        assert_eq!(row("tokens per line of code").cells[1].text, "15");
        let text = table(&c);
        assert!(text.contains("* tokens"), "{text}");
        assert!(text.contains("  model calls"), "{text}");
        assert!(text.contains("1.5k (+50 %)"), "{text}");
        assert!(markdown(&c).contains("| **tokens** | 1.0k | 1.5k (+50 %) |"));
        assert!(html(&c).contains("<tr class=\"differs\"><td>tokens</td>"));
    }
}
