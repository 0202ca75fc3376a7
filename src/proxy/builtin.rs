//! The built-in models' side of a call: fault injection (`[model.faults]`), the answer as a
//! chat completion (JSON or SSE).

use super::*;

/// A fault the built-in models inject, drawn per attempt from `[model.faults]`.
pub(super) fn injected_fault(faults: &Faults) -> Option<Failure> {
    let roll = |p: f64| p > 0.0 && fastrand::f64() < p;
    let failure =
        |kind: &'static str, status: u16, retry_after: Option<Duration>, message: &str| Failure {
            kind,
            retryable: true,
            retry_after,
            status,
            body: Bytes::from(message.to_string()),
            message: message.to_string(),
        };
    let table = [
        (
            faults.rate_limit,
            kind::RATE_LIMIT,
            429,
            Some(Duration::from_secs(1)),
            "injected fault: HTTP 429 Retry-After 1",
        ),
        (
            faults.server_error,
            kind::LLM_ERROR,
            500,
            None,
            "injected fault: HTTP 500",
        ),
        (
            faults.timeout,
            kind::NETWORK_TIMEOUT,
            504,
            None,
            "injected fault: upstream timeout",
        ),
        (
            faults.malformed_json,
            kind::PARSE_FAILURE,
            502,
            None,
            "injected fault: response body is not JSON",
        ),
    ];
    table
        .into_iter()
        .find(|(p, ..)| roll(*p))
        .map(|(_, kind, status, retry_after, message)| failure(kind, status, retry_after, message))
}

pub(super) async fn builtin_call(
    mut call: Call,
    model: &BuiltinModel,
    mut request: Value,
    stream: bool,
) -> Response {
    let settings = call.state.settings.clone();
    // A built-in model answers to its own name whatever name the agents ask for (`--model`,
    // `[model].name`): the ledger says which model really answered, and no price of the name
    // asked for is charged for it.
    let served = model.name().to_string();
    let mut retries = 0;
    loop {
        call.attempts += 1;
        let fault = settings
            .chaos
            .as_ref()
            .and_then(injected_fault)
            .or_else(|| injected_fault(&settings.faults));
        if let Some(failure) = fault {
            call.report(failure.kind, &served, failure.message.clone())
                .await;
            match call.next_step(&failure, &mut retries, false, false, &mut request) {
                Step::Retry(wait) => {
                    tokio::time::sleep(wait).await;
                    call.waited += wait;
                    continue;
                }
                Step::NextModel | Step::Fail => return call.fail(&served, &failure).await,
            }
        }
        let mut reply = model.answer(&call.ctx, &request);
        let malformed = settings.faults.malformed_tool_args.max(
            settings
                .chaos
                .as_ref()
                .map_or(0.0, |c| c.malformed_tool_args),
        );
        if malformed > 0.0 && fastrand::f64() < malformed {
            if let Some(first) = reply.tool_calls.first_mut() {
                first.2 = "{\"path\": \"unterminated".to_string();
            }
        }
        let latency = call.state.clock.wall(reply.latency_session_secs);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
            call.waited += latency;
        }
        let body = completion_body(
            &format!("chatcmpl-mt-{}", fastrand::u64(..)),
            &served,
            &reply,
        );
        let meter = Meter::from_response(WireFormat::ChatCompletions, &body);
        call.finish(&served, &meter, 200).await;
        let response = if stream {
            let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
            stream_body(&body, &reply, include_usage)
        } else {
            Json(body).into_response()
        };
        return call.with_overhead(response);
    }
}

pub(super) fn assistant_message(reply: &ModelReply) -> Value {
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

pub(super) fn finish_reason(reply: &ModelReply) -> &'static str {
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
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    })
}

/// The same answer as `chat.completion.chunk` server-sent events ending in `[DONE]`.
pub(super) fn stream_body(body: &Value, reply: &ModelReply, include_usage: bool) -> Response {
    let (id, created, model) = (&body["id"], &body["created"], &body["model"]);
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
                           "choices": [], "usage": body["usage"]}),
        );
    }
    let mut text = String::new();
    for event in events {
        text.push_str(&format!("data: {event}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        text,
    )
        .into_response()
}
