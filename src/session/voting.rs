//! Votes (`[consensus]`) on done work and on phase gates (`gating.rs`). When an agent
//! finishes a task, a vote on its work opens
//! and review tasks are put on the board — one per vote needed (`min_votes`; none when fewer
//! agents are eligible — every other agent above `[agent].min_trust_score` — which deadlocks the
//! vote at once), each for a different
//! reviewer, never the author. A reviewer's ballot is what it cast through
//! `POST /api/agent/votes` during its run, else the verdict line of its run's output
//! ([`crate::swarm::review`]), else an abstention. The vote's clock (`vote_timeout_secs`,
//! session seconds, at least [`VOTE_TIMEOUT_FLOOR_WALL_SECS`] of wall time) starts when its first
//! reviewer starts. [`crate::swarm::consensus::decide`] decides it: approved work
//! stays done; rejected work goes back to its role for rework with the reviewers' reasons (failed
//! after `[agents].max_task_attempts` rejected rounds); a deadlock is the `consensus_deadlock`
//! failure for the recovery table (the seed's default: escalate to the operator). Votes still
//! open when their phase ends, or when a session is resumed, are `abandoned`.

use super::*;
use crate::store::NewVote;
use crate::swarm::consensus::{self, Ballot, Choice, Outcome, Rules};
use crate::swarm::review;

/// What a vote decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject {
    /// The work of this task (a review).
    Review(usize),
    /// Ending this phase before its time box is up (its gate, `gating.rs`).
    Gate(usize),
    /// An agent's proposal (index into the session's proposals, `proposals.rs`).
    Proposal(usize),
}

/// A vote in progress.
pub(super) struct OpenVote {
    id: i64,
    subject: Subject,
    /// The agents that may vote (not the author, above `min_trust_score`).
    eligible: Vec<String>,
    /// Agents that must not review (the author and the distrusted).
    exclude: Vec<String>,
    /// Its review tasks.
    reviews: Vec<usize>,
    ballots: Vec<Ballot>,
    /// Session second its first reviewer started.
    started: Option<f64>,
}

impl OpenVote {
    /// The vote's id in `session.db`.
    pub(super) fn id(&self) -> i64 {
        self.id
    }

    /// True when the vote decides `subject`.
    pub(super) fn is_about(&self, subject: Subject) -> bool {
        self.subject == subject
    }
}

/// Wall seconds a vote stays open at least: a time-scaled session (3600 session seconds per
/// wall second) would otherwise time votes out before a reviewer's process has started.
pub(super) const VOTE_TIMEOUT_FLOOR_WALL_SECS: f64 = 30.0;

impl Session {
    /// Session seconds a vote stays open after its first reviewer started: `vote_timeout_secs`,
    /// at least [`VOTE_TIMEOUT_FLOOR_WALL_SECS`] of wall time.
    fn vote_timeout(&self) -> f64 {
        self.prepared
            .config
            .raw
            .consensus
            .vote_timeout_secs
            .max(VOTE_TIMEOUT_FLOOR_WALL_SECS * self.clock.time_scale())
    }

    fn rules(&self) -> Rules {
        let c = &self.prepared.config.raw.consensus;
        Rules {
            strategy: c.strategy,
            min_votes: c.min_votes,
            threshold: c.threshold,
        }
    }

    /// Agent `author_idx` finished task `task_idx`: open a vote on its work and put its review
    /// tasks on the board (when `[consensus].enabled`).
    pub(super) fn open_review(&mut self, task_idx: usize, author_idx: usize) -> Result<()> {
        if !self.prepared.config.raw.consensus.enabled
            || review::is_review(&self.board.tasks[task_idx].spec.id)
        {
            return Ok(());
        }
        self.open_vote(Subject::Review(task_idx), Some(author_idx))
    }

    /// Open a vote on `subject` and put its review tasks on the board: one per vote needed
    /// (`min_votes`), for the agents above `min_trust_score` other than the author.
    pub(super) fn open_vote(&mut self, subject: Subject, author_idx: Option<usize>) -> Result<()> {
        let min_trust = self.prepared.config.raw.agent.min_trust_score;
        let trust = self.trust_scores();
        let author = author_idx.map(|idx| self.agents[idx].id.clone());
        let (eligible, excluded): (Vec<String>, Vec<String>) = self
            .agents
            .iter()
            .filter(|a| !a.retired)
            .map(|a| a.id.clone())
            .partition(|id| {
                Some(id) != author.as_ref()
                    && trust.get(id).is_none_or(|(score, _)| *score > min_trust)
            });
        let rules = self.rules();
        // Fewer eligible voters than the quorum can never decide: no review is put on the board
        // and the vote deadlocks at once (below).
        let needed = if eligible.len() < rules.min_votes as usize {
            0
        } else {
            rules.min_votes as usize
        };
        let (kind, subject_id, phase_idx, round) = match subject {
            Subject::Review(task_idx) => {
                let task = &mut self.board.tasks[task_idx];
                task.review_rounds += 1;
                (
                    "review",
                    task.spec.id.clone(),
                    task.phase_idx,
                    task.review_rounds,
                )
            }
            Subject::Proposal(idx) => {
                let proposal = &self.proposals[idx];
                ("proposal", proposal.subject.clone(), proposal.phase_idx, 1)
            }
            Subject::Gate(phase_idx) => {
                self.gate.rounds += 1;
                let name = &self.prepared.config.phases[phase_idx].name;
                (
                    "gate",
                    review::gate_subject(name),
                    phase_idx,
                    self.gate.rounds,
                )
            }
        };
        let phase = self.prepared.config.phases[phase_idx].name.clone();
        let session_secs = self.clock.session_secs();
        let strategy = serde_json::to_value(rules.strategy)?;
        let id = self.store.open_vote(&NewVote {
            kind,
            subject: &subject_id,
            phase: &phase,
            author: author.as_deref(),
            strategy: strategy.as_str().unwrap_or(""),
            min_votes: rules.min_votes,
            threshold: rules.threshold,
            voters: &eligible,
            session_secs,
        })?;
        self.event(
            "vote_opened",
            author.as_deref(),
            Some(&phase),
            Some(&subject_id),
            serde_json::json!({"vote": id, "kind": kind, "round": round, "voters": eligible, "reviews": needed}),
        )?;
        tracing::info!(message = "vote opened", vote = id, kind, subject = %subject_id, round, reviews = needed);
        // The author last: reviewers' prompts name it from there.
        let mut exclude = excluded;
        if let Some(author) = author {
            exclude.retain(|id| *id != author);
            exclude.push(author);
        }
        self.votes.push(OpenVote {
            id,
            subject,
            eligible,
            exclude,
            reviews: Vec::new(),
            ballots: Vec::new(),
            started: None,
        });
        let idx = self.votes.len() - 1;
        for _ in 0..needed {
            self.add_reviewer(idx)?;
        }
        // Fewer eligible voters than the quorum: decided (a deadlock) at once.
        self.tally(idx, false)
    }

    /// Put one more review task of vote `idx` on the board (for any eligible agent that has not
    /// reviewed in this vote yet); false when every eligible agent was invited.
    fn add_reviewer(&mut self, idx: usize) -> Result<bool> {
        let vote = &self.votes[idx];
        if vote.reviews.len() >= vote.eligible.len() {
            return Ok(false);
        }
        let (subject_id, title, prompt, phase_idx) = match vote.subject {
            Subject::Review(task_idx) => {
                let reviewed = &self.board.tasks[task_idx];
                let author = vote.exclude.last().cloned().unwrap_or_default();
                let (id, title) = (&reviewed.spec.id, &reviewed.spec.title);
                let summary = self.last_handoff(id);
                let diff = self.diff_note(id);
                (
                    id.clone(),
                    format!("Review {id} ({title})"),
                    review::review_prompt(
                        id,
                        title,
                        &reviewed.spec.prompt,
                        &author,
                        summary.as_deref(),
                        diff.as_deref(),
                    ),
                    reviewed.phase_idx,
                )
            }
            Subject::Proposal(idx) => {
                let proposal = &self.proposals[idx];
                let author = &self.agents[proposal.author_idx].id;
                (
                    proposal.subject.clone(),
                    format!("Vote on {}: {}", proposal.subject, proposal.title),
                    review::proposal_prompt(
                        &proposal.subject,
                        author,
                        &proposal.title,
                        &proposal.text,
                    ),
                    proposal.phase_idx,
                )
            }
            Subject::Gate(phase_idx) => {
                let plan = &self.prepared.config.phases[phase_idx];
                (
                    review::gate_subject(&plan.name),
                    format!("Vote on ending the {} phase", plan.name),
                    review::gate_prompt(&plan.name, &plan.objectives, &self.gate.criteria_lines),
                    phase_idx,
                )
            }
        };
        // Not the author, not the distrusted, not an agent that took a review of this vote.
        let mut exclude = vote.exclude.clone();
        exclude.extend(
            vote.reviews
                .iter()
                .filter_map(|&r| self.board.tasks[r].agent_id.clone()),
        );
        let spec = crate::project::TaskSpec {
            id: review::review_task_id(&subject_id, vote.id, vote.reviews.len() + 1),
            phase: self.prepared.config.phases[phase_idx].name.clone(),
            role: "Reviewer".into(),
            title,
            prompt,
            after: Vec::new(),
            check: None,
        };
        self.store
            .insert_task(&spec.id, &spec.phase, &spec.role, &spec.title)?;
        let mut review_task = board::Task::planned(spec, phase_idx);
        review_task.exclude = exclude;
        review_task.review_of = Some(vote.id);
        self.board.tasks.push(review_task);
        let task_idx = self.board.tasks.len() - 1;
        self.votes[idx].reviews.push(task_idx);
        Ok(true)
    }

    /// A review task was claimed by `agent_idx`: no sibling review of the same vote may go to
    /// it, and the vote's clock starts with its first reviewer.
    pub(super) fn review_claimed(&mut self, task_idx: usize, agent_idx: usize) {
        let Some(vote_id) = self.board.tasks[task_idx].review_of else {
            return;
        };
        self.api_ballots.remove(&task_idx);
        let now = self.clock.session_secs();
        let agent_id = self.agents[agent_idx].id.clone();
        if let Some(vote) = self.votes.iter_mut().find(|v| v.id == vote_id) {
            vote.started.get_or_insert(now);
            for &sibling in &vote.reviews {
                if sibling != task_idx {
                    self.board.tasks[sibling].exclude.push(agent_id.clone());
                }
            }
        }
    }

    /// A review run finished: its verdict (the output of the run, from `log_offset` of the
    /// agent's log) is the reviewer's ballot; no verdict line is an abstention.
    pub(super) fn review_finished(
        &mut self,
        task_idx: usize,
        agent_idx: usize,
        log_offset: u64,
    ) -> Result<()> {
        let Some(vote_id) = self.board.tasks[task_idx].review_of else {
            return Ok(());
        };
        if self.api_ballots.remove(&task_idx) {
            // The reviewer voted through the API during its run: that ballot stands.
            return Ok(());
        }
        let log = self.agents[agent_idx].dir.join("agent.log");
        let output = read_from(&log, log_offset);
        let (choice, reason) = review::parse_verdict(&output).unwrap_or((
            Choice::Abstain,
            "no VERDICT line in the review's output".into(),
        ));
        let ballot = self.ballot_of(agent_idx, choice);
        self.cast(vote_id, ballot, &reason, "verdict_line")
    }

    /// Agent `agent_idx`'s ballot with `choice`, weighted by its trust score now.
    fn ballot_of(&self, agent_idx: usize, choice: Choice) -> Ballot {
        let agent = &self.agents[agent_idx];
        let weight = self
            .trust_scores()
            .get(&agent.id)
            .map(|(score, _)| *score)
            .unwrap_or_default();
        Ballot {
            voter: agent.id.clone(),
            role: agent.role.clone(),
            choice,
            weight,
        }
    }

    /// `POST /api/agent/votes` (`via` `api`) or a vote line in the agent's events file
    /// (`events_file`): the ballot of agent `agent_idx` in the vote of the review task it runs.
    /// Refused when it runs no review task or the vote is closed.
    pub(super) fn api_ballot(
        &mut self,
        agent_idx: usize,
        choice: Choice,
        reason: &str,
        via: &str,
    ) -> crate::protocol::ControlReply {
        let refused = |code: &'static str, message: &str| {
            Err(crate::protocol::ControlError::Conflict {
                code,
                message: message.to_string(),
            })
        };
        let Some(task_idx) = self.agents[agent_idx].running.as_ref().map(|r| r.task_idx) else {
            return refused("no_review", "this agent is not running a review task");
        };
        let Some(vote_id) = self.board.tasks[task_idx].review_of else {
            return refused("no_review", "this agent's task is not a review");
        };
        if !self.votes.iter().any(|v| v.id == vote_id) {
            return refused("vote_closed", "the vote is already decided");
        }
        let ballot = self.ballot_of(agent_idx, choice);
        let weight = ballot.weight;
        self.api_ballots.insert(task_idx);
        match self.cast(vote_id, ballot, reason, via) {
            Ok(()) => Ok(serde_json::json!({"vote": vote_id, "choice": choice, "weight": weight})),
            Err(err) => refused("store", &format!("{err:#}")),
        }
    }

    /// Review task `task_idx` failed for good: it casts no ballot, and its vote may be
    /// decided without it.
    pub(super) fn review_failed(&mut self, task_idx: usize) -> Result<()> {
        let Some(vote_id) = self.board.tasks[task_idx].review_of else {
            return Ok(());
        };
        match self.votes.iter().position(|v| v.id == vote_id) {
            Some(idx) => {
                // Another eligible agent reviews instead, when there is one.
                self.add_reviewer(idx)?;
                self.tally(idx, false)
            }
            None => Ok(()),
        }
    }

    /// Record `ballot` in vote `vote_id` (ignored once the vote is closed) and tally.
    pub(super) fn cast(
        &mut self,
        vote_id: i64,
        ballot: Ballot,
        reason: &str,
        via: &str,
    ) -> Result<()> {
        let Some(idx) = self.votes.iter().position(|v| v.id == vote_id) else {
            return Ok(());
        };
        let now = self.clock.session_secs();
        self.store.cast_ballot(vote_id, &ballot, reason, via, now)?;
        self.event(
            "ballot",
            Some(&ballot.voter),
            None,
            None,
            serde_json::json!({"vote": vote_id, "choice": ballot.choice, "weight": ballot.weight, "reason": reason, "via": via}),
        )?;
        let abstained = ballot.choice == Choice::Abstain;
        let vote = &mut self.votes[idx];
        let first = !vote.ballots.iter().any(|b| b.voter == ballot.voter);
        vote.ballots.retain(|b| b.voter != ballot.voter);
        vote.ballots.push(ballot);
        if abstained && first {
            // An abstention does not count toward the quorum: invite another reviewer.
            self.add_reviewer(idx)?;
        }
        self.tally(idx, false)
    }

    /// Decide vote `idx` now: closed when every review task has settled, its time is up, or
    /// `force` (its phase ended). A final outcome is applied and the vote leaves the open list.
    pub(super) fn tally(&mut self, idx: usize, force: bool) -> Result<()> {
        let now = self.clock.session_secs();
        let timeout = self.vote_timeout();
        let vote = &self.votes[idx];
        let settled = vote.reviews.iter().all(|&r| {
            matches!(
                self.board.tasks[r].state,
                TaskState::Done | TaskState::Failed
            )
        });
        let timed_out = force || settled || vote.started.is_some_and(|s| now - s >= timeout);
        let outcome =
            consensus::decide(self.rules(), &vote.ballots, vote.eligible.len(), timed_out);
        if !outcome.is_final() {
            return Ok(());
        }
        let vote = self.votes.remove(idx);
        self.apply_outcome(&vote, &outcome)
    }

    fn apply_outcome(&mut self, vote: &OpenVote, outcome: &Outcome) -> Result<()> {
        let now = self.clock.session_secs();
        self.trust_stale = true;
        // Reviews not started yet are not needed any more.
        for &review in &vote.reviews {
            let task = &mut self.board.tasks[review];
            if task.state == TaskState::Pending {
                task.state = TaskState::Failed;
                task.finished_session_secs = Some(now);
                task.last_error = Some(format!("not needed: vote {} was decided", vote.id));
                self.sync_task(review)?;
            }
        }
        let (task_id, phase_idx) = match vote.subject {
            Subject::Review(task_idx) => (
                self.board.tasks[task_idx].spec.id.clone(),
                self.board.tasks[task_idx].phase_idx,
            ),
            Subject::Gate(phase_idx) => (
                review::gate_subject(&self.prepared.config.phases[phase_idx].name),
                phase_idx,
            ),
            Subject::Proposal(idx) => (
                self.proposals[idx].subject.clone(),
                self.proposals[idx].phase_idx,
            ),
        };
        let phase = self.prepared.config.phases[phase_idx].name.clone();
        self.store
            .close_vote(vote.id, outcome.word(), outcome.reason(), now)?;
        let mut data = serde_json::json!({"vote": vote.id, "outcome": outcome.word(), "reason": outcome.reason(), "ballots": vote.ballots.len()});
        if let Subject::Proposal(idx) = vote.subject {
            data["title"] = serde_json::Value::String(self.proposals[idx].title.clone());
        }
        self.event("vote_closed", None, Some(&phase), Some(&task_id), data)?;
        tracing::info!(message = "vote closed", vote = vote.id, task = %task_id, outcome = outcome.word(), reason = outcome.reason());
        // A closed vote moves trust scores (reviews approved or rejected).
        self.record_trust_scores();
        let reasons: Vec<String> = match outcome {
            Outcome::Rejected(_) => self
                .store
                .votes()?
                .into_iter()
                .find(|v| v.id == vote.id)
                .map(|v| {
                    v.ballots
                        .into_iter()
                        .filter(|b| b.ballot.choice == Choice::Reject)
                        .map(|b| format!("{}: {}", b.ballot.voter, b.reason))
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let task_idx = match vote.subject {
            Subject::Review(task_idx) => task_idx,
            Subject::Gate(phase_idx) => return self.gate_decided(phase_idx, outcome, reasons),
            Subject::Proposal(idx) => {
                // The decision is the vote_closed event (working memory); a deadlock goes to
                // the recovery table like any other.
                self.proposals[idx].open = false;
                if let Outcome::Deadlock(reason) = outcome {
                    self.failure(
                        FailureKind::ConsensusDeadlock,
                        None,
                        None,
                        &format!("vote {} on {task_id}: {reason}", vote.id),
                    )?;
                }
                return Ok(());
            }
        };
        match outcome {
            Outcome::Rejected(_) => {
                let max_rounds = self.prepared.config.raw.agents.max_task_attempts;
                let task = &mut self.board.tasks[task_idx];
                let text = format!(
                    "the review rejected this work ({}): {}",
                    outcome.reason(),
                    reasons.join("; ")
                );
                if task.review_rounds >= max_rounds {
                    task.state = TaskState::Failed;
                    task.finished_session_secs = Some(now);
                    task.last_error = Some(format!(
                        "rejected by {} review rounds ([agents].max_task_attempts); last: {text}",
                        task.review_rounds
                    ));
                } else {
                    task.state = TaskState::Pending;
                    task.finished_session_secs = None;
                    task.handoff = Some(format!(
                        "## Rework\n\nReviewers rejected the previous work on this task. Fix what they found:\n\n{}\n",
                        reasons
                            .iter()
                            .map(|r| format!("- {r}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    ));
                    task.last_error = Some(text);
                }
                self.sync_task(task_idx)?;
            }
            Outcome::Deadlock(reason) => {
                // Undecided work is not done: it waits for the recovery (by default the
                // operator's decision, which accepts it or stops the session).
                let task = &mut self.board.tasks[task_idx];
                task.state = TaskState::Pending;
                task.finished_session_secs = None;
                self.sync_task(task_idx)?;
                self.failure(
                    FailureKind::ConsensusDeadlock,
                    None,
                    Some(task_idx),
                    &format!("vote {} on {task_id}: {reason}", vote.id),
                )?;
            }
            Outcome::Approved(_) | Outcome::Open => {}
        }
        Ok(())
    }

    /// An escalation ended (an operator decision or its timeout) and releases its task: the
    /// work of a deadlocked review is accepted as done; any other held task runs again.
    pub(super) fn release_escalated(
        &mut self,
        kind: FailureKind,
        task_idx: Option<usize>,
    ) -> Result<()> {
        let Some(task_idx) = task_idx else {
            return Ok(());
        };
        let task = &mut self.board.tasks[task_idx];
        task.held = false;
        if kind == FailureKind::ConsensusDeadlock && task.state == TaskState::Pending {
            task.state = TaskState::Done;
            task.finished_session_secs = Some(self.clock.session_secs());
            task.last_error = None;
            let task_id = task.spec.id.clone();
            self.sync_task(task_idx)?;
            self.event(
                "work_accepted",
                None,
                None,
                Some(&task_id),
                serde_json::json!({"because": "the escalated consensus deadlock was released"}),
            )?;
        }
        Ok(())
    }

    /// Every open vote whose time is up is decided (called from the phase loop).
    pub(super) fn check_vote_timeouts(&mut self) -> Result<()> {
        let now = self.clock.session_secs();
        let timeout = self.vote_timeout();
        while let Some(idx) = self
            .votes
            .iter()
            .position(|v| v.started.is_some_and(|s| now - s >= timeout))
        {
            self.tally(idx, true)?;
        }
        Ok(())
    }

    /// The session second the earliest open vote times out.
    pub(super) fn next_vote_deadline(&self) -> Option<f64> {
        let timeout = self.vote_timeout();
        self.votes
            .iter()
            .filter_map(|v| v.started.map(|s| s + timeout))
            .reduce(f64::min)
    }

    /// The phase ended: a review task that settled decides its vote; votes still waiting for
    /// reviews are abandoned (the phase's work is judged by its checks and evaluation).
    pub(super) fn close_votes_at_phase_end(&mut self) -> Result<()> {
        let now = self.clock.session_secs();
        self.gate.closing = true;
        for proposal in &mut self.proposals {
            proposal.open = false;
        }
        for vote in std::mem::take(&mut self.votes) {
            let outcome = consensus::decide(self.rules(), &vote.ballots, vote.eligible.len(), true);
            if vote.ballots.len() >= vote.reviews.len() {
                self.apply_outcome(&vote, &outcome)?;
            } else {
                self.store.close_vote(
                    vote.id,
                    "abandoned",
                    "the phase ended before every review finished",
                    now,
                )?;
            }
        }
        Ok(())
    }
}

impl Session {
    /// The votes held, for the report.
    pub(super) fn consensus_report(&self) -> crate::report::ConsensusReport {
        let c = &self.prepared.config.raw.consensus;
        let votes = self.store.votes().unwrap_or_default();
        let mut by_outcome = BTreeMap::new();
        for vote in &votes {
            *by_outcome.entry(vote.outcome.clone()).or_default() += 1;
        }
        crate::report::ConsensusReport {
            enabled: c.enabled,
            strategy: c.strategy,
            min_votes: c.min_votes,
            threshold: c.threshold,
            ballots_cast: votes.iter().map(|v| v.ballots.len()).sum(),
            by_outcome,
            votes,
        }
    }
}

/// The text of `path` from byte `offset` on (lossy; the last 256 KiB at most).
pub(super) fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = offset.max(len.saturating_sub(256 * 1024));
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
