//! Text → `accel_dns::config::parse`, the one loader of start, `check` and
//! reload, then (when valid) the snapshot built from it: records compiled,
//! upstream pool, cache. An input may carry a hosts file after a line
//! `#--hosts--`; it is written where `hosts_files = ["hosts"]` finds it, so
//! the hosts-file parser is fuzzed too. Inputs that name a file outside the
//! scratch directory (`/`, `..` in a hosts_files entry) are skipped: a config
//! pointing at /dev/zero is the operator's problem, not an attack.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use accel_dns::config;
use accel_dns::internals::health::HealthRegistry;
use accel_dns::internals::metrics::Metrics;
use accel_dns::internals::snapshot::{Shared, Snapshot};
use accel_dns::internals::upstream::MAX_IN_FLIGHT;
use accel_dns_fuzz::{load_env, scratch_dir};
use libfuzzer_sys::fuzz_target;

const HOSTS_MARKER: &str = "\n#--hosts--\n";

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared {
        health: HealthRegistry::default(),
        upstream_permits: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        metrics: Metrics::new(),
        unmapped: Default::default(),
    })
}

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| scratch_dir().join("accel-dns.toml"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (config_text, hosts) = text.split_once(HOSTS_MARKER).unwrap_or((text, ""));
    if let Some((_, files)) = config_text.split_once("hosts_files") {
        let files = files.split(']').next().unwrap_or("");
        if files.contains('/') || files.contains('\\') || files.contains("..") {
            return;
        }
    }
    let env = load_env();
    if std::fs::write(scratch_dir().join("hosts"), hosts).is_err() {
        return;
    }
    let Ok(parsed) = config::parse(config_text, Some(config_path()), &env) else {
        return;
    };
    let _ = parsed.summary();
    let _ = parsed.watched_files();
    if parsed
        .records
        .entries
        .iter()
        .any(|r| r.health_check.is_some())
    {
        // Probes would need a runtime and the network.
        return;
    }
    let snapshot = Snapshot::build(parsed, None, shared());
    for record in snapshot.records.all() {
        let _ = &record.label;
    }
});
