//! Configuration: the TOML file of README "Configuration reference" turned into a validated, typed
//! [`Config`]. The same [`load`] function serves the start, `check` and every
//! reload, so the three can never disagree.
//!
//! Two phases: `raw` holds the serde shapes (typed values, unknown keys
//! rejected, errors located by `toml`), then [`Config::from_raw`] applies the
//! rules that span several keys (CNAME xor addresses, one name per `clients`
//! set, no upstream pointing back at a listener) and reads the files named
//! by the configuration.

mod error;
mod expand;
mod health;
mod hosts;
mod raw;
mod types;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::{LowerName, Name};
use ipnet::IpNet;
use serde::Deserialize;

pub use error::{ConfigError, Location};
pub use health::{CaBundle, HealthCheckConfig, HttpCheck, TlsCheck};
pub use hosts::HostsEntry;
pub use types::{DomainName, NameError, RecordName, UpstreamSpec, parse_domain_name};

/// The networks allowed by default: loopback, private, CGNAT, link-local.
pub const DEFAULT_ALLOW: &[&str] = &[
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// The environment variable naming the config file when `--config` is absent.
pub const CONFIG_ENV: &str = "ACCEL_DNS_CONFIG";
/// The environment variable that overrides the path of `resolv.conf` read for
/// `system` upstreams (tests and containers use it).
pub const RESOLV_CONF_ENV: &str = "ACCEL_DNS_RESOLV_CONF";
/// Where `system` upstreams come from unless [`RESOLV_CONF_ENV`] says otherwise.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; `None` for the built-in defaults.
    pub path: Option<PathBuf>,
    /// `[server]`
    pub server: ServerConfig,
    /// `[upstream]`
    pub upstream: UpstreamConfig,
    /// `[cache]`
    pub cache: CacheConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[records]` and every `[[record]]`.
    pub records: RecordsConfig,
    /// The zones of every registry bundle in use (README "Unmapped names"), sorted, each
    /// once: their unmapped names are reported. To be unioned with
    /// `[records] watch`.
    pub bundle_zones: Vec<Name>,
}

/// `[server]`: the listeners and who may use them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Each address is served over UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Clients outside these networks get REFUSED.
    pub allow: Vec<IpNet>,
    /// An idle TCP connection is closed after this long.
    pub tcp_idle_timeout: Duration,
    /// TCP connections beyond this many are closed at once.
    pub max_tcp_connections: usize,
}

/// `[upstream]`: where other names are forwarded.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Resolvers in the order they are tried (`system` already expanded).
    pub servers: Vec<SocketAddr>,
    /// Whether `system` was used (then `resolv.conf` is watched).
    pub uses_system: bool,
    /// The `resolv.conf` that `system` read.
    pub resolv_conf: PathBuf,
    /// Budget of one client query, every attempt included.
    pub timeout: Duration,
}

/// `[cache]`: bounds of the answer cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Most entries; 0 turns the cache off.
    pub max_entries: u64,
    /// Lower bound of positive TTLs.
    pub min_ttl: Duration,
    /// Upper bound of positive TTLs.
    pub max_ttl: Duration,
    /// Upper bound of negative TTLs.
    pub negative_max_ttl: Duration,
    /// How long past expiry an entry may answer when every upstream fails.
    pub serve_stale: Duration,
}

/// The default `[admin] listen` (also where `accel-dns status` looks).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9553";

/// `[admin]`: the HTTP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where `/metrics`, `/healthz`, `/readyz` are served; `None` turns it off.
    pub listen: Option<SocketAddr>,
}

/// Format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing` filter directive (`RUST_LOG` wins over it).
    pub level: String,
    /// Text or JSON.
    pub format: LogFormat,
    /// One line per query.
    pub queries: bool,
}

/// `[records]` and the `[[record]]` list.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordsConfig {
    /// Default TTL of answers made from records.
    pub ttl: u32,
    /// Hosts files, as resolved paths.
    pub hosts_files: Vec<PathBuf>,
    /// The names the hosts files give, merged.
    pub hosts: BTreeMap<LowerName, HostsEntry>,
    /// The `[[record]]` entries, in file order.
    pub entries: Vec<RecordConfig>,
    /// `watch`: zones whose unmapped names are reported (README "Unmapped names"), as
    /// configured (lower-cased, deduplicated). Read them through
    /// [`Config::watched_zones`], which adds the zones of the bundles.
    pub watch: Vec<Name>,
}

/// One `[[record]]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    /// Exact or wildcard name.
    pub name: RecordName,
    /// Addresses or alias.
    pub data: RecordData,
    /// TTL of answers (the record's own, else `[records] ttl`).
    pub ttl: u32,
    /// Client networks this record answers; empty means everyone.
    pub clients: Vec<IpNet>,
    /// Health check of the addresses, or of what the CNAME target resolves to.
    pub health_check: Option<HealthCheckConfig>,
    /// Line of the record in the config file (for logs).
    pub line: usize,
    /// The bundle (`registry = "ID"`) the record was expanded from, if any.
    pub bundle: Option<&'static str>,
}

/// What a record answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// A and AAAA addresses (either list may be empty, not both).
    Addresses {
        /// IPv4 addresses.
        a: Vec<Ipv4Addr>,
        /// IPv6 addresses.
        aaaa: Vec<Ipv6Addr>,
    },
    /// An alias whose target is resolved into the same answer.
    Cname(Name),
}

/// Where the loader looks for things outside the config file.
#[derive(Debug, Clone)]
pub struct LoadEnv {
    /// `resolv.conf` used for `system` upstreams.
    pub resolv_conf: PathBuf,
}

impl LoadEnv {
    /// From the process environment (`ACCEL_DNS_RESOLV_CONF`, else `/etc/resolv.conf`).
    pub fn from_process() -> Self {
        let resolv_conf = std::env::var_os(RESOLV_CONF_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF), PathBuf::from);
        Self { resolv_conf }
    }
}

/// Loads and validates the file at `path` and every file it names.
pub fn load(path: &Path, env: &LoadEnv) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, Some(path), env)
}

/// The built-in defaults: what runs without any file.
pub fn builtin(env: &LoadEnv) -> Result<Config, ConfigError> {
    parse("", None, env)
}

/// Parses and validates config text; `path` is where it came from (for
/// errors and for resolving relative hosts-file paths).
pub fn parse(text: &str, path: Option<&Path>, env: &LoadEnv) -> Result<Config, ConfigError> {
    let shown = path.map_or_else(|| PathBuf::from("<built-in defaults>"), Path::to_path_buf);
    let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: shown.clone(),
        location: e.span().map(|s| Location::of_offset(text, s.start)),
        message: e.message().trim().to_string(),
    })?;
    Config::from_raw(raw, text, path, &shown, env)
}

impl Config {
    fn from_raw(
        raw: raw::RawConfig,
        text: &str,
        path: Option<&Path>,
        shown: &Path,
        env: &LoadEnv,
    ) -> Result<Self, ConfigError> {
        let err =
            |offset: usize, message: String| ConfigError::at(shown, text, Some(offset), message);

        let listen = raw.server.listen.get_ref().clone();
        if listen.is_empty() {
            return Err(err(
                raw.server.listen.span().start,
                "server.listen is empty".into(),
            ));
        }
        let server = ServerConfig {
            listen: listen.clone(),
            allow: raw.server.allow,
            tcp_idle_timeout: raw.server.tcp_idle_timeout.0,
            max_tcp_connections: raw.server.max_tcp_connections,
        };

        let upstream = expand_upstreams(&raw.upstream, &listen, env, shown, text)?;
        if upstream.timeout.is_zero() {
            return Err(ConfigError::at(
                shown,
                text,
                None,
                "upstream.timeout must be more than 0s",
            ));
        }

        let cache = CacheConfig {
            max_entries: raw.cache.max_entries,
            min_ttl: raw.cache.min_ttl.0,
            max_ttl: raw.cache.max_ttl.0,
            negative_max_ttl: raw.cache.negative_max_ttl.0,
            serve_stale: raw.cache.serve_stale.0,
        };
        if cache.min_ttl > cache.max_ttl {
            return Err(ConfigError::at(
                shown,
                text,
                None,
                "cache.min_ttl is larger than cache.max_ttl",
            ));
        }

        let admin_text = raw.admin.listen.get_ref().trim();
        let admin = AdminConfig {
            listen: if admin_text.is_empty() {
                None
            } else {
                Some(admin_text.parse().map_err(|_| {
                    err(
                        raw.admin.listen.span().start,
                        format!("admin.listen: invalid socket address {admin_text:?} (expected \"IP:PORT\" or \"\")"),
                    )
                })?)
            },
        };

        let level = raw.log.level.get_ref().trim().to_string();
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(err(
                raw.log.level.span().start,
                format!("log.level: invalid filter {level:?}"),
            ));
        }
        let log = LogConfig {
            level,
            format: raw.log.format,
            queries: raw.log.queries,
        };

        let base_dir = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut hosts = BTreeMap::new();
        let mut hosts_files = Vec::new();
        for file in &raw.records.hosts_files {
            let resolved = base_dir.join(file.get_ref());
            // An unreadable hosts file is reported where the config names it, so
            // that `check` gives the line to fix, not only the missing path.
            hosts::load_hosts_file(&resolved, &mut hosts).map_err(|error| match error {
                ConfigError::Read { path, source } => err(
                    file.span().start,
                    format!("hosts file {}: cannot read: {source}", path.display()),
                ),
                other => other,
            })?;
            hosts_files.push(resolved);
        }

        let mut watch: Vec<Name> = Vec::with_capacity(raw.records.watch.len());
        for zone in &raw.records.watch {
            let name = parse_domain_name(zone.get_ref())
                .map_err(|e| err(zone.span().start, format!("records.watch: {e}")))?;
            if !watch.contains(&name) {
                watch.push(name);
            }
        }

        let (entries, bundle_zones) =
            expand::records(&raw.record, raw.records.ttl, &base_dir, text, &err)?;
        // The zones of every bundle in use are always watched (README "Unmapped names").
        for zone in &bundle_zones {
            if !watch.contains(zone) {
                watch.push(zone.clone());
            }
        }

        Ok(Self {
            path: path.map(Path::to_path_buf),
            server,
            upstream,
            cache,
            admin,
            log,
            records: RecordsConfig {
                ttl: raw.records.ttl,
                hosts_files,
                hosts,
                entries,
                watch,
            },
            bundle_zones,
        })
    }

    /// The zones whose unmapped names are reported (README "Unmapped names"): `watch`, and
    /// (once bundles exist) the zones of every bundle in use. The one place
    /// that decides it, so that the query path, the metrics and
    /// `/unmapped` never disagree. Lower-cased, fully qualified, no
    /// duplicates, in the order first named.
    pub fn watched_zones(&self) -> Vec<Name> {
        let mut zones: Vec<Name> = Vec::with_capacity(self.records.watch.len());
        for zone in &self.records.watch {
            if !zones.contains(zone) {
                zones.push(zone.clone());
            }
        }
        zones
    }

    /// Every file whose change must trigger a reload.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.path.iter().cloned().collect();
        files.extend(self.records.hosts_files.iter().cloned());
        // A CA file rotated in place is a new check (README "Health-checked records (fail-open)"), as a hosts
        // file edited in place is new records.
        for record in &self.records.entries {
            if let Some(ca) = record
                .health_check
                .as_ref()
                .and_then(|c| c.tls.as_ref())
                .and_then(|t| t.ca.as_ref())
                && !files.contains(&ca.path)
            {
                files.push(ca.path.clone());
            }
        }
        if self.upstream.uses_system {
            files.push(self.upstream.resolv_conf.clone());
        }
        files
    }

    /// The one-line summary printed by `check`.
    pub fn summary(&self) -> String {
        let listen: Vec<String> = self.server.listen.iter().map(ToString::to_string).collect();
        let upstreams: Vec<String> = self
            .upstream
            .servers
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "ok: {} records ({} from bundles), {} hosts-file names, {} upstreams ({}), {} listeners ({})",
            self.records.entries.len(),
            self.records
                .entries
                .iter()
                .filter(|r| r.bundle.is_some())
                .count(),
            self.records.hosts.len(),
            self.upstream.servers.len(),
            upstreams.join(", "),
            self.server.listen.len(),
            listen.join(", "),
        )
    }
}

fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(*item);
        }
    }
    out
}

/// Whether a query sent to `upstream` would arrive at one of `listen`.
fn is_own_address(upstream: SocketAddr, listen: &[SocketAddr]) -> bool {
    listen.iter().any(|l| {
        l.port() == upstream.port()
            && (l.ip() == upstream.ip()
                || (l.ip().is_unspecified()
                    && (upstream.ip().is_loopback() || upstream.ip().is_unspecified())))
    })
}

fn expand_upstreams(
    raw: &raw::RawUpstream,
    listen: &[SocketAddr],
    env: &LoadEnv,
    shown: &Path,
    text: &str,
) -> Result<UpstreamConfig, ConfigError> {
    let offset = raw.servers.span().start;
    let mut servers = Vec::new();
    let mut uses_system = false;
    for spec in raw.servers.get_ref() {
        match spec {
            UpstreamSpec::Server(addr) => {
                if is_own_address(*addr, listen) {
                    return Err(ConfigError::at(
                        shown,
                        text,
                        Some(offset),
                        format!(
                            "upstream {addr} is an address this server listens on (a forwarding loop)"
                        ),
                    ));
                }
                if !servers.contains(addr) {
                    servers.push(*addr);
                }
            }
            UpstreamSpec::System => {
                uses_system = true;
                for ip in read_resolv_conf(&env.resolv_conf)? {
                    let addr = SocketAddr::new(ip, 53);
                    if !is_own_address(addr, listen) && !servers.contains(&addr) {
                        servers.push(addr);
                    }
                }
            }
        }
    }
    if servers.is_empty() {
        let why = if uses_system {
            format!(
                "no upstream left: {} has no nameserver other than this server's own addresses",
                env.resolv_conf.display()
            )
        } else {
            "upstream.servers is empty".to_string()
        };
        return Err(ConfigError::at(shown, text, Some(offset), why));
    }
    Ok(UpstreamConfig {
        servers,
        uses_system,
        resolv_conf: env.resolv_conf.clone(),
        timeout: raw.timeout.0,
    })
}

/// The nameserver addresses of a `resolv.conf` file.
fn read_resolv_conf(path: &Path) -> Result<Vec<IpAddr>, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    match hickory_resolver::system_conf::parse_resolv_conf(bytes) {
        Ok((config, _)) => Ok(config.name_servers().iter().map(|ns| ns.ip).collect()),
        Err(e) => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            location: None,
            message: format!("no usable nameserver: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(resolv: &str) -> (tempfile::TempDir, LoadEnv) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, resolv).expect("write");
        (dir, LoadEnv { resolv_conf: path })
    }

    #[test]
    fn defaults_expand_system_without_own_addresses() {
        let (_d, env) = env_with("nameserver 127.0.0.1\nnameserver 10.0.0.2\n");
        let text = "[server]\nlisten = [\"127.0.0.1:53\"]\n";
        let config = parse(text, None, &env).expect("valid");
        assert_eq!(
            config.upstream.servers,
            vec![SocketAddr::from(([10, 0, 0, 2], 53))]
        );
        assert!(config.upstream.uses_system);
        assert_eq!(config.cache.max_entries, 100_000);
        assert_eq!(
            config.admin.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9553)))
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_location() {
        let (_d, env) = env_with("nameserver 10.0.0.2\n");
        let err =
            parse("[cache]\nmax_entrys = 5\n", Some(Path::new("a.toml")), &env).expect_err("typo");
        let text = err.to_string();
        assert!(
            text.starts_with("a.toml:2:1: unknown field `max_entrys`"),
            "{text}"
        );
    }

    #[test]
    fn record_rules_are_enforced() {
        let (_d, env) = env_with("nameserver 10.0.0.2\n");
        let cases = [
            ("[[record]]\nname = \"a.io\"\n", "needs a cname"),
            (
                "[[record]]\nname = \"a.io\"\na = [\"1.2.3.4\"]\ncname = \"b.io\"\n",
                "mutually exclusive",
            ),
            (
                "[[record]]\nname = \"a.io\"\na = [\"1.2.3.4\"]\n[[record]]\nname = \"A.io.\"\na = [\"1.2.3.5\"]\n",
                "more than once",
            ),
            (
                "[[record]]\nname = \"a.*.io\"\na = [\"1.2.3.4\"]\n",
                "wildcard",
            ),
            (
                "[[record]]\nname = \"a.io\"\na = [\"1.2.3.400\"]\n",
                "invalid",
            ),
            ("[upstream]\nservers = [\"127.0.0.1:5353\"]\n", "listens on"),
            ("[upstream]\nservers = []\n", "empty"),
            ("[cache]\nmax_ttl = \"forever\"\n", "invalid duration"),
        ];
        for (text, expected) in cases {
            let err = parse(text, Some(Path::new("c.toml")), &env).expect_err(text);
            assert!(err.to_string().contains(expected), "{text:?} gave {err}");
        }
    }

    #[test]
    fn same_name_with_distinct_clients_is_allowed() {
        let (_d, env) = env_with("nameserver 10.0.0.2\n");
        let text = "[[record]]\nname = \"a.io\"\na = [\"1.2.3.4\"]\n[[record]]\nname = \"a.io\"\nclients = [\"10.1.0.0/16\"]\na = [\"1.2.3.5\"]\n";
        let config = parse(text, None, &env).expect("valid");
        assert_eq!(config.records.entries.len(), 2);
        assert_eq!(config.records.entries[1].line, 4);
    }

    #[test]
    fn watched_zones_are_names_and_a_bad_one_is_located() {
        let (_d, env) = env_with("nameserver 10.0.0.2\n");
        let text = "[records]\nwatch = [\"Docker.IO.\", \"ghcr.io\", \"docker.io\"]\n";
        let config = parse(text, None, &env).expect("valid");
        let zones: Vec<String> = config
            .watched_zones()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(zones, ["docker.io.", "ghcr.io."]);
        let text = "[records]\nwatch = [\"docker.io\",\n  \"bad..zone\"]\n";
        let err = parse(text, Some(Path::new("w.toml")), &env).expect_err("bad zone");
        let shown = err.to_string();
        assert!(
            shown.starts_with("w.toml:3:3: records.watch:") && shown.contains("empty label"),
            "{shown}"
        );
    }

    #[test]
    fn durations_parse() {
        let (_d, env) = env_with("nameserver 10.0.0.2\n");
        let text = "[cache]\nmin_ttl = \"1500ms\"\nmax_ttl = \"1d\"\nserve_stale = \"5m\"\n";
        let config = parse(text, None, &env).expect("valid");
        assert_eq!(config.cache.min_ttl, Duration::from_millis(1500));
        assert_eq!(config.cache.max_ttl, Duration::from_secs(86_400));
        assert_eq!(config.cache.serve_stale, Duration::from_secs(300));
    }
}
