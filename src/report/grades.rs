//! Criteria judged from one [`Evaluation`]: the seed's critical / important / nice-to-have
//! tiers, the upstream `[project.target]` and `[project.performance]` targets, and the seed's
//! efficiency and quality tables graded minimum / target / excellent. Pure functions.
//!
//! Sources: the seed's "Success Criteria" (critical: compiles and passes its tests — here also
//! the acceptance suite's critical cases; important: coverage ≥ 80 %, all critical bugs fixed,
//! performance within 20 % of target, security scan clean; nice to have: coverage ≥ 90 %) and
//! its tables (coverage 70 / 80 / 90 %, doc coverage 60 / 80 / 100 %, bug density per KLOC
//! < 5 / < 2 / < 1, build time < 5 / < 3 / < 1 min, tokens per LOC < 500 / < 300 / < 200, tool
//! calls per task < 50 / < 30 / < 20).

use crate::config::raw::Project;
use crate::eval::evaluation::Evaluation;
use crate::eval::{CriterionResult, Tier};
use crate::report::Figure;

fn criterion(
    tier: Tier,
    criterion: String,
    met: Option<bool>,
    evidence: String,
) -> CriterionResult {
    CriterionResult {
        phase: "session".into(),
        criterion,
        met,
        evidence,
        critical: tier == Tier::Critical,
        tier,
    }
}

fn not_judged<T: serde::Serialize>(figure: &Figure<T>) -> String {
    format!(
        "not judged: {}",
        figure.reason.as_deref().unwrap_or("not measured")
    )
}

/// A seed table's thresholds: (minimum, target, excellent), lower or higher is better.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// The minimum, target and excellent thresholds.
    pub thresholds: (f64, f64, f64),
    /// True when a smaller value is better (tokens per LOC, build time).
    pub lower_is_better: bool,
}

/// `excellent`, `target`, `minimum` or `below minimum`. Lower-is-better thresholds are strict
/// upper bounds (`< 300`); higher-is-better ones are inclusive lower bounds (`≥ 80 %`).
pub fn grade(value: f64, scale: Scale) -> &'static str {
    let (minimum, target, excellent) = scale.thresholds;
    let reaches = |limit: f64| {
        if scale.lower_is_better {
            value < limit
        } else {
            value >= limit
        }
    };
    if reaches(excellent) {
        "excellent"
    } else if reaches(target) {
        "target"
    } else if reaches(minimum) {
        "minimum"
    } else {
        "below minimum"
    }
}

/// A graded criterion: met when the minimum is reached.
pub fn graded(name: &str, value: Figure<f64>, scale: Scale, unit: &str) -> CriterionResult {
    let (minimum, target, excellent) = scale.thresholds;
    let bound = if scale.lower_is_better { "<" } else { "≥" };
    let text = format!(
        "{name}: minimum {bound} {minimum}{unit}, target {bound} {target}{unit}, excellent {bound} {excellent}{unit} (seed)"
    );
    match value.value {
        Some(v) => criterion(
            Tier::Target,
            text,
            Some(grade(v, scale) != "below minimum"),
            format!("{v:.2}{unit}: {}", grade(v, scale)),
        ),
        None => criterion(Tier::Target, text, None, not_judged(&value)),
    }
}

/// The critical tier of an evaluation: the project builds, its tests pass, and the acceptance
/// suite's critical cases pass (null when the suite could not run, with the reason).
pub fn critical(eval: &Evaluation) -> Vec<CriterionResult> {
    let mut out = Vec::new();
    for (name, text) in [
        ("build", "the project builds"),
        ("test", "the project's own tests pass"),
    ] {
        out.push(match eval.check(name) {
            Some(check) => criterion(
                Tier::Critical,
                text.into(),
                Some(check.passed),
                crate::eval::describe_check(check),
            ),
            None => criterion(
                Tier::Critical,
                text.into(),
                None,
                format!("not judged: the {name} command was not run (--no-build)"),
            ),
        });
    }
    out.push(acceptance_critical(eval));
    out
}

/// "The acceptance suite's critical cases pass" (critical tier; null when the suite could not
/// run, with the reason).
pub fn acceptance_critical(eval: &Evaluation) -> CriterionResult {
    let acceptance = &eval.acceptance;
    let critical_cases: Vec<_> = acceptance
        .cases
        .iter()
        .filter(|c| c.severity == "critical")
        .collect();
    let failing: Vec<&str> = critical_cases
        .iter()
        .filter(|c| c.outcome == "failed")
        .map(|c| c.name.as_str())
        .collect();
    criterion(
        Tier::Critical,
        "the acceptance suite's critical cases pass".into(),
        acceptance.critical_cases_pass(),
        match (acceptance.status.as_str(), failing.is_empty()) {
            ("not_run", _) => format!(
                "not judged: the suite did not run: {}",
                acceptance.reason.as_deref().unwrap_or("")
            ),
            (_, true) => format!(
                "{} of {} critical cases passed ({} of {} cases in all)",
                critical_cases.len(),
                critical_cases.len(),
                acceptance.passed,
                acceptance.total
            ),
            (_, false) => format!(
                "{} of {} critical cases failed: {}{}",
                failing.len(),
                critical_cases.len(),
                failing.join(", "),
                acceptance
                    .reason
                    .as_deref()
                    .filter(|r| r.starts_with("build failed"))
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        },
    )
}

/// The seed's efficiency table for a session: tokens per line of code and tool calls per
/// task (`tasks`: tasks done), graded.
pub fn efficiency(
    total_tokens: u64,
    tool_calls: Figure<u64>,
    lines_of_code: Option<usize>,
    tasks: usize,
) -> Vec<CriterionResult> {
    let per_loc = match lines_of_code {
        Some(loc) if loc > 0 => Figure::measured(total_tokens as f64 / loc as f64),
        Some(_) => Figure::missing("the workspace has no line of code"),
        None => Figure::missing("lines of code not counted"),
    };
    let per_task = match (tool_calls.value, tasks) {
        (None, _) => Figure::missing(
            tool_calls
                .reason
                .unwrap_or_else(|| "tool calls not counted".into()),
        ),
        (Some(_), 0) => Figure::missing("no task was done"),
        (Some(calls), tasks) => Figure::measured(calls as f64 / tasks as f64),
    };
    vec![
        graded(
            "tokens per line of code",
            per_loc,
            Scale {
                thresholds: (500.0, 300.0, 200.0),
                lower_is_better: true,
            },
            "",
        ),
        graded(
            "tool calls per task",
            per_task,
            Scale {
                thresholds: (50.0, 30.0, 20.0),
                lower_is_better: true,
            },
            "",
        ),
    ]
}

/// The important and nice-to-have tiers, the upstream targets and the seed's quality grades.
pub fn quality(eval: &Evaluation, project: &Project) -> Vec<CriterionResult> {
    let mut out = Vec::new();
    let coverage = &eval.test_coverage;
    for (tier, limit) in [(Tier::Important, 0.8), (Tier::NiceToHave, 0.9)] {
        out.push(criterion(
            tier,
            format!("test coverage ≥ {:.0} % (seed)", limit * 100.0),
            coverage.value.map(|c| c >= limit),
            match coverage.value {
                Some(c) => format!("{:.1} % of lines covered", c * 100.0),
                None => not_judged(coverage),
            },
        ));
    }
    let ran = eval.acceptance.status != "not_run";
    out.push(criterion(
        Tier::Important,
        "all critical bugs fixed (seed)".into(),
        ran.then_some(eval.bugs.critical == 0),
        if ran {
            format!(
                "{} critical bugs (failed critical acceptance cases and critical findings)",
                eval.bugs.critical
            )
        } else {
            format!(
                "not judged: the acceptance suite did not run: {}",
                eval.acceptance.reason.as_deref().unwrap_or("")
            )
        },
    ));
    let targeted = eval.targeted_measurements();
    out.push(criterion(
        Tier::Important,
        "performance within 20 % of target (seed)".into(),
        (!targeted.is_empty()).then(|| targeted.iter().all(|(_, v, t)| *v >= 0.8 * t)),
        if targeted.is_empty() {
            "not judged: the acceptance suite measured no figure with a target".into()
        } else {
            targeted
                .iter()
                .map(|(name, v, t)| format!("{name}: {v:.0} of target {t:.0}"))
                .collect::<Vec<_>>()
                .join("; ")
        },
    ));
    let security = &eval.security;
    out.push(criterion(
        Tier::Important,
        "security scan clean (seed)".into(),
        security.clean(),
        match &security.findings.value {
            Some(f) => format!(
                "{}: {} high, {} medium findings{}",
                security.method,
                f.high,
                f.medium,
                security
                    .details
                    .first()
                    .map(|d| format!(", e.g. {d}"))
                    .unwrap_or_default()
            ),
            None => not_judged(&security.findings),
        },
    ));
    let target = &project.target;
    let doc = &eval.doc_coverage.fraction;
    out.push(criterion(
        Tier::Target,
        format!(
            "documentation coverage ≥ {:.0} % (project.target.documentation_coverage)",
            target.documentation_coverage * 100.0
        ),
        doc.value.map(|d| d >= target.documentation_coverage),
        match doc.value {
            Some(d) => format!("{:.1} % ({})", d * 100.0, eval.doc_coverage.method),
            None => not_judged(doc),
        },
    ));
    for (severity, found, limit) in [
        ("critical", eval.bugs.critical, target.max_bugs_critical),
        ("high", eval.bugs.high, target.max_bugs_high),
        ("medium", eval.bugs.medium, target.max_bugs_medium),
    ] {
        out.push(criterion(
            Tier::Target,
            format!("at most {limit} {severity} bugs (project.target.max_bugs_{severity})"),
            ran.then_some(found <= u64::from(limit)),
            if ran {
                format!("{found} {severity} bugs (acceptance failures and scan findings)")
            } else {
                "not judged: the acceptance suite did not run".into()
            },
        ));
    }
    let perf = &project.performance;
    for (name, figure, limit, key) in [
        (
            "peak memory of the started server",
            &eval.performance.memory_usage_mb,
            perf.memory_usage_mb,
            "memory_usage_mb",
        ),
        (
            "size of the built binary",
            &eval.performance.binary_size_mb,
            perf.binary_size_mb,
            "binary_size_mb",
        ),
    ] {
        out.push(criterion(
            Tier::Target,
            format!("{name} ≤ {limit} MiB (project.performance.{key})"),
            figure.value.map(|v| v <= limit),
            match figure.value {
                Some(v) => format!("{v:.1} MiB"),
                None => not_judged(figure),
            },
        ));
    }
    out.push(graded(
        "test coverage",
        coverage.clone().map_value(|c| c * 100.0),
        Scale {
            thresholds: (70.0, 80.0, 90.0),
            lower_is_better: false,
        },
        " %",
    ));
    out.push(graded(
        "documentation coverage",
        doc.clone().map_value(|d| d * 100.0),
        Scale {
            thresholds: (60.0, 80.0, 100.0),
            lower_is_better: false,
        },
        " %",
    ));
    let density = match (&eval.code.value, ran) {
        (Some(code), true) if code.lines_of_code > 0 => {
            Figure::measured(eval.bugs.total() as f64 / (code.lines_of_code as f64 / 1000.0))
        }
        (Some(_), true) => Figure::missing("no line of code"),
        (_, false) => Figure::missing("the acceptance suite did not run"),
        (None, _) => Figure::missing("lines of code not counted"),
    };
    out.push(graded(
        "bug density per KLOC",
        density,
        Scale {
            thresholds: (5.0, 2.0, 1.0),
            lower_is_better: true,
        },
        "",
    ));
    out.push(graded(
        "build time",
        eval.performance.build_secs.clone().map_value(|s| s / 60.0),
        Scale {
            thresholds: (5.0, 3.0, 1.0),
            lower_is_better: true,
        },
        " min",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grades_follow_the_seed_tables() {
        let up = Scale {
            thresholds: (70.0, 80.0, 90.0),
            lower_is_better: false,
        };
        assert_eq!(grade(95.0, up), "excellent");
        assert_eq!(grade(80.0, up), "target");
        assert_eq!(grade(75.0, up), "minimum");
        assert_eq!(grade(10.0, up), "below minimum");
        let down = Scale {
            thresholds: (500.0, 300.0, 200.0),
            lower_is_better: true,
        };
        assert_eq!(grade(150.0, down), "excellent");
        assert_eq!(grade(200.0, down), "target", "< 200 is strict");
        assert_eq!(grade(499.0, down), "minimum");
        assert_eq!(grade(500.0, down), "below minimum");
        let c = graded("tokens per LOC", Figure::missing("no code"), down, "");
        assert_eq!(c.met, None);
        assert!(c.evidence.contains("no code"));
    }
}
