//! Rolling a session back to a checkpoint (`megatest restore`, and the `restore_checkpoint`
//! recovery action): verify, keep the current state as a `before_restore` checkpoint, restore
//! the workspace exactly, roll the task board and phases back. The ledger, events and budgets
//! are append-only and stay. Returns a typed [`Rollback`]; printing is the caller's.

use super::document::{AgentState, FileSystemState, Parts};
use super::error::{Result, Step};
use super::{inspect, snapshot, CheckpointDocument, Checkpointer};
use crate::store::Store;
use std::path::Path;

/// What [`roll_back`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Rollback {
    /// The workspace and board are at checkpoint `used` now.
    Restored {
        /// The checkpoint asked for.
        requested: u32,
        /// The checkpoint used.
        used: u32,
        /// Why `requested` was not used (its verification problems), when `used` differs.
        requested_invalid: Option<String>,
        /// The checkpoint that keeps the state rolled away (trigger `before_restore`).
        before: u32,
        /// Files written back.
        files_written: u64,
        /// Files removed (not in the checkpoint).
        files_removed: u64,
    },
    /// There is no checkpoint `requested`.
    NoSuchCheckpoint {
        /// The checkpoint asked for.
        requested: u32,
    },
    /// `requested` does not verify and no valid one precedes it.
    NoValidCheckpoint {
        /// The checkpoint asked for.
        requested: u32,
        /// Why it does not verify.
        problems: String,
    },
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rollback::Restored {
                requested,
                used,
                requested_invalid,
                before,
                files_written,
                files_removed,
            } => {
                if let Some(problems) = requested_invalid {
                    writeln!(f, "checkpoint {requested} is invalid: {problems}")?;
                    writeln!(f, "using checkpoint {used} instead, the previous valid one")?;
                }
                writeln!(
                    f,
                    "current state kept as checkpoint {before} (trigger before_restore)"
                )?;
                write!(f, "workspace and task board rolled back to checkpoint {used} ({files_written} files written, {files_removed} removed)")
            }
            Rollback::NoSuchCheckpoint { requested } => {
                write!(f, "no checkpoint {requested}")
            }
            Rollback::NoValidCheckpoint {
                requested,
                problems,
            } => write!(
                f,
                "checkpoint {requested} is invalid ({problems}) and no valid checkpoint precedes it"
            ),
        }
    }
}

impl Rollback {
    /// The checkpoint the session is at now, if the rollback happened.
    pub fn used(&self) -> Option<u32> {
        match self {
            Rollback::Restored { used, .. } => Some(*used),
            _ => None,
        }
    }
}

/// Write the workspace (`project/`) of the session in `dir` from its newest checkpoint that
/// verifies, as a session copied from elsewhere (`megatest resume s3://…`) arrives without
/// one. Returns (checkpoint sequence, files written), None when no checkpoint verifies.
///
/// Errors: the checkpoint store or the workspace cannot be read or written.
pub fn restore_workspace(dir: &Path) -> Result<Option<(u32, u64)>> {
    let checkpoints_dir = dir.join("checkpoints");
    let infos = inspect(&checkpoints_dir, true)?;
    let Some(chosen) = infos.iter().rev().find(|i| i.problems.is_empty()) else {
        return Ok(None);
    };
    let document: CheckpointDocument = serde_json::from_slice(&std::fs::read(&chosen.path)?)
        .step(|| format!("read {}", chosen.path.display()))?;
    let objects = snapshot::ObjectStore::open(&checkpoints_dir.join("objects"))?;
    let project = dir.join("project");
    std::fs::create_dir_all(&project).step(|| format!("create {}", project.display()))?;
    let restored = snapshot::restore(&project, &objects, &document.file_system_state.manifest)?;
    Ok(Some((chosen.sequence, restored.written)))
}

/// Roll the session in `dir` back to checkpoint `wanted` (or, if it does not verify, the
/// previous valid one) and mark the session interrupted (resumable). The caller makes sure no
/// daemon runs the session meanwhile.
///
/// Errors: the checkpoint store, the workspace or `session.db` cannot be read or written.
pub fn roll_back(dir: &Path, wanted: u32) -> Result<Rollback> {
    let checkpoints_dir = dir.join("checkpoints");
    let infos = inspect(&checkpoints_dir, true)?;
    let Some(target) = infos.iter().find(|i| i.sequence == wanted) else {
        return Ok(Rollback::NoSuchCheckpoint { requested: wanted });
    };
    let (chosen, requested_invalid) = if target.problems.is_empty() {
        (target, None)
    } else {
        let problems = target.problems.join("; ");
        match infos
            .iter()
            .rev()
            .find(|i| i.sequence < wanted && i.problems.is_empty())
        {
            Some(previous) => (previous, Some(problems)),
            None => {
                return Ok(Rollback::NoValidCheckpoint {
                    requested: wanted,
                    problems,
                })
            }
        }
    };
    let used = chosen.sequence;
    // Keep what is being rolled away: a checkpoint of the current state first.
    let before = checkpoint_before_rollback(dir)?;
    let document: CheckpointDocument = serde_json::from_slice(&std::fs::read(&chosen.path)?)
        .step(|| format!("read {}", chosen.path.display()))?;
    let objects = snapshot::ObjectStore::open(&checkpoints_dir.join("objects"))?;
    let restored = snapshot::restore(
        &dir.join("project"),
        &objects,
        &document.file_system_state.manifest,
    )?;
    let mut db = Store::open(&dir.join("session.db"))?;
    let now_secs = db.last_session_secs()?;
    db.rollback_to_checkpoint(
        &document.task_board,
        document.phase.as_deref(),
        document.session_secs,
        document.at_phase_end(),
        now_secs,
    )?;
    let data = serde_json::json!({
        "sequence": used,
        "checkpoint_before": before,
        "requested": wanted,
        "checkpoint_trigger": document.trigger,
        "checkpoint_session_secs": document.session_secs,
        "files_written": restored.written,
        "files_removed": restored.removed,
        "not_restorable": restored.not_restorable,
    });
    db.append_event(
        &chrono::Utc::now().to_rfc3339(),
        now_secs,
        "checkpoint_restored",
        None,
        document.phase.as_deref(),
        None,
        &data,
    )?;
    db.mark_interrupted()?;
    drop(db);
    crate::fsutil::write_atomic(&dir.join("status"), b"interrupted\n")?;
    Ok(Rollback::Restored {
        requested: wanted,
        used,
        requested_invalid,
        before,
        files_written: restored.written,
        files_removed: restored.removed,
    })
}

/// Snapshot the workspace and write a checkpoint (trigger `before_restore`) of the state as
/// `session.db` has it: task board, budgets, agents, phase. Returns its sequence.
fn checkpoint_before_rollback(dir: &Path) -> Result<u32> {
    let db = Store::open(&dir.join("session.db"))?;
    let mut checkpointer = Checkpointer::open(&dir.join("checkpoints"))?;
    let (manifest, stats) = checkpointer.snapshot(&dir.join("project"))?;
    let notes = db.events_of_kind("note")?;
    let handoffs = db.events_of_kind("handoff")?;
    let decisions = db.events_of_kind("vote_closed")?;
    let agents = db
        .agents()?
        .into_iter()
        .map(|a| AgentState::stopped(&a.id, &a.role))
        .collect();
    let session_id = db.session_origin()?.id;
    let document = CheckpointDocument::build(Parts {
        session_id: &session_id,
        trigger: "before_restore",
        phase: db.open_phase_name()?,
        session_secs: db.last_session_secs()?,
        wall_secs: None,
        agents,
        notes: &notes,
        handoffs: &handoffs,
        decisions: &decisions,
        file_system_state: FileSystemState::of(&manifest, &stats, true, 0.0),
        test_results: Vec::new(),
        metrics: None,
        git_commit: None,
        task_board: db.tasks()?.into_iter().map(Into::into).collect(),
        budgets: db.budget_state()?.unwrap_or_default(),
    });
    Ok(checkpointer.write_recorded(&db, &document)?.seq)
}
