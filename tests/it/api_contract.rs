//! The control API and its OpenAPI document agree: schemathesis (PyPI) against the live API
//! finds no server error and no schema violation, and the disagreements it once found stay
//! fixed (issue 11, defect 11).

use crate::control::{http, Live};
use crate::support::*;
use std::io::{Read, Write};
use std::time::Duration;

/// The status code of `GET /api/events` with `Last-Event-ID: value` (the status line only:
/// a stream that was accepted stays open).
fn events_status(live: &Live, value: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(&live.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nLast-Event-ID: {value}\r\n\r\n",
        live.token
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

#[test]
fn api_contract_disagreements_found_by_schemathesis_stay_fixed() {
    let live = Live::start("");
    // Last-Event-ID: the schema says 0 ..= i64::MAX.
    assert_eq!(events_status(&live, "-1"), 400);
    assert_eq!(events_status(&live, "9223372036854775807"), 200);
    assert_eq!(events_status(&live, "9223372036854775808"), 400);
    let doc: serde_json::Value =
        serde_json::from_str(&live.call("GET", "/api/openapi.json", None, None).1).unwrap();
    let header = &doc["paths"]["/api/events"]["get"]["parameters"][0]["schema"];
    assert_eq!(header["minimum"], 0);
    assert_eq!(header["maximum"], i64::MAX);
    // A large escalation id is in range: not found, not a bad request.
    let (status, body) = live.call(
        "POST",
        "/api/escalations/9223372036854775807/decision",
        Some(&live.token),
        Some(br#"{"decision": "continue"}"#),
    );
    assert_eq!(status, 404, "{body}");
    // The events body is required.
    let key = live.agent_key();
    let (status, body) = live.call("POST", "/api/agent/events", Some(&key), None);
    assert_eq!(status, 400, "{body}");
    let (status, body) = live.call("POST", "/api/agent/events", Some(&key), Some(b"[[null]]"));
    assert_eq!(status, 400, "{body}");
    // An empty note: the schema says at least one non-blank character, and so does the server.
    let note = &doc["paths"]["/api/agent/notes"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["properties"]["text"];
    assert_eq!(note["minLength"], 1);
    let (status, body) = live.call(
        "POST",
        "/api/agent/notes",
        Some(&key),
        Some(br#"{"text": ""}"#),
    );
    assert_eq!(status, 400, "{body}");
    // maxLength counts characters: 16,384 three-byte characters are one allowed note.
    let long = format!(r#"{{"text": "{}"}}"#, "€".repeat(16_384));
    let (status, body) = live.call(
        "POST",
        "/api/agent/notes",
        Some(&key),
        Some(long.as_bytes()),
    );
    assert_eq!(status, 200, "{body}");
}

/// `st run` against the live API with `auth`, limited to `selection`; panics with its report
/// unless it found nothing.
fn schemathesis(live: &Live, auth: &str, selection: &[&str]) {
    let venv = python_venv("schemathesis-venv", &["schemathesis==4.32.5"]);
    let st = venv.parent().unwrap().join("st");
    let output = std::process::Command::new(st)
        .arg("run")
        .arg(format!("http://{}/api/openapi.json", live.addr))
        .args(["-H", &format!("Authorization: Bearer {auth}")])
        .args(selection)
        .args([
            "-n",
            "25",
            "--generation-deterministic",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}

#[test]
fn api_contract_schemathesis_finds_no_server_error_and_no_schema_violation() {
    let live = Live::start("");
    // Operator routes: all but the stop (it would end the session under test) and the event
    // stream (it never ends; its header is covered above).
    schemathesis(
        &live,
        &live.token,
        &[
            "--exclude-path",
            "/api/stop",
            "--exclude-path",
            "/api/events",
            "--exclude-path-regex",
            "^/api/agent/",
        ],
    );
    // Agent routes, with an agent's key.
    schemathesis(
        &live,
        &live.agent_key(),
        &["--include-path-regex", "^/api/agent/"],
    );
    // The session is still up and answers.
    let (status, _) = http(&live.addr, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
}

#[test]
fn notes_are_kept_in_the_checkpoints_working_memory() {
    let live = Live::start("");
    let key = live.agent_key();
    let (status, body) = live.call(
        "POST",
        "/api/agent/notes",
        Some(&key),
        Some(br#"{"text": "the queue needs a lease table"}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = live.call("POST", "/api/checkpoint", Some(&live.token), None);
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let path = live.session.join(reply["path"].as_str().unwrap());
    let checkpoint = read_json(&path);
    let memory = checkpoint["working_memory"]["notes"].as_object().unwrap();
    let notes: Vec<&str> = memory
        .values()
        .flat_map(|v| v.as_array().unwrap())
        .map(|n| n["text"].as_str().unwrap())
        .collect();
    assert_eq!(notes, ["the queue needs a lease table"], "{checkpoint}");
    let handoff: usize = checkpoint["agent_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["handoff_notes"].as_array().unwrap().len())
        .sum();
    assert_eq!(handoff, 1);
}
