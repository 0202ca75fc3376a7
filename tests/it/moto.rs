//! moto (PyPI `moto[server]`, a local AWS-compatible server on a loopback port) for the tests
//! of sessions beyond one machine, the stand-in proxy for what the real API does and moto does
//! not (`probes/aws_standin.py`), and a moto "account" prepared like the CloudFormation stack.
//! moto runs no containers: a task's "container" side runs as a local process with the
//! environment the task definition sets.

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

/// The stack's outputs as `megatest ecs` reads them, for a moto "account" prepared like the
/// CloudFormation template would: cluster, bucket, log group, the default VPC's subnets and
/// security group. Tasks stay RUNNING until stopped (moto's time-based progression).
pub(crate) fn stack(moto: &Moto) -> Vec<(&'static str, String)> {
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
pub(crate) fn container(moto: &Moto, task: &str) -> (Vec<String>, Vec<(String, String)>) {
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
pub(crate) fn run_container(
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

pub(crate) fn ecs_cli(
    env: &[(&'static str, String)],
    home: &Path,
    args: &[&str],
) -> std::process::Output {
    aws_megatest(env, home)
        .arg("ecs")
        .args(args)
        .output()
        .unwrap()
}

/// `tests/it/probes/aws_standin.py` in front of `moto` in a `mode` with its arguments (see
/// the script): what the real API does and moto does not. Stopped on drop.
pub(crate) struct StandIn {
    child: Child,
    url: String,
}

impl StandIn {
    pub(crate) fn start(moto: &Moto, mode: &[&str]) -> StandIn {
        let (child, url) = start_listening(
            Command::new(&moto.python)
                .arg(root().join("tests/it/probes/aws_standin.py"))
                .arg(&moto.url)
                .args(mode),
        );
        StandIn { child, url }
    }

    /// `env` with the endpoint pointed at this proxy.
    pub(crate) fn env(&self, env: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        env.iter()
            .map(|(k, v)| match *k {
                "AWS_ENDPOINT_URL" => (*k, self.url.clone()),
                _ => (*k, v.clone()),
            })
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
