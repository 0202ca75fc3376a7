//! The session's side of the swarm: each agent's measured record and trust score
//! ([`crate::swarm::trust`]) from what the session recorded (runs, recoveries, review votes on
//! its work, task checks of its work, its ballots against the outcomes).

use super::*;
use crate::swarm::consensus::Choice;
use crate::swarm::trust::{self, Record};

impl Session {
    /// Each agent's trust score (clamped to `[agent].min_trust_score`..`max_trust_score`) and
    /// the record it was computed from, by agent id.
    pub(super) fn trust_scores(&self) -> BTreeMap<String, (f64, Record)> {
        let recoveries = self.store.recoveries().unwrap_or_default();
        let votes = self.store.votes().unwrap_or_default();
        let blamed: Vec<(String, bool)> = self
            .store
            .events_of_kind("check_blame")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
            .flat_map(|d| {
                let broken = d["transition"] == "broken";
                d["agents"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|id| id.as_str().map(|id| (id.to_string(), broken)))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let refuted: Vec<String> = self
            .store
            .events_of_kind("task_checked")
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                serde_json::from_str::<serde_json::Value>(&e.data)
                    .is_ok_and(|d| d["passed"] == false)
            })
            .filter_map(|e| e.agent_id)
            .collect();
        let bounds = &self.prepared.config.raw.agent;
        self.agents
            .iter()
            .map(|agent| {
                let caused = recoveries
                    .iter()
                    .filter(|r| {
                        r.agent_id.as_deref() == Some(agent.id.as_str())
                            && trust::CAUSED_KINDS.contains(&r.failure_kind.as_str())
                    })
                    .count();
                let mut record = Record {
                    tasks_done: agent.tasks_done,
                    failed_runs: agent.failed_runs,
                    recoveries_caused: u32::try_from(caused).unwrap_or(u32::MAX),
                    checks_failed: u32::try_from(
                        refuted.iter().filter(|a| **a == agent.id).count(),
                    )
                    .unwrap_or(u32::MAX),
                    checks_broken: count_blamed(&blamed, &agent.id, true),
                    checks_fixed: count_blamed(&blamed, &agent.id, false),
                    ..Record::default()
                };
                for vote in &votes {
                    let approved = match vote.outcome.as_str() {
                        "approved" => true,
                        "rejected" => false,
                        _ => continue,
                    };
                    if vote.author.as_deref() == Some(agent.id.as_str()) {
                        if approved {
                            record.reviews_approved += 1;
                        } else {
                            record.reviews_rejected += 1;
                        }
                    }
                    let choice = vote
                        .ballots
                        .iter()
                        .find(|b| b.ballot.voter == agent.id)
                        .map(|b| b.ballot.choice);
                    match choice {
                        Some(Choice::Approve) if approved => record.votes_agreed += 1,
                        Some(Choice::Reject) if !approved => record.votes_agreed += 1,
                        Some(Choice::Approve | Choice::Reject) => record.votes_disagreed += 1,
                        _ => {}
                    }
                }
                let score = trust::score(&record, bounds.min_trust_score, bounds.max_trust_score);
                (agent.id.clone(), (score, record))
            })
            .collect()
    }
}

/// How many `check_blame` entries name `agent` as breaking (`broken`) or fixing a check.
fn count_blamed(blamed: &[(String, bool)], agent: &str, broken: bool) -> u32 {
    let n = blamed
        .iter()
        .filter(|(id, b)| id == agent && *b == broken)
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}
