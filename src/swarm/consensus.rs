//! Consensus votes (`[consensus]`): how the ballots of one vote decide it. Pure: the session
//! collects ballots, knows who may vote and when the vote times out, and asks [`decide`].
//!
//! The rules (upstream `[consensus]`; where the upstream file is silent, megatest's choice is
//! stated):
//!
//! - Only approve / reject ballots are *votes*; an abstention is recorded but counts for
//!   nothing, not for the quorum either.
//! - Quorum: at least `min_votes` votes. A vote closes when every eligible voter has cast a
//!   ballot or `vote_timeout_secs` (session seconds) have passed. Closed without quorum — or
//!   with fewer eligible voters than `min_votes`, which can never reach it — is a deadlock.
//! - `unanimous`: approved when every vote approves; rejected by any reject (known as soon as
//!   the quorum is met, before the vote closes).
//! - `majority`: the counted share of approvals (or of rejections) must be over one half and at
//!   least `threshold`; decided at close. Neither side there (a tie, or a share between one
//!   half and the threshold) is a deadlock.
//! - `weighted`: as `majority`, with each vote weighted by its voter's trust score.
//! - `priority`: the votes of the highest-ranked role present decide, by majority among them
//!   ([`ROLE_PRIORITY`]: Architect, Reviewer, Tester, Coder, then any other role); a tie there
//!   is a deadlock.
//! - A deadlock is the `consensus_deadlock` failure kind for the recovery table.

use serde::{Deserialize, Serialize};

/// The role order of the `priority` strategy, highest first; roles not listed rank after
/// these, equally.
pub const ROLE_PRIORITY: [&str; 4] = ["Architect", "Reviewer", "Tester", "Coder"];

/// How a consensus vote is decided (`[consensus].strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every vote must approve.
    Unanimous,
    /// More than half of the votes, and at least `threshold` of them, approve.
    Majority,
    /// As `Majority`, each vote weighted by its voter's trust score.
    Weighted,
    /// The highest-priority role present decides ([`ROLE_PRIORITY`]).
    Priority,
}

/// A ballot's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// For.
    Approve,
    /// Against.
    Reject,
    /// Recorded, counts for nothing.
    Abstain,
}

impl Choice {
    /// Parse `approve` / `reject` / `abstain` (also `yes` / `no`, any case).
    pub fn parse(word: &str) -> Option<Choice> {
        match word.trim().to_ascii_lowercase().as_str() {
            "approve" | "approved" | "yes" | "accept" => Some(Choice::Approve),
            "reject" | "rejected" | "no" => Some(Choice::Reject),
            "abstain" => Some(Choice::Abstain),
            _ => None,
        }
    }
}

/// One voter's ballot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ballot {
    /// The voting agent's id.
    pub voter: String,
    /// Its role (for `priority`).
    pub role: String,
    /// Its choice.
    pub choice: Choice,
    /// Its trust score when it voted (the weight under `weighted`), 0–1.
    pub weight: f64,
}

/// The rules a vote is decided by (`[consensus]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// `strategy`.
    pub strategy: Strategy,
    /// `min_votes`: the quorum.
    pub min_votes: u32,
    /// `threshold` (0–1): the share a side needs under `majority` and `weighted`.
    pub threshold: f64,
}

/// How a vote stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// Not decided yet: wait for more ballots or the timeout.
    Open,
    /// Passed.
    Approved(String),
    /// Failed.
    Rejected(String),
    /// Cannot decide: no quorum by the close, or a split.
    Deadlock(String),
}

impl Outcome {
    /// True for every outcome but [`Outcome::Open`].
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Open)
    }

    /// `open`, `approved`, `rejected`, `deadlock`.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Open => "open",
            Outcome::Approved(_) => "approved",
            Outcome::Rejected(_) => "rejected",
            Outcome::Deadlock(_) => "deadlock",
        }
    }

    /// Why it stands so (empty while open).
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Open => "",
            Outcome::Approved(r) | Outcome::Rejected(r) | Outcome::Deadlock(r) => r,
        }
    }
}

/// The role's rank under `priority` (0 highest).
pub fn role_rank(role: &str) -> usize {
    ROLE_PRIORITY
        .iter()
        .position(|r| r.eq_ignore_ascii_case(role))
        .unwrap_or(ROLE_PRIORITY.len())
}

/// Decide a vote from its `ballots` (one per voter; later ballots of a voter replace earlier
/// ones before this is called), the number of agents `eligible` to vote, and whether the
/// timeout has passed (`timed_out`).
pub fn decide(rules: Rules, ballots: &[Ballot], eligible: usize, timed_out: bool) -> Outcome {
    let votes: Vec<&Ballot> = ballots
        .iter()
        .filter(|b| b.choice != Choice::Abstain)
        .collect();
    let quorum = rules.min_votes.max(1) as usize;
    let closed = timed_out || ballots.len() >= eligible;
    if votes.len() < quorum {
        if eligible < quorum {
            return Outcome::Deadlock(format!(
                "no quorum possible: {eligible} eligible voters, min_votes = {}",
                rules.min_votes
            ));
        }
        return if closed {
            Outcome::Deadlock(format!(
                "no quorum: {} of {} votes needed by the close",
                votes.len(),
                rules.min_votes
            ))
        } else {
            Outcome::Open
        };
    }
    let approvals = votes.iter().filter(|b| b.choice == Choice::Approve).count();
    let rejections = votes.len() - approvals;
    match rules.strategy {
        Strategy::Unanimous => {
            if rejections > 0 {
                Outcome::Rejected(format!("{rejections} of {} votes reject", votes.len()))
            } else if closed {
                Outcome::Approved(format!("all {} votes approve", votes.len()))
            } else {
                Outcome::Open
            }
        }
        Strategy::Majority if closed => split(
            approvals as f64,
            rejections as f64,
            rules.threshold,
            "votes",
        ),
        Strategy::Weighted if closed => {
            let weight = |choice| {
                votes
                    .iter()
                    .filter(|b| b.choice == choice)
                    .fold(0.0, |sum, b| sum + b.weight.max(0.0))
            };
            split(
                weight(Choice::Approve),
                weight(Choice::Reject),
                rules.threshold,
                "trust-weighted votes",
            )
        }
        Strategy::Priority if closed => {
            let top = votes.iter().map(|b| role_rank(&b.role)).min().unwrap_or(0);
            let deciding: Vec<&&Ballot> =
                votes.iter().filter(|b| role_rank(&b.role) == top).collect();
            let role = deciding.first().map(|b| b.role.clone()).unwrap_or_default();
            let yes = deciding
                .iter()
                .filter(|b| b.choice == Choice::Approve)
                .count();
            let no = deciding.len() - yes;
            let text = format!("{role} decides: {yes} approve, {no} reject");
            match yes.cmp(&no) {
                std::cmp::Ordering::Greater => Outcome::Approved(text),
                std::cmp::Ordering::Less => Outcome::Rejected(text),
                std::cmp::Ordering::Equal => Outcome::Deadlock(format!("split: {text}")),
            }
        }
        _ => Outcome::Open,
    }
}

/// A side wins with a share over one half and at least `threshold`.
fn split(approve: f64, reject: f64, threshold: f64, what: &str) -> Outcome {
    let total = approve + reject;
    if total <= 0.0 {
        return Outcome::Deadlock(format!("no weight among the {what}"));
    }
    let (yes, no) = (approve / total, reject / total);
    let text = format!(
        "{:.0} % approve, {:.0} % reject ({what}; threshold {:.0} %)",
        yes * 100.0,
        no * 100.0,
        threshold * 100.0
    );
    if yes > 0.5 && yes >= threshold {
        Outcome::Approved(text)
    } else if no > 0.5 && no >= threshold {
        Outcome::Rejected(text)
    } else {
        Outcome::Deadlock(format!("split: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Strategy::*;

    fn ballots(list: &[(&str, &str, f64)]) -> Vec<Ballot> {
        list.iter()
            .enumerate()
            .map(|(i, (role, choice, weight))| Ballot {
                voter: format!("agent-{i}"),
                role: role.to_string(),
                choice: Choice::parse(choice).unwrap(),
                weight: *weight,
            })
            .collect()
    }

    /// (strategy, min_votes, threshold, ballots (role, choice, weight), eligible, timed out,
    /// expected outcome)
    type Row = (
        Strategy,
        u32,
        f64,
        &'static [(&'static str, &'static str, f64)],
        usize,
        bool,
        &'static str,
    );

    #[rustfmt::skip]
    const TABLE: &[Row] = &[
        // quorum
        (Majority, 3, 0.6, &[("Coder", "approve", 1.0)], 4, false, "open"),
        (Majority, 3, 0.6, &[("Coder", "approve", 1.0)], 4, true, "deadlock"),
        (Majority, 3, 0.6, &[("Coder", "approve", 1.0), ("Tester", "abstain", 1.0)], 2, false, "deadlock"),
        (Majority, 5, 0.6, &[], 3, false, "deadlock"),
        // unanimous: any reject decides at once; approval waits for the close
        (Unanimous, 2, 0.6, &[("Coder", "approve", 1.0), ("Tester", "reject", 1.0)], 4, false, "rejected"),
        (Unanimous, 2, 0.6, &[("Coder", "approve", 1.0), ("Tester", "approve", 1.0)], 4, false, "open"),
        (Unanimous, 2, 0.6, &[("Coder", "approve", 1.0), ("Tester", "approve", 1.0)], 2, false, "approved"),
        // majority with the threshold
        (Majority, 3, 0.6, &[("A", "approve", 1.0), ("B", "approve", 1.0), ("C", "reject", 1.0)], 3, false, "approved"),
        (Majority, 2, 0.6, &[("A", "approve", 1.0), ("B", "reject", 1.0)], 2, false, "deadlock"),
        (Majority, 3, 0.7, &[("A", "approve", 1.0), ("B", "approve", 1.0), ("C", "reject", 1.0)], 3, false, "deadlock"),
        (Majority, 3, 0.6, &[("A", "reject", 1.0), ("B", "reject", 1.0), ("C", "approve", 1.0)], 3, true, "rejected"),
        // weighted: trust decides
        (Weighted, 3, 0.6, &[("A", "approve", 0.8), ("B", "reject", 0.3), ("C", "reject", 0.3)], 3, false, "deadlock"),
        (Weighted, 3, 0.6, &[("A", "approve", 1.0), ("B", "reject", 0.3), ("C", "reject", 0.3)], 3, false, "approved"),
        (Weighted, 2, 0.6, &[("A", "approve", 0.0), ("B", "reject", 0.0)], 2, false, "deadlock"),
        // priority: the highest role present decides
        (Priority, 3, 0.6, &[("Coder", "approve", 1.0), ("Coder", "approve", 1.0), ("Architect", "reject", 1.0)], 3, false, "rejected"),
        (Priority, 3, 0.6, &[("Coder", "reject", 1.0), ("Tester", "approve", 1.0), ("Tester", "approve", 1.0)], 3, false, "approved"),
        (Priority, 2, 0.6, &[("Tester", "reject", 1.0), ("Tester", "approve", 1.0)], 2, false, "deadlock"),
        (Priority, 2, 0.6, &[("Coder", "approve", 1.0), ("Tester", "approve", 1.0)], 3, false, "open"),
    ];

    #[test]
    fn every_strategy_decides_as_documented() {
        for (i, (strategy, min_votes, threshold, list, eligible, timed_out, expected)) in
            TABLE.iter().enumerate()
        {
            let rules = Rules {
                strategy: *strategy,
                min_votes: *min_votes,
                threshold: *threshold,
            };
            let outcome = decide(rules, &ballots(list), *eligible, *timed_out);
            assert_eq!(outcome.word(), *expected, "row {i}: {outcome:?}");
            assert_eq!(outcome.is_final(), *expected != "open");
        }
    }

    #[test]
    fn reasons_say_why() {
        let rules = Rules {
            strategy: Weighted,
            min_votes: 2,
            threshold: 0.6,
        };
        let outcome = decide(
            rules,
            &ballots(&[("A", "approve", 0.75), ("B", "approve", 0.25)]),
            2,
            false,
        );
        assert_eq!(
            outcome.reason(),
            "100 % approve, 0 % reject (trust-weighted votes; threshold 60 %)"
        );
        let outcome = decide(rules, &ballots(&[("A", "approve", 1.0)]), 5, true);
        assert_eq!(
            outcome.reason(),
            "no quorum: 1 of 2 votes needed by the close"
        );
        assert_eq!(Choice::parse(" YES "), Some(Choice::Approve));
        assert_eq!(Choice::parse("maybe"), None);
        assert_eq!(role_rank("architect"), 0);
        assert_eq!(role_rank("Documenter"), 4);
    }
}
