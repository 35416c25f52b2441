//! Per-source rate limits (`rate_limit = N` on a source): at most N
//! verified requests a second on average, with bursts of up to N at once;
//! the rest are answered 429 with `Retry-After`, and the provider sends
//! them again later.
//!
//! The limit counts only requests that passed verification, so a flood of
//! forged requests (already answered 401) cannot use up a source's budget
//! and turn its genuine events away.
//!
//! A generic cell rate algorithm: one instant of state, no timer, no task.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A limit of `rate` requests a second with bursts of up to `rate`.
#[derive(Debug)]
pub struct RateLimit {
    /// The average spacing of requests: one second divided by the rate.
    interval: Duration,
    /// How far ahead of now the schedule may run: `interval × (burst − 1)`.
    tolerance: Duration,
    /// When the next request would be due if requests came evenly spaced
    /// (the "theoretical arrival time"); `None` before the first.
    due: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// At most `rate` a second (at least 1), and bursts of up to `rate`.
    pub fn per_second(rate: u32) -> Self {
        let rate = rate.max(1);
        let interval = Duration::from_secs(1) / rate;
        Self {
            interval,
            tolerance: interval * (rate - 1),
            due: Mutex::new(None),
        }
    }

    /// Takes a slot for a request arriving at `now`, or says how long
    /// until one is free (nothing is taken then).
    pub fn admit(&self, now: Instant) -> Result<(), Duration> {
        // Held for a comparison and an addition, never across an await. A
        // poisoned lock only means a panic elsewhere; the instant is intact.
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let next = due.map_or(now, |due| due.max(now));
        let ahead = next - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        *due = Some(next + self.interval);
        Ok(())
    }
}

/// `Retry-After` in whole seconds, rounded up (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_rate_passes_then_requests_are_spaced() {
        let limit = RateLimit::per_second(4);
        let start = Instant::now();
        for n in 0..4 {
            assert_eq!(limit.admit(start), Ok(()), "request {n} of the burst");
        }
        assert_eq!(
            limit.admit(start),
            Err(Duration::from_millis(250)),
            "the fifth waits one interval"
        );
        assert_eq!(
            limit.admit(start),
            Err(Duration::from_millis(250)),
            "a refusal takes nothing"
        );
        let later = start + Duration::from_millis(250);
        assert_eq!(limit.admit(later), Ok(()));
        assert_eq!(limit.admit(later), Err(Duration::from_millis(250)));
    }

    #[test]
    fn the_average_holds_over_a_long_run() {
        let limit = RateLimit::per_second(10);
        let start = Instant::now();
        // Offered 100 a second for 10 s: 10 s × 10/s plus the burst of 10.
        let admitted = (0..1000)
            .filter(|n| limit.admit(start + Duration::from_millis(n * 10)).is_ok())
            .count();
        assert!((100..=111).contains(&admitted), "{admitted}");
    }

    #[test]
    fn idle_time_refills_the_burst_but_no_more() {
        let limit = RateLimit::per_second(3);
        let start = Instant::now();
        for _ in 0..3 {
            limit.admit(start).expect("burst");
        }
        let idle = start + Duration::from_secs(60);
        for _ in 0..3 {
            limit.admit(idle).expect("the burst is back");
        }
        assert!(limit.admit(idle).is_err(), "a minute idle is not a minute of credit");
    }

    #[test]
    fn a_rate_of_one_allows_one_a_second_and_zero_is_one() {
        let limit = RateLimit::per_second(0);
        let start = Instant::now();
        assert_eq!(limit.admit(start), Ok(()));
        assert_eq!(limit.admit(start), Err(Duration::from_secs(1)));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
