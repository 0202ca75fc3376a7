//! One evaluation of a project directory: the spec's build and test commands, the hidden
//! acceptance suite, coverage, documentation coverage, the security scan, code statistics and
//! the performance figures. `megatest evaluate` and the session's phase ends run the same code.

use super::acceptance::{self, AcceptanceReport, BugCounts};
use super::measure::{self, DocCoverage, SecurityScan};
use super::suite::Suite;
use super::{provision, run_check_env};
use crate::figure::Figure;
use crate::metrics::CodeStats;
use crate::project::ProjectSpec;
use crate::store::CheckRow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What an evaluation needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The project type (`quickstart`, `task_queue`, …).
    pub project_type: String,
    /// Its spec (commands, language, directory).
    pub spec: ProjectSpec,
    /// The project under test.
    pub project_dir: PathBuf,
    /// Where results and scratch files go (created; one directory per evaluation).
    pub out_dir: PathBuf,
    /// Where megatest keeps its venvs (see [`provision::venv_root`]).
    pub venv_root: PathBuf,
    /// Where megatest keeps the tools it installs (see [`provision::tools_root`]).
    pub tools_root: PathBuf,
    /// Install a missing coverage tool (`[evaluation].install_tools`).
    pub install_tools: bool,
    /// Wall-clock bound of each command and of the acceptance suite.
    pub timeout: Duration,
    /// Run the acceptance suite (and the language tools from its venv).
    pub acceptance: bool,
    /// Stop the suite at its first failing case.
    pub fail_fast: bool,
}

/// Performance figures of the produced project (`[project.performance]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PerformanceReport {
    /// Wall seconds of the build check (null when it failed or did not run).
    pub build_secs: Figure<f64>,
    /// Wall seconds of the test check (null when it failed or did not run).
    pub test_secs: Figure<f64>,
    /// Peak resident memory of the started server during the acceptance run, MiB.
    pub memory_usage_mb: Figure<f64>,
    /// Size of the built binary the start command runs, MiB.
    pub binary_size_mb: Figure<f64>,
    /// What the acceptance suite measured (throughput and its ratio to the reference system).
    pub measured: BTreeMap<String, acceptance::Measurement>,
}

/// The result of one evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    /// The project type.
    pub project_type: String,
    /// The project directory evaluated.
    pub project_dir: String,
    /// The phase whose end it judged (`evaluate` for `megatest evaluate`).
    pub phase: String,
    /// The build and test checks (absent when the build was skipped with `--no-build`).
    pub checks: Vec<CheckRow>,
    /// The acceptance suite's result.
    pub acceptance: AcceptanceReport,
    /// Line coverage (0–1).
    pub test_coverage: Figure<f64>,
    /// Documentation coverage of public items.
    pub doc_coverage: DocCoverage,
    /// Security scan.
    pub security: SecurityScan,
    /// Code statistics (tokei).
    pub code: Figure<CodeStats>,
    /// Performance figures.
    pub performance: PerformanceReport,
    /// Bugs: failed acceptance cases plus security findings, by severity.
    pub bugs: BugCounts,
    /// Wall seconds the evaluation took.
    pub wall_secs: f64,
}

impl Evaluation {
    /// The check named `name` (`build`, `test`).
    pub fn check(&self, name: &str) -> Option<&CheckRow> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The figures the acceptance suite measured against a target: (name, value, target).
    pub fn targeted_measurements(&self) -> Vec<(&str, f64, f64)> {
        self.performance
            .measured
            .iter()
            .filter_map(|(name, m)| Some((name.as_str(), m.value?, m.target?)))
            .collect()
    }
}

/// The acceptance run as a check row (`name: "acceptance"`), for the checkpoints'
/// `test_results`: passed when every case passed; the output holds the summary and the failing
/// cases.
pub fn acceptance_row(eval: &Evaluation) -> CheckRow {
    let acceptance = &eval.acceptance;
    let mut output = format!(
        "{} of {} cases passed; bugs: {} critical, {} high, {} medium",
        acceptance.passed,
        acceptance.total,
        acceptance.bugs.critical,
        acceptance.bugs.high,
        acceptance.bugs.medium
    );
    if let Some(reason) = &acceptance.reason {
        output.push_str(&format!("\n{reason}"));
    }
    for case in acceptance.cases.iter().filter(|c| c.outcome == "failed") {
        output.push_str(&format!("\nFAIL [{}] {}", case.severity, case.name));
    }
    CheckRow {
        phase: eval.phase.clone(),
        name: "acceptance".into(),
        command: format!("pytest {} (hidden acceptance suite)", acceptance.suite),
        exit_code: None,
        passed: acceptance.status == "passed",
        timed_out: false,
        wall_secs: acceptance.wall_secs,
        output_tail: super::tail(output.as_bytes()),
    }
}

/// Run the spec's build and test commands (unless `build` is false: then what is in the
/// directory is evaluated as it is, and the project's own tests, which would rebuild it, are not
/// run either), then [`complete`].
pub async fn evaluate(ctx: &Context, phase: &str, build: bool) -> Evaluation {
    let mut checks = Vec::new();
    let commands = &ctx.spec.commands;
    if build {
        for (name, command) in [("build", &commands.build), ("test", &commands.test)] {
            checks
                .push(super::run_check(phase, name, command, &ctx.project_dir, ctx.timeout).await);
        }
    }
    complete(ctx, phase, checks).await
}

/// Everything after the build and test checks: the acceptance suite (told when the build
/// failed), coverage, documentation coverage, the security scan, code statistics and
/// performance. Never fails: what could not be measured is null with the reason.
pub async fn complete(ctx: &Context, phase: &str, checks: Vec<CheckRow>) -> Evaluation {
    let started = Instant::now();
    let suite = Suite::of_spec(&ctx.spec.dir);
    // The suite's venv also carries the language tools (coverage.py, interrogate, bandit).
    let venv: Result<PathBuf, String> = match (&suite, ctx.acceptance) {
        (Ok(Some(suite)), true) => {
            let (root, label, requirements) = (
                ctx.venv_root.clone(),
                ctx.project_type.clone(),
                suite.requirements.clone(),
            );
            match tokio::task::spawn_blocking(move || {
                provision::ensure(&root, &label, &requirements)
            })
            .await
            {
                Ok(Ok(dir)) => Ok(dir),
                Ok(Err(err)) => Err(format!(
                    "cannot make the evaluation venv (pip install from PyPI): {err}"
                )),
                Err(err) => Err(format!("making the evaluation venv panicked: {err}")),
            }
        }
        (Ok(Some(_)), false) => Err("the acceptance suite is switched off".into()),
        (Ok(None), _) => Err(format!(
            "the project spec {} has no acceptance suite",
            ctx.spec.dir.display()
        )),
        (Err(err), _) => Err(err.to_string()),
    };
    let build_failure = checks
        .iter()
        .find(|c| c.name == "build" && !c.passed)
        .map(super::describe_check);
    let acceptance = match (&suite, &venv) {
        (Ok(Some(suite)), Ok(venv)) => {
            acceptance::run(acceptance::RunSpec {
                suite,
                venv,
                project_dir: &ctx.project_dir,
                start_command: ctx.spec.commands.start.as_deref().unwrap_or(""),
                build_failure: build_failure.as_deref(),
                out_dir: &ctx.out_dir,
                timeout: ctx.timeout,
                fail_fast: ctx.fail_fast,
            })
            .await
        }
        (_, Err(reason)) => {
            AcceptanceReport::not_run(&ctx.spec.dir.join(super::suite::ACCEPTANCE_SUBDIR), reason)
        }
        (_, Ok(_)) => AcceptanceReport::not_run(&ctx.spec.dir, "no acceptance suite"),
    };
    let venv_bin = venv.as_ref().ok().map(|v| v.join("bin"));
    let tools_missing = venv.as_ref().err().cloned();
    let test_coverage = coverage(ctx, phase, venv_bin.as_deref(), tools_missing.as_deref()).await;
    let (doc_coverage, security) = if ctx.spec.language == "rust" {
        let dir = ctx.project_dir.clone();
        let counts = tokio::task::spawn_blocking(move || measure::count_rust_project(&dir))
            .await
            .unwrap_or_default();
        (
            measure::rust_doc_coverage(&counts),
            rust_security(ctx, phase, &counts, &checks).await,
        )
    } else if ctx.spec.language == "python" {
        python_measures(ctx, venv_bin.as_deref(), tools_missing.as_deref()).await
    } else {
        let reason = format!("no documentation tool for language {}", ctx.spec.language);
        (
            DocCoverage {
                fraction: Figure::missing(reason),
                method: String::new(),
            },
            no_scan(&format!(
                "no security scanner for language {}",
                ctx.spec.language
            )),
        )
    };
    let dir = ctx.project_dir.clone();
    let code = match tokio::task::spawn_blocking(move || crate::metrics::code_stats(&dir)).await {
        Ok(stats) => Figure::measured(stats),
        Err(err) => Figure::missing(format!("counting lines failed: {err}")),
    };
    let performance = performance(ctx, &checks, &acceptance);
    let mut bugs = acceptance.bugs;
    if let Some(found) = security.findings.value {
        bugs.critical += found.critical;
        bugs.high += found.high;
        bugs.medium += found.medium;
    }
    Evaluation {
        project_type: ctx.project_type.clone(),
        project_dir: ctx.project_dir.display().to_string(),
        phase: phase.to_string(),
        checks,
        acceptance,
        test_coverage,
        doc_coverage,
        security,
        code,
        performance,
        bugs,
        wall_secs: started.elapsed().as_secs_f64(),
    }
}

/// The PATH of evaluation commands: the venv's `bin` first (so `python3 -m coverage` finds the
/// venv's coverage.py), then megatest's own PATH.
fn env_with_venv(ctx: &Context, venv_bin: Option<&Path>) -> Vec<(String, String)> {
    vec![
        ("PATH".into(), path_with(venv_bin)),
        (
            "COVERAGE_FILE".into(),
            ctx.out_dir.join(".coverage").display().to_string(),
        ),
    ]
}

async fn coverage(
    ctx: &Context,
    phase: &str,
    venv_bin: Option<&Path>,
    tools_missing: Option<&str>,
) -> Figure<f64> {
    if let Some(command) = &ctx.spec.commands.coverage {
        if ctx.spec.language == "python" {
            if let Some(reason) = tools_missing {
                return Figure::missing(format!("coverage.py is not available: {reason}"));
            }
        }
        let env = env_with_venv(ctx, venv_bin);
        let row = run_check_env(
            phase,
            "coverage",
            command,
            &ctx.project_dir,
            ctx.timeout,
            &env,
        )
        .await;
        return match (row.passed, super::parse_coverage(&row.output_tail)) {
            (true, Some(fraction)) => Figure::measured(fraction),
            (true, None) => {
                Figure::missing("the coverage command printed no percentage on its last line")
            }
            (false, _) => Figure::missing(format!(
                "the coverage command failed: {}",
                super::describe_check(&row)
            )),
        };
    }
    if ctx.spec.language == "rust" {
        let env = match tarpaulin(ctx, phase).await {
            Ok(env) => env,
            Err(reason) => return Figure::missing(reason),
        };
        let row = run_check_env(
            phase,
            "coverage",
            "cargo tarpaulin --skip-clean --timeout 120 --target-dir target/tarpaulin",
            &ctx.project_dir,
            ctx.timeout,
            &env,
        )
        .await;
        return match measure::parse_tarpaulin(&row.output_tail) {
            Some(fraction) if row.passed => Figure::measured(fraction),
            _ => Figure::missing(format!(
                "cargo tarpaulin failed: {}",
                super::describe_check(&row)
            )),
        };
    }
    Figure::missing(format!(
        "no coverage command in the spec and no coverage tool for language {}",
        ctx.spec.language
    ))
}

/// megatest's PATH with `bin` first, when given.
fn path_with(bin: Option<&Path>) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    match bin {
        Some(bin) => format!("{}:{path}", bin.display()),
        None => path,
    }
}

/// The environment under which `cargo tarpaulin` runs: megatest's PATH when it has
/// cargo-tarpaulin, else the PATH with the copy megatest installed (installing it first when
/// `install_tools` allows). Err: why there is none, and how to get it.
async fn tarpaulin(ctx: &Context, phase: &str) -> Result<Vec<(String, String)>, String> {
    let krate = "cargo-tarpaulin";
    let probe = |env: Vec<(String, String)>| async move {
        let row = run_check_env(
            phase,
            "coverage",
            "cargo tarpaulin --version",
            &ctx.project_dir,
            ctx.timeout,
            &env,
        )
        .await;
        row.passed.then_some(env)
    };
    if let Some(env) = probe(Vec::new()).await {
        return Ok(env);
    }
    let bin = match provision::installed_cargo_tool(&ctx.tools_root, krate) {
        Some(bin) => bin,
        None if ctx.install_tools => {
            let root = ctx.tools_root.clone();
            tracing::info!(message = "installing cargo-tarpaulin for coverage (once; minutes of compiling)", root = %root.display());
            match tokio::task::spawn_blocking(move || provision::ensure_cargo_tool(&root, krate))
                .await
            {
                Ok(Ok(bin)) => bin,
                Ok(Err(err)) => return Err(format!("installing cargo-tarpaulin failed: {err}")),
                Err(panic) => return Err(format!("installing cargo-tarpaulin failed: {panic}")),
            }
        }
        None => {
            return Err(format!(
                "cargo-tarpaulin is not installed: set `[evaluation] install_tools = true` (or \
                 `megatest evaluate --install-tools`) to have megatest install it into {}, or \
                 run `cargo install cargo-tarpaulin`",
                ctx.tools_root.display()
            ))
        }
    };
    probe(vec![("PATH".to_string(), path_with(Some(&bin)))])
        .await
        .ok_or_else(|| {
            format!(
                "cargo-tarpaulin in {} does not run (`cargo tarpaulin --version` failed)",
                bin.display()
            )
        })
}

fn no_scan(reason: &str) -> SecurityScan {
    SecurityScan {
        method: String::new(),
        unsafe_count: Figure::missing(reason),
        findings: Figure::missing(reason),
        lints: Figure::missing(reason),
        advisories: Figure::missing(reason),
        details: Vec::new(),
    }
}

/// The Rust security scan: `unsafe` sites (syn, each high), clippy's `correctness` (high) and
/// `suspicious` (medium) lints when the build passed, and `cargo audit` (each vulnerable
/// dependency high) when cargo-audit and a local advisory database exist.
async fn rust_security(
    ctx: &Context,
    phase: &str,
    counts: &measure::RustCounts,
    checks: &[CheckRow],
) -> SecurityScan {
    let unsafe_count = counts.unsafe_sites.len() as u64;
    let mut findings = BugCounts {
        critical: 0,
        high: unsafe_count,
        medium: 0,
    };
    let mut methods = vec!["syn: unsafe blocks, fns, impls and traits (each high)".to_string()];
    let mut details: Vec<String> = counts.unsafe_sites.clone();
    let lints = match checks.iter().find(|c| c.name == "build") {
        Some(build) if build.passed => match clippy(ctx, phase).await {
            Ok((found, lines)) => {
                findings.high += found.high;
                findings.medium += found.medium;
                details.extend(lines);
                methods
                    .push("clippy: correctness lints (high) and suspicious lints (medium)".into());
                Figure::measured(found.total())
            }
            Err(reason) => Figure::missing(reason),
        },
        Some(build) => Figure::missing(format!(
            "clippy did not run: the build failed: {}",
            super::describe_check(build)
        )),
        None => Figure::missing("clippy did not run: --no-build (clippy compiles the project)"),
    };
    let advisories = match cargo_audit(ctx, phase).await {
        Ok((count, lines)) => {
            findings.high += count;
            details.extend(lines);
            methods.push("cargo audit (each vulnerable dependency high)".into());
            Figure::measured(count)
        }
        Err(reason) => Figure::missing(reason),
    };
    details.truncate(20);
    SecurityScan {
        method: methods.join("; "),
        unsafe_count: Figure::measured(unsafe_count),
        findings: Figure::measured(findings),
        lints,
        advisories,
        details,
    }
}

/// clippy's `correctness` and `suspicious` groups only, over every target, offline (the build
/// fetched the dependencies); the JSON diagnostics go to `clippy.json` in the evaluation's
/// directory.
async fn clippy(ctx: &Context, phase: &str) -> Result<(BugCounts, Vec<String>), String> {
    // The lint listing names each lint's group (without it every lint counts as medium).
    let listing = ctx.out_dir.join("clippy-lints.txt");
    run_check_env(
        phase,
        "security",
        &format!(
            "clippy-driver -W help > {}",
            shell_quote(&listing.display().to_string())
        ),
        &ctx.project_dir,
        ctx.timeout,
        &[],
    )
    .await;
    let groups = measure::parse_lint_groups(&std::fs::read_to_string(&listing).unwrap_or_default());
    let out = ctx.out_dir.join("clippy.json");
    let row = run_check_env(
        phase,
        "security",
        &format!(
            "cargo clippy --offline --quiet --all-targets --message-format=json -- \
             -A clippy::all -W clippy::correctness -W clippy::suspicious > {}",
            shell_quote(&out.display().to_string())
        ),
        &ctx.project_dir,
        ctx.timeout,
        &[],
    )
    .await;
    if !row.passed {
        return Err(format!(
            "cargo clippy failed: {}",
            super::describe_check(&row)
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|err| format!("{}: {err}", out.display()))?;
    Ok(measure::parse_clippy(&text, &groups))
}

/// `cargo audit` against the local advisory database (`~/.cargo/advisory-db`, never fetched:
/// the evaluation runs offline). Err: why it did not run.
async fn cargo_audit(ctx: &Context, phase: &str) -> Result<(u64, Vec<String>), String> {
    let probe = run_check_env(
        phase,
        "security",
        "cargo audit --version",
        &ctx.project_dir,
        ctx.timeout,
        &[],
    )
    .await;
    if !probe.passed {
        return Err(
            "cargo-audit is not installed (install it with `cargo install cargo-audit --locked`)"
                .into(),
        );
    }
    let db = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cargo/advisory-db"))
        .filter(|db| db.is_dir());
    let Some(db) = db else {
        return Err(
            "no local advisory database at ~/.cargo/advisory-db (cargo audit fetches it from GitHub; the evaluation does not)"
                .into(),
        );
    };
    let out = ctx.out_dir.join("cargo-audit.json");
    // Exit 1 means vulnerabilities were found; the report says how many.
    let row = run_check_env(
        phase,
        "security",
        &format!(
            "cargo audit --no-fetch --stale --db {} --json > {}",
            shell_quote(&db.display().to_string()),
            shell_quote(&out.display().to_string())
        ),
        &ctx.project_dir,
        ctx.timeout,
        &[],
    )
    .await;
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    measure::parse_cargo_audit(&text).ok_or_else(|| {
        format!(
            "cargo audit wrote no report: {}",
            super::describe_check(&row)
        )
    })
}

async fn python_measures(
    ctx: &Context,
    venv_bin: Option<&Path>,
    tools_missing: Option<&str>,
) -> (DocCoverage, SecurityScan) {
    let method = "interrogate: public functions, classes and modules with a docstring (tests/ \
                  excluded)"
        .to_string();
    let Some(bin) = venv_bin else {
        let reason = format!(
            "interrogate and bandit are not available: {}",
            tools_missing.unwrap_or("no venv")
        );
        return (
            DocCoverage {
                fraction: Figure::missing(reason.clone()),
                method,
            },
            no_scan(&reason),
        );
    };
    let env = env_with_venv(ctx, venv_bin);
    let doc = run_check_env(
        "evaluate",
        "doc_coverage",
        "interrogate --fail-under 0 --ignore-private --ignore-semiprivate --ignore-magic \
         --ignore-init-method --ignore-nested-functions -e tests -e .venv .",
        &ctx.project_dir,
        ctx.timeout,
        &env,
    )
    .await;
    let fraction = match measure::parse_interrogate(&doc.output_tail) {
        Some(value) => Figure::measured(value),
        None => Figure::missing(format!(
            "interrogate printed no result: {}",
            super::describe_check(&doc)
        )),
    };
    let report = ctx.out_dir.join("bandit.json");
    let scan = run_check_env(
        "evaluate",
        "security",
        &format!(
            "bandit -q -r . -x ./tests,./.venv -f json -o {}",
            shell_quote(&report.display().to_string())
        ),
        &ctx.project_dir,
        ctx.timeout,
        &env,
    )
    .await;
    let parsed = std::fs::read_to_string(&report)
        .ok()
        .and_then(|text| measure::parse_bandit(&text));
    let security = match parsed {
        Some((counts, details)) => SecurityScan {
            method: format!("bandit ({})", bin.join("bandit").display()),
            unsafe_count: Figure::missing("not a Rust project"),
            findings: Figure::measured(counts),
            lints: Figure::missing("no linter beyond bandit for Python"),
            advisories: Figure::missing("no advisory scanner for Python dependencies"),
            details: details.into_iter().take(20).collect(),
        },
        None => no_scan(&format!(
            "bandit wrote no report: {}",
            super::describe_check(&scan)
        )),
    };
    (DocCoverage { fraction, method }, security)
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn performance(
    ctx: &Context,
    checks: &[CheckRow],
    acceptance: &AcceptanceReport,
) -> PerformanceReport {
    let secs = |name: &str| match checks.iter().find(|c| c.name == name) {
        Some(c) if c.passed => Figure::measured(c.wall_secs),
        Some(c) => Figure::missing(format!("the {name} failed: {}", super::describe_check(c))),
        None => Figure::missing(format!("the {name} check did not run")),
    };
    let memory_usage_mb = match acceptance.peak_rss_bytes {
        Some(bytes) => Figure::measured(bytes as f64 / (1024.0 * 1024.0)),
        None if acceptance.status == "not_run" => Figure::missing(format!(
            "the acceptance suite did not run: {}",
            acceptance.reason.as_deref().unwrap_or("")
        )),
        None => Figure::missing("no server was started by the acceptance suite"),
    };
    PerformanceReport {
        build_secs: secs("build"),
        test_secs: secs("test"),
        memory_usage_mb,
        binary_size_mb: binary_size(&ctx.project_dir, ctx.spec.commands.start.as_deref()),
        measured: acceptance.measurements.clone(),
    }
}

/// Size of the file the start command runs, when it is a path inside the project (e.g.
/// `./target/release/redqueue`).
fn binary_size(project_dir: &Path, start: Option<&str>) -> Figure<f64> {
    let Some(program) = start.and_then(|s| s.split_whitespace().next()) else {
        return Figure::missing("the project spec has no start command");
    };
    if !program.contains('/') {
        return Figure::missing(format!(
            "the start command runs `{program}` from PATH, not a binary the project built"
        ));
    }
    let path = project_dir.join(program);
    match std::fs::metadata(&path) {
        Ok(meta) => Figure::measured(meta.len() as f64 / (1024.0 * 1024.0)),
        Err(err) => Figure::missing(format!("{}: {err}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_size_only_for_a_built_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
        std::fs::write(
            dir.path().join("target/release/app"),
            vec![0u8; 1024 * 1024],
        )
        .unwrap();
        let size = binary_size(dir.path(), Some("./target/release/app --port $PORT"));
        assert_eq!(size.value, Some(1.0));
        assert!(binary_size(dir.path(), Some("python3 -m x"))
            .reason
            .unwrap()
            .contains("from PATH"));
        assert!(binary_size(dir.path(), Some("./target/release/none"))
            .value
            .is_none());
    }
}
