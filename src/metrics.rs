//! Prometheus metrics (README "Admin endpoint and metrics"). Names are constants that the tests import;
//! every label set is bounded (protocol, outcome, upstream address, the
//! configured record name, the watched zone — never the asked name or the client). Hot-path
//! counters are resolved once, so counting a query is one atomic add.

use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

/// `accel_dns_queries_total{protocol,outcome}`
pub const QUERIES_TOTAL: &str = "accel_dns_queries_total";
/// `accel_dns_upstream_duration_seconds{upstream}` (histogram)
pub const UPSTREAM_DURATION: &str = "accel_dns_upstream_duration_seconds";
/// `accel_dns_upstream_errors_total{upstream}`
pub const UPSTREAM_ERRORS: &str = "accel_dns_upstream_errors_total";
/// `accel_dns_cache_entries`
pub const CACHE_ENTRIES: &str = "accel_dns_cache_entries";
/// `accel_dns_record_hits_total{record}`
pub const RECORD_HITS: &str = "accel_dns_record_hits_total";
/// `accel_dns_reloads_total{result}`
pub const RELOADS_TOTAL: &str = "accel_dns_reloads_total";
/// `accel_dns_config_last_reload_success`
pub const LAST_RELOAD_SUCCESS: &str = "accel_dns_config_last_reload_success";
/// `accel_dns_config_last_reload_timestamp_seconds`
pub const LAST_RELOAD_TIMESTAMP: &str = "accel_dns_config_last_reload_timestamp_seconds";
/// `accel_dns_record_up{record}`
pub const RECORD_UP: &str = "accel_dns_record_up";
/// `accel_dns_endpoint_up{record,address}`
pub const ENDPOINT_UP: &str = "accel_dns_endpoint_up";
/// `accel_dns_ready`: 1 while `/readyz` answers 200 (set at scrape time).
pub const READY: &str = "accel_dns_ready";
/// `accel_dns_build_info{version}`
pub const BUILD_INFO: &str = "accel_dns_build_info";
/// `accel_dns_upstream_loops_total{upstream}`: forwarding loops detected.
pub const UPSTREAM_LOOPS: &str = "accel_dns_upstream_loops_total";
/// `accel_dns_unmapped_queries_total{zone}`: queries for a name in a
/// watched zone that no record covers (README "Unmapped names"); `zone` is the watched
/// zone as configured, without the trailing dot.
pub const UNMAPPED_QUERIES: &str = "accel_dns_unmapped_queries_total";

/// How a query left the server: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from `[[record]]` or a hosts file.
    Record,
    /// Answered from the cache.
    Cache,
    /// Answered by an upstream.
    Upstream,
    /// Answered from an expired entry because every upstream failed.
    Stale,
    /// Client outside `allow`.
    Refused,
    /// SERVFAIL of this server's own.
    Servfail,
    /// FORMERR for a bad query (no question, two, a malformed OPT).
    Formerr,
    /// NOTIMP for an opcode other than QUERY.
    Notimp,
    /// BADVERS for an EDNS version other than 0.
    Badvers,
}

impl Outcome {
    const ALL: [Outcome; 9] = [
        Outcome::Record,
        Outcome::Cache,
        Outcome::Upstream,
        Outcome::Stale,
        Outcome::Refused,
        Outcome::Servfail,
        Outcome::Formerr,
        Outcome::Notimp,
        Outcome::Badvers,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Record => "record",
            Outcome::Cache => "cache",
            Outcome::Upstream => "upstream",
            Outcome::Stale => "stale",
            Outcome::Refused => "refused",
            Outcome::Servfail => "servfail",
            Outcome::Formerr => "formerr",
            Outcome::Notimp => "notimp",
            Outcome::Badvers => "badvers",
        }
    }
}

/// The transport a query came over: the `protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}

/// Every metric of the process, registered in its own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    queries: [[IntCounter; 9]; 2],
    upstream_duration: HistogramVec,
    upstream_errors: IntCounterVec,
    upstream_loops: IntCounterVec,
    /// `accel_dns_cache_entries`
    pub cache_entries: IntGauge,
    record_hits: IntCounterVec,
    unmapped: IntCounterVec,
    reloads: IntCounterVec,
    /// `accel_dns_config_last_reload_success`
    pub last_reload_success: IntGauge,
    /// `accel_dns_config_last_reload_timestamp_seconds`
    pub last_reload_timestamp: Gauge,
    /// `accel_dns_record_up`
    pub record_up: GaugeVec,
    /// `accel_dns_endpoint_up`
    pub endpoint_up: GaugeVec,
    /// `accel_dns_ready`
    pub ready: IntGauge,
    /// The last load's result with its error text, which the gauges cannot
    /// hold (read by `/status`).
    last_load: Arc<Mutex<LastLoad>>,
}

/// The result of the last configuration load: at start or at a reload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastLoad {
    /// Whether it was taken.
    pub ok: bool,
    /// When it was tried, in seconds since the Unix epoch.
    pub unix_time: f64,
    /// Why it failed (the loader's error, with the file, line and column).
    pub error: Option<String>,
    /// True for the load at start, false for a reload.
    pub at_start: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(clippy::expect_used)] // metric definitions are constants: a failure is a bug caught by every test
impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let queries_vec = IntCounterVec::new(
            Opts::new(
                QUERIES_TOTAL,
                "Queries answered, by transport and how they were answered.",
            ),
            &["protocol", "outcome"],
        )
        .expect("metric");
        let per_outcome = |protocol: Protocol| {
            Outcome::ALL.map(|o| queries_vec.with_label_values(&[protocol.as_str(), o.as_str()]))
        };
        let queries = [per_outcome(Protocol::Udp), per_outcome(Protocol::Tcp)];
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                UPSTREAM_DURATION,
                "Time for an upstream to answer one query.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["upstream"],
        )
        .expect("metric");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                UPSTREAM_ERRORS,
                "Upstream attempts that timed out, failed or answered SERVFAIL/REFUSED.",
            ),
            &["upstream"],
        )
        .expect("metric");
        let upstream_loops = IntCounterVec::new(
            Opts::new(
                UPSTREAM_LOOPS,
                "Forwarding loops detected through an upstream.",
            ),
            &["upstream"],
        )
        .expect("metric");
        let cache_entries =
            IntGauge::new(CACHE_ENTRIES, "Entries in the answer cache.").expect("metric");
        let record_hits = IntCounterVec::new(
            Opts::new(
                RECORD_HITS,
                "Queries answered by a record, by the record's configured name.",
            ),
            &["record"],
        )
        .expect("metric");
        let unmapped = IntCounterVec::new(
            Opts::new(
                UNMAPPED_QUERIES,
                "Queries for names in a watched zone that no record covers, by watched zone.",
            ),
            &["zone"],
        )
        .expect("metric");
        let reloads = IntCounterVec::new(
            Opts::new(RELOADS_TOTAL, "Configuration reloads by result."),
            &["result"],
        )
        .expect("metric");
        let last_reload_success =
            IntGauge::new(LAST_RELOAD_SUCCESS, "1 if the last reload succeeded.").expect("metric");
        let last_reload_timestamp = Gauge::new(
            LAST_RELOAD_TIMESTAMP,
            "Unix time of the last reload attempt.",
        )
        .expect("metric");
        let record_up = GaugeVec::new(
            Opts::new(RECORD_UP, "1 while a health-checked record answers."),
            &["record"],
        )
        .expect("metric");
        let endpoint_up = GaugeVec::new(
            Opts::new(
                ENDPOINT_UP,
                "1 while a health-checked address is in the answers.",
            ),
            &["record", "address"],
        )
        .expect("metric");
        let ready = IntGauge::new(
            READY,
            "1 while the server is ready (/readyz answers 200): bound, configured, not draining, an upstream usable.",
        )
        .expect("metric");
        let build_info = IntGauge::with_opts(
            Opts::new(BUILD_INFO, "Build information.")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("metric");
        build_info.set(1);
        for collector in [
            Box::new(queries_vec) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(upstream_loops.clone()),
            Box::new(cache_entries.clone()),
            Box::new(record_hits.clone()),
            Box::new(unmapped.clone()),
            Box::new(reloads.clone()),
            Box::new(last_reload_success.clone()),
            Box::new(last_reload_timestamp.clone()),
            Box::new(record_up.clone()),
            Box::new(endpoint_up.clone()),
            Box::new(ready.clone()),
            Box::new(build_info),
        ] {
            registry.register(collector).expect("unique metric");
        }
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
        }
        Self {
            registry,
            queries,
            upstream_duration,
            upstream_errors,
            upstream_loops,
            cache_entries,
            record_hits,
            unmapped,
            reloads,
            last_reload_success,
            last_reload_timestamp,
            record_up,
            endpoint_up,
            ready,
            last_load: Arc::default(),
        }
    }

    /// Counts one answered query.
    pub fn query(&self, protocol: Protocol, outcome: Outcome) {
        let p = match protocol {
            Protocol::Udp => 0,
            Protocol::Tcp => 1,
        };
        let o = Outcome::ALL.iter().position(|x| *x == outcome).unwrap_or(0);
        self.queries[p][o].inc();
    }

    /// The hit counter of one record.
    pub fn record_hits(&self, record: &str) -> IntCounter {
        self.record_hits.with_label_values(&[record])
    }

    /// The unmapped-queries counter of one watched zone.
    pub fn unmapped_queries(&self, zone: &str) -> IntCounter {
        self.unmapped.with_label_values(&[zone])
    }

    /// The duration histogram of one upstream.
    pub fn upstream_duration(&self, upstream: &str) -> Histogram {
        self.upstream_duration.with_label_values(&[upstream])
    }

    /// The error counter of one upstream.
    pub fn upstream_errors(&self, upstream: &str) -> IntCounter {
        self.upstream_errors.with_label_values(&[upstream])
    }

    /// The loop counter of one upstream.
    pub fn upstream_loops(&self, upstream: &str) -> IntCounter {
        self.upstream_loops.with_label_values(&[upstream])
    }

    /// Counts one reload attempt and sets the reload gauges; `error` is
    /// why it failed (`None`: it was taken).
    pub fn reload(&self, error: Option<String>) {
        self.reloads
            .with_label_values(&[if error.is_none() { "ok" } else { "error" }])
            .inc();
        self.set_last_load(error, false);
    }

    /// Sets the gauges for the configuration loaded at start, without
    /// counting a reload: a fresh process runs a good configuration, and a
    /// `last_reload_success == 0` alert must not fire on every restart.
    pub fn loaded_at_start(&self) {
        self.set_last_load(None, true);
    }

    /// The result of the last load (at start or reload).
    pub fn last_load(&self) -> LastLoad {
        self.last_load
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_last_load(&self, error: Option<String>, at_start: bool) {
        let ok = error.is_none();
        self.last_reload_success.set(i64::from(ok));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_reload_timestamp.set(now);
        *self.last_load.lock().unwrap_or_else(|e| e.into_inner()) = LastLoad {
            ok,
            unix_time: now,
            error,
            at_start,
        };
    }

    /// Removes the series of records and upstreams that the running
    /// configuration no longer has (a reload calls it with what the new
    /// snapshot dropped), so that a long-lived node's series do not grow
    /// with every mapping change. A series that is still live is never
    /// touched and keeps its value. The health gauges need nothing here:
    /// every scrape refills them from the running snapshot.
    pub fn retire(&self, gone: &Retired) {
        for record in &gone.records {
            let _ = self.record_hits.remove_label_values(&[record]);
        }
        for zone in &gone.zones {
            let _ = self.unmapped.remove_label_values(&[zone]);
        }
        for upstream in &gone.upstreams {
            let _ = self.upstream_duration.remove_label_values(&[upstream]);
            let _ = self.upstream_errors.remove_label_values(&[upstream]);
            let _ = self.upstream_loops.remove_label_values(&[upstream]);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The label values whose series leave `/metrics` at a reload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retired {
    /// `record` labels of [`RECORD_HITS`].
    pub records: Vec<String>,
    /// `upstream` labels of [`UPSTREAM_DURATION`], [`UPSTREAM_ERRORS`] and
    /// [`UPSTREAM_LOOPS`].
    pub upstreams: Vec<String>,
    /// `zone` labels of [`UNMAPPED_QUERIES`]: zones no longer watched.
    pub zones: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retiring_removes_only_the_series_named_and_keeps_the_others_counts() {
        let metrics = Metrics::new();
        metrics.record_hits("gone.test").inc();
        metrics.record_hits("kept.test").inc_by(3);
        for upstream in ["10.0.0.2:53", "10.0.0.3:53"] {
            metrics.upstream_errors(upstream).inc();
            metrics.upstream_loops(upstream).inc();
            metrics.upstream_duration(upstream).observe(0.01);
        }
        metrics.unmapped_queries("gone.zone").inc();
        metrics.unmapped_queries("kept.zone").inc_by(2);
        metrics.retire(&Retired {
            records: vec!["gone.test".into()],
            upstreams: vec!["10.0.0.2:53".into()],
            zones: vec!["gone.zone".into()],
        });
        let text = metrics.render();
        assert!(!text.contains("gone.test"), "{text}");
        assert!(!text.contains("10.0.0.2:53"), "{text}");
        assert!(!text.contains("gone.zone"), "{text}");
        assert!(
            text.contains(&format!("{UNMAPPED_QUERIES}{{zone=\"kept.zone\"}} 2")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{RECORD_HITS}{{record=\"kept.test\"}} 3")),
            "{text}"
        );
        for name in [UPSTREAM_ERRORS, UPSTREAM_LOOPS] {
            assert!(
                text.contains(&format!("{name}{{upstream=\"10.0.0.3:53\"}} 1")),
                "{text}"
            );
        }
        assert!(
            text.contains(&format!(
                "{UPSTREAM_DURATION}_count{{upstream=\"10.0.0.3:53\"}} 1"
            )),
            "{text}"
        );
        // A name that comes back starts a fresh series.
        metrics.record_hits("gone.test").inc();
        assert!(
            metrics
                .render()
                .contains(&format!("{RECORD_HITS}{{record=\"gone.test\"}} 1"))
        );
    }
}
