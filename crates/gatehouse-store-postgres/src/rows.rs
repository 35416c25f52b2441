//! Conversions between domain types and columns: the column lists the
//! queries select, decoding rows into [`EventSummary`], [`StoredEvent`],
//! [`Delivery`] and [`Attempt`], headers as JSON text, and text made
//! storable.

use std::borrow::Cow;

use bytes::Bytes;
use gatehouse_core::{
    Attempt, AttemptOutcome, Delivery, DeliveryId, DeliveryState, Disposition, EventId, EventSummary, Header,
    StoredEvent, UnixMillis, VerificationFailure,
};
use gatehouse_store::StoreError;
use tokio_postgres::Row;

use crate::error::from_pg;

/// The columns [`summary`] decodes, in order.
pub(crate) const SUMMARY_COLUMNS: &str = "id, source, received_at, dedup_key, provider_event_id, event_type, \
     disposition, duplicates, last_duplicate_at, origin, pruned_at";

/// The columns [`stored_event`] decodes, in order.
pub(crate) const EVENT_COLUMNS: &str =
    "id, source, received_at, dedup_key, provider_event_id, event_type, disposition, \
     duplicates, last_duplicate_at, origin, pruned_at, headers::text, body, verification, remote_addr";

/// The columns [`verification_failure`] decodes, in order.
pub(crate) const FAILURE_COLUMNS: &str = "source, reason, remote_addr, at";

/// The columns [`delivery`] decodes, in order.
pub(crate) const DELIVERY_COLUMNS: &str =
    "id, event_id, route, state, attempts, next_attempt_at, last_error, created_at, updated_at";

/// The columns [`attempt`] decodes, in order.
pub(crate) const ATTEMPT_COLUMNS: &str = "number, started_at, duration_ms, status_code, response_headers::text, \
     response_excerpt, error, outcome";

/// Text as PostgreSQL can store it. A `text` value cannot hold a NUL
/// character, and one event carrying one (a dedup key read from a JSON
/// body, say) would fail its whole batch; NUL becomes U+FFFD instead, the
/// same lossy treatment header values that are not UTF-8 already get.
pub(crate) fn pg_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// The headers as stored (see [`gatehouse_store::codec`]).
pub(crate) fn headers_json(headers: &[Header]) -> Result<String, StoreError> {
    Ok(gatehouse_store::codec::encode_headers(headers))
}

/// The headers back from [`headers_json`]'s text.
fn parse_headers(text: &str) -> Result<Vec<Header>, StoreError> {
    gatehouse_store::codec::decode_headers(text)
}

/// An event id from its stored bytes.
fn event_id(bytes: &[u8]) -> Result<EventId, StoreError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Internal(format!("stored event id has {} bytes, not 16", bytes.len())))?;
    Ok(EventId::from_bytes(bytes))
}

/// A delivery id from its stored bytes.
pub(crate) fn delivery_id(bytes: &[u8]) -> Result<DeliveryId, StoreError> {
    DeliveryId::from_slice(bytes)
        .ok_or_else(|| StoreError::Internal(format!("stored delivery id has {} bytes, not 16", bytes.len())))
}

/// A count or number stored as `integer`, which gatehouse never makes negative.
fn unsigned(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// A `u32` for an `integer` column, capped at its maximum.
pub(crate) fn pg_int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// A row selected with [`SUMMARY_COLUMNS`] (or [`EVENT_COLUMNS`]).
pub(crate) fn summary(row: &Row) -> Result<EventSummary, StoreError> {
    let get = |e| from_pg("decode event", &e);
    let id: &[u8] = row.try_get(0).map_err(get)?;
    let disposition: &str = row.try_get(6).map_err(get)?;
    let duplicates: i32 = row.try_get(7).map_err(get)?;
    Ok(EventSummary {
        id: event_id(id)?,
        source: row.try_get(1).map_err(get)?,
        received_at: UnixMillis(row.try_get(2).map_err(get)?),
        dedup_key: row.try_get(3).map_err(get)?,
        provider_event_id: row.try_get(4).map_err(get)?,
        event_type: row.try_get(5).map_err(get)?,
        disposition: Disposition::parse(disposition)
            .ok_or_else(|| StoreError::Internal("stored event has an unknown disposition".into()))?,
        duplicates: u32::try_from(duplicates).unwrap_or(0),
        last_duplicate_at: row.try_get::<_, Option<i64>>(8).map_err(get)?.map(UnixMillis),
        // An origin this build does not know (a newer gatehouse wrote it)
        // reads as live rather than failing the whole list.
        origin: gatehouse_core::EventOrigin::parse(row.try_get(9).map_err(get)?).unwrap_or_default(),
        pruned_at: row.try_get::<_, Option<i64>>(10).map_err(get)?.map(UnixMillis),
    })
}

/// A row selected with [`EVENT_COLUMNS`].
pub(crate) fn stored_event(row: &Row) -> Result<StoredEvent, StoreError> {
    let get = |e| from_pg("decode event", &e);
    let headers: &str = row.try_get(11).map_err(get)?;
    let body: Vec<u8> = row.try_get(12).map_err(get)?;
    Ok(StoredEvent {
        summary: summary(row)?,
        headers: parse_headers(headers)?,
        body: Bytes::from(body),
        verification: row.try_get(13).map_err(get)?,
        remote_addr: row.try_get(14).map_err(get)?,
    })
}

/// A row selected with [`FAILURE_COLUMNS`].
pub(crate) fn verification_failure(row: &Row) -> Result<VerificationFailure, StoreError> {
    let get = |e| from_pg("decode verification failure", &e);
    Ok(VerificationFailure {
        source: row.try_get(0).map_err(get)?,
        reason: row.try_get(1).map_err(get)?,
        remote_addr: row.try_get(2).map_err(get)?,
        at: UnixMillis(row.try_get(3).map_err(get)?),
    })
}

/// A row selected with [`DELIVERY_COLUMNS`].
pub(crate) fn delivery(row: &Row) -> Result<Delivery, StoreError> {
    let get = |e| from_pg("decode delivery", &e);
    let id: &[u8] = row.try_get(0).map_err(get)?;
    let event: &[u8] = row.try_get(1).map_err(get)?;
    let state: &str = row.try_get(3).map_err(get)?;
    Ok(Delivery {
        id: delivery_id(id)?,
        event_id: event_id(event)?,
        route: row.try_get(2).map_err(get)?,
        state: DeliveryState::parse(state)
            .ok_or_else(|| StoreError::Internal("stored delivery has an unknown state".into()))?,
        attempts: unsigned(row.try_get(4).map_err(get)?),
        next_attempt_at: UnixMillis(row.try_get(5).map_err(get)?),
        last_error: row.try_get(6).map_err(get)?,
        created_at: UnixMillis(row.try_get(7).map_err(get)?),
        updated_at: UnixMillis(row.try_get(8).map_err(get)?),
    })
}

/// A row selected with [`ATTEMPT_COLUMNS`].
pub(crate) fn attempt(row: &Row) -> Result<Attempt, StoreError> {
    let get = |e| from_pg("decode attempt", &e);
    let headers: &str = row.try_get(4).map_err(get)?;
    let excerpt: Vec<u8> = row.try_get(5).map_err(get)?;
    let outcome: &str = row.try_get(7).map_err(get)?;
    Ok(Attempt {
        number: unsigned(row.try_get(0).map_err(get)?),
        started_at: UnixMillis(row.try_get(1).map_err(get)?),
        duration_ms: unsigned(row.try_get(2).map_err(get)?),
        status_code: row.try_get(3).map_err(get)?,
        response_headers: parse_headers(headers)?,
        response_excerpt: Bytes::from(excerpt),
        error: row.try_get(6).map_err(get)?,
        outcome: AttemptOutcome::parse(outcome)
            .ok_or_else(|| StoreError::Internal("stored attempt has an unknown outcome".into()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_in_order_with_repeats() {
        let headers = vec![
            Header {
                name: "x-b".into(),
                value: "2".into(),
            },
            Header {
                name: "x-a".into(),
                value: "\"quoted\" \\ \u{e9}".into(),
            },
            Header {
                name: "x-b".into(),
                value: "".into(),
            },
        ];
        let text = headers_json(&headers).expect("encode");
        assert_eq!(parse_headers(&text).expect("decode"), headers);
        assert_eq!(headers_json(&[]).expect("encode"), "[]");
    }

    #[test]
    fn nul_is_replaced_and_other_text_borrowed() {
        assert!(matches!(pg_text("evt_1"), Cow::Borrowed("evt_1")));
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
    }

    #[test]
    fn event_ids_must_be_sixteen_bytes() {
        let id = EventId::new();
        assert_eq!(event_id(&id.to_bytes()).expect("decode"), id);
        assert!(event_id(&[1, 2, 3]).is_err());
        let id = DeliveryId::new();
        assert_eq!(delivery_id(&id.to_bytes()).expect("decode"), id);
        assert!(delivery_id(&[0; 17]).is_err());
    }

    #[test]
    fn integers_saturate_instead_of_wrapping() {
        assert_eq!(pg_int(7), 7);
        assert_eq!(pg_int(u32::MAX), i32::MAX);
        assert_eq!(unsigned(-1), 0);
        assert_eq!(unsigned(12), 12);
    }
}
