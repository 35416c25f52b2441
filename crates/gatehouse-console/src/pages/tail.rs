//! Live tail: the newest events, then each new one as it is stored, over
//! server-sent events. The stream polls the store through
//! [`EventTail`] (index range scans), which reports every committed event
//! once even when a burst outgrows a page or commits land out of id order,
//! so it works the same on SQLite and on PostgreSQL with several gatehouse
//! processes.

use std::convert::Infallible;
use std::str::FromStr;
use std::time::Duration;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use http::HeaderMap;
use tokio::sync::mpsc;

use gatehouse_core::EventId;
use gatehouse_store::tail::EventTail;
use gatehouse_store::EventQuery;

use super::events::{Choice, EventRow};
use super::{view, Ctx, FormData, PageResult, Shared, Viewer};

/// How often the stream asks the store for new events.
const POLL: Duration = Duration::from_secs(1);
/// How often the stream checks that its session is still live (a user
/// disabled or logged out stops seeing events within this).
const SESSION_CHECK: Duration = Duration::from_secs(30);
/// Events shown when the page opens.
const INITIAL: u32 = 20;
/// Messages waiting for the browser at most: a slow browser slows the
/// polling instead of growing a queue.
const BATCH: u32 = 200;

#[derive(Template)]
#[template(path = "tail.html")]
struct TailPage {
    ctx: Ctx,
    sources: Vec<Choice>,
    stream_url: String,
    rows: Vec<EventRow>,
}

/// `GET /console/tail`.
pub(crate) async fn page(State(pages): State<Shared>, viewer: Viewer, RawQuery(query): RawQuery) -> PageResult {
    let q = FormData::parse(query.unwrap_or_default().as_bytes());
    let source = q.text("source").unwrap_or_default().to_string();
    let events = pages
        .state
        .store
        .list_events(&EventQuery {
            source: (!source.is_empty()).then(|| source.clone()),
            limit: INITIAL,
            ..EventQuery::default()
        })
        .await?;
    let after = events.first().map(|event| event.id.to_string()).unwrap_or_default();
    let mut sources = vec![Choice {
        value: String::new(),
        label: "Every source".into(),
        selected: source.is_empty(),
    }];
    sources.extend(pages.state.catalog.sources.iter().map(|s| Choice {
        value: s.name.clone(),
        label: s.name.clone(),
        selected: s.name == source,
    }));
    let page = TailPage {
        ctx: viewer.ctx("tail"),
        sources,
        stream_url: view::link("/console/tail/stream", &[("source", &source), ("after", &after)]),
        rows: events.iter().map(EventRow::from_summary).collect(),
    };
    Ok(viewer.render(&page))
}

/// What the browser gets per event (it inserts each field as text).
#[derive(serde::Serialize)]
struct TailEvent<'a> {
    id: String,
    received: String,
    source: &'a str,
    event_type: Option<&'a str>,
    provider_event_id: Option<&'a str>,
    disposition: &'static str,
}

/// `GET /console/tail/stream`: `event: event` messages, one per stored
/// event after the cursor (`after`, or the browser's `Last-Event-ID` on
/// reconnect).
pub(crate) async fn stream(
    State(pages): State<Shared>,
    // Only for its check: no session, no stream.
    _viewer: Viewer,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let q = FormData::parse(query.unwrap_or_default().as_bytes());
    let source = q.text("source").map(str::to_string);
    let last_seen = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .or(q.text("after"))
        .and_then(|id| EventId::from_str(id).ok());
    let (sender, receiver) = mpsc::channel::<Event>(BATCH as usize);
    tokio::spawn(follow(pages, headers, source, last_seen, sender));
    Sse::new(into_stream(receiver))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn into_stream(receiver: mpsc::Receiver<Event>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    })
}

/// Polls for new events and sends them until the browser goes away or
/// the session ends.
async fn follow(
    pages: Shared,
    headers: HeaderMap,
    source: Option<String>,
    after: Option<EventId>,
    sender: mpsc::Sender<Event>,
) {
    let store = pages.state.store.clone();
    // Without a cursor, start from now: the page already shows the latest
    // events.
    let mut tail = match after {
        Some(after) => EventTail::after(source, after),
        None => match EventTail::starting_now(&*store, source).await {
            Ok(tail) => tail,
            Err(error) => {
                // Ending the stream makes the browser reconnect (and start
                // again) after its retry delay; starting from the
                // beginning would send every stored event.
                tracing::warn!(%error, "Live tail could not start; closing the stream.");
                return;
            }
        },
    };
    let mut since_check = Duration::ZERO;
    loop {
        if sender.is_closed() {
            return;
        }
        if since_check >= SESSION_CHECK {
            since_check = Duration::ZERO;
            if !matches!(pages.sessions.current(&headers).await, Ok(Some(_))) {
                return;
            }
        }
        match tail.poll(&*store).await {
            Ok(events) => {
                for event in &events {
                    let data = TailEvent {
                        id: event.id.to_string(),
                        received: view::time(event.received_at),
                        source: &event.source,
                        event_type: event.event_type.as_deref(),
                        provider_event_id: event.provider_event_id.as_deref(),
                        disposition: event.disposition.as_str(),
                    };
                    let Ok(message) = Event::default()
                        .event("event")
                        .id(event.id.to_string())
                        .json_data(&data)
                    else {
                        continue;
                    };
                    if sender.send(message).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "Live tail could not read events; trying again."),
        }
        tokio::time::sleep(POLL).await;
        since_check += POLL;
    }
}
