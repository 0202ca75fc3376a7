//! Project specs: what the agents build (`system_tests/long_running/projects/<type>/`).
//!
//! A spec directory holds `spec.toml` (name, the interface contract's build / test / start
//! commands, and the phase task plan), `REQUIREMENTS.md` and `CONTRACT.md` (handed to every agent
//! in its prompt), and optionally `script.toml` (the tool calls the `scripted` model replays,
//! with file contents under `files/`).

/// A project spec or script that cannot be used: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is read but not a valid spec or script (syntax, unknown keys, a broken plan).
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the task it concerns.
        problem: String,
    },
}

/// `Result` with a [`SpecError`].
pub type Result<T, E = SpecError> = std::result::Result<T, E>;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| SpecError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, problem: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Directories of a workspace that hold build output, dependencies or VCS internals, never
/// the agents' work: not counted as code, not snapshotted.
pub const GENERATED_DIRS: &[&str] = &[
    "target",
    "node_modules",
    ".venv",
    "venv",
    "__pycache__",
    ".git",
    ".mypy_cache",
    ".pytest_cache",
];

/// Where project specs live relative to the repository root.
pub const PROJECTS_SUBDIR: &str = "system_tests/long_running/projects";

/// A loaded project spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    /// Display name, e.g. "RedQueue".
    pub name: String,
    /// One-paragraph description.
    pub description: String,
    /// The language the contract asks for (informative).
    pub language: String,
    /// The contract's commands.
    pub commands: Commands,
    /// The phase plan's tasks, in order.
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
    /// The spec's directory (set when loaded).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// The interface contract's commands, run with `sh -c` in `project/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    /// Builds the project (a phase check).
    pub build: String,
    /// Runs the agents' own tests (a phase check).
    pub test: String,
    /// Starts the built service (for acceptance suites).
    #[serde(default)]
    pub start: Option<String>,
    /// Prints line coverage (last number of its output, see `eval::parse_coverage`).
    #[serde(default)]
    pub coverage: Option<String>,
}

/// One task of the phase plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique within the spec, e.g. `dev-queue-core`.
    pub id: String,
    /// The phase (by name) whose board the task goes on.
    pub phase: String,
    /// The role that should take it; any agent takes it when no agent has this role.
    pub role: String,
    /// One-line title.
    pub title: String,
    /// What the agent is asked to do.
    pub prompt: String,
    /// Tasks of the same phase that must be done first.
    #[serde(default)]
    pub after: Vec<String>,
    /// Confirms the task is done when no review judges it (`[scheduling].task_check`): a shell
    /// command run in `project/`, exit 0 = confirmed. None: the spec's build command.
    #[serde(default)]
    pub check: Option<String>,
}

impl ProjectSpec {
    /// Load `dir/spec.toml` and check the plan (unique ids, `after` within the same phase).
    pub fn load(dir: &Path) -> Result<ProjectSpec> {
        let path = dir.join("spec.toml");
        let text = read(&path)?;
        let mut spec: ProjectSpec =
            toml::from_str(&text).map_err(|err| invalid(&path, err.to_string()))?;
        spec.dir = dir.to_path_buf();
        let mut ids = std::collections::BTreeMap::new();
        for task in &spec.tasks {
            if ids.insert(task.id.clone(), task.phase.clone()).is_some() {
                return Err(invalid(
                    &path,
                    format!("task id {:?} appears twice", task.id),
                ));
            }
        }
        for task in &spec.tasks {
            for dep in &task.after {
                match ids.get(dep) {
                    Some(phase) if *phase == task.phase => {}
                    _ => {
                        return Err(invalid(
                            &path,
                            format!(
                                "task {:?} waits for {:?}, which is not a task of phase {:?}",
                                task.id, dep, task.phase
                            ),
                        ))
                    }
                }
            }
        }
        Ok(spec)
    }

    /// Text of a file of the spec (REQUIREMENTS.md, CONTRACT.md), empty when absent.
    pub fn doc(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// The tasks planned for `phase`.
    pub fn tasks_of<'a>(&'a self, phase: &'a str) -> impl Iterator<Item = &'a TaskSpec> + 'a {
        self.tasks.iter().filter(move |t| t.phase == phase)
    }
}

/// Candidate directories holding project specs, in search order: `$MEGATEST_PROJECTS_DIR`,
/// next to the config file's parent (`configs/../system_tests/…`), the current directory, and the
/// source tree megatest was built from.
fn spec_roots(config_dir: &Path) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(dir) = std::env::var_os("MEGATEST_PROJECTS_DIR") {
        roots.push(PathBuf::from(dir));
    }
    roots.push(config_dir.join("..").join(PROJECTS_SUBDIR));
    roots.push(config_dir.join(PROJECTS_SUBDIR));
    roots.push(PathBuf::from(PROJECTS_SUBDIR));
    roots.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(PROJECTS_SUBDIR));
    roots
}

/// The spec directory for project type `name`, if one exists.
pub fn find_spec_dir(name: &str, config_dir: &Path) -> Option<PathBuf> {
    spec_roots(config_dir)
        .into_iter()
        .map(|root| root.join(name))
        .find(|dir| dir.join("spec.toml").is_file())
        .map(|dir| dir.canonicalize().unwrap_or(dir))
}

/// Names of the project types found, for error messages.
pub fn known_project_types(config_dir: &Path) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for root in spec_roots(config_dir) {
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                if entry.path().join("spec.toml").is_file() {
                    names.insert(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
    }
    names.into_iter().collect()
}

/// One step of a `script.toml` task: a tool call the `scripted` model answers with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    /// Tool name (`write_file`, `run_command`, …).
    pub tool: String,
    /// Arguments; `content_file = "files/x"` is replaced by `content = <that file's text>`.
    #[serde(default)]
    pub args: toml::Table,
}

/// One task of a scripted model's `script.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTask {
    /// The task id it answers.
    pub id: String,
    /// Its tool calls, in order.
    #[serde(default)]
    pub steps: Vec<ScriptStep>,
    /// The `finish` summary.
    #[serde(default)]
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    #[serde(default)]
    task: Vec<ScriptTask>,
}

/// The scripted model's script: per task id, the tool calls with their JSON arguments, resolved.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Per task id: (tool name, JSON arguments) of each call.
    pub tasks: std::collections::BTreeMap<String, Vec<(String, serde_json::Value)>>,
    /// Per task id: the `finish` summary.
    pub summaries: std::collections::BTreeMap<String, String>,
}

impl Script {
    /// Load `dir/script.toml`, inlining every `content_file`. Errors name the file and task.
    pub fn load(dir: &Path) -> Result<Script> {
        let path = dir.join("script.toml");
        let text = read(&path)?;
        let file: ScriptFile =
            toml::from_str(&text).map_err(|err| invalid(&path, err.to_string()))?;
        let mut script = Script::default();
        for task in file.task {
            let mut steps = Vec::new();
            for step in task.steps {
                let mut args = step.args.clone();
                if let Some(toml::Value::String(file)) = args.remove("content_file") {
                    let content = std::fs::read_to_string(dir.join(&file)).map_err(|err| {
                        invalid(
                            &path,
                            format!("task {:?}: content_file {file:?}: {err}", task.id),
                        )
                    })?;
                    args.insert("content".into(), toml::Value::String(content));
                }
                let json = serde_json::to_value(&args)
                    .map_err(|err| invalid(&path, format!("task {:?}: {err}", task.id)))?;
                steps.push((step.tool, json));
            }
            if let Some(summary) = task.summary {
                script.summaries.insert(task.id.clone(), summary);
            }
            script.tasks.insert(task.id, steps);
        }
        Ok(script)
    }
}
