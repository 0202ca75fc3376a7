//! The status document as Prometheus text exposition format (`GET /metrics`, and
//! `metrics/metrics.prom` when `[monitoring].export_prometheus` is on).

use serde_json::Value;

/// The status document as Prometheus text exposition format (version 0.0.4).
pub fn prometheus_text(status: &Value) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        out.push_str(&format!(
            "# HELP megatest_{name} {help}\n# TYPE megatest_{name} {kind}\n"
        ));
        for (labels, value) in samples {
            out.push_str(&format!("megatest_{name}{labels} {value}\n"));
        }
    };
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let label = |key: &str, value: &str| {
        format!(
            "{{{key}=\"{}\"}}",
            value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        )
    };
    let m = &status["metrics"];
    let budget = &status["budget"];
    let single: [(&str, &str, &str, f64); 12] = [
        (
            "elapsed_session_seconds",
            "gauge",
            "Session seconds since the start.",
            num(&m["elapsed_session_secs"]),
        ),
        (
            "elapsed_wall_seconds",
            "gauge",
            "Wall seconds since the start.",
            num(&m["elapsed_wall_secs"]),
        ),
        (
            "remaining_session_seconds",
            "gauge",
            "Planned session seconds left.",
            num(&m["remaining_session_secs"]),
        ),
        (
            "model_calls_total",
            "counter",
            "Model calls through the proxy.",
            num(&m["model_calls"]),
        ),
        (
            "tokens_total",
            "counter",
            "Prompt plus completion tokens (provider usage).",
            num(&m["total_tokens"]),
        ),
        (
            "tool_calls_total",
            "counter",
            "Tool calls (model answers and agent reports).",
            num(&m["tool_calls"]),
        ),
        (
            "errors_total",
            "counter",
            "Failures detected.",
            num(&m["errors"]),
        ),
        (
            "token_budget_used",
            "gauge",
            "Tokens counted against limits.total_token_budget.",
            num(&budget["tokens_used"]),
        ),
        (
            "token_budget_total",
            "gauge",
            "limits.total_token_budget.",
            num(&budget["tokens_total"]),
        ),
        (
            "checkpoints_total",
            "counter",
            "Checkpoints written.",
            num(&status["checkpoints"]),
        ),
        (
            "escalations_open",
            "gauge",
            "Escalations waiting for an operator.",
            status["escalations"]
                .as_array()
                .map_or(0.0, |e| e.len() as f64),
        ),
        (
            "paused",
            "gauge",
            "1 while the session is paused.",
            f64::from(status["status"] == "paused"),
        ),
    ];
    for (name, kind, help, value) in single {
        metric(name, kind, help, vec![(String::new(), value)]);
    }
    let tasks = &m["tasks"];
    metric(
        "tasks",
        "gauge",
        "Tasks on the board by state.",
        ["pending", "running", "done", "failed"]
            .iter()
            .map(|s| (label("state", s), num(&tasks[*s])))
            .collect(),
    );
    let agents = m["agents"].as_array().cloned().unwrap_or_default();
    metric(
        "agent_running",
        "gauge",
        "1 while the agent runs a task.",
        agents
            .iter()
            .map(|a| {
                (
                    label("agent", a["id"].as_str().unwrap_or("")),
                    f64::from(a["status"] == "running"),
                )
            })
            .collect(),
    );
    metric(
        "agent_trust_score",
        "gauge",
        "The agent's trust score (0-1) from its measured record.",
        agents
            .iter()
            .map(|a| {
                (
                    label("agent", a["id"].as_str().unwrap_or("")),
                    num(&a["trust_score"]),
                )
            })
            .collect(),
    );
    let outcomes = status["recoveries"]["by_outcome"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    metric(
        "recoveries_total",
        "counter",
        "Recoveries by outcome (open: not decided yet).",
        outcomes
            .iter()
            .map(|(k, v)| (label("outcome", k), num(v)))
            .collect(),
    );
    out
}
