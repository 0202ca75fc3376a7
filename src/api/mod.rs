//! The local control API: operators ask how a session is going, force a checkpoint, pause,
//! continue, stop, answer escalations, follow the event log and scrape metrics; agents post
//! tool-call events, notes into working memory and "task done".
//!
//! Listens on `[api].address` (default `127.0.0.1:8080`; `--api-addr 127.0.0.1:0` picks a free
//! port), bound in [`bind`] before the session directory exists. The session writes the actual
//! address to `api.addr` and a random bearer token to `api.token` (0600). Operator endpoints
//! accept only that token, agent endpoints only a per-agent key: no `Authorization` → 401, a
//! wrong one → 403. Every error is JSON `{"error": {"code", "message"}}` with a 4xx status (409
//! once the session is ending); bodies over [`MAX_BODY_BYTES`] get 413.
//!
//! `GET /` serves the live dashboard ([`dashboard`]): a browser signs in once with the token
//! and then carries an `HttpOnly; SameSite=Strict` cookie that operator endpoints accept like
//! the token.
//!
//! Every route is in [`ROUTES`], from which `GET /api/openapi.json` is generated.

use crate::protocol::{ApiRequest, ControlError, ControlReply, Event};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub mod dashboard;
mod events;
mod routes;
use events::events;
use routes::events_shape_ok;
pub use routes::{openapi, Access, Operation, Route, MAX_ID, ROUTES};

/// Longest agent note (characters).
pub const MAX_NOTE_CHARS: usize = 16384;

/// Characters a proposal's title may have (`POST /api/agent/proposals`).
pub const MAX_PROPOSAL_TITLE_CHARS: usize = 200;

/// Largest request body accepted (bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The axum handler of `route`, on its method.
fn method_router(route: &Route) -> axum::routing::MethodRouter<Arc<ApiState>> {
    use axum::routing::on;
    let filter = match route.method {
        "get" => axum::routing::MethodFilter::GET,
        _ => axum::routing::MethodFilter::POST,
    };
    match route.operation {
        Operation::Healthz => on(filter, || async { Json(json!({"ok": true})) }),
        Operation::OpenApi => on(filter, || async { Json(openapi()) }),
        Operation::Status => on(filter, status),
        Operation::Checkpoint => on(filter, checkpoint),
        Operation::Pause => on(filter, pause),
        Operation::Continue => on(filter, resume),
        Operation::Stop => on(filter, stop),
        Operation::Escalations => on(filter, escalations),
        Operation::Decide => on(filter, decide),
        Operation::Events => on(filter, events),
        Operation::Metrics => on(filter, metrics),
        Operation::AgentEvents => on(filter, agent_events),
        Operation::AgentNote => on(filter, agent_note),
        Operation::AgentTaskDone => on(filter, agent_task_done),
        Operation::AgentVote => on(filter, agent_vote),
        Operation::AgentProposal => on(filter, agent_proposal),
        Operation::Dashboard => on(filter, dashboard::index),
        Operation::DashboardScript => on(filter, dashboard::script),
        Operation::DashboardStyle => on(filter, dashboard::style),
        Operation::Login => on(filter, dashboard::login),
        Operation::Logout => on(filter, dashboard::logout),
        Operation::Views => on(filter, dashboard::views),
        Operation::AgentLog => on(filter, dashboard::agent_log),
    }
}

/// Bind the API's address (before the session directory is created, so a taken port leaves
/// nothing behind). Errors say what to do instead.
pub fn bind(address: &str, allow_non_loopback: bool) -> Result<std::net::TcpListener, String> {
    let addr: SocketAddr = address.parse().map_err(|err| {
        format!("api.address {address:?} is not an address like 127.0.0.1:8080 ({err})")
    })?;
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(format!(
            "api.address {addr} is not a loopback address; the control API only listens beyond this machine when [api].allow_non_loopback = true"
        ));
    }
    let listener = std::net::TcpListener::bind(addr).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            format!("the control API address {addr} is taken (another session or program listens there); choose another with --api-addr 127.0.0.1:0 (any free port) or [api].address")
        } else {
            format!("cannot listen on {addr} for the control API: {err}")
        }
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|err| format!("cannot listen on {addr}: {err}"))?;
    Ok(listener)
}

struct ApiState {
    session: mpsc::Sender<Event>,
    token: String,
    db: PathBuf,
    shutdown: CancellationToken,
    streams: Arc<std::sync::atomic::AtomicUsize>,
    /// The dashboard's sign-in cookie name (`megatest_<port>`).
    cookie_name: String,
    /// Sign-in ids handed out for the operator token, oldest first.
    sign_ins: std::sync::Mutex<Vec<String>>,
}

/// A running API: its address, and how many event streams are open.
pub struct ApiHandle {
    /// The address it listens on.
    pub addr: SocketAddr,
    streams: Arc<std::sync::atomic::AtomicUsize>,
}

impl ApiHandle {
    /// After the shutdown token is cancelled: wait (at most `limit`) for the event streams to
    /// send what was committed and end.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.streams.load(std::sync::atomic::Ordering::SeqCst) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A random bearer token: 32 bytes from the OS, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    if let Ok(mut urandom) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = urandom.read_exact(&mut bytes);
    }
    if bytes.iter().all(|b| *b == 0) {
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
        }
    }
    hex::encode(bytes)
}

/// Serve the API on `listener` until `shutdown`. `db` is `session.db` (the event stream reads
/// it with its own connection).
pub fn serve(
    listener: std::net::TcpListener,
    session: mpsc::Sender<Event>,
    token: String,
    db: PathBuf,
    shutdown: CancellationToken,
) -> std::io::Result<ApiHandle> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let state = Arc::new(ApiState {
        session,
        token,
        db,
        shutdown: shutdown.clone(),
        streams: streams.clone(),
        cookie_name: dashboard::cookie_name(addr.port()),
        sign_ins: std::sync::Mutex::new(Vec::new()),
    });
    let mut app = Router::new();
    for route in ROUTES {
        app = app.route(route.path, method_router(route));
    }
    let app = app
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint (see /api/openapi.json)",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint (see /api/openapi.json)",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(ApiHandle { addr, streams })
}

/// A JSON error answer.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
}

/// True when the request carries a dashboard sign-in cookie of this server, from its own
/// origin.
fn signed_in(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some(id) = dashboard::cookie_value(headers, &state.cookie_name) else {
        return false;
    };
    let sign_ins = state.sign_ins.lock().unwrap_or_else(|e| e.into_inner());
    sign_ins
        .iter()
        .any(|kept| constant_time_eq(kept.as_bytes(), id.as_bytes()))
        && dashboard::same_origin(headers)
}

/// Err(answer) unless the request carries the operator token (or, without an
/// `Authorization` header, the dashboard's sign-in cookie).
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn operator(state: &ApiState, headers: &HeaderMap) -> Result<(), Response> {
    match bearer(headers) {
        None if signed_in(state, headers) => Ok(()),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <token from api.token> (a browser signs in at /)",
        )),
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => Ok(()),
        Some(_) => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this endpoint takes the operator token (api.token)",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The agent index behind a per-agent key, or the answer for a missing / wrong one.
async fn agent(state: &ApiState, headers: &HeaderMap) -> Result<usize, Response> {
    let Some(key) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <your agent key>",
        ));
    };
    let (reply, answer) = oneshot::channel();
    let asked = Event::Authenticate {
        agent_key: key.to_string(),
        reply,
    };
    if state.session.send(asked).await.is_err() {
        return Err(ending());
    }
    match answer.await {
        Ok(Some(ctx)) => Ok(ctx.agent_idx),
        Ok(None) => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this endpoint takes a per-agent key",
        )),
        Err(_) => Err(ending()),
    }
}

fn ending() -> Response {
    error(
        StatusCode::CONFLICT,
        "shutting_down",
        "the session is ending",
    )
}

/// Send `request` (built around a reply channel) to the session and wait for the answer.
async fn ask<T>(
    state: &ApiState,
    request: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
) -> Result<T, Response> {
    let (reply, answer) = oneshot::channel();
    if state
        .session
        .send(Event::Api(request(reply)))
        .await
        .is_err()
    {
        return Err(ending());
    }
    answer.await.map_err(|_| ending())
}

/// The HTTP answer to the session's reply: 200 with its document, 404 or 409 for a refusal.
fn action_answer(reply: ControlReply) -> Response {
    match reply {
        Ok(value) => Json(value).into_response(),
        Err(ControlError::NotFound { code, message }) => {
            error(StatusCode::NOT_FOUND, code, &message)
        }
        Err(ControlError::Conflict { code, message }) => {
            error(StatusCode::CONFLICT, code, &message)
        }
    }
}

#[allow(clippy::result_large_err)]
fn json_body(body: &Bytes) -> Result<Value, Response> {
    serde_json::from_slice::<Value>(body).map_err(|err| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("body is not JSON: {err}"),
        )
    })
}

async fn status(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = operator(&state, &headers) {
        return denied;
    }
    match ask(&state, |reply| ApiRequest::Status { reply }).await {
        Ok(value) => Json(value).into_response(),
        Err(answer) => answer,
    }
}

/// An operator action without a body: authorise, ask the session, answer.
async fn operator_action(
    state: &ApiState,
    headers: &HeaderMap,
    request: fn(oneshot::Sender<ControlReply>) -> ApiRequest,
) -> Response {
    if let Err(denied) = operator(state, headers) {
        return denied;
    }
    match ask(state, request).await {
        Ok(reply) => action_answer(reply),
        Err(answer) => answer,
    }
}

async fn checkpoint(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    operator_action(&state, &headers, |reply| ApiRequest::Checkpoint { reply }).await
}

async fn pause(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    operator_action(&state, &headers, |reply| ApiRequest::Pause { reply }).await
}

async fn resume(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    operator_action(&state, &headers, |reply| ApiRequest::Continue { reply }).await
}

async fn stop(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    operator_action(&state, &headers, |reply| ApiRequest::Stop { reply }).await
}

async fn escalations(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = operator(&state, &headers) {
        return denied;
    }
    match ask(&state, |reply| ApiRequest::Status { reply }).await {
        Ok(value) => Json(value["escalations"].clone()).into_response(),
        Err(answer) => answer,
    }
}

async fn decide(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    id: Result<UrlPath<i64>, axum::extract::rejection::PathRejection>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if let Err(denied) = operator(&state, &headers) {
        return denied;
    }
    let Ok(UrlPath(id)) = id else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the escalation id must be an integer",
        );
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_rejection(rejection),
    };
    let value = match json_body(&body) {
        Ok(value) => value,
        Err(answer) => return answer,
    };
    let Some(decision) = value["decision"]
        .as_str()
        .filter(|d| matches!(*d, "continue" | "stop"))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body must be {\"decision\": \"continue\" | \"stop\"}",
        );
    };
    let decision = decision.to_string();
    match ask(&state, |reply| ApiRequest::Decide {
        recovery_id: id,
        decision,
        reply,
    })
    .await
    {
        Ok(reply) => action_answer(reply),
        Err(answer) => answer,
    }
}

fn body_rejection(rejection: axum::extract::rejection::BytesRejection) -> Response {
    let status = rejection.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else {
        "bad_request"
    };
    let status = if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    error(status, code, &rejection.body_text())
}

async fn metrics(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = operator(&state, &headers) {
        return denied;
    }
    match ask(&state, |reply| ApiRequest::Status { reply }).await {
        Ok(value) => (
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            crate::metrics::prometheus::prometheus_text(&value),
        )
            .into_response(),
        Err(answer) => answer,
    }
}

/// The agent behind the request's key and its body, or the answer for a bad one.
#[allow(clippy::result_large_err)]
async fn agent_and_body(
    state: &ApiState,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(usize, Bytes), Response> {
    let agent_idx = agent(state, headers).await?;
    let body = body.map_err(body_rejection)?;
    Ok((agent_idx, body))
}

async fn agent_events(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (agent_idx, body) = match agent_and_body(&state, &headers, body).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "body is not UTF-8");
    };
    if text.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a body is required: a JSON event object, an array of them, or JSON lines",
        );
    }
    // A single JSON value must be an object or an array (the schema's two shapes).
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        if !events_shape_ok(&value) {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body must be a JSON event object ({\"type\": \"tool_call\", \"name\": \"…\"}, strings) or an array of them",
            );
        }
    }
    let (names, bad) = crate::protocol::parse_agent_events(text);
    if names.is_empty() && bad > 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "no JSON event in the body",
        );
    }
    let count = names.len();
    if state
        .session
        .send(Event::AgentToolCalls { agent_idx, names })
        .await
        .is_err()
    {
        return ending();
    }
    Json(json!({"tool_calls": count, "ignored_lines": bad})).into_response()
}

/// The calling agent and its JSON body (`agent_and_body`, then `json_body`).
async fn agent_json(
    state: &ApiState,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(usize, Value), Response> {
    let (agent_idx, body) = agent_and_body(state, headers, body).await?;
    Ok((agent_idx, json_body(&body)?))
}

/// An optional free-text field: absent or null is empty; a string of at most
/// [`MAX_NOTE_CHARS`] characters is itself; anything else is None (a bad request).
fn optional_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::String(text) if text.chars().count() <= MAX_NOTE_CHARS => Some(text.clone()),
        _ => None,
    }
}

/// Ask the session and answer with its reply.
async fn relay(
    state: &ApiState,
    request: impl FnOnce(oneshot::Sender<ControlReply>) -> ApiRequest,
) -> Response {
    match ask(state, request).await {
        Ok(reply) => action_answer(reply),
        Err(answer) => answer,
    }
}

async fn agent_note(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (agent_idx, value) = match agent_json(&state, &headers, body).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let Some(text) = value["text"]
        .as_str()
        .filter(|t| !t.trim().is_empty() && t.chars().count() <= MAX_NOTE_CHARS)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body must be {\"text\": \"…\"} with 1-16384 characters of text, not all blank",
        );
    };
    let text = text.to_string();
    relay(&state, |reply| ApiRequest::Note {
        agent_idx,
        text,
        reply,
    })
    .await
}

async fn agent_proposal(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (agent_idx, value) = match agent_json(&state, &headers, body).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let title = value["title"]
        .as_str()
        .filter(|t| !t.trim().is_empty() && t.chars().count() <= MAX_PROPOSAL_TITLE_CHARS);
    let text = optional_text(&value["text"]);
    let (Some(title), Some(text)) = (title, text) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body must be {\"title\": \"…\", \"text\": \"…\"} (title 1-200 characters, not all blank; text optional, at most 16384 characters)",
        );
    };
    let title = title.to_string();
    relay(&state, |reply| ApiRequest::Propose {
        agent_idx,
        title,
        text,
        reply,
    })
    .await
}

async fn agent_vote(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let (agent_idx, value) = match agent_json(&state, &headers, body).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let choice = value["choice"]
        .as_str()
        .filter(|c| ["approve", "reject", "abstain"].contains(c))
        .and_then(crate::swarm::consensus::Choice::parse);
    let reason = optional_text(&value["reason"]);
    let (Some(choice), Some(reason)) = (choice, reason) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body must be {\"choice\": \"approve\" | \"reject\" | \"abstain\", \"reason\": \"…\"} (reason optional, at most 16384 characters)",
        );
    };
    relay(&state, |reply| ApiRequest::Vote {
        agent_idx,
        choice,
        reason,
        reply,
    })
    .await
}

async fn agent_task_done(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    let agent_idx = match agent(&state, &headers).await {
        Ok(idx) => idx,
        Err(answer) => return answer,
    };
    match ask(&state, |reply| ApiRequest::TaskDone { agent_idx, reply }).await {
        Ok(reply) => action_answer(reply),
        Err(answer) => answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_every_route_once() {
        let doc = openapi();
        let mut count = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                assert!(ROUTES.iter().any(|r| r.path == path && r.method == method));
                count += 1;
            }
        }
        assert_eq!(count, ROUTES.len());
    }

    #[test]
    fn non_loopback_is_refused_and_a_taken_port_says_what_to_do() {
        let err = bind("0.0.0.0:0", false).unwrap_err();
        assert!(err.contains("allow_non_loopback"), "{err}");
        let first = bind("127.0.0.1:0", false).unwrap();
        let taken = first.local_addr().unwrap().to_string();
        let err = bind(&taken, false).unwrap_err();
        assert!(err.contains("taken") && err.contains("--api-addr"), "{err}");
    }

    #[test]
    fn prometheus_text_has_help_type_and_escaped_labels() {
        let status = json!({"metrics": {"agents": [{"id": "a\"1", "status": "running"}], "tasks": {"done": 2}}, "recoveries": {"by_outcome": {"recovered": 3}}});
        let text = crate::metrics::prometheus::prometheus_text(&status);
        assert!(text.contains("# TYPE megatest_tokens_total counter"));
        assert!(text.contains("megatest_agent_running{agent=\"a\\\"1\"} 1"));
        assert!(text.contains("megatest_recoveries_total{outcome=\"recovered\"} 3"));
    }
}
