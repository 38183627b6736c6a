//! The admin HTTP endpoint (SPEC §5): `/healthz` (the process serves),
//! `/readyz` (listeners bound, a configuration loaded, a usable upstream,
//! not draining) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::records::Answer;
use crate::resolve::Resolver;

/// What the admin endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    /// The query path (snapshot and metrics).
    pub resolver: Arc<Resolver>,
    /// Set once every listener is bound.
    pub ready: Arc<AtomicBool>,
    /// Set when shutdown begins: `/readyz` fails first.
    pub draining: Arc<AtomicBool>,
}

impl AdminState {
    /// Whether `/readyz` says 200, and why not otherwise.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            return Err("draining");
        }
        if !self.ready.load(Ordering::Acquire) {
            return Err("starting");
        }
        if !self.resolver.snapshot().upstreams.has_usable() {
            return Err("no usable upstream: every upstream loops back to this server");
        }
        Ok(())
    }
}

/// The router of the admin endpoint.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let snapshot = state.resolver.snapshot();
    let metrics = state.resolver.metrics();
    metrics
        .cache_entries
        .set(i64::try_from(snapshot.cache.entry_count()).unwrap_or(i64::MAX));
    metrics.record_up.reset();
    metrics.endpoint_up.reset();
    for record in snapshot.records.all().iter().filter(|r| r.health_checked) {
        let up = if record.is_active() { 1.0 } else { 0.0 };
        metrics
            .record_up
            .with_label_values(&[&record.label])
            .set(up);
        if let Answer::Addresses { a, aaaa } = &record.answer {
            let v4 = a.iter().map(|x| (x.ip.to_string(), x.is_up()));
            let v6 = aaaa.iter().map(|x| (x.ip.to_string(), x.is_up()));
            for (address, up) in v4.chain(v6) {
                metrics
                    .endpoint_up
                    .with_label_values(&[record.label.as_str(), address.as_str()])
                    .set(if up { 1.0 } else { 0.0 });
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// Serves the admin endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
