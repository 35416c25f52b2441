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
    let seed = TopLevelFields { id_field, type_field };
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // Every other field is skipped without being built into a value: this
    // runs on every accepted request.
    serde::de::DeserializeSeed::deserialize(seed, &mut deserializer).unwrap_or((None, None))
}

/// Picks two top-level fields out of a JSON object.
struct TopLevelFields<'a> {
    id_field: &'a str,
    type_field: &'a str,
}

impl<'de> serde::de::DeserializeSeed<'de> for TopLevelFields<'_> {
    type Value = (Option<String>, Option<String>);

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopLevelFields<'_> {
    type Value = (Option<String>, Option<String>);

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut id, mut event_type) = (None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.id_field && id.is_none() {
                id = map.next_value::<Scalar>()?.0;
            } else if key == self.type_field && event_type.is_none() {
                event_type = map.next_value::<Scalar>()?.0;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok((id, event_type))
    }
}

/// A JSON string or number as text; any other value as `None`.
struct Scalar(Option<String>);

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match <serde_json::Value as serde::Deserialize>::deserialize(deserializer)? {
            serde_json::Value::String(s) => Ok(Scalar(Some(s))),
            serde_json::Value::Number(n) => Ok(Scalar(Some(n.to_string()))),
            _ => Ok(Scalar(None)),
        }
    }
}

/// The index of the first key whose MAC over what `feed` writes equals
/// `expected`, each comparison in constant time. `feed` writes the signed
/// content into a fresh clone of each prepared key.
pub fn first_matching_key<M: Mac + Clone>(keys: &[M], expected: &[u8], feed: impl Fn(&mut M)) -> Option<usize> {
    keys.iter().position(|key| {
        let mut mac = key.clone();
        feed(&mut mac);
        constant_time_eq(&mac.finalize().into_bytes(), expected)
    })
}

/// Checks a signed unix timestamp in milliseconds (Linear's
/// `webhookTimestamp`) against `now` and a tolerance, in both directions.
/// Rejections report whole seconds, rounded up so that a request just past
/// the tolerance never reads as inside it.
pub fn check_timestamp_millis(timestamp_ms: i64, now: UnixMillis, tolerance: Duration) -> Result<(), Rejection> {
    let tolerance_ms = i64::try_from(tolerance.as_millis()).unwrap_or(i64::MAX);
    let tolerance_secs = tolerance.as_secs() as i64;
    let age_ms = now.0.saturating_sub(timestamp_ms);
    let whole_secs = |ms: i64| ms.saturating_add(999) / 1000;
    if age_ms > tolerance_ms {
        return Err(Rejection::TimestampTooOld {
            age_secs: whole_secs(age_ms),
            tolerance_secs,
        });
    }
    if age_ms.saturating_neg() > tolerance_ms {
        return Err(Rejection::TimestampInFuture {
            ahead_secs: whole_secs(age_ms.saturating_neg()),
            tolerance_secs,
        });
    }
    Ok(())
}

/// Whether a `Content-Type` value is `application/x-www-form-urlencoded`,
/// whatever its parameters (`; charset=utf-8`).
pub fn is_form_urlencoded(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// The value of query parameter `name` in `url`, percent-decoded, when the
/// URL has a query and the parameter appears in it (the first occurrence).
pub fn query_param<'a>(url: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let query = url.split_once('?')?.1;
    // A fragment is never sent by a client, but a configured URL may carry one.
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
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
    fn millisecond_timestamps_are_checked_both_ways() {
        let now = UnixMillis(1_700_000_000_000);
        let minute = Duration::from_secs(60);
        assert!(check_timestamp_millis(1_700_000_000_000 - 60_000, now, minute).is_ok());
        assert!(check_timestamp_millis(1_700_000_000_000 + 60_000, now, minute).is_ok());
        assert_eq!(
            check_timestamp_millis(1_700_000_000_000 - 60_001, now, minute),
            Err(Rejection::TimestampTooOld {
                age_secs: 61,
                tolerance_secs: 60
            })
        );
        assert_eq!(
            check_timestamp_millis(1_700_000_000_000 + 60_001, now, minute),
            Err(Rejection::TimestampInFuture {
                ahead_secs: 61,
                tolerance_secs: 60
            })
        );
        assert!(check_timestamp_millis(i64::MIN, now, minute).is_err());
        assert!(check_timestamp_millis(i64::MAX, now, minute).is_err());
    }

    #[test]
    fn form_content_types_and_query_params() {
        assert!(is_form_urlencoded(Some("application/x-www-form-urlencoded")));
        assert!(is_form_urlencoded(Some(
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
        )));
        assert!(!is_form_urlencoded(Some("application/json")));
        assert!(!is_form_urlencoded(None));
        assert_eq!(
            query_param("https://x.test/p?a=1&token=a%20b+c&token=2", "token").as_deref(),
            Some("a b c")
        );
        assert_eq!(query_param("https://x.test/p?a=1#token=2", "token"), None);
        assert_eq!(query_param("https://x.test/p", "a"), None);
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
