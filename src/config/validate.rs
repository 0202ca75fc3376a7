//! Validation of a parsed config with positions: overrides applied first, then every range,
//! relation and reference checked, each problem a [`Diagnostic`] with file, key, line and column.

use super::*;

/// Validation with access to the source text, so each problem gets its position.
pub(super) struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    document: Option<toml::Spanned<toml::de::DeTable<'a>>>,
    diagnostics: Vec<Diagnostic>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(path: &'a Path, text: &'a str) -> Self {
        Validator {
            path,
            text,
            document: toml::de::DeTable::parse(text).ok(),
            diagnostics: Vec::new(),
        }
    }

    /// Record a problem at `key` (dotted, with `[i]` for array elements).
    fn error(&mut self, key: &str, message: impl Into<String>, overridden_by: Option<&str>) {
        let position = match overridden_by {
            Some(_) => None,
            None => self.position_of(key),
        };
        let mut message = message.into();
        if let Some(flag) = overridden_by {
            message = format!("{message} (value from {flag})");
        }
        self.diagnostics.push(Diagnostic {
            file: self.path.to_path_buf(),
            key: key.to_string(),
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            message,
        });
    }

    /// Line and column of the value at `key`, or of its nearest present ancestor.
    fn position_of(&self, key: &str) -> Option<(usize, usize)> {
        let document = self.document.as_ref()?;
        let mut span = document.span();
        let mut table: Option<&toml::de::DeTable> = Some(document.get_ref());
        let mut array: Option<&toml::de::DeArray> = None;
        for segment in key_segments(key) {
            let value = match (segment, table, array) {
                (Segment::Key(name), Some(t), _) => t.get(name),
                (Segment::Index(i), _, Some(a)) => a.get(i),
                _ => None,
            };
            let Some(value) = value else { break };
            span = value.span();
            table = value.get_ref().as_table();
            array = value.get_ref().as_array();
        }
        Some(line_col(self.text, span.start))
    }

    pub(super) fn run(
        mut self,
        mut raw: RawConfig,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        // Overrides first, so that their values are validated like the file's.
        let flag = |name: &'static str, set: bool| if set { Some(name) } else { None };
        if let Some(project) = &overrides.project {
            raw.session.project_type = project.clone();
        }
        if let Some(hours) = overrides.hours {
            raw.session.duration_hours = hours;
        }
        let mut raised_ceiling = None;
        if let Some(agents) = overrides.agents {
            raw.session.agent_count = agents;
            raw.agent.concurrent_agents = agents;
            // `--agents` is the operator's word: it lifts the dynamic-spawning ceiling with it,
            // never silently (a warning, printed and in config.json).
            if agents > raw.agent.max_total_agents {
                raised_ceiling = Some(raw.agent.max_total_agents);
                raw.agent.max_total_agents = agents;
            }
        }
        if let Some(provider) = overrides.provider {
            raw.model.provider = Some(provider);
        }
        if let Some(model) = &overrides.model {
            raw.model.name = Some(model.clone());
        }
        if let Some(id) = &overrides.session_id {
            raw.session.id = id.clone();
        }
        if let Some(addr) = &overrides.api_addr {
            raw.api.address = addr.clone();
        }
        let api_flag = flag("--api-addr/MEGATEST_API_ADDR", overrides.api_addr.is_some());
        let time_scale = overrides.time_scale.unwrap_or(1.0);
        let hours_flag = flag("--hours/MEGATEST_HOURS", overrides.hours.is_some());
        let agents_flag = flag("--agents/MEGATEST_AGENTS", overrides.agents.is_some());
        let project_flag = flag("--project/MEGATEST_PROJECT", overrides.project.is_some());
        let id_flag = flag(
            "--session-id/MEGATEST_SESSION_ID",
            overrides.session_id.is_some(),
        );

        if !(time_scale.is_finite() && time_scale > 0.0 && time_scale <= 1_000_000.0) {
            self.error(
                "time_scale",
                format!("time scale must be in (0, 1000000], got {time_scale}"),
                Some("--time-scale/MEGATEST_TIME_SCALE"),
            );
        }
        // The upstream file's `[session]` table at least: an empty or comment-only file is a
        // mistake, not a request for a six-hour session on defaults.
        let has_session = self
            .document
            .as_ref()
            .is_some_and(|d| d.get_ref().get("session").is_some());
        if !has_session {
            self.error(
                "session",
                "the [session] section is missing (an empty or comment-only file is not a config; see configs/mega_test_config.toml)",
                None,
            );
        }
        let mut lists = vec![
            ("phases".to_string(), "phases", raw.phases.len()),
            ("agent.roles".into(), "agent.roles", raw.agent.roles.len()),
            (
                "error_handling.rules".into(),
                "error_handling.rules",
                raw.error_handling.rules.len(),
            ),
            (
                "notifications.events".into(),
                "notifications.events",
                raw.notifications.events.len(),
            ),
            (
                "model.fallbacks".into(),
                "model.fallbacks",
                raw.model.fallbacks.len(),
            ),
            (
                "model.prices".into(),
                "model.prices",
                raw.model.prices.len(),
            ),
            ("agents.env".into(), "agents.env", raw.agents.env.len()),
            (
                "chaos.events".into(),
                "chaos.events",
                raw.chaos.events.len(),
            ),
        ];
        if let Some(email) = &raw.notifications.email {
            lists.push((
                "notifications.email.to_addresses".into(),
                "notifications.email.to_addresses",
                email.to_addresses.len(),
            ));
        }
        for (i, phase) in raw.phases.iter().enumerate() {
            lists.push((
                format!("phases[{i}].objectives"),
                "phases[].objectives",
                phase.objectives.len(),
            ));
            lists.push((
                format!("phases[{i}].success_criteria"),
                "phases[].success_criteria",
                phase.success_criteria.len(),
            ));
        }
        for (key, limit_key, len) in lists {
            let limit = list_limit(limit_key);
            if len > limit {
                self.error(
                    &key,
                    format!("has {len} entries; at most {limit} are accepted"),
                    None,
                );
            }
        }
        let s = &raw.session;
        if !(1.0..=24.0).contains(&s.duration_hours) {
            let msg = format!("must be between 1 and 24 hours, got {}", s.duration_hours);
            self.error("session.duration_hours", msg, hours_flag);
        }
        if !(2..=16).contains(&s.agent_count) {
            let msg = format!("must be between 2 and 16, got {}", s.agent_count);
            self.error("session.agent_count", msg, agents_flag);
        }
        if s.id != "auto" && !valid_session_id(&s.id) {
            let msg = format!(
                "session id {:?} must be \"auto\" or 1-100 characters of letters, digits, '-', '_' and '.' (not starting with '.')",
                s.id
            );
            self.error("session.id", msg, id_flag);
        }
        match raw.api.address.parse::<std::net::SocketAddr>() {
            Err(err) => self.error(
                "api.address",
                format!("{:?} is not an address like 127.0.0.1:8080 ({err})", raw.api.address),
                api_flag,
            ),
            Ok(addr) if !addr.ip().is_loopback() && !raw.api.allow_non_loopback => self.error(
                "api.address",
                format!("{addr} is not a loopback address; set [api].allow_non_loopback = true to listen beyond this machine"),
                api_flag,
            ),
            Ok(_) => {}
        }
        self.check_checkpoint(&raw);
        self.check_agent(&raw);
        self.check_consensus(&raw);
        self.check_limits(&raw);
        self.check_monitoring(&raw);
        self.check_rules(&raw);
        self.check_target(&raw);
        self.check_model(&raw);

        // Phases: upstream defaults when absent; scaled so that they fill `duration_hours`.
        if raw.phases.is_empty() {
            raw.phases = DEFAULT_PHASES
                .iter()
                .map(|(name, minutes)| raw::Phase {
                    name: name.to_string(),
                    duration_minutes: *minutes,
                    objectives: Vec::new(),
                    success_criteria: Vec::new(),
                })
                .collect();
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, phase) in raw.phases.clone().iter().enumerate() {
            if !(phase.duration_minutes.is_finite() && phase.duration_minutes > 0.0) {
                let msg = format!("must be > 0 minutes, got {}", phase.duration_minutes);
                self.error(&format!("phases[{i}].duration_minutes"), msg, None);
            }
            if phase.name.trim().is_empty() {
                self.error(&format!("phases[{i}].name"), "must not be empty", None);
            } else if !seen.insert(phase.name.clone()) {
                let msg = format!("phase name {:?} appears twice", phase.name);
                self.error(&format!("phases[{i}].name"), msg, None);
            }
        }

        if let Some(names) = &raw.evaluation.phases {
            for (i, name) in names.iter().enumerate() {
                if !raw.phases.iter().any(|p| &p.name == name) {
                    let known: Vec<&str> = raw.phases.iter().map(|p| p.name.as_str()).collect();
                    let msg = format!("no phase is named {name:?} (phases: {})", known.join(", "));
                    self.error(&format!("evaluation.phases[{i}]"), msg, None);
                }
            }
        }

        let spec_dir = self.resolve_spec_dir(&raw, project_flag);

        if !self.diagnostics.is_empty() {
            self.diagnostics
                .sort_by_key(|d| (d.line.unwrap_or(0), d.column.unwrap_or(0)));
            return Err(ConfigError {
                diagnostics: self.diagnostics,
            });
        }

        let planned_minutes: f64 = raw.phases.iter().map(|p| p.duration_minutes).sum();
        let factor = raw.session.duration_hours * 60.0 / planned_minutes;
        let mut warnings = Vec::new();
        if let Some(ceiling) = raised_ceiling {
            warnings.push(format!(
                "--agents {} is above agent.max_total_agents ({ceiling}) in the file: the limit is raised to {} for this session",
                raw.session.agent_count, raw.session.agent_count
            ));
        }
        if (factor - 1.0).abs() > 1e-9 {
            warnings.push(format!(
                "phases add up to {planned_minutes} minutes but the session lasts {} hours: each phase scaled by {factor:.4}",
                raw.session.duration_hours
            ));
            for phase in raw.phases.iter_mut() {
                phase.duration_minutes *= factor;
            }
        }
        if raw.agent.concurrent_agents != raw.session.agent_count {
            warnings.push(format!(
                "agent.concurrent_agents ({}) differs from session.agent_count ({}): at most {} agents run at once",
                raw.agent.concurrent_agents,
                raw.session.agent_count,
                raw.agent.concurrent_agents.min(raw.session.agent_count)
            ));
        }
        let phases = raw
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| PhasePlan {
                name: p.name.clone(),
                session_secs: p.duration_minutes * 60.0,
                objectives: p.objectives.clone(),
                success_criteria: p.success_criteria.clone(),
                evaluate: match &raw.evaluation.phases {
                    Some(names) => names.contains(&p.name),
                    None => i > 0,
                },
            })
            .collect();
        let roles: Vec<String> = if raw.agent.roles.is_empty() {
            DEFAULT_ROLES.iter().map(|r| r.to_string()).collect()
        } else {
            raw.agent.roles.clone()
        };
        let agent_roles = (0..raw.session.agent_count as usize)
            .map(|i| roles[i % roles.len()].clone())
            .collect();
        let concurrency = raw.agent.concurrent_agents.min(raw.session.agent_count) as usize;
        let not_yet_enforced = not_yet_enforced(&raw);
        Ok(Config {
            path: self.path.to_path_buf(),
            raw,
            time_scale,
            phases,
            agent_roles,
            concurrency,
            spec_dir: spec_dir.unwrap_or_default(),
            not_yet_enforced,
            warnings,
        })
    }

    fn positive(&mut self, key: &str, value: f64) {
        if !(value.is_finite() && value > 0.0) {
            self.error(key, format!("must be > 0, got {value}"), None);
        }
    }

    fn fraction(&mut self, key: &str, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.error(
                key,
                format!("must be between 0.0 and 1.0, got {value}"),
                None,
            );
        }
    }

    fn faults(&mut self, prefix: &str, f: &crate::config::raw::Faults) {
        for (name, p) in [
            ("rate_limit", f.rate_limit),
            ("server_error", f.server_error),
            ("timeout", f.timeout),
            ("malformed_json", f.malformed_json),
            ("malformed_tool_args", f.malformed_tool_args),
        ] {
            self.fraction(&format!("{prefix}.{name}"), p);
        }
    }

    fn check_checkpoint(&mut self, raw: &RawConfig) {
        let c = &raw.checkpoint;
        self.positive("checkpoint.interval_minutes", c.interval_minutes);
        self.positive(
            "checkpoint.backoff_initial_seconds",
            c.backoff_initial_seconds,
        );
        self.positive("checkpoint.backoff_max_seconds", c.backoff_max_seconds);
        if c.backoff_max_seconds < c.backoff_initial_seconds {
            let msg = format!(
                "must be >= checkpoint.backoff_initial_seconds ({}), got {}",
                c.backoff_initial_seconds, c.backoff_max_seconds
            );
            self.error("checkpoint.backoff_max_seconds", msg, None);
        }
        if c.tool_call_threshold == 0 {
            self.error("checkpoint.tool_call_threshold", "must be >= 1", None);
        }
        if c.token_threshold == 0 {
            self.error("checkpoint.token_threshold", "must be >= 1", None);
        }
    }

    fn check_agent(&mut self, raw: &RawConfig) {
        let a = &raw.agent;
        if a.max_iterations == 0 {
            self.error("agent.max_iterations", "must be >= 1", None);
        }
        self.positive("agent.step_timeout_secs", a.step_timeout_secs);
        if a.concurrent_agents == 0 {
            self.error("agent.concurrent_agents", "must be >= 1", None);
        }
        self.fraction("agent.min_trust_score", a.min_trust_score);
        self.fraction("agent.max_trust_score", a.max_trust_score);
        if a.min_trust_score > a.max_trust_score {
            let msg = format!(
                "must be <= agent.max_trust_score ({}), got {}",
                a.max_trust_score, a.min_trust_score
            );
            self.error("agent.min_trust_score", msg, None);
        }
        if a.max_total_agents < raw.session.agent_count {
            let msg = format!(
                "must be >= session.agent_count ({}), got {}",
                raw.session.agent_count, a.max_total_agents
            );
            self.error("agent.max_total_agents", msg, None);
        }
        for (i, role) in a.roles.iter().enumerate() {
            if role.trim().is_empty() {
                self.error(&format!("agent.roles[{i}]"), "role must not be empty", None);
            }
        }
    }

    fn check_consensus(&mut self, raw: &RawConfig) {
        let c = &raw.consensus;
        if c.min_votes == 0 {
            self.error("consensus.min_votes", "must be >= 1", None);
        }
        self.positive("consensus.vote_timeout_secs", c.vote_timeout_secs);
        self.fraction("consensus.threshold", c.threshold);
    }

    fn check_limits(&mut self, raw: &RawConfig) {
        let l = &raw.limits;
        for (key, value) in [
            ("limits.total_token_budget", l.total_token_budget),
            (
                "limits.tokens_per_agent_per_hour",
                l.tokens_per_agent_per_hour,
            ),
            (
                "limits.tool_calls_per_agent_per_hour",
                l.tool_calls_per_agent_per_hour,
            ),
            ("limits.max_context_size", l.max_context_size),
        ] {
            if value == 0 {
                self.error(key, "must be >= 1", None);
            }
        }
        self.positive("limits.disk_space_limit_gb", l.disk_space_limit_gb);
        self.positive("limits.max_test_runtime_min", l.max_test_runtime_min);
    }

    fn check_monitoring(&mut self, raw: &RawConfig) {
        let m = &raw.monitoring;
        self.positive("monitoring.health_check_interval", m.health_check_interval);
        self.positive(
            "monitoring.metrics_export_interval",
            m.metrics_export_interval,
        );
        self.positive(
            "monitoring.dashboard_update_interval",
            m.dashboard_update_interval,
        );
    }

    fn check_rules(&mut self, raw: &RawConfig) {
        if raw.error_handling.max_consecutive_errors == 0 {
            self.error(
                "error_handling.max_consecutive_errors",
                "must be >= 1",
                None,
            );
        }
        for (i, rule) in raw.error_handling.rules.iter().enumerate() {
            match (&rule.pattern, rule.kind) {
                (None, None) => {
                    let key = format!("error_handling.rules[{i}]");
                    self.error(
                        &key,
                        "a rule needs a `pattern` (regex) or a `kind` (failure kind)",
                        None,
                    );
                }
                (Some(p), _) if p.is_empty() => {
                    let key = format!("error_handling.rules[{i}].pattern");
                    self.error(&key, "pattern must not be empty", None);
                }
                _ => {}
            }
        }
        if let Err((key, message)) =
            crate::recovery::RecoveryTable::new(&raw.error_handling, &raw.checkpoint.retry_policy())
        {
            self.error(&key, message, None);
        }
        let r = &raw.recovery;
        self.positive("recovery.agent_idle_minutes", r.agent_idle_minutes);
        if !(r.agent_idle_floor_secs.is_finite() && r.agent_idle_floor_secs >= 0.0) {
            self.error("recovery.agent_idle_floor_secs", "must be >= 0", None);
        }
        self.positive(
            "recovery.escalation_timeout_minutes",
            r.escalation_timeout_minutes,
        );
        if !matches!(
            r.escalation_default,
            RecoveryAction::StopSession | RecoveryAction::LogAndContinue
        ) {
            self.error(
                "recovery.escalation_default",
                "must be \"stop_session\" or \"log_and_continue\"",
                None,
            );
        }
        let c = &raw.chaos;
        self.faults("chaos.upstream", &c.upstream);
        for (i, event) in c.events.iter().enumerate() {
            if !(event.at_minutes.is_finite() && event.at_minutes >= 0.0) {
                self.error(
                    &format!("chaos.events[{i}].at_minutes"),
                    "must be >= 0",
                    None,
                );
            }
            if let Some(hold) = event.hold_minutes {
                self.positive(&format!("chaos.events[{i}].hold_minutes"), hold);
            }
        }
    }

    fn check_target(&mut self, raw: &RawConfig) {
        let t = &raw.project.target;
        self.fraction("project.target.test_coverage", t.test_coverage);
        self.fraction(
            "project.target.documentation_coverage",
            t.documentation_coverage,
        );
        let p = &raw.project.performance;
        self.positive("project.performance.build_time_secs", p.build_time_secs);
        self.positive(
            "project.performance.test_execution_time_secs",
            p.test_execution_time_secs,
        );
        self.positive("project.performance.memory_usage_mb", p.memory_usage_mb);
        self.positive("project.performance.binary_size_mb", p.binary_size_mb);
    }

    fn check_model(&mut self, raw: &RawConfig) {
        let m = &raw.model;
        if let Some(provider) = m.provider {
            if !provider.is_builtin() {
                if m.base_url.is_none() && provider == Provider::OpenaiCompatible {
                    self.error(
                        "model.base_url",
                        "an openai-compatible provider needs base_url",
                        None,
                    );
                }
                if m.name.is_none() {
                    self.error(
                        "model.name",
                        "a passthrough provider needs a model name",
                        None,
                    );
                }
            }
        }
        self.positive("model.timeout_secs", m.timeout_secs);
        if m.retry_base_ms == 0 || m.retry_base_ms > m.retry_max_ms {
            let msg = format!(
                "need 1 <= retry_base_ms <= retry_max_ms, got {} and {}",
                m.retry_base_ms, m.retry_max_ms
            );
            self.error("model.retry_base_ms", msg, None);
        }
        if !(m.cooldown_secs.is_finite() && m.cooldown_secs >= 0.0) {
            self.error("model.cooldown_secs", "must be >= 0", None);
        }
        if m.default_max_tokens == 0 {
            self.error("model.default_max_tokens", "must be >= 1", None);
        }
        if let Some(cost) = m.max_cost_usd {
            self.positive("model.max_cost_usd", cost);
        }
        for (name, price) in &m.prices {
            let cached = price.cached_input.unwrap_or(0.0);
            if [price.input, price.output, cached]
                .iter()
                .any(|p| !(p.is_finite() && *p >= 0.0))
            {
                self.error(
                    &format!("model.prices.{name}"),
                    "prices must be >= 0 USD per million tokens",
                    None,
                );
            }
        }
        self.faults("model.faults", &m.faults);
        let sim = &m.sim;
        self.positive("model.sim.latency_secs", sim.latency_secs);
        if sim.steps_min == 0 || sim.steps_min > sim.steps_max {
            let msg = format!(
                "need 1 <= steps_min <= steps_max, got {}..{}",
                sim.steps_min, sim.steps_max
            );
            self.error("model.sim.steps_min", msg, None);
        }
        let a = &raw.agents;
        if a.kind == AgentKind::Command && a.command.is_none() && a.preset.is_none() {
            self.error(
                "agents.command",
                "kind = \"command\" needs `command` or `preset`",
                None,
            );
        }
        if let Some(preset) = &a.preset {
            if crate::agent::preset(preset).is_none() {
                let msg = format!(
                    "unknown preset {preset:?}; known presets: {}",
                    crate::agent::PRESETS
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.error("agents.preset", msg, None);
            }
        }
        if !(a.stop_grace_secs.is_finite() && a.stop_grace_secs >= 0.0) {
            self.error("agents.stop_grace_secs", "must be >= 0", None);
        }
        if a.max_task_attempts == 0 {
            self.error("agents.max_task_attempts", "must be >= 1", None);
        }
        // Below these floors no interpreter or shell starts at all.
        for (key, value, floor) in [
            ("agents.memory_limit_mb", a.memory_limit_mb, 16),
            ("agents.cpu_limit_secs", a.cpu_limit_secs, 1),
            ("agents.max_processes", a.max_processes, 8),
        ] {
            if value.is_some_and(|v| v < floor) {
                self.error(
                    key,
                    format!("must be >= {floor} (or unset: no limit)"),
                    None,
                );
            }
        }
    }

    fn resolve_spec_dir(&mut self, raw: &RawConfig, project_flag: Option<&str>) -> Option<PathBuf> {
        let config_dir = self.path.parent().unwrap_or(Path::new("."));
        if let Some(dir) = &raw.project.spec_dir {
            let path = config_dir.join(dir);
            if path.join("spec.toml").is_file() {
                return Some(path);
            }
            let msg = format!("no project spec (spec.toml) in {}", path.display());
            self.error("project.spec_dir", msg, None);
            return None;
        }
        let name = &raw.session.project_type;
        if name.is_empty() || name.contains('/') || name.contains("..") {
            self.error(
                "session.project_type",
                format!("invalid project type {name:?}"),
                project_flag,
            );
            return None;
        }
        let found = crate::project::find_spec_dir(name, config_dir);
        if found.is_none() {
            let known = crate::project::known_project_types(config_dir);
            let msg = format!(
                "unknown project type {name:?}; known: {}",
                if known.is_empty() {
                    "none found".to_string()
                } else {
                    known.join(", ")
                }
            );
            self.error("session.project_type", msg, project_flag);
        }
        found
    }
}
