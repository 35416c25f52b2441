//! Operations endpoints: `/healthz` (the process answers), `/readyz` (the
//! database answers too) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use gatehouse_store::Store;

use crate::ingest::failures::FailureRecorder;
use crate::telemetry::Metrics;

/// What the operations endpoints read.
#[derive(Clone)]
pub struct HealthState {
    /// The store to ping.
    pub store: Arc<dyn Store>,
    /// Ingest counters.
    pub metrics: Arc<Metrics>,
    /// For the dropped-records counter.
    pub failures: FailureRecorder,
}

/// The `/healthz`, `/readyz` and `/metrics` routes.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn ready(State(state): State<HealthState>) -> Response {
    let backend = state.store.backend();
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, format!("ready ({backend})\n")).into_response(),
        Ok(Err(error)) => {
            tracing::warn!(%error, "Readiness check failed.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database unavailable ({backend})\n"),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database did not answer ({backend})\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<HealthState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(state.failures.dropped()),
    )
        .into_response()
}
