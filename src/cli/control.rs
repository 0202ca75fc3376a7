//! Operator verbs on sessions: `status`, `checkpoint`, `pause`, `continue`, `stop` (through a
//! running session's control API), `logs`, `sessions` and `clean` (from the files).
//!
//! A SESSION argument is an id under `--runs-dir` or a session directory; without one, the most
//! recently started running session in `--runs-dir`.

use crate::cli::checkpoints::session_dir;
use crate::store::SessionSummary;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct SessionArg {
    /// Session id (under --runs-dir) or session directory; default: the most recent running one
    pub session: Option<String>,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: SessionArg,
    /// Print the status document as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub target: SessionArg,
    /// Keep printing new lines until the session ends
    #[arg(short, long)]
    pub follow: bool,
    /// An agent's output (agents/<ID>/agent.log) instead of session.log
    #[arg(long)]
    pub agent: Option<String>,
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Remove sessions that ended (or, never ended, were last written) longer ago than this:
    /// 7d, 12h, 90m
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Duration,
    /// Only list what would be removed
    #[arg(long)]
    pub dry_run: bool,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

/// For verbs that only print: a closed pipe (`megatest sessions | head`) ends the process
/// quietly, as for any Unix filter, instead of a panic in `println!`. Not for the daemon, whose
/// sockets must see EPIPE as an error.
pub(crate) fn quiet_on_closed_pipe() {
    // SAFETY: resets one signal's disposition to the default; no handler is installed.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

/// One session directory with what its `session.db` says and whether its daemon lives.
struct Found {
    dir: PathBuf,
    summary: SessionSummary,
    running: bool,
}

fn scan(runs_dir: &Path) -> Vec<Found> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(summary) = crate::store::session_summary(&dir.join("session.db")) else {
            continue;
        };
        let running = summary.daemon_pid.is_some_and(crate::daemon::daemon_alive)
            && summary.ended_at.is_none();
        out.push(Found {
            dir,
            summary,
            running,
        });
    }
    out.sort_by(|a, b| a.summary.started_at.cmp(&b.summary.started_at));
    out
}

/// The session a verb is about, or None after saying why on stderr.
fn resolve(target: &SessionArg) -> Option<Found> {
    match &target.session {
        Some(name) => {
            let Some(dir) = session_dir(name, &target.runs_dir) else {
                eprintln!(
                    "megatest: no session {name:?} (neither a session directory nor an id under {})",
                    target.runs_dir.display()
                );
                return None;
            };
            let summary = match crate::store::session_summary(&dir.join("session.db")) {
                Ok(summary) => summary,
                Err(err) => {
                    eprintln!("megatest: cannot read {}: {err:#}", dir.display());
                    return None;
                }
            };
            let running = summary.daemon_pid.is_some_and(crate::daemon::daemon_alive)
                && summary.ended_at.is_none();
            Some(Found {
                dir,
                summary,
                running,
            })
        }
        None => {
            let found = scan(&target.runs_dir).into_iter().rev().find(|f| f.running);
            if found.is_none() {
                eprintln!(
                    "megatest: no running session in {} (name one: megatest sessions lists them)",
                    target.runs_dir.display()
                );
            }
            found
        }
    }
}

/// A request to a running session's control API: Ok((status, JSON body)).
fn api_call(dir: &Path, method: &str, path: &str) -> Result<(u16, serde_json::Value)> {
    let addr = std::fs::read_to_string(dir.join("api.addr"))
        .with_context(|| format!("read {}", dir.join("api.addr").display()))?;
    let token = std::fs::read_to_string(dir.join("api.token"))
        .with_context(|| format!("read {}", dir.join("api.token").display()))?;
    let url = format!("http://{}{path}", addr.trim());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let request = match method {
            "POST" => client.post(&url),
            _ => client.get(&url),
        };
        let response = request
            .bearer_auth(token.trim())
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, body))
    })
}

pub fn status(args: StatusArgs) -> Result<i32> {
    let Some(found) = resolve(&args.target) else {
        return Ok(2);
    };
    let document = if found.running {
        match api_call(&found.dir, "GET", "/api/status") {
            Ok((200, body)) => body,
            Ok((status, body)) => {
                eprintln!("megatest: the control API answered {status}: {body}");
                return Ok(1);
            }
            Err(err) => {
                eprintln!("megatest: the session runs but its control API did not answer: {err:#}");
                return Ok(1);
            }
        }
    } else {
        offline_status(&found)
    };
    quiet_on_closed_pipe();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&document)?);
    } else {
        print_status(&document);
    }
    Ok(0)
}

/// The status of a session that is not running, from its files.
fn offline_status(found: &Found) -> serde_json::Value {
    let read = |name: &str| {
        std::fs::read_to_string(found.dir.join(name))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    };
    let mut status = std::fs::read_to_string(found.dir.join("status"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| found.summary.status.clone());
    if matches!(status.as_str(), "running" | "paused" | "escalated") {
        // The files say it runs, but its daemon is gone (kill -9, a crash).
        status = format!("dead (resume it: megatest resume {})", found.summary.id);
    }
    let metrics = read("metrics_current.json").unwrap_or(serde_json::Value::Null);
    let report = read("final_report.json");
    serde_json::json!({
        "session_id": found.summary.id,
        "status": status,
        "running": false,
        "phase": metrics["phase"],
        "elapsed_session_secs": metrics["elapsed_session_secs"],
        "elapsed_wall_secs": metrics["elapsed_wall_secs"],
        "remaining_session_secs": metrics["remaining_session_secs"],
        "metrics": metrics,
        "exit_code": found.summary.exit_code,
        "ended_because": found.summary.ended_because,
        "recoveries": report.as_ref().map(|r| serde_json::json!({"by_outcome": r["recovery_outcomes"], "total": r["recoveries"].as_array().map(|a| a.len())})),
        "escalations": [],
        "verdict": report.as_ref().map(|r| crate::report::digest::verdict(r).0),
        "report_html": found.dir.join("report.html").is_file().then(|| found.dir.join("report.html")),
        "source": "files (the session is not running)",
    })
}

fn print_status(doc: &serde_json::Value) {
    let m = &doc["metrics"];
    let secs = |v: &serde_json::Value| {
        v.as_f64()
            .map(|s| format!("{:.0} s", s))
            .unwrap_or("-".into())
    };
    println!(
        "session {}  {}  phase {}",
        doc["session_id"].as_str().unwrap_or("?"),
        doc["status"].as_str().unwrap_or("?"),
        doc["phase"].as_str().unwrap_or("-")
    );
    println!(
        "elapsed {} (session) / {} (wall), remaining {} (session)",
        secs(&doc["elapsed_session_secs"]),
        secs(&doc["elapsed_wall_secs"]),
        secs(&doc["remaining_session_secs"])
    );
    println!(
        "tokens {}  model calls {}  tool calls {}  tasks {}/{} done, {} failed",
        m["total_tokens"],
        m["model_calls"],
        m["tool_calls"],
        m["tasks"]["done"],
        m["tasks"]["total"],
        m["tasks"]["failed"]
    );
    if let Some(budget) = doc.get("budget").filter(|b| !b.is_null()) {
        println!(
            "budget {} of {} tokens ({:.1} %)",
            budget["tokens_used"],
            budget["tokens_total"],
            budget["used_fraction"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    let agents = doc["agents"]
        .as_array()
        .or(m["agents"].as_array())
        .cloned()
        .unwrap_or_default();
    for agent in agents {
        println!(
            "  {:<10} {:<10} {:<8} {}",
            agent["id"].as_str().unwrap_or(""),
            agent["role"].as_str().unwrap_or(""),
            agent["status"].as_str().unwrap_or(""),
            agent["task"].as_str().unwrap_or("-")
        );
    }
    if let Some(last) = doc.get("last_checkpoint").filter(|c| !c.is_null()) {
        println!(
            "last checkpoint {} ({})",
            last["seq"],
            last["trigger"].as_str().unwrap_or("")
        );
    }
    println!("recoveries {}", doc["recoveries"]["by_outcome"]);
    if let Some(open) = doc["escalations"].as_array().filter(|e| !e.is_empty()) {
        for e in open {
            println!(
                "OPEN ESCALATION {}: {} (decide: POST /api/escalations/{}/decision)",
                e["recovery_id"],
                e["failure_kind"].as_str().unwrap_or(""),
                e["recovery_id"]
            );
        }
    }
    if let Some(code) = doc.get("exit_code").filter(|c| !c.is_null()) {
        println!(
            "exit code {code}: {}",
            doc["ended_because"].as_str().unwrap_or("")
        );
    }
    if let Some(verdict) = doc["verdict"].as_str() {
        println!("verdict {}", verdict.to_uppercase());
    }
    if let Some(page) = doc["report_html"].as_str() {
        println!("report {page}");
    }
}

/// `checkpoint`, `pause`, `continue`, `stop`: one POST to the running session.
pub fn action(target: SessionArg, action: &str) -> Result<i32> {
    let Some(found) = resolve(&target) else {
        return Ok(2);
    };
    if !found.running {
        eprintln!(
            "megatest: session {} is not running ({})",
            found.summary.id, found.summary.status
        );
        return Ok(2);
    }
    match api_call(&found.dir, "POST", &format!("/api/{action}"))? {
        (200, body) => {
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(0)
        }
        (status, body) => {
            eprintln!(
                "megatest: {action} refused ({status}): {}",
                body["error"]["message"]
                    .as_str()
                    .unwrap_or(&body.to_string())
            );
            Ok(1)
        }
    }
}

pub fn logs(args: LogsArgs) -> Result<i32> {
    let Some(found) = resolve(&args.target) else {
        return Ok(2);
    };
    let path = match &args.agent {
        Some(agent) => found.dir.join("agents").join(agent).join("agent.log"),
        None => found.dir.join("session.log"),
    };
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    quiet_on_closed_pipe();
    let mut out = std::io::stdout().lock();
    loop {
        std::io::copy(&mut file, &mut out)?;
        if !args.follow {
            return Ok(0);
        }
        let alive = found
            .summary
            .daemon_pid
            .is_some_and(crate::daemon::daemon_alive);
        if !alive {
            std::io::copy(&mut file, &mut out)?;
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn sessions(args: SessionsArgs) -> Result<i32> {
    quiet_on_closed_pipe();
    let found = scan(&args.runs_dir);
    let rows: Vec<serde_json::Value> = found
        .iter()
        .map(|f| {
            let report = std::fs::read_to_string(f.dir.join("final_report.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            let metrics = std::fs::read_to_string(f.dir.join("metrics_current.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            let status = if f.running {
                std::fs::read_to_string(f.dir.join("status"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| "running".into())
            } else if f.summary.ended_at.is_none() && f.summary.status == "running" {
                "dead (resumable)".into()
            } else {
                f.summary.status.clone()
            };
            let (wall, tokens) = match (&report, &metrics) {
                (Some(r), _) => (
                    r["duration"]["wall_secs"].as_f64(),
                    r["usage"]["total_tokens"].as_u64(),
                ),
                (None, Some(m)) => (m["elapsed_wall_secs"].as_f64(), m["total_tokens"].as_u64()),
                _ => (None, None),
            };
            serde_json::json!({
                "id": f.summary.id,
                "status": status,
                "project": f.summary.project_type,
                "started_at": f.summary.started_at,
                "wall_secs": wall,
                "tokens": tokens,
                "exit_code": f.summary.exit_code,
                "dir": f.dir,
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<36} {:<17} {:<14} {:<25} {:>10} {:>12} {:>4}",
        "session", "status", "project", "started", "wall", "tokens", "exit"
    );
    for row in &rows {
        println!(
            "{:<36} {:<17} {:<14} {:<25} {:>10} {:>12} {:>4}",
            row["id"].as_str().unwrap_or(""),
            row["status"].as_str().unwrap_or(""),
            row["project"].as_str().unwrap_or(""),
            row["started_at"].as_str().unwrap_or(""),
            row["wall_secs"]
                .as_f64()
                .map(|s| format!("{s:.1} s"))
                .unwrap_or("-".into()),
            row["tokens"]
                .as_u64()
                .map(|t| t.to_string())
                .unwrap_or("-".into()),
            row["exit_code"]
                .as_i64()
                .map(|c| c.to_string())
                .unwrap_or("-".into()),
        );
    }
    Ok(0)
}

/// `clean --older-than 7d`: remove sessions that ended longer ago (a session that never
/// ended counts from its directory's last change). A running session is never touched.
pub fn clean(args: CleanArgs) -> Result<i32> {
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    for found in scan(&args.runs_dir) {
        if found.running {
            continue;
        }
        let ended = found
            .summary
            .ended_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| std::time::SystemTime::from(t.with_timezone(&chrono::Utc)));
        let last = ended.or_else(|| {
            std::fs::metadata(found.dir.join("session.db"))
                .and_then(|m| m.modified())
                .ok()
        });
        let Some(last) = last else { continue };
        let age = now.duration_since(last).unwrap_or_default();
        if age < args.older_than {
            continue;
        }
        println!(
            "{} {} ({}, {} old)",
            if args.dry_run {
                "would remove"
            } else {
                "removed"
            },
            found.dir.display(),
            found.summary.status,
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        );
        if !args.dry_run {
            std::fs::remove_dir_all(&found.dir)
                .with_context(|| format!("remove {}", found.dir.display()))?;
        }
        removed += 1;
    }
    if removed == 0 {
        println!(
            "nothing older than {}",
            humantime::format_duration(args.older_than)
        );
    }
    Ok(0)
}
