//! Unix time in milliseconds: what is stored and compared. Verifiers take
//! `now` as a value so they stay pure and testable at any instant.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// The current time from the system clock.
    pub fn now() -> Self {
        // A clock before 1970 is a broken host; treat it as the epoch rather than panic.
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(millis)
    }

    /// A time given in whole unix seconds.
    pub fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Whole unix seconds, rounded down.
    pub fn as_secs(&self) -> i64 {
        self.0.div_euclid(1000)
    }
}
