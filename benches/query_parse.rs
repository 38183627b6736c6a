//! The client-query parse: the lean parser (`wire::parsers::parse_lean`)
//! against hickory's full decode (`wire::parsers::parse_full`), on a typical
//! query without EDNS and with an OPT (DO set, a cookie option).
//!
//! `cargo bench --bench query_parse`

use std::hint::black_box;

use accel_dns::internals::wire::parsers::{parse_full, parse_lean};
use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

fn query(edns: bool) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let name = Name::from_ascii("registry-1.Docker.io.").expect("name");
    message.add_query(Query::query(name, RecordType::A));
    if edns {
        let mut opt = Edns::new();
        opt.set_max_payload(1232);
        opt.set_dnssec_ok(true);
        opt.options_mut().insert(EdnsOption::Unknown(
            u16::from(EdnsCode::Cookie),
            vec![1, 2, 3, 4, 5, 6, 7, 8],
        ));
        message.set_edns(opt);
    }
    message.to_vec().expect("encode")
}

fn bench(c: &mut Criterion) {
    for (label, packet) in [("plain", query(false)), ("opt", query(true))] {
        assert!(parse_lean(&packet).is_some(), "the lean parser decides");
        c.bench_function(&format!("query_parse/lean {label}"), |b| {
            b.iter(|| black_box(parse_lean(black_box(&packet))))
        });
        c.bench_function(&format!("query_parse/full {label}"), |b| {
            b.iter(|| black_box(parse_full(black_box(&packet))))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
