//! The verdict: success criteria and the budget summary judged from a snapshot of what the
//! session recorded (phases with their checks, recoveries, code statistics, coverage, budgets).
//! Pure functions: no I/O, no session; unit-tested on hand-made records.

use super::{BudgetReport, Figure};
use crate::budget::Budgets;
use crate::config::raw::Project;
use crate::eval::{self, CriterionResult, Tier};
use crate::metrics::CodeStats;
use crate::store::{CheckRow, LedgerTotals, RecoveryRow};

/// One phase as the verdict needs it.
#[derive(Debug, Clone, Copy)]
pub struct PhaseOutcome<'a> {
    /// Its name.
    pub name: &'a str,
    /// It ran to its end (time box, tasks done, …; not interrupted).
    pub ended: bool,
    /// The checks run at its end.
    pub checks: &'a [CheckRow],
}

/// The budgets as the report shows them: tokens against `[limits].total_token_budget`, the
/// cost (null with the reason when a model has no price: `unpriced` names them), and the
/// session seconds each agent (`agent_ids`, in order) was throttled.
pub fn budget_report(
    budgets: &Budgets,
    usage: &LedgerTotals,
    unpriced: &[String],
    priced_cost_usd: f64,
    agent_ids: &[&str],
) -> BudgetReport {
    BudgetReport {
        total_token_budget: budgets.total_tokens,
        used_tokens: usage.total_tokens,
        used_fraction: usage.total_tokens as f64 / budgets.total_tokens.max(1) as f64,
        alert_raised: budgets.alerted,
        exhausted: budgets.exhausted.clone(),
        cost_usd: if unpriced.is_empty() {
            Figure::measured(priced_cost_usd)
        } else {
            Figure::missing(format!(
                "no price for model(s) {}: add them to [model.prices] (USD per million tokens)",
                unpriced.join(", ")
            ))
        },
        max_cost_usd: budgets.max_cost_usd,
        throttled_session_secs: agent_ids
            .iter()
            .zip(&budgets.throttled_secs)
            .map(|(id, secs)| (id.to_string(), *secs))
            .collect(),
    }
}

/// True when no critical criterion was judged false (a criterion that could not be judged,
/// `met: null` with its reason, does not fail the session: the seed's "recovery from at least
/// one failure" when nothing failed, the acceptance suite when no evaluation ran).
pub fn critical_hold(criteria: &[CriterionResult]) -> bool {
    criteria
        .iter()
        .filter(|c| c.tier == Tier::Critical)
        .all(|c| c.met != Some(false))
}

/// The seed's "final code compiles and passes its tests", critical: the last phase's build and
/// test checks passed (not met when they did not run). The rest of the critical tier is in
/// [`super::tiers`] and the acceptance suite's critical cases ([`super::grades`]).
pub fn final_checks(phases: &[PhaseOutcome<'_>]) -> Vec<CriterionResult> {
    let last = phases.last();
    let last_name = last.map(|p| p.name.to_string()).unwrap_or_default();
    let mut out = Vec::new();
    for (name, text) in [
        ("build", "the project builds at the end"),
        ("test", "the project's tests pass at the end"),
    ] {
        let check = last.and_then(|p| p.checks.iter().find(|c| c.name == name));
        out.push(CriterionResult {
            phase: last_name.clone(),
            criterion: text.into(),
            met: Some(check.is_some_and(|c| c.passed)),
            evidence: match check {
                Some(c) => eval::describe_check(c),
                None => format!("the {name} check of the last phase did not run"),
            },
            critical: true,
            tier: Tier::Critical,
        });
    }
    out
}

/// Non-critical criteria from the upstream `[project.target]` and `[project.performance]`
/// targets that can be measured: lines of code (tokei, `code`), build and test wall time (the
/// last phase's checks), test coverage (`coverage`: None when the spec has no coverage
/// command).
pub fn target_criteria(
    project: &Project,
    last_checks: &[CheckRow],
    code: Option<&CodeStats>,
    coverage: Option<&Figure<f64>>,
) -> Vec<CriterionResult> {
    let mut out = Vec::new();
    let target = project.target.lines_of_code;
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
        tier: Tier::Target,
    });
    for (name, limit, key) in [
        (
            "build",
            project.performance.build_time_secs,
            "project.performance.build_time_secs",
        ),
        (
            "test",
            project.performance.test_execution_time_secs,
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
                Some(c) => format!("not judged: the {name} failed: {}", eval::describe_check(c)),
                None => format!("not judged: the final {name} check did not run"),
            },
            critical: false,
            tier: Tier::Target,
        });
    }
    out.push(CriterionResult {
        phase: "session".into(),
        criterion: format!(
            "test coverage at least {:.0} % (project.target.test_coverage)",
            project.target.test_coverage * 100.0
        ),
        met: coverage
            .and_then(|c| c.value)
            .map(|c| c >= project.target.test_coverage),
        evidence: match coverage {
            Some(Figure { value: Some(c), .. }) => {
                format!("the spec's coverage command measured {:.1} %", c * 100.0)
            }
            Some(Figure { reason, .. }) => format!(
                "not judged: {}",
                reason.as_deref().unwrap_or("no coverage figure")
            ),
            None => {
                "not judged: the project spec has no coverage command ([commands].coverage)".into()
            }
        },
        critical: false,
        tier: Tier::Target,
    });
    out
}

/// The seed's recovery criteria, judged from the `recoveries` rows: "recovery from at least 1
/// simulated failure" (a failure while `[chaos]` was on, recovered; null when chaos was off)
/// and "auto-recovery from 3+ error scenarios" (three failure kinds recovered without an
/// operator; null when nothing failed).
pub fn recovery_criteria(rows: &[RecoveryRow], chaos: bool) -> Vec<CriterionResult> {
    let recovered: Vec<&RecoveryRow> = rows
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("recovered"))
        .collect();
    let mut kinds: Vec<&str> = recovered.iter().map(|r| r.failure_kind.as_str()).collect();
    kinds.sort();
    kinds.dedup();
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
            tier: Tier::Target,
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
            tier: Tier::Target,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, passed: bool, wall_secs: f64) -> CheckRow {
        CheckRow {
            phase: "finalization".into(),
            name: name.into(),
            command: format!("make {name}"),
            exit_code: Some(if passed { 0 } else { 1 }),
            passed,
            timed_out: false,
            wall_secs,
            output_tail: String::new(),
        }
    }

    fn recovery(kind: &str, outcome: Option<&str>) -> RecoveryRow {
        RecoveryRow {
            id: 1,
            failure_kind: kind.into(),
            severity: "recoverable".into(),
            detected_at: "t".into(),
            detected_session_secs: 1.0,
            rule: format!("default:{kind}"),
            action: "restart_agent".into(),
            attempts: 1,
            outcome: outcome.map(String::from),
            time_to_recover_session_secs: None,
            agent_id: None,
            task_id: None,
            detail: String::new(),
        }
    }

    #[test]
    fn the_final_build_and_test_must_have_run_and_passed() {
        let passing = [check("build", true, 1.0), check("test", true, 1.0)];
        let failing = [check("build", true, 1.0), check("test", false, 1.0)];
        let phases = |last: &'static str, checks, ended| {
            vec![
                PhaseOutcome {
                    name: "development",
                    ended: true,
                    checks: &[],
                },
                PhaseOutcome {
                    name: last,
                    ended,
                    checks,
                },
            ]
        };
        let ok = final_checks(&phases("finalization", &passing, true));
        assert_eq!(ok.len(), 2);
        assert!(
            ok.iter().all(|c| c.met == Some(true) && c.critical),
            "{ok:?}"
        );
        let red = final_checks(&phases("finalization", &failing, true));
        assert_eq!(red[1].met, Some(false));
        assert_eq!(red[1].phase, "finalization");
        // No checks ran at all: not met, and the evidence says so (never a silent pass).
        let none = final_checks(&phases("finalization", &[], true));
        assert_eq!(none[0].met, Some(false));
        assert!(
            none[0].evidence.contains("did not run"),
            "{}",
            none[0].evidence
        );
    }

    #[test]
    fn targets_are_judged_only_where_measured() {
        let mut project = Project::default();
        project.target.lines_of_code = 100;
        project.performance.build_time_secs = 10.0;
        let checks = [check("build", true, 12.0), check("test", false, 1.0)];
        let code = CodeStats {
            lines_of_code: 150,
            files: 3,
            ..Default::default()
        };
        let c = target_criteria(&project, &checks, Some(&code), None);
        assert_eq!(c[0].met, Some(true), "150 lines against 100");
        assert_eq!(c[1].met, Some(false), "the build took 12 s against 10 s");
        assert_eq!(c[2].met, None, "a failed test run has no judged duration");
        assert_eq!(c[3].met, None, "no coverage command: null, with the reason");
        assert!(c[3].evidence.contains("[commands].coverage"));
        let measured = Figure::measured(0.95);
        let c = target_criteria(&project, &checks, None, Some(&measured));
        assert_eq!(c[0].met, None, "an uncountable workspace is not judged");
        assert_eq!(c[3].met, Some(true), "95 % against the 80 % default");
    }

    #[test]
    fn recovery_criteria_count_recovered_kinds_and_need_chaos_for_the_simulated_one() {
        assert_eq!(recovery_criteria(&[], false)[1].met, None);
        let rows = [
            recovery("agent_crash", Some("recovered")),
            recovery("rate_limit", Some("recovered")),
            recovery("rate_limit", Some("recovered")),
            recovery("disk_full", Some("escalated")),
        ];
        let c = recovery_criteria(&rows, false);
        assert_eq!(c[0].met, None, "chaos off: nothing was simulated");
        assert_eq!(c[1].met, Some(false), "two kinds recovered, not three");
        let mut more = rows.to_vec();
        more.push(recovery("parse_failure", Some("recovered")));
        let c = recovery_criteria(&more, true);
        assert_eq!(c[0].met, Some(true));
        assert_eq!(c[1].met, Some(true), "{}", c[1].evidence);
    }

    #[test]
    fn an_unpriced_model_makes_the_cost_null_never_zero() {
        let limits = crate::config::raw::Limits::default();
        let mut budgets = Budgets::new(&limits, None, 2);
        budgets.throttled_secs = vec![1.5, 0.0];
        let usage = LedgerTotals {
            total_tokens: 1_000_000,
            ..Default::default()
        };
        let report = budget_report(
            &budgets,
            &usage,
            &["local-llama".into()],
            0.0,
            &["agent-1", "agent-2"],
        );
        assert_eq!(report.cost_usd.value, None);
        assert!(report
            .cost_usd
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("local-llama"));
        assert!((report.used_fraction - 0.2).abs() < 1e-9);
        assert_eq!(report.throttled_session_secs["agent-1"], 1.5);
        let priced = budget_report(&budgets, &usage, &[], 2.5, &["agent-1", "agent-2"]);
        assert_eq!(priced.cost_usd.value, Some(2.5));
    }
}
