//! What the session reports: `metrics_current.json`, the sampler's start, the success
//! criteria (critical, targets, recovery) and `final_report.json`, all built from the
//! session's state and `session.db`.

use super::*;

impl Session {
    /// Start a metrics sample off the session task (one at a time); its result arrives as
    /// [`Event::Sampled`].
    pub(super) fn start_sample(&mut self) {
        if self.sampling || !self.prepared.config.raw.monitoring.enabled {
            return;
        }
        self.sampling = true;
        let workspace = self.workspace.clone();
        let since = chrono::DateTime::parse_from_rfc3339(&self.started_at)
            .map(|t| std::time::SystemTime::from(t.with_timezone(&chrono::Utc)))
            .unwrap_or(std::time::UNIX_EPOCH);
        let agents: Vec<(String, u32)> = self
            .agents
            .iter()
            .filter_map(|a| a.running.as_ref().map(|r| (a.id.clone(), r.group.id())))
            .collect();
        let events = self.events_tx.clone();
        tokio::task::spawn_blocking(move || {
            let sample = metrics::sample(&workspace, since, &agents);
            let _ = events.blocking_send(Event::Sampled(Box::new(sample)));
        });
    }

    /// Write `metrics_current.json`; with `[monitoring].export_metrics` also append it to
    /// `metrics/metrics.jsonl` and, with `metrics_format = "prometheus"`, write
    /// `metrics/metrics.prom` (text format). Failures are logged, never fatal (the ledger and
    /// event log are the record).
    pub(super) fn write_metrics(&mut self, status: &str) {
        let monitoring = &self.prepared.config.raw.monitoring;
        if !monitoring.enabled {
            return;
        }
        let (export, prometheus) = (
            monitoring.export_metrics,
            monitoring.metrics_format == crate::config::raw::MetricsFormat::Prometheus,
        );
        let metrics = self.current_metrics(status);
        let Ok(mut bytes) = serde_json::to_vec_pretty(&metrics) else {
            return;
        };
        bytes.push(b'\n');
        self.metrics_writer
            .replace(&self.dir().join("metrics_current.json"), bytes);
        if !export {
            return;
        }
        if let Ok(mut line) = serde_json::to_vec(&metrics) {
            line.push(b'\n');
            self.metrics_writer
                .append(&self.dir().join("metrics").join("metrics.jsonl"), line);
        }
        if prometheus {
            let text = crate::metrics::prometheus::prometheus_text(&self.status_json());
            self.metrics_writer.replace(
                &self.dir().join("metrics").join("metrics.prom"),
                text.into_bytes(),
            );
        }
    }

    /// The seed's `SessionMetrics` now.
    pub(super) fn current_metrics(&self, status: &str) -> SessionMetrics {
        let elapsed_session = self.clock.session_secs();
        let elapsed_minutes = elapsed_session / 60.0;
        let remaining: f64 = self
            .prepared
            .config
            .phases
            .iter()
            .enumerate()
            .map(
                |(i, plan)| match (&self.phases[i].started, &self.phases[i].ended) {
                    (_, Some(_)) => 0.0,
                    (Some((start, _)), None) => {
                        (plan.session_secs - (elapsed_session - start)).max(0.0)
                    }
                    (None, None) => plan.session_secs,
                },
            )
            .sum();
        let last_test = self
            .phases
            .iter()
            .rev()
            .flat_map(|p| p.checks.iter())
            .find(|c| c.name == "test");
        SessionMetrics {
            session_id: self.id().to_string(),
            status: status.to_string(),
            phase: self
                .current_phase
                .map(|p| self.prepared.config.phases[p].name.clone()),
            updated_at: now(),
            elapsed_session_secs: elapsed_session,
            elapsed_wall_secs: self.clock.wall_secs(),
            remaining_session_secs: if status == "running" { remaining } else { 0.0 },
            model_calls: self.totals.model_calls,
            total_tokens: self.totals.total_tokens,
            tokens_per_minute: if elapsed_minutes > 0.0 {
                Figure::measured(self.totals.total_tokens as f64 / elapsed_minutes)
            } else {
                Figure::missing("no session time has passed yet")
            },
            tool_calls: self.totals.tool_calls,
            tasks: self.task_counts(None),
            agents: self
                .agents
                .iter()
                .map(|a| AgentStatus {
                    id: a.id.clone(),
                    role: a.role.clone(),
                    status: if a.running.is_some() {
                        "running".into()
                    } else {
                        "idle".into()
                    },
                    task: a
                        .running
                        .as_ref()
                        .map(|r| self.board.tasks[r.task_idx].spec.id.clone()),
                })
                .collect(),
            lines_of_code: match &self.last_code_stats {
                Some(stats) => Figure::measured(stats.lines_of_code),
                None => {
                    Figure::missing("measured with tokei at each phase end; no phase has ended yet")
                }
            },
            test_pass_rate: match last_test {
                // The contract's test command gives pass/fail for the whole suite, not per test.
                Some(check) => Figure::measured(if check.passed { 1.0 } else { 0.0 }),
                None => Figure::missing("no phase test check has run yet"),
            },
            test_coverage: self.coverage_figure(),
            files_modified: match &self.last_sample {
                Some(sample) => Figure::measured(sample.files_modified),
                None => Figure::missing("the metrics sampler has not reported yet"),
            },
            agent_utilisation: self.agent_utilisation(elapsed_session),
            consensus_votes_cast: Figure::missing("this version has no consensus voting"),
            daemon_memory_bytes: match self
                .last_sample
                .as_ref()
                .and_then(|s| s.daemon_memory_bytes)
            {
                Some(bytes) => Figure::measured(bytes),
                None => Figure::missing("the metrics sampler has not reported yet"),
            },
            agent_memory_bytes: self
                .last_sample
                .as_ref()
                .map(|s| s.agent_memory_bytes.clone())
                .unwrap_or_default(),
            checkpoints: self.checkpoints_taken,
            errors: self.errors,
        }
    }

    /// Line coverage from the spec's coverage command at the last phase end, or why none.
    pub(super) fn coverage_figure(&self) -> Figure<f64> {
        self.coverage.clone().unwrap_or_else(|| {
            Figure::missing(if self.prepared.spec.commands.coverage.is_some() {
                "measured by the spec's coverage command at each phase end; no phase has ended yet"
            } else {
                "the project spec has no coverage command ([commands].coverage)"
            })
        })
    }

    /// Run session seconds of all agents / (agents × elapsed session seconds).
    pub(super) fn agent_utilisation(&self, elapsed: f64) -> Figure<f64> {
        if elapsed <= 0.0 || self.agents.is_empty() {
            return Figure::missing("no session time has passed yet");
        }
        let busy = self.store.busy_session_secs(elapsed).unwrap_or(0.0);
        Figure::measured((busy / (elapsed * self.agents.len() as f64)).clamp(0.0, 1.0))
    }

    pub(super) fn budget_report(&self, usage: &LedgerTotals) -> BudgetReport {
        let b = &self.budgets;
        let unpriced: Vec<String> = self.store.unpriced_models().unwrap_or_default();
        BudgetReport {
            total_token_budget: b.total_tokens,
            used_tokens: usage.total_tokens,
            used_fraction: usage.total_tokens as f64 / b.total_tokens.max(1) as f64,
            alert_raised: b.alerted,
            exhausted: b.exhausted.clone(),
            cost_usd: if unpriced.is_empty() {
                Figure::measured(self.store.priced_cost().unwrap_or(0.0))
            } else {
                Figure::missing(format!(
                    "no price for model(s) {}: add them to [model.prices] (USD per million tokens)",
                    unpriced.join(", ")
                ))
            },
            max_cost_usd: b.max_cost_usd,
            throttled_session_secs: self
                .agents
                .iter()
                .zip(&b.throttled_secs)
                .map(|(a, secs)| (a.id.clone(), *secs))
                .collect(),
        }
    }

    /// The criteria that decide the exit code: every phase ran, and the last phase's build and
    /// test checks passed.
    pub(super) fn critical_criteria(&self) -> Vec<CriterionResult> {
        let last = self.phases.len().saturating_sub(1);
        let last_name = self
            .prepared
            .config
            .phases
            .get(last)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let all_ran = self.phases.iter().all(|p| p.ended.is_some());
        let mut out = vec![CriterionResult {
            phase: "session".into(),
            criterion: "every phase ran to its end".into(),
            met: Some(all_ran),
            evidence: format!(
                "{} of {} phases ended",
                self.phases.iter().filter(|p| p.ended.is_some()).count(),
                self.phases.len()
            ),
            critical: true,
        }];
        for (name, text) in [
            ("build", "the project builds at the end"),
            ("test", "the project's tests pass at the end"),
        ] {
            let check = self
                .phases
                .get(last)
                .and_then(|p| p.checks.iter().find(|c| c.name == name));
            out.push(CriterionResult {
                phase: last_name.clone(),
                criterion: text.into(),
                met: Some(check.is_some_and(|c| c.passed)),
                evidence: match check {
                    Some(c) => eval::describe_check(c),
                    None => format!("the {name} check of the last phase did not run"),
                },
                critical: true,
            });
        }
        out
    }

    /// Non-critical criteria from the upstream `[project.target]` and `[project.performance]`
    /// targets that can be measured now: lines of code (tokei), build and test wall time (the
    /// last phase's checks). Test coverage is `null` until it is measured.
    pub(super) fn target_criteria(&self, code: Option<&CodeStats>) -> Vec<CriterionResult> {
        let raw = &self.prepared.config.raw.project;
        let last_checks = self
            .phases
            .last()
            .map(|p| p.checks.as_slice())
            .unwrap_or(&[]);
        let mut out = Vec::new();
        let target = raw.target.lines_of_code;
        out.push(CriterionResult {
            phase: "session".into(),
            criterion: format!("at least {target} lines of code (project.target.lines_of_code)"),
            met: code.map(|c| c.lines_of_code as u64 >= target),
            evidence: match code {
                Some(c) => format!(
                    "tokei counted {} lines of code in {} files",
                    c.lines_of_code, c.files
                ),
                None => "the workspace could not be counted".into(),
            },
            critical: false,
        });
        for (name, limit, key) in [
            (
                "build",
                raw.performance.build_time_secs,
                "project.performance.build_time_secs",
            ),
            (
                "test",
                raw.performance.test_execution_time_secs,
                "project.performance.test_execution_time_secs",
            ),
        ] {
            let check = last_checks.iter().find(|c| c.name == name);
            out.push(CriterionResult {
                phase: "session".into(),
                criterion: format!("the final {name} takes at most {limit} s ({key})"),
                met: check.filter(|c| c.passed).map(|c| c.wall_secs <= limit),
                evidence: match check {
                    Some(c) if c.passed => format!("{} (wall time)", eval::describe_check(c)),
                    Some(c) => {
                        format!("not judged: the {name} failed: {}", eval::describe_check(c))
                    }
                    None => format!("not judged: the final {name} check did not run"),
                },
                critical: false,
            });
        }
        out.push(CriterionResult {
            phase: "session".into(),
            criterion: format!(
                "test coverage at least {:.0} % (project.target.test_coverage)",
                raw.target.test_coverage * 100.0
            ),
            met: self
                .coverage
                .as_ref()
                .and_then(|c| c.value)
                .map(|c| c >= raw.target.test_coverage),
            evidence: match self.coverage.as_ref() {
                Some(Figure { value: Some(c), .. }) => {
                    format!("the spec's coverage command measured {:.1} %", c * 100.0)
                }
                Some(Figure { reason, .. }) => format!(
                    "not judged: {}",
                    reason.as_deref().unwrap_or("no coverage figure")
                ),
                None => {
                    "not judged: the project spec has no coverage command ([commands].coverage)"
                        .into()
                }
            },
            critical: false,
        });
        out.extend(self.recovery_criteria());
        out
    }

    /// The seed's recovery criteria, judged from `recoveries`: "recovery from at least 1
    /// simulated failure" (a failure while `[chaos]` was on, recovered) and "auto-recovery from
    /// 3+ error scenarios" (three failure kinds recovered without an operator).
    pub(super) fn recovery_criteria(&self) -> Vec<CriterionResult> {
        let rows = self.store.recoveries().unwrap_or_default();
        let recovered: Vec<&crate::store::RecoveryRow> = rows
            .iter()
            .filter(|r| r.outcome.as_deref() == Some("recovered"))
            .collect();
        let mut kinds: Vec<&str> = recovered.iter().map(|r| r.failure_kind.as_str()).collect();
        kinds.sort();
        kinds.dedup();
        let chaos = self.prepared.config.raw.chaos.enabled;
        vec![
            CriterionResult {
                phase: "session".into(),
                criterion: "recovery from at least 1 simulated failure".into(),
                met: chaos.then_some(!recovered.is_empty()),
                evidence: if chaos {
                    format!(
                        "[chaos] was on: {} of {} failures recovered",
                        recovered.len(),
                        rows.len()
                    )
                } else {
                    "not judged: no failure was simulated ([chaos] is off)".into()
                },
                critical: false,
            },
            CriterionResult {
                phase: "session".into(),
                criterion: "auto-recovery from 3+ error scenarios".into(),
                met: (!rows.is_empty()).then_some(kinds.len() >= 3),
                evidence: if rows.is_empty() {
                    "not judged: no failure happened".into()
                } else {
                    format!(
                        "{} failure kinds recovered automatically: {}",
                        kinds.len(),
                        kinds.join(", ")
                    )
                },
                critical: false,
            },
        ]
    }

    pub(super) fn final_report(
        &mut self,
        status: &str,
        exit_code: i32,
        because: &str,
    ) -> FinalReport {
        let recoveries = self.store.recoveries().unwrap_or_default();
        let config = &self.prepared.config;
        let stats = self
            .workspace
            .is_dir()
            .then(|| metrics::code_stats(&self.workspace));
        if let Some(stats) = &stats {
            self.last_code_stats = Some(stats.clone());
        }
        let target_criteria = self.target_criteria(stats.as_ref());
        let code = match stats {
            Some(stats) => Figure::measured(stats),
            None => Figure::missing("the workspace does not exist"),
        };
        let usage = self.store.ledger_totals(None).unwrap_or_else(|err| {
            tracing::error!(message = "cannot read the ledger", error = %format!("{err:#}"));
            self.totals.clone()
        });
        let phases: Vec<PhaseReport> = config
            .phases
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let record = &self.phases[i];
                PhaseReport {
                    name: plan.name.clone(),
                    ended_because: record.ended_because.clone().unwrap_or_else(|| {
                        if record.started.is_some() {
                            status.to_string()
                        } else {
                            "not_started".into()
                        }
                    }),
                    planned_session_secs: plan.session_secs,
                    session_secs: record.started.map(|(s, _)| {
                        record
                            .ended
                            .map(|(e, _)| e)
                            .unwrap_or(self.clock.session_secs())
                            - s
                    }),
                    wall_secs: record.started.map(|(_, s)| {
                        record
                            .ended
                            .map(|(_, e)| e)
                            .unwrap_or(self.clock.wall_secs())
                            - s
                    }),
                    objectives: plan.objectives.clone(),
                    tasks: self.task_counts(Some(i)),
                    checks: record.checks.clone(),
                    success_criteria: eval::judge_criteria(
                        &plan.name,
                        &plan.success_criteria,
                        &record.checks,
                    ),
                }
            })
            .collect();
        let mut criteria = self.critical_criteria();
        criteria.extend(target_criteria);
        criteria.extend(phases.iter().flat_map(|p| p.success_criteria.clone()));
        let agents = self
            .agents
            .iter()
            .map(|a| {
                let totals = self.store.ledger_totals(Some(&a.id)).unwrap_or_default();
                AgentReport {
                    id: a.id.clone(),
                    role: a.role.clone(),
                    runs: a.runs,
                    tasks_done: a.tasks_done,
                    tasks_failed_runs: a.failed_runs,
                    model_calls: totals.model_calls,
                    total_tokens: totals.total_tokens,
                    tool_calls: totals.tool_calls,
                }
            })
            .collect();
        FinalReport {
            schema_version: REPORT_SCHEMA_VERSION,
            session_id: self.id().to_string(),
            project: ProjectInfo {
                project_type: config.raw.session.project_type.clone(),
                test_name: config.raw.metadata.name.clone(),
                test_version: config.raw.metadata.version.clone(),
                name: self.prepared.spec.name.clone(),
                spec_dir: self.prepared.spec.dir.display().to_string(),
                workspace: self.workspace.display().to_string(),
            },
            status: status.to_string(),
            exit_code,
            ended_because: because.to_string(),
            started_at: self.started_at.clone(),
            ended_at: now(),
            duration: Durations {
                planned_session_secs: config.session_secs(),
                session_secs: self.clock.session_secs(),
                wall_secs: self.clock.wall_secs(),
                time_scale: self.clock.time_scale(),
            },
            model: ModelInfo {
                provider: self.prepared.provider.as_str().to_string(),
                name: config.model_name(),
                builtin: self.prepared.provider.is_builtin(),
                label: self.prepared.model_label.clone(),
            },
            agent_count: self.agents.len(),
            agent_kind: match (&config.raw.agents.kind, &config.raw.agents.preset) {
                (AgentKind::Builtin, _) => "builtin (megatest agent)".into(),
                (AgentKind::Command, Some(preset)) => format!("command (preset {preset})"),
                (AgentKind::Command, None) => "command".into(),
            },
            phases,
            budget: self.budget_report(&usage),
            rollbacks: self
                .store
                .events_of_kind("checkpoint_restored")
                .unwrap_or_default()
                .into_iter()
                .map(|row| {
                    let mut value = serde_json::from_str::<serde_json::Value>(&row.data).unwrap_or_default();
                    value["at"] = serde_json::Value::String(row.at);
                    value["session_secs"] = serde_json::Value::from(row.session_secs);
                    value
                })
                .collect(),
            checkpoints: CheckpointSummary { count: self.checkpoints_taken, last: self.last_checkpoint.clone() },
            usage,
            tasks: self.task_counts(None),
            task_list: self
                .board
                .tasks
                .iter()
                .map(|t| TaskReport {
                    id: t.spec.id.clone(),
                    phase: t.spec.phase.clone(),
                    role: t.spec.role.clone(),
                    state: t.state.as_str().to_string(),
                    attempts: t.attempts,
                    agent_id: t.agent_id.clone(),
                    last_error: t.last_error.clone(),
                })
                .collect(),
            agents,
            errors: self.store.error_counts().unwrap_or_default(),
            recovery_outcomes: recoveries.iter().fold(BTreeMap::new(), |mut m, r| {
                *m.entry(r.outcome.clone().unwrap_or_else(|| "open".into()))
                    .or_default() += 1;
                m
            }),
            recoveries,
            chaos: config.raw.chaos.enabled.then(|| {
                let fired: Vec<serde_json::Value> = self
                    .store
                    .events_of_kind("chaos")
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|row| serde_json::from_str(&row.data).ok())
                    .collect();
                serde_json::json!({
                    "warning": "fault injection was ON: failures in this session were injected on purpose",
                    "config": config.raw.chaos,
                    "injected": fired,
                })
            }),
            code,
            test_coverage: self.coverage_figure(),
            success_criteria: criteria,
            not_yet_enforced: config.not_yet_enforced.clone(),
        }
    }
}
