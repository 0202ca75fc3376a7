//! The one session clock. Session time runs `time_scale` times faster than wall time; every
//! configured duration (phase lengths, intervals, timeouts) is in session seconds and becomes a
//! wall [`Duration`] through [`SessionClock::wall`]. No other module measures session time.

use std::time::{Duration, Instant};

/// Session time: wall time since the (re)start times the time scale, plus the session seconds of earlier daemons. The only source of session time.
#[derive(Debug, Clone, Copy)]
pub struct SessionClock {
    started: Instant,
    time_scale: f64,
    /// Session seconds already behind us when this clock started (a resumed session).
    offset_secs: f64,
}

impl SessionClock {
    /// A clock starting now. `time_scale` must be > 0 (validated with the config).
    pub fn start(time_scale: f64) -> SessionClock {
        SessionClock {
            started: Instant::now(),
            time_scale,
            offset_secs: 0.0,
        }
    }

    /// A clock continuing a session that had run `offset_secs` session seconds: the downtime
    /// between is not session time.
    pub fn resume(time_scale: f64, offset_secs: f64) -> SessionClock {
        SessionClock {
            started: Instant::now(),
            time_scale,
            offset_secs,
        }
    }

    /// Session seconds per wall second.
    pub fn time_scale(&self) -> f64 {
        self.time_scale
    }

    /// Wall seconds the session has been active (downtime between a crash and a resume
    /// excluded).
    pub fn wall_secs(&self) -> f64 {
        self.offset_secs / self.time_scale + self.started.elapsed().as_secs_f64()
    }

    /// Session seconds since the session started (active wall seconds × time scale).
    pub fn session_secs(&self) -> f64 {
        self.offset_secs + self.started.elapsed().as_secs_f64() * self.time_scale
    }

    /// The wall duration of `session_secs` session seconds.
    pub fn wall(&self, session_secs: f64) -> Duration {
        Duration::from_secs_f64((session_secs / self.time_scale).max(0.0))
    }

    /// The wall instant at which session time reaches `session_secs` (now, if it already has).
    pub fn instant_at(&self, session_secs: f64) -> Instant {
        self.started + self.wall(session_secs - self.offset_secs)
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
}
