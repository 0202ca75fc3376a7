//! Dynamic spawning (`[agent].dynamic_spawning`, `max_total_agents`): which agents the session
//! adds, replaces and retires. Pure; the session feeds it what its agents and board look like
//! and carries out the [`Decision`]s.
//!
//! The rules (megatest's; the upstream file names the keys only):
//!
//! - **Add for ready work.** A role whose claimable tasks have waited the cross-role grace period
//!   (session seconds) outnumber its idle agents gets fresh agents of that role — at most one per
//!   waiting task, never more than the free run slots (`concurrent_agents` minus the runs going)
//!   allow, and never beyond `max_total_agents` agents ever created. Without spawning those tasks
//!   go to idle agents of other roles; with it, a fresh agent of the right role takes them first.
//! - **Replace.** An idle agent whose trust score is at `min_trust_score` or whose last
//!   [`FAILURE_LIMIT`] runs all failed is retired and a fresh agent of its role takes its place —
//!   only while `max_total_agents` leaves room (otherwise it stays: it does not vote and its
//!   work is reviewed).
//! - **Retire.** While more agents are live than the configured `agent_count`, an agent idle for
//!   `retire_after` session seconds (`[recovery].agent_idle_minutes`) while nothing on the board
//!   is claimable is retired, newest first, down to `agent_count`.

use serde::Serialize;

/// Failed runs in a row after which an agent counts as crashing and is replaced.
pub const FAILURE_LIMIT: u32 = 3;

/// One agent as the spawner sees it (index = its place among every agent ever created).
#[derive(Debug, Clone, Copy)]
pub struct AgentState<'a> {
    /// Its role.
    pub role: &'a str,
    /// Not retired.
    pub live: bool,
    /// Session second it became idle; None while it runs a task.
    pub idle_since: Option<f64>,
    /// Its trust score is at `min_trust_score`.
    pub distrusted: bool,
    /// Its last runs that all failed (0 after a finished run).
    pub failures_in_row: u32,
}

/// What the board and the session's limits allow now.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    /// Session seconds now.
    pub now: f64,
    /// Claimable tasks that waited the cross-role grace period, by role (one entry per task).
    pub waiting_roles: Vec<&'a str>,
    /// Some task of the phase is claimable (waiting or not).
    pub any_claimable: bool,
    /// Runs going now.
    pub running: usize,
}

/// The limits spawning keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `[agent].max_total_agents`: agents ever created (raised by `--agents`).
    pub max_total: usize,
    /// `[session].agent_count`: agents retiring stops at.
    pub base: usize,
    /// `[agent].concurrent_agents`: runs at once.
    pub concurrent: usize,
    /// Session seconds an agent without work stays before it is retired.
    pub retire_after: f64,
}

/// Why an agent is added or retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Ready work of its role waited longer than the grace period.
    ReadyWork,
    /// Its trust score is at `min_trust_score`.
    Distrusted,
    /// Its last [`FAILURE_LIMIT`] runs failed.
    Crashing,
    /// Idle past `retire_after` with nothing claimable, above `agent_count`.
    NoWork,
}

impl Reason {
    /// The word recorded in events and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ReadyWork => "ready_work",
            Reason::Distrusted => "distrusted",
            Reason::Crashing => "crashing",
            Reason::NoWork => "no_work",
        }
    }
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Retire agent `agent_idx`.
    Retire {
        /// The agent.
        agent_idx: usize,
        /// Why.
        reason: Reason,
    },
    /// Create a fresh agent of `role`.
    Spawn {
        /// Its role.
        role: String,
        /// Why (`Distrusted`/`Crashing`: it replaces the agent retired just before).
        reason: Reason,
        /// The agent it replaces.
        replaces: Option<usize>,
    },
}

/// The decisions for now, in the order to carry them out. Empty when nothing changes.
pub fn plan(agents: &[AgentState<'_>], situation: &Situation<'_>, limits: Limits) -> Vec<Decision> {
    let mut out = Vec::new();
    let mut room = limits.max_total.saturating_sub(agents.len());
    let mut live = agents.iter().filter(|a| a.live).count();
    // Replacements: idle agents that are distrusted or crashing, while creations are left.
    for (agent_idx, agent) in agents.iter().enumerate() {
        if room == 0 {
            break;
        }
        if !agent.live || agent.idle_since.is_none() {
            continue;
        }
        let reason = if agent.distrusted {
            Reason::Distrusted
        } else if agent.failures_in_row >= FAILURE_LIMIT {
            Reason::Crashing
        } else {
            continue;
        };
        out.push(Decision::Retire { agent_idx, reason });
        out.push(Decision::Spawn {
            role: agent.role.to_string(),
            reason,
            replaces: Some(agent_idx),
        });
        room -= 1;
    }
    let replaced: Vec<usize> = out
        .iter()
        .filter_map(|d| match d {
            Decision::Retire { agent_idx, .. } => Some(*agent_idx),
            Decision::Spawn { .. } => None,
        })
        .collect();
    // New agents for ready work that waited, within the free run slots.
    let mut slots = limits.concurrent.saturating_sub(situation.running);
    let mut roles: Vec<&str> = situation.waiting_roles.clone();
    roles.sort_unstable();
    roles.dedup();
    for role in roles {
        let waiting = situation
            .waiting_roles
            .iter()
            .filter(|r| **r == role)
            .count();
        // A replacement of this role counts as an idle agent of it.
        let idle = agents
            .iter()
            .enumerate()
            .filter(|(i, a)| {
                a.live && a.role == role && a.idle_since.is_some() && !replaced.contains(i)
            })
            .count()
            + out
                .iter()
                .filter(|d| matches!(d, Decision::Spawn { role: r, .. } if r == role))
                .count();
        let add = waiting.saturating_sub(idle).min(slots).min(room);
        for _ in 0..add {
            out.push(Decision::Spawn {
                role: role.to_string(),
                reason: Reason::ReadyWork,
                replaces: None,
            });
        }
        slots -= add;
        room -= add;
        live += add;
    }
    // Retirements: surplus agents without work, newest first.
    if !situation.any_claimable {
        for (agent_idx, agent) in agents.iter().enumerate().rev() {
            if live <= limits.base {
                break;
            }
            let idle_long = agent
                .idle_since
                .is_some_and(|since| situation.now - since >= limits.retire_after);
            if agent.live && idle_long && !replaced.contains(&agent_idx) {
                out.push(Decision::Retire {
                    agent_idx,
                    reason: Reason::NoWork,
                });
                live -= 1;
            }
        }
    }
    out
}

/// The earliest session second after `now` at which [`plan`] may retire an agent without any
/// other event (None: no agent above `agent_count` waits to be retired).
pub fn next_retirement(agents: &[AgentState<'_>], now: f64, limits: Limits) -> Option<f64> {
    let live = agents.iter().filter(|a| a.live).count();
    if live <= limits.base {
        return None;
    }
    agents
        .iter()
        .filter(|a| a.live)
        .filter_map(|a| a.idle_since.map(|since| since + limits.retire_after))
        .filter(|at| *at > now)
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_total: 6,
        base: 3,
        concurrent: 4,
        retire_after: 600.0,
    };

    fn agent(role: &str, idle_since: Option<f64>) -> AgentState<'_> {
        AgentState {
            role,
            live: true,
            idle_since,
            distrusted: false,
            failures_in_row: 0,
        }
    }

    fn situation<'a>(waiting_roles: Vec<&'a str>, running: usize) -> Situation<'a> {
        Situation {
            now: 1000.0,
            any_claimable: !waiting_roles.is_empty(),
            waiting_roles,
            running,
        }
    }

    fn spawn(role: &str) -> Decision {
        Decision::Spawn {
            role: role.into(),
            reason: Reason::ReadyWork,
            replaces: None,
        }
    }

    #[test]
    fn waiting_work_adds_agents_of_its_role_within_free_slots_and_the_creation_limit() {
        let agents = [
            agent("Coder", None),
            agent("Tester", Some(900.0)),
            agent("Architect", Some(900.0)),
        ];
        // Three Coder tasks wait, one Coder runs: the free slots (4 - 1) allow three.
        let s = situation(vec!["Coder", "Coder", "Coder"], 1);
        assert_eq!(plan(&agents, &s, LIMITS), vec![spawn("Coder"); 3]);
        // Two runs going: two slots.
        let s = situation(vec!["Coder", "Coder", "Coder"], 2);
        assert_eq!(plan(&agents, &s, LIMITS).len(), 2);
        // Five agents exist already: one more may be created.
        let five = [
            agents[0],
            agents[1],
            agents[2],
            agent("Coder", None),
            agent("Coder", None),
        ];
        let s = situation(vec!["Coder", "Coder", "Coder"], 1);
        assert_eq!(plan(&five, &s, LIMITS), vec![spawn("Coder")]);
        // An idle agent of the role takes the task: nothing to add.
        let s = situation(vec!["Tester"], 1);
        assert!(plan(&agents, &s, LIMITS).is_empty());
        // Every slot busy: a new agent could not run.
        let s = situation(vec!["Coder"], 4);
        assert!(plan(&agents, &s, LIMITS).is_empty());
    }

    #[test]
    fn distrusted_and_crashing_idle_agents_are_replaced_while_creations_are_left() {
        let mut distrusted = agent("Coder", Some(950.0));
        distrusted.distrusted = true;
        let mut crashing = agent("Tester", Some(950.0));
        crashing.failures_in_row = FAILURE_LIMIT;
        let mut almost = agent("Tester", Some(950.0));
        almost.failures_in_row = FAILURE_LIMIT - 1;
        let agents = [distrusted, crashing, almost];
        let s = situation(vec![], 0);
        assert_eq!(
            plan(&agents, &s, LIMITS),
            vec![
                Decision::Retire {
                    agent_idx: 0,
                    reason: Reason::Distrusted
                },
                Decision::Spawn {
                    role: "Coder".into(),
                    reason: Reason::Distrusted,
                    replaces: Some(0)
                },
                Decision::Retire {
                    agent_idx: 1,
                    reason: Reason::Crashing
                },
                Decision::Spawn {
                    role: "Tester".into(),
                    reason: Reason::Crashing,
                    replaces: Some(1)
                },
            ]
        );
        // No room left: the distrusted agent stays.
        let limits = Limits {
            max_total: 3,
            ..LIMITS
        };
        assert!(plan(&agents, &s, limits).is_empty());
        // A distrusted agent still running is replaced only once it is idle.
        let mut busy = distrusted;
        busy.idle_since = None;
        assert!(plan(&[busy], &s, LIMITS).is_empty());
        // A replacement counts as an idle agent of its role for waiting work.
        let s = situation(vec!["Coder"], 0);
        assert_eq!(plan(&[distrusted], &s, LIMITS).len(), 2);
    }

    #[test]
    fn surplus_agents_without_work_retire_newest_first_down_to_the_agent_count() {
        let agents = [
            agent("Coder", Some(100.0)),
            agent("Tester", Some(100.0)),
            agent("Architect", Some(100.0)),
            agent("Coder", Some(100.0)),
            agent("Coder", Some(500.0)),
        ];
        let s = situation(vec![], 0);
        // Agent 5 idled 500 s (< 600): agents 4 and 3 go, newest first.
        assert_eq!(
            plan(&agents, &s, LIMITS),
            vec![
                Decision::Retire {
                    agent_idx: 3,
                    reason: Reason::NoWork
                },
                Decision::Retire {
                    agent_idx: 2,
                    reason: Reason::NoWork
                },
            ]
        );
        assert_eq!(next_retirement(&agents, 1000.0, LIMITS), Some(1100.0));
        let later = Situation {
            now: 1200.0,
            ..s.clone()
        };
        assert_eq!(
            plan(&agents, &later, LIMITS),
            vec![
                Decision::Retire {
                    agent_idx: 4,
                    reason: Reason::NoWork
                },
                Decision::Retire {
                    agent_idx: 3,
                    reason: Reason::NoWork
                },
            ]
        );
        // Work on the board keeps them.
        let busy_board = Situation {
            any_claimable: true,
            ..later
        };
        assert!(plan(&agents, &busy_board, LIMITS).is_empty());
        // At the agent count nobody retires.
        assert!(plan(&agents[..3], &s, LIMITS).is_empty());
        assert_eq!(next_retirement(&agents[..3], 1000.0, LIMITS), None);
        // Retired agents are not counted.
        let mut gone = agents;
        gone[3].live = false;
        gone[4].live = false;
        assert!(plan(&gone, &s, LIMITS).is_empty());
    }
}
