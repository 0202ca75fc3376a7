//! What the session reports: `metrics_current.json`, the sampler's start, the success
//! criteria (critical, targets, recovery) and `final_report.json`, all built from the
//! session's state and `session.db`.

use super::*;
use crate::report::{tiers, verdict};

impl Session {
    /// `counted` tool calls as a report figure: null with the preset's reason when its CLI
    /// reports none and none was counted (a 0 would claim the agent used no tool).
    pub(super) fn tool_call_figure(&self, counted: u64) -> Figure<u64> {
        match self.prepared.preset.map(|p| p.tool_calls) {
            Some(crate::agent::ToolCalls::NotReported(reason)) if counted == 0 => {
                Figure::missing(reason)
            }
            _ => Figure::measured(counted),
        }
    }
}

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
        self.record_trust_scores();
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

    /// Record the agents' trust scores (rounded to 0.001) as a `trust_scores` event when they
    /// changed since the last one: the report draws them over time.
    pub(super) fn record_trust_scores(&mut self) {
        let scores: BTreeMap<String, f64> = self
            .trust_scores()
            .into_iter()
            .map(|(id, (score, _))| (id, (score * 1000.0).round() / 1000.0))
            .collect();
        if scores.is_empty() || scores == self.trust_recorded {
            return;
        }
        let data = serde_json::to_value(&scores).unwrap_or_default();
        if self.event("trust_scores", None, None, None, data).is_ok() {
            self.trust_recorded = scores;
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
        let trust = self.trust_scores();
        SessionMetrics {
            session_id: self.id().to_string(),
            status: status.to_string(),
            phase: self
                .current_phase
                .map(|p| self.prepared.config.phases[p].name.clone()),
            updated_at: now(),
            elapsed_session_secs: elapsed_session,
            elapsed_wall_secs: self.clock.wall_secs(),
            // A paused, escalated or stopping session still has its time boxes; an ended one none.
            remaining_session_secs: if matches!(
                status,
                "running" | "paused" | "escalated" | "stopping"
            ) {
                remaining
            } else {
                0.0
            },
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
                    trust_score: trust
                        .get(&a.id)
                        .map(|(score, _)| *score)
                        .unwrap_or_default(),
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
            acceptance_pass_rate: match self.evaluation.as_deref().map(|e| &e.acceptance) {
                Some(a) if a.total > 0 => Figure::measured(a.passed as f64 / a.total as f64),
                Some(a) => {
                    Figure::missing(a.reason.clone().unwrap_or_else(|| "no case ran".into()))
                }
                None => Figure::missing("no evaluation has run yet ([evaluation].phases)"),
            },
            bugs: match self.evaluation.as_deref() {
                Some(e) if e.acceptance.status != "not_run" => Figure::measured(e.bugs),
                Some(e) => Figure::missing(e.acceptance.reason.clone().unwrap_or_default()),
                None => Figure::missing("no evaluation has run yet ([evaluation].phases)"),
            },
            files_modified: match &self.last_sample {
                Some(sample) => Figure::measured(sample.files_modified),
                None => Figure::missing("the metrics sampler has not reported yet"),
            },
            agent_utilisation: self.agent_utilisation(elapsed_session),
            consensus_votes_cast: if self.prepared.config.raw.consensus.enabled {
                Figure::measured(self.store.ballots_cast().unwrap_or(0))
            } else {
                Figure::missing("no votes: [consensus] is absent or enabled = false")
            },
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

    /// Line coverage from the newest evaluation, or why none.
    pub(super) fn coverage_figure(&self) -> Figure<f64> {
        match &self.evaluation {
            Some(evaluation) => evaluation.test_coverage.clone(),
            None => Figure::missing(
                "measured by the evaluation at the ends of the phases in [evaluation].phases; none has run yet",
            ),
        }
    }

    /// Run session seconds of all agents / (agents × elapsed session seconds).
    pub(super) fn agent_utilisation(&self, elapsed: f64) -> Figure<f64> {
        if elapsed <= 0.0 || self.agents.is_empty() {
            return Figure::missing("no session time has passed yet");
        }
        let busy = self.store.busy_session_secs(elapsed).unwrap_or(0.0);
        Figure::measured((busy / (elapsed * self.agents.len() as f64)).clamp(0.0, 1.0))
    }

    /// The budgets as the report shows them (see [`verdict::budget_report`]).
    pub(super) fn budget_report(&self, usage: &LedgerTotals) -> BudgetReport {
        let unpriced: Vec<String> = self.store.unpriced_models().unwrap_or_default();
        let priced_cost = self.store.priced_cost().unwrap_or(0.0);
        let agent_ids: Vec<&str> = self.agents.iter().map(|a| a.id.as_str()).collect();
        verdict::budget_report(&self.budgets, usage, &unpriced, priced_cost, &agent_ids)
    }

    /// This session's phases as the verdict sees them.
    fn phase_outcomes(&self) -> Vec<verdict::PhaseOutcome<'_>> {
        self.prepared
            .config
            .phases
            .iter()
            .zip(&self.phases)
            .map(|(plan, record)| verdict::PhaseOutcome {
                name: &plan.name,
                ended: record.ended.is_some(),
                checks: &record.checks,
            })
            .collect()
    }

    /// Operator interventions by kind, from the event log: pauses and stops through the control
    /// API, escalation decisions, rollbacks (`megatest restore`) and config reloads.
    fn interventions(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for row in self.store.events_of_kind("operator").unwrap_or_default() {
            let data: serde_json::Value = serde_json::from_str(&row.data).unwrap_or_default();
            if let Some(action @ ("pause" | "stop")) = data["action"].as_str() {
                *out.entry(action.to_string()).or_default() += 1;
            }
        }
        for (kind, name) in [
            ("escalation_decided", "escalation decision"),
            ("checkpoint_restored", "rollback"),
            ("config_reloaded", "config reload"),
        ] {
            let n = self
                .store
                .events_of_kind(kind)
                .map(|r| r.len())
                .unwrap_or(0);
            if n > 0 {
                out.insert(name.to_string(), n);
            }
        }
        out
    }

    /// The checkpoints verified ([`crate::checkpoint::audit`]); computed again only when a
    /// newer checkpoint was recorded since.
    pub(super) fn checkpoint_audit(&self) -> crate::checkpoint::Audit {
        let rows = self.store.checkpoints().unwrap_or_default();
        let newest = rows.last().map(|r| r.seq);
        let mut cache = self.checkpoint_audit.borrow_mut();
        match &*cache {
            Some((seen, audit)) if *seen == newest => audit.clone(),
            _ => {
                let audit = crate::checkpoint::audit(self.dir(), &rows);
                *cache = Some((newest, audit.clone()));
                audit
            }
        }
    }

    /// "All checkpoints created and verified" ([`tiers::checkpoints`]) from the store.
    fn checkpoints_criterion(&self, recoveries: &[crate::store::RecoveryRow]) -> CriterionResult {
        let audit = self.checkpoint_audit();
        let phase_end_taken = self
            .store
            .checkpoints()
            .unwrap_or_default()
            .iter()
            .filter(|row| row.trigger == "phase_end")
            .count();
        let phases_ended = self
            .phases
            .iter()
            .filter(|p| p.ended.is_some() && p.ended_because.as_deref() != Some("interrupted"))
            .count();
        let rollbacks: Vec<(u32, u32)> = self
            .store
            .events_of_kind("checkpoint_restored")
            .unwrap_or_default()
            .iter()
            .filter_map(|row| {
                let data: serde_json::Value = serde_json::from_str(&row.data).ok()?;
                Some((
                    u32::try_from(data["requested"].as_u64()?).ok()?,
                    u32::try_from(data["sequence"].as_u64()?).ok()?,
                ))
            })
            .collect();
        let detected = tiers::detected_corruptions(recoveries, &rollbacks);
        tiers::checkpoints(tiers::CheckpointEvidence {
            enabled: self.prepared.config.raw.checkpoint.enabled,
            audit: &audit,
            phase_end_taken,
            phases_ended,
            detected: &detected,
        })
    }

    /// The criteria that decide the exit code ([`verdict::critical_criteria`]): the seed's
    /// critical tier, with the acceptance suite's critical cases of the newest evaluation.
    pub(super) fn critical_criteria(&self) -> Vec<CriterionResult> {
        let recoveries = self.store.recoveries().unwrap_or_default();
        let phases = self.phase_outcomes();
        let ended = phases.iter().filter(|p| p.ended).count();
        let mut out = vec![
            tiers::completion(ended, phases.len(), &recoveries),
            self.checkpoints_criterion(&recoveries),
        ];
        out.extend(verdict::final_checks(&phases));
        out.push(tiers::recovered(&recoveries));
        out.push(match &self.evaluation {
            Some(evaluation) => {
                let mut judged = crate::report::grades::acceptance_critical(evaluation);
                judged.phase = evaluation.phase.clone();
                judged
            }
            None => CriterionResult {
                phase: "session".into(),
                criterion: "the acceptance suite's critical cases pass".into(),
                met: None,
                evidence: "not judged: no evaluation ran (see [evaluation].phases)".into(),
                critical: true,
                tier: eval::Tier::Critical,
            },
        });
        out
    }

    /// The upstream targets and the seed's recovery criteria ([`verdict::target_criteria`],
    /// [`verdict::recovery_criteria`]).
    pub(super) fn target_criteria(&self, code: Option<&CodeStats>) -> Vec<CriterionResult> {
        let last_checks = self
            .phases
            .last()
            .map(|p| p.checks.as_slice())
            .unwrap_or(&[]);
        let coverage = self.coverage_figure();
        let mut out = verdict::target_criteria(
            &self.prepared.config.raw.project,
            last_checks,
            code,
            Some(&coverage),
        );
        let rows = self.store.recoveries().unwrap_or_default();
        out.extend(verdict::recovery_criteria(
            &rows,
            self.prepared.config.raw.chaos.enabled,
        ));
        out
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
        let checkpoint_audit = self.checkpoint_audit();
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
                        eval::PhaseEvidence {
                            checks: &record.checks,
                            evaluation: record.evaluation.as_deref(),
                            newest_checkpoint: checkpoint_audit.newest.as_ref(),
                        },
                    ),
                }
            })
            .collect();
        let mut criteria = self.critical_criteria();
        criteria.extend(target_criteria);
        if let Some(evaluation) = &self.evaluation {
            criteria.extend(crate::report::grades::quality(
                evaluation,
                &self.prepared.config.raw.project,
            ));
        }
        criteria.extend(crate::report::grades::efficiency(
            usage.total_tokens,
            self.tool_call_figure(usage.tool_calls),
            code.value.as_ref().map(|c| c.lines_of_code),
            self.task_counts(None).done,
        ));
        let budget = self.budget_report(&usage);
        let trust = self.trust_scores();
        let scores: BTreeMap<String, f64> = trust
            .iter()
            .map(|(id, (score, _))| (id.clone(), *score))
            .collect();
        criteria.extend(tiers::nice_to_have(
            &self.interventions(),
            &budget,
            Some(&scores),
        ));
        criteria.extend(phases.iter().flat_map(|p| p.success_criteria.clone()));
        let failures =
            crate::report::FailureCounts::of(&phases, self.evaluation.as_deref(), &criteria);
        let (spawned, retired) = (
            self.spawning_events("agent_spawned"),
            self.spawning_events("agent_retired"),
        );
        let agents = self
            .agents
            .iter()
            .map(|a| {
                let totals = self.store.ledger_totals(Some(&a.id)).unwrap_or_default();
                let (trust_score, trust_record) = trust.get(&a.id).cloned().unwrap_or_default();
                AgentReport {
                    retired: retired
                        .iter()
                        .find(|(id, _)| *id == a.id)
                        .map(|(_, reason)| reason.clone()),
                    trust_score,
                    trust_record,
                    id: a.id.clone(),
                    role: a.role.clone(),
                    runs: a.runs,
                    tasks_done: a.tasks_done,
                    tasks_failed_runs: a.failed_runs,
                    model_calls: totals.model_calls,
                    total_tokens: totals.total_tokens,
                    tool_calls: self.tool_call_figure(totals.tool_calls),
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
            sandbox: if self.prepared.sandboxed { "bwrap" } else { "none" }.into(),
            containment: crate::report::Containment::of(
                &config.raw.agents,
                &self.prepared.agent_backend.cgroups(),
            ),
            phases,
            budget,
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
            tool_calls: self.tool_call_figure(usage.tool_calls),
            usage,
            tasks: self.task_counts(None),
            concurrency: ConcurrencyReport {
                agents: self.agents.len(),
                live_agents: self.agents.iter().filter(|a| !a.retired).count(),
                limit: self.concurrency(),
                dynamic_spawning: config.raw.agent.dynamic_spawning,
                max_total_agents: config.raw.agent.max_total_agents,
                spawned: count_reasons(&spawned),
                retired: count_reasons(&retired),
                peak_busy_agents: match self.store.peak_concurrent_runs() {
                    Ok(peak) => Figure::measured(peak),
                    Err(err) => Figure::missing(format!("cannot read agent_runs: {err:#}")),
                },
                follow_up_tasks: self
                    .store
                    .events_of_kind("task_generated")
                    .map(|e| e.len())
                    .unwrap_or_default(),
            },
            task_confirmation: self.task_confirmation(),
            task_list: self.board.entries(),
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
            evaluation: self.evaluation.as_deref().cloned(),
            consensus: self.consensus_report(),
            failures,
            forked_from: self.store.forked_from().unwrap_or_default(),
            interruptions: self.interruptions(),
            success_criteria: criteria,
            not_yet_enforced: config.not_yet_enforced.clone(),
        }
    }
}

impl Session {
    /// Keep `report` in session.db, write `report.html` and `junit.xml` beside it and append
    /// the step summary under GitHub Actions; returns the end-of-run summary to print. A failed
    /// step is logged; the rest still runs.
    pub(super) fn publish_reports(&mut self, report: &FinalReport) -> Option<String> {
        use crate::report::files::{self, Format};
        let document = match serde_json::to_value(report) {
            Ok(document) => document,
            Err(err) => {
                super::log_end_step::<anyhow::Error>("the reports", Err(err.into()));
                return None;
            }
        };
        super::log_end_step(
            "the final report into session.db",
            self.store.save_final_report(&document),
        );
        let timeline = self.store.timeline().unwrap_or_else(|err| {
            tracing::warn!(message = "cannot read the timeline for report.html", error = %format!("{err:#}"));
            Default::default()
        });
        let dir = self.dir().to_path_buf();
        let html = files::write(&dir, Format::Html, &document, &timeline);
        let html_path = html.as_ref().ok().cloned();
        super::log_end_step("report.html", html.map(|_| ()));
        let junit = files::write(&dir, Format::Junit, &document, &timeline);
        super::log_end_step("junit.xml", junit.map(|_| ()));
        super::log_end_step(
            "the GitHub step summary",
            files::append_step_summary(&document, &dir).map(|_| ()),
        );
        Some(files::terminal_summary(&document, html_path.as_deref()))
    }

    /// (agent id, reason) of each `agent_spawned` or `agent_retired` event, in order.
    fn spawning_events(&self, kind: &str) -> Vec<(String, String)> {
        self.store
            .events_of_kind(kind)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|row| {
                let data: serde_json::Value = serde_json::from_str(&row.data).ok()?;
                Some((row.agent_id?, data["reason"].as_str()?.to_string()))
            })
            .collect()
    }
}

fn count_reasons(events: &[(String, String)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, reason) in events {
        *out.entry(reason.clone()).or_insert(0) += 1;
    }
    out
}

impl Session {
    /// The `session_resumed` events: how often and for how long (wall seconds) it was down.
    fn interruptions(&self) -> crate::report::Interruptions {
        let resumed = self
            .store
            .events_of_kind("session_resumed")
            .unwrap_or_default();
        crate::report::Interruptions {
            resumed: resumed.len() as u32,
            downtime_wall_secs: resumed
                .iter()
                .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
                .filter_map(|d| d["downtime_wall_secs"].as_f64())
                .sum(),
        }
    }
}
