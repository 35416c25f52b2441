//! Retry timing: exponential backoff with full jitter. Deciding *whether* to
//! retry is the delivery module's job; this only says *when*.

use std::time::Duration;

/// A route's retry schedule: attempt `n` (0-based) is followed by a wait
/// drawn uniformly from `[0, min(cap, base · 2^n)]`, until `max_attempts`.
///
/// The default (15 attempts, base 1 min, cap 24 h) spans at most about 4.4
/// days and about 2.2 days on average, in line with Stripe's "up to three
/// days" of retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first backoff ceiling.
    pub base: Duration,
    /// No backoff ceiling exceeds this.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 15,
            base: Duration::from_secs(60),
            cap: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The wait after `attempts_made` failed attempts, or `None` when no
    /// attempt is left. `random` is uniform in `[0, 1)` (the caller's RNG,
    /// so this stays pure); `retry_after` is a destination's own request
    /// (HTTP `Retry-After`), honoured up to the cap.
    pub fn next_delay(&self, attempts_made: u32, random: f64, retry_after: Option<Duration>) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let exponent = attempts_made.saturating_sub(1).min(40);
        let ceiling = self.base.saturating_mul(1u32 << exponent.min(31)).min(self.cap);
        let jittered = ceiling.mul_f64(random.clamp(0.0, 1.0));
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(self.cap)),
            None => jittered,
        })
    }

    /// The largest total wait the schedule allows (every jitter at its maximum).
    pub fn max_span(&self) -> Duration {
        (1..self.max_attempts)
            .filter_map(|made| self.next_delay(made, 1.0, None))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_attempts_run_out() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(10),
            cap: Duration::from_secs(35),
        };
        let ceilings: Vec<_> = (1..6).map(|n| policy.next_delay(n, 1.0, None)).collect();
        assert_eq!(
            ceilings,
            vec![
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(20)),
                Some(Duration::from_secs(35)),
                Some(Duration::from_secs(35)),
                None
            ]
        );
        assert_eq!(
            policy.next_delay(1, 0.0, None),
            Some(Duration::ZERO),
            "full jitter reaches zero"
        );
        assert_eq!(policy.next_delay(2, 0.5, None), Some(Duration::from_secs(10)));
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.next_delay(1, 0.0, Some(Duration::from_secs(120))),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            policy.next_delay(1, 0.0, Some(Duration::from_secs(10 * 24 * 3600))),
            Some(policy.cap)
        );
    }

    #[test]
    fn default_schedule_spans_days_over_fifteen_attempts() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 15);
        let days = policy.max_span().as_secs_f64() / 86_400.0;
        assert!((4.0..6.0).contains(&days), "max span {days:.2} days");
    }
}
