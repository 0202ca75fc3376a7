//! What only the session can see of failures: file watches, disk limits and the ballast
//! reserve, OOM counters, error classification of the session's own steps, agents' log tails.

use super::*;
use crate::checkpoint::CheckpointError;
use crate::fsutil::WriteError;
use crate::store::StoreError;

/// Watch the workspace recursively; every change stamps `changed_ms`. None (logged) when the
/// watch cannot be set up: hang detection then relies on calls, tool calls and output.
pub(in crate::session) fn watch_workspace(
    workspace: &std::path::Path,
    changed_ms: Arc<AtomicU64>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            changed_ms.store(unix_ms(), Ordering::Relaxed);
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::warn!(message = "workspace watch unavailable", error = %err);
            return None;
        }
    };
    if let Err(err) = watcher.watch(workspace, notify::RecursiveMode::Recursive) {
        tracing::warn!(message = "workspace watch unavailable", error = %err);
        return None;
    }
    Some(watcher)
}

pub(in crate::session) fn make_reserve(dir: &std::path::Path, bytes: u64) -> Option<PathBuf> {
    if bytes == 0 {
        return None;
    }
    let path = dir.join(".disk_reserve");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    };
    match write() {
        Ok(()) => Some(path),
        Err(err) => {
            let _ = std::fs::remove_file(&path);
            tracing::warn!(message = "could not write the disk reserve", error = %err);
            None
        }
    }
}

pub(in crate::session) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How often the watchdog checks idle agents, the disk, escalations, chaos events and a
/// paused session: every 500 ms of wall time, or a quarter of the scaled idle limit if that is
/// shorter (at least 20 ms).
pub(in crate::session) fn watchdog_period(config: &crate::config::Config) -> Duration {
    Duration::from_secs_f64((idle_limit(config).as_secs_f64() / 4.0).clamp(0.02, 0.5))
}

/// Wall time without activity after which a running agent is `agent_hang`:
/// `[recovery].agent_idle_minutes` scaled, but never under `agent_idle_floor_secs`.
pub(in crate::session) fn idle_limit(config: &crate::config::Config) -> Duration {
    let r = &config.raw.recovery;
    Duration::from_secs_f64(
        (r.agent_idle_minutes * 60.0 / config.time_scale).max(r.agent_idle_floor_secs),
    )
}

/// The disk limits for the filesystem holding `dir`: (free bytes under which it is full,
/// bytes of the ballast reserve). `[recovery].min_free_disk_mb` and `disk_reserve_mb`, but at
/// most 10 % and 5 % of the filesystem, so a small runs filesystem is not full from the start.
pub(in crate::session) fn disk_limits(
    config: &crate::config::Config,
    dir: &std::path::Path,
) -> (u64, u64) {
    let r = &config.raw.recovery;
    let total = nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(u64::MAX);
    (
        (r.min_free_disk_mb << 20).min(total / 10),
        (r.disk_reserve_mb << 20).min(total / 20),
    )
}

/// Free bytes for unprivileged writers on the filesystem holding `path`.
pub(in crate::session) fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// True when `err` (anywhere in its chain) is a full disk, as the typed errors of the store,
/// the checkpoint module and file writes say (SQLITE_FULL, ENOSPC, EDQUOT), or an I/O error.
pub(in crate::session) fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            e.is_disk_full()
        } else if let Some(e) = cause.downcast_ref::<CheckpointError>() {
            e.is_disk_full()
        } else if let Some(e) = cause.downcast_ref::<WriteError>() {
            e.is_disk_full()
        } else {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(crate::store::io_is_disk_full)
        }
    })
}

/// True when `err` is a permission failure (EACCES / EPERM), as the typed errors say, or an
/// I/O error.
pub(in crate::session) fn is_permission_denied(err: &anyhow::Error) -> bool {
    let denied = |io: &std::io::Error| io.kind() == std::io::ErrorKind::PermissionDenied;
    err.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            e.is_permission_denied()
        } else if let Some(e) = cause.downcast_ref::<CheckpointError>() {
            e.is_permission_denied()
        } else if let Some(e) = cause.downcast_ref::<WriteError>() {
            denied(&e.source)
        } else {
            cause.downcast_ref::<std::io::Error>().is_some_and(denied)
        }
    })
}

/// Out-of-memory evidence in an agent's log tail (allocation failures of common runtimes).
pub(in crate::session) fn oom_in_log(tail: &str) -> bool {
    const SIGNS: [&str; 6] = [
        "MemoryError",
        "Cannot allocate memory",
        "out of memory",
        "memory allocation of",
        "std::bad_alloc",
        "JavaScript heap out of memory",
    ];
    SIGNS.iter().any(|s| tail.contains(s))
}

/// Permission failures in an agent's log tail (EACCES / EPERM as the C library, Python and
/// Node print them).
pub(in crate::session) fn permission_denied_in_log(tail: &str) -> bool {
    const SIGNS: [&str; 3] = ["Permission denied", "Operation not permitted", "EACCES"];
    SIGNS.iter().any(|s| tail.contains(s))
}

/// The kernel's count of OOM kills in megatest's cgroup (cgroup v2 `memory.events`), if
/// readable.
pub(in crate::session) fn cgroup_oom_kills() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let events =
        std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.events", path.trim())).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

pub(in crate::session) fn tail_of(path: &std::path::Path, bytes: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
