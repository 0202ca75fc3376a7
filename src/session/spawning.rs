//! Dynamic spawning (`[agent].dynamic_spawning`): carrying out what
//! [`crate::swarm::spawning::plan`] decides — a fresh agent (id, key, directory, budget
//! buckets, `session.db` row, `agents.toml`), or an agent retired for good (status `retired`
//! in `session.db`, its key refused, its reservations released). Every change is an
//! `agent_spawned` / `agent_retired` event.

use super::*;
use crate::swarm::spawning::{self, AgentState, Decision, Limits, Reason, Situation};

/// The id of the agent at `idx` among every agent the session created: `agent-1`, ….
pub(super) fn agent_id(idx: usize) -> String {
    format!("agent-{}", idx + 1)
}

/// The index of agent `id` (the inverse of [`agent_id`]); None for any other name.
pub(super) fn agent_index(id: &str) -> Option<usize> {
    let n: usize = id.strip_prefix("agent-")?.parse().ok()?;
    (n >= 1 && agent_id(n - 1) == id).then(|| n - 1)
}

/// A fresh per-agent key (what the agent presents to the proxy and the control API).
pub(super) fn agent_key(id: &str) -> String {
    format!(
        "mt-{id}-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

impl AgentSlot {
    /// A new idle agent with a fresh key (its directory is `dir`).
    pub(super) fn new(id: String, role: String, dir: PathBuf, now_secs: f64) -> AgentSlot {
        AgentSlot {
            key: agent_key(&id),
            id,
            role,
            dir,
            running: None,
            retired: false,
            distrusted: false,
            idle_since: Some(now_secs),
            failures_in_row: 0,
            runs: 0,
            tasks_done: 0,
            failed_runs: 0,
            events_offset: 0,
            last_activity: None,
            active: Instant::now(),
            log_len: 0,
            calls_in_flight: 0,
        }
    }
}

impl Session {
    /// Agents that may run a task at once: `[agent].concurrent_agents`, at most the live agents.
    pub(super) fn concurrency(&self) -> usize {
        let live = self.agents.iter().filter(|a| !a.retired).count();
        (self.prepared.config.raw.agent.concurrent_agents as usize).min(live)
    }

    fn spawning_limits(&self) -> Limits {
        let raw = &self.prepared.config.raw;
        Limits {
            max_total: raw.agent.max_total_agents as usize,
            base: raw.session.agent_count as usize,
            concurrent: raw.agent.concurrent_agents as usize,
            retire_after: raw.recovery.agent_idle_minutes * 60.0,
        }
    }

    fn spawning_states(&self) -> Vec<AgentState<'_>> {
        self.agents
            .iter()
            .map(|a| AgentState {
                role: &a.role,
                live: !a.retired,
                idle_since: a.idle_since.filter(|_| a.running.is_none()),
                distrusted: a.distrusted,
                failures_in_row: a.failures_in_row,
            })
            .collect()
    }

    /// Add, replace and retire agents as [`spawning::plan`] decides (only with
    /// `[agent].dynamic_spawning`). Called by the scheduler before it hands out work.
    pub(super) fn manage_agents(&mut self, phase_idx: usize) -> Result<()> {
        if !self.prepared.config.raw.agent.dynamic_spawning {
            return Ok(());
        }
        if self.trust_stale {
            self.trust_stale = false;
            let min = self.prepared.config.raw.agent.min_trust_score;
            let scores = self.trust_scores();
            for agent in &mut self.agents {
                agent.distrusted = scores
                    .get(&agent.id)
                    .is_some_and(|(score, _)| *score <= min);
            }
        }
        let now = self.clock.session_secs();
        let grace = self.cross_role_grace();
        let roles = &self.prepared.config.agent_roles;
        let (waiting_roles, any_claimable) = self.board.waiting_roles(phase_idx, now, grace);
        let situation = Situation {
            now,
            waiting_roles: waiting_roles
                .into_iter()
                .filter(|role| roles.iter().any(|r| r == role))
                .collect(),
            any_claimable,
            running: self.agents.iter().filter(|a| a.running.is_some()).count(),
        };
        let decisions = spawning::plan(&self.spawning_states(), &situation, self.spawning_limits());
        if decisions.is_empty() {
            return Ok(());
        }
        for decision in decisions {
            match decision {
                Decision::Retire { agent_idx, reason } => self.retire_agent(agent_idx, reason)?,
                Decision::Spawn {
                    role,
                    reason,
                    replaces,
                } => self.spawn_agent(role, reason, replaces)?,
            }
        }
        if !self.proxy_root.is_empty() {
            self.write_agents_toml()?;
        }
        Ok(())
    }

    /// The session second at which an agent above `agent_count` may be retired (for the
    /// loop's wake-up), when dynamic spawning is on.
    pub(super) fn next_retirement(&self) -> Option<f64> {
        if !self.prepared.config.raw.agent.dynamic_spawning {
            return None;
        }
        spawning::next_retirement(
            &self.spawning_states(),
            self.clock.session_secs(),
            self.spawning_limits(),
        )
    }

    fn spawn_agent(&mut self, role: String, reason: Reason, replaces: Option<usize>) -> Result<()> {
        let idx = self.agents.len();
        let id = agent_id(idx);
        let dir = self.dir().join("agents").join(&id);
        std::fs::create_dir_all(dir.join("prompts"))
            .with_context(|| format!("create {}", dir.display()))?;
        let kind = match self.prepared.config.raw.agents.kind {
            AgentKind::Builtin => "builtin",
            AgentKind::Command => "command",
        };
        self.store.insert_agent(&id, idx, &role, kind)?;
        self.budgets
            .ensure_agents(idx + 1, &self.prepared.config.raw.limits);
        let now = self.clock.session_secs();
        self.agents
            .push(AgentSlot::new(id.clone(), role.clone(), dir, now));
        let replaced = replaces.map(|i| self.agents[i].id.clone());
        tracing::info!(message = "agent spawned", agent = %id, role = %role, reason = reason.as_str(), replaces = ?replaced);
        self.event(
            "agent_spawned",
            Some(&id),
            None,
            None,
            serde_json::json!({"role": role, "reason": reason.as_str(), "replaces": replaced}),
        )?;
        Ok(())
    }

    fn retire_agent(&mut self, agent_idx: usize, reason: Reason) -> Result<()> {
        let agent = &mut self.agents[agent_idx];
        agent.retired = true;
        // Its key is refused from now on (a leftover process cannot call the model).
        agent.key = agent_key(&agent.id);
        let (id, role) = (agent.id.clone(), agent.role.clone());
        for task in &mut self.board.tasks {
            if task.reserved_for == Some(agent_idx) {
                task.reserved_for = None;
            }
        }
        self.store.set_agent_status(&id, "retired")?;
        let trust = self.trust_scores().get(&id).map(|(score, _)| *score);
        tracing::info!(message = "agent retired", agent = %id, role = %role, reason = reason.as_str());
        self.event(
            "agent_retired",
            Some(&id),
            None,
            None,
            serde_json::json!({"role": role, "reason": reason.as_str(), "trust_score": trust}),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_and_indices_are_inverse() {
        assert_eq!(agent_id(0), "agent-1");
        assert_eq!(agent_index("agent-1"), Some(0));
        assert_eq!(agent_index("agent-16"), Some(15));
        for bad in [
            "agent-0", "agent-01", "agent-", "agent-x", "other-1", "agent--1",
        ] {
            assert_eq!(agent_index(bad), None, "{bad}");
        }
    }
}
