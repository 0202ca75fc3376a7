//! The checkpoint module's typed error, with the predicates the session and `megatest restore`
//! decide on ([`CheckpointError::is_disk_full`], [`CheckpointError::is_corrupt`]).

use crate::store::StoreError;

/// A snapshot, checkpoint write, prune or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A filesystem operation failed; `step` names it and its path (`write object …`).
    #[error("{step}: {source}")]
    Io {
        /// The operation and its path.
        step: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Walking the workspace failed.
    #[error("walk {step}: {source}")]
    Walk {
        /// The workspace.
        step: String,
        /// The walker's error (it may wrap an I/O error).
        source: ignore::Error,
    },
    /// A checkpoint file or manifest is not the JSON it should be.
    #[error("{step}: {source}")]
    Json {
        /// What was read.
        step: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// `session.db` could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint store contradicts itself: a missing or altered object, a manifest chain
    /// too long, a checkpoint without a manifest. The message says which.
    #[error("{0}")]
    Corrupt(String),
    /// A checkpoint task panicked (a bug in megatest, not the data or the machine).
    #[error("{0}")]
    Panicked(String),
    /// A step that failed inside another (`walk /ws` inside `restore`).
    #[error("{step}: {source}")]
    During {
        /// The outer step.
        step: String,
        /// What failed inside it.
        source: Box<CheckpointError>,
    },
}

/// `Result` with a [`CheckpointError`].
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;

impl CheckpointError {
    /// True when the disk (or quota) is full (ENOSPC, EDQUOT, SQLITE_FULL).
    pub fn is_disk_full(&self) -> bool {
        match self {
            CheckpointError::Io { source, .. } => crate::store::io_is_disk_full(source),
            CheckpointError::Walk { source, .. } => {
                source.io_error().is_some_and(crate::store::io_is_disk_full)
            }
            CheckpointError::Store(store) => store.is_disk_full(),
            CheckpointError::During { source, .. } => source.is_disk_full(),
            CheckpointError::Json { .. }
            | CheckpointError::Corrupt(_)
            | CheckpointError::Panicked(_) => false,
        }
    }

    /// True when the operating system refused access (EACCES / EPERM).
    pub fn is_permission_denied(&self) -> bool {
        let denied = |io: &std::io::Error| io.kind() == std::io::ErrorKind::PermissionDenied;
        match self {
            CheckpointError::Io { source, .. } => denied(source),
            CheckpointError::Walk { source, .. } => source.io_error().is_some_and(denied),
            CheckpointError::Store(store) => store.is_permission_denied(),
            CheckpointError::During { source, .. } => source.is_permission_denied(),
            CheckpointError::Json { .. }
            | CheckpointError::Corrupt(_)
            | CheckpointError::Panicked(_) => false,
        }
    }

    /// True when stored data is damaged (unreadable JSON, missing or altered objects), as
    /// opposed to the machine refusing an operation.
    pub fn is_corrupt(&self) -> bool {
        match self {
            CheckpointError::Json { .. } | CheckpointError::Corrupt(_) => true,
            CheckpointError::During { source, .. } => source.is_corrupt(),
            _ => false,
        }
    }
}

/// `.step(|| "what and where")` on results: name the failed step.
pub(crate) trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Step<T> for std::result::Result<T, std::io::Error> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| CheckpointError::Io {
            step: what(),
            source,
        })
    }
}

impl<T> Step<T> for std::result::Result<T, serde_json::Error> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| CheckpointError::Json {
            step: what(),
            source,
        })
    }
}

impl<T> Step<T> for std::result::Result<T, CheckpointError> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| CheckpointError::During {
            step: what(),
            source: Box::new(source),
        })
    }
}

impl From<std::io::Error> for CheckpointError {
    fn from(source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            step: "filesystem".into(),
            source,
        }
    }
}

impl From<crate::fsutil::WriteError> for CheckpointError {
    fn from(e: crate::fsutil::WriteError) -> CheckpointError {
        CheckpointError::Io {
            step: e.step,
            source: e.source,
        }
    }
}

impl From<serde_json::Error> for CheckpointError {
    fn from(source: serde_json::Error) -> CheckpointError {
        CheckpointError::Json {
            step: "JSON".into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_look_through_nested_steps() {
        let full: Result<()> = Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC))
            .step(|| "write object /x".into());
        let nested = full.step(|| "snapshot /ws".into()).unwrap_err();
        assert!(nested.is_disk_full() && !nested.is_corrupt());
        assert_eq!(
            nested.to_string().split(": ").take(2).collect::<Vec<_>>(),
            ["snapshot /ws", "write object /x"]
        );
        let bad = serde_json::from_slice::<serde_json::Value>(b"{")
            .step(|| "read checkpoint_001.json".into())
            .unwrap_err();
        assert!(bad.is_corrupt() && !bad.is_disk_full());
        assert!(CheckpointError::Corrupt("object a missing".into()).is_corrupt());
    }
}
