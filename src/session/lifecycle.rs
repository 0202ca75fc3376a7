//! Creating a session directory, reopening one from `session.db` (`megatest resume`), and the
//! files agents read (`agents.toml`, `selfware.toml`).

use super::*;

impl Session {
    /// Create the session directory and its files (`config.json`, `agents.toml`, `status`,
    /// `session.db` with the plan). Errors leave what was created for inspection.
    pub fn create(prepared: Prepared) -> Result<Session> {
        let dir = prepared.dir.clone();
        std::fs::create_dir_all(dir.join("project"))
            .with_context(|| format!("create session directory {}", dir.display()))?;
        for sub in ["metrics", "checkpoints", "agents"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        write_json_atomic(&dir.join("config.json"), &prepared.config.redacted_json())?;
        write_atomic(&dir.join("status"), b"running\n")?;
        // `session.db` appears only once it holds the session, its agents, its plan and its
        // origin: a kill -9 before leaves `session.db.partial`, never a session.db that
        // `megatest resume` cannot read.
        let partial = dir.join("session.db.partial");
        let store = Store::open(&partial)?;
        let clock = SessionClock::start(prepared.config.time_scale);
        let started_at = now();
        let config = &prepared.config;
        store.insert_session(
            &prepared.session_id,
            &config.raw.session.project_type,
            prepared.provider.as_str(),
            &config.model_name(),
            config.time_scale,
            &started_at,
        )?;
        let mut agents = Vec::new();
        for (idx, role) in config.agent_roles.iter().enumerate() {
            let id = spawning::agent_id(idx);
            let agent_dir = dir.join("agents").join(&id);
            std::fs::create_dir_all(agent_dir.join("prompts"))?;
            let kind = match config.raw.agents.kind {
                AgentKind::Builtin => "builtin",
                AgentKind::Command => "command",
            };
            store.insert_agent(&id, idx, role, kind)?;
            agents.push(AgentSlot::new(id, role.clone(), agent_dir, 0.0));
        }
        let mut tasks = Vec::new();
        for (phase_idx, phase) in config.phases.iter().enumerate() {
            store.insert_phase(phase_idx, &phase.name, phase.session_secs)?;
            for task in prepared.spec.tasks_of(&phase.name) {
                store.insert_task(&task.id, &phase.name, &task.role, &task.title)?;
                tasks.push(Task::planned(task.clone(), phase_idx));
            }
        }
        let phases = config
            .phases
            .iter()
            .map(|_| PhaseRecord {
                started: None,
                ended: None,
                ended_because: None,
                checks: Vec::new(),
                evaluation: None,
            })
            .collect();
        store.set_session_origin(
            &prepared.session_id,
            &prepared
                .config
                .path
                .canonicalize()
                .unwrap_or(prepared.config.path.clone())
                .display()
                .to_string(),
            &serde_json::to_value(&prepared.overrides)?,
            std::process::id(),
        )?;
        store.close()?;
        let db = dir.join("session.db");
        std::fs::rename(&partial, &db)
            .with_context(|| format!("rename {} to {}", partial.display(), db.display()))?;
        let store = Store::open(&db)?;
        Session::assemble(prepared, store, clock, started_at, agents, tasks, phases)
    }

    /// The rest of a session around its state: channels, budgets, prices, checkpointer.
    pub(super) fn assemble(
        prepared: Prepared,
        store: Store,
        clock: SessionClock,
        started_at: String,
        agents: Vec<AgentSlot>,
        tasks: Vec<Task>,
        phases: Vec<PhaseRecord>,
    ) -> Result<Session> {
        let config = &prepared.config;
        let dir = prepared.dir.clone();
        let (events_tx, events_rx) = mpsc::channel(1024);
        let metrics_writer = crate::fsutil::BackgroundWriter::start("metrics-writer")?;

        let budgets = Budgets::new(
            &config.raw.limits,
            config.raw.model.max_cost_usd,
            agents.len(),
        );
        let prices = budget::price_table(&config.raw.model.prices);
        let mut checkpointer = crate::checkpoint::Checkpointer::open(&dir.join("checkpoints"))?;
        // One watch on the workspace for both readers: checkpoints and task snapshots.
        let watch = crate::checkpoint::watch::WorkspaceWatch::start(&dir.join("project"));
        checkpointer.cache = crate::checkpoint::snapshot::StatCache::watching(watch.clone());
        let task_snapshots = diffs::TaskSnapshots::new(checkpointer.store.clone(), watch);
        let spool = Arc::new(LedgerSpool::open(&dir)?);
        let (recovery, _) = recover::RecoveryState::new(config, &dir.join("project"), &dir)?;
        Ok(Session {
            recovery,
            checkpoint_replies: Vec::new(),
            checkpoint_replies_in_flight: Vec::new(),
            last_sample: None,
            sampling: false,
            evaluation: phases.iter().rev().find_map(|p| p.evaluation.clone()),
            api: None,
            sync: None,
            api_shutdown: CancellationToken::new(),
            rejections: rejections::Rejections::default(),
            ticks: None,
            mode: ticks::Mode::Running,
            budgets,
            spool,
            budget_exhaustion_logged: false,
            checkpointer: Some(checkpointer),
            checkpoint_in_flight: false,
            checkpoint_due: None,
            tool_calls_since_checkpoint: 0,
            tokens_since_checkpoint: 0,
            checkpoints_taken: 0,
            last_checkpoint: None,
            prices,
            workspace: dir.join("project"),
            prepared,
            store,
            clock,
            started_at,
            agents,
            board: Board { tasks },
            phases,
            current_phase: None,
            totals: LedgerTotals::default(),
            errors: 0,
            events_tx,
            events_rx,
            proxy_root: String::new(),
            proxy_task: None,
            shutdown: None,
            last_code_stats: None,
            checkpoint_audit: Default::default(),
            votes: Vec::new(),
            proposals: Vec::new(),
            gate: Default::default(),
            trust_stale: true,
            task_checks: Default::default(),
            task_snapshots,
            check_history: Default::default(),
            api_ballots: Default::default(),
            metrics_writer,
            trust_recorded: Default::default(),
        })
    }

    /// Rebuild a session from its `session.db` after its daemon died (`megatest resume`): tasks
    /// that were in flight go back to the board, counters, budgets and the ledger continue, the
    /// session clock continues from the last recorded session time (downtime is not session
    /// time), agents get new keys. Leftover agent processes must have been stopped before.
    pub fn reopen(prepared: Prepared) -> Result<(Session, f64)> {
        let dir = prepared.dir.clone();
        let store = Store::open(&dir.join("session.db"))?;
        let config = &prepared.config;
        let offset = store.last_session_secs()?;
        store.abandon_open_votes(
            "the session was resumed: reviews in progress are not repeated",
            offset,
        )?;
        let last_event_at = store.last_event_at()?;
        let downtime_wall_secs = last_event_at
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| {
                (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).num_milliseconds() as f64
                    / 1000.0
            })
            .unwrap_or(0.0);
        let started_at = store.started_at()?.unwrap_or_else(now);
        let clock = SessionClock::resume(config.time_scale, offset);
        let run_counts = store.agent_run_counts()?;
        let mut agents = Vec::new();
        for crate::store::AgentRecord {
            id,
            role,
            events_offset,
            status,
        } in store.agents()?
        {
            let (runs, tasks_done, failed_runs) = run_counts.get(&id).copied().unwrap_or_default();
            let retired = status == "retired";
            if !retired {
                store.set_agent_status(&id, "idle")?;
            }
            let agent_dir = dir.join("agents").join(&id);
            agents.push(AgentSlot {
                retired,
                runs,
                tasks_done,
                failed_runs,
                events_offset,
                ..AgentSlot::new(id, role, agent_dir, offset)
            });
        }
        let recorded: std::collections::HashMap<String, crate::store::TaskRecord> = store
            .tasks()?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let mut tasks = Vec::new();
        for (phase_idx, phase) in config.phases.iter().enumerate() {
            for spec in prepared.spec.tasks_of(&phase.name) {
                let crate::store::TaskRecord {
                    state,
                    attempts,
                    agent_id,
                    claimed_session_secs: claimed,
                    finished_session_secs: finished,
                    last_error,
                    ..
                } = recorded.get(&spec.id).cloned().with_context(|| {
                    format!("task {} of the spec is not in session.db", spec.id)
                })?;
                tasks.push(Task {
                    state: TaskState::resumed(&state),
                    attempts,
                    agent_id,
                    claimed_session_secs: claimed,
                    finished_session_secs: finished,
                    last_error,
                    ..Task::planned(spec.clone(), phase_idx)
                });
            }
        }
        // Follow-up tasks come back from their `task_generated` events (which hold their
        // prompts) with the state `session.db` recorded.
        for generated in store.events_of_kind("task_generated")? {
            let data: serde_json::Value = serde_json::from_str(&generated.data).unwrap_or_default();
            let (Some(id), Some(phase)) = (generated.task_id.clone(), generated.phase.clone())
            else {
                continue;
            };
            let Some(phase_idx) = config.phases.iter().position(|p| p.name == phase) else {
                continue;
            };
            let (Some(record), Some(prompt)) = (recorded.get(&id), data["prompt"].as_str()) else {
                continue;
            };
            let spec = TaskSpec {
                id,
                phase,
                role: record.role.clone(),
                title: data["title"].as_str().unwrap_or_default().to_string(),
                prompt: prompt.to_string(),
                after: Vec::new(),
                check: None,
            };
            tasks.push(Task {
                state: TaskState::resumed(&record.state),
                attempts: record.attempts,
                agent_id: record.agent_id.clone(),
                claimed_session_secs: record.claimed_session_secs,
                finished_session_secs: record.finished_session_secs,
                last_error: record.last_error.clone(),
                ..Task::planned(spec, phase_idx)
            });
        }
        let mut checks: std::collections::HashMap<String, Vec<CheckRow>> =
            std::collections::HashMap::new();
        for row in store.checks()? {
            checks.entry(row.phase.clone()).or_default().push(row);
        }
        let mut evaluations: std::collections::HashMap<String, Box<eval::evaluation::Evaluation>> =
            std::collections::HashMap::new();
        for (phase, document) in store.evaluations()? {
            // A document that no longer parses (an older megatest) is left out, not fatal.
            if let Ok(evaluation) = serde_json::from_str(&document) {
                evaluations.insert(phase, Box::new(evaluation));
            }
        }
        let phase_rows = store.phase_records()?;
        let phases = config
            .phases
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                let row = phase_rows.get(i).cloned().unwrap_or_default();
                PhaseRecord {
                    started: row.started_session_secs.zip(row.started_wall_secs),
                    ended: row.ended_session_secs.zip(row.ended_wall_secs),
                    ended_because: row.ended_because,
                    checks: checks.remove(&plan.name).unwrap_or_default(),
                    evaluation: evaluations.remove(&plan.name),
                }
            })
            .collect();
        let mut session =
            Session::assemble(prepared, store, clock, started_at, agents, tasks, phases)?;
        for task_idx in 0..session.board.tasks.len() {
            session.sync_task(task_idx)?;
        }
        match session.store.budget_state()? {
            Some(state) => {
                let mut budgets: Budgets = serde_json::from_value(state)?;
                budgets.reservations.clear();
                budgets.reserved_tokens = 0;
                // Agents spawned after the last save get their buckets.
                budgets.ensure_agents(session.agents.len(), &session.prepared.config.raw.limits);
                session.budgets = budgets;
            }
            // Died before the first save: every ledger row is to be counted.
            None => session.budgets.ledger_seq = Some(0),
        }
        session.replay_ledger_into_budgets()?;
        session.import_spool()?;
        session.totals = session.store.ledger_totals(None)?;
        session.errors = session.store.error_counts()?.values().sum();
        let checkpoints = session.store.checkpoints()?;
        session.checkpoints_taken = checkpoints.len() as u32;
        session.last_checkpoint = checkpoints.last().cloned();
        let id = session.prepared.session_id.clone();
        let origin_path = session
            .prepared
            .config
            .path
            .canonicalize()
            .unwrap_or(session.prepared.config.path.clone());
        session.store.set_session_origin(
            &id,
            &origin_path.display().to_string(),
            &serde_json::to_value(&session.prepared.overrides)?,
            std::process::id(),
        )?;
        write_atomic(&session.dir().join("status"), b"running\n")?;
        session.event(
            "session_resumed",
            None,
            None,
            None,
            serde_json::json!({"session_secs": offset, "downtime_wall_secs": downtime_wall_secs}),
        )?;
        let mut session = session;
        session.chaos_fired_before()?;
        session.restore_recovery_state()?;
        let word = session.status_word();
        write_atomic(
            &session.dir().join("status"),
            format!("{word}\n").as_bytes(),
        )?;
        Ok((session, downtime_wall_secs))
    }

    /// `agents.toml`: what each agent CLI is handed (mode 0600: it holds per-agent keys), and
    /// per-agent `selfware.toml` for the selfware preset.
    pub(super) fn write_agents_toml(&self) -> Result<()> {
        let model = self.prepared.config.model_name();
        let base_url = format!("{}/v1", self.proxy_root);
        let mut out = String::from("# Per-agent settings handed to agent CLIs. The keys are megatest per-agent keys, not provider keys.\n");
        for agent in self.agents.iter().filter(|a| !a.retired) {
            out.push_str(&format!(
                "\n[[agent]]\nid = {:?}\nrole = {:?}\nbase_url = {:?}\nmodel = {:?}\napi_key = {:?}\n",
                agent.id, agent.role, base_url, model, agent.key
            ));
            // Native function calls: selfware turns them on only for model names it knows
            // (`gpt-*`, `claude-*`); megatest's proxy meters them for any name.
            let selfware = format!(
                "endpoint = {base_url:?}\nmodel = {model:?}\napi_key = {:?}\n\n[agent]\nnative_function_calling = true\nmax_iterations = {}\n",
                agent.key, self.prepared.config.raw.agent.max_iterations
            );
            write_private(&agent.dir.join("selfware.toml"), selfware.as_bytes())?;
        }
        Ok(write_private(
            &self.dir().join("agents.toml"),
            out.as_bytes(),
        )?)
    }
}
