//! `session.db`: the SQLite store of one session (WAL). The only module that knows rusqlite.
//!
//! Tables: `sessions`, `phases`, `agents`, `tasks` (the task board), `agent_runs` (one row per
//! agent process started), `events` (append-only event log), `ledger` (one row per model call),
//! `checks` (phase checks with their output tail). The schema is versioned with
//! `PRAGMA user_version` and upgraded by [`MIGRATIONS`] in order.
//!
//! [`spool`]: the proxy's write-ahead record of answered calls, imported on resume.
//!
//! Durability: `journal_mode = WAL`, `synchronous = NORMAL`: a committed row survives the daemon
//! being killed (`kill -9`); the last transactions may be lost on power failure. Automatic WAL
//! checkpoints are off so that none lands on a model call's commit; the session runs
//! [`Store::checkpoint_wal`] on its metrics tick instead.

use error::Step;
pub use error::{io_is_disk_full, Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::path::Path;

mod error;
mod fork;
mod ledger;
mod reads;
mod recoveries;
mod rollback;
mod rows;
mod schema;
pub mod spool;
mod timeline;
mod votes;

pub use fork::ForkOrigin;
pub use reads::{AgentRecord, BoardEntry, PhaseRecord, RunCounts, TaskRecord};
pub use rows::{
    CheckRow, CheckpointRow, CountedCall, EventRow, LedgerRow, LedgerTotals, RecoveryRow,
    SessionOrigin, SessionSummary,
};
pub use timeline::{CallPoint, Mark, RunSpan, Timeline, TrustSample};
pub use votes::{BallotRow, NewVote, VoteRow};

/// A thread with its own connection that runs PASSIVE WAL checkpoints when woken; failures
/// are logged, never fatal (the WAL stays valid). It ends when the [`Store`] is dropped.
fn spawn_checkpointer(
    path: &Path,
) -> Result<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let conn =
        Connection::open(path).step(|| format!("open {} for checkpoints", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let (wake, wakes) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("wal-checkpoint".into())
        .spawn(move || {
            while wakes.recv().is_ok() {
                while wakes.try_recv().is_ok() {}
                if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(message = "WAL checkpoint failed", error = %err);
                }
            }
        })?;
    Ok((wake, thread))
}

pub use schema::{MIGRATIONS, WAL_SIZE_LIMIT};

/// The `sessions` row of `db`, read-only (the session may be running).
pub fn session_summary(db: &Path) -> Result<SessionSummary> {
    if !db.is_file() {
        return Err(StoreError::invalid(format!(
            "{} does not exist",
            db.display()
        )));
    }
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .step(|| format!("open {} read-only", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    Ok(conn.query_row(
        "SELECT id, project_type, status, started_at, ended_at, exit_code, ended_because, daemon_pid
         FROM sessions LIMIT 1",
        [],
        |r| {
            Ok(SessionSummary {
                id: r.get(0)?,
                project_type: r.get(1)?,
                status: r.get(2)?,
                started_at: r.get(3)?,
                ended_at: r.get(4)?,
                exit_code: r.get(5)?,
                ended_because: r.get(6)?,
                daemon_pid: r.get(7)?,
            })
        },
    )?)
}

/// Up to `limit` events after sequence `after`, oldest first, read through a read-only
/// connection of its own (the session keeps writing meanwhile; WAL lets both go on).
pub fn events_after(db: &Path, after: i64, limit: u32) -> Result<Vec<EventRow>> {
    let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .step(|| format!("open {} read-only", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(2))?;
    let mut stmt = conn.prepare(
        "SELECT seq, at, session_secs, kind, agent_id, phase, task_id, data FROM events
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], event_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An [`EventRow`] from `SELECT seq, at, session_secs, kind, agent_id, phase, task_id, data`.
fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        id: r.get(0)?,
        at: r.get(1)?,
        session_secs: r.get(2)?,
        kind: r.get(3)?,
        agent_id: r.get(4)?,
        phase: r.get(5)?,
        task_id: r.get(6)?,
        data: r.get(7)?,
    })
}

/// An open `session.db`.
pub struct Store {
    conn: Connection,
    /// Wakes the checkpoint thread, which has its own connection.
    checkpoints: Option<std::sync::mpsc::Sender<()>>,
    /// The checkpoint thread (joined by [`Store::close`]).
    checkpoint_thread: Option<std::thread::JoinHandle<()>>,
}

impl Store {
    /// Open (creating if needed) and migrate `path`. Errors: cannot open, not a database, a
    /// schema newer than this binary knows.
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).step(|| format!("open {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // The WAL file is cut back to this size whenever a checkpoint has emptied it, so the
        // periodic checkpoints bound it (a burst of writes cannot leave it large for ever).
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store {
            conn,
            checkpoints: None,
            checkpoint_thread: None,
        };
        store
            .migrate()
            .step(|| format!("migrate {}", path.display()))?;
        let (wake, thread) = spawn_checkpointer(path)?;
        store.checkpoints = Some(wake);
        store.checkpoint_thread = Some(thread);
        Ok(store)
    }

    /// `path` opened read-only beside the session's own connection (no migration, no
    /// checkpoint thread): for readers such as the control API's live dashboard. Errors:
    /// cannot open, not a database.
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .step(|| format!("open {} read-only", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        Ok(Store {
            conn,
            checkpoints: None,
            checkpoint_thread: None,
        })
    }

    /// Close both connections and wait for the checkpoint thread: afterwards nothing has the
    /// file open and SQLite has folded its WAL into it (the file may be renamed).
    pub fn close(mut self) -> Result<()> {
        self.checkpoints = None;
        if let Some(thread) = self.checkpoint_thread.take() {
            let _ = thread.join();
        }
        let Store { conn, .. } = self;
        conn.close().map_err(|(_, err)| err)?;
        Ok(())
    }

    fn migrate(&mut self) -> Result<()> {
        let version = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?
            as usize;
        if version > MIGRATIONS.len() {
            return Err(StoreError::invalid(format!(
                "session.db has schema version {version}, newer than this megatest knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Move the whole WAL into the database file and truncate it to zero bytes (at the
    /// session's end, so nothing of the WAL outlives it). Failures are logged.
    pub fn truncate_wal(&self) {
        if let Err(err) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            tracing::warn!(message = "WAL truncate failed", error = %err);
        }
    }

    /// Ask the checkpoint thread to move what the WAL holds into the database file (PASSIVE:
    /// never blocks writers). Returns at once: the copy and its fsyncs run on that thread's own
    /// connection, off the session task, so no model call's commit waits for them.
    pub fn checkpoint_wal(&self) {
        if let Some(wake) = &self.checkpoints {
            let _ = wake.send(());
        }
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<usize> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize)
    }

    /// Insert the session row (status `running`).
    pub fn insert_session(
        &self,
        id: &str,
        project_type: &str,
        provider: &str,
        model: &str,
        time_scale: f64,
        started_at: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sessions (id, project_type, provider, model, time_scale, started_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running')",
            params![id, project_type, provider, model, time_scale, started_at],
        )?;
        Ok(())
    }

    /// Record the session's end: status, exit code, reason, time.
    pub fn end_session(
        &self,
        id: &str,
        status: &str,
        exit_code: i32,
        ended_because: &str,
        ended_at: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET status = ?2, exit_code = ?3, ended_because = ?4, ended_at = ?5 WHERE id = ?1",
            params![id, status, exit_code, ended_because, ended_at],
        )?;
        Ok(())
    }

    /// Insert a planned phase (not started).
    pub fn insert_phase(&self, idx: usize, name: &str, planned_session_secs: f64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO phases (idx, name, planned_session_secs) VALUES (?1, ?2, ?3)",
            params![idx as i64, name, planned_session_secs],
        )?;
        Ok(())
    }

    /// Record a phase's start (session and wall seconds).
    pub fn start_phase(&self, idx: usize, session_secs: f64, wall_secs: f64) -> Result<()> {
        self.conn.execute(
            "UPDATE phases SET started_session_secs = ?2, started_wall_secs = ?3 WHERE idx = ?1",
            params![idx as i64, session_secs, wall_secs],
        )?;
        Ok(())
    }

    /// Record a phase's end and why.
    pub fn end_phase(
        &self,
        idx: usize,
        session_secs: f64,
        wall_secs: f64,
        because: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE phases SET ended_session_secs = ?2, ended_wall_secs = ?3, ended_because = ?4 WHERE idx = ?1",
            params![idx as i64, session_secs, wall_secs, because],
        )?;
        Ok(())
    }

    /// Insert an agent (status `idle`).
    pub fn insert_agent(&self, id: &str, idx: usize, role: &str, kind: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO agents (id, idx, role, kind, status) VALUES (?1, ?2, ?3, ?4, 'idle')",
            params![id, idx as i64, role, kind],
        )?;
        Ok(())
    }

    /// Set an agent's status (`idle`, `running`, …).
    pub fn set_agent_status(&self, id: &str, status: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE agents SET status = ?2 WHERE id = ?1",
            params![id, status],
        )?;
        Ok(())
    }

    /// Insert a pending task.
    pub fn insert_task(&self, id: &str, phase: &str, role: &str, title: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO tasks (id, phase, role, title, state) VALUES (?1, ?2, ?3, ?4, 'pending')",
            params![id, phase, role, title],
        )?;
        Ok(())
    }

    /// How many tasks have an id starting with `prefix`.
    pub fn count_tasks_with_prefix(&self, prefix: &str) -> Result<usize> {
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM tasks WHERE substr(id, 1, length(?1)) = ?1",
            params![prefix],
            |r| r.get(0),
        )?;
        Ok(count.max(0) as usize)
    }

    /// Write a task's board state (the board in memory is the source; this mirrors it).
    #[allow(clippy::too_many_arguments)]
    pub fn update_task(
        &self,
        id: &str,
        state: &str,
        attempts: u32,
        agent_id: Option<&str>,
        claimed_session_secs: Option<f64>,
        finished_session_secs: Option<f64>,
        last_error: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE tasks SET state = ?2, attempts = ?3, agent_id = ?4, claimed_session_secs = ?5,
                 finished_session_secs = ?6, last_error = ?7 WHERE id = ?1",
            params![
                id,
                state,
                attempts,
                agent_id,
                claimed_session_secs,
                finished_session_secs,
                last_error
            ],
        )?;
        Ok(())
    }

    /// Record an agent process start; returns the run id.
    pub fn insert_agent_run(
        &self,
        agent_id: &str,
        task_id: &str,
        attempt: u32,
        pid: Option<u32>,
        session_secs: f64,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO agent_runs (agent_id, task_id, attempt, pid, pgid, started_session_secs)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            params![agent_id, task_id, attempt, pid, session_secs],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Record a run's end: session seconds, outcome, exit code, signal.
    pub fn end_agent_run(
        &self,
        run_id: i64,
        session_secs: f64,
        exit_code: Option<i32>,
        signal: Option<i32>,
        outcome: &str,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE agent_runs SET ended_session_secs = ?2, exit_code = ?3, signal = ?4, outcome = ?5 WHERE id = ?1",
            params![run_id, session_secs, exit_code, signal, outcome],
        )?;
        Ok(())
    }

    /// Append to the event log; returns its sequence number. (One argument per column.)
    #[allow(clippy::too_many_arguments)]
    pub fn append_event(
        &self,
        at: &str,
        session_secs: f64,
        kind: &str,
        agent_id: Option<&str>,
        phase: Option<&str>,
        task_id: Option<&str>,
        data: &serde_json::Value,
    ) -> Result<i64> {
        self.conn
            .prepare_cached(
                "INSERT INTO events (at, session_secs, kind, agent_id, phase, task_id, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                at,
                session_secs,
                kind,
                agent_id,
                phase,
                task_id,
                data.to_string()
            ])?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Record a written checkpoint.
    pub fn insert_checkpoint(&self, row: &CheckpointRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO checkpoints (seq, at, session_secs, trigger, path, sha256, parent, manifest, files, bytes,
                 new_objects, new_bytes, consistent, frozen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                row.seq, row.at, row.session_secs, row.trigger, row.path, row.sha256, row.parent, row.manifest,
                row.files as i64, row.bytes as i64, row.new_objects as i64, row.new_bytes as i64, row.consistent, row.frozen_ms
            ],
        )?;
        Ok(())
    }

    /// Record a phase check's result.
    pub fn insert_check(&self, check: &CheckRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO checks (phase, name, command, exit_code, passed, timed_out, wall_secs, output_tail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                check.phase,
                check.name,
                check.command,
                check.exit_code,
                check.passed,
                check.timed_out,
                check.wall_secs,
                check.output_tail
            ],
        )?;
        Ok(())
    }

    /// Record an evaluation (its JSON document) made at the end of `phase`.
    pub fn insert_evaluation(&self, phase: &str, session_secs: f64, document: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO evaluations (phase, at, session_secs, document) VALUES (?1, ?2, ?3, ?4)",
            params![
                phase,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                session_secs,
                document
            ],
        )?;
        Ok(())
    }

    /// Count of events per kind.
    pub fn event_counts(&self) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, COUNT(*) FROM events GROUP BY kind")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Errors recorded in the event log (kind `error`), counted by their `error_kind`.
    pub fn error_counts(&self) -> Result<BTreeMap<String, u64>> {
        let mut stmt = self.conn.prepare(
            "SELECT json_extract(data, '$.error_kind'), COUNT(*) FROM events WHERE kind = 'error' GROUP BY 1",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?
                    .unwrap_or_else(|| "unknown".into()),
                r.get::<_, i64>(1)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Process group ids of agent runs that have not ended (used to stop leftovers).
    pub fn open_run_pgids(&self) -> Result<Vec<i64>> {
        let mut stmt = self.conn.prepare(
            "SELECT pgid FROM agent_runs WHERE ended_session_secs IS NULL AND pgid IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Record where the config came from, the overrides, and the daemon's pid (for resume).
    pub fn set_session_origin(
        &self,
        id: &str,
        config_path: &str,
        overrides: &serde_json::Value,
        daemon_pid: u32,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET config_path = ?2, overrides = ?3, daemon_pid = ?4, status = 'running' WHERE id = ?1",
            params![id, config_path, overrides.to_string(), daemon_pid],
        )?;
        Ok(())
    }

    /// Where the session came from, for `megatest resume`.
    pub fn session_origin(&self) -> Result<SessionOrigin> {
        Ok(self.conn.query_row(
            "SELECT id, status, config_path, overrides, daemon_pid FROM sessions LIMIT 1",
            [],
            |r| {
                Ok(SessionOrigin {
                    id: r.get(0)?,
                    status: r.get(1)?,
                    config_path: r.get(2)?,
                    overrides: r.get(3)?,
                    daemon_pid: r.get(4)?,
                })
            },
        )?)
    }

    /// Mark agent runs that never ended (their daemon died) as ended with `outcome`.
    pub fn close_open_runs(&self, session_secs: f64, outcome: &str) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE agent_runs SET ended_session_secs = ?1, outcome = ?2 WHERE ended_session_secs IS NULL",
            params![session_secs, outcome],
        )?)
    }

    /// The latest session time anything was recorded at.
    pub fn last_session_secs(&self) -> Result<f64> {
        Ok(self.conn.query_row(
            "SELECT MAX(s) FROM (SELECT MAX(session_secs) AS s FROM events UNION ALL SELECT MAX(session_secs) FROM ledger)",
            [],
            |r| r.get::<_, Option<f64>>(0),
        )?.unwrap_or(0.0))
    }

    /// The session's recorded status, if the session row exists.
    pub fn session_status(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT status FROM sessions WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.db");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
            store
                .insert_session("s", "quickstart", "scripted", "scripted", 1.0, "t")
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.session_status("s").unwrap().as_deref(),
            Some("running")
        );
    }

    #[test]
    fn a_closed_store_is_one_file_that_can_be_renamed_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("session.db.partial");
        let store = Store::open(&partial).unwrap();
        store
            .insert_session("s", "quickstart", "scripted", "scripted", 1.0, "t")
            .unwrap();
        store.close().unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["session.db.partial"],
            "no WAL or shm left beside it"
        );
        let path = dir.path().join("session.db");
        std::fs::rename(&partial, &path).unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.session_status("s").unwrap().as_deref(),
            Some("running")
        );
    }

    /// A session.db of schema 5 (ledger and events with AUTOINCREMENT) keeps its rows and
    /// numbering through migration 6, and later rows continue the sequence.
    #[test]
    fn migration_6_keeps_ledger_and_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS[..5].iter().enumerate() {
                let tx = conn.transaction().unwrap();
                tx.execute_batch(sql).unwrap();
                tx.pragma_update(None, "user_version", (i + 1) as i64)
                    .unwrap();
                tx.commit().unwrap();
            }
            conn.execute_batch(
                "INSERT INTO ledger (seq, at, session_secs, agent_id, role, model_requested, model_served,
                     prompt_tokens, completion_tokens, cached_tokens, tool_calls, tool_names, latency_ms,
                     status, cost_usd, attempts)
                 VALUES (7, 't', 1.0, 'agent-1', 'Coder', 'm', 'm', 10, 5, 1, 0, '[]', 2.5, 200, 0.25, 2);
                 INSERT INTO events (seq, at, session_secs, kind, data) VALUES (41, 't', 1.0, 'model_call', '{}');",
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
        let (tokens, cost, attempts): (i64, f64, i64) = store
            .conn
            .query_row(
                "SELECT prompt_tokens + completion_tokens + cached_tokens, cost_usd, attempts FROM ledger WHERE seq = 7",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((tokens, cost, attempts), (16, 0.25, 2));
        let row = LedgerRow {
            call_id: 99,
            agent_id: "agent-1".into(),
            role: "Coder".into(),
            phase: None,
            task_id: None,
            model_requested: "m".into(),
            model_served: "m".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            cached_tokens: 0,
            tool_names: vec![],
            latency_ms: 1.0,
            status: 200,
            error_kind: None,
            attempts: 1,
            cost_usd: None,
        };
        assert_eq!(store.record_model_call("t", 2.0, &row).unwrap(), 8);
        let last_event: i64 = store
            .conn
            .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(last_event, 42);
        let sequences: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_sequence WHERE name IN ('ledger', 'events')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sequences, 0, "no AUTOINCREMENT bookkeeping left");
        assert_eq!(
            store.ledger_call_ids().unwrap(),
            std::collections::HashSet::from([99])
        );
    }

    #[test]
    fn ledger_totals_sum_rows_and_tool_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("session.db")).unwrap();
        let mut row = LedgerRow {
            call_id: 1,
            agent_id: "agent-1".into(),
            role: "Coder".into(),
            phase: Some("development".into()),
            task_id: Some("t1".into()),
            model_requested: "scripted".into(),
            model_served: "scripted".into(),
            prompt_tokens: 100,
            completion_tokens: 20,
            cached_tokens: 0,
            tool_names: vec!["write_file".into()],
            latency_ms: 1.0,
            status: 200,
            error_kind: None,
            attempts: 1,
            cost_usd: None,
        };
        store.record_model_call("t", 1.0, &row).unwrap();
        row.agent_id = "agent-2".into();
        row.tool_names = vec!["run_command".into(), "write_file".into()];
        store.record_model_call("t", 2.0, &row).unwrap();
        let all = store.ledger_totals(None).unwrap();
        assert_eq!(
            (all.model_calls, all.total_tokens, all.tool_calls),
            (2, 240, 3)
        );
        assert_eq!(all.tool_calls_by_name["write_file"], 2);
        assert_eq!(store.ledger_totals(Some("agent-2")).unwrap().tool_calls, 2);
        assert_eq!(store.event_counts().unwrap()["tool_call"], 3);
    }
}
