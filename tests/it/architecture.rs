//! Architecture invariants, checked on the source text (in the style of rust-analyzer's tidy
//! tests): each test names the invariant ARCHITECTURE.md states and fails when a change breaks
//! it.

use crate::support::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its path relative to the repository root and its text.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.strip_prefix(root()).unwrap().display().to_string();
            (name, text)
        })
        .collect()
}

/// The text of a file without its `#[cfg(test)]` module (unit tests may do what code may not).
fn code_part(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// `(file, line number, line)` of each line of code (comments skipped) containing `needle`.
fn occurrences(needle: &str) -> Vec<(String, usize, String)> {
    let mut found = Vec::new();
    for (name, text) in sources() {
        for (i, line) in code_part(&text).lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if line.contains(needle) {
                found.push((name.clone(), i + 1, line.trim().to_string()));
            }
        }
    }
    found
}

#[test]
fn architecture_only_store_knows_rusqlite() {
    let outside: Vec<_> = occurrences("rusqlite")
        .into_iter()
        .filter(|(name, _, _)| !name.starts_with("src/store/"))
        .collect();
    assert!(
        outside.is_empty(),
        "rusqlite named outside src/store/: {outside:#?}"
    );
}

#[test]
fn architecture_only_the_ecs_backend_knows_aws_sdk_types() {
    let outside: Vec<_> = [
        "aws_sdk_",
        "aws_config",
        "aws_smithy",
        "aws_credential_types",
    ]
    .iter()
    .flat_map(|needle| occurrences(needle))
    .filter(|(name, _, _)| !name.starts_with("src/backend/ecs/"))
    .collect();
    assert!(
        outside.is_empty(),
        "AWS SDK types named outside src/backend/ecs/: {outside:#?}"
    );
}

#[test]
fn architecture_cli_is_only_used_by_cli_and_main() {
    let outside: Vec<_> = occurrences("crate::cli")
        .into_iter()
        .filter(|(name, _, _)| !name.starts_with("src/cli/") && name != "src/main.rs")
        .collect();
    assert!(
        outside.is_empty(),
        "crate::cli used outside cli/: {outside:#?}"
    );
}

#[test]
fn architecture_only_the_backend_signals_processes() {
    let mut outside = Vec::new();
    for needle in [
        "killpg(",
        "signal::kill(",
        "Signal::SIGSTOP",
        "Signal::SIGKILL",
        "Signal::SIGCONT",
        "Signal::SIGTERM",
    ] {
        outside.extend(
            occurrences(needle)
                .into_iter()
                .filter(|(name, _, _)| !name.starts_with("src/backend/")),
        );
    }
    assert!(
        outside.is_empty(),
        "signals sent outside src/backend/: {outside:#?}"
    );
}

#[test]
fn architecture_the_session_reaches_agents_only_through_the_backend_traits() {
    // The session holds `AgentGroup` handles from an `AgentBackend`; only the composition root
    // (daemon/) picks the local backend's process-level sweeps, and `prepare` its default.
    let outside: Vec<_> = occurrences("backend::local")
        .into_iter()
        .filter(|(name, _, line)| {
            !name.starts_with("src/backend/")
                && !name.starts_with("src/daemon/")
                && !name.starts_with("src/eval/")
                && !line.contains("LocalBackend")
        })
        .collect();
    assert!(
        outside.is_empty(),
        "the local backend named outside backend/, daemon/ and eval/: {outside:#?}"
    );
}

#[test]
fn architecture_anyhow_only_at_the_edges() {
    // Library modules return typed errors with predicates; the CLI, the composition root, the
    // session (which routes every failure to the recovery table) and the reference agent's
    // program are the edges that may erase them.
    let edges = [
        "src/cli/",
        "src/daemon/",
        "src/session/",
        "src/agent/reference.rs",
    ];
    let outside: Vec<_> = occurrences("anyhow")
        .into_iter()
        .filter(|(name, _, _)| !edges.iter().any(|edge| name.starts_with(edge)))
        .collect();
    assert!(
        outside.is_empty(),
        "anyhow in a library module (give it a typed error): {outside:#?}"
    );
}

#[test]
fn architecture_no_output_that_can_panic_in_the_daemon() {
    // `println!`/`eprintln!` panic on a closed pipe; the daemon writes through `console`.
    let mut found = Vec::new();
    for needle in ["println!(", "print!("] {
        found.extend(occurrences(needle).into_iter().filter(|(name, _, _)| {
            !name.starts_with("src/cli/")
                && name != "src/main.rs"
                && name != "src/agent/reference.rs" // the reference agent's own process
                && name != "src/console.rs"
        }));
    }
    assert!(
        found.is_empty(),
        "panicking prints in the daemon: {found:#?}"
    );
}

/// The top-level module a file belongs to (`src/session/mod.rs` → `session`).
fn module_of(name: &str) -> String {
    let rest = name.trim_start_matches("src/");
    rest.split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string()
}

#[test]
fn architecture_top_level_modules_have_no_import_cycles() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let re = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let sources = sources();
    let modules: BTreeSet<String> = sources.iter().map(|(n, _)| module_of(n)).collect();
    for (name, text) in &sources {
        let from = module_of(name);
        // Doc comments link to other modules; only code imports count.
        let code = code_part(text)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            for cap in re.captures_iter(line) {
                let to = cap[1].to_string();
                if to != from && modules.contains(&to) {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = path.iter().position(|p| p == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(next, edges, state, path) {
                        return Some(cycle);
                    }
                }
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for module in &modules {
        if !state.contains_key(module.as_str()) {
            if let Some(cycle) = visit(module, &edges, &mut state, &mut Vec::new()) {
                panic!("module import cycle: {}", cycle.join(" → "));
            }
        }
    }
}

/// The size past which a source file is a sign of mixed responsibilities.
const MAX_LINES: usize = 800;

#[test]
fn architecture_no_source_file_grows_past_the_size_line() {
    let mut over = Vec::new();
    for (name, text) in sources() {
        let lines = text.lines().count();
        if lines > MAX_LINES {
            over.push(format!("{name}: {lines} lines (limit {MAX_LINES})"));
        }
    }
    assert!(over.is_empty(), "split these files: {over:#?}");
}
