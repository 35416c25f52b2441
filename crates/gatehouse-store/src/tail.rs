//! Following events as they are committed, each once, in id order: the
//! console's live tail and `gatehouse tail` share it.
//!
//! Two things make "everything after the last id seen" miss events:
//!
//! - More may arrive between two polls than one page holds, and a page is
//!   the *newest* events after the cursor; so a poll reads pages back to
//!   the cursor.
//! - An event's id is given when it is received, before it commits, so
//!   concurrent requests commit slightly out of id order (one batch can
//!   commit before a smaller id's batch does). So each poll looks again
//!   [`REORDER_WINDOW_MS`] behind the newest id it has seen, and remembers the
//!   ids it reported inside that window. An event committed later than
//!   that behind a newer one is not reported; a commit normally takes
//!   milliseconds.

use std::collections::BTreeSet;

use gatehouse_core::{EventId, EventSummary, UnixMillis};

use crate::{EventQuery, Store, StoreError};

/// How far behind the newest id seen each poll looks again.
pub const REORDER_WINDOW_MS: u64 = 2_000;

/// Events a poll reads per query.
const PAGE: u32 = 1_000;

/// A cursor over the events of one source (or all), as they are committed.
#[derive(Debug)]
pub struct EventTail {
    source: Option<String>,
    /// Nothing at or below this id is reported: where the tail started.
    floor: Option<EventId>,
    /// The newest id reported (or the floor).
    newest: Option<EventId>,
    /// Ids reported within the window behind `newest`.
    seen: BTreeSet<EventId>,
}

impl EventTail {
    /// A tail that reports events after `after`, for a reader that has
    /// seen everything up to it (a browser reconnecting with
    /// `Last-Event-ID`).
    pub fn after(source: Option<String>, after: EventId) -> Self {
        Self {
            source,
            floor: Some(after),
            newest: Some(after),
            seen: BTreeSet::new(),
        }
    }

    /// A tail that reports events committed from now on.
    pub async fn starting_now(store: &dyn Store, source: Option<String>) -> Result<Self, StoreError> {
        let newest = store
            .list_events(&EventQuery {
                source: source.clone(),
                limit: 1,
                ..EventQuery::default()
            })
            .await?
            .first()
            .map(|event| event.id);
        let mut tail = Self {
            source,
            floor: None,
            newest,
            seen: BTreeSet::new(),
        };
        // What is in the window now is old news: marked seen, not reported.
        // (No floor: an event received before now and committed after it
        // is still new.)
        tail.poll(store).await?;
        Ok(tail)
    }

    /// The events committed since the last poll, oldest first, each once.
    pub async fn poll(&mut self, store: &dyn Store) -> Result<Vec<EventSummary>, StoreError> {
        let window_start = self
            .newest
            .map(|id| EventId::first_at(id.timestamp_ms().saturating_sub(REORDER_WINDOW_MS)));
        let mut fresh = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list_events(&EventQuery {
                    source: self.source.clone(),
                    received_from: window_start.map(|id| UnixMillis(id.timestamp_ms() as i64)),
                    before,
                    limit: PAGE,
                    ..EventQuery::default()
                })
                .await?;
            let full = page.len() == PAGE as usize;
            before = page.last().map(|event| event.id);
            fresh.extend(
                page.into_iter()
                    .filter(|event| self.floor.is_none_or(|floor| event.id > floor) && !self.seen.contains(&event.id)),
            );
            if !full {
                break;
            }
        }
        fresh.sort_by_key(|event| event.id);
        for event in &fresh {
            self.seen.insert(event.id);
        }
        if let Some(last) = fresh.last() {
            self.newest = self.newest.max(Some(last.id));
        }
        if let Some(newest) = self.newest {
            let keep_from = EventId::first_at(newest.timestamp_ms().saturating_sub(REORDER_WINDOW_MS));
            self.seen = self.seen.split_off(&keep_from);
        }
        Ok(fresh)
    }
}
