//! The floor for `scripts/bench_proxy.sh` (`NULL_PROXY=1`): an HTTP proxy on the same stack as
//! megatest's (axum + reqwest, one tokio worker, TCP_NODELAY) that forwards
//! `POST /v1/chat/completions` to the upstream and returns the answer — whole for JSON, passed
//! through as it arrives for SSE — with no parsing, no metering, no ledger. What it adds is the
//! cost of the extra HTTP hop alone.
//!
//! `cargo run --release --example null_proxy -- <upstream base URL ending in /v1> <upstream key>`
//! prints `listening http://127.0.0.1:P`.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use std::sync::Arc;

struct Forward {
    client: reqwest::Client,
    url: reqwest::Url,
    key: String,
}

async fn forward(State(to): State<Arc<Forward>>, body: Bytes) -> axum::response::Response {
    let sent = to
        .client
        .post(to.url.clone())
        .header("content-type", "application/json")
        .bearer_auth(&to.key)
        .body(body)
        .send()
        .await;
    let Ok(answer) = sent else {
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    if content_type
        .as_ref()
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    {
        // A stream is passed through as it arrives, like megatest does.
        let mut response = axum::body::Body::from_stream(answer.bytes_stream()).into_response();
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("content-type", content_type.unwrap());
        return response;
    }
    let Ok(bytes) = answer.bytes().await else {
        return axum::http::StatusCode::BAD_GATEWAY.into_response();
    };
    let mut response = (status, bytes).into_response();
    if let Some(value) = content_type {
        response.headers_mut().insert("content-type", value);
    }
    response
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let base = args.next().expect("upstream base URL");
    let key = args.next().expect("upstream key");
    let url = reqwest::Url::parse(&format!("{}/chat/completions", base.trim_end_matches('/')))
        .expect("upstream base URL");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let to = Arc::new(Forward {
            client: reqwest::Client::new(),
            url,
            key,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(forward))
            .with_state(to);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening http://{}", listener.local_addr().unwrap());
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.unwrap();
    });
}
