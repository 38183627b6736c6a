//! `GET /status` (README "Admin endpoint"): the running state at a glance,
//! as JSON, built here from the snapshot, the health probes, the upstreams'
//! skip and loop state and the last load's result; served by [`crate::admin`]
//! and printed as a table by `accel-dns status` ([`Status::table`]).
//!
//! The types derive both `Serialize` and `Deserialize`: the server writes
//! them and the `status` subcommand reads them back, so the two cannot drift.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::health::Endpoint;
use crate::metrics::LastLoad;
use crate::records::{Answer, CompiledRecord};
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamServer;

/// The body of `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The version of the running binary.
    pub version: String,
    /// Seconds since the server started.
    pub uptime_seconds: u64,
    /// The configuration file (`None`: the built-in defaults).
    pub config_file: Option<String>,
    /// The last load of the configuration: at start, or the last reload.
    pub last_reload: ReloadStatus,
    /// Every `[[record]]`, in configuration order.
    pub records: Vec<RecordStatus>,
    /// How many names the hosts files give (not listed one by one: a hosts
    /// file can hold hundreds of thousands).
    pub hosts_names: usize,
    /// The upstreams in order.
    pub upstreams: Vec<UpstreamStatus>,
    /// Entries in the answer cache.
    pub cache_entries: u64,
    /// Names of watched zones asked for that no record maps (README "Unmapped names"):
    /// the length of `/unmapped`.
    pub unmapped_names: usize,
}

/// The result of the last configuration load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// `ok` or `error`.
    pub result: String,
    /// When it was tried (seconds since the Unix epoch).
    pub unix_time: u64,
    /// Why it failed: file, line, column and what is wrong.
    pub error: Option<String>,
    /// True while the last load is the one at start (no reload yet).
    pub at_start: bool,
}

/// One `[[record]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordStatus {
    /// The configured name (`docker.io`, `*.docker.io`).
    pub name: String,
    /// Its `clients` networks (empty: everyone).
    pub clients: Vec<String>,
    /// `a`, `aaaa`, `a+aaaa` (both families) or `cname`.
    pub kind: String,
    /// `up` (it answers) or `stepped-aside` (every checked address down).
    pub state: String,
    /// Whether it has a health check.
    pub health_checked: bool,
    /// A CNAME record's target.
    pub target: Option<String>,
    /// Its addresses (for a health-checked CNAME: those its target resolves
    /// to now).
    pub addresses: Vec<AddressStatus>,
}

/// One address of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressStatus {
    /// The address.
    pub address: IpAddr,
    /// `up`, `down`, or `unchecked` (no health check, or no probe finished
    /// yet: it answers, as an address counts up until its probes fail).
    pub health: String,
    /// When its verdict last changed (seconds since the Unix epoch);
    /// `None` if it never has.
    pub changed_unix_time: Option<u64>,
}

/// One upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    /// `IP:PORT`.
    pub address: SocketAddr,
    /// `ok`, `skipped` (after a failure, tried last for a while) or
    /// `looped` (sends our queries back to us: unused until a reload).
    pub state: String,
    /// Until when it is skipped (seconds since the Unix epoch).
    pub skipped_until_unix_time: Option<u64>,
    /// Whether a forwarding loop was found through it.
    pub looped: bool,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Status {
    /// The status of `snapshot` and what outlives it. `started` is when the
    /// server started; `unmapped_names` comes from the unmapped report.
    pub fn build(
        snapshot: &Snapshot,
        last_load: &LastLoad,
        uptime: Duration,
        unmapped_names: usize,
    ) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: uptime.as_secs(),
            config_file: snapshot
                .config
                .path
                .as_ref()
                .map(|p| p.display().to_string()),
            last_reload: ReloadStatus {
                result: if last_load.ok { "ok" } else { "error" }.to_string(),
                unix_time: last_load.unix_time as u64,
                error: last_load.error.clone(),
                at_start: last_load.at_start,
            },
            records: snapshot.records.configured().iter().map(record).collect(),
            hosts_names: snapshot.records.hosts_names(),
            upstreams: snapshot
                .upstreams
                .servers()
                .iter()
                .map(|s| upstream(s))
                .collect(),
            cache_entries: snapshot.cache.entry_count(),
            unmapped_names,
        }
    }

    /// A short human table: one line per record address and per upstream.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let reload = match &self.last_reload.error {
            Some(error) => format!("error: {error}"),
            None => "ok".to_string(),
        };
        let _ = writeln!(
            out,
            "accel-dns {}  up {}  config {}",
            self.version,
            humantime::format_duration(Duration::from_secs(self.uptime_seconds)),
            self.config_file.as_deref().unwrap_or("(built-in defaults)")
        );
        let _ = writeln!(
            out,
            "last {}: {}  at {}",
            if self.last_reload.at_start {
                "load"
            } else {
                "reload"
            },
            reload,
            unix_text(self.last_reload.unix_time)
        );
        let _ = writeln!(
            out,
            "cache entries: {}  hosts-file names: {}  unmapped names: {} (GET /unmapped)",
            self.cache_entries, self.hosts_names, self.unmapped_names
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<32} {:<18} {:<7} {:<14} {:<40} {:<10} CHANGED",
            "RECORD", "CLIENTS", "KIND", "STATE", "ADDRESS", "HEALTH"
        );
        for record in &self.records {
            let clients = if record.clients.is_empty() {
                "*".to_string()
            } else {
                record.clients.join(",")
            };
            let mut rows: Vec<(String, String, String)> = Vec::new();
            if let Some(target) = &record.target {
                rows.push((format!("-> {target}"), String::new(), String::new()));
            }
            for address in &record.addresses {
                rows.push((
                    address.address.to_string(),
                    address.health.clone(),
                    address.changed_unix_time.map(unix_text).unwrap_or_default(),
                ));
            }
            if rows.is_empty() {
                rows.push((String::new(), String::new(), String::new()));
            }
            for (i, (address, health, changed)) in rows.into_iter().enumerate() {
                let (name, clients, kind, state) = if i == 0 {
                    (
                        record.name.as_str(),
                        clients.as_str(),
                        record.kind.as_str(),
                        record.state.as_str(),
                    )
                } else {
                    ("", "", "", "")
                };
                let _ = writeln!(
                    out,
                    "{name:<32} {clients:<18} {kind:<7} {state:<14} {address:<40} {health:<10} {changed}"
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<40} {:<8} SKIPPED UNTIL", "UPSTREAM", "STATE");
        for upstream in &self.upstreams {
            let until = upstream
                .skipped_until_unix_time
                .map(unix_text)
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{:<40} {:<8} {}",
                upstream.address.to_string(),
                upstream.state,
                until
            );
        }
        out
    }
}

/// A Unix time as RFC 3339 (UTC, seconds).
fn unix_text(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn record(record: &Arc<CompiledRecord>) -> RecordStatus {
    let (kind, target, addresses) = match &record.answer {
        Answer::Cname(target) => {
            let addresses = record
                .target_health
                .as_ref()
                .map(|t| {
                    t.probes()
                        .iter()
                        .map(|p| probed(p.addr().ip(), Some(p)))
                        .collect()
                })
                .unwrap_or_default();
            (
                "cname",
                Some(target.to_ascii().trim_end_matches('.').to_string()),
                addresses,
            )
        }
        Answer::Addresses { a, aaaa } => {
            let kind = match (a.is_empty(), aaaa.is_empty()) {
                (false, true) => "a",
                (true, false) => "aaaa",
                _ => "a+aaaa",
            };
            let v4 = a
                .iter()
                .map(|x| probed(IpAddr::V4(x.ip), x.probe.as_deref()));
            let v6 = aaaa
                .iter()
                .map(|x| probed(IpAddr::V6(x.ip), x.probe.as_deref()));
            (kind, None, v4.chain(v6).collect())
        }
    };
    RecordStatus {
        name: record.label.clone(),
        clients: record.clients.iter().map(ToString::to_string).collect(),
        kind: kind.to_string(),
        state: if record.is_active() {
            "up"
        } else {
            "stepped-aside"
        }
        .to_string(),
        health_checked: record.health_checked,
        target,
        addresses,
    }
}

fn probed(address: IpAddr, probe: Option<&Endpoint>) -> AddressStatus {
    let health = match probe {
        Some(p) if p.is_checked() && p.is_up() => "up",
        Some(p) if !p.is_up() => "down",
        _ => "unchecked",
    };
    AddressStatus {
        address,
        health: health.to_string(),
        changed_unix_time: probe
            .and_then(Endpoint::changed_unix_ms)
            .map(|ms| ms / 1000),
    }
}

fn upstream(server: &UpstreamServer) -> UpstreamStatus {
    let skipped = server.skipped_for();
    let looped = server.is_looped();
    let state = if looped {
        "looped"
    } else if skipped.is_some() {
        "skipped"
    } else {
        "ok"
    };
    UpstreamStatus {
        address: server.addr,
        state: state.to_string(),
        skipped_until_unix_time: skipped.map(|d| (unix_now() + d).as_secs()),
        looped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            version: "0.1.0".into(),
            uptime_seconds: 3723,
            config_file: Some("/etc/accel-dns/accel-dns.toml".into()),
            last_reload: ReloadStatus {
                result: "error".into(),
                unix_time: 1_700_000_000,
                error: Some("accel-dns.toml:3:7: unknown key `lisen`".into()),
                at_start: false,
            },
            records: vec![RecordStatus {
                name: "docker.io".into(),
                clients: vec!["10.1.0.0/16".into()],
                kind: "a".into(),
                state: "stepped-aside".into(),
                health_checked: true,
                target: None,
                addresses: vec![AddressStatus {
                    address: "203.0.113.10".parse().expect("ip"),
                    health: "down".into(),
                    changed_unix_time: Some(1_700_000_100),
                }],
            }],
            hosts_names: 2,
            upstreams: vec![UpstreamStatus {
                address: "10.0.0.2:53".parse().expect("addr"),
                state: "skipped".into(),
                skipped_until_unix_time: Some(1_700_000_200),
                looped: false,
            }],
            cache_entries: 5,
            unmapped_names: 2,
        }
    }

    #[test]
    fn the_json_reads_back_as_written() {
        let status = sample();
        let text = serde_json::to_string(&status).expect("json");
        let back: Status = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, status);
        assert!(text.contains("\"unmapped_names\":2"), "{text}");
    }

    #[test]
    fn the_table_shows_each_address_and_upstream() {
        let table = sample().table();
        for expected in [
            "docker.io",
            "10.1.0.0/16",
            "stepped-aside",
            "203.0.113.10",
            "down",
            "2023-11-14T22:15:00Z",
            "10.0.0.2:53",
            "skipped",
            "unknown key `lisen`",
            "1h 2m 3s",
        ] {
            assert!(table.contains(expected), "{expected} missing:\n{table}");
        }
    }
}
