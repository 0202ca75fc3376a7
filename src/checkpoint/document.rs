//! The checkpoint document: one typed shape for `checkpoint_NNN.json`, built in one place
//! ([`CheckpointDocument::build`]) by the running session and by `megatest restore` alike.
//!
//! Fields are the seed's `SessionCheckpoint` (`timestamp`, `session_id`, `phase`,
//! `agent_states`, `working_memory`, `file_system_state`, `test_results`, `metrics`,
//! `git_commit`) plus megatest's (`trigger`, `session_secs`, `wall_secs`, `task_board`,
//! `budgets`). [`super::Checkpointer::write`] adds `sequence`, `parent` and `sha256`.
//! Documents written by older megatest versions lack some fields; reading fills them with
//! their defaults (empty lists, `null`).

use super::snapshot::SnapshotStats;
use crate::store::{BoardEntry, CheckRow, EventRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Notes kept per agent in `handoff_notes`.
pub const HANDOFF_NOTES: usize = 20;

/// One checkpoint file's content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointDocument {
    /// When it was built (RFC 3339, UTC, milliseconds).
    pub timestamp: String,
    /// The session's id.
    pub session_id: String,
    /// What asked for it: `time`, `tool_calls`, `tokens`, `phase_end`, `manual`, `signal`,
    /// `before_restore`, …
    pub trigger: String,
    /// The phase running then (None between phases).
    #[serde(default)]
    pub phase: Option<String>,
    /// Session seconds at the checkpoint.
    #[serde(default)]
    pub session_secs: f64,
    /// Wall seconds this daemon had run (None where no daemon ran: `megatest restore`).
    #[serde(default)]
    pub wall_secs: Option<f64>,
    /// Every agent, in configuration order.
    #[serde(default)]
    pub agent_states: Vec<AgentState>,
    /// The session's working memory ([`crate::swarm::memory::document`]): the agents' notes
    /// per agent id, every run's handoff summary and the closed votes' decisions.
    #[serde(default)]
    pub working_memory: Value,
    /// The workspace snapshot.
    pub file_system_state: FileSystemState,
    /// The last phase's check results (empty when no phase was checked yet).
    #[serde(default)]
    pub test_results: Vec<CheckRow>,
    /// `metrics_current.json` as it was (None where no daemon ran).
    #[serde(default)]
    pub metrics: Option<Value>,
    /// The workspace's git `HEAD`, when it is a repository.
    #[serde(default)]
    pub git_commit: Option<String>,
    /// The task board.
    #[serde(default)]
    pub task_board: Vec<BoardEntry>,
    /// The budget counters ([`crate::budget::Budgets`] as JSON).
    #[serde(default)]
    pub budgets: Value,
}

/// One agent in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentState {
    /// The agent's id (`agent-1`, …).
    pub id: String,
    /// Its role.
    pub role: String,
    /// `running`, `idle` or `stopped` (no daemon).
    pub status: String,
    /// The task it runs, when running.
    #[serde(default)]
    pub current_task: Option<String>,
    /// The attempt of that task, when running.
    #[serde(default)]
    pub attempt: Option<u32>,
    /// Tokens metered for it so far (None where not read).
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Tool calls counted for it so far (None where not read).
    #[serde(default)]
    pub tool_calls: Option<u64>,
    /// When it last started a run, called the model or reported a tool call (RFC 3339).
    #[serde(default)]
    pub last_activity: Option<String>,
    /// The process ids of its run (locally the group leader).
    #[serde(default)]
    pub process_ids: Vec<u32>,
    /// Its run's group id (locally the process group).
    #[serde(default)]
    pub process_group: Option<u32>,
    /// Its newest [`HANDOFF_NOTES`] notes, oldest first (filled by the builder).
    #[serde(default)]
    pub handoff_notes: Vec<Value>,
}

impl AgentState {
    /// An agent with no run and nothing read about it (`megatest restore`: no daemon runs).
    pub fn stopped(id: &str, role: &str) -> AgentState {
        AgentState {
            id: id.to_string(),
            role: role.to_string(),
            status: "stopped".into(),
            current_task: None,
            attempt: None,
            tokens: None,
            tool_calls: None,
            last_activity: None,
            process_ids: Vec::new(),
            process_group: None,
            handoff_notes: Vec::new(),
        }
    }
}

/// The workspace snapshot a checkpoint names.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FileSystemState {
    /// The manifest's hash in the object store.
    pub manifest: String,
    /// Files listed.
    #[serde(default)]
    pub files: u64,
    /// Directories listed.
    #[serde(default)]
    pub dirs: u64,
    /// Symbolic links listed.
    #[serde(default)]
    pub symlinks: u64,
    /// Bytes of all files listed.
    #[serde(default)]
    pub bytes: u64,
    /// Objects this snapshot wrote (manifest included).
    #[serde(default)]
    pub new_objects: u64,
    /// Bytes of those objects.
    #[serde(default)]
    pub new_bytes: u64,
    /// Files whose hash came from the stat cache.
    #[serde(default)]
    pub cache_hits: u64,
    /// Files over the size cap (listed, not stored).
    #[serde(default)]
    pub not_stored: u64,
    /// False when the snapshot outlasted the freeze limit and agents ran during it.
    #[serde(default = "yes")]
    pub consistent: bool,
    /// Wall milliseconds the agents were frozen.
    #[serde(default)]
    pub frozen_ms: f64,
}

fn yes() -> bool {
    true
}

impl FileSystemState {
    /// The state of snapshot `manifest` with its figures.
    pub fn of(
        manifest: &str,
        stats: &SnapshotStats,
        consistent: bool,
        frozen_ms: f64,
    ) -> FileSystemState {
        FileSystemState {
            manifest: manifest.to_string(),
            files: stats.files,
            dirs: stats.dirs,
            symlinks: stats.symlinks,
            bytes: stats.bytes,
            new_objects: stats.new_objects,
            new_bytes: stats.new_bytes,
            cache_hits: stats.cache_hits,
            not_stored: stats.not_stored,
            consistent,
            frozen_ms,
        }
    }
}

/// What a checkpoint is built from: the caller's view of the session at that moment.
#[derive(Debug, Clone)]
pub struct Parts<'a> {
    /// See [`CheckpointDocument::session_id`].
    pub session_id: &'a str,
    /// See [`CheckpointDocument::trigger`].
    pub trigger: &'a str,
    /// See [`CheckpointDocument::phase`].
    pub phase: Option<String>,
    /// See [`CheckpointDocument::session_secs`].
    pub session_secs: f64,
    /// See [`CheckpointDocument::wall_secs`].
    pub wall_secs: Option<f64>,
    /// The agents; their `handoff_notes` are filled from `notes`.
    pub agents: Vec<AgentState>,
    /// Every `note` event, oldest first.
    pub notes: &'a [EventRow],
    /// Every `handoff` event, oldest first.
    pub handoffs: &'a [EventRow],
    /// Every `vote_closed` event, oldest first.
    pub decisions: &'a [EventRow],
    /// See [`CheckpointDocument::file_system_state`].
    pub file_system_state: FileSystemState,
    /// See [`CheckpointDocument::test_results`].
    pub test_results: Vec<CheckRow>,
    /// See [`CheckpointDocument::metrics`].
    pub metrics: Option<Value>,
    /// See [`CheckpointDocument::git_commit`].
    pub git_commit: Option<String>,
    /// See [`CheckpointDocument::task_board`].
    pub task_board: Vec<BoardEntry>,
    /// See [`CheckpointDocument::budgets`].
    pub budgets: Value,
}

impl CheckpointDocument {
    /// The one place a checkpoint document is assembled: stamps the time, hands each agent
    /// its newest notes and gathers every note into `working_memory`.
    pub fn build(parts: Parts<'_>) -> CheckpointDocument {
        let agent_states = parts
            .agents
            .into_iter()
            .map(|mut agent| {
                agent.handoff_notes = notes_of(parts.notes, &agent.id);
                agent
            })
            .collect();
        CheckpointDocument {
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            session_id: parts.session_id.to_string(),
            trigger: parts.trigger.to_string(),
            phase: parts.phase,
            session_secs: parts.session_secs,
            wall_secs: parts.wall_secs,
            agent_states,
            working_memory: working_memory(parts.notes, parts.handoffs, parts.decisions),
            file_system_state: parts.file_system_state,
            test_results: parts.test_results,
            metrics: parts.metrics,
            git_commit: parts.git_commit,
            task_board: parts.task_board,
            budgets: parts.budgets,
        }
    }

    /// True when it was taken as its phase ended (a rollback keeps that phase ended).
    pub fn at_phase_end(&self) -> bool {
        self.trigger == "phase_end"
    }
}

/// A checkpoint's `working_memory` from the `note`, `handoff` and `vote_closed` events.
pub fn working_memory(notes: &[EventRow], handoffs: &[EventRow], decisions: &[EventRow]) -> Value {
    let items = |rows: &[EventRow]| rows.iter().map(memory_item).collect::<Vec<_>>();
    crate::swarm::memory::document(&items(notes), &items(handoffs), &items(decisions))
}

/// An event as an item of working memory: a note's or handoff's `text`; a vote's
/// `"vote <id>: <outcome> (<reason>)"`, after the proposal's title for a proposal's vote.
pub fn memory_item(row: &EventRow) -> crate::swarm::memory::Item {
    let data = serde_json::from_str::<Value>(&row.data).unwrap_or_default();
    let text = match data["text"].as_str() {
        Some(text) => text.to_string(),
        None => format!(
            "{}vote {}: {} ({})",
            data["title"]
                .as_str()
                .map(|t| format!("{t} — "))
                .unwrap_or_default(),
            data["vote"],
            data["outcome"].as_str().unwrap_or(""),
            data["reason"].as_str().unwrap_or("")
        ),
    };
    crate::swarm::memory::Item {
        seq: row.id,
        session_secs: row.session_secs,
        agent: row.agent_id.clone(),
        task: row.task_id.clone(),
        text,
    }
}

/// An agent's notes for its `handoff_notes` (the newest [`HANDOFF_NOTES`], oldest first).
pub fn notes_of(notes: &[EventRow], agent_id: &str) -> Vec<Value> {
    let mine: Vec<&EventRow> = notes
        .iter()
        .filter(|n| n.agent_id.as_deref() == Some(agent_id))
        .collect();
    let skip = mine.len().saturating_sub(HANDOFF_NOTES);
    mine.into_iter().skip(skip).map(note_json).collect()
}

/// A note as checkpoints hold it: `{"seq", "at", "session_secs", "task_id", "text"}` (text
/// empty when the event's data has none).
pub fn note_json(note: &EventRow) -> Value {
    let text = serde_json::from_str::<Value>(&note.data)
        .ok()
        .and_then(|d| d["text"].as_str().map(String::from))
        .unwrap_or_default();
    serde_json::json!({"seq": note.id, "at": note.at, "session_secs": note.session_secs,
        "task_id": note.task_id, "text": text})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: i64, agent: &str, text: &str) -> EventRow {
        EventRow {
            id,
            at: "2026-01-01T00:00:00Z".into(),
            session_secs: id as f64,
            kind: "note".into(),
            agent_id: Some(agent.into()),
            phase: None,
            task_id: Some("t1".into()),
            data: serde_json::json!({ "text": text }).to_string(),
        }
    }

    fn parts<'a>(notes: &'a [EventRow]) -> Parts<'a> {
        Parts {
            session_id: "s1",
            trigger: "manual",
            phase: Some("development".into()),
            session_secs: 120.0,
            wall_secs: Some(2.0),
            agents: vec![
                AgentState::stopped("agent-1", "coder"),
                AgentState::stopped("agent-2", "tester"),
            ],
            notes,
            handoffs: &[],
            decisions: &[],
            file_system_state: FileSystemState {
                manifest: "abc".into(),
                ..Default::default()
            },
            test_results: Vec::new(),
            metrics: None,
            git_commit: None,
            task_board: vec![BoardEntry {
                id: "t1".into(),
                phase: "development".into(),
                role: "coder".into(),
                state: "running".into(),
                attempts: 1,
                agent_id: Some("agent-1".into()),
                last_error: None,
            }],
            budgets: serde_json::json!({"used_tokens": 10}),
        }
    }

    #[test]
    fn notes_become_working_memory_and_the_newest_handoff_notes() {
        let mut notes: Vec<EventRow> = (1..=25).map(|i| note(i, "agent-1", "n")).collect();
        notes.push(note(26, "agent-2", "from two"));
        let doc = CheckpointDocument::build(parts(&notes));
        let memory = &doc.working_memory["notes"];
        assert_eq!(memory["agent-1"].as_array().unwrap().len(), 25);
        assert_eq!(memory["agent-2"][0]["text"], "from two");
        let first = &doc.agent_states[0].handoff_notes;
        assert_eq!(first.len(), HANDOFF_NOTES);
        assert_eq!(
            first[0]["seq"], 6,
            "the newest {HANDOFF_NOTES}, oldest first"
        );
        assert_eq!(doc.agent_states[1].handoff_notes.len(), 1);
    }

    #[test]
    fn a_document_reads_back_as_written_and_older_documents_get_defaults() {
        let doc = CheckpointDocument::build(parts(&[]));
        let json = serde_json::to_value(&doc).unwrap();
        let back: CheckpointDocument = serde_json::from_value(json).unwrap();
        assert_eq!(back, doc);
        let old: CheckpointDocument = serde_json::from_value(serde_json::json!({
            "timestamp": "t", "session_id": "s", "trigger": "time",
            "file_system_state": {"manifest": "m"}, "sequence": 3, "sha256": "x"
        }))
        .unwrap();
        assert!(old.agent_states.is_empty() && old.task_board.is_empty());
        assert!(old.file_system_state.consistent);
        assert!(!old.at_phase_end());
    }
}
