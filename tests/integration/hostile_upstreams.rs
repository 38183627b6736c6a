//! Hostile or broken upstreams (issue 7, README "How a query is answered", upstream, "caching rules"): forged answers
//! from a wrong address or port (by brute force over every ID), unsolicited
//! answers, answers to another question or of the wrong shape, garbage and
//! cut-off datagrams, slow, flapping and restarting upstreams, oversized
//! answers, and SERVFAIL/REFUSED storms. After each, the client gets the
//! right answer or SERVFAIL within `timeout`, and the cache — looked at
//! directly, not through another query — holds nothing wrong.
//!
//! What `forwarding.rs` already covers is not repeated here: a silent
//! upstream skipped for a while, failover on SERVFAIL/REFUSED/port
//! unreachable, a SERVFAIL relayed when all fail, the TCP retry of a
//! truncated answer, wrong ID/question/port spoofs sent alongside a genuine
//! answer, and the in-flight bound.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accel_dns::internals::cache::Lookup;
use accel_dns::internals::wire::{self, TtlRule};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::net::UdpSocket;

use crate::common::*;
use crate::hostile_clients::{assert_no_server_panic, watch_server_panics};

/// The genuine address every test name resolves to.
const GENUINE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// What a forger or a broken upstream tries to plant.
const FORGED: Ipv4Addr = Ipv4Addr::new(6, 6, 6, 6);

fn upstreams_config(servers: &[SocketAddr], timeout: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[upstream]\nservers = [{}]\ntimeout = \"{timeout}\"\n",
        list.join(", ")
    )
}

/// An answer to `query` with one A record (TTL 300) and an OPT.
fn answer_with(query: &Message, ip: Ipv4Addr) -> Message {
    let mut response = response_to(query);
    response.add_answer(Record::from_rdata(
        query.queries[0].name().clone(),
        300,
        RData::A(A(ip)),
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    response.set_edns(edns);
    response
}

fn encode(message: &Message) -> Vec<u8> {
    message.to_vec().expect("encode")
}

/// What the cache holds for `qname A IN` (no DO): `None` for nothing,
/// else the rcode and the A records of the entry, fresh or stale.
fn cached(server: &TestServer, qname: &str) -> Option<(ResponseCode, Vec<Ipv4Addr>)> {
    let snapshot = server.server.as_ref().expect("running").resolver.snapshot();
    let name = name(qname);
    let key = snapshot
        .cache
        .key(&name, RecordType::A, DNSClass::IN, false);
    let question = wire::question_bytes(&name, RecordType::A, DNSClass::IN);
    match snapshot.cache.get(&key, &question, false) {
        Lookup::Fresh(entry) | Lookup::Stale(entry) => {
            let message = entry
                .answer
                .to_message(TtlRule::Fixed(1))
                .expect("a cached answer decodes");
            Some((message.metadata.response_code, a_records(&message)))
        }
        Lookup::Miss => None,
    }
}

/// Asserts the cache holds for `qname` nothing, or the genuine answer.
fn assert_cache_clean(server: &TestServer, qname: &str) {
    if let Some((rcode, addresses)) = cached(server, qname) {
        assert!(
            rcode == ResponseCode::NoError && addresses == vec![GENUINE],
            "{qname}: the cache holds {rcode} {addresses:?}"
        );
    }
}

/// One client query over UDP: the answer and how long it took; panics
/// without an answer within `limit` (never silence).
async fn ask(server: SocketAddr, qname: &str, limit: Duration) -> (Message, Duration) {
    let started = Instant::now();
    let query = query_message(qname, RecordType::A, None);
    let bytes = encode(&query);
    let reply = udp_raw(server, &bytes, limit)
        .await
        .unwrap_or_else(|| panic!("{qname}: no answer within {limit:?}"));
    let answer = Message::from_vec(&reply).expect("the answer decodes");
    assert_eq!(answer.metadata.id, query.metadata.id);
    (answer, started.elapsed())
}

/// Asserts `answer` is the genuine one or SERVFAIL (never anything else).
fn genuine_or_servfail(qname: &str, answer: &Message) -> bool {
    match answer.metadata.response_code {
        ResponseCode::NoError => {
            assert_eq!(a_records(answer), vec![GENUINE], "{qname}");
            true
        }
        ResponseCode::ServFail => {
            assert!(answer.answers.is_empty(), "{qname}");
            false
        }
        other => panic!("{qname}: {other}"),
    }
}

/// A datagram a [`RawUpstream`] sends in reply to one query.
struct Datagram {
    bytes: Vec<u8>,
    from: Source,
}

/// Where a datagram is sent from.
#[derive(Clone, Copy)]
enum Source {
    /// The upstream's own socket (the right address and port).
    Upstream,
    /// 127.0.0.2 with the upstream's port: the wrong address.
    WrongAddress,
    /// 127.0.0.1 with another port: the wrong port.
    WrongPort,
}

type RawHandler = Arc<dyn Fn(&Message) -> Vec<Datagram> + Send + Sync>;

/// An upstream at the socket level (UDP only; TCP to it is refused): for
/// each query, the handler's datagrams, in order, from the chosen sockets.
/// Records the source of every query (the server's upstream port).
struct RawUpstream {
    addr: SocketAddr,
    handler: Arc<Mutex<RawHandler>>,
    sources: Arc<Mutex<Vec<SocketAddr>>>,
    own: Arc<UdpSocket>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start(handler: impl Fn(&Message) -> Vec<Datagram> + Send + Sync + 'static) -> Self {
        let own = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let addr = own.local_addr().expect("addr");
        let wrong_address = UdpSocket::bind(("127.0.0.2", addr.port()))
            .await
            .expect("bind 127.0.0.2 on the upstream's port");
        let wrong_port = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let handler: Arc<Mutex<RawHandler>> = Arc::new(Mutex::new(Arc::new(handler)));
        let sources = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (own, handler, sources) = (own.clone(), handler.clone(), sources.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((len, from)) = own.recv_from(&mut buf).await else {
                        return;
                    };
                    let Ok(query) = Message::from_vec(&buf[..len]) else {
                        continue;
                    };
                    let probe = query
                        .queries
                        .first()
                        .is_some_and(|q| q.name().to_ascii().ends_with(".accel-dns-loop-probe."));
                    if probe {
                        continue;
                    }
                    sources.lock().expect("lock").push(from);
                    let datagrams = (handler.lock().expect("lock").clone())(&query);
                    for datagram in datagrams {
                        let socket = match datagram.from {
                            Source::Upstream => &*own,
                            Source::WrongAddress => &wrong_address,
                            Source::WrongPort => &wrong_port,
                        };
                        let _ = socket.send_to(&datagram.bytes, from).await;
                    }
                }
            })
        };
        Self {
            addr,
            handler,
            sources,
            own,
            task,
        }
    }

    fn set_handler(&self, handler: impl Fn(&Message) -> Vec<Datagram> + Send + Sync + 'static) {
        *self.handler.lock().expect("lock") = Arc::new(handler);
    }

    fn sources(&self) -> Vec<SocketAddr> {
        self.sources.lock().expect("lock").clone()
    }
}

fn genuine_datagram(query: &Message) -> Datagram {
    Datagram {
        bytes: encode(&answer_with(query, GENUINE)),
        from: Source::Upstream,
    }
}

async fn start_server(upstreams: &[SocketAddr], timeout: &str) -> TestServer {
    watch_server_panics();
    TestServer::start(
        &upstreams_config(upstreams, timeout),
        upstreams.first().copied(),
    )
    .await
}

/// Every ID a forger could guess, as answers to `query` planting [`FORGED`].
fn brute_force(query: &Message, from: Source) -> Vec<Datagram> {
    let forged = encode(&answer_with(query, FORGED));
    (0..=u16::MAX)
        .map(|id| {
            let mut bytes = forged.clone();
            bytes[0..2].copy_from_slice(&id.to_be_bytes());
            Datagram { bytes, from }
        })
        .collect()
}

#[tokio::test]
async fn forged_answers_from_a_wrong_address_or_port_are_ignored_even_for_every_id() {
    // For each query: every one of the 65 536 IDs forged from 127.0.0.2 on
    // the upstream's port (the wrong address) and 4096 from the right
    // address's other port, then — while `genuine` — the real answer.
    let genuine = Arc::new(AtomicBool::new(true));
    let send_real = genuine.clone();
    let upstream = RawUpstream::start(move |query| {
        let mut out = brute_force(query, Source::WrongAddress);
        out.extend(brute_force(query, Source::WrongPort).into_iter().take(4096));
        if send_real.load(Ordering::SeqCst) {
            out.push(genuine_datagram(query));
        }
        out
    })
    .await;
    // A generous timeout: sending 70 000 datagrams first takes a while in a
    // debug build on a loaded machine.
    let server = start_server(&[upstream.addr], "5s").await;

    let (answer, took) = ask(server.dns, "victim.example.test.", Duration::from_secs(6)).await;
    assert!(
        genuine_or_servfail("victim", &answer),
        "the genuine answer wins"
    );
    eprintln!("70 000 forged answers, then the genuine one: answered in {took:?}");
    assert_cache_clean(&server, "victim.example.test.");
    assert_eq!(
        cached(&server, "victim.example.test."),
        Some((ResponseCode::NoError, vec![GENUINE]))
    );

    // Only forgeries: SERVFAIL within the timeout, and nothing cached.
    genuine.store(false, Ordering::SeqCst);
    let (answer, took) = ask(
        server.dns,
        "only-forged.example.test.",
        Duration::from_secs(6),
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(took < Duration::from_millis(5500), "{took:?}");
    assert_eq!(cached(&server, "only-forged.example.test."), None);
    // The source port was random and the ID unguessable: the forger had
    // to try them all, and still could not get in.
    assert!(!upstream.sources().is_empty());
    assert_no_server_panic();
}

#[tokio::test]
async fn unsolicited_answers_from_the_right_address_are_dropped_not_kept_for_later() {
    let upstream = RawUpstream::start(|query| vec![genuine_datagram(query)]).await;
    let server = start_server(&[upstream.addr], "2s").await;
    // Learn some of the server's upstream ports, as an on-path observer could.
    for i in 0..8 {
        let (answer, _) = ask(server.dns, &format!("learn{i}.example.test."), DEADLINE).await;
        assert!(genuine_or_servfail("learn", &answer));
    }
    let ports: std::collections::HashSet<SocketAddr> = upstream.sources().into_iter().collect();
    // Before anyone asks for it, plant `later.example.test` on each port
    // from the upstream's own address and port, under 4096 IDs.
    let planted = query_message("later.example.test.", RecordType::A, None);
    let mut forged = answer_with(&planted, FORGED);
    for port in &ports {
        for id in 0..4096u16 {
            forged.metadata.id = id;
            let _ = upstream.own.send_to(&encode(&forged), port).await;
        }
    }
    // The query that follows gets the genuine answer, and so does the cache.
    let (answer, _) = ask(server.dns, "later.example.test.", DEADLINE).await;
    assert_eq!(a_records(&answer), vec![GENUINE]);
    assert_cache_clean(&server, "later.example.test.");
    eprintln!("{} ports x 4096 unsolicited answers: ignored", ports.len());
    assert_no_server_panic();
}

/// The ways an answer can fail to be *the* answer to the query asked.
fn misfits(query: &Message) -> Vec<(&'static str, Vec<u8>)> {
    let good = answer_with(query, FORGED);
    let mut out = Vec::new();
    let mut m = good.clone();
    m.metadata.id = query.metadata.id.wrapping_add(1);
    out.push(("wrong ID", encode(&m)));
    let mut m = good.clone();
    m.queries[0].set_query_type(RecordType::AAAA);
    out.push(("wrong type", encode(&m)));
    let mut m = good.clone();
    m.queries[0].set_query_class(DNSClass::CH);
    out.push(("wrong class", encode(&m)));
    let mut m = good.clone();
    m.queries[0].set_name(name("other.example.test."));
    out.push(("wrong name", encode(&m)));
    let mut m = good.clone();
    m.queries.clear();
    out.push(("no question", encode(&m)));
    let mut m = good.clone();
    m.add_query(query.queries[0].clone());
    out.push(("two questions", encode(&m)));
    let mut m = good.clone();
    m.metadata.message_type = MessageType::Query;
    out.push(("QR clear", encode(&m)));
    let mut m = good;
    m.metadata.op_code = OpCode::Notify;
    out.push(("opcode NOTIFY", encode(&m)));
    out
}

#[tokio::test]
async fn answers_to_another_question_or_of_another_shape_are_ignored() {
    let variant = Arc::new(AtomicUsize::new(0));
    let genuine = Arc::new(AtomicBool::new(false));
    let (which, real) = (variant.clone(), genuine.clone());
    let upstream = RawUpstream::start(move |query| {
        let (_, bytes) = misfits(query).swap_remove(which.load(Ordering::SeqCst));
        let mut out = vec![Datagram {
            bytes,
            from: Source::Upstream,
        }];
        if real.load(Ordering::SeqCst) {
            out.push(genuine_datagram(query));
        }
        out
    })
    .await;
    let server = start_server(&[upstream.addr], "1s").await;
    let labels: Vec<&str> = misfits(&query_message("x.", RecordType::A, None))
        .into_iter()
        .map(|(label, _)| label)
        .collect();
    for (i, label) in labels.iter().enumerate() {
        variant.store(i, Ordering::SeqCst);
        genuine.store(false, Ordering::SeqCst);
        let qname = format!("misfit{i}.example.test.");
        let (answer, took) = ask(server.dns, &qname, Duration::from_secs(2)).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::ServFail,
            "{label}"
        );
        assert!(took < Duration::from_millis(1600), "{label}: {took:?}");
        assert_eq!(cached(&server, &qname), None, "{label}: nothing cached");
        // The misfit first, then the genuine answer: the genuine one wins.
        genuine.store(true, Ordering::SeqCst);
        let qname = format!("misfit{i}-then-genuine.example.test.");
        let (answer, _) = ask(server.dns, &qname, Duration::from_secs(2)).await;
        assert_eq!(a_records(&answer), vec![GENUINE], "{label}");
        assert_cache_clean(&server, &qname);
    }
    // The question's letter case is the upstream's business (0x20): an
    // answer that changes only the case is the answer.
    upstream.set_handler(|query| {
        let mut m = answer_with(query, GENUINE);
        let upper = m.queries[0].name().to_ascii().to_uppercase();
        m.queries[0].set_name(name(&upper));
        vec![Datagram {
            bytes: encode(&m),
            from: Source::Upstream,
        }]
    });
    let (answer, _) = ask(server.dns, "mixed.example.test.", Duration::from_secs(2)).await;
    assert_eq!(a_records(&answer), vec![GENUINE]);
    assert_eq!(answer.queries[0].name().to_ascii(), "mixed.example.test.");
    assert_no_server_panic();
}

/// Broken replies that carry the query's ID (so that they reach the check
/// of the question, or past it).
fn garbage(query: &Message) -> Vec<(&'static str, Vec<u8>)> {
    let id = query.metadata.id.to_be_bytes();
    let good = encode(&answer_with(query, GENUINE));
    let question_end = 12 + wire::packet_question(&good).map_or(0, <[u8]>::len);
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![
        ("empty datagram", vec![]),
        ("one byte", vec![id[0]]),
        (
            "eleven bytes",
            [&id[..], &[0x81, 0x80, 0, 1, 0, 0, 0, 0, 0]].concat(),
        ),
        (
            "header only",
            [&id[..], &[0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]].concat(),
        ),
    ];
    let mut noise = good[..question_end].to_vec();
    noise.extend((0..200u32).map(|i| (i * 7919 % 251) as u8));
    out.push(("question, then noise", noise));
    out.push(("cut inside the record", good[..good.len() - 15].to_vec()));
    let mut lying = good.clone();
    lying[7] += 1;
    out.push(("ANCOUNT one too many", lying));
    // An A record of 3 bytes: the record framing walks, the data does not
    // decode. It used to be relayed and cached (fixed in upstream.rs).
    let mut short = good[..good.len() - 11].to_vec(); // the OPT off
    short[11] = 0;
    let len_at = short.len() - 6;
    short[len_at..len_at + 2].copy_from_slice(&[0, 3]);
    short.pop();
    out.push(("A record with RDLENGTH 3", short));
    // A name in the answer that loops on itself.
    let mut looped = good[..question_end].to_vec();
    looped[7] = 1;
    let at = looped.len() as u8;
    looped.extend_from_slice(&[0xC0, at, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 6, 6, 6, 6]);
    out.push(("owner name pointing at itself", looped));
    out
}

#[tokio::test]
async fn garbage_and_cut_off_answers_are_failures_never_relayed_or_cached() {
    let variant = Arc::new(AtomicUsize::new(0));
    let which = variant.clone();
    let broken = RawUpstream::start(move |query| {
        let (_, bytes) = garbage(query).swap_remove(which.load(Ordering::SeqCst));
        vec![Datagram {
            bytes,
            from: Source::Upstream,
        }]
    })
    .await;
    let good = FakeUpstream::start().await;
    let alone = start_server(&[broken.addr], "1s").await;
    let labels: Vec<&str> = garbage(&query_message("x.", RecordType::A, None))
        .into_iter()
        .map(|(label, _)| label)
        .collect();
    for (i, label) in labels.iter().enumerate() {
        variant.store(i, Ordering::SeqCst);
        // Alone: SERVFAIL within the timeout, nothing cached.
        let qname = format!("garbage{i}.example.test.");
        let (answer, took) = ask(alone.dns, &qname, Duration::from_secs(2)).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::ServFail,
            "{label}"
        );
        assert!(took < Duration::from_millis(1600), "{label}: {took:?}");
        assert_eq!(cached(&alone, &qname), None, "{label}: nothing cached");
        // First of two: the second answers, within the timeout.
        let pair = start_server(&[broken.addr, good.addr], "2s").await;
        let (answer, took) = ask(pair.dns, &qname, Duration::from_secs(3)).await;
        assert_eq!(
            a_records(&answer),
            vec![GENUINE],
            "{label}: the next upstream answers"
        );
        assert!(took < Duration::from_secs(2), "{label}: {took:?}");
        assert_cache_clean(&pair, &qname);
    }
    assert_no_server_panic();
}

#[tokio::test]
async fn a_slow_upstream_gets_servfail_at_the_timeout_and_its_late_answer_is_never_cached() {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|query, tcp| {
        Reply::Delay(
            Duration::from_millis(1500),
            Box::new(default_reply(query, tcp)),
        )
    });
    let server = start_server(&[upstream.addr], "1s").await;
    let (answer, took) = ask(server.dns, "slow.example.test.", Duration::from_secs(3)).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1600),
        "{took:?}"
    );
    // The late answer arrives half a second after the SERVFAIL: watch the
    // cache for a second after that (pacing, bounded) — it stays empty.
    for _ in 0..30 {
        assert_eq!(
            cached(&server, "slow.example.test."),
            None,
            "a late answer was cached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Slow but inside the timeout: answered.
    upstream.set_handler(|query, tcp| {
        Reply::Delay(
            Duration::from_millis(600),
            Box::new(default_reply(query, tcp)),
        )
    });
    let (answer, took) = ask(server.dns, "slowish.example.test.", Duration::from_secs(3)).await;
    assert_eq!(a_records(&answer), vec![GENUINE], "{took:?}");
    // A slow first upstream and a quick second: the second answers in time.
    let quick = FakeUpstream::start().await;
    let pair = start_server(&[upstream.addr, quick.addr], "1s").await;
    let (answer, took) = ask(pair.dns, "either.example.test.", Duration::from_secs(3)).await;
    assert_eq!(a_records(&answer), vec![GENUINE]);
    assert!(took < Duration::from_millis(1200), "{took:?}");
    assert_no_server_panic();
}

#[tokio::test]
async fn a_flapping_upstream_gives_the_right_answer_or_servfail_and_nothing_sticks() {
    // Answers one query in three, drops the rest.
    let upstream = FakeUpstream::start().await;
    let turn = Arc::new(AtomicUsize::new(0));
    let counter = turn.clone();
    upstream.set_handler(move |query, tcp| {
        if counter.fetch_add(1, Ordering::SeqCst).is_multiple_of(3) {
            default_reply(query, tcp)
        } else {
            Reply::Drop
        }
    });
    let server = start_server(&[upstream.addr], "1s").await;
    let names: Vec<String> = (0..30).map(|i| format!("flap{i}.example.test.")).collect();
    let mut tasks = Vec::new();
    for qname in names.clone() {
        let dns = server.dns;
        tasks.push(tokio::spawn(async move {
            let (answer, took) = ask(dns, &qname, Duration::from_secs(2)).await;
            (qname, answer, took)
        }));
    }
    let (mut good, mut failed, mut slowest) = (0, 0, Duration::ZERO);
    for task in tasks {
        let (qname, answer, took) = task.await.expect("client task");
        if genuine_or_servfail(&qname, &answer) {
            good += 1;
        } else {
            failed += 1;
        }
        slowest = slowest.max(took);
        assert_cache_clean(&server, &qname);
    }
    eprintln!("flapping (1 in 3): {good} answered, {failed} SERVFAIL, slowest {slowest:?}");
    assert!(slowest < Duration::from_millis(1600), "{slowest:?}");
    assert!(
        good > 0 && failed > 0,
        "the upstream did flap: {good}/{failed}"
    );
    // Once it is steady, every name resolves: no failure was remembered.
    upstream.set_handler(default_reply);
    for qname in &names {
        let (answer, _) = ask(server.dns, qname, Duration::from_secs(2)).await;
        assert_eq!(a_records(&answer), vec![GENUINE], "{qname}");
    }
    assert_no_server_panic();
}

#[tokio::test]
async fn an_upstream_that_dies_and_comes_back_on_the_same_port_is_used_again() {
    let upstream = FakeUpstream::start().await;
    let addr = upstream.addr;
    let server = start_server(&[addr], "1s").await;
    let (answer, _) = ask(server.dns, "before.example.test.", DEADLINE).await;
    assert_eq!(a_records(&answer), vec![GENUINE]);
    // Dead: the port is closed, so the kernel says so and SERVFAIL is quick.
    drop(upstream);
    let mut dead_worst = Duration::ZERO;
    for i in 0..5 {
        let (answer, took) = ask(
            server.dns,
            &format!("dead{i}.example.test."),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
        dead_worst = dead_worst.max(took);
    }
    assert!(dead_worst < Duration::from_millis(1600), "{dead_worst:?}");
    // Back on the same port (over UDP and TCP): served again at once.
    let revived = FakeUpstream::start_on(addr, Arc::new(default_reply)).await;
    wait_until("the revived upstream answers", || async {
        let (answer, _) = ask(server.dns, "after.example.test.", Duration::from_secs(2)).await;
        answer.metadata.response_code == ResponseCode::NoError
    })
    .await;
    for i in 0..5 {
        let (answer, _) = ask(
            server.dns,
            &format!("dead{i}.example.test."),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(a_records(&answer), vec![GENUINE], "no failure remembered");
    }
    assert!(revived.count() >= 6);
    eprintln!("dead upstream: SERVFAIL within {dead_worst:?}");
    assert_no_server_panic();
}

/// A TXT answer of about 5 KB: more than the 4096 bytes read from an
/// upstream over UDP, sent whole over UDP by an upstream that ignores the
/// EDNS size of 1232 this server announces.
fn huge_txt(query: &Message) -> Message {
    let mut response = response_to(query);
    let strings: Vec<String> = (0..40)
        .map(|i| format!("{i:03}{}", "h".repeat(120)))
        .collect();
    response.add_answer(Record::from_rdata(
        query.queries[0].name().clone(),
        300,
        RData::TXT(TXT::new(strings)),
    ));
    response
}

#[tokio::test]
async fn an_answer_too_large_for_udp_is_fetched_over_tcp_or_fails_cleanly() {
    // Over UDP the whole 5 KB without TC; over TCP the same.
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|query, _| Reply::Answer(huge_txt(query)));
    let server = start_server(&[upstream.addr], "2s").await;
    let query = query_message("huge.example.test.", RecordType::TXT, Some(65000));
    let answer = send_tcp(server.dns, &query).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        answer.answers.len(),
        1,
        "the whole TXT, fetched again over TCP"
    );
    let tcp_queries = upstream.count();
    assert_eq!(tcp_queries, 2, "one UDP query (cut), one TCP retry");
    // A UDP client with a 1232-byte buffer gets it truncated, from the cache.
    let query = query_message("huge.example.test.", RecordType::TXT, Some(1232));
    let reply = udp_raw(server.dns, &encode(&query), Duration::from_secs(2))
        .await
        .expect("answer");
    assert!(reply.len() <= 1232);
    assert!(
        Message::from_vec(&reply)
            .expect("decodes")
            .metadata
            .truncation
    );
    assert_eq!(upstream.count(), tcp_queries, "served from the cache");

    // The same from an upstream without TCP: a clean SERVFAIL, nothing cached.
    let udp_only = RawUpstream::start(|query| {
        vec![Datagram {
            bytes: encode(&huge_txt(query)),
            from: Source::Upstream,
        }]
    })
    .await;
    let server = start_server(&[udp_only.addr], "1s").await;
    let query = query_message("huge.example.test.", RecordType::TXT, Some(65000));
    let started = Instant::now();
    let answer = send_udp(server.dns, &query).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_millis(1600));
    assert_no_server_panic();
}

/// Sends `count` queries for distinct names at once over one UDP socket and
/// collects the answers: (rcode counts, slowest answer, answers missing).
async fn storm(
    server: SocketAddr,
    prefix: &str,
    count: usize,
    limit: Duration,
) -> (
    std::collections::HashMap<ResponseCode, usize>,
    Duration,
    usize,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let started = Instant::now();
    for i in 0..count {
        let query = query_message(&format!("{prefix}{i}.example.test."), RecordType::A, None);
        let _ = socket.send_to(&encode(&query), server).await;
    }
    let mut rcodes = std::collections::HashMap::new();
    let mut slowest = Duration::ZERO;
    let mut got = 0;
    let mut buf = vec![0u8; 4096];
    while got < count {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, socket.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                let answer = Message::from_vec(&buf[..len]).expect("decodes");
                *rcodes.entry(answer.metadata.response_code).or_insert(0) += 1;
                slowest = started.elapsed();
                got += 1;
            }
            _ => break,
        }
    }
    (rcodes, slowest, count - got)
}

#[tokio::test]
async fn servfail_and_refused_storms_are_answered_promptly_and_heal_at_once_or_within_5_s() {
    for rcode in [ResponseCode::ServFail, ResponseCode::Refused] {
        let upstream = FakeUpstream::start().await;
        upstream.set_handler(move |query, _| {
            let mut response = response_to(query);
            response.metadata.response_code = rcode;
            Reply::Answer(response)
        });
        let server = start_server(&[upstream.addr], "1s").await;
        let count = 500;
        let (rcodes, slowest, missing) =
            storm(server.dns, "storm", count, Duration::from_secs(5)).await;
        eprintln!(
            "{rcode} storm: {count} queries, {rcodes:?}, all in {slowest:?}, {missing} missing"
        );
        assert_eq!(missing, 0, "{rcode}: every query answered");
        assert_eq!(
            rcodes.get(&ResponseCode::ServFail),
            Some(&count),
            "{rcode}: SERVFAIL to the client"
        );
        assert!(slowest < Duration::from_secs(3), "{rcode}: {slowest:?}");
        // Heals: REFUSED is never cached, an upstream SERVFAIL for 5 s at most.
        upstream.set_handler(default_reply);
        let healed = Instant::now();
        wait_until("every stormed name resolves again", || async {
            let (answer, _) = ask(server.dns, "storm7.example.test.", Duration::from_secs(2)).await;
            answer.metadata.response_code == ResponseCode::NoError
        })
        .await;
        let took = healed.elapsed();
        if rcode == ResponseCode::Refused {
            assert!(
                took < Duration::from_secs(1),
                "REFUSED was remembered: {took:?}"
            );
        } else {
            assert!(took <= Duration::from_secs(6), "SERVFAIL held {took:?}");
        }
        // What the cache holds: the upstream's own SERVFAIL (5 s at most),
        // or the genuine answer, never a REFUSED.
        for i in (0..count).step_by(50) {
            let qname = format!("storm{i}.example.test.");
            match cached(&server, &qname) {
                None => {}
                Some((ResponseCode::ServFail, records)) if rcode == ResponseCode::ServFail => {
                    assert!(records.is_empty())
                }
                Some(_) => assert_cache_clean(&server, &qname),
            }
        }
    }
    // A failing first upstream and a good second: the storm is answered by
    // the second, the first skipped after its first failure.
    let failing = FakeUpstream::start().await;
    failing.set_handler(|query, _| {
        let mut response = response_to(query);
        response.metadata.response_code = ResponseCode::ServFail;
        Reply::Answer(response)
    });
    let good = FakeUpstream::start().await;
    let server = start_server(&[failing.addr, good.addr], "1s").await;
    let (rcodes, slowest, missing) = storm(server.dns, "pair", 500, Duration::from_secs(5)).await;
    eprintln!("SERVFAIL storm with a good second upstream: {rcodes:?} in {slowest:?}");
    assert_eq!(
        (missing, rcodes.get(&ResponseCode::NoError)),
        (0, Some(&500))
    );
    assert!(failing.count() < 500, "the failing upstream was skipped");
    assert_no_server_panic();
}
