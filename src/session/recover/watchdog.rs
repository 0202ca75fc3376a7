//! The watchdog tick: agents' escaped processes, idle agents, free disk space, escalation
//! deadlines, chaos events, a paused session's cause; memory pressure on the metrics tick.

use super::*;

impl Session {
    /// Kill the processes that left their agent's process group while the agent has no run
    /// going (all of them once no agent runs): an `escapee_killed` event each.
    pub(in crate::session) fn sweep_escapees(&mut self) -> Result<()> {
        let busy: std::collections::HashSet<String> = self
            .agents
            .iter()
            .filter(|a| a.running.is_some())
            .map(|a| a.id.clone())
            .collect();
        for escapee in self.prepared.agent_backend.sweep_escapees(&busy) {
            tracing::warn!(message = "killed a process that left its agent's process group", pid = escapee.pid, agent = ?escapee.agent, command = %escapee.command);
            self.event(
                "escapee_killed",
                escapee.agent.as_deref(),
                None,
                None,
                serde_json::to_value(&escapee)?,
            )?;
        }
        Ok(())
    }

    /// Periodic checks: idle agents, the disk, escalation deadlines, `[chaos]` events, and
    /// whether a paused session can continue.
    pub(in crate::session) fn watchdog(&mut self) -> Result<()> {
        self.sweep_escapees()?;
        let now = self.clock.session_secs();
        self.chaos(now)?;
        // A paused session: continue once the cause is gone.
        if let Some(pause) = self.recovery.pause.as_mut() {
            pause.checks += 1;
            if let Some(kind) = pause.kind {
                if self.pause_cause_gone(kind) {
                    self.unpause("cause gone")?;
                }
            }
            return Ok(());
        }
        // Disk: free space on the runs filesystem.
        let (min, _) = disk_limits(&self.prepared.config, self.dir());
        if let Some(free) = free_bytes(self.dir()) {
            if free < min {
                let message = format!(
                    "{free} bytes free on the filesystem of {}, under {min} bytes (recovery.min_free_disk_mb, at most 10 % of the filesystem)",
                    self.dir().display(),
                );
                return self.failure(FailureKind::DiskFull, None, None, &message);
            }
        }
        // Escalations past their deadline.
        let due: Vec<usize> = self
            .recovery
            .escalations
            .iter()
            .enumerate()
            .filter(|(_, e)| e.deadline_session_secs <= now)
            .map(|(i, _)| i)
            .collect();
        for i in due.into_iter().rev() {
            let escalation = self.recovery.escalations.remove(i);
            self.resolve(escalation.recovery_id, "escalated", 1)?;
            let default = self.prepared.config.raw.recovery.escalation_default;
            self.event(
                "escalation_timeout",
                None,
                None,
                None,
                serde_json::json!({"recovery_id": escalation.recovery_id, "applied": action_str(default)}),
            )?;
            self.release_escalated(escalation.kind, escalation.task_idx)?;
            if default == RecoveryAction::StopSession {
                self.recovery.stop = Some(format!(
                    "no operator decision within recovery.escalation_timeout_minutes for recovery {}: escalation_default = stop_session",
                    escalation.recovery_id
                ));
            } else if self.recovery.escalations.is_empty() {
                self.set_status_file("running");
            }
        }
        // Idle agents.
        let idle_limit = idle_limit(&self.prepared.config);
        let workspace_changed = self.recovery.workspace_changed_ms.load(Ordering::Relaxed);
        let running_count = self.agents.iter().filter(|a| a.running.is_some()).count();
        let mut hung = Vec::new();
        for (agent_idx, agent) in self.agents.iter_mut().enumerate() {
            let Some(running) = agent.running.as_ref() else {
                continue;
            };
            if running.ended_by.is_some() {
                continue;
            }
            if agent.calls_in_flight > 0 {
                agent.active = Instant::now();
                continue;
            }
            let log_len = std::fs::metadata(agent.dir.join("agent.log"))
                .map(|m| m.len())
                .unwrap_or(0);
            if log_len != agent.log_len {
                agent.log_len = log_len;
                agent.active = Instant::now();
            }
            // A workspace change is this agent's only when it is the only one running.
            if running_count == 1 {
                let since = unix_ms().saturating_sub(workspace_changed);
                if let Some(at) = Instant::now().checked_sub(Duration::from_millis(since)) {
                    if at > agent.active {
                        agent.active = at;
                    }
                }
            }
            if agent.active.elapsed() > idle_limit {
                hung.push((agent_idx, running.task_idx));
            }
        }
        for (agent_idx, task_idx) in hung {
            let message = format!(
                "no model call, tool call, output or workspace change for {:.0} session s (recovery.agent_idle_minutes = {})",
                self.agents[agent_idx].active.elapsed().as_secs_f64() * self.prepared.config.time_scale,
                self.prepared.config.raw.recovery.agent_idle_minutes
            );
            self.failure(
                FailureKind::AgentHang,
                Some(agent_idx),
                Some(task_idx),
                &message,
            )?;
        }
        Ok(())
    }

    /// A write failed with a full disk (ENOSPC / SQLITE_FULL) somewhere in the session.
    pub(in crate::session) fn disk_full_error(&mut self, err: &anyhow::Error) -> Result<()> {
        let message = format!("write failed: {err:#}");
        // Make room for the error event first.
        if let Some(reserve) = self.recovery.reserve.take() {
            let _ = std::fs::remove_file(&reserve);
        }
        if self.recovery.pause.is_some() {
            return Ok(());
        }
        self.failure(FailureKind::DiskFull, None, None, &message)
    }

    /// Memory pressure (sysinfo): available memory under `[recovery].min_available_memory_mb`
    /// is `out_of_memory` for the running agent with the largest process tree (its resident
    /// memory summed over the leader and its descendants). Reported once until it clears.
    pub(in crate::session) fn check_memory(&mut self) -> Result<()> {
        let min = self.prepared.config.raw.recovery.min_available_memory_mb << 20;
        self.recovery.system.refresh_memory();
        let available = self.recovery.system.available_memory();
        if available >= min {
            self.recovery.memory_pressure = false;
            return Ok(());
        }
        if self.recovery.memory_pressure || self.recovery.pause.is_some() {
            return Ok(());
        }
        let system = &mut self.recovery.system;
        system.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
        let tree_memory = |leader: u32| crate::metrics::tree_memory(system, leader);
        let biggest = self
            .agents
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                a.running
                    .as_ref()
                    .filter(|r| r.ended_by.is_none())
                    .map(|r| (i, r.task_idx, tree_memory(r.group.id())))
            })
            .max_by_key(|(_, _, bytes)| *bytes);
        let Some((agent_idx, task_idx, bytes)) = biggest else {
            return Ok(());
        };
        self.recovery.memory_pressure = true;
        let message = format!(
            "memory pressure: {} MiB available, under recovery.min_available_memory_mb ({} MiB); {} uses {} MiB",
            available >> 20,
            min >> 20,
            self.agents[agent_idx].id,
            bytes >> 20
        );
        self.failure(
            FailureKind::OutOfMemory,
            Some(agent_idx),
            Some(task_idx),
            &message,
        )
    }

    /// Whether the cause of the pause is gone.
    pub(in crate::session) fn pause_cause_gone(&self, kind: FailureKind) -> bool {
        match kind {
            FailureKind::DiskFull => {
                let (min, reserve) = disk_limits(&self.prepared.config, self.dir());
                free_bytes(self.dir()).is_some_and(|free| free >= min + reserve)
            }
            FailureKind::PermissionDenied => {
                let probe = self.workspace.join(".megatest_write_probe");
                let ok = std::fs::write(&probe, b"probe").is_ok();
                let _ = std::fs::remove_file(&probe);
                ok
            }
            // Other pauses (max_consecutive_errors, manual rules) last one backoff interval.
            _ => self.recovery.pause.as_ref().is_some_and(|p| {
                self.clock.session_secs() - p.since_session_secs
                    >= self.recovery.table().backoff.session_secs(0)
            }),
        }
    }
}
