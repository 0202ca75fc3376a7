//! The recovery state in `session.db` (table `recovery_state`), so that a resume needs only
//! `session.db`: open recoveries per task, check and agent, the consecutive-error count, open
//! escalations, a pause, a pending stop or restore, and the tasks' recovery fields
//! (reservation, avoided agent, backoff, handoff summary, hold). Indices are stored as ids
//! (task and agent ids), so the record is independent of the order a resumed session builds.
//! Saved when it changed: after every event but model calls (the hot path), and on the
//! metrics and watchdog ticks.

use super::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// An open escalation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(in crate::session) struct EscalationRecord {
    pub recovery_id: i64,
    pub kind: FailureKind,
    pub task_id: Option<String>,
    pub deadline_session_secs: f64,
}

/// A pause (its process groups are not kept: a resumed session has new processes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(in crate::session) struct PauseRecord {
    pub recovery_id: Option<i64>,
    pub kind: Option<FailureKind>,
    pub since_session_secs: f64,
    pub checks: u32,
}

/// A task's recovery fields (only tasks with one set are kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(in crate::session) struct TaskRecovery {
    pub reserved_for: Option<String>,
    pub avoid: Option<String>,
    pub not_before: f64,
    pub handoff: Option<String>,
    pub held: bool,
}

/// Everything of the recovery state a resume needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(in crate::session) struct RecoveryRecord {
    pub consecutive_errors: u32,
    pub task_open: BTreeMap<String, Vec<i64>>,
    pub check_open: BTreeMap<String, Vec<i64>>,
    pub parse_open: BTreeMap<String, i64>,
    pub corrective_due: BTreeSet<String>,
    pub escalations: Vec<EscalationRecord>,
    pub pause: Option<PauseRecord>,
    pub stop: Option<String>,
    pub restore: Option<(i64, u32)>,
    pub tasks: BTreeMap<String, TaskRecovery>,
}

impl Session {
    /// The recovery state as a record (indices as ids).
    pub(in crate::session) fn recovery_record(&self) -> RecoveryRecord {
        let task_id = |idx: &usize| self.board.tasks.get(*idx).map(|t| t.spec.id.clone());
        let agent_id = |idx: &usize| self.agents.get(*idx).map(|a| a.id.clone());
        let r = &self.recovery;
        RecoveryRecord {
            consecutive_errors: r.consecutive_errors,
            task_open: r
                .task_open
                .iter()
                .filter_map(|(idx, ids)| Some((task_id(idx)?, ids.clone())))
                .collect(),
            check_open: r.check_open.clone().into_iter().collect(),
            parse_open: r
                .parse_open
                .iter()
                .filter_map(|(idx, id)| Some((agent_id(idx)?, *id)))
                .collect(),
            corrective_due: r.corrective_due.iter().filter_map(agent_id).collect(),
            escalations: r
                .escalations
                .iter()
                .map(|e| EscalationRecord {
                    recovery_id: e.recovery_id,
                    kind: e.kind,
                    task_id: e.task_idx.as_ref().and_then(task_id),
                    deadline_session_secs: e.deadline_session_secs,
                })
                .collect(),
            pause: r.pause.as_ref().map(|p| PauseRecord {
                recovery_id: p.recovery_id,
                kind: p.kind,
                since_session_secs: p.since_session_secs,
                checks: p.checks,
            }),
            stop: r.stop.clone(),
            restore: r.restore,
            tasks: self
                .board
                .tasks
                .iter()
                .filter_map(|t| {
                    let fields = TaskRecovery {
                        reserved_for: t.reserved_for.as_ref().and_then(agent_id),
                        avoid: t.avoid.as_ref().and_then(agent_id),
                        not_before: t.not_before,
                        handoff: t.handoff.clone(),
                        held: t.held,
                    };
                    (fields != TaskRecovery::default()).then(|| (t.spec.id.clone(), fields))
                })
                .collect(),
        }
    }

    /// Save the recovery state when it differs from what was saved last.
    pub(in crate::session) fn save_recovery_state(&mut self) -> Result<()> {
        let text = serde_json::to_string(&self.recovery_record())?;
        if text != self.recovery.saved {
            self.store.save_recovery_state(&text)?;
            self.recovery.saved = text;
        }
        Ok(())
    }

    /// A resumed session: take back the recovery state `session.db` holds. A pause comes back
    /// without process groups (the agents are new) and holds the proxy's calls again; the
    /// watchdog continues it when its cause is gone (an operator's pause waits for an operator).
    pub(in crate::session) fn restore_recovery_state(&mut self) -> Result<()> {
        let Some(text) = self.store.recovery_state()? else {
            return Ok(());
        };
        let record: RecoveryRecord = serde_json::from_str(&text)?;
        let task_ids: Vec<String> = self.board.tasks.iter().map(|t| t.spec.id.clone()).collect();
        let agent_ids: Vec<String> = self.agents.iter().map(|a| a.id.clone()).collect();
        let task_idx = |id: &str| task_ids.iter().position(|t| t == id);
        let agent_idx = |id: &str| agent_ids.iter().position(|a| a == id);
        let r = &mut self.recovery;
        r.consecutive_errors = record.consecutive_errors;
        r.task_open = record
            .task_open
            .iter()
            .filter_map(|(id, ids)| Some((task_idx(id)?, ids.clone())))
            .collect();
        r.check_open = record.check_open.clone().into_iter().collect();
        r.parse_open = record
            .parse_open
            .iter()
            .filter_map(|(id, rid)| Some((agent_idx(id)?, *rid)))
            .collect();
        r.corrective_due = record
            .corrective_due
            .iter()
            .filter_map(|id| agent_idx(id))
            .collect();
        r.escalations = record
            .escalations
            .iter()
            .map(|e| Escalation {
                recovery_id: e.recovery_id,
                kind: e.kind,
                task_idx: e.task_id.as_deref().and_then(task_idx),
                deadline_session_secs: e.deadline_session_secs,
            })
            .collect();
        r.pause = record.pause.as_ref().map(|p| Pause {
            recovery_id: p.recovery_id,
            kind: p.kind,
            since_session_secs: p.since_session_secs,
            checks: p.checks,
            groups: Vec::new(),
        });
        if r.pause.is_some() {
            let _ = r.paused_tx.send(true);
        }
        r.stop = record.stop.clone();
        r.restore = record.restore;
        for (id, fields) in &record.tasks {
            let Some(idx) = task_idx(id) else { continue };
            let reserved_for = fields.reserved_for.as_deref().and_then(agent_idx);
            let avoid = fields.avoid.as_deref().and_then(agent_idx);
            let task = &mut self.board.tasks[idx];
            task.reserved_for = reserved_for;
            task.avoid = avoid;
            task.not_before = fields.not_before;
            task.handoff = fields.handoff.clone();
            task.held = fields.held;
        }
        self.recovery.saved = text;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_json() {
        let record = RecoveryRecord {
            consecutive_errors: 2,
            task_open: [("t1".to_string(), vec![3, 4])].into(),
            escalations: vec![EscalationRecord {
                recovery_id: 4,
                kind: FailureKind::AgentCrash,
                task_id: Some("t1".into()),
                deadline_session_secs: 36_000.0,
            }],
            pause: Some(PauseRecord {
                recovery_id: None,
                kind: None,
                since_session_secs: 12.0,
                checks: 0,
            }),
            tasks: [(
                "t1".to_string(),
                TaskRecovery {
                    held: true,
                    not_before: 40.0,
                    ..TaskRecovery::default()
                },
            )]
            .into(),
            ..RecoveryRecord::default()
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(
            serde_json::from_str::<RecoveryRecord>(&text).unwrap(),
            record
        );
    }
}
