//! The `scripted` model: deterministic replay of a project spec's `script.toml`.
//!
//! For an agent on task T whose conversation already holds k assistant turns, the answer is the
//! k-th scripted tool call of T, and after the last one a `finish` call with T's summary (a
//! review task's summary ends with `VERDICT: approve — …`). Usage is
//! counted with [`super::estimate_tokens`] over the request and the answer, so it is the same for
//! the same conversation every time. Latency is zero.

use super::{assistant_turns, estimate_tokens, prompt_tokens, ModelReply};
use crate::project::Script;
use crate::protocol::CallContext;
use serde_json::{json, Value};

/// The scripted model's answer to `request` from the agent in `ctx`: the next step of its task's script, then `finish`.
pub fn answer(script: &Script, ctx: &CallContext, request: &Value) -> ModelReply {
    let step = assistant_turns(request);
    let task = ctx.task_id.as_deref().unwrap_or("");
    let steps = script.tasks.get(task).map(Vec::as_slice).unwrap_or(&[]);
    let (name, args, content) = match steps.get(step) {
        Some((tool, args)) => (tool.clone(), args.to_string(), None),
        None => {
            let summary = match script.summaries.get(task) {
                Some(summary) => summary.clone(),
                // A review of another task's work: the scripted reviewer approves.
                None if crate::swarm::review::is_review(task) => {
                    "Reviewed the files and ran the tests.\nVERDICT: approve — the work does what the task asked".to_string()
                }
                None => format!("task {task} done"),
            };
            let note = if steps.is_empty() && !crate::swarm::review::is_review(task) {
                Some(format!("The script has no steps for task {task:?}."))
            } else {
                None
            };
            (
                "finish".to_string(),
                json!({"summary": summary}).to_string(),
                note,
            )
        }
    };
    let completion_tokens = estimate_tokens(&name)
        + estimate_tokens(&args)
        + estimate_tokens(content.as_deref().unwrap_or(""))
        + 8;
    ModelReply {
        content,
        tool_calls: vec![(format!("call_{task}_{step}"), name, args)],
        prompt_tokens: prompt_tokens(request),
        completion_tokens,
        latency_session_secs: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(task: &str) -> CallContext {
        CallContext {
            agent_idx: 0,
            agent_id: "agent-1".into(),
            role: "Coder".into(),
            phase: Some("development".into()),
            task_id: Some(task.into()),
            attempt: 1,
        }
    }

    #[test]
    fn replays_steps_then_finishes() {
        let mut script = Script::default();
        script.tasks.insert(
            "t".into(),
            vec![(
                "write_file".into(),
                json!({"path": "a.py", "content": "x = 1\n"}),
            )],
        );
        let first = answer(
            &script,
            &ctx("t"),
            &json!({"messages": [{"role": "user", "content": "go"}]}),
        );
        assert_eq!(first.tool_calls[0].1, "write_file");
        assert_eq!(first.prompt_tokens, 4 + 1);
        let second = answer(
            &script,
            &ctx("t"),
            &json!({"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": null}]}),
        );
        assert_eq!(second.tool_calls[0].1, "finish");
    }
}
