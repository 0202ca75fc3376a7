//! The store's typed error: what failed (with the file or step it concerns) and predicates the
//! recovery table decides on ([`StoreError::is_disk_full`], [`StoreError::is_permission_denied`])
//! instead of guessing from message text. No `rusqlite` type is reachable through it.

use std::fmt;

/// A `session.db` or `ledger.spool` operation failed.
#[derive(Debug)]
pub struct StoreError {
    /// The step that failed (`open /runs/x/session.db`), when known.
    context: Option<String>,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Sqlite(rusqlite::Error),
    Io(std::io::Error),
    Json(serde_json::Error),
    /// A rule of the store was broken (a schema newer than this binary, a missing file).
    Invalid(String),
}

/// `Result` with a [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// A rule of the store was broken; `message` says which.
    pub(crate) fn invalid(message: impl Into<String>) -> StoreError {
        StoreError {
            context: None,
            cause: Cause::Invalid(message.into()),
        }
    }

    /// The same error, saying which step failed.
    pub(crate) fn context(mut self, step: impl Into<String>) -> StoreError {
        self.context = Some(step.into());
        self
    }

    /// True when the disk (or quota) is full: SQLITE_FULL, ENOSPC or EDQUOT.
    pub fn is_disk_full(&self) -> bool {
        match &self.cause {
            Cause::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            Cause::Io(io) => io_is_disk_full(io),
            _ => false,
        }
    }

    /// True when the operating system refused access (EACCES / EPERM, or SQLite's
    /// read-only / cannot-open on a file it may not write).
    pub fn is_permission_denied(&self) -> bool {
        match &self.cause {
            Cause::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::PermissionDenied | rusqlite::ErrorCode::ReadOnly
            ),
            Cause::Io(io) => io.kind() == std::io::ErrorKind::PermissionDenied,
            _ => false,
        }
    }

    /// True when the database is locked by another connection past the busy timeout.
    pub fn is_busy(&self) -> bool {
        matches!(&self.cause,
            Cause::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
    }
}

/// True when `io` is ENOSPC / EDQUOT (or std's `StorageFull`).
pub fn io_is_disk_full(io: &std::io::Error) -> bool {
    matches!(io.raw_os_error(), Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT)
        || io.kind() == std::io::ErrorKind::StorageFull
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(step) = &self.context {
            write!(f, "{step}: ")?;
        }
        match &self.cause {
            Cause::Sqlite(e) => write!(f, "{e}"),
            Cause::Io(e) => write!(f, "{e}"),
            Cause::Json(e) => write!(f, "{e}"),
            Cause::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Sqlite(e) => Some(e),
            Cause::Io(e) => Some(e),
            Cause::Json(e) => Some(e),
            Cause::Invalid(_) => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError {
            context: None,
            cause: Cause::Sqlite(e),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> StoreError {
        StoreError {
            context: None,
            cause: Cause::Io(e),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> StoreError {
        StoreError {
            context: None,
            cause: Cause::Json(e),
        }
    }
}

/// `.step(|| …)` on results: name the failed step (the store's `with_context`).
pub(crate) trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<StoreError>> Step<T> for std::result::Result<T, E> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_see_the_cause() {
        let full = StoreError::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ))
        .context("commit ledger row");
        assert!(full.is_disk_full() && !full.is_permission_denied());
        assert!(
            full.to_string().starts_with("commit ledger row: "),
            "{full}"
        );
        let enospc = StoreError::from(std::io::Error::from_raw_os_error(nix::libc::ENOSPC));
        assert!(enospc.is_disk_full());
        let denied = StoreError::from(std::io::Error::from_raw_os_error(nix::libc::EACCES));
        assert!(denied.is_permission_denied() && !denied.is_disk_full());
        assert!(!StoreError::invalid("schema too new").is_disk_full());
    }
}
