//! The seed's session-level success criteria that are not about the produced code: "session
//! completes without fatal errors", "all checkpoints created and verified" and "recovery from
//! at least one failure" (critical tier), "zero manual interventions" and "under the token
//! budget" and "agent trust scores > 0.8" (nice to have). Source: the seed's "Success
//! Criteria" section (DESIGN.md). Pure functions over what the session recorded.

use super::BudgetReport;
use crate::checkpoint::Audit;
use crate::eval::{CriterionResult, Tier};
use crate::store::RecoveryRow;
use std::collections::{BTreeMap, BTreeSet};

fn criterion(tier: Tier, text: &str, met: Option<bool>, evidence: String) -> CriterionResult {
    CriterionResult {
        phase: "session".into(),
        criterion: format!("{text} (seed)"),
        met,
        evidence,
        critical: tier == Tier::Critical,
        tier,
    }
}

/// "Session completes without fatal errors": every phase ran to its end (`ended` of
/// `phases`), and no failure of severity `fatal` stayed unrecovered.
pub fn completion(ended: usize, phases: usize, recoveries: &[RecoveryRow]) -> CriterionResult {
    let fatal: Vec<String> = recoveries
        .iter()
        .filter(|r| r.severity == "fatal" && r.outcome.as_deref() != Some("recovered"))
        .map(|r| {
            format!(
                "{} ({})",
                r.failure_kind,
                r.outcome.as_deref().unwrap_or("open")
            )
        })
        .collect();
    let mut evidence = format!("{ended} of {phases} phases ended");
    if fatal.is_empty() {
        evidence.push_str("; no unrecovered fatal failure");
    } else {
        evidence.push_str(&format!(
            "; unrecovered fatal failures: {}",
            fatal.join(", ")
        ));
    }
    criterion(
        Tier::Critical,
        "the session completes without fatal errors",
        Some(ended == phases && fatal.is_empty()),
        evidence,
    )
}

/// What the session knows about its checkpoints.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointEvidence<'a> {
    /// `[checkpoint].enabled`.
    pub enabled: bool,
    /// The verification of the recorded checkpoints at the session's end.
    pub audit: &'a Audit,
    /// Checkpoints taken with the `phase_end` trigger.
    pub phase_end_taken: usize,
    /// Phases that ran to their end; each takes a `phase_end` checkpoint.
    pub phases_ended: usize,
    /// Checkpoints the session (or a rollback) found corrupt and replaced.
    pub detected: &'a BTreeSet<u32>,
}

/// "All checkpoints created and verified": checkpoints are on, phase ends were checkpointed
/// (at least one, when a phase ended), the newest checkpoint verifies in full (seal and objects), and every
/// other checkpoint still matches its seal or was found corrupt by the session itself and
/// replaced (an unnoticed corruption fails it). Null when checkpoints are off.
pub fn checkpoints(evidence: CheckpointEvidence<'_>) -> CriterionResult {
    let text = "all checkpoints created and verified";
    if !evidence.enabled {
        return criterion(
            Tier::Critical,
            text,
            None,
            "not judged: checkpoints are off ([checkpoint].enabled = false)".into(),
        );
    }
    let audit = evidence.audit;
    let mut failures = Vec::new();
    // A crash between a phase's end and its checkpoint loses that one checkpoint (the resumed
    // session goes on from the next phase): reported, not failed; none at all fails.
    if evidence.phase_end_taken == 0 && evidence.phases_ended > 0 {
        failures.push(format!(
            "{} phases ended but no phase-end checkpoint was written",
            evidence.phases_ended
        ));
    }
    match &audit.newest {
        None => failures.push("no checkpoint was written".into()),
        Some((seq, problems)) if !problems.is_empty() => failures.push(format!(
            "the newest checkpoint {seq} does not verify: {}",
            problems
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )),
        Some(_) => {}
    }
    let newest = audit.newest.as_ref().map(|(seq, _)| *seq);
    let (noticed, unnoticed): (Vec<_>, Vec<_>) = audit
        .unsealed
        .iter()
        .filter(|(seq, _)| Some(*seq) != newest)
        .partition(|(seq, _)| evidence.detected.contains(seq));
    for (seq, problem) in &unnoticed {
        failures.push(format!(
            "checkpoint {seq} no longer matches its seal and the session never noticed: {problem}"
        ));
    }
    let mut summary = format!(
        "{} checkpoints recorded, {} at phase ends ({} phases ended)",
        audit.recorded, evidence.phase_end_taken, evidence.phases_ended
    );
    if !noticed.is_empty() {
        let seqs: Vec<String> = noticed.iter().map(|(seq, _)| seq.to_string()).collect();
        summary.push_str(&format!(
            "; found corrupt and replaced during the session: {}",
            seqs.join(", ")
        ));
    }
    if failures.is_empty() {
        summary.push_str("; every checkpoint matches its seal and the newest one's objects verify");
        criterion(Tier::Critical, text, Some(true), summary)
    } else {
        criterion(
            Tier::Critical,
            text,
            Some(false),
            format!("{}; {summary}", failures.join("; ")),
        )
    }
}

/// The checkpoints the session found corrupt itself: the sequence in each `data_corruption`
/// recovery's detail ("checkpoint N is corrupt: …"), and each rollback that fell back from the
/// checkpoint it was asked for (`rollbacks`: (requested, used)).
pub fn detected_corruptions(recoveries: &[RecoveryRow], rollbacks: &[(u32, u32)]) -> BTreeSet<u32> {
    let mut out: BTreeSet<u32> = recoveries
        .iter()
        .filter(|r| r.failure_kind == "data_corruption")
        .filter_map(|r| {
            r.detail
                .strip_prefix("checkpoint ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    out.extend(
        rollbacks
            .iter()
            .filter(|(requested, used)| requested != used)
            .map(|(requested, _)| *requested),
    );
    out
}

/// "Recovery from at least one failure": some failure was recovered automatically; null when
/// no failure occurred (nothing to recover from).
pub fn recovered(recoveries: &[RecoveryRow]) -> CriterionResult {
    let recovered = recoveries
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("recovered"))
        .count();
    let (met, evidence) = if recoveries.is_empty() {
        (None, "not judged: no failure occurred".to_string())
    } else {
        let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
        for row in recoveries {
            *outcomes
                .entry(row.outcome.as_deref().unwrap_or("open"))
                .or_default() += 1;
        }
        (
            Some(recovered > 0),
            format!(
                "{} failures: {}",
                recoveries.len(),
                outcomes
                    .iter()
                    .map(|(outcome, n)| format!("{n} {outcome}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    };
    criterion(
        Tier::Critical,
        "recovery from at least one failure",
        met,
        evidence,
    )
}

/// The nice-to-have tier beyond code: "zero manual interventions" (`interventions`: operator
/// actions by kind — pauses, stops, escalation decisions, rollbacks, config reloads),
/// "under the token budget", and "agent trust scores > 0.8" (`trust`: each agent's score at the
/// end; None while the session computes none).
pub fn nice_to_have(
    interventions: &BTreeMap<String, usize>,
    budget: &BudgetReport,
    trust: Option<&BTreeMap<String, f64>>,
) -> Vec<CriterionResult> {
    let total: usize = interventions.values().sum();
    let trust_criterion = match trust {
        Some(scores) if !scores.is_empty() => {
            let low: Vec<String> = scores
                .iter()
                .filter(|(_, s)| **s <= 0.8)
                .map(|(id, s)| format!("{id} {s:.2}"))
                .collect();
            criterion(
                Tier::NiceToHave,
                "agent trust scores > 0.8",
                Some(low.is_empty()),
                if low.is_empty() {
                    format!("all {} agents above 0.8", scores.len())
                } else {
                    format!("at or below 0.8: {}", low.join(", "))
                },
            )
        }
        _ => criterion(
            Tier::NiceToHave,
            "agent trust scores > 0.8",
            None,
            "not judged: this session computed no trust scores".into(),
        ),
    };
    vec![
        criterion(
            Tier::NiceToHave,
            "zero manual interventions",
            Some(total == 0),
            if total == 0 {
                "no operator pause, stop, escalation decision, rollback or config reload".into()
            } else {
                interventions
                    .iter()
                    .map(|(kind, n)| format!("{n} {kind}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        criterion(
            Tier::NiceToHave,
            "under the token budget",
            Some(budget.exhausted.is_none() && budget.used_tokens < budget.total_token_budget),
            format!(
                "{} of {} tokens ({:.1} %){}",
                budget.used_tokens,
                budget.total_token_budget,
                budget.used_fraction * 100.0,
                budget
                    .exhausted
                    .as_deref()
                    .map(|e| format!("; {e}"))
                    .unwrap_or_default()
            ),
        ),
        trust_criterion,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery(kind: &str, severity: &str, outcome: Option<&str>, detail: &str) -> RecoveryRow {
        RecoveryRow {
            id: 1,
            failure_kind: kind.into(),
            severity: severity.into(),
            detected_at: "t".into(),
            detected_session_secs: 1.0,
            rule: format!("default:{kind}"),
            action: "restore_checkpoint".into(),
            attempts: 1,
            outcome: outcome.map(String::from),
            time_to_recover_session_secs: None,
            agent_id: None,
            task_id: None,
            detail: detail.into(),
        }
    }

    #[test]
    fn completion_needs_every_phase_and_no_unrecovered_fatal_failure() {
        assert_eq!(completion(4, 4, &[]).met, Some(true));
        assert_eq!(completion(3, 4, &[]).met, Some(false));
        let recovered = [recovery("data_corruption", "fatal", Some("recovered"), "")];
        assert_eq!(completion(4, 4, &recovered).met, Some(true));
        let failed = [recovery("disk_full", "fatal", Some("failed"), "")];
        let c = completion(4, 4, &failed);
        assert_eq!(c.met, Some(false));
        assert!(c.evidence.contains("disk_full (failed)"), "{}", c.evidence);
        assert!(c.critical);
    }

    #[test]
    fn checkpoints_fail_on_an_unnoticed_corruption_or_a_bad_newest_one() {
        let none = BTreeSet::new();
        let good = Audit {
            recorded: 4,
            unsealed: vec![],
            newest: Some((4, vec![])),
        };
        let evidence = |audit, detected, taken| CheckpointEvidence {
            enabled: true,
            audit,
            phase_end_taken: taken,
            phases_ended: 4,
            detected,
        };
        assert_eq!(checkpoints(evidence(&good, &none, 4)).met, Some(true));
        let one_lost = checkpoints(evidence(&good, &none, 3));
        assert_eq!(
            one_lost.met,
            Some(true),
            "a crash may lose one phase-end checkpoint"
        );
        assert!(
            one_lost
                .evidence
                .contains("3 at phase ends (4 phases ended)"),
            "{}",
            one_lost.evidence
        );
        assert_eq!(checkpoints(evidence(&good, &none, 0)).met, Some(false));
        let tampered = Audit {
            unsealed: vec![(2, "sha mismatch".into())],
            ..good.clone()
        };
        let c = checkpoints(evidence(&tampered, &none, 4));
        assert_eq!(c.met, Some(false));
        assert!(c.evidence.contains("never noticed"), "{}", c.evidence);
        let noticed = BTreeSet::from([2]);
        let c = checkpoints(evidence(&tampered, &noticed, 4));
        assert_eq!(c.met, Some(true), "{}", c.evidence);
        assert!(c.evidence.contains("replaced during the session: 2"));
        let bad_newest = Audit {
            newest: Some((4, vec!["src/a.rs: object missing".into()])),
            ..good.clone()
        };
        assert_eq!(
            checkpoints(evidence(&bad_newest, &noticed, 4)).met,
            Some(false)
        );
        let empty = Audit::default();
        assert_eq!(checkpoints(evidence(&empty, &none, 0)).met, Some(false));
        let off = CheckpointEvidence {
            enabled: false,
            ..evidence(&empty, &none, 0)
        };
        assert_eq!(checkpoints(off).met, None);
    }

    #[test]
    fn corruptions_are_detected_from_recoveries_and_fallback_rollbacks() {
        let rows = [
            recovery(
                "data_corruption",
                "fatal",
                Some("recovered"),
                "checkpoint 7 is corrupt: x",
            ),
            recovery(
                "agent_crash",
                "recoverable",
                Some("recovered"),
                "checkpoint 9 is",
            ),
        ];
        let found = detected_corruptions(&rows, &[(3, 2), (5, 5)]);
        assert_eq!(found, BTreeSet::from([3, 7]));
    }

    #[test]
    fn recovery_is_null_without_failures_and_needs_one_recovered() {
        assert_eq!(recovered(&[]).met, None);
        let rows = [
            recovery("agent_crash", "recoverable", Some("failed"), ""),
            recovery("rate_limit", "recoverable", Some("recovered"), ""),
        ];
        let c = recovered(&rows);
        assert_eq!(c.met, Some(true));
        assert_eq!(c.evidence, "2 failures: 1 failed, 1 recovered");
        assert_eq!(recovered(&rows[..1]).met, Some(false));
    }

    #[test]
    fn nice_to_have_counts_interventions_budget_and_trust() {
        let limits = crate::config::raw::Limits::default();
        let budgets = crate::budget::Budgets::new(&limits, None, 1);
        let usage = crate::store::LedgerTotals {
            total_tokens: 10,
            ..Default::default()
        };
        let budget = super::super::verdict::budget_report(&budgets, &usage, &[], 0.0, &["a"]);
        let c = nice_to_have(&BTreeMap::new(), &budget, None);
        assert_eq!(c[0].met, Some(true));
        assert_eq!(c[1].met, Some(true));
        assert_eq!(c[2].met, None);
        let interventions = BTreeMap::from([("pause".to_string(), 2)]);
        let trust = BTreeMap::from([("agent-1".to_string(), 0.9), ("agent-2".to_string(), 0.5)]);
        let c = nice_to_have(&interventions, &budget, Some(&trust));
        assert_eq!(c[0].met, Some(false));
        assert_eq!(c[0].evidence, "2 pause");
        assert_eq!(c[2].met, Some(false));
        assert!(c[2].evidence.contains("agent-2 0.50"));
    }
}
