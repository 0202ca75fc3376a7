//! Presets: documented command templates for the agent CLIs megatest's users bring
//! (`[agents].preset`), each proven against the real CLI at the version it names
//! (`tests/it/agent_clis.rs` installs that version from its registry and runs a session through
//! it against a stand-in provider).
//!
//! A preset is data: the template run with `sh -c` in the workspace, the environment that keeps
//! the CLI offline-friendly and its state in the agent's own directory, how its version is read,
//! and whether the CLI's model answers carry tool calls at all. [`version_of`] and
//! [`check_installed`] are the only IO (running `<program> --version`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where a preset's tool calls come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolCalls {
    /// Native tool calls in the model's answers (counted by the proxy).
    Native,
    /// The CLI's model answers carry no tool calls (edit blocks, shell blocks in text) and the
    /// CLI reports none: a session with no counted tool call reports `null` with this reason,
    /// not 0. An agent may still report its actions through `MEGATEST_EVENTS_FILE`.
    NotReported(&'static str),
}

/// The registry release a preset was proven with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proven {
    /// `PyPI`, `npm` or `crates.io`.
    pub registry: &'static str,
    /// The package name in that registry.
    pub package: &'static str,
    /// The exact version the integration test installs.
    pub version: &'static str,
}

impl Proven {
    /// The command that installs exactly this version.
    pub fn install_command(&self) -> String {
        match self.registry {
            "PyPI" => format!("pip install {}=={}", self.package, self.version),
            "npm" => format!("npm install -g {}@{}", self.package, self.version),
            _ => format!(
                "cargo install --locked {} --version {}",
                self.package, self.version
            ),
        }
    }
}

/// A documented command template for a known agent CLI.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// The `[agents].preset` name.
    pub name: &'static str,
    /// The CLI's executable (looked up on `PATH`).
    pub program: &'static str,
    /// Run with `sh -c` in the workspace; placeholders as in [`super::render_command`].
    pub template: &'static str,
    /// Environment the preset adds for every run (before `[agents.env]`, which wins):
    /// offline-friendly defaults (no update checks, no price-list downloads, no telemetry).
    pub env: &'static [(&'static str, &'static str)],
    /// The release the preset was proven with.
    pub proven: Proven,
    /// Where its tool calls come from.
    pub tool_calls: ToolCalls,
    /// What the operator should know (shown by `megatest presets` and at `megatest run`).
    pub notes: &'static str,
}

/// Presets for common agent CLIs. Each reaches megatest through the environment set in
/// [`super::agent_env`] (`OPENAI_BASE_URL`, `OPENAI_API_BASE`, `ANTHROPIC_BASE_URL`, their keys)
/// or through flags in its template; each run has `HOME` = `agents/<id>/home`, so the CLI's
/// own state (trajectories, transcripts, histories, caches) stays with its agent.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "mini-swe-agent",
        program: "mini",
        template: "mini --yolo --exit-immediately --model openai/{model} --output {agent_dir}/trajectories/{task_id}.traj.json --task \"$(cat {prompt_file})\"",
        env: &[
            // Any model name (Ollama, vLLM, LM Studio names are missing from LiteLLM's price
            // table): without this every run exits 1 on the first answer.
            ("MSWEA_COST_TRACKING", "ignore_errors"),
            // LiteLLM's bundled price list instead of a download at every start.
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        ],
        proven: Proven {
            registry: "PyPI",
            package: "mini-swe-agent",
            version: "2.4.6",
        },
        tool_calls: ToolCalls::Native,
        notes: "mini-swe-agent's `mini` (LiteLLM, chat completions): one bash tool; each task's trajectory is agents/<id>/trajectories/<task>.traj.json",
    },
    Preset {
        name: "aider",
        program: "aider",
        template: "aider --yes-always --no-git --no-auto-commits --no-show-model-warnings --no-check-update --no-show-release-notes --analytics-disable --map-tokens 0 --chat-history-file {agent_dir}/aider.chat.history.md --input-history-file {agent_dir}/aider.input.history --model openai/{model} --openai-api-base {base_url} --message-file {prompt_file}",
        env: &[
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
            ("AIDER_CHECK_UPDATE", "false"),
            ("AIDER_ANALYTICS_DISABLE", "true"),
        ],
        proven: Proven {
            registry: "PyPI",
            package: "aider-chat",
            version: "0.86.2",
        },
        tool_calls: ToolCalls::NotReported(
            "aider edits files through edit blocks in its answers, not tool calls, and reports none",
        ),
        notes: "aider (LiteLLM, chat completions); its histories go to agents/<id>/, not the workspace; no repository map (--map-tokens 0), no git",
    },
    Preset {
        name: "claude-code",
        program: "claude",
        template: "claude -p --dangerously-skip-permissions --model {model} < {prompt_file}",
        env: &[
            // As root (containers, CI) claude refuses --dangerously-skip-permissions unless it
            // is told it runs in a sandbox.
            ("IS_SANDBOX", "1"),
            // Otherwise it calls api.anthropic.com directly (past the proxy) and makes extra
            // title calls.
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_TELEMETRY", "1"),
            ("DISABLE_ERROR_REPORTING", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
        ],
        proven: Proven {
            registry: "npm",
            package: "@anthropic-ai/claude-code",
            version: "2.1.197",
        },
        tool_calls: ToolCalls::Native,
        notes: "Claude Code headless (Anthropic Messages, streamed, through ANTHROPIC_BASE_URL); transcripts under agents/<id>/home/.claude",
    },
    Preset {
        name: "codex",
        program: "codex",
        template: "codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox -c model_provider=megatest -c model_providers.megatest.name=megatest -c model_providers.megatest.base_url={base_url} -c model_providers.megatest.env_key=OPENAI_API_KEY -c model_providers.megatest.wire_api=responses --model {model} - < {prompt_file}",
        env: &[],
        proven: Proven {
            registry: "npm",
            package: "@openai/codex",
            version: "0.171.0",
        },
        tool_calls: ToolCalls::Native,
        notes: "OpenAI Codex CLI non-interactive (Responses API, streamed) with a model provider of its own pointing at megatest (codex ignores OPENAI_BASE_URL); freeform tools such as apply_patch count as tool calls; codex's own sandbox is off (use [agents] sandbox); state under agents/<id>/home/.codex",
    },
    Preset {
        name: "selfware",
        program: "selfware",
        template: "selfware --config {agent_config} --yolo -p - < {prompt_file}",
        env: &[],
        proven: Proven {
            registry: "crates.io",
            package: "selfware",
            version: "0.9.9",
        },
        tool_calls: ToolCalls::Native,
        notes: "Selfware headless (chat completions); {agent_config} is the per-agent selfware.toml megatest writes (endpoint, model, key, native function calls on); its completion gate wants a passing test run after the last edit; state under agents/<id>/home",
    },
];

/// The preset named `name`.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The first `N.N[.N…]` version number in a CLI's `--version` output (`aider 0.86.2`,
/// `codex-cli 0.171.0`, `2.1.197 (Claude Code)`), without a leading `v`.
pub fn parse_version(output: &str) -> Option<String> {
    output
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .map(|word| {
            word.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .trim_start_matches('v')
        })
        .find(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() >= 2
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
        .map(String::from)
}

/// How long `<program> --version` may take (wall seconds; some CLIs start slowly offline).
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(20);

/// The installed CLI's version: `Ok(Some(version))`, `Ok(None)` when it answered without one,
/// `Err` when it is not on `path` (the agents' `PATH`) or did not answer in
/// [`VERSION_TIMEOUT`]. `home` is a scratch `HOME` so that the probe leaves nothing in the
/// user's.
pub fn version_of(preset: &Preset, path: &str, home: &Path) -> Result<Option<String>, String> {
    let program = std::env::split_paths(path)
        .map(|dir| dir.join(preset.program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("`{}` is not on PATH", preset.program))?;
    let mut child = Command::new(&program)
        .arg("--version")
        .env("PATH", path)
        .env("HOME", home)
        .envs(preset.env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("{} --version: {err}", program.display()))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < VERSION_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(50))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --version did not answer within {} s",
                    program.display(),
                    VERSION_TIMEOUT.as_secs()
                ));
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|err| format!("{} --version: {err}", program.display()))?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(parse_version(&text))
}

/// `probe` run with a scratch `HOME` for `--version` probes (`$TMPDIR/megatest-version-<pid>`,
/// removed afterwards), so that they leave nothing in the user's; None when it cannot be made.
pub fn with_scratch_home<T>(probe: impl FnOnce(&Path) -> T) -> Option<T> {
    let home = std::env::temp_dir().join(format!("megatest-version-{}", std::process::id()));
    std::fs::create_dir_all(&home).ok()?;
    let out = probe(&home);
    let _ = std::fs::remove_dir_all(&home);
    Some(out)
}

/// What `megatest run` says about the installed CLI: None when it is the proven version,
/// otherwise a warning (a different or unknown version, or not installed, with the install
/// command).
pub fn check_installed(preset: &Preset, path: &str, home: &Path) -> Option<String> {
    warning_for(preset, &version_of(preset, path, home))
}

/// The warning for an installed version as [`version_of`] found it (the pure core of
/// [`check_installed`]).
pub fn warning_for(preset: &Preset, installed: &Result<Option<String>, String>) -> Option<String> {
    let proven = preset.proven;
    match installed {
        Ok(Some(version)) if *version == proven.version => None,
        Ok(Some(version)) => Some(format!(
            "preset {:?}: `{}` is version {version}; the preset was proven with {} {} ({})",
            preset.name,
            preset.program,
            proven.package,
            proven.version,
            proven.install_command()
        )),
        Ok(None) => Some(format!(
            "preset {:?}: `{} --version` printed no version; the preset was proven with {} {}",
            preset.name, preset.program, proven.package, proven.version
        )),
        Err(reason) => Some(format!(
            "preset {:?}: {reason}; install it with `{}`",
            preset.name,
            proven.install_command()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_what_the_clis_print() {
        assert_eq!(parse_version("aider 0.86.2\n").as_deref(), Some("0.86.2"));
        assert_eq!(
            parse_version("codex-cli 0.171.0").as_deref(),
            Some("0.171.0")
        );
        assert_eq!(
            parse_version("2.1.197 (Claude Code)").as_deref(),
            Some("2.1.197")
        );
        assert_eq!(parse_version("selfware v0.9.9").as_deref(), Some("0.9.9"));
        assert_eq!(
            parse_version("This is mini-swe-agent version 2.4.6.\nCheck the v2 guide").as_deref(),
            Some("2.4.6")
        );
        assert_eq!(parse_version("mini-swe-agent, no version here"), None);
    }

    #[test]
    fn every_preset_is_complete() {
        for preset in PRESETS {
            assert!(preset.template.contains("{prompt_file}"), "{}", preset.name);
            assert!(
                preset.template.starts_with(preset.program),
                "{} runs {}",
                preset.name,
                preset.program
            );
            assert!(parse_version(preset.proven.version).is_some());
            assert!(!preset.notes.is_empty());
        }
    }

    #[test]
    fn a_missing_cli_is_named_with_its_install_command() {
        let dir = tempfile::tempdir().unwrap();
        let aider = preset("aider").unwrap();
        let path = dir.path().to_string_lossy().into_owned();
        let warning = check_installed(aider, &path, dir.path()).unwrap();
        assert!(warning.contains("`aider` is not on PATH"), "{warning}");
        assert!(
            warning.contains("pip install aider-chat==0.86.2"),
            "{warning}"
        );
    }

    #[test]
    fn a_different_version_is_named_beside_the_proven_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("codex");
        std::fs::write(&fake, "#!/bin/sh\necho codex-cli 9.9.9\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let codex = preset("codex").unwrap();
        let path = format!("{}:/usr/bin:/bin", dir.path().display());
        let warning = check_installed(codex, &path, dir.path()).unwrap();
        assert!(warning.contains("version 9.9.9"), "{warning}");
        assert!(warning.contains("@openai/codex 0.171.0"), "{warning}");
        std::fs::write(&fake, "#!/bin/sh\necho codex-cli 0.171.0\n").unwrap();
        assert_eq!(check_installed(codex, &path, dir.path()), None);
    }
}
