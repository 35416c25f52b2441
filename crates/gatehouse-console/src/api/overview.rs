//! The audit log and the overview's stats: volume and verification
//! failures per source, attempt outcomes over time, deliveries per state,
//! the delivery lag and the latest verification failures.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use gatehouse_core::{AuditEntry, UnixMillis, VerificationFailure};
use gatehouse_store::{ActivityBucket, AttemptBucket, AuditQuery, SourceCounts};

use crate::state::ConsoleState;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::{limit, parse_optional_time, Params};

/// The window the stats cover by default.
const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// The bucket width by default.
const DEFAULT_BUCKET: Duration = Duration::from_secs(60 * 60);

/// The most buckets one answer may hold per series.
const MAX_BUCKETS: i64 = 1_000;

/// Recent verification failures shown.
const RECENT_FAILURES: u32 = 20;

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/stats", get(stats))
}

/// Filters for `GET /api/v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditFilters {
    /// Only this actor, e.g. `user:alice` or `token:tok_…`.
    actor: Option<String>,
    /// Only actions starting with this, e.g. `delivery.` or `route.pause`.
    action: Option<String>,
    /// Only this object, e.g. a delivery id or `route:orders`.
    object: Option<String>,
    /// Page cursor: the `next` of the previous page.
    before: Option<i64>,
    /// Page size (default 50, at most 1000).
    limit: Option<u32>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AuditPage {
    /// The entries.
    #[schema(value_type = Vec<Object>)]
    entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    next: Option<i64>,
}

/// The audit log: who did what, when, on what, from where.
#[utoipa::path(
    get, path = "/api/v1/audit", tag = "overview", params(AuditFilters),
    responses(
        (status = 200, description = "A page of the audit log", body = AuditPage),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(super) async fn audit(
    State(state): State<ConsoleState>,
    _caller: Caller,
    Params(filters): Params<AuditFilters>,
) -> Result<Json<AuditPage>, ApiError> {
    let query = AuditQuery {
        actor: filters.actor.filter(|a| !a.is_empty()),
        action_prefix: filters.action.filter(|a| !a.is_empty()),
        object: filters.object.filter(|o| !o.is_empty()),
        before: filters.before,
        limit: limit(filters.limit),
    };
    let entries = state.store.list_audit(&query).await?;
    let next = (entries.len() == query.limit as usize)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage { entries, next }))
}

/// `GET /api/v1/stats` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsParams {
    /// Start of the window (unix ms or RFC 3339; default 24 h ago).
    since: Option<String>,
    /// Bucket width in seconds (default 3600).
    bucket_secs: Option<u64>,
}

/// What the overview shows.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Stats {
    /// The current time, for the lag.
    #[schema(value_type = i64)]
    now: UnixMillis,
    /// The window's start.
    #[schema(value_type = i64)]
    since: UnixMillis,
    /// The bucket width in milliseconds.
    bucket_ms: u64,
    /// Events and verification failures per source and bucket.
    #[schema(value_type = Vec<Object>)]
    activity: Vec<ActivityBucket>,
    /// Attempts succeeded and failed per bucket.
    #[schema(value_type = Vec<Object>)]
    attempt_activity: Vec<AttemptBucket>,
    /// Deliveries per state, now.
    delivery_counts: BTreeMap<String, u64>,
    /// When the oldest due delivery became due, if any is waiting.
    #[schema(value_type = Option<i64>)]
    oldest_due_at: Option<UnixMillis>,
    /// How long the oldest due delivery has waited, in milliseconds.
    lag_ms: i64,
    /// Totals per source.
    #[schema(value_type = Vec<Object>)]
    sources: Vec<SourceCountsView>,
    /// The latest requests that failed verification.
    #[schema(value_type = Vec<Object>)]
    recent_verification_failures: Vec<VerificationFailure>,
}

/// Totals of one source.
#[derive(Debug, Serialize)]
pub(super) struct SourceCountsView {
    source: String,
    events: u64,
    duplicates: u64,
    verification_failures: u64,
}

impl From<SourceCounts> for SourceCountsView {
    fn from(counts: SourceCounts) -> Self {
        Self {
            source: counts.source,
            events: counts.events,
            duplicates: counts.duplicates,
            verification_failures: counts.verification_failures,
        }
    }
}

/// Volume, failure rate, queue depth and lag for the overview.
#[utoipa::path(
    get, path = "/api/v1/stats", tag = "overview", params(StatsParams),
    responses(
        (status = 200, description = "The stats", body = Stats),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 422, description = "Bad window or bucket", body = ErrorBody),
    )
)]
pub(super) async fn stats(
    State(state): State<ConsoleState>,
    _caller: Caller,
    Params(params): Params<StatsParams>,
) -> Result<Json<Stats>, ApiError> {
    let now = UnixMillis::now();
    let since = parse_optional_time("since", params.since.as_deref())?
        .unwrap_or(UnixMillis(now.0 - DEFAULT_WINDOW.as_millis() as i64));
    let bucket = params.bucket_secs.map_or(DEFAULT_BUCKET, Duration::from_secs);
    let bucket_ms = i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX);
    if bucket_ms <= 0 {
        return Err(ApiError::invalid("bucket_secs must be at least 1"));
    }
    if since > now {
        return Err(ApiError::invalid("since is in the future"));
    }
    if (now.0 - since.0) / bucket_ms > MAX_BUCKETS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_BUCKETS} buckets: widen bucket_secs or shorten the window"
        )));
    }
    let store = &state.store;
    let activity = store.activity(since, bucket).await?;
    let attempt_activity = store.attempt_activity(since, bucket).await?;
    let delivery_counts = store
        .delivery_counts()
        .await?
        .into_iter()
        .map(|(state, count)| (state.as_str().to_string(), count))
        .collect();
    let oldest_due_at = store.oldest_due_delivery(now).await?;
    let sources = store.source_counts().await?.into_iter().map(Into::into).collect();
    let recent_verification_failures = store.verification_failures(None, RECENT_FAILURES).await?;
    Ok(Json(Stats {
        now,
        since,
        bucket_ms: bucket_ms as u64,
        activity,
        attempt_activity,
        delivery_counts,
        lag_ms: oldest_due_at.map_or(0, |at| (now.0 - at.0).max(0)),
        oldest_due_at,
        sources,
        recent_verification_failures,
    }))
}
