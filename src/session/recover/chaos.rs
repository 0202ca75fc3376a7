//! `[chaos]` fault injection: timed `[[chaos.events]]` (kill, hang, fill the disk, corrupt a
//! checkpoint), fired once each, loud in the report.

use super::*;

impl Session {
    /// Fire the `[[chaos.events]]` that are due, release a `fill_disk` filler whose hold ended.
    pub(in crate::session) fn chaos(&mut self, now: f64) -> Result<()> {
        if let Some((path, release_at)) = &self.recovery.chaos_fill {
            if now >= *release_at {
                let _ = std::fs::remove_file(path);
                self.event(
                    "chaos",
                    None,
                    None,
                    None,
                    serde_json::json!({"fault": "fill_disk", "released": path}),
                )?;
                self.recovery.chaos_fill = None;
            }
        }
        let chaos = &self.prepared.config.raw.chaos;
        if !chaos.enabled {
            return Ok(());
        }
        let due: Vec<usize> = chaos
            .events
            .iter()
            .enumerate()
            .filter(|(i, e)| !self.recovery.chaos_fired[*i] && e.at_minutes * 60.0 <= now)
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let event = self.prepared.config.raw.chaos.events[i].clone();
            let target = match &event.agent {
                Some(id) => self
                    .agents
                    .iter()
                    .position(|a| &a.id == id && a.running.is_some()),
                None => self
                    .agents
                    .iter()
                    .position(|a| a.running.as_ref().is_some_and(|r| r.ended_by.is_none())),
            };
            let fault = serde_json::to_value(event.fault)?;
            let data = match event.fault {
                ChaosFault::KillAgent | ChaosFault::HangAgent => {
                    // An agent fault waits until its agent is running.
                    let Some(agent_idx) = target else { continue };
                    let Some(group) = self.agents[agent_idx]
                        .running
                        .as_ref()
                        .map(|r| r.group.clone())
                    else {
                        continue;
                    };
                    let pgid = group.id();
                    let signal = if event.fault == ChaosFault::KillAgent {
                        group.kill();
                        "SIGKILL"
                    } else {
                        group.freeze();
                        // A run that was already exiting cannot hang: the fault waits for the
                        // next running agent (up to 100 ms for the stop to show).
                        let mut frozen = group.is_frozen();
                        for _ in 0..20 {
                            if frozen {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(5));
                            frozen = group.is_frozen();
                        }
                        if !frozen {
                            continue;
                        }
                        "SIGSTOP"
                    };
                    serde_json::json!({"fault": fault, "agent_id": self.agents[agent_idx].id, "pgid": pgid, "signal": signal})
                }
                ChaosFault::FillDisk => {
                    let path = self.dir().join("chaos_fill");
                    let (min, _) = disk_limits(&self.prepared.config, self.dir());
                    let free = free_bytes(self.dir()).unwrap_or(0);
                    let want = free.saturating_sub(min / 2);
                    if want > CHAOS_FILL_CAP_BYTES {
                        serde_json::json!({"fault": fault, "skipped": format!("filling {want} bytes is over the {CHAOS_FILL_CAP_BYTES}-byte cap")})
                    } else {
                        let written = fill(&path, want);
                        let hold = event.hold_minutes.unwrap_or(1.0) * 60.0;
                        self.recovery.chaos_fill = Some((path.clone(), now + hold));
                        serde_json::json!({"fault": fault, "path": path, "bytes": written, "hold_session_secs": hold})
                    }
                }
                ChaosFault::CorruptCheckpoint => {
                    match self.store.last_checkpoint()?.map(|c| c.path) {
                        Some(path) => {
                            let path = self.dir().join(path);
                            let mut bytes = std::fs::read(&path).unwrap_or_default();
                            let mid = bytes.len() / 2;
                            if let Some(b) = bytes.get_mut(mid) {
                                *b ^= 0x5a;
                            }
                            let _ = std::fs::write(&path, &bytes);
                            serde_json::json!({"fault": fault, "path": path})
                        }
                        None => continue,
                    }
                }
            };
            self.recovery.chaos_fired[i] = true;
            let mut data = data;
            data["index"] = serde_json::json!(i);
            tracing::warn!(message = "chaos", detail = %data);
            self.event("chaos", None, None, None, data)?;
        }
        Ok(())
    }

    /// A reopened session: `[[chaos.events]]` that fired before do not fire again.
    pub(in crate::session) fn chaos_fired_before(&mut self) -> Result<()> {
        let fired: Vec<Option<i64>> = self
            .store
            .events_of_kind("chaos")?
            .iter()
            .map(|row| {
                serde_json::from_str::<serde_json::Value>(&row.data)
                    .ok()
                    .and_then(|d| d["index"].as_i64())
            })
            .collect();
        for i in fired.into_iter().flatten() {
            if let Some(slot) = self.recovery.chaos_fired.get_mut(i as usize) {
                *slot = true;
            }
        }
        Ok(())
    }
}

/// Write zeros to `path` until `want` bytes or the first error (ENOSPC); returns bytes written.
pub(in crate::session) fn fill(path: &std::path::Path, want: u64) -> u64 {
    use std::io::Write;
    let Ok(mut file) = std::fs::File::create(path) else {
        return 0;
    };
    // Allocating the blocks takes milliseconds (the watchdog runs on the session task); a
    // filesystem without fallocate gets them written.
    if nix::fcntl::posix_fallocate(&file, 0, want as i64).is_ok() {
        return want;
    }
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < want {
        let n = (want - written).min(chunk.len() as u64) as usize;
        match file.write(&chunk[..n]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = file.sync_all();
    written
}
