//! The `[[record]]` list turned into validated records: each record's data
//! and `clients` checked, a `registry = "ID"` record expanded into one record
//! per name of its bundle (README "Unmapped names"), and the rules that span records
//! applied — a name once per `clients` set, an explicit `name` before a
//! bundle's, no two bundles giving the same name to the same clients.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hickory_proto::rr::Name;
use ipnet::IpNet;
use toml::Spanned;

use super::raw::RawRecord;
use super::{ConfigError, Location, RecordConfig, RecordData, RecordName, health};
use crate::registries::{self, Bundle, BundleName};

/// Where a record's names come from.
enum Names {
    /// `name = "..."`.
    Explicit(RecordName),
    /// `registry = "ID"`, minus `exclude`.
    Bundle {
        bundle: &'static Bundle,
        exclude: BTreeSet<String>,
    },
}

/// A record whose own keys are valid, before its names are expanded.
struct Prepared<'a> {
    offset: usize,
    raw: &'a RawRecord,
    names: Names,
    data: RecordData,
    clients: Vec<IpNet>,
}

/// Validates and expands every `[[record]]`; returns the records in file
/// order (a bundle's in its file order) and the zones of the bundles used.
/// `err` locates a message at a byte offset of `text`.
pub(super) fn records(
    raw: &[Spanned<RawRecord>],
    default_ttl: u32,
    base_dir: &Path,
    text: &str,
    err: &impl Fn(usize, String) -> ConfigError,
) -> Result<(Vec<RecordConfig>, Vec<Name>), ConfigError> {
    let mut prepared = Vec::with_capacity(raw.len());
    // Explicit names first: they beat a bundle's record wherever they are
    // written in the file.
    let mut explicit: BTreeSet<(String, Vec<IpNet>)> = BTreeSet::new();
    for spanned in raw {
        let record = prepare(spanned, err)?;
        if let Names::Explicit(name) = &record.names {
            let label = name.label();
            if !explicit.insert((label.clone(), record.clients.clone())) {
                return Err(err(
                    record.offset,
                    format!(
                        "record {label}: defined more than once{}",
                        for_clients(&record.clients)
                    ),
                ));
            }
        }
        prepared.push(record);
    }

    let mut entries = Vec::with_capacity(prepared.len());
    let mut zones = BTreeSet::new();
    // (name, clients) → (bundle id, line) of the bundle record that gave it.
    let mut from_bundles: BTreeMap<(String, Vec<IpNet>), (&'static str, usize)> = BTreeMap::new();
    for record in &prepared {
        let line = Location::of_offset(text, record.offset).line;
        match &record.names {
            Names::Explicit(name) => {
                let mut built = build(record, name.clone(), None, default_ttl, base_dir, err)?;
                built.line = line;
                entries.push(built);
            }
            Names::Bundle { bundle, exclude } => {
                zones.extend(bundle.zones.iter().cloned());
                for entry in &bundle.names {
                    let label = entry.name.label();
                    if exclude.contains(&label) {
                        continue;
                    }
                    let key = (label.clone(), record.clients.clone());
                    if explicit.contains(&key) {
                        tracing::debug!(
                            name = %label,
                            registry = %bundle.id,
                            line,
                            "an explicit record of the same name and clients replaces the bundle's"
                        );
                        continue;
                    }
                    if let Some((other, other_line)) = from_bundles.get(&key) {
                        return Err(err(
                            record.offset,
                            format!(
                                "record {label}{}: given by registry \"{}\" here and by registry \"{other}\" on line {other_line}; exclude it from one of them",
                                for_clients(&record.clients),
                                bundle.id,
                            ),
                        ));
                    }
                    from_bundles.insert(key, (bundle.id.as_str(), line));
                    let mut built = build(
                        record,
                        entry.name.clone(),
                        Some(entry),
                        default_ttl,
                        base_dir,
                        err,
                    )?;
                    built.line = line;
                    built.bundle = Some(bundle.id.as_str());
                    entries.push(built);
                }
            }
        }
    }
    Ok((entries, zones.into_iter().collect()))
}

/// Checks one record's own keys: `name` xor `registry`, `exclude`, data, clients.
fn prepare<'a>(
    spanned: &'a Spanned<RawRecord>,
    err: &impl Fn(usize, String) -> ConfigError,
) -> Result<Prepared<'a>, ConfigError> {
    let offset = spanned.span().start;
    let record = spanned.get_ref();
    let names = match (&record.name, &record.registry) {
        (Some(_), Some(registry)) => {
            return Err(err(
                registry.span().start,
                "record has both name and registry: write one of them".into(),
            ));
        }
        (None, None) => {
            return Err(err(
                offset,
                "record needs a name (or registry = \"ID\" for a built-in bundle)".into(),
            ));
        }
        (Some(name), None) => {
            if let Some(exclude) = &record.exclude {
                return Err(err(
                    exclude.span().start,
                    format!(
                        "record {}: exclude is only for a registry record",
                        name.label()
                    ),
                ));
            }
            Names::Explicit(name.clone())
        }
        (None, Some(registry)) => {
            let id = registry.get_ref().trim();
            let bundle = registries::find(id).ok_or_else(|| {
                err(
                    registry.span().start,
                    format!(
                        "unknown registry {id:?}: the built-in bundles are {} (see `accel-dns registries`)",
                        registries::known_ids()
                    ),
                )
            })?;
            let mut exclude = BTreeSet::new();
            for entry in record.exclude.iter().flat_map(|e| e.get_ref()) {
                let at = entry.span().start;
                let name: RecordName = entry
                    .get_ref()
                    .parse()
                    .map_err(|e| err(at, format!("registry {id:?}: exclude: {e}")))?;
                let label = name.label();
                if !bundle.names.iter().any(|n| n.name == name) {
                    let names: Vec<String> = bundle.names.iter().map(|n| n.name.label()).collect();
                    return Err(err(
                        at,
                        format!(
                            "registry {id:?}: exclude {label:?} is not a name of the bundle (its names: {})",
                            names.join(", ")
                        ),
                    ));
                }
                exclude.insert(label);
            }
            Names::Bundle { bundle, exclude }
        }
    };
    let label = match &names {
        Names::Explicit(name) => name.label(),
        Names::Bundle { bundle, .. } => format!("registry {:?}", bundle.id),
    };
    let data = match (&record.cname, record.a.is_empty() && record.aaaa.is_empty()) {
        (Some(_), false) => {
            return Err(err(
                offset,
                format!("record {label}: cname and addresses are mutually exclusive"),
            ));
        }
        (None, true) => {
            return Err(err(
                offset,
                format!("record {label}: needs a cname or at least one address in a/aaaa"),
            ));
        }
        (Some(target), true) => RecordData::Cname(target.0.clone()),
        (None, false) => RecordData::Addresses {
            a: super::dedup(&record.a),
            aaaa: super::dedup(&record.aaaa),
        },
    };
    if record.clients.as_ref().is_some_and(Vec::is_empty) {
        return Err(err(
            offset,
            format!("record {label}: clients is empty (leave it out to answer everyone)"),
        ));
    }
    let mut clients = record.clients.clone().unwrap_or_default();
    clients.iter_mut().for_each(|n| *n = n.trunc());
    clients.sort();
    clients.dedup();
    Ok(Prepared {
        offset,
        raw: record,
        names,
        data,
        clients,
    })
}

/// One record for `name`, with its health check resolved for that name.
fn build(
    record: &Prepared<'_>,
    name: RecordName,
    bundle: Option<&BundleName>,
    default_ttl: u32,
    base_dir: &Path,
    err: &impl Fn(usize, String) -> ConfigError,
) -> Result<RecordConfig, ConfigError> {
    let health_check = match &record.raw.health_check {
        None => None,
        Some(check) => Some(
            health::validate(check, &name, bundle, base_dir).map_err(|e| {
                err(
                    e.offset.unwrap_or(record.offset),
                    format!("record {}: {}", name.label(), e.message),
                )
            })?,
        ),
    };
    Ok(RecordConfig {
        name,
        data: record.data.clone(),
        ttl: record.raw.ttl.unwrap_or(default_ttl),
        clients: record.clients.clone(),
        health_check,
        line: 0,
        bundle: None,
    })
}

fn for_clients(clients: &[IpNet]) -> String {
    if clients.is_empty() {
        String::new()
    } else {
        format!(" for clients {clients:?}")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{LoadEnv, RecordName, parse};
    use std::path::Path;

    fn load(text: &str) -> Result<crate::config::Config, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 10.0.0.2\n").expect("write");
        parse(
            text,
            Some(Path::new("b.toml")),
            &LoadEnv {
                resolv_conf: resolv,
            },
        )
        .map_err(|e| e.to_string())
    }

    fn labels(config: &crate::config::Config) -> Vec<String> {
        config
            .records
            .entries
            .iter()
            .map(|r| r.name.label())
            .collect()
    }

    #[test]
    fn a_registry_record_stands_for_every_name_of_its_bundle() {
        let config = load(
            "[[record]]\nregistry = \"quay\"\na = [\"192.0.2.1\"]\nttl = 7\n\
             health_check = { port = 443, tls = true, path = \"/v2/\" }\n",
        )
        .expect("valid");
        assert_eq!(
            labels(&config),
            [
                "quay.io",
                "cdn.quay.io",
                "cdn01.quay.io",
                "cdn02.quay.io",
                "cdn03.quay.io"
            ]
        );
        for record in &config.records.entries {
            assert_eq!(
                (record.ttl, record.line, record.bundle),
                (7, 1, Some("quay"))
            );
            let check = record.health_check.as_ref().expect("checked");
            let sni = check.tls.as_ref().expect("tls").server_name.to_ascii();
            assert_eq!(sni, format!("{}.", record.name.label()));
            assert_eq!(check.http.as_ref().expect("http").host.to_ascii(), sni);
        }
        let zones: Vec<String> = config.bundle_zones.iter().map(|z| z.to_ascii()).collect();
        assert_eq!(zones, ["quay.io."]);
        assert!(
            config
                .summary()
                .starts_with("ok: 5 records (5 from bundles), ")
        );
    }

    #[test]
    fn a_wildcard_of_a_bundle_is_probed_with_the_bundles_sni() {
        let config = load(
            "[[record]]\nregistry = \"mcr\"\ncname = \"ga.accel.test\"\n\
             health_check = { port = 443, tls = true }\n",
        )
        .expect("valid");
        let wildcard = config
            .records
            .entries
            .iter()
            .find(|r| matches!(r.name, RecordName::Wildcard(_)))
            .expect("wildcard");
        let tls = wildcard.health_check.as_ref().and_then(|c| c.tls.as_ref());
        assert_eq!(
            tls.expect("tls").server_name.to_ascii(),
            "eastus.data.mcr.microsoft.com."
        );
    }

    #[test]
    fn exclude_and_explicit_names_take_names_out_of_a_bundle() {
        let config = load(
            "[[record]]\nregistry = \"quay\"\na = [\"192.0.2.1\"]\nexclude = [\"CDN.quay.io.\"]\n\
             [[record]]\nname = \"quay.io\"\na = [\"192.0.2.9\"]\n\
             [[record]]\nregistry = \"quay\"\nclients = [\"10.1.0.0/16\"]\na = [\"192.0.2.5\"]\n",
        )
        .expect("valid");
        let everyone: Vec<String> = config
            .records
            .entries
            .iter()
            .filter(|r| r.clients.is_empty())
            .map(|r| format!("{}@{}", r.name.label(), r.line))
            .collect();
        assert_eq!(
            everyone,
            [
                "cdn01.quay.io@1",
                "cdn02.quay.io@1",
                "cdn03.quay.io@1",
                "quay.io@5"
            ]
        );
        // The explicit quay.io answers everyone; the view keeps its own.
        let view = config
            .records
            .entries
            .iter()
            .filter(|r| !r.clients.is_empty());
        assert_eq!(view.count(), 5);
    }

    #[test]
    fn bundle_errors_say_where_and_what() {
        let cases = [
            (
                "[[record]]\nregistry = \"dockerhub\"\na = [\"192.0.2.1\"]\n",
                "b.toml:2:12: unknown registry \"dockerhub\": the built-in bundles are docker-hub, ghcr",
            ),
            (
                "[[record]]\nregistry = \"quay\"\nexclude = [\"quay.io\", \"docker.io\"]\na = [\"192.0.2.1\"]\n",
                "b.toml:3:23: registry \"quay\": exclude \"docker.io\" is not a name of the bundle",
            ),
            (
                "[[record]]\nname = \"quay.io\"\nregistry = \"quay\"\na = [\"192.0.2.1\"]\n",
                "b.toml:3:12: record has both name and registry",
            ),
            (
                "[[record]]\na = [\"192.0.2.1\"]\n",
                "b.toml:1:1: record needs a name",
            ),
            (
                "[[record]]\nname = \"quay.io\"\nexclude = [\"quay.io\"]\na = [\"192.0.2.1\"]\n",
                "b.toml:3:11: record quay.io: exclude is only for a registry record",
            ),
            (
                "[[record]]\nregistry = \"quay\"\na = [\"192.0.2.1\"]\n\
                 [[record]]\nregistry = \"quay\"\nexclude = [\"quay.io\"]\ncname = \"ga.test\"\n",
                "b.toml:4:1: record cdn.quay.io: given by registry \"quay\" here and by registry \"quay\" on line 1",
            ),
            (
                "[[record]]\nregistry = \"quay\"\na = [\"192.0.2.1\"]\nhealth_check = { port = 443, tls = \"quay.io\" }\n",
                "b.toml:4:36: record quay.io: health_check tls = \"NAME\" on a registry record",
            ),
            (
                "[[record]]\nregistry = \"quay\"\n",
                "b.toml:1:1: record registry \"quay\": needs a cname",
            ),
        ];
        for (text, expected) in cases {
            let error = load(text).expect_err(text);
            assert!(
                error.starts_with(expected),
                "{text}\n got: {error}\nwant: {expected}"
            );
        }
    }
}
