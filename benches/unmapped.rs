//! The unmapped-names check (README "Unmapped names") on the hot path: what a query for a
//! name that no record covers pays. A name of a watched zone already seen
//! (a suffix match, a read-locked lookup, two atomic adds), a name outside
//! every watched zone (the suffix match alone), and no zone watched. The
//! name comes lower-cased, as the query path makes it once for the cache
//! key and this check together.
//!
//! `cargo bench --bench unmapped`

use std::hint::black_box;
use std::sync::Arc;

use accel_dns::internals::metrics::Metrics;
use accel_dns::internals::unmapped::{UnmappedReport, Watch};
use accel_dns::internals::wire::LowerName;
use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::rr::Name;

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("name")
}

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new();
    let zones: Vec<Name> = [
        "docker.io.",
        "docker.com.",
        "ghcr.io.",
        "quay.io.",
        "registry.k8s.io.",
        "pkg.dev.",
        "mcr.microsoft.com.",
        "ecr.aws.",
    ]
    .iter()
    .map(|z| name(z))
    .collect();
    let watch = Watch::compile(&zones, Arc::new(UnmappedReport::default()), &metrics);

    let seen = name("Production.Cloudflare.Docker.COM.");
    let seen_lower = LowerName::of(&seen);
    assert!(watch.note(&seen_lower, &seen), "watched");
    c.bench_function("unmapped/note seen name", |b| {
        b.iter(|| black_box(watch.note(black_box(&seen_lower), &seen)))
    });

    let outside = name("www.example.com.");
    let outside_lower = LowerName::of(&outside);
    assert!(!watch.note(&outside_lower, &outside), "not watched");
    c.bench_function("unmapped/note name outside the watched zones", |b| {
        b.iter(|| black_box(watch.note(black_box(&outside_lower), &outside)))
    });

    let nothing = Watch::none(Arc::new(UnmappedReport::default()));
    c.bench_function("unmapped/note with no zone watched", |b| {
        b.iter(|| black_box(nothing.note(black_box(&outside_lower), &outside)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
