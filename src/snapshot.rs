//! One immutable snapshot of the running configuration: the validated
//! config, the compiled records, the upstream pool and the cache handle.
//! Built whole by [`Snapshot::build`], swapped in atomically by the reload
//! path, read once per query; its background tasks (loop probes) stop when
//! it is replaced.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cache::AnswerCache;
use crate::config::Config;
use crate::health::HealthRegistry;
use crate::metrics::Metrics;
use crate::records::RecordTable;
use crate::upstream::UpstreamPool;

/// Everything a query needs from the configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// `[[record]]` and hosts files, compiled.
    pub records: RecordTable,
    /// The upstreams in order.
    pub upstreams: Arc<UpstreamPool>,
    /// The answer cache (shared with earlier snapshots).
    pub cache: AnswerCache,
    /// Stops this snapshot's background tasks.
    pub tasks: CancellationToken,
}

/// What outlives every snapshot: handed from one to the next.
#[derive(Debug)]
pub struct Shared {
    /// Probe tasks of health-checked addresses.
    pub health: HealthRegistry,
    /// The bound on upstream queries in flight.
    pub upstream_permits: Arc<Semaphore>,
    /// Every metric.
    pub metrics: Metrics,
}

impl Snapshot {
    /// Compiles `config`; `cache` is the running cache (kept, and re-bounded
    /// if the bounds changed), `None` at start.
    pub fn build(config: Config, cache: Option<&AnswerCache>, shared: &Shared) -> Self {
        let records = RecordTable::compile(&config, &shared.health, &shared.metrics);
        let upstreams = Arc::new(UpstreamPool::new(
            &config.upstream.servers,
            config.upstream.timeout,
            shared.upstream_permits.clone(),
            &shared.metrics,
        ));
        let cache = match cache {
            Some(running) => running.reconfigured(config.cache),
            None => AnswerCache::new(config.cache),
        };
        Self {
            config: Arc::new(config),
            records,
            upstreams,
            cache,
            tasks: CancellationToken::new(),
        }
    }

    /// Whether `client` may use this server.
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.config
            .server
            .allow
            .iter()
            .any(|net: &IpNet| net.contains(&client))
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}
