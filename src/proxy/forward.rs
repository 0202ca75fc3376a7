//! Forwarding a call to the real provider: the request as sent (the agent's bytes unless
//! megatest changed it), JSON answers, and SSE streams passed through chunk by chunk while
//! they are metered.

use super::*;

/// The request megatest sends upstream: parsed, and the agent's own bytes while nothing in it
/// was changed (then they are sent as they are: no re-serialisation of a large prompt).
pub(super) struct Sent {
    pub(super) request: Value,
    pub(super) original: Option<Bytes>,
}

impl Sent {
    /// The body to send.
    fn bytes(&self) -> Bytes {
        match &self.original {
            Some(bytes) => bytes.clone(),
            None => Bytes::from(self.request.to_string()),
        }
    }

    /// Set the model (a fallback); the agent's bytes no longer apply if it differs.
    fn set_model(&mut self, model: &str) {
        if self.request["model"].as_str() != Some(model) {
            self.request["model"] = Value::String(model.to_string());
            self.original = None;
        }
    }
}

pub(super) async fn upstream_call(
    mut call: Call,
    up: Arc<Upstream>,
    mut sent_request: Sent,
    stream: bool,
    headers: HeaderMap,
) -> Response {
    let request = &mut sent_request.request;
    let agent_wants_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    if stream && call.format == WireFormat::ChatCompletions && !agent_wants_usage {
        request["stream_options"]["include_usage"] = Value::Bool(true);
        sent_request.original = None;
    }
    let requested = if call.requested.is_empty() {
        call.state.settings.served_name.clone()
    } else {
        call.requested.clone()
    };
    let candidates = up.candidates(&requested);
    let mut last: Option<(Failure, String)> = None;
    'models: for (model_idx, model) in candidates.iter().enumerate() {
        let model = model.clone();
        let another_model = model_idx + 1 < candidates.len();
        sent_request.set_model(&model);
        let mut retries = 0;
        loop {
            call.attempts += 1;
            let sent = Instant::now();
            let injected = call.state.settings.chaos.as_ref().and_then(injected_fault);
            let failure = match injected {
                Some(failure) => failure,
                None => match up.send(call.format, sent_request.bytes(), &headers).await {
                    Err(err) => upstream::classify_transport(&err),
                    Ok(response) if response.status().is_success() => {
                        if stream {
                            call.waited += sent.elapsed();
                            up.record(&model, true);
                            return stream_upstream(call, response, model, agent_wants_usage).await;
                        }
                        let status = response.status().as_u16();
                        let read = response.bytes().await;
                        call.waited += sent.elapsed();
                        match read {
                            Err(err) => upstream::classify_transport(&err),
                            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                                Ok(body) => {
                                    up.record(&model, true);
                                    let meter = Meter::from_response(call.format, &body);
                                    let served = meter.model.clone().unwrap_or(model.clone());
                                    call.finish(&served, &meter, status).await;
                                    let response = ([("content-type", "application/json")], bytes)
                                        .into_response();
                                    return call.with_overhead(response);
                                }
                                Err(err) => Failure {
                                    kind: kind::PARSE_FAILURE,
                                    retryable: true,
                                    retry_after: None,
                                    status: 502,
                                    message: format!(
                                        "upstream answered 200 with a body that is not JSON: {err}"
                                    ),
                                    body: bytes,
                                },
                            },
                        }
                    }
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let response_headers = response.headers().clone();
                        let body = response.bytes().await.unwrap_or_default();
                        call.waited += sent.elapsed();
                        upstream::classify_status(status, &response_headers, body)
                    }
                },
            };
            call.report(failure.kind, &model, failure.message.clone())
                .await;
            let cooled = up.record(&model, false);
            let step = call.next_step(
                &failure,
                &mut retries,
                another_model,
                cooled,
                &mut sent_request.request,
            );
            if call.recovering.as_ref().is_some_and(|r| r.modified) {
                // The corrective note is in the request now.
                sent_request.original = None;
            }
            last = Some((failure, model.clone()));
            match step {
                Step::Retry(wait) => {
                    tokio::time::sleep(wait).await;
                    call.waited += wait;
                }
                Step::NextModel => continue 'models,
                Step::Fail => break 'models,
            }
        }
    }
    let (failure, model) = last.expect("at least one attempt");
    call.fail(&model, &failure).await
}

/// True for the event that ends a stream in `format`: held back until the ledger row is handed
/// over.
pub(super) fn is_terminal(format: WireFormat, data: &str, json: Option<&Value>) -> bool {
    match format {
        WireFormat::ChatCompletions => data.trim() == "[DONE]",
        WireFormat::Messages => json.is_some_and(|v| v["type"] == "message_stop"),
        WireFormat::Responses => json.is_some_and(|v| {
            matches!(
                v["type"].as_str(),
                Some("response.completed" | "response.incomplete" | "response.failed")
            )
        }),
    }
}

/// Forward an upstream SSE stream event by event as it arrives, metering it; drop the usage
/// chunk the agent did not ask for; hand the ledger row over before the terminal event.
pub(super) async fn stream_upstream(
    mut call: Call,
    response: reqwest::Response,
    model: String,
    agent_wants_usage: bool,
) -> Response {
    let content_type = response
        .headers()
        .get("content-type")
        .cloned()
        .unwrap_or(HeaderValue::from_static("text/event-stream"));
    let status = response.status();
    let overhead = call.overhead_ms();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let format = call.format;
        let mut splitter = wire::SseSplitter::default();
        let mut meter = Meter::default();
        let mut held: Option<Bytes> = None;
        let mut malformed_events = 0u32;
        let mut transport_error = None;
        let mut body = response.bytes_stream();
        let mut handle =
            |event: Vec<u8>, meter: &mut Meter, held: &mut Option<Bytes>| -> Option<Bytes> {
                let Some(data) = wire::event_data(&event) else {
                    return Some(Bytes::from(event));
                };
                let parsed = serde_json::from_str::<Value>(&data).ok();
                if is_terminal(format, &data, parsed.as_ref()) {
                    if let Some(json) = &parsed {
                        meter.observe_stream_event(format, json, agent_wants_usage);
                    }
                    *held = Some(Bytes::from(event));
                    return None;
                }
                match parsed {
                    Some(json) => meter
                        .observe_stream_event(format, &json, agent_wants_usage)
                        .then(|| Bytes::from(event)),
                    None => {
                        malformed_events += 1;
                        Some(Bytes::from(event))
                    }
                }
            };
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => {
                    // The events of one upstream chunk go out together (one write to the agent).
                    let mut out = Vec::new();
                    for event in splitter.push(&bytes) {
                        if let Some(event) = handle(event, &mut meter, &mut held) {
                            out.extend_from_slice(&event);
                        }
                    }
                    if !out.is_empty() {
                        // A gone agent does not stop the metering: the tokens are spent.
                        let _ = tx.send(Ok(Bytes::from(out))).await;
                    }
                }
                Err(err) => {
                    transport_error = Some(err);
                    break;
                }
            }
        }
        let rest = splitter.rest();
        if !rest.iter().all(|b| b.is_ascii_whitespace()) {
            if let Some(out) = handle(rest, &mut meter, &mut held) {
                let _ = tx.send(Ok(out)).await;
            }
        }
        meter.finish_stream();
        let served = meter.model.clone().unwrap_or(model);
        if meter.malformed_tool_args > 0 || malformed_events > 0 {
            let message = format!(
                "stream had {} tool calls with invalid JSON arguments and {malformed_events} events that are not JSON",
                meter.malformed_tool_args
            );
            call.report(kind::PARSE_FAILURE, &served, message).await;
        }
        let error_kind = match &transport_error {
            Some(err) => {
                let failure = upstream::classify_transport(err);
                call.report(
                    failure.kind,
                    &served,
                    format!("stream cut: {}", failure.message),
                )
                .await;
                Some(failure.kind)
            }
            None if !meter.usage_seen => {
                call.report(
                    kind::PARSE_FAILURE,
                    &served,
                    "stream ended without usage".into(),
                )
                .await;
                Some(kind::PARSE_FAILURE)
            }
            None => None,
        };
        call.record(&served, &meter, status.as_u16(), error_kind)
            .await;
        call.close_recovery(error_kind.is_none()).await;
        if let Some(last) = held {
            let _ = tx.send(Ok(last)).await;
        }
    });
    // The headers go out with the first events (one write, not two, for a short answer).
    let mut rx = rx;
    let first = rx.recv().await;
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let body = Body::from_stream(futures_util::stream::iter(first).chain(rest));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", content_type);
    response
        .headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&format!("{overhead:.3}")) {
        response
            .headers_mut()
            .insert("x-megatest-overhead-ms", value);
    }
    response
}
