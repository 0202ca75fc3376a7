//! An acceptance suite on disk: `projects/<type>/acceptance/` with `suite.toml` (its reference
//! implementation and mutants), `requirements.txt` (the tools megatest installs into the venv it
//! manages) and pytest cases. The suite is never copied into a workspace or named in a prompt.

use crate::project::SpecError;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The acceptance suite's directory inside a project spec directory.
pub const ACCEPTANCE_SUBDIR: &str = "acceptance";

/// The pytest plugin every suite runs with, relative to the projects directory (the spec
/// directory's parent): `acceptance_support/megatest_acceptance.py`.
pub const SUPPORT_SUBDIR: &str = "acceptance_support";

/// A suite that cannot be used: a file that cannot be read or is invalid (the same shapes as a
/// project spec's), or a mutant that does not apply.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// A file of the suite cannot be read, or `suite.toml` is not valid.
    #[error(transparent)]
    File(#[from] SpecError),
    /// A mutant's `find` text does not occur exactly once in its file.
    #[error("mutant {name}: `find` occurs {count} times in {file} (it must occur exactly once)")]
    MutantDoesNotApply {
        /// The mutant.
        name: String,
        /// The file it edits.
        file: PathBuf,
        /// How often `find` occurs.
        count: usize,
    },
}

fn unreadable(path: &Path, source: std::io::Error) -> SuiteError {
    SuiteError::File(SpecError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

fn invalid(path: &Path, problem: impl Into<String>) -> SuiteError {
    SuiteError::File(SpecError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    })
}

/// `suite.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    reference: String,
    #[serde(default)]
    mutants: Vec<Mutant>,
}

/// The reference implementation with one injected bug: `find` (which must occur exactly once
/// in `file`) replaced by `replace`. At least one case of the suite must fail on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutant {
    /// Short name, e.g. `fifo-reversed`.
    pub name: String,
    /// The file it edits, relative to the reference's root.
    pub file: PathBuf,
    /// The text replaced.
    pub find: String,
    /// What replaces it.
    pub replace: String,
}

/// A loaded acceptance suite.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The suite's directory (`…/projects/<type>/acceptance`).
    pub dir: PathBuf,
    /// The directory holding the shared pytest plugin.
    pub support_dir: PathBuf,
    /// The suite's `requirements.txt`.
    pub requirements: PathBuf,
    /// The reference implementation's root (passes every case).
    pub reference: PathBuf,
    /// The mutants (each fails at least one case).
    pub mutants: Vec<Mutant>,
}

impl Suite {
    /// The suite of the project spec in `spec_dir`, or None when the spec has none.
    pub fn of_spec(spec_dir: &Path) -> Result<Option<Suite>, SuiteError> {
        let dir = spec_dir.join(ACCEPTANCE_SUBDIR);
        let file = dir.join("suite.toml");
        if !file.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&file).map_err(|source| unreadable(&file, source))?;
        let parsed: SuiteFile =
            toml::from_str(&text).map_err(|err| invalid(&file, err.to_string()))?;
        let requirements = dir.join("requirements.txt");
        if !requirements.exists() {
            return Err(invalid(
                &requirements,
                "missing: the suite's tools (at least pytest) are listed there",
            ));
        }
        let projects_dir = spec_dir.parent().unwrap_or(spec_dir);
        Ok(Some(Suite {
            reference: dir.join(&parsed.reference),
            support_dir: projects_dir.join(SUPPORT_SUBDIR),
            requirements,
            mutants: parsed.mutants,
            dir,
        }))
    }
}

impl Mutant {
    /// Inject the bug into a copy of the reference rooted at `root`.
    pub fn apply(&self, root: &Path) -> Result<(), SuiteError> {
        let path = root.join(&self.file);
        let text = std::fs::read_to_string(&path).map_err(|source| unreadable(&path, source))?;
        let count = text.matches(&self.find).count();
        if count != 1 {
            return Err(SuiteError::MutantDoesNotApply {
                name: self.name.clone(),
                file: self.file.clone(),
                count,
            });
        }
        std::fs::write(&path, text.replacen(&self.find, &self.replace, 1))
            .map_err(|source| unreadable(&path, source))
    }
}

/// Copy the directory tree `from` to `to` (files, directories, symlinks as links; everything,
/// `target/` included: a reference may ship its start program there).
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let kind = entry.file_type()?;
        let target = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mutant_must_match_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.py"), "x = 1\ny = 1\n").unwrap();
        let mutant = |find: &str| Mutant {
            name: "m".into(),
            file: "a.py".into(),
            find: find.into(),
            replace: "z = 2".into(),
        };
        assert!(matches!(
            mutant("= 1").apply(dir.path()),
            Err(SuiteError::MutantDoesNotApply { count: 2, .. })
        ));
        assert!(matches!(
            mutant("w = 3").apply(dir.path()),
            Err(SuiteError::MutantDoesNotApply { count: 0, .. })
        ));
        mutant("x = 1").apply(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.py")).unwrap(),
            "z = 2\ny = 1\n"
        );
    }

    #[test]
    fn every_shipped_suite_loads() {
        let projects = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::project::PROJECTS_SUBDIR);
        let quickstart = Suite::of_spec(&projects.join("quickstart"))
            .unwrap()
            .unwrap();
        assert!(quickstart.reference.join("tinyq").is_dir());
        assert!(quickstart.mutants.len() >= 5);
        assert!(quickstart
            .support_dir
            .join("megatest_acceptance.py")
            .is_file());
    }
}
