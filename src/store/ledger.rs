//! The ledger and what is counted from it: model calls (committed, replayed, totalled,
//! priced), agent-reported tool calls, the budget state.

use super::*;
use rusqlite::{params, OptionalExtension};

impl Store {
    /// Commit one ledger row and its model-call and tool-call events in one transaction;
    /// returns the row's `seq`. The hot path of every model call: `BEGIN` / `COMMIT` are cached
    /// statements (not parsed each time); on any error the transaction is rolled back.
    pub fn record_model_call(
        &mut self,
        at: &str,
        session_secs: f64,
        row: &LedgerRow,
    ) -> Result<i64> {
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let inserted = self
            .insert_model_call(at, session_secs, row)
            .and_then(|seq| {
                self.conn.prepare_cached("COMMIT")?.execute([])?;
                Ok(seq)
            });
        if inserted.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        inserted
    }

    fn insert_model_call(&self, at: &str, session_secs: f64, row: &LedgerRow) -> Result<i64> {
        let tx = &self.conn;
        tx.prepare_cached(
            "INSERT INTO ledger (at, session_secs, agent_id, role, phase, task_id, model_requested,
                 model_served, prompt_tokens, completion_tokens, cached_tokens, tool_calls, tool_names,
                 latency_ms, status, error_kind, attempts, cost_usd, call_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)")?
            .execute(params![
                at,
                session_secs,
                row.agent_id,
                row.role,
                row.phase,
                row.task_id,
                row.model_requested,
                row.model_served,
                row.prompt_tokens as i64,
                row.completion_tokens as i64,
                row.cached_tokens as i64,
                row.tool_names.len() as i64,
                serde_json::to_string(&row.tool_names)?,
                row.latency_ms,
                row.status,
                row.error_kind,
                row.attempts,
                row.cost_usd,
                row.call_id,
            ],
        )?;
        let seq = tx.last_insert_rowid();
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (at, session_secs, kind, agent_id, phase, task_id, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let call = serde_json::json!({
            "ledger_seq": seq,
            "model": row.model_served,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "status": row.status,
            "error_kind": row.error_kind,
        });
        insert.execute(params![
            at,
            session_secs,
            "model_call",
            row.agent_id,
            row.phase,
            row.task_id,
            call.to_string()
        ])?;
        for name in &row.tool_names {
            let data = serde_json::json!({ "ledger_seq": seq, "tool": name });
            insert.execute(params![
                at,
                session_secs,
                "tool_call",
                row.agent_id,
                row.phase,
                row.task_id,
                data.to_string()
            ])?;
        }
        Ok(seq)
    }

    /// Ledger rows after `seq` in order, for the budget replay on resume.
    pub fn ledger_rows_after(&self, seq: i64) -> Result<Vec<CountedCall>> {
        let mut statement = self.conn.prepare(
            "SELECT seq, session_secs, agent_id, prompt_tokens + completion_tokens, tool_calls, cost_usd
             FROM ledger WHERE seq > ?1 ORDER BY seq",
        )?;
        let rows = statement
            .query_map([seq], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, i64>(4)? as u64,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The highest ledger `seq` (0 for an empty ledger).
    pub fn last_ledger_seq(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM ledger", [], |r| r.get(0))?)
    }

    /// The `call_id` of every ledger row (to import only the spooled calls not committed).
    pub fn ledger_call_ids(&self) -> Result<std::collections::HashSet<i64>> {
        let mut statement = self
            .conn
            .prepare("SELECT call_id FROM ledger WHERE call_id IS NOT NULL")?;
        let ids = statement
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(ids)
    }

    /// Token and tool-call totals, from the ledger plus the tool calls agents reported
    /// themselves (`tool_call` events with `source = "agent"`): the figures the report gives.
    /// With `agent_id`, only that agent's.
    pub fn ledger_totals(&self, agent_id: Option<&str>) -> Result<LedgerTotals> {
        let mut totals = LedgerTotals::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT prompt_tokens, completion_tokens, cached_tokens, tool_names FROM ledger
             WHERE ?1 IS NULL OR agent_id = ?1",
        )?;
        let mut rows = stmt.query(params![agent_id])?;
        while let Some(row) = rows.next()? {
            totals.model_calls += 1;
            totals.prompt_tokens += row.get::<_, i64>(0)? as u64;
            totals.completion_tokens += row.get::<_, i64>(1)? as u64;
            totals.cached_tokens += row.get::<_, i64>(2)? as u64;
            let names: Vec<String> = serde_json::from_str(&row.get::<_, String>(3)?)?;
            for name in names {
                totals.tool_calls += 1;
                *totals.tool_calls_by_name.entry(name).or_default() += 1;
            }
        }
        drop(rows);
        let mut reported = self.conn.prepare_cached(
            "SELECT json_extract(data, '$.tool') FROM events
             WHERE kind = 'tool_call' AND json_extract(data, '$.source') = 'agent' AND (?1 IS NULL OR agent_id = ?1)",
        )?;
        let names = reported.query_map(params![agent_id], |r| r.get::<_, Option<String>>(0))?;
        for name in names {
            totals.tool_calls += 1;
            totals.agent_reported_tool_calls += 1;
            *totals
                .tool_calls_by_name
                .entry(name?.unwrap_or_default())
                .or_default() += 1;
        }
        totals.total_tokens = totals.prompt_tokens + totals.completion_tokens;
        Ok(totals)
    }

    /// Record tool calls an agent reported itself (agents whose tools are not native function
    /// calls); they count like the tool calls seen in model answers. `events_offset`: the
    /// agent's read offset in its events file after these calls (saved in the same
    /// transaction, so a resume neither loses nor repeats them); None for calls reported over
    /// HTTP.
    #[allow(clippy::too_many_arguments)]
    pub fn record_agent_tool_calls(
        &mut self,
        at: &str,
        session_secs: f64,
        agent_id: &str,
        phase: Option<&str>,
        task_id: Option<&str>,
        names: &[String],
        events_offset: Option<u64>,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        if let Some(offset) = events_offset {
            tx.prepare_cached("UPDATE agents SET events_offset = ?1 WHERE id = ?2")?
                .execute(params![offset as i64, agent_id])?;
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (at, session_secs, kind, agent_id, phase, task_id, data)
                 VALUES (?1, ?2, 'tool_call', ?3, ?4, ?5, ?6)",
            )?;
            for name in names {
                let data = serde_json::json!({"tool": name, "source": "agent"});
                insert.execute(params![
                    at,
                    session_secs,
                    agent_id,
                    phase,
                    task_id,
                    data.to_string()
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Served models of ledger rows that used tokens but have no cost (no price).
    pub fn unpriced_models(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT model_served FROM ledger
             WHERE cost_usd IS NULL AND prompt_tokens + completion_tokens > 0 ORDER BY 1",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sum of the ledger's known costs, USD.
    pub fn priced_cost(&self) -> Result<f64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(SUM(cost_usd), 0.0) FROM ledger", [], |r| {
                r.get(0)
            })?)
    }

    /// Replace the persisted budget state (JSON of `budget::Budgets`).
    pub fn save_budget_state(&self, state: &serde_json::Value) -> Result<()> {
        self.conn.execute(
            "INSERT INTO budget_state (id, state) VALUES (1, ?1) ON CONFLICT(id) DO UPDATE SET state = excluded.state",
            params![state.to_string()],
        )?;
        Ok(())
    }

    /// The budget state saved last, if any.
    pub fn budget_state(&self) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT state FROM budget_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
    }
}
