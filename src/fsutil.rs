//! Crash-safe file writes: temp file in the same directory, fsync, rename, fsync the directory.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Replace `path` with `bytes` atomically: a reader sees the old or the new content, never a
/// mix, and after return the new content survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent directory")?;
    let name = path
        .file_name()
        .context("path has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.partial"));
    {
        let mut file =
            std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("write {}", tmp.display()))?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    if let Ok(dir_handle) = std::fs::File::open(dir) {
        let _ = dir_handle.sync_all();
    }
    Ok(())
}

/// [`write_atomic`] of pretty JSON with a trailing newline.
pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Write `path` with mode 0600 atomically (for tokens and keys).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write_atomic(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
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
    pub fn start(name: &str) -> Result<BackgroundWriter> {
        let (jobs, queue) = std::sync::mpsc::channel::<WriteJob>();
        let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            for job in queue {
                let result = match job {
                    WriteJob::Replace(path, bytes) => write_atomic(&path, &bytes),
                    WriteJob::Append(path, bytes) => std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .and_then(|mut file| file.write_all(&bytes))
                        .map_err(anyhow::Error::from),
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

    pub fn replace(&self, path: &Path, bytes: Vec<u8>) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(WriteJob::Replace(path.to_path_buf(), bytes));
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

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
