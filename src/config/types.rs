//! Typed values of the configuration that need their own parsing rules:
//! domain names, record names (exact or `*.` wildcard) and upstream specs.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hickory_proto::rr::{LowerName, Name};
use serde::{Deserialize, Deserializer};

/// Why a string is not a valid domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing but dots or whitespace.
    #[error("empty domain name")]
    Empty,
    /// An empty label, as in `a..b`.
    #[error("domain name {0:?} has an empty label")]
    EmptyLabel(String),
    /// A label over 63 octets.
    #[error("domain name {0:?} has a label longer than 63 characters")]
    LabelTooLong(String),
    /// Over 253 characters.
    #[error("domain name {0:?} is longer than 253 characters")]
    TooLong(String),
    /// A character outside letters, digits, `-` and `_`.
    #[error("domain name {0:?} contains the invalid character {1:?}")]
    BadCharacter(String, char),
    /// A `*` anywhere but as the whole leftmost label.
    #[error("{0:?}: a wildcard is only allowed as \"*.\" at the start of a name")]
    MisplacedWildcard(String),
}

/// Parses a host name (case-insensitive, trailing dot optional) into a fully
/// qualified, lower-cased name.
pub fn parse_domain_name(text: &str) -> Result<Name, NameError> {
    let trimmed = text.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    if trimmed.len() > 253 {
        return Err(NameError::TooLong(text.to_string()));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel(text.to_string()));
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong(text.to_string()));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            if bad == '*' {
                return Err(NameError::MisplacedWildcard(text.to_string()));
            }
            return Err(NameError::BadCharacter(text.to_string(), bad));
        }
    }
    let mut name = Name::from_ascii(trimmed).map_err(|_| NameError::Empty)?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// A validated, lower-cased, fully qualified domain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainName(pub Name);

impl FromStr for DomainName {
    type Err = NameError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_domain_name(text).map(DomainName)
    }
}

impl<'de> Deserialize<'de> for DomainName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::raw::from_str_value(deserializer)
    }
}

/// The name of a record: one exact name, or every name below a suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordName {
    /// Matches this name only.
    Exact(LowerName),
    /// `*.suffix`: matches every name strictly below `suffix`.
    Wildcard(LowerName),
}

impl RecordName {
    /// The name as configured, in canonical form (`docker.io`, `*.docker.io`),
    /// used as the `record` label of metrics.
    pub fn label(&self) -> String {
        match self {
            Self::Exact(name) => trim_root(&name.to_string()),
            Self::Wildcard(suffix) => format!("*.{}", trim_root(&suffix.to_string())),
        }
    }
}

fn trim_root(text: &str) -> String {
    text.trim_end_matches('.').to_string()
}

impl fmt::Display for RecordName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

impl FromStr for RecordName {
    type Err = NameError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        match trimmed.strip_prefix("*.") {
            Some(suffix) => Ok(Self::Wildcard(LowerName::new(&parse_domain_name(suffix)?))),
            None if trimmed == "*" => Err(NameError::MisplacedWildcard(text.to_string())),
            None => Ok(Self::Exact(LowerName::new(&parse_domain_name(trimmed)?))),
        }
    }
}

impl<'de> Deserialize<'de> for RecordName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::raw::from_str_value(deserializer)
    }
}

/// One entry of `upstream.servers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamSpec {
    /// The nameservers of `/etc/resolv.conf`.
    System,
    /// One resolver; port 53 unless given.
    Server(SocketAddr),
}

/// Why an upstream entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid upstream {0:?}: expected \"system\", \"IP\", \"IP:PORT\" or \"[IPv6]:PORT\"")]
pub struct UpstreamSpecError(String);

impl FromStr for UpstreamSpec {
    type Err = UpstreamSpecError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("system") {
            return Ok(Self::System);
        }
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(Self::Server(SocketAddr::new(ip, 53)));
        }
        match trimmed.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(Self::Server(addr)),
            _ => Err(UpstreamSpecError(text.to_string())),
        }
    }
}

impl<'de> Deserialize<'de> for UpstreamSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::raw::from_str_value(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_fully_qualified() {
        let name = parse_domain_name("Docker.IO.").expect("valid");
        assert_eq!(name.to_string(), "docker.io.");
    }

    #[test]
    fn invalid_names_are_rejected() {
        assert!(parse_domain_name("a..b").is_err());
        assert!(parse_domain_name("").is_err());
        assert!(parse_domain_name("bad name.io").is_err());
        assert!(parse_domain_name(&"a".repeat(64)).is_err());
        assert!("docker.*.io".parse::<RecordName>().is_err());
        assert!("*".parse::<RecordName>().is_err());
        assert!("**.io".parse::<RecordName>().is_err());
    }

    #[test]
    fn wildcard_labels_keep_the_star() {
        let name: RecordName = "*.Docker.io".parse().expect("valid");
        assert_eq!(name.label(), "*.docker.io");
    }

    #[test]
    fn upstream_specs_parse() {
        assert_eq!("system".parse::<UpstreamSpec>(), Ok(UpstreamSpec::System));
        assert_eq!(
            "10.0.0.2".parse::<UpstreamSpec>(),
            Ok(UpstreamSpec::Server(SocketAddr::from(([10, 0, 0, 2], 53))))
        );
        assert!("[::1]:5300".parse::<UpstreamSpec>().is_ok());
        assert!("nonsense".parse::<UpstreamSpec>().is_err());
    }
}
