//! A checkpoint taken off the session task: [`take`] verifies the newest checkpoint's seal,
//! pre-copies the workspace with the agents running ([`super::snapshot::precopy`]), freezes the
//! running agents' groups, snapshots on the blocking pool what changed since, continues
//! the agents (after at most [`super::FREEZE_LIMIT`]; a snapshot that outlasts it finishes with
//! the agents running and is marked `consistent: false`), and writes the sealed file (with its
//! fsyncs). The session hands it a [`Request`] and gets a [`Taken`] back as an event; it records
//! the row itself.

use super::document::{CheckpointDocument, FileSystemState};
use super::snapshot::SnapshotStats;
use super::{CheckpointError, Checkpointer, FREEZE_LIMIT};
use crate::backend::AgentGroup;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// What a checkpoint is taken from.
pub struct Request {
    /// The session's checkpointer, moved in for the job and handed back in [`Taken`].
    pub checkpointer: Checkpointer,
    /// The workspace to snapshot.
    pub workspace: PathBuf,
    /// The document as the session saw itself when it asked; `file_system_state` and
    /// `git_commit` are filled in here.
    pub document: CheckpointDocument,
    /// The newest checkpoint (file, recorded sha256, sequence), verified first: a new
    /// checkpoint must not hide a corrupt one.
    pub latest: Option<(PathBuf, String, u32)>,
    /// The running agents' groups; those not frozen already are frozen for the snapshot.
    pub groups: Vec<Arc<dyn AgentGroup>>,
    /// What asked for it (the document's `trigger`), handed back in [`Taken`] so a refused
    /// checkpoint can be asked for again.
    pub trigger: &'static str,
}

/// What [`take`] did.
pub struct Taken {
    /// The checkpointer back (None only if the snapshot panicked and the store could not be
    /// reopened: the session then takes no more checkpoints).
    pub checkpointer: Option<Checkpointer>,
    /// The trigger it was taken for (as in [`Request::trigger`]).
    pub trigger: &'static str,
    /// Its outcome.
    pub outcome: Outcome,
}

/// How a checkpoint ended.
pub enum Outcome {
    /// The file is written and sealed; the row is the session's to insert.
    Written {
        /// The document as written (without `sequence`, `parent`, `sha256`).
        document: Box<CheckpointDocument>,
        /// Its sequence number.
        seq: u32,
        /// Its file.
        path: PathBuf,
        /// The seal.
        sha256: String,
        /// The snapshot's figures.
        stats: SnapshotStats,
    },
    /// The newest checkpoint does not verify: nothing was taken.
    LatestCorrupt {
        /// Its sequence number.
        seq: u32,
        /// What is wrong with it.
        problem: String,
    },
    /// The snapshot or the write failed.
    Failed(CheckpointError),
}

/// A checkpoint whose blocking `step` panicked (taking the checkpointer with it): failed, with
/// the checkpointer of `dir` opened again (None if it cannot be).
async fn panicked(
    dir: PathBuf,
    trigger: &'static str,
    step: &str,
    panic: tokio::task::JoinError,
) -> Taken {
    let checkpointer = tokio::task::spawn_blocking(move || Checkpointer::open(&dir))
        .await
        .ok()
        .and_then(Result::ok);
    Taken {
        checkpointer,
        trigger,
        outcome: Outcome::Failed(CheckpointError::Panicked(format!(
            "{step} panicked: {panic}"
        ))),
    }
}

/// Take the checkpoint `request` describes (see the module docs). Never fails: a failure is
/// [`Outcome::Failed`].
pub async fn take(request: Request) -> Taken {
    let Request {
        checkpointer,
        workspace,
        mut document,
        latest,
        groups,
        trigger,
    } = request;
    let dir = checkpointer.dir.clone();
    if let Some((path, sha256, seq)) = latest {
        let problem = tokio::task::spawn_blocking(move || super::verify_sealed(&path, &sha256))
            .await
            .unwrap_or_else(|panic| Some(format!("verification failed: {panic}")));
        if let Some(problem) = problem {
            return Taken {
                checkpointer: Some(checkpointer),
                trigger,
                outcome: Outcome::LatestCorrupt { seq, problem },
            };
        }
    }
    // The pre-copy, agents running: the frozen snapshot then re-examines only what changed
    // since. A failed pre-copy only makes the frozen snapshot longer (it fails there too, if
    // the failure lasts).
    let precopy_workspace = workspace.clone();
    let precopied = tokio::task::spawn_blocking(move || {
        let mut checkpointer = checkpointer;
        if let Err(err) = checkpointer.precopy(&precopy_workspace) {
            tracing::debug!(message = "checkpoint pre-copy failed", error = %err);
        }
        checkpointer
    })
    .await;
    let checkpointer = match precopied {
        Ok(checkpointer) => checkpointer,
        Err(panic) => return panicked(dir, trigger, "the pre-copy", panic).await,
    };
    // Groups stopped already (a pause, a hang) stay stopped: only those frozen here continue.
    let frozen: Vec<Arc<dyn AgentGroup>> = groups
        .into_iter()
        .filter(|group| !group.is_frozen() && group.freeze())
        .collect();
    let started = Instant::now();
    let snapshot_workspace = workspace.clone();
    let mut job = tokio::task::spawn_blocking(move || {
        let mut checkpointer = checkpointer;
        let result = checkpointer.snapshot(&snapshot_workspace);
        let git_commit = super::git_head(&snapshot_workspace);
        (checkpointer, result, git_commit)
    });
    let (joined, consistent) = match tokio::time::timeout(FREEZE_LIMIT, &mut job).await {
        Ok(joined) => (joined, true),
        Err(_) => {
            thaw(&frozen);
            tracing::warn!(message = "snapshot outlasted the freeze limit: agents continued; checkpoint marked inconsistent");
            (job.await, false)
        }
    };
    thaw(&frozen);
    let frozen_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (mut checkpointer, result, git_commit) = match joined {
        Ok(joined) => joined,
        Err(panic) => return panicked(dir, trigger, "the snapshot task", panic).await,
    };
    let (manifest, stats) = match result {
        Ok(snapshot) => snapshot,
        Err(err) => {
            return Taken {
                checkpointer: Some(checkpointer),
                trigger,
                outcome: Outcome::Failed(err),
            }
        }
    };
    document.file_system_state = FileSystemState::of(&manifest, &stats, consistent, frozen_ms);
    document.git_commit = git_commit;
    let written = tokio::task::spawn_blocking(move || {
        let written = serde_json::to_value(&document)
            .map_err(CheckpointError::from)
            .and_then(|content| checkpointer.write(content));
        (checkpointer, document, written)
    })
    .await;
    match written {
        Ok((checkpointer, document, Ok((seq, path, sha256)))) => Taken {
            checkpointer: Some(checkpointer),
            trigger,
            outcome: Outcome::Written {
                document: Box::new(document),
                seq,
                path,
                sha256,
                stats,
            },
        },
        Ok((checkpointer, _, Err(err))) => Taken {
            checkpointer: Some(checkpointer),
            trigger,
            outcome: Outcome::Failed(err),
        },
        Err(panic) => Taken {
            checkpointer: None,
            trigger,
            outcome: Outcome::Failed(CheckpointError::Panicked(format!(
                "writing the checkpoint panicked: {panic}"
            ))),
        },
    }
}

impl std::fmt::Debug for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outcome = match &self.outcome {
            Outcome::Written { seq, .. } => format!("written {seq}"),
            Outcome::LatestCorrupt { seq, problem } => {
                format!("checkpoint {seq} corrupt: {problem}")
            }
            Outcome::Failed(err) => format!("failed: {err}"),
        };
        f.debug_struct("Taken")
            .field("trigger", &self.trigger)
            .field("outcome", &outcome)
            .finish()
    }
}

fn thaw(groups: &[Arc<dyn AgentGroup>]) {
    for group in groups {
        group.thaw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{AgentBackend, LaunchSpec, RunLimits};
    use crate::checkpoint::document::{AgentState, Parts};
    use std::time::Duration;

    fn new_document(trigger: &str) -> CheckpointDocument {
        CheckpointDocument::build(Parts {
            session_id: "s",
            trigger,
            phase: None,
            session_secs: 1.0,
            wall_secs: None,
            agents: vec![AgentState::stopped("agent-1", "coder")],
            notes: &[],
            handoffs: &[],
            decisions: &[],
            file_system_state: FileSystemState::default(),
            test_results: Vec::new(),
            metrics: None,
            git_commit: None,
            task_board: Vec::new(),
            budgets: serde_json::Value::Null,
        })
    }

    #[tokio::test]
    async fn a_checkpoint_freezes_the_running_group_and_continues_it() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("ws");
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::write(workspace.join("a.txt"), "alpha").unwrap();
        let spec = LaunchSpec {
            program: "sh".into(),
            args: vec!["-c".into(), "sleep 30".into()],
            env: crate::agent::inherited_env(),
            cwd: workspace.clone(),
            log_path: dir.path().join("agent.log"),
            limits: Default::default(),
        };
        let limits = RunLimits {
            timeout: Duration::from_secs(30),
            grace: Duration::from_millis(100),
        };
        let run = crate::backend::local::LocalBackend::new()
            .start(&spec, limits, tokio_util::sync::CancellationToken::new())
            .unwrap();
        let checkpointer = Checkpointer::open(&dir.path().join("checkpoints")).unwrap();
        let taken = take(Request {
            checkpointer,
            workspace: workspace.clone(),
            document: new_document("manual"),
            latest: None,
            groups: vec![run.group.clone()],
            trigger: "manual",
        })
        .await;
        let Outcome::Written {
            document,
            seq,
            path,
            sha256,
            ..
        } = taken.outcome
        else {
            panic!("not written: {taken:?}");
        };
        assert_eq!(seq, 1);
        assert!(document.file_system_state.consistent);
        assert!(document.file_system_state.files >= 1);
        assert!(document.file_system_state.frozen_ms >= 0.0);
        assert_eq!(crate::checkpoint::verify_sealed(&path, &sha256), None);
        assert!(!run.group.is_frozen(), "the group was continued");
        run.group.kill();
        run.ended.await;

        // The newest checkpoint altered: nothing is taken, the problem is named.
        std::fs::write(&path, "{}").unwrap();
        let taken = take(Request {
            checkpointer: taken.checkpointer.unwrap(),
            workspace,
            document: new_document("interval"),
            latest: Some((path, sha256, 1)),
            groups: Vec::new(),
            trigger: "interval",
        })
        .await;
        match taken.outcome {
            Outcome::LatestCorrupt { seq, problem } => {
                assert_eq!(seq, 1);
                assert!(problem.contains("sha256"), "{problem}");
            }
            _ => panic!("the corrupt checkpoint went unnoticed: {taken:?}"),
        }
        assert_eq!(taken.checkpointer.unwrap().last_seq, 1, "nothing written");
    }
}
