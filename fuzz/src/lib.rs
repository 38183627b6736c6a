//! Shared pieces of the accel-dns fuzz targets: the fixed configuration the
//! query path is fuzzed against, a resolver built from it with a pre-filled
//! cache, the canned upstream answers that fill it, and the checks every
//! answer must pass whatever the input (the oracles: a crash is not the only
//! bug a fuzzer can find).
//!
//! Nothing here does network I/O: `Resolver::handle` answers records, cache
//! hits and errors synchronously and hands back `Handled::Pending` for
//! anything that needs upstream, which the target drops. No tokio runtime is
//! needed either (health probes, the only tasks a snapshot could start, are
//! not configured).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use accel_dns::config::{self, LoadEnv};
use accel_dns::internals::health::HealthRegistry;
use accel_dns::internals::loop_guard::LoopGuard;
use accel_dns::internals::metrics::{Metrics, Protocol};
use accel_dns::internals::resolve::Resolver;
use accel_dns::internals::snapshot::{Shared, Snapshot};
use accel_dns::internals::upstream::MAX_IN_FLIGHT;
use accel_dns::internals::wire::{self, WireAnswer};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The configuration of the query-path target: exact, wildcard, per-client
/// (views), CNAME (to a record, to upstream, in a loop) and a large record,
/// a cache with a long stale window. Upstream 127.0.0.1:9 is never contacted.
pub const QUERY_PATH_CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:5353"]
allow = ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]

[upstream]
servers = ["127.0.0.1:9"]
timeout = "1s"

[cache]
max_entries = 1000
serve_stale = "1h"

[admin]
listen = ""

[records]
ttl = 60
watch = ["docker.io", "docker.com"]

[[record]]
name = "docker.io"
a = ["203.0.113.10", "203.0.113.11"]
aaaa = ["2001:db8::10"]

[[record]]
name = "docker.io"
clients = ["10.1.0.0/16"]
a = ["203.0.113.50"]

[[record]]
name = "*.docker.io"
a = ["203.0.113.12"]
ttl = 30

[[record]]
name = "*.deep.docker.io"
aaaa = ["2001:db8::12"]

[[record]]
name = "alias.test"
cname = "docker.io"

[[record]]
name = "*.accel.test"
cname = "ga-bp1test.aliyunga0019.com"

[[record]]
name = "loop1.test"
cname = "loop2.test"

[[record]]
name = "loop2.test"
cname = "loop1.test"

[[record]]
name = "many.test"
a = [
  "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5",
  "198.51.100.6", "198.51.100.7", "198.51.100.8", "198.51.100.9", "198.51.100.10",
  "198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14", "198.51.100.15",
  "198.51.100.16", "198.51.100.17", "198.51.100.18", "198.51.100.19", "198.51.100.20",
  "198.51.100.21", "198.51.100.22", "198.51.100.23", "198.51.100.24", "198.51.100.25",
  "198.51.100.26", "198.51.100.27", "198.51.100.28", "198.51.100.29", "198.51.100.30",
  "198.51.100.31", "198.51.100.32", "198.51.100.33", "198.51.100.34", "198.51.100.35",
]
"#;

/// Clients the query-path target picks from (first input byte, low 2 bits):
/// allowed, allowed and in the `10.1.0.0/16` view, outside the ACL, IPv6.
pub const CLIENTS: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// The resolver under test and what it was built from.
pub struct Fixture {
    /// The query path.
    pub resolver: Resolver,
    /// Keeps the snapshot's records alive.
    pub snapshot: Arc<Snapshot>,
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap_or_else(|_| Name::root())
}

/// A scratch directory for this process (resolv.conf, hosts files).
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("accel-dns-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A load environment whose resolv.conf is a scratch file, never the machine's.
pub fn load_env() -> LoadEnv {
    let resolv_conf = scratch_dir().join("resolv.conf");
    if !resolv_conf.exists() {
        let _ = std::fs::write(&resolv_conf, "nameserver 10.0.0.2\nnameserver 10.0.0.3\n");
    }
    LoadEnv { resolv_conf }
}

/// The resolver over [`QUERY_PATH_CONFIG`], its cache filled with
/// [`canned_answers`]; built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        #[allow(clippy::expect_used)] // a fixed, known-good config: failing here is a bug
        let config = config::parse(QUERY_PATH_CONFIG, None, &load_env()).expect("fuzz config");
        let shared = Shared {
            health: HealthRegistry::default(),
            upstream_permits: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            metrics: Metrics::new(),
            unmapped: Arc::default(),
        };
        let snapshot = Arc::new(Snapshot::build(config, None, &shared));
        for (answer, dnssec_ok) in canned_answers() {
            let Some(query) = answer.queries.first() else {
                continue;
            };
            let key = snapshot.cache.key(
                query.name(),
                query.query_type(),
                query.query_class(),
                dnssec_ok,
            );
            let Ok(bytes) = answer.to_vec() else { continue };
            if let Ok(held) = WireAnswer::from_upstream(bytes) {
                let _ = snapshot.cache.store(key, dnssec_ok, held);
            }
        }
        let resolver = Resolver::new(
            snapshot.clone(),
            shared.metrics.clone(),
            Arc::new(LoopGuard::default()),
        );
        Fixture { resolver, snapshot }
    })
}

fn response(qname: &str, qtype: RecordType, rcode: ResponseCode, edns: bool) -> Message {
    let mut message = Message::new(0x4242, MessageType::Response, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.metadata.recursion_available = true;
    message.metadata.response_code = rcode;
    message.add_query(Query::query(name(qname), qtype));
    if edns {
        let mut opt = Edns::new();
        opt.set_max_payload(1232);
        message.set_edns(opt);
    }
    message
}

fn soa(zone: &str, ttl: u32) -> Record {
    let data = SOA::new(
        name("ns1.example."),
        name("hostmaster.example."),
        2024010101,
        3600,
        600,
        86400,
        ttl,
    );
    Record::from_rdata(name(zone), ttl, RData::SOA(data))
}

/// Upstream answers as a resolver sends them (names compressed by the
/// encoder, an OPT last), each with the DO bit it is cached under: A, AAAA,
/// a CNAME chain, NXDOMAIN and NODATA with a SOA, a large TXT, an MX, and
/// the upstream target of the `*.accel.test` CNAME record.
pub fn canned_answers() -> Vec<(Message, bool)> {
    let mut out = Vec::new();

    let mut a = response(
        "cached.example.",
        RecordType::A,
        ResponseCode::NoError,
        true,
    );
    for i in 1..=3 {
        a.add_answer(Record::from_rdata(
            name("cached.example."),
            3600,
            RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
        ));
    }
    out.push((a.clone(), false));
    a.metadata.authentic_data = true;
    out.push((a, true));

    let mut aaaa = response(
        "cached.example.",
        RecordType::AAAA,
        ResponseCode::NoError,
        true,
    );
    aaaa.add_answer(Record::from_rdata(
        name("cached.example."),
        3600,
        RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
    ));
    out.push((aaaa, false));

    let mut chain = response(
        "www.chain.example.",
        RecordType::A,
        ResponseCode::NoError,
        true,
    );
    chain.add_answer(Record::from_rdata(
        name("www.chain.example."),
        3600,
        RData::CNAME(CNAME(name("edge.chain.example."))),
    ));
    chain.add_answer(Record::from_rdata(
        name("edge.chain.example."),
        3600,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 80))),
    ));
    out.push((chain, false));

    let mut nx = response(
        "gone.nx.example.",
        RecordType::A,
        ResponseCode::NXDomain,
        true,
    );
    nx.add_authority(soa("nx.example.", 3600));
    out.push((nx, false));

    let mut nodata = response(
        "cached.example.",
        RecordType::MX,
        ResponseCode::NoError,
        true,
    );
    nodata.add_authority(soa("example.", 3600));
    out.push((nodata, false));

    let mut txt = response("big.example.", RecordType::TXT, ResponseCode::NoError, true);
    let strings: Vec<String> = (0..12)
        .map(|i| format!("{i:02}{}", "t".repeat(120)))
        .collect();
    txt.add_answer(Record::from_rdata(
        name("big.example."),
        3600,
        RData::TXT(TXT::new(strings)),
    ));
    out.push((txt, false));

    let mut mx = response("mail.example.", RecordType::MX, ResponseCode::NoError, true);
    mx.add_answer(Record::from_rdata(
        name("mail.example."),
        3600,
        RData::MX(MX::new(10, name("mx1.mail.example."))),
    ));
    mx.add_additional(Record::from_rdata(
        name("mx1.mail.example."),
        3600,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 25))),
    ));
    out.push((mx, false));

    let mut target = response(
        "ga-bp1test.aliyunga0019.com.",
        RecordType::A,
        ResponseCode::NoError,
        true,
    );
    target.add_answer(Record::from_rdata(
        name("ga-bp1test.aliyunga0019.com."),
        3600,
        RData::A(A(Ipv4Addr::new(198, 18, 0, 1))),
    ));
    out.push((target, false));
    out
}

/// Splits a query-path input: the first byte picks the client (low 2 bits,
/// [`CLIENTS`]) and the transport (bit 2: TCP); the rest is the packet.
pub fn split_query_input(data: &[u8]) -> Option<(SocketAddr, Protocol, &[u8])> {
    let (&selector, packet) = data.split_first()?;
    let client = SocketAddr::new(CLIENTS[usize::from(selector & 3)], 40000);
    let protocol = if selector & 4 != 0 {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    Some((client, protocol, packet))
}

/// The checks every reply to `packet` must pass. Panics (a finding) if one
/// fails.
pub fn check_reply(packet: &[u8], reply: &[u8], protocol: Protocol, allowed: bool) {
    assert!(reply.len() >= 12, "a reply shorter than a header");
    assert_eq!(
        reply[0..2],
        packet[0..2],
        "the reply carries the query's ID"
    );
    assert!(reply[2] & 0x80 != 0, "QR is set");
    let decoded = Message::from_vec(reply);
    assert!(
        decoded.is_ok(),
        "the reply decodes: {:?}\npacket {packet:02x?}\nreply {reply:02x?}",
        decoded.err()
    );
    if protocol == Protocol::Udp {
        let limit = match wire::parse_query(packet) {
            wire::Inbound::Query(query) => query.udp_limit(),
            _ => wire::CLASSIC_UDP_LIMIT,
        };
        assert!(
            reply.len() <= limit,
            "UDP reply of {} bytes over the client's limit of {limit}",
            reply.len()
        );
    }
    let rcode = reply[3] & 0x0F;
    let error = matches!(
        ResponseCode::from_low(rcode),
        ResponseCode::FormErr | ResponseCode::NotImp | ResponseCode::Refused
    );
    if !allowed || error {
        // README "How a query is answered" (access) and the amplification rule: what a stranger (or a
        // malformed query) gets back is never larger than what it sent.
        assert!(
            reply.len() <= packet.len(),
            "a {} byte error/refused reply to a {} byte query\npacket {packet:02x?}\nreply {reply:02x?}",
            reply.len(),
            packet.len()
        );
    }
}

/// The seed corpus under `fuzz/corpus/`, written by
/// `cargo test --manifest-path fuzz/Cargo.toml -- --ignored write_seed_corpus`
/// (the files are committed; this is how they were made).
#[cfg(test)]
mod seeds {
    use super::*;
    use hickory_proto::rr::DNSClass;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use std::path::Path;

    fn query(qname: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Message {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name(qname), qtype));
        if let Some((payload, dnssec_ok)) = edns {
            let mut opt = Edns::new();
            opt.set_max_payload(payload);
            opt.set_dnssec_ok(dnssec_ok);
            message.set_edns(opt);
        }
        message
    }

    fn bytes(message: &Message) -> Vec<u8> {
        message.to_vec().expect("encode seed")
    }

    fn write(dir: &Path, name: &str, data: &[u8]) {
        std::fs::create_dir_all(dir).expect("corpus dir");
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
    }

    /// Client packets: the `query_parse` seeds as they are, the
    /// `query_path` seeds behind a selector byte.
    fn query_packets() -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        type Case<'a> = (&'a str, &'a str, RecordType, Option<(u16, bool)>);
        let cases: &[Case] = &[
            ("record-a", "docker.io.", RecordType::A, None),
            (
                "record-aaaa-edns-do",
                "Docker.IO.",
                RecordType::AAAA,
                Some((1232, true)),
            ),
            (
                "record-any",
                "docker.io.",
                RecordType::ANY,
                Some((4096, false)),
            ),
            ("record-https-nodata", "docker.io.", RecordType::HTTPS, None),
            ("wildcard", "registry-1.docker.io.", RecordType::A, None),
            (
                "wildcard-longest",
                "a.b.deep.docker.io.",
                RecordType::AAAA,
                Some((512, false)),
            ),
            ("cname-record", "alias.test.", RecordType::A, None),
            ("cname-record-cname", "alias.test.", RecordType::CNAME, None),
            (
                "cname-wildcard",
                "x.accel.test.",
                RecordType::A,
                Some((1232, false)),
            ),
            ("cname-loop", "loop1.test.", RecordType::A, None),
            ("record-truncated", "many.test.", RecordType::A, None),
            (
                "record-big-edns",
                "many.test.",
                RecordType::A,
                Some((4096, false)),
            ),
            ("cache-a", "cached.example.", RecordType::A, None),
            (
                "cache-a-do",
                "CACHED.example.",
                RecordType::A,
                Some((1232, true)),
            ),
            (
                "cache-aaaa",
                "cached.example.",
                RecordType::AAAA,
                Some((1232, false)),
            ),
            ("cache-nodata", "cached.example.", RecordType::MX, None),
            ("cache-nxdomain", "gone.nx.example.", RecordType::A, None),
            ("cache-big-truncated", "big.example.", RecordType::TXT, None),
            (
                "cache-big-edns",
                "big.example.",
                RecordType::TXT,
                Some((4096, false)),
            ),
            ("cache-chain", "www.chain.example.", RecordType::A, None),
            (
                "cache-mx",
                "mail.example.",
                RecordType::MX,
                Some((1232, false)),
            ),
            ("miss", "uncached.example.", RecordType::A, None),
            ("root-ns", ".", RecordType::NS, None),
            (
                "unknown-type",
                "docker.io.",
                RecordType::Unknown(65280),
                None,
            ),
        ];
        for (label, qname, qtype, edns) in cases {
            out.push(((*label).into(), bytes(&query(qname, *qtype, *edns))));
        }
        let mut chaos = query("version.bind.", RecordType::TXT, None);
        chaos.queries[0].set_query_class(DNSClass::CH);
        out.push(("class-chaos".into(), bytes(&chaos)));
        let mut none = query("docker.io.", RecordType::A, Some((1232, false)));
        none.queries.clear();
        out.push(("qdcount-0".into(), bytes(&none)));
        let mut two = query("docker.io.", RecordType::A, None);
        two.add_query(Query::query(name("cached.example."), RecordType::A));
        out.push(("qdcount-2".into(), bytes(&two)));
        for (label, op) in [
            ("opcode-status", OpCode::Status),
            ("opcode-notify", OpCode::Notify),
            ("opcode-update", OpCode::Update),
            ("opcode-15", OpCode::Unknown(15)),
        ] {
            let mut m = query("docker.io.", RecordType::SOA, None);
            m.metadata.op_code = op;
            out.push((label.into(), bytes(&m)));
        }
        let mut badvers = query("docker.io.", RecordType::A, Some((1232, false)));
        if let Some(e) = badvers.edns.as_mut() {
            e.set_version(1);
        }
        out.push(("edns-version-1".into(), bytes(&badvers)));
        let mut options = query("cached.example.", RecordType::A, Some((65535, true)));
        if let Some(e) = options.edns.as_mut() {
            e.options_mut().insert(EdnsOption::Unknown(
                u16::from(EdnsCode::Cookie),
                vec![1, 2, 3, 4, 5, 6, 7, 8],
            ));
            e.options_mut().insert(EdnsOption::Unknown(
                u16::from(EdnsCode::Padding),
                vec![0; 40],
            ));
            e.options_mut()
                .insert(EdnsOption::Unknown(65001, vec![0xff; 3]));
        }
        out.push(("edns-options".into(), bytes(&options)));
        out.push((
            "edns-payload-0".into(),
            bytes(&query("docker.io.", RecordType::A, Some((0, false)))),
        ));
        // Hand-made shapes the encoder would never produce.
        let header = |qd: u8, ar: u8| vec![0x12, 0x34, 0x01, 0x00, 0, qd, 0, 0, 0, 0, 0, ar];
        let mut pointer_loop = header(1, 0);
        pointer_loop.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        out.push(("pointer-loop".into(), pointer_loop));
        let mut into_header = vec![0x0A, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        into_header.extend_from_slice(&[0xC0, 0, 0, 1, 0, 1]);
        out.push(("pointer-into-header".into(), into_header));
        let mut labels = header(1, 0);
        for _ in 0..127 {
            labels.extend_from_slice(&[1, b'a']);
        }
        labels.extend_from_slice(&[0, 0, 1, 0, 1]);
        out.push(("127-labels".into(), labels));
        out.push(("truncated-header".into(), header(1, 0)[..7].to_vec()));
        let mut response = bytes(&query("docker.io.", RecordType::A, None));
        response[2] |= 0x80;
        out.push(("qr-set".into(), response));
        out
    }

    fn query_seeds() -> Vec<(String, Vec<u8>)> {
        let out = query_packets();
        // Every packet as a UDP query from 127.0.0.1; some also from the
        // other clients and over TCP (first byte: client | tcp << 2).
        let mut seeds = Vec::new();
        for (i, (label, packet)) in out.into_iter().enumerate() {
            for selector in [0u8, (i % 4) as u8 | if i % 2 == 0 { 4 } else { 0 }] {
                let mut data = vec![selector];
                data.extend_from_slice(&packet);
                seeds.push((format!("{label}-{selector}"), data));
            }
        }
        seeds.sort();
        seeds.dedup_by(|a, b| a.0 == b.0);
        seeds
    }

    fn upstream_seeds() -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, (message, _)) in canned_answers().into_iter().enumerate() {
            let label = format!(
                "canned-{i}-{}",
                message.queries[0].query_type().to_string().to_lowercase()
            );
            out.push((label, bytes(&message)));
        }
        let mut servfail = response("fail.example.", RecordType::A, ResponseCode::ServFail, true);
        out.push(("servfail".into(), bytes(&servfail)));
        servfail.metadata.response_code = ResponseCode::Refused;
        out.push(("refused".into(), bytes(&servfail)));
        let mut truncated = response("big.example.", RecordType::TXT, ResponseCode::NoError, true);
        truncated.metadata.truncation = true;
        out.push(("truncated".into(), bytes(&truncated)));
        let mut badvers = response("x.example.", RecordType::A, ResponseCode::BADVERS, true);
        badvers.metadata.authentic_data = true;
        out.push(("extended-rcode".into(), bytes(&badvers)));
        // OPT not last: hand-moved in front of an additional record.
        let mut mx = response(
            "mail.example.",
            RecordType::MX,
            ResponseCode::NoError,
            false,
        );
        mx.add_answer(Record::from_rdata(
            name("mail.example."),
            300,
            RData::MX(MX::new(10, name("mx1.mail.example."))),
        ));
        let mut opt_first = bytes(&mx);
        opt_first[11] = 2;
        opt_first.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        opt_first.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 25]);
        out.push(("opt-not-last".into(), opt_first));
        // A compression pointer loop in an answer record's owner.
        let mut looped = bytes(&response(
            "l.example.",
            RecordType::A,
            ResponseCode::NoError,
            false,
        ));
        looped[7] = 1;
        let at = looped.len();
        looped.extend_from_slice(&[0xC0, at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        out.push(("pointer-loop".into(), looped));
        out
    }

    /// The `upstream_check` seeds: the `upstream_answer` seeds, and the
    /// shapes the verdict must get right by hand — each record type it
    /// checks, valid and broken, the hostile_upstreams garbage, pointers
    /// forward, into themselves and across records, OPT options.
    fn check_seeds() -> Vec<(String, Vec<u8>)> {
        let mut out = upstream_seeds();
        // A response header with `a.` A IN as the question (offsets 12..19).
        let header = |an: u8, ns: u8, ar: u8| {
            let mut h = vec![0x42, 0x42, 0x81, 0x80, 0, 1, 0, an, 0, ns, 0, ar];
            h.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
            h
        };
        // One record owned by the question's name.
        let record = |rtype: u16, rdata: &[u8]| {
            let mut r = vec![0xC0, 12];
            r.extend_from_slice(&rtype.to_be_bytes());
            r.extend_from_slice(&[0, 1, 0, 0, 1, 44]);
            r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            r.extend_from_slice(rdata);
            r
        };
        let opt = |rdata: &[u8]| {
            let mut r = vec![0, 0, 41, 4, 0xd0, 0, 0, 0, 0];
            r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            r.extend_from_slice(rdata);
            r
        };
        let answer = |rtype: u16, rdata: &[u8]| {
            let mut m = header(1, 0, 1);
            m.extend_from_slice(&record(rtype, rdata));
            m.extend_from_slice(&opt(&[]));
            m
        };
        let mut soa = vec![1, b'b', 0xC0, 12, 0xC0, 12];
        soa.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 14, 16, 0, 0, 2, 88, 0, 1, 81, 128, 0, 0, 1, 44,
        ]);
        let cases: Vec<(&str, u16, Vec<u8>)> = vec![
            ("a", 1, vec![192, 0, 2, 1]),
            ("a-rdlength-3", 1, vec![192, 0, 2]),
            ("a-rdlength-0", 1, vec![]),
            ("aaaa", 28, vec![0x20; 16]),
            ("aaaa-rdlength-15", 28, vec![0x20; 15]),
            ("cname", 5, vec![1, b'b', 0xC0, 12]),
            ("cname-short", 5, vec![1, b'b', 0xC0]),
            ("cname-trailing", 5, vec![1, b'b', 0, 9]),
            ("cname-forward-pointer", 5, vec![0xC0, 40]),
            ("cname-self-pointer", 5, vec![0xC0, 31]),
            ("cname-label-0x40", 5, vec![0x40, 0]),
            ("cname-label-0x80", 5, vec![0x80, 0]),
            ("ns", 2, vec![2, b'n', b's', 0xC0, 12]),
            ("ptr", 12, vec![4, b'h', b'o', b's', b't', 0]),
            ("dname", 39, vec![1, b'd', 0xC0, 12]),
            ("dname-garbage", 39, vec![0x80, 1, 2]),
            ("mx", 15, vec![0, 10, 0xC0, 12]),
            ("mx-no-name", 15, vec![0, 10]),
            ("srv", 33, vec![0, 1, 0, 2, 0, 53, 0xC0, 12]),
            ("soa", 6, soa.clone()),
            ("soa-short", 6, soa[..soa.len() - 2].to_vec()),
            ("txt", 16, vec![2, b'h', b'i', 0, 1, b'x']),
            ("txt-overrun", 16, vec![2, b'h', b'i', 4, b'x']),
            ("txt-empty", 16, vec![]),
            ("rrsig", 46, vec![0, 1, 8, 2, 0, 0, 1, 44]),
            ("https", 65, vec![0, 1, 0]),
            ("any-as-data", 255, vec![1]),
        ];
        for (label, rtype, rdata) in cases {
            out.push((format!("check-{label}"), answer(rtype, &rdata)));
        }
        // OPT options: none, a cookie, a subnet, cut, too long, half a code.
        for (label, rdata) in [
            ("cookie", vec![0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
            ("subnet", vec![0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]),
            ("nsid", vec![0, 3, 0, 0]),
            ("cut", vec![0, 10, 0, 4, 1, 2]),
            ("too-long", vec![0, 10, 0, 9, 1]),
            ("half-code", vec![0]),
        ] {
            let mut m = header(0, 0, 1);
            m.extend_from_slice(&opt(&rdata));
            out.push((format!("check-opt-{label}"), m));
        }
        let mut two_opts = header(0, 0, 2);
        two_opts.extend_from_slice(&opt(&[]));
        two_opts.extend_from_slice(&opt(&[]));
        out.push(("check-two-opts".into(), two_opts));
        let mut opt_in_answer = header(1, 0, 0);
        opt_in_answer.extend_from_slice(&opt(&[]));
        out.push(("check-opt-in-answer".into(), opt_in_answer));
        let mut owned_opt = header(0, 0, 1);
        owned_opt.extend_from_slice(&record(41, &[]));
        out.push(("check-opt-owned".into(), owned_opt));
        // Pointers across records: backwards (valid), and a piece pointed
        // to that runs on into the piece pointing to it.
        let mut chain = header(2, 0, 0);
        chain.extend_from_slice(&record(5, &[1, b'b', 0xC0, 12]));
        chain.extend_from_slice(&record(5, &[1, b'c', 0xC0, 31]));
        out.push(("check-pointer-chain".into(), chain));
        let mut overlap = header(2, 0, 0);
        overlap.extend_from_slice(&record(1, &[192, 0, 1, b'z']));
        overlap.extend_from_slice(&[1, b'c', 0xC0, 33, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 1, 2, 3, 4]);
        out.push(("check-pointer-overlap".into(), overlap));
        // The longest name, and one byte longer.
        let mut longest: Vec<u8> = (0..127).flat_map(|_| [1, b'x']).collect();
        longest.push(0);
        out.push(("check-name-255".into(), answer(5, &longest)));
        longest.insert(1, b'x');
        longest[0] = 2;
        out.push(("check-name-256".into(), answer(5, &longest)));
        // hostile_upstreams' garbage: short, header only, noise, cut, lying.
        let good = answer(1, &[192, 0, 2, 1]);
        out.push(("check-eleven-bytes".into(), good[..11].to_vec()));
        out.push(("check-header-only".into(), good[..12].to_vec()));
        let mut noise = good[..19].to_vec();
        noise.extend((0..200u32).map(|i| (i * 7919 % 251) as u8));
        out.push(("check-noise".into(), noise));
        out.push(("check-cut".into(), good[..good.len() - 15].to_vec()));
        let mut lying = good.clone();
        lying[7] = 2;
        out.push(("check-ancount-too-many".into(), lying));
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0xff; 5]);
        out.push(("check-trailing-bytes".into(), trailing));
        let mut update = good;
        update[2] = 0xA8;
        out.push(("check-update".into(), update));
        out
    }

    fn config_seeds() -> Vec<(String, Vec<u8>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut out = vec![
            ("query-path".to_string(), QUERY_PATH_CONFIG.as_bytes().to_vec()),
            ("empty".to_string(), Vec::new()),
            (
                "hosts".to_string(),
                b"[records]\nhosts_files = [\"hosts\"]\n\n#--hosts--\n127.0.0.1 localhost\n203.0.113.5 registry.test alias.test # comment\nfe80::1%eth0 link.test\n".to_vec(),
            ),
            (
                "system".to_string(),
                b"[upstream]\nservers = [\"system\", \"[2001:db8::53]:5353\"]\ntimeout = \"1500ms\"\n".to_vec(),
            ),
            (
                "health-views".to_string(),
                b"[[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\nclients = [\"10.1.0.0/16\"]\nhealth_check = { port = 443, interval = \"5s\", timeout = \"1s\", fall = 3, rise = 2 }\n".to_vec(),
            ),
        ];
        for dir in ["config", "tests/fixtures/valid", "tests/fixtures/invalid"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let text = std::fs::read(&path).expect("read config");
                    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
                    let label = format!("{}-{}", dir.replace('/', "-"), stem.unwrap_or_default());
                    out.push((label, text));
                }
            }
        }
        out
    }

    #[test]
    #[ignore = "writes the committed seed corpus"]
    fn write_seed_corpus() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (target, seeds) in [
            ("query_path", query_seeds()),
            ("query_parse", query_packets()),
            ("upstream_answer", upstream_seeds()),
            ("upstream_check", check_seeds()),
            ("config", config_seeds()),
        ] {
            for (label, data) in seeds {
                write(&corpus.join(target), &label, &data);
            }
        }
    }
}
