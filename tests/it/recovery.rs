//! The recovery table: each failure kind injected for real (a killed process, a stopped
//! process, a full filesystem, a real 429 / 500 / garbage body from a provider, a process out
//! of memory, a failing check, a corrupt checkpoint) and the rule's action checked in
//! `final_report.json` `recoveries`.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A one-phase session on a throwaway spec: `tasks` (id, role) run by `agents` command agents
/// (`sh -c command`; `$MEGATEST_TASK_ID` names the task). `checks` is the spec's
/// `[commands]` table body; `extra` more TOML (may not repeat `[agents]`, `[session]`,
/// `[agent]`, `[project]`, `[[phases]]`).
pub(crate) fn mini_config(
    dir: &Path,
    tasks: &[(&str, &str)],
    agents: usize,
    command: &str,
    checks: &str,
    extra: &str,
) -> PathBuf {
    let spec = dir.join("spec");
    std::fs::create_dir_all(&spec).unwrap();
    let mut spec_text = format!(
        "name = \"mini\"\ndescription = \"recovery test\"\nlanguage = \"none\"\n[commands]\n{checks}\n"
    );
    for (id, role) in tasks {
        spec_text.push_str(&format!(
            "[[tasks]]\nid = {id:?}\nphase = \"work\"\nrole = {role:?}\ntitle = {id:?}\nprompt = \"do {id}\"\n"
        ));
    }
    std::fs::write(spec.join("spec.toml"), spec_text).unwrap();
    let roles: Vec<String> = (0..agents).map(|_| "\"Coder\"".to_string()).collect();
    // The phase ends when its tasks are done (quick) and exit codes stand (no task checks); a
    // test that wants its time box or task checks says so.
    let scheduling = if extra.contains("[scheduling]") {
        ""
    } else {
        "[scheduling]\nphase_end = \"tasks_done\"\ntask_check = \"none\"\n"
    };
    let text = format!(
        r#"
[session]
duration_hours = 1
agent_count = {agents}

[agent]
concurrent_agents = {agents}
roles = [{roles}]
max_total_agents = {agents}
step_timeout_secs = 3600

[limits]
max_test_runtime_min = 1

[checkpoint]
backoff_initial_seconds = 1
backoff_max_seconds = 2

[project]
spec_dir = {spec:?}

[[phases]]
name = "work"
duration_minutes = 60

[agents]
kind = "command"
command = {command:?}
stop_grace_secs = 0.5
max_task_attempts = 3

{scheduling}
{extra}
"#,
        roles = roles.join(", "),
        spec = spec.display().to_string(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) const SIM: &str = "[model]\nprovider = \"sim\"\n";

fn recoveries(session: &Path) -> Vec<Value> {
    read_json(&session.join("final_report.json"))["recoveries"]
        .as_array()
        .unwrap()
        .clone()
}

fn of_kind<'a>(recoveries: &'a [Value], kind: &str) -> Vec<&'a Value> {
    recoveries
        .iter()
        .filter(|r| r["failure_kind"] == kind)
        .collect()
}

/// Run a one-task, two-agent session whose agents run `command` (`extra`: more TOML) at time
/// scale 60; expect exit 0 and exactly one recovery of `kind`: (session, that recovery).
fn single_recovery(dir: &Path, command: &str, extra: &str, kind: &str) -> (PathBuf, Value) {
    let config = mini_config(
        dir,
        &[("t1", "Coder")],
        2,
        command,
        "build = \"true\"\ntest = \"true\"",
        extra,
    );
    let runs = dir.join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    assert_exit(&output, 0);
    let session = only_session(&runs);
    let rows = recoveries(&session);
    let found = of_kind(&rows, kind);
    assert_eq!(found.len(), 1, "one {kind}: {rows:?}");
    let row = found[0].clone();
    (session, row)
}

/// Start `megatest run` in the background (stdout and stderr to files in `dir`).
fn spawn_session(
    config: &Path,
    runs: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Child {
    let dir = runs.parent().unwrap();
    run_command(config, runs, args, envs)
        .stdout(std::fs::File::create(dir.join("stdout.txt")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr.txt")).unwrap())
        .spawn()
        .unwrap()
}

fn finish(mut child: std::process::Child, dir: &Path) -> (i32, String) {
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    (status.code().unwrap_or(-1), stderr)
}

/// Wait until the first run of `task` has marked the workspace (`.ran-<task>`), so a fault
/// injected now hits a run that is under way.
fn wait_for_marker(runs: &Path, task: &str) {
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::fs::read_dir(runs).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().join(format!("project/.ran-{task}")).exists())
            })
        }),
        "the first run of {task} never started working"
    );
}

/// The pid of the first run of `task` once it is recorded.
fn run_pid(runs: &Path, task: &str) -> i32 {
    let mut pid = None;
    assert!(
        wait_for(Duration::from_secs(20), || {
            let Ok(entries) = std::fs::read_dir(runs) else {
                return false;
            };
            for entry in entries.flatten() {
                let db = entry.path().join("session.db");
                let Ok(conn) = rusqlite::Connection::open_with_flags(
                    &db,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                ) else {
                    continue;
                };
                pid = conn
                    .query_row(
                        "SELECT pid FROM agent_runs WHERE task_id = ?1 ORDER BY id LIMIT 1",
                        [task],
                        |r| r.get::<_, i32>(0),
                    )
                    .ok();
            }
            pid.is_some()
        }),
        "no run of {task} was recorded"
    );
    pid.unwrap()
}

/// A one-task session whose first run of the task marks the workspace and works until `fault`
/// (given the run's process group) hits it; later runs finish at once. Expects exit 0; returns
/// the session and the faulted run's pid.
fn fault_the_first_run(
    dir: &Path,
    extra: &str,
    fault: impl FnOnce(nix::unistd::Pid) -> nix::Result<()>,
) -> (PathBuf, i32) {
    let command = "if [ -e .ran-$MEGATEST_TASK_ID ]; then exit 0; fi; touch .ran-$MEGATEST_TASK_ID; while :; do echo working; sleep 0.05; done";
    let config = mini_config(
        dir,
        &[("t1", "Coder")],
        2,
        command,
        "build = \"true\"\ntest = \"true\"",
        extra,
    );
    let runs = dir.join("runs");
    let child = spawn_session(&config, &runs, &["--time-scale", "60"], &[]);
    wait_for_marker(&runs, "t1");
    let pid = run_pid(&runs, "t1");
    fault(nix::unistd::Pid::from_raw(pid)).unwrap();
    let (code, stderr) = finish(child, dir);
    assert_eq!(code, 0, "{stderr}");
    (only_session(&runs), pid)
}

#[test]
fn killed_agent_is_restarted_on_its_task() {
    let dir = tempfile::tempdir().unwrap();
    // First run of the task: mark it and wait to be killed; a later run finishes.
    let (session, _) = fault_the_first_run(dir.path(), SIM, |pid| {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
    });
    let rows = recoveries(&session);
    let crash = of_kind(&rows, "agent_crash");
    assert_eq!(crash.len(), 1, "{rows:?}");
    assert_eq!(crash[0]["action"], "restart_agent");
    assert_eq!(crash[0]["rule"], "default:agent_crash");
    assert_eq!(crash[0]["severity"], "recoverable");
    assert_eq!(crash[0]["outcome"], "recovered");
    assert_eq!(crash[0]["attempts"], 2);
    assert!(crash[0]["time_to_recover_session_secs"].as_f64().unwrap() > 0.0);
    // The same agent ran the task again.
    let agents: Vec<String> = {
        let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
        let mut stmt = db
            .prepare("SELECT agent_id FROM agent_runs WHERE task_id = 't1' ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(agents, ["agent-1", "agent-1"]);
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["errors"]["agent_crash"], 1);
    assert_eq!(report["recovery_outcomes"]["recovered"], 1);
}

#[test]
fn stopped_agent_is_found_idle_and_its_task_reassigned() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{SIM}\n[recovery]\nagent_idle_minutes = 1\nagent_idle_floor_secs = 0.5\n");
    // SIGSTOP the whole group: no more output, no calls, no workspace changes.
    let (session, pid) = fault_the_first_run(dir.path(), &extra, |pid| {
        nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGSTOP)
    });
    let rows = recoveries(&session);
    let hang = of_kind(&rows, "agent_hang");
    assert_eq!(hang.len(), 1, "{rows:?}");
    assert_eq!(hang[0]["action"], "reassign");
    assert_eq!(hang[0]["outcome"], "recovered");
    assert_eq!(hang[0]["agent_id"], "agent-1");
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let (second, outcome): (String, String) = db
        .query_row("SELECT agent_id, outcome FROM agent_runs WHERE task_id = 't1' ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(
        (second.as_str(), outcome.as_str()),
        ("agent-2", "finished"),
        "another agent finished it"
    );
    assert!(
        wait_for(Duration::from_secs(5), || !alive(pid)),
        "the stopped agent {pid} survived"
    );
}

#[test]
fn agent_out_of_memory_is_retried_with_a_handoff_summary() {
    let dir = tempfile::tempdir().unwrap();
    // First run: a real allocation failure (MemoryError). The retry finishes only if its
    // prompt carries the handoff summary.
    let command = "if [ -e .ran ]; then grep -q 'Handoff summary' {prompt_file} && exit 0; exit 7; fi; touch .ran; python3 -c 'b = bytearray(1 << 62)'";
    let (_, oom) = single_recovery(dir.path(), command, SIM, "out_of_memory");
    assert_eq!(oom["action"], "compress_and_retry");
    assert_eq!(oom["severity"], "critical");
    assert_eq!(oom["outcome"], "recovered");
}

#[test]
fn upstream_429_then_500_then_garbage_is_recovered_within_each_call() {
    let upstream = FakeUpstream::start("sk-flaky");
    let dir = tempfile::tempdir().unwrap();
    let probe = root().join("tests/it/probes/calls.py");
    let command = format!("python3 {}", probe.display());
    let model = format!(
        "[model]\nprovider = \"openai-compatible\"\nbase_url = {:?}\nname = \"flaky\"\napi_key_env = \"MEGATEST_TEST_UPSTREAM_KEY\"\nretry_base_ms = 1\nretry_max_ms = 20\n\n[agents.env]\nPROBE_PLAN = '[{{\"api\": \"chat\", \"model\": \"flaky\"}}]'\n",
        upstream.url
    );
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder"), ("t2", "Coder")],
        2,
        &command,
        "build = \"true\"\ntest = \"true\"",
        &model,
    );
    let runs = dir.path().join("runs");
    let output = run_session(
        &config,
        &runs,
        &["--time-scale", "60"],
        &[("MEGATEST_TEST_UPSTREAM_KEY", "sk-flaky")],
    );
    assert_exit(&output, 0);
    let session = only_session(&runs);
    let records = probe_records(&session.join("project"));
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["status"] == 200), "{records:?}");
    let rows = recoveries(&session);
    for (kind, action, attempts) in [
        ("rate_limit", "retry_with_backoff", 3),
        ("llm_error", "retry_with_backoff", 2),
        ("parse_failure", "retry_with_modification", 1),
    ] {
        let found = of_kind(&rows, kind);
        assert_eq!(found.len(), 2, "one {kind} per call: {rows:?}");
        for row in found {
            assert_eq!(row["action"], action, "{row}");
            assert_eq!(row["outcome"], "recovered", "{row}");
            assert_eq!(row["attempts"], attempts, "{row}");
            assert_eq!(row["rule"], format!("default:{kind}"));
        }
    }
    let report = read_json(&session.join("final_report.json"));
    for kind in ["rate_limit", "llm_error", "parse_failure"] {
        assert_eq!(report["errors"][kind], 2, "{}", report["errors"]);
    }
    assert_eq!(
        ledger_sum(&session, "attempts"),
        8,
        "four attempts per call"
    );
}

#[test]
fn upstream_timeouts_are_retried_at_once_then_with_backoff_then_another_model() {
    let upstream = FakeUpstream::start("sk-slow");
    let dir = tempfile::tempdir().unwrap();
    let probe = root().join("tests/it/probes/calls.py");
    let command = format!("python3 {}", probe.display());
    let model = format!(
        "[model]\nprovider = \"openai-compatible\"\nbase_url = {:?}\nname = \"slow\"\nfallbacks = [\"gpt-fake\"]\napi_key_env = \"MEGATEST_TEST_UPSTREAM_KEY\"\ntimeout_secs = 0.2\nmax_retries = 1\nretry_base_ms = 1\nretry_max_ms = 5\ncooldown_after_failures = 100\n\n[agents.env]\nPROBE_PLAN = '[{{\"api\": \"chat\", \"model\": \"slow\"}}]'\n",
        upstream.url
    );
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder")],
        2,
        &command,
        "build = \"true\"\ntest = \"true\"",
        &model,
    );
    let runs = dir.path().join("runs");
    let output = run_session(
        &config,
        &runs,
        &["--time-scale", "60"],
        &[("MEGATEST_TEST_UPSTREAM_KEY", "sk-slow")],
    );
    assert_exit(&output, 0);
    let session = only_session(&runs);
    let rows = recoveries(&session);
    let timeouts = of_kind(&rows, "network_timeout");
    let actions: Vec<&str> = timeouts
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    // The seed's "retry 3×, then backoff", then the fallback model served it.
    assert_eq!(
        actions,
        [
            "retry_immediate",
            "retry_immediate",
            "retry_immediate",
            "retry_with_backoff",
            "switch_model"
        ],
        "{rows:?}"
    );
    assert!(timeouts.iter().all(|r| r["outcome"] == "recovered"));
    assert_eq!(
        scalar(
            &session,
            "SELECT COUNT(*) FROM ledger WHERE model_served = 'gpt-fake' AND attempts = 6",
            &[]
        ),
        1
    );
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test needs a real full filesystem: mounting a tmpfs at {} failed (run the tests as root, as CI does)",
            path.display()
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn full_disk_pauses_the_session_until_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // A small filesystem and the default limits (scaled down to 10 % / 5 % of it).
    let _tmpfs = Tmpfs::mount(&runs, "12m");
    // The agent fills the filesystem (a real ENOSPC), then waits for the space to come back.
    let command = "if [ ! -e .filled ]; then touch .filled; dd if=/dev/zero of=big bs=1M count=64 2> dd.err; while [ -e big ]; do sleep 0.05; done; fi; exit 0";
    let extra = SIM.to_string();
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder")],
        2,
        command,
        "build = \"true\"\ntest = \"true\"",
        &extra,
    );
    let child = spawn_session(
        &config,
        &runs,
        &["--time-scale", "60", "--session-id", "full"],
        &[],
    );
    let session = runs.join("full");
    assert!(
        wait_for(Duration::from_secs(30), || std::fs::read_to_string(
            session.join("status")
        )
        .is_ok_and(|s| s.trim() == "paused")),
        "the session never paused"
    );
    // dd stopped short of its 64 MiB: the filesystem was full (its own error message could not
    // be written either).
    let big = std::fs::metadata(session.join("project/big"))
        .unwrap()
        .len();
    assert!(
        big < 60 << 20,
        "dd wrote {big} bytes: the filesystem never filled"
    );
    // The agent's group is stopped while paused.
    let pid = run_pid(&runs, "t1");
    assert!(
        wait_for(Duration::from_secs(5), || {
            megatest::backend::local::process_paused(pid)
        }),
        "agent {pid} not stopped"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read_to_string(session.join("status"))
            .unwrap()
            .trim(),
        "paused"
    );
    // The operator frees the space: the session continues by itself.
    std::fs::remove_file(session.join("project/big")).unwrap();
    let (code, stderr) = finish(child, dir.path());
    assert_eq!(code, 0, "{stderr}");
    let rows = recoveries(&session);
    let full = of_kind(&rows, "disk_full");
    assert_eq!(full.len(), 1, "{rows:?}");
    assert_eq!(full[0]["action"], "pause_and_alert");
    assert_eq!(full[0]["severity"], "critical");
    assert_eq!(full[0]["outcome"], "recovered");
    let events = scalar(
        &session,
        "SELECT COUNT(*) FROM events WHERE kind IN ('paused', 'continued')",
        &[],
    );
    assert_eq!(events, 2);
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "complete");
}

#[test]
fn failing_checks_are_logged_flagged_and_recovered_when_they_pass_again() {
    let dir = tempfile::tempdir().unwrap();
    // The test check passes only once `fixed` exists; the build check always times out.
    let checks = "build = \"sleep 30\"\ntest = \"test -e fixed\"";
    let config = mini_config(dir.path(), &[("t1", "Coder")], 2, "true", checks, SIM);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace("max_test_runtime_min = 1", "max_test_runtime_min = 0.02");
    text = text.replace(
        "[[phases]]\nname = \"work\"\nduration_minutes = 60\n",
        "[[phases]]\nname = \"work\"\nduration_minutes = 30\n[[phases]]\nname = \"more\"\nduration_minutes = 30\n",
    );
    std::fs::write(&config, &text).unwrap();
    let spec = dir.path().join("spec/spec.toml");
    let mut spec_text = std::fs::read_to_string(&spec).unwrap();
    spec_text.push_str("[[tasks]]\nid = \"fix\"\nphase = \"more\"\nrole = \"Coder\"\ntitle = \"fix\"\nprompt = \"fix\"\n");
    std::fs::write(&spec, spec_text).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "command = \"true\"",
            "command = \"[ $MEGATEST_TASK_ID = fix ] && touch fixed; true\"",
        ),
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    assert_exit(&output, 1);
    let session = only_session(&runs);
    let rows = recoveries(&session);
    let tests = of_kind(&rows, "test_failure");
    assert_eq!(tests.len(), 1, "{rows:?}");
    assert_eq!(tests[0]["action"], "log_and_continue");
    assert_eq!(tests[0]["severity"], "degraded");
    assert_eq!(
        tests[0]["outcome"], "recovered",
        "the test check passed in the next phase"
    );
    let slow = of_kind(&rows, "test_runtime_exceeded");
    assert_eq!(slow.len(), 2, "{rows:?}");
    assert!(
        slow.iter().all(|r| r["outcome"] == "failed"),
        "never passed: flagged as failed"
    );
}

#[test]
fn manual_classification_applies_the_upstream_rules() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture_config())
        .unwrap()
        .replace("classification = \"auto\"", "classification = \"manual\"");
    assert!(text.contains("classification = \"manual\""));
    let config = dir.path().join("manual.toml");
    // Faults are drawn per attempt: a malformed body on 24 % of them (after the 20 % of rate
    // limits) makes a session of a few dozen calls without one vanishingly unlikely.
    std::fs::write(
        &config,
        // Reviews that fail under these faults can leave a vote without quorum; nobody answers
        // its escalation here, and the default keeps the session going.
        format!("{text}\n[model]\nprovider = \"sim\"\nretry_base_ms = 1\nretry_max_ms = 5\n[model.faults]\nrate_limit = 0.2\nmalformed_json = 0.3\n[recovery]\nescalation_default = \"log_and_continue\"\n"),
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let output = run_session(
        &config,
        &runs,
        &["--hours", "1", "--time-scale", "3600"],
        &[],
    );
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let session = only_session(&runs);
    let rows = recoveries(&session);
    let limits = of_kind(&rows, "rate_limit");
    assert!(!limits.is_empty(), "{rows:?}");
    // `pattern = "rate.?limit"` is the second upstream rule.
    assert!(limits
        .iter()
        .all(|r| r["rule"] == "error_handling.rules[1]" && r["action"] == "retry_with_backoff"));
    // No upstream rule matches "parse_failure: …" ("parse.?error" does not): the default applies.
    let parse = of_kind(&rows, "parse_failure");
    assert!(!parse.is_empty(), "{rows:?}");
    assert!(parse.iter().all(|r| r["rule"] == "default:parse_failure"));
}

#[test]
fn escalation_without_an_operator_applies_the_default_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{SIM}\n[[error_handling.rules]]\nkind = \"agent_crash\"\nseverity = \"critical\"\naction = \"escalate\"\n\n[recovery]\nescalation_timeout_minutes = 1\n\n[notifications]\nenabled = true\nwebhook_url = \"{{URL}}\"\nevents = [\"escalation\", \"complete\"]\n"
    );
    // A webhook receiver on loopback that records each POST body.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Read, Write};
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = (&stream)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder")],
        2,
        "exit 3",
        "build = \"true\"\ntest = \"true\"",
        &extra.replace("{URL}", &url),
    );
    let runs = dir.path().join("runs");
    let output = run_session(
        &config,
        &runs,
        &["--time-scale", "60"],
        &[("GITHUB_ACTIONS", "true")],
    );
    assert_exit(&output, 3);
    let session = only_session(&runs);
    let rows = recoveries(&session);
    let crash = of_kind(&rows, "agent_crash");
    assert_eq!(crash.len(), 1, "{rows:?}");
    assert_eq!(crash[0]["rule"], "error_handling.rules[0]");
    assert_eq!(crash[0]["action"], "escalate");
    assert_eq!(crash[0]["outcome"], "escalated");
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "failed");
    assert!(
        report["ended_because"]
            .as_str()
            .unwrap()
            .contains("escalation_default"),
        "{}",
        report["ended_because"]
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("::error title=megatest escalation::agent_crash"),
        "{stdout}"
    );
    assert!(wait_for(Duration::from_secs(5), || bodies
        .lock()
        .unwrap()
        .len()
        >= 2));
    let bodies = bodies.lock().unwrap();
    let events: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "escalation" && e["data"]["failure_kind"] == "agent_crash"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e["event"] == "complete"),
        "{events:?}"
    );
}

#[test]
fn corrupt_checkpoint_stops_restores_the_last_valid_one_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    let command = "sleep 2; exit 0";
    let extra = format!(
        "{SIM}\n[chaos]\nenabled = true\n[[chaos.events]]\nat_minutes = 0.5\nfault = \"corrupt_checkpoint\"\n"
    );
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder")],
        2,
        command,
        "build = \"true\"\ntest = \"true\"",
        &extra,
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "backoff_initial_seconds = 1",
        "backoff_initial_seconds = 1\ninterval_minutes = 0.2",
    );
    std::fs::write(&config, text).unwrap();
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    assert_exit(&output, 0);
    let session = only_session(&runs);
    let rows = recoveries(&session);
    let corrupt = of_kind(&rows, "data_corruption");
    assert_eq!(corrupt.len(), 1, "{rows:?}");
    assert_eq!(corrupt[0]["action"], "restore_checkpoint");
    assert_eq!(corrupt[0]["severity"], "fatal");
    assert_eq!(corrupt[0]["outcome"], "recovered");
    let corrupt_seq: i64 = corrupt[0]["detail"].as_str().unwrap()["checkpoint ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let restored: i64 = db
        .query_row("SELECT json_extract(data, '$.sequence') FROM events WHERE kind = 'checkpoint_restored'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        restored,
        corrupt_seq - 1,
        "the last valid checkpoint before the corrupt one"
    );
    assert_eq!(
        scalar(
            &session,
            "SELECT COUNT(*) FROM events WHERE kind = 'session_resumed'",
            &[]
        ),
        1
    );
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "complete");
    // The corruption was noticed and replaced: the seed's checkpoint criterion holds.
    let verified = criterion(&report, "all checkpoints created and verified (seed)");
    assert_eq!(verified["met"], true, "{verified}");
    assert!(
        verified["evidence"]
            .as_str()
            .unwrap()
            .contains(&format!("replaced during the session: {corrupt_seq}")),
        "{verified}"
    );
    assert_eq!(
        report["chaos"]["injected"][0]["fault"], "corrupt_checkpoint",
        "{}\n{rows:?}",
        report["chaos"]
    );
}

#[test]
fn chaos_config_recovers_every_injected_failure() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let config = root().join("configs/chaos.toml");
    let output = run_session(&config, &runs, &[], &[]);
    let session = only_session(&runs);
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        report["recoveries"]
    );
    assert!(report["chaos"]["warning"].as_str().unwrap().contains("ON"));
    let rows = recoveries(&session);
    let mut kinds: Vec<&str> = rows
        .iter()
        .filter(|r| r["outcome"] == "recovered")
        .map(|r| r["failure_kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    kinds.dedup();
    assert!(kinds.len() >= 3, "recovered kinds: {kinds:?}\n{rows:?}");
    for criterion in [
        "recovery from at least 1 simulated failure",
        "auto-recovery from 3+ error scenarios",
    ] {
        let found = report["success_criteria"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["criterion"] == criterion)
            .unwrap_or_else(|| panic!("no criterion {criterion:?}"));
        assert_eq!(found["met"], true, "{found}");
    }
    for kind in ["agent_crash", "agent_hang"] {
        assert!(kinds.contains(&kind), "{kind} not recovered: {rows:?}");
    }
    assert!(
        rows.iter().all(|r| r["outcome"] == "recovered"),
        "every injected failure recovered: {rows:?}"
    );
}

#[test]
fn permission_failure_pauses_until_the_workspace_is_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    // A real EACCES: the agent drops to uid 65534 and writes a root-owned file.
    let command = "if [ -e .ran ]; then exit 0; fi; touch .ran protected; chmod 644 protected; setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo x > protected'";
    let (session, denied) = single_recovery(dir.path(), command, SIM, "permission_denied");
    assert_eq!(denied["action"], "pause_and_alert");
    assert_eq!(denied["outcome"], "recovered");
    assert!(
        denied["detail"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{}",
        denied["detail"]
    );
    assert_eq!(
        scalar(
            &session,
            "SELECT COUNT(*) FROM events WHERE kind IN ('paused', 'continued')",
            &[]
        ),
        2
    );
}

#[test]
fn context_overflow_restarts_the_agent_with_a_handoff_summary() {
    let dir = tempfile::tempdir().unwrap();
    // First run: a prompt over limits.max_context_size (a real 400 from the proxy), then it
    // keeps working on its long context. The retry finishes only with the handoff summary.
    let agent = dir.path().join("agent.py");
    std::fs::write(
        &agent,
        r#"
import json, os, sys, time, urllib.request, urllib.error
prompt = open(sys.argv[1]).read()
if "Handoff summary" in prompt:
    sys.exit(0)
body = json.dumps({"model": "sim", "messages": [{"role": "user", "content": "x" * 20000}]}).encode()
request = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions", data=body,
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=10)
except urllib.error.HTTPError as err:
    print("model answered", err.code, flush=True)
while True:
    print("still thinking", flush=True)
    time.sleep(0.05)
"#,
    )
    .unwrap();
    let command = format!("python3 {} {{prompt_file}}", agent.display());
    let extra = format!("{SIM}\n[limits]\n");
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder")],
        2,
        &command,
        "build = \"true\"\ntest = \"true\"",
        &extra.replace("[limits]\n", ""),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "max_test_runtime_min = 1",
        "max_test_runtime_min = 1\nmax_context_size = 2000",
    );
    std::fs::write(&config, text).unwrap();
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    assert_exit(&output, 0);
    let session = only_session(&runs);
    let rows = recoveries(&session);
    let overflow = of_kind(&rows, "context_overflow");
    assert_eq!(overflow.len(), 1, "{rows:?}");
    assert_eq!(overflow[0]["action"], "compress_and_retry");
    assert_eq!(overflow[0]["outcome"], "recovered");
    let prompt = std::fs::read_to_string(session.join("agents/agent-1/prompts/t1.2.md")).unwrap();
    assert!(prompt.contains("Handoff summary"), "{prompt}");
    assert!(
        prompt.contains("exceeds limits.max_context_size"),
        "the summary says why the run stopped: {prompt}"
    );
}

#[test]
fn chaos_fill_disk_pauses_the_session_until_the_filler_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let _tmpfs = Tmpfs::mount(&runs, "24m");
    let extra = format!(
        "{SIM}\n[recovery]\nmin_free_disk_mb = 4\ndisk_reserve_mb = 2\n\n[chaos]\nenabled = true\n[[chaos.events]]\nat_minutes = 0\nfault = \"fill_disk\"\nhold_minutes = 1\n"
    );
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder")],
        2,
        "sleep 2; exit 0",
        "build = \"true\"\ntest = \"true\"",
        &extra,
    );
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    assert_exit(&output, 0);
    let session = only_session(&runs);
    let rows = recoveries(&session);
    let full = of_kind(&rows, "disk_full");
    assert_eq!(full.len(), 1, "{rows:?}");
    assert_eq!(full[0]["outcome"], "recovered");
    assert!(
        full[0]["time_to_recover_session_secs"].as_f64().unwrap() >= 30.0,
        "paused until the filler went: {}",
        full[0]
    );
    let report = read_json(&session.join("final_report.json"));
    let injected = &report["chaos"]["injected"];
    assert_eq!(injected[0]["fault"], "fill_disk", "{injected}");
    assert!(
        injected[0]["bytes"].as_u64().unwrap() > 10 << 20,
        "{injected}"
    );
    assert!(!session.join("chaos_fill").exists());
    assert!(
        !session.join(".disk_reserve").exists(),
        "the reserve is removed at the end"
    );
}

#[test]
fn a_task_whose_dependency_failed_fails_instead_of_waiting_out_the_phase() {
    let dir = tempfile::tempdir().unwrap();
    let config = mini_config(
        dir.path(),
        &[("t1", "Coder")],
        2,
        "exit 1",
        "build = \"true\"\ntest = \"true\"",
        SIM,
    );
    let spec = dir.path().join("spec/spec.toml");
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str("[[tasks]]\nid = \"t2\"\nphase = \"work\"\nrole = \"Coder\"\ntitle = \"t2\"\nprompt = \"p\"\nafter = [\"t1\"]\n");
    std::fs::write(&spec, text).unwrap();
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    // Every failure stayed unrecovered: the seed's critical "recovery from at least one
    // failure" fails the session.
    assert_exit(&output, 1);
    let session = only_session(&runs);
    let report = read_json(&session.join("final_report.json"));
    let recovery = criterion(&report, "recovery from at least one failure (seed)");
    assert_eq!(recovery["met"], false, "{recovery}");
    assert_eq!(recovery["tier"], "critical");
    assert_eq!(recovery["evidence"], "3 failures: 3 failed");
    // The 60-minute phase (60 s of wall time here) ended as soon as t1 ran out of attempts.
    assert_eq!(
        report["phases"][0]["ended_because"], "tasks_done",
        "{}",
        report["phases"]
    );
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let (state, error): (String, String) = db
        .query_row(
            "SELECT state, last_error FROM tasks WHERE id = 't2'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "failed");
    assert!(error.contains("dependency t1 failed"), "{error}");
    let rows = recoveries(&session);
    let crashes = of_kind(&rows, "agent_crash");
    // Two restarts; the third failed run used up agents.max_task_attempts: a row too, closed
    // at once (nothing was tried).
    assert_eq!(crashes.len(), 3, "{rows:?}");
    assert!(crashes.iter().all(|r| r["outcome"] == "failed"), "{rows:?}");
    assert_eq!(crashes[2]["attempts"], 0, "{rows:?}");
    assert_eq!(report["errors"]["agent_crash"], 3);
}

#[test]
fn memory_pressure_restarts_the_biggest_agent_with_a_handoff_summary() {
    let dir = tempfile::tempdir().unwrap();
    // The threshold is above any machine's memory: sysinfo's real reading is under it.
    let extra = format!("{SIM}\n[recovery]\nmin_available_memory_mb = 100000000\n\n[monitoring]\nhealth_check_interval = 1\n");
    let command = "if grep -q 'Handoff summary' {prompt_file}; then exit 0; fi; touch .ran-$MEGATEST_TASK_ID; while :; do echo working; sleep 0.05; done";
    // Exactly one: reported once while the pressure lasts.
    let (_, oom) = single_recovery(dir.path(), command, &extra, "out_of_memory");
    assert_eq!(oom["action"], "compress_and_retry");
    assert_eq!(oom["agent_id"], "agent-1");
    assert_eq!(oom["outcome"], "recovered");
    assert!(
        oom["detail"]
            .as_str()
            .unwrap()
            .starts_with("memory pressure"),
        "{}",
        oom
    );
}
