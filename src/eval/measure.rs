//! Measurements of a produced project beyond pass/fail: documentation coverage and a security
//! scan. Rust sources are read with `syn` (public items with a doc comment / all public items;
//! `unsafe` blocks, functions, impls and traits); Python projects are measured with
//! `interrogate` and `bandit` from the evaluation venv. Each figure is measured or `null` with
//! the reason.

use super::acceptance::BugCounts;
use crate::figure::Figure;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use syn::visit::Visit;

/// Documentation coverage of a project's public items.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocCoverage {
    /// Documented public items / public items (0–1); null with the reason when not measured.
    pub fraction: Figure<f64>,
    /// How it was measured (the tool and what it counts).
    pub method: String,
}

/// What the security scan found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityScan {
    /// The tools that ran.
    pub method: String,
    /// `unsafe` blocks, functions, impls and traits in Rust sources (the specs forbid them;
    /// each counts as a high finding). Null for other languages.
    pub unsafe_count: Figure<u64>,
    /// Findings by severity (unsafe code and the scanners' findings); null when no scanner ran.
    pub findings: Figure<BugCounts>,
    /// Lint findings (Rust: clippy's `correctness` lints, high, and `suspicious` lints,
    /// medium); null with the reason when the linter did not run.
    pub lints: Figure<u64>,
    /// Vulnerable dependencies found by `cargo audit` against a local advisory database (each a
    /// high finding); null with the reason when it did not run.
    pub advisories: Figure<u64>,
    /// Up to 20 findings, one line each (`file:line: what`).
    pub details: Vec<String>,
}

impl SecurityScan {
    /// True when the scan ran and found nothing.
    pub fn clean(&self) -> Option<bool> {
        self.findings.value.map(|f| f.total() == 0)
    }
}

/// Rust source files of a project: every `*.rs` outside generated directories (`target/`, …).
pub fn rust_sources(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(false)
        .filter_entry(|e| {
            !crate::project::GENERATED_DIRS
                .iter()
                .any(|g| e.file_name().to_str() == Some(g))
        })
        .build();
    for entry in walker.flatten() {
        if entry.path().extension().is_some_and(|e| e == "rs") && entry.path().is_file() {
            out.push(entry.into_path());
        }
    }
    out.sort();
    out
}

/// What a syn pass over Rust sources counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RustCounts {
    /// Public items (fn, struct, enum, trait, type, const, static, mod, union, macro_rules with
    /// `#[macro_export]` excluded) and public methods of inherent impls.
    pub public_items: u64,
    /// Those with a doc comment (`///`, `//!` on modules, `#[doc = …]`).
    pub documented: u64,
    /// `unsafe` blocks, fns, impls and traits, with `file:line`.
    pub unsafe_sites: Vec<String>,
    /// Files syn could not parse (`file: error`).
    pub unparsed: Vec<String>,
}

struct Counter<'a> {
    file: &'a str,
    counts: &'a mut RustCounts,
}

fn is_pub(vis: &syn::Visibility) -> bool {
    matches!(vis, syn::Visibility::Public(_))
}

fn has_doc(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("doc"))
}

impl Counter<'_> {
    fn item(&mut self, vis: &syn::Visibility, attrs: &[syn::Attribute]) {
        if is_pub(vis) {
            self.counts.public_items += 1;
            if has_doc(attrs) {
                self.counts.documented += 1;
            }
        }
    }

    fn unsafe_at(&mut self, span: proc_macro2::Span, what: &str) {
        let line = span.start().line;
        self.counts
            .unsafe_sites
            .push(format!("{}:{line}: unsafe {what}", self.file));
    }
}

impl<'ast> Visit<'ast> for Counter<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        match item {
            syn::Item::Fn(i) => self.item(&i.vis, &i.attrs),
            syn::Item::Struct(i) => self.item(&i.vis, &i.attrs),
            syn::Item::Enum(i) => self.item(&i.vis, &i.attrs),
            syn::Item::Trait(i) => self.item(&i.vis, &i.attrs),
            syn::Item::Type(i) => self.item(&i.vis, &i.attrs),
            syn::Item::Const(i) => self.item(&i.vis, &i.attrs),
            syn::Item::Static(i) => self.item(&i.vis, &i.attrs),
            syn::Item::Mod(i) => self.item(&i.vis, &i.attrs),
            syn::Item::Union(i) => self.item(&i.vis, &i.attrs),
            _ => {}
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        if let Some(token) = &item.unsafety {
            self.unsafe_at(token.span, "impl");
        }
        if item.trait_.is_none() {
            for inner in &item.items {
                if let syn::ImplItem::Fn(f) = inner {
                    self.item(&f.vis, &f.attrs);
                }
            }
        }
        syn::visit::visit_item_impl(self, item);
    }

    fn visit_signature(&mut self, sig: &'ast syn::Signature) {
        if let Some(token) = &sig.unsafety {
            self.unsafe_at(token.span, "fn");
        }
        syn::visit::visit_signature(self, sig);
    }

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        if let Some(token) = &item.unsafety {
            self.unsafe_at(token.span, "trait");
        }
        syn::visit::visit_item_trait(self, item);
    }

    fn visit_expr_unsafe(&mut self, expr: &'ast syn::ExprUnsafe) {
        self.unsafe_at(expr.unsafe_token.span, "block");
        syn::visit::visit_expr_unsafe(self, expr);
    }
}

/// Count public items, documented ones and `unsafe` sites in Rust `source` (`file` names it in
/// the sites). A file that does not parse is recorded in `unparsed`.
pub fn count_rust(file: &str, source: &str, counts: &mut RustCounts) {
    match syn::parse_file(source) {
        Ok(parsed) => {
            let mut counter = Counter { file, counts };
            counter.visit_file(&parsed);
        }
        Err(err) => counts.unparsed.push(format!("{file}: {err}")),
    }
}

/// [`count_rust`] over every Rust source of the project at `root` (blocking).
pub fn count_rust_project(root: &Path) -> RustCounts {
    let mut counts = RustCounts::default();
    for path in rust_sources(root) {
        let name = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        match std::fs::read_to_string(&path) {
            Ok(source) => count_rust(&name, &source, &mut counts),
            Err(err) => counts.unparsed.push(format!("{name}: {err}")),
        }
    }
    counts
}

/// Documentation coverage of Rust sources from [`RustCounts`].
pub fn rust_doc_coverage(counts: &RustCounts) -> DocCoverage {
    let method = "syn: public items with a doc comment / public items (fn, struct, enum, trait, \
                  type, const, static, mod, union, inherent pub methods)"
        .to_string();
    let fraction = if counts.public_items == 0 {
        Figure::missing(if counts.unparsed.is_empty() {
            "no public Rust item found".to_string()
        } else {
            format!("no Rust source could be parsed: {}", counts.unparsed[0])
        })
    } else {
        Figure::measured(counts.documented as f64 / counts.public_items as f64)
    };
    DocCoverage { fraction, method }
}

/// interrogate's verdict line (`RESULT: PASSED (minimum: 0.0%, actual: 52.4%)`) → 0.524.
pub fn parse_interrogate(output: &str) -> Option<f64> {
    let at = output.rfind("actual:")?;
    let number: String = output[at + "actual:".len()..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = number.parse().ok()?;
    (0.0..=100.0).contains(&value).then_some(value / 100.0)
}

/// bandit's JSON report → findings by severity (HIGH → high, MEDIUM → medium, LOW → medium;
/// bandit has no critical) and one line per finding.
pub fn parse_bandit(json: &str) -> Option<(BugCounts, Vec<String>)> {
    let doc: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut counts = BugCounts::default();
    let mut details = Vec::new();
    for result in doc.get("results")?.as_array()? {
        match result.get("issue_severity").and_then(|s| s.as_str()) {
            Some("HIGH") => counts.high += 1,
            _ => counts.medium += 1,
        }
        details.push(format!(
            "{}:{}: {} ({})",
            result["filename"].as_str().unwrap_or("?"),
            result["line_number"].as_u64().unwrap_or(0),
            result["issue_text"].as_str().unwrap_or("?"),
            result["test_id"].as_str().unwrap_or("?"),
        ));
    }
    Some((counts, details))
}

/// tarpaulin's summary (`72.34% coverage, 123/170 lines covered`) → 0.7234.
pub fn parse_tarpaulin(output: &str) -> Option<f64> {
    let line = output.lines().rev().find(|l| l.contains("% coverage"))?;
    let number: String = line
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let value: f64 = number.parse().ok()?;
    (0.0..=100.0).contains(&value).then_some(value / 100.0)
}

/// Clippy lint → its group (`correctness` or `suspicious`), from the listing `clippy-driver -W
/// help` prints (one line per group: `clippy::correctness  clippy::approx-constant, …`). Names
/// use underscores, as diagnostics do.
pub fn parse_lint_groups(help: &str) -> HashMap<String, &'static str> {
    let mut out = HashMap::new();
    for line in help.lines() {
        let mut words = line.split_whitespace();
        let group = match words.next() {
            Some("clippy::correctness") => "correctness",
            Some("clippy::suspicious") => "suspicious",
            _ => continue,
        };
        for lint in words {
            let lint = lint.trim_end_matches(',');
            if lint.starts_with("clippy::") {
                out.insert(lint.replace('-', "_"), group);
            }
        }
    }
    out
}

/// clippy's JSON diagnostics (`cargo clippy --message-format=json`, one JSON object per line)
/// → findings: a `correctness` lint is a high finding, a `suspicious` one (or a clippy lint of
/// unknown group) medium; rustc's own warnings are not findings. One finding per (lint, file,
/// line): `--all-targets` reports a lint once per target. Returns the counts and one line per
/// finding (`file:line: message (lint)`).
pub fn parse_clippy(
    json_lines: &str,
    groups: &HashMap<String, &'static str>,
) -> (BugCounts, Vec<String>) {
    let mut counts = BugCounts::default();
    let mut details = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in json_lines.lines() {
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if doc["reason"] != "compiler-message" {
            continue;
        }
        let message = &doc["message"];
        let Some(lint) = message["code"]["code"]
            .as_str()
            .filter(|c| c.starts_with("clippy::"))
        else {
            continue;
        };
        let span = message["spans"]
            .as_array()
            .and_then(|spans| spans.iter().find(|s| s["is_primary"] == true));
        let file = span.and_then(|s| s["file_name"].as_str()).unwrap_or("?");
        let line_no = span.and_then(|s| s["line_start"].as_u64()).unwrap_or(0);
        if !seen.insert((lint.to_string(), file.to_string(), line_no)) {
            continue;
        }
        match groups.get(lint) {
            Some(&"correctness") => counts.high += 1,
            _ => counts.medium += 1,
        }
        details.push(format!(
            "{file}:{line_no}: {} ({lint})",
            message["message"].as_str().unwrap_or("?")
        ));
    }
    (counts, details)
}

/// `cargo audit --json` → the number of vulnerable dependencies and one line each
/// (`RUSTSEC-…: package version: title`). None when the output is not cargo-audit's report.
pub fn parse_cargo_audit(json: &str) -> Option<(u64, Vec<String>)> {
    let doc: serde_json::Value = serde_json::from_str(json).ok()?;
    let list = doc.get("vulnerabilities")?.get("list")?.as_array()?;
    let details = list
        .iter()
        .map(|v| {
            format!(
                "{}: {} {}: {}",
                v["advisory"]["id"].as_str().unwrap_or("?"),
                v["package"]["name"].as_str().unwrap_or("?"),
                v["package"]["version"].as_str().unwrap_or("?"),
                v["advisory"]["title"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    Some((list.len() as u64, details))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_items_docs_and_unsafe_are_counted() {
        let source = r#"
//! crate docs
/// documented
pub fn a() {}
pub fn b() { unsafe { core::hint::unreachable_unchecked() } }
fn private() {}
/// doc
pub struct S;
impl S {
    /// doc
    pub fn m(&self) {}
    pub unsafe fn n(&self) {}
    fn hidden(&self) {}
}
unsafe impl Send for S {}
pub(crate) fn crate_only() {}
"#;
        let mut counts = RustCounts::default();
        count_rust("src/lib.rs", source, &mut counts);
        assert_eq!((counts.public_items, counts.documented), (5, 3));
        assert_eq!(counts.unsafe_sites.len(), 3, "{:?}", counts.unsafe_sites);
        assert!(counts.unsafe_sites[0].starts_with("src/lib.rs:5: unsafe block"));
        let coverage = rust_doc_coverage(&counts);
        assert_eq!(coverage.fraction.value, Some(0.6));
        count_rust("src/bad.rs", "fn (", &mut counts);
        assert_eq!(counts.unparsed.len(), 1);
    }

    #[test]
    fn tool_outputs_parse() {
        assert_eq!(
            parse_interrogate("... RESULT: PASSED (minimum: 0.0%, actual: 52.4%) ---"),
            Some(0.524)
        );
        assert_eq!(parse_interrogate("no result"), None);
        assert_eq!(
            parse_tarpaulin("|| src/a.rs: 3/4\n72.50% coverage, 123/170 lines covered\n"),
            Some(0.725)
        );
        let bandit = r#"{"results": [{"filename": "a.py", "line_number": 3, "issue_severity": "HIGH", "issue_text": "shell=True", "test_id": "B602"},
                                      {"filename": "b.py", "line_number": 9, "issue_severity": "LOW", "issue_text": "assert", "test_id": "B101"}]}"#;
        let (counts, details) = parse_bandit(bandit).unwrap();
        assert_eq!((counts.high, counts.medium), (1, 1));
        assert_eq!(details[0], "a.py:3: shell=True (B602)");
        assert!(parse_bandit("not json").is_none());
    }

    #[test]
    fn clippy_lints_are_grouped_and_deduplicated() {
        let help = "    clippy::correctness  clippy::approx-constant, clippy::absurd-extreme-comparisons\n\
                    clippy::suspicious  clippy::suspicious-assignment-formatting\n\
                    clippy::pedantic  clippy::needless-pass-by-value\n";
        let groups = parse_lint_groups(help);
        assert_eq!(groups["clippy::approx_constant"], "correctness");
        assert_eq!(
            groups["clippy::suspicious_assignment_formatting"],
            "suspicious"
        );
        assert!(!groups.contains_key("clippy::needless_pass_by_value"));
        let message = |code: &str, line: u64| {
            serde_json::json!({"reason": "compiler-message", "message": {
                "code": {"code": code}, "level": "warning", "message": "m",
                "spans": [{"file_name": "src/main.rs", "line_start": line, "is_primary": true}]}})
            .to_string()
        };
        let output = [
            message("clippy::approx_constant", 2),
            message("clippy::approx_constant", 2),
            message("clippy::suspicious_assignment_formatting", 5),
            message("unused_assignments", 4),
            r#"{"reason": "build-finished", "success": true}"#.to_string(),
            "not json".to_string(),
        ]
        .join("\n");
        let (counts, details) = parse_clippy(&output, &groups);
        assert_eq!((counts.critical, counts.high, counts.medium), (0, 1, 1));
        assert_eq!(details[0], "src/main.rs:2: m (clippy::approx_constant)");
    }

    #[test]
    fn cargo_audit_reports_parse() {
        let report = r#"{"database": {}, "vulnerabilities": {"found": true, "count": 1, "list": [
            {"advisory": {"id": "RUSTSEC-2020-0071", "title": "Potential segfault in the time crate"},
             "package": {"name": "time", "version": "0.1.45"}}]}, "warnings": {}}"#;
        let (count, details) = parse_cargo_audit(report).unwrap();
        assert_eq!(count, 1);
        assert_eq!(
            details[0],
            "RUSTSEC-2020-0071: time 0.1.45: Potential segfault in the time crate"
        );
        assert!(parse_cargo_audit("{}").is_none());
    }
}
