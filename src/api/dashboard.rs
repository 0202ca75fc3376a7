//! The live dashboard served by the control API: `GET /` (the sign-in page, or the dashboard
//! once signed in), its script and style sheet (embedded in the binary from `src/api/ui/`),
//! the token-for-cookie exchange (`POST /api/login`, `POST /api/logout`), the views
//! (`GET /api/dashboard`: the status document and the report's sections drawn from the
//! session so far) and the live log tail of an agent (`GET /api/agents/{agent}/log`).
//!
//! Authentication: the operator token is posted once to `/api/login` and exchanged for a
//! random sign-in id in an `HttpOnly; SameSite=Strict` cookie named `megatest_<port>` (so the
//! dashboards of sessions on other ports keep their own); the token never appears in a URL, a
//! cookie or a log. The cookie is accepted wherever the bearer token is, except from another
//! origin (`Origin` must be this server). Every view with session data needs it; the pages
//! themselves hold no data. Pages carry a Content-Security-Policy that allows only this
//! server's script, so markup drawn from agent text cannot run.

use super::{error, json_body, operator, signed_in, ApiState, MAX_ID};
use crate::protocol::ApiRequest;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// Sign-ins kept at once; a newer one pushes out the oldest.
pub const MAX_SIGN_INS: usize = 32;

/// Bytes of an agent's log one answer carries at most; the first read (no `after`) starts
/// this far before the end.
pub const LOG_CHUNK_BYTES: u64 = 64 * 1024;

const INDEX_HTML: &str = include_str!("ui/index.html");
const LOGIN_HTML: &str = include_str!("ui/login.html");
const SCRIPT: &str = include_str!("ui/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("ui/dashboard.css");

/// Only this server's script and style sheet; inline style attributes (the charts' bar
/// widths) but no inline script; no framing.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The cookie's name on the server at `port`.
pub fn cookie_name(port: u16) -> String {
    format!("megatest_{port}")
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// True when the request comes from this server's own pages or from no browser page at all:
/// no `Origin`, or `Origin` is `http://<Host>`.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin.strip_prefix("http://") == Some(host),
        _ => false,
    }
}

fn page(body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the dashboard when signed in (cookie or bearer token), else the sign-in page.
pub(super) async fn index(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if operator(&state, &headers).is_ok() {
        page(INDEX_HTML)
    } else {
        page(LOGIN_HTML)
    }
}

/// `GET /ui/dashboard.js`.
pub(super) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// `GET /ui/dashboard.css`: the report's style sheet and the dashboard's own rules.
pub(super) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{}\n{DASHBOARD_CSS}", crate::report::html::STYLE),
    )
        .into_response()
}

fn cookie_header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /api/login` `{"token": "<api.token>"}`: sets the sign-in cookie. 400 for a body
/// without a token string, 403 for a wrong token.
pub(super) async fn login(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    if !same_origin(&headers) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "sign-in is only taken from this server's own page",
        );
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return super::body_rejection(rejection),
    };
    let value = match json_body(&body) {
        Ok(value) => value,
        Err(answer) => return answer,
    };
    let Some(token) = value["token"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body must be {\"token\": \"<the operator token in api.token>\"}",
        );
    };
    if !super::constant_time_eq(token.trim().as_bytes(), state.token.as_bytes()) {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong token: use the operator token in <session>/api.token",
        );
    }
    let id = super::new_token();
    {
        let mut sign_ins = state.sign_ins.lock().unwrap_or_else(|e| e.into_inner());
        if sign_ins.len() >= MAX_SIGN_INS {
            sign_ins.remove(0);
        }
        sign_ins.push(id.clone());
    }
    let cookie = format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/",
        state.cookie_name
    );
    (
        [(header::SET_COOKIE, cookie_header(&cookie))],
        Json(json!({"signed_in": true})),
    )
        .into_response()
}

/// `POST /api/logout`: forgets the request's sign-in and clears its cookie.
pub(super) async fn logout(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = operator(&state, &headers) {
        return denied;
    }
    if let Some(id) = cookie_value(&headers, &state.cookie_name) {
        let mut sign_ins = state.sign_ins.lock().unwrap_or_else(|e| e.into_inner());
        sign_ins.retain(|kept| kept != id);
    }
    let cookie = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        state.cookie_name
    );
    (
        [(header::SET_COOKIE, cookie_header(&cookie))],
        Json(json!({"signed_in": signed_in(&state, &headers)})),
    )
        .into_response()
}

/// `GET /api/dashboard`: `{"status": <GET /api/status>, "views": <report::live::views>,
/// "last_event_id": <newest event id>}`.
pub(super) async fn views(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = operator(&state, &headers) {
        return denied;
    }
    let status = match super::ask(&state, |reply| ApiRequest::Status { reply }).await {
        Ok(value) => value,
        Err(answer) => return answer,
    };
    let db = state.db.clone();
    let drawn = tokio::task::spawn_blocking(move || {
        let store = crate::store::Store::open_read_only(&db)?;
        let timeline = store.timeline()?;
        let last = store.last_event_seq()?;
        let views = crate::report::live::views(&status, &timeline);
        Ok::<_, crate::store::StoreError>(
            json!({"status": status, "views": views, "last_event_id": last}),
        )
    })
    .await;
    match drawn {
        Ok(Ok(document)) => Json(document).into_response(),
        Ok(Err(err)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &format!("cannot read session.db: {err}"),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the views could not be drawn",
        ),
    }
}

/// The query of `GET /api/agents/{agent}/log`.
#[derive(serde::Deserialize)]
pub(super) struct LogQuery {
    /// Byte offset already shown; absent: the last [`LOG_CHUNK_BYTES`].
    after: Option<i64>,
}

/// `GET /api/agents/{agent}/log?after=N`: `{"agent", "from", "to", "size", "text"}` — the
/// bytes `from..to` of the agent's `agent.log` (at most [`LOG_CHUNK_BYTES`], as UTF-8 with
/// invalid bytes replaced); `to` is the next `after`. A log that shrank since `after` is read
/// from its last chunk again (`from` tells). 404 for an agent the session does not have.
pub(super) async fn agent_log(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    agent: Result<UrlPath<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(denied) = operator(&state, &headers) {
        return denied;
    }
    let Ok(UrlPath(agent)) = agent else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "bad agent id");
    };
    let after = match query {
        Ok(Query(LogQuery { after: None })) => None,
        Ok(Query(LogQuery { after: Some(n) })) if (0..=MAX_ID).contains(&n) => Some(n as u64),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "after must be a byte offset: an integer from 0 to 9223372036854775807",
            )
        }
    };
    let Some(session_dir) = state.db.parent().map(Path::to_path_buf) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no agents directory");
    };
    let read = tokio::task::spawn_blocking(move || read_agent_log(&session_dir, &agent, after))
        .await
        .unwrap_or(Err(LogError::Unreadable("the read failed".into())));
    match read {
        Ok(document) => Json(document).into_response(),
        Err(LogError::NoSuchAgent(agent)) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("the session has no agent {agent:?}"),
        ),
        Err(LogError::Unreadable(why)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &why)
        }
    }
}

enum LogError {
    NoSuchAgent(String),
    Unreadable(String),
}

/// The log chunk of `agent` (found by listing `<session>/agents/`, never by joining the name
/// into a path).
fn read_agent_log(session_dir: &Path, agent: &str, after: Option<u64>) -> Result<Value, LogError> {
    let agents = session_dir.join("agents");
    let dir = std::fs::read_dir(&agents)
        .map_err(|_| LogError::NoSuchAgent(agent.to_string()))?
        .filter_map(|entry| entry.ok())
        .find(|entry| entry.file_name().to_str() == Some(agent) && entry.path().is_dir())
        .map(|entry| entry.path())
        .ok_or_else(|| LogError::NoSuchAgent(agent.to_string()))?;
    let mut file = match std::fs::File::open(dir.join("agent.log")) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // Not started yet.
            return Ok(json!({"agent": agent, "from": 0, "to": 0, "size": 0, "text": ""}));
        }
        Err(err) => return Err(LogError::Unreadable(format!("agent.log: {err}"))),
    };
    let size = file
        .metadata()
        .map_err(|err| LogError::Unreadable(format!("agent.log: {err}")))?
        .len();
    let from = match after {
        Some(offset) if offset <= size => offset,
        _ => size.saturating_sub(LOG_CHUNK_BYTES),
    };
    let to = size.min(from + LOG_CHUNK_BYTES);
    let mut bytes = Vec::with_capacity((to - from) as usize);
    file.seek(SeekFrom::Start(from))
        .and_then(|_| file.take(to - from).read_to_end(&mut bytes))
        .map_err(|err| LogError::Unreadable(format!("agent.log: {err}")))?;
    // A chunk may end inside a UTF-8 sequence: stop before it, the next read carries it.
    let cut = match std::str::from_utf8(&bytes) {
        Ok(_) => bytes.len(),
        Err(err) if err.error_len().is_none() => err.valid_up_to(),
        Err(_) => bytes.len(),
    };
    bytes.truncate(cut);
    Ok(json!({
        "agent": agent,
        "from": from,
        "to": from + cut as u64,
        "size": size,
        "text": String::from_utf8_lossy(&bytes),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_cookie_is_found_among_others_and_other_origins_are_refused() {
        let h = headers(&[("cookie", "a=1; megatest_8080=abc"), ("cookie", "b=2")]);
        assert_eq!(cookie_value(&h, "megatest_8080"), Some("abc"));
        assert_eq!(cookie_value(&h, "megatest_9090"), None);
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[("origin", "null")])));
    }

    #[test]
    fn the_log_tail_is_read_in_chunks_that_never_split_a_character() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agents").join("agent-1");
        std::fs::create_dir_all(&agent).unwrap();
        assert!(matches!(
            read_agent_log(dir.path(), "../agents", None),
            Err(LogError::NoSuchAgent(_))
        ));
        // Not started: empty.
        let empty = read_agent_log(dir.path(), "agent-1", None).ok().unwrap();
        assert_eq!(empty["size"], 0);
        // A multi-byte character across the chunk boundary waits for the next read.
        let mut text = "x".repeat(LOG_CHUNK_BYTES as usize - 1);
        text.push('é');
        text.push_str("tail");
        std::fs::write(agent.join("agent.log"), &text).unwrap();
        let first = read_agent_log(dir.path(), "agent-1", Some(0)).ok().unwrap();
        assert_eq!(first["to"], LOG_CHUNK_BYTES - 1);
        let next = read_agent_log(dir.path(), "agent-1", first["to"].as_u64())
            .ok()
            .unwrap();
        assert_eq!(next["text"], "étail");
        assert_eq!(next["to"], next["size"]);
        // A log that shrank is read from its last chunk again.
        std::fs::write(agent.join("agent.log"), "new run\n").unwrap();
        let again = read_agent_log(dir.path(), "agent-1", Some(1 << 40))
            .ok()
            .unwrap();
        assert_eq!(
            (again["from"].as_u64(), again["text"].as_str()),
            (Some(0), Some("new run\n"))
        );
    }
}
