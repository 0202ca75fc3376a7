//! S3 sync of a real session (`megatest run --sync s3://…`) and its resumption from S3 in a
//! fresh directory (`megatest resume s3://…`), against moto.

use crate::moto::*;
use crate::support::*;
use std::time::Duration;

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
