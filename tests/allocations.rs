//! Allocations on the answer paths that need no upstream: a record answer
//! and a cache hit must allocate nothing once warm (issue 14). A global
//! allocator counts the allocations made on the calling thread only, so
//! the other tests of this binary (and the runtime's threads) do not
//! disturb the count.
//!
//! Its own test binary: a global allocator applies to the whole binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use accel_dns::internals::loop_guard::LoopGuard;
use accel_dns::internals::metrics::Protocol;
use accel_dns::internals::request::Handled;
use accel_dns::internals::resolve::Resolver;
use accel_dns::internals::snapshot::Snapshot;
use accel_dns::internals::wire::{self, Inbound, WireAnswer};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

#[path = "support/engine.rs"]
mod engine;

/// Counts allocations (and reallocations) per thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread-local may be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made on this thread by `work`.
fn allocations(work: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    work();
    ALLOCATIONS.with(Cell::get) - before
}

const CONFIG: &str = r#"
[upstream]
servers = ["127.0.0.1:9"]
[[record]]
name = "docker.io"
a = ["203.0.113.10", "203.0.113.12"]
aaaa = ["2001:db8::10"]
[[record]]
name = "*.docker.io"
a = ["203.0.113.11"]
[[record]]
name = "accel.example.test"
cname = "edge.accel.test"
"#;

/// A query for `name` with RD, ID 0x1234, and an OPT (DO set) if `edns`.
fn query(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
    if edns {
        let mut opt = Edns::new();
        opt.set_max_payload(1232);
        opt.set_dnssec_ok(true);
        message.set_edns(opt);
    }
    message.to_vec().expect("encode")
}

struct Fixture {
    _dir: tempfile::TempDir,
    resolver: Resolver,
    snapshot: Arc<Snapshot>,
}

fn fixture() -> Fixture {
    let (dir, snapshot, metrics) = engine::snapshot(CONFIG);
    let resolver = Resolver::new(snapshot.clone(), metrics, Arc::new(LoopGuard::default()));
    Fixture {
        _dir: dir,
        resolver,
        snapshot,
    }
}

/// Answers `packet` (after a warm-up) and returns the allocations of the
/// next 100 answers, checking each is answered at once.
fn allocations_per_100(fixture: &Fixture, packet: &[u8]) -> u64 {
    let client: SocketAddr = (Ipv4Addr::LOCALHOST, 40000).into();
    let mut out = Vec::with_capacity(4096);
    let mut answer = || match fixture
        .resolver
        .handle(packet, client, Protocol::Udp, &mut out)
    {
        Handled::Reply => assert!(out.len() > 12, "an answer was written"),
        other => panic!("not answered at once: {other:?}"),
    };
    for _ in 0..10 {
        answer();
    }
    allocations(|| {
        for _ in 0..100 {
            answer();
        }
    })
}

/// Stores an upstream-style answer for `name` A in the cache.
fn cache_answer(fixture: &Fixture, name: &str) {
    let packet = query(name, RecordType::A, false);
    let Inbound::Query(parsed) = wire::parse_query(&packet) else {
        panic!("query")
    };
    let lower = Name::from_ascii(name).expect("name").to_lowercase();
    let mut upstream = parsed.response(ResponseCode::NoError);
    upstream.add_answer(wire::address_record_a(
        &lower,
        300,
        Ipv4Addr::new(198, 51, 100, 7),
    ));
    let held = WireAnswer::from_message(&upstream).expect("wire");
    for dnssec_ok in [false, true] {
        let key = fixture
            .snapshot
            .cache
            .key(&lower, RecordType::A, DNSClass::IN, dnssec_ok);
        fixture
            .snapshot
            .cache
            .store(key, dnssec_ok, held.clone())
            .expect("cacheable");
    }
}

#[test]
fn a_record_answer_allocates_nothing() {
    let fixture = fixture();
    for edns in [false, true] {
        let packet = query("Docker.IO.", RecordType::A, edns);
        assert_eq!(allocations_per_100(&fixture, &packet), 0, "EDNS {edns}");
    }
}

#[test]
fn a_wildcard_record_answer_allocates_nothing() {
    let fixture = fixture();
    let packet = query("registry-1.docker.io.", RecordType::A, true);
    assert_eq!(allocations_per_100(&fixture, &packet), 0);
}

#[test]
fn aaaa_any_and_nodata_record_answers_allocate_nothing() {
    let fixture = fixture();
    for rtype in [RecordType::AAAA, RecordType::ANY, RecordType::MX] {
        let packet = query("docker.io.", rtype, true);
        assert_eq!(allocations_per_100(&fixture, &packet), 0, "{rtype}");
    }
}

#[test]
fn a_cname_record_asked_for_its_cname_allocates_nothing() {
    let fixture = fixture();
    let packet = query("accel.example.test.", RecordType::CNAME, false);
    assert_eq!(allocations_per_100(&fixture, &packet), 0);
}

#[test]
fn a_cache_hit_allocates_nothing() {
    let fixture = fixture();
    cache_answer(&fixture, "example.com.");
    for edns in [false, true] {
        let packet = query("Example.COM.", RecordType::A, edns);
        assert_eq!(allocations_per_100(&fixture, &packet), 0, "EDNS {edns}");
    }
}
