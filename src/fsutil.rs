//! Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory.

use std::io::Write;
use std::path::Path;

/// A file write failed: `step` names the operation and path (`rename to /runs/x/status`).
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct WriteError {
    /// The operation and its path.
    pub step: String,
    /// The operating system's error.
    pub source: std::io::Error,
}

impl WriteError {
    /// True when the disk (or quota) is full: ENOSPC, EDQUOT.
    pub fn is_disk_full(&self) -> bool {
        crate::store::io_is_disk_full(&self.source)
    }
}

/// `Result` with a [`WriteError`].
pub type Result<T, E = WriteError> = std::result::Result<T, E>;

/// Name the failed step of an I/O result.
fn step<T>(result: std::io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    result.map_err(|source| WriteError {
        step: what(),
        source,
    })
}

/// Replace `path` with `bytes` atomically: a reader sees the old or the new content, never a
/// mix, and after return the new content survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// Write `bytes` to a temp file beside `path` (fsynced when `durable`), rename it over `path`,
/// and fsync the directory when `durable`.
fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let not_a_file = || WriteError {
        step: format!("replace {}", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
    };
    let dir = path.parent().ok_or_else(not_a_file)?;
    let name = path.file_name().ok_or_else(not_a_file)?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.partial"));
    {
        let mut file = step(std::fs::File::create(&tmp), || {
            format!("create {}", tmp.display())
        })?;
        step(file.write_all(bytes), || format!("write {}", tmp.display()))?;
        if durable {
            step(file.sync_all(), || format!("fsync {}", tmp.display()))?;
        }
    }
    step(std::fs::rename(&tmp, path), || {
        format!("rename to {}", path.display())
    })?;
    if durable {
        if let Ok(dir_handle) = std::fs::File::open(dir) {
            let _ = dir_handle.sync_all();
        }
    }
    Ok(())
}

/// Replace `path` with `bytes` atomically for readers (temp file, rename) but without the
/// fsyncs: cheap enough for the session task; after a crash the file may hold the old
/// content. For files whose truth lives elsewhere (the `status` word; `session.db` has it).
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false)
}

/// [`write_atomic`] of pretty JSON with a trailing newline.
pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut bytes = step(
        serde_json::to_vec_pretty(value).map_err(std::io::Error::from),
        || format!("serialize {}", path.display()),
    )?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Write `path` with mode 0600 atomically (for tokens and keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write_atomic(path, bytes)?;
    step(
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)),
        || format!("chmod 600 {}", path.display()),
    )
}

/// Writes files on a background thread, in the order given, so that fsyncs never stall the
/// caller. `replace` writes atomically ([`write_atomic`]); `append` adds a line.
pub struct BackgroundWriter {
    jobs: Option<std::sync::mpsc::Sender<WriteJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum WriteJob {
    Replace(std::path::PathBuf, Vec<u8>),
    Append(std::path::PathBuf, Vec<u8>),
}

impl BackgroundWriter {
    /// Start the writer thread named `name`. Errors: the thread cannot be started.
    pub fn start(name: &str) -> std::io::Result<BackgroundWriter> {
        let (jobs, queue) = std::sync::mpsc::channel::<WriteJob>();
        let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            for job in queue {
                let result = match job {
                    WriteJob::Replace(path, bytes) => write_atomic(&path, &bytes),
                    WriteJob::Append(path, bytes) => step(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)
                            .and_then(|mut file| file.write_all(&bytes)),
                        || format!("append to {}", path.display()),
                    ),
                };
                if let Err(err) = result {
                    tracing::warn!(message = "background write failed", error = %format!("{err:#}"));
                }
            }
        })?;
        Ok(BackgroundWriter {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queue an atomic replacement of `path` with `bytes`.
    pub fn replace(&self, path: &Path, bytes: Vec<u8>) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(WriteJob::Replace(path.to_path_buf(), bytes));
        }
    }

    /// Queue appending `bytes` to `path` (created if missing).
    pub fn append(&self, path: &Path, bytes: Vec<u8>) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(WriteJob::Append(path.to_path_buf(), bytes));
        }
    }

    /// Finish every queued write (on session end).
    pub fn flush(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BackgroundWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Complete lines read from an append-only file an agent writes (see [`read_complete_lines`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LineChunk {
    /// The bytes of the complete lines read (each ending in `\n`), as written: not necessarily
    /// UTF-8.
    pub lines: Vec<u8>,
    /// Lines skipped because a single line was longer than the read limit.
    pub skipped_lines: usize,
    /// The byte offset after the last complete line consumed: where the next read starts.
    pub next_offset: u64,
}

/// Read the complete lines of `path` from byte `offset`, at most `limit` bytes. A trailing
/// partial line is left for the next read; a single line longer than `limit` is skipped
/// (counted in `skipped_lines`) so that one huge line cannot stall the reader for ever.
/// Returns None when the file does not exist or nothing complete was appended since `offset`.
///
/// Errors: the file exists but cannot be read.
pub fn read_complete_lines(
    path: &Path,
    offset: u64,
    limit: usize,
) -> std::io::Result<Option<LineChunk>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let len = file.metadata()?.len();
    if len <= offset {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity(((len - offset) as usize).min(limit));
    (&mut file).take(limit as u64).read_to_end(&mut bytes)?;
    match bytes.iter().rposition(|b| *b == b'\n') {
        Some(end) => {
            bytes.truncate(end + 1);
            Ok(Some(LineChunk {
                next_offset: offset + bytes.len() as u64,
                lines: bytes,
                skipped_lines: 0,
            }))
        }
        // A full read without a newline: one line longer than the limit. Skip to its end.
        None if bytes.len() == limit => {
            let mut skipped = limit as u64;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    // The long line is still being written: wait for its end.
                    return Ok(None);
                }
                if let Some(at) = buf[..n].iter().position(|b| *b == b'\n') {
                    skipped += at as u64 + 1;
                    return Ok(Some(LineChunk {
                        lines: Vec::new(),
                        skipped_lines: 1,
                        next_offset: offset + skipped,
                    }));
                }
                skipped += n as u64;
            }
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_lines_only_and_partial_tail_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        assert_eq!(read_complete_lines(&path, 0, 100).unwrap(), None);
        std::fs::write(&path, b"a\n\xff\xfe b\npartial").unwrap();
        let chunk = read_complete_lines(&path, 0, 100).unwrap().unwrap();
        assert_eq!(chunk.lines, b"a\n\xff\xfe b\n");
        assert_eq!(chunk.next_offset, 7);
        assert_eq!(read_complete_lines(&path, 7, 100).unwrap(), None);
    }

    #[test]
    fn an_overlong_line_is_skipped_not_stalled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut text = vec![b'x'; 300];
        text.extend_from_slice(b"\n{}\n");
        std::fs::write(&path, &text).unwrap();
        let chunk = read_complete_lines(&path, 0, 100).unwrap().unwrap();
        assert_eq!((chunk.skipped_lines, chunk.next_offset), (1, 301));
        let chunk = read_complete_lines(&path, 301, 100).unwrap().unwrap();
        assert_eq!(chunk.lines, b"{}\n");
    }

    #[test]
    fn replaces_content_and_leaves_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status");
        write_atomic(&path, b"running\n").unwrap();
        write_atomic(&path, b"complete\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "complete\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
