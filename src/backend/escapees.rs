//! Processes that left their agent's process group — `setsid`, a double fork, `nohup … &` in a
//! new session — and so outlive the group kill that ends every run.
//!
//! Theory of operation: the daemon is a child subreaper (`PR_SET_CHILD_SUBREAPER`,
//! [`become_subreaper`]), so when such a process's parent dies it becomes megatest's child
//! instead of init's. megatest's own children never leave its session (agents get a new process
//! group, not a new session), so a child of megatest in another session is an escapee.
//! [`sweep`] (the session's watchdog tick, every run's end, the session's end) finds them in
//! `/proc`, reads the agent each belongs to from its environment (`MEGATEST_AGENT_ID`) or its
//! run's cgroup, leaves
//! alone those whose agent's run is still going (a server it started for its own tests), kills
//! the others with their process group, and reaps escapees that died (megatest is their parent
//! now: nobody else would). An escapee whose parent is still alive is not megatest's child yet;
//! it is found once the group kill takes its parent.

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::collections::HashSet;

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// Its session id.
    pub sid: i32,
    /// True when it has exited and waits to be reaped.
    pub zombie: bool,
    /// Its agent (`MEGATEST_AGENT_ID` in its environment), when readable.
    pub agent: Option<String>,
}

/// What to do with one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not an escapee, or its agent is still running.
    Leave,
    /// An escapee whose agent is not running (or unknown): kill it and its group.
    Kill,
    /// A dead escapee: reap it.
    Reap,
}

/// The pure core: what to do with `process`, for a daemon with pid `own_pid` in session
/// `own_sid`, while the agents in `busy` have runs going.
pub fn verdict(
    process: &ProcessInfo,
    own_pid: i32,
    own_sid: i32,
    busy: &HashSet<String>,
) -> Verdict {
    if process.ppid != own_pid || process.sid == own_sid {
        return Verdict::Leave;
    }
    if process.zombie {
        return Verdict::Reap;
    }
    match &process.agent {
        Some(agent) if busy.contains(agent) => Verdict::Leave,
        _ => Verdict::Kill,
    }
}

/// An escapee [`sweep`] killed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Escapee {
    /// Its pid.
    pub pid: i32,
    /// Its agent, when its environment said.
    pub agent: Option<String>,
    /// Its command line (arguments joined by spaces, at most 200 characters).
    pub command: String,
}

/// Make this process the subreaper of its descendants (Linux ≥ 3.4). False (logged) when the
/// kernel refuses: escapees then go to init and are not stopped.
pub fn become_subreaper() -> bool {
    match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(message = "cannot become a child subreaper: agents' detached processes may outlive the session", error = %err);
            false
        }
    }
}

/// Kill the escapees whose agent is not in `busy` (empty at the session's end: all of them),
/// reap dead ones; returns those killed.
pub fn sweep(busy: &HashSet<String>) -> Vec<Escapee> {
    let own_pid = std::process::id() as i32;
    let Ok(own_sid) = nix::unistd::getsid(None).map(Pid::as_raw) else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for process in children(own_pid) {
        match verdict(&process, own_pid, own_sid, busy) {
            Verdict::Leave => {}
            Verdict::Reap => {
                let _ = waitpid(Pid::from_raw(process.pid), Some(WaitPidFlag::WNOHANG));
            }
            Verdict::Kill => {
                let pid = Pid::from_raw(process.pid);
                let command = command_line(process.pid);
                let _ = killpg(pid, Signal::SIGKILL);
                if kill(pid, Signal::SIGKILL).is_ok() {
                    killed.push(Escapee {
                        pid: process.pid,
                        agent: process.agent.clone(),
                        command,
                    });
                }
                // SIGKILL is immediate unless the process is in uninterruptible sleep; a zombie
                // left now is reaped by the next sweep.
                let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
            }
        }
    }
    killed
}

/// megatest's children as `/proc` lists them (vanished processes are skipped).
fn children(own_pid: i32) -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (state, ppid, sid) = parse_stat(&stat)?;
            (ppid == own_pid).then(|| ProcessInfo {
                pid,
                ppid,
                sid,
                zombie: state == 'Z' || state == 'X',
                agent: agent_of(pid),
            })
        })
        .collect()
}

/// (state, ppid, session id) from `/proc/<pid>/stat` (`pid (comm) state ppid pgrp session …`;
/// `comm` may hold spaces and parentheses, so fields are counted after the last `)`).
fn parse_stat(stat: &str) -> Option<(char, i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let _pgrp = fields.next()?;
    let sid = fields.next()?.parse().ok()?;
    Some((state, ppid, sid))
}

/// The agent of process `pid`: `MEGATEST_AGENT_ID` in its environment, or else its run's
/// cgroup (a process in bubblewrap's user namespace does not show megatest its environment).
fn agent_of(pid: i32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .and_then(|environ| {
            environ
                .split(|b| *b == 0)
                .find_map(|var| var.strip_prefix(b"MEGATEST_AGENT_ID="))
                .map(|id| String::from_utf8_lossy(id).into_owned())
        })
        .or_else(|| super::cgroup::agent_of_process(pid))
}

/// Process `pid`'s command line (arguments joined by spaces, at most 200 characters).
pub fn command_line(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let line: String = raw
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_megatests_children_outside_its_session_are_escapees() {
        let busy: HashSet<String> = ["agent-1".to_string()].into();
        let process = |ppid, sid, zombie, agent: Option<&str>| ProcessInfo {
            pid: 500,
            ppid,
            sid,
            zombie,
            agent: agent.map(str::to_string),
        };
        let (me, my_sid) = (100, 90);
        let cases = [
            // An agent's leader or a check: megatest's child in megatest's session.
            (process(me, my_sid, false, Some("agent-0")), Verdict::Leave),
            // Someone else's child.
            (process(7, 500, false, Some("agent-0")), Verdict::Leave),
            // Adopted after `setsid`: its agent's run is over, or it does not say.
            (process(me, 500, false, Some("agent-0")), Verdict::Kill),
            (process(me, 500, false, None), Verdict::Kill),
            // Its agent still runs: a server it started for its own tests.
            (process(me, 500, false, Some("agent-1")), Verdict::Leave),
            // Dead: reaped whatever its agent.
            (process(me, 500, true, Some("agent-1")), Verdict::Reap),
            (process(me, my_sid, true, None), Verdict::Leave),
        ];
        for (process, want) in cases {
            assert_eq!(verdict(&process, me, my_sid, &busy), want, "{process:?}");
        }
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(
            parse_stat("4242 (sh) S 100 4242 4242 0 -1 4194560 …"),
            Some(('S', 100, 4242))
        );
        assert_eq!(parse_stat("77 (a) b (c)) Z 1 77 60 0"), Some(('Z', 1, 60)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
