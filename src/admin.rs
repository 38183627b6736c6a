//! The admin HTTP endpoint (README "Admin endpoint and metrics"): `/healthz` (the process serves),
//! `/readyz` (listeners bound, a configuration loaded, a usable upstream,
//! not draining), `/metrics` (Prometheus text), `/unmapped` (JSON: the
//! names of watched zones that no record covers, README "Unmapped names") and `/status`
//! (the running state as JSON, built by [`crate::status`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::resolve::Resolver;
use crate::status::Status;
use crate::unmapped::UnmappedName;

/// What the admin endpoint reads.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// The query path (snapshot and metrics).
    pub resolver: Arc<Resolver>,
    /// Set once every listener is bound.
    pub ready: Arc<AtomicBool>,
    /// Set when shutdown begins: `/readyz` fails first.
    pub draining: Arc<AtomicBool>,
    /// Serialises scrapes, which reset and refill the health gauges.
    pub scrape: Arc<Mutex<()>>,
    /// When the server started (for `uptime_seconds`).
    pub started: Instant,
}

impl AdminState {
    /// Whether `/readyz` says 200, and why not otherwise.
    pub(crate) fn readiness(&self) -> Result<(), &'static str> {
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

    /// The count of names left unmapped for `/status` (README "Unmapped names"): as many
    /// as `/unmapped` lists.
    pub(crate) fn unmapped_names(&self) -> usize {
        self.unmapped().len()
    }

    /// The `/status` body.
    pub(crate) fn status(&self) -> Status {
        Status::build(
            &self.resolver.snapshot(),
            &self.resolver.metrics().last_load(),
            self.started.elapsed(),
            self.unmapped_names(),
        )
    }

    /// The `/metrics` body, with the gauges that are computed at scrape time
    /// (cache size, health of records and endpoints) brought up to date.
    pub(crate) fn render_metrics(&self) -> String {
        let snapshot = self.resolver.snapshot();
        let metrics = self.resolver.metrics();
        // Several records can share a label (views: one name per `clients`
        // set): a name is reported up only while every one of them answers,
        // so that a view stepped aside is not hidden by another that is up.
        let mut records: BTreeMap<&str, bool> = BTreeMap::new();
        let mut endpoints: BTreeMap<(&str, String), bool> = BTreeMap::new();
        for record in snapshot.records.all().iter().filter(|r| r.health_checked) {
            *records.entry(record.label.as_str()).or_insert(true) &= record.is_active();
            for (address, up) in record.endpoints() {
                *endpoints
                    .entry((record.label.as_str(), address.to_string()))
                    .or_insert(true) &= up;
            }
        }
        // Reset and refill as one step: a concurrent scrape must not render
        // the vectors half refilled.
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        metrics
            .cache_entries
            .set(i64::try_from(snapshot.cache.entry_count()).unwrap_or(i64::MAX));
        metrics.ready.set(i64::from(self.readiness().is_ok()));
        metrics.record_up.reset();
        metrics.endpoint_up.reset();
        for (label, up) in records {
            metrics
                .record_up
                .with_label_values(&[label])
                .set(if up { 1.0 } else { 0.0 });
        }
        for ((label, address), up) in endpoints {
            metrics
                .endpoint_up
                .with_label_values(&[label, address.as_str()])
                .set(if up { 1.0 } else { 0.0 });
        }
        metrics.render()
    }

    /// The `/unmapped` list: names still in a watched zone and still not
    /// covered by any record of the running configuration (a name mapped
    /// or unwatched by a reload leaves it, and comes back with its count if
    /// a later reload unmaps it again), most asked first, ties by name.
    pub(crate) fn unmapped(&self) -> Vec<UnmappedName> {
        let snapshot = self.resolver.snapshot();
        snapshot
            .watch
            .report()
            .entries(|name| snapshot.watch.watches(name) && !snapshot.records.covers(name))
    }
}

/// The router of the admin endpoint.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/unmapped", get(unmapped))
        .route("/status", get(status))
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

/// Renders on the blocking pool: with a 200,000-line hosts file the body
/// has as many `record` series (12 MB), and encoding it held a runtime
/// worker for seconds at every scrape.
async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let body = tokio::task::spawn_blocking(move || state.render_metrics())
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn unmapped(State(state): State<AdminState>) -> impl IntoResponse {
    let body = serde_json::to_string(&state.unmapped()).unwrap_or_else(|_| "[]".into());
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// Built on the blocking pool, as `/metrics` is: counting the cache runs
/// its pending maintenance.
async fn status(State(state): State<AdminState>) -> impl IntoResponse {
    let built =
        tokio::task::spawn_blocking(move || serde_json::to_string_pretty(&state.status())).await;
    match built {
        Ok(Ok(mut body)) => {
            body.push('\n');
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
        Ok(Err(error)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("cannot encode the status: {error}\n"),
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("cannot build the status: {error}\n"),
        ),
    }
}

/// Serves the admin endpoint on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
