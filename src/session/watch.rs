//! File watches that feed the session's event loop: an agent appending to its
//! `events.jsonl` becomes [`Event::AgentEventsAppended`] at once, instead of waiting for the
//! next metrics tick (which still drains every file, in case a notification was lost).

use crate::protocol::Event;
use std::path::Path;
use tokio::sync::mpsc;

/// Watch `agents_dir` (`<session>/agents/<agent id>/events.jsonl`); `index_of` maps an agent's
/// directory name to its index (agents spawned later included; the session ignores an index it
/// has no agent for). None (logged) when the watch cannot be set up.
pub fn watch_agent_events(
    agents_dir: &Path,
    index_of: fn(&str) -> Option<usize>,
    events: mpsc::Sender<Event>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !event.kind.is_modify() && !event.kind.is_create() {
            return;
        }
        for path in &event.paths {
            if path.file_name().is_none_or(|n| n != "events.jsonl") {
                continue;
            }
            let agent = path
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .and_then(index_of);
            if let Some(agent_idx) = agent {
                // A full queue drops the notice: the metrics tick drains the file anyway.
                let _ = events.try_send(Event::AgentEventsAppended { agent_idx });
            }
        }
    };
    let mut watcher = notify::recommended_watcher(handler)
        .map_err(|err| tracing::warn!(message = "agent events watch unavailable", error = %err))
        .ok()?;
    watcher
        .watch(agents_dir, notify::RecursiveMode::Recursive)
        .map_err(|err| tracing::warn!(message = "agent events watch unavailable", error = %err))
        .ok()?;
    Some(watcher)
}
