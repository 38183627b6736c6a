//! Raw serde shapes of the TOML file: exactly the schema of README "Configuration reference", with
//! `deny_unknown_fields` everywhere so that a typo is an error, and values
//! already typed (durations, addresses, names, networks) so that `toml`
//! reports a bad value with its line and column.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

use super::types::{DomainName, RecordName, UpstreamSpec};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[upstream]`
    pub upstream: RawUpstream,
    /// `[cache]`
    pub cache: RawCache,
    /// `[admin]`
    pub admin: RawAdmin,
    /// `[log]`
    pub log: RawLog,
    /// `[records]`
    pub records: RawRecords,
    /// `[[record]]`, each with its position in the file for error messages.
    pub record: Vec<Spanned<RawRecord>>,
}

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    /// Addresses served over UDP and TCP.
    pub listen: Spanned<Vec<std::net::SocketAddr>>,
    /// Networks allowed to query.
    pub allow: Vec<IpNet>,
    /// Idle TCP connections are closed after this long.
    pub tcp_idle_timeout: DurationValue,
    /// Open TCP connections above this are refused.
    pub max_tcp_connections: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: Spanned::new(
                0..0,
                vec![std::net::SocketAddr::from(([127, 0, 0, 1], 5353))],
            ),
            allow: super::DEFAULT_ALLOW
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            tcp_idle_timeout: DurationValue(Duration::from_secs(10)),
            max_tcp_connections: 1024,
        }
    }
}

/// `[upstream]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    /// Upstream resolvers in order, or `system`.
    pub servers: Spanned<Vec<UpstreamSpec>>,
    /// Budget of one query, all attempts together.
    pub timeout: DurationValue,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            servers: Spanned::new(0..0, vec![UpstreamSpec::System]),
            timeout: DurationValue(Duration::from_secs(2)),
        }
    }
}

/// `[cache]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCache {
    /// Most entries held; 0 turns the cache off.
    pub max_entries: u64,
    /// Lower bound of a positive TTL.
    pub min_ttl: DurationValue,
    /// Upper bound of a positive TTL.
    pub max_ttl: DurationValue,
    /// Upper bound of a negative TTL.
    pub negative_max_ttl: DurationValue,
    /// How long past expiry an entry may answer when upstream fails.
    pub serve_stale: DurationValue,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            min_ttl: DurationValue(Duration::ZERO),
            max_ttl: DurationValue(Duration::from_secs(86_400)),
            negative_max_ttl: DurationValue(Duration::from_secs(300)),
            serve_stale: DurationValue(Duration::ZERO),
        }
    }
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    /// HTTP address, or empty to turn the admin endpoint off.
    pub listen: Spanned<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: Spanned::new(0..0, super::DEFAULT_ADMIN_LISTEN.to_string()),
        }
    }
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    /// A `tracing` filter such as `info` or `accel_dns=debug`.
    pub level: Spanned<String>,
    /// Text or JSON lines.
    pub format: super::LogFormat,
    /// One line per query.
    pub queries: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: Spanned::new(0..0, "info".to_string()),
            format: super::LogFormat::Text,
            queries: false,
        }
    }
}

/// `[records]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRecords {
    /// Default TTL of the answers made from records.
    pub ttl: u32,
    /// Files in `/etc/hosts` format.
    pub hosts_files: Vec<Spanned<PathBuf>>,
    /// Zones whose unmapped names are reported (README "Unmapped names").
    pub watch: Vec<Spanned<String>>,
}

impl Default for RawRecords {
    fn default() -> Self {
        Self {
            ttl: 60,
            hosts_files: Vec::new(),
            watch: Vec::new(),
        }
    }
}

/// One `[[record]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecord {
    /// Exact name or `*.` wildcard; exactly one of `name` and `registry`.
    pub name: Option<RecordName>,
    /// A built-in bundle (README "Unmapped names"): one record per name of the bundle.
    pub registry: Option<Spanned<String>>,
    /// Names of the bundle to leave out (only with `registry`).
    pub exclude: Option<Spanned<Vec<Spanned<String>>>>,
    /// IPv4 addresses.
    #[serde(default)]
    pub a: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    #[serde(default)]
    pub aaaa: Vec<Ipv6Addr>,
    /// Alias target, instead of addresses.
    pub cname: Option<DomainName>,
    /// TTL of this record's answers.
    pub ttl: Option<u32>,
    /// Client networks this record answers (README "Views (answers by client network)").
    pub clients: Option<Vec<IpNet>>,
    /// Health check of the addresses, or of what a CNAME target resolves to (README "Health-checked records (fail-open)").
    pub health_check: Option<RawHealthCheck>,
}

/// `health_check = { ... }` of a record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    /// TCP port probed on every address.
    pub port: u16,
    /// Time between probes.
    #[serde(default = "default_interval")]
    pub interval: DurationValue,
    /// Time a connect may take.
    #[serde(default = "default_probe_timeout")]
    pub timeout: DurationValue,
    /// Consecutive failures that take an address down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Consecutive successes that bring it back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// A TLS handshake after the connect: `true` (the record's name as
    /// SNI) or the name to send.
    pub tls: Option<Spanned<TlsValue>>,
    /// PEM file of the CAs that verify the certificate, instead of the
    /// system's trust store (relative to the config file).
    pub ca_file: Option<Spanned<PathBuf>>,
    /// An HTTP/1.1 `GET` of this path after the connect (and handshake).
    pub path: Option<Spanned<String>>,
}

/// `tls = true | false | "NAME"` of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TlsValue {
    /// `true` or `false`.
    Enabled(bool),
    /// The server name to send as SNI and to verify the certificate for.
    Name(DomainName),
}

impl<'de> Deserialize<'de> for TlsValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = TlsValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "true, false, or the server name to verify, such as \"registry-1.docker.io\"",
                )
            }
            fn visit_bool<E: de::Error>(self, enabled: bool) -> Result<TlsValue, E> {
                Ok(TlsValue::Enabled(enabled))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<TlsValue, E> {
                text.parse()
                    .map(TlsValue::Name)
                    .map_err(|e| E::custom(format!("tls: {e}")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

fn default_interval() -> DurationValue {
    DurationValue(Duration::from_secs(5))
}
fn default_probe_timeout() -> DurationValue {
    DurationValue(Duration::from_secs(1))
}
fn default_fall() -> u32 {
    3
}
fn default_rise() -> u32 {
    2
}

/// A duration written as `"1500ms"`, `"2s"`, `"5m"`, `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"1500ms\", \"2s\", \"5m\" or \"1d\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationValue, E> {
                humantime::parse_duration(text.trim())
                    .map(DurationValue)
                    .map_err(|e| E::custom(format!("invalid duration {text:?}: {e}")))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Deserializes any `FromStr` type whose error is displayable, from a string.
pub(super) fn from_str_value<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(de::Error::custom)
}
