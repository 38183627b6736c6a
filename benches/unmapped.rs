//! The unmapped-names check (SPEC §10) on the hot path: what a query for a
//! name that no record covers pays. A name of a watched zone already seen
//! (a suffix match, a read-locked lookup, two atomic adds), a name outside
//! every watched zone (the suffix match alone), and no zone watched.
//!
//! `cargo bench --bench unmapped`

use std::hint::black_box;
use std::sync::Arc;

use accel_dns::metrics::Metrics;
use accel_dns::unmapped::{UnmappedReport, Watch};
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
    assert!(watch.note(&seen), "watched");
    c.bench_function("unmapped/note seen name", |b| {
        b.iter(|| black_box(watch.note(black_box(&seen))))
    });

    let outside = name("www.example.com.");
    assert!(!watch.note(&outside), "not watched");
    c.bench_function("unmapped/note name outside the watched zones", |b| {
        b.iter(|| black_box(watch.note(black_box(&outside))))
    });

    let nothing = Watch::none(Arc::new(UnmappedReport::default()));
    c.bench_function("unmapped/note with no zone watched", |b| {
        b.iter(|| black_box(nothing.note(black_box(&outside))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
