//! Hostile clients (issue 7, README "How a query is answered", malformed input, "access", limits): random and mutated
//! packets by the thousand, compression-pointer tricks, huge label counts,
//! lying counts, unknown opcodes, classes and types, odd EDNS, TCP length
//! prefixes that lie, slowloris connections up to and past
//! `max_tcp_connections`, and the amplification rule. After each attack the
//! server must still answer normal queries promptly over UDP and TCP, and no
//! code of the server may have panicked (a panic in a task kills only that
//! task, so it is watched for explicitly).
//!
//! Every random sequence comes from a seeded `StdRng`: a failure replays,
//! and `HOSTILE_SEED=<n>` explores another sequence. Every loop is bounded
//! in count and in time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use accel_dns::internals::metrics::Protocol;
use accel_dns::internals::request::Handled;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::common::*;

/// Records of these tests: one exact name, a wildcard and a CNAME record.
pub const RECORDS: &str = r#"
[[record]]
name = "docker.io"
a = ["203.0.113.10"]

[[record]]
name = "*.docker.io"
a = ["203.0.113.11"]

[[record]]
name = "alias.test"
cname = "docker.io"
"#;

/// How fast a normal query must be answered while or after an attack.
pub const PROMPT: Duration = Duration::from_secs(2);

/// Panics raised in the server's own code (`src/`), in any task, since the
/// hook was installed. A panic in a spawned task does not fail a test by
/// itself: it kills the task (a query goes unanswered) and prints a line.
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Installs (once per test binary) a panic hook that counts panics located
/// in `src/`, then calls the previous hook.
pub fn watch_server_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info
                .location()
                .is_some_and(|l| l.file().starts_with("src/"))
            {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Asserts that no server code has panicked so far.
pub fn assert_no_server_panic() {
    assert_eq!(
        SERVER_PANICS.load(Ordering::SeqCst),
        0,
        "server code panicked (see the panic message above)"
    );
}

/// The normal queries that must keep working: a record and a forwarded
/// name, over UDP and TCP, each within [`PROMPT`]. Returns the slowest.
pub async fn assert_still_serving(server: SocketAddr, when: &str) -> Duration {
    let mut slowest = Duration::ZERO;
    for (qname, expected) in [
        ("docker.io.", "203.0.113.10"),
        ("still.example.test.", "198.51.100.7"),
    ] {
        for tcp in [false, true] {
            let query = query_message(qname, RecordType::A, None);
            let started = Instant::now();
            let answer = tokio::time::timeout(PROMPT, async {
                if tcp {
                    send_tcp(server, &query).await
                } else {
                    send_udp(server, &query).await
                }
            })
            .await
            .unwrap_or_else(|_| {
                panic!("{when}: {qname} over TCP={tcp} not answered in {PROMPT:?}")
            });
            slowest = slowest.max(started.elapsed());
            let addresses: Vec<String> = a_records(&answer).iter().map(|a| a.to_string()).collect();
            assert_eq!(addresses, vec![expected.to_string()], "{when}: {qname}");
        }
    }
    assert_no_server_panic();
    slowest
}

/// The seed of every random sequence (`HOSTILE_SEED` overrides it).
pub fn seed() -> u64 {
    std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7e57_0fa7_7ac5)
}

fn framed(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Reads one framed answer, or `None` when the server closes (or 5 s pass).
async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let len = stream.read_u16().await.ok()?;
        let mut buf = vec![0u8; len as usize];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf)
    })
    .await
    .ok()
    .flatten()
}

/// Whether the server closes `stream` within `wait` (EOF or reset),
/// skipping whatever answers it still sends.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn is_error_rcode(answer: &Message) -> bool {
    matches!(
        answer.metadata.response_code,
        ResponseCode::FormErr | ResponseCode::NotImp | ResponseCode::Refused
    ) || u16::from(answer.metadata.response_code) == u16::from(ResponseCode::BADVERS)
}

/// Sends `packets` over UDP from one socket, each with a unique ID written
/// into its first two bytes, and collects the replies until 300 ms of
/// silence. Every reply must decode, be a response, carry an ID that was
/// sent, and — if it is an error answer — be no larger than its query.
/// Returns how many replies came.
async fn blast_udp(server: SocketAddr, packets: &[Vec<u8>]) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut sent: HashMap<u16, usize> = HashMap::new();
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 65535];
    for (i, packet) in packets.iter().enumerate() {
        let mut packet = packet.clone();
        let id = i as u16;
        if packet.len() >= 2 {
            packet[0..2].copy_from_slice(&id.to_be_bytes());
            sent.insert(id, packet.len());
        }
        let _ = socket.send_to(&packet, server).await;
        // Take what has come so far, so that the socket's buffer never fills.
        while let Ok((len, _)) = socket.try_recv_from(&mut buf) {
            replies.push(buf[..len].to_vec());
        }
        if i % 64 == 63 {
            // Pacing: a burst of 64, then let the server catch up.
            tokio::task::yield_now().await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await {
            Ok(Ok(len)) => replies.push(buf[..len].to_vec()),
            _ => break,
        }
    }
    for reply in &replies {
        let answer = Message::from_vec(reply)
            .unwrap_or_else(|e| panic!("a reply that does not decode ({e}): {reply:02x?}"));
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        let Some(&query_len) = sent.get(&answer.metadata.id) else {
            panic!("a reply with an ID never sent: {reply:02x?}");
        };
        if is_error_rcode(&answer) {
            assert!(
                reply.len() <= query_len,
                "a {}-byte {} to a {query_len}-byte query",
                reply.len(),
                answer.metadata.response_code
            );
        }
    }
    replies.len()
}

fn query_bytes(qname: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    query_message(qname, rtype, edns).to_vec().expect("encode")
}

async fn start() -> (FakeUpstream, TestServer) {
    watch_server_panics();
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(RECORDS, Some(upstream.addr)).await;
    (upstream, server)
}

#[tokio::test]
async fn thousands_of_random_packets_get_no_bad_answer_and_stall_nothing() {
    let (_upstream, server) = start().await;
    let mut rng = StdRng::seed_from_u64(seed());
    let mut packets = Vec::new();
    // Pure noise of every length up to 600 bytes.
    for _ in 0..3000 {
        let mut packet = vec![0u8; rng.random_range(0..600)];
        rng.fill(&mut packet[..]);
        packets.push(packet);
    }
    // A plausible header (QUERY, QDCOUNT 1, random other counts) and noise.
    for _ in 0..3000 {
        let mut packet = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        if rng.random_bool(0.5) {
            packet[6..12].copy_from_slice(&rng.random::<[u8; 6]>());
        }
        let mut body = vec![0u8; rng.random_range(0..300)];
        rng.fill(&mut body[..]);
        packet.extend(body);
        packets.push(packet);
    }
    // A real question, then noise where the records would be.
    let base = query_bytes("noise.example.test.", RecordType::A, None);
    for _ in 0..2000 {
        let mut packet = base.clone();
        packet[10..12].copy_from_slice(&rng.random::<[u8; 2]>());
        let mut tail = vec![0u8; rng.random_range(0..200)];
        rng.fill(&mut tail[..]);
        packet.extend(tail);
        packets.push(packet);
    }
    let started = Instant::now();
    let replies = blast_udp(server.dns, &packets).await;
    eprintln!(
        "{} random packets: {replies} replies in {:?}",
        packets.len(),
        started.elapsed()
    );
    // Some noise over TCP too: each connection ends or answers, never hangs.
    for packet in packets.iter().step_by(40) {
        if let Some(reply) = tcp_raw(server.dns, packet).await {
            assert!(Message::from_vec(&reply).is_ok(), "{reply:02x?}");
        }
    }
    assert_still_serving(server.dns, "after random packets").await;
}

/// A query whose name is `name_bytes` (raw wire form) at offset 12, with
/// `extra` appended after the question.
fn raw_query(id: [u8; 2], flags: [u8; 2], name_bytes: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut packet = id.to_vec();
    packet.extend_from_slice(&flags);
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    packet.extend_from_slice(name_bytes);
    packet.extend_from_slice(&[0, 1, 0, 1]);
    packet.extend_from_slice(extra);
    packet
}

#[tokio::test]
async fn compression_pointer_tricks_and_huge_label_counts_are_dropped_or_answered_small() {
    let (upstream, server) = start().await;
    let mut packets = vec![
        // A pointer to itself, to the pointer before it, forward, past the end.
        raw_query([1, 1], [1, 0], &[0xC0, 12], &[]),
        raw_query([1, 2], [1, 0], &[1, b'a', 0xC0, 12], &[]),
        raw_query([1, 3], [1, 0], &[0xC0, 30], &[0; 20]),
        raw_query([1, 4], [1, 0], &[0xFF, 0xFF], &[]),
        // Two pointers pointing at each other through the header.
        raw_query([0xC0, 2], [0xC0, 0], &[0xC0, 0], &[]),
    ];
    // Pointers into the header: the label is the ID, flags and counts.
    for id_high in [1u8, 5, 10, 11, 63] {
        for flags in [[1, 0], [0x38, 0], [0x01, 0x20]] {
            packets.push(raw_query([id_high, 0x34], flags, &[0xC0, 0], &[]));
            packets.push(raw_query([id_high, 0x34], flags, &[1, b'x', 0xC0, 0], &[]));
        }
    }
    // Reserved label types (0x40, 0x80) and a label longer than 63.
    packets.push(raw_query([1, 5], [1, 0], &[0x41, b'a', 0], &[]));
    packets.push(raw_query([1, 6], [1, 0], &[0x80, 0], &[]));
    // 127 one-letter labels (254 bytes: the longest legal name), 128 labels
    // (too long) and 200 labels.
    for labels in [127usize, 128, 200] {
        let mut name = Vec::new();
        for _ in 0..labels {
            name.extend_from_slice(&[1, b'a']);
        }
        name.push(0);
        packets.push(raw_query([2, labels as u8], [1, 0], &name, &[]));
    }
    // The packets above, from a client the server must refuse, are in the
    // amplification tests; here every one comes from an allowed client.
    let mut received = 0;
    for packet in &packets {
        // The IDs above are part of the trick: sent as they are, one by one.
        if let Some(reply) = udp_raw(server.dns, packet, Duration::from_millis(300)).await {
            received += 1;
            let answer = Message::from_vec(&reply)
                .unwrap_or_else(|e| panic!("reply does not decode ({e}): {reply:02x?}"));
            if is_error_rcode(&answer) {
                assert!(
                    reply.len() <= packet.len(),
                    "{}-byte {} to the {}-byte {packet:02x?}",
                    reply.len(),
                    answer.metadata.response_code,
                    packet.len()
                );
            }
        }
        let _ = tcp_raw(server.dns, packet).await;
    }
    eprintln!(
        "{} pointer/label tricks: {received} answered, {} forwarded (names that decode are legal)",
        packets.len(),
        upstream.count()
    );
    assert_still_serving(server.dns, "after pointer tricks").await;
}

#[tokio::test]
async fn lying_section_counts_are_dropped_or_formerr() {
    let (_upstream, server) = start().await;
    let base = query_bytes("docker.io.", RecordType::A, None);
    let mut packets = Vec::new();
    for (qd, an, ns, ar) in [
        (0u16, 0u16, 0u16, 0u16), // QDCOUNT 0 with a question behind it
        (2, 0, 0, 0),             // QDCOUNT 2 with one question
        (1, 1, 0, 0),             // an answer promised, none there
        (1, 0, 0, 1),             // an additional promised, none there
        (1, 0xFFFF, 0xFFFF, 0xFFFF),
        (0xFFFF, 0, 0, 0),
    ] {
        let mut packet = base.clone();
        for (at, value) in [(4, qd), (6, an), (8, ns), (10, ar)] {
            packet[at..at + 2].copy_from_slice(&value.to_be_bytes());
        }
        packets.push(packet);
    }
    let replies = blast_udp(server.dns, &packets).await;
    for packet in &packets {
        let mut stream = TcpStream::connect(server.dns).await.expect("connect");
        stream.write_all(&framed(packet)).await.expect("write");
        if let Some(reply) = read_frame(&mut stream).await {
            let answer = Message::from_vec(&reply).expect("decodes");
            assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
        }
    }
    eprintln!("lying counts: {replies} of {} answered", packets.len());
    assert_still_serving(server.dns, "after lying counts").await;
}

#[tokio::test]
async fn every_unknown_opcode_gets_notimp_and_odd_classes_and_types_are_answered() {
    let (upstream, server) = start().await;
    // Every opcode but QUERY (0), over UDP and TCP.
    for op in 1u8..16 {
        let mut message = query_message("docker.io.", RecordType::A, None);
        message.metadata.op_code = OpCode::from_u8(op);
        let answer = send_udp(server.dns, &message).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NotImp,
            "opcode {op}"
        );
        let answer = send_tcp(server.dns, &message).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NotImp);
    }
    // Unknown and meta types for a record name: NODATA from the record,
    // never forwarded (README "How a query is answered", records), whatever the type.
    let before = upstream.count();
    for rtype in [0u16, 41, 249, 250, 251, 252, 253, 254, 65280, 65535] {
        let mut message = query_message("docker.io.", RecordType::from(rtype), None);
        message.metadata.id = rtype;
        let bytes = message.to_vec().expect("encode");
        let reply = udp_raw(server.dns, &bytes, PROMPT)
            .await
            .unwrap_or_else(|| panic!("type {rtype} answered"));
        let answer = Message::from_vec(&reply).expect("decodes");
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "type {rtype}"
        );
        assert!(answer.answers.is_empty(), "type {rtype}: NODATA");
    }
    assert_eq!(upstream.count(), before, "a record name was forwarded");
    // Odd classes, for a record name and a forwarded name: an answer (the
    // records serve IN and ANY; the rest goes upstream), promptly.
    for class in [3u16, 4, 254, 255, 0, 65535] {
        for qname in ["docker.io.", "class.example.test."] {
            let mut message = query_message(qname, RecordType::A, None);
            message.queries[0].set_query_class(DNSClass::from(class));
            let bytes = message.to_vec().expect("encode");
            let reply = udp_raw(server.dns, &bytes, PROMPT)
                .await
                .unwrap_or_else(|| panic!("class {class} {qname} answered"));
            let answer = Message::from_vec(&reply).expect("decodes");
            assert_eq!(answer.metadata.id, message.metadata.id);
        }
    }
    assert_still_serving(server.dns, "after odd opcodes, classes, types").await;
}

/// A query with an OPT whose fields and options are set by hand.
fn edns_query(version: u8, payload: u16, options: &[(u16, Vec<u8>)]) -> Message {
    let mut message = query_message("edns.example.test.", RecordType::A, None);
    let mut edns = Edns::new();
    edns.set_version(version);
    edns.set_max_payload(payload);
    for (code, data) in options {
        edns.options_mut()
            .insert(EdnsOption::Unknown(*code, data.clone()));
    }
    message.set_edns(edns);
    message
}

#[tokio::test]
async fn edns_with_odd_versions_payloads_and_options_is_answered_within_its_limits() {
    let (_upstream, server) = start().await;
    for version in [1u8, 2, 127, 255] {
        let answer = send_udp(server.dns, &edns_query(version, 1232, &[])).await;
        assert_eq!(
            u16::from(answer.metadata.response_code),
            u16::from(ResponseCode::BADVERS),
            "version {version}"
        );
    }
    let cookie = u16::from(EdnsCode::Cookie);
    let subnet = u16::from(EdnsCode::Subnet);
    let padding = u16::from(EdnsCode::Padding);
    type Options = Vec<(u16, Vec<u8>)>;
    let cases: Vec<(u16, Options)> = vec![
        (0, vec![]),
        (1, vec![]),
        (511, vec![]),
        (65535, vec![]),
        (1232, vec![(cookie, vec![1; 7])]), // a client cookie of the wrong length
        (1232, vec![(cookie, vec![1; 40])]), // longer than a cookie may be
        (1232, vec![(padding, vec![0; 1000])]),
        (
            1232,
            vec![(65001, vec![0xFF; 3]), (0, vec![]), (65535, vec![7; 2])],
        ),
    ];
    for (payload, options) in &cases {
        let query = edns_query(0, *payload, options);
        let bytes = query.to_vec().expect("encode");
        let reply = udp_raw(server.dns, &bytes, PROMPT)
            .await
            .unwrap_or_else(|| panic!("payload {payload} {options:?}: answered"));
        let limit = usize::from(*payload).max(512);
        assert!(reply.len() <= limit, "{} bytes over {limit}", reply.len());
        let answer = Message::from_vec(&reply).expect("decodes");
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        let edns = answer.edns.expect("an OPT back");
        assert!(edns.options().as_ref().is_empty(), "no option echoed");
        let answer = send_tcp(server.dns, &query).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    }
    // A client-subnet option hickory cannot decode (unknown family, no
    // data) makes the whole message undecodable; it gets FORMERR (RFC 7871
    // §7.1.1, RFC 6891 §7; `bad_edns.rs` checks that), never a crash or an
    // oversized answer.
    for data in [
        vec![0, 9, 200, 0, 1, 2, 3],
        vec![],
        vec![0, 1, 33, 0, 1, 2, 3, 4],
    ] {
        let bytes = edns_query(0, 1232, &[(subnet, data.clone())])
            .to_vec()
            .expect("encode");
        if let Some(reply) = udp_raw(server.dns, &bytes, Duration::from_millis(300)).await {
            let answer = Message::from_vec(&reply).expect("decodes");
            assert!(reply.len() <= 1232, "subnet {data:?}");
            assert!(answer.answers.len() <= 1, "subnet {data:?}");
        }
    }
    // Hand-made OPT shapes hickory would not encode: an option whose length
    // runs past the record, two OPT records, an OPT with an owner name, an
    // OPT in the answer section.
    let base = query_bytes("edns.example.test.", RecordType::A, None);
    let with_additional = |count: u8, records: &[u8]| {
        let mut packet = base.clone();
        packet[11] = count;
        packet.extend_from_slice(records);
        packet
    };
    let opt = |rdata: &[u8]| {
        let mut record = vec![0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0];
        record.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        record.extend_from_slice(rdata);
        record
    };
    let mut packets = vec![
        with_additional(1, &opt(&[0, 10, 0, 40, 1, 2, 3])),
        with_additional(2, &[opt(&[]), opt(&[])].concat()),
        with_additional(1, &{
            let mut named = vec![1, b'x'];
            named.extend_from_slice(&opt(&[])[1..]);
            named
        }),
        with_additional(1, &opt(&[0; 3])),
    ];
    let mut in_answers = base.clone();
    in_answers[7] = 1;
    in_answers.extend_from_slice(&opt(&[]));
    packets.push(in_answers);
    let replies = blast_udp(server.dns, &packets).await;
    eprintln!(
        "hand-made OPT shapes: {replies} of {} answered",
        packets.len()
    );
    assert_still_serving(server.dns, "after odd EDNS").await;
}

#[tokio::test]
async fn tcp_length_prefixes_that_lie_end_the_connection_and_nothing_else() {
    let (_upstream, server) = start().await;
    let query = query_bytes("docker.io.", RecordType::A, None);
    let idle = Duration::from_secs(10); // the default tcp_idle_timeout
    // A zero-length frame; a prefix shorter than the query; a prefix one
    // byte longer followed by the client's half-close; 65535 bytes of noise.
    let mut short = ((query.len() - 5) as u16).to_be_bytes().to_vec();
    short.extend_from_slice(&query);
    let mut long = ((query.len() + 1) as u16).to_be_bytes().to_vec();
    long.extend_from_slice(&query);
    let mut noise = vec![0xFF, 0xFF];
    noise.extend(std::iter::repeat_n(0xA5, 65535));
    for (label, bytes, half_close) in [
        ("zero length", vec![0, 0], false),
        ("prefix too short", short, false),
        ("prefix too long, then EOF", long, true),
        ("65535 bytes of noise", noise, false),
    ] {
        let mut stream = TcpStream::connect(server.dns).await.expect("connect");
        let _ = stream.write_all(&bytes).await;
        if half_close {
            let _ = stream.shutdown().await;
        }
        assert!(
            closed_within(&mut stream, idle / 2).await,
            "{label}: the server ends the connection"
        );
    }
    // A good query, then a lie: the good one is answered before the close.
    let mut stream = TcpStream::connect(server.dns).await.expect("connect");
    let mut burst = framed(&query);
    burst.extend_from_slice(&[0, 0]);
    stream.write_all(&burst).await.expect("write");
    let reply = read_frame(&mut stream)
        .await
        .expect("the good query answered");
    assert_eq!(
        a_records(&Message::from_vec(&reply).expect("decode")).len(),
        1
    );
    assert!(closed_within(&mut stream, idle / 2).await);
    assert_still_serving(server.dns, "after lying TCP prefixes").await;
}

#[tokio::test]
async fn slowloris_connections_past_max_tcp_connections_leave_udp_untouched_and_tcp_recovers() {
    watch_server_panics();
    let upstream = FakeUpstream::start().await;
    let max = 8;
    let idle = Duration::from_secs(1);
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_tcp_connections = {max}\ntcp_idle_timeout = \"1s\"\n{RECORDS}"
    );
    let server = TestServer::start(&config, Some(upstream.addr)).await;
    let query = framed(&query_bytes("docker.io.", RecordType::A, None));

    // 12 connections (4 past the bound), each sending a valid query one byte
    // a second; each task reports how long until the server closed it.
    let attackers = max + 4;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..attackers {
        let query = query.clone();
        let addr = server.dns;
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let opened = Instant::now();
            for byte in query.iter().take(8) {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                // One byte a second (pacing, bounded by the 8 bytes sent).
                let mut probe = [0u8; 1];
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
                    Ok(Ok(_)) => panic!("an answer to a query never sent whole"),
                    Err(_) => {}
                }
            }
            closed_within(&mut stream, Duration::from_secs(3))
                .await
                .then(|| opened.elapsed())
        }));
    }
    // While they hold every slot, UDP is answered promptly.
    let mut udp_worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let answer = query_udp(server.dns, "docker.io.", RecordType::A).await;
        assert_eq!(a_records(&answer).len(), 1);
        udp_worst = udp_worst.max(t.elapsed());
        // Pacing over the attack's first second.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(udp_worst < PROMPT, "UDP during slowloris: {udp_worst:?}");
    let mut closed_after = Vec::new();
    for task in tasks {
        let closed = task.await.expect("attacker task");
        closed_after.push(closed.expect("every slowloris connection is closed by the server"));
    }
    closed_after.sort();
    eprintln!(
        "slowloris: {attackers} connections, closed after {:?} .. {:?}; UDP worst {udp_worst:?}",
        closed_after.first(),
        closed_after.last()
    );
    // The 4 past the bound were closed at once; the rest within the frame
    // timeout (the first byte opens a frame that must complete in `idle`).
    assert!(closed_after[attackers - max - 1] < Duration::from_millis(500));
    assert!(
        *closed_after.last().expect("some") <= 2 * idle + Duration::from_millis(900),
        "a slowloris connection held a slot for {:?}",
        closed_after.last()
    );
    // Every slot is free again: TCP answers at once.
    let mut open = Vec::new();
    for _ in 0..max {
        let mut stream = TcpStream::connect(server.dns).await.expect("connect");
        stream.write_all(&query).await.expect("write");
        assert!(
            read_frame(&mut stream).await.is_some(),
            "a freed slot serves"
        );
        open.push(stream);
    }
    drop(open);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_still_serving(server.dns, "after slowloris").await;
}

/// Addresses outside the default ACL, as the resolver sees a client.
fn strangers() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 99)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(100, 128, 0, 1)), // just past 100.64.0.0/10
        IpAddr::V4(Ipv4Addr::new(172, 32, 0, 1)),  // just past 172.16.0.0/12
        IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        IpAddr::V6(Ipv4Addr::new(8, 8, 4, 4).to_ipv6_mapped()),
        IpAddr::V6(Ipv6Addr::new(0xfe00, 0, 0, 0, 0, 0, 0, 1)),
    ]
}

/// Queries of every shape a reflection attack would pick: ANY, DNSKEY,
/// large TXT, with EDNS 4096 and options, and the compressed-name trick.
fn amplification_queries() -> Vec<Vec<u8>> {
    let mut out = vec![
        query_bytes("docker.io.", RecordType::ANY, None),
        query_bytes("docker.io.", RecordType::ANY, Some(4096)),
        query_bytes("big.test.", RecordType::TXT, Some(65535)),
        query_bytes(".", RecordType::DNSKEY, Some(4096)),
        query_bytes("x.docker.io.", RecordType::A, None),
        // The name is a pointer into the header, which decodes as a label of
        // ten bytes (see compression_pointer_tricks_... above).
        raw_query([10, 0x34], [1, 0], &[0xC0, 0], &[]),
        raw_query([10, 0x34], [1, 0], &[1, b'x', 0xC0, 0], &[]),
    ];
    let mut with_cookie = query_message("alias.test.", RecordType::A, Some(4096));
    if let Some(edns) = with_cookie.edns.as_mut() {
        edns.set_dnssec_ok(true);
        edns.options_mut().insert(EdnsOption::Unknown(
            u16::from(EdnsCode::Cookie),
            vec![1, 2, 3, 4, 5, 6, 7, 8],
        ));
    }
    out.push(with_cookie.to_vec().expect("encode"));
    out
}

#[tokio::test]
async fn with_the_default_acl_a_stranger_gets_refused_no_larger_than_its_query() {
    watch_server_panics();
    let upstream = FakeUpstream::start().await;
    // No `allow` key: the default ACL of README "Configuration reference".
    let server = TestServer::start(RECORDS, Some(upstream.addr)).await;
    let resolver = &server.server.as_ref().expect("running").resolver;
    let mut worst_ratio: f64 = 0.0;
    let mut count = 0;
    // Through the whole query path as a packet from each address would
    // take it (the test cannot send from a public address itself).
    for ip in strangers() {
        for packet in amplification_queries() {
            for protocol in [Protocol::Udp, Protocol::Tcp] {
                let client = SocketAddr::new(ip, 53000);
                let mut reply = Vec::new();
                match resolver.handle(&packet, client, protocol, &mut reply) {
                    Handled::Reply => {
                        let answer = Message::from_vec(&reply).expect("decodes");
                        assert_eq!(
                            answer.metadata.response_code,
                            ResponseCode::Refused,
                            "{ip}: {packet:02x?}"
                        );
                        assert!(answer.answers.is_empty());
                        assert!(
                            reply.len() <= packet.len(),
                            "{ip}: {}-byte REFUSED to a {}-byte query",
                            reply.len(),
                            packet.len()
                        );
                        worst_ratio = worst_ratio.max(reply.len() as f64 / packet.len() as f64);
                        count += 1;
                    }
                    Handled::Drop => {}
                    Handled::Pending(_) => panic!("{ip}: a stranger's query went upstream"),
                }
            }
        }
    }
    eprintln!("default ACL: {count} refused answers, largest/query = {worst_ratio:.2}");
    assert_eq!(upstream.count(), 0, "nothing of a stranger goes upstream");
    // The loopback and private clients of the default ACL are served, an
    // IPv4-mapped loopback too.
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7)),
        IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        let packet = query_bytes("docker.io.", RecordType::A, None);
        let mut reply = Vec::new();
        let Handled::Reply = resolver.handle(
            &packet,
            SocketAddr::new(ip, 53000),
            Protocol::Udp,
            &mut reply,
        ) else {
            panic!("{ip}: a record is answered at once");
        };
        assert_eq!(
            a_records(&Message::from_vec(&reply).expect("decode")).len(),
            1,
            "{ip}"
        );
    }
    assert_still_serving(server.dns, "after strangers").await;
}

#[tokio::test]
async fn from_127_0_0_1_an_allow_list_without_it_refuses_with_no_more_bytes_than_sent() {
    watch_server_panics();
    let upstream = FakeUpstream::start().await;
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.2/32\", \"10.0.0.0/8\"]\n{RECORDS}"
    );
    let server = TestServer::start(&config, Some(upstream.addr)).await;
    let mut largest = 0.0f64;
    for packet in amplification_queries() {
        let reply = udp_raw(server.dns, &packet, PROMPT)
            .await
            .expect("REFUSED, not silence");
        let answer = Message::from_vec(&reply).expect("decodes");
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
        assert!(answer.answers.is_empty() && answer.additionals.is_empty());
        assert!(
            reply.len() <= packet.len(),
            "{}-byte REFUSED to a {}-byte query {packet:02x?}",
            reply.len(),
            packet.len()
        );
        largest = largest.max(reply.len() as f64 / packet.len() as f64);
        let reply = tcp_raw(server.dns, &packet).await.expect("TCP REFUSED");
        assert_eq!(
            Message::from_vec(&reply)
                .expect("decodes")
                .metadata
                .response_code,
            ResponseCode::Refused
        );
    }
    eprintln!("127.0.0.1 outside allow: largest REFUSED/query = {largest:.2}");
    assert_eq!(upstream.count(), 0);
    // The allowed neighbour is served.
    let packet = query_bytes("docker.io.", RecordType::A, None);
    let reply = udp_raw_from(
        "127.0.0.2:0".parse().expect("addr"),
        server.dns,
        &packet,
        PROMPT,
    )
    .await
    .expect("answer");
    assert_eq!(
        a_records(&Message::from_vec(&reply).expect("decode")).len(),
        1
    );
    assert_no_server_panic();
}
