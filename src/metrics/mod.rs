//! Code metrics of the workspace, measured with tokei (lines of code per language).

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Lines in the workspace as tokei counts them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CodeStats {
    /// Lines of code (not comments or blanks), all languages.
    pub lines_of_code: usize,
    pub comment_lines: usize,
    pub blank_lines: usize,
    /// Source files tokei recognised.
    pub files: usize,
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
}
