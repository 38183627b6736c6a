//! The answer cache alone (`cache.rs` on quick_cache): a hit in a full
//! cache, and a store into a full cache (one eviction each), the two costs
//! of the miss and hit paths that the cache owns.
//!
//! `cargo bench --bench cache`

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use accel_dns::config::CacheConfig;
use accel_dns::internals::cache::AnswerCache;
use accel_dns::internals::wire::{self, Inbound, WireAnswer};
use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

/// Entries of the full cache (the shipped default bound).
const ENTRIES: u64 = 100_000;

/// A held answer for `name` A.
fn answer(name: &Name) -> WireAnswer {
    let mut message = Message::new(7, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(name.clone(), RecordType::A));
    let packet = message.to_vec().expect("encode");
    let Inbound::Query(parsed) = wire::parse_query(&packet) else {
        panic!("query")
    };
    let mut upstream = parsed.response(ResponseCode::NoError);
    upstream.edns = None;
    upstream.add_answer(wire::address_record_a(
        name,
        300,
        Ipv4Addr::new(198, 51, 100, 7),
    ));
    WireAnswer::from_message(&upstream).expect("wire")
}

fn bench(c: &mut Criterion) {
    let cache = AnswerCache::new(CacheConfig {
        max_entries: ENTRIES,
        min_ttl: Duration::ZERO,
        max_ttl: Duration::from_secs(86_400),
        negative_max_ttl: Duration::from_secs(3_600),
        serve_stale: Duration::from_secs(86_400),
    });
    let names: Vec<Name> = (0..ENTRIES)
        .map(|i| Name::from_ascii(format!("n{i}.example.test.")).expect("name"))
        .collect();
    let held: Vec<WireAnswer> = names.iter().map(answer).collect();
    for (name, answer) in names.iter().zip(&held) {
        let key = cache.key(name, RecordType::A, DNSClass::IN, false);
        cache.store(key, false, answer.clone()).expect("cacheable");
    }
    let probe = &names[ENTRIES as usize / 2];
    let key = cache.key(probe, RecordType::A, DNSClass::IN, false);
    let question = wire::question_bytes(probe, RecordType::A, DNSClass::IN);
    c.bench_function("cache/get hit (full cache)", |b| {
        b.iter(|| black_box(cache.get(black_box(&key), &question, false)))
    });
    let mut next = 0usize;
    c.bench_function("cache/store into a full cache", |b| {
        b.iter(|| {
            next = (next + 1) % held.len();
            // A key outside the filled range: every store evicts one entry.
            let key = cache.key(&names[next], RecordType::AAAA, DNSClass::IN, false);
            black_box(cache.store(key, false, held[next].clone()))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
