//! The validation of an upstream answer on a cache miss: the record
//! walker's verdict (`wire::rdata_verdict`, what `upstream::accept_answer`
//! trusts) against hickory's full decode (`Message::from_vec`, what it ran
//! before and still runs when the verdict is `Unsure`), on a usual answer
//! (a CNAME, two A records and an OPT) and an NXDOMAIN with a SOA.
//!
//! `cargo bench --bench upstream_answer`

use std::hint::black_box;
use std::net::Ipv4Addr;

use accel_dns::internals::wire::{Check, rdata_verdict};
use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("name")
}

fn response(qname: &str, rcode: ResponseCode) -> Message {
    let mut message = Message::new(0x4242, MessageType::Response, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.metadata.recursion_available = true;
    message.metadata.response_code = rcode;
    message.add_query(Query::query(name(qname), RecordType::A));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    message.set_edns(edns);
    message
}

fn cname_and_two_a() -> Vec<u8> {
    let mut message = response("www.example.com.", ResponseCode::NoError);
    message.add_answer(Record::from_rdata(
        name("www.example.com."),
        300,
        RData::CNAME(CNAME(name("edge.cdn.example.net."))),
    ));
    for i in 1..=2 {
        message.add_answer(Record::from_rdata(
            name("edge.cdn.example.net."),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
        ));
    }
    message.to_vec().expect("encode")
}

fn nxdomain() -> Vec<u8> {
    let mut message = response("gone.example.com.", ResponseCode::NXDomain);
    let soa = SOA::new(
        name("ns1.example.com."),
        name("hostmaster.example.com."),
        2024010101,
        3600,
        600,
        86400,
        300,
    );
    message.add_authority(Record::from_rdata(
        name("example.com."),
        300,
        RData::SOA(soa),
    ));
    message.to_vec().expect("encode")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("upstream answer check");
    for (label, bytes) in [
        ("cname+2a+opt", cname_and_two_a()),
        ("nxdomain soa", nxdomain()),
    ] {
        assert_eq!(
            rdata_verdict(&bytes),
            Check::Valid,
            "{label}: the walker decides"
        );
        group.bench_function(format!("rdata_verdict {label}"), |b| {
            b.iter(|| black_box(rdata_verdict(black_box(&bytes))))
        });
        group.bench_function(format!("Message::from_vec {label}"), |b| {
            b.iter(|| black_box(Message::from_vec(black_box(&bytes)).is_ok()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
