//! Live progress of `megatest run`. On a terminal: indicatif bars — the phase and its time box,
//! elapsed / remaining, tokens and budget, agents and their tasks, last checkpoint, last event —
//! with log lines printed above them. Not on a terminal (CI): a plain status line every
//! `[monitoring].dashboard_update_interval` (session seconds, at least 1 s of wall time).

use crate::protocol::{ApiRequest, Event};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Lets log lines through without tearing the bars (tracing's stderr writer on a terminal).
#[derive(Clone)]
pub struct ProgressWriter(pub MultiProgress);

impl std::io::Write for ProgressWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ProgressWriter {
    type Writer = ProgressWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn status(events: &mpsc::Sender<Event>) -> Option<Value> {
    let (reply, answer) = oneshot::channel();
    events
        .send(Event::Api(ApiRequest::Status { reply }))
        .await
        .ok()?;
    answer.await.ok()
}

fn secs(v: &Value) -> String {
    match v.as_f64() {
        Some(s) if s >= 3600.0 => format!("{:.1} h", s / 3600.0),
        Some(s) if s >= 60.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{s:.0} s"),
        None => "-".into(),
    }
}

/// `development (2/4) 3.0 min of 20.0 min · session 13.0 min elapsed, 47.0 min left`.
fn phase_text(doc: &Value) -> String {
    format!(
        "{} ({}/{}) {} of {} · session {} elapsed, {} left",
        doc["phase"].as_str().unwrap_or("-"),
        doc["phase_index"].as_u64().map(|i| i + 1).unwrap_or(0),
        doc["phase_count"],
        secs(&doc["phase_elapsed_session_secs"]),
        secs(&doc["phase_planned_session_secs"]),
        secs(&doc["elapsed_session_secs"]),
        secs(&doc["remaining_session_secs"]),
    )
}

/// Each agent as `<id><sep><task or idle>`.
fn agent_tasks(doc: &Value, sep: &str) -> Vec<String> {
    doc["agents"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    format!(
                        "{}{sep}{}",
                        a["id"].as_str().unwrap_or(""),
                        a["task"].as_str().unwrap_or("idle")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One line for logs and CI: phase, time, tokens and budget, tasks, agents, last checkpoint.
pub fn status_line(doc: &Value) -> String {
    let m = &doc["metrics"];
    let agents = agent_tasks(doc, ":");
    format!(
        "[{}] phase {} — tokens {} ({:.0} % of budget) — tasks {}/{} done — {} — checkpoint {} — last event {}",
        doc["status"].as_str().unwrap_or("?"),
        phase_text(doc),
        m["total_tokens"],
        doc["budget"]["used_fraction"].as_f64().unwrap_or(0.0) * 100.0,
        m["tasks"]["done"],
        m["tasks"]["total"],
        agents.join(" "),
        doc["last_checkpoint"]["seq"].as_u64().map(|s| s.to_string()).unwrap_or("-".into()),
        doc["last_event"]["kind"].as_str().unwrap_or("-"),
    )
}

/// Show progress until `stop`: bars on `multi` when given (a terminal), else plain lines on
/// stderr every `every` of wall time.
pub async fn run(
    events: mpsc::Sender<Event>,
    every: Duration,
    multi: Option<MultiProgress>,
    stop: CancellationToken,
) {
    let Some(multi) = multi else {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            match status(&events).await {
                Some(doc) => crate::console::say(format_args!("megatest: {}", status_line(&doc))),
                None => return,
            }
        }
    };
    let style = ProgressStyle::with_template("{prefix:>12.bold} [{bar:40.cyan/blue}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let line = ProgressStyle::with_template("{prefix:>12.bold} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let phase = multi.add(ProgressBar::new(1).with_style(style).with_prefix("phase"));
    let tokens = multi.add(
        ProgressBar::new(1)
            .with_style(line.clone())
            .with_prefix("tokens"),
    );
    let agents = multi.add(
        ProgressBar::new(1)
            .with_style(line.clone())
            .with_prefix("agents"),
    );
    let last = multi.add(ProgressBar::new(1).with_style(line).with_prefix("last"));
    let mut tick =
        tokio::time::interval(every.clamp(Duration::from_millis(200), Duration::from_secs(2)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let Some(doc) = status(&events).await else {
            break;
        };
        let planned = doc["phase_planned_session_secs"]
            .as_f64()
            .unwrap_or(1.0)
            .max(1.0);
        let elapsed = doc["phase_elapsed_session_secs"].as_f64().unwrap_or(0.0);
        phase.set_length(planned as u64);
        phase.set_position(elapsed.min(planned) as u64);
        phase.set_message(format!(
            "{} · {}",
            phase_text(&doc),
            doc["status"].as_str().unwrap_or("?")
        ));
        tokens.set_message(format!(
            "{} of {} ({:.1} % of the budget) · {} model calls · {} tool calls",
            doc["metrics"]["total_tokens"],
            doc["budget"]["tokens_total"],
            doc["budget"]["used_fraction"].as_f64().unwrap_or(0.0) * 100.0,
            doc["metrics"]["model_calls"],
            doc["metrics"]["tool_calls"],
        ));
        let list = agent_tasks(&doc, " ");
        agents.set_message(format!(
            "{} · tasks {}/{} done",
            list.join(", "),
            doc["metrics"]["tasks"]["done"],
            doc["metrics"]["tasks"]["total"]
        ));
        last.set_message(format!(
            "checkpoint {} · event {} · recoveries {}",
            doc["last_checkpoint"]["seq"]
                .as_u64()
                .map(|s| s.to_string())
                .unwrap_or("-".into()),
            doc["last_event"]["kind"].as_str().unwrap_or("-"),
            doc["recoveries"]["total"],
        ));
    }
    for bar in [&phase, &tokens, &agents, &last] {
        bar.finish_and_clear();
    }
    let _ = multi.clear();
    multi.set_draw_target(ProgressDrawTarget::hidden());
}
