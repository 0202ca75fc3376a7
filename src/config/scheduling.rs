//! `[scheduling]` (megatest): how a phase ends and how much follow-up work it may get. See
//! [`crate::swarm::followup`] for what the follow-up work is.

use serde::{Deserialize, Serialize};

/// When a phase ends before its time box is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseEnd {
    /// The upstream meaning of `duration_minutes`: the phase lasts its time box; when its
    /// planned work is settled it gets follow-up work, and it ends early only through its gate
    /// (every success criterion judged met, then a `[consensus]` vote of the agents; without
    /// `[consensus]` the criteria alone). `ended_because`: `time_box`, `gate_vote` or
    /// `gate_criteria`.
    #[default]
    TimeBox,
    /// End as soon as the phase's planned tasks are settled (`ended_because` `tasks_done`): for
    /// quick smoke configs, never for a measurement of a session's duration.
    TasksDone,
}

/// How a finished task's claim is confirmed when no review judges it (`[consensus]` off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskCheck {
    /// The task's own `check` command from the spec, else the spec's build command, runs in
    /// `project/` after the agent finished; the task is done only when it passes, otherwise it
    /// goes back to its role with the check's output (a failed attempt).
    #[default]
    Build,
    /// The agent's exit code 0 is taken as done (the report counts such tasks unconfirmed).
    None,
}

/// `[scheduling]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scheduling {
    /// When a phase ends before its time box is up.
    pub phase_end: PhaseEnd,
    /// Follow-up tasks generated at most per phase; unset: 4 × `[agent].concurrent_agents`
    /// (megatest's choice: four rounds that keep every agent busy).
    pub max_follow_up_tasks_per_phase: Option<u32>,
    /// How a finished task is confirmed without a review.
    pub task_check: TaskCheck,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            phase_end: PhaseEnd::TimeBox,
            max_follow_up_tasks_per_phase: None,
            task_check: TaskCheck::Build,
        }
    }
}
