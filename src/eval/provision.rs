//! What megatest installs for its evaluations, from the package registries:
//!
//! - Python virtual environments for acceptance suites and evaluation tools (pytest, redis-py,
//!   httpx, coverage.py, interrogate, bandit, …): one per distinct `requirements.txt`, under
//!   `<runs_dir>/.venvs` (or `MEGATEST_VENV_DIR`), created with `python3 -m venv` and filled with
//!   `pip install -r` from PyPI.
//! - Cargo tools ([`CARGO_TOOLS`]: cargo-tarpaulin for Rust coverage), only when allowed
//!   (`[evaluation].install_tools`, `megatest evaluate --install-tools`): one directory per tool
//!   and version under `<runs_dir>/.tools` (or `MEGATEST_TOOLS_DIR`), filled with
//!   `cargo install --locked --root` from crates.io (minutes of compiling, once).
//!
//! Either is used only once its `.megatest-complete` marker exists; a half-made one (a crash, a
//! failed install) is removed and made again. A lock file serialises concurrent makers.

use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Written last into a venv whose install finished.
const COMPLETE_MARKER: &str = ".megatest-complete";

/// Bytes of pip's output kept in an error.
const OUTPUT_TAIL: usize = 1500;

/// Why a venv or a tool could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A file or directory of the venv root could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `python3 -m venv`, `pip install` or `cargo install` failed (no python3, no venv module,
    /// no network to the registry, a compile error).
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit and the tail of its output.
        output: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The venv root: `MEGATEST_VENV_DIR` when set, else `<runs_dir>/.venvs`.
pub fn venv_root(runs_dir: &Path) -> PathBuf {
    match std::env::var_os("MEGATEST_VENV_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => runs_dir.join(".venvs"),
    }
}

/// The venv's directory for `requirements` under `root`: `<label>-<first 12 hex digits of the
/// file's SHA-256>`, so a changed requirements file gets a fresh venv.
pub fn venv_dir(root: &Path, label: &str, requirements: &[u8]) -> PathBuf {
    let digest = hex::encode(sha2::Sha256::digest(requirements));
    root.join(format!("{label}-{}", &digest[..12]))
}

/// The venv for `requirements_file` under `root`, made when missing (blocking: seconds to
/// minutes on the first call, instant afterwards). Returns its directory; its interpreter is
/// `<dir>/bin/python`.
pub fn ensure(
    root: &Path,
    label: &str,
    requirements_file: &Path,
) -> Result<PathBuf, ProvisionError> {
    let requirements = std::fs::read(requirements_file).map_err(io(requirements_file))?;
    let dir = venv_dir(root, label, &requirements);
    made_once(root, label, &dir, &requirements, |dir| {
        run(Command::new("python3").arg("-m").arg("venv").arg(dir))?;
        run(Command::new(dir.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(requirements_file))
    })
}

/// The cargo tools megatest may install: (crate, version).
/// cargo-tarpaulin measures Rust line coverage without llvm-tools (ptrace engine).
pub const CARGO_TOOLS: &[(&str, &str)] = &[("cargo-tarpaulin", "0.37.5")];

/// `MEGATEST_TOOLS_DIR` when set, else `<runs_dir>/.tools`.
pub fn tools_root(runs_dir: &Path) -> PathBuf {
    match std::env::var_os("MEGATEST_TOOLS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => runs_dir.join(".tools"),
    }
}

/// The `bin` directory of cargo tool `krate` (one of [`CARGO_TOOLS`]) under `root`, installed
/// with `cargo install --locked` when missing (blocking: minutes of compiling on the first call,
/// instant afterwards).
///
/// Errors: `krate` is not one of [`CARGO_TOOLS`], or the install failed.
pub fn ensure_cargo_tool(root: &Path, krate: &str) -> Result<PathBuf, ProvisionError> {
    let Some((dir, version)) = cargo_tool_dir(root, krate) else {
        return Err(ProvisionError::Command {
            command: format!("cargo install {krate}"),
            output: "not a tool megatest installs".into(),
        });
    };
    made_once(root, krate, &dir, version.as_bytes(), |dir| {
        run(Command::new("cargo")
            .args([
                "install",
                "--locked",
                "--quiet",
                "--version",
                version,
                krate,
            ])
            .arg("--root")
            .arg(dir)
            .env("CARGO_TARGET_DIR", dir.join("build")))?;
        std::fs::remove_dir_all(dir.join("build")).map_err(io(dir))
    })?;
    Ok(dir.join("bin"))
}

/// The cargo tool `krate`'s `bin` directory under `root` if it is installed there.
pub fn installed_cargo_tool(root: &Path, krate: &str) -> Option<PathBuf> {
    let (dir, _) = cargo_tool_dir(root, krate)?;
    dir.join(COMPLETE_MARKER).exists().then(|| dir.join("bin"))
}

/// `<root>/<krate>-<version>` and the version, for a tool of [`CARGO_TOOLS`].
fn cargo_tool_dir(root: &Path, krate: &str) -> Option<(PathBuf, &'static str)> {
    let (_, version) = CARGO_TOOLS.iter().find(|(name, _)| *name == krate)?;
    Some((root.join(format!("{krate}-{version}")), version))
}

/// `dir` under `root`, made by `make` unless its marker says it is complete; `key` is written
/// into the marker. Concurrent callers (sessions, `megatest evaluate`) wait for one maker.
fn made_once(
    root: &Path,
    label: &str,
    dir: &Path,
    key: &[u8],
    make: impl FnOnce(&Path) -> Result<(), ProvisionError>,
) -> Result<PathBuf, ProvisionError> {
    if dir.join(COMPLETE_MARKER).exists() {
        return Ok(dir.to_path_buf());
    }
    std::fs::create_dir_all(root).map_err(io(root))?;
    let lock_path = root.join(format!(".{label}.lock"));
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, errno)| ProvisionError::Io {
            path: lock_path.clone(),
            source: std::io::Error::from(errno),
        },
    )?;
    if dir.join(COMPLETE_MARKER).exists() {
        return Ok(dir.to_path_buf()); // made by another process while this one waited
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    make(dir)?;
    std::fs::write(dir.join(COMPLETE_MARKER), key).map_err(io(dir))?;
    Ok(dir.to_path_buf())
}

fn run(command: &mut Command) -> Result<(), ProvisionError> {
    let line = format!("{command:?}").replace('"', "");
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|err| ProvisionError::Command {
            command: line.clone(),
            output: format!("cannot start: {err}"),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    // pip's last lines say what failed (its retries before them are noise).
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines[lines.len().saturating_sub(2)..].join(" | ");
    let start = last.len().saturating_sub(OUTPUT_TAIL);
    let start = (start..last.len())
        .find(|i| last.is_char_boundary(*i))
        .unwrap_or(last.len());
    let text = last[start..].to_string();
    Err(ProvisionError::Command {
        command: line,
        output: format!("{}: {}", output.status, text.trim()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venv_directory_follows_the_requirements() {
        let root = Path::new("/r");
        let a = venv_dir(root, "quickstart", b"pytest==9.2.0\n");
        assert_eq!(a, venv_dir(root, "quickstart", b"pytest==9.2.0\n"));
        assert_ne!(a, venv_dir(root, "quickstart", b"pytest==9.1.0\n"));
        assert!(a.starts_with(root));
        assert!(a
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("quickstart-"));
    }

    #[test]
    fn a_failed_install_says_what_failed_and_leaves_no_complete_venv() {
        let root = tempfile::tempdir().unwrap();
        let requirements = root.path().join("requirements.txt");
        // A local path that does not exist: pip fails without touching the network.
        std::fs::write(&requirements, "./no-such-package-dir\n").unwrap();
        let err = ensure(root.path(), "broken", &requirements).unwrap_err();
        assert!(matches!(err, ProvisionError::Command { .. }), "{err}");
        let dir = venv_dir(
            root.path(),
            "broken",
            &std::fs::read(&requirements).unwrap(),
        );
        assert!(!dir.join(COMPLETE_MARKER).exists());
    }
}
