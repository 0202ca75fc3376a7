//! Rolling the task board and phases back to a checkpoint (`megatest restore`), and marking
//! a session interrupted; the ledger and events are append-only and stay.

use super::*;
use rusqlite::params;

impl Store {
    /// Put the task board and the phases back as a checkpoint recorded them: `tasks` (its
    /// task board), `phase` and `checkpoint_secs` (the phase and session seconds it was taken
    /// at), `at_phase_end` (taken as that phase ended). The phase the checkpoint was taken in
    /// restarts with the time box it had left then (its start moved so that `now_secs` is as far
    /// into it); later phases become not started, and their check rows are dropped (the `check`
    /// events keep that history). The ledger, events and budgets are not touched.
    pub fn rollback_to_checkpoint(
        &mut self,
        tasks: &[BoardEntry],
        phase: Option<&str>,
        checkpoint_secs: f64,
        at_phase_end: bool,
        now_secs: f64,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        for task in tasks {
            let state = match task.state.as_str() {
                "running" | "claimed" => "pending",
                state => state,
            };
            tx.execute(
                "UPDATE tasks SET state = ?2, attempts = ?3, agent_id = ?4, last_error = ?5 WHERE id = ?1",
                params![task.id, state, task.attempts, task.agent_id, task.last_error],
            )?;
        }
        let phase: Option<(i64, f64)> = match phase {
            Some(name) => tx
                .query_row(
                    "SELECT idx, started_session_secs FROM phases WHERE name = ?1",
                    params![name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
            None => None,
        };
        let phase_done = at_phase_end;
        match phase {
            Some((idx, _)) if phase_done => {
                // Taken as the phase ended: it stays ended; later phases start over.
                tx.execute(
                    "UPDATE phases SET started_session_secs = NULL, started_wall_secs = NULL, ended_session_secs = NULL, ended_wall_secs = NULL, ended_because = NULL WHERE idx > ?1",
                    params![idx],
                )?;
                tx.execute(
                    "DELETE FROM checks WHERE phase IN (SELECT name FROM phases WHERE idx > ?1)",
                    params![idx],
                )?;
            }
            Some((idx, started)) => {
                let into_phase = (checkpoint_secs - started).max(0.0);
                tx.execute(
                    "UPDATE phases SET started_session_secs = ?2, ended_session_secs = NULL, ended_wall_secs = NULL, ended_because = NULL WHERE idx = ?1",
                    params![idx, now_secs - into_phase],
                )?;
                tx.execute(
                    "UPDATE phases SET started_session_secs = NULL, started_wall_secs = NULL, ended_session_secs = NULL, ended_wall_secs = NULL, ended_because = NULL WHERE idx > ?1",
                    params![idx],
                )?;
                tx.execute(
                    "DELETE FROM checks WHERE phase IN (SELECT name FROM phases WHERE idx >= ?1)",
                    params![idx],
                )?;
            }
            None => {
                // Taken between phases (phase end): phases that ended after it start over.
                tx.execute(
                    "UPDATE phases SET started_session_secs = NULL, started_wall_secs = NULL, ended_session_secs = NULL, ended_wall_secs = NULL, ended_because = NULL WHERE started_session_secs > ?1",
                    params![checkpoint_secs],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Mark the session interrupted (resumable).
    pub fn mark_interrupted(&self) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET status = 'interrupted', exit_code = NULL, ended_at = NULL",
            [],
        )?;
        Ok(())
    }
}
