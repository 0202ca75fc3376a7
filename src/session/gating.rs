//! A phase lasts its time box (`[scheduling].phase_end = "time_box"`, the default). When its
//! planned work — and every follow-up task and vote — is settled, the session measures the
//! workspace (the phase checks; then the evaluation when the phase evaluates and the checks
//! passed) and judges the phase's success criteria. Every criterion judged met opens the gate:
//! with `[consensus]` a gate vote of the agents decides (`ended_because` `gate_vote` when it
//! passes), without it the criteria alone end the phase (`gate_criteria`). Otherwise — or when
//! the vote rejects or cannot decide — follow-up work goes on the board
//! ([`crate::swarm::followup`]): fix tasks with the failing check's output, test, doc,
//! security and optimisation tasks from the evaluation's figures, the phase's objectives with
//! the unmet criteria and the voters' reasons. Follow-up work is bounded per phase
//! (`[scheduling].max_follow_up_tasks_per_phase`) and by what the token budget leaves; when
//! none may be generated the agents wait for the time box (`time_box`). A gate deadlock is not
//! escalated: it keeps the phase to its time box.

use super::voting::Subject;
use super::*;
use crate::config::raw::PhaseEnd;
use crate::swarm::consensus::Outcome;
use crate::swarm::followup::{self, CheckSeen, Evidence, Shortfall};

/// The prefix of follow-up task ids: `followup-<phase>-<n>-<kind>`.
pub(super) const FOLLOW_UP_PREFIX: &str = "followup-";

/// The gate of the phase in progress (reset when a phase starts).
#[derive(Default)]
pub(super) struct GateState {
    /// Gate votes opened in this phase.
    pub(super) rounds: u32,
    /// Follow-up rounds put on the board in this phase.
    followup_rounds: usize,
    /// Follow-up tasks generated in this phase.
    generated: usize,
    /// No more follow-up work in this phase: the agents wait for the time box.
    exhausted: bool,
    /// The criteria as measured, one line each, for the gate voters' prompt.
    pub(super) criteria_lines: Vec<String>,
    /// What the gate measured when it opened: the phase's checks and evaluation if it ends by it.
    measured: Option<(Vec<CheckRow>, Option<Box<eval::evaluation::Evaluation>>)>,
    /// The unmet criteria of the last measurement.
    unmet: Vec<String>,
    /// A gate vote is open.
    voting: bool,
    /// A gate vote passed: the phase ends.
    passed: bool,
    /// The phase is ending (its votes are being closed): a decided gate changes nothing.
    pub(super) closing: bool,
}

impl GateState {
    /// A fresh state for a phase whose follow-up tasks so far (a resumed session's) number
    /// `generated` (`session.db`'s count: ids stay unique across a crash).
    pub(super) fn with_generated(generated: usize) -> GateState {
        GateState {
            generated,
            ..GateState::default()
        }
    }

    /// What the gate measured, once (the phase's end records it instead of measuring again).
    pub(super) fn take_measured(
        &mut self,
    ) -> Option<(Vec<CheckRow>, Option<Box<eval::evaluation::Evaluation>>)> {
        self.measured.take()
    }
}

impl Session {
    /// The phase's planned work and votes are settled: end the phase (Some(because)), or put
    /// follow-up work or a gate vote on the board, or wait for the time box (None).
    pub(super) async fn phase_settled(&mut self, phase_idx: usize) -> Result<Option<&'static str>> {
        if self.prepared.config.raw.scheduling.phase_end == PhaseEnd::TasksDone {
            return Ok(Some("tasks_done"));
        }
        if self.gate.passed {
            return Ok(Some("gate_vote"));
        }
        if self.gate.voting || self.gate.exhausted {
            return Ok(None);
        }
        // megatest's own measurement: session time runs at wall speed meanwhile.
        let measuring = self.clock.real_time();
        let Some(rows) = self.run_check_commands(phase_idx).await? else {
            return Ok(None); // a signal: the loop ends the phase
        };
        let evaluation =
            if rows.iter().all(|r| r.passed) && self.prepared.config.phases[phase_idx].evaluate {
                match self.evaluate(phase_idx, rows.clone()).await? {
                    Some(evaluation) => Some(evaluation),
                    None => return Ok(None),
                }
            } else {
                None
            };
        drop(measuring);
        let plan = self.prepared.config.phases[phase_idx].clone();
        let audit = self.checkpoint_audit();
        let criteria = eval::judge_criteria(
            &plan.name,
            &plan.success_criteria,
            eval::PhaseEvidence {
                checks: &rows,
                evaluation: evaluation.as_deref(),
                newest_checkpoint: audit.newest.as_ref(),
            },
        );
        let met: Vec<Option<bool>> = criteria.iter().map(|c| c.met).collect();
        let open = followup::gate_open(&met);
        let line = |c: &CriterionResult| {
            let word = match c.met {
                Some(true) => "met",
                Some(false) => "not met",
                None => "not judged",
            };
            format!("{}: {word} ({})", c.criterion, c.evidence)
        };
        self.gate.criteria_lines = criteria.iter().map(line).collect();
        self.gate.unmet = criteria
            .iter()
            .filter(|c| c.met != Some(true))
            .map(line)
            .collect();
        self.event(
            "gate_measured",
            None,
            Some(&plan.name),
            None,
            serde_json::json!({"open": open, "criteria": criteria, "checks_passed": rows.iter().all(|r| r.passed)}),
        )?;
        tracing::info!(message = "phase gate measured", phase = %plan.name, open, unmet = self.gate.unmet.len());
        if open {
            self.gate.measured = Some((rows, evaluation));
            if !self.prepared.config.raw.consensus.enabled {
                return Ok(Some("gate_criteria"));
            }
            self.gate.voting = true;
            self.open_vote(Subject::Gate(phase_idx), None)?;
            return Ok(None);
        }
        let evidence = self.evidence(phase_idx, &rows, evaluation.as_deref(), Vec::new());
        self.follow_up(phase_idx, evidence)?;
        Ok(None)
    }

    /// A gate vote was decided (from `voting.rs`): approved ends the phase at the next look;
    /// rejected or undecided, the phase gets follow-up work with the voters' reasons.
    pub(super) fn gate_decided(
        &mut self,
        phase_idx: usize,
        outcome: &Outcome,
        reasons: Vec<String>,
    ) -> Result<()> {
        self.gate.voting = false;
        if self.gate.closing {
            return Ok(());
        }
        if matches!(outcome, Outcome::Approved(_)) {
            self.gate.passed = true;
            return Ok(());
        }
        if let Outcome::Deadlock(reason) = outcome {
            // Undecided, like any deadlocked vote: the recovery table decides (by default the
            // operator is asked); meanwhile the gate stays shut and follow-up work goes on.
            let subject =
                crate::swarm::review::gate_subject(&self.prepared.config.phases[phase_idx].name);
            self.failure(
                FailureKind::ConsensusDeadlock,
                None,
                None,
                &format!("the gate vote on {subject}: {reason}"),
            )?;
        }
        let mut reasons = reasons;
        if reasons.is_empty() {
            reasons.push(format!("no decision: {}", outcome.reason()));
        }
        let (rows, evaluation) = self.gate.measured.take().unwrap_or_default();
        let evidence = self.evidence(phase_idx, &rows, evaluation.as_deref(), reasons);
        self.follow_up(phase_idx, evidence)
    }

    /// What agents may see of a measurement, for [`followup::plan`].
    fn evidence(
        &self,
        phase_idx: usize,
        rows: &[CheckRow],
        evaluation: Option<&eval::evaluation::Evaluation>,
        gate_rejections: Vec<String>,
    ) -> Evidence {
        let plan = &self.prepared.config.phases[phase_idx];
        let project = &self.prepared.config.raw.project;
        let commands = &self.prepared.spec.commands;
        let checks = rows
            .iter()
            .map(|r| CheckSeen {
                name: r.name.clone(),
                command: match r.name.as_str() {
                    "build" => commands.build.clone(),
                    _ => commands.test.clone(),
                },
                passed: r.passed,
                output_tail: r.output_tail.clone(),
            })
            .collect();
        let mut evidence = Evidence {
            phase: plan.name.clone(),
            checks,
            objectives: plan.objectives.clone(),
            unmet_criteria: self.gate.unmet.clone(),
            gate_rejections,
            ..Evidence::default()
        };
        if let Some(e) = evaluation {
            evidence.coverage = e.test_coverage.value.map(|value| Shortfall {
                name: "test_coverage".into(),
                value,
                target: project.target.test_coverage,
                higher_is_better: true,
            });
            evidence.doc_coverage = e.doc_coverage.fraction.value.map(|value| Shortfall {
                name: "documentation_coverage".into(),
                value,
                target: project.target.documentation_coverage,
                higher_is_better: true,
            });
            if e.security.clean() == Some(false) {
                evidence.security_findings = e.security.details.clone();
                if evidence.security_findings.is_empty() {
                    evidence.security_findings.push(e.security.method.clone());
                }
            }
            if let Some(build_secs) = e.performance.build_secs.value {
                evidence.performance.push(Shortfall {
                    name: "build_time_secs".into(),
                    value: build_secs,
                    target: project.performance.build_time_secs,
                    higher_is_better: false,
                });
            }
            for (name, value, target) in e.targeted_measurements() {
                evidence.performance.push(Shortfall {
                    name: name.to_string(),
                    value,
                    target,
                    higher_is_better: true,
                });
            }
        }
        evidence
    }

    /// Put the follow-up tasks for `evidence` on phase `phase_idx`'s board: at most one per
    /// agent that may run at once, within the phase's bound and the token budget's room. None
    /// left: the phase waits for its time box.
    fn follow_up(&mut self, phase_idx: usize, evidence: Evidence) -> Result<()> {
        let bound = self.prepared.config.max_follow_up_tasks_per_phase();
        let runs: u64 = self.agents.iter().map(|a| a.runs as u64).sum();
        let budget = followup::budget_room(
            self.totals.total_tokens,
            self.prepared.config.raw.limits.total_token_budget,
            runs,
        );
        let left = bound.saturating_sub(self.gate.generated);
        let room = left.min(self.concurrency()).min(budget);
        let mut roles: Vec<String> = Vec::new();
        for agent in &self.agents {
            if !roles.contains(&agent.role) {
                roles.push(agent.role.clone());
            }
        }
        self.gate.followup_rounds += 1;
        let round = self.gate.followup_rounds;
        let tasks = followup::plan(&evidence, &roles, room, round);
        let phase = evidence.phase.clone();
        if tasks.is_empty() {
            self.gate.exhausted = true;
            let because = if left == 0 {
                format!("[scheduling].max_follow_up_tasks_per_phase ({bound}) reached")
            } else if budget == 0 {
                "the token budget leaves no room for another task run".to_string()
            } else {
                "nothing to follow up: no failing check, no missed target, no objective".to_string()
            };
            self.event(
                "follow_up_exhausted",
                None,
                Some(&phase),
                None,
                serde_json::json!({"because": because, "generated": self.gate.generated}),
            )?;
            tracing::info!(message = "no more follow-up work in this phase", phase = %phase, because = %because);
            return Ok(());
        }
        for task in tasks {
            self.gate.generated += 1;
            let spec = TaskSpec {
                id: format!(
                    "{FOLLOW_UP_PREFIX}{phase}-{}-{}",
                    self.gate.generated,
                    task.kind.as_str()
                ),
                phase: phase.clone(),
                role: task.role.clone(),
                title: task.title.clone(),
                prompt: task.prompt.clone(),
                after: Vec::new(),
                check: None,
            };
            self.store
                .insert_task(&spec.id, &spec.phase, &spec.role, &spec.title)?;
            self.event(
                "task_generated",
                None,
                Some(&phase),
                Some(&spec.id),
                serde_json::json!({"kind": task.kind.as_str(), "role": task.role, "title": task.title,
                    "evidence": task.evidence, "round": round, "prompt": task.prompt}),
            )?;
            tracing::info!(message = "follow-up task", phase = %phase, task = %spec.id, kind = task.kind.as_str(), role = %task.role, evidence = %task.evidence);
            self.board.tasks.push(board::Task::planned(spec, phase_idx));
        }
        Ok(())
    }
}
