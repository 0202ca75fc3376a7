//! ECS Fargate tasks that run sessions: the task definition (registered once, reused while it
//! matches), one `RunTask` per session (FARGATE, or the FARGATE_SPOT capacity provider),
//! tagged for cost allocation, with the session's overrides as environment; listing, stopping
//! and the log stream of those tasks.
//!
//! A task's container runs `megatest run s3://…/config.source.toml --sync s3://…/<session>`,
//! or, replacing a task a Spot interruption stopped, `megatest resume s3://…/<session>`.

use super::matrix::SessionSpec;
use super::{Aws, AwsError};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, Compatibility,
    ContainerDefinition, ContainerOverride, KeyValuePair, LaunchType, LogConfiguration, LogDriver,
    NetworkConfiguration, NetworkMode, Tag, TaskOverride,
};

/// The task definition family.
pub const FAMILY: &str = "megatest";
/// The container's name.
pub const CONTAINER: &str = "megatest";
/// `startedBy` of every task megatest runs (how `status` finds them).
pub const STARTED_BY: &str = "megatest";
/// Seconds ECS waits between SIGTERM and SIGKILL: Fargate's maximum, so the final
/// checkpoint and sync fit.
pub const STOP_TIMEOUT_SECS: i32 = 120;
/// The log stream prefix (streams are `megatest/megatest/<task id>`).
pub const LOG_PREFIX: &str = "megatest";

/// Where sessions run: the CloudFormation stack's outputs and the task's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// The cluster.
    pub cluster: String,
    /// The image (`ImageUri`).
    pub image: String,
    /// Subnets of the tasks.
    pub subnets: Vec<String>,
    /// Security groups of the tasks.
    pub security_groups: Vec<String>,
    /// Execution role (pull the image, write logs).
    pub execution_role_arn: Option<String>,
    /// Task role (the bucket).
    pub task_role_arn: Option<String>,
    /// CloudWatch Logs group.
    pub log_group: String,
    /// CPU units (1024 = 1 vCPU).
    pub cpu: u32,
    /// Memory, MiB.
    pub memory: u32,
    /// Give tasks a public IP (subnets without NAT).
    pub assign_public_ip: bool,
    /// Variables the container gets from Secrets Manager or SSM Parameter Store: (name, ARN),
    /// e.g. the model provider's key (`OPENAI_API_KEY`); the execution role must read them.
    pub secrets: Vec<(String, String)>,
}

/// One session to start.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The session's id (also its S3 prefix's last segment).
    pub session_id: String,
    /// The sweep it belongs to.
    pub sweep: String,
    /// Its overrides.
    pub spec: SessionSpec,
    /// The container's arguments (after `megatest`).
    pub command: Vec<String>,
    /// On FARGATE_SPOT.
    pub spot: bool,
    /// The task this one replaces (after a Spot interruption).
    pub replaces: Option<String>,
}

/// A task as `DescribeTasks` tells it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskInfo {
    /// Its ARN.
    pub arn: String,
    /// Tag `megatest:session`.
    pub session_id: Option<String>,
    /// Tag `megatest:sweep`.
    pub sweep: Option<String>,
    /// Tag `megatest:label`.
    pub label: Option<String>,
    /// Tag `megatest:replaces`.
    pub replaces: Option<String>,
    /// PROVISIONING … RUNNING … STOPPED.
    pub last_status: String,
    /// Why it stopped (stop code).
    pub stop_code: Option<String>,
    /// Why it stopped (text).
    pub stopped_reason: Option<String>,
    /// CPU units.
    pub cpu: u32,
    /// Memory MiB.
    pub memory: u32,
    /// On FARGATE_SPOT.
    pub spot: bool,
    /// Unix seconds: created, image pull started, started, stopped.
    pub created_at: Option<f64>,
    /// Unix seconds the image pull started.
    pub pull_started_at: Option<f64>,
    /// Unix seconds it started.
    pub started_at: Option<f64>,
    /// Unix seconds it stopped.
    pub stopped_at: Option<f64>,
}

impl TaskInfo {
    /// Stopped by a Spot interruption (stop code `SpotInterruption`, or ECS's reason text).
    pub fn spot_interrupted(&self) -> bool {
        self.stop_code.as_deref() == Some("SpotInterruption")
            || self
                .stopped_reason
                .as_deref()
                .is_some_and(|r| r.to_ascii_lowercase().contains("spot task was interrupted"))
    }

    /// The task id (the ARN's last segment).
    pub fn id(&self) -> &str {
        self.arn.rsplit('/').next().unwrap_or(&self.arn)
    }
}

/// Whether Fargate runs a task of `cpu` units and `memory` MiB: the combinations of AWS's
/// "Task CPU and memory" table for Fargate (Linux). Errors: what would be allowed instead.
pub fn fargate_size(cpu: u32, memory: u32) -> Result<(), String> {
    let (low, high, step) = match cpu {
        256 => {
            return if [512, 1024, 2048].contains(&memory) {
                Ok(())
            } else {
                Err("--cpu 256 takes --memory 512, 1024 or 2048".into())
            }
        }
        512 => (1024, 4096, 1024),
        1024 => (2048, 8192, 1024),
        2048 => (4096, 16384, 1024),
        4096 => (8192, 30720, 1024),
        8192 => (16384, 61440, 4096),
        16384 => (32768, 122880, 8192),
        _ => {
            return Err(format!(
                "--cpu {cpu} is not a Fargate size: 256, 512, 1024, 2048, 4096, 8192 or 16384"
            ))
        }
    };
    if (low..=high).contains(&memory) && (memory - low) % step == 0 {
        Ok(())
    } else {
        Err(format!(
            "--cpu {cpu} takes --memory from {low} to {high} MiB in steps of {step}"
        ))
    }
}

/// The ARN of a task definition for `placement`: the family's latest revision when it has
/// this image, size, roles and log group, else a new revision.
/// Errors: the definition was rejected (the service's reason), an API error.
pub async fn task_definition(aws: &Aws, placement: &Placement) -> Result<String, AwsError> {
    if let Ok(latest) = aws
        .ecs
        .describe_task_definition()
        .task_definition(FAMILY)
        .send()
        .await
    {
        if let Some(def) = latest.task_definition() {
            let container = def.container_definitions().first();
            let same = def.cpu() == Some(placement.cpu.to_string().as_str())
                && def.memory() == Some(placement.memory.to_string().as_str())
                && def.execution_role_arn() == placement.execution_role_arn.as_deref()
                && def.task_role_arn() == placement.task_role_arn.as_deref()
                && container.and_then(|c| c.image()) == Some(placement.image.as_str())
                && container.map(|c| {
                    c.secrets()
                        .iter()
                        .map(|s| (s.name().to_string(), s.value_from().to_string()))
                        .collect::<Vec<_>>()
                }) == Some(placement.secrets.clone())
                && container
                    .and_then(|c| c.log_configuration())
                    .and_then(|l| l.options())
                    .and_then(|o| o.get("awslogs-group"))
                    == Some(&placement.log_group);
            if same {
                if let Some(arn) = def.task_definition_arn() {
                    return Ok(arn.to_string());
                }
            }
        }
    }
    let logs = LogConfiguration::builder()
        .log_driver(LogDriver::Awslogs)
        .options("awslogs-group", &placement.log_group)
        .options("awslogs-region", &aws.region)
        .options("awslogs-stream-prefix", LOG_PREFIX)
        .build()
        .map_err(|e| AwsError::Io(e.to_string()))?;
    let container = ContainerDefinition::builder()
        .name(CONTAINER)
        .image(&placement.image)
        .essential(true)
        .memory(placement.memory as i32)
        .stop_timeout(STOP_TIMEOUT_SECS)
        .log_configuration(logs)
        .set_secrets(Some(
            placement
                .secrets
                .iter()
                .map(|(name, from)| {
                    aws_sdk_ecs::types::Secret::builder()
                        .name(name)
                        .value_from(from)
                        .build()
                        .map_err(|e| AwsError::Io(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ))
        .environment(
            KeyValuePair::builder()
                .name("MEGATEST_RUNS_DIR")
                .value("/opt/megatest/test_runs")
                .build(),
        )
        .build();
    let registered = aws
        .ecs
        .register_task_definition()
        .family(FAMILY)
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu(placement.cpu.to_string())
        .memory(placement.memory.to_string())
        .set_execution_role_arn(placement.execution_role_arn.clone())
        .set_task_role_arn(placement.task_role_arn.clone())
        .container_definitions(container)
        .tags(Tag::builder().key("megatest:managed").value("true").build())
        .send()
        .await
        .map_err(|err| match AwsError::api("ecs:RegisterTaskDefinition", &err) {
            AwsError::Api { message, .. } => AwsError::Api {
                operation: "ecs:RegisterTaskDefinition",
                message: format!(
                    "the task definition was rejected: {message} (check --image, --cpu/--memory, --execution-role-arn and --task-role-arn)"
                ),
            },
            other => other,
        })?;
    registered
        .task_definition()
        .and_then(|d| d.task_definition_arn())
        .map(str::to_string)
        .ok_or_else(|| AwsError::Api {
            operation: "ecs:RegisterTaskDefinition",
            message: "no task definition ARN in the answer".into(),
        })
}

/// The environment a session's container gets.
pub fn environment(launch: &Launch, sync_url: &str) -> Vec<(String, String)> {
    let mut env = launch.spec.environment();
    env.push(("MEGATEST_SESSION_ID".into(), launch.session_id.clone()));
    env.push(("MEGATEST_SYNC".into(), sync_url.to_string()));
    env.push(("MEGATEST_API_ADDR".into(), "127.0.0.1:0".into()));
    env
}

/// Run one task for `launch`. Errors: the service's failure reason, an API error.
pub async fn run_task(
    aws: &Aws,
    placement: &Placement,
    task_definition: &str,
    launch: &Launch,
    sync_url: &str,
) -> Result<String, AwsError> {
    let mut tags = vec![
        ("megatest:session", launch.session_id.clone()),
        ("megatest:sweep", launch.sweep.clone()),
        ("megatest:label", launch.spec.label()),
        (
            "megatest:market",
            if launch.spot { "spot" } else { "on-demand" }.to_string(),
        ),
    ];
    if let Some(replaced) = &launch.replaces {
        tags.push(("megatest:replaces", replaced.clone()));
    }
    let overrides = TaskOverride::builder()
        .container_overrides(
            ContainerOverride::builder()
                .name(CONTAINER)
                .set_command(Some(launch.command.clone()))
                .set_environment(Some(
                    environment(launch, sync_url)
                        .into_iter()
                        .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
                        .collect(),
                ))
                .build(),
        )
        .build();
    let network = NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .set_subnets(Some(placement.subnets.clone()))
                .set_security_groups(Some(placement.security_groups.clone()))
                .assign_public_ip(if placement.assign_public_ip {
                    AssignPublicIp::Enabled
                } else {
                    AssignPublicIp::Disabled
                })
                .build()
                .map_err(|e| AwsError::Io(e.to_string()))?,
        )
        .build();
    let mut request = aws
        .ecs
        .run_task()
        .cluster(&placement.cluster)
        .task_definition(task_definition)
        .count(1)
        .started_by(STARTED_BY)
        .network_configuration(network)
        .overrides(overrides)
        .enable_ecs_managed_tags(true)
        .set_tags(Some(
            tags.into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ));
    request = if launch.spot {
        request.capacity_provider_strategy(
            CapacityProviderStrategyItem::builder()
                .capacity_provider("FARGATE_SPOT")
                .weight(1)
                .build()
                .map_err(|e| AwsError::Io(e.to_string()))?,
        )
    } else {
        request.launch_type(LaunchType::Fargate)
    };
    let answer = request.send().await.map_err(|err| {
        if AwsError::code(&err).as_deref() == Some("ClusterNotFoundException") {
            AwsError::Api {
                operation: "ecs:RunTask",
                message: format!(
                    "no cluster {:?}: check --cluster / MEGATEST_ECS_CLUSTER (the stack's ClusterName output)",
                    placement.cluster
                ),
            }
        } else {
            AwsError::api("ecs:RunTask", &err)
        }
    })?;
    if let Some(failure) = answer.failures().first() {
        return Err(AwsError::Api {
            operation: "ecs:RunTask",
            message: format!(
                "{}: {}",
                failure.reason().unwrap_or("failure"),
                failure.detail().unwrap_or("")
            ),
        });
    }
    answer
        .tasks()
        .first()
        .and_then(|t| t.task_arn())
        .map(str::to_string)
        .ok_or_else(|| AwsError::Api {
            operation: "ecs:RunTask",
            message: "no task in the answer".into(),
        })
}

fn seconds(at: Option<&aws_sdk_ecs::primitives::DateTime>) -> Option<f64> {
    at.map(|t| t.as_secs_f64())
}

/// Every task megatest started in `cluster` (running and recently stopped: ECS keeps stopped
/// tasks about an hour), oldest first.
pub async fn list(aws: &Aws, cluster: &str) -> Result<Vec<TaskInfo>, AwsError> {
    let mut arns = Vec::new();
    for status in [
        aws_sdk_ecs::types::DesiredStatus::Running,
        aws_sdk_ecs::types::DesiredStatus::Stopped,
    ] {
        let mut pages = aws
            .ecs
            .list_tasks()
            .cluster(cluster)
            .started_by(STARTED_BY)
            .desired_status(status)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| AwsError::api("ecs:ListTasks", &err))?;
            arns.extend(page.task_arns().iter().cloned());
        }
    }
    arns.sort();
    arns.dedup();
    let mut tasks = Vec::new();
    // Size from the task definition when the task does not report it (moto).
    let mut sizes: std::collections::HashMap<String, (u32, u32)> = Default::default();
    for chunk in arns.chunks(100) {
        let described = aws
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(chunk.to_vec()))
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await
            .map_err(|err| AwsError::api("ecs:DescribeTasks", &err))?;
        for task in described.tasks() {
            let tag = |key: &str| {
                task.tags()
                    .iter()
                    .find(|t| t.key() == Some(key))
                    .and_then(|t| t.value())
                    .map(str::to_string)
            };
            let mut size = (
                task.cpu().and_then(|c| c.parse().ok()).unwrap_or(0),
                task.memory().and_then(|m| m.parse().ok()).unwrap_or(0),
            );
            if size.0 == 0 || size.1 == 0 {
                if let Some(def) = task.task_definition_arn() {
                    if !sizes.contains_key(def) {
                        let described = aws
                            .ecs
                            .describe_task_definition()
                            .task_definition(def)
                            .send()
                            .await
                            .map_err(|err| AwsError::api("ecs:DescribeTaskDefinition", &err))?;
                        let d = described.task_definition();
                        let of = |v: Option<&str>| v.and_then(|v| v.parse().ok()).unwrap_or(0);
                        sizes.insert(
                            def.to_string(),
                            (of(d.and_then(|d| d.cpu())), of(d.and_then(|d| d.memory()))),
                        );
                    }
                    size = sizes[def];
                }
            }
            tasks.push(TaskInfo {
                arn: task.task_arn().unwrap_or_default().to_string(),
                session_id: tag("megatest:session"),
                sweep: tag("megatest:sweep"),
                label: tag("megatest:label"),
                replaces: tag("megatest:replaces"),
                last_status: task.last_status().unwrap_or("UNKNOWN").to_string(),
                stop_code: task.stop_code().map(|c| c.as_str().to_string()),
                stopped_reason: task
                    .stopped_reason()
                    .filter(|r| !r.is_empty())
                    .map(str::to_string),
                cpu: size.0,
                memory: size.1,
                spot: task.capacity_provider_name() == Some("FARGATE_SPOT")
                    || tag("megatest:market").as_deref() == Some("spot"),
                created_at: seconds(task.created_at()),
                pull_started_at: seconds(task.pull_started_at()),
                started_at: seconds(task.started_at()),
                stopped_at: seconds(task.stopped_at()),
            });
        }
    }
    tasks.sort_by(|a, b| {
        a.created_at
            .unwrap_or(0.0)
            .total_cmp(&b.created_at.unwrap_or(0.0))
    });
    Ok(tasks)
}

/// The container's arguments and environment of a task, as its overrides set them (moto runs
/// no container: tests start the container side themselves from this).
pub async fn container_of(
    aws: &Aws,
    cluster: &str,
    arn: &str,
) -> Result<(Vec<String>, Vec<(String, String)>), AwsError> {
    let described = aws
        .ecs
        .describe_tasks()
        .cluster(cluster)
        .tasks(arn)
        .send()
        .await
        .map_err(|err| AwsError::api("ecs:DescribeTasks", &err))?;
    let container = described
        .tasks()
        .first()
        .and_then(|t| t.overrides())
        .and_then(|o| o.container_overrides().first());
    let command = container.map(|c| c.command().to_vec()).unwrap_or_default();
    let env = container
        .map(|c| {
            c.environment()
                .iter()
                .filter_map(|kv| Some((kv.name()?.to_string(), kv.value()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok((command, env))
}

/// Stop a task (its container gets SIGTERM, then SIGKILL after [`STOP_TIMEOUT_SECS`]).
pub async fn stop(aws: &Aws, cluster: &str, arn: &str, reason: &str) -> Result<(), AwsError> {
    aws.ecs
        .stop_task()
        .cluster(cluster)
        .task(arn)
        .reason(reason)
        .send()
        .await
        .map_err(|err| AwsError::api("ecs:StopTask", &err))?;
    Ok(())
}

/// The task's log lines so far after `token` (its CloudWatch Logs stream
/// `megatest/megatest/<task id>`); returns the lines and the token to go on from.
pub async fn log_lines(
    aws: &Aws,
    log_group: &str,
    task: &TaskInfo,
    token: Option<String>,
) -> Result<(Vec<String>, Option<String>), AwsError> {
    let stream = format!("{LOG_PREFIX}/{CONTAINER}/{}", task.id());
    let answer = match aws
        .logs
        .get_log_events()
        .log_group_name(log_group)
        .log_stream_name(&stream)
        .start_from_head(true)
        .set_next_token(token.clone())
        .send()
        .await
    {
        Ok(answer) => answer,
        // No stream yet: the container has not written (or not started).
        Err(err) if AwsError::code(&err).as_deref() == Some("ResourceNotFoundException") => {
            return Ok((Vec::new(), token))
        }
        Err(err) => return Err(AwsError::api("logs:GetLogEvents", &err)),
    };
    let lines = answer
        .events()
        .iter()
        .filter_map(|e| e.message().map(str::to_string))
        .collect();
    Ok((
        lines,
        answer.next_forward_token().map(str::to_string).or(token),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fargate_sizes_follow_the_table_and_spot_interruptions_are_recognised() {
        assert!(fargate_size(2048, 8192).is_ok());
        assert!(fargate_size(256, 512).is_ok());
        assert!(fargate_size(8192, 20480).is_ok());
        assert!(fargate_size(2048, 2048)
            .unwrap_err()
            .contains("4096 to 16384"));
        assert!(fargate_size(8192, 18432).is_err());
        assert!(fargate_size(3000, 8192)
            .unwrap_err()
            .contains("not a Fargate size"));
        let mut task = TaskInfo {
            arn: "arn:aws:ecs:us-east-1:1:task/mt/abc".into(),
            session_id: None,
            sweep: None,
            label: None,
            replaces: None,
            last_status: "STOPPED".into(),
            stop_code: None,
            stopped_reason: Some("Your Spot Task was interrupted.".into()),
            cpu: 0,
            memory: 0,
            spot: true,
            created_at: None,
            pull_started_at: None,
            started_at: None,
            stopped_at: None,
        };
        assert!(task.spot_interrupted());
        assert_eq!(task.id(), "abc");
        task.stopped_reason = Some("megatest ecs stop".into());
        assert!(!task.spot_interrupted());
        task.stop_code = Some("SpotInterruption".into());
        assert!(task.spot_interrupted());
    }
}
