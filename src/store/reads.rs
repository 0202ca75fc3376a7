//! Typed loaders over `session.db`: what resume, restore, the report and the recovery table
//! read back. No `rusqlite` type leaves this module.

use super::error::Result;
use super::{CheckRow, CheckpointRow, EventRow, Store};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One agent as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRecord {
    /// `agent-1`, ….
    pub id: String,
    /// Its role.
    pub role: String,
    /// Read offset in the agent's `events.jsonl` (bytes) up to which its reports are counted.
    pub events_offset: u64,
    /// `idle`, `running`, or `retired` (dynamic spawning took it out for good).
    pub status: String,
}

/// One task as recorded on the board.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// The task's id.
    pub id: String,
    /// Its phase.
    pub phase: String,
    /// The role it is for.
    pub role: String,
    /// `pending`, `claimed`, `running`, `done` or `failed`.
    pub state: String,
    /// Runs started for it.
    pub attempts: u32,
    /// The agent that has or had it.
    pub agent_id: Option<String>,
    /// Session seconds it was claimed.
    pub claimed_session_secs: Option<f64>,
    /// Session seconds it finished.
    pub finished_session_secs: Option<f64>,
    /// Its last failure.
    pub last_error: Option<String>,
}

/// A task as a checkpoint's `task_board` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoardEntry {
    /// The task's id.
    pub id: String,
    /// Its phase's name.
    pub phase: String,
    /// The role it is for.
    pub role: String,
    /// `pending`, `claimed`, `running`, `done` or `failed`.
    pub state: String,
    /// Runs started for it.
    pub attempts: u32,
    /// The agent that has or had it.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Its last failure.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl From<TaskRecord> for BoardEntry {
    fn from(t: TaskRecord) -> BoardEntry {
        BoardEntry {
            id: t.id,
            phase: t.phase,
            role: t.role,
            state: t.state,
            attempts: t.attempts,
            agent_id: t.agent_id,
            last_error: t.last_error,
        }
    }
}

/// One phase's recorded times (session and wall seconds) and why it ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseRecord {
    /// Session seconds at its start.
    pub started_session_secs: Option<f64>,
    /// Wall seconds at its start.
    pub started_wall_secs: Option<f64>,
    /// Session seconds at its end.
    pub ended_session_secs: Option<f64>,
    /// Wall seconds at its end.
    pub ended_wall_secs: Option<f64>,
    /// Why it ended.
    pub ended_because: Option<String>,
}

/// Runs per agent: (runs, runs that finished their task, runs that failed).
pub type RunCounts = HashMap<String, (u32, u32, u32)>;

impl Store {
    /// RFC 3339 time of the newest event, if any.
    pub fn last_event_at(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT MAX(at) FROM events", [], |r| r.get(0))?)
    }

    /// Kind and RFC 3339 time of the newest event.
    pub fn last_event(&self) -> Result<Option<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT kind, at FROM events ORDER BY seq DESC LIMIT 1")?;
        let mut rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.next().transpose()?)
    }

    /// RFC 3339 start time of the session.
    pub fn started_at(&self) -> Result<Option<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT started_at FROM sessions LIMIT 1")?;
        let mut rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.next().transpose()?)
    }

    /// Runs per agent: all, finished, failed (`exited_nonzero`, `step_timeout`).
    pub fn agent_run_counts(&self) -> Result<RunCounts> {
        let mut stmt = self.conn.prepare(
            "SELECT agent_id, COUNT(*), SUM(outcome = 'finished'),
                    SUM(outcome IN ('exited_nonzero', 'step_timeout'))
             FROM agent_runs GROUP BY agent_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                (
                    r.get::<_, u32>(1)?,
                    r.get::<_, Option<u32>>(2)?.unwrap_or(0),
                    r.get::<_, Option<u32>>(3)?.unwrap_or(0),
                ),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The agents in index order.
    pub fn agents(&self) -> Result<Vec<AgentRecord>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, role, events_offset, status FROM agents ORDER BY idx")?;
        let rows = stmt.query_map([], |r| {
            Ok(AgentRecord {
                id: r.get(0)?,
                role: r.get(1)?,
                events_offset: r.get::<_, i64>(2)?.max(0) as u64,
                status: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The task board.
    pub fn tasks(&self) -> Result<Vec<TaskRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, phase, role, state, attempts, agent_id, claimed_session_secs,
                    finished_session_secs, last_error FROM tasks ORDER BY rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TaskRecord {
                id: r.get(0)?,
                phase: r.get(1)?,
                role: r.get(2)?,
                state: r.get(3)?,
                attempts: r.get(4)?,
                agent_id: r.get(5)?,
                claimed_session_secs: r.get(6)?,
                finished_session_secs: r.get(7)?,
                last_error: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every evaluation as (phase, JSON document), oldest first.
    pub fn evaluations(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT phase, document FROM evaluations ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every phase check, oldest first.
    pub fn checks(&self) -> Result<Vec<CheckRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT phase, name, command, exit_code, passed, timed_out, wall_secs, output_tail
             FROM checks ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CheckRow {
                phase: r.get(0)?,
                name: r.get(1)?,
                command: r.get(2)?,
                exit_code: r.get(3)?,
                passed: r.get(4)?,
                timed_out: r.get(5)?,
                wall_secs: r.get(6)?,
                output_tail: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The phases in plan order.
    pub fn phase_records(&self) -> Result<Vec<PhaseRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT started_session_secs, started_wall_secs, ended_session_secs,
                    ended_wall_secs, ended_because FROM phases ORDER BY idx",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(PhaseRecord {
                started_session_secs: r.get(0)?,
                started_wall_secs: r.get(1)?,
                ended_session_secs: r.get(2)?,
                ended_wall_secs: r.get(3)?,
                ended_because: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The name of the first phase that has not ended (None when all ended).
    pub fn open_phase_name(&self) -> Result<Option<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT name FROM phases WHERE ended_session_secs IS NULL ORDER BY idx LIMIT 1",
        )?;
        let mut rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.next().transpose()?)
    }

    /// Every checkpoint, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, at, session_secs, trigger, path, sha256, parent, manifest, files,
                    bytes, new_objects, new_bytes, consistent, frozen_ms
             FROM checkpoints ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CheckpointRow {
                seq: r.get(0)?,
                at: r.get(1)?,
                session_secs: r.get(2)?,
                trigger: r.get(3)?,
                path: r.get(4)?,
                sha256: r.get(5)?,
                parent: r.get(6)?,
                manifest: r.get(7)?,
                files: r.get::<_, i64>(8)? as u64,
                bytes: r.get::<_, i64>(9)? as u64,
                new_objects: r.get::<_, i64>(10)? as u64,
                new_bytes: r.get::<_, i64>(11)? as u64,
                consistent: r.get(12)?,
                frozen_ms: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest checkpoint's row, if any.
    pub fn last_checkpoint(&self) -> Result<Option<CheckpointRow>> {
        Ok(self.checkpoints()?.pop())
    }

    /// Session seconds agents spent in runs; a run still going counts up to `elapsed`.
    pub fn busy_session_secs(&self, elapsed: f64) -> Result<f64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(SUM(COALESCE(ended_session_secs, ?1) - started_session_secs), 0)
             FROM agent_runs",
            params![elapsed],
            |r| r.get(0),
        )?)
    }

    /// The most agent runs that were going at the same session second (a run still going
    /// counts to the end).
    pub fn peak_concurrent_runs(&self) -> Result<u64> {
        let peak: i64 = self.conn.query_row(
            "SELECT COALESCE(MAX(busy), 0) FROM (
                 SELECT (SELECT COUNT(*) FROM agent_runs b
                         WHERE b.started_session_secs <= a.started_session_secs
                           AND (b.ended_session_secs IS NULL
                                OR b.ended_session_secs > a.started_session_secs)) AS busy
                 FROM agent_runs a)",
            [],
            |r| r.get(0),
        )?;
        Ok(peak.max(0) as u64)
    }

    /// Runs of other agents whose time overlapped run `run_id`'s (a run still going counts to
    /// the end).
    pub fn overlapping_runs(&self, run_id: i64) -> Result<u64> {
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM agent_runs o, agent_runs r
             WHERE r.id = ?1 AND o.agent_id != r.agent_id
               AND o.started_session_secs < COALESCE(r.ended_session_secs, 1e300)
               AND COALESCE(o.ended_session_secs, 1e300) > r.started_session_secs",
            params![run_id],
            |r| r.get(0),
        )?;
        Ok(count.max(0) as u64)
    }

    /// The newest event's `seq` (0: none).
    pub fn last_event_seq(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Every event of `kind`, oldest first.
    pub fn events_of_kind(&self, kind: &str) -> Result<Vec<EventRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, at, session_secs, kind, agent_id, phase, task_id, data FROM events
             WHERE kind = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![kind], super::event_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The `limit` most used tools of task `task_id`: (tool, calls), most used first.
    pub fn tool_counts_of_task(&self, task_id: &str, limit: u32) -> Result<Vec<(String, i64)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT json_extract(data, '$.tool'), COUNT(*) FROM events
             WHERE kind = 'tool_call' AND task_id = ?1 GROUP BY 1 ORDER BY 2 DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![task_id, limit], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get(1)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ids of the recoveries without an outcome.
    pub fn open_recovery_ids(&self) -> Result<Vec<i64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM recoveries WHERE outcome IS NULL ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaders_read_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("session.db")).unwrap();
        store
            .insert_agent("agent-1", 0, "Coder", "builtin")
            .unwrap();
        store
            .insert_task("t1", "development", "Coder", "title")
            .unwrap();
        store.insert_phase(0, "development", 600.0).unwrap();
        assert_eq!(
            store.agents().unwrap(),
            vec![AgentRecord {
                id: "agent-1".into(),
                role: "Coder".into(),
                events_offset: 0,
                status: "idle".into(),
            }]
        );
        let tasks = store.tasks().unwrap();
        assert_eq!(
            (tasks[0].id.as_str(), tasks[0].state.as_str()),
            ("t1", "pending")
        );
        assert_eq!(
            store.open_phase_name().unwrap().as_deref(),
            Some("development")
        );
        assert_eq!(store.last_event().unwrap(), None);
        store
            .append_event(
                "2026-01-01T00:00:00Z",
                1.0,
                "tool_call",
                None,
                None,
                Some("t1"),
                &serde_json::json!({"tool": "bash"}),
            )
            .unwrap();
        assert_eq!(
            store.tool_counts_of_task("t1", 10).unwrap(),
            vec![("bash".to_string(), 1)]
        );
        assert_eq!(store.events_of_kind("tool_call").unwrap().len(), 1);
        assert_eq!(store.busy_session_secs(10.0).unwrap(), 0.0);
        assert!(store.open_recovery_ids().unwrap().is_empty());
    }
}
