//! `GET /api/events`: the session's event log as server-sent events, read from `session.db`
//! with its own connection; resumable with `Last-Event-ID`, drained at the shutdown.

use super::{error, operator, ApiState};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Counts an open event stream for as long as it lives.
pub(super) struct StreamGuard(Arc<std::sync::atomic::AtomicUsize>);

impl StreamGuard {
    pub(super) fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> StreamGuard {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        StreamGuard(count.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The event stream (operator).
pub(super) async fn events(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = operator(&state, &headers) {
        return denied;
    }
    let after: i64 = match headers.get("last-event-id").map(|v| {
        v.to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|id| *id >= 0)
    }) {
        None => 0,
        Some(Some(id)) => id,
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Last-Event-ID must be an event id: an integer from 0 to 9223372036854775807",
            )
        }
    };
    let db = state.db.clone();
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (
            after,
            Vec::<crate::store::EventRow>::new().into_iter(),
            db,
            shutdown,
            StreamGuard::new(&state.streams),
        ),
        |(mut last, mut pending, db, shutdown, guard)| async move {
            loop {
                if let Some(row) = pending.next() {
                    last = row.id;
                    let event = SseEvent::default()
                    .id(row.id.to_string())
                    .event(row.kind.clone())
                    .data(json!({"id": row.id, "at": row.at, "session_secs": row.session_secs, "kind": row.kind,
                        "agent_id": row.agent_id, "phase": row.phase, "task_id": row.task_id,
                        "data": serde_json::from_str::<Value>(&row.data).unwrap_or(Value::Null)}).to_string());
                    return Some((
                        Ok::<_, std::convert::Infallible>(event),
                        (last, pending, db, shutdown, guard),
                    ));
                }
                // After the shutdown one last read drains what was committed; then the end.
                let closing = shutdown.is_cancelled();
                let path = db.clone();
                let rows = tokio::task::spawn_blocking(move || {
                    crate::store::events_after(&path, last, 500)
                })
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
                if rows.is_empty() {
                    if closing {
                        return None;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                pending = rows.into_iter();
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
