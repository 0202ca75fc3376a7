//! Agent runs: starting a run of a task (prompt, environment, process group), its end
//! (outcome, board, recovery), stopping every run, and the prompt an agent gets.

use super::*;

impl Session {
    pub(super) fn start_run(&mut self, agent_idx: usize, task_idx: usize) -> Result<()> {
        let session_secs = self.clock.session_secs();
        let (attempt, handoff) =
            self.board
                .claim(task_idx, &self.agents[agent_idx].id, session_secs);
        self.review_claimed(task_idx, agent_idx);
        let config = &self.prepared.config;
        let phase = &config.phases[self.board.tasks[task_idx].phase_idx];
        let task = &self.board.tasks[task_idx];
        let agent = &self.agents[agent_idx];
        let prompt_file = agent
            .dir
            .join("prompts")
            .join(format!("{}.{attempt}.md", task.spec.id));
        let mut prompt = compose_prompt(
            &self.prepared.spec,
            phase,
            &agent.role,
            &task.spec,
            attempt,
            task.last_error.as_deref(),
        );
        if let Some(handoff) = handoff {
            prompt.push('\n');
            prompt.push_str(&handoff);
        }
        prompt.push_str(&self.memory_for(&task.spec.id));
        std::fs::write(&prompt_file, prompt)?;
        let model = config.model_name();
        let mut env = agent::inherited_env();
        if let Some(preset) = self.prepared.preset {
            env.extend(
                preset
                    .env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
        }
        env.extend(
            config
                .raw
                .agents
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let events_file = agent
            .dir
            .join("events.jsonl")
            .to_string_lossy()
            .into_owned();
        env.extend(agent::agent_env(
            &self.proxy_root,
            &agent.key,
            &model,
            &agent.id,
            &agent.role,
            &task.spec.id,
            &events_file,
        ));
        // The agent's own HOME: CLIs keep their state there, not in the user's home.
        let home = agent.dir.join("home");
        if let Err(err) = std::fs::create_dir_all(&home) {
            tracing::warn!(message = "cannot create the agent's home", path = %home.display(), error = %err);
        }
        agent::with_own_home(&mut env, &home);
        if let Some(api) = &self.api {
            // The control API's agent routes (notes, votes, task done) with the same key.
            env.push(("MEGATEST_API_URL".into(), format!("http://{}", api.addr)));
        }
        // `megatest vote` and `megatest note` from any agent's shell: the session's `bin/` first
        // on its PATH.
        if let Some(bin) = self.agent_bin_dir() {
            let bin = bin.to_string_lossy().into_owned();
            match env.iter_mut().find(|(name, _)| name == "PATH") {
                Some((_, path)) => *path = format!("{bin}:{path}"),
                None => env.push(("PATH".into(), format!("{bin}:/usr/local/bin:/usr/bin:/bin"))),
            }
        }
        let workspace = self.workspace.to_string_lossy().into_owned();
        let (program, args) = match &self.prepared.command_template {
            // The running binary itself, even after it was rebuilt or replaced on disk
            // (`current_exe` would name the deleted path).
            None => (
                PathBuf::from(SELF_EXE),
                vec![
                    "agent".to_string(),
                    "--prompt-file".to_string(),
                    prompt_file.to_string_lossy().into_owned(),
                    "--max-iterations".to_string(),
                    config.raw.agent.max_iterations.to_string(),
                    "--role".to_string(),
                    agent.role.clone(),
                ],
            ),
            Some(template) => {
                let base_url = format!("{}/v1", self.proxy_root);
                let agent_config = agent
                    .dir
                    .join("selfware.toml")
                    .to_string_lossy()
                    .into_owned();
                let agent_dir = agent.dir.to_string_lossy().into_owned();
                let vars = CommandVars {
                    prompt_file: &prompt_file.to_string_lossy(),
                    workspace: &workspace,
                    model: &model,
                    base_url: &base_url,
                    agent_id: &agent.id,
                    task_id: &task.spec.id,
                    agent_config: &agent_config,
                    agent_dir: &agent_dir,
                };
                (
                    "sh".into(),
                    vec!["-c".to_string(), agent::render_command(template, &vars)],
                )
            }
        };
        let mut spec = LaunchSpec {
            program,
            args,
            env,
            cwd: self.workspace.clone(),
            log_path: agent.dir.join("agent.log"),
            limits: crate::backend::ResourceLimits {
                memory_bytes: config.raw.agents.memory_limit_mb.map(|mb| mb * 1024 * 1024),
                cpu_secs: config.raw.agents.cpu_limit_secs,
                processes: config.raw.agents.max_processes,
            },
        };
        if self.prepared.sandboxed {
            spec = self.sandboxed(spec, agent_idx);
        }
        let task_id = task.spec.id.clone();
        let agent_id = agent.id.clone();
        let phase_name = phase.name.clone();
        let stop = CancellationToken::new();
        let limits = RunLimits {
            // Processes run in real time: at a high time scale the scaled step timeout never
            // goes below the idle floor's wall seconds (as hang detection).
            timeout: self.clock.wall(config.raw.agent.step_timeout_secs).max(
                Duration::from_secs_f64(config.raw.recovery.agent_idle_floor_secs),
            ),
            grace: Duration::from_secs_f64(config.raw.agents.stop_grace_secs),
        };
        // The task diff's first snapshot, before the agent can change anything.
        let snapshot_before = self.snapshot_before_run();
        // The run's output starts here (measured before the agent can write).
        let log_offset = std::fs::metadata(&spec.log_path)
            .map(|m| m.len())
            .unwrap_or(0);
        let started = match self
            .prepared
            .agent_backend
            .start(&spec, limits, stop.clone())
        {
            Ok(started) => started,
            Err(err) => {
                // A failed start is an agent crash for the recovery table (restart, up to
                // `[agents].max_task_attempts`), never a silently failed task.
                let message = format!("agent start failed: {err:#}");
                self.settle_failed_run(task_idx, &message);
                if self.board.tasks[task_idx].state == TaskState::Failed {
                    let message = format!("{message} (last of agents.max_task_attempts)");
                    self.failure_without_action(
                        FailureKind::AgentCrash,
                        Some(agent_idx),
                        Some(task_idx),
                        &message,
                        "failed",
                    )?;
                    self.settle_recoveries(task_idx)?;
                } else {
                    self.failure(
                        FailureKind::AgentCrash,
                        Some(agent_idx),
                        Some(task_idx),
                        &message,
                    )?;
                }
                self.sync_task(task_idx)?;
                return Ok(());
            }
        };
        let pid = started.group.id();
        let run_id =
            self.store
                .insert_agent_run(&agent_id, &task_id, attempt, Some(pid), session_secs)?;
        self.sync_task(task_idx)?;
        self.store.set_agent_status(&agent_id, "running")?;
        self.event(
            "agent_started",
            Some(&agent_id),
            Some(&phase_name),
            Some(&task_id),
            serde_json::json!({"pid": pid, "pgid": pid, "attempt": attempt, "run_id": run_id}),
        )?;
        tracing::info!(message = "agent started", agent = %agent_id, task = %task_id, attempt, pid);
        let events = self.events_tx.clone();
        let ended = started.ended;
        tokio::spawn(async move {
            let outcome = ended.await;
            let _ = events
                .send(Event::AgentRunEnded {
                    agent_idx,
                    task_idx,
                    run_id,
                    outcome,
                })
                .await;
        });
        let slot = &mut self.agents[agent_idx];
        slot.runs += 1;
        slot.running = Some(Running {
            log_offset,
            task_idx,
            attempt,
            stop,
            group: started.group,
            ended_by: None,
            oom_kills_at_start: recover::cgroup_oom_kills(),
            done_claimed: false,
            snapshot_before,
        });
        slot.last_activity = Some(now());
        slot.active = Instant::now();
        slot.log_len = std::fs::metadata(slot.dir.join("agent.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(())
    }

    /// A run that did not finish its task: back to the board, or failed after
    /// `[agents].max_task_attempts` runs.
    pub(super) fn settle_failed_run(&mut self, task_idx: usize, message: &str) {
        let max = self.prepared.config.raw.agents.max_task_attempts;
        let now = self.clock.session_secs();
        self.board.settle_failed_run(task_idx, message, max, now);
    }

    pub(super) fn sync_task(&self, task_idx: usize) -> Result<()> {
        let t = &self.board.tasks[task_idx];
        Ok(self.store.update_task(
            &t.spec.id,
            t.state.as_str(),
            t.attempts,
            t.agent_id.as_deref(),
            t.claimed_session_secs,
            t.finished_session_secs,
            t.last_error.as_deref(),
        )?)
    }

    pub(super) fn run_ended(
        &mut self,
        agent_idx: usize,
        task_idx: usize,
        run_id: i64,
        outcome: RunOutcome,
    ) -> Result<()> {
        let session_secs = self.clock.session_secs();
        // Tool calls the run reported in its events file count for its task: read them while
        // the run is still the agent's current one. Nothing here may keep the run from ending.
        if let Err(err) = self.drain_events_file(agent_idx) {
            tracing::error!(message = "cannot count an agent's reported tool calls", agent = %self.agents[agent_idx].id, error = %format!("{err:#}"));
        }
        let (ended_by, oom_kills_at_start, done_claimed, log_offset, attempt, before) =
            match self.agents[agent_idx].running.take() {
                Some(running) => (
                    running.ended_by,
                    running.oom_kills_at_start,
                    running.done_claimed,
                    running.log_offset,
                    running.attempt,
                    running.snapshot_before,
                ),
                None => (None, None, false, 0, 0, None),
            };
        let outcome_word = match (outcome.end, outcome.succeeded()) {
            (_, true) => "finished",
            // Stopped because the agent reported its task done (`POST /api/agent/task_done`).
            (RunEnd::Stopped, _) if done_claimed => "finished",
            (RunEnd::Exited, false) => "exited_nonzero",
            (RunEnd::TimedOut, _) => "step_timeout",
            (RunEnd::Stopped, _) => "stopped",
        };
        self.store.end_agent_run(
            run_id,
            session_secs,
            outcome.exit_code,
            outcome.signal,
            outcome_word,
        )?;
        let agent_id = self.agents[agent_idx].id.clone();
        let task_id = self.board.tasks[task_idx].spec.id.clone();
        let phase = self.prepared.config.phases[self.board.tasks[task_idx].phase_idx]
            .name
            .clone();
        self.store.set_agent_status(&agent_id, "idle")?;
        self.agents[agent_idx].idle_since = Some(session_secs);
        self.trust_stale = true;
        self.event(
            "agent_exited",
            Some(&agent_id),
            Some(&phase),
            Some(&task_id),
            serde_json::json!({"outcome": outcome, "result": outcome_word}),
        )?;
        tracing::info!(message = "agent exited", agent = %agent_id, task = %task_id, result = outcome_word, code = ?outcome.exit_code, signal = ?outcome.signal);
        self.sweep_escapees()?;
        if let Some(before) = before {
            // What the run changed (for its review, before the review opens).
            let concurrent = self.store.overlapping_runs(run_id).unwrap_or(0) as usize;
            self.record_task_diff(agent_idx, task_idx, attempt, before, concurrent)?;
        }
        if self.board.tasks[task_idx].review_of.is_none() {
            // What the run leaves for the next agent on the task (working memory).
            let log = self.agents[agent_idx].dir.join("agent.log");
            if let Some(text) =
                crate::swarm::memory::handoff_summary(&voting::read_from(&log, log_offset))
            {
                self.event(
                    "handoff",
                    Some(&agent_id),
                    Some(&phase),
                    Some(&task_id),
                    serde_json::json!({"text": text, "result": outcome_word}),
                )?;
            }
        }
        let check = match outcome_word {
            "finished" => self.task_check_command(task_idx),
            _ => None,
        };
        match outcome_word {
            // A claim: the task stays running until its check confirms it.
            "finished" if check.is_some() => {
                self.success_seen();
                self.begin_task_check(task_idx, agent_idx, check.unwrap_or_default())?;
            }
            "finished" => {
                let task = &mut self.board.tasks[task_idx];
                task.state = TaskState::Done;
                task.finished_session_secs = Some(session_secs);
                task.last_error = None;
                self.agents[agent_idx].tasks_done += 1;
                self.agents[agent_idx].failures_in_row = 0;
                self.success_seen();
                self.settle_recoveries(task_idx)?;
                if self.board.tasks[task_idx].review_of.is_some() {
                    self.review_finished(task_idx, agent_idx, log_offset)?;
                } else {
                    self.sync_task(task_idx)?;
                    self.open_review(task_idx, agent_idx)?;
                }
            }
            "stopped" if ended_by.is_none() => {
                // Stopped by megatest (phase end, shutdown): not the agent's failure.
                let task = &mut self.board.tasks[task_idx];
                task.state = TaskState::Pending;
                task.last_error = Some("stopped by megatest before it finished".into());
            }
            word => {
                self.run_failed(
                    agent_idx,
                    task_idx,
                    word,
                    &outcome,
                    ended_by,
                    oom_kills_at_start,
                )?;
            }
        }
        // A review task that failed for good can no longer vote: its vote may be decided now.
        if self.board.tasks[task_idx].state == TaskState::Failed {
            self.review_failed(task_idx)?;
        }
        self.sync_task(task_idx)
    }

    /// Stop every running agent and process events until all their runs have ended. A second
    /// signal meanwhile SIGKILLs every group at once.
    pub(super) async fn stop_all_agents(&mut self) {
        for agent in &self.agents {
            if let Some(running) = &agent.running {
                running.stop.cancel();
            }
        }
        self.mode = super::ticks::Mode::Stopping;
        while self.agents.iter().any(|a| a.running.is_some()) {
            let event = self.next_event(None, None).await;
            let ended = match &event {
                Event::AgentRunEnded { agent_idx, .. } => Some(*agent_idx),
                _ => None,
            };
            if let Err(err) = self.handle(event) {
                tracing::error!(message = "event while stopping agents failed", error = %format!("{err:#}"));
            }
            // A run that ended is over even when recording its end failed: waiting for it
            // again would wait for ever.
            if let Some(agent_idx) = ended {
                if let Some(agent) = self.agents.get_mut(agent_idx) {
                    agent.running = None;
                }
            }
        }
        if let Err(err) = self.sweep_escapees() {
            tracing::error!(message = "cannot record killed escapees", error = %format!("{err:#}"));
        }
        // Checks of work finished before the stop are not waited for either.
        if let Err(err) = self.cancel_task_checks() {
            tracing::error!(message = "cannot put unchecked tasks back on the board", error = %format!("{err:#}"));
        }
    }

    /// Start a graceful stop: agents' runs are stopped, the loop ends, the report follows.
    pub(super) fn begin_shutdown(&mut self, signal: ShutdownSignal) -> Result<()> {
        tracing::warn!(message = "stopping gracefully", cause = signal.name());
        self.shutdown = Some(signal);
        self.event(
            "signal",
            None,
            None,
            None,
            serde_json::json!({"signal": signal.name()}),
        )?;
        if self.recovery.pause.is_some() {
            self.unpause("stop")?;
        }
        for agent in &self.agents {
            if let Some(running) = &agent.running {
                running.stop.cancel();
            }
        }
        Ok(())
    }
}

/// The prompt of one task run: project, role, phase objectives, requirements, contract, task.
pub(super) fn compose_prompt(
    spec: &ProjectSpec,
    phase: &crate::config::PhasePlan,
    role: &str,
    task: &TaskSpec,
    attempt: u32,
    last_error: Option<&str>,
) -> String {
    let mut out = format!(
        "# {} — {} phase — task {}\n\nYou are the **{role}** of a team building {}: {}\n\n## Your task: {}\n\n{}\n",
        spec.name, phase.name, task.id, spec.name, spec.description, task.title, task.prompt.trim()
    );
    if attempt > 1 {
        out.push_str(&format!(
            "\nThis is attempt {attempt}. The previous run ended with: {}\n",
            last_error.unwrap_or("unknown")
        ));
    }
    if !phase.objectives.is_empty() {
        out.push_str("\n## Phase objectives\n\n");
        for objective in &phase.objectives {
            out.push_str(&format!("- {objective}\n"));
        }
    }
    let contract = spec.doc("CONTRACT.md");
    if !contract.is_empty() {
        out.push_str(&format!(
            "\n## Interface contract (must hold)\n\n{contract}\n"
        ));
    }
    let requirements = spec.doc("REQUIREMENTS.md");
    if !requirements.is_empty() {
        out.push_str(&format!("\n## Requirements\n\n{requirements}\n"));
    }
    out.push_str(
        "\nWork in the current directory (the project workspace). Finish when your task is done.\n",
    );
    out
}

impl Session {
    /// The `note`, `handoff` or `vote_closed` events still in the working memory (those a
    /// `megatest restore` rolled away left out), oldest first.
    pub(super) fn memory_events(&self, kind: &str) -> Vec<crate::store::EventRow> {
        let rollbacks: Vec<(f64, f64)> = self
            .store
            .events_of_kind("checkpoint_restored")
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let data: serde_json::Value = serde_json::from_str(&e.data).ok()?;
                Some((data["checkpoint_session_secs"].as_f64()?, e.session_secs))
            })
            .collect();
        let mut rows = self.store.events_of_kind(kind).unwrap_or_default();
        rows.retain(|e| !crate::swarm::memory::rolled_back(e.session_secs, &rollbacks));
        rows
    }

    /// The working memory for the agent that takes task `task_id`
    /// ([`crate::swarm::memory::prompt_section`]); empty when there is none or `session.db`
    /// cannot be read.
    pub(super) fn memory_for(&self, task_id: &str) -> String {
        let items = |kind: &str| -> Vec<crate::swarm::memory::Item> {
            self.memory_events(kind)
                .iter()
                .map(crate::checkpoint::document::memory_item)
                .collect()
        };
        crate::swarm::memory::prompt_section(
            task_id,
            &items("note"),
            &items("handoff"),
            &items("vote_closed"),
        )
    }

    /// The newest handoff summary of task `task_id`, if any.
    pub(super) fn last_handoff(&self, task_id: &str) -> Option<String> {
        self.memory_events("handoff")
            .iter()
            .rev()
            .find(|e| e.task_id.as_deref() == Some(task_id))
            .map(|e| crate::checkpoint::document::memory_item(e).text)
    }
}

impl Session {
    /// `spec` run inside the agents' sandbox ([`crate::backend::sandbox`]). The built-in
    /// agent runs the daemon's binary by path (see `sandbox_executable`). The agent's `HOME` is
    /// `agents/<id>/home` with its own `CARGO_HOME`, its `TMPDIR` `agents/<id>/tmp`; rustup's
    /// toolchains stay usable read-only (`RUSTUP_HOME`). Hidden: the session's other files, the
    /// project's spec directory and, when it sits among megatest's specs (`…/projects/`), all
    /// of them.
    fn sandboxed(&self, mut spec: LaunchSpec, agent_idx: usize) -> LaunchSpec {
        use crate::backend::sandbox;
        let agent = &self.agents[agent_idx];
        // Inside bubblewrap /proc/self/exe would name bubblewrap: the binary's path instead.
        if spec.program == Path::new(SELF_EXE) {
            if let Some(exe) = self.sandbox_executable() {
                spec.program = exe;
            }
        }
        let spec_dir = self.prepared.config.spec_dir.clone();
        let mut hidden = vec![spec_dir.clone()];
        if let Some(projects) = spec_dir
            .parent()
            .filter(|p| p.file_name().is_some_and(|n| n == "projects"))
        {
            hidden = vec![projects.to_path_buf()];
        }
        let plan = sandbox::SandboxPlan {
            session_dir: self.dir().to_path_buf(),
            workspace: self.workspace.clone(),
            agent_dir: agent.dir.clone(),
            bin_dir: self.agent_bin_dir(),
            hidden,
        };
        let home = sandbox::home_of(&plan);
        for own in [&home, &sandbox::tmp_of(&plan)] {
            if let Err(err) = std::fs::create_dir_all(own) {
                tracing::warn!(message = "cannot create the agent's home or tmp", path = %own.display(), error = %err);
            }
        }
        let rustup_home = std::env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
            .filter(|p| p.is_dir());
        let mut wrapped = sandbox::wrap(&spec, &plan);
        wrapped
            .env
            .retain(|(name, _)| name != "CARGO_HOME" && name != "RUSTUP_HOME");
        wrapped.env.push((
            "CARGO_HOME".into(),
            home.join(".cargo").to_string_lossy().into_owned(),
        ));
        if let Some(rustup_home) = rustup_home {
            wrapped.env.push((
                "RUSTUP_HOME".into(),
                rustup_home.to_string_lossy().into_owned(),
            ));
        }
        wrapped
    }

    /// The path the built-in agent runs from inside the sandbox: the daemon's binary where it
    /// still is on disk; once it was rebuilt or replaced (`/proc/self/exe` names a deleted
    /// file), a copy of the running binary in `<session>/bin/` (made once, read from
    /// `/proc/self/exe`, which still opens the original). None (logged) when neither works.
    fn sandbox_executable(&self) -> Option<PathBuf> {
        let exe = std::fs::read_link(SELF_EXE).ok()?;
        let deleted = exe.to_string_lossy().ends_with(" (deleted)");
        if !deleted && exe.is_file() {
            return Some(exe);
        }
        let copy = self.agent_bin_dir()?.join(".megatest-exe");
        if !copy.is_file() {
            let partial = copy.with_extension("partial");
            let made =
                std::fs::copy(SELF_EXE, &partial).and_then(|_| std::fs::rename(&partial, &copy));
            if let Err(err) = made {
                tracing::warn!(message = "cannot copy the running binary for sandboxed agents", error = %err);
                return None;
            }
        }
        Some(copy)
    }

    /// `<session>/bin`, holding a `megatest` link to the running binary (made on first use);
    /// None (logged) when it cannot be made.
    fn agent_bin_dir(&self) -> Option<PathBuf> {
        let bin = self.dir().join("bin");
        let link = bin.join("megatest");
        if link.exists() {
            return Some(bin);
        }
        let made = std::env::current_exe().and_then(|exe| {
            std::fs::create_dir_all(&bin)?;
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(exe, &link)
        });
        match made {
            Ok(()) => Some(bin),
            Err(err) => {
                tracing::warn!(message = "cannot put megatest on the agents' PATH", error = %err);
                None
            }
        }
    }
}
