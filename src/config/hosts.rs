//! Files in `/etc/hosts` format (`IP name [alias ...]`, `#` comments): their
//! names answer A/AAAA like exact records.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use hickory_proto::rr::LowerName;

use super::error::{ConfigError, Location};
use super::types::parse_domain_name;

/// The addresses that hosts files give one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsEntry {
    /// IPv4 addresses, in file order, without duplicates.
    pub a: Vec<Ipv4Addr>,
    /// IPv6 addresses, in file order, without duplicates.
    pub aaaa: Vec<Ipv6Addr>,
}

/// Reads one hosts file and merges its names into `into`.
pub(super) fn load_hosts_file(
    path: &Path,
    into: &mut BTreeMap<LowerName, HostsEntry>,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_hosts(path, &text, into)
}

/// Parses hosts-file text; `path` is only used in errors.
pub(super) fn parse_hosts(
    path: &Path,
    text: &str,
    into: &mut BTreeMap<LowerName, HostsEntry>,
) -> Result<(), ConfigError> {
    for (index, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("");
        let mut fields = content.split_whitespace();
        let Some(address) = fields.next() else {
            continue;
        };
        let location = Some(Location {
            line: index + 1,
            column: 1,
        });
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            location,
            message,
        };
        // Zone indexes such as fe80::1%eth0 are meaningless in an answer.
        let ip: IpAddr = address
            .split('%')
            .next()
            .unwrap_or(address)
            .parse()
            .map_err(|_| invalid(format!("invalid IP address {address:?}")))?;
        let mut any_name = false;
        for name in fields {
            any_name = true;
            let name = parse_domain_name(name).map_err(|e| invalid(e.to_string()))?;
            let entry = into.entry(LowerName::new(&name)).or_default();
            match ip {
                IpAddr::V4(v4) if !entry.a.contains(&v4) => entry.a.push(v4),
                IpAddr::V6(v6) if !entry.aaaa.contains(&v6) => entry.aaaa.push(v6),
                _ => {}
            }
        }
        if !any_name {
            return Err(invalid(format!("address {address} has no host name")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_lines_and_families() {
        let mut map = BTreeMap::new();
        let text = "# comment\n203.0.113.1 Registry.Example  alias.example\n2001:db8::1 registry.example # v6\n\n";
        parse_hosts(Path::new("h"), text, &mut map).expect("valid");
        let name = LowerName::new(&parse_domain_name("registry.example").expect("name"));
        let entry = &map[&name];
        assert_eq!(entry.a, vec![Ipv4Addr::new(203, 0, 113, 1)]);
        assert_eq!(entry.aaaa.len(), 1);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn bad_lines_name_their_line() {
        let mut map = BTreeMap::new();
        let err = parse_hosts(
            Path::new("hosts"),
            "127.0.0.1 ok\n300.1.1.1 bad\n",
            &mut map,
        )
        .expect_err("invalid");
        assert!(
            err.to_string().starts_with("hosts:2:1: invalid IP address"),
            "{err}"
        );
    }
}
