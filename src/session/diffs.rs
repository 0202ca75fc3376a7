//! Per-task diffs: a task snapshot of the workspace ([`crate::checkpoint::snapshot::capture`],
//! the checkpoints' object store and a stat cache of its own) just before an agent's run starts
//! and just after it ends; the files that differ ([`crate::checkpoint::diff`]) become a
//! `task_diff` event and `agents/<id>/diffs/<task>.<attempt>.diff`, which the task's review
//! prompt names. Both snapshots run on the session task and re-examine only the paths the
//! workspace watch saw change ([`crate::checkpoint::watch`]; measured: `before_ms`, `after_ms`;
//! `scripts/bench_checkpoint.sh` reports the cost on a 10,000-file tree). A snapshot that fails
//! (a file vanishing mid-walk) costs the diff, never the run.
//!
//! Blame: when a check (build, test) measured by the session changes from passed to failed, the
//! authors of the runs whose diffs changed files since its previous measurement broke it; from
//! failed to passed, they fixed it (a `check_blame` event; trust counts both, see
//! [`crate::swarm::trust`]). Review runs are not authors.

use super::*;
use crate::checkpoint::diff::{self, ChangeKind};
use crate::checkpoint::snapshot::{capture, Manifest, ObjectStore, StatCache};
use crate::checkpoint::watch::WorkspaceWatch;
use std::collections::BTreeMap;

/// Changed paths a `task_diff` event lists at most (the diff file has them all).
pub const EVENT_PATHS: usize = 200;

/// The task snapshots' store and stat cache.
pub(super) struct TaskSnapshots {
    store: ObjectStore,
    cache: StatCache,
}

impl TaskSnapshots {
    /// Task snapshots into `store` (the checkpoints' object store), re-examining what `watch`
    /// saw change.
    pub(super) fn new(store: ObjectStore, watch: Arc<WorkspaceWatch>) -> TaskSnapshots {
        TaskSnapshots {
            store,
            cache: StatCache::watching(watch),
        }
    }

    /// Forget the stat cache (the store was pruned: it may vouch for removed objects).
    pub(super) fn forget(&mut self) {
        self.cache.forget();
    }
}

/// A run's first task snapshot.
pub(super) struct Before {
    manifest: Manifest,
    millis: f64,
}

impl Session {
    /// Snapshot the workspace for a run about to start (None, logged, when it fails).
    pub(super) fn snapshot_before_run(&mut self) -> Option<Before> {
        let started = Instant::now();
        let snapshots = &mut self.task_snapshots;
        match capture(
            &self.workspace,
            &snapshots.store,
            &mut snapshots.cache,
            crate::checkpoint::DEFAULT_SIZE_CAP,
        ) {
            Ok((manifest, _)) => Some(Before {
                manifest,
                millis: started.elapsed().as_secs_f64() * 1000.0,
            }),
            Err(err) => {
                tracing::warn!(message = "task snapshot failed: no diff for this run", error = %err);
                None
            }
        }
    }

    /// The run of `task_idx` by `agent_idx` (attempt `attempt`) ended: snapshot again, record
    /// what changed (`task_diff` event) and write the diff file.
    pub(super) fn record_task_diff(
        &mut self,
        agent_idx: usize,
        task_idx: usize,
        attempt: u32,
        before: Before,
        concurrent_runs: usize,
    ) -> Result<()> {
        let started = Instant::now();
        let snapshots = &mut self.task_snapshots;
        let after = match capture(
            &self.workspace,
            &snapshots.store,
            &mut snapshots.cache,
            crate::checkpoint::DEFAULT_SIZE_CAP,
        ) {
            Ok((manifest, _)) => manifest,
            Err(err) => {
                tracing::warn!(message = "task snapshot failed: no diff for this run", error = %err);
                return Ok(());
            }
        };
        let after_ms = started.elapsed().as_secs_f64() * 1000.0;
        let changes = diff::changes(&before.manifest, &after);
        let text = diff::render(&before.manifest, &after, &changes, &snapshots.store);
        let agent = &self.agents[agent_idx];
        let task_id = self.board.tasks[task_idx].spec.id.clone();
        let path = agent
            .dir
            .join("diffs")
            .join(format!("{task_id}.{attempt}.diff"));
        let written = std::fs::create_dir_all(agent.dir.join("diffs"))
            .and_then(|()| std::fs::write(&path, &text));
        if let Err(err) = &written {
            tracing::warn!(message = "cannot write a task diff", path = %path.display(), error = %err);
        }
        let count = |kind: ChangeKind| changes.iter().filter(|c| c.change == kind).count();
        let agent_id = agent.id.clone();
        let phase = self.prepared.config.phases[self.board.tasks[task_idx].phase_idx]
            .name
            .clone();
        self.event(
            "task_diff",
            Some(&agent_id),
            Some(&phase),
            Some(&task_id),
            serde_json::json!({
                "attempt": attempt,
                "added": count(ChangeKind::Added),
                "modified": count(ChangeKind::Modified),
                "removed": count(ChangeKind::Removed),
                "files": changes.iter().take(EVENT_PATHS).map(|c| &c.path).collect::<Vec<_>>(),
                "diff_path": written.is_ok().then(|| path.display().to_string()),
                "diff_bytes": text.len(),
                "concurrent_runs": concurrent_runs,
                "before_ms": before.millis,
                "after_ms": after_ms,
            }),
        )?;
        Ok(())
    }

    /// For the review prompt of `task_id`: where the diff of its last run is and what it
    /// changed (None when no diff was recorded).
    pub(super) fn diff_note(&self, task_id: &str) -> Option<String> {
        let event = self
            .store
            .events_of_kind("task_diff")
            .ok()?
            .into_iter()
            .rev()
            .find(|e| e.task_id.as_deref() == Some(task_id))?;
        let data: serde_json::Value = serde_json::from_str(&event.data).ok()?;
        let files: Vec<&str> = data["files"]
            .as_array()
            .map(|f| f.iter().filter_map(|p| p.as_str()).take(20).collect())
            .unwrap_or_default();
        let (added, modified, removed) = (
            data["added"].as_u64().unwrap_or(0),
            data["modified"].as_u64().unwrap_or(0),
            data["removed"].as_u64().unwrap_or(0),
        );
        let mut note = format!(
            "What changed in the workspace while the author's run ran: {added} added, {modified} modified, {removed} removed ({}).",
            if files.is_empty() { "no files".to_string() } else { files.join(", ") }
        );
        if let Some(path) = data["diff_path"].as_str() {
            note.push_str(&format!(" The unified diff: {path}"));
        }
        if data["concurrent_runs"].as_u64().unwrap_or(0) > 0 {
            note.push_str(" (other agents worked at the same time: some changes may be theirs)");
        }
        Some(note)
    }
}

/// The last result of each check the session measured, and the newest event (`seq`) then.
#[derive(Default)]
pub(super) struct CheckHistory {
    last: BTreeMap<String, (bool, i64)>,
}

impl Session {
    /// The session measured `rows` (phase checks or a gate's measurement): blame the authors of
    /// the changes since each check's previous measurement when its result flipped.
    pub(super) fn blame_checks(&mut self, rows: &[CheckRow]) -> Result<()> {
        let diffs = self.store.events_of_kind("task_diff")?;
        let newest = self.store.last_event_seq()?;
        for row in rows {
            let previous = self.check_history.last.get(&row.name).copied();
            self.check_history
                .last
                .insert(row.name.clone(), (row.passed, newest));
            let Some((was_passed, since)) = previous else {
                continue;
            };
            let transition = match (was_passed, row.passed) {
                (true, false) => "broken",
                (false, true) => "fixed",
                _ => continue,
            };
            let mut agents: Vec<String> = diffs
                .iter()
                .filter(|e| e.id > since)
                .filter(|e| {
                    e.task_id
                        .as_deref()
                        .is_some_and(|t| !crate::swarm::review::is_review(t))
                })
                .filter(|e| {
                    serde_json::from_str::<serde_json::Value>(&e.data).is_ok_and(|d| {
                        ["added", "modified", "removed"]
                            .iter()
                            .any(|k| d[k].as_u64().unwrap_or(0) > 0)
                    })
                })
                .filter_map(|e| e.agent_id.clone())
                .collect();
            agents.sort();
            agents.dedup();
            if agents.is_empty() {
                continue;
            }
            tracing::info!(message = "check blame", check = %row.name, transition, agents = ?agents);
            self.event(
                "check_blame",
                None,
                Some(&row.phase),
                None,
                serde_json::json!({"check": row.name, "transition": transition, "agents": agents}),
            )?;
            self.trust_stale = true;
        }
        Ok(())
    }
}
