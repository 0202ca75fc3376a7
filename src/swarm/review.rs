//! Review votes on done work: the reviewer's prompt and its verdict. Any agent CLI can vote by
//! ending its output with a line
//!
//! ```text
//! VERDICT: approve — the reason
//! VERDICT: reject — the reason
//! ```
//!
//! (`abstain` too; the separator may be `—`, `–`, `-` or `:`). The last such line in the run's
//! output counts. Pure.

use super::consensus::Choice;

/// The marker a verdict line starts with.
pub const VERDICT_MARKER: &str = "VERDICT:";

/// The prefix of generated review task ids: `review-<task>-v<vote>-<n>`.
pub const REVIEW_PREFIX: &str = "review-";

/// The last verdict in `output` (an agent's log of one run): its choice and reason. A verdict
/// inside a JSON string (an agent that logs its final message as JSON) counts too: the reason
/// ends at the line's end or an unescaped `"`.
pub fn parse_verdict(output: &str) -> Option<(Choice, String)> {
    let upper = output.to_ascii_uppercase();
    let mut found = None;
    let mut from = 0;
    while let Some(at) = upper[from..].find(VERDICT_MARKER) {
        let start = from + at + VERDICT_MARKER.len();
        from = start;
        let rest = &output[start..];
        let rest = rest.trim_start_matches([' ', '\t', '*', '`']);
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let Some(choice) = Choice::parse(&word) else {
            continue;
        };
        let after = &rest[word.len()..];
        let end = after.find(['\n', '"']).unwrap_or(after.len());
        let reason = after[..end]
            .trim_start_matches([' ', '\t', '—', '–', '-', ':', '*', '`'])
            .trim()
            .replace("\\n", " ");
        found = Some((choice, reason));
    }
    found
}

/// The id of review `n` (1-based) in vote `vote` on task `task` (vote ids are unique in a
/// session, also across a resume or a rollback).
pub fn review_task_id(task: &str, vote: i64, n: usize) -> String {
    format!("{REVIEW_PREFIX}{task}-v{vote}-{n}")
}

/// True for a generated review task's id.
pub fn is_review(task_id: &str) -> bool {
    task_id.starts_with(REVIEW_PREFIX)
}

/// What a reviewer is asked to do: judge the work of `task` (its title and prompt) by
/// `author`, and end with a verdict line. `summary` is the author's handoff summary; `diff`
/// says where the diff of the author's run is and what it changed.
pub fn review_prompt(
    task_id: &str,
    title: &str,
    task_prompt: &str,
    author: &str,
    summary: Option<&str>,
    diff: Option<&str>,
) -> String {
    let mut out = format!(
        "Review the work of task {task_id} ({title}), done by {author}, in the current workspace.\n\n\
         The task asked:\n\n{}\n\n",
        task_prompt.trim()
    );
    if let Some(summary) = summary.filter(|s| !s.trim().is_empty()) {
        out.push_str(&format!("The author's summary: {}\n\n", summary.trim()));
    }
    if let Some(diff) = diff.filter(|d| !d.trim().is_empty()) {
        out.push_str(&format!("{}\n\n", diff.trim()));
    }
    out.push_str(
        "Read the files the task concerns, build and run the tests if you can, and judge whether \
         the work does what the task asked. Do not change any file. End your output with exactly \
         one line:\n\n\
         VERDICT: approve — <one-sentence reason>\n\nor\n\nVERDICT: reject — <what is wrong>\n",
    );
    out
}

/// What a voter on a proposal is asked: `author` proposes `title` (`text`: what and why).
pub fn proposal_prompt(subject: &str, author: &str, title: &str, text: &str) -> String {
    let mut out = format!("{author} proposes ({subject}): {}\n\n", title.trim());
    if !text.trim().is_empty() {
        out.push_str(&format!("{}\n\n", text.trim()));
    }
    out.push_str(
        "Judge the proposal against the project's requirements and the work in the current \
         workspace. Do not change any file. End your output with exactly one line:\n\n\
         VERDICT: approve — <one-sentence reason>\n\nor\n\nVERDICT: reject — <why not>\n",
    );
    out
}

/// The subject of phase `phase`'s gate vote (its review tasks are `review-gate-<phase>-v<vote>-<n>`).
pub fn gate_subject(phase: &str) -> String {
    format!("gate-{phase}")
}

/// What a voter on phase `phase`'s gate is asked: whether the phase's objectives are reached,
/// given the criteria the session judged met (`criteria`, one line each).
pub fn gate_prompt(phase: &str, objectives: &[String], criteria: &[String]) -> String {
    let mut out = format!(
        "Phase {phase}: its planned tasks are done and every success criterion was measured as met. Vote on ending the phase before its time box is over.\n\nThe phase's objectives:\n\n"
    );
    for objective in objectives {
        out.push_str(&format!("- {objective}\n"));
    }
    out.push_str("\nThe success criteria as measured:\n\n");
    for line in criteria {
        out.push_str(&format!("- {line}\n"));
    }
    out.push_str(
        "\nLook at the workspace. Approve when the objectives are reached; reject, saying what is \
         missing, when work toward them remains. Do not change any file. End your output with \
         exactly one line:\n\n\
         VERDICT: approve — <one-sentence reason>\n\nor\n\nVERDICT: reject — <what is missing>\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_verdict_counts_in_plain_text_and_json() {
        assert_eq!(
            parse_verdict("looked around\nVERDICT: approve — tests pass\n"),
            Some((Choice::Approve, "tests pass".to_string()))
        );
        let json = r#"{"event": "finish", "summary": "VERDICT: reject - no error handling"}"#;
        assert_eq!(
            parse_verdict(json),
            Some((Choice::Reject, "no error handling".to_string()))
        );
        let two = "VERDICT: reject — first\n...\n**Verdict:** approve: on second look it works";
        assert_eq!(
            parse_verdict(two),
            Some((Choice::Approve, "on second look it works".to_string()))
        );
        assert_eq!(parse_verdict("VERDICT: maybe"), None);
        assert_eq!(parse_verdict("no verdict here"), None);
        assert_eq!(
            parse_verdict("VERDICT: abstain"),
            Some((Choice::Abstain, String::new()))
        );
    }

    #[test]
    fn review_ids_and_prompt() {
        let id = review_task_id("qs-store", 7, 2);
        assert_eq!(id, "review-qs-store-v7-2");
        assert!(is_review(&id) && !is_review("qs-store"));
        let gate = review_task_id(&gate_subject("development"), 3, 1);
        assert_eq!(gate, "review-gate-development-v3-1");
        let prompt = gate_prompt(
            "development",
            &["Implement core functionality".into()],
            &["Test coverage >= 70%: met (81.0 % of lines covered)".into()],
        );
        assert!(prompt.contains("Implement core functionality") && prompt.contains("81.0 %"));
        assert!(prompt.contains("VERDICT: approve"));
        let prompt = review_prompt(
            "qs-store",
            "Store",
            "Write the store",
            "agent-1",
            Some("done"),
            Some("The diff of the author's run: /s/agents/agent-1/diffs/qs-store.1.diff"),
        );
        assert!(prompt.contains("VERDICT: approve") && prompt.contains("agent-1"));
        assert!(prompt.contains("The author's summary: done"));
        assert!(prompt.contains("/s/agents/agent-1/diffs/qs-store.1.diff"));
        let prompt = proposal_prompt("proposal-1", "agent-2", "Use SQLite", "for the store");
        assert!(prompt.starts_with("agent-2 proposes (proposal-1): Use SQLite\n\nfor the store"));
        assert!(prompt.contains("VERDICT: reject"));
    }
}
