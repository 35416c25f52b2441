//! Ingest telemetry as types: each [`IngestEvent`] emits its log line and
//! bumps its counter in one place, so names stay consistent. Counters are
//! served in Prometheus text format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use gatehouse_core::EventId;

/// Picks one counter out of a source's counters.
type CounterOf = fn(&SourceCounters) -> &AtomicU64;

/// Per-source ingest counters.
#[derive(Debug, Default)]
pub struct SourceCounters {
    accepted: AtomicU64,
    ignored: AtomicU64,
    pings: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    too_large: AtomicU64,
    rate_limited: AtomicU64,
    unavailable: AtomicU64,
}

/// Counters for every configured source, fixed at start-up (no lock needed).
#[derive(Debug, Default)]
pub struct Metrics {
    sources: BTreeMap<String, SourceCounters>,
    /// Requests for sources that do not exist.
    pub unknown_source: AtomicU64,
}

/// Something that happened to one inbound request.
#[derive(Debug)]
pub enum IngestEvent<'a> {
    /// Committed as a new event that routes will see.
    Accepted(&'a EventId),
    /// Committed, outside the source's subscription.
    Ignored(&'a EventId),
    /// Committed as a ping or handshake.
    Ping(&'a EventId),
    /// Same source and dedup key as a stored event.
    Duplicate(&'a EventId),
    /// Failed verification.
    Rejected {
        /// The rejection's reason code.
        reason: &'static str,
        /// The peer.
        remote: &'a str,
    },
    /// Body over the limit.
    TooLarge,
    /// Verified, but over the source's rate limit; answered 429.
    RateLimited,
    /// Could not be committed; answered 503.
    Unavailable,
}

impl Metrics {
    /// Counters for these sources.
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            sources: sources
                .into_iter()
                .map(|s| (s.to_string(), SourceCounters::default()))
                .collect(),
            unknown_source: AtomicU64::new(0),
        }
    }

    /// Logs `event` and counts it against `source`.
    pub fn emit(&self, source: &str, event: IngestEvent<'_>) {
        let Some(counters) = self.sources.get(source) else {
            return;
        };
        let counter = match event {
            IngestEvent::Accepted(id) => {
                tracing::debug!(source, event_id = %id, "Accepted.");
                &counters.accepted
            }
            IngestEvent::Ignored(id) => {
                tracing::debug!(source, event_id = %id, "Accepted outside the subscription; ignored.");
                &counters.ignored
            }
            IngestEvent::Ping(id) => {
                tracing::info!(source, event_id = %id, "Ping or handshake recorded.");
                &counters.pings
            }
            IngestEvent::Duplicate(id) => {
                tracing::debug!(source, original = %id, "Duplicate acknowledged.");
                &counters.duplicates
            }
            IngestEvent::Rejected { reason, remote } => {
                tracing::warn!(source, reason, remote, "Verification failed.");
                &counters.rejected
            }
            IngestEvent::TooLarge => {
                tracing::warn!(source, "Body over the limit.");
                &counters.too_large
            }
            IngestEvent::RateLimited => {
                tracing::debug!(source, "Over the source's rate limit; answered 429.");
                &counters.rate_limited
            }
            IngestEvent::Unavailable => &counters.unavailable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters in Prometheus text exposition format.
    pub fn render(&self, dropped_failure_records: u64) -> String {
        let mut out = String::new();
        let families: [(&str, &str, CounterOf); 8] = [
            ("accepted", "Events committed and routed.", |c| &c.accepted),
            ("ignored", "Events committed outside the subscription.", |c| &c.ignored),
            ("pings", "Pings and handshakes recorded.", |c| &c.pings),
            ("duplicates", "Duplicate requests acknowledged.", |c| &c.duplicates),
            ("rejected", "Requests that failed verification.", |c| &c.rejected),
            ("too_large", "Requests over the body limit.", |c| &c.too_large),
            (
                "rate_limited",
                "Verified requests answered 429 (the source's rate limit).",
                |c| &c.rate_limited,
            ),
            ("unavailable", "Requests answered 503 because storage failed.", |c| {
                &c.unavailable
            }),
        ];
        for (name, help, counter) in families {
            let _ = writeln!(out, "# HELP gatehouse_ingest_{name}_total {help}");
            let _ = writeln!(out, "# TYPE gatehouse_ingest_{name}_total counter");
            for (source, counters) in &self.sources {
                let _ = writeln!(
                    out,
                    "gatehouse_ingest_{name}_total{{source=\"{source}\"}} {}",
                    counter(counters).load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# TYPE gatehouse_ingest_unknown_source_total counter");
        let _ = writeln!(
            out,
            "gatehouse_ingest_unknown_source_total {}",
            self.unknown_source.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE gatehouse_verification_failure_records_dropped_total counter"
        );
        let _ = writeln!(
            out,
            "gatehouse_verification_failure_records_dropped_total {dropped_failure_records}"
        );
        out
    }
}
