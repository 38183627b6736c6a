//! Set-up shared by `tests/allocations.rs` and `benches/hot_path.rs`
//! (included in each with `#[path]`): an engine snapshot built from a
//! config text, with a resolv.conf of its own and no network.

use std::sync::Arc;

use accel_dns::config::{LoadEnv, parse};
use accel_dns::internals::health::HealthRegistry;
use accel_dns::internals::metrics::Metrics;
use accel_dns::internals::snapshot::{Shared, Snapshot};
use tokio::sync::Semaphore;

/// The snapshot of `config` and the metrics it counts into; the directory
/// holds its resolv.conf and must live as long as the snapshot is used.
pub fn snapshot(config: &str) -> (tempfile::TempDir, Arc<Snapshot>, Metrics) {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(&resolv_conf, "nameserver 127.0.0.1\n").expect("write");
    let config = parse(config, None, &LoadEnv { resolv_conf }).expect("config");
    let shared = Shared {
        health: HealthRegistry::default(),
        upstream_permits: Arc::new(Semaphore::new(16)),
        metrics: Metrics::new(),
        unmapped: Arc::default(),
    };
    let metrics = shared.metrics.clone();
    let snapshot = Arc::new(Snapshot::build(config, None, &shared));
    (dir, snapshot, metrics)
}
