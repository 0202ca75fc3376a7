//! Dynamic spawning with real agent processes: agents added for a role whose work waits,
//! retired again once the board has nothing for them, and a distrusted agent replaced by a
//! fresh one of its role.

use crate::support::*;
use std::path::{Path, PathBuf};

/// A one-phase session (60 session minutes) of three command agents (Coder, Tester, Architect)
/// with `[agent].dynamic_spawning` on and at most five agents ever created. The phase lasts its
/// time box: its criterion ("All tests passing") fails and it gets no follow-up work, so agents
/// left without work idle until the time box ends. `[recovery].agent_idle_minutes = 0.5`: the
/// cross-role grace and the retirement wait are 30 session seconds.
fn spawning_config(dir: &Path, tasks: &[(&str, &str)], command: &str, agent_keys: &str) -> PathBuf {
    let spec = dir.join("spec");
    std::fs::create_dir_all(&spec).unwrap();
    let mut spec_text = String::from(
        "name = \"spawn\"\ndescription = \"spawning test\"\nlanguage = \"none\"\n[commands]\nbuild = \"true\"\ntest = \"false\"\n",
    );
    for (id, role) in tasks {
        spec_text.push_str(&format!(
            "[[tasks]]\nid = {id:?}\nphase = \"work\"\nrole = {role:?}\ntitle = {id:?}\nprompt = \"do {id}\"\n"
        ));
    }
    std::fs::write(spec.join("spec.toml"), spec_text).unwrap();
    let text = format!(
        r#"
[session]
duration_hours = 1
agent_count = 3

[agent]
concurrent_agents = 3
roles = ["Coder", "Tester", "Architect"]
max_total_agents = 5
dynamic_spawning = true
{agent_keys}

[model]
provider = "sim"

[limits]
max_test_runtime_min = 1

[recovery]
agent_idle_minutes = 0.5

[scheduling]
max_follow_up_tasks_per_phase = 0

[project]
spec_dir = {spec:?}

[[phases]]
name = "work"
duration_minutes = 60
success_criteria = ["All tests passing"]

[agents]
kind = "command"
command = {command:?}
stop_grace_secs = 0.5
max_task_attempts = 3
"#,
        spec = spec.display().to_string(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// (agent, role, reason, replaces) of each `agent_spawned` event and (agent, reason) of each
/// `agent_retired` event, in order.
type Spawned = Vec<(String, String, String, Option<String>)>;
fn spawning_events(session: &Path) -> (Spawned, Vec<(String, String)>) {
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT agent_id, json_extract(data, '$.role'), json_extract(data, '$.reason'), json_extract(data, '$.replaces')
             FROM events WHERE kind = 'agent_spawned' ORDER BY seq",
        )
        .unwrap();
    let spawned = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut stmt = db
        .prepare(
            "SELECT agent_id, json_extract(data, '$.reason') FROM events
             WHERE kind = 'agent_retired' ORDER BY seq",
        )
        .unwrap();
    let retired = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (spawned, retired)
}

#[test]
fn agents_are_added_for_waiting_work_and_retired_when_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    // Four Coder tasks for one Coder: after the grace period two more Coders start (the run
    // slots allow two), within max_total_agents = 5.
    let tasks = [
        ("c1", "Coder"),
        ("c2", "Coder"),
        ("c3", "Coder"),
        ("c4", "Coder"),
    ];
    let config = spawning_config(dir.path(), &tasks, "sleep 1", "");
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "600"], &[]);
    let session = only_session(&runs);
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(
        report["phases"][0]["ended_because"],
        "time_box",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (spawned, retired) = spawning_events(&session);
    assert_eq!(
        spawned,
        vec![
            (
                "agent-4".to_string(),
                "Coder".to_string(),
                "ready_work".to_string(),
                None
            ),
            (
                "agent-5".to_string(),
                "Coder".to_string(),
                "ready_work".to_string(),
                None
            ),
        ]
    );
    // Once the board is empty the surplus goes, newest first, down to agent_count.
    assert_eq!(retired.len(), 2, "{retired:?}");
    assert!(
        retired.iter().all(|(_, reason)| reason == "no_work"),
        "{retired:?}"
    );
    // Every Coder task ran on a Coder: the new agents took the waiting ones.
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let cross: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM events WHERE kind = 'cross_role_assignment'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(cross, 0);
    let spawned_runs: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM agent_runs WHERE agent_id IN ('agent-4', 'agent-5')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(spawned_runs >= 2, "{spawned_runs}");
    let statuses: Vec<String> = db
        .prepare("SELECT status FROM agents ORDER BY idx")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        statuses.iter().filter(|s| *s == "retired").count(),
        2,
        "{statuses:?}"
    );
    // Never more runs at once than concurrent_agents.
    let concurrency = &report["concurrency"];
    assert_eq!(concurrency["agents"], 5, "{concurrency}");
    assert_eq!(concurrency["live_agents"], 3, "{concurrency}");
    assert!(
        concurrency["peak_busy_agents"]["value"].as_u64().unwrap() <= 3,
        "{concurrency}"
    );
    assert_eq!(concurrency["spawned"]["ready_work"], 2, "{concurrency}");
    assert_eq!(concurrency["retired"]["no_work"], 2, "{concurrency}");
    let agents = report["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 5);
    assert_eq!(
        agents.iter().filter(|a| a["retired"] == "no_work").count(),
        2
    );
    // agents.toml lists the live agents only.
    let toml = std::fs::read_to_string(session.join("agents.toml")).unwrap();
    assert_eq!(toml.matches("[[agent]]").count(), 3, "{toml}");
    let tasks_done = report["tasks"]["done"].as_u64().unwrap();
    assert_eq!(tasks_done, 4);
}

#[test]
fn a_distrusted_agent_is_replaced_by_a_fresh_one_of_its_role() {
    let dir = tempfile::tempdir().unwrap();
    // agent-2 (the Tester) fails whatever it runs: one failed run puts it at 3 / 5 = 0.6,
    // the configured floor, and it is replaced by agent-4, a Tester that takes the task over.
    let tasks = [("t1", "Tester")];
    let command = "if [ \"$MEGATEST_AGENT_ID\" = agent-2 ]; then exit 1; fi; sleep 0.3";
    let config = spawning_config(dir.path(), &tasks, command, "min_trust_score = 0.6");
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "600"], &[]);
    let session = only_session(&runs);
    let report = read_json(&session.join("final_report.json"));
    assert_eq!(
        report["tasks"]["done"],
        1,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (spawned, retired) = spawning_events(&session);
    assert_eq!(
        retired,
        vec![("agent-2".to_string(), "distrusted".to_string())]
    );
    assert_eq!(
        spawned,
        vec![(
            "agent-4".to_string(),
            "Tester".to_string(),
            "distrusted".to_string(),
            Some("agent-2".to_string())
        )]
    );
    // The retired agent never ran again; its successor did.
    let db = rusqlite::Connection::open(session.join("session.db")).unwrap();
    let (retired_at,): (f64,) = db
        .query_row(
            "SELECT session_secs FROM events WHERE kind = 'agent_retired'",
            [],
            |r| Ok((r.get(0)?,)),
        )
        .unwrap();
    let later_runs: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM agent_runs WHERE agent_id = 'agent-2' AND started_session_secs > ?1",
            [retired_at],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(later_runs, 0);
    let successor_done: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM agent_runs WHERE agent_id = 'agent-4' AND outcome = 'finished'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(successor_done >= 1, "{successor_done}");
    let agents = report["agents"].as_array().unwrap();
    let old = agents.iter().find(|a| a["id"] == "agent-2").unwrap();
    assert_eq!(old["retired"], "distrusted");
    assert_eq!(old["trust_score"], 0.6);
    let toml = std::fs::read_to_string(session.join("agents.toml")).unwrap();
    assert!(
        !toml.contains("agent-2") && toml.contains("agent-4"),
        "{toml}"
    );
}
