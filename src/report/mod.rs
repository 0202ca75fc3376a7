//! Report shapes: `final_report.json` ([`FinalReport`], after the seed's `TestReport`) and
//! `metrics_current.json` ([`SessionMetrics`]). Every figure is measured; one that could not be
//! is a [`Figure`] with `value: null` and a `reason`.

pub mod compare;
pub mod digest;
pub mod files;
pub mod grades;
pub mod html;
pub mod junit;
pub mod live;
pub mod markdown;
pub mod svg;
pub mod tiers;
pub mod verdict;

pub use crate::figure::Figure;

use crate::eval::CriterionResult;
use crate::metrics::CodeStats;
use crate::store::{CheckRow, LedgerTotals};
use serde::Serialize;
use std::collections::BTreeMap;

/// Version of the report shapes; bumped on incompatible changes.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// The model that answered the agents.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// `[model].provider` (`scripted`, `sim`, `openai-compatible`, `anthropic`).
    pub provider: String,
    /// The model name agents asked for.
    pub name: String,
    /// True for the built-in `scripted` and `sim` models.
    pub builtin: bool,
    /// How the report names the model (provider, name and fallbacks).
    pub label: String,
}

/// Durations of the session: session seconds (time-scaled) and wall seconds.
#[derive(Debug, Clone, Serialize)]
pub struct Durations {
    /// The sum of the phase time boxes, session seconds.
    pub planned_session_secs: f64,
    /// Session seconds elapsed.
    pub session_secs: f64,
    /// Wall seconds elapsed (this daemon and earlier ones of the session).
    pub wall_secs: f64,
    /// Session seconds per wall second (`--time-scale`).
    pub time_scale: f64,
}

/// How many agents worked at once.
#[derive(Debug, Clone, Serialize)]
pub struct ConcurrencyReport {
    /// Agents the session created (the configured ones and any dynamic spawning added).
    pub agents: usize,
    /// Of those, not retired at the end.
    pub live_agents: usize,
    /// Runs allowed at once at the end (`[agent].concurrent_agents`, at most the live agents).
    pub limit: usize,
    /// `[agent].dynamic_spawning`.
    pub dynamic_spawning: bool,
    /// `[agent].max_total_agents`: agents that may ever be created.
    pub max_total_agents: u32,
    /// Agents dynamic spawning added (`agent_spawned` events), by reason (`ready_work`,
    /// `distrusted`, `crashing`).
    pub spawned: BTreeMap<String, usize>,
    /// Agents dynamic spawning retired (`agent_retired` events), by reason (`no_work`,
    /// `distrusted`, `crashing`).
    pub retired: BTreeMap<String, usize>,
    /// The most agent runs going at the same session second (from `agent_runs`); null when
    /// `session.db` could not be read.
    pub peak_busy_agents: Figure<u64>,
    /// Follow-up tasks the phases generated (`[scheduling]`, the `task_generated` events).
    pub follow_up_tasks: usize,
}

/// How an agent's claim that it finished a task was confirmed (`session/confirming.rs`).
#[derive(Debug, Clone, Serialize)]
pub struct TaskConfirmation {
    /// `review` (`[consensus]`: the review vote decides), `task_check`
    /// (`[scheduling].task_check = "build"`: the task's check or the build), or `exit_code`
    /// (`task_check = "none"`: unconfirmed claims).
    pub by: String,
    /// Task checks that confirmed the work (`task_checked` events).
    pub checks_passed: usize,
    /// Task checks that refuted it (the task went back to its role or failed).
    pub checks_failed: usize,
}

/// Tasks by state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TaskCounts {
    /// Every task.
    pub total: usize,
    /// Finished successfully.
    pub done: usize,
    /// Failed after `[agents].max_task_attempts` runs (or a failed dependency).
    pub failed: usize,
    /// Not started (or back on the board).
    pub pending: usize,
    /// Claimed or running now.
    pub running: usize,
}

/// One phase in `final_report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// The phase's name.
    pub name: String,
    /// `time_box`, `gate_vote`, `gate_criteria`, `tasks_done` (`[scheduling].phase_end`),
    /// `interrupted`, `budget_exhausted`, `recovery_stop`, `aborted`, or `not_started`.
    pub ended_because: String,
    /// Its time box, session seconds.
    pub planned_session_secs: f64,
    /// Session seconds it ran (None: not started).
    pub session_secs: Option<f64>,
    /// Wall seconds it ran (None: not started).
    pub wall_secs: Option<f64>,
    /// Its objectives as configured.
    pub objectives: Vec<String>,
    /// Its tasks by state.
    pub tasks: TaskCounts,
    /// The checks run at its end (build, tests, coverage, …).
    pub checks: Vec<CheckRow>,
    /// Its success criteria as judged.
    pub success_criteria: Vec<CriterionResult>,
}

/// One agent in `final_report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    /// `agent-1`, ….
    pub id: String,
    /// Its role.
    pub role: String,
    /// Runs started.
    pub runs: u32,
    /// Tasks it finished.
    pub tasks_done: u32,
    /// Runs that did not finish their task.
    pub tasks_failed_runs: u32,
    /// Metered model calls (ledger).
    pub model_calls: u64,
    /// Metered tokens (ledger).
    pub total_tokens: u64,
    /// Tool calls counted from the answers and its events file; null with the reason when its
    /// agent CLI reports none ([`crate::agent::ToolCalls::NotReported`]) and none was counted.
    pub tool_calls: Figure<u64>,
    /// Why dynamic spawning retired it (`no_work`, `distrusted`, `crashing`); null while live.
    pub retired: Option<String>,
    /// Its trust score at the end (0–1; [`crate::swarm::trust`]).
    pub trust_score: f64,
    /// The measured record the score was computed from.
    pub trust_record: crate::swarm::trust::Record,
}

/// The consensus votes of a session (`[consensus]`; `swarm::consensus`).
#[derive(Debug, Clone, Serialize)]
pub struct ConsensusReport {
    /// `[consensus].enabled`.
    pub enabled: bool,
    /// `[consensus].strategy`.
    pub strategy: crate::config::raw::ConsensusStrategy,
    /// `[consensus].min_votes`.
    pub min_votes: u32,
    /// `[consensus].threshold`.
    pub threshold: f64,
    /// Ballots cast in all votes.
    pub ballots_cast: usize,
    /// Votes by outcome (`approved`, `rejected`, `deadlock`, `abandoned`, `open`).
    pub by_outcome: BTreeMap<String, usize>,
    /// Every vote with its ballots (voter, role, choice, weight, reason, how it arrived).
    pub votes: Vec<crate::store::VoteRow>,
}

/// One task in `final_report.json`: the same shape as a checkpoint's task board entry.
pub type TaskReport = crate::store::BoardEntry;

/// Budgets and what they allowed (`[limits]`, `[model].max_cost_usd`).
#[derive(Debug, Clone, Serialize)]
pub struct BudgetReport {
    /// `[limits].total_token_budget`.
    pub total_token_budget: u64,
    /// Tokens used (ledger).
    pub used_tokens: u64,
    /// `used_tokens / total_token_budget`.
    pub used_fraction: f64,
    /// The 80 % alert was raised.
    pub alert_raised: bool,
    /// Why the budget ended the session, if it did.
    pub exhausted: Option<String>,
    /// USD from the price table; null with the reason when a call's model has no price.
    pub cost_usd: Figure<f64>,
    /// `[model].max_cost_usd` (None: no cost budget).
    pub max_cost_usd: Option<f64>,
    /// Session seconds each agent waited for its token or tool-call rate.
    pub throttled_session_secs: BTreeMap<String, f64>,
}

/// Checkpoints of the session.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointSummary {
    /// Checkpoints written.
    pub count: u32,
    /// The newest one's row.
    pub last: Option<crate::store::CheckpointRow>,
}

/// How agent runs were held together and limited (`[agents]` `memory_limit_mb`,
/// `cpu_limit_secs`, `max_processes`, and what the host allowed).
#[derive(Debug, Clone, Serialize)]
pub struct Containment {
    /// Which mechanisms applied: `cgroup` (a cgroup v2 group per run: kill and freeze reach
    /// processes that left the run's process group, and the limits below are the group's),
    /// `cgroup+rlimit` (groups, with some limit an rlimit), `rlimit` (process groups with
    /// rlimits), `none` (process groups, no limit configured).
    pub method: String,
    /// The directory the runs' cgroups were in (`…/megatest-<pid>-<n>`), when they had any.
    pub cgroup_dir: Option<std::path::PathBuf>,
    /// Why runs had no cgroups (cgroup v2 missing, read-only, no `cgroup.kill`), when they did not.
    pub no_cgroup_reason: Option<String>,
    /// The memory limit, MiB.
    pub memory_limit_mb: Option<u64>,
    /// How it was enforced: `memory.max` (for the whole run together) or `RLIMIT_DATA` (per
    /// process, each child counted separately).
    pub memory_limit_by: Option<String>,
    /// The CPU limit, CPU seconds.
    pub cpu_limit_secs: Option<u64>,
    /// How it was enforced: `RLIMIT_CPU` (per process; a cgroup's `cpu.max` is a rate, not a
    /// total, so CPU time is always an rlimit).
    pub cpu_limit_by: Option<String>,
    /// The process limit.
    pub max_processes: Option<u64>,
    /// How it was enforced: `pids.max` (the run's processes together) or `RLIMIT_NPROC`
    /// (processes of the agent's user — all agents and megatest share it; not enforced for root).
    pub max_processes_by: Option<String>,
}

impl Containment {
    /// The limits `[agents]` configured, enforced as `cgroups` (the backend's cgroup directory
    /// and controllers, or why there is none) allowed.
    pub fn of(
        agents: &crate::config::raw::Agents,
        cgroups: &Result<crate::backend::CgroupInfo, String>,
    ) -> Containment {
        let has = |controller: &str| {
            cgroups
                .as_ref()
                .is_ok_and(|info| info.controllers.iter().any(|c| c == controller))
        };
        let by = |limit: Option<u64>, group_file: &str, controller: &str, rlimit: &str| {
            limit.map(|_| if has(controller) { group_file } else { rlimit }.to_string())
        };
        let memory_limit_by = by(
            agents.memory_limit_mb,
            "memory.max",
            "memory",
            "RLIMIT_DATA",
        );
        let cpu_limit_by = agents.cpu_limit_secs.map(|_| "RLIMIT_CPU".to_string());
        let max_processes_by = by(agents.max_processes, "pids.max", "pids", "RLIMIT_NPROC");
        let any_rlimit = [&memory_limit_by, &cpu_limit_by, &max_processes_by]
            .iter()
            .any(|b| b.as_deref().is_some_and(|b| b.starts_with("RLIMIT")));
        let method = match (cgroups.is_ok(), any_rlimit) {
            (true, false) => "cgroup",
            (true, true) => "cgroup+rlimit",
            (false, true) => "rlimit",
            (false, false) => "none",
        };
        Containment {
            method: method.into(),
            cgroup_dir: cgroups.as_ref().ok().map(|info| info.dir.clone()),
            no_cgroup_reason: cgroups.as_ref().err().cloned(),
            memory_limit_mb: agents.memory_limit_mb,
            memory_limit_by,
            cpu_limit_secs: agents.cpu_limit_secs,
            cpu_limit_by,
            max_processes: agents.max_processes,
            max_processes_by,
        }
    }
}

/// `final_report.json`, written at every end (complete, failed, interrupted).
#[derive(Debug, Clone, Serialize)]
pub struct FinalReport {
    /// [`REPORT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The session's id.
    pub session_id: String,
    /// The project and its spec.
    pub project: ProjectInfo,
    /// `complete`, `failed` or `interrupted`.
    pub status: String,
    /// The exit code of the daemon that ended it.
    pub exit_code: i32,
    /// Why it ended (`complete`, `signal`, `budget`, `stopped`, …).
    pub ended_because: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub ended_at: String,
    /// Planned and elapsed durations.
    pub duration: Durations,
    /// The model that answered.
    pub model: ModelInfo,
    /// Agents in the session.
    pub agent_count: usize,
    /// `builtin`, `command` or the preset's name.
    pub agent_kind: String,
    /// The agents' sandbox that applied: `bwrap` or `none` (see `config.json` `warnings` for
    /// why `auto` found none).
    pub sandbox: String,
    /// The resource limits agent processes ran under.
    pub containment: Containment,
    /// Every phase, in order.
    pub phases: Vec<PhaseReport>,
    /// Token and tool-call totals from the ledger in `session.db`.
    pub usage: LedgerTotals,
    /// Tool calls: `usage.tool_calls`, or null with the reason when the agent CLI's answers
    /// carry none and it reports none (aider's edit blocks), rather than a wrong 0.
    pub tool_calls: Figure<u64>,
    /// Budgets and what they allowed.
    pub budget: BudgetReport,
    /// Checkpoints written, and the last one.
    pub checkpoints: CheckpointSummary,
    /// `megatest restore` rollbacks of this session (the `checkpoint_restored` events).
    pub rollbacks: Vec<serde_json::Value>,
    /// Tasks by state.
    pub tasks: TaskCounts,
    /// How many agents worked at once.
    pub concurrency: ConcurrencyReport,
    /// How finished tasks were confirmed.
    pub task_confirmation: TaskConfirmation,
    /// Every task.
    pub task_list: Vec<TaskReport>,
    /// Every agent.
    pub agents: Vec<AgentReport>,
    /// Error events by kind.
    pub errors: BTreeMap<String, u64>,
    /// Every failure and what the recovery table did about it, oldest first.
    pub recoveries: Vec<crate::store::RecoveryRow>,
    /// Recoveries by outcome (`recovered`, `escalated`, `failed`).
    pub recovery_outcomes: BTreeMap<String, u64>,
    /// `[chaos]` as configured when fault injection was on (None: no faults were injected),
    /// with the faults that fired.
    pub chaos: Option<serde_json::Value>,
    /// Code statistics of the workspace (tokei) at the end.
    pub code: Figure<CodeStats>,
    /// Line coverage from the spec's coverage command (null with the reason when none ran).
    pub test_coverage: Figure<f64>,
    /// The newest evaluation (acceptance suite, coverage, documentation coverage, security
    /// scan, performance); null when none ran.
    pub evaluation: Option<crate::eval::evaluation::Evaluation>,
    /// The consensus votes held (`[consensus]`).
    pub consensus: ConsensusReport,
    /// Every criterion as judged: the seed's tiers (`tier`), the targets and every phase's
    /// success criteria.
    pub success_criteria: Vec<CriterionResult>,
    /// What failed: the count `junit.xml` has as failures.
    pub failures: FailureCounts,
    /// The session and checkpoint this one was forked from (`megatest fork`); None otherwise.
    pub forked_from: Option<crate::store::ForkOrigin>,
    /// How often the session's daemon stopped before its end and the session was resumed
    /// (a crash, SIGTERM, a Spot interruption on ECS; also a checkpoint restore, which
    /// resumes in the same process), and the wall time it was down.
    pub interruptions: Interruptions,
    /// Config keys parsed and validated whose behaviour lands later.
    pub not_yet_enforced: Vec<String>,
}

/// Resumptions of a session after its daemon stopped (its `session_resumed` events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Interruptions {
    /// Times the session was resumed.
    pub resumed: u32,
    /// Wall seconds between each stop and its resumption, summed.
    pub downtime_wall_secs: f64,
}

/// What failed in a session, as `junit.xml` counts it: each a failed test case there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FailureCounts {
    /// Phase-end checks that did not pass (build, tests, coverage, …; every phase).
    pub checks: u64,
    /// Acceptance cases of the newest evaluation that failed (a suite that could not run
    /// counts as one).
    pub acceptance_cases: u64,
    /// Success criteria judged not met (null ones are not failures: they are skipped).
    pub criteria: u64,
    /// The sum.
    pub total: u64,
}

impl FailureCounts {
    /// Count the failures of `phases`' checks, `evaluation`'s acceptance cases and `criteria`.
    pub fn of(
        phases: &[PhaseReport],
        evaluation: Option<&crate::eval::evaluation::Evaluation>,
        criteria: &[CriterionResult],
    ) -> FailureCounts {
        let checks = phases
            .iter()
            .flat_map(|p| &p.checks)
            .filter(|c| !c.passed)
            .count() as u64;
        let acceptance_cases = evaluation.map_or(0, |e| {
            if e.acceptance.status == "not_run" {
                1
            } else {
                e.acceptance
                    .cases
                    .iter()
                    .filter(|c| c.outcome != "passed" && c.outcome != "skipped")
                    .count() as u64
            }
        });
        let criteria = criteria.iter().filter(|c| c.met == Some(false)).count() as u64;
        FailureCounts {
            checks,
            acceptance_cases,
            criteria,
            total: checks + acceptance_cases + criteria,
        }
    }
}

/// The project in `final_report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectInfo {
    /// `[session].project_type`.
    pub project_type: String,
    /// `[metadata].name` and `.version` of the config.
    pub test_name: String,
    /// `[metadata].version`.
    pub test_version: String,
    /// The project spec's name.
    pub name: String,
    /// The project spec's directory.
    pub spec_dir: String,
    /// The workspace the agents worked in.
    pub workspace: String,
}

/// One agent's live state in [`SessionMetrics`].
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// `agent-1`, ….
    pub id: String,
    /// Its role.
    pub role: String,
    /// `running` or `idle`.
    pub status: String,
    /// The task it runs.
    pub task: Option<String>,
    /// Its trust score now (0–1; [`crate::swarm::trust`]).
    pub trust_score: f64,
}

/// `metrics_current.json`, after the seed's `SessionMetrics`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionMetrics {
    /// The session's id.
    pub session_id: String,
    /// `running`, `paused`, `stopping`, `complete`, ….
    pub status: String,
    /// The phase running (None between phases).
    pub phase: Option<String>,
    /// When this sample was taken (RFC 3339).
    pub updated_at: String,
    /// Session seconds elapsed.
    pub elapsed_session_secs: f64,
    /// Wall seconds elapsed.
    pub elapsed_wall_secs: f64,
    /// Planned session seconds left if every remaining phase uses its whole time box.
    pub remaining_session_secs: f64,
    /// Metered model calls.
    pub model_calls: u64,
    /// Metered tokens.
    pub total_tokens: u64,
    /// Tokens per session minute so far (null before the first minute).
    pub tokens_per_minute: Figure<f64>,
    /// Tool calls counted.
    pub tool_calls: u64,
    /// Tasks by state.
    pub tasks: TaskCounts,
    /// Every agent's live state.
    pub agents: Vec<AgentStatus>,
    /// Code lines in the workspace (tokei, last sample).
    pub lines_of_code: Figure<usize>,
    /// Share of the last phase's test checks that passed.
    pub test_pass_rate: Figure<f64>,
    /// Fraction of lines covered, from the newest evaluation.
    pub test_coverage: Figure<f64>,
    /// Share of the hidden acceptance suite's cases that passed at the newest evaluation.
    pub acceptance_pass_rate: Figure<f64>,
    /// Bugs by severity at the newest evaluation (failed acceptance cases, scan findings).
    pub bugs: Figure<crate::eval::acceptance::BugCounts>,
    /// Workspace files modified since the session started (sampler).
    pub files_modified: Figure<u64>,
    /// Fraction of agent-time spent on task runs: run session seconds / (agents × elapsed).
    pub agent_utilisation: Figure<f64>,
    /// Ballots cast in consensus votes (null when `[consensus]` is off).
    pub consensus_votes_cast: Figure<u64>,
    /// Resident memory of megatest itself, bytes (sampler, sysinfo).
    pub daemon_memory_bytes: Figure<u64>,
    /// Resident memory of each running agent's process tree, bytes (sampler, sysinfo).
    pub agent_memory_bytes: BTreeMap<String, u64>,
    /// Checkpoints of the session so far.
    pub checkpoints: u32,
    /// Error events recorded by this daemon (`final_report.json` has them all, by kind).
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CgroupInfo;

    #[test]
    fn containment_says_which_mechanism_enforced_each_limit() {
        let mut agents: crate::config::raw::Agents = Default::default();
        let none: Result<CgroupInfo, String> = Err("no cgroup v2".into());
        let c = Containment::of(&agents, &none);
        assert_eq!(
            (c.method.as_str(), c.no_cgroup_reason.as_deref()),
            ("none", Some("no cgroup v2"))
        );
        agents.memory_limit_mb = Some(128);
        agents.cpu_limit_secs = Some(60);
        agents.max_processes = Some(64);
        let c = Containment::of(&agents, &none);
        assert_eq!(c.method, "rlimit");
        assert_eq!(c.memory_limit_by.as_deref(), Some("RLIMIT_DATA"));
        assert_eq!(c.max_processes_by.as_deref(), Some("RLIMIT_NPROC"));
        let bare = Ok(CgroupInfo {
            dir: "/sys/fs/cgroup/megatest-1-0".into(),
            controllers: vec![],
        });
        let c = Containment::of(&agents, &bare);
        assert_eq!(c.method, "cgroup+rlimit");
        assert!(c.no_cgroup_reason.is_none());
        let full = Ok(CgroupInfo {
            dir: "/sys/fs/cgroup/megatest-1-0".into(),
            controllers: vec!["memory".into(), "pids".into()],
        });
        let c = Containment::of(&agents, &full);
        assert_eq!(
            (
                c.memory_limit_by.as_deref(),
                c.cpu_limit_by.as_deref(),
                c.max_processes_by.as_deref()
            ),
            (Some("memory.max"), Some("RLIMIT_CPU"), Some("pids.max"))
        );
        assert_eq!(c.method, "cgroup+rlimit");
        agents.cpu_limit_secs = None;
        assert_eq!(Containment::of(&agents, &full).method, "cgroup");
    }
}
