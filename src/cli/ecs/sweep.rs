//! A sweep of ECS sessions: `megatest ecs launch` records it (`<runs>/ecs/<sweep>.json`, and
//! beside the sessions in S3) and starts its tasks; `megatest ecs watch` (or `launch --watch`)
//! starts queued sessions as others end and replaces a task stopped by a Spot interruption with
//! one that resumes its session from S3.

use super::{connect, LaunchArgs, WatchArgs};
use crate::backend::ecs::matrix::{self, SessionSpec};
use crate::backend::ecs::sync::{self, S3Url};
use crate::backend::ecs::tasks::{self, Launch, Placement};
use crate::backend::ecs::Aws;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One session of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SweepSession {
    session_id: String,
    label: String,
    environment: Vec<(String, String)>,
    /// Task ARNs, oldest first (more than one after Spot interruptions).
    tasks: Vec<String>,
    /// `queued`, `running`, `finished`.
    state: String,
    interruptions: u32,
    stopped_reason: Option<String>,
}

/// A sweep as `launch` recorded it (`<runs>/ecs/<sweep>.json`, and in S3 beside the sessions).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sweep {
    sweep: String,
    cluster: String,
    bucket: String,
    prefix: String,
    task_definition: String,
    subnets: Vec<String>,
    security_groups: Vec<String>,
    assign_public_ip: bool,
    spot: bool,
    max_parallel: u32,
    sessions: Vec<SweepSession>,
}

impl Sweep {
    fn path(runs_dir: &Path, sweep: &str) -> PathBuf {
        runs_dir.join("ecs").join(format!("{sweep}.json"))
    }

    fn save(&self, runs_dir: &Path) -> Result<()> {
        let path = Sweep::path(runs_dir, &self.sweep);
        std::fs::create_dir_all(path.parent().unwrap_or(runs_dir))?;
        crate::fsutil::write_json_atomic(&path, self)?;
        Ok(())
    }

    fn sync_url(&self, session_id: &str) -> S3Url {
        S3Url {
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
        }
        .child(session_id)
    }

    /// What `run_task` reads of a placement: the cluster and the network. The image, size,
    /// roles, logs and secrets are the registered task definition's (`task_definition`).
    fn placement(&self) -> Placement {
        Placement {
            cluster: self.cluster.clone(),
            image: String::new(),
            subnets: self.subnets.clone(),
            security_groups: self.security_groups.clone(),
            execution_role_arn: None,
            task_role_arn: None,
            log_group: String::new(),
            cpu: 0,
            memory: 0,
            assign_public_ip: self.assign_public_ip,
            secrets: Vec::new(),
        }
    }

    /// Undo a launch that failed part-way, so nothing is left half-launched: stop the tasks it
    /// started, delete the configs it uploaded (the first `uploaded` sessions') and its local
    /// record. Best effort: the launch's own error is what gets reported.
    async fn undo(&self, aws: &Aws, uploaded: usize, runs_dir: &Path) {
        for arn in self.sessions.iter().flat_map(|s| s.tasks.iter()) {
            if let Err(err) =
                tasks::stop(aws, &self.cluster, arn, "megatest ecs launch failed").await
            {
                eprintln!("megatest: could not stop {arn}: {err}");
            }
        }
        for session in &self.sessions[..uploaded] {
            let url = self.sync_url(&session.session_id);
            if let Err(err) = sync::remove(aws, &url, sync::SOURCE_CONFIG).await {
                eprintln!(
                    "megatest: could not delete {url}/{}: {err}",
                    sync::SOURCE_CONFIG
                );
            }
        }
        let _ = std::fs::remove_file(Sweep::path(runs_dir, &self.sweep));
    }

    /// Start session `i`: its first task runs the config, a replacement resumes from S3.
    async fn start(&mut self, aws: &Aws, i: usize, replaces: Option<String>) -> Result<String> {
        let session = &self.sessions[i];
        let url = self.sync_url(&session.session_id);
        let command: Vec<String> = match &replaces {
            None => vec![
                "run".into(),
                format!("{url}/{}", sync::SOURCE_CONFIG),
                "--sync".into(),
                url.to_string(),
            ],
            Some(_) => vec!["resume".into(), url.to_string()],
        };
        let spec = spec_of(&session.environment);
        let launch = Launch {
            session_id: session.session_id.clone(),
            sweep: self.sweep.clone(),
            spec,
            command,
            spot: self.spot,
            replaces,
        };
        let arn = tasks::run_task(
            aws,
            &self.placement(),
            &self.task_definition,
            &launch,
            &url.to_string(),
        )
        .await?;
        let session = &mut self.sessions[i];
        session.tasks.push(arn.clone());
        session.state = "running".into();
        Ok(arn)
    }
}

fn spec_of(environment: &[(String, String)]) -> SessionSpec {
    let get = |name: &str| {
        environment
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    SessionSpec {
        project: get("MEGATEST_PROJECT"),
        agents: get("MEGATEST_AGENTS").and_then(|v| v.parse().ok()),
        hours: get("MEGATEST_HOURS").and_then(|v| v.parse().ok()),
        provider: get("MEGATEST_PROVIDER"),
        time_scale: get("MEGATEST_TIME_SCALE").and_then(|v| v.parse().ok()),
        model: get("MEGATEST_MODEL"),
    }
}

fn new_sweep_id() -> String {
    format!(
        "sw-{}-{:04x}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        fastrand::u16(..)
    )
}

pub(super) async fn launch(args: LaunchArgs) -> Result<i32> {
    let overrides = args.overrides.overrides();
    if let Err(err) = crate::config::load(&args.config, &overrides) {
        eprintln!("megatest: invalid config:\n{err}");
        return Ok(2);
    }
    let base = SessionSpec {
        project: overrides.project.clone(),
        agents: overrides.agents,
        hours: overrides.hours,
        provider: overrides.provider.map(|p| p.as_str().to_string()),
        time_scale: overrides.time_scale,
        model: overrides.model.clone(),
    };
    let specs: Vec<SessionSpec> = match &args.matrix {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            match matrix::parse(&text) {
                Ok(specs) => specs.iter().map(|s| s.or(&base)).collect(),
                Err(err) => {
                    eprintln!("megatest: {}: {err}", path.display());
                    return Ok(2);
                }
            }
        }
        None => vec![base; args.count.max(1) as usize],
    };
    if let Err(err) = tasks::fargate_size(args.cpu, args.memory) {
        eprintln!("megatest: {err}");
        return Ok(2);
    }
    if args.max_parallel == 0 {
        eprintln!("megatest: --max-parallel must be at least 1");
        return Ok(2);
    }
    let placement = Placement {
        cluster: args.stack.cluster.clone(),
        image: args.image.clone(),
        subnets: args.subnets.clone(),
        security_groups: args.security_groups.clone(),
        execution_role_arn: args.execution_role_arn.clone(),
        task_role_arn: args.task_role_arn.clone(),
        log_group: args.log_group.clone(),
        cpu: args.cpu,
        memory: args.memory,
        assign_public_ip: args.assign_public_ip,
        secrets: args
            .secrets
            .iter()
            .map(|s| {
                s.split_once('=')
                    .map(|(name, from)| (name.trim().to_string(), from.trim().to_string()))
                    .filter(|(name, from)| !name.is_empty() && !from.is_empty())
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default(),
    };
    if placement.secrets.len() != args.secrets.len() {
        eprintln!(
            "megatest: --secret takes NAME=ARN, e.g. OPENAI_API_KEY=arn:aws:secretsmanager:…"
        );
        return Ok(2);
    }
    let aws = connect(&args.stack).await?;
    // Rejected here, nothing is uploaded or started.
    let task_definition = tasks::task_definition(&aws, &placement).await?;
    let sweep_id = new_sweep_id();
    let config_bytes =
        std::fs::read(&args.config).with_context(|| format!("read {}", args.config.display()))?;
    let mut sweep = Sweep {
        sweep: sweep_id.clone(),
        cluster: args.stack.cluster.clone(),
        bucket: args.stack.bucket.clone(),
        prefix: args.stack.prefix.trim_matches('/').to_string(),
        task_definition,
        subnets: args.subnets.clone(),
        security_groups: args.security_groups.clone(),
        assign_public_ip: args.assign_public_ip,
        spot: args.spot,
        max_parallel: args.max_parallel,
        sessions: specs
            .iter()
            .enumerate()
            .map(|(i, spec)| SweepSession {
                session_id: format!("{sweep_id}-{:02}", i + 1),
                label: spec.label(),
                environment: spec.environment(),
                tasks: vec![],
                state: "queued".into(),
                interruptions: 0,
                stopped_reason: None,
            })
            .collect(),
    };
    let mut uploaded = 0;
    let first = sweep.sessions.len().min(args.max_parallel as usize);
    let launched: Result<()> = async {
        for session in &sweep.sessions {
            let url = sweep.sync_url(&session.session_id);
            sync::write(&aws, &url, sync::SOURCE_CONFIG, config_bytes.clone()).await?;
            uploaded += 1;
        }
        sweep.save(&args.runs_dir)?;
        for i in 0..first {
            sweep.start(&aws, i, None).await?;
        }
        Ok(())
    }
    .await;
    if let Err(err) = launched {
        sweep.undo(&aws, uploaded, &args.runs_dir).await;
        return Err(err);
    }
    sweep.save(&args.runs_dir)?;
    upload_sweep(&aws, &sweep).await?;
    println!("sweep {sweep_id}: {} sessions", sweep.sessions.len());
    for s in &sweep.sessions {
        println!(
            "  {}  {:<28} {}",
            s.session_id,
            s.label,
            s.tasks.last().map_or("queued", String::as_str)
        );
    }
    let queued = sweep.sessions.iter().any(|s| s.state == "queued");
    if queued || args.watch {
        return watch(&aws, &mut sweep, &args.runs_dir, args.interval, args.watch).await;
    }
    println!("follow it: megatest ecs watch {sweep_id}   (replaces Spot-interrupted tasks)");
    Ok(0)
}

async fn upload_sweep(aws: &Aws, sweep: &Sweep) -> Result<()> {
    let url = S3Url {
        bucket: sweep.bucket.clone(),
        prefix: sweep.prefix.clone(),
    }
    .child("sweeps");
    sync::write(
        aws,
        &url,
        &format!("{}.json", sweep.sweep),
        serde_json::to_vec_pretty(sweep)?,
    )
    .await?;
    Ok(())
}

pub(super) async fn watch_verb(args: WatchArgs) -> Result<i32> {
    let path = Sweep::path(&args.runs_dir, &args.sweep);
    let mut sweep: Sweep = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("read {}", path.display()))?
        }
        Err(_) => {
            eprintln!(
                "megatest: no sweep {} in {} (launch records it there)",
                args.sweep,
                path.display()
            );
            return Ok(2);
        }
    };
    let aws = connect(&args.stack).await?;
    watch(&aws, &mut sweep, &args.runs_dir, args.interval, true).await
}

/// Look at the sweep's tasks every `interval` wall seconds: replace Spot-interrupted ones,
/// start queued sessions while fewer than `max_parallel` run. Returns once nothing is queued
/// (and, with `until_done`, nothing runs).
async fn watch(
    aws: &Aws,
    sweep: &mut Sweep,
    runs_dir: &Path,
    interval: f64,
    until_done: bool,
) -> Result<i32> {
    loop {
        let listed = tasks::list(aws, &sweep.cluster).await?;
        let mut running = 0usize;
        for i in 0..sweep.sessions.len() {
            let session = &sweep.sessions[i];
            if session.state != "running" {
                continue;
            }
            let Some(last) = session.tasks.last().cloned() else {
                continue;
            };
            let Some(info) = listed.iter().find(|t| t.arn == last).cloned() else {
                running += 1; // not listed yet
                continue;
            };
            if info.last_status != "STOPPED" {
                running += 1;
                continue;
            }
            if info.spot_interrupted() {
                sweep.sessions[i].interruptions += 1;
                let arn = sweep.start(aws, i, Some(last.clone())).await?;
                println!(
                    "{}: Spot interruption of {}; replacement {arn} resumes it from {}",
                    sweep.sessions[i].session_id,
                    info.id(),
                    sweep.sync_url(&sweep.sessions[i].session_id)
                );
                running += 1;
            } else {
                let session = &mut sweep.sessions[i];
                session.state = "finished".into();
                session.stopped_reason = info.stopped_reason.clone();
                println!(
                    "{}: task {} stopped ({})",
                    session.session_id,
                    info.id(),
                    info.stopped_reason.as_deref().unwrap_or("no reason given")
                );
            }
        }
        for i in 0..sweep.sessions.len() {
            if running >= sweep.max_parallel as usize {
                break;
            }
            if sweep.sessions[i].state == "queued" {
                let arn = sweep.start(aws, i, None).await?;
                println!("{}: started {arn}", sweep.sessions[i].session_id);
                running += 1;
            }
        }
        sweep.save(runs_dir)?;
        upload_sweep(aws, sweep).await?;
        let queued = sweep.sessions.iter().any(|s| s.state == "queued");
        if !queued && (!until_done || running == 0) {
            if running == 0 {
                println!("sweep {}: every session finished", sweep.sweep);
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs_f64(interval.max(0.1))).await;
    }
}
