//! `ledger.spool`: the proxy's write-ahead record of answered model calls.
//!
//! The session commits a ledger row to `session.db` after the proxy hands it over, and the
//! proxy does not wait for that commit (it would add the commit's ~0.1 ms to every call). So that
//! an answer an agent received is never missing from the ledger after a crash, the proxy first
//! appends the row to this file — one `write(2)` with `O_APPEND`, in the kernel's page cache
//! before the answer leaves, so it survives `kill -9` (not a power failure, like the WAL with
//! `synchronous = NORMAL`). `megatest resume` imports every spooled call whose `call_id` is not
//! in the ledger ([`read`]). The file is emptied whenever every spooled call is committed
//! ([`LedgerSpool::truncate_if_settled`]), so it holds at most the calls of one metrics interval.
//!
//! Format: JSON lines, `{"at": RFC 3339, "session_secs": f64, "row": LedgerRow}`. A torn last
//! line (the daemon died inside the write) is skipped.

use super::error::{Result, Step};
use super::LedgerRow;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// File name in the session directory.
pub const FILE: &str = "ledger.spool";

/// One spooled call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpooledCall {
    /// RFC 3339 wall time the proxy finished the call.
    pub at: String,
    /// Session seconds at the same moment.
    pub session_secs: f64,
    /// The ledger row.
    pub row: LedgerRow,
}

/// The open spool of a running session (shared by the proxy, which appends, and the session,
/// which commits and truncates).
#[derive(Debug)]
pub struct LedgerSpool {
    path: PathBuf,
    file: Mutex<File>,
    /// Calls appended (since the daemon started).
    spooled: AtomicU64,
    /// Calls the session has committed to the ledger (since the daemon started).
    committed: AtomicU64,
}

impl LedgerSpool {
    /// Open (creating) `<session dir>/ledger.spool` for appending. Existing lines are kept:
    /// import them with [`read`] first.
    pub fn open(session_dir: &Path) -> Result<LedgerSpool> {
        let path = session_dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .step(|| format!("open {}", path.display()))?;
        Ok(LedgerSpool {
            path,
            file: Mutex::new(file),
            spooled: AtomicU64::new(0),
            committed: AtomicU64::new(0),
        })
    }

    /// Append one call (a single `write(2)` of one line). Errors: the write failed (e.g.
    /// ENOSPC); the caller still hands the row to the session, which reports the disk.
    pub fn append(&self, call: &SpooledCall) -> Result<()> {
        let mut line = serde_json::to_vec(call)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        self.spooled.fetch_add(1, Ordering::SeqCst);
        file.write_all(&line)
            .step(|| format!("append to {}", self.path.display()))
    }

    /// The session committed one spooled call.
    pub fn committed(&self) {
        self.committed.fetch_add(1, Ordering::SeqCst);
    }

    /// Empty the file if every call appended so far is committed; returns whether it did.
    /// Appends wait on the same lock, so no call lands between the check and the truncation.
    pub fn truncate_if_settled(&self) -> Result<bool> {
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if self.spooled.load(Ordering::SeqCst) != self.committed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        file.set_len(0)
            .step(|| format!("truncate {}", self.path.display()))?;
        Ok(true)
    }
}

/// The calls spooled in `<session dir>/ledger.spool` (none if there is no file). Lines that are
/// not a complete call (a torn last write) are skipped and counted.
pub fn read(session_dir: &Path) -> Result<(Vec<SpooledCall>, usize)> {
    let path = session_dir.join(FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(err) => return Err(err).step(|| format!("read {}", path.display())),
    };
    let mut calls = Vec::new();
    let mut torn = 0;
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<SpooledCall>(line) {
            Ok(call) => calls.push(call),
            Err(_) => torn += 1,
        }
    }
    Ok((calls, torn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(call_id: i64, tokens: u64) -> SpooledCall {
        SpooledCall {
            at: "2026-11-21T00:00:00Z".into(),
            session_secs: 1.5,
            row: LedgerRow {
                call_id,
                agent_id: "agent-1".into(),
                role: "Coder".into(),
                phase: Some("development".into()),
                task_id: None,
                model_requested: "m".into(),
                model_served: "m".into(),
                prompt_tokens: tokens,
                completion_tokens: 1,
                cached_tokens: 0,
                tool_names: vec!["write_file".into()],
                latency_ms: 2.0,
                status: 200,
                error_kind: None,
                attempts: 1,
                cost_usd: None,
            },
        }
    }

    #[test]
    fn appends_survive_reopen_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = LedgerSpool::open(dir.path()).unwrap();
        spool.append(&call(1, 10)).unwrap();
        spool.append(&call(2, 20)).unwrap();
        drop(spool);
        // A write cut short by kill -9.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        file.write_all(b"{\"at\": \"2026-11-21T00:").unwrap();
        let (calls, torn) = read(dir.path()).unwrap();
        assert_eq!(torn, 1);
        let ids: Vec<(i64, u64)> = calls
            .iter()
            .map(|c| (c.row.call_id, c.row.prompt_tokens))
            .collect();
        assert_eq!(ids, [(1, 10), (2, 20)]);
        assert_eq!(calls[0].row.tool_names, ["write_file"]);
    }

    #[test]
    fn truncates_only_when_every_call_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = LedgerSpool::open(dir.path()).unwrap();
        spool.append(&call(1, 10)).unwrap();
        spool.append(&call(2, 20)).unwrap();
        spool.committed();
        assert!(!spool.truncate_if_settled().unwrap());
        assert_eq!(read(dir.path()).unwrap().0.len(), 2);
        spool.committed();
        assert!(spool.truncate_if_settled().unwrap());
        assert!(read(dir.path()).unwrap().0.is_empty());
        // Appends after a truncation start at the beginning of the file again.
        spool.append(&call(3, 30)).unwrap();
        let (calls, torn) = read(dir.path()).unwrap();
        assert_eq!((calls.len(), torn, calls[0].row.call_id), (1, 0, 3));
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE)).unwrap().len(),
            serde_json::to_vec(&calls[0]).unwrap().len() as u64 + 1
        );
    }
}
