//! The task board: the planned tasks of every phase, their states, and the scheduler's pure
//! decisions (which idle agent takes which claimable task — role-preferring, another role after
//! a grace period — which pending tasks can never run, when the next timed decision is due). No I/O: the session persists what changes (`Store::update_task`) and
//! starts the runs.

use crate::project::TaskSpec;
use crate::report::TaskCounts;

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskState {
    Pending,
    Running,
    Done,
    Failed,
}

impl TaskState {
    /// The word in `session.db` and the report.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }

    /// The state a recorded word resumes as: a run in flight at a crash goes back to pending.
    pub(crate) fn resumed(word: &str) -> TaskState {
        match word {
            "done" => TaskState::Done,
            "failed" => TaskState::Failed,
            _ => TaskState::Pending,
        }
    }
}

/// One task on the board.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) spec: TaskSpec,
    pub(crate) phase_idx: usize,
    pub(crate) state: TaskState,
    /// Runs started so far.
    pub(crate) attempts: u32,
    /// The agent of the last run.
    pub(crate) agent_id: Option<String>,
    pub(crate) claimed_session_secs: Option<f64>,
    pub(crate) finished_session_secs: Option<f64>,
    pub(crate) last_error: Option<String>,
    /// `restart_agent` / `compress_and_retry`: only this agent runs it next.
    pub(crate) reserved_for: Option<usize>,
    /// `reassign`: another agent than this one, when there is one.
    pub(crate) avoid: Option<usize>,
    /// Session second before which the task is not started again (recovery backoff).
    pub(crate) not_before: f64,
    /// `compress_and_retry`: the handoff summary for the next run's prompt.
    pub(crate) handoff: Option<String>,
    /// Held by an open escalation.
    pub(crate) held: bool,
    /// Session second since which the task has been claimable without being started (the
    /// cross-role grace period counts from here; None while not claimable or running).
    pub(crate) ready_since: Option<f64>,
    /// Agents that must not run it (a review's author and the vote's other reviewers).
    pub(crate) exclude: Vec<String>,
    /// A review task: the id of the vote it casts a ballot in.
    pub(crate) review_of: Option<i64>,
    /// Review rounds its work went through (a rejected round sends it back for rework).
    pub(crate) review_rounds: u32,
}

impl Task {
    /// A new pending task of phase `phase_idx`.
    pub(crate) fn planned(spec: TaskSpec, phase_idx: usize) -> Task {
        Task {
            spec,
            phase_idx,
            state: TaskState::Pending,
            attempts: 0,
            agent_id: None,
            claimed_session_secs: None,
            finished_session_secs: None,
            last_error: None,
            reserved_for: None,
            avoid: None,
            not_before: 0.0,
            handoff: None,
            held: false,
            ready_since: None,
            exclude: Vec::new(),
            review_of: None,
            review_rounds: 0,
        }
    }
}

/// Session seconds a claimable task waits for an idle agent of its role before an idle agent of
/// another role may take it (megatest's choice; the session caps it at
/// `[recovery].agent_idle_minutes`, the seed's "idle 10 min → reassign").
pub(crate) const CROSS_ROLE_GRACE_SECS: f64 = 60.0;

/// A decision of the scheduler: `agent_idx` starts `task_idx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Assignment {
    pub(crate) agent_idx: usize,
    pub(crate) task_idx: usize,
    /// The agent's role is not the task's (recorded as such).
    pub(crate) cross_role: bool,
}

/// An agent as the scheduler sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AgentView<'a> {
    pub(crate) id: &'a str,
    pub(crate) role: &'a str,
    /// Not running a task now (and not retired).
    pub(crate) idle: bool,
    /// Not retired (dynamic spawning): its role counts as staffed.
    pub(crate) live: bool,
}

/// The tasks of the session, in plan order.
#[derive(Debug, Default)]
pub(crate) struct Board {
    pub(crate) tasks: Vec<Task>,
}

impl Board {
    /// Every task as a checkpoint's task board and the report list it.
    pub(crate) fn entries(&self) -> Vec<crate::store::BoardEntry> {
        self.tasks
            .iter()
            .map(|t| crate::store::BoardEntry {
                id: t.spec.id.clone(),
                phase: t.spec.phase.clone(),
                role: t.spec.role.clone(),
                state: t.state.as_str().to_string(),
                attempts: t.attempts,
                agent_id: t.agent_id.clone(),
                last_error: t.last_error.clone(),
            })
            .collect()
    }

    fn is(&self, id: &str, state: TaskState) -> bool {
        self.tasks
            .iter()
            .any(|t| t.spec.id == id && t.state == state)
    }

    /// True when no task of the phase is pending or running.
    pub(crate) fn settled(&self, phase_idx: usize) -> bool {
        self.tasks
            .iter()
            .filter(|t| t.phase_idx == phase_idx)
            .all(|t| matches!(t.state, TaskState::Done | TaskState::Failed))
    }

    /// The earliest session second after `now` at which the scheduler may decide differently
    /// without any other event: a recovery backoff ends, or a waiting task's cross-role grace
    /// period (`grace`) ends. None when nothing waits on time.
    pub(crate) fn next_wakeup(&self, phase_idx: usize, now: f64, grace: f64) -> Option<f64> {
        let earliest = self
            .tasks
            .iter()
            .filter(|t| t.phase_idx == phase_idx && t.state == TaskState::Pending)
            .flat_map(|t| [Some(t.not_before), t.ready_since.map(|r| r + grace)])
            .flatten()
            .filter(|at| *at > now)
            .fold(f64::INFINITY, f64::min);
        earliest.is_finite().then_some(earliest)
    }

    fn claimable(&self, phase_idx: usize, now: f64) -> impl Iterator<Item = (usize, &Task)> {
        self.tasks.iter().enumerate().filter(move |(_, t)| {
            t.phase_idx == phase_idx
                && t.state == TaskState::Pending
                && !t.held
                && t.not_before <= now
                && t.spec.after.iter().all(|d| self.is(d, TaskState::Done))
        })
    }

    /// The roles of the phase's claimable tasks that have waited `grace` session seconds or
    /// longer (one entry per task), and whether any task of the phase is claimable now.
    pub(crate) fn waiting_roles(
        &self,
        phase_idx: usize,
        now: f64,
        grace: f64,
    ) -> (Vec<&str>, bool) {
        let mut any = false;
        let roles = self
            .claimable(phase_idx, now)
            .inspect(|_| any = true)
            .filter(|(_, t)| t.ready_since.is_some_and(|since| now - since >= grace))
            .map(|(_, t)| t.spec.role.as_str())
            .collect();
        (roles, any)
    }

    /// Start the cross-role grace period of every task of the phase that became claimable.
    pub(crate) fn note_ready(&mut self, phase_idx: usize, now: f64) {
        let ready: Vec<usize> = self
            .claimable(phase_idx, now)
            .filter(|(_, t)| t.ready_since.is_none())
            .map(|(i, _)| i)
            .collect();
        for idx in ready {
            self.tasks[idx].ready_since = Some(now);
        }
    }

    /// A pending task of the phase that can never run because a dependency failed: its index
    /// and that dependency's id.
    pub(crate) fn next_blocked(&self, phase_idx: usize) -> Option<(usize, String)> {
        self.tasks.iter().enumerate().find_map(|(idx, t)| {
            if t.phase_idx != phase_idx || t.state != TaskState::Pending {
                return None;
            }
            t.spec
                .after
                .iter()
                .find(|d| self.is(d, TaskState::Failed))
                .map(|d| (idx, d.clone()))
        })
    }

    /// Fail task `idx` because `dependency` failed.
    pub(crate) fn block(&mut self, idx: usize, dependency: &str, now: f64) {
        let task = &mut self.tasks[idx];
        task.state = TaskState::Failed;
        task.finished_session_secs = Some(now);
        task.last_error = Some(format!("not started: its dependency {dependency} failed"));
    }

    /// The next run to start in phase `phase_idx` at session second `now`: a claimable task
    /// (pending, not held, its backoff over, its dependencies done) for an idle agent of its
    /// role; when none is idle, for an idle agent of another role once the task has waited
    /// `grace` session seconds since [`Board::note_ready`] (at once when no agent has the
    /// role) — role-preferring, not role-strict. A recovery's reservation is honoured (no
    /// other agent takes the task), and an agent other than the one whose last run of it failed
    /// (or that `reassign` avoids) is preferred.
    pub(crate) fn next_assignment(
        &self,
        phase_idx: usize,
        now: f64,
        agents: &[AgentView<'_>],
        grace: f64,
    ) -> Option<Assignment> {
        for (task_idx, task) in self.claimable(phase_idx, now) {
            let role = task.spec.role.as_str();
            let role_exists = agents.iter().any(|a| a.live && a.role == role);
            let waited = task.ready_since.is_some_and(|since| now - since >= grace);
            let idle = |same_role: bool| -> Vec<usize> {
                agents
                    .iter()
                    .enumerate()
                    .filter(|(i, a)| {
                        a.idle
                            && (a.role == role) == same_role
                            && task.reserved_for.is_none_or(|r| r == *i)
                            && !task.exclude.iter().any(|x| x == a.id)
                    })
                    .map(|(i, _)| i)
                    .collect()
            };
            let mut candidates = idle(true);
            if candidates.is_empty() && (!role_exists || waited) {
                candidates = idle(false);
            }
            if let Some(last) = &task.agent_id {
                candidates.sort_by_key(|&i| agents[i].id == *last || task.avoid == Some(i));
            }
            if let Some(&agent_idx) = candidates.first() {
                return Some(Assignment {
                    agent_idx,
                    task_idx,
                    cross_role: agents[agent_idx].role != role,
                });
            }
        }
        None
    }

    /// Task `idx` starts a run by `agent_id` at `now`; returns the attempt number (1 for the
    /// first run) and the handoff summary for its prompt, if a recovery left one.
    pub(crate) fn claim(&mut self, idx: usize, agent_id: &str, now: f64) -> (u32, Option<String>) {
        let task = &mut self.tasks[idx];
        task.attempts += 1;
        task.state = TaskState::Running;
        task.agent_id = Some(agent_id.to_string());
        task.claimed_session_secs = Some(now);
        task.reserved_for = None;
        task.avoid = None;
        task.ready_since = None;
        (task.attempts, task.handoff.take())
    }

    /// A run that did not finish task `idx`: back to pending, or failed once `max_attempts`
    /// runs were used (`[agents].max_task_attempts`).
    pub(crate) fn settle_failed_run(
        &mut self,
        idx: usize,
        message: &str,
        max_attempts: u32,
        now: f64,
    ) {
        let task = &mut self.tasks[idx];
        task.last_error = Some(message.to_string());
        task.state = if task.attempts >= max_attempts {
            TaskState::Failed
        } else {
            TaskState::Pending
        };
        if task.state == TaskState::Failed {
            task.finished_session_secs = Some(now);
        }
    }

    /// Tasks by state, of one phase or (None) of all; generated review tasks are not counted
    /// (the votes report them).
    pub(crate) fn counts(&self, phase_idx: Option<usize>) -> TaskCounts {
        let mut counts = TaskCounts::default();
        for task in self
            .tasks
            .iter()
            .filter(|t| phase_idx.is_none_or(|p| t.phase_idx == p) && t.review_of.is_none())
        {
            counts.total += 1;
            match task.state {
                TaskState::Pending => counts.pending += 1,
                TaskState::Running => counts.running += 1,
                TaskState::Done => counts.done += 1,
                TaskState::Failed => counts.failed += 1,
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, role: &str, after: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            phase: "development".into(),
            role: role.into(),
            title: id.into(),
            prompt: String::new(),
            after: after.iter().map(|s| s.to_string()).collect(),
            check: None,
        }
    }

    fn board(specs: Vec<TaskSpec>) -> Board {
        Board {
            tasks: specs.into_iter().map(|s| Task::planned(s, 0)).collect(),
        }
    }

    /// The scheduler's choice with a 60 s grace period, as (agent, task).
    fn pick(b: &Board, now: f64, a: &[AgentView<'_>]) -> Option<(usize, usize)> {
        b.next_assignment(0, now, a, 60.0)
            .map(|x| (x.agent_idx, x.task_idx))
    }

    fn agents<'a>(list: &[(&'a str, &'a str, bool)]) -> Vec<AgentView<'a>> {
        list.iter()
            .map(|&(id, role, idle)| AgentView {
                id,
                role,
                idle,
                live: true,
            })
            .collect()
    }

    #[test]
    fn a_task_goes_to_an_idle_agent_of_its_role() {
        let b = board(vec![spec("t1", "Tester", &[])]);
        let a = agents(&[
            ("a1", "Coder", true),
            ("a2", "Tester", false),
            ("a3", "Tester", true),
        ]);
        assert_eq!(pick(&b, 0.0, &a), Some((2, 0)));
        // No agent has the role: any idle agent takes it at once.
        let a = agents(&[("a1", "Coder", false), ("a2", "Architect", true)]);
        let taken = b.next_assignment(0, 0.0, &a, 60.0).unwrap();
        assert_eq!((taken.agent_idx, taken.cross_role), (1, true));
    }

    #[test]
    fn another_role_takes_a_task_after_the_grace_period() {
        let mut b = board(vec![spec("t1", "Tester", &[]), spec("t2", "Tester", &[])]);
        // The only Tester is busy: the tasks wait for it within the grace period.
        let a = agents(&[("a1", "Coder", true), ("a2", "Tester", false)]);
        assert_eq!(pick(&b, 0.0, &a), None);
        b.note_ready(0, 10.0);
        assert_eq!(b.tasks[0].ready_since, Some(10.0));
        assert_eq!(pick(&b, 69.0, &a), None);
        assert_eq!(b.next_wakeup(0, 20.0, 60.0), Some(70.0));
        let taken = b.next_assignment(0, 70.0, &a, 60.0).unwrap();
        assert_eq!(
            (taken.agent_idx, taken.task_idx, taken.cross_role),
            (0, 0, true)
        );
        b.claim(0, "a1", 70.0);
        assert_eq!(b.tasks[0].ready_since, None);
        // An excluded agent never takes it.
        let mut c = board(vec![spec("r1", "Reviewer", &[])]);
        c.tasks[0].exclude = vec!["a1".into()];
        let only_a1 = agents(&[("a1", "Coder", true)]);
        assert_eq!(pick(&c, 0.0, &only_a1), None);
        // A reservation is never stolen.
        b.tasks[1].reserved_for = Some(1);
        assert_eq!(pick(&b, 500.0, &a), None);
        // Noting again keeps the first time.
        b.note_ready(0, 80.0);
        assert_eq!(b.tasks[1].ready_since, Some(10.0));
    }

    #[test]
    fn dependencies_backoffs_holds_and_other_phases_keep_a_task_back() {
        let mut b = board(vec![spec("t1", "Coder", &[]), spec("t2", "Coder", &["t1"])]);
        let a = agents(&[("a1", "Coder", true)]);
        b.tasks[0].held = true;
        assert_eq!(pick(&b, 0.0, &a), None, "t2 waits for t1");
        b.tasks[0].held = false;
        b.tasks[0].not_before = 30.0;
        assert_eq!(pick(&b, 10.0, &a), None);
        assert_eq!(b.next_wakeup(0, 10.0, 60.0), Some(30.0));
        assert_eq!(pick(&b, 30.0, &a), Some((0, 0)));
        assert_eq!(
            b.next_assignment(1, 30.0, &a, 60.0),
            None,
            "no task in phase 1"
        );
        b.tasks[0].state = TaskState::Done;
        assert_eq!(pick(&b, 30.0, &a), Some((0, 1)));
    }

    #[test]
    fn a_reservation_and_the_last_failed_agent_steer_the_choice() {
        let mut b = board(vec![spec("t1", "Coder", &[])]);
        let a = agents(&[("a1", "Coder", true), ("a2", "Coder", true)]);
        b.tasks[0].reserved_for = Some(1);
        assert_eq!(pick(&b, 0.0, &a), Some((1, 0)));
        b.tasks[0].reserved_for = None;
        b.tasks[0].agent_id = Some("a1".into());
        assert_eq!(pick(&b, 0.0, &a), Some((1, 0)), "not a1 again");
        let only = agents(&[("a1", "Coder", true)]);
        assert_eq!(pick(&b, 0.0, &only), Some((0, 0)), "a1 if alone");
    }

    #[test]
    fn a_failed_dependency_blocks_its_dependents() {
        let mut b = board(vec![spec("t1", "Coder", &[]), spec("t2", "Coder", &["t1"])]);
        assert_eq!(b.next_blocked(0), None);
        b.tasks[0].state = TaskState::Failed;
        assert_eq!(b.next_blocked(0), Some((1, "t1".to_string())));
        b.block(1, "t1", 12.0);
        assert_eq!(b.tasks[1].state, TaskState::Failed);
        assert!(b.tasks[1].last_error.as_deref().unwrap().contains("t1"));
        assert!(b.settled(0));
        assert_eq!(b.counts(Some(0)).failed, 2);
    }

    #[test]
    fn failed_runs_go_back_until_the_attempts_are_used() {
        let mut b = board(vec![spec("t1", "Coder", &[])]);
        let (attempt, _) = b.claim(0, "a1", 1.0);
        assert_eq!(attempt, 1);
        assert_eq!(b.counts(None).running, 1);
        b.settle_failed_run(0, "exit 1", 2, 2.0);
        assert_eq!(b.tasks[0].state, TaskState::Pending);
        b.claim(0, "a1", 3.0);
        b.settle_failed_run(0, "exit 1", 2, 4.0);
        assert_eq!(b.tasks[0].state, TaskState::Failed);
        assert_eq!(b.tasks[0].finished_session_secs, Some(4.0));
    }

    #[test]
    fn resumed_states() {
        assert_eq!(TaskState::resumed("running"), TaskState::Pending);
        assert_eq!(TaskState::resumed("done"), TaskState::Done);
        assert_eq!(TaskState::resumed("failed"), TaskState::Failed);
    }
}
