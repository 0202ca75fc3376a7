//! Metering: the proxy's calls as the session sees them — who holds a key, reservations and
//! budgets, ledger commits and their counting, agent-reported tool calls (events endpoint and
//! `events.jsonl`), the ledger spool on resume, and the proxy's start and settling.

/// The tracing target of per-call activity lines (`[monitoring] agent_activity_logging`):
/// they go to `session.log`, and to the terminal only at log level debug or trace.
pub const ACTIVITY_TARGET: &str = "megatest::activity";

use super::*;
use crate::protocol::Tick;

impl Session {
    /// Resume: count into the budgets the ledger rows committed after the saved budget state
    /// (it is saved on the metrics tick, not with every row), then save it.
    pub(super) fn replay_ledger_into_budgets(&mut self) -> Result<()> {
        let after = match self.budgets.ledger_seq {
            Some(seq) => seq,
            // A state from before `ledger_seq` was saved with every row: it counts them all.
            None => self.store.last_ledger_seq()?,
        };
        let rows = self.store.ledger_rows_after(after)?;
        let replayed = rows.len();
        for (seq, secs, agent_id, tokens, tool_calls, cost) in rows {
            let agent_idx = self.agents.iter().position(|a| a.id == agent_id);
            self.budgets
                .replay(agent_idx, tokens, tool_calls, cost, secs);
            self.budgets.ledger_seq = Some(seq);
        }
        if self.budgets.ledger_seq.is_none() {
            self.budgets.ledger_seq = Some(after);
        }
        if replayed > 0 {
            tracing::info!(
                message = "budget state caught up with the ledger",
                rows = replayed
            );
        }
        self.save_budgets()
    }

    /// Resume: commit the calls `ledger.spool` holds that the ledger lacks (answered just
    /// before the daemon died, their commit not done), counting them into the budgets; then
    /// empty the spool. Logs `ledger_spool_imported` when there was anything to import.
    pub(super) fn import_spool(&mut self) -> Result<()> {
        let (calls, torn) = crate::store::spool::read(self.dir())?;
        let known = self.store.ledger_call_ids()?;
        let mut imported = 0u64;
        for call in calls {
            if known.contains(&call.row.call_id) {
                continue;
            }
            let mut row = call.row;
            row.cost_usd = budget::row_cost_usd(&self.prices, &row);
            let actual = row.prompt_tokens + row.completion_tokens;
            let tool_calls = row.tool_names.len() as u64;
            let agent_idx = self.agents.iter().position(|a| a.id == row.agent_id);
            let seq = self
                .store
                .record_model_call(&call.at, call.session_secs, &row)?;
            self.budgets.replay(
                agent_idx,
                actual,
                tool_calls,
                row.cost_usd,
                call.session_secs,
            );
            self.budgets.ledger_seq = Some(seq);
            imported += 1;
        }
        if imported > 0 {
            self.save_budgets()?;
        }
        if imported > 0 || torn > 0 {
            tracing::warn!(
                message = "ledger spool imported: calls answered before the daemon stopped",
                imported,
                torn_lines = torn
            );
            self.event(
                "ledger_spool_imported",
                None,
                None,
                None,
                serde_json::json!({"imported": imported, "torn_lines": torn}),
            )?;
        }
        self.spool.truncate_if_settled()?;
        Ok(())
    }

    /// After the proxy's shutdown: let calls still in flight finish (at most
    /// [`PROXY_SETTLE`] wall time) and count every model call the proxy handed over, so that
    /// the report's totals hold every ledger row. Only ledger events are handled now; requests
    /// for admission are dropped (the proxy answers 503, the session is ending). The proxy's
    /// end arrives as [`Event::ProxyStopped`], the limit as [`Tick::TimeBox`].
    pub(super) async fn settle_proxy(&mut self) {
        let Some(task) = self.proxy_task.take() else {
            return;
        };
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let _ = task.await;
            let _ = events.send(Event::ProxyStopped).await;
        });
        let deadline = tokio::time::Instant::now() + PROXY_SETTLE;
        loop {
            let event = match self.next_event(None, Some(deadline)).await {
                Event::Tick(Tick::TimeBox) => {
                    tracing::warn!(message = "model calls still in flight at the end of the session; not waiting for them");
                    break;
                }
                Event::ProxyStopped => break,
                event => event,
            };
            self.settle_one(event);
        }
        // The proxy has handed over all it will: what is queued is the rest.
        while let Ok(event) = self.events_rx.try_recv() {
            self.settle_one(event);
        }
    }

    /// One event while the proxy settles: ledger events are recorded, the rest dropped.
    fn settle_one(&mut self, event: Event) {
        let handled = match event {
            event @ (Event::ModelCall { .. }
            | Event::ProxyError { .. }
            | Event::AgentToolCalls { .. }) => self.handle(event),
            _ => Ok(()),
        };
        if let Err(err) = handled {
            tracing::error!(message = "cannot record a model call at the end of the session", error = %format!("{err:#}"));
        }
    }

    pub(super) async fn start_proxy(&mut self, shutdown: CancellationToken) -> Result<()> {
        let config = &self.prepared.config;
        let settings = ProxySettings {
            served_name: config.model_name(),
            max_context_size: config.raw.limits.max_context_size,
            default_max_tokens: config.raw.model.default_max_tokens,
            policy: proxy::upstream::RetryPolicy::from_config(&config.raw.model),
            faults: config.raw.model.faults.clone(),
            chaos: config
                .raw
                .chaos
                .enabled
                .then(|| config.raw.chaos.upstream.clone()),
            recovery: self.recovery.table.clone(),
            paused: self.recovery.paused_tx.subscribe(),
        };
        let backend = self
            .prepared
            .backend
            .take()
            .context("the proxy was already started")?;
        let proxy = proxy::start(
            self.events_tx.clone(),
            backend,
            settings,
            self.clock.clone(),
            self.spool.clone(),
            shutdown.clone(),
        )
        .await
        .context("start the model endpoint on 127.0.0.1")?;
        self.proxy_root = proxy.root_url();
        self.proxy_task = Some(proxy.task);
        tracing::info!(message = "model endpoint listening", url = %self.proxy_root, provider = self.prepared.provider.as_str());
        self.write_agents_toml()?;
        if let Some(listener) = self.prepared.api_listener.take() {
            let token = crate::api::new_token();
            let api = crate::api::serve(
                listener,
                self.events_tx.clone(),
                token.clone(),
                self.dir().join("session.db"),
                self.api_shutdown.clone(),
            )?;
            let addr = api.addr;
            write_private(
                &self.dir().join("api.token"),
                format!("{token}\n").as_bytes(),
            )?;
            write_atomic(&self.dir().join("api.addr"), format!("{addr}\n").as_bytes())?;
            self.api = Some(api);
            tracing::info!(message = "control API listening", addr = %addr);
            crate::console::say(format_args!(
                "megatest: live dashboard and control API on http://{addr}/ (sign in with the token in {})",
                self.dir().join("api.token").display()
            ));
        }
        if let Some(url) = self.prepared.overrides.sync.clone() {
            let settings = crate::backend::ecs::AwsSettings::default();
            let source = self.config_path();
            match crate::backend::ecs::sync::SyncHandle::start(
                &url,
                self.dir().to_path_buf(),
                source.as_deref(),
                &settings,
            )
            .await
            {
                Ok(handle) => {
                    tracing::info!(message = "syncing the session", url = %handle.url);
                    self.sync = Some(handle);
                }
                Err(err) => {
                    tracing::error!(message = "the session will not be synced", url, error = %err)
                }
            }
        }
        self.event(
            "session_started",
            None,
            None,
            None,
            serde_json::json!({"proxy": self.proxy_root, "api": self.api.as_ref().map(|a| a.addr.to_string()), "model": self.prepared.config.model_name(),
                               "provider": self.prepared.provider.as_str(), "time_scale": self.clock.time_scale()}),
        )?;
        Ok(())
    }

    /// The proxy finished a model call: commit its ledger row, then count it (reservation
    /// reconciled, budgets, totals, checkpoint thresholds).
    pub(super) fn model_call(
        &mut self,
        call: Box<crate::store::spool::SpooledCall>,
        reservation: Option<u64>,
    ) -> Result<()> {
        let crate::store::spool::SpooledCall {
            at,
            session_secs,
            mut row,
        } = *call;
        row.cost_usd = budget::row_cost_usd(&self.prices, &row);
        let now_secs = self.clock.session_secs();
        let actual = row.prompt_tokens + row.completion_tokens;
        let tool_calls = row.tool_names.len() as u64;
        self.count_toward_checkpoint(tool_calls, actual);
        let agent_idx = self.agents.iter().position(|a| a.id == row.agent_id);
        if let Some(agent_idx) = agent_idx {
            let agent = &mut self.agents[agent_idx];
            agent.last_activity = Some(now());
            agent.active = Instant::now();
            if reservation.is_some() {
                agent.calls_in_flight = agent.calls_in_flight.saturating_sub(1);
            }
            if row.status == 200 && row.error_kind.is_none() {
                self.clean_call(agent_idx)?;
            }
        }
        // Committed first; counted after. The budget state is saved on the metrics tick
        // (resume replays the rows after its `ledger_seq`), or at once on a signal.
        let seq = self.store.record_model_call(&at, session_secs, &row)?;
        self.spool.committed();
        let signals =
            self.budgets
                .reconcile(reservation, actual, tool_calls, row.cost_usd, now_secs);
        self.budgets.ledger_seq = Some(seq);
        if !signals.is_empty() {
            self.save_budgets()?;
        }
        for signal in signals {
            match signal {
                BudgetSignal::Alert { used, total } => {
                    tracing::warn!(message = "token budget at 80 %", used, total);
                    let data = serde_json::json!({"used": used, "total": total});
                    self.event("budget_alert", None, None, None, data.clone())?;
                    self.alert(
                        NotifyEvent::Budget,
                        Severity::Degraded,
                        &format!("token budget at 80 %: {used} of {total} tokens"),
                        data,
                    )?;
                }
                BudgetSignal::Exhausted { message } => self.budget_exhausted(&message)?,
            }
        }
        if self.prepared.config.raw.monitoring.agent_activity_logging {
            tracing::info!(target: ACTIVITY_TARGET, message = "agent activity: model call", agent = %row.agent_id, task = ?row.task_id, model = %row.model_served, status = row.status, prompt_tokens = row.prompt_tokens, completion_tokens = row.completion_tokens, tools = ?row.tool_names);
        }
        self.totals.model_calls += 1;
        self.totals.prompt_tokens += row.prompt_tokens;
        self.totals.completion_tokens += row.completion_tokens;
        self.totals.cached_tokens += row.cached_tokens;
        self.totals.total_tokens += row.prompt_tokens + row.completion_tokens;
        for name in &row.tool_names {
            self.totals.tool_calls += 1;
            *self
                .totals
                .tool_calls_by_name
                .entry(name.clone())
                .or_default() += 1;
        }
        Ok(())
    }

    /// Who holds `agent_key`, with the phase and task it is working on; None (and an
    /// `auth_rejected` event) for an unknown key.
    pub(super) fn call_context(&mut self, agent_key: &str) -> Result<Option<CallContext>> {
        let context = self
            .agents
            .iter()
            .enumerate()
            .find(|(_, a)| a.key == agent_key && !a.retired)
            .map(|(idx, a)| {
                let running = a.running.as_ref();
                CallContext {
                    agent_idx: idx,
                    agent_id: a.id.clone(),
                    role: a.role.clone(),
                    phase: self
                        .current_phase
                        .map(|p| self.prepared.config.phases[p].name.clone()),
                    task_id: running.map(|r| self.board.tasks[r.task_idx].spec.id.clone()),
                    attempt: running.map(|r| r.attempt).unwrap_or(0),
                }
            });
        if context.is_none() {
            if let Some(count) = self.rejections.reject(Instant::now()) {
                self.record_rejections(count)?;
            }
        }
        Ok(context)
    }

    /// One `auth_rejected` row for `count` requests with an unknown agent key (sampled, see
    /// [`rejections`]).
    pub(super) fn record_rejections(&mut self, count: u64) -> Result<()> {
        let total = self.rejections.total;
        self.event(
            "auth_rejected",
            None,
            None,
            None,
            serde_json::json!({"reason": "unknown agent key", "count": count, "total": total}),
        )
        .map(|_| ())
    }

    /// Reserve `tokens` for one call of `agent_idx`; logs throttling, busy and exhaustion. The
    /// state is saved when the call is throttled and on every metrics tick, not with each
    /// reservation: a reservation only matters while its call is in flight, and a daemon crash
    /// ends every call in flight.
    pub(super) fn reserve(&mut self, agent_idx: usize, tokens: u64) -> Result<Admission> {
        let now_secs = self.clock.session_secs();
        let admission = self.budgets.reserve(agent_idx, tokens, now_secs);
        let agent_id = self.agents[agent_idx].id.clone();
        match &admission {
            Admission::Granted {
                wait_session_secs,
                batch_note,
                ..
            } => {
                if *wait_session_secs > 0.0 || *batch_note {
                    let data = serde_json::json!({"wait_session_secs": wait_session_secs, "batch_note": batch_note, "tokens": tokens});
                    self.event("throttled", Some(&agent_id), None, None, data)?;
                    // Throttled time is not in the ledger: save it now.
                    self.save_budgets()?;
                }
            }
            Admission::Busy => {
                let data = serde_json::json!({"tokens": tokens, "reserved": self.budgets.reserved_tokens, "used": self.budgets.used_tokens});
                self.event("budget_busy", Some(&agent_id), None, None, data)?;
            }
            Admission::Exhausted { message } => {
                let message = message.clone();
                self.budget_exhausted(&message)?;
            }
        }
        Ok(admission)
    }

    /// Count tool calls an agent reported itself, like those seen in model answers.
    /// `events_offset`: the agent's events-file offset after these calls (saved with them).
    pub(super) fn agent_tool_calls(
        &mut self,
        agent_idx: usize,
        names: Vec<String>,
        events_offset: Option<u64>,
    ) -> Result<()> {
        let agent = &self.agents[agent_idx];
        let task = agent
            .running
            .as_ref()
            .map(|r| self.board.tasks[r.task_idx].spec.id.clone());
        let phase = self
            .current_phase
            .map(|p| self.prepared.config.phases[p].name.clone());
        let now_secs = self.clock.session_secs();
        let agent_id = agent.id.clone();
        if self.prepared.config.raw.monitoring.agent_activity_logging && !names.is_empty() {
            tracing::info!(target: ACTIVITY_TARGET, message = "agent activity: reported tool calls", agent = %agent_id, task = ?task, tools = ?names);
        }
        self.count_toward_checkpoint(names.len() as u64, 0);
        self.store.record_agent_tool_calls(
            &now(),
            now_secs,
            &agent_id,
            phase.as_deref(),
            task.as_deref(),
            &names,
            events_offset,
        )?;
        if names.is_empty() {
            return Ok(());
        }
        self.budgets
            .charge_tool_calls(agent_idx, names.len() as u64, now_secs);
        self.totals.tool_calls += names.len() as u64;
        self.totals.agent_reported_tool_calls += names.len() as u64;
        for name in names {
            *self.totals.tool_calls_by_name.entry(name).or_default() += 1;
        }
        self.save_budgets()
    }

    /// A note of agent `agent_idx` into the working memory (a `note` event on the task it runs,
    /// `via` `api` or `events_file`); the agent counts as active. Returns the event's sequence.
    pub(super) fn record_note(&mut self, agent_idx: usize, text: &str, via: &str) -> Result<i64> {
        let agent_id = self.agents[agent_idx].id.clone();
        let task = self.agents[agent_idx]
            .running
            .as_ref()
            .map(|r| self.board.tasks[r.task_idx].spec.id.clone());
        let seq = self.event(
            "note",
            Some(&agent_id),
            None,
            task.as_deref(),
            serde_json::json!({"text": text, "via": via}),
        )?;
        self.agents[agent_idx].active = std::time::Instant::now();
        Ok(seq)
    }

    /// Read the complete lines an agent appended to its `events.jsonl` since the last read.
    ///
    /// The file is untrusted input: it is read as bytes (at most [`EVENTS_READ_LIMIT`] per
    /// call), decoded lossily, and lines that are not JSON (invalid UTF-8 included) are counted
    /// and reported as one `parse_failure` error; nothing in the file can fail the session. The
    /// read offset is saved in `session.db` with the tool calls it counted, so a resumed session
    /// never counts a line twice. Errors: only the store's (a failed commit).
    pub(super) fn drain_events_file(&mut self, agent_idx: usize) -> Result<()> {
        let path = self.agents[agent_idx].dir.join("events.jsonl");
        let offset = self.agents[agent_idx].events_offset;
        let chunk = match crate::fsutil::read_complete_lines(&path, offset, EVENTS_READ_LIMIT) {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::warn!(message = "cannot read an agent's events file", path = %path.display(), error = %err);
                return Ok(());
            }
        };
        let text = String::from_utf8_lossy(&chunk.lines);
        let (names, mut bad) = event::parse_agent_events(&text);
        bad += chunk.skipped_lines;
        self.agents[agent_idx].events_offset = chunk.next_offset;
        self.agent_tool_calls(agent_idx, names, Some(chunk.next_offset))?;
        // Notes go to the working memory, as through `POST /api/agent/notes` (same limits:
        // a blank note is skipped, a long one cut to `MAX_NOTE_CHARS`).
        let agent_id = self.agents[agent_idx].id.clone();
        for note in event::parse_agent_notes(&text) {
            if !note.trim().is_empty() {
                let note: String = note.chars().take(crate::api::MAX_NOTE_CHARS).collect();
                self.record_note(agent_idx, &note, "events_file")?;
            }
        }
        // Ballots, as through `POST /api/agent/votes`; a refused one is logged, never fatal.
        for vote in event::parse_agent_events_of(&text, "vote") {
            let choice = vote["choice"]
                .as_str()
                .and_then(crate::swarm::consensus::Choice::parse);
            let reason = crate::swarm::memory::clip(vote["reason"].as_str().unwrap_or(""));
            let refused = match choice {
                Some(choice) => self
                    .api_ballot(agent_idx, choice, &reason, "events_file")
                    .err()
                    .map(|e| e.to_string()),
                None => Some(format!("no choice in {vote}")),
            };
            if let Some(why) = refused {
                tracing::warn!(message = "a vote in an agent's events file was refused", agent = %agent_id, why = %why);
            }
        }
        // Proposals, as through `POST /api/agent/proposals`; a refused one is logged.
        for proposal in event::parse_agent_events_of(&text, "proposal") {
            let title = proposal["title"].as_str().unwrap_or("");
            let body = proposal["text"].as_str().unwrap_or("");
            if let Err(why) = self.raise_proposal(agent_idx, title, body, "events_file")? {
                tracing::warn!(message = "a proposal in an agent's events file was refused", agent = %agent_id, why = %why);
            }
        }
        if bad > 0 {
            let message = format!(
                "{bad} lines of {} are not JSON (skipped; untrusted agent output)",
                path.display()
            );
            let task_idx = self.agents[agent_idx].running.as_ref().map(|r| r.task_idx);
            self.failure_without_action(
                FailureKind::ParseFailure,
                Some(agent_idx),
                task_idx,
                &message,
                "skipped",
            )?;
        }
        Ok(())
    }

    /// Enter the end-of-budget path once: log and record it; the phase loop sees
    /// `budgets.exhausted`, stops the agents, runs the phase checks and ends the session.
    pub(super) fn budget_exhausted(&mut self, message: &str) -> Result<()> {
        if self.budget_exhaustion_logged {
            return Ok(());
        }
        self.budget_exhaustion_logged = true;
        tracing::warn!(
            message = "budget exhausted: ending the session",
            detail = message
        );
        self.event(
            "budget_exhausted",
            None,
            None,
            None,
            serde_json::json!({"message": message}),
        )?;
        Ok(())
    }

    pub(super) fn save_budgets(&self) -> Result<()> {
        Ok(self
            .store
            .save_budget_state(&serde_json::to_value(&self.budgets)?)?)
    }
}
