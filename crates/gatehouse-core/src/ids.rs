//! Typed, prefixed identifiers. An [`EventId`] prints as `evt_<ULID>`, sorts
//! by creation time and cannot be confused with another kind of id.

use std::fmt;
use std::str::FromStr;

use std::sync::Mutex;

use ulid::{Generator, Ulid};

/// The id gatehouse gives an accepted event: `evt_` followed by a ULID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(Ulid);

impl EventId {
    const PREFIX: &'static str = "evt_";

    /// A new id whose time part is now. Ids made by one process are strictly
    /// increasing, even within one millisecond, so listing by id lists in
    /// arrival order.
    pub fn new() -> Self {
        static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);
        // A poisoned lock only means a panic elsewhere; the generator is intact.
        let mut generator = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
        let ulid = generator
            .get_or_insert_with(Generator::new)
            .generate()
            // The random part overflows only after 2^80 ids in one millisecond.
            .unwrap_or_else(|_| Ulid::new());
        Self(ulid)
    }

    /// The id from its 128-bit value, as stored in a database.
    pub fn from_u128(value: u128) -> Self {
        Self(Ulid(value))
    }

    /// The 128-bit value, for storage.
    pub fn as_u128(&self) -> u128 {
        self.0 .0
    }

    /// The id as 16 big-endian bytes, which sort like the id.
    pub fn to_bytes(&self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// The id from 16 big-endian bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Ulid::from_bytes(bytes))
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not an [`EventId`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid event id {0:?} (expected evt_ followed by a 26-character ULID)")]
pub struct ParseIdError(String);

impl FromStr for EventId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ulid = s
            .strip_prefix(Self::PREFIX)
            .and_then(|rest| Ulid::from_string(rest).ok())
            .ok_or_else(|| ParseIdError(s.chars().take(64).collect()))?;
        Ok(Self(ulid))
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text_and_bytes() {
        let id = EventId::new();
        let text = id.to_string();
        assert!(text.starts_with("evt_"));
        assert_eq!(text.parse::<EventId>(), Ok(id));
        assert_eq!(EventId::from_bytes(id.to_bytes()), id);
        assert_eq!(EventId::from_u128(id.as_u128()), id);
    }

    #[test]
    fn rejects_other_prefixes_and_garbage() {
        assert!("dlv_01HZZZZZZZZZZZZZZZZZZZZZZZ".parse::<EventId>().is_err());
        assert!("evt_not-a-ulid".parse::<EventId>().is_err());
        assert!("".parse::<EventId>().is_err());
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new()).collect();
        for pair in ids.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_bytes() < pair[1].to_bytes());
        }
    }
}
