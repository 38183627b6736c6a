//! The compiled record table (README "Configuration reference" `[[record]]`, `hosts_files`; "records"; "Health-checked records";
//! "Views"): exact names, `*.` wildcards and hosts-file names, each name holding
//! one or more records chosen by the client's network and by the health of
//! their addresses. Built once per configuration snapshot, read-only after.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::Name;
use ipnet::IpNet;
use prometheus::IntCounter;

use crate::config::{Config, RecordData, RecordName};
use crate::health::{Endpoint, HealthRegistry, TargetHealth};
use crate::metrics::Metrics;
use crate::wire::{LowerName, name_key};

/// One address of a record, with its probe when the record is health-checked.
#[derive(Debug)]
pub struct RecordAddress<T> {
    /// The address.
    pub ip: T,
    /// Its TCP probe, shared with every record that checks the same endpoint.
    pub probe: Option<Arc<Endpoint>>,
}

impl<T> RecordAddress<T> {
    /// Up, or not health-checked.
    pub fn is_up(&self) -> bool {
        self.probe.as_ref().is_none_or(|p| p.is_up())
    }
}

/// What a compiled record answers with.
#[derive(Debug)]
pub enum Answer {
    /// Addresses of both families.
    Addresses {
        /// IPv4.
        a: Vec<RecordAddress<Ipv4Addr>>,
        /// IPv6.
        aaaa: Vec<RecordAddress<Ipv6Addr>>,
    },
    /// An alias.
    Cname(Name),
}

/// One record, ready to answer.
#[derive(Debug)]
pub struct CompiledRecord {
    /// The configured name (`docker.io`, `*.docker.io`), the metrics label.
    pub label: String,
    /// Addresses or alias.
    pub answer: Answer,
    /// TTL of its answers.
    pub ttl: u32,
    /// Networks it answers (empty: everyone).
    pub clients: Vec<IpNet>,
    /// Whether any address is health-checked.
    pub health_checked: bool,
    /// A health-checked CNAME record's target: whether it resolves to an
    /// address that is up (README "Health-checked records (fail-open)").
    pub target_health: Option<Arc<TargetHealth>>,
    /// `accel_dns_record_hits_total{record}`.
    pub hits: IntCounter,
}

impl CompiledRecord {
    /// Whether the record answers at all: not every checked address is down.
    pub fn is_active(&self) -> bool {
        match &self.answer {
            Answer::Cname(_) => self.target_health.as_ref().is_none_or(|t| t.is_up()),
            Answer::Addresses { a, aaaa } => {
                !self.health_checked
                    || a.iter().any(RecordAddress::is_up)
                    || aaaa.iter().any(RecordAddress::is_up)
            }
        }
    }

    /// Every probed address with its verdict: the record's own, or those
    /// its CNAME target resolves to now (for `accel_dns_endpoint_up`).
    pub fn endpoints(&self) -> Vec<(IpAddr, bool)> {
        match &self.answer {
            Answer::Cname(_) => self
                .target_health
                .as_ref()
                .map(|t| t.endpoints())
                .unwrap_or_default(),
            Answer::Addresses { a, aaaa } => {
                let v4 = a.iter().map(|x| (IpAddr::V4(x.ip), x.is_up()));
                let v6 = aaaa.iter().map(|x| (IpAddr::V6(x.ip), x.is_up()));
                v4.chain(v6).collect()
            }
        }
    }

    /// How well it matches `client`: the prefix length of its most specific
    /// matching network, -1 for a record without `clients`, `None` if the
    /// client is outside every network.
    fn client_match(&self, client: IpAddr) -> Option<i16> {
        if self.clients.is_empty() {
            return Some(-1);
        }
        self.clients
            .iter()
            .filter(|net| net.contains(&client))
            .map(|net| i16::from(net.prefix_len()))
            .max()
    }

    /// The IPv4 addresses to answer with now.
    pub fn a(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let list: &[RecordAddress<Ipv4Addr>] = match &self.answer {
            Answer::Addresses { a, .. } => a,
            Answer::Cname(_) => &[],
        };
        list.iter().filter(|r| r.is_up()).map(|r| r.ip)
    }

    /// The IPv6 addresses to answer with now.
    pub fn aaaa(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        let list: &[RecordAddress<Ipv6Addr>] = match &self.answer {
            Answer::Addresses { aaaa, .. } => aaaa,
            Answer::Cname(_) => &[],
        };
        list.iter().filter(|r| r.is_up()).map(|r| r.ip)
    }
}

/// Every record of one configuration, indexed for lookup by the lower-cased
/// wire form of a name ([`crate::wire::name_key`]): a lookup, wildcard
/// suffixes included, reads slices of one [`LowerName`] and allocates nothing.
#[derive(Debug, Default)]
pub struct RecordTable {
    exact: HashMap<Box<[u8]>, Vec<Arc<CompiledRecord>>>,
    hosts: HashMap<Box<[u8]>, Arc<CompiledRecord>>,
    /// Keyed by the suffix under `*.`.
    wildcard: HashMap<Box<[u8]>, Vec<Arc<CompiledRecord>>>,
    all: Vec<Arc<CompiledRecord>>,
    /// How many of `all` (the first ones) come from `[[record]]`.
    configured: usize,
}

impl RecordTable {
    /// Compiles the records of `config`; health-checked addresses get their
    /// probe from `health` (reused when unchanged).
    pub fn compile(config: &Config, health: &HealthRegistry, metrics: &Metrics) -> Self {
        let mut table = Self::default();
        for record in &config.records.entries {
            let label = record.name.label();
            let probe_for = |ip: IpAddr| {
                record
                    .health_check
                    .as_ref()
                    .map(|check| health.endpoint(ip, check))
            };
            let target_health = match (&record.data, &record.health_check) {
                (RecordData::Cname(target), Some(check)) => Some(health.target(target, check)),
                _ => None,
            };
            let answer = match &record.data {
                RecordData::Cname(target) => Answer::Cname(target.clone()),
                RecordData::Addresses { a, aaaa } => Answer::Addresses {
                    a: a.iter()
                        .map(|ip| RecordAddress {
                            ip: *ip,
                            probe: probe_for(IpAddr::V4(*ip)),
                        })
                        .collect(),
                    aaaa: aaaa
                        .iter()
                        .map(|ip| RecordAddress {
                            ip: *ip,
                            probe: probe_for(IpAddr::V6(*ip)),
                        })
                        .collect(),
                },
            };
            let compiled = Arc::new(CompiledRecord {
                hits: metrics.record_hits(&label),
                label,
                answer,
                ttl: record.ttl,
                clients: record.clients.clone(),
                health_checked: record.health_check.is_some(),
                target_health,
            });
            let slot = match &record.name {
                RecordName::Exact(name) => table
                    .exact
                    .entry(name_key(&Name::from(name.clone())))
                    .or_default(),
                RecordName::Wildcard(suffix) => table
                    .wildcard
                    .entry(name_key(&Name::from(suffix.clone())))
                    .or_default(),
            };
            slot.push(compiled.clone());
            table.all.push(compiled);
        }
        table.configured = table.all.len();
        for (name, entry) in &config.records.hosts {
            let name = Name::from(name.clone());
            let label = name.to_ascii().trim_end_matches('.').to_string();
            let compiled = Arc::new(CompiledRecord {
                hits: metrics.record_hits(&label),
                label,
                answer: Answer::Addresses {
                    a: entry
                        .a
                        .iter()
                        .map(|ip| RecordAddress {
                            ip: *ip,
                            probe: None,
                        })
                        .collect(),
                    aaaa: entry
                        .aaaa
                        .iter()
                        .map(|ip| RecordAddress {
                            ip: *ip,
                            probe: None,
                        })
                        .collect(),
                },
                ttl: config.records.ttl,
                clients: Vec::new(),
                health_checked: false,
                target_health: None,
            });
            table.hosts.insert(name_key(&name), compiled.clone());
            table.all.push(compiled);
        }
        table
    }

    /// Every record (for metrics and logs).
    pub fn all(&self) -> &[Arc<CompiledRecord>] {
        &self.all
    }

    /// The `[[record]]` entries, in configuration order (without the
    /// hosts files' names).
    pub fn configured(&self) -> &[Arc<CompiledRecord>] {
        &self.all[..self.configured]
    }

    /// How many names the hosts files give.
    pub fn hosts_names(&self) -> usize {
        self.all.len() - self.configured
    }

    /// Whether no record is configured (lets the hot path skip the lookup).
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The record that answers `name` for `client`, if any: exact names
    /// first (a `[[record]]` before a hosts-file line), then the longest
    /// wildcard; among records of one name, the most specific client network,
    /// then the record without `clients`; records stepped aside by their
    /// health check do not count.
    pub fn lookup(&self, name: &Name, client: IpAddr) -> Option<&Arc<CompiledRecord>> {
        match self.find(name, client) {
            RecordMatch::Answers(record) => Some(record),
            RecordMatch::PassedOver | RecordMatch::Absent => None,
        }
    }

    /// As [`RecordTable::lookup`], and when no record answers, whether one
    /// exists for `name` at all (exact, hosts file, or a wildcard covering
    /// it, whatever its `clients`): the unmapped-names report (README "Unmapped names")
    /// counts only the names that no record covers.
    pub fn find(&self, name: &Name, client: IpAddr) -> RecordMatch<'_> {
        self.find_lower(&LowerName::of(name), client)
    }

    /// [`RecordTable::find`] for a name already lower-cased.
    pub fn find_lower(&self, name: &LowerName, client: IpAddr) -> RecordMatch<'_> {
        if self.all.is_empty() {
            return RecordMatch::Absent;
        }
        let name = name.as_bytes();
        let mut exists = false;
        if let Some(list) = self.exact.get(name) {
            if let Some(found) = choose(list, client) {
                return RecordMatch::Answers(found);
            }
            exists = true;
        }
        if let Some(found) = self.hosts.get(name) {
            return RecordMatch::Answers(found);
        }
        if !self.wildcard.is_empty() {
            // Every proper suffix down to the root (the root's own is itself).
            let mut suffix = parent(name);
            loop {
                if let Some(list) = self.wildcard.get(suffix) {
                    if let Some(found) = choose(list, client) {
                        return RecordMatch::Answers(found);
                    }
                    exists = true;
                }
                if suffix.len() <= 1 {
                    break;
                }
                suffix = parent(suffix);
            }
        }
        if exists {
            RecordMatch::PassedOver
        } else {
            RecordMatch::Absent
        }
    }

    /// Whether any record (exact, hosts file or wildcard) covers `name`,
    /// whoever asks and whatever its health.
    pub fn covers(&self, name: &Name) -> bool {
        !matches!(
            self.find(name, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            RecordMatch::Absent
        )
    }
}

/// What the records say about one name for one client.
#[derive(Debug, Clone, Copy)]
pub enum RecordMatch<'a> {
    /// This record answers.
    Answers(&'a Arc<CompiledRecord>),
    /// Records of the name (or a wildcard covering it) exist, but none
    /// answers this client now: stepped aside (README "Health-checked records (fail-open)") or in views that do
    /// not match it (README "Views (answers by client network)"). The name is forwarded, but it is mapped.
    PassedOver,
    /// No record covers the name.
    Absent,
}

/// The wire form of a name's parent: `name` without its first label (the
/// root is its own parent).
fn parent(name: &[u8]) -> &[u8] {
    match name.first() {
        Some(&len) if len > 0 => name.get(1 + usize::from(len)..).unwrap_or(&[0]),
        _ => name,
    }
}

fn choose(records: &[Arc<CompiledRecord>], client: IpAddr) -> Option<&Arc<CompiledRecord>> {
    records
        .iter()
        .filter_map(|r| r.client_match(client).map(|score| (score, r)))
        .filter(|(_, r)| r.is_active())
        .max_by_key(|(score, _)| *score)
        .map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadEnv, parse};

    fn table(text: &str) -> RecordTable {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.0.0.2\n").expect("write");
        let config = parse(
            text,
            None,
            &LoadEnv {
                resolv_conf: resolv,
            },
        )
        .expect("valid");
        RecordTable::compile(&config, &HealthRegistry::default(), &Metrics::new())
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("name")
    }

    const ANYONE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn exact_beats_wildcard_and_longest_wildcard_wins() {
        let t = table(
            "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.1\"]\n\
             [[record]]\nname = \"*.docker.io\"\na = [\"203.0.113.2\"]\n\
             [[record]]\nname = \"*.cdn.docker.io\"\na = [\"203.0.113.3\"]\n",
        );
        let label = |n: &str| t.lookup(&name(n), ANYONE).map(|r| r.label.clone());
        assert_eq!(label("Docker.IO."), Some("docker.io".into()));
        assert_eq!(label("registry-1.docker.io."), Some("*.docker.io".into()));
        assert_eq!(label("a.b.cdn.docker.io."), Some("*.cdn.docker.io".into()));
        assert_eq!(label("cdn.docker.io."), Some("*.docker.io".into()));
        assert_eq!(label("io."), None);
        assert_eq!(label("notdocker.io."), None);
    }

    #[test]
    fn most_specific_client_network_wins() {
        let t = table(
            "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.1\"]\n\
             [[record]]\nname = \"docker.io\"\nclients = [\"10.0.0.0/8\"]\na = [\"203.0.113.2\"]\n\
             [[record]]\nname = \"docker.io\"\nclients = [\"10.1.0.0/16\"]\na = [\"203.0.113.3\"]\n\
             [[record]]\nname = \"only.io\"\nclients = [\"10.1.0.0/16\"]\na = [\"203.0.113.4\"]\n",
        );
        let first_a = |client: [u8; 4]| {
            t.lookup(&name("docker.io."), IpAddr::from(client))
                .and_then(|r| r.a().next())
        };
        assert_eq!(first_a([10, 1, 2, 3]), Some(Ipv4Addr::new(203, 0, 113, 3)));
        assert_eq!(first_a([10, 2, 2, 3]), Some(Ipv4Addr::new(203, 0, 113, 2)));
        assert_eq!(first_a([127, 0, 0, 1]), Some(Ipv4Addr::new(203, 0, 113, 1)));
        assert!(t.lookup(&name("only.io."), ANYONE).is_none());
    }

    #[test]
    fn find_tells_a_record_passed_over_from_no_record() {
        let t = table(
            "[[record]]\nname = \"view.io\"\nclients = [\"10.1.0.0/16\"]\na = [\"203.0.113.4\"]\n\
             [[record]]\nname = \"*.wild.io\"\nclients = [\"10.1.0.0/16\"]\na = [\"203.0.113.5\"]\n\
             [[record]]\nname = \"plain.io\"\na = [\"203.0.113.6\"]\n",
        );
        let kind = |n: &str| match t.find(&name(n), ANYONE) {
            RecordMatch::Answers(_) => "answers",
            RecordMatch::PassedOver => "passed over",
            RecordMatch::Absent => "absent",
        };
        assert_eq!(kind("plain.io."), "answers");
        assert_eq!(kind("view.io."), "passed over");
        assert_eq!(kind("a.b.wild.io."), "passed over");
        assert_eq!(kind("wild.io."), "absent");
        assert_eq!(kind("other.io."), "absent");
        assert!(t.covers(&name("View.IO.")));
        assert!(!t.covers(&name("wild.io.")));
    }
}
