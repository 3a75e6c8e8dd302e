//! `?period=N`: the change of the counters and metrics over the last
//! completed N-second window, as Ostrich's latched stats did.
//!
//! A period is tracked from the first request that names it: its windows
//! are latched every N seconds from then on, by a task that sleeps until the
//! next window ends, so a window's figures do not depend on when (or how
//! often) it is read. Until
//! the first window ends, a request gets the change since the period's first
//! request. At most [`MAX_PERIODS`] periods are tracked at once, each holding
//! two reports, so no request can make the server keep more.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::report::Report;

/// Longest period, in seconds.
pub const MAX_PERIOD: u64 = 3600;
/// Periods tracked at once.
pub const MAX_PERIODS: usize = 16;

/// Why a period was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeriodError {
    #[error("period must be between 1 and {MAX_PERIOD} seconds")]
    OutOfRange,
    #[error("at most {MAX_PERIODS} different periods can be watched at once")]
    TooMany,
}

struct Window {
    length: Duration,
    /// The report at the start of the current window.
    base: Report,
    /// The change over the last completed window.
    last: Option<Report>,
    ends: Instant,
}

/// The periods asked for, and their windows.
#[derive(Default)]
pub struct Windows {
    windows: Mutex<HashMap<u64, Window>>,
    /// Rung when a period starts being tracked (its window may end before
    /// the one the latching task sleeps for).
    added: tokio::sync::Notify,
}

impl Windows {
    /// The report for `period` seconds, given `now` (a fresh report);
    /// starts tracking the period if it is new.
    pub fn report(&self, period: u64, now: Report) -> Result<Report, PeriodError> {
        if !(1..=MAX_PERIOD).contains(&period) {
            return Err(PeriodError::OutOfRange);
        }
        let mut windows = self.lock();
        if !windows.contains_key(&period) && windows.len() >= MAX_PERIODS {
            return Err(PeriodError::TooMany);
        }
        let window = windows.entry(period).or_insert_with(|| {
            self.added.notify_one();
            let length = Duration::from_secs(period);
            Window {
                length,
                base: now.clone(),
                last: None,
                ends: Instant::now() + length,
            }
        });
        Ok(match &window.last {
            Some(last) => Report {
                gauges: now.gauges,
                labels: now.labels,
                ..last.clone()
            },
            None => now.since(&window.base),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Window>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Latches the windows as they end, until the task is dropped; `now`
    /// makes the report to latch.
    pub async fn latch(&self, now: impl Fn() -> Report) {
        loop {
            let next = self.lock().values().map(|w| w.ends).min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => self.tick(Instant::now(), &now),
                _ = self.added.notified() => {}
            }
        }
    }

    /// Latches every window that has ended by `at`; `now` makes the report
    /// to latch.
    pub fn tick(&self, at: Instant, now: impl Fn() -> Report) {
        let mut windows = self.lock();
        let mut current = None;
        for w in windows.values_mut().filter(|w| at >= w.ends) {
            let report = current.get_or_insert_with(&now);
            w.last = Some(report.since(&w.base));
            w.base = report.clone();
            w.ends += w.length;
            if w.ends <= at {
                // The tick fell behind by a whole window: start afresh.
                w.ends = at + w.length;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(items: u64) -> Report {
        let mut r = Report::default();
        r.counters.insert("total_items".into(), items);
        r.gauges.insert("items".into(), items);
        r
    }

    #[test]
    fn windows_latch_the_change_and_keep_gauges_current() {
        let w = Windows::default();
        assert!(matches!(
            w.report(0, report(0)),
            Err(PeriodError::OutOfRange)
        ));
        assert!(matches!(
            w.report(MAX_PERIOD + 1, report(0)),
            Err(PeriodError::OutOfRange)
        ));
        assert_eq!(w.report(1, report(10)).unwrap().counters["total_items"], 0);
        assert_eq!(w.report(1, report(15)).unwrap().counters["total_items"], 5);
        // Not ended yet: nothing latches.
        w.tick(Instant::now(), || report(100));
        assert_eq!(w.report(1, report(17)).unwrap().counters["total_items"], 7);
        w.tick(Instant::now() + Duration::from_millis(1001), || report(30));
        let r = w.report(1, report(40)).unwrap();
        assert_eq!(r.counters["total_items"], 20, "the window 10 -> 30");
        assert_eq!(r.gauges["items"], 40, "gauges are current");
        for period in 2..=MAX_PERIODS as u64 {
            w.report(period, report(0)).unwrap();
        }
        assert!(matches!(w.report(99, report(0)), Err(PeriodError::TooMany)));
    }
}
