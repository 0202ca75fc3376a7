//! The agents' sandbox (`[agents].sandbox = "bwrap"`): every run under bubblewrap, which sees
//! the filesystem read-only (the host's `/tmp` too: scripts and fixtures there stay readable),
//! its workspace and its own directory (`agents/<id>/`, with its `HOME` and its `TMPDIR`)
//! read-write, and neither the rest of the session directory
//! (`api.token`, `session.db`, checkpoints, other agents' files) nor megatest's project specs and
//! acceptance suites. The network is shared: megatest's model endpoint and control API on
//! loopback stay reachable. Processes keep megatest's pid namespace, so process groups,
//! freezing and the escapee sweep work as without it.
//!
//! The pure core is [`bwrap_args`]; [`probe`] checks once that bubblewrap runs here (it needs
//! unprivileged user namespaces or a setuid `bwrap`).

use super::LaunchSpec;
use std::path::{Path, PathBuf};

/// What one sandboxed run may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPlan {
    /// The session directory: hidden, except for what follows.
    pub session_dir: PathBuf,
    /// The workspace (read-write).
    pub workspace: PathBuf,
    /// The agent's own directory (read-write; its `HOME` is `home/` and its `TMPDIR` `tmp/` in
    /// it).
    pub agent_dir: PathBuf,
    /// The session's `bin/` (megatest's helper commands; read-only).
    pub bin_dir: Option<PathBuf>,
    /// Directories hidden behind an empty one (the project specs with their acceptance suites).
    pub hidden: Vec<PathBuf>,
}

/// The bubblewrap program.
pub const BWRAP: &str = "bwrap";

/// The `sh -c` script that execs bubblewrap with SIGTERM ignored (see [`wrap`]).
const SHIELD: &str = "trap '' TERM; exec \"$@\"";

/// `spec` run inside the sandbox `plan` describes: the program becomes `bwrap` with its mounts,
/// then `--`, the original program and arguments. The environment and working directory stay;
/// `HOME` and `TMPDIR` become the agent's own ([`home_of`], [`tmp_of`]; created by the caller).
///
/// Signals: the run's process group holds bubblewrap's monitor process as well as the agent.
/// bubblewrap starts with SIGTERM ignored (set by the `sh` that execs it) so that a stop's
/// SIGTERM reaches only the agent, which gets SIGTERM's default back (`env
/// --default-signal=TERM`, GNU coreutils ≥ 8.31) before its program starts; bubblewrap then
/// ends with the agent, and an agent that ignores SIGTERM is killed with the whole group after
/// the grace (recorded as signal 9, as without the sandbox). An agent killed by signal N is
/// reported by bubblewrap as exit code 128 + N.
pub fn wrap(spec: &LaunchSpec, plan: &SandboxPlan) -> LaunchSpec {
    let mut args: Vec<String> = [SHIELD, "megatest-sandbox", BWRAP]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.insert(0, "-c".into());
    args.extend(bwrap_args(plan, &spec.cwd));
    args.extend(["--", "env", "--default-signal=TERM", "--"].map(String::from));
    args.push(spec.program.to_string_lossy().into_owned());
    args.extend(spec.args.iter().cloned());
    let home = home_of(plan);
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(name, _)| name != "HOME" && name != "TMPDIR")
        .cloned()
        .collect();
    env.push(("HOME".into(), home.to_string_lossy().into_owned()));
    env.push(("TMPDIR".into(), tmp_of(plan).to_string_lossy().into_owned()));
    LaunchSpec {
        program: PathBuf::from("sh"),
        args,
        env,
        cwd: spec.cwd.clone(),
        log_path: spec.log_path.clone(),
        limits: spec.limits,
    }
}

/// The agent's `HOME` inside the sandbox.
pub fn home_of(plan: &SandboxPlan) -> PathBuf {
    plan.agent_dir.join("home")
}

/// The agent's `TMPDIR` inside the sandbox.
pub fn tmp_of(plan: &SandboxPlan) -> PathBuf {
    plan.agent_dir.join("tmp")
}

/// bubblewrap's options for `plan` (the pure core): the root read-only, devices, the session
/// directory and the hidden directories replaced by empty ones, then the workspace and the
/// agent's directory bound back read-write and `bin/` read-only.
pub fn bwrap_args(plan: &SandboxPlan, cwd: &Path) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut args: Vec<String> = ["--ro-bind", "/", "/", "--dev", "/dev"]
        .map(String::from)
        .to_vec();
    for hidden in std::iter::once(&plan.session_dir).chain(&plan.hidden) {
        args.extend(["--tmpfs".into(), path(hidden)]);
    }
    args.extend([
        "--bind".into(),
        path(&plan.workspace),
        path(&plan.workspace),
    ]);
    args.extend([
        "--bind".into(),
        path(&plan.agent_dir),
        path(&plan.agent_dir),
    ]);
    if let Some(bin) = &plan.bin_dir {
        args.extend(["--ro-bind".into(), path(bin), path(bin)]);
    }
    args.extend(["--chdir".into(), path(cwd)]);
    args
}

/// Ok when bubblewrap can start a process here; Err says why not (not installed, no user
/// namespaces).
pub fn probe() -> Result<(), String> {
    let output = std::process::Command::new(BWRAP)
        .args(["--ro-bind", "/", "/", "--dev", "/dev", "--"])
        .args(["env", "--default-signal=TERM", "--", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|err| format!("`{BWRAP}` cannot be started ({err}): install bubblewrap"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{BWRAP}` fails here ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_hidden_and_the_workspace_and_agent_directory_bound_back() {
        let plan = SandboxPlan {
            session_dir: "/runs/s".into(),
            workspace: "/runs/s/project".into(),
            agent_dir: "/runs/s/agents/agent-0".into(),
            bin_dir: Some("/runs/s/bin".into()),
            hidden: vec!["/repo/projects".into()],
        };
        let spec = LaunchSpec {
            program: "sh".into(),
            args: vec!["-c".into(), "make".into()],
            env: vec![
                ("HOME".into(), "/home/u".into()),
                ("PATH".into(), "/usr/bin".into()),
            ],
            cwd: "/runs/s/project".into(),
            log_path: "/runs/s/agents/agent-0/agent.log".into(),
            limits: Default::default(),
        };
        let wrapped = wrap(&spec, &plan);
        assert_eq!(wrapped.program, PathBuf::from("sh"));
        assert_eq!(
            wrapped.args[..4],
            ["-c", SHIELD, "megatest-sandbox", "bwrap"]
        );
        assert_eq!(
            wrapped.args[4..].join(" "),
            "--ro-bind / / --dev /dev --tmpfs /runs/s --tmpfs /repo/projects \
             --bind /runs/s/project /runs/s/project \
             --bind /runs/s/agents/agent-0 /runs/s/agents/agent-0 \
             --ro-bind /runs/s/bin /runs/s/bin --chdir /runs/s/project \
             -- env --default-signal=TERM -- sh -c make"
        );
        assert_eq!(
            wrapped.env,
            vec![
                ("PATH".to_string(), "/usr/bin".to_string()),
                (
                    "HOME".to_string(),
                    "/runs/s/agents/agent-0/home".to_string()
                ),
                (
                    "TMPDIR".to_string(),
                    "/runs/s/agents/agent-0/tmp".to_string()
                )
            ]
        );
    }
}
