//! The metering proxy: the only model endpoint agents can reach, on 127.0.0.1 (port chosen at
//! start). The only module that knows model wire formats.
//!
//! Per call: the agent's bearer key is resolved to its agent, phase and task by the session
//! ([`Event::Authenticate`]; unknown key → 401); the model answers; the ledger row is committed
//! by the session ([`Event::ModelCall`]) *before* the response goes back to the agent, so a call
//! the agent saw is always in the ledger.
//!
//! Served now: OpenAI `POST /v1/chat/completions` (non-streaming and SSE) and `GET /v1/models`
//! for the built-in models [`scripted`] and [`sim`]. Passthrough to real providers lands with the
//! budgets issue.

pub mod scripted;
pub mod sim;

use crate::session::clock::SessionClock;
use crate::session::event::{CallContext, Event};
use crate::store::LedgerRow;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// One answer of a built-in model, before it is put on the wire.
#[derive(Debug, Clone)]
pub struct ModelReply {
    pub content: Option<String>,
    /// (call id, tool name, JSON arguments as text)
    pub tool_calls: Vec<(String, String, String)>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Session seconds the model takes to answer (slept, divided by the time scale).
    pub latency_session_secs: f64,
}

/// The built-in model behind the proxy.
#[derive(Debug, Clone)]
pub enum BuiltinModel {
    Scripted(Arc<crate::project::Script>),
    Sim(crate::config::raw::SimModel),
}

impl BuiltinModel {
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

    fn answer(&self, ctx: &CallContext, request: &Value) -> ModelReply {
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

struct ProxyState {
    session: mpsc::Sender<Event>,
    model: BuiltinModel,
    clock: SessionClock,
    served_name: String,
}

/// A running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// The base URL agents use, without `/v1`.
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Bind 127.0.0.1:0 and serve until `shutdown` is cancelled.
pub async fn start(
    session: mpsc::Sender<Event>,
    model: BuiltinModel,
    served_name: String,
    clock: SessionClock,
    shutdown: CancellationToken,
) -> anyhow::Result<Proxy> {
    let state = Arc::new(ProxyState {
        session,
        model,
        clock,
        served_name,
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(Proxy { addr, task })
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"type": kind, "message": message}})),
    )
        .into_response()
}

async fn authenticate(state: &ProxyState, headers: &HeaderMap) -> Option<CallContext> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))?
        .trim()
        .to_string();
    let (reply, answer) = oneshot::channel();
    state
        .session
        .send(Event::Authenticate {
            agent_key: key,
            reply,
        })
        .await
        .ok()?;
    answer.await.ok().flatten()
}

async fn models(State(state): State<Arc<ProxyState>>, headers: HeaderMap) -> Response {
    if authenticate(&state, &headers).await.is_none() {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "unknown agent key",
        );
    }
    Json(json!({"object": "list", "data": [
        {"id": state.served_name, "object": "model", "owned_by": "megatest"}
    ]}))
    .into_response()
}

async fn chat_completions(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let started = Instant::now();
    let Some(ctx) = authenticate(&state, &headers).await else {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "unknown agent key",
        );
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            let row = ledger_row(
                &ctx,
                "",
                state.model.name(),
                0,
                0,
                vec![],
                started,
                400,
                Some("bad_request"),
            );
            record(&state, row).await;
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "body is not a JSON object",
            );
        }
    };
    let requested = request["model"].as_str().unwrap_or("").to_string();
    let reply = state.model.answer(&ctx, &request);
    let latency = state.clock.wall(reply.latency_session_secs);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let names = reply
        .tool_calls
        .iter()
        .map(|(_, name, _)| name.clone())
        .collect();
    let row = ledger_row(
        &ctx,
        &requested,
        &state.served_name,
        reply.prompt_tokens,
        reply.completion_tokens,
        names,
        started,
        200,
        None,
    );
    record(&state, row).await;
    let id = format!("chatcmpl-mt-{}", fastrand::u64(..));
    if request["stream"].as_bool() == Some(true) {
        let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
        return stream_body(&id, &state.served_name, &reply, include_usage);
    }
    Json(completion_body(&id, &state.served_name, &reply)).into_response()
}

#[allow(clippy::too_many_arguments)]
fn ledger_row(
    ctx: &CallContext,
    requested: &str,
    served: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
    tool_names: Vec<String>,
    started: Instant,
    status: u16,
    error_kind: Option<&str>,
) -> LedgerRow {
    LedgerRow {
        agent_id: ctx.agent_id.clone(),
        role: ctx.role.clone(),
        phase: ctx.phase.clone(),
        task_id: ctx.task_id.clone(),
        model_requested: requested.to_string(),
        model_served: served.to_string(),
        prompt_tokens,
        completion_tokens,
        cached_tokens: 0,
        tool_names,
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        status,
        error_kind: error_kind.map(String::from),
    }
}

/// Hand the row to the session and wait until it is committed.
async fn record(state: &ProxyState, row: LedgerRow) {
    let (reply, done) = oneshot::channel();
    if state
        .session
        .send(Event::ModelCall {
            row: Box::new(row),
            reply,
        })
        .await
        .is_ok()
    {
        let _ = done.await;
    }
}

fn assistant_message(reply: &ModelReply) -> Value {
    let mut message = json!({"role": "assistant", "content": reply.content});
    if !reply.tool_calls.is_empty() {
        message["tool_calls"] = reply
            .tool_calls
            .iter()
            .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
            .collect();
    }
    message
}

fn usage(reply: &ModelReply) -> Value {
    json!({
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    })
}

fn finish_reason(reply: &ModelReply) -> &'static str {
    if reply.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    }
}

/// A non-streaming `chat.completion` object.
pub fn completion_body(id: &str, model: &str, reply: &ModelReply) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": model,
        "choices": [{"index": 0, "message": assistant_message(reply), "finish_reason": finish_reason(reply)}],
        "usage": usage(reply),
    })
}

/// The same answer as `chat.completion.chunk` server-sent events ending in `[DONE]`.
fn stream_body(id: &str, model: &str, reply: &ModelReply, include_usage: bool) -> Response {
    let created = chrono::Utc::now().timestamp();
    let chunk = |delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": reply.content}),
        None,
    )];
    for (i, (call_id, name, args)) in reply.tool_calls.iter().enumerate() {
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]}),
            None,
        ));
    }
    events.push(chunk(json!({}), Some(finish_reason(reply))));
    if include_usage {
        events.push(
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [], "usage": usage(reply)}),
        );
    }
    let mut body = String::new();
    for event in events {
        body.push_str(&format!("data: {event}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        body,
    )
        .into_response()
}
