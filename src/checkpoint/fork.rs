//! `megatest fork`: a new session that starts from any checkpoint of any session — its
//! workspace, task board, phases and working memory as the checkpoint has them — with its own
//! ledger and budgets and a `forked_from` link, so that one configuration can be replayed
//! against another from the same point. The source is only read (its database through a
//! consistent copy, its snapshot objects through hard links), so a running session can be
//! forked too. Nothing is left half-made: on any error the new directory is removed.

use super::error::{Result, Step};
use super::{inspect, snapshot, CheckpointDocument};
use crate::store::{ForkOrigin, Store};
use std::path::Path;

/// What [`fork`] made.
#[derive(Debug, Clone, PartialEq)]
pub struct Forked {
    /// Where the new session came from.
    pub origin: ForkOrigin,
    /// Files written into the new workspace.
    pub files: u64,
}

/// Why a fork was refused (nothing was created).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForkRefused {
    /// The source has no such checkpoint.
    #[error("{dir} has no checkpoint {sequence}")]
    NoSuchCheckpoint {
        /// The source session directory.
        dir: String,
        /// The checkpoint asked for.
        sequence: u32,
    },
    /// The checkpoint does not verify.
    #[error("checkpoint {sequence} of {dir} is invalid: {problems}")]
    Invalid {
        /// The source session directory.
        dir: String,
        /// The checkpoint asked for.
        sequence: u32,
        /// What is wrong with it.
        problems: String,
    },
    /// The new session's directory exists already.
    #[error("{0} exists already: choose another --session-id")]
    Exists(String),
}

/// Fork checkpoint `wanted` of the session in `source` into a new session `new_id` in
/// `new_dir` (which must not exist). The new session is left interrupted: `megatest resume`
/// runs it.
///
/// Errors: Ok(Err(refusal)) when the fork is refused; Err when reading the source or writing
/// the new session failed (the new directory is removed).
pub fn fork(
    source: &Path,
    wanted: u32,
    new_dir: &Path,
    new_id: &str,
) -> Result<std::result::Result<Forked, ForkRefused>> {
    let dir_text = source.display().to_string();
    let infos = inspect(&source.join("checkpoints"), true)?;
    let Some(chosen) = infos.iter().find(|i| i.sequence == wanted) else {
        return Ok(Err(ForkRefused::NoSuchCheckpoint {
            dir: dir_text,
            sequence: wanted,
        }));
    };
    if !chosen.problems.is_empty() {
        return Ok(Err(ForkRefused::Invalid {
            dir: dir_text,
            sequence: wanted,
            problems: chosen.problems.join("; "),
        }));
    }
    if new_dir.exists() {
        return Ok(Err(ForkRefused::Exists(new_dir.display().to_string())));
    }
    std::fs::create_dir_all(new_dir).step(|| format!("create {}", new_dir.display()))?;
    match build(source, chosen.sequence, &chosen.path, new_dir, new_id) {
        Ok(forked) => Ok(Ok(forked)),
        Err(err) => {
            let _ = std::fs::remove_dir_all(new_dir);
            Err(err)
        }
    }
}

fn build(
    source: &Path,
    sequence: u32,
    checkpoint_file: &Path,
    new_dir: &Path,
    new_id: &str,
) -> Result<Forked> {
    let document: CheckpointDocument = serde_json::from_slice(
        &std::fs::read(checkpoint_file).step(|| format!("read {}", checkpoint_file.display()))?,
    )
    .step(|| format!("read {}", checkpoint_file.display()))?;
    // The checkpoints up to this one, and the objects (immutable, content-addressed: linked).
    let checkpoints = new_dir.join("checkpoints");
    link_tree(
        &source.join("checkpoints/objects"),
        &checkpoints.join("objects"),
    )?;
    for info in inspect(&source.join("checkpoints"), false)? {
        if info.sequence <= sequence {
            let to = checkpoints.join(info.path.file_name().unwrap_or_default());
            std::fs::copy(&info.path, &to).step(|| format!("copy {}", info.path.display()))?;
        }
    }
    let source_db = Store::open(&source.join("session.db"))?;
    let origin = ForkOrigin {
        session_id: source_db.session_origin()?.id,
        session_dir: source.display().to_string(),
        checkpoint: sequence,
        checkpoint_session_secs: document.session_secs,
        forked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    source_db.copy_into(&new_dir.join("session.db"))?;
    drop(source_db);
    // The effective config as the source ran it (for the record; the fork loads its config
    // again at start).
    let config = source.join("config.json");
    if config.exists() {
        std::fs::copy(&config, new_dir.join("config.json"))
            .step(|| format!("copy {}", config.display()))?;
    }
    let mut db = Store::open(&new_dir.join("session.db"))?;
    db.make_fork(
        new_id,
        &origin,
        &document.task_board,
        document.phase.as_deref(),
        document.at_phase_end(),
        &source.display().to_string(),
        &new_dir.display().to_string(),
    )?;
    for agent in db.agents()? {
        let prompts = new_dir.join("agents").join(&agent.id).join("prompts");
        std::fs::create_dir_all(&prompts).step(|| format!("create {}", prompts.display()))?;
    }
    for sub in ["metrics", "project"] {
        std::fs::create_dir_all(new_dir.join(sub)).step(|| format!("create {sub}/"))?;
    }
    let objects = snapshot::ObjectStore::open(&checkpoints.join("objects"))?;
    let restored = snapshot::restore(
        &new_dir.join("project"),
        &objects,
        &document.file_system_state.manifest,
    )?;
    db.append_event(
        &origin.forked_at,
        origin.checkpoint_session_secs,
        "forked",
        None,
        document.phase.as_deref(),
        None,
        &serde_json::to_value(&origin).unwrap_or_default(),
    )?;
    drop(db);
    crate::fsutil::write_atomic(&new_dir.join("status"), b"interrupted\n")
        .map_err(|err| super::CheckpointError::Corrupt(err.to_string()))?;
    Ok(Forked {
        origin,
        files: restored.written,
    })
}

/// Mirror the directory tree `from` into `to`, hard-linking files (copying across
/// filesystems).
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).step(|| format!("create {}", to.display()))?;
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.step(|| format!("read {}", from.display()))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            link_tree(&entry.path(), &target)?;
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target)
                .step(|| format!("copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}
