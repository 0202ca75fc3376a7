//! `megatest evaluate DIR --project TYPE`: evaluate any project directory (one a session
//! produced, or one built elsewhere) with the project's build and test commands, its hidden
//! acceptance suite, coverage, documentation coverage, a security scan and LOC; print a table;
//! exit 0 when every critical criterion holds, 1 when one fails, 2 on usage errors.

use crate::eval::evaluation::{self, Context, Evaluation};
use crate::eval::{provision, CriterionResult, Tier};
use crate::project::ProjectSpec;
use crate::report::grades;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The project directory to evaluate
    pub dir: PathBuf,
    /// Project type (spec under system_tests/long_running/projects/); default: the config's
    /// [session].project_type
    #[arg(long, env = "MEGATEST_PROJECT")]
    pub project: Option<String>,
    /// A megatest config (e.g. mega_test_config.toml): its [project.target] and
    /// [project.performance] targets, [limits].max_test_runtime_min and [evaluation].acceptance
    /// apply (default: the built-in targets)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use what is in DIR: run neither the build command nor the project's own tests (which
    /// would rebuild it); the acceptance suite and the measurements run as usual
    #[arg(long)]
    pub no_build: bool,
    /// Also write the evaluation as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write JUnit XML (checks, acceptance cases, criteria) to FILE
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Install a missing coverage tool (cargo-tarpaulin) into RUNS_DIR/.tools (or
    /// MEGATEST_TOOLS_DIR) before measuring: minutes of compiling, once (as the config's
    /// `[evaluation] install_tools = true`)
    #[arg(long)]
    pub install_tools: bool,
    /// Runs directory: the managed venvs live in RUNS_DIR/.venvs (or MEGATEST_VENV_DIR)
    #[arg(long, env = "MEGATEST_RUNS_DIR", default_value = "test_runs")]
    pub runs_dir: PathBuf,
    /// Stop the acceptance suite at its first failing case (quicker; later cases are not run)
    #[arg(long)]
    pub fail_fast: bool,
    /// Wall minutes each command and the acceptance suite may take (default: the config's
    /// [limits].max_test_runtime_min, else 30)
    #[arg(long)]
    pub max_test_runtime_min: Option<f64>,
}

/// Removes the evaluation's scratch directory on every way out.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<i32> {
    crate::cli::control::quiet_on_closed_pipe();
    if !args.dir.is_dir() {
        eprintln!(
            "megatest evaluate: {} is not a directory",
            args.dir.display()
        );
        return Ok(2);
    }
    let config = match &args.config {
        Some(path) => {
            let overrides = crate::config::Overrides {
                project: args.project.clone(),
                ..Default::default()
            };
            match crate::config::load(path, &overrides) {
                Ok(config) => Some(config),
                Err(err) => {
                    eprintln!("megatest evaluate: {err}");
                    return Ok(2);
                }
            }
        }
        None => None,
    };
    let max_test_runtime_min = args
        .max_test_runtime_min
        .or(config.as_ref().map(|c| c.raw.limits.max_test_runtime_min))
        .unwrap_or(30.0);
    if !(max_test_runtime_min > 0.0 && max_test_runtime_min.is_finite()) {
        eprintln!("megatest evaluate: --max-test-runtime-min must be a positive number of minutes");
        return Ok(2);
    }
    let project = match (&args.project, &config) {
        (Some(project), _) => project.clone(),
        (None, Some(config)) => config.raw.session.project_type.clone(),
        (None, None) => {
            eprintln!("megatest evaluate: name the project type with --project TYPE (or give --config FILE)");
            return Ok(2);
        }
    };
    let Some(spec_dir) = crate::project::find_spec_dir(&project, Path::new(".")) else {
        eprintln!(
            "megatest evaluate: unknown project type {:?} (known: {})",
            project,
            crate::project::known_project_types(Path::new(".")).join(", ")
        );
        return Ok(2);
    };
    let spec = match ProjectSpec::load(&spec_dir) {
        Ok(spec) => spec,
        Err(err) => {
            eprintln!("megatest evaluate: {err}");
            return Ok(2);
        }
    };
    let project_dir = args.dir.canonicalize()?;
    let out_dir = args.runs_dir.join(".evaluations").join(format!(
        "{}-{}-{}",
        project,
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        std::process::id()
    ));
    std::fs::create_dir_all(&out_dir)?;
    let scratch = Scratch(out_dir.canonicalize()?);
    let ctx = Context {
        project_type: project.clone(),
        spec,
        project_dir,
        out_dir: scratch.0.clone(),
        venv_root: provision::venv_root(&args.runs_dir),
        tools_root: provision::tools_root(&args.runs_dir),
        install_tools: args.install_tools
            || config
                .as_ref()
                .is_some_and(|c| c.raw.evaluation.install_tools),
        timeout: Duration::from_secs_f64(max_test_runtime_min * 60.0),
        acceptance: config.as_ref().is_none_or(|c| c.raw.evaluation.acceptance),
        fail_fast: args.fail_fast,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let evaluation = runtime.block_on(evaluation::evaluate(&ctx, "evaluate", !args.no_build));
    let config_project = config.map(|c| c.raw.project).unwrap_or_default();
    let mut criteria = grades::critical(&evaluation);
    criteria.extend(grades::quality(&evaluation, &config_project));
    print_table(&evaluation, &criteria);
    if let Some(path) = &args.json {
        let document = serde_json::json!({"evaluation": evaluation, "criteria": criteria});
        crate::fsutil::write_atomic(path, serde_json::to_string_pretty(&document)?.as_bytes())?;
    }
    if let Some(path) = &args.junit {
        let xml = crate::report::junit::evaluation_junit(&evaluation, &criteria)?;
        crate::fsutil::write_atomic(path, xml.as_bytes())?;
    }
    drop(scratch);
    let failed = criteria
        .iter()
        .any(|c| c.tier == Tier::Critical && c.met == Some(false));
    Ok(if failed { 1 } else { 0 })
}

fn mark(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "ok  ",
        Some(false) => "FAIL",
        None => "--  ",
    }
}

fn print_table(eval: &Evaluation, criteria: &[CriterionResult]) {
    println!("evaluation of {} ({})", eval.project_dir, eval.project_type);
    for check in &eval.checks {
        println!(
            "  {} {:<10} {}",
            mark(Some(check.passed)),
            check.name,
            crate::eval::describe_check(check)
        );
    }
    let acceptance = &eval.acceptance;
    println!(
        "  {} acceptance {} of {} cases passed; bugs: {} critical, {} high, {} medium{}",
        mark(match acceptance.status.as_str() {
            "passed" => Some(true),
            "failed" => Some(false),
            _ => None,
        }),
        acceptance.passed,
        acceptance.total,
        acceptance.bugs.critical,
        acceptance.bugs.high,
        acceptance.bugs.medium,
        acceptance
            .reason
            .as_deref()
            .map(|r| format!(" — {r}"))
            .unwrap_or_default()
    );
    for case in acceptance.cases.iter().filter(|c| c.outcome == "failed") {
        let first_line = case
            .message
            .as_deref()
            .and_then(|m| m.lines().find(|l| !l.trim().is_empty()))
            .unwrap_or("");
        println!(
            "       FAIL [{}] {}: {}",
            case.severity,
            case.name,
            first_line.trim()
        );
    }
    println!("criteria:");
    for criterion in criteria {
        println!(
            "  {} [{}] {} — {}",
            mark(criterion.met),
            serde_json::json!(criterion.tier).as_str().unwrap_or(""),
            criterion.criterion,
            criterion.evidence
        );
    }
}
