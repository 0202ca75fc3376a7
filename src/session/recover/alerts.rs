//! Alerts: `session.log`, the event log, GitHub workflow annotations and the
//! `[notifications]` webhook (non-blocking, on tasks of its own).

use super::*;

impl Session {
    /// Wait (at most 10 s wall) for webhook deliveries still in flight.
    pub(in crate::session) async fn flush_alerts(&mut self) {
        let pending = self.recovery.notifier.take_pending();
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::future::join_all(pending),
        )
        .await;
    }

    /// An informational alert (checkpoint, phase complete, session complete).
    pub(in crate::session) fn notice(
        &self,
        event: NotifyEvent,
        text: &str,
        data: serde_json::Value,
    ) -> Result<()> {
        tracing::info!(message = "notice", event = notify_event_name(event), text);
        self.alert(event, crate::config::raw::Severity::Transient, text, data)
    }

    /// An alert: `session.log`, the event log, a workflow annotation under GitHub Actions, and
    /// the webhook when `[notifications]` asks for this event.
    pub(in crate::session) fn alert(
        &self,
        event: NotifyEvent,
        severity: crate::config::raw::Severity,
        text: &str,
        data: serde_json::Value,
    ) -> Result<()> {
        let name = notify_event_name(event);
        self.event(
            "alert",
            None,
            None,
            None,
            serde_json::json!({"event": name, "severity": severity_str(severity), "text": text, "data": data}),
        )?;
        self.recovery
            .notifier
            .send(&self.prepared.session_id, name, severity, text, data);
        Ok(())
    }
}

pub(in crate::session) fn notify_event_name(event: NotifyEvent) -> &'static str {
    match event {
        NotifyEvent::Checkpoint => "checkpoint",
        NotifyEvent::PhaseComplete => "phase_complete",
        NotifyEvent::Error => "error",
        NotifyEvent::Complete => "complete",
        NotifyEvent::Budget => "budget",
        NotifyEvent::Escalation => "escalation",
    }
}

impl Notifier {
    pub(super) fn new(config: &crate::config::raw::Notifications) -> Notifier {
        let url = config.webhook_url.clone().filter(|_| config.enabled);
        let client = url.as_ref().and_then(|_| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .ok()
        });
        Notifier {
            pending: std::sync::Mutex::new(Vec::new()),
            client,
            url,
            events: config.events.clone(),
            github_actions: std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true"),
        }
    }

    pub fn send(
        &self,
        session_id: &str,
        event: &'static str,
        severity: crate::config::raw::Severity,
        text: &str,
        data: serde_json::Value,
    ) {
        use crate::config::raw::Severity;
        if self.github_actions {
            let level = match severity {
                Severity::Critical | Severity::Fatal => "error",
                Severity::Transient => "notice",
                _ => "warning",
            };
            // Workflow commands: newlines and % are escaped as the runner expects.
            let text = text
                .replace('%', "%25")
                .replace('\r', "%0D")
                .replace('\n', "%0A");
            crate::console::print(format_args!("::{level} title=megatest {event}::{text}"));
        }
        let (Some(client), Some(url)) = (&self.client, &self.url) else {
            return;
        };
        if !self.events.iter().any(|e| notify_event_name(*e) == event) {
            return;
        }
        let body = serde_json::json!({
            "session_id": session_id,
            "event": event,
            "severity": severity_str(severity),
            "text": text,
            "data": data,
            "at": crate::session::now(),
        });
        let client = client.clone();
        let url = url.clone();
        let delivery = tokio::spawn(async move {
            for attempt in 0..3u32 {
                match client.post(&url).json(&body).send().await {
                    Ok(response) if response.status().is_success() => return,
                    Ok(response) => tracing::warn!(
                        message = "webhook refused the alert",
                        status = response.status().as_u16(),
                        attempt
                    ),
                    Err(err) => {
                        tracing::warn!(message = "webhook unreachable", error = %err, attempt)
                    }
                }
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
        });
        if let Ok(mut pending) = self.pending.lock() {
            pending.retain(|d| !d.is_finished());
            pending.push(delivery);
        }
    }

    /// The deliveries in flight (to wait for before the daemon exits).
    pub(super) fn take_pending(&self) -> Vec<tokio::task::JoinHandle<()>> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
