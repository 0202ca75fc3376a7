//! `megatest ecs`: sessions on AWS ECS Fargate (Spot) with their directories in S3 — launch a
//! sweep, watch it (replacing Spot-interrupted tasks with ones that resume from S3), status,
//! logs, stop, collect into the local runs directory, costs. The AWS work is in
//! `backend::ecs`; this file is the command line around it.

use crate::backend::ecs::costs::{self, PriceTable, TaskUsage};
use crate::backend::ecs::sync::{self, S3Url};
use crate::backend::ecs::tasks::{self, TaskInfo};
use crate::backend::ecs::{Aws, AwsError, AwsSettings};
use anyhow::{Context, Result};

mod sweep;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use sweep::{launch, watch_verb};

#[derive(Debug, Args)]
pub struct EcsArgs {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Start sessions as Fargate tasks: one per session (--count N copies, or every session of
    /// --matrix FILE), at most --max-parallel at once; the config is uploaded beside each
    /// session's S3 directory. Prints the sweep id.
    Launch(Box<LaunchArgs>),
    /// Follow a sweep until every session finished: launch queued sessions as others end,
    /// replace a task stopped by a Spot interruption with one that resumes from S3.
    Watch(WatchArgs),
    /// Sessions' tasks (ARN, last status, stop reason) with their session status and progress
    /// read from S3.
    Status(StatusArgs),
    /// A session's CloudWatch log stream; -f follows it until the task stops.
    Logs(LogsArgs),
    /// Stop a session's task: megatest inside gets SIGTERM, takes a final checkpoint, syncs.
    Stop(StopArgs),
    /// Stop every running megatest task (of one sweep with --sweep).
    StopAll(StopAllArgs),
    /// Download every finished session's directory from S3 into the runs directory, so
    /// `megatest report` and `megatest compare` work on it. A session S3 still calls running
    /// whose task stopped (killed before its final sync) is downloaded too, to be resumed.
    Collect(CollectArgs),
    /// What the tasks cost: vCPU and memory × billed time × Fargate / Fargate Spot prices.
    Costs(CostsArgs),
}

/// Where the sessions are: the CloudFormation stack's outputs.
#[derive(Debug, Args, Clone)]
struct Stack {
    /// ECS cluster (the stack's ClusterName output)
    #[arg(long, env = "MEGATEST_ECS_CLUSTER")]
    cluster: String,
    /// S3 bucket of session directories (the stack's BucketName output)
    #[arg(long, env = "MEGATEST_ECS_BUCKET")]
    bucket: String,
    /// Key prefix of session directories in the bucket
    #[arg(long, env = "MEGATEST_ECS_PREFIX", default_value = "sessions")]
    prefix: String,
    /// AWS region (default: AWS_REGION or the profile's)
    #[arg(long)]
    region: Option<String>,
    /// An AWS-compatible endpoint such as moto (default: AWS_ENDPOINT_URL, else AWS)
    #[arg(long)]
    endpoint_url: Option<String>,
}

impl Stack {
    fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }

    fn sessions(&self) -> S3Url {
        S3Url {
            bucket: self.bucket.clone(),
            prefix: self.prefix.trim_matches('/').to_string(),
        }
    }
}

#[derive(Debug, Args)]
struct LaunchArgs {
    /// Config file for every session of the sweep (validated here first)
    config: PathBuf,
    #[command(flatten)]
    stack: Stack,
    #[command(flatten)]
    overrides: crate::cli::OverrideArgs,
    /// The megatest image (the stack's ImageUri output)
    #[arg(long, env = "MEGATEST_ECS_IMAGE")]
    image: String,
    /// Subnets of the tasks, comma-separated (the stack's Subnets output)
    #[arg(
        long,
        env = "MEGATEST_ECS_SUBNETS",
        value_delimiter = ',',
        required = true
    )]
    subnets: Vec<String>,
    /// Security groups of the tasks, comma-separated (the stack's SecurityGroupId output)
    #[arg(
        long,
        env = "MEGATEST_ECS_SECURITY_GROUPS",
        value_delimiter = ',',
        required = true
    )]
    security_groups: Vec<String>,
    /// Task execution role (the stack's ExecutionRoleArn output)
    #[arg(long, env = "MEGATEST_ECS_EXECUTION_ROLE_ARN")]
    execution_role_arn: Option<String>,
    /// Task role (the stack's TaskRoleArn output)
    #[arg(long, env = "MEGATEST_ECS_TASK_ROLE_ARN")]
    task_role_arn: Option<String>,
    /// CloudWatch Logs group (the stack's LogGroupName output)
    #[arg(
        long,
        env = "MEGATEST_ECS_LOG_GROUP",
        default_value = "/megatest/megatest"
    )]
    log_group: String,
    /// CPU units per task (1024 = 1 vCPU)
    #[arg(long, default_value_t = 2048)]
    cpu: u32,
    /// Memory per task, MiB
    #[arg(long, default_value_t = 8192)]
    memory: u32,
    /// Give tasks a public IP (subnets without a NAT gateway)
    #[arg(long)]
    assign_public_ip: bool,
    /// A variable the container reads from Secrets Manager or SSM Parameter Store, NAME=ARN
    /// (the model provider's key: OPENAI_API_KEY=arn:aws:secretsmanager:…); repeatable. The
    /// stack's ProviderSecretArns parameter lets the execution role read them.
    #[arg(long = "secret", value_name = "NAME=ARN")]
    secrets: Vec<String>,
    /// Run on the FARGATE_SPOT capacity provider (interrupted tasks are replaced by `watch`)
    #[arg(long)]
    spot: bool,
    /// Sessions with these settings
    #[arg(long, default_value_t = 1, conflicts_with = "matrix")]
    count: u32,
    /// A sweep: every session of this TOML file ([matrix] axes, [[session]] entries)
    #[arg(long)]
    matrix: Option<PathBuf>,
    /// Sessions running at once; the rest wait for `launch` (or `watch`) to start them
    #[arg(long, default_value_t = 10)]
    max_parallel: u32,
    /// Keep watching until every session finished (see `megatest ecs watch`)
    #[arg(long)]
    watch: bool,
    /// Wall seconds between looks at the tasks
    #[arg(long, default_value_t = 30.0)]
    interval: f64,
    /// Directory holding session directories (sweeps are recorded under ecs/)
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    runs_dir: PathBuf,
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// The sweep id `launch` printed
    sweep: String,
    #[command(flatten)]
    stack: Stack,
    /// Wall seconds between looks at the tasks
    #[arg(long, default_value_t = 30.0)]
    interval: f64,
    /// Directory holding session directories (sweeps are recorded under ecs/)
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    runs_dir: PathBuf,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    stack: Stack,
    /// Only this sweep
    #[arg(long)]
    sweep: Option<String>,
    /// JSON for machines
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// Session id
    session: String,
    #[command(flatten)]
    stack: Stack,
    /// CloudWatch Logs group (the stack's LogGroupName output)
    #[arg(
        long,
        env = "MEGATEST_ECS_LOG_GROUP",
        default_value = "/megatest/megatest"
    )]
    log_group: String,
    /// Follow until the task stops
    #[arg(short, long)]
    follow: bool,
}

#[derive(Debug, Args)]
struct StopArgs {
    /// Session id
    session: String,
    #[command(flatten)]
    stack: Stack,
}

#[derive(Debug, Args)]
struct StopAllArgs {
    #[command(flatten)]
    stack: Stack,
    /// Only this sweep
    #[arg(long)]
    sweep: Option<String>,
}

#[derive(Debug, Args)]
struct CollectArgs {
    #[command(flatten)]
    stack: Stack,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    runs_dir: PathBuf,
}

#[derive(Debug, Args)]
struct CostsArgs {
    #[command(flatten)]
    stack: Stack,
    /// Only this sweep
    #[arg(long)]
    sweep: Option<String>,
    /// Price table (TOML: [regions.<name>] vcpu_hour, gb_hour, spot_vcpu_hour, spot_gb_hour)
    /// laid over the built-in on-demand list prices
    #[arg(long)]
    prices: Option<PathBuf>,
    /// JSON for machines
    #[arg(long)]
    json: bool,
}

pub fn run(args: EcsArgs) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        match args.verb {
            Verb::Launch(a) => launch(*a).await,
            Verb::Watch(a) => watch_verb(a).await,
            Verb::Status(a) => status(a).await,
            Verb::Logs(a) => logs(a).await,
            Verb::Stop(a) => stop(a).await,
            Verb::StopAll(a) => stop_all(a).await,
            Verb::Collect(a) => collect(a).await,
            Verb::Costs(a) => costs_verb(a).await,
        }
    });
    match outcome {
        Ok(code) => Ok(code),
        Err(err) => match err.downcast_ref::<AwsError>() {
            // What to fix, without a chain of contexts.
            Some(aws) => {
                eprintln!("megatest: {aws}");
                Ok(2)
            }
            None => Err(err),
        },
    }
}

async fn connect(stack: &Stack) -> Result<Aws> {
    let aws = Aws::connect(&stack.settings()).await?;
    sync::check_bucket(&aws, &stack.bucket).await?;
    Ok(aws)
}

fn of_sweep(task: &TaskInfo, sweep: &Option<String>) -> bool {
    sweep.is_none() || task.sweep == *sweep
}

async fn status(args: StatusArgs) -> Result<i32> {
    let aws = connect(&args.stack).await?;
    let listed = tasks::list(&aws, &args.stack.cluster).await?;
    let base = args.stack.sessions();
    let mut rows = Vec::new();
    for task in listed.iter().filter(|t| of_sweep(t, &args.sweep)) {
        let session = task.session_id.clone().unwrap_or_default();
        let url = base.child(&session);
        let word = sync::read_text(&aws, &url, "status").await?;
        let metrics = sync::read_text(&aws, &url, "metrics_current.json")
            .await?
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .unwrap_or_default();
        rows.push(serde_json::json!({
            "session_id": session,
            "sweep": task.sweep,
            "label": task.label,
            "task_arn": task.arn,
            "last_status": task.last_status,
            "stop_code": task.stop_code,
            "stopped_reason": task.stopped_reason,
            "spot": task.spot,
            "replaces": task.replaces,
            "session_status": word.map(|w| w.trim().to_string()),
            "phase": metrics["phase"],
            "elapsed_session_secs": metrics["elapsed_session_secs"],
            "tasks_done": metrics["tasks"]["done"],
            "tasks_total": metrics["tasks"]["total"],
            "total_tokens": metrics["total_tokens"],
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<28} {:<22} {:<12} {:<12} {:<12} {:>9} {:>10}  TASK / STOP REASON",
        "SESSION", "LABEL", "ECS", "SESSION", "PHASE", "TASKS", "TOKENS"
    );
    for r in &rows {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
        println!(
            "{:<28} {:<22} {:<12} {:<12} {:<12} {:>9} {:>10}  {}{}",
            text(&r["session_id"]),
            text(&r["label"]),
            text(&r["last_status"]),
            text(&r["session_status"]),
            text(&r["phase"]),
            format!("{}/{}", r["tasks_done"], r["tasks_total"]).replace("null", "-"),
            r["total_tokens"]
                .as_u64()
                .map_or("-".into(), |t| t.to_string()),
            r["task_arn"]
                .as_str()
                .and_then(|a| a.rsplit('/').next())
                .unwrap_or(""),
            r["stopped_reason"]
                .as_str()
                .map_or(String::new(), |s| format!(" ({s})")),
        );
    }
    if rows.is_empty() {
        println!("(no megatest tasks in cluster {})", args.stack.cluster);
    }
    Ok(0)
}

/// The session's tasks in the order they ran: each replacement after the task it replaced.
fn chain(mut tasks: Vec<TaskInfo>) -> Vec<TaskInfo> {
    let mut ordered = Vec::new();
    let mut previous: Option<String> = None;
    while !tasks.is_empty() {
        let next = tasks
            .iter()
            .position(|t| t.replaces == previous)
            .unwrap_or(0);
        let task = tasks.remove(next);
        previous = Some(task.arn.clone());
        ordered.push(task);
    }
    ordered
}

async fn logs(args: LogsArgs) -> Result<i32> {
    let aws = Aws::connect(&args.stack.settings()).await?;
    let tasks_of_session: Vec<TaskInfo> = tasks::list(&aws, &args.stack.cluster)
        .await?
        .into_iter()
        .filter(|t| t.session_id.as_deref() == Some(args.session.as_str()))
        .collect();
    let ordered = chain(tasks_of_session);
    let Some(last) = ordered.last().cloned() else {
        eprintln!(
            "megatest: no task of session {} in cluster {}",
            args.session, args.stack.cluster
        );
        return Ok(2);
    };
    // Earlier tasks (before Spot interruptions) first, each stream whole.
    for task in &ordered[..ordered.len() - 1] {
        println!(
            "--- task {} ({})",
            task.id(),
            task.stopped_reason.as_deref().unwrap_or("stopped")
        );
        let mut token = None;
        loop {
            let (lines, next) =
                tasks::log_lines(&aws, &args.log_group, task, token.clone()).await?;
            if lines.is_empty() {
                break;
            }
            for line in lines {
                println!("{line}");
            }
            token = next;
        }
    }
    if ordered.len() > 1 {
        println!("--- task {}", last.id());
    }
    let mut token = None;
    loop {
        let (lines, next) = tasks::log_lines(&aws, &args.log_group, &last, token.clone()).await?;
        let quiet = lines.is_empty();
        for line in lines {
            println!("{line}");
        }
        token = next;
        if quiet && !args.follow {
            return Ok(0);
        }
        if quiet {
            let stopped = tasks::list(&aws, &args.stack.cluster)
                .await?
                .iter()
                .any(|t| t.arn == last.arn && t.last_status == "STOPPED");
            if stopped {
                return Ok(0);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

async fn stop(args: StopArgs) -> Result<i32> {
    let aws = Aws::connect(&args.stack.settings()).await?;
    let running: Vec<TaskInfo> = tasks::list(&aws, &args.stack.cluster)
        .await?
        .into_iter()
        .filter(|t| t.session_id.as_deref() == Some(args.session.as_str()))
        .filter(|t| t.last_status != "STOPPED")
        .collect();
    if running.is_empty() {
        eprintln!("megatest: session {} has no running task", args.session);
        return Ok(1);
    }
    for task in &running {
        tasks::stop(&aws, &args.stack.cluster, &task.arn, "megatest ecs stop").await?;
        println!(
            "{}: stopping task {} (SIGTERM: final checkpoint and sync)",
            args.session,
            task.id()
        );
    }
    Ok(0)
}

async fn stop_all(args: StopAllArgs) -> Result<i32> {
    let aws = Aws::connect(&args.stack.settings()).await?;
    let mut stopped = 0;
    for task in tasks::list(&aws, &args.stack.cluster).await? {
        if task.last_status != "STOPPED" && of_sweep(&task, &args.sweep) {
            tasks::stop(
                &aws,
                &args.stack.cluster,
                &task.arn,
                "megatest ecs stop-all",
            )
            .await?;
            println!(
                "{}: stopping task {}",
                task.session_id.as_deref().unwrap_or("?"),
                task.id()
            );
            stopped += 1;
        }
    }
    println!("{stopped} task(s) stopping");
    Ok(0)
}

/// Session statuses that are still going somewhere.
const LIVE: [&str; 4] = ["running", "paused", "escalated", "stopping"];

async fn collect(args: CollectArgs) -> Result<i32> {
    let aws = connect(&args.stack).await?;
    let base = args.stack.sessions();
    let mut sessions: Vec<String> = sync::list(&aws, &base)
        .await?
        .iter()
        .filter_map(|k| k.strip_suffix("/status"))
        .filter(|id| !id.contains('/'))
        .map(str::to_string)
        .collect();
    sessions.sort();
    // A session S3 calls live whose tasks all stopped was killed without its final sync (or
    // its task is long gone): its directory is as resumable as after a crash, so it is
    // collected too. Without the cluster's tasks, every live session is left alone.
    let running: Option<std::collections::BTreeSet<String>> =
        match tasks::list(&aws, &args.stack.cluster).await {
            Ok(tasks) => Some(
                tasks
                    .into_iter()
                    .filter(|t| t.last_status != "STOPPED")
                    .filter_map(|t| t.session_id)
                    .collect(),
            ),
            Err(err) => {
                eprintln!("megatest: sessions S3 calls live are left alone: {err}");
                None
            }
        };
    let (mut pulled, mut skipped) = (0, 0);
    for id in sessions {
        let url = base.child(&id);
        let remote = sync::read_text(&aws, &url, "status")
            .await?
            .unwrap_or_default()
            .trim()
            .to_string();
        let live = LIVE.contains(&remote.as_str());
        let orphaned = live && running.as_ref().is_some_and(|r| !r.contains(&id));
        if live && !orphaned {
            println!("{id}: still {remote}, not collected");
            skipped += 1;
            continue;
        }
        let dir = args.runs_dir.join(&id);
        let local = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        if local.trim() == remote && dir.join("session.db").exists() {
            skipped += 1;
            continue;
        }
        let staging = args.runs_dir.join(format!(".{id}.collecting"));
        let _ = std::fs::remove_dir_all(&staging);
        let files = sync::pull(&aws, &url, &staging).await?;
        if !staging.join("session.db").is_file() {
            let _ = std::fs::remove_dir_all(&staging);
            println!("{id}: no session.db among its {files} files in S3, not collected");
            skipped += 1;
            continue;
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&staging, &dir)?;
        let dir = std::fs::canonicalize(&dir)?;
        crate::cli::resume::adopt_pulled(&dir)?;
        if orphaned {
            println!(
                "{id}: S3 says {remote} but no task in cluster {} runs it (stopped before its \
                 final sync): {files} files into {}; `megatest resume {}` continues it from its \
                 last checkpoint",
                args.stack.cluster,
                dir.display(),
                dir.display()
            );
        } else {
            println!("{id}: {remote}, {files} files into {}", dir.display());
        }
        pulled += 1;
    }
    println!("collected {pulled} session(s), {skipped} left as they were");
    Ok(0)
}

async fn costs_verb(args: CostsArgs) -> Result<i32> {
    let table = match &args.prices {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            match PriceTable::with_file(&text) {
                Ok(table) => table,
                Err(err) => {
                    eprintln!("megatest: {}: {err}", path.display());
                    return Ok(2);
                }
            }
        }
        None => PriceTable::default(),
    };
    let aws = Aws::connect(&args.stack.settings()).await?;
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    let mut by_session: std::collections::BTreeMap<String, Vec<costs::TaskCost>> =
        Default::default();
    let mut rows = Vec::new();
    for task in tasks::list(&aws, &args.stack.cluster).await? {
        if !of_sweep(&task, &args.sweep) {
            continue;
        }
        let usage = TaskUsage {
            cpu_units: task.cpu,
            memory_mib: task.memory,
            spot: task.spot,
            billing_start: task.pull_started_at.or(task.started_at),
            created: task.created_at,
            stopped: task.stopped_at,
        };
        let cost = costs::task_cost(&usage, &table, &aws.region, now);
        rows.push(serde_json::json!({
            "session_id": task.session_id, "task_arn": task.arn, "spot": task.spot,
            "cpu_units": task.cpu, "memory_mib": task.memory, "billed_secs": cost.billed_secs,
            "running": cost.running, "cost_usd": cost.cost_usd,
        }));
        by_session
            .entry(task.session_id.clone().unwrap_or_else(|| "?".into()))
            .or_default()
            .push(cost);
    }
    let all: Vec<costs::TaskCost> = by_session.values().flatten().cloned().collect();
    let total = costs::total(&all);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "region": aws.region, "tasks": rows, "total_usd": total,
            }))?
        );
        return Ok(0);
    }
    let usd = |figure: &crate::figure::Figure<f64>| match figure.value {
        Some(v) => format!("${v:.4}"),
        None => format!("null ({})", figure.reason.as_deref().unwrap_or("unknown")),
    };
    println!(
        "{:<28} {:>5} {:>10}  COST (region {})",
        "SESSION", "TASKS", "BILLED", aws.region
    );
    for (session, list) in &by_session {
        let secs: f64 = list.iter().map(|c| c.billed_secs).sum();
        println!(
            "{:<28} {:>5} {:>10}  {}{}",
            session,
            list.len(),
            crate::report::svg::duration(secs),
            usd(&costs::total(list)),
            if list.iter().any(|c| c.running) {
                "  (running: so far)"
            } else {
                ""
            }
        );
    }
    println!(
        "{:<28} {:>5} {:>10}  {}",
        "TOTAL",
        all.len(),
        "",
        usd(&total)
    );
    Ok(0)
}
