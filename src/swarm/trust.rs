//! Trust scores (`[agent].min_trust_score`, `max_trust_score`): computed only from measured
//! outcomes of an agent's work. Pure.
//!
//! The formula (megatest's; the upstream file names the bounds only): the mean of a Beta
//! distribution over the agent's record, with a prior of 3 successes and 1 failure — a new
//! agent starts at 0.75, trusted but below the seed's nice-to-have 0.8 —
//!
//! ```text
//! trust = (3 + successes) / (4 + successes + failures), clamped to [min_trust_score, max_trust_score]
//! successes = tasks done + reviews approved + checks fixed + 0.5 × votes agreeing with the outcome
//! failures  = failed runs + reviews rejected + task checks failed + checks broken
//!             + recoveries caused + 0.5 × votes disagreeing
//! ```
//!
//! Failed runs are runs that did not finish their task (a crash, a non-zero exit, a step
//! timeout); recoveries caused are the other failures the recovery table handled with the agent
//! named (a hang, a malformed answer, memory pressure; see [`CAUSED_KINDS`]), so a crash counts
//! once. Votes count half: a vote is an opinion, the rest is work. Checks broken or fixed are
//! the session's build/test checks whose result flipped between two measurements, counted for
//! every agent whose run changed files in between (its per-task diffs).

use serde::{Deserialize, Serialize};

/// Failure kinds that count as recoveries an agent caused (beyond its failed runs).
pub const CAUSED_KINDS: [&str; 4] = [
    "agent_hang",
    "parse_failure",
    "out_of_memory",
    "context_overflow",
];

/// Prior successes of every agent.
pub const PRIOR_SUCCESSES: f64 = 3.0;
/// Prior failures of every agent.
pub const PRIOR_FAILURES: f64 = 1.0;
/// What a vote counts, against a unit of work.
pub const VOTE_WEIGHT: f64 = 0.5;

/// An agent's measured record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Tasks it finished (done on the board).
    pub tasks_done: u32,
    /// Runs that did not finish their task (exit code, timeout, crash).
    pub failed_runs: u32,
    /// Its work approved by a review vote.
    pub reviews_approved: u32,
    /// Its work rejected by a review vote.
    pub reviews_rejected: u32,
    /// Its finished tasks whose task check did not confirm them (`[scheduling].task_check`).
    pub checks_failed: u32,
    /// Session checks that went from passed to failed while its changes were among the new ones.
    pub checks_broken: u32,
    /// Session checks that went from failed to passed while its changes were among the new ones.
    pub checks_fixed: u32,
    /// Failures the recovery table handled with this agent named.
    pub recoveries_caused: u32,
    /// Its votes that agreed with the vote's outcome.
    pub votes_agreed: u32,
    /// Its votes that disagreed with the vote's outcome.
    pub votes_disagreed: u32,
}

impl Record {
    /// Weighted successes.
    pub fn successes(&self) -> f64 {
        f64::from(self.tasks_done + self.reviews_approved + self.checks_fixed)
            + VOTE_WEIGHT * f64::from(self.votes_agreed)
    }

    /// Weighted failures.
    pub fn failures(&self) -> f64 {
        f64::from(
            self.failed_runs
                + self.reviews_rejected
                + self.checks_failed
                + self.checks_broken
                + self.recoveries_caused,
        ) + VOTE_WEIGHT * f64::from(self.votes_disagreed)
    }
}

/// The trust score of `record`, clamped to `[min, max]` (0–1).
pub fn score(record: &Record, min: f64, max: f64) -> f64 {
    let raw = (PRIOR_SUCCESSES + record.successes())
        / (PRIOR_SUCCESSES + PRIOR_FAILURES + record.successes() + record.failures());
    raw.clamp(min.min(max), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula_starts_at_three_quarters_and_follows_the_record() {
        let fresh = Record::default();
        assert_eq!(score(&fresh, 0.0, 1.0), 0.75);
        let good = Record {
            tasks_done: 4,
            reviews_approved: 2,
            votes_agreed: 2,
            ..Record::default()
        };
        // (3 + 7) / (4 + 7) = 0.909…
        assert!((score(&good, 0.0, 1.0) - 10.0 / 11.0).abs() < 1e-12);
        let bad = Record {
            failed_runs: 3,
            recoveries_caused: 2,
            reviews_rejected: 1,
            checks_failed: 1,
            checks_broken: 1,
            votes_disagreed: 2,
            ..Record::default()
        };
        // 3 / (4 + 9) = 0.23…, clamped to the default floor 0.3
        assert!((score(&bad, 0.0, 1.0) - 3.0 / 13.0).abs() < 1e-12);
        let fixer = Record {
            checks_fixed: 1,
            ..Record::default()
        };
        assert_eq!(score(&fixer, 0.0, 1.0), 0.8);
        assert_eq!(score(&bad, 0.3, 1.0), 0.3);
        assert_eq!(score(&good, 0.3, 0.9), 0.9);
        // Inverted bounds never panic: the max wins.
        assert_eq!(score(&fresh, 0.9, 0.5), 0.5);
    }

    #[test]
    fn votes_count_half_a_unit_of_work() {
        let voted = Record {
            votes_agreed: 2,
            ..Record::default()
        };
        let worked = Record {
            tasks_done: 1,
            ..Record::default()
        };
        assert_eq!(score(&voted, 0.0, 1.0), score(&worked, 0.0, 1.0));
    }
}
