//! The recovery table: failure kinds, severities, rules and the actions they choose.
//!
//! Every failure megatest detects is a [`FailureKind`] plus a message. [`RecoveryTable::decide`]
//! picks the rule for it:
//!
//! - `[error_handling] classification = "auto"` (the default): the seed's table
//!   ([`default_rule`]), plus any `[[error_handling.rules]]` that name a `kind` (megatest's own
//!   syntax), which take precedence over the default for that kind.
//! - `classification = "manual"`: the `[[error_handling.rules]]` in file order; a rule matches
//!   when its `kind` equals the failure's kind, or its `pattern` (a regex, case-insensitive)
//!   matches `"<kind>: <message>"` (so the upstream file's `rate.?limit` matches `rate_limit:
//!   HTTP 429`). A failure no manual rule matches falls back to the seed's default for its kind,
//!   and the report names the rule that was used either way.
//!
//! `[checkpoint] auto_recovery = false` turns every session-level action into `escalate` (the
//! proxy still retries within a call). Where the actions run: retries, backoff, model switches and
//! corrective notes inside the proxy ([`crate::proxy`]); everything else in the session
//! ([`crate::session`]).

pub mod plan;

use serde::{Deserialize, Serialize};

/// How waits between retries grow (`[checkpoint].backoff_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffStrategy {
    /// Always `backoff_initial_seconds`.
    Fixed,
    /// `initial × (n + 1)` for the n-th retry (0-based).
    Linear,
    /// `initial × 2^n` for the n-th retry (0-based).
    Exponential,
}

/// `[error_handling].classification`: whose rules decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    /// The seed's table, with `kind` rules taking precedence per kind.
    Auto,
    /// The file's rules in order; the seed's table only where none matches.
    Manual,
}

/// Severity levels of the seed's recovery table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Passes by itself (a timeout).
    Transient,
    /// Fixed by an action (a crash, a rate limit).
    Recoverable,
    /// The session goes on with less (a failing test).
    Degraded,
    /// Needs the session held or a human (a full disk).
    Critical,
    /// The state cannot be trusted (corruption).
    Fatal,
}

/// Recovery actions of the seed's recovery table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryAction {
    /// Retry the call at once (up to [`IMMEDIATE_RETRIES`]), then with backoff.
    RetryImmediate,
    /// Retry the call after a backoff wait (honouring `Retry-After`).
    RetryWithBackoff,
    /// Retry the call with the next model of `[model].fallbacks`.
    SwitchModel,
    /// Retry with a corrective note added to the prompt.
    RetryWithModification,
    /// Restart the agent's task with a fresh, shorter context.
    CompressAndRetry,
    /// Stop the run and give the task to another agent.
    Reassign,
    /// Start the agent again on its task.
    RestartAgent,
    /// Freeze the agents, hold calls, alert; continue when the cause is gone.
    PauseAndAlert,
    /// Wait for an operator's decision (`continue` or `stop`) until the escalation timeout.
    Escalate,
    /// Roll back to the last valid checkpoint and resume.
    RestoreCheckpoint,
    /// End the session (status `failed`).
    StopSession,
    /// Record it and go on.
    LogAndContinue,
}

/// One `[[error_handling.rules]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// Regular expression (case-insensitive) matched against `"<failure_kind>: <message>"`.
    pub pattern: Option<String>,
    /// megatest's own syntax: match by failure kind (with `pattern`, both must match).
    pub kind: Option<FailureKind>,
    /// The severity it assigns.
    pub severity: Severity,
    /// The action it chooses.
    pub action: RecoveryAction,
}

/// `[error_handling]`: the recovery table's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorHandling {
    /// Failures in a row (no success between) before the session pauses and alerts.
    pub max_consecutive_errors: u32,
    /// Whose rules decide.
    pub classification: Classification,
    /// `[[error_handling.rules]]` in file order.
    pub rules: Vec<ErrorRule>,
}

impl Default for ErrorHandling {
    fn default() -> Self {
        ErrorHandling {
            max_consecutive_errors: 5,
            classification: Classification::Auto,
            rules: Vec::new(),
        }
    }
}

/// What went wrong, as the seed's recovery table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The upstream did not answer in time, or the connection failed.
    NetworkTimeout,
    /// HTTP 429.
    RateLimit,
    /// HTTP 5xx or another upstream error.
    LlmError,
    /// HTTP 401/403 from the upstream.
    AuthError,
    /// An answer (or an agent's report) that is not the JSON it should be.
    ParseFailure,
    /// A prompt over `[limits].max_context_size` or refused by the upstream as too long.
    ContextOverflow,
    /// An agent run that failed or could not start.
    AgentCrash,
    /// An agent idle past `[recovery].agent_idle_minutes`.
    AgentHang,
    /// A phase check that failed.
    TestFailure,
    /// The runs filesystem (or the checkpoint store) is full.
    DiskFull,
    /// The OS refused a write.
    PermissionDenied,
    /// The OOM killer or memory pressure.
    OutOfMemory,
    /// A checkpoint that does not verify.
    DataCorruption,
    /// Votes that cannot decide (swarm work).
    ConsensusDeadlock,
    /// A phase check over `[limits].max_test_runtime_min`.
    TestRuntimeExceeded,
}

impl FailureKind {
    /// Every kind, in the order of the seed's table.
    pub const ALL: [FailureKind; 15] = [
        FailureKind::NetworkTimeout,
        FailureKind::RateLimit,
        FailureKind::LlmError,
        FailureKind::AuthError,
        FailureKind::ParseFailure,
        FailureKind::ContextOverflow,
        FailureKind::AgentCrash,
        FailureKind::AgentHang,
        FailureKind::TestFailure,
        FailureKind::DiskFull,
        FailureKind::PermissionDenied,
        FailureKind::OutOfMemory,
        FailureKind::DataCorruption,
        FailureKind::ConsensusDeadlock,
        FailureKind::TestRuntimeExceeded,
    ];

    /// The snake_case name used in configs, events and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::NetworkTimeout => "network_timeout",
            FailureKind::RateLimit => "rate_limit",
            FailureKind::LlmError => "llm_error",
            FailureKind::AuthError => "auth_error",
            FailureKind::ParseFailure => "parse_failure",
            FailureKind::ContextOverflow => "context_overflow",
            FailureKind::AgentCrash => "agent_crash",
            FailureKind::AgentHang => "agent_hang",
            FailureKind::TestFailure => "test_failure",
            FailureKind::DiskFull => "disk_full",
            FailureKind::PermissionDenied => "permission_denied",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::DataCorruption => "data_corruption",
            FailureKind::ConsensusDeadlock => "consensus_deadlock",
            FailureKind::TestRuntimeExceeded => "test_runtime_exceeded",
        }
    }

    /// The kind named `text` (snake_case), if any.
    pub fn parse(text: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Failures the proxy detects and handles within the call (retries, model switches).
    pub fn is_proxy_kind(self) -> bool {
        matches!(
            self,
            FailureKind::NetworkTimeout
                | FailureKind::RateLimit
                | FailureKind::LlmError
                | FailureKind::AuthError
                | FailureKind::ParseFailure
                | FailureKind::ContextOverflow
        )
    }
}

/// The snake_case name of `severity`.
pub fn severity_str(severity: Severity) -> &'static str {
    match severity {
        Severity::Transient => "transient",
        Severity::Recoverable => "recoverable",
        Severity::Degraded => "degraded",
        Severity::Critical => "critical",
        Severity::Fatal => "fatal",
    }
}

/// The snake_case name of `action`.
pub fn action_str(action: RecoveryAction) -> &'static str {
    match action {
        RecoveryAction::RetryImmediate => "retry_immediate",
        RecoveryAction::RetryWithBackoff => "retry_with_backoff",
        RecoveryAction::SwitchModel => "switch_model",
        RecoveryAction::RetryWithModification => "retry_with_modification",
        RecoveryAction::CompressAndRetry => "compress_and_retry",
        RecoveryAction::Reassign => "reassign",
        RecoveryAction::RestartAgent => "restart_agent",
        RecoveryAction::PauseAndAlert => "pause_and_alert",
        RecoveryAction::Escalate => "escalate",
        RecoveryAction::RestoreCheckpoint => "restore_checkpoint",
        RecoveryAction::StopSession => "stop_session",
        RecoveryAction::LogAndContinue => "log_and_continue",
    }
}

/// The seed's recovery table (DESIGN.md / the issue): severity and action per failure kind.
/// Kinds the seed leaves out get the nearest seed row: `llm_error` is handled like a rate limit
/// (backoff, then another model), `auth_error` escalates (no retry fixes a wrong key),
/// `permission_denied` pauses like a full disk (the upstream file's manual rule), and
/// `test_runtime_exceeded` is degraded like a test failure.
pub fn default_rule(kind: FailureKind) -> (Severity, RecoveryAction) {
    use RecoveryAction as A;
    use Severity as S;
    match kind {
        // "network timeout — transient, retry 3×, then backoff": the proxy retries at once up to
        // IMMEDIATE_RETRIES times, then with backoff.
        FailureKind::NetworkTimeout => (S::Transient, A::RetryImmediate),
        // "rate limit — recoverable, wait, retry, switch model".
        FailureKind::RateLimit => (S::Recoverable, A::RetryWithBackoff),
        FailureKind::LlmError => (S::Recoverable, A::RetryWithBackoff),
        FailureKind::AuthError => (S::Critical, A::Escalate),
        // "parse failure — retry with a modified prompt".
        FailureKind::ParseFailure => (S::Recoverable, A::RetryWithModification),
        // "memory pressure — compress and retry" (context and process memory alike).
        FailureKind::ContextOverflow => (S::Recoverable, A::CompressAndRetry),
        FailureKind::OutOfMemory => (S::Critical, A::CompressAndRetry),
        // "agent crash — restart the agent on its task".
        FailureKind::AgentCrash => (S::Recoverable, A::RestartAgent),
        // "idle — reassign the task".
        FailureKind::AgentHang => (S::Recoverable, A::Reassign),
        // "test failure — degraded, log, continue, flag".
        FailureKind::TestFailure => (S::Degraded, A::LogAndContinue),
        FailureKind::TestRuntimeExceeded => (S::Degraded, A::LogAndContinue),
        // "disk full — critical, pause, alert, clean up".
        FailureKind::DiskFull => (S::Critical, A::PauseAndAlert),
        FailureKind::PermissionDenied => (S::Critical, A::PauseAndAlert),
        // "data corruption — fatal, stop, restore checkpoint".
        FailureKind::DataCorruption => (S::Fatal, A::RestoreCheckpoint),
        // "consensus deadlock — critical, escalate to a human".
        FailureKind::ConsensusDeadlock => (S::Critical, A::Escalate),
    }
}

/// Immediate retries before backing off, for `retry_immediate` (the seed's "retry 3×").
pub const IMMEDIATE_RETRIES: u32 = 3;

/// The rule chosen for one failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Which rule matched: `default:<kind>` or `error_handling.rules[<i>]`.
    pub rule: String,
    /// The severity it assigned.
    pub severity: Severity,
    /// The action it chose.
    pub action: RecoveryAction,
}

#[derive(Debug, Clone)]
struct Rule {
    kind: Option<FailureKind>,
    pattern: Option<regex::Regex>,
    severity: Severity,
    action: RecoveryAction,
}

/// Backoff between session-level recovery attempts (`[checkpoint] backoff_*`), in session
/// seconds: attempt 0 waits `initial`, then fixed / linear (`initial × (n+1)`) / exponential
/// (`initial × 2^n`), capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// How waits grow.
    pub strategy: BackoffStrategy,
    /// First wait, session seconds.
    pub initial_secs: f64,
    /// Longest wait, session seconds.
    pub max_secs: f64,
}

impl Backoff {
    /// The wait before retry `attempt` (0-based), session seconds, capped at `max_secs`.
    pub fn session_secs(&self, attempt: u32) -> f64 {
        let n = attempt.min(30) as f64;
        let raw = match self.strategy {
            BackoffStrategy::Fixed => self.initial_secs,
            BackoffStrategy::Linear => self.initial_secs * (n + 1.0),
            BackoffStrategy::Exponential => self.initial_secs * 2f64.powf(n),
        };
        raw.min(self.max_secs)
    }
}

/// The `[checkpoint]` recovery keys: `auto_recovery`, `max_recovery_attempts`, `backoff_*`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// `[checkpoint].auto_recovery`.
    pub auto_recovery: bool,
    /// `[checkpoint].max_recovery_attempts`.
    pub max_attempts: u32,
    /// `[checkpoint].backoff_*`.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// The upstream defaults: on, 5 attempts, exponential from 30 s to 300 s.
    fn default() -> Self {
        RetryPolicy {
            auto_recovery: true,
            max_attempts: 5,
            backoff: Backoff {
                strategy: BackoffStrategy::Exponential,
                initial_secs: 30.0,
                max_secs: 300.0,
            },
        }
    }
}

/// The compiled recovery table of one session.
#[derive(Debug, Clone)]
pub struct RecoveryTable {
    manual: bool,
    rules: Vec<Rule>,
    /// `[checkpoint] auto_recovery`.
    pub auto_recovery: bool,
    /// `[checkpoint] max_recovery_attempts`: attempts per failure before escalation.
    pub max_attempts: u32,
    /// Waits between retries.
    pub backoff: Backoff,
    /// `[error_handling] max_consecutive_errors`: that many failures without a success in
    /// between pause the session.
    pub max_consecutive_errors: u32,
}

impl RecoveryTable {
    /// Compile `[error_handling]` and the `[checkpoint]` recovery keys. Errors name the rule
    /// (`error_handling.rules[i].pattern`) whose regex does not compile; config validation
    /// calls this, so a session never starts with a bad table.
    pub fn new(
        handling: &ErrorHandling,
        policy: &RetryPolicy,
    ) -> Result<RecoveryTable, (String, String)> {
        let mut rules = Vec::new();
        for (i, rule) in handling.rules.iter().enumerate() {
            let pattern = match &rule.pattern {
                Some(text) => Some(
                    regex::RegexBuilder::new(text)
                        .case_insensitive(true)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|err| {
                            (
                                format!("error_handling.rules[{i}].pattern"),
                                format!("not a valid regular expression: {err}"),
                            )
                        })?,
                ),
                None => None,
            };
            rules.push(Rule {
                kind: rule.kind,
                pattern,
                severity: rule.severity,
                action: rule.action,
            });
        }
        Ok(RecoveryTable {
            manual: handling.classification == Classification::Manual,
            rules,
            auto_recovery: policy.auto_recovery,
            max_attempts: policy.max_attempts,
            backoff: policy.backoff,
            max_consecutive_errors: handling.max_consecutive_errors,
        })
    }

    /// The rule for a failure of `kind` whose text is `message`.
    pub fn decide(&self, kind: FailureKind, message: &str) -> Decision {
        let text = format!("{}: {message}", kind.as_str());
        let matched = self.rules.iter().enumerate().find(|(_, rule)| {
            let by_kind = rule.kind == Some(kind);
            let by_pattern = self.manual
                && rule.kind.is_none()
                && rule.pattern.as_ref().is_some_and(|p| p.is_match(&text));
            let both =
                rule.kind == Some(kind) && rule.pattern.as_ref().is_none_or(|p| p.is_match(&text));
            match (rule.kind, &rule.pattern) {
                (Some(_), Some(_)) => both,
                (Some(_), None) => by_kind,
                (None, _) => by_pattern,
            }
        });
        let mut decision = match matched {
            Some((i, rule)) => Decision {
                rule: format!("error_handling.rules[{i}]"),
                severity: rule.severity,
                action: rule.action,
            },
            None => {
                let (severity, action) = default_rule(kind);
                Decision {
                    rule: format!("default:{}", kind.as_str()),
                    severity,
                    action,
                }
            }
        };
        if !self.auto_recovery && !is_in_call(decision.action) {
            decision.action = RecoveryAction::Escalate;
            decision
                .rule
                .push_str(" (checkpoint.auto_recovery = false)");
        }
        decision
    }
}

/// Actions the proxy carries out within one call.
pub fn is_in_call(action: RecoveryAction) -> bool {
    matches!(
        action,
        RecoveryAction::RetryImmediate
            | RecoveryAction::RetryWithBackoff
            | RecoveryAction::SwitchModel
            | RecoveryAction::RetryWithModification
            | RecoveryAction::LogAndContinue
    )
}

/// The corrective system note `retry_with_modification` adds to a retried request.
pub const CORRECTIVE_NOTE: &str = "megatest: your previous answer could not be used (malformed JSON or tool-call arguments that are not valid JSON). Answer again; make every tool call's arguments one valid JSON object.";

#[cfg(test)]
mod tests {
    use super::*;

    fn table(classification: Classification, rules: Vec<ErrorRule>) -> RecoveryTable {
        let handling = ErrorHandling {
            max_consecutive_errors: 5,
            classification,
            rules,
        };
        RecoveryTable::new(&handling, &RetryPolicy::default()).unwrap()
    }

    fn rule(pattern: Option<&str>, kind: Option<FailureKind>, action: RecoveryAction) -> ErrorRule {
        ErrorRule {
            pattern: pattern.map(String::from),
            kind,
            severity: Severity::Critical,
            action,
        }
    }

    #[test]
    fn auto_uses_the_seed_table_for_every_kind() {
        let t = table(Classification::Auto, vec![]);
        for kind in FailureKind::ALL {
            let d = t.decide(kind, "x");
            assert_eq!(d.rule, format!("default:{}", kind.as_str()));
            assert_eq!((d.severity, d.action), default_rule(kind));
        }
        assert_eq!(
            t.decide(FailureKind::DiskFull, "x").action,
            RecoveryAction::PauseAndAlert
        );
    }

    #[test]
    fn manual_patterns_match_kind_and_message_in_order_then_fall_back() {
        let t = table(
            Classification::Manual,
            vec![
                rule(Some("rate.?limit"), None, RecoveryAction::SwitchModel),
                rule(Some("disk.?full"), None, RecoveryAction::StopSession),
            ],
        );
        let d = t.decide(FailureKind::RateLimit, "HTTP 429");
        assert_eq!(d.rule, "error_handling.rules[0]");
        assert_eq!(d.action, RecoveryAction::SwitchModel);
        assert_eq!(
            t.decide(FailureKind::DiskFull, "ENOSPC").action,
            RecoveryAction::StopSession
        );
        let d = t.decide(FailureKind::AgentCrash, "exit 1");
        assert_eq!(d.rule, "default:agent_crash");
        // In auto mode pattern rules are ignored; kind rules apply in both.
        let t = table(
            Classification::Auto,
            vec![
                rule(Some("rate.?limit"), None, RecoveryAction::SwitchModel),
                rule(
                    None,
                    Some(FailureKind::AgentCrash),
                    RecoveryAction::Reassign,
                ),
            ],
        );
        assert_eq!(
            t.decide(FailureKind::RateLimit, "x").rule,
            "default:rate_limit"
        );
        assert_eq!(
            t.decide(FailureKind::AgentCrash, "x").action,
            RecoveryAction::Reassign
        );
    }

    #[test]
    fn bad_regex_names_its_rule() {
        let handling = ErrorHandling {
            max_consecutive_errors: 5,
            classification: Classification::Manual,
            rules: vec![
                rule(Some("ok"), None, RecoveryAction::Escalate),
                rule(Some("(unclosed"), None, RecoveryAction::Escalate),
            ],
        };
        let (key, message) = RecoveryTable::new(&handling, &RetryPolicy::default()).unwrap_err();
        assert_eq!(key, "error_handling.rules[1].pattern");
        assert!(message.contains("regular expression"), "{message}");
    }

    #[test]
    fn auto_recovery_off_escalates_session_actions_only() {
        let handling = ErrorHandling::default();
        let policy = RetryPolicy {
            auto_recovery: false,
            ..RetryPolicy::default()
        };
        let t = RecoveryTable::new(&handling, &policy).unwrap();
        assert_eq!(
            t.decide(FailureKind::AgentCrash, "x").action,
            RecoveryAction::Escalate
        );
        assert_eq!(
            t.decide(FailureKind::RateLimit, "x").action,
            RecoveryAction::RetryWithBackoff
        );
    }

    #[test]
    fn backoff_strategies() {
        let b = |strategy| Backoff {
            strategy,
            initial_secs: 30.0,
            max_secs: 300.0,
        };
        assert_eq!(b(BackoffStrategy::Fixed).session_secs(4), 30.0);
        assert_eq!(b(BackoffStrategy::Linear).session_secs(2), 90.0);
        assert_eq!(b(BackoffStrategy::Exponential).session_secs(2), 120.0);
        assert_eq!(b(BackoffStrategy::Exponential).session_secs(9), 300.0);
    }
}
