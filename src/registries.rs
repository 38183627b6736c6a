//! The built-in registry bundles (README "Unmapped names"): the names one image pull from a
//! registry touches, kept as data in `src/registries.toml` and embedded in
//! the binary. This module parses and checks that file once, and renders it
//! for `accel-dns registries`; `config` expands `registry = "ID"` records
//! from it. It sits below `config` and binds nothing.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::OnceLock;

use hickory_proto::rr::{LowerName, Name};
use serde::Deserialize;

use crate::config::{RecordName, parse_domain_name};

/// The bundles file, as shipped.
const DATA: &str = include_str!("registries.toml");

/// One registry: every name a pull touches, and the zones to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// What `registry = "..."` names, such as `docker-hub`.
    pub id: String,
    /// One line saying what the bundle covers.
    pub description: String,
    /// Zones whose unmapped names are reported while the bundle is in use.
    pub zones: Vec<Name>,
    /// The names, in file order.
    pub names: Vec<BundleName>,
    /// Hosts a pull may touch that the bundle leaves out on purpose.
    pub not_mapped: Vec<NotMapped>,
}

/// One name of a bundle and the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleName {
    /// Exact name or `*.` wildcard.
    pub name: RecordName,
    /// For a wildcard, a concrete name below it: the SNI of a `tls = true`
    /// probe. For an exact name, `None` (the name itself is sent).
    pub sni: Option<Name>,
    /// A public page that documents the name.
    pub source: String,
    /// When the source was last checked (`YYYY-MM-DD`).
    pub checked: String,
    /// Where the evidence is weak, or the choice needs a word.
    pub note: Option<String>,
}

impl BundleName {
    /// The server name a `tls = true` probe of this name sends and verifies.
    pub fn server_name(&self) -> Name {
        match (&self.name, &self.sni) {
            (_, Some(sni)) => sni.clone(),
            (RecordName::Exact(name) | RecordName::Wildcard(name), None) => {
                Name::from(name.clone())
            }
        }
    }
}

/// A host left out of a bundle, and why.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotMapped {
    /// The host or pattern, as the registry's documents write it.
    pub name: String,
    /// Why the bundle does not map it.
    pub why: String,
}

/// Why the bundles file is invalid (only ever seen by the unit test, which
/// guards the shipped file).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BundleError {
    /// Not valid TOML for the schema.
    #[error("registries.toml: {0}")]
    Toml(#[from] toml::de::Error),
    /// A rule of the data is broken.
    #[error("registries.toml: bundle {bundle}: {message}")]
    Invalid {
        /// The bundle's id.
        bundle: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    bundle: Vec<RawBundle>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundle {
    id: String,
    description: String,
    zones: Vec<String>,
    name: Vec<RawName>,
    #[serde(default)]
    not_mapped: Vec<NotMapped>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawName {
    name: String,
    sni: Option<String>,
    source: String,
    checked: String,
    note: Option<String>,
}

/// Every built-in bundle, in file order.
pub fn bundles() -> &'static [Bundle] {
    static BUNDLES: OnceLock<Vec<Bundle>> = OnceLock::new();
    BUNDLES.get_or_init(|| {
        // The embedded file is part of the program, not input: the unit test
        // `the_shipped_bundles_are_valid` keeps it valid.
        parse(DATA).expect("src/registries.toml is valid (checked by its unit test)")
    })
}

/// The bundle with this id.
pub(crate) fn find(id: &str) -> Option<&'static Bundle> {
    bundles().iter().find(|b| b.id == id)
}

/// The ids of every bundle, comma-separated (for error messages).
pub(crate) fn known_ids() -> String {
    bundles()
        .iter()
        .map(|b| b.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses and checks a bundles file: valid names, a source and a date for
/// every name, a concrete SNI below every wildcard, zones that cover every
/// name, unique ids and names.
pub(crate) fn parse(text: &str) -> Result<Vec<Bundle>, BundleError> {
    let raw: RawFile = toml::from_str(text)?;
    let mut ids = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.bundle.len());
    for bundle in raw.bundle {
        let invalid = |message: String| BundleError::Invalid {
            bundle: bundle.id.clone(),
            message,
        };
        let id_ok = !bundle.id.is_empty()
            && bundle
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(invalid(
                "id must be lower-case letters, digits and '-'".into(),
            ));
        }
        if !ids.insert(bundle.id.clone()) {
            return Err(invalid("id used twice".into()));
        }
        if bundle.description.trim().is_empty() || bundle.description.contains('\n') {
            return Err(invalid("description must be one non-empty line".into()));
        }
        let zones = bundle
            .zones
            .iter()
            .map(|z| parse_domain_name(z).map_err(|e| invalid(format!("zone: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if zones.is_empty() {
            return Err(invalid("no zones".into()));
        }
        if bundle.name.is_empty() {
            return Err(invalid("no names".into()));
        }
        let mut names = Vec::with_capacity(bundle.name.len());
        let mut seen = BTreeSet::new();
        for raw in &bundle.name {
            let name: RecordName = raw
                .name
                .parse()
                .map_err(|e| invalid(format!("name: {e}")))?;
            if !seen.insert(name.label()) {
                return Err(invalid(format!("{} listed twice", raw.name)));
            }
            let within = |zone: &Name| {
                let below = match &name {
                    RecordName::Exact(n) | RecordName::Wildcard(n) => n,
                };
                LowerName::new(zone).zone_of(below)
            };
            if !zones.iter().any(within) {
                return Err(invalid(format!("{} is under none of its zones", raw.name)));
            }
            let sni = match (&name, &raw.sni) {
                (RecordName::Exact(_), None) => None,
                (RecordName::Exact(_), Some(_)) => {
                    return Err(invalid(format!(
                        "{}: sni is only for a wildcard (an exact name is its own SNI)",
                        raw.name
                    )));
                }
                (RecordName::Wildcard(_), None) => {
                    return Err(invalid(format!(
                        "{}: a wildcard needs sni, a concrete name below it",
                        raw.name
                    )));
                }
                (RecordName::Wildcard(suffix), Some(text)) => {
                    let sni = parse_domain_name(text)
                        .map_err(|e| invalid(format!("{}: sni: {e}", raw.name)))?;
                    let lower = LowerName::new(&sni);
                    if !suffix.zone_of(&lower) || *suffix == lower {
                        return Err(invalid(format!(
                            "{}: sni {text} is not below the wildcard",
                            raw.name
                        )));
                    }
                    Some(sni)
                }
            };
            if !(raw.source.starts_with("https://") && raw.source.len() > "https://".len()) {
                return Err(invalid(format!(
                    "{}: source must be a public https:// URL",
                    raw.name
                )));
            }
            if !is_date(&raw.checked) {
                return Err(invalid(format!(
                    "{}: checked {:?} is not a YYYY-MM-DD date",
                    raw.name, raw.checked
                )));
            }
            names.push(BundleName {
                name,
                sni,
                source: raw.source.clone(),
                checked: raw.checked.clone(),
                note: raw.note.clone().filter(|n| !n.trim().is_empty()),
            });
        }
        out.push(Bundle {
            id: bundle.id,
            description: bundle.description,
            zones,
            names,
            not_mapped: bundle.not_mapped,
        });
    }
    Ok(out)
}

fn is_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let numeric = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_digit());
    match parts.as_slice() {
        [y, m, d] if numeric(y, 4) && numeric(m, 2) && numeric(d, 2) => {
            let (m, d): (u32, u32) = (m.parse().unwrap_or(0), d.parse().unwrap_or(0));
            (1..=12).contains(&m) && (1..=31).contains(&d)
        }
        _ => false,
    }
}

/// What `accel-dns registries` prints: every bundle with its zones, names,
/// sources, dates and notes, and the hosts it leaves out.
pub fn render() -> String {
    let mut out = String::new();
    for (i, bundle) in bundles().iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let zones: Vec<String> = bundle.zones.iter().map(trimmed).collect();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{}: {}", bundle.id, bundle.description);
        let _ = writeln!(out, "  zones: {}", zones.join(", "));
        let _ = writeln!(out, "  names:");
        for name in &bundle.names {
            let _ = writeln!(out, "    {}", name.name.label());
            let _ = writeln!(out, "      source:  {}", name.source);
            let _ = writeln!(out, "      checked: {}", name.checked);
            if let Some(sni) = &name.sni {
                let _ = writeln!(out, "      sni:     {} (sent by tls probes)", trimmed(sni));
            }
            if let Some(note) = &name.note {
                let _ = writeln!(out, "      note:    {note}");
            }
        }
        if !bundle.not_mapped.is_empty() {
            let _ = writeln!(out, "  not mapped:");
        }
        for left in &bundle.not_mapped {
            let _ = writeln!(out, "    {}: {}", left.name, left.why);
        }
    }
    out
}

fn trimmed(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_bundles_are_valid() {
        let bundles = parse(DATA).expect("src/registries.toml parses and passes its rules");
        let ids: Vec<&str> = bundles.iter().map(|b| b.id.as_str()).collect();
        for id in [
            "docker-hub",
            "ghcr",
            "quay",
            "registry-k8s",
            "gcr",
            "mcr",
            "ecr-public",
        ] {
            assert!(ids.contains(&id), "bundle {id} missing from {ids:?}");
        }
        for bundle in &bundles {
            for name in &bundle.names {
                assert!(name.source.starts_with("https://"), "{}", name.name);
                assert!(is_date(&name.checked), "{}", name.name);
                if matches!(name.name, RecordName::Wildcard(_)) {
                    assert!(name.sni.is_some(), "{}", name.name);
                }
            }
        }
        let hub = find("docker-hub").expect("docker-hub");
        let labels: Vec<String> = hub.names.iter().map(|n| n.name.label()).collect();
        for expected in [
            "registry-1.docker.io",
            "auth.docker.io",
            "production.cloudflare.docker.com",
            "production.cloudfront.docker.com",
            "docker-images-prod.6aa30f8b08e16409b46e0173d6de2f56.r2.cloudflarestorage.com",
        ] {
            assert!(labels.iter().any(|l| l == expected), "{expected}");
        }
    }

    #[test]
    fn broken_bundle_data_is_rejected() {
        let bundle = |names: &str, zones: &str| {
            format!("[[bundle]]\nid = \"x\"\ndescription = \"d\"\nzones = [{zones}]\n{names}")
        };
        let name = |fields: &str| format!("[[bundle.name]]\n{fields}\n");
        let ok = "source = \"https://example.test/\"\nchecked = \"2026-12-02\"";
        let cases = [
            (
                bundle(&name(&format!("name = \"a..b\"\n{ok}")), "\"b\""),
                "name",
            ),
            (
                bundle(&name(&format!("name = \"a.c\"\n{ok}")), "\"b\""),
                "under none",
            ),
            (
                bundle(&name(&format!("name = \"*.b\"\n{ok}")), "\"b\""),
                "needs sni",
            ),
            (
                bundle(
                    &name(&format!("name = \"*.b\"\nsni = \"c\"\n{ok}")),
                    "\"b\"",
                ),
                "not below",
            ),
            (
                bundle(
                    &name(&format!("name = \"a.b\"\nsni = \"a.b\"\n{ok}")),
                    "\"b\"",
                ),
                "only for a wildcard",
            ),
            (
                bundle(
                    &name("name = \"a.b\"\nsource = \"\"\nchecked = \"2026-12-02\""),
                    "\"b\"",
                ),
                "source",
            ),
            (
                bundle(
                    &name("name = \"a.b\"\nsource = \"https://x/\"\nchecked = \"yesterday\""),
                    "\"b\"",
                ),
                "checked",
            ),
            (
                bundle(&name("name = \"a.b\"\nsource = \"https://x/\""), "\"b\""),
                "missing field `checked`",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text).expect_err(&text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn the_listing_names_every_bundle_source_and_date() {
        let text = render();
        for bundle in bundles() {
            assert!(text.contains(&bundle.id), "{}", bundle.id);
            for name in &bundle.names {
                assert!(text.contains(&name.name.label()));
                assert!(text.contains(&name.source));
            }
        }
        assert!(text.contains("checked: 2026-12-02"));
    }
}
