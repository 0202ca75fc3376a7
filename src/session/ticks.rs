//! The session's timers as one source of [`Tick`]s, and [`Session::next_event`]: the one
//! place the session waits — for an input on its channel, a timer, a backoff's end or the
//! phase's time box. Every wait of the session (the phase loop, stopping agents, a phase
//! check) goes through it, so timers keep firing and every input is one [`Event`].

use super::*;
use crate::protocol::Tick;
use tokio::time::{interval, interval_at, Interval, MissedTickBehavior};

/// What the session is doing: which ticks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Agents run tasks of a phase: every tick applies.
    Running,
    /// The phase's agents are being stopped: no hang or memory-pressure detection.
    Stopping,
    /// The phase checks run: no agents, so no hang or memory-pressure detection.
    Checking,
}

/// The periodic timers (wall time, from session-time settings at the session's time scale).
pub(crate) struct Ticks {
    metrics: Interval,
    checkpoint: Interval,
    export: Interval,
    watchdog: Interval,
}

impl Ticks {
    /// `[monitoring].health_check_interval` (metrics), `[checkpoint].interval_minutes`,
    /// `[monitoring].metrics_export_interval` (export), the watchdog period.
    pub(crate) fn new(config: &crate::config::Config, clock: &SessionClock) -> Ticks {
        let every = |session_secs: f64| clock.wall(session_secs).max(MIN_METRICS_INTERVAL);
        let mut metrics = interval(every(config.raw.monitoring.health_check_interval));
        let checkpoint_every = clock.wall(config.raw.checkpoint.interval_minutes * 60.0);
        let mut checkpoint = interval_at(
            tokio::time::Instant::now() + checkpoint_every,
            checkpoint_every,
        );
        let mut export = interval(every(config.raw.monitoring.metrics_export_interval));
        let mut watchdog = interval(recover::watchdog_period(config));
        for timer in [&mut metrics, &mut checkpoint, &mut export, &mut watchdog] {
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        Ticks {
            metrics,
            checkpoint,
            export,
            watchdog,
        }
    }

    async fn next(&mut self) -> Tick {
        tokio::select! {
            _ = self.export.tick() => Tick::Export,
            _ = self.watchdog.tick() => Tick::Watchdog,
            _ = self.checkpoint.tick() => Tick::Checkpoint,
            _ = self.metrics.tick() => Tick::Metrics,
        }
    }
}

impl Session {
    /// The next input: an event from the channel, a tick, [`Tick::Backoff`] at `wakeup` (a
    /// held-back task may start) or [`Tick::TimeBox`] at `deadline` (the phase is over).
    pub(super) async fn next_event(
        &mut self,
        wakeup: Option<tokio::time::Instant>,
        deadline: Option<tokio::time::Instant>,
    ) -> Event {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let ticks = self.ticks.as_mut();
        tokio::select! {
            event = self.events_rx.recv() => match event {
                Some(event) => event,
                // The session holds a sender itself: the channel never closes while it runs.
                None => Event::Tick(Tick::Backoff),
            },
            tick = async {
                match ticks {
                    Some(ticks) => ticks.next().await,
                    None => std::future::pending().await,
                }
            } => Event::Tick(tick),
            _ = tokio::time::sleep_until(wakeup.unwrap_or(far)) => Event::Tick(Tick::Backoff),
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => Event::Tick(Tick::TimeBox),
        }
    }

    /// Handle `event` like every input of the loop: a model call's answer goes on the wire
    /// first, a failed step goes to the recovery table, and the recovery state is saved when
    /// anything but a model call changed it.
    pub(super) async fn dispatch(&mut self, event: Event) -> Result<()> {
        let hot = matches!(
            event,
            Event::ModelCall { .. } | Event::Admit { .. } | Event::Authenticate { .. }
        );
        if matches!(event, Event::ModelCall { .. }) {
            // Let the proxy put the answer on the wire before this commit.
            tokio::task::yield_now().await;
        }
        let handled = self.handle(event);
        self.recoverable(handled)?;
        if !hot {
            // Model calls change the recovery state rarely; the metrics tick saves what they
            // changed.
            let saved = self.save_recovery_state();
            self.recoverable(saved)?;
        }
        Ok(())
    }

    /// One tick of the periodic timers (see [`Ticks`]); the loop-level ticks (backoff end,
    /// time box) are the waiting loop's to act on.
    pub(super) fn on_tick(&mut self, tick: Tick) -> Result<()> {
        match tick {
            Tick::Export => self.write_metrics(self.status_word()),
            Tick::Watchdog => {
                if self.mode == Mode::Running {
                    self.watchdog()?;
                }
            }
            Tick::Checkpoint => {
                if self.prepared.config.raw.checkpoint.enabled {
                    self.checkpoint_due.get_or_insert("interval");
                }
            }
            Tick::Metrics => {
                for agent_idx in 0..self.agents.len() {
                    self.drain_events_file(agent_idx)?;
                }
                self.save_budgets()?;
                if let Err(err) = self.spool.truncate_if_settled() {
                    tracing::warn!(message = "cannot empty the ledger spool", error = %format!("{err:#}"));
                }
                self.store.checkpoint_wal();
                self.start_sample();
                self.start_verify_latest();
                if self.mode == Mode::Running {
                    self.check_memory()?;
                }
            }
            Tick::Backoff | Tick::TimeBox => {}
        }
        Ok(())
    }
}
