//! The control API's route table ([`ROUTES`]) and the OpenAPI 3.1 document generated from it
//! ([`openapi`]); the router is built from the same table, so the document and the server
//! cannot disagree on which routes and methods exist.

use super::{MAX_NOTE_CHARS, MAX_PROPOSAL_TITLE_CHARS};
use serde_json::{json, Value};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can reach the address.
    Public,
    /// The operator token (`api.token`).
    Operator,
    /// An agent's own key.
    Agent,
}

/// One route: method, path (OpenAPI template syntax), who may call it, summary.
pub struct Route {
    /// `get` or `post`.
    pub method: &'static str,
    /// The path, `{param}` for parameters.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// JSON request body schema, for POST routes that take one.
    pub body: Option<fn() -> Value>,
    /// Content type of the success answer.
    pub produces: &'static str,
    /// The handler: the router is built from this table, so the document and the server
    /// cannot disagree on which routes and methods exist.
    pub operation: Operation,
}

/// The handler of a route (see [`ROUTES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET /healthz`.
    Healthz,
    /// `GET /api/openapi.json`.
    OpenApi,
    /// `GET /api/status`.
    Status,
    /// `POST /api/checkpoint`.
    Checkpoint,
    /// `POST /api/pause`.
    Pause,
    /// `POST /api/continue`.
    Continue,
    /// `POST /api/stop`.
    Stop,
    /// `GET /api/escalations`.
    Escalations,
    /// `POST /api/escalations/{id}/decision`.
    Decide,
    /// `GET /api/events` (server-sent events).
    Events,
    /// `GET /metrics` (Prometheus text).
    Metrics,
    /// `POST /api/agent/events`.
    AgentEvents,
    /// `POST /api/agent/notes`.
    AgentNote,
    /// `POST /api/agent/task_done`.
    AgentTaskDone,
    /// `POST /api/agent/votes`.
    AgentVote,
    /// `POST /api/agent/proposals`.
    AgentProposal,
    /// `GET /`: the live dashboard, or its sign-in page.
    Dashboard,
    /// `GET /ui/dashboard.js`.
    DashboardScript,
    /// `GET /ui/dashboard.css`.
    DashboardStyle,
    /// `POST /api/login`.
    Login,
    /// `POST /api/logout`.
    Logout,
    /// `GET /api/dashboard`.
    Views,
    /// `GET /api/agents/{agent}/log`.
    AgentLog,
}

/// The largest id the API takes (event ids, escalation ids): SQLite's rowid range.
pub const MAX_ID: i64 = i64::MAX;

pub(super) fn decision_schema() -> Value {
    json!({"type": "object", "required": ["decision"], "properties": {
        "decision": {"type": "string", "enum": ["continue", "stop"]}}})
}

pub(super) fn event_object_schema() -> Value {
    json!({"type": "object", "properties": {"type": {"type": "string"}, "name": {"type": "string"}, "tool": {"type": "string"}}})
}

pub(super) fn events_schema() -> Value {
    json!({"oneOf": [event_object_schema(), {"type": "array", "items": event_object_schema()}]})
}

/// True when `value` has the shape of [`events_schema`]: an event object (its `type`, `name`
/// and `tool` strings when present) or an array of them.
pub(super) fn events_shape_ok(value: &Value) -> bool {
    fn event_ok(value: &Value) -> bool {
        value.as_object().is_some_and(|map| {
            ["type", "name", "tool"]
                .iter()
                .all(|key| map.get(*key).is_none_or(Value::is_string))
        })
    }
    match value {
        Value::Array(items) => items.iter().all(event_ok),
        other => event_ok(other),
    }
}

pub(super) fn login_schema() -> Value {
    json!({"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}})
}

pub(super) fn vote_schema() -> Value {
    json!({"type": "object", "required": ["choice"], "properties": {
        "choice": {"type": "string", "enum": ["approve", "reject", "abstain"]},
        "reason": {"type": "string", "maxLength": MAX_NOTE_CHARS}}})
}

pub(super) fn proposal_schema() -> Value {
    json!({"type": "object", "required": ["title"], "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": MAX_PROPOSAL_TITLE_CHARS, "pattern": "\\S"},
        "text": {"type": "string", "maxLength": MAX_NOTE_CHARS}}})
}

pub(super) fn note_schema() -> Value {
    // A note has a non-blank character (`pattern`); its length is counted in characters, as
    // JSON Schema counts it.
    json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "minLength": 1, "maxLength": MAX_NOTE_CHARS, "pattern": "\\S"}}})
}

/// Every route of the API (the router and the OpenAPI document both come from here).
pub const ROUTES: &[Route] = &[
    Route { method: "get", path: "/healthz", access: Access::Public, summary: "Liveness: 200 while the daemon serves", body: None, produces: "application/json" , operation: Operation::Healthz },
    Route { method: "get", path: "/api/openapi.json", access: Access::Public, summary: "This document", body: None, produces: "application/json" , operation: Operation::OpenApi },
    Route { method: "get", path: "/api/status", access: Access::Operator, summary: "Session, phase, elapsed and remaining time, agents, tokens, budgets, last checkpoint, recoveries, open escalations", body: None, produces: "application/json" , operation: Operation::Status },
    Route { method: "post", path: "/api/checkpoint", access: Access::Operator, summary: "Take a checkpoint now; answers with its sequence and path once it is written", body: None, produces: "application/json" , operation: Operation::Checkpoint },
    Route { method: "post", path: "/api/pause", access: Access::Operator, summary: "Pause: agents' process groups stopped, model calls held", body: None, produces: "application/json" , operation: Operation::Pause },
    Route { method: "post", path: "/api/continue", access: Access::Operator, summary: "Continue a paused session", body: None, produces: "application/json" , operation: Operation::Continue },
    Route { method: "post", path: "/api/stop", access: Access::Operator, summary: "Graceful stop: final checkpoint, agents stopped, report written (resumable)", body: None, produces: "application/json" , operation: Operation::Stop },
    Route { method: "get", path: "/api/escalations", access: Access::Operator, summary: "Open escalations", body: None, produces: "application/json" , operation: Operation::Escalations },
    Route { method: "post", path: "/api/escalations/{id}/decision", access: Access::Operator, summary: "Decide an open escalation: continue or stop", body: Some(decision_schema), produces: "application/json" , operation: Operation::Decide },
    Route { method: "get", path: "/api/events", access: Access::Operator, summary: "The event log as server-sent events; resumable with Last-Event-ID", body: None, produces: "text/event-stream" , operation: Operation::Events },
    Route { method: "get", path: "/metrics", access: Access::Operator, summary: "Prometheus text format", body: None, produces: "text/plain" , operation: Operation::Metrics },
    Route { method: "get", path: "/", access: Access::Public, summary: "The live dashboard once signed in (cookie from /api/login, or the bearer token); otherwise its sign-in page", body: None, produces: "text/html" , operation: Operation::Dashboard },
    Route { method: "get", path: "/ui/dashboard.js", access: Access::Public, summary: "The dashboard's script (embedded in the binary)", body: None, produces: "text/javascript" , operation: Operation::DashboardScript },
    Route { method: "get", path: "/ui/dashboard.css", access: Access::Public, summary: "The dashboard's style sheet (embedded in the binary)", body: None, produces: "text/css" , operation: Operation::DashboardStyle },
    Route { method: "post", path: "/api/login", access: Access::Public, summary: "Exchange the operator token for an HttpOnly, SameSite=Strict sign-in cookie that operator endpoints accept from this origin", body: Some(login_schema), produces: "application/json" , operation: Operation::Login },
    Route { method: "post", path: "/api/logout", access: Access::Operator, summary: "Forget this sign-in and clear its cookie", body: None, produces: "application/json" , operation: Operation::Logout },
    Route { method: "get", path: "/api/dashboard", access: Access::Operator, summary: "The dashboard's data: the status document, the report's views drawn from the session so far (HTML fragments), the newest event id", body: None, produces: "application/json" , operation: Operation::Views },
    Route { method: "get", path: "/api/agents/{agent}/log", access: Access::Operator, summary: "A chunk of the agent's log (agent.log) after byte offset `after`, or its last 64 KiB", body: None, produces: "application/json" , operation: Operation::AgentLog },
    Route { method: "post", path: "/api/agent/events", access: Access::Agent, summary: "Tool calls an agent reports (as /v1/megatest/events)", body: Some(events_schema), produces: "application/json" , operation: Operation::AgentEvents },
    Route { method: "post", path: "/api/agent/notes", access: Access::Agent, summary: "A note into the session's working memory (kept in checkpoints)", body: Some(note_schema), produces: "application/json" , operation: Operation::AgentNote },
    Route { method: "post", path: "/api/agent/votes", access: Access::Agent, summary: "The agent's ballot in the vote its current review task belongs to (a later ballot replaces an earlier one)", body: Some(vote_schema), produces: "application/json" , operation: Operation::AgentVote },
    Route { method: "post", path: "/api/agent/proposals", access: Access::Agent, summary: "A proposal of the agent's own (e.g. an architecture decision) put to a vote of the other agents; the decision joins the working memory", body: Some(proposal_schema), produces: "application/json" , operation: Operation::AgentProposal },
    Route { method: "post", path: "/api/agent/task_done", access: Access::Agent, summary: "The agent reports its current task done; its run is ended and the task marked done", body: None, produces: "application/json" , operation: Operation::AgentTaskDone },
];

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for route in ROUTES {
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{}{}", route.method, route.path.replace(['/', '{', '}', '.'], "_")),
            "responses": {
                "200": {"description": "OK", "content": {route.produces: {"schema": {}}}},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
                "409": {"$ref": "#/components/responses/Error"},
                "413": {"$ref": "#/components/responses/Error"},
            },
        });
        op["security"] = match route.access {
            Access::Public => json!([]),
            Access::Operator => json!([{"operatorToken": []}]),
            Access::Agent => json!([{"agentKey": []}]),
        };
        if route.path.contains("{id}") {
            op["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}]);
        }
        if route.path.contains("{agent}") {
            op["parameters"] = json!([
                {"name": "agent", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}},
                {"name": "after", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}]);
        }
        if route.path == "/api/events" {
            op["parameters"] = json!([{"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}]);
        }
        if let Some(schema) = route.body {
            op["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema()}}});
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "megatest control API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "operatorToken": {"type": "http", "scheme": "bearer", "description": "the token in <session>/api.token"},
                "agentKey": {"type": "http", "scheme": "bearer", "description": "the agent's per-agent key (OPENAI_API_KEY in its environment)"}
            },
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {
                "type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}}}}
        }
    })
}
