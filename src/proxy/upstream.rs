//! The upstream provider: one HTTP client, the real API key, failure classification, backoff
//! and the model fallback chain with cooldown.

use crate::config::raw::{Model, Provider};
use crate::proxy::wire::WireFormat;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failure kinds of the recovery table that the proxy detects.
pub mod kind {
    /// No answer in time, or the connection failed.
    pub const NETWORK_TIMEOUT: &str = "network_timeout";
    /// HTTP 429.
    pub const RATE_LIMIT: &str = "rate_limit";
    /// HTTP 5xx or another upstream failure.
    pub const LLM_ERROR: &str = "llm_error";
    /// HTTP 200 with a body that is not the expected JSON.
    pub const PARSE_FAILURE: &str = "parse_failure";
    /// HTTP 401 / 403.
    pub const AUTH_ERROR: &str = "auth_error";
    /// The prompt is too long for the model.
    pub const CONTEXT_OVERFLOW: &str = "context_overflow";
}

/// The upstream provider cannot be set up from `[model]`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `[model].api_key_env` names a variable that is not set.
    #[error("[model].api_key_env names {0}, which is not set in the environment")]
    MissingKey(String),
    /// A passthrough provider without `[model].base_url` (only Anthropic has a default).
    #[error("[model].base_url is required for provider {0}")]
    MissingBaseUrl(&'static str),
    /// `[model].base_url` does not make a URL.
    #[error("[model].base_url {url:?} is not a valid URL: {reason}")]
    BadBaseUrl {
        /// The configured base URL.
        url: String,
        /// The parser's reason.
        reason: String,
    },
    /// The key cannot be sent in an HTTP header.
    #[error("the API key in [model].api_key_env has characters not allowed in an HTTP header")]
    BadKey,
    /// The HTTP client cannot be built (TLS set-up).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A classified failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    /// One of [`kind`].
    pub kind: &'static str,
    /// Another attempt may succeed.
    pub retryable: bool,
    /// From a 429's `Retry-After` (seconds).
    pub retry_after: Option<Duration>,
    /// HTTP status to give the agent if this is the last word.
    pub status: u16,
    /// Upstream body (or a description) to give the agent.
    pub body: bytes::Bytes,
    /// For logs and events.
    pub message: String,
}

/// Classify an upstream HTTP status and body. Errors a client should not retry (auth, context,
/// other 4xx) are final; timeouts, 429 and 5xx are retried.
pub fn classify_status(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: bytes::Bytes,
) -> Failure {
    let text = String::from_utf8_lossy(&body).to_lowercase();
    let (kind, retryable) = match status {
        429 => (kind::RATE_LIMIT, true),
        401 | 403 => (kind::AUTH_ERROR, false),
        400 | 413
            if text.contains("context_length")
                || text.contains("context length")
                || text.contains("too long")
                || text.contains("maximum context") =>
        {
            (kind::CONTEXT_OVERFLOW, false)
        }
        500..=599 => (kind::LLM_ERROR, true),
        _ => (kind::LLM_ERROR, false),
    };
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    Failure {
        kind,
        retryable,
        retry_after,
        status,
        message: format!(
            "upstream answered HTTP {status}: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        ),
        body,
    }
}

/// Classify a transport error (no HTTP answer).
pub fn classify_transport(err: &reqwest::Error) -> Failure {
    let kind = if err.is_timeout() {
        kind::NETWORK_TIMEOUT
    } else {
        kind::LLM_ERROR
    };
    let message = format!("upstream unreachable: {err}");
    Failure {
        kind,
        retryable: true,
        retry_after: None,
        status: if err.is_timeout() { 504 } else { 502 },
        body: bytes::Bytes::from(message.clone()),
        message,
    }
}

/// Retries with exponential backoff and full jitter (wall time: providers are not time-scaled).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// `[model].max_retries`.
    pub max_retries: u32,
    /// `[model].retry_base_ms`.
    pub base: Duration,
    /// `[model].retry_max_ms`.
    pub max: Duration,
}

impl RetryPolicy {
    /// The policy of `[model]`.
    pub fn from_config(model: &Model) -> RetryPolicy {
        RetryPolicy {
            max_retries: model.max_retries,
            base: Duration::from_millis(model.retry_base_ms),
            max: Duration::from_millis(model.retry_max_ms),
        }
    }

    /// Wait before retry `attempt` (0-based): the failure's `Retry-After` if it has one (capped
    /// at the maximum backoff), else full jitter U(0, min(max, base × 2^attempt)).
    pub fn backoff(&self, attempt: u32, failure: &Failure) -> Duration {
        if let Some(after) = failure.retry_after {
            return after.min(self.max);
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        ceiling.mul_f64(fastrand::f64())
    }
}

#[derive(Debug, Default)]
struct ModelHealth {
    consecutive_failures: u32,
    cooled_until: Option<Instant>,
}

/// A configured upstream provider.
pub struct Upstream {
    /// Its wire format.
    pub provider: Provider,
    client: reqwest::Client,
    base_url: String,
    /// `{base_url}/chat/completions`, `/responses`, `/messages`, parsed once (not per call).
    endpoints: [reqwest::Url; 3],
    api_key: Option<String>,
    /// The provider's auth header with the real key, built once and marked sensitive.
    auth: Option<(&'static str, reqwest::header::HeaderValue)>,
    /// `[model].fallbacks`, tried in order.
    pub fallbacks: Vec<String>,
    /// Retries and backoff.
    pub policy: RetryPolicy,
    cooldown_after: u32,
    cooldown: Duration,
    health: Mutex<HashMap<String, ModelHealth>>,
}

impl Upstream {
    /// Build from `[model]`; `api_key` is the value of the variable `api_key_env` names.
    pub fn new(
        model: &Model,
        provider: Provider,
        api_key: Option<String>,
    ) -> Result<Upstream, SetupError> {
        let base_url = match (&model.base_url, provider) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Provider::Anthropic) => "https://api.anthropic.com/v1".to_string(),
            (None, _) => return Err(SetupError::MissingBaseUrl(provider.as_str())),
        };
        // reqwest is built without a default crypto provider; ring is ours (idempotent).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(model.timeout_secs))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()?;
        let endpoint = |format: WireFormat| {
            reqwest::Url::parse(&format!("{base_url}{}", format.path())).map_err(|err| {
                SetupError::BadBaseUrl {
                    url: base_url.clone(),
                    reason: err.to_string(),
                }
            })
        };
        let endpoints = [
            endpoint(WireFormat::ChatCompletions)?,
            endpoint(WireFormat::Responses)?,
            endpoint(WireFormat::Messages)?,
        ];
        let auth = match &api_key {
            None => None,
            Some(key) => {
                let (name, text) = match provider {
                    Provider::Anthropic => ("x-api-key", key.clone()),
                    _ => ("authorization", format!("Bearer {key}")),
                };
                let mut value = reqwest::header::HeaderValue::from_str(&text)
                    .map_err(|_| SetupError::BadKey)?;
                value.set_sensitive(true);
                Some((name, value))
            }
        };
        Ok(Upstream {
            provider,
            client,
            base_url,
            endpoints,
            api_key,
            auth,
            fallbacks: model.fallbacks.clone(),
            policy: RetryPolicy::from_config(model),
            cooldown_after: model.cooldown_after_failures.max(1),
            cooldown: Duration::from_secs_f64(model.cooldown_secs),
            health: Mutex::new(HashMap::new()),
        })
    }

    /// True when this provider serves `format` (OpenAI-compatible: chat and responses;
    /// Anthropic: messages).
    pub fn speaks(&self, format: WireFormat) -> bool {
        match self.provider {
            Provider::Anthropic => format == WireFormat::Messages,
            _ => format != WireFormat::Messages,
        }
    }

    /// Send one attempt of `body` (JSON). `agent_headers` are passed through where the API defines them
    /// (`anthropic-version`, `anthropic-beta`, `openai-beta`).
    pub async fn send(
        &self,
        format: WireFormat,
        body: bytes::Bytes,
        agent_headers: &axum::http::HeaderMap,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let endpoint = match format {
            WireFormat::ChatCompletions => &self.endpoints[0],
            WireFormat::Responses => &self.endpoints[1],
            WireFormat::Messages => &self.endpoints[2],
        };
        let mut request = self
            .client
            .post(endpoint.clone())
            .header("content-type", "application/json")
            .body(body);
        if let Some((name, value)) = &self.auth {
            request = request.header(*name, value.clone());
        }
        if self.provider == Provider::Anthropic {
            let version = agent_headers
                .get("anthropic-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("2023-06-01");
            request = request.header("anthropic-version", version);
        }
        for name in ["anthropic-beta", "openai-beta"] {
            if let Some(value) = agent_headers.get(name).and_then(|v| v.to_str().ok()) {
                request = request.header(name, value);
            }
        }
        request.send().await
    }

    /// `GET {base}/models` with the real key.
    pub async fn models(&self) -> Result<reqwest::Response, reqwest::Error> {
        let mut request = self.client.get(format!("{}/models", self.base_url));
        if let Some(key) = &self.api_key {
            request = match self.provider {
                Provider::Anthropic => request
                    .header("x-api-key", key)
                    .header("anthropic-version", "2023-06-01"),
                _ => request.bearer_auth(key),
            };
        }
        request.send().await
    }

    /// Models to try for a call that asked for `requested`: it, then the fallbacks, skipping
    /// models in cooldown (unless every one is).
    pub fn candidates(&self, requested: &str) -> Vec<String> {
        let mut all = vec![requested.to_string()];
        for fallback in &self.fallbacks {
            if !all.contains(fallback) {
                all.push(fallback.clone());
            }
        }
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let warm: Vec<String> = all
            .iter()
            .filter(|m| {
                health
                    .get(*m)
                    .and_then(|h| h.cooled_until)
                    .is_none_or(|until| until <= now)
            })
            .cloned()
            .collect();
        if warm.is_empty() {
            all
        } else {
            warm
        }
    }

    /// Record the outcome of an attempt on `model`; returns true when this failure put the
    /// model into cooldown.
    pub fn record(&self, model: &str, ok: bool) -> bool {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let entry = health.entry(model.to_string()).or_default();
        if ok {
            *entry = ModelHealth::default();
            return false;
        }
        entry.consecutive_failures += 1;
        if entry.consecutive_failures >= self.cooldown_after {
            entry.consecutive_failures = 0;
            entry.cooled_until = Some(Instant::now() + self.cooldown);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_by_the_recovery_table() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        let f = classify_status(429, &headers, bytes::Bytes::new());
        assert_eq!(
            (f.kind, f.retryable, f.retry_after),
            (kind::RATE_LIMIT, true, Some(Duration::from_secs(2)))
        );
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(
            classify_status(503, &none, bytes::Bytes::new()).kind,
            kind::LLM_ERROR
        );
        assert!(!classify_status(401, &none, bytes::Bytes::new()).retryable);
        let overflow = classify_status(
            400,
            &none,
            bytes::Bytes::from_static(b"{\"code\":\"context_length_exceeded\"}"),
        );
        assert_eq!(
            (overflow.kind, overflow.retryable),
            (kind::CONTEXT_OVERFLOW, false)
        );
    }

    #[test]
    fn backoff_honours_retry_after_within_the_cap_and_jitters_below_the_ceiling() {
        let policy = RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let mut failure =
            classify_status(503, &reqwest::header::HeaderMap::new(), bytes::Bytes::new());
        for attempt in 0..6 {
            let ceiling = Duration::from_millis((100u64 << attempt).min(1000));
            for _ in 0..50 {
                assert!(policy.backoff(attempt, &failure) <= ceiling);
            }
        }
        failure.retry_after = Some(Duration::from_millis(700));
        assert_eq!(policy.backoff(0, &failure), Duration::from_millis(700));
        failure.retry_after = Some(Duration::from_secs(30));
        assert_eq!(
            policy.backoff(0, &failure),
            Duration::from_millis(1000),
            "capped at the maximum"
        );
    }

    #[test]
    fn failing_model_cools_down_and_fallback_comes_first() {
        let model = Model {
            base_url: Some("http://127.0.0.1:9/v1".into()),
            fallbacks: vec!["backup".into()],
            cooldown_after_failures: 2,
            ..Model::default()
        };
        let upstream = Upstream::new(&model, Provider::OpenaiCompatible, None).unwrap();
        assert_eq!(upstream.candidates("main"), ["main", "backup"]);
        assert!(!upstream.record("main", false));
        assert!(upstream.record("main", false));
        assert_eq!(upstream.candidates("main"), ["backup"]);
    }
}
