//! Wire formats: what the proxy reads from requests and responses of each API it serves —
//! OpenAI Chat Completions, OpenAI Responses and Anthropic Messages — streamed or not.

use serde_json::{json, Value};

/// Which API a call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses` (used by codex).
    Responses,
    /// Anthropic `POST /v1/messages` (used by claude-code).
    Messages,
}

impl WireFormat {
    /// Path below the upstream base URL (which ends in `/v1`).
    pub fn path(self) -> &'static str {
        match self {
            WireFormat::ChatCompletions => "/chat/completions",
            WireFormat::Responses => "/responses",
            WireFormat::Messages => "/messages",
        }
    }

    /// Completion tokens the request allows, if it says.
    pub fn max_tokens(self, request: &Value) -> Option<u64> {
        let keys: &[&str] = match self {
            WireFormat::ChatCompletions => &["max_completion_tokens", "max_tokens"],
            WireFormat::Responses => &["max_output_tokens"],
            WireFormat::Messages => &["max_tokens"],
        };
        keys.iter().find_map(|k| request[*k].as_u64())
    }

    /// An error body in this API's shape.
    pub fn error_body(self, kind: &str, code: &str, message: &str) -> Value {
        match self {
            WireFormat::Messages => {
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            _ => json!({"error": {"type": kind, "code": code, "message": message}}),
        }
    }

    /// Add megatest's system note (e.g. "batch your operations") to a request.
    pub fn add_system_note(self, request: &mut Value, note: &str) {
        match self {
            WireFormat::ChatCompletions => {
                if let Some(messages) = request["messages"].as_array_mut() {
                    messages.push(json!({"role": "system", "content": note}));
                }
            }
            WireFormat::Responses => {
                let old = request["instructions"].as_str().unwrap_or("").to_string();
                request["instructions"] = Value::String(join_note(&old, note));
            }
            WireFormat::Messages => match &mut request["system"] {
                Value::Array(blocks) => blocks.push(json!({"type": "text", "text": note})),
                Value::String(text) => *text = join_note(text, note),
                other => *other = Value::String(note.to_string()),
            },
        }
    }
}

fn join_note(old: &str, note: &str) -> String {
    if old.is_empty() {
        note.to_string()
    } else {
        format!("{old}\n\n{note}")
    }
}

/// Usage and tool calls of one call, as the upstream reported them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meter {
    /// Prompt tokens including cached ones (Anthropic: input + cache read + cache creation).
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, those served from the provider's cache.
    pub cached_tokens: u64,
    /// True once a usage object was seen.
    pub usage_seen: bool,
    /// Tool calls by name, in order.
    pub tool_names: Vec<String>,
    /// Tool calls whose arguments were not valid JSON.
    pub malformed_tool_args: u32,
    /// The model the upstream says served the call.
    pub model: Option<String>,
    /// Streamed tool-call names by (choice, index), OpenAI chat streams only.
    stream_tools: Vec<((u64, u64), String, String)>,
}

fn u(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

impl Meter {
    /// Read a complete (non-streamed) response body.
    pub fn from_response(format: WireFormat, body: &Value) -> Meter {
        let mut meter = Meter {
            model: body["model"].as_str().map(String::from),
            ..Meter::default()
        };
        match format {
            WireFormat::ChatCompletions => {
                meter.chat_usage(&body["usage"]);
                for choice in body["choices"].as_array().into_iter().flatten() {
                    for call in choice["message"]["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        meter.tool(
                            call["function"]["name"].as_str(),
                            call["function"]["arguments"].as_str(),
                        );
                    }
                }
            }
            WireFormat::Responses => {
                meter.responses_usage(&body["usage"]);
                for item in body["output"].as_array().into_iter().flatten() {
                    meter.responses_item(item);
                }
            }
            WireFormat::Messages => {
                meter.messages_usage(&body["usage"], true);
                for block in body["content"].as_array().into_iter().flatten() {
                    if block["type"] == "tool_use" {
                        meter.tool_object(block["name"].as_str(), &block["input"]);
                    }
                }
            }
        }
        meter
    }

    /// One Responses API output item: a `function_call` (JSON arguments) or a
    /// `custom_tool_call` (a freeform tool such as Codex's `apply_patch`: its `input` is text,
    /// never malformed) is a tool call.
    fn responses_item(&mut self, item: &Value) {
        match item["type"].as_str() {
            Some("function_call") => self.tool(item["name"].as_str(), item["arguments"].as_str()),
            Some("custom_tool_call") => self.tool(item["name"].as_str(), None),
            _ => {}
        }
    }

    fn tool(&mut self, name: Option<&str>, arguments: Option<&str>) {
        self.tool_names.push(name.unwrap_or("").to_string());
        let valid = arguments
            .map(|a| a.trim().is_empty() || serde_json::from_str::<Value>(a).is_ok())
            .unwrap_or(true);
        if !valid {
            self.malformed_tool_args += 1;
        }
    }

    fn tool_object(&mut self, name: Option<&str>, input: &Value) {
        self.tool_names.push(name.unwrap_or("").to_string());
        if !(input.is_object() || input.is_null()) {
            self.malformed_tool_args += 1;
        }
    }

    fn chat_usage(&mut self, usage: &Value) {
        if usage.is_object() {
            self.usage_seen = true;
            self.prompt_tokens = u(&usage["prompt_tokens"]);
            self.completion_tokens = u(&usage["completion_tokens"]);
            self.cached_tokens = u(&usage["prompt_tokens_details"]["cached_tokens"]);
        }
    }

    fn responses_usage(&mut self, usage: &Value) {
        if usage.is_object() {
            self.usage_seen = true;
            self.prompt_tokens = u(&usage["input_tokens"]);
            self.completion_tokens = u(&usage["output_tokens"]);
            self.cached_tokens = u(&usage["input_tokens_details"]["cached_tokens"]);
        }
    }

    /// Anthropic usage; `with_input` is false for `message_delta`, which carries output only
    /// (cumulative).
    fn messages_usage(&mut self, usage: &Value, with_input: bool) {
        if !usage.is_object() {
            return;
        }
        self.usage_seen = true;
        if with_input {
            let read = u(&usage["cache_read_input_tokens"]);
            self.prompt_tokens =
                u(&usage["input_tokens"]) + read + u(&usage["cache_creation_input_tokens"]);
            self.cached_tokens = read;
        }
        if usage.get("output_tokens").is_some() {
            self.completion_tokens = u(&usage["output_tokens"]);
        }
    }

    /// Observe one server-sent event's JSON data. Returns false when the event must not be
    /// forwarded (the usage-only chunk megatest asked for on the agent's behalf).
    pub fn observe_stream_event(
        &mut self,
        format: WireFormat,
        data: &Value,
        agent_wants_usage: bool,
    ) -> bool {
        match format {
            WireFormat::ChatCompletions => {
                if self.model.is_none() {
                    self.model = data["model"].as_str().map(String::from);
                }
                for choice in data["choices"].as_array().into_iter().flatten() {
                    let choice_idx = u(&choice["index"]);
                    for call in choice["delta"]["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let key = (choice_idx, u(&call["index"]));
                        let name = call["function"]["name"].as_str();
                        let args = call["function"]["arguments"].as_str().unwrap_or("");
                        match self.stream_tools.iter_mut().find(|(k, _, _)| *k == key) {
                            Some(entry) => {
                                if let Some(name) = name {
                                    entry.1.push_str(name);
                                }
                                entry.2.push_str(args);
                            }
                            None => self.stream_tools.push((
                                key,
                                name.unwrap_or("").to_string(),
                                args.to_string(),
                            )),
                        }
                    }
                }
                if data["usage"].is_object() {
                    self.chat_usage(&data["usage"]);
                    let usage_only = data["choices"].as_array().is_none_or(|c| c.is_empty());
                    return agent_wants_usage || !usage_only;
                }
                true
            }
            WireFormat::Responses => {
                match data["type"].as_str().unwrap_or("") {
                    "response.output_item.done" => self.responses_item(&data["item"]),
                    "response.completed" | "response.incomplete" | "response.failed" => {
                        self.responses_usage(&data["response"]["usage"]);
                        self.model = data["response"]["model"]
                            .as_str()
                            .map(String::from)
                            .or(self.model.take());
                    }
                    _ => {}
                }
                true
            }
            WireFormat::Messages => {
                match data["type"].as_str().unwrap_or("") {
                    "message_start" => {
                        self.model = data["message"]["model"].as_str().map(String::from);
                        self.messages_usage(&data["message"]["usage"], true);
                    }
                    "message_delta" => self.messages_usage(&data["usage"], false),
                    "content_block_start" if data["content_block"]["type"] == "tool_use" => {
                        self.tool_names.push(
                            data["content_block"]["name"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        );
                    }
                    _ => {}
                }
                true
            }
        }
    }

    /// Finish a stream: streamed chat tool calls become names (and argument checks).
    pub fn finish_stream(&mut self) {
        for (_, name, args) in std::mem::take(&mut self.stream_tools) {
            self.tool(Some(&name), Some(&args));
        }
    }
}

/// Splits a byte stream into server-sent events (separated by a blank line).
#[derive(Debug, Default)]
pub struct SseSplitter {
    buffer: Vec<u8>,
}

impl SseSplitter {
    /// Add bytes; return the complete events (each with its trailing blank line).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        loop {
            let end = find(&self.buffer, b"\n\n")
                .map(|i| i + 2)
                .or_else(|| find(&self.buffer, b"\r\n\r\n").map(|i| i + 4));
            match end {
                Some(end) => events.push(self.buffer.drain(..end).collect()),
                None => return events,
            }
        }
    }

    /// Whatever is left at the end of the stream.
    pub fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buffer)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `data:` payload of one event (lines joined by `\n`), if it has one.
pub fn event_data(event: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    if lines.is_empty() {
        None
    } else {
        Some(lines.join("\n"))
    }
}

/// A conservative token estimate of a chat request's prompt: one token per 3 bytes of message
/// text (English averages ~4 characters per token, code ~3) plus 8 per message.
pub fn estimate_prompt_tokens(request: &serde_json::Value) -> u64 {
    let mut bytes = 0u64;
    let mut messages = 0u64;
    let mut count = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => bytes += text.len() as u64,
        other if !other.is_null() => bytes += other.to_string().len() as u64,
        _ => {}
    };
    for key in ["messages", "input"] {
        match &request[key] {
            serde_json::Value::Array(items) => {
                for item in items {
                    messages += 1;
                    count(&item["content"]);
                    count(&item["tool_calls"]);
                }
            }
            other => count(other),
        }
    }
    count(&request["system"]);
    count(&request["instructions"]);
    count(&request["tools"]);
    bytes.div_ceil(3) + 8 * messages
}

#[cfg(test)]
mod tests {
    #[test]
    fn estimate_is_generous() {
        let request = serde_json::json!({"messages": [{"role": "user", "content": "abcdefghi"}]});
        assert_eq!(super::estimate_prompt_tokens(&request), 3 + 8);
    }

    use super::*;

    #[test]
    fn chat_stream_tool_calls_and_usage_chunk_is_dropped_unless_asked() {
        let mut meter = Meter::default();
        let f = WireFormat::ChatCompletions;
        let a = json!({"model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "x", "function": {"name": "write_file", "arguments": "{\"pa"}}]}}]});
        let b = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "th\": 1}"}}]}}]});
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}});
        assert!(meter.observe_stream_event(f, &a, false));
        assert!(meter.observe_stream_event(f, &b, false));
        assert!(!meter.observe_stream_event(f, &usage, false));
        assert!(meter.observe_stream_event(f, &usage, true));
        meter.finish_stream();
        assert_eq!(meter.tool_names, ["write_file"]);
        assert_eq!(meter.malformed_tool_args, 0);
        assert_eq!(
            (
                meter.prompt_tokens,
                meter.completion_tokens,
                meter.cached_tokens
            ),
            (10, 3, 4)
        );
    }

    #[test]
    fn anthropic_stream_usage_adds_cache_reads() {
        let mut meter = Meter::default();
        let f = WireFormat::Messages;
        meter.observe_stream_event(f, &json!({"type": "message_start", "message": {"model": "claude", "usage": {"input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 1}}}), false);
        meter.observe_stream_event(f, &json!({"type": "content_block_start", "content_block": {"type": "tool_use", "name": "bash"}}), false);
        meter.observe_stream_event(
            f,
            &json!({"type": "message_delta", "usage": {"output_tokens": 42}}),
            false,
        );
        assert_eq!(
            (
                meter.prompt_tokens,
                meter.cached_tokens,
                meter.completion_tokens
            ),
            (12, 7, 42)
        );
        assert_eq!(meter.tool_names, ["bash"]);
    }

    #[test]
    fn responses_body_function_calls_and_malformed_arguments() {
        let body = json!({"model": "gpt", "output": [{"type": "function_call", "name": "shell", "arguments": "{not json"}],
                          "usage": {"input_tokens": 9, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 1}}});
        let meter = Meter::from_response(WireFormat::Responses, &body);
        assert_eq!(
            (
                meter.prompt_tokens,
                meter.completion_tokens,
                meter.cached_tokens
            ),
            (9, 2, 1)
        );
        assert_eq!(meter.tool_names, ["shell"]);
        assert_eq!(meter.malformed_tool_args, 1);
    }

    #[test]
    fn responses_custom_tool_calls_count_as_tool_calls_in_bodies_and_streams() {
        let patch = json!({"type": "custom_tool_call", "name": "apply_patch", "call_id": "c1",
                           "input": "*** Begin Patch\n*** Add File: a.txt\n+a\n*** End Patch"});
        let body = json!({"output": [patch, {"type": "message", "content": []},
                                     {"type": "function_call", "name": "shell", "arguments": "{}"}]});
        let meter = Meter::from_response(WireFormat::Responses, &body);
        assert_eq!(meter.tool_names, ["apply_patch", "shell"]);
        assert_eq!(meter.malformed_tool_args, 0);
        let mut streamed = Meter::default();
        streamed.observe_stream_event(
            WireFormat::Responses,
            &json!({"type": "response.output_item.done", "item": patch}),
            false,
        );
        streamed.observe_stream_event(
            WireFormat::Responses,
            &json!({"type": "response.output_item.done", "item": {"type": "reasoning"}}),
            false,
        );
        assert_eq!(streamed.tool_names, ["apply_patch"]);
    }

    #[test]
    fn splitter_handles_events_across_chunks() {
        let mut splitter = SseSplitter::default();
        assert!(splitter.push(b"data: {\"a\"").is_empty());
        let events = splitter.push(b": 1}\n\ndata: [DONE]\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(event_data(&events[0]).unwrap(), "{\"a\": 1}");
        assert_eq!(event_data(&events[1]).unwrap(), "[DONE]");
    }
}
