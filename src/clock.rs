//! The one session clock. Session time runs `time_scale` times faster than wall time; every
//! configured duration (phase lengths, intervals, timeouts) is in session seconds and becomes a
//! wall [`Duration`] through [`SessionClock::wall`]. No other module measures session time.
//!
//! While megatest measures the workspace itself (phase checks, a gate's measurement, the
//! evaluation — [`SessionClock::real_time`]) session time runs at wall speed, whatever the time
//! scale: a build that takes 14 wall seconds takes 14 session seconds, as it would in a session
//! at time scale 1, not 14 session hours at time scale 3600. Agents' work is what a time scale
//! compresses; megatest's own measurements are not.
//!
//! Clones share one clock (the session, its proxy and its timers see the same time).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Session time. The only source of session time; clones share it.
#[derive(Debug, Clone)]
pub struct SessionClock {
    time_scale: f64,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Wall instant the current stretch began.
    started: Instant,
    /// Session seconds behind us when it began (earlier daemons and stretches).
    offset_secs: f64,
    /// Active wall seconds behind us when it began.
    offset_wall: f64,
    /// Since when session time runs at wall speed (a measurement), if it does.
    real_since: Option<Instant>,
}

impl State {
    fn session_secs_at(&self, now: Instant, scale: f64) -> f64 {
        match self.real_since {
            Some(since) => {
                let scaled = since.saturating_duration_since(self.started).as_secs_f64();
                self.offset_secs
                    + scaled * scale
                    + now.saturating_duration_since(since).as_secs_f64()
            }
            None => {
                self.offset_secs + now.saturating_duration_since(self.started).as_secs_f64() * scale
            }
        }
    }
}

/// Session time runs at wall speed while this lives (see [`SessionClock::real_time`]).
pub struct RealTime(SessionClock);

impl Drop for RealTime {
    fn drop(&mut self) {
        self.0.end_real_time();
    }
}

impl SessionClock {
    /// A clock starting now. `time_scale` must be > 0 (validated with the config).
    pub fn start(time_scale: f64) -> SessionClock {
        SessionClock::resume(time_scale, 0.0)
    }

    /// A clock continuing a session that had run `offset_secs` session seconds: the downtime
    /// between is not session time.
    pub fn resume(time_scale: f64, offset_secs: f64) -> SessionClock {
        SessionClock {
            time_scale,
            state: Arc::new(Mutex::new(State {
                started: Instant::now(),
                offset_secs,
                offset_wall: offset_secs / time_scale,
                real_since: None,
            })),
        }
    }

    fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Session seconds per wall second (outside megatest's own measurements).
    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    /// Wall seconds the session has been active (downtime between a crash and a resume
    /// excluded).
    pub fn wall_secs(&self) -> f64 {
        let state = self.state();
        state.offset_wall + state.started.elapsed().as_secs_f64()
    }

    /// Session seconds since the session started.
    pub fn session_secs(&self) -> f64 {
        self.state()
            .session_secs_at(Instant::now(), self.time_scale)
    }

    /// The wall duration of `session_secs` session seconds at the time scale.
    pub fn wall(&self, session_secs: f64) -> Duration {
        Duration::from_secs_f64((session_secs / self.time_scale).max(0.0))
    }

    /// The wall instant at which session time reaches `session_secs` as the clock runs now (now,
    /// if it already has). Deadlines are to be computed again after a measurement.
    pub fn instant_at(&self, session_secs: f64) -> Instant {
        let state = self.state();
        match state.real_since {
            Some(since) => {
                let at_since = state.session_secs_at(since, self.time_scale);
                if session_secs <= at_since {
                    state.started + self.wall(session_secs - state.offset_secs)
                } else {
                    since + Duration::from_secs_f64(session_secs - at_since)
                }
            }
            None => state.started + self.wall(session_secs - state.offset_secs),
        }
    }

    /// Session time runs at wall speed until the returned guard is dropped (megatest measuring
    /// the workspace). Nested guards are harmless: the first one dropped ends it.
    pub fn real_time(&self) -> RealTime {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.real_since.is_none() {
            state.real_since = Some(Instant::now());
        }
        RealTime(self.clone())
    }

    fn end_real_time(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.real_since.is_some() {
            let now = Instant::now();
            let session = state.session_secs_at(now, self.time_scale);
            let wall =
                state.offset_wall + now.saturating_duration_since(state.started).as_secs_f64();
            *state = State {
                started: now,
                offset_secs: session,
                offset_wall: wall,
                real_since: None,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_divides_by_time_scale() {
        let clock = SessionClock::start(3600.0);
        assert_eq!(clock.wall(3600.0), Duration::from_secs(1));
        assert_eq!(clock.wall(-1.0), Duration::ZERO);
    }

    #[test]
    fn a_measurement_runs_at_wall_speed_and_clones_share_the_clock() {
        let clock = SessionClock::start(1000.0);
        let shared = clock.clone();
        std::thread::sleep(Duration::from_millis(50));
        let before = clock.session_secs();
        assert!((40.0..1000.0).contains(&before), "{before}");
        {
            let _measuring = clock.real_time();
            std::thread::sleep(Duration::from_millis(100));
            let during = shared.session_secs() - before;
            // 0.1 wall seconds are 0.1 session seconds now, not 100.
            assert!((0.09..5.0).contains(&during), "{during}");
            // A deadline 1 session second ahead is 1 wall second ahead.
            let ahead = shared.instant_at(shared.session_secs() + 1.0) - Instant::now();
            assert!(ahead > Duration::from_millis(900), "{ahead:?}");
        }
        let after = clock.session_secs();
        std::thread::sleep(Duration::from_millis(20));
        // Back at the time scale, continuing from where the measurement left it.
        let later = shared.session_secs() - after;
        assert!((15.0..1000.0).contains(&later), "{later}");
        assert!(after - before < 10.0, "{}", after - before);
        // Wall time is wall time throughout.
        assert!(
            (0.17..2.0).contains(&clock.wall_secs()),
            "{}",
            clock.wall_secs()
        );
    }
}
