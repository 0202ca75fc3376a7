//! A sweep of sessions (`megatest ecs launch --count N` or `--matrix FILE`): the seeds'
//! parallel runs and A/B comparisons. Pure: a matrix file becomes the list of sessions to
//! launch, each with the overrides its task gets as environment.
//!
//! ```toml
//! [matrix]            # every combination, `repeat` times
//! project = ["task_queue", "database"]
//! agents = [4, 8]
//! hours = [1]
//! provider = ["sim"]
//! time_scale = [60.0]
//! model = ["gpt-4o", "gpt-4o-mini"]
//! repeat = 2
//!
//! [[session]]         # and sessions spelled out one by one
//! project = "microservices"
//! agents = 6
//! ```

use serde::Deserialize;

/// The overrides of one session of a sweep (None: the config's value).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// `MEGATEST_PROJECT`.
    pub project: Option<String>,
    /// `MEGATEST_AGENTS` (2-16).
    pub agents: Option<u32>,
    /// `MEGATEST_HOURS` (1-24).
    pub hours: Option<f64>,
    /// `MEGATEST_PROVIDER`.
    pub provider: Option<String>,
    /// `MEGATEST_TIME_SCALE`.
    pub time_scale: Option<f64>,
    /// `MEGATEST_MODEL` (`[model].name`).
    pub model: Option<String>,
}

impl SessionSpec {
    /// The environment a task gets for these overrides.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if let Some(v) = &self.project {
            env.push(("MEGATEST_PROJECT".into(), v.clone()));
        }
        if let Some(v) = self.agents {
            env.push(("MEGATEST_AGENTS".into(), v.to_string()));
        }
        if let Some(v) = self.hours {
            env.push(("MEGATEST_HOURS".into(), v.to_string()));
        }
        if let Some(v) = &self.provider {
            env.push(("MEGATEST_PROVIDER".into(), v.clone()));
        }
        if let Some(v) = self.time_scale {
            env.push(("MEGATEST_TIME_SCALE".into(), v.to_string()));
        }
        if let Some(v) = &self.model {
            env.push(("MEGATEST_MODEL".into(), v.clone()));
        }
        env
    }

    /// A short label: `task_queue-4a-1h-sim` (the parts that are set).
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.project {
            parts.push(v.clone());
        }
        if let Some(v) = self.agents {
            parts.push(format!("{v}a"));
        }
        if let Some(v) = self.hours {
            parts.push(format!("{v}h"));
        }
        if let Some(v) = &self.provider {
            parts.push(v.clone());
        }
        if let Some(v) = self.time_scale {
            parts.push(format!("x{v}"));
        }
        if let Some(v) = &self.model {
            parts.push(v.clone());
        }
        if parts.is_empty() {
            "config".into()
        } else {
            parts.join("-")
        }
    }

    /// These overrides, with `base`'s where these have none.
    pub fn or(&self, base: &SessionSpec) -> SessionSpec {
        SessionSpec {
            project: self.project.clone().or_else(|| base.project.clone()),
            agents: self.agents.or(base.agents),
            hours: self.hours.or(base.hours),
            provider: self.provider.clone().or_else(|| base.provider.clone()),
            time_scale: self.time_scale.or(base.time_scale),
            model: self.model.clone().or_else(|| base.model.clone()),
        }
    }

    /// Errors: a value outside what `megatest run` takes (named).
    fn check(&self) -> Result<(), String> {
        if let Some(a) = self.agents.filter(|a| !(2..=16).contains(a)) {
            return Err(format!("agents = {a}: must be 2 to 16"));
        }
        if let Some(h) = self.hours.filter(|h| !(1.0..=24.0).contains(h)) {
            return Err(format!("hours = {h}: must be 1 to 24"));
        }
        if let Some(t) = self.time_scale.filter(|t| !(t.is_finite() && *t > 0.0)) {
            return Err(format!("time_scale = {t}: must be above 0"));
        }
        if self.model.as_deref() == Some("") {
            return Err("model = \"\": a model name".into());
        }
        if let Some(p) = self.project.as_deref().filter(|p| {
            p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }) {
            return Err(format!("project = {p:?}: a project type like task_queue"));
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Axes {
    #[serde(default)]
    project: Vec<String>,
    #[serde(default)]
    agents: Vec<u32>,
    #[serde(default)]
    hours: Vec<f64>,
    #[serde(default)]
    provider: Vec<String>,
    #[serde(default)]
    time_scale: Vec<f64>,
    #[serde(default)]
    model: Vec<String>,
    repeat: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatrixFile {
    matrix: Option<Axes>,
    #[serde(default)]
    session: Vec<SessionSpec>,
}

/// The largest sweep one launch takes.
pub const MAX_SESSIONS: usize = 500;

/// The sessions of a matrix file (`[matrix]` combinations first, then `[[session]]` entries).
/// Errors: the TOML error with its line, a bad value named, an empty or too large sweep.
pub fn parse(text: &str) -> Result<Vec<SessionSpec>, String> {
    let file: MatrixFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut sessions = Vec::new();
    if let Some(axes) = &file.matrix {
        fn axis<T: Clone>(values: &[T]) -> Vec<Option<T>> {
            if values.is_empty() {
                vec![None]
            } else {
                values.iter().cloned().map(Some).collect()
            }
        }
        let repeat = axes.repeat.unwrap_or(1);
        if repeat == 0 {
            return Err("[matrix] repeat = 0: must be at least 1".into());
        }
        for _ in 0..repeat {
            for project in axis(&axes.project) {
                for agents in axis(&axes.agents) {
                    for hours in axis(&axes.hours) {
                        for provider in axis(&axes.provider) {
                            for time_scale in axis(&axes.time_scale) {
                                for model in axis(&axes.model) {
                                    sessions.push(SessionSpec {
                                        project: project.clone(),
                                        agents,
                                        hours,
                                        provider: provider.clone(),
                                        time_scale,
                                        model,
                                    });
                                    if sessions.len() > MAX_SESSIONS {
                                        return Err(format!(
                                            "the matrix makes more than {MAX_SESSIONS} sessions"
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    sessions.extend(file.session);
    if sessions.is_empty() {
        return Err("no sessions: give a [matrix] table or [[session]] entries".into());
    }
    if sessions.len() > MAX_SESSIONS {
        return Err(format!("more than {MAX_SESSIONS} sessions"));
    }
    for (i, s) in sessions.iter().enumerate() {
        s.check().map_err(|e| format!("session {}: {e}", i + 1))?;
    }
    Ok(sessions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_is_every_combination_repeated_then_the_listed_sessions() {
        let sessions = parse(
            "[matrix]\nproject = [\"task_queue\", \"database\"]\nagents = [4, 8]\nrepeat = 2\n\n[[session]]\nproject = \"microservices\"\nhours = 2\n",
        )
        .unwrap();
        assert_eq!(sessions.len(), 2 * 2 * 2 + 1);
        assert_eq!(sessions[0].label(), "task_queue-4a");
        assert_eq!(sessions[3].label(), "database-8a");
        assert_eq!(sessions[8].label(), "microservices-2h");
        assert_eq!(
            sessions[8].environment(),
            vec![
                ("MEGATEST_PROJECT".to_string(), "microservices".to_string()),
                ("MEGATEST_HOURS".to_string(), "2".to_string())
            ]
        );
        assert!(parse("[matrix]\nagents = [1]\n")
            .unwrap_err()
            .contains("agents = 1"));
        assert!(parse("[matrix]\nagentz = [4]\n")
            .unwrap_err()
            .contains("agentz"));
        assert!(parse("").unwrap_err().contains("no sessions"));
        assert!(parse("[[session]]\nproject = \"a b\"\n").is_err());
        // An A/B of models: one session each, the model reaching the task as MEGATEST_MODEL.
        let ab = parse("[matrix]\nmodel = [\"gpt-4o\", \"gpt-4o-mini\"]\n").unwrap();
        assert_eq!(ab.len(), 2);
        assert_eq!(
            ab[1].environment(),
            vec![("MEGATEST_MODEL".to_string(), "gpt-4o-mini".to_string())]
        );
        assert!(parse("[matrix]\nmodel = [\"\"]\n").is_err());
    }
}
