//! `[project]`: the project spec's location and the upstream `[project.target]` and
//! `[project.performance]` targets the evaluation judges (`report::grades`).

use serde::{Deserialize, Serialize};

/// `[project]`: megatest's `spec_dir` beside the upstream `[project.target]` and
/// `[project.performance]` tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Project {
    /// Directory of the project spec; relative paths are relative to the config file. Default:
    /// `system_tests/long_running/projects/<session.project_type>`.
    pub spec_dir: Option<String>,
    /// `[project.target]`.
    pub target: Target,
    /// `[project.performance]`.
    pub performance: Performance,
}

/// `[project.target]`: the upstream code targets the report judges.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Target {
    /// Code lines (tokei, generated directories excluded) the project should reach.
    pub lines_of_code: u64,
    /// Line coverage (0–1) the evaluation must measure (coverage.py, cargo-tarpaulin, or the
    /// spec's coverage command).
    pub test_coverage: f64,
    /// Documented share of public items (0–1; interrogate for Python, a syn count for Rust).
    pub documentation_coverage: f64,
    /// Critical bugs allowed: failed critical acceptance cases and critical scan findings.
    pub max_bugs_critical: u32,
    /// High bugs allowed: failed high acceptance cases and high scan findings (`unsafe`, bandit HIGH).
    pub max_bugs_high: u32,
    /// Medium bugs allowed: failed medium acceptance cases and other scan findings.
    pub max_bugs_medium: u32,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            lines_of_code: 5000,
            test_coverage: 0.8,
            documentation_coverage: 0.9,
            max_bugs_critical: 0,
            max_bugs_high: 2,
            max_bugs_medium: 5,
        }
    }
}

/// `[project.performance]`: the upstream performance targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Performance {
    /// Wall seconds the spec's build command may take.
    pub build_time_secs: f64,
    /// Wall seconds the spec's test command may take.
    pub test_execution_time_secs: f64,
    /// Peak resident memory of the started server during the acceptance run, MiB.
    pub memory_usage_mb: f64,
    /// Size of the binary the start command runs, MiB.
    pub binary_size_mb: f64,
}

impl Default for Performance {
    fn default() -> Self {
        Performance {
            build_time_secs: 60.0,
            test_execution_time_secs: 120.0,
            memory_usage_mb: 512.0,
            binary_size_mb: 50.0,
        }
    }
}
