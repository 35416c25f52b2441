//! Event search, the event detail page, and the retry and replay buttons
//! on it.

use std::str::FromStr;

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use http::HeaderMap;

use gatehouse_core::{DeliveryId, DeliveryState, Disposition, EventId, EventSummary, Header};
use gatehouse_deliver::replay::Selection;
use gatehouse_store::EventQuery;

use super::{back_to, done, view, Ctx, FormData, PageError, PageResult, Posted, Shared, Viewer};
use crate::actions;

/// Rows per search page.
const PAGE: u32 = 50;

/// One option of a `<select>`.
pub(crate) struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// One row of the results.
pub(crate) struct EventRow {
    pub id: String,
    pub href: String,
    pub received: String,
    pub source: String,
    pub event_type: String,
    pub provider_event_id: String,
    pub disposition: &'static str,
    pub origin: &'static str,
    pub duplicates: u32,
    pub pruned: bool,
}

impl EventRow {
    pub fn from_summary(event: &EventSummary) -> Self {
        Self {
            id: event.id.to_string(),
            href: format!("/console/events/{}", event.id),
            received: view::time(event.received_at),
            source: event.source.clone(),
            event_type: event.event_type.clone().unwrap_or_default(),
            provider_event_id: event.provider_event_id.clone().unwrap_or_default(),
            disposition: event.disposition.as_str(),
            origin: event.origin.as_str(),
            duplicates: event.duplicates,
            pruned: event.pruned_at.is_some(),
        }
    }
}

#[derive(Template)]
#[template(path = "events.html")]
struct SearchPage {
    ctx: Ctx,
    sources: Vec<Choice>,
    statuses: Vec<Choice>,
    event_type: String,
    provider_id: String,
    from: String,
    to: String,
    body: String,
    rows: Vec<EventRow>,
    older: Option<String>,
    newest: Option<String>,
    problem: Option<String>,
}

/// `GET /console/events`: search by source, type, provider id, status,
/// time range and body text, newest first, keyset-paginated.
pub(crate) async fn search(State(pages): State<Shared>, viewer: Viewer, RawQuery(query): RawQuery) -> PageResult {
    let q = FormData::parse(query.unwrap_or_default().as_bytes());
    let mut problem = None;
    let source = q.text("source").unwrap_or_default().to_string();
    let status = q.text("status").unwrap_or_default().to_string();
    let event_type = q.text("type").unwrap_or_default().to_string();
    let provider_id = q.text("provider_id").unwrap_or_default().to_string();
    let body = q.get("q").unwrap_or_default().to_string();
    let from_text = q.text("from").unwrap_or_default().to_string();
    let to_text = q.text("to").unwrap_or_default().to_string();
    let mut parse_time = |text: &str, what: &str| {
        if text.is_empty() {
            return None;
        }
        let parsed = view::parse_time(text);
        if parsed.is_none() {
            problem = Some(format!(
                "The {what} time is not a date and time like 2026-11-27T09:00 (UTC)."
            ));
        }
        parsed
    };
    let received_from = parse_time(&from_text, "from");
    let received_to = parse_time(&to_text, "to");
    let before = q.text("before").and_then(|id| EventId::from_str(id).ok());

    let mut query = EventQuery {
        source: (!source.is_empty()).then(|| source.clone()),
        event_type: (!event_type.is_empty()).then(|| event_type.clone()),
        provider_event_id: (!provider_id.is_empty()).then(|| provider_id.clone()),
        received_from,
        received_to,
        body_contains: (!body.is_empty()).then(|| body.clone()),
        before,
        limit: PAGE,
        ..EventQuery::default()
    };
    match status.split_once(':') {
        Some(("disposition", name)) => query.disposition = Disposition::parse(name),
        Some(("delivery", name)) => query.delivery_state = DeliveryState::parse(name),
        _ => {}
    }
    let events = pages.state.store.list_events(&query).await?;
    let keep = |extra: (&'static str, String)| {
        let pairs = [
            ("source", source.as_str()),
            ("status", status.as_str()),
            ("type", event_type.as_str()),
            ("provider_id", provider_id.as_str()),
            ("from", from_text.as_str()),
            ("to", to_text.as_str()),
            ("q", body.as_str()),
            (extra.0, extra.1.as_str()),
        ];
        view::link("/console/events", &pairs)
    };
    let older = (events.len() == PAGE as usize)
        .then(|| events.last().map(|last| keep(("before", last.id.to_string()))))
        .flatten();
    let newest = before.map(|_| keep(("before", String::new())));

    let mut source_names: Vec<String> = pages.state.catalog.sources.iter().map(|s| s.name.clone()).collect();
    if !source.is_empty() && !source_names.contains(&source) {
        source_names.push(source.clone());
    }
    let mut sources = vec![Choice {
        value: String::new(),
        label: "Any source".into(),
        selected: source.is_empty(),
    }];
    sources.extend(source_names.into_iter().map(|name| Choice {
        selected: name == source,
        label: name.clone(),
        value: name,
    }));
    let mut statuses = vec![Choice {
        value: String::new(),
        label: "Any status".into(),
        selected: status.is_empty(),
    }];
    for disposition in [Disposition::Accepted, Disposition::Ignored, Disposition::Ping] {
        let value = format!("disposition:{}", disposition.as_str());
        statuses.push(Choice {
            selected: value == status,
            label: format!("Event {}", disposition.as_str()),
            value,
        });
    }
    for state in DeliveryState::ALL {
        let value = format!("delivery:{}", state.as_str());
        statuses.push(Choice {
            selected: value == status,
            label: format!("A delivery {}", state.as_str().replace('_', " ")),
            value,
        });
    }
    let page = SearchPage {
        ctx: viewer.ctx("events"),
        sources,
        statuses,
        event_type,
        provider_id,
        from: from_text,
        to: to_text,
        body,
        rows: events.iter().map(EventRow::from_summary).collect(),
        older,
        newest,
        problem,
    };
    Ok(viewer.render(&page))
}

/// A header as shown: credentials and signatures replaced.
struct HeaderLine {
    name: String,
    value: String,
    redacted: bool,
}

/// Headers whose values are never shown nor copied: signatures, tokens,
/// cookies and anything that looks like a credential.
pub(crate) fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "sig",
        "hmac",
        "auth",
        "token",
        "secret",
        "key",
        "cookie",
        "password",
        "credential",
        "session",
    ]
    .iter()
    .any(|part| name.contains(part))
}

/// Headers a copied request does not need (curl sets them itself).
fn is_transport_header(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "host" | "content-length" | "connection" | "transfer-encoding" | "accept-encoding" | "expect" | "keep-alive"
    )
}

/// Single-quotes text for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A curl command that sends the event again as it arrived, except for
/// signature and credential headers, which become a comment: the console
/// never shows secrets, and an old signature would be stale anyway.
pub(crate) fn copy_as_curl(url: &str, headers: &[Header], body: &[u8]) -> String {
    let mut comments = Vec::new();
    let mut command = format!("curl -sS -X POST {}", shell_quote(url));
    for header in headers {
        if is_transport_header(&header.name) {
            continue;
        }
        if is_sensitive_header(&header.name) {
            comments.push(format!(
                "# {}: <removed: a signature or credential; sign again, e.g. with `gatehouse send`>",
                header.name.replace(['\r', '\n'], " ")
            ));
            continue;
        }
        command.push_str(" \\\n  -H ");
        command.push_str(&shell_quote(&format!("{}: {}", header.name, header.value)));
    }
    command.push_str(" \\\n  --data-binary ");
    command.push_str(&shell_quote(&String::from_utf8_lossy(body)));
    if comments.is_empty() {
        command
    } else {
        format!("{}\n{command}", comments.join("\n"))
    }
}

/// One attempt on the timeline.
struct AttemptLine {
    number: u32,
    started: String,
    duration: String,
    status: String,
    outcome: &'static str,
    error: String,
    response: String,
}

/// One delivery with its attempts.
struct DeliveryBlock {
    id: String,
    route: String,
    route_href: String,
    /// The route is paused: a pending delivery waits for it.
    route_paused: bool,
    state: &'static str,
    attempts: u32,
    next_attempt: String,
    show_next: bool,
    last_error: String,
    created: String,
    is_dead: bool,
    is_awaiting: bool,
    timeline: Vec<AttemptLine>,
    enrichment: Option<EnrichmentView>,
}

/// What an enrichment fetch returned, beside the payload.
#[derive(Clone)]
struct EnrichmentView {
    route: String,
    fetched: String,
    url: String,
    status: String,
    error: String,
    body: String,
}

#[derive(Template)]
#[template(path = "event.html")]
struct DetailPage {
    ctx: Ctx,
    id: String,
    back: String,
    source: String,
    source_href: String,
    received: String,
    event_type: String,
    provider_event_id: String,
    dedup_key: String,
    disposition: &'static str,
    origin: &'static str,
    verification: String,
    remote_addr: String,
    duplicates: u32,
    last_duplicate: String,
    pruned: String,
    headers: Vec<HeaderLine>,
    body: String,
    body_is_json: bool,
    body_len: usize,
    curl: String,
    deliveries: Vec<DeliveryBlock>,
    /// The latest enrichment of any delivery, shown beside the body.
    enrichment: Option<EnrichmentView>,
    routes: Vec<String>,
}

/// `GET /console/events/{id}`.
pub(crate) async fn detail(
    State(pages): State<Shared>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let event_id = EventId::from_str(&id).map_err(|_| PageError::NotFound(format!("event {id}")))?;
    let store = &pages.state.store;
    let event = store
        .event(event_id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("event {event_id}")))?;
    let deliveries = store.deliveries_for_event(event_id).await?;
    let paused = store.paused_routes().await?;
    let mut blocks = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let attempts = store.attempts(delivery.id).await?;
        let enrichment = store.enrichment(delivery.id).await?;
        let route_name = delivery.route.clone();
        blocks.push(DeliveryBlock {
            id: delivery.id.to_string(),
            route_href: view::link("/console/catalog", &[]) + "#route-" + &view::segment(&delivery.route),
            route_paused: paused.contains(&delivery.route),
            route: delivery.route,
            state: delivery.state.as_str(),
            attempts: delivery.attempts,
            show_next: matches!(delivery.state, DeliveryState::Pending | DeliveryState::Retrying),
            next_attempt: view::time(delivery.next_attempt_at),
            last_error: delivery.last_error.unwrap_or_default(),
            created: view::time(delivery.created_at),
            is_dead: delivery.state == DeliveryState::Dead,
            is_awaiting: delivery.state == DeliveryState::AwaitingApproval,
            timeline: attempts
                .into_iter()
                .map(|attempt| AttemptLine {
                    number: attempt.number,
                    started: view::time(attempt.started_at),
                    duration: format!("{} ms", attempt.duration_ms),
                    status: attempt.status_code.map(|code| code.to_string()).unwrap_or_default(),
                    outcome: attempt.outcome.as_str(),
                    error: attempt.error.unwrap_or_default(),
                    response: view::body(&attempt.response_excerpt).0,
                })
                .collect(),
            enrichment: enrichment.map(|e| EnrichmentView {
                route: route_name,
                fetched: view::time(e.fetched_at),
                url: e.url,
                status: e.status_code.map(|code| code.to_string()).unwrap_or_default(),
                error: e.error.unwrap_or_default(),
                body: view::body(&e.body).0,
            }),
        });
    }
    let summary = &event.summary;
    let host = headers
        .get(http::header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if pages.state.secure_cookies { "https" } else { "http" };
    let url = format!("{scheme}://{host}/in/{}", view::segment(&summary.source));
    let (body, body_is_json) = view::body(&event.body);
    let routes = pages
        .state
        .catalog
        .routes
        .iter()
        .filter(|route| route.source == summary.source)
        .map(|route| route.name.clone())
        .collect();
    let page = DetailPage {
        ctx: viewer.ctx("events"),
        id: summary.id.to_string(),
        back: format!("/console/events/{}", summary.id),
        source_href: view::link("/console/events", &[("source", &summary.source)]),
        source: summary.source.clone(),
        received: view::time(summary.received_at),
        event_type: summary.event_type.clone().unwrap_or_default(),
        provider_event_id: summary.provider_event_id.clone().unwrap_or_default(),
        dedup_key: summary.dedup_key.clone(),
        disposition: summary.disposition.as_str(),
        origin: summary.origin.as_str(),
        verification: event.verification.clone(),
        remote_addr: event.remote_addr.clone().unwrap_or_default(),
        duplicates: summary.duplicates,
        last_duplicate: view::time_opt(summary.last_duplicate_at),
        pruned: summary.pruned_at.map(view::time).unwrap_or_default(),
        headers: event
            .headers
            .iter()
            .map(|header| {
                let redacted = is_sensitive_header(&header.name);
                HeaderLine {
                    name: header.name.clone(),
                    value: if redacted {
                        format!("‹hidden: {} bytes›", header.value.len())
                    } else {
                        header.value.clone()
                    },
                    redacted,
                }
            })
            .collect(),
        body_len: event.body.len(),
        body,
        body_is_json,
        curl: copy_as_curl(&url, &event.headers, &event.body),
        enrichment: blocks.iter().rev().find_map(|block| block.enrichment.clone()),
        deliveries: blocks,
        routes,
    };
    Ok(viewer.render(&page))
}

/// `POST /console/deliveries/{id}/retry`: makes a dead delivery due again.
pub(crate) async fn retry(State(pages): State<Shared>, Path(id): Path<String>, posted: Posted) -> PageResult {
    let delivery_id = DeliveryId::from_str(&id).map_err(|_| PageError::NotFound(format!("delivery {id}")))?;
    let delivery = actions::retry_delivery(&*pages.state.store, &posted.principal(), delivery_id).await?;
    let fallback = format!("/console/events/{}", delivery.event_id);
    Ok(done(
        &back_to(&posted.form, &fallback),
        format!("Delivery {delivery_id} on {} is due again.", delivery.route),
    ))
}

/// `POST /console/events/{id}/replay`: new deliveries for the event, on
/// every route that takes it or on the one chosen.
pub(crate) async fn replay(State(pages): State<Shared>, Path(id): Path<String>, posted: Posted) -> PageResult {
    let event_id = EventId::from_str(&id).map_err(|_| PageError::NotFound(format!("event {id}")))?;
    let route = posted.form.text("route");
    let report = actions::replay(
        &pages.state,
        &posted.principal(),
        &Selection::Events(vec![event_id]),
        route,
        false,
    )
    .await?;
    let notice = match report.deliveries {
        0 => "Nothing replayed: no route takes this event.".to_string(),
        1 => "Replayed: 1 new delivery.".to_string(),
        n => format!("Replayed: {n} new deliveries."),
    };
    Ok(done(
        &back_to(&posted.form, &format!("/console/events/{event_id}")),
        notice,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn curl_leaves_out_signatures_and_quotes_everything() {
        let headers = vec![
            header("host", "example.test"),
            header("content-type", "application/json"),
            header("stripe-signature", "t=1,v1=deadbeef"),
            header("authorization", "Bearer hunter2"),
            header("x-note", "it's"),
        ];
        let curl = copy_as_curl("http://gw.test/in/stripe", &headers, br#"{"a":"it's $(rm -rf /)"}"#);
        assert!(!curl.contains("deadbeef"));
        assert!(!curl.contains("hunter2"));
        assert!(curl.contains("# stripe-signature: <removed"));
        assert!(curl.contains("# authorization: <removed"));
        assert!(!curl.contains("example.test"));
        assert!(curl.contains(r"-H 'x-note: it'\''s'"));
        assert!(curl.contains(r#"--data-binary '{"a":"it'\''s $(rm -rf /)"}'"#));
        assert!(curl.starts_with("# "));
    }

    #[test]
    fn sensitive_headers() {
        for name in [
            "Stripe-Signature",
            "x-hub-signature-256",
            "X-Shopify-Hmac-Sha256",
            "Authorization",
            "X-Api-Key",
            "cookie",
            "paypal-transmission-sig",
        ] {
            assert!(is_sensitive_header(name), "{name}");
        }
        for name in ["content-type", "user-agent", "x-github-event", "stripe-event-id"] {
            assert!(!is_sensitive_header(name), "{name}");
        }
    }
}
