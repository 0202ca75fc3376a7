//! Proposals agents raise themselves (an architecture decision, a convention, a change of
//! plan): `POST /api/agent/proposals`, a `{"type": "proposal", "title": …, "text": …}` line in
//! the events file, or `megatest propose TITLE [TEXT…]` from the agent's shell. Each opens a
//! vote of kind `proposal` (subject `proposal-<n>`) among the other agents, decided by the same
//! `[consensus]` rules as reviews (`voting.rs`); the decision is a `vote_closed` event, so it
//! joins the working memory every later prompt and checkpoint carries. A deadlock is the
//! `consensus_deadlock` failure for the recovery table. Untrusted input: the title is at most
//! [`crate::api::MAX_PROPOSAL_TITLE_CHARS`] characters and the text
//! [`crate::api::MAX_NOTE_CHARS`]; an agent has at most one proposal open at a time.

use super::voting::Subject;
use super::*;
use crate::protocol::{ControlError, ControlReply};

/// A proposal put to a vote.
pub(super) struct Proposal {
    /// `proposal-<n>`, numbered through the session.
    pub(super) subject: String,
    /// The agent that raised it.
    pub(super) author_idx: usize,
    /// The phase it was raised in.
    pub(super) phase_idx: usize,
    pub(super) title: String,
    pub(super) text: String,
    /// Its vote is still open.
    pub(super) open: bool,
}

fn refused(code: &'static str, message: impl Into<String>) -> ControlReply {
    Err(ControlError::Conflict {
        code,
        message: message.into(),
    })
}

impl Session {
    /// Agent `agent_idx` proposes `title` (`text`: what and why) through `via` (`api`,
    /// `events_file`): a vote opens. Refused (409) without `[consensus]`, between phases, or
    /// while the agent's previous proposal is still open.
    pub(super) fn raise_proposal(
        &mut self,
        agent_idx: usize,
        title: &str,
        text: &str,
        via: &str,
    ) -> Result<ControlReply> {
        if !self.prepared.config.raw.consensus.enabled {
            return Ok(refused(
                "consensus_disabled",
                "no [consensus] in this session's config: there are no votes",
            ));
        }
        let Some(phase_idx) = self.current_phase else {
            return Ok(refused("no_phase", "no phase is running"));
        };
        if self
            .proposals
            .iter()
            .any(|p| p.open && p.author_idx == agent_idx)
        {
            return Ok(refused(
                "proposal_open",
                "this agent's previous proposal is still being voted on",
            ));
        }
        let title: String = title
            .trim()
            .chars()
            .take(crate::api::MAX_PROPOSAL_TITLE_CHARS)
            .collect();
        if title.is_empty() {
            return Ok(refused("bad_request", "a proposal needs a title"));
        }
        let text: String = text
            .trim()
            .chars()
            .take(crate::api::MAX_NOTE_CHARS)
            .collect();
        let subject = format!(
            "proposal-{}",
            self.store.events_of_kind("proposal_raised")?.len() + 1
        );
        let agent_id = self.agents[agent_idx].id.clone();
        let phase = self.prepared.config.phases[phase_idx].name.clone();
        self.event(
            "proposal_raised",
            Some(&agent_id),
            Some(&phase),
            Some(&subject),
            serde_json::json!({"title": title, "text": text, "via": via}),
        )?;
        tracing::info!(message = "proposal raised", agent = %agent_id, proposal = %subject, title = %title);
        self.proposals.push(Proposal {
            subject: subject.clone(),
            author_idx: agent_idx,
            phase_idx,
            title,
            text,
            open: true,
        });
        let idx = self.proposals.len() - 1;
        self.open_vote(Subject::Proposal(idx), Some(agent_idx))?;
        let vote = self
            .votes
            .iter()
            .rev()
            .find(|v| v.is_about(Subject::Proposal(idx)));
        Ok(Ok(serde_json::json!({
            "proposal": subject,
            "vote": vote.map(|v| v.id()),
            "status": if vote.is_some() { "open" } else { "decided" },
        })))
    }
}
