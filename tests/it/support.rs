//! Helpers shared by the integration tests.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The upstream Selfware config, unmodified.
pub fn fixture_config() -> PathBuf {
    root().join("../shared/fixtures/selfware/mega_test_config.toml")
}

/// `megatest` with the MEGATEST_* variables of the calling environment removed.
pub fn megatest() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_megatest"));
    for (name, _) in std::env::vars() {
        if name.starts_with("MEGATEST_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    // Tests run sessions side by side: each control API on a free port (api.addr says which).
    command.env("MEGATEST_API_ADDR", "127.0.0.1:0");
    // One cache of acceptance-suite venvs for every test (made once, from PyPI).
    command.env("MEGATEST_VENV_DIR", root().join("target/acceptance-venvs"));
    command.current_dir(root());
    command
}

static VENVS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `target/<name>/bin/python` of a venv with `packages` installed from PyPI (once; later runs
/// reuse it).
pub fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    let _guard = VENVS.lock().unwrap_or_else(|e| e.into_inner());
    let venv = root().join("target").join(name);
    let python = venv.join("bin/python");
    let ready = venv.join(".installed");
    if !ready.exists() {
        let status = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "python3 -m venv failed (apt-get install python3-venv)"
        );
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .status()
            .unwrap();
        assert!(status.success(), "pip install {packages:?} failed");
        std::fs::write(&ready, "").unwrap();
    }
    python
}

pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

pub use megatest::backend::local::process_alive as alive;

/// Poll `condition` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// Every pid of every agent run recorded in `session.db` (empty while the database or its
/// schema does not exist yet).
pub fn agent_pids(session_dir: &Path) -> Vec<i32> {
    let query = || -> rusqlite::Result<Vec<i32>> {
        let conn = rusqlite::Connection::open_with_flags(
            session_dir.join("session.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        let mut stmt = conn.prepare("SELECT pid FROM agent_runs WHERE pid IS NOT NULL")?;
        let pids = stmt.query_map([], |r| r.get::<_, i32>(0))?;
        pids.collect()
    };
    query().unwrap_or_default()
}

/// The command `megatest run CONFIG ARGS… --runs-dir RUNS` with `envs` set, not started.
pub fn run_command(config: &Path, runs: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = megatest();
    command
        .arg("run")
        .arg(config)
        .args(args)
        .arg("--runs-dir")
        .arg(runs);
    for (name, value) in envs {
        command.env(name, value);
    }
    command
}

/// `megatest run CONFIG --runs-dir RUNS ARGS…` to completion.
pub fn run_session(
    config: &Path,
    runs: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> std::process::Output {
    run_command(config, runs, args, envs).output().unwrap()
}

/// Panics unless `runs_dir` is absent or empty (a rejected config leaves nothing behind).
pub fn assert_no_session(runs_dir: &Path) {
    let left = std::fs::read_dir(runs_dir)
        .map(|entries| entries.count())
        .unwrap_or(0);
    assert_eq!(
        left,
        0,
        "a session directory was left behind in {}",
        runs_dir.display()
    );
}

/// The only session directory under `runs_dir`.
pub fn only_session(runs_dir: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(runs_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "expected one session in {}: {entries:?}",
        runs_dir.display()
    );
    entries.into_iter().next().unwrap()
}

/// The `fake_upstream` example (a stand-in provider) running on a free loopback port.
pub struct FakeUpstream {
    child: std::process::Child,
    pub url: String,
}

impl FakeUpstream {
    /// Start it requiring `key`; `url` is its base URL including `/v1`.
    pub fn start(key: &str) -> FakeUpstream {
        let deps = std::env::current_exe().unwrap();
        let binary = deps
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("examples/fake_upstream");
        assert!(
            binary.exists(),
            "{} missing: cargo test builds examples",
            binary.display()
        );
        let mut command = Command::new(binary);
        command.args(["--key", key]);
        let (child, addr) = start_listening(&mut command);
        FakeUpstream {
            child,
            url: format!("{addr}/v1"),
        }
    }

    /// The usage it reported, summed (`GET /stats`).
    pub fn stats(&self) -> Value {
        stats_of(self.url.trim_end_matches("/v1"))
    }
}

/// Start a stand-in server that prints `listening http://127.0.0.1:PORT` first: (the child,
/// its base URL).
pub fn start_listening(command: &mut Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening ")
        .unwrap_or_else(|| panic!("{command:?} said {line:?}"))
        .to_string();
    (child, url)
}

/// `GET {base}/stats` of a stand-in provider, as JSON.
pub fn stats_of(base: &str) -> Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    stream
        .write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every probe record (`probe-*.json` written by tests/it/probes/calls.py) in `workspace`.
pub fn probe_records(workspace: &Path) -> Vec<Value> {
    let mut records = Vec::new();
    for entry in std::fs::read_dir(workspace).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("probe-")
        {
            records.extend(read_json(&path).as_array().unwrap().iter().cloned());
        }
    }
    records
}

/// Sum of a ledger column.
pub fn ledger_sum(session: &Path, expression: &str) -> i64 {
    scalar(
        session,
        &format!("SELECT SUM({expression}) FROM ledger"),
        &[],
    )
}

/// A config for the quickstart spec whose two agents (Architect, Tester) run `command` through
/// `sh -c`; `model` is the `[model]` section, `env` the agents' extra environment, `extra` any
/// further TOML. Written to `dir/config.toml`.
pub fn command_config(
    dir: &Path,
    model: &str,
    command: &str,
    env: &[(&str, &str)],
    extra: &str,
) -> PathBuf {
    let spec = root().join("system_tests/long_running/projects/quickstart");
    // Phases end when their tasks are done (quick) and exit codes stand (no task checks); a
    // test that wants time boxes or task checks says so.
    let scheduling = if extra.contains("[scheduling]") {
        ""
    } else {
        "[scheduling]\nphase_end = \"tasks_done\"\ntask_check = \"none\"\n"
    };
    let mut env_table = String::from("[agents.env]\n");
    for (name, value) in env {
        env_table.push_str(&format!("{name} = {value:?}\n"));
    }
    let text = format!(
        r#"
[session]
duration_hours = 1
agent_count = 2
project_type = "quickstart"

[agent]
concurrent_agents = 2
roles = ["Architect", "Tester"]
max_total_agents = 2

[limits]
max_test_runtime_min = 1

[project]
spec_dir = {spec:?}

{model}

[agents]
kind = "command"
command = {command:?}
stop_grace_secs = 0.5
max_task_attempts = 1

{env_table}
{scheduling}
{extra}
"#,
        spec = spec.display().to_string(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One integer from `session.db` (`SELECT COUNT(*) …`, `SUM(…)`); `params` bind `?1`, `?2`, ….
pub fn scalar(session: &Path, sql: &str, params: &[&str]) -> i64 {
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    db.query_row(sql, rusqlite::params_from_iter(params), |r| {
        r.get::<_, Option<i64>>(0)
    })
    .unwrap()
    .unwrap_or(0)
}

/// Panics, showing megatest's stderr, unless `output` exited with `code`.
pub fn assert_exit(output: &std::process::Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `megatest checkpoints --verify SESSION`: (exit code, the table it printed).
pub fn verify(session: &Path) -> (Option<i32>, String) {
    let output = megatest()
        .args(["checkpoints", "--verify"])
        .arg(session)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The success criterion named exactly `name` in a `final_report.json` (panics when absent).
pub fn criterion<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["success_criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"] == name)
        .unwrap_or_else(|| panic!("no criterion {name:?} in {}", report["success_criteria"]))
}

/// Debian's chromium, where installed (`.ci/run` installs it; under CI its absence fails).
pub fn chromium() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing under CI (.ci/run installs it)"
        );
        eprintln!("skipped the browser part: chromium is not installed (.ci/run installs it)");
    }
    found
}
