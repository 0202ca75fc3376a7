//! Recoveries: one row per failure and what the recovery table did, and the session's
//! persisted recovery state.

use super::*;
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Open a recovery (outcome None) or record a finished one; returns its id.
    pub fn insert_recovery(&self, row: &RecoveryRow) -> Result<i64> {
        self.conn
            .prepare_cached(
                "INSERT INTO recoveries (failure_kind, severity, detected_at, detected_session_secs,
                     rule, action, attempts, outcome, resolved_session_secs, agent_id, task_id, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                row.failure_kind,
                row.severity,
                row.detected_at,
                row.detected_session_secs,
                row.rule,
                row.action,
                row.attempts,
                row.outcome,
                row.time_to_recover_session_secs
                    .map(|t| row.detected_session_secs + t),
                row.agent_id,
                row.task_id,
                row.detail,
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Close an open recovery with its outcome at `session_secs`.
    pub fn resolve_recovery(
        &self,
        id: i64,
        outcome: &str,
        attempts: u32,
        session_secs: f64,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE recoveries SET outcome = ?2, attempts = ?3, resolved_session_secs = ?4
             WHERE id = ?1 AND outcome IS NULL",
            params![id, outcome, attempts, session_secs],
        )?;
        Ok(())
    }

    /// Every recovery, oldest first.
    pub fn recoveries(&self) -> Result<Vec<RecoveryRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, failure_kind, severity, detected_at, detected_session_secs, rule, action,
                    attempts, outcome, resolved_session_secs - detected_session_secs, agent_id,
                    task_id, detail
             FROM recoveries ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RecoveryRow {
                id: r.get(0)?,
                failure_kind: r.get(1)?,
                severity: r.get(2)?,
                detected_at: r.get(3)?,
                detected_session_secs: r.get(4)?,
                rule: r.get(5)?,
                action: r.get(6)?,
                attempts: r.get(7)?,
                outcome: r.get(8)?,
                time_to_recover_session_secs: r.get(9)?,
                agent_id: r.get(10)?,
                task_id: r.get(11)?,
                detail: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replace the persisted recovery state (JSON of `session::recover::RecoveryRecord`).
    pub fn save_recovery_state(&self, state: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO recovery_state (id, state) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            )?
            .execute(params![state])?;
        Ok(())
    }

    /// The persisted recovery state, if one was saved.
    pub fn recovery_state(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT state FROM recovery_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?)
    }
}
