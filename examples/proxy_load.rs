//! Open-loop load for `scripts/bench_proxy.sh`: POST chat completions to `--url` at `--rps`
//! requests per second for `--seconds`, then print one JSON line of wall-clock latency
//! percentiles (milliseconds), achieved throughput and errors.
//!
//! When the answers carry `x-megatest-overhead-ms`, its p50 and p99 (megatest's own account of
//! its time) are printed too.
//!
//! `--warmup-seconds W` (default 0.5) first sends the same load for W seconds and discards those
//! answers (connections are opened and pools filled outside the measurement). `--samples FILE`
//! appends every measured request to FILE, one line each: `<latency ms> <overhead ms or ->`, so
//! that several interleaved runs can be pooled.
//!
//! `cargo run --release --example proxy_load -- --url http://127.0.0.1:P/v1 --key K
//!  [--rps 500] [--seconds 10] [--warmup-seconds 0.5] [--samples FILE] [--stream] [--model M]`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!(
        "{}/chat/completions",
        arg("--url").expect("--url").trim_end_matches('/')
    );
    let key = arg("--key").unwrap_or_else(|| "none".into());
    let rps: f64 = arg("--rps").and_then(|v| v.parse().ok()).unwrap_or(500.0);
    let seconds: f64 = arg("--seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let model = arg("--model").unwrap_or_else(|| "gpt-fake".into());
    let stream = std::env::args().any(|a| a == "--stream");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap();
    let mut body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16});
    if stream {
        body["stream"] = serde_json::Value::Bool(true);
    }
    let body = Arc::new(body.to_string());
    let warmup: f64 = arg("--warmup-seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.5);
    if warmup > 0.0 {
        let discard = Load::new();
        discard.run(&client, &url, &key, &body, rps, warmup).await;
    }
    let load = Load::new();
    let started = Instant::now();
    load.run(&client, &url, &key, &body, rps, seconds).await;
    let elapsed = started.elapsed().as_secs_f64();
    let latencies = load.latencies.lock().unwrap().clone();
    let overheads = load.overheads.lock().unwrap().clone();
    if let Some(path) = arg("--samples") {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open --samples file"),
        );
        for (latency, overhead) in &latencies {
            match overhead {
                Some(o) => writeln!(out, "{latency} {o}"),
                None => writeln!(out, "{latency} -"),
            }
            .expect("write --samples file");
        }
    }
    let mut sorted: Vec<f64> = latencies.iter().map(|(l, _)| *l).collect();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut reported: Vec<f64> = overheads;
    reported.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{}",
        serde_json::json!({
            "reported_overhead_p50_ms": if reported.is_empty() { None } else { Some(percentile(&reported, 50.0)) },
            "reported_overhead_p99_ms": if reported.is_empty() { None } else { Some(percentile(&reported, 99.0)) },
            "requests": (rps * seconds) as u64, "ok": sorted.len(), "errors": *load.errors.lock().unwrap(),
            "throughput_rps": sorted.len() as f64 / elapsed,
            "p50_ms": percentile(&sorted, 50.0), "p99_ms": percentile(&sorted, 99.0),
            "stream": stream, "target_rps": rps,
        })
    );
}

/// One answered request: (wall ms from send to the last body byte, `x-megatest-overhead-ms`
/// if the answer carried it).
type Sample = (f64, Option<f64>);

/// The results of one open-loop run.
struct Load {
    latencies: Arc<Mutex<Vec<Sample>>>,
    overheads: Arc<Mutex<Vec<f64>>>,
    errors: Arc<Mutex<u64>>,
}

impl Load {
    fn new() -> Load {
        Load {
            latencies: Arc::new(Mutex::new(Vec::new())),
            overheads: Arc::new(Mutex::new(Vec::new())),
            errors: Arc::new(Mutex::new(0)),
        }
    }

    /// Send `rps` requests per second for `seconds`, each on time whatever the answers do;
    /// return when every answer is in.
    async fn run(
        &self,
        client: &reqwest::Client,
        url: &str,
        key: &str,
        body: &Arc<String>,
        rps: f64,
        seconds: f64,
    ) {
        let total = (rps * seconds) as u64;
        let interval = Duration::from_secs_f64(1.0 / rps);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = started + interval.mul_f64(i as f64);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            let (client, url, key, body, latencies, errors, overheads) = (
                client.clone(),
                url.to_string(),
                key.to_string(),
                body.clone(),
                self.latencies.clone(),
                self.errors.clone(),
                self.overheads.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let result = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body.as_str().to_owned())
                    .send()
                    .await;
                let mut overhead = None;
                let ok = match result {
                    Ok(response) if response.status().is_success() => {
                        overhead = response
                            .headers()
                            .get("x-megatest-overhead-ms")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<f64>().ok());
                        if let Some(overhead) = overhead {
                            overheads.lock().unwrap().push(overhead);
                        }
                        response.bytes().await.is_ok()
                    }
                    _ => false,
                };
                if ok {
                    latencies
                        .lock()
                        .unwrap()
                        .push((sent.elapsed().as_secs_f64() * 1000.0, overhead));
                } else {
                    *errors.lock().unwrap() += 1;
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}
