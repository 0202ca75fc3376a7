//! Follow-up work and the phase gate. A phase lasts its time box; when its planned work is
//! settled the session measures the workspace (the phase checks, and the evaluation when the
//! phase evaluates) and judges the phase's success criteria. Every criterion met opens the gate
//! ([`gate_open`]); otherwise [`plan`] turns what was measured into follow-up tasks, each with a
//! kind, a role and the evidence that caused it:
//!
//! | evidence | kind | preferred roles |
//! |---|---|---|
//! | a failing build check | `fix` | Coder |
//! | a failing test check (the agents' own tests) | `fix` | Coder, Tester |
//! | line coverage under `[project.target].test_coverage` | `test` | Tester |
//! | documentation coverage under its target | `doc` | Documenter, Architect |
//! | security findings | `security` | Security, Reviewer, Coder |
//! | a performance figure short of its target | `optimisation` | Coder |
//! | the rest of a round: the phase's objectives | `objective` | by the objective's words |
//!
//! Measured evidence comes first; the phase's objectives fill the rest of a round, so idle
//! agents work toward the phase's goals while its measured faults are fixed. A round never holds
//! more tasks than `room` (the session passes the idle agents, the phase's bound
//! `[scheduling].max_follow_up_tasks_per_phase` and what the token budget leaves, see
//! [`budget_room`]). Hidden acceptance cases are never named: agents see only their checks'
//! output and the figures the project's targets ask for. Pure.

/// What a follow-up task is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Make a failing check pass.
    Fix,
    /// Raise line coverage.
    Test,
    /// Raise documentation coverage.
    Doc,
    /// Resolve security findings.
    Security,
    /// Meet a performance target.
    Optimisation,
    /// Work toward one of the phase's objectives.
    Objective,
}

impl Kind {
    /// The word in task ids, events and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fix => "fix",
            Kind::Test => "test",
            Kind::Doc => "doc",
            Kind::Security => "security",
            Kind::Optimisation => "optimisation",
            Kind::Objective => "objective",
        }
    }
}

/// A phase check as agents may see it (the spec's build or test command, run in `project/`).
#[derive(Debug, Clone)]
pub struct CheckSeen {
    /// `build` or `test`.
    pub name: String,
    /// The shell command.
    pub command: String,
    /// Exit code 0 within the time limit.
    pub passed: bool,
    /// The end of its output.
    pub output_tail: String,
}

/// A measured figure against its target: `value` and `target` in the same unit; `higher_is_better`
/// says which side of the target is met.
#[derive(Debug, Clone)]
pub struct Shortfall {
    /// The figure's name, e.g. `test_coverage` or `throughput_ops_per_sec`.
    pub name: String,
    /// What was measured.
    pub value: f64,
    /// What the project's targets ask for.
    pub target: f64,
    /// True when a value at or above the target meets it.
    pub higher_is_better: bool,
}

impl Shortfall {
    /// True when the value misses its target.
    pub fn missed(&self) -> bool {
        if self.higher_is_better {
            self.value < self.target
        } else {
            self.value > self.target
        }
    }
}

/// What the session measured when the phase's planned work settled.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The phase's name.
    pub phase: String,
    /// The phase checks just run.
    pub checks: Vec<CheckSeen>,
    /// Line coverage (fraction 0–1) against `[project.target].test_coverage`.
    pub coverage: Option<Shortfall>,
    /// Documentation coverage (fraction 0–1) against its target.
    pub doc_coverage: Option<Shortfall>,
    /// Security scan findings (one line each).
    pub security_findings: Vec<String>,
    /// Performance figures with targets.
    pub performance: Vec<Shortfall>,
    /// The phase's objectives (`[[phases]].objectives`).
    pub objectives: Vec<String>,
    /// The criteria not met, one line each (`criterion: evidence`), for the prompts.
    pub unmet_criteria: Vec<String>,
    /// Reasons the agents gave when they rejected the phase gate.
    pub gate_rejections: Vec<String>,
}

/// One follow-up task to put on the board.
#[derive(Debug, Clone, PartialEq)]
pub struct FollowUp {
    /// What it is for.
    pub kind: Kind,
    /// The role that should take it (one of the session's roles).
    pub role: String,
    /// One-line title.
    pub title: String,
    /// The prompt: what to do, and the evidence.
    pub prompt: String,
    /// Why it exists, one line (for events and the report).
    pub evidence: String,
}

/// True when the gate may open: every criterion was judged met (`Some(true)`) — a phase
/// without criteria has none unmet; a criterion that could not be judged (`None`) keeps it
/// shut.
pub fn gate_open(criteria: &[Option<bool>]) -> bool {
    criteria.iter().all(|met| *met == Some(true))
}

/// How many more tasks the token budget leaves room for: `(budget − used) / tokens_per_run`,
/// where `tokens_per_run` is the mean over the runs so far (no runs yet: no limit from the
/// budget). `budget` 0 means no budget.
pub fn budget_room(used: u64, budget: u64, runs: u64) -> usize {
    if budget == 0 || runs == 0 {
        return usize::MAX;
    }
    let per_run = (used / runs).max(1);
    (budget.saturating_sub(used) / per_run) as usize
}

/// The first of `preferred` the session has among `roles`, else its first role (else `Coder`).
fn role_for(preferred: &[&str], roles: &[String]) -> String {
    preferred
        .iter()
        .find_map(|p| roles.iter().find(|r| r.eq_ignore_ascii_case(p)))
        .or_else(|| roles.first())
        .cloned()
        .unwrap_or_else(|| "Coder".into())
}

/// The roles an objective's words point at.
fn objective_roles(objective: &str) -> &'static [&'static str] {
    let lower = objective.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&["test", "validation", "coverage"]) {
        &["Tester", "Coder"]
    } else if has(&["security", "harden"]) {
        &["Security", "Reviewer", "Coder"]
    } else if has(&["ci/cd", "pipeline", "release", "deploy"]) {
        &["DevOps", "Coder"]
    } else if has(&["document", "docs"]) {
        &["Documenter", "Architect", "Coder"]
    } else if has(&["design", "architecture", "interface", "structure"]) {
        &["Architect", "Coder"]
    } else if has(&["review", "polish"]) {
        &["Reviewer", "Coder"]
    } else {
        &["Coder"]
    }
}

/// The follow-up tasks for `evidence`, at most `room`, with the session's `roles`. `round`
/// (1-based) is the phase's follow-up round: objective tasks rotate through the objectives
/// from it, so successive rounds do not always start with the first.
pub fn plan(evidence: &Evidence, roles: &[String], room: usize, round: usize) -> Vec<FollowUp> {
    let mut out = Vec::new();
    let phase = &evidence.phase;
    for check in evidence.checks.iter().filter(|c| !c.passed) {
        let preferred: &[&str] = if check.name == "build" {
            &["Coder"]
        } else {
            &["Coder", "Tester"]
        };
        out.push(FollowUp {
            kind: Kind::Fix,
            role: role_for(preferred, roles),
            title: format!("Make the {} check pass", check.name),
            prompt: format!(
                "The {phase} phase's {name} check fails. It runs `{command}` in the project \
                 directory. Find the cause and fix it so that the command exits 0; keep every \
                 other check passing.\n\nThe end of its output:\n\n```\n{tail}\n```\n",
                name = check.name,
                command = check.command,
                tail = check.output_tail.trim_end(),
            ),
            evidence: format!("the {} check failed", check.name),
        });
    }
    if let Some(coverage) = evidence.coverage.as_ref().filter(|c| c.missed()) {
        out.push(FollowUp {
            kind: Kind::Test,
            role: role_for(&["Tester", "Coder"], roles),
            title: "Raise the test coverage".into(),
            prompt: format!(
                "Line coverage of the project's tests is {:.1} %, the target is {:.1} %. Add \
                 tests for the code that no test runs yet, starting with the largest untested \
                 files; the tests must pass.\n",
                coverage.value * 100.0,
                coverage.target * 100.0
            ),
            evidence: format!(
                "test coverage {:.1} % < {:.1} %",
                coverage.value * 100.0,
                coverage.target * 100.0
            ),
        });
    }
    if let Some(docs) = evidence.doc_coverage.as_ref().filter(|c| c.missed()) {
        out.push(FollowUp {
            kind: Kind::Doc,
            role: role_for(&["Documenter", "Architect", "Coder"], roles),
            title: "Document the public interface".into(),
            prompt: format!(
                "{:.1} % of the project's public items are documented, the target is {:.1} %. \
                 Write documentation for the undocumented public items.\n",
                docs.value * 100.0,
                docs.target * 100.0
            ),
            evidence: format!(
                "documentation coverage {:.1} % < {:.1} %",
                docs.value * 100.0,
                docs.target * 100.0
            ),
        });
    }
    if !evidence.security_findings.is_empty() {
        let shown: Vec<&str> = evidence
            .security_findings
            .iter()
            .take(10)
            .map(String::as_str)
            .collect();
        out.push(FollowUp {
            kind: Kind::Security,
            role: role_for(&["Security", "Reviewer", "Coder"], roles),
            title: "Resolve the security findings".into(),
            prompt: format!(
                "The security scan of the project reports {} findings. Resolve them:\n\n{}\n",
                evidence.security_findings.len(),
                shown
                    .iter()
                    .map(|f| format!("- {f}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            evidence: format!("{} security findings", evidence.security_findings.len()),
        });
    }
    for figure in evidence.performance.iter().filter(|f| f.missed()) {
        out.push(FollowUp {
            kind: Kind::Optimisation,
            role: role_for(&["Coder"], roles),
            title: format!("Meet the {} target", figure.name),
            prompt: format!(
                "The project's {} was measured at {}, its target is {}. Find what limits it \
                 and improve it without breaking the tests.\n",
                figure.name, figure.value, figure.target
            ),
            evidence: format!("{} {} misses {}", figure.name, figure.value, figure.target),
        });
    }
    let objectives = &evidence.objectives;
    if !objectives.is_empty() && out.len() < room {
        let free = room - out.len();
        let mut context = String::new();
        if !evidence.unmet_criteria.is_empty() {
            context.push_str("\nThe phase's success criteria not met yet:\n\n");
            for line in &evidence.unmet_criteria {
                context.push_str(&format!("- {line}\n"));
            }
        }
        if !evidence.gate_rejections.is_empty() {
            context.push_str("\nAgents voted against ending the phase:\n\n");
            for line in &evidence.gate_rejections {
                context.push_str(&format!("- {line}\n"));
            }
        }
        let start = round.saturating_sub(1) * objectives.len().min(free).max(1);
        for n in 0..free.min(objectives.len()) {
            let objective = &objectives[(start + n) % objectives.len()];
            out.push(FollowUp {
                kind: Kind::Objective,
                role: role_for(objective_roles(objective), roles),
                title: objective.clone(),
                prompt: format!(
                    "The {phase} phase's planned tasks are done; its time box is not over. \
                     Work toward this objective of the phase: {objective}.\n\nLook at what \
                     the project has, choose the most useful next step toward the objective, \
                     do it, and keep the build and the tests passing.\n{context}"
                ),
                evidence: format!("objective of the {phase} phase"),
            });
        }
    }
    out.truncate(room);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn check(name: &str, passed: bool) -> CheckSeen {
        CheckSeen {
            name: name.into(),
            command: format!("make {name}"),
            passed,
            output_tail: format!("{name} output\n"),
        }
    }

    #[test]
    fn the_gate_opens_only_when_every_criterion_is_judged_met() {
        assert!(gate_open(&[Some(true), Some(true)]));
        assert!(!gate_open(&[Some(true), None]));
        assert!(!gate_open(&[Some(true), Some(false)]));
        assert!(gate_open(&[]), "no criterion, none unmet");
    }

    #[test]
    fn the_budget_leaves_room_for_its_mean_run() {
        assert_eq!(budget_room(0, 0, 0), usize::MAX);
        assert_eq!(budget_room(1_000, 10_000, 0), usize::MAX);
        assert_eq!(budget_room(1_000, 10_000, 10), 90);
        assert_eq!(budget_room(10_000, 10_000, 10), 0);
        assert_eq!(budget_room(12_000, 10_000, 10), 0);
    }

    #[test]
    fn measured_faults_come_first_then_objectives_fill_the_round() {
        let evidence = Evidence {
            phase: "development".into(),
            checks: vec![check("build", true), check("test", false)],
            coverage: Some(Shortfall {
                name: "test_coverage".into(),
                value: 0.4,
                target: 0.7,
                higher_is_better: true,
            }),
            doc_coverage: Some(Shortfall {
                name: "doc_coverage".into(),
                value: 0.9,
                target: 0.8,
                higher_is_better: true,
            }),
            security_findings: vec!["src/a.rs:3 unsafe".into()],
            performance: vec![Shortfall {
                name: "build_time_secs".into(),
                value: 90.0,
                target: 60.0,
                higher_is_better: false,
            }],
            objectives: vec![
                "Implement core functionality".into(),
                "Add comprehensive tests".into(),
                "Create initial documentation".into(),
            ],
            unmet_criteria: vec!["Test coverage >= 70%: 40.0 % of lines covered".into()],
            gate_rejections: Vec::new(),
        };
        let all = roles(&["Architect", "Coder", "Tester", "Reviewer", "Security"]);
        let tasks = plan(&evidence, &all, 10, 1);
        let kinds: Vec<(&str, &str)> = tasks
            .iter()
            .map(|t| (t.kind.as_str(), t.role.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("fix", "Coder"),
                ("test", "Tester"),
                ("security", "Security"),
                ("optimisation", "Coder"),
                ("objective", "Coder"),
                ("objective", "Tester"),
                ("objective", "Architect"),
            ]
        );
        assert!(tasks[0].prompt.contains("make test") && tasks[0].prompt.contains("test output"));
        assert!(tasks[4].prompt.contains("40.0 % of lines covered"));
        // A small room keeps the measured faults.
        let two = plan(&evidence, &all, 2, 1);
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].kind, Kind::Test);
        assert!(plan(&evidence, &all, 0, 1).is_empty());
    }

    #[test]
    fn objectives_rotate_between_rounds_and_roles_fall_back() {
        let evidence = Evidence {
            phase: "finalization".into(),
            objectives: vec![
                "Final polish".into(),
                "Release preparation".into(),
                "Final validation".into(),
            ],
            gate_rejections: vec!["agent-2: the README is empty".into()],
            ..Evidence::default()
        };
        let only_coders = roles(&["Coder"]);
        let first = plan(&evidence, &only_coders, 1, 1);
        let second = plan(&evidence, &only_coders, 1, 2);
        assert_eq!(first[0].title, "Final polish");
        assert_eq!(second[0].title, "Release preparation");
        assert!(first.iter().all(|t| t.role == "Coder"));
        assert!(first[0].prompt.contains("the README is empty"));
        let devops = roles(&["Coder", "DevOps", "Tester"]);
        let round = plan(&evidence, &devops, 5, 1);
        let roles: Vec<&str> = round.iter().map(|t| t.role.as_str()).collect();
        assert_eq!(roles, ["Coder", "DevOps", "Tester"]);
    }
}
