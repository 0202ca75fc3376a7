//! What a session-level recovery does, as data: [`plan`] turns a decided failure and the
//! session's situation into [`Effect`]s, which the session carries out in order (requeue a
//! task, keep the recovery open until a check passes, pause, escalate, stop, restore). Pure:
//! no I/O and no session, so every branch of the table is unit-tested here.

use super::{action_str, is_in_call, Decision, FailureKind, RecoveryAction};

/// What the session knows when a failure it detected has been decided.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// What failed.
    pub kind: FailureKind,
    /// The rule the recovery table chose.
    pub decision: &'a Decision,
    /// The failure concerns a task on the board.
    pub has_task: bool,
    /// The failure's message (its first `:`-separated word names a failed check).
    pub message: &'a str,
    /// The newest checkpoint's sequence, when the session has one (for `restore_checkpoint`).
    pub latest_checkpoint: Option<u32>,
    /// Failures in a row without a success, this one included.
    pub consecutive_errors: u32,
    /// `[error_handling].max_consecutive_errors`.
    pub max_consecutive_errors: u32,
    /// The session is paused already.
    pub paused: bool,
}

/// One thing the session does for a recovery, in the order [`plan`] lists them.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Run the task again: on the same agent after a backoff (`restart_agent`), with a fresh,
    /// shorter context (`compress_and_retry`), or on another agent (`reassign`).
    Requeue(RecoveryAction),
    /// Keep the recovery open until the named phase check passes again.
    AwaitCheck(String),
    /// Keep the recovery open until the task finishes.
    AwaitTask,
    /// Put the task back on the board.
    ReleaseTask,
    /// Close the recovery now with this outcome (`recovered`, `failed`).
    Resolve(&'static str),
    /// Freeze the agents, hold calls and alert until the cause is gone.
    Pause,
    /// Wait for an operator's decision.
    Escalate,
    /// Roll back to this checkpoint (or the last valid one before it) and continue.
    Restore(u32),
    /// End the session with this message.
    Stop(String),
    /// `max_consecutive_errors` reached: open a second recovery (rule
    /// `error_handling.max_consecutive_errors`) with this message and pause for it.
    PauseForConsecutiveErrors(String),
}

/// The action the session carries out for `decision`: in-call actions (retries, model
/// switches, corrective notes) mean running the task again when the session saw the failure.
pub fn session_action(decision: &Decision) -> RecoveryAction {
    if is_in_call(decision.action) && decision.action != RecoveryAction::LogAndContinue {
        RecoveryAction::RestartAgent
    } else {
        decision.action
    }
}

/// The effects of a decided failure (see the module docs).
pub fn plan(s: Situation<'_>) -> Vec<Effect> {
    let kind = s.kind.as_str();
    let mut effects = match session_action(s.decision) {
        action @ (RecoveryAction::RestartAgent
        | RecoveryAction::CompressAndRetry
        | RecoveryAction::Reassign) => vec![Effect::Requeue(action)],
        RecoveryAction::LogAndContinue => match (s.kind, s.has_task) {
            (FailureKind::TestFailure | FailureKind::TestRuntimeExceeded, _) => {
                let check = s.message.split(':').next().unwrap_or("").to_string();
                vec![Effect::AwaitCheck(check)]
            }
            (_, true) => vec![Effect::AwaitTask, Effect::ReleaseTask],
            _ => vec![Effect::Resolve("recovered")],
        },
        RecoveryAction::PauseAndAlert => vec![Effect::Pause],
        RecoveryAction::Escalate => vec![Effect::Escalate],
        RecoveryAction::StopSession => {
            let mut effects = release(s.has_task);
            effects.push(Effect::Resolve("failed"));
            effects.push(Effect::Stop(format!(
                "recovery rule {} stopped the session after {kind}: {}",
                s.decision.rule, s.message
            )));
            effects
        }
        RecoveryAction::RestoreCheckpoint => {
            let mut effects = release(s.has_task);
            match s.latest_checkpoint {
                Some(seq) => {
                    effects.push(Effect::Restore(seq));
                    effects.push(Effect::Stop(format!(
                        "{kind} is fatal: the session stopped to restore checkpoint {seq} (or the last valid one before it) and continue — {}",
                        s.message
                    )));
                }
                None => {
                    effects.push(Effect::Resolve("failed"));
                    effects.push(Effect::Stop(format!(
                        "{kind} is fatal: the session stopped and has no checkpoint to restore — {}",
                        s.message
                    )));
                }
            }
            effects
        }
        other => unreachable!("{} is carried out in the call", action_str(other)),
    };
    let paused = s.paused || effects.contains(&Effect::Pause);
    if s.consecutive_errors >= s.max_consecutive_errors && !paused {
        effects.push(Effect::PauseForConsecutiveErrors(format!(
            "{} failures in a row without a success (error_handling.max_consecutive_errors = {})",
            s.consecutive_errors, s.max_consecutive_errors
        )));
    }
    effects
}

fn release(has_task: bool) -> Vec<Effect> {
    if has_task {
        vec![Effect::ReleaseTask]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::Severity;

    fn decided(action: RecoveryAction) -> Decision {
        Decision {
            rule: "default:x".into(),
            severity: Severity::Recoverable,
            action,
        }
    }

    fn situation(kind: FailureKind, decision: &Decision) -> Situation<'_> {
        Situation {
            kind,
            decision,
            has_task: true,
            message: "build: exit 1",
            latest_checkpoint: None,
            consecutive_errors: 1,
            max_consecutive_errors: 10,
            paused: false,
        }
    }

    #[test]
    fn in_call_actions_become_a_restart_when_the_session_saw_the_failure() {
        let d = decided(RecoveryAction::RetryWithBackoff);
        assert_eq!(
            plan(situation(FailureKind::AgentCrash, &d)),
            [Effect::Requeue(RecoveryAction::RestartAgent)]
        );
        let d = decided(RecoveryAction::Reassign);
        assert_eq!(
            plan(situation(FailureKind::AgentHang, &d)),
            [Effect::Requeue(RecoveryAction::Reassign)]
        );
    }

    #[test]
    fn log_and_continue_waits_for_the_check_or_the_task() {
        let d = decided(RecoveryAction::LogAndContinue);
        assert_eq!(
            plan(situation(FailureKind::TestFailure, &d)),
            [Effect::AwaitCheck("build".into())]
        );
        assert_eq!(
            plan(situation(FailureKind::ParseFailure, &d)),
            [Effect::AwaitTask, Effect::ReleaseTask]
        );
        let mut s = situation(FailureKind::ParseFailure, &d);
        s.has_task = false;
        assert_eq!(plan(s), [Effect::Resolve("recovered")]);
    }

    #[test]
    fn restore_needs_a_checkpoint_or_stops_as_failed() {
        let d = decided(RecoveryAction::RestoreCheckpoint);
        let mut s = situation(FailureKind::DataCorruption, &d);
        s.latest_checkpoint = Some(4);
        let effects = plan(s);
        assert_eq!(effects[..2], [Effect::ReleaseTask, Effect::Restore(4)]);
        assert!(matches!(&effects[2], Effect::Stop(m) if m.contains("restore checkpoint 4")));
        s.latest_checkpoint = None;
        let effects = plan(s);
        assert_eq!(effects[1], Effect::Resolve("failed"));
        assert!(matches!(&effects[2], Effect::Stop(m) if m.contains("no checkpoint")));
    }

    #[test]
    fn too_many_failures_in_a_row_pause_once() {
        let d = decided(RecoveryAction::RestartAgent);
        let mut s = situation(FailureKind::AgentCrash, &d);
        s.consecutive_errors = 10;
        let effects = plan(s);
        assert!(
            matches!(&effects[1], Effect::PauseForConsecutiveErrors(m) if m.contains("10 failures"))
        );
        // Already paused, or pausing for this failure anyway: no second pause.
        s.paused = true;
        assert_eq!(plan(s).len(), 1);
        let d = decided(RecoveryAction::PauseAndAlert);
        let mut s = situation(FailureKind::DiskFull, &d);
        s.consecutive_errors = 10;
        assert_eq!(plan(s), [Effect::Pause]);
    }

    #[test]
    fn stop_session_releases_the_task_and_closes_the_recovery() {
        let d = decided(RecoveryAction::StopSession);
        let effects = plan(situation(FailureKind::AuthError, &d));
        assert_eq!(
            effects[..2],
            [Effect::ReleaseTask, Effect::Resolve("failed")]
        );
        assert!(
            matches!(&effects[2], Effect::Stop(m) if m.contains("default:x") && m.contains("auth_error"))
        );
    }
}
