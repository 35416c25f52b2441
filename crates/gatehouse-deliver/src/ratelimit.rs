//! A per-destination rate limit: attempts evenly spaced at `1/rate`
//! seconds (GCRA without burst), so "at most N per second" holds over any
//! one-second window. Small enough not to need the `governor` crate.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Spaces attempts at least `interval` apart.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    /// The earliest instant the next attempt may start.
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// At most `rate` attempts per second (`0` is treated as 1).
    pub fn per_second(rate: u32) -> Self {
        Self {
            interval: Duration::from_secs(1) / rate.max(1),
            next: Mutex::new(None),
        }
    }

    /// Reserves the next start time, if it is no later than `deadline`;
    /// the caller waits until the returned instant. A reservation that
    /// would pass the deadline takes nothing.
    pub fn reserve(&self, now: Instant, deadline: Instant) -> Option<Instant> {
        // Held for a comparison and an addition, never across an await. A
        // poisoned lock only means a panic elsewhere; the instant is intact.
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let at = next.map_or(now, |next| next.max(now));
        if at > deadline {
            return None;
        }
        *next = Some(at + self.interval);
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_reservations_and_refuses_past_the_deadline() {
        let limiter = RateLimiter::per_second(4);
        let now = Instant::now();
        let far = now + Duration::from_secs(10);
        assert_eq!(limiter.reserve(now, far), Some(now));
        assert_eq!(limiter.reserve(now, far), Some(now + Duration::from_millis(250)));
        assert_eq!(limiter.reserve(now, far), Some(now + Duration::from_millis(500)));
        assert_eq!(
            limiter.reserve(now, now + Duration::from_millis(600)),
            None,
            "0.75 s is too late"
        );
        assert_eq!(
            limiter.reserve(now, far),
            Some(now + Duration::from_millis(750)),
            "a refused reservation took nothing"
        );
        let idle = now + Duration::from_secs(5);
        assert_eq!(limiter.reserve(idle, far), Some(idle), "no credit builds up while idle");
        assert_eq!(RateLimiter::per_second(0).interval, Duration::from_secs(1));
    }
}
