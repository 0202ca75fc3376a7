//! The metering proxy: the only model endpoint agents can reach, on 127.0.0.1 (port chosen at
//! start). The only module that knows model wire formats ([`wire`]).
//!
//! Theory of operation, per call:
//! 1. a prompt over `[limits].max_context_size` is refused as `context_overflow`;
//! 2. in one round trip to the session ([`Event::Admit`]) the agent's key (`Authorization:
//!    Bearer` or `x-api-key`) is resolved to its agent, phase and task (unknown key → 401) and
//!    `prompt estimate + max_tokens` is reserved against the budgets: the call may wait
//!    (per-agent throttle), get a "batch your operations" note, or be refused (402 budget
//!    exhausted, 429 while outstanding reservations hold the rest);
//! 4. the call is dispatched — to a built-in model ([`scripted`], [`sim`]) or the upstream
//!    provider with the real key ([`upstream`]) — with retries (exponential backoff, full
//!    jitter, `Retry-After`) and the model fallback chain; every failed attempt is classified and
//!    reported ([`Event::ProxyError`]);
//! 5. usage and tool calls are read from the answer, streamed or not ([`wire::Meter`]); the
//!    ledger row goes to the session ([`Event::ModelCall`]) *before* the answer completes (a JSON
//!    answer is sent after the hand-over; a stream's terminal event — `[DONE]`, `message_stop`,
//!    `response.completed` — is held until it), so the agent's next request reaches the session
//!    after it. The session commits the row, then reconciles the reservation and counts the call;
//!    the proxy does not wait for that commit (it would add ~0.1 ms to every call). Instead the
//!    row is first appended to `ledger.spool` ([`crate::store::spool`]; one `write(2)`), which
//!    `megatest resume` imports: an answer an agent received is in the ledger even after
//!    `kill -9`.
//!
//! Every answer carries `x-megatest-overhead-ms`: wall milliseconds spent in megatest, excluding
//! the upstream's (or built-in model's) latency and any throttling wait.

mod builtin;
mod models;

pub use models::{assistant_turns, estimate_tokens, prompt_tokens, BuiltinModel, ModelReply};
mod forward;

use builtin::{builtin_call, injected_fault};
use forward::{upstream_call, Sent};
pub mod scripted;
pub mod sim;
pub mod upstream;
pub mod wire;

use crate::budget::Admission;
use crate::clock::SessionClock;
use crate::config::raw::{Faults, Provider, RecoveryAction};
use crate::protocol::{CallContext, Event};
use crate::protocol::{CallFailure, CallRecovery};
use crate::recovery::{action_str, FailureKind, RecoveryTable, IMMEDIATE_RETRIES};
use crate::store::spool::{LedgerSpool, SpooledCall};
use crate::store::LedgerRow;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use upstream::{kind, Failure, RetryPolicy, Upstream};
use wire::estimate_prompt_tokens;
use wire::{Meter, WireFormat};

/// The note added to a request of an agent over `tool_calls_per_agent_per_hour` (the seed's
/// "batch operations" rule).
pub const BATCH_NOTE: &str = "megatest: you are over this session's tool-call rate \
(limits.tool_calls_per_agent_per_hour). Batch your operations: combine several edits or commands \
into one tool call where you can.";

/// What answers the agents.
pub enum Backend {
    /// A built-in model (no network).
    Builtin(BuiltinModel),
    /// A real provider behind its URL.
    Upstream(Arc<Upstream>),
}

impl Backend {
    /// The label reports give the model.
    pub fn label(&self) -> String {
        match self {
            Backend::Builtin(model) => model.label().to_string(),
            Backend::Upstream(up) => format!(
                "{} provider through the metering proxy",
                up.provider.as_str()
            ),
        }
    }
}

/// Settings of the proxy (from `[limits]` and `[model]`).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// The model name answers carry.
    pub served_name: String,
    /// `[limits].max_context_size`, estimated tokens.
    pub max_context_size: u64,
    /// `[model].default_max_tokens`.
    pub default_max_tokens: u64,
    /// Retries and backoff of upstream attempts.
    pub policy: RetryPolicy,
    /// `[model.faults]`: faults of the built-in models.
    pub faults: Faults,
    /// `[chaos.upstream]` when `[chaos].enabled`: faults injected in front of any backend.
    pub chaos: Option<Faults>,
    /// The recovery table: which in-call action follows each failure.
    pub recovery: Arc<std::sync::RwLock<RecoveryTable>>,
    /// True while the session is paused (`pause_and_alert`): calls wait before admission.
    pub paused: tokio::sync::watch::Receiver<bool>,
}

struct ProxyState {
    session: mpsc::Sender<Event>,
    backend: Backend,
    clock: SessionClock,
    settings: ProxySettings,
    spool: Arc<LedgerSpool>,
}

/// A running proxy.
pub struct Proxy {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    /// The server task.
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
    backend: Backend,
    settings: ProxySettings,
    clock: SessionClock,
    spool: Arc<LedgerSpool>,
    shutdown: CancellationToken,
) -> std::io::Result<Proxy> {
    let state = Arc::new(ProxyState {
        session,
        backend,
        clock,
        settings,
        spool,
    });
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(|s, h, b| metered(s, h, b, WireFormat::ChatCompletions)),
        )
        .route(
            "/v1/responses",
            post(|s, h, b| metered(s, h, b, WireFormat::Responses)),
        )
        .route(
            "/v1/messages",
            post(|s, h, b| metered(s, h, b, WireFormat::Messages)),
        )
        .route("/v1/models", get(models))
        .route("/v1/megatest/events", post(agent_events))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // Streams are many small writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    Ok(Proxy { addr, task })
}

/// 401 for a request without a known agent key.
fn unauthorized(format: WireFormat) -> Response {
    error(
        format,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_api_key",
        "unknown agent key",
    )
}

fn error(
    format: WireFormat,
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
) -> Response {
    (status, Json(format.error_body(kind, code, message))).into_response()
}

/// The agent key a request presents (`Authorization: Bearer` or `x-api-key`).
fn agent_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(|k| k.trim().to_string())
}

async fn authenticate(state: &ProxyState, headers: &HeaderMap) -> Option<CallContext> {
    let key = agent_key(headers)?;
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
        return unauthorized(WireFormat::ChatCompletions);
    }
    if let Backend::Upstream(up) = &state.backend {
        if let Ok(response) = up.models().await {
            if response.status().is_success() {
                if let Ok(body) = response.bytes().await {
                    return ([("content-type", "application/json")], body).into_response();
                }
            }
        }
    }
    let mut names = vec![state.settings.served_name.clone()];
    if let Backend::Upstream(up) = &state.backend {
        names.extend(up.fallbacks.iter().cloned());
    }
    let data: Vec<Value> = names
        .iter()
        .map(|n| json!({"id": n, "object": "model", "owned_by": "megatest"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `POST /v1/megatest/events`: tool calls an agent reports itself (see
/// [`crate::protocol::parse_agent_events`]); answers `{"accepted": n, "rejected_lines": m}`.
async fn agent_events(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(ctx) = authenticate(&state, &headers).await else {
        return unauthorized(WireFormat::ChatCompletions);
    };
    let text = String::from_utf8_lossy(&body);
    let (names, rejected) = crate::protocol::parse_agent_events(&text);
    let accepted = names.len();
    if !names.is_empty() {
        let _ = state
            .session
            .send(Event::AgentToolCalls {
                agent_idx: ctx.agent_idx,
                names,
            })
            .await;
    }
    let status = if accepted == 0 && rejected > 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"accepted": accepted, "rejected_lines": rejected})),
    )
        .into_response()
}

/// One call in flight: what the ledger row and the reports need.
struct Call {
    state: Arc<ProxyState>,
    ctx: CallContext,
    format: WireFormat,
    requested: String,
    started: Instant,
    reservation: Option<u64>,
    /// Wall time not attributable to megatest: throttling, upstream or model latency.
    waited: Duration,
    attempts: u32,
    /// Set at the call's first failure: what the recovery table chose and what was done.
    recovering: Option<Recovering>,
}

/// The recovery of one call in progress: its failures so far.
struct Recovering {
    failures: Vec<(Instant, CallFailure)>,
    /// `retry_immediate` retries made.
    immediate: u32,
    /// The corrective note was added.
    modified: bool,
}

/// What the proxy does after a failed attempt.
#[derive(Debug, PartialEq)]
enum Step {
    /// Try the same model again after this wait.
    Retry(Duration),
    /// Go on with the next model of the fallback chain.
    NextModel,
    /// Give the agent the failure (the session carries out any session-level action).
    Fail,
}

impl Call {
    fn overhead_ms(&self) -> f64 {
        self.started
            .elapsed()
            .saturating_sub(self.waited)
            .as_secs_f64()
            * 1000.0
    }

    async fn report(&self, kind: &str, model: &str, message: String) {
        let event = Event::ProxyError {
            agent_id: self.ctx.agent_id.clone(),
            task_id: self.ctx.task_id.clone(),
            kind: kind.to_string(),
            attempt: self.attempts,
            model: model.to_string(),
            message,
        };
        let _ = self.state.session.send(event).await;
    }

    /// Append the ledger row to `ledger.spool`, then hand it to the session, which commits it and
    /// then reconciles the reservation. Returns once the row is queued (waits only while the
    /// session's channel is full), not committed.
    async fn record(&self, served: &str, meter: &Meter, status: u16, error_kind: Option<&str>) {
        let row = LedgerRow {
            call_id: fastrand::i64(1..i64::MAX),
            agent_id: self.ctx.agent_id.clone(),
            role: self.ctx.role.clone(),
            phase: self.ctx.phase.clone(),
            task_id: self.ctx.task_id.clone(),
            model_requested: self.requested.clone(),
            model_served: served.to_string(),
            prompt_tokens: meter.prompt_tokens,
            completion_tokens: meter.completion_tokens,
            cached_tokens: meter.cached_tokens,
            tool_names: meter.tool_names.clone(),
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            status,
            error_kind: error_kind.map(String::from),
            attempts: self.attempts,
            cost_usd: None,
        };
        let spooled = SpooledCall {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            session_secs: self.state.clock.session_secs(),
            row,
        };
        if let Err(err) = self.state.spool.append(&spooled) {
            tracing::error!(message = "cannot spool a model call (the ledger commit follows)", error = %format!("{err:#}"));
        }
        let event = Event::ModelCall {
            call: Box::new(spooled),
            reservation: self.reservation,
        };
        if self.state.session.send(event).await.is_err() {
            tracing::error!(message = "model call not recorded: the session has ended", agent = %self.ctx.agent_id, tokens = meter.prompt_tokens + meter.completion_tokens);
        }
    }

    /// A complete answer: report malformed tool-call arguments (`parse_failure`: the answer
    /// is passed on, its tokens were spent; the recovery table's rule applies to the agent's
    /// next request), then commit.
    async fn finish(&mut self, served: &str, meter: &Meter, status: u16) {
        if meter.malformed_tool_args > 0 {
            let message = "tool-call arguments are not valid JSON".to_string();
            self.report(kind::PARSE_FAILURE, served, message.clone())
                .await;
            self.close_recovery(true).await;
            self.failed_outright(FailureKind::ParseFailure, &message);
            self.close_recovery(false).await;
        }
        self.record(served, meter, status, None).await;
        self.close_recovery(true).await;
    }

    /// Note a failure and choose the next step by the recovery table's rule for its kind.
    /// `retries` counts backoff retries of the current model (`[model].max_retries`);
    /// `another_model` says whether the fallback chain has a next model; `cooled` that this
    /// model just went into cooldown. A `retry_with_modification` adds the corrective note to
    /// `request` once.
    fn next_step(
        &mut self,
        failure: &Failure,
        retries: &mut u32,
        another_model: bool,
        cooled: bool,
        request: &mut Value,
    ) -> Step {
        let state = self.state.clone();
        let settings = &state.settings;
        let kind = FailureKind::parse(failure.kind).unwrap_or(FailureKind::LlmError);
        let decision = settings
            .recovery
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .decide(kind, &failure.message);
        let attempt = self.attempts;
        let rec = self.recovering.get_or_insert_with(|| Recovering {
            failures: Vec::new(),
            immediate: 0,
            modified: false,
        });
        rec.failures.push((
            Instant::now(),
            CallFailure {
                kind,
                decision: decision.clone(),
                action: None,
                attempt,
                wall_secs: 0.0,
                message: failure.message.clone(),
            },
        ));
        if !failure.retryable {
            return Step::Fail;
        }
        let policy = &settings.policy;
        let backoff = |retries: &mut u32| {
            (*retries < policy.max_retries).then(|| {
                *retries += 1;
                policy.backoff(*retries - 1, failure)
            })
        };
        let (step, action) = match decision.action {
            _ if cooled && another_model => (Step::NextModel, RecoveryAction::SwitchModel),
            RecoveryAction::RetryImmediate if rec.immediate < IMMEDIATE_RETRIES => {
                rec.immediate += 1;
                (Step::Retry(Duration::ZERO), RecoveryAction::RetryImmediate)
            }
            RecoveryAction::RetryWithModification => {
                if !rec.modified {
                    self.format
                        .add_system_note(request, crate::recovery::CORRECTIVE_NOTE);
                    rec.modified = true;
                }
                match backoff(retries) {
                    Some(_) => (
                        Step::Retry(Duration::ZERO),
                        RecoveryAction::RetryWithModification,
                    ),
                    None if another_model => (Step::NextModel, RecoveryAction::SwitchModel),
                    None => (Step::Fail, RecoveryAction::RetryWithModification),
                }
            }
            RecoveryAction::SwitchModel if another_model => {
                (Step::NextModel, RecoveryAction::SwitchModel)
            }
            RecoveryAction::RetryImmediate
            | RecoveryAction::RetryWithBackoff
            | RecoveryAction::SwitchModel => match backoff(retries) {
                Some(wait) => (Step::Retry(wait), RecoveryAction::RetryWithBackoff),
                None if another_model => (Step::NextModel, RecoveryAction::SwitchModel),
                None => (Step::Fail, RecoveryAction::RetryWithBackoff),
            },
            // A session-level action: the session carries it out.
            other => (Step::Fail, other),
        };
        if step != Step::Fail {
            if let Some((_, last)) = rec.failures.last_mut() {
                last.action = Some(action_str(action));
            }
        }
        step
    }

    /// A failure that ends the call at once (e.g. `context_overflow`): the session carries
    /// out the rule's action.
    fn failed_outright(&mut self, kind: FailureKind, message: &str) {
        let decision = self
            .state
            .settings
            .recovery
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .decide(kind, message);
        let failure = CallFailure {
            kind,
            decision,
            action: None,
            attempt: self.attempts,
            wall_secs: 0.0,
            message: message.to_string(),
        };
        self.recovering = Some(Recovering {
            failures: vec![(Instant::now(), failure)],
            immediate: 0,
            modified: false,
        });
    }

    /// Tell the session how a call that failed at least once ended.
    async fn close_recovery(&mut self, recovered: bool) {
        let Some(rec) = self.recovering.take() else {
            return;
        };
        let failures = rec
            .failures
            .into_iter()
            .map(|(at, mut failure)| {
                failure.wall_secs = at.elapsed().as_secs_f64();
                failure
            })
            .collect();
        let event = Event::CallRecovery(Box::new(CallRecovery {
            agent_idx: self.ctx.agent_idx,
            agent_id: self.ctx.agent_id.clone(),
            task_id: self.ctx.task_id.clone(),
            failures,
            attempts: self.attempts,
            recovered,
        }));
        let _ = self.state.session.send(event).await;
    }

    fn with_overhead(&self, mut response: Response) -> Response {
        let value = format!("{:.3}", self.overhead_ms());
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert("x-megatest-overhead-ms", value);
        }
        response
    }

    /// The agent's answer for a final failure, after recording it.
    async fn fail(&mut self, served: &str, failure: &Failure) -> Response {
        self.record(
            served,
            &Meter::default(),
            failure.status,
            Some(failure.kind),
        )
        .await;
        self.close_recovery(false).await;
        let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let body = if serde_json::from_slice::<Value>(&failure.body).is_ok() {
            failure.body.clone()
        } else {
            Bytes::from(
                self.format
                    .error_body("api_error", failure.kind, &failure.message)
                    .to_string(),
            )
        };
        self.with_overhead(([("content-type", "application/json")], body).into_response())
            .map_status(status)
    }
}

trait MapStatus {
    fn map_status(self, status: StatusCode) -> Self;
}

impl MapStatus for Response {
    fn map_status(mut self, status: StatusCode) -> Self {
        *self.status_mut() = status;
        self
    }
}

async fn metered(
    State(state): State<Arc<ProxyState>>,
    headers: HeaderMap,
    body: Bytes,
    format: WireFormat,
) -> Response {
    let Some(key) = agent_key(&headers) else {
        return unauthorized(format);
    };
    // A paused session (pause_and_alert) holds calls here until it continues.
    if *state.settings.paused.borrow() {
        let mut paused = state.settings.paused.clone();
        let _ = paused.wait_for(|p| !*p).await;
    }
    let started = Instant::now();
    let parsed = match serde_json::from_slice(&body) {
        Ok(value @ Value::Object(_)) => Some(value),
        _ => None,
    };
    let unsupported = match &state.backend {
        Backend::Builtin(_) if format != WireFormat::ChatCompletions => {
            Some("the built-in models serve /v1/chat/completions only".to_string())
        }
        Backend::Upstream(up) if !up.speaks(format) => Some(format!(
            "provider {} does not serve {}",
            up.provider.as_str(),
            format.path()
        )),
        _ => None,
    };
    let prompt_estimate = parsed.as_ref().map(estimate_prompt_tokens).unwrap_or(0);
    let overflow = prompt_estimate > state.settings.max_context_size;
    // The common path is one round trip to the session: authenticate and reserve together.
    let (ctx, admission) = match &parsed {
        Some(request) if unsupported.is_none() && !overflow => {
            let max_tokens = format
                .max_tokens(request)
                .unwrap_or(state.settings.default_max_tokens);
            let (reply, answer) = oneshot::channel();
            let admit = Event::Admit {
                agent_key: key,
                tokens: prompt_estimate + max_tokens,
                reply,
            };
            if state.session.send(admit).await.is_err() {
                return error(
                    format,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "api_error",
                    "shutting_down",
                    "the session is ending",
                );
            }
            match answer.await {
                Ok(Some((ctx, admission))) => (ctx, Some(admission)),
                Ok(None) => return unauthorized(format),
                Err(_) => {
                    return error(
                        format,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "api_error",
                        "shutting_down",
                        "the session is ending",
                    )
                }
            }
        }
        _ => match authenticate(&state, &headers).await {
            Some(ctx) => (ctx, None),
            None => return unauthorized(format),
        },
    };
    let mut call = Call {
        state: state.clone(),
        ctx,
        format,
        requested: String::new(),
        started,
        reservation: None,
        waited: Duration::ZERO,
        attempts: 0,
        recovering: None,
    };
    let Some(mut request) = parsed else {
        call.record("", &Meter::default(), 400, Some("bad_request"))
            .await;
        return error(
            format,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "bad_request",
            "body is not a JSON object",
        );
    };
    call.requested = request["model"].as_str().unwrap_or("").to_string();
    if let Some(message) = unsupported {
        return error(
            format,
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unsupported_api",
            &message,
        );
    }
    if overflow {
        let message = format!(
            "prompt of about {prompt_estimate} tokens exceeds limits.max_context_size ({})",
            state.settings.max_context_size
        );
        call.report(kind::CONTEXT_OVERFLOW, &call.requested, message.clone())
            .await;
        call.record("", &Meter::default(), 400, Some(kind::CONTEXT_OVERFLOW))
            .await;
        call.failed_outright(FailureKind::ContextOverflow, &message);
        call.close_recovery(false).await;
        return error(
            format,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "context_length_exceeded",
            &message,
        );
    }
    // The agent's bytes go upstream as they are unless the request is changed on the way.
    let mut original = Some(body);
    match admission.expect("admitted above") {
        Admission::Granted {
            id,
            wait_session_secs,
            batch_note,
            corrective_note,
        } => {
            call.reservation = Some(id);
            if batch_note || corrective_note {
                original = None;
            }
            let wait = state.clock.wall(wait_session_secs);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                call.waited += wait;
            }
            if batch_note {
                format.add_system_note(&mut request, BATCH_NOTE);
            }
            if corrective_note {
                format.add_system_note(&mut request, crate::recovery::CORRECTIVE_NOTE);
            }
        }
        Admission::Busy => {
            let message = "the token budget is held by calls in flight; retry shortly";
            let mut response = error(
                format,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "budget_reserved",
                message,
            );
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
            return response;
        }
        Admission::Exhausted { message } => {
            return error(
                format,
                StatusCode::PAYMENT_REQUIRED,
                "budget_exceeded",
                "budget_exceeded",
                &message,
            );
        }
    }
    let stream = request["stream"].as_bool() == Some(true);
    match &state.backend {
        Backend::Builtin(model) => builtin_call(call, model, request, stream).await,
        Backend::Upstream(up) => {
            let sent = Sent { request, original };
            upstream_call(call, up.clone(), sent, stream, headers).await
        }
    }
}

/// Build the backend `[model]` asks for. Errors: a passthrough provider without `base_url`, or
/// an `api_key_env` naming a variable that is not set.
pub fn backend_for(
    model_config: &crate::config::raw::Model,
    provider: Provider,
    builtin: Option<BuiltinModel>,
) -> Result<Backend, upstream::SetupError> {
    if let Some(model) = builtin {
        return Ok(Backend::Builtin(model));
    }
    let api_key = match &model_config.api_key_env {
        Some(name) => {
            Some(std::env::var(name).map_err(|_| upstream::SetupError::MissingKey(name.clone()))?)
        }
        None => None,
    };
    Ok(Backend::Upstream(Arc::new(Upstream::new(
        model_config,
        provider,
        api_key,
    )?)))
}
