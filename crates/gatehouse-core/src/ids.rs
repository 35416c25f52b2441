//! Typed, prefixed identifiers. An [`EventId`] prints as `evt_<ULID>`, a
//! [`DeliveryId`] as `dlv_<ULID>`; both sort by creation time and one cannot
//! be passed where the other is expected.

use std::fmt;
use std::str::FromStr;

use std::sync::Mutex;

use ulid::{Generator, Ulid};

/// Declares a prefixed, sortable id type backed by a ULID.
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Ulid);

        impl $name {
            const PREFIX: &'static str = $prefix;

            /// A new id whose time part is now. Ids made by one process are
            /// strictly increasing, even within one millisecond, so listing by
            /// id lists in creation order.
            pub fn new() -> Self {
                Self(next_ulid())
            }

            /// The smallest id made at `millis` (and after every id made
            /// before it): the lower bound of a time range over ids.
            pub fn first_at(millis: u64) -> Self {
                Self(Ulid::from_parts(millis, 0))
            }

            /// The id as 16 big-endian bytes, which sort like the id.
            pub fn to_bytes(&self) -> [u8; 16] {
                self.0.to_bytes()
            }

            /// The id from 16 big-endian bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Ulid::from_bytes(bytes))
            }

            /// The id from stored bytes, if there are exactly 16.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; 16]>::try_from(bytes).ok().map(Self::from_bytes)
            }

            /// Milliseconds since the epoch when the id was made.
            pub fn timestamp_ms(&self) -> u64 {
                self.0.timestamp_ms()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", Self::PREFIX, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let ulid = s
                    .strip_prefix(Self::PREFIX)
                    .and_then(|rest| Ulid::from_string(rest).ok())
                    .ok_or_else(|| ParseIdError {
                        expected: Self::PREFIX,
                        found: s.chars().take(64).collect(),
                    })?;
                Ok(Self(ulid))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

prefixed_id!(
    /// The id gatehouse gives an accepted event: `evt_` followed by a ULID.
    EventId,
    "evt_"
);

prefixed_id!(
    /// The id of one event's delivery on one route: `dlv_` followed by a ULID.
    DeliveryId,
    "dlv_"
);

prefixed_id!(
    /// The id of a console user: `usr_` followed by a ULID.
    UserId,
    "usr_"
);

prefixed_id!(
    /// The id of an API token: `tok_` followed by a ULID. The id is public
    /// (lists, audit); the token's secret is shown once and stored hashed.
    TokenId,
    "tok_"
);

/// The next ULID from one process-wide monotonic generator.
fn next_ulid() -> Ulid {
    static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);
    // A poisoned lock only means a panic elsewhere; the generator is intact.
    let mut generator = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    generator
        .get_or_insert_with(Generator::new)
        .generate()
        // The random part overflows only after 2^80 ids in one millisecond.
        .unwrap_or_else(|_| Ulid::new())
}

/// Why a string is not an id of the expected kind.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid id {found:?} (expected {expected} followed by a 26-character ULID)")]
pub struct ParseIdError {
    expected: &'static str,
    found: String,
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
        assert_eq!(EventId::from_slice(&id.to_bytes()), Some(id));
        assert_eq!(EventId::from_slice(b"short"), None);
    }

    #[test]
    fn rejects_other_prefixes_and_garbage() {
        let delivery = DeliveryId::new().to_string();
        assert!(delivery.starts_with("dlv_"));
        assert!(delivery.parse::<EventId>().is_err());
        assert!(delivery.parse::<DeliveryId>().is_ok());
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
