//! Sessions beyond one machine, against moto (PyPI `moto[server]`, a local AWS-compatible
//! server on a loopback port): S3 sync of a real session and its resumption from S3 in a fresh
//! directory; ECS launches, status, stop and costs. moto runs no containers: the "container"
//! side runs as a local process with the environment the task definition sets.

use crate::support::*;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// A moto server on a free loopback port, stopped on drop.
pub(crate) struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    python: std::path::PathBuf,
}

impl Moto {
    pub(crate) fn start() -> Moto {
        let python = python_venv("moto-venv", &["moto[server]==5.2.5"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python.parent().unwrap().join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        assert!(
            wait_for(Duration::from_secs(30), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "moto_server did not start"
        );
        Moto { child, url, python }
    }

    /// The AWS variables that point a client at this server.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// Run `code` in Python with boto3 pointed at this server as `s3`, `ecs` and `logs`;
    /// returns its stdout.
    pub(crate) fn boto(&self, code: &str) -> String {
        let prelude = format!(
            "import boto3, json\nkw = dict(endpoint_url={:?}, region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing')\ns3 = boto3.client('s3', **kw)\necs = boto3.client('ecs', **kw)\nlogs = boto3.client('logs', **kw)\nec2 = boto3.client('ec2', **kw)\n",
            self.url
        );
        let output = Command::new(&self.python)
            .arg("-c")
            .arg(format!("{prelude}{code}"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Keys under `prefix` in `bucket`.
    pub(crate) fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.boto(&format!(
            "keys = [o['Key'] for p in s3.get_paginator('list_objects_v2').paginate(Bucket={bucket:?}, Prefix={prefix:?}) for o in p.get('Contents', [])]\nprint(json.dumps(keys))"
        ));
        serde_json::from_str(out.trim()).unwrap()
    }

    /// The text of one object.
    pub(crate) fn text(&self, bucket: &str, key: &str) -> String {
        self.boto(&format!(
            "print(s3.get_object(Bucket={bucket:?}, Key={key:?})['Body'].read().decode(), end='')"
        ))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `megatest` with `env` set and the host's AWS settings removed.
pub(crate) fn aws_megatest(env: &[(&'static str, String)], home: &Path) -> Command {
    let mut command = megatest();
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command.env("HOME", home);
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

#[test]
fn a_synced_session_resumes_from_s3_in_a_fresh_directory_and_completes() {
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='mt-sessions')");
    let dir = tempfile::tempdir().unwrap();
    let env = moto.env();
    let first_runs = dir.path().join("machine-a");
    let url = "s3://mt-sessions/sessions/s1";
    let mut child = aws_megatest(&env, dir.path())
        .arg("run")
        .arg(fixture_config())
        .args(["--provider", "sim", "--hours", "1", "--time-scale", "60"])
        .args([
            "--agents",
            "4",
            "--session-id",
            "s1",
            "--sync",
            url,
            "--runs-dir",
        ])
        .arg(&first_runs)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("a.txt")).unwrap())
        .spawn()
        .unwrap();
    // Interrupt it once its first checkpoint was pushed (as ECS does to a Spot task: SIGTERM).
    assert!(
        wait_for(Duration::from_secs(120), || !moto
            .keys("mt-sessions", "sessions/s1/checkpoints/checkpoint_")
            .is_empty()),
        "no checkpoint reached S3: {}",
        std::fs::read_to_string(dir.path().join("a.txt")).unwrap_or_default()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    // What S3 holds: the end's status last, a consistent database, checkpoints and their
    // objects, the config it ran; no secrets, no workspace, no live database files.
    let keys = moto.keys("mt-sessions", "sessions/s1/");
    assert_eq!(
        moto.text("mt-sessions", "sessions/s1/status"),
        "interrupted\n"
    );
    for wanted in [
        "sessions/s1/session.db",
        "sessions/s1/final_report.json",
        "sessions/s1/report.html",
        "sessions/s1/config.source.toml",
        "sessions/s1/session.log",
    ] {
        assert!(
            keys.iter().any(|k| k == wanted),
            "{wanted} missing: {keys:?}"
        );
    }
    assert!(keys
        .iter()
        .any(|k| k.starts_with("sessions/s1/checkpoints/objects/")));
    for secret in [
        "api.token",
        "agents.toml",
        "session.db-wal",
        "project/",
        ".disk_reserve",
    ] {
        assert!(
            !keys.iter().any(|k| k.contains(secret)),
            "{secret} was pushed: {keys:?}"
        );
    }
    // Another machine: resume from S3 into an empty runs directory; the session completes
    // there and goes on syncing to the same place.
    let second_runs = dir.path().join("machine-b");
    let output = aws_megatest(&env, dir.path())
        .args(["resume", url, "--runs-dir"])
        .arg(&second_runs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(matches!(output.status.code(), Some(0 | 1)), "{stderr}");
    assert!(
        stderr.contains("pulled") && stderr.contains("workspace from checkpoint"),
        "{stderr}"
    );
    let session = second_runs.join("s1");
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "complete", "{stderr}");
    assert_eq!(report["interruptions"]["resumed"], 1);
    assert!(
        report["interruptions"]["downtime_wall_secs"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(session.join("project").read_dir().unwrap().next().is_some());
    assert_eq!(moto.text("mt-sessions", "sessions/s1/status"), "complete\n");
    // Its checkpoints are recorded under this machine's directory.
    let outside = scalar(
        &session,
        "SELECT COUNT(*) FROM checkpoints WHERE substr(path, 1, length(?1)) != ?1",
        &[session.canonicalize().unwrap().to_str().unwrap()],
    );
    assert_eq!(outside, 0);
    // Resuming it again from S3 over the local copy is refused, naming what to do.
    let again = aws_megatest(&env, dir.path())
        .args(["resume", url, "--runs-dir"])
        .arg(&second_runs)
        .output()
        .unwrap();
    assert_exit(&again, 2);
}

#[test]
fn sync_locations_that_cannot_work_are_refused_before_anything_is_written() {
    let moto = Moto::start();
    moto.boto("s3.create_bucket(Bucket='mt-sessions')");
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let quickstart = root().join("configs/quickstart.toml");
    let attempt = |env: &[(&'static str, String)], url: &str| {
        let output = aws_megatest(env, dir.path())
            .arg("run")
            .arg(&quickstart)
            .args(["--sync", url, "--runs-dir"])
            .arg(&runs)
            .output()
            .unwrap();
        assert_exit(&output, 2);
        assert_no_session(&runs);
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let env = moto.env();
    let no_credentials: Vec<_> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .cloned()
        .collect();
    assert!(attempt(&no_credentials, "s3://mt-sessions/x").contains("no AWS credentials"));
    assert!(attempt(&env, "s3://no-such-bucket/x").contains("\"no-such-bucket\" does not exist"));
    assert!(attempt(&env, "https://mt-sessions/x").contains("is not an S3 location"));
    let no_region: Vec<_> = env
        .iter()
        .filter(|(k, _)| *k != "AWS_REGION")
        .cloned()
        .collect();
    assert!(attempt(&no_region, "s3://mt-sessions/x").contains("no AWS region"));
}

/// The stack's outputs as `megatest ecs` reads them, for a moto "account" prepared like the
/// CloudFormation template would: cluster, bucket, log group, the default VPC's subnets and
/// security group. Tasks stay RUNNING until stopped (moto's time-based progression).
fn stack(moto: &Moto) -> Vec<(&'static str, String)> {
    let out = moto.boto(
        "ecs.create_cluster(clusterName='mt')\n\
         s3.create_bucket(Bucket='mt-sessions')\n\
         logs.create_log_group(logGroupName='/megatest/mt')\n\
         subnets = [s['SubnetId'] for s in ec2.describe_subnets()['Subnets']][:2]\n\
         sg = ec2.describe_security_groups()['SecurityGroups'][0]['GroupId']\n\
         import urllib.request\n\
         urllib.request.urlopen(urllib.request.Request(kw['endpoint_url'] + '/moto-api/state-manager/set-transition', data=json.dumps({'model_name': 'ecs::task', 'transition': {'progression': 'time', 'seconds': 3600}}).encode(), method='POST'))\n\
         print(','.join(subnets)); print(sg)",
    );
    let mut lines = out.lines();
    let subnets = lines.next().unwrap().to_string();
    let sg = lines.next().unwrap().to_string();
    let mut env = moto.env();
    env.extend([
        ("MEGATEST_ECS_CLUSTER", "mt".to_string()),
        ("MEGATEST_ECS_BUCKET", "mt-sessions".to_string()),
        ("MEGATEST_ECS_IMAGE", "megatest:test".to_string()),
        ("MEGATEST_ECS_LOG_GROUP", "/megatest/mt".to_string()),
        ("MEGATEST_ECS_SUBNETS", subnets),
        ("MEGATEST_ECS_SECURITY_GROUPS", sg),
    ]);
    env
}

/// The command and environment moto recorded for `task`'s container.
fn container(moto: &Moto, task: &str) -> (Vec<String>, Vec<(String, String)>) {
    let out = moto.boto(&format!(
        "t = ecs.describe_tasks(cluster='mt', tasks=[{task:?}])['tasks'][0]['overrides']['containerOverrides'][0]\n\
         print(json.dumps([t['command'], [[e['name'], e['value']] for e in t['environment']]]))"
    ));
    let value: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let command = value[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let env = value[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (command, env)
}

/// Start the "container" of a task as a local process: `megatest <command>` with the task's
/// environment (and moto's AWS variables, which a task role gives in ECS).
fn run_container(
    moto: &Moto,
    task: &str,
    home: &Path,
    runs: &Path,
    log: &Path,
) -> (Child, Vec<String>) {
    let (command, env) = container(moto, task);
    let mut process = aws_megatest(&moto.env(), home);
    for (k, v) in &env {
        process.env(k, v);
    }
    let child = process
        .env("MEGATEST_RUNS_DIR", runs)
        .args(&command)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    (child, command)
}

fn ecs_cli(env: &[(&'static str, String)], home: &Path, args: &[&str]) -> std::process::Output {
    aws_megatest(env, home)
        .arg("ecs")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_ecs_sweep_launches_survives_a_spot_interruption_and_is_collected() {
    let moto = Moto::start();
    let env = stack(&moto);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let runs = dir.path().join("runs");
    let matrix = dir.path().join("matrix.toml");
    std::fs::write(
        &matrix,
        "[matrix]\nproject = [\"task_queue\", \"database\"]\nagents = [4]\nhours = [1]\nprovider = [\"sim\"]\ntime_scale = [60.0]\n",
    )
    .unwrap();
    let config = root().join("configs/mega_test_config.toml");
    let output = aws_megatest(&env, home)
        .args(["ecs", "launch"])
        .arg(&config)
        .arg("--matrix")
        .arg(&matrix)
        .args(["--spot", "--max-parallel", "4"])
        .args([
            "--secret",
            "OPENAI_API_KEY=arn:aws:secretsmanager:us-east-1:123456789012:secret:provider-key",
            "--runs-dir",
        ])
        .arg(&runs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sweep = stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    assert!(
        stdout.contains("task_queue-4a-1h-sim-x60") && stdout.contains("database-4a-1h-sim-x60"),
        "{stdout}"
    );
    // The task definition: Fargate, awsvpc, the longest stop timeout, logs to the group.
    let definition = moto.boto(
        "d = ecs.describe_task_definition(taskDefinition='megatest')['taskDefinition']\n\
         c = d['containerDefinitions'][0]\n\
         print(json.dumps([d['networkMode'], c['stopTimeout'], c['logConfiguration']['options']['awslogs-group'], c['secrets'][0]['name']]))",
    );
    assert_eq!(
        definition.trim(),
        r#"["awsvpc", 120, "/megatest/mt", "OPENAI_API_KEY"]"#
    );
    // Status: both running, on Spot, tagged with the sweep.
    let status = ecs_cli(&env, home, &["status", "--json", "--sweep", &sweep]);
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["last_status"] == "RUNNING" && r["spot"] == true));
    let first_session = rows[0]["session_id"].as_str().unwrap().to_string();
    let first_task = rows[0]["task_arn"].as_str().unwrap().to_string();

    // The container side of the first session, until its first checkpoint is in S3.
    let (mut container_a, command) = run_container(
        &moto,
        &first_task,
        home,
        &dir.path().join("task-a"),
        &dir.path().join("a.txt"),
    );
    assert_eq!(command[0], "run");
    let prefix = format!("sessions/{first_session}/");
    assert!(
        wait_for(Duration::from_secs(120), || !moto
            .keys("mt-sessions", &format!("{prefix}checkpoints/checkpoint_"))
            .is_empty()),
        "no checkpoint in S3: {}",
        std::fs::read_to_string(dir.path().join("a.txt")).unwrap_or_default()
    );
    // A Spot interruption: ECS sends SIGTERM and stops the task with its reason.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(container_a.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(container_a.wait().unwrap().code(), Some(143));
    moto.boto(&format!(
        "ecs.stop_task(cluster='mt', task={first_task:?}, reason='Your Spot Task was interrupted.')"
    ));
    // The watcher replaces it with a task that resumes the session from S3.
    let mut watcher = aws_megatest(&env, home)
        .args(["ecs", "watch", &sweep, "--interval", "0.5", "--runs-dir"])
        .arg(&runs)
        .stdout(std::fs::File::create(dir.path().join("watch.txt")).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let replacement = || {
        let status = ecs_cli(&env, home, &["status", "--json", "--sweep", &sweep]);
        let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        rows.as_array().into_iter().flatten().find_map(|r| {
            (r["replaces"].as_str() == Some(first_task.as_str()))
                .then(|| r["task_arn"].as_str().unwrap().to_string())
        })
    };
    assert!(wait_for(Duration::from_secs(60), || replacement().is_some()));
    let second_task = replacement().unwrap();
    let (mut container_b, command) = run_container(
        &moto,
        &second_task,
        home,
        &dir.path().join("task-b"),
        &dir.path().join("b.txt"),
    );
    assert_eq!(
        command,
        [
            "resume".to_string(),
            format!("s3://mt-sessions/sessions/{first_session}")
        ]
    );
    let code = container_b.wait().unwrap().code();
    let b_log = std::fs::read_to_string(dir.path().join("b.txt")).unwrap_or_default();
    assert!(matches!(code, Some(0 | 1)), "{b_log}");
    assert_eq!(
        moto.text("mt-sessions", &format!("{prefix}status")),
        "complete\n",
        "{b_log}"
    );

    // The task's log stream, as the awslogs driver names it.
    let task_id = second_task.rsplit('/').next().unwrap();
    moto.boto(&format!(
        "logs.create_log_stream(logGroupName='/megatest/mt', logStreamName='megatest/megatest/{task_id}')\n\
         logs.put_log_events(logGroupName='/megatest/mt', logStreamName='megatest/megatest/{task_id}', logEvents=[{{'timestamp': int(__import__('time').time() * 1000), 'message': 'megatest: session resumed'}}])"
    ));
    let logs = ecs_cli(&env, home, &["logs", &first_session]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("megatest: session resumed"),
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );

    // Stop one session, then all: the watcher sees every session finished.
    let second_session = rows[1]["session_id"].as_str().unwrap();
    let stopped = ecs_cli(&env, home, &["stop", second_session]);
    assert_eq!(stopped.status.code(), Some(0));
    let all = ecs_cli(&env, home, &["stop-all", "--sweep", &sweep]);
    assert_eq!(all.status.code(), Some(0));
    assert!(wait_for(Duration::from_secs(30), || matches!(
        watcher.try_wait(),
        Ok(Some(_))
    )));
    let watched = std::fs::read_to_string(dir.path().join("watch.txt")).unwrap();
    assert!(
        watched.contains("Spot interruption") && watched.contains("every session finished"),
        "{watched}"
    );
    let record = read_json(&runs.join("ecs").join(format!("{sweep}.json")));
    let interrupted = record["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["session_id"] == first_session.as_str())
        .unwrap();
    assert_eq!(interrupted["interruptions"], 1);

    // Collect: the finished session into the runs directory; `megatest report` reads it.
    let collected = ecs_cli(
        &env,
        home,
        &["collect", "--runs-dir", runs.to_str().unwrap()],
    );
    assert_eq!(
        collected.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&collected.stderr)
    );
    let report = megatest()
        .args([
            "report",
            &first_session,
            "--format",
            "json",
            "--output",
            "-",
            "--runs-dir",
        ])
        .arg(&runs)
        .output()
        .unwrap();
    assert_eq!(
        report.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let document: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(document["status"], "complete");

    // Costs: one row per task; moto reports no task times, so the cost is null with the
    // reason — never 0.
    let costs = ecs_cli(&env, home, &["costs", "--sweep", &sweep, "--json"]);
    let costs: serde_json::Value = serde_json::from_slice(&costs.stdout).unwrap();
    assert_eq!(costs["tasks"].as_array().unwrap().len(), 3);
    assert!(costs["total_usd"]["value"].is_null());
    assert!(costs["total_usd"]["reason"]
        .as_str()
        .unwrap()
        .contains("no start time"));
}

#[test]
fn an_ecs_launch_that_cannot_work_says_what_to_fix_and_starts_nothing() {
    let moto = Moto::start();
    let env = stack(&moto);
    let dir = tempfile::tempdir().unwrap();
    let config = root().join("configs/quickstart.toml");
    let launch = |env: &[(&'static str, String)]| {
        let output = aws_megatest(env, dir.path())
            .args(["ecs", "launch"])
            .arg(&config)
            .args(["--runs-dir"])
            .arg(dir.path().join("runs"))
            .output()
            .unwrap();
        assert_exit(&output, 2);
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let no_bucket: Vec<_> = env
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if *k == "MEGATEST_ECS_BUCKET" {
                    "no-such-bucket".into()
                } else {
                    v.clone()
                },
            )
        })
        .collect();
    assert!(launch(&no_bucket).contains("\"no-such-bucket\" does not exist"));
    let no_credentials: Vec<_> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .cloned()
        .collect();
    assert!(launch(&no_credentials).contains("no AWS credentials"));
    let no_cluster: Vec<_> = env
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if *k == "MEGATEST_ECS_CLUSTER" {
                    "nope".into()
                } else {
                    v.clone()
                },
            )
        })
        .collect();
    assert!(launch(&no_cluster).contains("no cluster \"nope\""));
    // A task size Fargate does not run is refused before anything is registered.
    let output = aws_megatest(&env, dir.path())
        .args(["ecs", "launch"])
        .arg(&config)
        .args(["--cpu", "2048", "--memory", "1024"])
        .output()
        .unwrap();
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cpu 2048 takes --memory"));
    // An invalid config is refused before AWS is asked anything.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[session]\nagent_count = 99\n").unwrap();
    let output = aws_megatest(&env, dir.path())
        .args(["ecs", "launch"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("agent_count"));
    // Nothing was started.
    let tasks = moto.boto("print(len(ecs.list_tasks(cluster='mt')['taskArns']))");
    assert_eq!(tasks.trim(), "0");

    // A launch reuses the task definition while it matches; another size is a new revision.
    let revision = |extra: &[&str]| {
        let output = aws_megatest(&env, dir.path())
            .args(["ecs", "launch"])
            .arg(&config)
            .args(extra)
            .arg("--runs-dir")
            .arg(dir.path().join("runs"))
            .output()
            .unwrap();
        assert_exit(&output, 0);
        moto.boto("print(ecs.describe_task_definition(taskDefinition='megatest')['taskDefinition']['revision'])")
            .trim()
            .to_string()
    };
    let first = revision(&[]);
    assert_eq!(revision(&[]), first);
    assert_ne!(revision(&["--memory", "16384"]), first);
}
