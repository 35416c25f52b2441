//! One attempt of one claimed delivery, start to end: the route's jq
//! filter and transform, a slot at the destination, the send, and the
//! verdict handed to the finisher.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use gatehouse_core::{Attempt, DeliveryId, FinishedAttempt, RetryPolicy, UnixMillis};
use gatehouse_store::ClaimedDelivery;

use crate::destination::{Outbound, Report};
use crate::finisher::Finisher;
use crate::jq;
use crate::outcome::{self, AttemptResult, JqStage, RetryRules};
use crate::route::{Route, RouteTable};

/// What an attempt task leaves for the dispatcher.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The attempt was made (or judged) and handed to the finisher.
    Finished,
    /// Nothing was sent: the delivery goes back to the store (shutdown, or
    /// it waited so long for its destination that its lease could run out
    /// mid-attempt).
    Released(DeliveryId),
}

/// What every attempt task shares.
pub(crate) struct Shared {
    /// Where enrichment fetches are stored.
    pub store: Arc<dyn gatehouse_store::Store>,
    /// The routes.
    pub table: Arc<RouteTable>,
    /// Where verdicts go.
    pub finisher: Finisher,
    /// How long a claim holds.
    pub lease: Duration,
    /// Turns `true` when the engine stops claiming.
    pub stopping: watch::Receiver<bool>,
}

/// How much of the lease is kept back for recording the result.
fn lease_margin(lease: Duration) -> Duration {
    (lease / 10).min(Duration::from_secs(5))
}

/// Runs one attempt of `claimed`, claimed at `claimed_at`.
pub(crate) async fn run(shared: Arc<Shared>, claimed: ClaimedDelivery, claimed_at: Instant) -> Ending {
    let delivery = &claimed.delivery;
    let number = delivery.attempts.saturating_add(1);
    let Some(route) = shared.table.route(&delivery.route).cloned() else {
        tracing::warn!(delivery_id = %delivery.id, route = %delivery.route, "Delivery for a route this process does not know; retrying later.");
        let report = Report::bare(AttemptResult::RouteNotConfigured);
        let policy = RetryPolicy::default();
        finish(
            &shared,
            &claimed,
            number,
            UnixMillis::now(),
            Duration::ZERO,
            report,
            &policy,
            RetryRules::default(),
        )
        .await;
        return Ending::Finished;
    };

    let started_at = UnixMillis::now();
    let started = Instant::now();
    // Ends the attempt before anything is sent, with the reason in `report`.
    let end_early = |report: Report| async {
        finish(
            &shared,
            &claimed,
            number,
            started_at,
            started.elapsed(),
            report,
            &route.retry,
            route.rules,
        )
        .await;
        Ending::Finished
    };
    if claimed.event.summary.pruned_at.is_some() {
        return end_early(Report::bare(AttemptResult::EventPruned)).await;
    }
    let (body, transformed) = match apply_programs(&route, &claimed.event.body).await {
        Ok(Some(transformed)) => (transformed, true),
        Ok(None) => (claimed.event.body.clone(), false),
        Err(result) => return end_early(Report::bare(result)).await,
    };

    // Enrichment runs after the filter (a skipped event costs no fetch)
    // and before a destination slot is taken.
    let (body, transformed) = match &route.enrich {
        None => (body, transformed),
        Some(enricher) => {
            match crate::enrich::fetch_and_combine(&*shared.store, delivery.id, enricher, &claimed.event.body, &body)
                .await
            {
                Ok(enriched) => (enriched, true),
                Err(report) => return end_early(report).await,
            }
        }
    };

    let destination = &route.destination;
    // Wait for a slot only as long as the attempt can still finish, and be
    // recorded, before the lease runs out.
    let budget = shared
        .lease
        .saturating_sub(destination.timeout)
        .saturating_sub(lease_margin(shared.lease));
    let mut stopping = shared.stopping.clone();
    let slot = tokio::select! {
        slot = destination.acquire(claimed_at + budget) => slot,
        _ = stopping.wait_for(|stop| *stop) => None,
    };
    let Some(slot) = slot else {
        tracing::debug!(delivery_id = %delivery.id, destination = %destination.name, "Released a delivery that could not get a slot in time.");
        return Ending::Released(delivery.id);
    };

    let started_at = UnixMillis::now();
    let started = Instant::now();
    let outbound = Outbound {
        event: &claimed.event,
        delivery_id: delivery.id,
        route: &route.name,
        attempt: number,
        body,
        transformed,
    };
    let report = destination.send(&outbound, &slot).await;
    drop(slot);
    finish(
        &shared,
        &claimed,
        number,
        started_at,
        started.elapsed(),
        report,
        &route.retry,
        route.rules,
    )
    .await;
    Ending::Finished
}

/// Runs the route's filter and transform on the body: `None` to send the
/// body as it is, the transform's output, or the result that ends the
/// attempt (skipped, jq error, not JSON). Programs run on the blocking pool
/// so a heavy one cannot stall the runtime.
async fn apply_programs(route: &Arc<Route>, body: &Bytes) -> Result<Option<Bytes>, AttemptResult> {
    if route.filter.is_none() && route.transform.is_none() {
        return Ok(None);
    }
    let (route, body) = (route.clone(), body.clone());
    tokio::task::spawn_blocking(move || run_programs(&route, &body))
        .await
        .unwrap_or_else(|_| {
            Err(AttemptResult::Jq {
                stage: JqStage::Filter,
                message: "the jq program crashed".into(),
            })
        })
}

fn run_programs(route: &Route, body: &[u8]) -> Result<Option<Bytes>, AttemptResult> {
    let first_stage = match (&route.filter, &route.transform) {
        (None, None) => return Ok(None),
        (Some(_), _) => JqStage::Filter,
        (None, Some(_)) => JqStage::Transform,
    };
    let input = jq::Input::parse(body).map_err(|_| AttemptResult::NotJson { stage: first_stage })?;
    if let Some(filter) = &route.filter {
        match filter.first(&input) {
            Err(message) => {
                return Err(AttemptResult::Jq {
                    stage: JqStage::Filter,
                    message,
                })
            }
            Ok(None) => return Err(AttemptResult::FilteredOut { yielded: "no output" }),
            Ok(Some(output)) if output.is_null() => return Err(AttemptResult::FilteredOut { yielded: "null" }),
            Ok(Some(output)) if !output.is_truthy() => return Err(AttemptResult::FilteredOut { yielded: "false" }),
            Ok(Some(_)) => {}
        }
    }
    let Some(transform) = &route.transform else {
        return Ok(None);
    };
    let jq_error = |message: String| AttemptResult::Jq {
        stage: JqStage::Transform,
        message,
    };
    match transform.first(&input) {
        Err(message) => Err(jq_error(message)),
        Ok(None) => Err(jq_error("the transform produced no output".into())),
        Ok(Some(output)) => Ok(Some(Bytes::from(output.to_json()))),
    }
}

/// Judges the report, logs it, and hands the record to the finisher.
#[allow(clippy::too_many_arguments)]
async fn finish(
    shared: &Shared,
    claimed: &ClaimedDelivery,
    number: u32,
    started_at: UnixMillis,
    took: Duration,
    report: Report,
    policy: &RetryPolicy,
    rules: RetryRules,
) {
    let (verdict, reason) = outcome::classify(&report.result, rules);
    let decision = outcome::decide(
        verdict,
        reason,
        number,
        policy,
        rand::random::<f64>(),
        UnixMillis::now(),
    );
    let delivery = &claimed.delivery;
    // Reasons may quote the body (jq errors do): they are stored, not logged.
    match decision.outcome {
        gatehouse_core::AttemptOutcome::Succeeded => {
            tracing::debug!(delivery_id = %delivery.id, route = %delivery.route, attempt = number, status = report.status_code, "Delivered.")
        }
        gatehouse_core::AttemptOutcome::Skipped => {
            tracing::debug!(delivery_id = %delivery.id, route = %delivery.route, "Skipped by the route's filter.")
        }
        gatehouse_core::AttemptOutcome::Retry => {
            tracing::info!(delivery_id = %delivery.id, route = %delivery.route, attempt = number, status = report.status_code, "Attempt failed; retrying later.")
        }
        gatehouse_core::AttemptOutcome::Dead => {
            tracing::warn!(delivery_id = %delivery.id, route = %delivery.route, attempt = number, status = report.status_code, "Delivery is dead; it is in the exception queue.")
        }
    }
    let finished = FinishedAttempt {
        delivery_id: delivery.id,
        attempt: Attempt {
            number,
            started_at,
            duration_ms: u32::try_from(took.as_millis()).unwrap_or(u32::MAX),
            status_code: report.status_code,
            response_headers: report.headers,
            response_excerpt: report.excerpt,
            error: decision.reason,
            outcome: decision.outcome,
        },
        next_attempt_at: decision.next_attempt_at,
    };
    shared.finisher.record(finished).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;
    use crate::destination::ResolvedDestination;

    fn route(extra: &str) -> Arc<Route> {
        let destination = ResolvedDestination {
            config: toml::from_str("name = \"d\"\ntype = \"exec\"\ncommand = [\"/bin/cat\"]").expect("destination"),
            secret: None,
            headers: Vec::new(),
            ca_client: None,
        };
        let route: RouteConfig =
            toml::from_str(&format!("name = \"r\"\nsource = \"s\"\ndestination = \"d\"\n{extra}")).expect("route");
        let table = RouteTable::build(&[route], &[destination]).expect("table");
        table.route("r").expect("route").clone()
    }

    #[test]
    fn filter_and_transform_semantics() {
        let body = br#"{"type":"charge.succeeded","amount":5}"#;
        assert_eq!(run_programs(&route(""), body), Ok(None));
        assert_eq!(run_programs(&route("filter = '.amount > 1'"), body), Ok(None));
        assert_eq!(
            run_programs(&route("filter = '.amount > 10'"), body),
            Err(AttemptResult::FilteredOut { yielded: "false" })
        );
        assert_eq!(
            run_programs(&route("filter = '.missing'"), body),
            Err(AttemptResult::FilteredOut { yielded: "null" })
        );
        assert_eq!(
            run_programs(&route("filter = 'empty'"), body),
            Err(AttemptResult::FilteredOut { yielded: "no output" })
        );
        assert_eq!(
            run_programs(&route("filter = '.type, false'"), body),
            Ok(None),
            "only the first output counts"
        );
        assert_eq!(
            run_programs(&route("transform = '{kind: .type, cents: (.amount * 100)}'"), body),
            Ok(Some(Bytes::from_static(br#"{"kind":"charge.succeeded","cents":500}"#)))
        );
        assert_eq!(
            run_programs(&route("filter = '.amount > 1'\ntransform = '.type'"), body),
            Ok(Some(Bytes::from_static(br#""charge.succeeded""#)))
        );
    }

    #[test]
    fn jq_failures_and_non_json_bodies() {
        let failing = run_programs(&route("filter = '.type.x'"), br#"{"type":"a"}"#);
        assert!(
            matches!(&failing, Err(AttemptResult::Jq { stage: JqStage::Filter, message }) if message.contains("cannot index")),
            "{failing:?}"
        );
        assert!(matches!(
            run_programs(&route("transform = 'empty'"), b"{}"),
            Err(AttemptResult::Jq {
                stage: JqStage::Transform,
                ..
            })
        ));
        assert_eq!(
            run_programs(&route("transform = '.'"), b"a=1&b=2"),
            Err(AttemptResult::NotJson {
                stage: JqStage::Transform
            })
        );
        assert_eq!(
            run_programs(&route("filter = '.'\ntransform = '.'"), b"\xff"),
            Err(AttemptResult::NotJson { stage: JqStage::Filter })
        );
        assert_eq!(
            run_programs(&route(""), b"not json"),
            Ok(None),
            "no program, no parsing"
        );
    }

    #[test]
    fn the_lease_margin_is_small_and_bounded() {
        assert_eq!(lease_margin(Duration::from_secs(60)), Duration::from_secs(5));
        assert_eq!(lease_margin(Duration::from_secs(2)), Duration::from_millis(200));
    }
}
