//! The official `openai` and `anthropic` Python SDKs, unchanged, against the proxy.
//! Needs PyPI once: the SDKs are installed into `target/sdk-venv` by the first run.

use crate::support::*;
use std::path::PathBuf;

/// `target/sdk-venv/bin/python` with `openai` and `anthropic` installed.
fn sdk_python() -> PathBuf {
    python_venv("sdk-venv", &["openai>=1.60", "anthropic>=0.40"])
}

fn sdk_session(
    provider: &str,
    mode: &str,
) -> (
    serde_json::Value,
    Vec<serde_json::Value>,
    FakeUpstream,
    tempfile::TempDir,
) {
    let python = sdk_python();
    let upstream = FakeUpstream::start("sk-sdk-upstream");
    let dir = tempfile::tempdir().unwrap();
    let model = format!(
        "[model]\nprovider = {provider:?}\nbase_url = {:?}\nname = \"gpt-fake\"\napi_key_env = \"MEGATEST_TEST_UPSTREAM_KEY\"",
        upstream.url
    );
    let command = format!(
        "{} {}",
        python.display(),
        root().join("tests/it/probes/sdk.py").display()
    );
    let path = command_config(dir.path(), &model, &command, &[("SDK_MODE", mode)], "");
    let runs = dir.path().join("runs");
    let output = run_session(
        &path,
        &runs,
        &["--time-scale", "60"],
        &[("MEGATEST_TEST_UPSTREAM_KEY", "sk-sdk-upstream")],
    );
    assert_exit(&output, 1);
    let session = only_session(&runs);
    let mut records = Vec::new();
    for entry in std::fs::read_dir(session.join("project")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sdk-")
        {
            records.extend(read_json(&path).as_array().unwrap().iter().cloned());
        }
    }
    let report = read_json(&session.join("final_report.json"));
    (report, records, upstream, dir)
}

fn assert_usage_matches(
    report: &serde_json::Value,
    records: &[serde_json::Value],
    upstream: &FakeUpstream,
) {
    for record in records {
        assert_ne!(
            record["kind"],
            "error",
            "{}",
            record["trace"].as_str().unwrap_or("")
        );
    }
    let sdk_prompt: u64 = records.iter().filter_map(|r| r["prompt"].as_u64()).sum();
    let sdk_completion: u64 = records
        .iter()
        .filter_map(|r| r["completion"].as_u64())
        .sum();
    let stats = upstream.stats();
    // What the SDKs parsed from megatest = what the upstream sent = what the ledger holds.
    assert_eq!(
        report["usage"]["prompt_tokens"].as_u64().unwrap(),
        stats["prompt_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        report["usage"]["completion_tokens"].as_u64().unwrap(),
        stats["completion_tokens"].as_u64().unwrap()
    );
    let counted: u64 = records.iter().filter(|r| r["prompt"].is_u64()).count() as u64;
    assert!(counted >= 10, "{records:?}");
    // Calls whose usage the SDK did not see (stream without usage) are still in the ledger.
    assert!(sdk_prompt <= stats["prompt_tokens"].as_u64().unwrap());
    assert!(sdk_completion <= stats["completion_tokens"].as_u64().unwrap());
}

#[test]
fn openai_sdk_works_unchanged_against_the_proxy() {
    let (report, records, upstream, _dir) = sdk_session("openai-compatible", "openai");
    assert_usage_matches(&report, &records, &upstream);
    let kinds = |k: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == k)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds("chat").len(), 10);
    assert!(kinds("chat")
        .iter()
        .all(|r| r["tools"] == serde_json::json!(["finish"])));
    assert!(kinds("chat-stream")
        .iter()
        .all(|r| r["tools"] == serde_json::json!(["finish"])));
    assert!(kinds("chat-stream-no-usage")
        .iter()
        .all(|r| r["usage_chunks"] == 0 && r["chunks"].as_u64().unwrap() > 0));
    assert!(kinds("responses-stream")
        .iter()
        .all(|r| r["tools"] == serde_json::json!(["shell"])));
    assert!(kinds("models").iter().all(|r| r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .any(|id| id == "gpt-fake")));
    assert_eq!(report["usage"]["model_calls"], 50);
}

#[test]
fn anthropic_sdk_works_unchanged_against_the_proxy() {
    let (report, records, upstream, _dir) = sdk_session("anthropic", "anthropic");
    assert_usage_matches(&report, &records, &upstream);
    let sdk_total: u64 = records
        .iter()
        .map(|r| r["prompt"].as_u64().unwrap() + r["completion"].as_u64().unwrap())
        .sum();
    assert_eq!(sdk_total, report["usage"]["total_tokens"].as_u64().unwrap());
    assert!(
        records
            .iter()
            .all(|r| r["tools"] == serde_json::json!(["bash"])),
        "{records:?}"
    );
    assert_eq!(report["usage"]["model_calls"], 20);
}
