//! Configuration: parse the raw TOML ([`raw::RawConfig`]), apply command-line / environment
//! overrides, then validate into a [`Config`] that cannot hold nonsense.
//!
//! Errors name the file, the dotted key, the line and the column ([`ConfigError`]); nothing is
//! created on disk before a config validates. Ranges are the upstream file's comments:
//! `duration_hours` 1–24, `agent_count` 2–16, positive durations, `max_total_agents ≥ agent_count`.

pub mod raw;
pub mod scheduling;
pub mod targets;
mod validate;

use crate::config::raw::{AgentKind, Provider, RawConfig, RecoveryAction};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The default roles when `[agent].roles` is empty (the upstream "default development swarm").
pub const DEFAULT_ROLES: [&str; 4] = ["Architect", "Coder", "Tester", "Reviewer"];

/// Upstream phase plan used when the file has no `[[phases]]`: 60/120/120/60 minutes.
const DEFAULT_PHASES: [(&str, f64); 4] = [
    ("bootstrap", 60.0),
    ("development", 120.0),
    ("refinement", 120.0),
    ("finalization", 60.0),
];

/// Overrides from the command line or `MEGATEST_*` environment variables.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Overrides {
    /// `--project`: overrides `[session].project_type`.
    pub project: Option<String>,
    /// `--hours`: overrides `[session].duration_hours`; phases scale in proportion.
    pub hours: Option<f64>,
    /// `--agents`: overrides `[session].agent_count` and `[agent].concurrent_agents`.
    pub agents: Option<u32>,
    /// `--time-scale`: session seconds per wall second.
    pub time_scale: Option<f64>,
    /// `--provider`: overrides `[model].provider`.
    pub provider: Option<Provider>,
    /// `--session-id`: overrides `[session].id`.
    pub session_id: Option<String>,
    /// `--api-addr`: the control API's address, overrides `[api].address`.
    #[serde(default)]
    pub api_addr: Option<String>,
    /// `--sync s3://BUCKET/PREFIX`: the session directory is pushed there after every
    /// checkpoint and at every end (kept for `megatest resume`, so a resumed session syncs on).
    #[serde(default)]
    pub sync: Option<String>,
    /// `--model`: overrides `[model].name` (the model agents ask for upstream).
    #[serde(default)]
    pub model: Option<String>,
}

/// One problem found in a config file.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// The config file.
    pub file: PathBuf,
    /// Dotted key, e.g. `session.agent_count` or `phases[1].duration_minutes`; empty for syntax errors.
    pub key: String,
    /// 1-based line and column, when the key is in the file (an override has none).
    pub line: Option<usize>,
    /// 1-based column, with `line`.
    pub column: Option<usize>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A config that did not load; every problem found, in file order.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Every problem, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// One phase as the session runs it, after scaling to `duration_hours`.
#[derive(Debug, Clone, Serialize)]
pub struct PhasePlan {
    /// The phase's name.
    pub name: String,
    /// Length of the time box in session seconds.
    pub session_secs: f64,
    /// Its objectives.
    pub objectives: Vec<String>,
    /// Its success criteria (free text).
    pub success_criteria: Vec<String>,
    /// The produced project is evaluated at its end (`[evaluation].phases`).
    pub evaluate: bool,
}

/// A validated, effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// The effective raw values: overrides applied, phases scaled to `duration_hours`.
    pub raw: RawConfig,
    /// Session seconds per wall second (`--time-scale`); 1.0 is real time.
    pub time_scale: f64,
    /// The phases in order.
    pub phases: Vec<PhasePlan>,
    /// The role of each agent, `agent_count` long (`[agent].roles` cycled).
    pub agent_roles: Vec<String>,
    /// Agents that may run a task at the same time: `min(agent_count, concurrent_agents)`.
    pub concurrency: usize,
    /// Where the project spec lives (validated to exist).
    pub spec_dir: PathBuf,
    /// Keys that are parsed and validated but whose behaviour lands in a later issue.
    pub not_yet_enforced: Vec<String>,
    /// Non-fatal remarks (printed at start-up).
    pub warnings: Vec<String>,
}

impl Config {
    /// The configured provider, or None when the config names none.
    pub fn provider(&self) -> Option<Provider> {
        self.raw.model.provider
    }

    /// The model name agents ask for: `[model].name`, or the built-in model's own name.
    pub fn model_name(&self) -> String {
        match (&self.raw.model.name, self.raw.model.provider) {
            (Some(name), _) => name.clone(),
            (None, Some(provider)) => provider.as_str().to_string(),
            (None, None) => "unconfigured".to_string(),
        }
    }

    /// Follow-up tasks a phase may get at most: `[scheduling].max_follow_up_tasks_per_phase`,
    /// else 4 × the concurrency.
    pub fn max_follow_up_tasks_per_phase(&self) -> usize {
        self.raw
            .scheduling
            .max_follow_up_tasks_per_phase
            .map(|n| n as usize)
            .unwrap_or(4 * self.concurrency)
    }

    /// Session length in session seconds (the sum of the phase time boxes).
    pub fn session_secs(&self) -> f64 {
        self.phases.iter().map(|p| p.session_secs).sum()
    }

    /// The effective config as JSON with secrets replaced by `"<redacted>"`: the content of
    /// `config.json`. The provider API key is never held here at all, only its variable's name.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut raw = self.raw.clone();
        if raw.notifications.webhook_url.is_some() {
            raw.notifications.webhook_url = Some("<redacted>".into());
        }
        if let Some(email) = raw.notifications.email.as_mut() {
            if email.password.is_some() {
                email.password = Some("<redacted>".into());
            }
        }
        for (key, value) in raw.agents.env.iter_mut() {
            if looks_secret(key) {
                *value = "<redacted>".into();
            }
        }
        serde_json::json!({
            "source": self.path,
            "time_scale": self.time_scale,
            "config": raw,
            "phases": self.phases,
            "agent_roles": self.agent_roles,
            "concurrency": self.concurrency,
            "spec_dir": self.spec_dir,
            "not_yet_enforced": self.not_yet_enforced,
            "warnings": self.warnings,
        })
    }
}

/// True for environment variable names that usually hold credentials.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH"]
        .iter()
        .any(|word| upper.contains(word))
}

/// Read, parse, override and validate `path`.
///
/// Errors: unreadable file, TOML syntax, unknown keys, wrong types, out-of-range values, a
/// missing project spec — each as a [`Diagnostic`] with file, key, line and column.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let file_error = |message: String| ConfigError {
        diagnostics: vec![Diagnostic {
            file: path.to_path_buf(),
            key: String::new(),
            line: None,
            column: None,
            message,
        }],
    };
    // Only a regular file of sane size is read: a FIFO or a device would block or never end.
    let meta = std::fs::metadata(path)
        .map_err(|err| file_error(format!("cannot read config file: {err}")))?;
    if !meta.is_file() {
        return Err(file_error(
            "cannot read config file: not a regular file (a FIFO, device or directory)".into(),
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(file_error(format!(
            "config file is {} bytes; at most {MAX_CONFIG_BYTES} are accepted",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|err| file_error(format!("cannot read config file: {err}")))?;
    load_str(path, &text, overrides)
}

/// The largest config file read (bytes); the upstream file is ~4 KB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Most entries a list or table of the config may hold: (key, limit). Far above any real use,
/// low enough that a runaway file cannot make a session of 200,000 roles.
pub const LIST_LIMITS: &[(&str, usize)] = &[
    ("phases", 32),
    ("phases[].objectives", 64),
    ("phases[].success_criteria", 64),
    ("agent.roles", 64),
    ("error_handling.rules", 1000),
    ("notifications.events", 32),
    ("notifications.email.to_addresses", 100),
    ("model.fallbacks", 32),
    ("model.prices", 1000),
    ("agents.env", 256),
    ("chaos.events", 1000),
];

fn list_limit(key: &str) -> usize {
    LIST_LIMITS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, n)| *n)
        .unwrap_or(usize::MAX)
}

/// [`load`] on text already read; `path` names it in errors and anchors relative paths.
pub fn load_str(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|err| {
        let (line, column) = match err.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let mut message = err.message().trim().to_string();
        let mut key = key_at(text, err.span().map(|s| s.start));
        if message.starts_with("duplicate key") {
            // Name the key: toml's span covers it (a table header's name or a key).
            if let Some(name) = err.span().and_then(|s| text.get(s)).map(str::trim) {
                let name = name.trim_matches(|c| c == '[' || c == ']').trim();
                message = format!("duplicate key `{name}`: each key and table may appear once");
                if key.is_empty() {
                    key = name.to_string();
                }
            }
        }
        ConfigError {
            diagnostics: vec![Diagnostic {
                file: path.to_path_buf(),
                key,
                line,
                column,
                message,
            }],
        }
    })?;
    validate::Validator::new(path, text).run(raw, overrides)
}

/// Keys parsed and validated now whose behaviour lands in a later issue. Each entry is the key
/// and the issue that enforces it; the list shrinks as those issues land.
fn not_yet_enforced(raw: &RawConfig) -> Vec<String> {
    let mut keys: Vec<&str> = Vec::new();
    if raw.notifications.email.is_some() {
        keys.push("notifications.email (no SMTP delivery: alerts go to the webhook, session.log, the event log and GitHub annotations)");
    }
    keys.into_iter().map(String::from).collect()
}

fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

enum Segment<'k> {
    Key(&'k str),
    Index(usize),
}

/// `phases[1].duration_minutes` → Key("phases"), Index(1), Key("duration_minutes").
fn key_segments(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            out.push(Segment::Key(&rest[..open]));
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    out.push(Segment::Index(i));
                }
                rest = &rest[close + 1..];
            }
        } else {
            out.push(Segment::Key(rest));
        }
    }
    out
}

/// 1-based (line, column) of a byte offset; columns count characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key of the section and key on the line at `offset`, best effort, for syntax and
/// type errors whose message does not name the key.
fn key_at(text: &str, offset: Option<usize>) -> String {
    let Some(offset) = offset else {
        return String::new();
    };
    let offset = (0..=offset.min(text.len()))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let mut section = String::new();
    // `[[name]]` headers seen so far, so an element gets its index: `phases[2].name`.
    let mut elements: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let before = &text[..offset];
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    for line in text[..line_start].lines().chain(std::iter::once(
        text[line_start..].lines().next().unwrap_or(""),
    )) {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("[[") {
            let name = name.split("]]").next().unwrap_or("").trim().to_string();
            let count = elements.entry(name.clone()).or_default();
            *count += 1;
            section = format!("{name}[{}]", *count - 1);
        } else if let Some(name) = trimmed.strip_prefix('[') {
            section = name.split(']').next().unwrap_or("").trim().to_string();
        }
    }
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split('=')
        .next()
        .filter(|_| line.contains('=') && !line.trim_start().starts_with('['))
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    match (section.is_empty(), key.is_empty()) {
        (_, true) => section,
        (true, false) => key,
        (false, false) => format!("{section}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }

    #[test]
    fn key_at_names_array_elements() {
        let text = "[[phases]]\nname = \"a\"\n[[phases]]\nname = \"b\"\n[[phases]]\nnam = \"c\"\n";
        let at = text.find("nam =").unwrap();
        assert_eq!(key_at(text, Some(at)), "phases[2].nam");
        assert_eq!(key_at("[session]\nid = 1\n", Some(11)), "session.id");
    }

    #[test]
    fn key_segments_split_indices() {
        let segments = key_segments("phases[2].duration_minutes");
        assert!(matches!(segments[0], Segment::Key("phases")));
        assert!(matches!(segments[1], Segment::Index(2)));
        assert!(matches!(segments[2], Segment::Key("duration_minutes")));
    }
}
