//! One immutable snapshot of the running configuration: the validated
//! config, the compiled records, the upstream pool and the cache handle.
//! Built whole by [`Snapshot::build`], swapped in atomically by the reload
//! path, read once per query; its background tasks (loop probes) stop when
//! it is replaced, and what it alone had (records, upstreams, watched zones) leaves the
//! metrics with it ([`Snapshot::gone_from`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cache::AnswerCache;
use crate::config::Config;
use crate::health::HealthRegistry;
use crate::metrics::{Metrics, Retired};
use crate::records::RecordTable;
use crate::unmapped::{UnmappedReport, Watch};
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
    /// The watched zones, reporting into the process-wide report.
    pub watch: Watch,
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
    /// The names of watched zones found unmapped (README "Unmapped names"), kept across
    /// reloads.
    pub unmapped: Arc<UnmappedReport>,
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
        let watch = Watch::compile(
            &config.watched_zones(),
            shared.unmapped.clone(),
            &shared.metrics,
        );
        let cache = match cache {
            Some(running) => running.reconfigured(config.cache),
            None => AnswerCache::new(config.cache),
        };
        Self {
            config: Arc::new(config),
            records,
            upstreams,
            cache,
            watch,
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

/// A record table at least this large is freed on the blocking pool.
const FREE_OFF_THE_WORKERS: usize = 10_000;

/// The label values of the series one snapshot's records and upstreams use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeriesLabels<'a> {
    /// `record` labels (configured names; one per name, views share it).
    pub records: BTreeSet<&'a str>,
    /// `upstream` labels (`IP:PORT`).
    pub upstreams: BTreeSet<String>,
    /// `zone` labels of the watched zones.
    pub zones: BTreeSet<&'a str>,
}

impl SeriesLabels<'_> {
    /// What `self` has and `next` has not.
    pub fn minus(&self, next: &SeriesLabels<'_>) -> Retired {
        Retired {
            records: self
                .records
                .iter()
                .filter(|label| !next.records.contains(*label))
                .map(|label| label.to_string())
                .collect(),
            upstreams: self
                .upstreams
                .iter()
                .filter(|label| !next.upstreams.contains(*label))
                .cloned()
                .collect(),
            zones: self
                .zones
                .iter()
                .filter(|label| !next.zones.contains(*label))
                .map(|label| label.to_string())
                .collect(),
        }
    }
}

impl Snapshot {
    /// The labels of the series this snapshot counts into.
    pub fn series_labels(&self) -> SeriesLabels<'_> {
        SeriesLabels {
            records: self
                .records
                .all()
                .iter()
                .map(|r| r.label.as_str())
                .collect(),
            upstreams: self
                .upstreams
                .servers()
                .iter()
                .map(|s| s.addr.to_string())
                .collect(),
            zones: self.watch.labels().collect(),
        }
    }

    /// The series of records and upstreams this snapshot has and `next`
    /// has not: what a reload from `self` to `next` removes from /metrics.
    pub fn gone_from(&self, next: &Snapshot) -> Retired {
        self.series_labels().minus(&next.series_labels())
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.tasks.cancel();
        // The last holder of a replaced snapshot may be a query task on a
        // runtime worker; freeing 200,000 hosts-file names there stalls
        // every answer on that worker for milliseconds. Hand them over.
        if self.records.all().len() < FREE_OFF_THE_WORKERS {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let records = std::mem::take(&mut self.records);
        let hosts = Arc::get_mut(&mut self.config).map(|c| std::mem::take(&mut c.records.hosts));
        drop(runtime.spawn_blocking(move || drop((records, hosts))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels<'a>(records: &[&'a str], upstreams: &[&str]) -> SeriesLabels<'a> {
        SeriesLabels {
            records: records.iter().copied().collect(),
            upstreams: upstreams.iter().map(|u| u.to_string()).collect(),
            zones: BTreeSet::new(),
        }
    }

    #[test]
    fn a_reload_retires_exactly_what_the_new_snapshot_no_longer_has() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: [(SeriesLabels, SeriesLabels, Vec<String>, Vec<String>); 5] = [
            (labels(&[], &[]), labels(&[], &[]), vec![], vec![]),
            (
                labels(&["docker.io", "*.docker.io"], &["10.0.0.2:53"]),
                labels(&["docker.io", "*.docker.io"], &["10.0.0.2:53"]),
                vec![],
                vec![],
            ),
            (
                labels(&["docker.io", "gone.test"], &["10.0.0.2:53", "10.0.0.3:53"]),
                labels(&["docker.io"], &["10.0.0.3:53"]),
                strings(&["gone.test"]),
                strings(&["10.0.0.2:53"]),
            ),
            (
                labels(&["a.test"], &["10.0.0.2:53"]),
                labels(&["a.test", "new.test"], &["10.0.0.2:53", "10.0.0.9:53"]),
                vec![],
                vec![],
            ),
            (
                labels(&["a.test", "b.test"], &["[2001:db8::1]:53"]),
                labels(&[], &["10.0.0.2:53"]),
                strings(&["a.test", "b.test"]),
                strings(&["[2001:db8::1]:53"]),
            ),
        ];
        for (old, new, records, upstreams) in cases {
            let retired = old.minus(&new);
            assert_eq!(retired.records, records, "{old:?} -> {new:?}");
            assert_eq!(retired.upstreams, upstreams, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn a_zone_no_longer_watched_is_retired() {
        let mut old = labels(&[], &[]);
        old.zones = ["docker.io", "ghcr.io"].into_iter().collect();
        let mut new = labels(&[], &[]);
        new.zones = ["ghcr.io", "quay.io"].into_iter().collect();
        assert_eq!(old.minus(&new).zones, vec!["docker.io".to_string()]);
    }
}
