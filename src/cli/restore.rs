//! `megatest restore SESSION --checkpoint N|PATH [--no-resume]`: roll the workspace and the task
//! board back to a checkpoint, then continue the session from there (as `megatest resume`).
//!
//! Non-destructive: later checkpoints stay, the ledger stays (tokens spent after the checkpoint
//! remain spent and counted), and the rollback is an event the report lists. The checkpoint is
//! verified first; a corrupt or truncated one is reported and the previous valid one is used.
//! The phase the checkpoint was taken in gets back the time box it had left then.

use crate::checkpoint::{self, snapshot};
use crate::cli::checkpoints::find_session;
use crate::store::Store;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Session id (under --runs-dir) or path of a session directory
    pub session: String,
    /// Checkpoint sequence number, or path of a checkpoint_NNN.json
    #[arg(long)]
    pub checkpoint: String,
    /// Only roll back; leave the session interrupted instead of continuing it
    #[arg(long)]
    pub no_resume: bool,
    /// Directory holding session directories
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<i32> {
    let Some(dir) = find_session(&args.session, &args.runs_dir) else {
        return Ok(2);
    };
    let wanted: u32 = match args.checkpoint.parse() {
        Ok(seq) => seq,
        Err(_) => PathBuf::from(&args.checkpoint)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.strip_prefix("checkpoint_")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .with_context(|| {
                format!(
                    "{:?} is neither a sequence number nor a checkpoint_NNN.json path",
                    args.checkpoint
                )
            })?,
    };
    {
        let store = Store::open(&dir.join("session.db"))?;
        if let Some(pid) = store
            .session_origin()?
            .daemon_pid
            .filter(|pid| crate::cli::resume::daemon_alive(*pid))
        {
            eprintln!(
                "megatest: the session is running (megatest pid {pid}); stop it before restoring"
            );
            return Ok(2);
        }
    }
    if roll_back(&dir, wanted)?.is_none() {
        return Ok(2);
    }
    if args.no_resume {
        return Ok(0);
    }
    crate::cli::resume::run(crate::cli::resume::ResumeArgs {
        session: dir.display().to_string(),
        runs_dir: args.runs_dir,
    })
}

/// Roll the session in `dir` back to checkpoint `wanted` (or, if it does not verify, the
/// previous valid one): keep the current state as a `before_restore` checkpoint, restore the
/// workspace, roll back the task board and phases, record `checkpoint_restored`, and mark the
/// session interrupted (resumable). Returns the sequence used; None (explained on stderr) when
/// there is no valid checkpoint to use. The caller makes sure no other daemon runs the session.
pub fn roll_back(dir: &std::path::Path, wanted: u32) -> anyhow::Result<Option<u32>> {
    let dir = dir.to_path_buf();
    let checkpoints_dir = dir.join("checkpoints");
    let infos = checkpoint::inspect(&checkpoints_dir, true)?;
    let Some(target) = infos.iter().find(|i| i.sequence == wanted) else {
        eprintln!(
            "megatest: no checkpoint {wanted} in {}",
            checkpoints_dir.display()
        );
        return Ok(None);
    };
    let chosen = if target.problems.is_empty() {
        target
    } else {
        eprintln!(
            "megatest: checkpoint {wanted} is invalid: {}",
            target.problems.join("; ")
        );
        match infos
            .iter()
            .rev()
            .find(|i| i.sequence < wanted && i.problems.is_empty())
        {
            Some(previous) => {
                eprintln!(
                    "megatest: using checkpoint {} instead, the previous valid one",
                    previous.sequence
                );
                previous
            }
            None => {
                eprintln!("megatest: no valid checkpoint before {wanted}");
                return Ok(None);
            }
        }
    };
    let chosen_seq = chosen.sequence;
    let chosen_path = chosen.path.clone();
    // Keep what is being rolled away: a checkpoint of the current state first.
    let before = checkpoint_before_rollback(&dir)?;
    eprintln!("megatest: current state kept as checkpoint {before} (trigger before_restore)");
    let content: serde_json::Value = serde_json::from_slice(&std::fs::read(&chosen_path)?)?;
    let manifest = content["file_system_state"]["manifest"]
        .as_str()
        .context("checkpoint without a manifest")?;
    let store = snapshot::ObjectStore::open(&checkpoints_dir.join("objects"))?;
    let restored = snapshot::restore(&dir.join("project"), &store, manifest)?;
    let mut db = Store::open(&dir.join("session.db"))?;
    let now_secs = db.last_session_secs()?;
    db.rollback_to_checkpoint(&content, now_secs)?;
    let data = serde_json::json!({
        "sequence": chosen_seq,
        "checkpoint_before": before,
        "requested": wanted,
        "checkpoint_trigger": content["trigger"],
        "checkpoint_session_secs": content["session_secs"],
        "files_written": restored.written,
        "files_removed": restored.removed,
        "not_restorable": restored.not_restorable,
    });
    db.append_event(
        &chrono::Utc::now().to_rfc3339(),
        now_secs,
        "checkpoint_restored",
        None,
        content["phase"].as_str(),
        None,
        &data,
    )?;
    db.mark_interrupted()?;
    drop(db);
    crate::fsutil::write_atomic(&dir.join("status"), b"interrupted\n")?;
    eprintln!(
        "megatest: workspace and task board rolled back to checkpoint {} ({} files written, {} removed)",
        chosen_seq, restored.written, restored.removed
    );
    Ok(Some(chosen_seq))
}

/// Snapshot the workspace and write a checkpoint (trigger `before_restore`) of the state as
/// `session.db` has it: task board, budgets, agents, phase. Returns its sequence.
fn checkpoint_before_rollback(dir: &std::path::Path) -> anyhow::Result<u32> {
    let db = Store::open(&dir.join("session.db"))?;
    let mut checkpointer = checkpoint::Checkpointer::open(&dir.join("checkpoints"))?;
    let (manifest, stats) = checkpointer.snapshot(&dir.join("project"))?;
    let task_board = db.rows(
        "SELECT id, phase, role, state, attempts, agent_id, last_error FROM tasks",
        |r| {
            Ok(serde_json::json!({"id": r.get::<_, String>(0)?, "phase": r.get::<_, String>(1)?, "role": r.get::<_, String>(2)?,
                "state": r.get::<_, String>(3)?, "attempts": r.get::<_, i64>(4)?, "agent_id": r.get::<_, Option<String>>(5)?,
                "last_error": r.get::<_, Option<String>>(6)?}))
        },
    )?;
    let agent_states = db.rows("SELECT id, role FROM agents ORDER BY idx", |r| {
        Ok(serde_json::json!({"id": r.get::<_, String>(0)?, "role": r.get::<_, String>(1)?, "status": "stopped",
            "current_task": null, "process_ids": [], "handoff_notes": []}))
    })?;
    let phase: Option<String> = db
        .rows(
            "SELECT name FROM phases WHERE ended_session_secs IS NULL ORDER BY idx LIMIT 1",
            |r| r.get(0),
        )?
        .pop();
    let session_id = db.session_origin()?.id;
    let content = serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "session_id": session_id,
        "trigger": "before_restore",
        "phase": phase,
        "session_secs": db.last_session_secs()?,
        "agent_states": agent_states,
        "working_memory": {},
        "file_system_state": {"manifest": manifest, "files": stats.files, "bytes": stats.bytes,
            "new_objects": stats.new_objects, "new_bytes": stats.new_bytes, "consistent": true},
        "test_results": [],
        "metrics": null,
        "git_commit": null,
        "task_board": task_board,
        "budgets": db.budget_state()?,
    });
    let session_secs = db.last_session_secs()?;
    let row = checkpointer.write_recorded(
        &db,
        content,
        "before_restore",
        session_secs,
        manifest,
        &stats,
        true,
        0.0,
    )?;
    let seq = row.seq;
    Ok(seq)
}
