//! Agents: how an agent process is started for one task.
//!
//! Two kinds ([`crate::config::raw::AgentKind`]): `builtin` runs `megatest agent`
//! ([`reference`](mod@reference)), megatest's reference tool-calling agent; `command` runs any agent CLI from a
//! command template or a documented [`PRESETS`] entry. Either way the process sees only
//! megatest's model endpoint and its own per-agent key, never the provider's key.

pub mod presets;
pub mod reference;

pub use presets::{preset, Preset, ToolCalls, PRESETS};

/// Values substituted into a command template; each is shell-quoted when substituted.
#[derive(Debug, Clone)]
pub struct CommandVars<'a> {
    /// `{prompt_file}`: the task's prompt file.
    pub prompt_file: &'a str,
    /// `{workspace}`: the project directory.
    pub workspace: &'a str,
    /// `{model}`: the model name to ask for.
    pub model: &'a str,
    /// `{base_url}`: the proxy's OpenAI-style base URL.
    pub base_url: &'a str,
    /// `{agent_id}`: `agent-1`, ….
    pub agent_id: &'a str,
    /// `{task_id}`: the task's id.
    pub task_id: &'a str,
    /// `{agent_config}`: the per-agent config file megatest writes (selfware.toml: endpoint, model).
    pub agent_config: &'a str,
    /// `{agent_dir}`: the agent's own directory (`agents/<id>/`: its home, trajectories,
    /// histories).
    pub agent_dir: &'a str,
}

/// Substitute `{prompt_file}`, `{workspace}`, `{model}`, `{base_url}`, `{agent_id}`,
/// `{task_id}`, `{agent_config}`, `{agent_dir}` in `template`, each value single-quoted for `sh`.
pub fn render_command(template: &str, vars: &CommandVars<'_>) -> String {
    let pairs = [
        ("{prompt_file}", vars.prompt_file),
        ("{workspace}", vars.workspace),
        ("{model}", vars.model),
        ("{base_url}", vars.base_url),
        ("{agent_id}", vars.agent_id),
        ("{task_id}", vars.task_id),
        ("{agent_config}", vars.agent_config),
        ("{agent_dir}", vars.agent_dir),
    ];
    let mut out = template.to_string();
    for (placeholder, value) in pairs {
        out = out.replace(placeholder, &shell_quote(value));
    }
    out
}

/// Quote `value` as one `sh` word.
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        return value.to_string();
    }
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Environment variables inherited from megatest by agent processes and phase checks: what a
/// toolchain needs to run, nothing that could carry a credential.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TZ",
    "TMPDIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "PYENV_ROOT",
    "VIRTUAL_ENV",
    "GOPATH",
    "GOROOT",
    "JAVA_HOME",
    "NODE_PATH",
];

/// The environment of the calling process reduced to [`INHERITED_ENV`].
pub fn inherited_env() -> Vec<(String, String)> {
    INHERITED_ENV
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
        .collect()
}

/// `env` with `HOME` moved to `home` (the agent's own, `agents/<id>/home`): CLIs keep their
/// state, histories and caches there instead of in the user's home. The toolchain homes that
/// default to the user's home (`CARGO_HOME`, `RUSTUP_HOME`, `PYENV_ROOT`) are pinned to where
/// they were, so compilers and interpreters keep working, and so is git's global config
/// (`GIT_CONFIG_GLOBAL`: the user's identity for commits); `XDG_*` directories are not inherited
/// and so follow `HOME`.
pub fn with_own_home(env: &mut Vec<(String, String)>, home: &std::path::Path) {
    let user_home = env
        .iter()
        .find(|(name, _)| name == "HOME")
        .map(|(_, value)| std::path::PathBuf::from(value));
    if let Some(user_home) = user_home {
        for (name, default) in [
            ("CARGO_HOME", ".cargo"),
            ("RUSTUP_HOME", ".rustup"),
            ("PYENV_ROOT", ".pyenv"),
            ("GIT_CONFIG_GLOBAL", ".gitconfig"),
        ] {
            if !env.iter().any(|(n, _)| n == name) {
                env.push((
                    name.to_string(),
                    user_home.join(default).to_string_lossy().into_owned(),
                ));
            }
        }
    }
    env.retain(|(name, _)| name != "HOME");
    env.push(("HOME".into(), home.to_string_lossy().into_owned()));
}

/// The model endpoint settings an agent process gets: base URLs for OpenAI- and
/// Anthropic-style clients, the per-agent key under every name those clients read, and
/// megatest's own `MEGATEST_*` variables — among them where an agent whose tools are not native
/// function calls reports its tool calls: `MEGATEST_EVENTS_URL` (POST, agent key) or
/// `MEGATEST_EVENTS_FILE` (append JSON lines `{"type": "tool_call", "name": "bash"}`). The
/// session adds `MEGATEST_API_URL` (the control API: `/api/agent/notes`, `/api/agent/votes`,
/// `/api/agent/task_done` with the same key) when the API is on.
pub fn agent_env(
    proxy_root: &str,
    agent_key: &str,
    model: &str,
    agent_id: &str,
    role: &str,
    task_id: &str,
    events_file: &str,
) -> Vec<(String, String)> {
    let v1 = format!("{proxy_root}/v1");
    let events_url = format!("{v1}/megatest/events");
    [
        ("OPENAI_BASE_URL", v1.as_str()),
        ("OPENAI_API_BASE", v1.as_str()),
        ("OPENAI_API_KEY", agent_key),
        ("ANTHROPIC_BASE_URL", proxy_root),
        ("ANTHROPIC_API_KEY", agent_key),
        ("SELFWARE_API_KEY", agent_key),
        ("MSWEA_CONFIGURED", "true"),
        ("MEGATEST_BASE_URL", v1.as_str()),
        ("MEGATEST_AGENT_KEY", agent_key),
        ("MEGATEST_MODEL", model),
        ("MEGATEST_AGENT_ID", agent_id),
        ("MEGATEST_ROLE", role),
        ("MEGATEST_TASK_ID", task_id),
        ("MEGATEST_EVENTS_URL", events_url.as_str()),
        ("MEGATEST_EVENTS_FILE", events_file),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_quotes_every_value() {
        let vars = CommandVars {
            prompt_file: "/tmp/a b.md",
            workspace: "/w",
            model: "gpt-4o",
            base_url: "http://127.0.0.1:1/v1",
            agent_id: "agent-1",
            task_id: "t'1",
            agent_config: "/c.toml",
            agent_dir: "/a",
        };
        let out = render_command("x {prompt_file} {task_id} {model}", &vars);
        assert_eq!(out, r"x '/tmp/a b.md' 't'\''1' gpt-4o");
    }

    #[test]
    fn an_own_home_keeps_the_toolchains_where_they_were() {
        let mut env = vec![
            ("HOME".to_string(), "/home/u".to_string()),
            ("CARGO_HOME".to_string(), "/opt/cargo".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        with_own_home(&mut env, std::path::Path::new("/s/agents/agent-1/home"));
        let get = |name: &str| {
            env.iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("HOME"), ["/s/agents/agent-1/home"]);
        assert_eq!(get("CARGO_HOME"), ["/opt/cargo"]);
        assert_eq!(get("RUSTUP_HOME"), ["/home/u/.rustup"]);
        assert_eq!(get("PYENV_ROOT"), ["/home/u/.pyenv"]);
        assert_eq!(get("GIT_CONFIG_GLOBAL"), ["/home/u/.gitconfig"]);
        assert_eq!(get("PATH"), ["/bin"]);
    }
}
