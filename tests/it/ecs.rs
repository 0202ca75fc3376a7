//! `megatest ecs` against moto: sweeps launched, watched through a Spot interruption, stopped,
//! collected and costed; launches that cannot work or that the API refuses.

use crate::moto::*;
use crate::support::*;
use std::time::Duration;

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

#[test]
fn a_launch_the_api_refuses_says_why_and_leaves_nothing_behind() {
    let moto = Moto::start();
    let env = stack(&moto);
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let config = root().join("configs/quickstart.toml");
    let launch = |env: &[(&'static str, String)], extra: &[&str]| {
        let output = aws_megatest(env, dir.path())
            .args(["ecs", "launch"])
            .arg(&config)
            .args(extra)
            .arg("--runs-dir")
            .arg(&runs)
            .output()
            .unwrap();
        assert_exit(&output, 2);
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let nothing_left = |what: &str| {
        assert_eq!(
            moto.keys("mt-sessions", ""),
            Vec::<String>::new(),
            "{what}: objects left in the bucket"
        );
        let sweeps: Vec<_> = std::fs::read_dir(runs.join("sweeps"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(sweeps.is_empty(), "{what}: sweep records left: {sweeps:?}");
        let running = moto.boto(
            "arns = ecs.list_tasks(cluster='mt')['taskArns']\n\
             tasks = ecs.describe_tasks(cluster='mt', tasks=arns)['tasks'] if arns else []\n\
             print(sum(1 for t in tasks if t['desiredStatus'] != 'STOPPED'))",
        );
        assert_eq!(running.trim(), "0", "{what}: tasks left running");
    };

    // The task definition is refused by the API (as AWS refuses, e.g., a role it cannot assume).
    let refusal = "Role is not valid: arn:aws:iam::123456789012:role/nope";
    let proxy = StandIn::start(&moto, &["refuse", "RegisterTaskDefinition", "0", refusal]);
    let err = launch(&proxy.env(&env), &["--count", "2"]);
    assert!(err.contains("ecs:RegisterTaskDefinition"), "{err}");
    assert!(err.contains("the task definition was rejected"), "{err}");
    assert!(err.contains(refusal), "{err}");
    assert!(
        err.contains("--execution-role-arn"),
        "the error says what to check: {err}"
    );
    nothing_left("a refused task definition");
    drop(proxy);

    // The third RunTask of a sweep is refused: the two started tasks are stopped, the uploaded
    // configs deleted and no sweep is recorded.
    let refusal = "No Container Instances were found in your capacity provider";
    let proxy = StandIn::start(&moto, &["refuse", "RunTask", "2", refusal]);
    let err = launch(&proxy.env(&env), &["--count", "3"]);
    assert!(err.contains("ecs:RunTask"), "{err}");
    assert!(err.contains(refusal), "{err}");
    let stopped = moto.boto(
        "arns = ecs.list_tasks(cluster='mt', desiredStatus='STOPPED')['taskArns']\n\
         print(len(arns))",
    );
    assert_eq!(
        stopped.trim(),
        "2",
        "the tasks the launch started were not stopped"
    );
    nothing_left("a refused third task");
}

#[test]
fn a_session_killed_before_its_final_sync_is_collected_and_resumes_locally() {
    let moto = Moto::start();
    let env = stack(&moto);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let url = "s3://mt-sessions/sessions/k1";
    let mut child = aws_megatest(&env, home)
        .arg("run")
        .arg(fixture_config())
        .args(["--provider", "sim", "--hours", "1", "--time-scale", "60"])
        .args(["--agents", "4", "--session-id", "k1", "--sync", url])
        .arg("--runs-dir")
        .arg(dir.path().join("task"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("k1.txt")).unwrap())
        .spawn()
        .unwrap();
    // A push writes `status` last: wait for the whole of the push that took a checkpoint.
    assert!(
        wait_for(Duration::from_secs(120), || {
            let keys = moto.keys("mt-sessions", "sessions/k1/");
            keys.iter().any(|k| k == "sessions/k1/status")
                && keys
                    .iter()
                    .any(|k| k.starts_with("sessions/k1/checkpoints/checkpoint_"))
        }),
        "no checkpoint reached S3: {}",
        std::fs::read_to_string(dir.path().join("k1.txt")).unwrap_or_default()
    );
    // Killed outright (the host went away): no final sync, S3 still says running.
    child.kill().unwrap();
    child.wait().unwrap();
    let live = moto
        .text("mt-sessions", "sessions/k1/status")
        .trim()
        .to_string();
    assert!(
        ["running", "escalated", "paused"].contains(&live.as_str()),
        "{live}"
    );
    // While a task of the cluster runs the session, collect leaves it alone.
    let task = moto.boto(
        "ecs.register_task_definition(family='other', containerDefinitions=[{'name': 'c', 'image': 'x', 'memory': 512}])\n\
         t = ecs.run_task(cluster='mt', taskDefinition='other', launchType='FARGATE', startedBy='megatest', tags=[{'key': 'megatest:session', 'value': 'k1'}])\n\
         print(t['tasks'][0]['taskArn'])",
    );
    let runs = dir.path().join("runs");
    let collect = || {
        let output = ecs_cli(
            &env,
            home,
            &["collect", "--runs-dir", runs.to_str().unwrap()],
        );
        assert_exit(&output, 0);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let out = collect();
    assert!(
        out.contains(&format!("k1: still {live}, not collected")),
        "{out}"
    );
    assert!(!runs.join("k1").exists());
    // Its task stopped: collected, and `megatest resume` here takes it to its end.
    moto.boto(&format!(
        "ecs.stop_task(cluster='mt', task={:?}, reason='host lost')",
        task.trim()
    ));
    let out = collect();
    assert!(
        out.contains(&format!(
            "k1: S3 says {live} but no task in cluster mt runs it"
        )),
        "{out}"
    );
    // Collected with its workspace, written from the last checkpoint that reached S3.
    assert!(runs.join("k1/project").read_dir().unwrap().next().is_some());
    let output = megatest()
        .arg("resume")
        .arg(runs.join("k1"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(matches!(output.status.code(), Some(0 | 1)), "{stderr}");
    let report = read_json(&runs.join("k1").join("final_report.json"));
    assert_eq!(report["status"], "complete", "{stderr}");
    assert_eq!(report["interruptions"]["resumed"], 1);
}

#[test]
fn the_costs_of_ten_half_hour_sessions_match_a_hand_calculation() {
    let moto = Moto::start();
    let env = stack(&moto);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let runs = dir.path().join("runs");
    let launched = aws_megatest(&env, home)
        .args(["ecs", "launch"])
        .arg(root().join("configs/quickstart.toml"))
        .args([
            "--count",
            "10",
            "--cpu",
            "2048",
            "--memory",
            "8192",
            "--runs-dir",
        ])
        .arg(&runs)
        .output()
        .unwrap();
    assert_exit(&launched, 0);
    let sweep = String::from_utf8_lossy(&launched.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    // ECS's task times (moto reports none): each task billed 30 minutes from its image pull.
    let times = StandIn::start(&moto, &["task-times", "1800"]);
    let env = times.env(&env);
    let costs = |extra: &[&str]| {
        let mut args = vec!["costs", "--sweep", &sweep, "--json"];
        args.extend(extra);
        let output = ecs_cli(&env, home, &args);
        assert_exit(&output, 0);
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    // By hand, AWS's us-east-1 list prices: 2 vCPU × 0.5 h × $0.04048 + 8 GB × 0.5 h × $0.004445.
    let each = 2.0 * 0.5 * 0.04048 + 8.0 * 0.5 * 0.004445;
    let listed = costs(&[]);
    let tasks = listed["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 10, "{listed}");
    for task in tasks {
        assert_eq!(task["billed_secs"], 1800.0, "{task}");
        assert_eq!(task["spot"], false);
        assert!((task["cost_usd"]["value"].as_f64().unwrap() - each).abs() < 1e-9);
    }
    let total = listed["total_usd"]["value"].as_f64().unwrap();
    assert!(
        (total - 10.0 * each).abs() < 1e-9,
        "{total} vs {}",
        10.0 * each
    );
    // With a price table of one's own: 2 × 0.5 × 0.05 + 8 × 0.5 × 0.005 = $0.07 a session.
    let prices = dir.path().join("prices.toml");
    std::fs::write(
        &prices,
        "[regions.us-east-1]\nvcpu_hour = 0.05\ngb_hour = 0.005\n",
    )
    .unwrap();
    let priced = costs(&["--prices", prices.to_str().unwrap()]);
    let total = priced["total_usd"]["value"].as_f64().unwrap();
    assert!((total - 0.7).abs() < 1e-9, "{priced}");
    // The table for people: a row per session and the total.
    let table = ecs_cli(&env, home, &["costs", "--sweep", &sweep]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with(&sweep)).count(),
        10,
        "{text}"
    );
    assert!(text.contains(&format!("${:.4}", 10.0 * each)), "{text}");
}
