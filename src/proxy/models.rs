//! The built-in models (`scripted`, `sim`): what they answer and how they count tokens, the
//! same way for every run.

use super::*;

/// One answer of a built-in model, before it is put on the wire.
#[derive(Debug, Clone)]
pub struct ModelReply {
    /// Text of the answer.
    pub content: Option<String>,
    /// (call id, tool name, JSON arguments as text)
    pub tool_calls: Vec<(String, String, String)>,
    /// Prompt tokens (estimated by the built-in model).
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Session seconds the model takes to answer (slept, divided by the time scale).
    pub latency_session_secs: f64,
}

/// The built-in model behind the proxy.
#[derive(Debug, Clone)]
pub enum BuiltinModel {
    /// Replays the project spec's script.
    Scripted(Arc<crate::project::Script>),
    /// Seeded stochastic answers.
    Sim(crate::config::raw::SimModel),
}

impl BuiltinModel {
    /// `scripted` or `sim`.
    pub fn name(&self) -> &'static str {
        match self {
            BuiltinModel::Scripted(_) => "scripted",
            BuiltinModel::Sim(_) => "sim",
        }
    }

    /// How every report labels it.
    pub fn label(&self) -> &'static str {
        match self {
            BuiltinModel::Scripted(_) => {
                "built-in scripted model: deterministic replay of the project spec's script, not an LLM"
            }
            BuiltinModel::Sim(_) => {
                "built-in sim model: seeded stochastic tool calls and token counts, not an LLM; its output is not expected to pass acceptance"
            }
        }
    }

    pub(super) fn answer(&self, ctx: &CallContext, request: &Value) -> ModelReply {
        match self {
            BuiltinModel::Scripted(script) => scripted::answer(script, ctx, request),
            BuiltinModel::Sim(settings) => sim::answer(settings, ctx, request),
        }
    }
}

/// Token count the built-in models report for a text: one token per 4 characters, rounded up
/// (OpenAI's published rule of thumb for English text).
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Prompt tokens of a chat request as the built-in models count them: every message's text
/// content and tool-call arguments, plus 4 tokens of framing per message.
pub fn prompt_tokens(request: &Value) -> u64 {
    let mut total = 0;
    for message in request["messages"].as_array().into_iter().flatten() {
        total += 4;
        match &message["content"] {
            Value::String(text) => total += estimate_tokens(text),
            Value::Array(parts) => {
                for part in parts {
                    total += estimate_tokens(part["text"].as_str().unwrap_or(""));
                }
            }
            _ => {}
        }
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            total += estimate_tokens(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    total
}

/// Number of assistant turns already in the conversation: the step a scripted task is at.
pub fn assistant_turns(request: &Value) -> usize {
    request["messages"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["role"] == "assistant").count())
        .unwrap_or(0)
}
