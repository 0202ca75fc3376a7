//! Process states read from `/proc/<pid>/stat` (used by the local backend, its cgroups and
//! the daemon's liveness checks).

/// True if process `pid` exists and is not a zombie (reads `/proc/<pid>/stat`).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // The state follows the parenthesised command name, which may itself hold spaces.
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            !matches!(state, Some('Z') | Some('X'))
        }
    }
}

/// True if process `pid` is stopped (state `T`: SIGSTOP, by megatest or anyone else).
pub fn process_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('T')
    })
}
