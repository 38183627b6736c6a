//! `health_check = { ... }` of a record (README "Health-checked records (fail-open)"), validated: the timing,
//! and what one probe checks beyond the TCP connect — a TLS handshake
//! (`tls`, verified against the system's roots or `ca_file`) and an HTTP/1.1
//! `GET` (`path`). Everything a probe needs is resolved here, at load, so
//! that a bad CA file or a wildcard without a TLS name fails `check` and a
//! reload rather than the first probe.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::raw::{RawHealthCheck, TlsValue};
use super::types::RecordName;
use crate::registries::BundleName;

/// `health_check` of a record (README "Health-checked records (fail-open)"). Two records whose checks are equal
/// (and that probe the same address) share one probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheckConfig {
    /// TCP port probed.
    pub port: u16,
    /// Time between probes.
    pub interval: Duration,
    /// Longest time one whole probe (connect, handshake, request) may take.
    pub timeout: Duration,
    /// Consecutive failures that take an address down.
    pub fall: u32,
    /// Consecutive successes that bring it back.
    pub rise: u32,
    /// A TLS handshake after the connect, when asked for.
    pub tls: Option<TlsCheck>,
    /// An HTTP/1.1 `GET` after the connect (over TLS when `tls` is set).
    pub http: Option<HttpCheck>,
}

/// The TLS part of a probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsCheck {
    /// Sent as SNI; the certificate must be valid for it.
    pub server_name: Name,
    /// The CAs from `ca_file`; `None`: the system's trust store.
    pub ca: Option<CaBundle>,
}

/// The HTTP part of a probe: up only if the status is below 500.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    /// The request target, such as `/v2/`.
    pub path: String,
    /// The `Host`: the TLS server name, or the record's name for plain HTTP.
    pub host: Name,
}

/// The certificates of a `ca_file`, parsed and checked at load.
#[derive(Debug, Clone)]
pub struct CaBundle {
    /// The file, resolved against the config file's directory.
    pub path: PathBuf,
    /// Its certificates as trust anchors.
    pub roots: Arc<RootCertStore>,
    /// The certificates as read: what makes two bundles the same (a CA file
    /// rewritten with other contents is another check, and starts over).
    certificates: Arc<[CertificateDer<'static>]>,
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.certificates == other.certificates
    }
}

impl Eq for CaBundle {}

impl Hash for CaBundle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.path.hash(state);
        self.certificates.hash(state);
    }
}

impl CaBundle {
    /// Reads the PEM file at `path`: at least one certificate, each usable
    /// as a trust anchor. The error says what is wrong with the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = read_bounded(path)
            .map_err(|e| format!("ca_file {}: cannot read: {e}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ca_file {}: invalid PEM: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "ca_file {}: no \"BEGIN CERTIFICATE\" block in the file",
                path.display()
            ));
        }
        let mut roots = RootCertStore::empty();
        for certificate in &certificates {
            roots.add(certificate.clone()).map_err(|e| {
                format!(
                    "ca_file {}: a certificate cannot be used as a CA: {e}",
                    path.display()
                )
            })?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            roots: Arc::new(roots),
            certificates: certificates.into(),
        })
    }
}

/// The largest CA file read: several times a distribution's whole bundle.
/// A config naming `/dev/zero` then fails at once instead of filling memory.
const MAX_CA_FILE: u64 = 4 * 1024 * 1024;

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CA_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CA_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_CA_FILE / (1024 * 1024)
        )));
    }
    Ok(bytes)
}

/// Why a `health_check` is invalid, and at which byte of the file.
#[derive(Debug)]
pub(super) struct CheckError {
    /// Where: the offending key, else `None` for the record itself.
    pub offset: Option<usize>,
    /// What is wrong (without the record's name).
    pub message: String,
}

impl CheckError {
    fn at(offset: usize, message: impl Into<String>) -> Self {
        Self {
            offset: Some(offset),
            message: message.into(),
        }
    }
}

/// Validates the `health_check` of the record `name`; `bundle` is the
/// bundle entry the record was expanded from (its SNI answers `tls = true`
/// for a wildcard); `base_dir` is where a relative `ca_file` is found (the
/// config file's directory).
pub(super) fn validate(
    raw: &RawHealthCheck,
    name: &RecordName,
    bundle: Option<&BundleName>,
    base_dir: &Path,
) -> Result<HealthCheckConfig, CheckError> {
    if raw.port == 0 || raw.fall == 0 || raw.rise == 0 {
        return Err(CheckError {
            offset: None,
            message: "health_check port, fall and rise must be at least 1".into(),
        });
    }
    if raw.interval.0.is_zero() || raw.timeout.0.is_zero() {
        return Err(CheckError {
            offset: None,
            message: "health_check interval and timeout must be more than 0s".into(),
        });
    }
    let server_name = match raw.tls.as_ref().map(|t| (t.span().start, t.get_ref())) {
        None | Some((_, TlsValue::Enabled(false))) => None,
        Some((offset, TlsValue::Name(_))) if bundle.is_some() => {
            return Err(CheckError::at(
                offset,
                "health_check tls = \"NAME\" on a registry record: each name of the bundle \
                 is probed with its own name as SNI, write tls = true",
            ));
        }
        Some((_, TlsValue::Name(named))) => Some(named.0.clone()),
        Some((_, TlsValue::Enabled(true))) if bundle.is_some() => {
            bundle.map(BundleName::server_name)
        }
        Some((offset, TlsValue::Enabled(true))) => match name {
            RecordName::Exact(exact) => Some(Name::from(exact.clone())),
            RecordName::Wildcard(_) => {
                return Err(CheckError::at(
                    offset,
                    "health_check tls = true on a wildcard record: name the server to verify, \
                     such as tls = \"registry-1.docker.io\"",
                ));
            }
        },
    };
    if let (Some(tls), Some(sni)) = (&raw.tls, &server_name) {
        let text = sni.to_ascii();
        if rustls::pki_types::ServerName::try_from(text.trim_end_matches('.')).is_err() {
            return Err(CheckError::at(
                tls.span().start,
                format!("health_check tls: {text:?} cannot be sent as a TLS server name"),
            ));
        }
    }
    let ca = match &raw.ca_file {
        None => None,
        Some(file) if server_name.is_none() => {
            return Err(CheckError::at(
                file.span().start,
                "health_check ca_file needs tls (it verifies the TLS certificate)",
            ));
        }
        Some(file) => Some(
            CaBundle::load(&base_dir.join(file.get_ref()))
                .map_err(|message| CheckError::at(file.span().start, message))?,
        ),
    };
    let http = match &raw.path {
        None => None,
        Some(path) => {
            let text = path.get_ref();
            let valid = text.starts_with('/')
                && text
                    .parse::<hyper::http::uri::PathAndQuery>()
                    .is_ok_and(|p| p.as_str() == text);
            if !valid {
                return Err(CheckError::at(
                    path.span().start,
                    format!(
                        "health_check path {text:?} is not an absolute request path such as \"/v2/\""
                    ),
                ));
            }
            // Plain HTTP to a wildcard record asks for the name below the
            // star: the only name the record itself gives.
            let host = server_name
                .clone()
                .or_else(|| bundle.map(BundleName::server_name))
                .unwrap_or_else(|| match name {
                    RecordName::Exact(exact) | RecordName::Wildcard(exact) => {
                        Name::from(exact.clone())
                    }
                });
            Some(HttpCheck {
                path: text.clone(),
                host,
            })
        }
    };
    Ok(HealthCheckConfig {
        port: raw.port,
        interval: raw.interval.0,
        timeout: raw.timeout.0,
        fall: raw.fall,
        rise: raw.rise,
        tls: server_name.map(|server_name| TlsCheck { server_name, ca }),
        http,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{LoadEnv, RecordData, parse};
    use std::path::Path;

    fn load(dir: &Path, text: &str) -> Result<crate::config::Config, String> {
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.0.0.2\n").expect("write");
        let path = dir.join("accel-dns.toml");
        parse(
            text,
            Some(&path),
            &LoadEnv {
                resolv_conf: resolv,
            },
        )
        .map_err(|e| e.to_string())
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBbTCCAROgAwIBAgIUR8sCeUDLclp/D3mvMRuh8J+/T8UwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRYWNjZWwtZG5zIHRlc3QgQ0EwHhcNNzUwMTAxMDAwMDAwWhcN
NDA5NjAxMDEwMDAwMDBaMBwxGjAYBgNVBAMMEWFjY2VsLWRucyB0ZXN0IENBMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
-----END CERTIFICATE-----
";

    #[test]
    fn tls_ca_file_and_path_are_validated_where_they_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("empty.pem"), "no certificate here\n").expect("write");
        std::fs::write(dir.path().join("broken.pem"), CA).expect("write");
        let record = |name: &str, check: &str| {
            format!(
                "[[record]]\nname = \"{name}\"\na = [\"192.0.2.1\"]\nhealth_check = {{ port = 443, {check} }}\n"
            )
        };
        let cases = [
            (
                record("*.docker.io", "tls = true"),
                ":4:",
                "tls = true on a wildcard record",
            ),
            (
                record("docker.io", "tls = 5"),
                ":4:",
                "true, false, or the server name",
            ),
            (record("docker.io", "tls = \"a..b\""), ":4:", "empty label"),
            (
                record("docker.io", "ca_file = \"ca.pem\""),
                ":4:",
                "ca_file needs tls",
            ),
            (
                record("docker.io", "tls = true, ca_file = \"missing.pem\""),
                ":4:",
                "missing.pem: cannot read",
            ),
            (
                record("docker.io", "tls = true, ca_file = \"empty.pem\""),
                ":4:",
                "no \"BEGIN CERTIFICATE\" block",
            ),
            (
                record("docker.io", "tls = true, ca_file = \"broken.pem\""),
                ":4:",
                "broken.pem",
            ),
            (
                record("docker.io", "tls = true, ca_file = \"/dev/zero\""),
                ":4:",
                "/dev/zero: cannot read: larger than 4 MiB",
            ),
            (
                record("docker.io", "path = \"v2/\""),
                ":4:",
                "not an absolute request path",
            ),
            (
                record("docker.io", "path = \"/a b\""),
                ":4:",
                "not an absolute request path",
            ),
            (
                record("docker.io", "tls = true, sni = \"x\""),
                ":4:",
                "unknown field `sni`",
            ),
        ];
        for (text, location, problem) in cases {
            let error = load(dir.path(), &text).expect_err(&text);
            assert!(
                error.contains(&format!("accel-dns.toml{location}")) && error.contains(problem),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn the_names_of_a_probe_come_from_the_record_or_from_tls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "[[record]]\nname = \"docker.io\"\ncname = \"ga.accel.test\"\n\
                    health_check = { port = 443, tls = true, path = \"/v2/\" }\n\
                    [[record]]\nname = \"*.docker.io\"\na = [\"192.0.2.1\"]\n\
                    health_check = { port = 443, tls = \"Registry-1.Docker.io\" }\n\
                    [[record]]\nname = \"plain.test\"\na = [\"192.0.2.1\"]\n\
                    health_check = { port = 8080, path = \"/healthz\", tls = false }\n";
        let config = load(dir.path(), text).expect("valid");
        let checks: Vec<_> = config
            .records
            .entries
            .iter()
            .map(|r| r.health_check.clone().expect("checked"))
            .collect();
        assert!(matches!(
            config.records.entries[0].data,
            RecordData::Cname(_)
        ));
        let tls = checks[0].tls.as_ref().expect("tls");
        assert_eq!(tls.server_name.to_ascii(), "docker.io.");
        assert!(tls.ca.is_none());
        let http = checks[0].http.as_ref().expect("http");
        assert_eq!(
            (http.path.as_str(), http.host.to_ascii()),
            ("/v2/", "docker.io.".into())
        );
        let wildcard = checks[1].tls.as_ref().expect("tls");
        assert_eq!(wildcard.server_name.to_ascii(), "registry-1.docker.io.");
        assert!(checks[1].http.is_none());
        assert!(checks[2].tls.is_none());
        let plain = checks[2].http.as_ref().expect("http");
        assert_eq!(plain.host.to_ascii(), "plain.test.");
    }
}
