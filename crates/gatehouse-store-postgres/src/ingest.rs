//! Committing a batch of events: one transaction and, for any batch that
//! fits in one statement, at most three statements whatever its size.
//!
//! 1. In memory, events are grouped by (source, dedup key). The first event
//!    of each group is the one to store; later ones in the batch are its
//!    duplicates and are counted on it up front (`duplicates`,
//!    `last_duplicate_at`).
//! 2. One `INSERT … SELECT FROM UNNEST(arrays) ON CONFLICT DO NOTHING
//!    RETURNING id` stores the groups' first events. A first event that is
//!    not returned collided with an event stored earlier.
//! 3. One `UPDATE … FROM UNNEST(arrays)` adds those collisions (and their
//!    in-batch repeats) to the earlier events' duplicate counts and returns
//!    the earlier events' ids.
//! 4. One `INSERT … SELECT FROM UNNEST(arrays)` creates the stored events'
//!    deliveries and notifies the delivery workers (delivered at commit).
//!
//! Rows are inserted in (source, dedup key) order and locked for the update
//! in (source, dedup key) order, so concurrent batches that share keys wait
//! for each other instead of deadlocking.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use gatehouse_core::{EventId, NewEvent};
use gatehouse_store::{IngestOutcome, StoreError};
use tokio_postgres::types::ToSql;

use crate::deliveries;
use crate::error::{from_pg, from_pool};
use crate::rows::{headers_json, pg_text};

/// Above this many bytes of bodies and headers, the insert is split into
/// several statements (still one transaction). PostgreSQL caps one value,
/// and so one array parameter, at 1 GiB; staying far below also keeps the
/// server's memory per statement modest.
const MAX_STATEMENT_BYTES: usize = 64 * 1024 * 1024;

const INSERT_EVENTS: &str = "\
INSERT INTO events (id, source, dedup_key, provider_event_id, event_type, disposition, received_at,
                    headers, body, verification, remote_addr, duplicates, last_duplicate_at, origin)
SELECT id, source, dedup_key, provider_event_id, event_type, disposition, received_at,
       headers::json, body, verification, remote_addr, duplicates, last_duplicate_at, origin
FROM UNNEST($1::bytea[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[],
            $8::text[], $9::bytea[], $10::text[], $11::text[], $12::int4[], $13::int8[], $14::text[])
     AS batch(id, source, dedup_key, provider_event_id, event_type, disposition, received_at,
              headers, body, verification, remote_addr, duplicates, last_duplicate_at, origin)
ON CONFLICT (source, dedup_key) DO NOTHING
RETURNING id";

/// Counts duplicates on events stored earlier. The `locked` step takes the
/// row locks in key order; `ord` is the position in the arrays, 1-based.
/// `NO KEY UPDATE` is the lock the update itself takes: it does not wait
/// for the key-share locks that inserting a delivery takes on its event.
const COUNT_DUPLICATES: &str = "\
WITH dup AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::int8[]) WITH ORDINALITY
        AS d(source, dedup_key, repeats, last_at, ord)
), locked AS (
    SELECT events.id, dup.repeats, dup.last_at, dup.ord
    FROM events JOIN dup ON events.source = dup.source AND events.dedup_key = dup.dedup_key
    ORDER BY events.source, events.dedup_key
    FOR NO KEY UPDATE OF events
)
UPDATE events
SET duplicates = LEAST(events.duplicates::int8 + locked.repeats, 2147483647)::int4,
    last_duplicate_at = GREATEST(events.last_duplicate_at, locked.last_at)
FROM locked
WHERE events.id = locked.id
RETURNING locked.ord, events.id";

/// The events of a batch that share one (source, dedup key).
struct Group {
    /// Index in the batch of the first event with this key: the one stored.
    first: usize,
    /// How many later events in the batch carry the same key.
    repeats: i32,
    /// The latest `received_at` among those later events.
    last_repeat_at: Option<i64>,
    /// The stored event the key resolves to, once known.
    original: Option<EventId>,
    /// Whether `first` itself was stored by this batch.
    inserted: bool,
}

/// A batch grouped by key, before it touches the database.
struct Plan<'a> {
    events: &'a [NewEvent],
    /// Each event's (source, dedup key) as stored.
    keys: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Each event's index into `groups`.
    group_of: Vec<usize>,
    /// One per distinct key, in order of first appearance.
    groups: Vec<Group>,
    /// Indexes into `groups`, sorted by key: the order rows are written in.
    order: Vec<usize>,
}

impl<'a> Plan<'a> {
    fn new(events: &'a [NewEvent]) -> Self {
        let keys: Vec<_> = events
            .iter()
            .map(|e| (pg_text(&e.source), pg_text(&e.dedup_key)))
            .collect();
        let mut group_of = Vec::with_capacity(events.len());
        let mut groups: Vec<Group> = Vec::new();
        let mut seen: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
        for (index, (source, key)) in keys.iter().enumerate() {
            let group = *seen.entry((source.as_ref(), key.as_ref())).or_insert_with(|| {
                groups.push(Group {
                    first: index,
                    repeats: 0,
                    last_repeat_at: None,
                    original: None,
                    inserted: false,
                });
                groups.len() - 1
            });
            if groups[group].first != index {
                let group = &mut groups[group];
                group.repeats = group.repeats.saturating_add(1);
                let at = events[index].received_at.0;
                group.last_repeat_at = Some(group.last_repeat_at.map_or(at, |last| last.max(at)));
            }
            group_of.push(group);
        }
        let mut order: Vec<usize> = (0..groups.len()).collect();
        order.sort_by(|&a, &b| keys[groups[a].first].cmp(&keys[groups[b].first]));
        Self {
            events,
            keys,
            group_of,
            groups,
            order,
        }
    }

    /// One outcome per event, in batch order, once every group is resolved.
    fn outcomes(&self) -> Result<Vec<IngestOutcome>, StoreError> {
        self.group_of
            .iter()
            .enumerate()
            .map(|(index, &group)| {
                let group = &self.groups[group];
                match group.original {
                    Some(_) if group.inserted && group.first == index => Ok(IngestOutcome::Stored),
                    Some(original) => Ok(IngestOutcome::Duplicate { original }),
                    None => Err(StoreError::Internal(
                        "ingest: an event's outcome was never resolved".into(),
                    )),
                }
            })
            .collect()
    }
}

/// Commits `batch` in one transaction; see the module docs.
pub(crate) async fn ingest(
    pool: &deadpool_postgres::Pool,
    batch: &[NewEvent],
) -> Result<Vec<IngestOutcome>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut plan = Plan::new(batch);

    let mut client = pool.get().await.map_err(from_pool)?;
    let tx = client.transaction().await.map_err(|e| from_pg("begin ingest", &e))?;

    let insert = tx
        .prepare_cached(INSERT_EVENTS)
        .await
        .map_err(|e| from_pg("prepare insert events", &e))?;
    let sizes: Vec<usize> = plan
        .order
        .iter()
        .map(|&g| {
            let event = &batch[plan.groups[g].first];
            event.body.len()
                + event
                    .headers
                    .iter()
                    .map(|h| h.name.len() + h.value.len())
                    .sum::<usize>()
        })
        .collect();
    let mut inserted: HashSet<[u8; 16]> = HashSet::with_capacity(plan.groups.len());
    for range in chunks(&sizes, MAX_STATEMENT_BYTES) {
        let columns = InsertColumns::new(&plan, &plan.order[range])?;
        let rows = tx
            .query(&insert, &columns.params())
            .await
            .map_err(|e| from_pg("insert events", &e))?;
        for row in rows {
            let id: &[u8] = row.try_get(0).map_err(|e| from_pg("insert events", &e))?;
            let id: [u8; 16] = id
                .try_into()
                .map_err(|_| StoreError::Internal("insert events: returned id is not 16 bytes".into()))?;
            inserted.insert(id);
        }
    }

    // Groups whose first event collided with one stored earlier, in key order.
    let mut collided = Vec::new();
    for &g in &plan.order {
        let group = &mut plan.groups[g];
        let first = &batch[group.first];
        if inserted.contains(&first.id.to_bytes()) {
            group.inserted = true;
            group.original = Some(first.id);
        } else {
            collided.push(g);
        }
    }

    if !collided.is_empty() {
        let update = tx
            .prepare_cached(COUNT_DUPLICATES)
            .await
            .map_err(|e| from_pg("prepare count duplicates", &e))?;
        let mut sources = Vec::with_capacity(collided.len());
        let mut dedup_keys = Vec::with_capacity(collided.len());
        let mut repeats = Vec::with_capacity(collided.len());
        let mut last_at = Vec::with_capacity(collided.len());
        for &g in &collided {
            let group = &plan.groups[g];
            let (source, key) = &plan.keys[group.first];
            sources.push(source.as_ref());
            dedup_keys.push(key.as_ref());
            // The first event of the group is a duplicate too, here.
            repeats.push(group.repeats.saturating_add(1));
            let first_at = batch[group.first].received_at.0;
            last_at.push(group.last_repeat_at.map_or(first_at, |at| at.max(first_at)));
        }
        let rows = tx
            .query(&update, &[&sources, &dedup_keys, &repeats, &last_at])
            .await
            .map_err(|e| from_pg("count duplicates", &e))?;
        for row in rows {
            let ord: i64 = row.try_get(0).map_err(|e| from_pg("count duplicates", &e))?;
            let id: &[u8] = row.try_get(1).map_err(|e| from_pg("count duplicates", &e))?;
            let id: [u8; 16] = id
                .try_into()
                .map_err(|_| StoreError::Internal("count duplicates: returned id is not 16 bytes".into()))?;
            let g = usize::try_from(ord - 1)
                .ok()
                .and_then(|position| collided.get(position))
                .copied()
                .ok_or_else(|| StoreError::Internal("count duplicates: returned an unknown position".into()))?;
            plan.groups[g].original = Some(EventId::from_bytes(id));
        }
    }

    // The stored events' deliveries, due when their event arrived. A
    // duplicate gets none: its original has its own.
    let deliveries: Vec<_> = plan
        .order
        .iter()
        .map(|&g| &plan.groups[g])
        .filter(|group| group.inserted)
        .flat_map(|group| {
            let event = &batch[group.first];
            event
                .deliveries
                .iter()
                .map(move |delivery| (event.id, delivery, event.received_at))
        })
        .collect();
    deliveries::insert(&tx, &deliveries).await?;

    // Checked before commit: a key that collided but whose earlier event
    // was not found (it cannot be deleted today) fails the whole batch.
    let outcomes = plan.outcomes()?;
    tx.commit().await.map_err(|e| from_pg("commit ingest", &e))?;
    Ok(outcomes)
}

/// The insert's array parameters for some groups' first events.
struct InsertColumns<'a> {
    ids: Vec<Vec<u8>>,
    sources: Vec<&'a str>,
    dedup_keys: Vec<&'a str>,
    provider_event_ids: Vec<Option<Cow<'a, str>>>,
    event_types: Vec<Option<Cow<'a, str>>>,
    dispositions: Vec<&'static str>,
    received_at: Vec<i64>,
    headers: Vec<String>,
    bodies: Vec<&'a [u8]>,
    verifications: Vec<Cow<'a, str>>,
    remote_addrs: Vec<Option<Cow<'a, str>>>,
    duplicates: Vec<i32>,
    last_duplicate_at: Vec<Option<i64>>,
    origins: Vec<&'static str>,
}

impl<'a> InsertColumns<'a> {
    fn new(plan: &'a Plan<'a>, groups: &[usize]) -> Result<Self, StoreError> {
        let n = groups.len();
        let mut columns = Self {
            ids: Vec::with_capacity(n),
            sources: Vec::with_capacity(n),
            dedup_keys: Vec::with_capacity(n),
            provider_event_ids: Vec::with_capacity(n),
            event_types: Vec::with_capacity(n),
            dispositions: Vec::with_capacity(n),
            received_at: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            bodies: Vec::with_capacity(n),
            verifications: Vec::with_capacity(n),
            remote_addrs: Vec::with_capacity(n),
            duplicates: Vec::with_capacity(n),
            last_duplicate_at: Vec::with_capacity(n),
            origins: Vec::with_capacity(n),
        };
        for &g in groups {
            let group = &plan.groups[g];
            let event = &plan.events[group.first];
            let (source, key) = &plan.keys[group.first];
            columns.ids.push(event.id.to_bytes().to_vec());
            columns.sources.push(source.as_ref());
            columns.dedup_keys.push(key.as_ref());
            columns
                .provider_event_ids
                .push(event.provider_event_id.as_deref().map(pg_text));
            columns.event_types.push(event.event_type.as_deref().map(pg_text));
            columns.dispositions.push(event.disposition.as_str());
            columns.received_at.push(event.received_at.0);
            columns.headers.push(headers_json(&event.headers)?);
            columns.bodies.push(&event.body);
            columns.verifications.push(pg_text(&event.verification));
            columns.remote_addrs.push(event.remote_addr.as_deref().map(pg_text));
            columns.duplicates.push(group.repeats);
            columns.last_duplicate_at.push(group.last_repeat_at);
            columns.origins.push(event.origin.as_str());
        }
        Ok(columns)
    }

    /// The parameters in `INSERT_EVENTS` order.
    fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.ids,
            &self.sources,
            &self.dedup_keys,
            &self.provider_event_ids,
            &self.event_types,
            &self.dispositions,
            &self.received_at,
            &self.headers,
            &self.bodies,
            &self.verifications,
            &self.remote_addrs,
            &self.duplicates,
            &self.last_duplicate_at,
            &self.origins,
        ]
    }
}

/// Splits items of the given sizes into consecutive ranges of at most
/// `max` bytes each; an item larger than `max` gets a range of its own.
fn chunks(sizes: &[usize], max: usize) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (index, &size) in sizes.iter().enumerate() {
        if index > start && bytes.saturating_add(size) > max {
            ranges.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use gatehouse_core::{Disposition, UnixMillis};

    use super::*;

    fn event(source: &str, key: &str, at: i64) -> NewEvent {
        NewEvent {
            id: EventId::new(),
            source: Arc::from(source),
            received_at: UnixMillis(at),
            dedup_key: key.into(),
            provider_event_id: None,
            event_type: None,
            disposition: Disposition::Accepted,
            headers: Vec::new(),
            body: Bytes::new(),
            verification: String::new(),
            remote_addr: None,
            deliveries: Vec::new(),
            origin: gatehouse_core::EventOrigin::Live,
        }
    }

    #[test]
    fn first_of_a_key_is_stored_and_later_ones_counted_on_it() {
        let batch = vec![
            event("s", "b", 10),
            event("s", "a", 11),
            event("s", "b", 30),
            event("t", "b", 12),
            event("s", "b", 20),
        ];
        let plan = Plan::new(&batch);
        assert_eq!(plan.group_of, vec![0, 1, 0, 2, 0]);
        assert_eq!(plan.groups[0].first, 0);
        assert_eq!(plan.groups[0].repeats, 2);
        assert_eq!(plan.groups[0].last_repeat_at, Some(30));
        assert_eq!(plan.groups[1].repeats, 0);
        assert_eq!(plan.groups[1].last_repeat_at, None);
        // Written in key order: (s, a), (s, b), (t, b).
        assert_eq!(plan.order, vec![1, 0, 2]);
    }

    #[test]
    fn keys_equal_once_stored_are_one_group() {
        let batch = vec![event("s", "a\0b", 1), event("s", "a\u{FFFD}b", 2)];
        let plan = Plan::new(&batch);
        assert_eq!(plan.group_of, vec![0, 0]);
    }

    #[test]
    fn outcomes_follow_batch_order() {
        let batch = vec![event("s", "a", 1), event("s", "a", 2), event("s", "b", 3)];
        let mut plan = Plan::new(&batch);
        let earlier = EventId::new();
        plan.groups[0].original = Some(batch[0].id);
        plan.groups[0].inserted = true;
        plan.groups[1].original = Some(earlier);
        assert_eq!(
            plan.outcomes().expect("resolved"),
            vec![
                IngestOutcome::Stored,
                IngestOutcome::Duplicate { original: batch[0].id },
                IngestOutcome::Duplicate { original: earlier },
            ]
        );
        plan.groups[1].original = None;
        assert!(plan.outcomes().is_err());
    }

    #[test]
    fn chunks_respect_the_byte_limit() {
        assert_eq!(chunks(&[], 10), Vec::<Range<usize>>::new());
        assert_eq!(chunks(&[3, 3, 3], 10), vec![0..3]);
        assert_eq!(chunks(&[6, 6, 6], 10), vec![0..1, 1..2, 2..3]);
        assert_eq!(chunks(&[4, 4, 30, 1], 10), vec![0..2, 2..3, 3..4]);
        assert_eq!(chunks(&[5, 5, 5], 10), vec![0..2, 2..3]);
    }
}
