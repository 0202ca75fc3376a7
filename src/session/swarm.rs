//! The session's side of the swarm: each agent's measured record and trust score
//! ([`crate::swarm::trust`]) from what the session recorded (runs, recoveries).

use super::*;
use crate::swarm::trust::{self, Record};

impl Session {
    /// Each agent's trust score (clamped to `[agent].min_trust_score`..`max_trust_score`) and
    /// the record it was computed from, by agent id.
    pub(super) fn trust_scores(&self) -> BTreeMap<String, (f64, Record)> {
        let recoveries = self.store.recoveries().unwrap_or_default();
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
                let record = Record {
                    tasks_done: agent.tasks_done,
                    failed_runs: agent.failed_runs,
                    recoveries_caused: u32::try_from(caused).unwrap_or(u32::MAX),
                    ..Record::default()
                };
                let score = trust::score(&record, bounds.min_trust_score, bounds.max_trust_score);
                (agent.id.clone(), (score, record))
            })
            .collect()
    }
}
