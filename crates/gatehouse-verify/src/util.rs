//! Helpers every scheme shares: keyed HMACs, constant-time comparison,
//! timestamp tolerance and cheap JSON field extraction.

use std::borrow::Cow;
use std::time::Duration;

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use gatehouse_core::UnixMillis;

use crate::Rejection;

/// HMAC-SHA256.
pub type HmacSha256 = Hmac<sha2::Sha256>;
/// HMAC-SHA1 (GitHub legacy, Twilio, Intercom).
pub type HmacSha1 = Hmac<sha1::Sha1>;
/// HMAC-SHA512.
pub type HmacSha512 = Hmac<sha2::Sha512>;

/// A keyed HMAC-SHA256 state, prepared once per secret so each request only
/// clones it instead of re-deriving the key pads.
pub fn keyed_sha256(key: &[u8]) -> HmacSha256 {
    // Invariant: HMAC accepts keys of any length, so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// A keyed HMAC-SHA1 state, prepared once per secret (see [`keyed_sha256`]).
pub fn keyed_sha1(key: &[u8]) -> HmacSha1 {
    // Invariant: HMAC accepts keys of any length, so this cannot fail.
    <HmacSha1 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// A keyed HMAC-SHA512 state, prepared once per secret (see [`keyed_sha256`]).
pub fn keyed_sha512(key: &[u8]) -> HmacSha512 {
    // Invariant: HMAC accepts keys of any length, so this cannot fail.
    <HmacSha512 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Decodes lowercase or uppercase hex into `out` without allocating; false if
/// `text` is not exactly `out.len()` bytes of hex.
pub fn decode_hex_into(text: &str, out: &mut [u8]) -> bool {
    hex::decode_to_slice(text, out).is_ok()
}

/// Decodes standard padded base64 into `out` without allocating; false if
/// `text` is not base64 of exactly `out.len()` bytes. Sized for digests: an
/// `out` longer than 64 bytes never matches.
pub fn decode_base64_into(text: &str, out: &mut [u8]) -> bool {
    use base64::Engine as _;
    // 96 base64 characters decode to at most 72 bytes; anything longer is not
    // a digest, and refusing it early bounds the work a hostile header costs.
    const MAX_TEXT: usize = 96;
    let mut buffer = [0u8; MAX_TEXT / 4 * 3];
    if text.len() > MAX_TEXT {
        return false;
    }
    match base64::engine::general_purpose::STANDARD.decode_slice(text, &mut buffer) {
        Ok(len) if len == out.len() => {
            out.copy_from_slice(&buffer[..len]);
            true
        }
        _ => false,
    }
}

/// Checks a signed unix timestamp (seconds) against `now` and a tolerance,
/// in both directions: too old is a replay, too far ahead is a forgery or a
/// broken clock.
pub fn check_timestamp(timestamp_secs: i64, now: UnixMillis, tolerance: Duration) -> Result<(), Rejection> {
    let tolerance_secs = tolerance.as_secs() as i64;
    let now_secs = now.as_secs();
    let age_secs = now_secs.saturating_sub(timestamp_secs);
    if age_secs > tolerance_secs {
        return Err(Rejection::TimestampTooOld {
            age_secs,
            tolerance_secs,
        });
    }
    if -age_secs > tolerance_secs {
        return Err(Rejection::TimestampInFuture {
            ahead_secs: -age_secs,
            tolerance_secs,
        });
    }
    Ok(())
}

/// Parses a unix-seconds header value.
pub fn parse_unix_secs(header: &'static str, value: &str) -> Result<i64, Rejection> {
    let value = value.trim();
    if value.is_empty() || value.len() > 18 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::MalformedHeader {
            header: Cow::Borrowed(header),
            problem: "expected unix seconds",
        });
    }
    value.parse().map_err(|_| Rejection::MalformedHeader {
        header: Cow::Borrowed(header),
        problem: "expected unix seconds",
    })
}

/// The top-level `id` and `type` strings of a JSON object body, when present.
/// Used for identification only, after verification; a body that is not a
/// JSON object yields `(None, None)`.
pub fn json_id_and_type(body: &[u8], id_field: &str, type_field: &str) -> (Option<String>, Option<String>) {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(mut object) => {
            let take = |object: &mut serde_json::Map<String, serde_json::Value>, key: &str| match object.remove(key) {
                Some(serde_json::Value::String(s)) => Some(s),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let id = take(&mut object, id_field);
            let event_type = take(&mut object, type_field);
            (id, event_type)
        }
        Err(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_inside_tolerance_pass_and_outside_fail_both_ways() {
        let now = UnixMillis::from_secs(1_700_000_000);
        let five_minutes = Duration::from_secs(300);
        assert!(check_timestamp(1_700_000_000 - 300, now, five_minutes).is_ok());
        assert!(check_timestamp(1_700_000_000 + 300, now, five_minutes).is_ok());
        assert_eq!(
            check_timestamp(1_700_000_000 - 301, now, five_minutes),
            Err(Rejection::TimestampTooOld {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check_timestamp(1_700_000_000 + 301, now, five_minutes),
            Err(Rejection::TimestampInFuture {
                ahead_secs: 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn base64_decodes_only_exact_lengths() {
        let mut out = [0u8; 3];
        assert!(decode_base64_into("AQID", &mut out));
        assert_eq!(out, [1, 2, 3]);
        assert!(!decode_base64_into("AQIDBA==", &mut out));
        assert!(!decode_base64_into("AQ==", &mut out));
        assert!(!decode_base64_into("not base64!", &mut out));
        assert!(!decode_base64_into(&"A".repeat(1000), &mut [0u8; 64]));
        let mut digest = [0u8; 64];
        assert!(decode_base64_into(&format!("{}==", "A".repeat(86)), &mut digest));
    }

    #[test]
    fn unix_seconds_must_be_digits() {
        assert_eq!(parse_unix_secs("t", "1700000000"), Ok(1_700_000_000));
        assert!(parse_unix_secs("t", "-5").is_err());
        assert!(parse_unix_secs("t", "1e9").is_err());
        assert!(parse_unix_secs("t", "").is_err());
        assert!(parse_unix_secs("t", "99999999999999999999999").is_err());
    }

    #[test]
    fn json_fields_are_found_or_none() {
        let (id, kind) = json_id_and_type(br#"{"id":"evt_1","type":"a.b","data":{"id":"x"}}"#, "id", "type");
        assert_eq!(id.as_deref(), Some("evt_1"));
        assert_eq!(kind.as_deref(), Some("a.b"));
        assert_eq!(json_id_and_type(b"not json", "id", "type"), (None, None));
        assert_eq!(json_id_and_type(b"[1,2]", "id", "type"), (None, None));
    }
}
