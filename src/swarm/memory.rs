//! The session's working memory: the notes agents post (`POST /api/agent/notes`, or a
//! `{"type": "note", "text": …}` line in their events file), the handoff summary each run
//! leaves ([`handoff_summary`]), and the decisions of closed votes. The session keeps every
//! item in `session.db` (`note`, `handoff` and `vote_closed` events), writes them into every
//! checkpoint's `working_memory` ([`document`]), and gives the agent that takes a task over
//! what concerns that task ([`prompt_section`]). `megatest restore` rolls the working memory
//! back with the rest ([`rolled_back`]). Pure.

use serde_json::{json, Value};

/// Characters of one note or handoff kept (longer text is cut at a character boundary).
pub const TEXT_LIMIT: usize = 2_000;

/// Items per kind a prompt section shows (the newest).
pub const PROMPT_ITEMS: usize = 5;

/// One item of working memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The `events` row's sequence number.
    pub seq: i64,
    /// Session seconds when it was recorded.
    pub session_secs: f64,
    /// The agent that wrote it (None for a vote decision).
    pub agent: Option<String>,
    /// The task it concerns.
    pub task: Option<String>,
    /// The text: a note, a handoff summary, or `"<outcome>: <reason>"` of a vote.
    pub text: String,
}

impl Item {
    fn json(&self) -> Value {
        json!({"seq": self.seq, "session_secs": self.session_secs, "agent": self.agent,
            "task_id": self.task, "text": self.text})
    }
}

/// `text` cut to [`TEXT_LIMIT`] characters.
pub fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(TEXT_LIMIT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// True when an item recorded at `session_secs` was rolled away by a `megatest restore`:
/// `rollbacks` holds each restore's (checkpoint session second, restore session second), and
/// an item from between the two is no longer part of the working memory.
pub fn rolled_back(session_secs: f64, rollbacks: &[(f64, f64)]) -> bool {
    rollbacks
        .iter()
        .any(|(checkpoint, restore)| session_secs > *checkpoint && session_secs <= *restore)
}

/// The handoff summary of a run from its output: the summary of the last
/// `{"event": "finish", "summary": …}` line (the reference agent's), else the last ten non-empty
/// lines. None for a run without output.
pub fn handoff_summary(output: &str) -> Option<String> {
    let finish = output.lines().rev().find_map(|line| {
        let value: Value = serde_json::from_str(line.trim()).ok()?;
        (value["event"] == "finish")
            .then(|| value["summary"].as_str().map(str::to_string))
            .flatten()
    });
    if let Some(summary) = finish.filter(|s| !s.trim().is_empty()) {
        return Some(clip(&summary));
    }
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    Some(clip(&tail))
}

/// A checkpoint's `working_memory`:
/// `{"notes": {"<agent>": [item, …]}, "handoffs": [item, …], "decisions": [item, …]}`, each
/// list oldest first; an item is `{"seq", "session_secs", "agent", "task_id", "text"}`.
pub fn document(notes: &[Item], handoffs: &[Item], decisions: &[Item]) -> Value {
    let mut by_agent = serde_json::Map::new();
    for note in notes {
        let entry = by_agent
            .entry(note.agent.clone().unwrap_or_default())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(note.json());
        }
    }
    json!({
        "notes": by_agent,
        "handoffs": handoffs.iter().map(Item::json).collect::<Vec<_>>(),
        "decisions": decisions.iter().map(Item::json).collect::<Vec<_>>(),
    })
}

/// Subjects of the votes on agents' own proposals (`proposal-<n>`): their decisions are the
/// team's, shown to every task.
pub const PROPOSAL_PREFIX: &str = "proposal-";

/// The working memory an agent taking over `task` is given: the newest handoffs and notes on
/// the task and the decisions of its votes, the team's newest decisions on proposals, then the
/// team's newest notes on other tasks. Empty when there is nothing.
pub fn prompt_section(task: &str, notes: &[Item], handoffs: &[Item], decisions: &[Item]) -> String {
    let on_task = |items: &[Item]| -> Vec<Item> {
        let mine: Vec<Item> = items
            .iter()
            .filter(|i| i.task.as_deref() == Some(task))
            .cloned()
            .collect();
        mine[mine.len().saturating_sub(PROMPT_ITEMS)..].to_vec()
    };
    let (task_handoffs, task_notes, task_decisions) =
        (on_task(handoffs), on_task(notes), on_task(decisions));
    let others: Vec<&Item> = notes
        .iter()
        .filter(|i| i.task.as_deref() != Some(task))
        .collect();
    let others = &others[others.len().saturating_sub(PROMPT_ITEMS)..];
    let team: Vec<&Item> = decisions
        .iter()
        .filter(|i| {
            i.task
                .as_deref()
                .is_some_and(|t| t.starts_with(PROPOSAL_PREFIX) && t != task)
        })
        .collect();
    let team = &team[team.len().saturating_sub(PROMPT_ITEMS)..];
    if task_handoffs.is_empty()
        && task_notes.is_empty()
        && task_decisions.is_empty()
        && others.is_empty()
        && team.is_empty()
    {
        return String::new();
    }
    let mut out = String::from("\n## Working memory\n");
    let who = |i: &Item| i.agent.clone().unwrap_or_else(|| "the session".into());
    // Every item shows at most TEXT_LIMIT characters (a note may hold more).
    let clipped: Vec<Item> = task_handoffs
        .iter()
        .chain(&task_decisions)
        .chain(&task_notes)
        .map(|i| Item {
            text: clip(&i.text),
            ..i.clone()
        })
        .collect();
    let (task_handoffs, rest) = clipped.split_at(task_handoffs.len());
    let (task_decisions, task_notes) = rest.split_at(task_decisions.len());
    if !task_handoffs.is_empty() {
        out.push_str("\nWhat earlier runs of this task left for you:\n\n");
        for item in task_handoffs {
            out.push_str(&format!(
                "- {}: {}\n",
                who(item),
                item.text.replace('\n', "\n  ")
            ));
        }
    }
    if !task_decisions.is_empty() {
        out.push_str("\nVotes on this task's work:\n\n");
        for item in task_decisions {
            out.push_str(&format!("- {}\n", item.text));
        }
    }
    if !task_notes.is_empty() {
        out.push_str("\nNotes on this task:\n\n");
        for item in task_notes {
            out.push_str(&format!("- {}: {}\n", who(item), item.text));
        }
    }
    if !team.is_empty() {
        out.push_str("\nThe team's decisions on proposals:\n\n");
        for item in team {
            let on = item.task.as_deref().unwrap_or_default();
            out.push_str(&format!("- {on}: {}\n", clip(&item.text)));
        }
    }
    if !others.is_empty() {
        out.push_str("\nThe team's newest notes:\n\n");
        for item in others {
            let on = item
                .task
                .as_deref()
                .map(|t| format!(" (on {t})"))
                .unwrap_or_default();
            out.push_str(&format!("- {}{on}: {}\n", who(item), item.text));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: i64, agent: &str, task: &str, text: &str) -> Item {
        Item {
            seq,
            session_secs: seq as f64,
            agent: Some(agent.into()),
            task: Some(task.into()),
            text: text.into(),
        }
    }

    #[test]
    fn a_handoff_is_the_finish_summary_or_the_output_tail() {
        let reference = "{\"event\": \"tool_result\"}\n{\"event\": \"finish\", \"summary\": \"queue done; tests in tests/\"}\n";
        assert_eq!(
            handoff_summary(reference).unwrap(),
            "queue done; tests in tests/"
        );
        let plain: String = (1..=15).map(|i| format!("line {i}\n\n")).collect();
        let summary = handoff_summary(&plain).unwrap();
        assert!(
            summary.starts_with("line 6\nline 7") && summary.ends_with("line 15"),
            "{summary}"
        );
        assert_eq!(handoff_summary("\n  \n"), None);
        let long = "é".repeat(TEXT_LIMIT + 10);
        assert_eq!(clip(&long).chars().count(), TEXT_LIMIT + 1);
    }

    #[test]
    fn the_document_keeps_notes_by_agent_handoffs_and_decisions() {
        let notes = [
            item(1, "agent-1", "t1", "a"),
            item(3, "agent-2", "t2", "b"),
            item(4, "agent-1", "t2", "c"),
        ];
        let handoffs = [item(2, "agent-1", "t1", "did t1")];
        let decisions = [Item {
            agent: None,
            ..item(5, "", "t1", "approved: 2 of 2")
        }];
        let doc = document(&notes, &handoffs, &decisions);
        assert_eq!(doc["notes"]["agent-1"].as_array().unwrap().len(), 2);
        assert_eq!(doc["notes"]["agent-2"][0]["text"], "b");
        assert_eq!(doc["handoffs"][0]["text"], "did t1");
        assert_eq!(doc["decisions"][0]["agent"], Value::Null);
    }

    #[test]
    fn the_prompt_section_gives_the_task_its_own_memory_first() {
        let notes = [
            item(1, "agent-2", "t1", "the parser is in src/resp.rs"),
            item(2, "agent-3", "t9", "redis port is 7000"),
        ];
        let handoffs = [item(3, "agent-1", "t1", "half done:\nLPUSH missing")];
        let decisions = [
            Item {
                agent: None,
                ..item(4, "", "t1", "rejected: agent-2: no tests")
            },
            Item {
                agent: None,
                ..item(
                    5,
                    "",
                    "proposal-1",
                    "Use SQLite — vote 7: approved (2 of 2)",
                )
            },
            Item {
                agent: None,
                ..item(6, "", "t7", "approved: fine")
            },
        ];
        let section = prompt_section("t1", &notes, &handoffs, &decisions);
        // Another task's review decision is not shown; the team's proposal decisions are.
        assert!(!section.contains("approved: fine"), "{section}");
        let decided = section
            .find("- proposal-1: Use SQLite — vote 7: approved (2 of 2)")
            .unwrap();
        assert!(section.starts_with("\n## Working memory\n"));
        let handoff = section
            .find("agent-1: half done:\n  LPUSH missing")
            .unwrap();
        let vote = section.find("rejected: agent-2: no tests").unwrap();
        let own = section
            .find("agent-2: the parser is in src/resp.rs")
            .unwrap();
        let team = section.find("agent-3 (on t9): redis port is 7000").unwrap();
        assert!(
            handoff < vote && vote < own && own < decided && decided < team,
            "{section}"
        );
        assert_eq!(prompt_section("t1", &[], &[], &[]), "");
        // A note longer than TEXT_LIMIT shows cut.
        let long = [item(9, "agent-2", "t1", &"x".repeat(TEXT_LIMIT * 3))];
        let section = prompt_section("t1", &long, &[], &[]);
        assert!(
            section.len() < TEXT_LIMIT + 200 && section.contains('…'),
            "{}",
            section.len()
        );
    }

    #[test]
    fn a_restore_rolls_away_what_came_after_its_checkpoint() {
        let rollbacks = [(100.0, 250.0)];
        assert!(!rolled_back(100.0, &rollbacks));
        assert!(rolled_back(100.5, &rollbacks));
        assert!(rolled_back(250.0, &rollbacks));
        assert!(!rolled_back(251.0, &rollbacks));
        assert!(!rolled_back(5.0, &[]));
    }
}
