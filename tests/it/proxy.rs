//! The metering proxy in front of a provider (the `fake_upstream` example stands in for it):
//! exact ledgers, streamed and not, budgets without overshoot, retries and fallbacks.

use crate::support::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const UPSTREAM_KEY: &str = "sk-upstream-secret-4711";

/// A session config whose agents run the probe with `plan`.
fn probe_config(dir: &Path, model_section: &str, plan: &Value, extra: &str) -> PathBuf {
    let command = format!(
        "python3 {}",
        root().join("tests/it/probes/calls.py").display()
    );
    command_config(
        dir,
        model_section,
        &command,
        &[("PROBE_PLAN", &plan.to_string())],
        extra,
    )
}

fn upstream_section(provider: &str, url: &str, extra: &str) -> String {
    format!(
        "[model]\nprovider = {provider:?}\nbase_url = {url:?}\nname = \"gpt-fake\"\napi_key_env = \"MEGATEST_TEST_UPSTREAM_KEY\"\n{extra}\n"
    )
}

fn run_probe_session(config: &Path, runs: &Path) -> PathBuf {
    let output = run_session(
        config,
        runs,
        &["--time-scale", "60"],
        &[("MEGATEST_TEST_UPSTREAM_KEY", UPSTREAM_KEY)],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The probes build nothing, so the phase checks fail: exit 1, a completed session.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    only_session(runs)
}

fn assert_ledger_equals_upstream(session: &Path, upstream: &FakeUpstream) {
    let stats = upstream.stats();
    assert_eq!(
        ledger_sum(session, "1"),
        stats["calls"].as_i64().unwrap(),
        "calls"
    );
    assert_eq!(
        ledger_sum(session, "prompt_tokens"),
        stats["prompt_tokens"].as_i64().unwrap(),
        "prompt tokens"
    );
    assert_eq!(
        ledger_sum(session, "completion_tokens"),
        stats["completion_tokens"].as_i64().unwrap(),
        "completion tokens"
    );
    assert_eq!(
        ledger_sum(session, "cached_tokens"),
        stats["cached_tokens"].as_i64().unwrap(),
        "cached tokens"
    );
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(
        report["usage"]["total_tokens"].as_i64().unwrap(),
        stats["prompt_tokens"].as_i64().unwrap() + stats["completion_tokens"].as_i64().unwrap()
    );
    for file in [
        "config.json",
        "session.log",
        "final_report.json",
        "agents.toml",
    ] {
        let text = std::fs::read_to_string(session.join(file)).unwrap();
        assert!(
            !text.contains(UPSTREAM_KEY),
            "the provider key leaked into {file}"
        );
    }
}

#[test]
fn openai_ledger_equals_upstream_usage_streamed_or_not() {
    let upstream = FakeUpstream::start(UPSTREAM_KEY);
    let dir = tempfile::tempdir().unwrap();
    let plan = json!([
        {"api": "chat", "repeat": 3},
        {"api": "chat", "stream": true, "usage": true, "repeat": 3},
        {"api": "chat", "stream": true, "usage": false, "repeat": 3},
        {"api": "responses", "repeat": 2},
        {"api": "responses", "stream": true, "repeat": 2},
    ]);
    let config = probe_config(
        dir.path(),
        &upstream_section("openai-compatible", &upstream.url, ""),
        &plan,
        "",
    );
    let session = run_probe_session(&config, &dir.path().join("runs"));
    let records = probe_records(&session.join("project"));
    assert_eq!(records.len(), 13 * 10, "13 calls for each of the 10 tasks");
    for record in &records {
        assert_eq!(record["status"], 200, "{record}");
        assert_eq!(
            record["overhead"], true,
            "x-megatest-overhead-ms missing: {record}"
        );
        if record["stream"] == true {
            assert_eq!(record["done"], true, "{record}");
            if record["api"] == "chat" {
                let expected = if record["usage"] == true { 1 } else { 0 };
                assert_eq!(record["usage_chunks"], expected, "{record}");
            }
        }
    }
    assert_ledger_equals_upstream(&session, &upstream);
    // Tool calls: one per answer, from JSON bodies and from streamed deltas alike.
    assert_eq!(ledger_sum(&session, "tool_calls"), 130);
    let names = scalar(
        &session,
        "SELECT COUNT(*) FROM ledger WHERE tool_names IN ('[\"finish\"]', '[\"shell\"]')",
        &[],
    );
    assert_eq!(names, 130);
    // No price for gpt-fake: cost is unknown, never 0.
    assert_eq!(ledger_sum(&session, "cost_usd IS NOT NULL"), 0);
    let report = read_json(&session.join("final_report.json"));
    assert!(report["budget"]["cost_usd"]["value"].is_null());
    assert!(report["budget"]["cost_usd"]["reason"]
        .as_str()
        .unwrap()
        .contains("gpt-fake"));
}

#[test]
fn a_builtin_model_asked_for_a_priced_name_answers_as_itself_and_costs_nothing_made_up() {
    let dir = tempfile::tempdir().unwrap();
    let plan = json!([{"api": "chat", "model": "gpt-4o"}, {"api": "chat", "model": "gpt-4o", "stream": true}]);
    let config = probe_config(dir.path(), "[model]\nprovider = \"sim\"\n", &plan, "");
    let runs = dir.path().join("runs");
    let output = run_session(
        &config,
        &runs,
        &["--time-scale", "60", "--model", "gpt-4o"],
        &[],
    );
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let session = only_session(&runs);
    // Asked for gpt-4o, answered by sim: gpt-4o's price is not charged for sim's tokens.
    assert_eq!(
        ledger_sum(
            &session,
            "model_requested = 'gpt-4o' AND model_served = 'sim'"
        ),
        20
    );
    assert_eq!(ledger_sum(&session, "cost_usd IS NOT NULL"), 0);
    let report = read_json(&session.join("final_report.json"));
    assert!(
        report["budget"]["cost_usd"]["value"].is_null(),
        "{}",
        report["budget"]
    );
}

#[test]
fn anthropic_ledger_equals_upstream_usage_streamed_or_not() {
    let upstream = FakeUpstream::start(UPSTREAM_KEY);
    let dir = tempfile::tempdir().unwrap();
    let plan = json!([
        {"api": "messages", "repeat": 2},
        {"api": "messages", "stream": true, "repeat": 2},
    ]);
    let prices = "[model.prices.gpt-fake]\ninput = 1.0\noutput = 2.0\ncached_input = 0.5";
    let model = upstream_section("anthropic", &upstream.url, prices);
    let config = probe_config(dir.path(), &model, &plan, "");
    let session = run_probe_session(&config, &dir.path().join("runs"));
    let records = probe_records(&session.join("project"));
    assert_eq!(records.len(), 40);
    assert!(records.iter().all(|r| r["status"] == 200), "{records:?}");
    assert!(records
        .iter()
        .filter(|r| r["stream"] == true)
        .all(|r| r["done"] == true));
    assert_ledger_equals_upstream(&session, &upstream);
    assert_eq!(ledger_sum(&session, "tool_calls"), 40);
    // Cost from the configured price, on the upstream's own figures.
    let stats = upstream.stats();
    let figure = |key: &str| stats[key].as_f64().unwrap();
    let (prompt, cached, completion) = (
        figure("prompt_tokens"),
        figure("cached_tokens"),
        figure("completion_tokens"),
    );
    let expected = ((prompt - cached) * 1.0 + cached * 0.5 + completion * 2.0) / 1e6;
    let report = read_json(&session.join("final_report.json"));
    let cost = report["budget"]["cost_usd"]["value"].as_f64().unwrap();
    assert!((cost - expected).abs() < 1e-12, "cost {cost} != {expected}");
}

/// A config with one phase (`build`, `hours` long) of `tasks` probe tasks for `tasks` agents
/// of role Coder, with `limits` and `model` sections as given.
fn single_phase_config(
    dir: &Path,
    tasks: usize,
    hours: u32,
    limits: &str,
    model: &str,
    plan: &Value,
) -> PathBuf {
    let spec = dir.join("spec");
    std::fs::create_dir_all(&spec).unwrap();
    let mut text = String::from(
        "name = \"probe\"\ndescription = \"probe tasks\"\nlanguage = \"none\"\n[commands]\nbuild = \"true\"\ntest = \"true\"\n",
    );
    for i in 0..tasks {
        text.push_str(&format!("[[tasks]]\nid = \"probe-{i}\"\nphase = \"build\"\nrole = \"Coder\"\ntitle = \"t\"\nprompt = \"p\"\n"));
    }
    std::fs::write(spec.join("spec.toml"), text).unwrap();
    let config_text = format!(
        r#"
[session]
duration_hours = {hours}
agent_count = {agents}
[agent]
step_timeout_secs = {step_timeout}
concurrent_agents = {agents}
roles = ["Coder"]
max_total_agents = {agents}
[limits]
{limits}
[project]
spec_dir = {spec:?}
[[phases]]
name = "build"
duration_minutes = {minutes}
{model}
[agents]
kind = "command"
command = "python3 {probe}"
max_task_attempts = 1
[agents.env]
PROBE_PLAN = {plan:?}
[scheduling]
phase_end = "tasks_done"
"#,
        agents = tasks.max(2),
        minutes = hours * 60,
        step_timeout = hours * 3600,
        spec = spec.display().to_string(),
        probe = root().join("tests/it/probes/calls.py").display(),
        plan = plan.to_string(),
    );
    let config = dir.join("config.toml");
    std::fs::write(&config, config_text).unwrap();
    config
}

#[test]
fn eight_agents_released_together_cannot_overshoot_the_token_budget() {
    let upstream = FakeUpstream::start(UPSTREAM_KEY);
    let dir = tempfile::tempdir().unwrap();
    // Every call costs exactly 13 prompt + 1000 completion tokens: nine fit in 10 000.
    let plan =
        json!([{"api": "chat", "model": "exact-max", "max_tokens": 1000, "until_402": true}]);
    let model = upstream_section("openai-compatible", &upstream.url, "");
    let config = single_phase_config(
        dir.path(),
        8,
        1,
        "total_token_budget = 10000",
        &model,
        &plan,
    );
    let runs = dir.path().join("runs");
    let output = run_session(
        &config,
        &runs,
        &["--time-scale", "60"],
        &[("MEGATEST_TEST_UPSTREAM_KEY", UPSTREAM_KEY)],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let session = only_session(&runs);
    let report = read_json(&session.join("final_report.json"));
    let used = ledger_sum(&session, "prompt_tokens + completion_tokens");
    assert!(
        used <= 10_000,
        "overshoot: {used} tokens used of 10 000\n{stderr}"
    );
    assert!(ledger_sum(&session, "1") >= 8, "the first eight calls fit");
    assert!(
        report["ended_because"]
            .as_str()
            .unwrap()
            .contains("token budget exhausted"),
        "{}",
        report["ended_because"]
    );
    assert_eq!(report["status"], "complete");
    assert!(ledger_sum(&session, "1") <= 9, "at most nine calls fit");
    let count = |kind: &str| {
        scalar(
            &session,
            "SELECT COUNT(*) FROM events WHERE kind = ?1",
            &[kind],
        )
    };
    assert_eq!(count("budget_alert"), 1);
    assert_eq!(count("budget_exhausted"), 1);
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let state: String = db
        .query_row("SELECT state FROM budget_state", [], |r| r.get(0))
        .unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["used_tokens"].as_i64().unwrap(), used);
    assert_eq!(report["budget"]["used_tokens"].as_i64().unwrap(), used);
    assert_eq!(report["budget"]["alert_raised"], true);
    assert!(report["budget"]["exhausted"]
        .as_str()
        .unwrap()
        .contains("token budget"));
    // The phase the budget ended is the session's last: it is evaluated although
    // [evaluation].phases leaves out a lone first phase.
    assert_eq!(
        report["evaluation"]["phase"], report["phases"][0]["name"],
        "{}",
        report["evaluation"]
    );
    let under = criterion(&report, "under the token budget (seed)");
    assert_eq!(under["met"], false, "{under}");
}

#[test]
fn failures_are_classified_retried_and_fall_back() {
    let upstream = FakeUpstream::start(UPSTREAM_KEY);
    let dir = tempfile::tempdir().unwrap();
    let plan = json!([
        {"api": "chat", "model": "always-500"},
        {"api": "chat", "model": "fail-429-once"},
        {"api": "chat", "model": "garbage"},
    ]);
    let model = upstream_section(
        "openai-compatible",
        &upstream.url,
        "fallbacks = [\"gpt-fake\"]\nmax_retries = 1\nretry_base_ms = 1\nretry_max_ms = 20\ncooldown_after_failures = 100",
    );
    let config = probe_config(dir.path(), &model, &plan, "");
    let session = run_probe_session(&config, &dir.path().join("runs"));
    let records = probe_records(&session.join("project"));
    assert_eq!(records.len(), 30);
    assert!(
        records.iter().all(|r| r["status"] == 200),
        "every call ends served: {records:?}"
    );
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let served = |requested: &str| -> (String, i64) {
        db.query_row(
            "SELECT group_concat(DISTINCT model_served), MIN(attempts) FROM ledger WHERE model_requested = ?1",
            [requested],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    assert_eq!(served("always-500"), ("gpt-fake".to_string(), 3));
    assert_eq!(served("fail-429-once"), ("fail-429-once".to_string(), 2));
    assert_eq!(served("garbage"), ("gpt-fake".to_string(), 3));
    let report = read_json(&session.join("final_report.json"));
    let errors = &report["errors"];
    assert_eq!(errors["llm_error"], 20, "{errors}");
    assert_eq!(errors["rate_limit"], 10, "{errors}");
    assert_eq!(errors["parse_failure"], 20, "{errors}");
    assert_ledger_equals_upstream(&session, &upstream);
}

#[test]
fn upstream_auth_error_is_classified_and_not_retried() {
    let upstream = FakeUpstream::start("sk-some-other-key");
    let dir = tempfile::tempdir().unwrap();
    let plan = json!([{"api": "chat"}]);
    let config = probe_config(
        dir.path(),
        &upstream_section("openai-compatible", &upstream.url, "max_retries = 3"),
        &plan,
        "",
    );
    let session = run_probe_session(&config, &dir.path().join("runs"));
    let records = probe_records(&session.join("project"));
    assert!(records.iter().all(|r| r["status"] == 401), "{records:?}");
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["errors"]["auth_error"], 10);
    assert_eq!(
        ledger_sum(&session, "attempts"),
        10,
        "auth errors are not retried"
    );
    // The recovery table escalates a wrong provider key (no retry can fix it): one open
    // escalation for the kind, the other calls wait on the same decision.
    let recoveries = report["recoveries"].as_array().unwrap();
    let auth: Vec<&Value> = recoveries
        .iter()
        .filter(|r| r["failure_kind"] == "auth_error")
        .collect();
    assert_eq!(auth.len(), 10, "{recoveries:?}");
    assert!(auth
        .iter()
        .all(|r| r["action"] == "escalate" && r["outcome"] == "escalated"));
}

#[test]
fn builtin_models_inject_faults_that_the_proxy_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = std::fs::read_to_string(fixture_config()).unwrap();
    text.push_str(
        "\n[model]\nprovider = \"sim\"\nretry_base_ms = 1\nretry_max_ms = 10\nmax_retries = 3\n\
         [model.faults]\nserver_error = 0.2\nrate_limit = 0.1\nmalformed_json = 0.1\nmalformed_tool_args = 0.05\n\
         [recovery]\nescalation_default = \"log_and_continue\"\n",
    );
    // Reviews that fail under these faults can leave a vote without quorum: its escalation is
    // unanswered here, and the default keeps the session going (the work is accepted).
    let config = dir.path().join("chaos.toml");
    std::fs::write(&config, text).unwrap();
    let runs = dir.path().join("runs");
    // Time scale 900: a task run gets 0.67 s of wall time (3600 left it 0.17 s, which a busy
    // machine turned into step timeouts and too few calls to see every fault).
    let output = run_session(
        &config,
        &runs,
        &["--hours", "1", "--time-scale", "900"],
        &[],
    );
    assert_exit(&output, 1);
    let session = only_session(&runs);
    let report = read_json(&session.join("final_report.json"));
    for kind in ["llm_error", "rate_limit", "parse_failure"] {
        assert!(
            report["errors"][kind].as_u64().unwrap_or(0) > 0,
            "no {kind}: {}",
            report["errors"]
        );
    }
    assert!(
        ledger_sum(&session, "attempts > 1") > 0,
        "no call was retried"
    );
}

#[test]
fn agents_without_native_tool_calls_report_them_by_http_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let plan = json!([
        {"api": "events", "via": "http", "names": ["bash", "bash"]},
        {"api": "events", "via": "file", "names": ["edit"]},
    ]);
    let config = probe_config(dir.path(), "[model]\nprovider = \"sim\"\n", &plan, "");
    let session = run_probe_session(&config, &dir.path().join("runs"));
    let records = probe_records(&session.join("project"));
    assert!(
        records
            .iter()
            .filter(|r| r.get("accepted").is_some())
            .all(|r| r["accepted"] == 2),
        "{records:?}"
    );
    let report = read_json(&session.join("final_report.json"));
    let usage = &report["usage"];
    assert_eq!(usage["agent_reported_tool_calls"], 30, "{usage}");
    assert_eq!(usage["tool_calls"], 30, "{usage}");
    assert_eq!(usage["tool_calls_by_name"]["bash"], 20);
    assert_eq!(usage["tool_calls_by_name"]["edit"], 10);
    assert_eq!(usage["model_calls"], 0);
    let attributed = scalar(&session, "SELECT COUNT(*) FROM events WHERE kind = 'tool_call' AND agent_id LIKE 'agent-%' AND task_id LIKE 'qs-%'", &[]);
    assert_eq!(attributed, 30);
}

#[test]
fn per_agent_token_rate_throttles() {
    let upstream = FakeUpstream::start(UPSTREAM_KEY);
    let dir = tempfile::tempdir().unwrap();
    let plan = json!([{"api": "chat", "repeat": 3, "max_tokens": 150}]);
    // ~195 tokens reserved per call (prompt estimate + 150) against 200 tokens per agent per
    // hour: whatever the order, the second and third calls find the bucket short and wait.
    let limits = "tokens_per_agent_per_hour = 200\nmax_context_size = 2000";
    let model = upstream_section(
        "openai-compatible",
        &upstream.url,
        "default_max_tokens = 100",
    );
    let config = single_phase_config(dir.path(), 1, 6, limits, &model, &plan);
    let runs = dir.path().join("runs");
    let output = run_session(
        &config,
        &runs,
        &["--time-scale", "3600"],
        &[("MEGATEST_TEST_UPSTREAM_KEY", UPSTREAM_KEY)],
    );
    assert_exit(&output, 0);
    let session = only_session(&runs);
    let records = probe_records(&session.join("project"));
    let statuses: Vec<i64> = records
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{records:?}"
    );
    let report = read_json(&session.join("final_report.json"));
    let throttled = report["budget"]["throttled_session_secs"]["agent-1"]
        .as_f64()
        .unwrap();
    assert!(throttled > 0.0, "never throttled");
    let waits = scalar(
        &session,
        "SELECT COUNT(*) FROM events WHERE kind = 'throttled'",
        &[],
    );
    assert!(waits >= 2, "{waits} throttled events");
}
