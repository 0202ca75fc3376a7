//! Agent processes: process groups stopped whole, per-agent keys, no provider secrets.

use crate::support::*;

const SIM: &str = "[model]\nprovider = \"sim\"";

#[test]
fn agent_that_ignores_sigterm_and_forks_is_killed_with_its_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    // The agent ignores TERM and leaves a TERM-ignoring grandchild behind; both must die.
    let command = "trap '' TERM; (trap '' TERM; exec sleep 1000) & echo $! >> grandchildren.pid; while :; do sleep 0.1; done";
    let config = command_config(dir.path(), SIM, command, &[], "");
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "600"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let session = only_session(&runs);
    let grandchildren: Vec<i32> =
        std::fs::read_to_string(session.join("project/grandchildren.pid"))
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
    assert!(!grandchildren.is_empty());
    for pid in grandchildren.iter().copied().chain(agent_pids(&session)) {
        assert!(
            wait_for(std::time::Duration::from_secs(2), || !alive(pid)),
            "process {pid} survived megatest"
        );
    }
    // TERM was ignored, so every run ended by SIGKILL after the grace period.
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let (runs_total, killed): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), SUM(signal = 9) FROM agent_runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        runs_total >= 4,
        "one run per phase at least, got {runs_total}"
    );
    assert_eq!(killed, runs_total);
}

#[test]
fn a_process_that_leaves_its_agents_group_with_setsid_does_not_survive_the_run() {
    let dir = tempfile::tempdir().unwrap();
    // Each run starts a process in a new session (out of reach of the group kill), with an
    // empty environment (no MEGATEST_AGENT_ID to attribute it by), and exits.
    let command =
        "setsid env -i sh -c 'echo $$ >> escapees.pid; exec sleep 1000' & sleep 0.3; exit 0";
    let config = command_config(dir.path(), SIM, command, &[], "");
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "600"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let session = only_session(&runs);
    let escapees: Vec<i32> = std::fs::read_to_string(session.join("project/escapees.pid"))
        .unwrap_or_else(|err| panic!("{err}\n{stderr}"))
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(escapees.len() >= 2, "{escapees:?}\n{stderr}");
    for pid in &escapees {
        assert!(
            wait_for(std::time::Duration::from_secs(2), || !alive(*pid)),
            "escapee {pid} survived megatest\n{stderr}"
        );
    }
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let mut statement = db
        .prepare("SELECT agent_id, data FROM events WHERE kind = 'escapee_killed'")
        .unwrap();
    let killed: Vec<(Option<String>, String)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!killed.is_empty(), "{stderr}");
    // With a cgroup per run, the escapee is attributed by its run's group (and the group kill
    // at the run's end takes it); without one, its agent is unknown.
    let report = read_json(&session.join("final_report.json"));
    let cgroup_dir = report["containment"]["cgroup_dir"].as_str();
    for (agent, data) in &killed {
        if cgroup_dir.is_some() {
            assert!(
                agent.as_deref().is_some_and(|a| a.starts_with("agent-")),
                "{agent:?}"
            );
        }
        assert!(data.contains("sleep 1000"), "{data}");
    }
    if let Some(dir) = cgroup_dir {
        assert!(
            !std::path::Path::new(dir).exists(),
            "the session's cgroup directory {dir} was left behind"
        );
    }
}

#[test]
fn agents_get_their_own_key_and_no_provider_secret() {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe.py");
    std::fs::write(
        &probe,
        r#"
import json, os, urllib.request, urllib.error
base = os.environ["OPENAI_BASE_URL"]
def status(key):
    request = urllib.request.Request(base + "/models", headers={"Authorization": "Bearer " + key})
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as err:
        return err.code
def stream_usage():
    body = json.dumps({"model": "sim", "stream": True, "stream_options": {"include_usage": True},
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    request = urllib.request.Request(base + "/chat/completions", data=body, headers={
        "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"})
    lines = [l.decode().strip() for l in urllib.request.urlopen(request, timeout=10)]
    data = [l[len("data: "):] for l in lines if l.startswith("data: ")]
    chunks = [json.loads(d) for d in data[:-1]]
    usage = [c["usage"]["total_tokens"] for c in chunks if c.get("usage")]
    tools = [t["function"]["name"] for c in chunks for ch in c["choices"] for t in ch["delta"].get("tool_calls", [])]
    return data[-1] == "[DONE]" and len(usage) == 1 and usage[0] > 0 and len(tools) == 1
leaked = any("sk-provider-secret" in value for value in os.environ.values())
with open("probe-" + os.environ["MEGATEST_AGENT_ID"] + "-" + os.environ["MEGATEST_TASK_ID"], "w") as out:
    out.write(f"{status(os.environ['OPENAI_API_KEY'])} {status('sk-wrong')} {leaked} {base.startswith('http://127.0.0.1:')} {stream_usage()}\n")
"#,
    )
    .unwrap();
    let command = format!("python3 {}", probe.display());
    let env = [
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("MY_API_TOKEN", "sk-config-secret"),
    ];
    let notifications = "[notifications]\nenabled = false\nwebhook_url = \"https://hooks.example.invalid/sk-webhook-secret\"\n";
    let config = command_config(dir.path(), SIM, &command, &env, notifications);
    let runs = dir.path().join("runs");
    let secrets = [
        ("OPENAI_API_KEY", "sk-provider-secret"),
        ("ANTHROPIC_API_KEY", "sk-provider-secret"),
    ];
    // Phases end when their tasks are done; the time scale only bounds them (each run starts
    // python3, under the sandbox too).
    let output = run_session(&config, &runs, &["--time-scale", "60"], &secrets);
    assert_exit(&output, 1);
    let session = only_session(&runs);
    let probes: Vec<String> = std::fs::read_dir(session.join("project"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("probe-")
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(
        probes.len(),
        10,
        "one probe per quickstart task: {probes:?}"
    );
    for probe in probes {
        assert_eq!(probe.trim(), "200 401 False True True");
    }
    // Secrets reach no file megatest writes.
    for file in [
        "config.json",
        "session.log",
        "final_report.json",
        "metrics_current.json",
    ] {
        let text = std::fs::read_to_string(session.join(file)).unwrap();
        for secret in [
            "sk-provider-secret",
            "sk-config-secret",
            "sk-webhook-secret",
        ] {
            assert!(!text.contains(secret), "{secret} found in {file}");
        }
    }
    let rejected = scalar(
        &session,
        "SELECT COUNT(*) FROM events WHERE kind = 'auth_rejected'",
        &[],
    );
    assert_eq!(rejected, 10);
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    // The streamed calls are in the ledger, attributed to the agent and task that made them.
    let (calls, attributed): (i64, i64) = db
        .query_row("SELECT COUNT(*), SUM(agent_id LIKE 'agent-%' AND task_id LIKE 'qs-%' AND prompt_tokens > 0) FROM ledger", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((calls, attributed), (10, 10));
}

/// `[agents] sandbox = "bwrap"`: an agent cannot write outside its workspace, read the
/// session's `api.token` or list the acceptance suite, and still does its task; its `HOME` is
/// its own.
#[test]
fn a_sandboxed_agent_does_its_task_but_cannot_leave_its_workspace() {
    if let Err(err) = megatest::backend::sandbox::probe() {
        // CI installs bubblewrap: there, a sandbox that cannot run is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "bubblewrap cannot run under CI: {err}"
        );
        eprintln!("skipped: bubblewrap cannot run here (.ci/run installs it): {err}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside.txt");
    let suite = root().join("system_tests/long_running/projects/quickstart/acceptance");
    assert!(suite.join("conftest.py").exists());
    let command = format!(
        "(touch {outside} 2>/dev/null && echo outside=written || echo outside=denied) >> results.txt; \
         (cat ../api.token >/dev/null 2>&1 && echo token=read || echo token=denied) >> results.txt; \
         (ls {suite} 2>/dev/null | grep -q . && echo suite=read || echo suite=denied) >> results.txt; \
         echo home=$HOME >> results.txt; echo done > done.txt",
        outside = outside.display(),
        suite = suite.display(),
    );
    let config = command_config(dir.path(), SIM, &command, &[], "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "kind = \"command\"",
            "kind = \"command\"\nsandbox = \"bwrap\"",
        ),
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "600"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let session = only_session(&runs);
    assert!(
        session.join("api.token").exists(),
        "the token the agent could not read"
    );
    let results = std::fs::read_to_string(session.join("project/results.txt"))
        .unwrap_or_else(|err| panic!("{err}\n{stderr}"));
    let lines: Vec<&str> = results.lines().collect();
    assert!(lines.len() >= 8, "two runs at least: {results}");
    for line in &lines {
        assert!(
            line.ends_with("=denied") || line.starts_with("home="),
            "an escape succeeded: {results}"
        );
        if let Some(home) = line.strip_prefix("home=") {
            assert!(
                home.starts_with(&session.join("agents").display().to_string())
                    && home.ends_with("/home"),
                "{home}"
            );
        }
    }
    assert!(!outside.exists());
    assert!(session.join("project/done.txt").exists());
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let (runs_total, succeeded): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), SUM(exit_code = 0) FROM agent_runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        runs_total >= 2 && succeeded == runs_total,
        "{runs_total} runs, {succeeded} succeeded\n{stderr}"
    );
}

#[test]
fn agents_run_under_the_memory_limit_the_config_sets() {
    let dir = tempfile::tempdir().unwrap();
    // Each run allocates 32 MiB (fine), then 300 MiB (over the 128 MiB limit: MemoryError).
    let command = "python3 -c \"import os; t = os.environ['MEGATEST_TASK_ID']; a = bytearray(32 << 20); open('small-' + t, 'w').write('ok'); b = bytearray(300 << 20); open('big-' + t, 'w').write('ok')\"";
    let config = command_config(dir.path(), SIM, command, &[], "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "max_task_attempts = 1\n",
        "max_task_attempts = 1\nmemory_limit_mb = 128\n",
    );
    std::fs::write(&config, text).unwrap();
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    assert!(matches!(output.status.code(), Some(0 | 1)), "{output:?}");
    let session = only_session(&runs);
    let names: Vec<String> = std::fs::read_dir(session.join("project"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let small = names.iter().filter(|n| n.starts_with("small-")).count();
    let big = names.iter().filter(|n| n.starts_with("big-")).count();
    assert!(small >= 2, "{names:?}");
    assert_eq!(big, 0, "an allocation over the limit succeeded: {names:?}");
    let report = read_json(&session.join("final_report.json"));
    let containment = &report["containment"];
    assert_eq!(containment["memory_limit_mb"], 128);
    // A cgroup's memory.max where the host delegates the memory controller, else RLIMIT_DATA;
    // the method names what applied, and a missing cgroup says why.
    match containment["memory_limit_by"].as_str() {
        Some("memory.max") => assert_eq!(containment["method"], "cgroup"),
        Some("RLIMIT_DATA") if containment["cgroup_dir"].is_string() => {
            assert_eq!(containment["method"], "cgroup+rlimit")
        }
        Some("RLIMIT_DATA") => {
            assert_eq!(containment["method"], "rlimit");
            assert!(containment["no_cgroup_reason"].is_string(), "{containment}");
        }
        other => panic!("memory_limit_by {other:?}: {containment}"),
    }
}
