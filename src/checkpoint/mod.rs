//! Checkpoints: one consistent record of every agent and the workspace.
//!
//! A checkpoint is `checkpoints/checkpoint_NNN.json` (zero-padded sequence) plus a row in
//! `session.db`. The JSON holds the seed's `SessionCheckpoint` fields (`timestamp`,
//! `session_id`, `phase`, `agent_states`, `working_memory`, `file_system_state`, `test_results`,
//! `metrics`, `git_commit`) plus `trigger`, `sequence`, `parent`, the task board, the budget
//! counters, and `sha256`: the SHA-256 of the file's JSON without that field (serde_json's sorted
//! maps make it canonical). `file_system_state.manifest` names the workspace snapshot in the
//! object store ([`snapshot`]).
//!
//! The session freezes the agents' process groups (SIGSTOP) while the snapshot is taken, for a
//! bounded time ([`FREEZE_LIMIT`]), then continues them (SIGCONT); a snapshot that outlasts the
//! bound finishes with the agents running and is marked `consistent: false`.

pub mod diff;
pub mod document;
mod error;
pub mod fork;
pub mod job;
pub mod objects;
pub mod restore;

pub mod snapshot;
mod walk;
pub mod watch;

pub use document::{CheckpointDocument, HANDOFF_NOTES};
use error::Step;
pub use error::{CheckpointError, Result};
use serde::Serialize;
use serde_json::Value;
use snapshot::{ObjectStore, SnapshotStats, StatCache};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest wall time agents stay frozen for one snapshot.
pub const FREEZE_LIMIT: Duration = Duration::from_secs(10);
/// Files larger than this are listed with their hash but not stored (bytes).
pub const DEFAULT_SIZE_CAP: u64 = 64 * 1024 * 1024;

/// The checkpoint directory of a session: object store, stat cache, sequence.
pub struct Checkpointer {
    /// `<session>/checkpoints`.
    pub dir: PathBuf,
    /// The content-addressed objects.
    pub store: ObjectStore,
    /// Spares re-reading unchanged files (in memory).
    pub cache: StatCache,
    /// Files larger than this (bytes) are listed but not stored.
    pub size_cap: u64,
    /// Sequence of the last checkpoint written (0: none yet).
    pub last_seq: u32,
    /// The last snapshot: the next manifest is stored as a delta against it.
    pub base: Option<snapshot::ManifestBase>,
    /// Bytes in the object store (measured at open, then kept up to date).
    pub store_bytes: u64,
}

impl Checkpointer {
    /// Open `dir` (created if needed), continuing after the highest existing checkpoint.
    pub fn open(dir: &Path) -> Result<Checkpointer> {
        let store = ObjectStore::open(&dir.join("objects"))?;
        let last_seq = list_files(dir)?.last().map(|(seq, _)| *seq).unwrap_or(0);
        Ok(Checkpointer {
            dir: dir.to_path_buf(),
            store,
            cache: StatCache::default(),
            size_cap: DEFAULT_SIZE_CAP,
            last_seq,
            base: None,
            store_bytes: 0,
        })
        .map(|mut checkpointer| {
            checkpointer.store_bytes = checkpointer.store.size().unwrap_or(0);
            checkpointer
        })
    }

    /// Snapshot `workspace` (blocking: run it off the async runtime). Returns the manifest's
    /// hash and figures; the manifest is stored as a delta against the previous snapshot.
    pub fn snapshot(&mut self, workspace: &Path) -> Result<(String, SnapshotStats)> {
        let (_, base, stats) = snapshot::snapshot(
            workspace,
            &self.store,
            &mut self.cache,
            self.size_cap,
            self.base.as_ref(),
        )?;
        let hash = base.hash.clone();
        self.base = Some(base);
        self.store_bytes += stats.new_bytes;
        Ok((hash, stats))
    }

    /// The pre-copy of a checkpoint (blocking; agents still running): see [`snapshot::precopy`].
    pub fn precopy(&mut self, workspace: &Path) -> Result<SnapshotStats> {
        let stats = snapshot::precopy(workspace, &self.store, &mut self.cache, self.size_cap)?;
        self.store_bytes += stats.new_bytes;
        Ok(stats)
    }

    /// When the store is over `limit_bytes`, [`prune`] it (and forget the stat cache, which may
    /// vouch for removed objects). Returns what was pruned, None when under the limit.
    pub fn enforce_limit(&mut self, limit_bytes: u64) -> Result<Option<PruneStats>> {
        if self.store_bytes <= limit_bytes {
            return Ok(None);
        }
        let stats = prune(&self.dir)?;
        self.store_bytes = stats.kept_bytes;
        self.cache.forget();
        Ok(Some(stats))
    }

    /// [`Checkpointer::write`] `document`, then record its row in `session.db`; returns the row.
    ///
    /// Errors: the file cannot be written, or the row cannot be inserted.
    pub fn write_recorded(
        &mut self,
        store: &crate::store::Store,
        document: &CheckpointDocument,
    ) -> Result<crate::store::CheckpointRow> {
        let (seq, path, sha256) = self.write(serde_json::to_value(document)?)?;
        let row = row_of(document, seq, &path, sha256);
        store.insert_checkpoint(&row)?;
        Ok(row)
    }

    /// Seal `content` (a JSON object) with its SHA-256 and write it atomically as the next
    /// checkpoint file. Returns (sequence, path, sha256).
    pub fn write(&mut self, mut content: Value) -> Result<(u32, PathBuf, String)> {
        let seq = self.last_seq + 1;
        content["sequence"] = Value::from(seq);
        content["parent"] = if self.last_seq == 0 {
            Value::Null
        } else {
            Value::from(self.last_seq)
        };
        let sha = content_hash(&content)?;
        content["sha256"] = Value::String(sha.clone());
        let path = self.dir.join(format!("checkpoint_{seq:03}.json"));
        crate::fsutil::write_json_atomic(&path, &content)?;
        self.last_seq = seq;
        Ok((seq, path, sha))
    }
}

/// What [`prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneStats {
    /// Objects removed.
    pub removed_objects: u64,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Bytes of the objects that remain.
    pub kept_bytes: u64,
}

/// Remove every object no readable checkpoint in `dir` references (through its manifest chain),
/// and leftovers of interrupted writes. Objects of a checkpoint that cannot be read are kept
/// only if another checkpoint references them. Clear any stat cache afterwards.
pub fn prune(dir: &Path) -> Result<PruneStats> {
    let store = ObjectStore::open(&dir.join("objects"))?;
    let mut needed = std::collections::HashSet::new();
    for (_, path) in list_files(dir)? {
        let Ok(content) = std::fs::read(&path)
            .map_err(CheckpointError::from)
            .and_then(|b| Ok(serde_json::from_slice::<Value>(&b)?))
        else {
            continue;
        };
        if let Some(manifest) = content["file_system_state"]["manifest"].as_str() {
            if let Ok(objects) = snapshot::referenced_objects(&store, manifest) {
                needed.extend(objects);
            }
        }
    }
    let mut stats = PruneStats::default();
    for (name, path, bytes) in store.list()? {
        if needed.contains(&name) {
            stats.kept_bytes += bytes;
        } else {
            match std::fs::remove_file(&path) {
                // Renamed away by a concurrent write (a task snapshot) since the listing.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                other => other.step(|| format!("remove {}", path.display()))?,
            }
            stats.removed_objects += 1;
            stats.removed_bytes += bytes;
        }
    }
    Ok(stats)
}

/// The `checkpoints` row of `document`, written as checkpoint `seq` at `path` with `sha256`.
pub fn row_of(
    document: &CheckpointDocument,
    seq: u32,
    path: &Path,
    sha256: String,
) -> crate::store::CheckpointRow {
    let fs = &document.file_system_state;
    crate::store::CheckpointRow {
        seq,
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        session_secs: document.session_secs,
        trigger: document.trigger.clone(),
        path: path.display().to_string(),
        sha256,
        parent: (seq > 1).then(|| seq - 1),
        manifest: fs.manifest.clone(),
        files: fs.files,
        bytes: fs.bytes,
        new_objects: fs.new_objects,
        new_bytes: fs.new_bytes,
        consistent: fs.consistent,
        frozen_ms: fs.frozen_ms,
    }
}

/// Why the checkpoint file at `path` does not match its recorded `sha256` (unreadable, not
/// JSON, or another hash), None when it does. Reads one file: call it off the session task.
pub fn verify_sealed(path: &Path, sha256: &str) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => return Some(format!("cannot read {}: {err}", path.display())),
    };
    let content: Value = match serde_json::from_slice(&bytes) {
        Ok(content) => content,
        Err(err) => return Some(format!("{} is not JSON: {err}", path.display())),
    };
    let actual = match content_hash(&content) {
        Ok(actual) => actual,
        Err(err) => return Some(format!("{} cannot be hashed: {err}", path.display())),
    };
    (actual != sha256 || content["sha256"].as_str() != Some(sha256))
        .then(|| format!("{} has sha256 {actual}, recorded {sha256}", path.display()))
}

/// SHA-256 of a checkpoint's JSON without its `sha256` field.
pub fn content_hash(content: &Value) -> Result<String> {
    let mut copy = content.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("sha256");
    }
    Ok(snapshot::sha256_hex(&serde_json::to_vec(&copy)?))
}

/// `(sequence, path)` of every `checkpoint_NNN.json` in `dir`, in order.
pub fn list_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(files);
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(seq) = name
            .strip_prefix("checkpoint_")
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse().ok())
        {
            files.push((seq, path));
        }
    }
    files.sort();
    Ok(files)
}

/// One checkpoint as `megatest checkpoints` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// Its sequence number.
    pub sequence: u32,
    /// Its file.
    pub path: PathBuf,
    /// What asked for it (None: unreadable).
    pub trigger: Option<String>,
    /// When it was taken (RFC 3339).
    pub timestamp: Option<String>,
    /// The phase then.
    pub phase: Option<String>,
    /// Files in its snapshot.
    pub files: Option<u64>,
    /// Bytes its snapshot added to the store.
    pub new_bytes: Option<u64>,
    /// Empty when valid (or not verified).
    pub problems: Vec<String>,
}

/// Read every checkpoint in `dir`; with `verify`, check each one's own hash and, through its
/// manifest, the presence and hash of every object it references.
pub fn inspect(dir: &Path, verify: bool) -> Result<Vec<CheckpointInfo>> {
    let store = ObjectStore::open(&dir.join("objects"))?;
    let mut out = Vec::new();
    for (sequence, path) in list_files(dir)? {
        let mut info = CheckpointInfo {
            sequence,
            path: path.clone(),
            trigger: None,
            timestamp: None,
            phase: None,
            files: None,
            new_bytes: None,
            problems: Vec::new(),
        };
        let parsed = std::fs::read(&path)
            .step(|| format!("read {}", path.display()))
            .and_then(|bytes| {
                serde_json::from_slice::<Value>(&bytes).step(|| "not JSON (truncated?)".into())
            });
        match parsed {
            Err(err) => info.problems.push(format!("{err:#}")),
            Ok(content) => {
                info.trigger = content["trigger"].as_str().map(String::from);
                info.timestamp = content["timestamp"].as_str().map(String::from);
                info.phase = content["phase"].as_str().map(String::from);
                info.files = content["file_system_state"]["files"].as_u64();
                info.new_bytes = content["file_system_state"]["new_bytes"].as_u64();
                if verify {
                    match (content["sha256"].as_str(), content_hash(&content)) {
                        (Some(recorded), Ok(actual)) if recorded == actual => {}
                        (Some(_), Ok(_)) => info
                            .problems
                            .push("content does not match its sha256".into()),
                        (None, _) => info.problems.push("no sha256 field".into()),
                        (_, Err(err)) => info.problems.push(format!("{err:#}")),
                    }
                    match content["file_system_state"]["manifest"].as_str() {
                        Some(manifest) => info
                            .problems
                            .extend(snapshot::verify_manifest(&store, manifest)),
                        None => info.problems.push("no file_system_state.manifest".into()),
                    }
                }
            }
        }
        out.push(info);
    }
    Ok(out)
}

/// What [`audit`] found about a session's recorded checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// Checkpoints recorded in `session.db`.
    pub recorded: usize,
    /// `(sequence, problem)` of each recorded checkpoint whose file no longer matches the
    /// SHA-256 recorded when it was written.
    pub unsealed: Vec<(u32, String)>,
    /// The newest recorded checkpoint and what is wrong with it: its seal, then the presence
    /// and hash of every object its manifest references (empty: it verifies).
    pub newest: Option<(u32, Vec<String>)>,
}

/// Verify a session's recorded checkpoints (`rows` from `session.db`, paths relative to the
/// session directory `session_dir`): every file's seal, and the newest one in full (its
/// manifest's objects too, which hashes each object it references once). Reads files: call it
/// off the hot path (the session calls it once, at its end).
pub fn audit(session_dir: &Path, rows: &[crate::store::CheckpointRow]) -> Audit {
    let mut audit = Audit {
        recorded: rows.len(),
        ..Audit::default()
    };
    for row in rows {
        if let Some(problem) = verify_sealed(&session_dir.join(&row.path), &row.sha256) {
            audit.unsealed.push((row.seq, problem));
        }
    }
    if let Some(newest) = rows.last() {
        let mut problems: Vec<String> = audit
            .unsealed
            .iter()
            .filter(|(seq, _)| *seq == newest.seq)
            .map(|(_, p)| p.clone())
            .collect();
        match ObjectStore::open(&session_dir.join("checkpoints/objects")) {
            Ok(store) => problems.extend(snapshot::verify_manifest(&store, &newest.manifest)),
            Err(err) => problems.push(format!("the object store cannot be opened: {err:#}")),
        }
        audit.newest = Some((newest.seq, problems));
    }
    audit
}

/// The workspace's git `HEAD` commit, when it is a git repository (runs `git rev-parse`: call
/// it off the session task).
pub fn git_head(workspace: &Path) -> Option<String> {
    if !workspace.join(".git").exists() {
        return None;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_checkpoints_verify_and_tampering_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join("a.txt"), "alpha").unwrap();
        let mut cp = Checkpointer::open(&dir.path().join("checkpoints")).unwrap();
        let (manifest, stats) = cp.snapshot(&ws).unwrap();
        let content = serde_json::json!({"trigger": "manual", "file_system_state": {"manifest": manifest, "files": stats.files}});
        let (seq, path, _) = cp.write(content.clone()).unwrap();
        assert_eq!(seq, 1);
        let (seq2, _, _) = cp.write(content).unwrap();
        assert_eq!(seq2, 2);
        let infos = inspect(&cp.dir, true).unwrap();
        assert_eq!(infos.len(), 2);
        assert!(infos.iter().all(|i| i.problems.is_empty()), "{infos:?}");
        assert_eq!(read_json(&path)["parent"], Value::Null);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("manual", "manuaL");
        std::fs::write(&path, text).unwrap();
        let infos = inspect(&cp.dir, true).unwrap();
        assert_eq!(infos[0].problems, ["content does not match its sha256"]);
        std::fs::write(&path, "{\"trunc").unwrap();
        assert!(inspect(&cp.dir, true).unwrap()[0].problems[0].contains("not JSON"));
        // Reopening continues the sequence.
        assert_eq!(Checkpointer::open(&cp.dir).unwrap().last_seq, 2);
    }

    #[test]
    fn prune_removes_only_what_no_checkpoint_references() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join("a.txt"), "alpha").unwrap();
        let mut cp = Checkpointer::open(&dir.path().join("checkpoints")).unwrap();
        let (manifest, _) = cp.snapshot(&ws).unwrap();
        cp.write(serde_json::json!({"file_system_state": {"manifest": manifest}}))
            .unwrap();
        std::fs::write(ws.join("a.txt"), "beta").unwrap();
        let (manifest, _) = cp.snapshot(&ws).unwrap();
        cp.write(serde_json::json!({"file_system_state": {"manifest": manifest}}))
            .unwrap();
        // An orphan (a snapshot whose checkpoint was never written) and a torn write.
        cp.store
            .put(&snapshot::sha256_hex(b"orphan"), b"orphan")
            .unwrap();
        std::fs::write(
            cp.store
                .path_of(&snapshot::sha256_hex(b"orphan"))
                .with_extension("tmp123"),
            "torn",
        )
        .unwrap();
        let stats = prune(&cp.dir).unwrap();
        assert_eq!(stats.removed_objects, 2, "{stats:?}");
        assert!(inspect(&cp.dir, true)
            .unwrap()
            .iter()
            .all(|i| i.problems.is_empty()));
        assert_eq!(prune(&cp.dir).unwrap().removed_objects, 0);
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}
