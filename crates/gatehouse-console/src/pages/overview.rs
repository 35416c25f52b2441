//! The overview: volume per source, failure rate, queue sizes, delivery
//! lag and recent verification failures.

use std::time::Duration;

use askama::Template;
use axum::extract::{RawQuery, State};

use gatehouse_core::{DeliveryState, UnixMillis};

use super::charts::{self, Chart};
use super::{view, Ctx, FormData, PageResult, Shared, Viewer};

/// A time range the overview can show.
struct Range {
    key: &'static str,
    label: &'static str,
    span: Duration,
    bucket: Duration,
}

const RANGES: [Range; 3] = [
    Range {
        key: "1h",
        label: "Last hour",
        span: Duration::from_secs(3600),
        bucket: Duration::from_secs(300),
    },
    Range {
        key: "24h",
        label: "Last 24 hours",
        span: Duration::from_secs(24 * 3600),
        bucket: Duration::from_secs(3600),
    },
    Range {
        key: "7d",
        label: "Last 7 days",
        span: Duration::from_secs(7 * 24 * 3600),
        bucket: Duration::from_secs(6 * 3600),
    },
];

/// A range link at the top of the page.
struct RangeLink {
    href: String,
    label: &'static str,
    active: bool,
}

/// One source's line.
struct SourceLine {
    name: String,
    provider: String,
    href: String,
    events: u64,
    duplicates: u64,
    verification_failures: u64,
    in_range: u64,
}

/// One recent verification failure.
struct FailureLine {
    at: String,
    source: String,
    reason: String,
    remote_addr: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    ctx: Ctx,
    ranges: Vec<RangeLink>,
    range_label: &'static str,
    events_chart: Chart,
    failure_chart: Chart,
    events_in_range: u64,
    failures_in_range: u64,
    attempts_in_range: u64,
    failure_rate: String,
    dead: u64,
    awaiting: u64,
    retrying: u64,
    pending: u64,
    lag: String,
    lag_bad: bool,
    sources: Vec<SourceLine>,
    verification_failures: Vec<FailureLine>,
}

/// `GET /console`.
pub(crate) async fn page(State(pages): State<Shared>, viewer: Viewer, RawQuery(query): RawQuery) -> PageResult {
    let query = FormData::parse(query.unwrap_or_default().as_bytes());
    let range = RANGES
        .iter()
        .find(|range| Some(range.key) == query.get("range"))
        .unwrap_or(&RANGES[1]);
    let store = &pages.state.store;
    let now = UnixMillis::now();
    let since = UnixMillis(now.0 - range.span.as_millis() as i64);
    let activity = store.activity(since, range.bucket).await?;
    let attempts = store.attempt_activity(since, range.bucket).await?;
    let counts = store.delivery_counts().await?;
    let count = |state: DeliveryState| counts.iter().find(|(s, _)| *s == state).map(|(_, n)| *n).unwrap_or(0);
    let oldest_due = store.oldest_due_delivery(now).await?;
    let source_counts = store.source_counts().await?;
    let failures = store.verification_failures(None, 10).await?;

    let events_in_range: u64 = activity.iter().map(|b| b.events).sum();
    let failures_in_range: u64 = activity.iter().map(|b| b.verification_failures).sum();
    let succeeded: u64 = attempts.iter().map(|b| b.succeeded).sum();
    let failed: u64 = attempts.iter().map(|b| b.failed).sum();
    let attempts_in_range = succeeded + failed;
    let failure_rate = if attempts_in_range == 0 {
        "—".to_string()
    } else {
        format!("{:.1}%", failed as f64 * 100.0 / attempts_in_range as f64)
    };
    let lag_ms = oldest_due.map(|due| now.0.saturating_sub(due.0).max(0) as u64);
    let lag = lag_ms.map_or_else(|| "none due".to_string(), |ms| view::span(Duration::from_millis(ms)));

    // Every configured source, with counts when it has any; plus sources
    // that have events but are no longer configured.
    let mut sources: Vec<SourceLine> = pages
        .state
        .catalog
        .sources
        .iter()
        .map(|source| SourceLine {
            name: source.name.clone(),
            provider: source.provider.clone(),
            href: view::link("/console/events", &[("source", &source.name)]),
            events: 0,
            duplicates: 0,
            verification_failures: 0,
            in_range: 0,
        })
        .collect();
    for counted in &source_counts {
        let line = match sources.iter_mut().position(|line| line.name == counted.source) {
            Some(index) => &mut sources[index],
            None => {
                sources.push(SourceLine {
                    name: counted.source.clone(),
                    provider: "(not configured)".into(),
                    href: view::link("/console/events", &[("source", &counted.source)]),
                    events: 0,
                    duplicates: 0,
                    verification_failures: 0,
                    in_range: 0,
                });
                let last = sources.len() - 1;
                &mut sources[last]
            }
        };
        line.events = counted.events;
        line.duplicates = counted.duplicates;
        line.verification_failures = counted.verification_failures;
    }
    for line in &mut sources {
        line.in_range = activity
            .iter()
            .filter(|b| b.source == line.name)
            .map(|b| b.events)
            .sum();
    }

    let page = OverviewPage {
        ctx: viewer.ctx("overview"),
        ranges: RANGES
            .iter()
            .map(|r| RangeLink {
                href: view::link("/console", &[("range", r.key)]),
                label: r.label,
                active: r.key == range.key,
            })
            .collect(),
        range_label: range.label,
        events_chart: charts::events_per_source(&activity, since, now, range.bucket),
        failure_chart: charts::failure_rate(&attempts, since, now, range.bucket),
        events_in_range,
        failures_in_range,
        attempts_in_range,
        failure_rate,
        dead: count(DeliveryState::Dead),
        awaiting: count(DeliveryState::AwaitingApproval),
        retrying: count(DeliveryState::Retrying),
        pending: count(DeliveryState::Pending),
        lag,
        lag_bad: lag_ms.is_some_and(|ms| ms > 60_000),
        sources,
        verification_failures: failures
            .into_iter()
            .map(|f| FailureLine {
                at: view::time(f.at),
                source: f.source,
                reason: f.reason,
                remote_addr: f.remote_addr.unwrap_or_default(),
            })
            .collect(),
    };
    Ok(viewer.render(&page))
}
