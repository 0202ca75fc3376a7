//! Consensus votes and ballots (`swarm::consensus`): opened, cast, closed with their outcome.

use super::error::Result;
use super::Store;
use crate::swarm::consensus::Ballot;
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// One vote as recorded, with its ballots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRow {
    /// Its id.
    pub id: i64,
    /// What is voted on: `review` (a done task's work).
    pub kind: String,
    /// The subject: the reviewed task's id.
    pub subject: String,
    /// The phase it was held in.
    pub phase: String,
    /// The agent whose work is under vote (never a voter).
    pub author: Option<String>,
    /// `unanimous`, `majority`, `weighted` or `priority`.
    pub strategy: String,
    /// The quorum.
    pub min_votes: u32,
    /// The share a side needs (majority, weighted).
    pub threshold: f64,
    /// The agents invited to vote.
    pub voters: Vec<String>,
    /// Session second it opened.
    pub opened_session_secs: f64,
    /// Session second it closed (None while open).
    pub closed_session_secs: Option<f64>,
    /// `open`, `approved`, `rejected`, `deadlock` or `abandoned`.
    pub outcome: String,
    /// Why (the tally, or what was missing).
    pub reason: Option<String>,
    /// The ballots cast.
    pub ballots: Vec<BallotRow>,
}

/// One ballot as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BallotRow {
    /// The ballot.
    #[serde(flatten)]
    pub ballot: Ballot,
    /// The voter's reason.
    pub reason: String,
    /// How it arrived: `verdict_line` (the run's output) or `api`.
    pub via: String,
    /// Session second it was cast.
    pub session_secs: f64,
}

/// A new vote (see [`Store::open_vote`]).
#[derive(Debug, Clone)]
pub struct NewVote<'a> {
    /// `review`.
    pub kind: &'a str,
    /// The reviewed task's id.
    pub subject: &'a str,
    /// The phase.
    pub phase: &'a str,
    /// The author of the work.
    pub author: Option<&'a str>,
    /// The strategy's name.
    pub strategy: &'a str,
    /// The quorum.
    pub min_votes: u32,
    /// The threshold.
    pub threshold: f64,
    /// The invited voters.
    pub voters: &'a [String],
    /// Session second it opens.
    pub session_secs: f64,
}

impl Store {
    /// Record a new open vote; returns its id.
    pub fn open_vote(&self, vote: &NewVote<'_>) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO votes (kind, subject, phase, author, strategy, min_votes, threshold, voters,
                                opened_session_secs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                vote.kind,
                vote.subject,
                vote.phase,
                vote.author,
                vote.strategy,
                vote.min_votes,
                vote.threshold,
                serde_json::to_string(vote.voters)?,
                vote.session_secs
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Record a ballot (a voter's later ballot replaces its earlier one).
    pub fn cast_ballot(
        &self,
        vote_id: i64,
        ballot: &Ballot,
        reason: &str,
        via: &str,
        session_secs: f64,
    ) -> Result<()> {
        let choice = serde_json::to_value(ballot.choice)?;
        self.conn.execute(
            "INSERT OR REPLACE INTO ballots (vote_id, voter, role, choice, weight, reason, via, session_secs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                vote_id,
                ballot.voter,
                ballot.role,
                choice.as_str().unwrap_or("abstain"),
                ballot.weight,
                reason,
                via,
                session_secs
            ],
        )?;
        Ok(())
    }

    /// Close vote `id` with its outcome and reason.
    pub fn close_vote(
        &self,
        id: i64,
        outcome: &str,
        reason: &str,
        session_secs: f64,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE votes SET outcome = ?2, reason = ?3, closed_session_secs = ?4 WHERE id = ?1",
            params![id, outcome, reason, session_secs],
        )?;
        Ok(())
    }

    /// Every vote with its ballots, in order.
    pub fn votes(&self) -> Result<Vec<VoteRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, kind, subject, phase, author, strategy, min_votes, threshold, voters,
                    opened_session_secs, closed_session_secs, outcome, reason
             FROM votes ORDER BY id",
        )?;
        let mut votes = stmt
            .query_map([], |r| {
                let voters: String = r.get(8)?;
                Ok(VoteRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    subject: r.get(2)?,
                    phase: r.get(3)?,
                    author: r.get(4)?,
                    strategy: r.get(5)?,
                    min_votes: r.get(6)?,
                    threshold: r.get(7)?,
                    voters: serde_json::from_str(&voters).unwrap_or_default(),
                    opened_session_secs: r.get(9)?,
                    closed_session_secs: r.get(10)?,
                    outcome: r.get(11)?,
                    reason: r.get(12)?,
                    ballots: Vec::new(),
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT vote_id, voter, role, choice, weight, reason, via, session_secs
             FROM ballots ORDER BY session_secs, voter",
        )?;
        let ballots = stmt
            .query_map([], |r| {
                let choice: String = r.get(3)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    BallotRow {
                        ballot: Ballot {
                            voter: r.get(1)?,
                            role: r.get(2)?,
                            choice: crate::swarm::consensus::Choice::parse(&choice)
                                .unwrap_or(crate::swarm::consensus::Choice::Abstain),
                            weight: r.get(4)?,
                        },
                        reason: r.get(5)?,
                        via: r.get(6)?,
                        session_secs: r.get(7)?,
                    },
                ))
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for (vote_id, ballot) in ballots {
            if let Some(vote) = votes.iter_mut().find(|v| v.id == vote_id) {
                vote.ballots.push(ballot);
            }
        }
        Ok(votes)
    }

    /// Ballots cast in all votes.
    pub fn ballots_cast(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM ballots", [], |r| r.get::<_, i64>(0))?
            .try_into()
            .unwrap_or(0))
    }

    /// Close every vote still open (a resumed session does not repeat its reviews).
    pub fn abandon_open_votes(&self, reason: &str, session_secs: f64) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE votes SET outcome = 'abandoned', reason = ?1, closed_session_secs = ?2
             WHERE outcome = 'open'",
            params![reason, session_secs],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::consensus::Choice;

    #[test]
    fn votes_and_ballots_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("session.db")).unwrap();
        let voters = vec!["agent-2".to_string(), "agent-3".to_string()];
        let id = store
            .open_vote(&NewVote {
                kind: "review",
                subject: "t1",
                phase: "development",
                author: Some("agent-1"),
                strategy: "majority",
                min_votes: 2,
                threshold: 0.6,
                voters: &voters,
                session_secs: 10.0,
            })
            .unwrap();
        let ballot = Ballot {
            voter: "agent-2".into(),
            role: "Tester".into(),
            choice: Choice::Reject,
            weight: 0.75,
        };
        store
            .cast_ballot(id, &ballot, "no tests", "verdict_line", 11.0)
            .unwrap();
        let again = Ballot {
            choice: Choice::Approve,
            ..ballot.clone()
        };
        store.cast_ballot(id, &again, "fixed", "api", 12.0).unwrap();
        let votes = store.votes().unwrap();
        assert_eq!(votes.len(), 1);
        assert_eq!(votes[0].voters, voters);
        assert_eq!(
            votes[0].ballots.len(),
            1,
            "a later ballot replaces the earlier one"
        );
        assert_eq!(votes[0].ballots[0].ballot.choice, Choice::Approve);
        assert_eq!(store.abandon_open_votes("resumed", 13.0).unwrap(), 1);
        store.close_vote(id, "approved", "2 of 2", 14.0).unwrap();
        let votes = store.votes().unwrap();
        assert_eq!(
            (votes[0].outcome.as_str(), votes[0].closed_session_secs),
            ("approved", Some(14.0))
        );
    }
}
