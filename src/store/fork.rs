//! The database side of `megatest fork`: a consistent copy of `session.db`, then the copy cut
//! back to a checkpoint's moment as a new session with its own ledger and budgets.

use super::error::Result;
use super::{BoardEntry, Store};
use rusqlite::params;
use std::path::Path;

/// Where a forked session came from (`sessions.forked_from`, `final_report.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForkOrigin {
    /// The source session's id.
    pub session_id: String,
    /// The source session's directory.
    pub session_dir: String,
    /// The checkpoint forked from.
    pub checkpoint: u32,
    /// The checkpoint's moment, session seconds.
    pub checkpoint_session_secs: f64,
    /// When the fork was made (RFC 3339).
    pub forked_at: String,
}

impl Store {
    /// Write a consistent copy of this database to `path` (`VACUUM INTO`: a snapshot, also
    /// while the session runs). Errors: `path` exists or cannot be written.
    pub fn copy_into(&self, path: &Path) -> Result<()> {
        self.conn.execute(
            "VACUUM INTO ?1",
            params![path.to_string_lossy().into_owned()],
        )?;
        Ok(())
    }

    /// Make a session copied from another machine (`megatest resume s3://…`) this machine's:
    /// checkpoint paths under `dir`, no daemon recorded, and `config_path` when given (the
    /// recorded one does not exist here). Errors: the database could not be written.
    pub fn relocate(&mut self, dir: &Path, config_path: Option<&Path>) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE checkpoints SET path = ?1 || substr(path, instr(path, '/checkpoints/')) \
             WHERE instr(path, '/checkpoints/') > 0",
            params![dir.to_string_lossy().into_owned()],
        )?;
        tx.execute("UPDATE sessions SET daemon_pid = NULL", [])?;
        if let Some(config) = config_path {
            tx.execute(
                "UPDATE sessions SET config_path = ?1",
                params![config.to_string_lossy().into_owned()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Turn this copy of a session into a fork at `origin`'s checkpoint: the new id, status
    /// interrupted (resumable), a fresh ledger, budget and recovery state, no final report,
    /// nothing recorded after the checkpoint's moment (events, runs, votes, recoveries,
    /// evaluations, later checkpoints, tasks generated later), runs open then closed as
    /// `forked`, the task board and phases as the checkpoint had them, checkpoint paths moved
    /// from `old_dir` to `new_dir`. One transaction. Errors: the database could not be written.
    #[allow(clippy::too_many_arguments)]
    pub fn make_fork(
        &mut self,
        new_id: &str,
        origin: &ForkOrigin,
        board: &[BoardEntry],
        phase: Option<&str>,
        at_phase_end: bool,
        old_dir: &str,
        new_dir: &str,
    ) -> Result<()> {
        let at = origin.checkpoint_session_secs;
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE sessions SET id = ?1, status = 'interrupted', ended_at = NULL, exit_code = NULL, \
             ended_because = NULL, daemon_pid = NULL, forked_from = ?2",
            params![new_id, serde_json::to_string(origin).unwrap_or_default()],
        )?;
        for statement in [
            "DELETE FROM ledger",
            "DELETE FROM budget_state",
            "DELETE FROM recovery_state",
            "DELETE FROM final_report",
            "UPDATE agents SET events_offset = 0",
        ] {
            tx.execute(statement, [])?;
        }
        for statement in [
            "DELETE FROM events WHERE session_secs > ?1",
            "DELETE FROM agent_runs WHERE started_session_secs > ?1",
            "UPDATE agent_runs SET ended_session_secs = ?1, outcome = 'forked' \
             WHERE ended_session_secs IS NULL OR ended_session_secs > ?1",
            "DELETE FROM recoveries WHERE detected_session_secs > ?1",
            "DELETE FROM ballots WHERE vote_id IN (SELECT id FROM votes WHERE opened_session_secs > ?1)",
            "DELETE FROM votes WHERE opened_session_secs > ?1",
            "DELETE FROM evaluations WHERE session_secs > ?1",
        ] {
            tx.execute(statement, params![at])?;
        }
        tx.execute(
            "DELETE FROM checkpoints WHERE seq > ?1",
            params![origin.checkpoint],
        )?;
        tx.execute(
            "UPDATE checkpoints SET path = ?2 || substr(path, length(?1) + 1) \
             WHERE substr(path, 1, length(?1)) = ?1",
            params![old_dir, new_dir],
        )?;
        // Tasks generated after the checkpoint are not on its board.
        let ids: Vec<String> = board.iter().map(|t| t.id.clone()).collect();
        let mut statement = tx.prepare("SELECT id FROM tasks")?;
        let recorded: Vec<String> = statement
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        drop(statement);
        for id in recorded.iter().filter(|id| !ids.contains(id)) {
            let generated_later: bool = tx.query_row(
                "SELECT COUNT(*) = 0 FROM events WHERE kind = 'task_generated' AND task_id = ?1",
                params![id],
                |r| r.get(0),
            )?;
            if !generated_later {
                continue;
            }
            tx.execute("DELETE FROM tasks WHERE id = ?1", params![id])?;
        }
        tx.commit()?;
        self.rollback_to_checkpoint(board, phase, at, at_phase_end, at)?;
        Ok(())
    }

    /// Where this session was forked from (None: it was not).
    pub fn forked_from(&self) -> Result<Option<ForkOrigin>> {
        let text: Option<String> =
            self.conn
                .query_row("SELECT forked_from FROM sessions LIMIT 1", [], |r| r.get(0))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}
