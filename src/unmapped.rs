//! The names left unmapped (README "Unmapped names", second half): a query for a name at or
//! below a watched zone that no record covers is forwarded as usual, and
//! reported here — `accel_dns_unmapped_queries_total{zone}`, one warn line
//! the first time a name is seen, and per-name counts for `GET /unmapped`.
//!
//! Sits beside `records` in the flow: `resolve` calls [`Watch::note`] only
//! when the records say no record covers the name ([`RecordMatch::Absent`]);
//! a record stepped aside or a view that does not match the client is a
//! mapped name and never gets here.
//!
//! Two halves with two lifetimes. [`Watch`] belongs to one snapshot: the
//! watched zones of its configuration in lower-cased wire form, each with
//! its counter resolved once. [`UnmappedReport`] belongs to the process (it
//! is in [`crate::snapshot::Shared`]), so that counts and the "seen" list
//! survive reloads. The hot path allocates nothing for a name outside the
//! watched zones or already seen: a label-aligned suffix compare on a stack
//! copy of the lower-cased wire name, then a read-locked hash lookup keyed
//! by those bytes and an atomic add.
//!
//! [`RecordMatch::Absent`]: crate::records::RecordMatch::Absent

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hickory_proto::rr::Name;
use prometheus::IntCounter;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::wire::LowerName;

/// Distinct names the report keeps (and logs) per process. A client can
/// ask for any number of names below a watched zone; past this many, new
/// names are counted only in the zone's metric, and one warning says so.
pub(crate) const MAX_NAMES: usize = 1_000;

/// One watched zone of a snapshot.
#[derive(Debug)]
struct Zone {
    /// Lower-cased wire form, root label included.
    wire: Box<[u8]>,
    /// The metric label: the zone without its trailing dot.
    label: Arc<str>,
    /// `accel_dns_unmapped_queries_total{zone}`.
    counter: IntCounter,
}

/// The watched zones of one configuration, ready for the hot path.
#[derive(Debug)]
pub struct Watch {
    /// Longest first, so that the most specific zone names the series.
    zones: Vec<Zone>,
    report: Arc<UnmappedReport>,
}

impl Watch {
    /// Compiles `zones` (as [`crate::config::Config::watched_zones`] gives
    /// them); names found unmapped go to `report`.
    pub fn compile(zones: &[Name], report: Arc<UnmappedReport>, metrics: &Metrics) -> Self {
        let mut compiled: Vec<Zone> = zones
            .iter()
            .map(|zone| {
                let label = display(zone);
                Zone {
                    wire: Box::from(LowerName::of(zone).as_bytes()),
                    counter: metrics.unmapped_queries(&label),
                    label: Arc::from(label),
                }
            })
            .collect();
        // The config lists each zone once; longest first, so that the most
        // specific zone names a name's series.
        compiled.sort_by_key(|zone| std::cmp::Reverse(zone.wire.len()));
        Self {
            zones: compiled,
            report,
        }
    }

    /// A watch of nothing (no zone), reporting to `report`.
    pub fn none(report: Arc<UnmappedReport>) -> Self {
        Self {
            zones: Vec::new(),
            report,
        }
    }

    /// Whether no zone is watched.
    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// The metric labels of the watched zones.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| &*z.label)
    }

    /// The report the names go to.
    pub fn report(&self) -> &Arc<UnmappedReport> {
        &self.report
    }

    /// Notes a query for `name`, for which no record exists: counted and
    /// reported if `name` is at or below a watched zone. Returns whether it
    /// was.
    pub fn note(&self, lower: &LowerName, name: &Name) -> bool {
        if self.zones.is_empty() {
            return false;
        }
        let wire = lower.as_bytes();
        let Some(zone) = self.zone_of(wire) else {
            return false;
        };
        zone.counter.inc();
        self.report.count(wire, name, &zone.label);
        true
    }

    /// Whether `name` is at or below a watched zone (for `/unmapped`).
    pub fn watches(&self, name: &Name) -> bool {
        self.zone_of(LowerName::of(name).as_bytes()).is_some()
    }

    /// The most specific watched zone that `wire` (lower-cased) is at or below.
    fn zone_of(&self, wire: &[u8]) -> Option<&Zone> {
        self.zones.iter().find(|zone| {
            let Some(start) = wire.len().checked_sub(zone.wire.len()) else {
                return false;
            };
            wire[start..] == *zone.wire && on_label_boundary(wire, start)
        })
    }
}

/// Whether a label of `wire` starts at `offset` (so that `notdocker.io`
/// is not below `docker.io`).
fn on_label_boundary(wire: &[u8], offset: usize) -> bool {
    let mut at = 0;
    // Each step passes one label; a name has at most 128.
    while at < offset {
        match wire.get(at) {
            Some(&len) if len > 0 => at += 1 + usize::from(len),
            _ => return false,
        }
    }
    at == offset
}

/// A name as dig users write it: lower-cased, without the trailing dot.
fn display(name: &Name) -> String {
    let text = name.to_lowercase().to_ascii();
    match text.strip_suffix('.') {
        Some(bare) if !bare.is_empty() => bare.to_string(),
        _ => text,
    }
}

/// One name in the report.
#[derive(Debug)]
struct Seen {
    /// The name as asked (lower-cased), for `/unmapped` to check against the
    /// running records.
    name: Name,
    /// Its display form.
    shown: String,
    /// The watched zone it was first seen under.
    zone: Arc<str>,
    queries: AtomicU64,
}

/// The process-wide list of unmapped names: per-name counts, the first
/// sighting logged. Bounded by [`MAX_NAMES`].
#[derive(Debug, Default)]
pub struct UnmappedReport {
    /// Keyed by the lower-cased wire name, so that a lookup needs no
    /// allocation.
    names: RwLock<HashMap<Box<[u8]>, Seen>>,
    /// Set once [`MAX_NAMES`] names are held (and the warning given).
    full: AtomicBool,
}

/// One line of `GET /unmapped`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnmappedName {
    /// The name, lower-cased, without the trailing dot.
    pub name: String,
    /// The watched zone it is below, without the trailing dot.
    pub zone: String,
    /// Queries for it since the process started.
    pub queries: u64,
}

impl UnmappedReport {
    /// Counts one query for `name` (`wire`: its lower-cased wire form) below `zone`.
    fn count(&self, wire: &[u8], name: &Name, zone: &Arc<str>) {
        {
            let names = self.names.read().unwrap_or_else(|e| e.into_inner());
            if let Some(seen) = names.get(wire) {
                seen.queries.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        if let Some(seen) = names.get(wire) {
            seen.queries.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if names.len() >= MAX_NAMES {
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    limit = MAX_NAMES,
                    "the list of unmapped names is full: further new names are counted in {} only",
                    crate::metrics::UNMAPPED_QUERIES
                );
            }
            return;
        }
        let shown = display(name);
        tracing::warn!(name = %shown, zone = %zone, "unmapped name in a watched zone: forwarded, no record covers it");
        names.insert(
            Box::from(wire),
            Seen {
                name: name.to_lowercase(),
                shown,
                zone: zone.clone(),
                queries: AtomicU64::new(1),
            },
        );
    }

    /// The names held, most asked first (ties by name), with those that
    /// `keep` rejects left out.
    pub fn entries(&self, keep: impl Fn(&Name) -> bool) -> Vec<UnmappedName> {
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<UnmappedName> = names
            .values()
            .filter(|seen| keep(&seen.name))
            .map(|seen| UnmappedName {
                name: seen.shown.clone(),
                zone: seen.zone.to_string(),
                queries: seen.queries.load(Ordering::Relaxed),
            })
            .collect();
        drop(names);
        out.sort_by(|a, b| b.queries.cmp(&a.queries).then_with(|| a.name.cmp(&b.name)));
        out
    }

    /// How many names are held.
    pub fn len(&self) -> usize {
        self.names.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("name")
    }

    fn note(w: &Watch, n: &Name) -> bool {
        w.note(&LowerName::of(n), n)
    }

    fn watch(zones: &[&str]) -> (Watch, Metrics) {
        let metrics = Metrics::new();
        let zones: Vec<Name> = zones.iter().map(|z| name(z)).collect();
        let watch = Watch::compile(&zones, Arc::default(), &metrics);
        (watch, metrics)
    }

    #[test]
    fn names_at_or_below_a_zone_match_on_label_boundaries_only() {
        let (w, _m) = watch(&["docker.io.", "cdn.docker.io."]);
        let zone = |n: &str| {
            w.zone_of(LowerName::of(&name(n)).as_bytes())
                .map(|z| z.label.to_string())
        };
        assert_eq!(zone("docker.io."), Some("docker.io".into()));
        assert_eq!(zone("Registry-1.DOCKER.io."), Some("docker.io".into()));
        assert_eq!(zone("a.b.cdn.docker.io."), Some("cdn.docker.io".into()));
        assert_eq!(zone("cdn.docker.io."), Some("cdn.docker.io".into()));
        assert_eq!(zone("notdocker.io."), None);
        assert_eq!(zone("xcdn.docker.io."), Some("docker.io".into()));
        assert_eq!(zone("io."), None);
        assert_eq!(zone("docker.io.evil."), None);
        assert_eq!(zone("."), None);
    }

    #[test]
    fn counts_per_name_and_zone_most_asked_first_ties_by_name() {
        let (w, m) = watch(&["docker.io."]);
        for n in [
            "b.docker.io.",
            "B.Docker.IO.",
            "a.docker.io.",
            "c.docker.io.",
        ] {
            assert!(note(&w, &name(n)));
        }
        assert!(note(&w, &name("c.docker.io")));
        assert!(!note(&w, &name("quay.io.")));
        let got = w.report().entries(|_| true);
        let rows: Vec<(&str, u64)> = got.iter().map(|e| (e.name.as_str(), e.queries)).collect();
        assert_eq!(
            rows,
            [("b.docker.io", 2), ("c.docker.io", 2), ("a.docker.io", 1)]
        );
        assert!(got.iter().all(|e| e.zone == "docker.io"));
        assert_eq!(m.unmapped_queries("docker.io").get(), 5);
    }

    #[test]
    fn the_list_stops_at_the_cap_and_the_metric_keeps_counting() {
        let (w, m) = watch(&["docker.io."]);
        for i in 0..MAX_NAMES + 50 {
            assert!(note(&w, &name(&format!("n{i}.docker.io."))));
        }
        assert_eq!(w.report().len(), MAX_NAMES);
        assert!(w.report().full.load(Ordering::Relaxed));
        // A name already held still counts in the list; a new one only in the metric.
        note(&w, &name("n0.docker.io."));
        note(&w, &name("new.docker.io."));
        assert_eq!(w.report().len(), MAX_NAMES);
        let top = &w.report().entries(|_| true)[0];
        assert_eq!((top.name.as_str(), top.queries), ("n0.docker.io", 2));
        assert_eq!(
            m.unmapped_queries("docker.io").get(),
            (MAX_NAMES + 52) as u64
        );
    }

    #[test]
    fn nothing_watched_notes_nothing() {
        let (w, _m) = watch(&[]);
        assert!(w.is_empty());
        assert!(!note(&w, &name("docker.io.")));
        assert!(w.report().is_empty());
    }
}
