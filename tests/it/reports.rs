//! The reports people look at: the end-of-run summary, `report.html` (rendered in headless
//! Chromium), `junit.xml` (parsed by junitparser from PyPI), the GitHub step summary, and
//! `megatest report` rebuilding them from session.db alone.

use crate::support::*;
use std::path::Path;
use std::process::Command;

/// Render `page` headless into `png`; returns Chromium's stderr (console messages included).
fn screenshot(chromium: &Path, page: &Path, png: &Path, dark: bool) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(chromium);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2400",
    ]);
    if dark {
        command.args([
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ]);
    }
    let output = command
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// (test cases, failures, skipped) of a JUnit file as junitparser reads it.
fn junit_counts(path: &Path) -> (u64, u64, u64) {
    let python = python_venv("junit-venv", &["junitparser==3.2.0"]);
    let output = Command::new(python)
        .arg("-c")
        .arg(
            "import json, sys\n\
             from junitparser import JUnitXml, Failure, Skipped\n\
             cases = failures = skipped = 0\n\
             for suite in JUnitXml.fromfile(sys.argv[1]):\n\
             \x20   for case in suite:\n\
             \x20       cases += 1\n\
             \x20       failures += sum(isinstance(r, Failure) for r in case.result)\n\
             \x20       skipped += sum(isinstance(r, Skipped) for r in case.result)\n\
             print(json.dumps([cases, failures, skipped]))\n",
        )
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_session_ends_with_a_summary_a_self_contained_page_junit_and_the_step_summary() {
    let runs = tempfile::tempdir().unwrap();
    let summary = runs.path().join("step_summary.md");
    let config = root().join("configs/quickstart.toml");
    let output = run_session(
        &config,
        &runs.path().join("runs"),
        &[],
        &[
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "selfware/megatest"),
            ("GITHUB_RUN_ID", "4242"),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let session = only_session(&runs.path().join("runs"));
    let report = read_json(&session.join("final_report.json"));
    let id = report["session_id"].as_str().unwrap();

    // The terminal: no colour codes without a TTY, no per-call lines at info, and the summary
    // block last, naming report.html.
    assert!(!stderr.contains('\u{1b}'), "ANSI codes without a TTY");
    assert!(!stderr.contains("agent activity: model call"), "{stderr}");
    let html = session.join("report.html");
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    assert!(
        tail[0].ends_with(&format!("report    {}", html.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("megatest: session {id} PASSED (exit code 0)")),
        "{stderr}"
    );
    assert!(stderr.contains("  criteria  critical "), "{stderr}");

    // report.html: self-contained, escaped, with the sections an operator looks for.
    let page = std::fs::read_to_string(&html).unwrap();
    for section in [
        "id=\"criteria\"",
        "id=\"timeline\"",
        "id=\"tokens\"",
        "id=\"tools\"",
        "id=\"acceptance\"",
        "id=\"code\"",
        "id=\"trust\"",
        "id=\"budget\"",
        "verdict ok\">passed",
    ] {
        assert!(page.contains(section), "{section} missing");
    }
    for external in ["src=", "href=\"http", "<script", "<link", "@import", "url("] {
        assert!(!page.contains(external), "report.html loads {external}");
    }
    // Trust scores were sampled over time (a line chart, not the end-only bars).
    assert!(page.contains("trust scores over time"));

    // junit.xml: what junitparser counts as failures is the report's count.
    let (cases, failures, skipped) = junit_counts(&session.join("junit.xml"));
    assert_eq!(failures, report["failures"]["total"].as_u64().unwrap());
    let criteria = report["success_criteria"].as_array().unwrap();
    let not_judged = criteria.iter().filter(|c| c["met"].is_null()).count() as u64;
    assert_eq!(skipped, not_judged);
    let checks: usize = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["checks"].as_array().unwrap().len())
        .sum();
    let acceptance = report["evaluation"]["acceptance"]["cases"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(cases as usize, checks + acceptance + criteria.len());

    // The GitHub step summary.
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with(&format!("## ✅ megatest {id}: PASSED")),
        "{md}"
    );
    assert!(md.contains("https://github.com/selfware/megatest/actions/runs/4242"));
    assert!(md.contains("| Tokens | "), "{md}");
    assert!(md.contains("### Phases"), "{md}");

    // A/B: the quickstart session against a sim session of another configuration.
    let other_dir = tempfile::tempdir().unwrap();
    let other_config = command_config(
        other_dir.path(),
        "[model]\nprovider = \"sim\"",
        "echo ok > \"out-$MEGATEST_TASK_ID\"",
        &[],
        "",
    );
    let other_runs = other_dir.path().join("runs");
    let output = run_session(&other_config, &other_runs, &["--time-scale", "600"], &[]);
    assert!(matches!(output.status.code(), Some(0 | 1)), "{output:?}");
    let other = only_session(&other_runs);
    let other_report = read_json(&other.join("final_report.json"));
    let compare = |format: &str| {
        let output = megatest()
            .args([
                "compare",
                session.to_str().unwrap(),
                other.to_str().unwrap(),
            ])
            .args(["--format", format])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&compare("json")).unwrap();
    assert_eq!(json["sessions"][0], id);
    let row = |name: &str| {
        json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["metric"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {json}"))
            .clone()
    };
    let tokens = row("tokens");
    let (a, b) = (
        report["usage"]["total_tokens"].as_f64().unwrap(),
        other_report["usage"]["total_tokens"].as_f64().unwrap(),
    );
    assert_eq!(tokens["cells"][0]["value"].as_f64(), Some(a));
    assert_eq!(tokens["cells"][1]["value"].as_f64(), Some(b));
    assert_eq!(tokens["differs"], a != b);
    let percent = ((b - a) / a * 100.0).abs().round();
    assert!(
        tokens["cells"][1]["delta"]
            .as_str()
            .is_some_and(|d| d.ends_with(&format!("{percent} %"))),
        "{tokens}"
    );
    assert_eq!(row("model")["differs"], true);
    assert_eq!(row("agents")["differs"], true);
    assert_eq!(row("project")["differs"], false);
    let table = compare("table");
    assert!(table.contains("* model"), "{table}");
    assert!(table.contains("(baseline)"), "{table}");
    assert!(compare("md").contains("| **model** |"));
    assert!(compare("html").contains("class=\"differs\""));

    // Looked at in a browser: renders, light and dark, without a console message.
    if let Some(chromium) = chromium() {
        for (name, dark) in [("light", false), ("dark", true)] {
            let png = session.join(format!("report-{name}.png"));
            let log = screenshot(&chromium, &html, &png, dark);
            let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
            assert!(size > 50_000, "{name} screenshot of {size} bytes\n{log}");
            assert!(!log.contains(":CONSOLE("), "console messages:\n{log}");
        }
    }
}

#[test]
fn megatest_report_rebuilds_every_report_from_session_db_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Each run writes its file; the sim model and the quickstart spec leave criteria unmet.
    let config = command_config(
        dir.path(),
        "[model]\nprovider = \"sim\"",
        "echo ok > \"out-$MEGATEST_TASK_ID\"",
        &[],
        "",
    );
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "600"], &[]);
    assert!(matches!(output.status.code(), Some(0 | 1)), "{output:?}");
    let session = only_session(&runs);
    let original = read_json(&session.join("final_report.json"));
    let html = std::fs::read(session.join("report.html")).unwrap();
    let junit = std::fs::read(session.join("junit.xml")).unwrap();
    for file in ["final_report.json", "report.html", "junit.xml"] {
        std::fs::remove_file(session.join(file)).unwrap();
    }
    let report = |format: &str, extra: &[&str]| {
        megatest()
            .args(["report", session.to_str().unwrap(), "--format", format])
            .args(extra)
            .output()
            .unwrap()
    };
    for format in ["json", "html", "junit", "md"] {
        let output = report(format, &[]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
    }
    assert_eq!(read_json(&session.join("final_report.json")), original);
    assert_eq!(std::fs::read(session.join("report.html")).unwrap(), html);
    assert_eq!(std::fs::read(session.join("junit.xml")).unwrap(), junit);
    let md = std::fs::read_to_string(session.join("summary.md")).unwrap();
    assert!(md.contains("### Phases"), "{md}");
    // To stdout, and to a file of the operator's choosing.
    let stdout = report("md", &["--output", "-"]);
    assert_eq!(
        String::from_utf8_lossy(&stdout.stdout).trim_end(),
        md.trim_end()
    );
    let elsewhere = dir.path().join("copy.html");
    assert_eq!(
        report("html", &["--output", elsewhere.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(std::fs::read(&elsewhere).unwrap(), html);

    // A session without a final report (it has not ended) is exit 1, a missing one exit 2.
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    db.execute("DELETE FROM final_report", []).unwrap();
    drop(db);
    std::fs::remove_file(session.join("final_report.json")).unwrap();
    let none = report("html", &[]);
    assert_eq!(none.status.code(), Some(1), "{none:?}");
    assert!(String::from_utf8_lossy(&none.stderr).contains("has no final report yet"));
    let missing = megatest()
        .args(["report", "no-such-session", "--runs-dir"])
        .arg(&runs)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
}
