//! Task-level confirmation with real processes: without reviews, an agent's exit code 0 is a
//! claim that the task's check (its own `check`, else the spec's build) confirms or refutes.

use crate::recovery::{mini_config, SIM};
use crate::support::*;

#[test]
fn a_finished_task_is_done_only_when_its_check_confirms_it() {
    let dir = tempfile::tempdir().unwrap();
    // Agents always exit 0. `lazy` does its work only on its second attempt; `liar` never.
    let command = r#"n=$(cat ".count-$MEGATEST_TASK_ID" 2>/dev/null || echo 0)
echo $((n + 1)) > ".count-$MEGATEST_TASK_ID"
case "$MEGATEST_TASK_ID" in
  good) touch good.txt;;
  lazy) [ "$n" -ge 1 ] && touch lazy.txt;;
esac
exit 0"#;
    let config = mini_config(
        dir.path(),
        &[],
        2,
        command,
        "",
        &format!("{SIM}\n[scheduling]\nphase_end = \"tasks_done\"\n"),
    );
    // The spec: three tasks with their own checks, one confirmed by the build.
    let spec = "name = \"checks\"\ndescription = \"task checks\"\nlanguage = \"none\"\n\
        [commands]\nbuild = \"test -f good.txt\"\ntest = \"true\"\n\
        [[tasks]]\nid = \"good\"\nphase = \"work\"\nrole = \"Coder\"\ntitle = \"good\"\nprompt = \"p\"\n\
        [[tasks]]\nid = \"lazy\"\nphase = \"work\"\nrole = \"Coder\"\ntitle = \"lazy\"\nprompt = \"p\"\ncheck = \"test -f lazy.txt || { echo 'lazy.txt is missing'; exit 1; }\"\n\
        [[tasks]]\nid = \"liar\"\nphase = \"work\"\nrole = \"Coder\"\ntitle = \"liar\"\nprompt = \"p\"\ncheck = \"echo 'liar: nothing was built'; exit 1\"\n\
        [[tasks]]\nid = \"after-good\"\nphase = \"work\"\nrole = \"Coder\"\ntitle = \"after\"\nprompt = \"p\"\nafter = [\"good\"]\n";
    std::fs::write(dir.path().join("spec/spec.toml"), spec).unwrap();
    let runs = dir.path().join("runs");
    let output = run_session(&config, &runs, &["--time-scale", "60"], &[]);
    let session = only_session(&runs);
    let report = read_json(&session.join("final_report.json"));
    let task = |id: &str| {
        report["task_list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id}: {}", String::from_utf8_lossy(&output.stderr)))
    };
    assert_eq!(task("good")["state"], "done");
    assert_eq!(task("good")["attempts"], 1);
    assert_eq!(task("after-good")["state"], "done");
    let lazy = task("lazy");
    assert_eq!(lazy["state"], "done", "{lazy}");
    assert_eq!(lazy["attempts"], 2, "{lazy}");
    let liar = task("liar");
    assert_eq!(liar["state"], "failed", "{liar}");
    assert_eq!(liar["attempts"], 3, "{liar}");
    assert!(
        liar["last_error"]
            .as_str()
            .unwrap()
            .contains("liar: nothing was built"),
        "{liar}"
    );
    // One task_checked event per finished run: good 1, after-good 1, lazy 2, liar 3.
    let checked = |id: &str, passed: bool| {
        scalar(
            &session,
            "SELECT COUNT(*) FROM events WHERE kind = 'task_checked' AND task_id = ?1
             AND json_extract(data, '$.passed') = CAST(?2 AS INTEGER)",
            &[id, if passed { "1" } else { "0" }],
        )
    };
    assert_eq!((checked("good", true), checked("good", false)), (1, 0));
    assert_eq!(
        (checked("after-good", true), checked("after-good", false)),
        (1, 0)
    );
    assert_eq!((checked("lazy", true), checked("lazy", false)), (1, 1));
    assert_eq!((checked("liar", true), checked("liar", false)), (0, 3));
    // The second attempt of `lazy` was told why the first was not accepted.
    let prompts: String = ["agent-1", "agent-2"]
        .iter()
        .filter_map(|a| {
            std::fs::read_to_string(session.join(format!("agents/{a}/prompts/lazy.2.md"))).ok()
        })
        .collect();
    assert!(prompts.contains("lazy.txt is missing"), "{prompts}");
    // Refuted claims count against the agents' trust; tasks done counts confirmed work only.
    let agents = report["agents"].as_array().unwrap();
    let refuted: u64 = agents
        .iter()
        .map(|a| a["trust_record"]["checks_failed"].as_u64().unwrap())
        .sum();
    assert_eq!(refuted, 4);
    let done: u64 = agents
        .iter()
        .map(|a| a["tasks_done"].as_u64().unwrap())
        .sum();
    assert_eq!(done, 3);
    let confirmation = &report["task_confirmation"];
    assert_eq!(confirmation["by"], "task_check");
    assert_eq!(confirmation["checks_passed"], 3);
    assert_eq!(confirmation["checks_failed"], 4);
}
