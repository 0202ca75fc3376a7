//! Requests with an unknown agent key are counted, and sampled into `events` — not one row
//! each: anything on the machine can send them, and one row per request let a local flood fill
//! the runs filesystem (issue 11, defect 9).

use std::time::{Duration, Instant};

/// Rows written one per rejection before sampling starts.
pub const FIRST_ROWS: u64 = 10;
/// After the first rows, at most one row per this much wall time (it carries the count of
/// rejections since the previous row).
pub const ROW_EVERY: Duration = Duration::from_secs(10);

/// The counter of rejected requests and its sampling state. Pure: the caller writes the rows.
#[derive(Debug, Default, Clone)]
pub struct Rejections {
    /// Every rejection since the daemon started.
    pub total: u64,
    /// Rejections not yet carried by a row.
    pub unrecorded: u64,
    rows: u64,
    last_row: Option<Instant>,
}

impl Rejections {
    /// Count one rejection at `now`; returns Some(n) when a row is due now, carrying `n`
    /// rejections (this one included).
    pub fn reject(&mut self, now: Instant) -> Option<u64> {
        self.total += 1;
        self.unrecorded += 1;
        let due = self.rows < FIRST_ROWS
            || self
                .last_row
                .is_none_or(|last| now.duration_since(last) >= ROW_EVERY);
        due.then(|| self.take(now))
    }

    /// The rejections no row carries yet (for a last row at the session's end), if any.
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        (self.unrecorded > 0).then(|| self.take(now))
    }

    fn take(&mut self, now: Instant) -> u64 {
        self.rows += 1;
        self.last_row = Some(now);
        std::mem::take(&mut self.unrecorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_becomes_a_few_rows_and_nothing_is_lost() {
        let mut r = Rejections::default();
        let start = Instant::now();
        let mut rows = Vec::new();
        for i in 0..80_000u64 {
            // 80,000 requests over 25 s of wall time.
            let now = start + Duration::from_micros(i * 312);
            rows.extend(r.reject(now));
        }
        rows.extend(r.flush(start + Duration::from_secs(26)));
        assert!(rows.len() <= FIRST_ROWS as usize + 4, "{} rows", rows.len());
        assert_eq!(rows.iter().sum::<u64>(), 80_000);
        assert_eq!(r.total, 80_000);
        assert_eq!(r.flush(start + Duration::from_secs(27)), None);
    }

    #[test]
    fn the_first_rejections_are_rows_of_one() {
        let mut r = Rejections::default();
        let now = Instant::now();
        for _ in 0..FIRST_ROWS {
            assert_eq!(r.reject(now), Some(1));
        }
        assert_eq!(r.reject(now), None);
    }
}
