//! Micro-benchmarks of the hot functions, so that a regression shows
//! without the whole harness: record lookup, cache lookup, rendering a held
//! answer, and the whole synchronous answer path for a record and a hit.
//!
//! `cargo bench --bench hot_path`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use accel_dns::internals::loop_guard::LoopGuard;
use accel_dns::internals::metrics::Protocol;
use accel_dns::internals::records::RecordTable;
use accel_dns::internals::request::Handled;
use accel_dns::internals::resolve::Resolver;
use accel_dns::internals::wire::{self, Inbound, TtlRule, WireAnswer};
use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

#[path = "../tests/support/engine.rs"]
mod engine;

const CONFIG: &str = r#"
[upstream]
servers = ["127.0.0.1:9"]
[[record]]
name = "docker.io"
a = ["203.0.113.10"]
[[record]]
name = "*.docker.io"
a = ["203.0.113.11"]
[[record]]
name = "production.cloudflare.docker.com"
cname = "edge.ga.test"
"#;

fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    message.to_vec().expect("encode")
}

fn bench(c: &mut Criterion) {
    let (_dir, snapshot, metrics) = engine::snapshot(CONFIG);
    let client: SocketAddr = (Ipv4Addr::LOCALHOST, 40000).into();

    let table: &RecordTable = &snapshot.records;
    let wildcard = Name::from_ascii("registry-1.docker.io.").expect("name");
    let miss = Name::from_ascii("example.com.").expect("name");
    c.bench_function("records/lookup wildcard", |b| {
        b.iter(|| black_box(table.lookup(black_box(&wildcard), client.ip()).is_some()))
    });
    c.bench_function("records/lookup miss", |b| {
        b.iter(|| black_box(table.lookup(black_box(&miss), client.ip()).is_none()))
    });

    // A cached answer for example.com A.
    let packet = query("Example.COM.", RecordType::A);
    let Inbound::Query(parsed) = wire::parse_query(&packet) else {
        panic!("query")
    };
    let mut upstream = parsed.response(ResponseCode::NoError);
    upstream.edns = None;
    upstream.add_answer(wire::address_record_a(
        &miss,
        300,
        Ipv4Addr::new(198, 51, 100, 7),
    ));
    let held = WireAnswer::from_message(&upstream).expect("wire");
    let key = snapshot
        .cache
        .key(&miss, RecordType::A, DNSClass::IN, false);
    snapshot
        .cache
        .store(key, false, held.clone())
        .expect("cacheable");
    let question = wire::packet_question(&packet).expect("question");
    c.bench_function("cache/key+get hit", |b| {
        b.iter(|| {
            let key =
                snapshot
                    .cache
                    .key(black_box(parsed.name()), RecordType::A, DNSClass::IN, false);
            black_box(snapshot.cache.get(&key, question, false))
        })
    });
    let mut out = Vec::with_capacity(512);
    let rule = TtlRule::Aged {
        age: 10,
        min: 0,
        max: u32::MAX,
    };
    c.bench_function("wire/render held answer", |b| {
        b.iter(|| {
            held.render(&parsed, Some(question), rule, Some(512), &mut out);
            black_box(out.len())
        })
    });
    c.bench_function("wire/parse query", |b| {
        b.iter(|| black_box(wire::parse_query(black_box(&packet))))
    });

    let resolver = Resolver::new(snapshot.clone(), metrics, Arc::new(LoopGuard::default()));
    let record_query = query("docker.io.", RecordType::A);
    let mut out = Vec::with_capacity(4096);
    c.bench_function("resolve/handle record", |b| {
        b.iter(|| {
            match resolver.handle(black_box(&record_query), client, Protocol::Udp, &mut out) {
                Handled::Reply => black_box(out.len()),
                _ => panic!("not answered from the record"),
            }
        })
    });
    c.bench_function("resolve/handle cache hit", |b| {
        b.iter(
            || match resolver.handle(black_box(&packet), client, Protocol::Udp, &mut out) {
                Handled::Reply => black_box(out.len()),
                _ => panic!("not answered from the cache"),
            },
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
