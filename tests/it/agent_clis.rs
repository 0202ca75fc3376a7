//! Every preset driven through megatest with the real agent CLI, installed from its registry
//! at the version the preset names (cached under `target/agent-clis/`), against a stand-in
//! provider that speaks the CLI's wire format and walks it through its task
//! (`tests/it/probes/provider.py`): the tasks are done, the ledger equals the usage the provider
//! sent, tool calls are counted (or null with the reason), no provider key reaches the agent,
//! the CLI's state stays in the agent's directory, and nothing survives the session.

use crate::support::*;
use megatest::agent::presets::{preset, Proven, ToolCalls};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROVIDER_KEY: &str = "sk-provider-9f4c1e7a";

/// A directory holding only the preset's program, installed from its registry at the proven
/// version (once; later runs reuse `target/agent-clis/<package>-<version>/`). One test per
/// preset, so installs of different CLIs run side by side and never of the same one.
fn installed(name: &str) -> PathBuf {
    let preset = preset(name).unwrap();
    let Proven {
        registry,
        package,
        version,
    } = preset.proven;
    let dir = root()
        .join("target/agent-clis")
        .join(format!("{}-{version}", package.replace(['@', '/'], "_")));
    let bin = dir.join("bin");
    let marker = dir.join(".installed");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let program = match registry {
            "PyPI" => {
                let venv = dir.join("venv");
                run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
                run(Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(format!("{package}=={version}")));
                venv.join("bin").join(preset.program)
            }
            "npm" => {
                run(Command::new("npm")
                    .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&dir)
                    .arg(format!("{package}@{version}")));
                dir.join("node_modules/.bin").join(preset.program)
            }
            _ => {
                // A debug build: it compiles in less than half the time of a release build
                // (measured: ~10 min against ~25 min on 2 cores), and runs fast enough here.
                run(Command::new("cargo")
                    .args(["install", "--debug", "--locked", "--quiet", "--root"])
                    .arg(dir.join("cargo"))
                    .args([package, "--version", version]));
                dir.join("cargo/bin").join(preset.program)
            }
        };
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(&program, bin.join(preset.program)).unwrap();
        std::fs::write(&marker, "").unwrap();
    }
    bin
}

fn run(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?} failed: {status}");
}

/// The stand-in provider (`probes/provider.py`) on a free loopback port.
struct Provider {
    child: std::process::Child,
    url: String,
}

impl Provider {
    fn start() -> Provider {
        let mut command = Command::new("python3");
        command
            .arg(root().join("tests/it/probes/provider.py"))
            .args(["--key", PROVIDER_KEY]);
        let (child, url) = start_listening(&mut command);
        Provider { child, url }
    }

    fn stats(&self) -> Value {
        stats_of(&self.url)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TASKS: [&str; 2] = ["cli-a", "cli-b"];

/// One phase of two tasks for two agents, run with the preset `name` against the provider;
/// (the session directory, its report, the provider's stats).
fn session_with(
    name: &str,
    provider_kind: &str,
    sandbox: &str,
    model: &str,
) -> (PathBuf, Value, Value, tempfile::TempDir) {
    let bin = installed(name);
    let provider = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec");
    std::fs::create_dir_all(&spec).unwrap();
    let mut text = String::from(
        "name = \"cli probe\"\ndescription = \"two small tasks\"\nlanguage = \"none\"\n[commands]\nbuild = \"true\"\ntest = \"true\"\n",
    );
    for task in TASKS {
        text.push_str(&format!(
            "[[tasks]]\nid = \"{task}\"\nphase = \"build\"\nrole = \"Coder\"\ntitle = \"Mark {task} done\"\nprompt = \"Create done-{task}.txt holding the task id.\"\n"
        ));
    }
    std::fs::write(spec.join("spec.toml"), text).unwrap();
    let base_url = format!("{}/v1", provider.url);
    let config = format!(
        r#"
[session]
duration_hours = 1
agent_count = 2
[agent]
concurrent_agents = 2
roles = ["Coder"]
max_total_agents = 2
[project]
spec_dir = {spec:?}
[[phases]]
name = "build"
duration_minutes = 60
[model]
provider = "{provider_kind}"
base_url = "{base_url}"
name = "{model}"
api_key_env = "MEGATEST_TEST_PROVIDER_KEY"
[agents]
kind = "command"
preset = "{name}"
max_task_attempts = 1
stop_grace_secs = 1.0
sandbox = "{sandbox}"
[scheduling]
phase_end = "tasks_done"
task_check = "none"
"#,
        spec = spec.display().to_string(),
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let runs = dir.path().join("runs");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = run_command(
        &config_path,
        &runs,
        &[],
        &[
            ("MEGATEST_TEST_PROVIDER_KEY", PROVIDER_KEY),
            ("PATH", path.as_str()),
        ],
    )
    .output()
    .unwrap();
    let session = only_session(&runs);
    let report = read_json(&session.join("final_report.json"));
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        agent_logs(&session)
    );
    let stats = provider.stats();
    (session, report, stats, dir)
}

fn agent_logs(session: &Path) -> String {
    let mut out = String::new();
    for agent in ["agent-1", "agent-2"] {
        let log = std::fs::read_to_string(session.join("agents").join(agent).join("agent.log"))
            .unwrap_or_default();
        let tail: String = log
            .chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        out.push_str(&format!("--- {agent}\n{tail}\n"));
    }
    out
}

/// What every preset must show.
fn assert_preset_ran(name: &str, session: &Path, report: &Value, stats: &Value) {
    let logs = || agent_logs(session);
    let workspace = session.join("project");
    assert_eq!(report["tasks"]["done"], 2, "{report:#}\n{}", logs());
    for task in TASKS {
        let done = std::fs::read_to_string(workspace.join(format!("done-{task}.txt")))
            .unwrap_or_else(|e| panic!("done-{task}.txt: {e}\n{}", logs()));
        assert_eq!(done.trim(), task);
    }
    // The installed CLI is the proven version: `megatest run` warned about nothing.
    let config = read_json(&session.join("config.json"));
    let warnings = config["warnings"].to_string();
    assert!(!warnings.contains("preset"), "{warnings}");
    // The ledger is what the provider sent, call for call.
    assert_eq!(stats["bad_key"], 0, "{stats}");
    assert_eq!(report["usage"]["model_calls"], stats["calls"], "{stats}");
    assert_eq!(
        report["usage"]["prompt_tokens"], stats["prompt_tokens"],
        "{stats}"
    );
    assert_eq!(
        report["usage"]["completion_tokens"], stats["completion_tokens"],
        "{stats}"
    );
    assert!(stats["calls"].as_u64().unwrap() >= 2, "{stats}");
    // Tool calls: counted exactly, or null with the reason.
    match preset(name).unwrap().tool_calls {
        ToolCalls::Native => {
            assert_eq!(
                report["tool_calls"]["value"], stats["tool_calls"],
                "{report:#}"
            );
            assert!(stats["tool_calls"].as_u64().unwrap() >= 2);
        }
        ToolCalls::NotReported(reason) => {
            assert_eq!(report["tool_calls"]["value"], Value::Null);
            assert_eq!(report["tool_calls"]["reason"], reason);
        }
    }
    // The CLI's state is in its agent's directory, not in the workspace.
    let stray: Vec<String> = std::fs::read_dir(&workspace)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".megatest")
        .collect();
    assert!(stray.is_empty(), "CLI state in the workspace: {stray:?}");
    // Nothing of the session survives it.
    let needle = session.to_string_lossy().into_owned();
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            // Its environment (unreadable across bubblewrap's user namespace) or its command
            // line (always readable: the agent's `sh -c` names its prompt file) names the
            // session.
            ["environ", "cmdline"].iter().any(|file| {
                std::fs::read(e.path().join(file))
                    .map(|text| String::from_utf8_lossy(&text).contains(&needle))
                    .unwrap_or(false)
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(survivors.is_empty(), "still running: {survivors:?}");
}

/// For agents with a shell: no environment variable held the provider key.
fn assert_no_key_seen(session: &Path) {
    for task in TASKS {
        let seen =
            std::fs::read_to_string(session.join("project").join(format!("key-seen-{task}.txt")))
                .unwrap_or_else(|e| panic!("key-seen-{task}.txt: {e}"));
        assert_eq!(seen.trim(), "0", "the provider key reached the agent");
    }
}

#[test]
fn mini_swe_agent_preset_runs_the_real_cli_with_an_exact_ledger() {
    let (session, report, stats, _dir) =
        session_with("mini-swe-agent", "openai-compatible", "none", "local-model");
    assert_preset_ran("mini-swe-agent", &session, &report, &stats);
    assert_no_key_seen(&session);
    // Each task's trajectory is kept with its agent, none in the user's home.
    let trajectories = ["agent-1", "agent-2"]
        .iter()
        .flat_map(|a| {
            std::fs::read_dir(session.join("agents").join(a).join("trajectories"))
                .into_iter()
                .flatten()
        })
        .count();
    assert_eq!(trajectories, 2);
}

#[test]
fn aider_preset_runs_the_real_cli_and_reports_its_tool_calls_as_null() {
    let (session, report, stats, _dir) =
        session_with("aider", "openai-compatible", "none", "local-model");
    assert_preset_ran("aider", &session, &report, &stats);
    let histories = ["agent-1", "agent-2"]
        .iter()
        .filter(|a| {
            session
                .join("agents")
                .join(a)
                .join("aider.chat.history.md")
                .exists()
        })
        .count();
    assert!(histories >= 1);
}

#[test]
fn codex_preset_runs_the_real_cli_through_a_provider_of_its_own() {
    // A model name codex knows to have the freeform apply_patch tool (for other names it
    // offers only exec_command).
    let (session, report, stats, _dir) =
        session_with("codex", "openai-compatible", "none", "gpt-5.5");
    assert_preset_ran("codex", &session, &report, &stats);
    assert_no_key_seen(&session);
    // apply_patch is a freeform (custom) tool: counted like function calls.
    assert_eq!(
        report["usage"]["tool_calls_by_name"]["apply_patch"], 2,
        "{report:#}"
    );
    for task in TASKS {
        assert!(session
            .join("project")
            .join(format!("patched-{task}.txt"))
            .exists());
    }
}

#[test]
fn claude_code_preset_runs_the_real_cli_under_the_sandbox() {
    let (session, report, stats, _dir) =
        session_with("claude-code", "anthropic", "auto", "claude-sonnet-4-5");
    assert_preset_ran("claude-code", &session, &report, &stats);
    assert_no_key_seen(&session);
    assert_eq!(stats["by_api"]["messages"], stats["calls"], "{stats}");
}

#[test]
fn selfware_preset_runs_the_real_cli_with_native_tool_calls() {
    let (session, report, stats, _dir) =
        session_with("selfware", "openai-compatible", "auto", "local-model");
    assert_preset_ran("selfware", &session, &report, &stats);
    assert_no_key_seen(&session);
    // megatest's per-agent selfware.toml turned native function calls on for a model name
    // selfware has no profile for.
    assert!(
        report["usage"]["tool_calls_by_name"]["shell_exec"]
            .as_u64()
            .unwrap()
            >= 2
    );
}

#[test]
fn megatest_presets_lists_the_proven_and_the_installed_versions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("codex");
    std::fs::write(&fake, "#!/bin/sh\necho codex-cli 9.9.9\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = megatest()
        .args(["presets", "--json"])
        .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let rows: Value = serde_json::from_slice(&output.stdout).unwrap();
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let codex = row("codex");
    assert_eq!(codex["installed"], "9.9.9");
    assert_eq!(codex["proven_with"]["version"], "0.171.0");
    assert!(codex["warning"].as_str().unwrap().contains("version 9.9.9"));
    let aider = row("aider");
    assert!(aider["installed"].as_str().unwrap().contains("not on PATH"));
    assert_eq!(
        aider["proven_with"]["install"],
        "pip install aider-chat==0.86.2"
    );
    assert!(aider["tool_calls"].as_str().unwrap().starts_with("null: "));
    assert_eq!(rows.as_array().unwrap().len(), 5);
}
