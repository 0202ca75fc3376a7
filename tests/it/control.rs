//! The control API, signals and status of a live session: auth matrix, loopback default,
//! checkpoint / pause / continue / stop, the SSE event stream and its resumption, Prometheus
//! `/metrics` (parsed by `prometheus_client`), the OpenAPI document (validated by
//! `openapi-spec-validator`, both from PyPI), SIGUSR1 / SIGUSR2 / SIGHUP.

use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

/// A session that stays up: agents that sleep (the first task runs; the next waits for it), a
/// one-hour session in real time.
pub(crate) struct Live {
    pub(crate) child: std::process::Child,
    pub(crate) session: PathBuf,
    pub(crate) addr: String,
    pub(crate) token: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Live {
    /// `limits`: more keys for the `[limits]` table.
    pub(crate) fn start(limits: &str) -> Live {
        let dir = tempfile::tempdir().unwrap();
        let command = "echo started; sleep 1000";
        let config = command_config(dir.path(), "[model]\nprovider = \"sim\"", command, &[], "");
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("[limits]\n", &format!("[limits]\n{limits}\n"));
        std::fs::write(&config, text).unwrap();
        let runs = dir.path().join("runs");
        let child = megatest()
            .arg("run")
            .arg(&config)
            .args(["--session-id", "live", "--runs-dir"])
            .arg(&runs)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.txt")).unwrap())
            .spawn()
            .unwrap();
        let session = runs.join("live");
        assert!(
            wait_for(Duration::from_secs(30), || session
                .join("api.addr")
                .exists()
                && !agent_pids(&session).is_empty()),
            "the session did not start: {}",
            std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default()
        );
        let addr = std::fs::read_to_string(session.join("api.addr"))
            .unwrap()
            .trim()
            .to_string();
        let token = std::fs::read_to_string(session.join("api.token"))
            .unwrap()
            .trim()
            .to_string();
        Live {
            child,
            session,
            addr,
            token,
            config,
            _dir: dir,
        }
    }

    pub(crate) fn agent_key(&self) -> String {
        let text = std::fs::read_to_string(self.session.join("agents.toml")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("api_key = "))
            .unwrap()
            .trim_matches('"')
            .to_string()
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&[u8]>,
    ) -> (u16, String) {
        http(&self.addr, method, path, auth, body)
    }

    fn json(&self, method: &str, path: &str) -> Value {
        let (status, body) = self.call(method, path, Some(&self.token), None);
        assert_eq!(status, 200, "{method} {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn events(&self, kind: &str) -> i64 {
        scalar(
            &self.session,
            "SELECT COUNT(*) FROM events WHERE kind = ?1",
            &[kind],
        )
    }

    fn wait(&mut self) -> Option<i32> {
        let status = self.child.wait().unwrap();
        status.code()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, body).
pub(crate) fn http(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&[u8]>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = auth {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or(b"");
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    stream.write_all(request.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn error_code(body: &str) -> String {
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {body:?}"));
    value["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code: {body}"))
        .to_string()
}

#[test]
fn auth_matrix_and_malformed_requests_get_json_4xx() {
    let mut live = Live::start("");
    assert!(
        live.addr.starts_with("127.0.0.1:"),
        "loopback: {}",
        live.addr
    );
    let mode = std::fs::metadata(live.session.join("api.token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let agent = live.agent_key();
    assert_eq!(live.call("GET", "/healthz", None, None).0, 200);
    let doc: Value =
        serde_json::from_str(&live.call("GET", "/api/openapi.json", None, None).1).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let security = op["security"].to_string();
            let concrete = path.replace("{id}", "1").replace("{agent}", "agent-1");
            let body: Option<&[u8]> = if method == "post" { Some(b"{}") } else { None };
            let method = method.to_uppercase();
            let (no_auth, _) = live.call(&method, &concrete, None, body);
            let (wrong, wrong_body) = live.call(&method, &concrete, Some("not-a-token"), body);
            if security.contains("operatorToken") {
                assert_eq!(no_auth, 401, "{method} {path} without a token");
                assert_eq!(wrong, 403, "{method} {path} with a wrong token");
                assert_eq!(error_code(&wrong_body), "forbidden");
                let (as_agent, _) = live.call(&method, &concrete, Some(&agent), body);
                assert_eq!(as_agent, 403, "{method} {path} with an agent key");
            } else if security.contains("agentKey") {
                assert_eq!(no_auth, 401, "{method} {path} without a key");
                assert_eq!(wrong, 403, "{method} {path} with a wrong key");
                let (as_operator, _) = live.call(&method, &concrete, Some(&live.token), body);
                assert_eq!(as_operator, 403, "{method} {path} with the operator token");
            } else if path == "/api/login" {
                // Public, but `{}` carries no token to exchange.
                assert_eq!(no_auth, 400, "{method} {path} without a token in the body");
            } else {
                assert_eq!(no_auth, 200, "{method} {path} is public");
            }
        }
    }
    // Malformed and oversized requests: 4xx with a JSON body, never 5xx.
    let token = Some(live.token.as_str());
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("POST", "/api/escalations/abc/decision", b"{}".to_vec(), 400),
        (
            "POST",
            "/api/escalations/1/decision",
            b"{not json".to_vec(),
            400,
        ),
        (
            "POST",
            "/api/escalations/1/decision",
            br#"{"decision": "maybe"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/api/escalations/77/decision",
            br#"{"decision": "stop"}"#.to_vec(),
            404,
        ),
        (
            "POST",
            "/api/escalations/1/decision",
            vec![b'x'; 200_000],
            413,
        ),
        ("GET", "/api/nothing-here", vec![], 404),
        ("DELETE", "/api/status", vec![], 405),
        ("POST", "/api/continue", vec![], 409),
    ];
    for (method, path, body, expected) in cases {
        let (status, text) = live.call(method, path, token, Some(&body));
        assert_eq!(status, expected, "{method} {path}: {text}");
        error_code(&text);
    }
    let (status, text) = live.call(
        "POST",
        "/api/agent/notes",
        Some(&agent),
        Some(br#"{"text": "the queue module is done"}"#),
    );
    assert_eq!(status, 200, "{text}");
    let (status, text) = live.call(
        "POST",
        "/api/agent/notes",
        Some(&agent),
        Some(br#"{"text": ""}"#),
    );
    assert_eq!(status, 400, "{text}");
    assert_eq!(live.events("note"), 1);
    live.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(live.wait(), Some(143));
}

#[test]
fn status_checkpoint_pause_continue_and_stop_through_the_api() {
    let mut live = Live::start("");
    let status = live.json("GET", "/api/status");
    assert_eq!(status["session_id"], "live");
    assert_eq!(status["status"], "running");
    assert_eq!(status["agents"].as_array().unwrap().len(), 2);
    assert_eq!(status["agents"][0]["status"], "running", "{status}");
    assert_eq!(status["agents"][0]["task"], "qs-layout");
    assert_eq!(status["agents"][1]["status"], "idle");
    for key in [
        "elapsed_session_secs",
        "remaining_session_secs",
        "tokens",
        "budget",
        "recoveries",
        "escalations",
        "phase",
    ] {
        assert!(!status[key].is_null(), "{key} missing: {status}");
    }
    let checkpoint = live.json("POST", "/api/checkpoint");
    let path = PathBuf::from(checkpoint["path"].as_str().unwrap());
    assert!(path.exists(), "{checkpoint}");
    assert_eq!(checkpoint["sequence"], 1);
    let (code, table) = verify(&live.session);
    assert_eq!(code, Some(0), "{table}");

    live.json("POST", "/api/pause");
    assert_eq!(
        std::fs::read_to_string(live.session.join("status"))
            .unwrap()
            .trim(),
        "paused"
    );
    let pids = agent_pids(&live.session);
    for pid in &pids {
        assert!(
            wait_for(Duration::from_secs(5), || {
                megatest::backend::local::process_paused(*pid)
            }),
            "agent {pid} not stopped"
        );
    }
    assert_eq!(live.json("GET", "/api/status")["status"], "paused");
    live.json("POST", "/api/continue");
    for pid in &pids {
        assert!(
            wait_for(Duration::from_secs(5), || {
                !megatest::backend::local::process_paused(*pid)
            }),
            "agent {pid} still stopped"
        );
    }
    let stop = live.json("POST", "/api/stop");
    assert_eq!(stop["exit_code"], 143);
    let session = live.session.clone();
    assert_eq!(live.wait(), Some(143));
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(report["status"], "interrupted");
    assert!(report["ended_because"]
        .as_str()
        .unwrap()
        .contains("/api/stop"));
}

/// Read SSE events from `GET /api/events` until `count` arrived: (id, kind) pairs.
fn read_events(addr: &str, token: &str, last_id: Option<i64>, count: usize) -> Vec<(i64, String)> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request =
        format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n");
    if let Some(id) = last_id {
        request.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut events = Vec::new();
    let (mut id, mut kind) = (None, None);
    let mut line = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while events.len() < count && std::time::Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let text = line.trim_end();
        if let Some(v) = text.strip_prefix("id: ").or(text.strip_prefix("id:")) {
            id = v.trim().parse::<i64>().ok();
        } else if let Some(v) = text.strip_prefix("event: ").or(text.strip_prefix("event:")) {
            kind = Some(v.trim().to_string());
        } else if text.starts_with("data:") {
            if let (Some(i), Some(k)) = (id.take(), kind.take()) {
                events.push((i, k));
            }
        }
    }
    events
}

#[test]
fn event_stream_delivers_and_resumes_from_last_event_id() {
    let live = Live::start("");
    let agent = live.agent_key();
    for i in 0..3 {
        let note = format!("{{\"text\": \"note {i}\"}}");
        let (status, _) = live.call(
            "POST",
            "/api/agent/notes",
            Some(&agent),
            Some(note.as_bytes()),
        );
        assert_eq!(status, 200);
    }
    let first = read_events(&live.addr, &live.token, None, 5);
    assert_eq!(first.len(), 5, "{first:?}");
    assert_eq!(first[0].1, "session_started");
    assert!(
        first.windows(2).all(|w| w[0].0 < w[1].0),
        "ids ascend: {first:?}"
    );
    let resumed = read_events(&live.addr, &live.token, Some(first[2].0), 2);
    assert_eq!(
        resumed,
        first[3..5].to_vec(),
        "resumed right after Last-Event-ID"
    );
    // New events arrive live: a checkpoint.
    let last = first.last().unwrap().0;
    let reader = {
        let (addr, token) = (live.addr.clone(), live.token.clone());
        std::thread::spawn(move || read_events(&addr, &token, Some(last), 50))
    };
    std::thread::sleep(Duration::from_millis(300));
    live.json("POST", "/api/checkpoint");
    live.signal(nix::sys::signal::Signal::SIGTERM);
    let later = reader.join().unwrap();
    assert!(later.iter().any(|(_, k)| k == "checkpoint"), "{later:?}");
    assert!(later.iter().all(|(id, _)| *id > last));
}

#[test]
fn metrics_parse_as_prometheus_text_and_openapi_validates() {
    let python = python_venv(
        "api-venv",
        &["prometheus_client>=0.20", "openapi-spec-validator>=0.7"],
    );
    let live = Live::start("");
    let (status, text) = live.call("GET", "/metrics", Some(&live.token), None);
    assert_eq!(status, 200);
    let (_, doc) = live.call("GET", "/api/openapi.json", None, None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("metrics.txt"), &text).unwrap();
    std::fs::write(dir.path().join("openapi.json"), &doc).unwrap();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
assert families["megatest_tokens"].type == "counter", families.keys()
assert families["megatest_agent_running"].type == "gauge"
running = [s for s in families["megatest_agent_running"].samples]
assert sorted(s.value for s in running) == [0.0, 1.0], running
trust = families["megatest_agent_trust_score"].samples
assert len(trust) == 2 and all(0.3 <= s.value <= 1.0 for s in trust), trust
from openapi_spec_validator import validate
spec = json.load(open(sys.argv[2]))
validate(spec)
print("ok", len(families), len(spec["paths"]))
"#;
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("metrics.txt"))
        .arg(dir.path().join("openapi.json"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    live.signal(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn usr1_writes_status_usr2_checkpoints_hup_reloads_or_keeps_the_config() {
    let mut live = Live::start("total_token_budget = 5000000");
    live.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(wait_for(Duration::from_secs(10), || live
        .session
        .join("status.json")
        .exists()));
    let status = read_json(&live.session.join("status.json"));
    assert_eq!(status["session_id"], "live");
    // The log line is written by the logging thread: it may land just after status.json.
    let log_has = |text: &str| {
        std::fs::read_to_string(live.session.join("session.log"))
            .unwrap_or_default()
            .contains(text)
    };
    assert!(
        wait_for(Duration::from_secs(10), || log_has("status (SIGUSR1)")),
        "no `status (SIGUSR1)` line in session.log"
    );

    live.signal(nix::sys::signal::Signal::SIGUSR2);
    assert!(wait_for(Duration::from_secs(10), || live
        .events("checkpoint")
        >= 1));

    // A valid change: SIGHUP reloads the limits (and the file watch may see it first).
    let text = std::fs::read_to_string(&live.config).unwrap();
    std::fs::write(
        &live.config,
        text.replace(
            "total_token_budget = 5000000",
            "total_token_budget = 7000000",
        ),
    )
    .unwrap();
    live.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_for(Duration::from_secs(10), || live
        .json("GET", "/api/status")["budget"]["tokens_total"]
        == 7_000_000));
    assert!(live.events("config_reloaded") >= 1);
    // An invalid change: the running config stays, the reason is logged.
    std::fs::write(
        &live.config,
        text.replace(
            "total_token_budget = 5000000",
            "total_token_budget = \"lots\"",
        ),
    )
    .unwrap();
    live.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_for(Duration::from_secs(10), || live
        .events("config_reload_rejected")
        >= 1));
    assert_eq!(
        live.json("GET", "/api/status")["budget"]["tokens_total"],
        7_000_000
    );
    assert_eq!(live.json("GET", "/api/status")["status"], "running");
    live.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(live.wait(), Some(143));
}

#[test]
fn a_taken_api_port_is_refused_before_anything_is_written() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let output = megatest()
        .arg("run")
        .arg("configs/quickstart.toml")
        .args(["--api-addr", &addr, "--runs-dir"])
        .arg(&runs)
        .output()
        .unwrap();
    assert_exit(&output, 2);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("taken") && stderr.contains("--api-addr 127.0.0.1:0"),
        "{stderr}"
    );
    assert_no_session(&runs);
    let output = megatest()
        .arg("run")
        .arg("configs/quickstart.toml")
        .args(["--api-addr", "0.0.0.0:0", "--runs-dir"])
        .arg(&runs)
        .output()
        .unwrap();
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("allow_non_loopback"));
    assert_no_session(&runs);
}

/// Wait until the live session in `session` is escalated, check that its one open escalation is
/// of `kind`, and answer it with `decision` through the control API.
pub(crate) fn answer_the_escalation(session: &std::path::Path, kind: &str, decision: &str) {
    assert!(wait_for(Duration::from_secs(60), || {
        std::fs::read_to_string(session.join("status")).is_ok_and(|s| s.trim() == "escalated")
    }));
    let read = |name: &str| {
        std::fs::read_to_string(session.join(name))
            .unwrap()
            .trim()
            .to_string()
    };
    let (addr, token) = (read("api.addr"), read("api.token"));
    let (status, body) = http(&addr, "GET", "/api/escalations", Some(&token), None);
    assert_eq!(status, 200);
    let open: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(open.as_array().unwrap().len(), 1, "{open}");
    assert_eq!(open[0]["failure_kind"], kind, "{open}");
    let id = open[0]["recovery_id"].as_i64().unwrap();
    let body = format!(r#"{{"decision": "{decision}"}}"#);
    let (status, answer) = http(
        &addr,
        "POST",
        &format!("/api/escalations/{id}/decision"),
        Some(&token),
        Some(body.as_bytes()),
    );
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn an_operator_decision_answers_an_escalation() {
    let dir = tempfile::tempdir().unwrap();
    // The first run crashes; the rule escalates; the retry (after the decision) finishes.
    let command = "if [ -e .crashed-$MEGATEST_TASK_ID ]; then exit 0; fi; touch .crashed-$MEGATEST_TASK_ID; exit 3";
    let extra = "[[error_handling.rules]]\nkind = \"agent_crash\"\nseverity = \"critical\"\naction = \"escalate\"\n\n[recovery]\nescalation_timeout_minutes = 600\n";
    let config = command_config(
        dir.path(),
        "[model]\nprovider = \"sim\"",
        command,
        &[],
        extra,
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_task_attempts = 1", "max_task_attempts = 3");
    std::fs::write(&config, text).unwrap();
    let runs = dir.path().join("runs");
    let mut child = megatest()
        .arg("run")
        .arg(&config)
        .args(["--session-id", "esc", "--time-scale", "60", "--runs-dir"])
        .arg(&runs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let session = runs.join("esc");
    answer_the_escalation(&session, "agent_crash", "continue");
    let code = child.wait().unwrap().code();
    let report = read_json(&session.join("final_report.json"));
    assert!(matches!(code, Some(0 | 1)), "{}", report["ended_because"]);
    let recoveries = report["recoveries"].as_array().unwrap();
    let escalated: Vec<&Value> = recoveries
        .iter()
        .filter(|r| r["action"] == "escalate")
        .collect();
    assert!(
        !escalated.is_empty() && escalated.iter().all(|r| r["outcome"] == "escalated"),
        "{recoveries:?}"
    );
    assert_eq!(
        scalar(
            &session,
            "SELECT COUNT(*) FROM events WHERE kind = 'escalation_decided'",
            &[]
        ),
        1
    );
    assert_eq!(report["status"], "complete");
}

#[test]
fn cli_verbs_drive_a_running_session_and_read_ended_ones() {
    let mut live = Live::start("");
    let runs = live.session.parent().unwrap().to_path_buf();
    let cli = |args: &[&str]| {
        let output = megatest()
            .args(args)
            .arg("--runs-dir")
            .arg(&runs)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // No SESSION: the most recent running one.
    let (code, out, err) = cli(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("session live  running"), "{out}");
    let (code, out, _) = cli(&["status", "live", "--json"]);
    assert_eq!(code, Some(0));
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["status"], "running");
    let (code, out, err) = cli(&["checkpoint", "live"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"sequence\": 1"), "{out}");
    assert_eq!(cli(&["pause"]).0, Some(0));
    assert_eq!(
        cli(&["pause"]).0,
        Some(1),
        "pausing a paused session is refused"
    );
    assert_eq!(cli(&["continue"]).0, Some(0));
    let (_, out, _) = cli(&["logs", "live"]);
    assert!(out.contains("session created"), "{out}");
    let (_, out, _) = cli(&["logs", "live", "--agent", "agent-1"]);
    assert!(out.contains("started"), "{out}");
    let (_, out, _) = cli(&["sessions"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("live") && l.contains("running")),
        "{out}"
    );
    // clean never touches a running session.
    let (code, _, _) = cli(&["clean", "--older-than", "0s"]);
    assert_eq!(code, Some(0));
    assert!(live.session.exists());
    let (code, _, err) = cli(&["stop"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(live.wait(), Some(143));
    // Ended: status from the files, verbs that need the API refuse.
    let (code, out, _) = cli(&["status", "live"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("interrupted") && out.contains("exit code 143"),
        "{out}"
    );
    assert_eq!(cli(&["pause", "live"]).0, Some(2));
    let (_, out, _) = cli(&["sessions", "--json"]);
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["status"], "interrupted");
    assert_eq!(rows[0]["exit_code"], 143);
    let (_, out, _) = cli(&["clean", "--older-than", "7d"]);
    assert!(out.contains("nothing older"), "{out}");
    let (_, out, _) = cli(&["clean", "--older-than", "0s", "--dry-run"]);
    assert!(out.contains("would remove"), "{out}");
    assert!(live.session.exists());
    cli(&["clean", "--older-than", "0s"]);
    assert!(!live.session.exists());
}

#[test]
fn the_sampler_fills_session_metrics_and_monitoring_keys_shape_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let command = "echo working; echo 'x = 1' > mod_$MEGATEST_TASK_ID.py; echo '{\"tool\": \"bash\"}' >> $MEGATEST_EVENTS_FILE; sleep 0.3";
    let extra = "[monitoring]\nhealth_check_interval = 1\nmetrics_export_interval = 1\nmetrics_format = \"prometheus\"\nagent_activity_logging = true\n";
    let config = command_config(
        dir.path(),
        "[model]\nprovider = \"sim\"",
        command,
        &[],
        extra,
    );
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "10"], &[]);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let session = only_session(&runs);
    let history = std::fs::read_to_string(session.join("metrics/metrics.jsonl")).unwrap();
    let samples: Vec<Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sampled = samples
        .iter()
        .find(|m| m["daemon_memory_bytes"]["value"].as_u64().is_some())
        .unwrap_or_else(|| panic!("no sample with memory: {history}"));
    assert!(sampled["daemon_memory_bytes"]["value"].as_u64().unwrap() > 1 << 20);
    let last = samples.last().unwrap();
    assert!(
        last["files_modified"]["value"].as_u64().unwrap() >= 1,
        "{last}"
    );
    assert!(
        last["agent_utilisation"]["value"].as_f64().unwrap() > 0.0,
        "{last}"
    );
    assert!(
        last["consensus_votes_cast"]["value"].is_null()
            && last["consensus_votes_cast"]["reason"].is_string()
    );
    assert!(
        last["test_coverage"]["value"].is_null() && last["test_coverage"]["reason"].is_string(),
        "{last}"
    );
    assert!(
        samples
            .iter()
            .any(|m| !m["agent_memory_bytes"].as_object().unwrap().is_empty()),
        "agent trees were measured"
    );
    let prom = std::fs::read_to_string(session.join("metrics/metrics.prom")).unwrap();
    assert!(
        prom.contains("# TYPE megatest_tokens_total counter"),
        "{prom}"
    );
    let log = std::fs::read_to_string(session.join("session.log")).unwrap();
    assert!(
        log.contains("agent activity"),
        "agent_activity_logging = true logs activity"
    );
}

#[test]
fn progress_is_bars_on_a_terminal_and_status_lines_otherwise() {
    // A real pseudo-terminal (util-linux `script`): indicatif bars.
    let dir = tempfile::tempdir().unwrap();
    let typescript = dir.path().join("typescript");
    let command = format!(
        "MEGATEST_API_ADDR=127.0.0.1:0 {} run configs/quickstart.toml --runs-dir {}",
        env!("CARGO_BIN_EXE_megatest"),
        dir.path().join("runs").display()
    );
    let status = std::process::Command::new("script")
        .args(["-qec", &command])
        .arg(&typescript)
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("util-linux script");
    assert!(status.success());
    let screen = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(
        screen.contains("phase") && screen.contains("of the budget") && screen.contains("tasks"),
        "{screen}"
    );
    assert!(
        screen.contains("\u{1b}["),
        "terminal escapes: bars redrawn in place"
    );

    // Not a terminal: plain lines every dashboard_update_interval (60 session s = 1 s here).
    let dir = tempfile::tempdir().unwrap();
    let extra = "[monitoring]\ndashboard_update_interval = 60\n";
    let config = command_config(
        dir.path(),
        "[model]\nprovider = \"sim\"",
        "sleep 1.2",
        &[],
        extra,
    );
    let output = run_session(
        &config,
        &dir.path().join("runs"),
        &["--time-scale", "60"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("megatest: [running] phase"))
        .collect();
    assert!(lines.len() >= 2, "{stderr}");
    assert!(
        lines[0].contains("tokens") && lines[0].contains("agent-1:"),
        "{}",
        lines[0]
    );
    assert!(!stderr.contains("\u{1b}[1m"), "no bars off a terminal");
}
