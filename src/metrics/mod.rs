//! What the metrics sampler measures off the session task: code metrics of the workspace
//! (tokei), files modified since the session started, and memory of the daemon and of each
//! agent's process tree (sysinfo).

pub mod prometheus;

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Lines in the workspace as tokei counts them.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct CodeStats {
    /// Lines of code (not comments or blanks), all languages.
    pub lines_of_code: usize,
    /// Comment lines.
    pub comment_lines: usize,
    /// Blank lines.
    pub blank_lines: usize,
    /// Source files tokei recognised.
    pub files: usize,
    /// Lines of code per language (tokei's language names).
    pub by_language: BTreeMap<String, usize>,
}

/// Count `workspace` with tokei, skipping [`crate::project::GENERATED_DIRS`] and what `.gitignore` ignores.
pub fn code_stats(workspace: &Path) -> CodeStats {
    let mut languages = tokei::Languages::new();
    languages.get_statistics(
        &[workspace],
        crate::project::GENERATED_DIRS,
        &tokei::Config::default(),
    );
    let mut stats = CodeStats::default();
    for (language_type, language) in languages.iter() {
        if language.code == 0 && language.reports.is_empty() {
            continue;
        }
        stats.lines_of_code += language.code;
        stats.comment_lines += language.comments;
        stats.blank_lines += language.blanks;
        stats.files += language.reports.len();
        stats
            .by_language
            .insert(language_type.name().to_string(), language.code);
    }
    stats
}

/// One sample, taken off the session task at each `[monitoring].health_check_interval`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Code statistics of the workspace.
    pub code: CodeStats,
    /// Files in the workspace (generated directories and `.gitignore`d files skipped) whose
    /// modification time is at or after the session start.
    pub files_modified: u64,
    /// Resident memory of megatest itself, bytes.
    pub daemon_memory_bytes: Option<u64>,
    /// Resident memory of each running agent's process tree (leader and descendants), bytes.
    pub agent_memory_bytes: BTreeMap<String, u64>,
}

/// Take a sample: `agents` are (agent id, process group leader pid) of the running agents.
pub fn sample(workspace: &Path, since: std::time::SystemTime, agents: &[(String, u32)]) -> Sample {
    let code = code_stats(workspace);
    let mut files_modified = 0;
    for entry in ignore::WalkBuilder::new(workspace)
        .hidden(false)
        .filter_entry(|e| {
            !crate::project::GENERATED_DIRS.contains(&e.file_name().to_string_lossy().as_ref())
        })
        .build()
        .flatten()
    {
        let modified = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok());
        if modified.is_some_and(|m| m >= since) {
            files_modified += 1;
        }
    }
    let mut system = sysinfo::System::new();
    system.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
    let daemon_memory_bytes = system
        .process(sysinfo::Pid::from_u32(std::process::id()))
        .map(|p| p.memory());
    let agent_memory_bytes = agents
        .iter()
        .map(|(id, leader)| (id.clone(), tree_memory(&system, *leader)))
        .collect();
    Sample {
        code,
        files_modified,
        daemon_memory_bytes,
        agent_memory_bytes,
    }
}

/// Resident memory (bytes) of `leader` and every process descending from it, from a
/// `sysinfo::System` whose processes were refreshed.
pub fn tree_memory(system: &sysinfo::System, leader: u32) -> u64 {
    let leader = sysinfo::Pid::from_u32(leader);
    system
        .processes()
        .values()
        .filter(|p| {
            let mut current = Some(p.pid());
            for _ in 0..64 {
                match current {
                    Some(pid) if pid == leader => return true,
                    Some(pid) => current = system.process(pid).and_then(|p| p.parent()),
                    None => return false,
                }
            }
            false
        })
        .map(|p| p.memory())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_code_lines_and_skips_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.py"), "# comment\nx = 1\n\ny = 2\n").unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::fs::write(dir.path().join("target/b.py"), "z = 3\n").unwrap();
        let stats = code_stats(dir.path());
        assert_eq!(stats.lines_of_code, 2);
        assert_eq!(stats.comment_lines, 1);
        assert_eq!(stats.files, 1);
        assert_eq!(stats.by_language["Python"], 2);
    }

    #[test]
    fn sample_counts_modified_files_and_this_process_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.py"), "x = 1\n").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let since = std::time::SystemTime::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join("new.py"), "y = 2\n").unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let sample = sample(dir.path(), since, &[("a".into(), child.id())]);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(sample.files_modified, 1);
        assert_eq!(sample.code.lines_of_code, 2);
        assert!(sample.daemon_memory_bytes.unwrap() > 1 << 20);
        assert!(sample.agent_memory_bytes["a"] > 0);
    }
}
