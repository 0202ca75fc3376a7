//! A stand-in model provider for tests and benchmarks (the real ones are unreachable here).
//!
//! `cargo run --example fake_upstream -- [--port N] [--latency-ms L] [--key K]` prints
//! `listening http://127.0.0.1:PORT` and serves, with known usage and a fixed latency:
//! OpenAI `POST /v1/chat/completions` and `POST /v1/responses`, Anthropic `POST /v1/messages`
//! (each JSON or SSE), `GET /v1/models`, and `GET /stats` (the usage it has reported, summed).
//!
//! Usage it reports: prompt = 10 + 3 × messages, cached = 2, completion = 5 + (call number mod
//! 7) — or exactly the request's max tokens for model `exact-max`. Faults by model name:
//! `fail-429-once` (429 `Retry-After: 0` the first time a request's `user` field is seen), `always-500`,
//! `garbage` (200 with a body that is not JSON), `slow` (answers after 5 s), `flaky` (per
//! request `user`: 429 `Retry-After: 0`, then 500, then a 200 body that is not JSON, then served).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Stats {
    calls: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
    by_model: HashMap<String, u64>,
}

struct Fake {
    key: Option<String>,
    latency: Duration,
    counter: AtomicU64,
    stats: Mutex<Stats>,
    failed_once: Mutex<HashSet<String>>,
    flaky_seen: Mutex<HashMap<String, u32>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Chat,
    Responses,
    Messages,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let port: u16 = arg("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let latency = Duration::from_millis(
        arg("--latency-ms")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0),
    );
    let fake = Arc::new(Fake {
        key: arg("--key"),
        latency,
        counter: AtomicU64::new(0),
        stats: Mutex::new(Stats::default()),
        failed_once: Mutex::new(HashSet::new()),
        flaky_seen: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|s, h, b| handle(s, h, b, Api::Chat)),
        )
        .route(
            "/v1/responses",
            post(|s, h, b| handle(s, h, b, Api::Responses)),
        )
        .route(
            "/v1/messages",
            post(|s, h, b| handle(s, h, b, Api::Messages)),
        )
        .route(
            "/v1/models",
            get(|| async {
                Json(json!({"object": "list", "data": [{"id": "gpt-fake", "object": "model"}]}))
            }),
        )
        .route("/stats", get(stats))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!("listening http://{}", listener.local_addr().unwrap());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    axum::serve(listener, app).await.unwrap();
}

async fn stats(State(fake): State<Arc<Fake>>) -> Json<Value> {
    let s = fake.stats.lock().unwrap();
    Json(
        json!({"calls": s.calls, "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
                "cached_tokens": s.cached_tokens, "by_model": s.by_model}),
    )
}

fn presented_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(String::from)
}

async fn handle(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    body: Bytes,
    api: Api,
) -> Response {
    let key = presented_key(&headers);
    if fake.key.is_some() && key != fake.key {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"type": "invalid_api_key", "message": "bad key"}})),
        )
            .into_response();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not json").into_response();
    };
    let model = request["model"].as_str().unwrap_or("gpt-fake").to_string();
    if !fake.latency.is_zero() {
        tokio::time::sleep(fake.latency).await;
    }
    match model.as_str() {
        "always-500" => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"message": "boom"}})),
            )
                .into_response()
        }
        "garbage" => {
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                "{not json",
            )
                .into_response()
        }
        "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        "flaky" => {
            let seen = {
                let mut map = fake.flaky_seen.lock().unwrap();
                let n = map.entry(request["user"].to_string()).or_default();
                *n += 1;
                *n
            };
            match seen {
                1 => {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "0")],
                        Json(json!({"error": {"message": "rate limited"}})),
                    )
                        .into_response()
                }
                2 => {
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({"error": {"message": "boom"}})),
                    )
                        .into_response()
                }
                3 => {
                    return (
                        StatusCode::OK,
                        [("content-type", "application/json")],
                        "{garbage",
                    )
                        .into_response()
                }
                _ => {}
            }
        }
        "fail-429-once" => {
            let first = fake
                .failed_once
                .lock()
                .unwrap()
                .insert(request["user"].to_string());
            if first {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "0")],
                    Json(json!({"error": {"message": "slow down"}})),
                )
                    .into_response();
            }
        }
        _ => {}
    }
    let n = fake.counter.fetch_add(1, Ordering::SeqCst);
    let messages = request["messages"]
        .as_array()
        .or(request["input"].as_array())
        .map(|m| m.len())
        .unwrap_or(1) as u64;
    let prompt = 10 + 3 * messages;
    let cached = 2;
    let max = request["max_tokens"]
        .as_u64()
        .or(request["max_completion_tokens"].as_u64())
        .or(request["max_output_tokens"].as_u64());
    let completion = if model == "exact-max" {
        max.unwrap_or(100)
    } else {
        5 + n % 7
    };
    {
        let mut s = fake.stats.lock().unwrap();
        s.calls += 1;
        s.prompt_tokens += prompt;
        s.completion_tokens += completion;
        s.cached_tokens += cached;
        *s.by_model.entry(model.clone()).or_default() += 1;
    }
    let stream = request["stream"].as_bool() == Some(true);
    let wants_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    let tool = request["tools"].as_array().and_then(|tools| {
        tools
            .iter()
            .find_map(|t| t["function"]["name"].as_str().or(t["name"].as_str()))
            .map(|first| {
                let finish = tools.iter().any(|t| t["function"]["name"] == "finish");
                if finish {
                    "finish".to_string()
                } else {
                    first.to_string()
                }
            })
    });
    let args = json!({"summary": "done by the fake upstream"}).to_string();
    match (api, stream) {
        (Api::Chat, false) => {
            let mut message = json!({"role": "assistant", "content": if tool.is_none() { json!("ok") } else { Value::Null }});
            if let Some(name) = &tool {
                message["tool_calls"] = json!([{"id": format!("call_{n}"), "type": "function", "function": {"name": name, "arguments": args}}]);
            }
            Json(json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": if tool.is_some() { "tool_calls" } else { "stop" }}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                          "prompt_tokens_details": {"cached_tokens": cached}}}))
            .into_response()
        }
        (Api::Chat, true) => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            };
            let mut events = vec![chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )];
            match &tool {
                Some(name) => {
                    let (a, b) = args.split_at(args.len() / 2);
                    events.push(chunk(json!({"tool_calls": [{"index": 0, "id": format!("call_{n}"), "type": "function", "function": {"name": name, "arguments": a}}]}), Value::Null));
                    events.push(chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
                        Value::Null,
                    ));
                    events.push(chunk(json!({}), json!("tool_calls")));
                }
                None => {
                    events.push(chunk(json!({"content": "o"}), Value::Null));
                    events.push(chunk(json!({"content": "k"}), Value::Null));
                    events.push(chunk(json!({}), json!("stop")));
                }
            }
            if wants_usage {
                events.push(json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "model": model, "choices": [],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                              "prompt_tokens_details": {"cached_tokens": cached}}}));
            }
            let mut text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
            text.push_str("data: [DONE]\n\n");
            ([("content-type", "text/event-stream")], text).into_response()
        }
        (Api::Responses, stream) => {
            let item = json!({"type": "function_call", "id": format!("fc_{n}"), "call_id": format!("call_{n}"), "name": tool.clone().unwrap_or("shell".into()), "arguments": args});
            let usage = json!({"input_tokens": prompt, "output_tokens": completion, "total_tokens": prompt + completion,
                               "input_tokens_details": {"cached_tokens": cached}});
            let response = json!({"id": format!("resp_{n}"), "object": "response", "model": model, "status": "completed", "output": [item], "usage": usage});
            if !stream {
                return Json(response).into_response();
            }
            let events = [
                (
                    "response.created",
                    json!({"type": "response.created", "response": {"id": format!("resp_{n}"), "model": model, "status": "in_progress"}}),
                ),
                (
                    "response.output_item.added",
                    json!({"type": "response.output_item.added", "output_index": 0, "item": item}),
                ),
                (
                    "response.output_item.done",
                    json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
                ),
                (
                    "response.completed",
                    json!({"type": "response.completed", "response": response}),
                ),
            ];
            let text: String = events
                .iter()
                .map(|(name, e)| format!("event: {name}\ndata: {e}\n\n"))
                .collect();
            ([("content-type", "text/event-stream")], text).into_response()
        }
        (Api::Messages, stream) => {
            let input_tokens = prompt - cached;
            let block = json!({"type": "tool_use", "id": format!("toolu_{n}"), "name": tool.clone().unwrap_or("bash".into()), "input": {"command": "ls"}});
            if !stream {
                return Json(json!({"id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": model, "content": [block],
                    "stop_reason": "tool_use", "usage": {"input_tokens": input_tokens, "cache_read_input_tokens": cached, "output_tokens": completion}}))
                .into_response();
            }
            let events = [
                (
                    "message_start",
                    json!({"type": "message_start", "message": {"id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": model, "content": [],
                    "usage": {"input_tokens": input_tokens, "cache_read_input_tokens": cached, "output_tokens": 1}}}),
                ),
                (
                    "content_block_start",
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": format!("toolu_{n}"), "name": block["name"], "input": {}}}),
                ),
                (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"command\": \"ls\"}"}}),
                ),
                (
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": 0}),
                ),
                (
                    "message_delta",
                    json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": completion}}),
                ),
                ("message_stop", json!({"type": "message_stop"})),
            ];
            let text: String = events
                .iter()
                .map(|(name, e)| format!("event: {name}\ndata: {e}\n\n"))
                .collect();
            ([("content-type", "text/event-stream")], text).into_response()
        }
    }
}
