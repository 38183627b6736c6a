//! README "How a query is answered", upstream and limits: forwarding. The upstream answer relayed faithfully;
//! ordered upstreams with failover on timeout, connection refused, SERVFAIL
//! and REFUSED, and a skip-for-a-while; SERVFAIL within `timeout` when all
//! fail; TCP retry of a truncated answer; EDNS towards upstream;
//! single-flight; spoofed answers ignored; forwarding loops detected; the
//! bound on upstream queries in flight.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accel_dns::internals::reload::Trigger;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, NS};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

use crate::common::*;

fn ip4(text: &str) -> Ipv4Addr {
    text.parse().expect("test IPv4")
}

/// A fake upstream that answers every query with `rcode` and no records.
async fn answering(rcode: ResponseCode) -> FakeUpstream {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(move |query, _| {
        let mut response = response_to(query);
        response.metadata.response_code = rcode;
        Reply::Answer(response)
    });
    upstream
}

/// A fake upstream that never answers.
async fn silent() -> FakeUpstream {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|_, _| Reply::Drop);
    upstream
}

fn upstreams_config(servers: &[SocketAddr], timeout: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[upstream]\nservers = [{}]\ntimeout = \"{timeout}\"\n",
        list.join(", ")
    )
}

#[tokio::test]
async fn the_upstream_answer_is_relayed_faithfully() {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|query, tcp| {
        let q = &query.queries[0];
        if q.name().to_ascii().contains("nx.test") {
            return default_reply(query, tcp);
        }
        let mut response = response_to(query);
        response.metadata.authentic_data = q.name().to_ascii().starts_with("signed");
        response.metadata.authoritative = true;
        response.add_answer(Record::from_rdata(
            q.name().clone(),
            123,
            RData::A(A(ip4("198.51.100.1"))),
        ));
        response.add_answer(Record::from_rdata(
            q.name().clone(),
            77,
            RData::A(A(ip4("198.51.100.2"))),
        ));
        response.add_authority(Record::from_rdata(
            name("example.test."),
            3600,
            RData::NS(NS(name("ns1.example.test."))),
        ));
        response.add_additional(Record::from_rdata(
            name("ns1.example.test."),
            3600,
            RData::A(A(ip4("198.51.100.53"))),
        ));
        Reply::Answer(response)
    });
    let server = TestServer::start("", Some(upstream.addr)).await;

    for (qname, ad) in [
        ("signed.example.test.", true),
        ("plain.example.test.", false),
    ] {
        let query = query_message(qname, RecordType::A, Some(1232));
        let answer = send_udp(server.dns, &query).await;
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.metadata.authentic_data, ad, "{qname}: AD bit");
        assert_eq!(answer.metadata.id, query.metadata.id);
        assert_eq!(
            a_records(&answer),
            vec![ip4("198.51.100.1"), ip4("198.51.100.2")]
        );
        assert_eq!(
            answer.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(),
            vec![123, 77],
            "TTLs as the upstream gave them"
        );
        assert_eq!(answer.authorities.len(), 1);
        assert!(matches!(answer.authorities[0].data, RData::NS(_)));
        assert_eq!(answer.additionals.len(), 1, "{:?}", answer.additionals);
        assert_eq!(answer.additionals[0].name.to_ascii(), "ns1.example.test.");
        assert!(answer.edns.is_some(), "the client's OPT gets an OPT back");
    }

    let nx = query_tcp(server.dns, "missing.nx.test.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert!(matches!(nx.authorities[0].data, RData::SOA(_)));
    assert!(nx.edns.is_none(), "no OPT for a client that sent none");
}

#[tokio::test]
async fn a_timed_out_upstream_is_skipped_for_a_while() {
    let dead = silent().await;
    let good = FakeUpstream::start().await;
    let server = TestServer::start(
        &upstreams_config(&[dead.addr, good.addr], "2s"),
        Some(good.addr),
    )
    .await;
    let started = Instant::now();
    let first = query_udp(server.dns, "one.example.test.", RecordType::A).await;
    assert_eq!(a_records(&first), vec![ip4("198.51.100.7")]);
    assert!(started.elapsed() < Duration::from_secs(2), "within timeout");
    assert_eq!((dead.count(), good.count()), (1, 1));

    // The dead one is now passed over: the next answer is immediate.
    let started = Instant::now();
    let second = query_udp(server.dns, "two.example.test.", RecordType::A).await;
    assert_eq!(a_records(&second), vec![ip4("198.51.100.7")]);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "skipped upstream not waited for: {:?}",
        started.elapsed()
    );
    assert_eq!((dead.count(), good.count()), (1, 2));
}

#[tokio::test]
async fn servfail_and_refused_move_on_to_the_next_upstream() {
    for rcode in [ResponseCode::ServFail, ResponseCode::Refused] {
        let bad = answering(rcode).await;
        let good = FakeUpstream::start().await;
        let server = TestServer::start(
            &upstreams_config(&[bad.addr, good.addr], "2s"),
            Some(good.addr),
        )
        .await;
        let first = query_udp(server.dns, "one.example.test.", RecordType::A).await;
        assert_eq!(
            first.metadata.response_code,
            ResponseCode::NoError,
            "{rcode}"
        );
        assert_eq!(a_records(&first), vec![ip4("198.51.100.7")]);
        assert_eq!((bad.count(), good.count()), (1, 1), "{rcode}");
        let second = query_tcp(server.dns, "two.example.test.", RecordType::A).await;
        assert_eq!(a_records(&second), vec![ip4("198.51.100.7")]);
        assert_eq!(
            (bad.count(), good.count()),
            (1, 2),
            "{rcode}: skipped for a while"
        );
    }
}

#[tokio::test]
async fn a_refused_connection_moves_on_at_once() {
    // Nothing listens on the discard port: the kernel answers "port unreachable".
    let closed: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let good = FakeUpstream::start().await;
    let server = TestServer::start(
        &upstreams_config(&[closed, good.addr], "6s"),
        Some(good.addr),
    )
    .await;
    let started = Instant::now();
    let answer = query_udp(server.dns, "one.example.test.", RecordType::A).await;
    assert_eq!(a_records(&answer), vec![ip4("198.51.100.7")]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection is not waited out: {:?}",
        started.elapsed()
    );
    assert!(
        server
            .metric(&format!(
                "accel_dns_upstream_errors_total{{upstream=\"{closed}\"}}"
            ))
            .await
            .is_some_and(|v| v >= 1.0)
    );
}

#[tokio::test]
async fn when_every_upstream_answers_servfail_that_servfail_is_relayed() {
    let first = answering(ResponseCode::ServFail).await;
    let second = answering(ResponseCode::ServFail).await;
    let server = TestServer::start(
        &upstreams_config(&[first.addr, second.addr], "2s"),
        Some(first.addr),
    )
    .await;
    let answer = query_udp(server.dns, "broken.example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert_eq!((first.count(), second.count()), (1, 1), "both were tried");
    assert_eq!(
        server
            .metric("accel_dns_queries_total{outcome=\"upstream\",protocol=\"udp\"}")
            .await,
        Some(1.0),
        "the upstream's SERVFAIL, relayed"
    );
}

#[tokio::test]
async fn when_every_upstream_is_dead_servfail_comes_within_the_timeout() {
    let first = silent().await;
    let second = silent().await;
    let server = TestServer::start(
        &upstreams_config(&[first.addr, second.addr], "1s"),
        Some(first.addr),
    )
    .await;
    for tcp in [false, true] {
        let started = Instant::now();
        let qname = if tcp {
            "tcp.example.test."
        } else {
            "udp.example.test."
        };
        let answer = if tcp {
            query_tcp(server.dns, qname, RecordType::A).await
        } else {
            query_udp(server.dns, qname, RecordType::A).await
        };
        let took = started.elapsed();
        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1600),
            "SERVFAIL at the timeout, never silence: {took:?}"
        );
    }
    assert!(first.count() >= 1 && second.count() >= 1);
    assert_eq!(
        server
            .metric("accel_dns_queries_total{outcome=\"servfail\",protocol=\"udp\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_truncated_udp_answer_is_retried_over_tcp() {
    let upstream = FakeUpstream::start().await;
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    let seen_tcp = tcp_queries.clone();
    upstream.set_handler(move |query, tcp| {
        let probe = query.queries[0]
            .name()
            .to_ascii()
            .ends_with(".accel-dns-loop-probe.");
        if tcp && !probe {
            seen_tcp.fetch_add(1, Ordering::SeqCst);
        }
        Reply::TruncateUdp(Box::new(default_reply(query, tcp)))
    });
    let server = TestServer::start("", Some(upstream.addr)).await;
    let query = query_message("big.test.", RecordType::TXT, Some(4096));
    let answer = send_udp(server.dns, &query).await;
    assert!(!answer.metadata.truncation);
    assert_eq!(answer.answers.len(), 1, "the full TXT came over TCP");
    assert_eq!(tcp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.count(), 2, "one UDP, one TCP");
}

#[tokio::test]
async fn upstream_queries_carry_edns_1232_the_do_bit_and_random_ids() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start("", Some(upstream.addr)).await;
    let plain = query_message("plain.example.test.", RecordType::A, None);
    send_udp(server.dns, &plain).await;
    let mut secure = query_message("secure.example.test.", RecordType::A, Some(4096));
    if let Some(edns) = secure.edns.as_mut() {
        edns.set_dnssec_ok(true);
    }
    send_udp(server.dns, &secure).await;
    for i in 0..8 {
        query_udp(server.dns, &format!("n{i}.example.test."), RecordType::A).await;
    }
    let seen = upstream.seen();
    assert_eq!(seen.len(), 10);
    for query in &seen {
        let edns = query.edns.as_ref().expect("EDNS towards upstream");
        assert_eq!(edns.max_payload(), 1232);
        assert_eq!(edns.version(), 0);
        assert!(query.metadata.recursion_desired);
    }
    assert!(!seen[0].edns.as_ref().expect("edns").flags().dnssec_ok);
    assert!(
        seen[1].edns.as_ref().expect("edns").flags().dnssec_ok,
        "the client's DO is asked for"
    );
    let ids: HashSet<u16> = seen.iter().map(|q| q.metadata.id).collect();
    assert!(ids.len() >= 9, "random IDs, got {ids:?}");
}

#[tokio::test]
async fn identical_concurrent_misses_go_upstream_once() {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|query, tcp| {
        Reply::Delay(
            Duration::from_millis(300),
            Box::new(default_reply(query, tcp)),
        )
    });
    let server = TestServer::start("", Some(upstream.addr)).await;
    let mut clients = Vec::new();
    for i in 0..24 {
        let dns = server.dns;
        let qname = if i % 2 == 0 {
            "same.example.test."
        } else {
            "SAME.Example.TEST."
        };
        clients.push(tokio::spawn(async move {
            if i % 3 == 0 {
                query_tcp(dns, qname, RecordType::A).await
            } else {
                query_udp(dns, qname, RecordType::A).await
            }
        }));
    }
    for client in clients {
        let answer = client.await.expect("client task");
        assert_eq!(a_records(&answer), vec![ip4("198.51.100.7")]);
    }
    assert_eq!(upstream.count(), 1);
}

/// An upstream under our own control at the socket level: for each query it
/// sends spoofed answers (wrong ID, wrong question, and right ID and question
/// but from another port), then — if `genuine` — the real answer.
struct SpoofingUpstream {
    addr: SocketAddr,
    genuine: Arc<AtomicBool>,
    sources: Arc<Mutex<Vec<(SocketAddr, u16)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SpoofingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SpoofingUpstream {
    async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let spoofer = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let genuine = Arc::new(AtomicBool::new(true));
        let sources = Arc::new(Mutex::new(Vec::new()));
        let (send_real, log) = (genuine.clone(), sources.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                if query.queries[0]
                    .name()
                    .to_ascii()
                    .ends_with(".accel-dns-loop-probe.")
                {
                    continue;
                }
                log.lock().expect("lock").push((from, query.metadata.id));
                let answer = |ip: &str| {
                    let mut response = response_to(&query);
                    response.add_answer(Record::from_rdata(
                        query.queries[0].name().clone(),
                        300,
                        RData::A(A(ip4(ip))),
                    ));
                    response
                };
                let mut wrong_id = answer("6.6.6.1");
                wrong_id.metadata.id = query.metadata.id.wrapping_add(1);
                let mut wrong_question = answer("6.6.6.2");
                wrong_question.queries[0].set_name(name("other.example.test."));
                let wrong_source = answer("6.6.6.3");
                let encode = |m: &Message| m.to_vec().expect("encode");
                let _ = socket.send_to(&encode(&wrong_id), from).await;
                let _ = socket.send_to(&encode(&wrong_question), from).await;
                let _ = spoofer.send_to(&encode(&wrong_source), from).await;
                if send_real.load(Ordering::SeqCst) {
                    let _ = socket.send_to(&encode(&answer("198.51.100.7")), from).await;
                }
            }
        });
        Self {
            addr,
            genuine,
            sources,
            task,
        }
    }
}

#[tokio::test]
async fn spoofed_answers_are_ignored_and_never_cached() {
    let upstream = SpoofingUpstream::start().await;
    let server = TestServer::start(
        &upstreams_config(&[upstream.addr], "1s"),
        Some(upstream.addr),
    )
    .await;

    // Only spoofs: nothing of theirs reaches the client, and nothing is cached.
    upstream.genuine.store(false, Ordering::SeqCst);
    let answer = query_udp(server.dns, "victim.example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(answer.answers.is_empty());

    // Spoofs first, then the genuine answer: the genuine one wins.
    upstream.genuine.store(true, Ordering::SeqCst);
    let answer = query_udp(server.dns, "victim.example.test.", RecordType::A).await;
    assert_eq!(a_records(&answer), vec![ip4("198.51.100.7")]);
    for i in 0..4 {
        let answer = query_udp(server.dns, &format!("v{i}.example.test."), RecordType::A).await;
        assert_eq!(a_records(&answer), vec![ip4("198.51.100.7")]);
    }
    // And that is what the cache holds.
    upstream.genuine.store(false, Ordering::SeqCst);
    let cached = query_tcp(server.dns, "victim.example.test.", RecordType::A).await;
    assert_eq!(a_records(&cached), vec![ip4("198.51.100.7")]);

    let sources = upstream.sources.lock().expect("lock").clone();
    let ports: HashSet<u16> = sources.iter().map(|(from, _)| from.port()).collect();
    let ids: HashSet<u16> = sources.iter().map(|(_, id)| *id).collect();
    // A fresh socket per query, or one of a pool of at least 16 at random:
    // six queries from one port would be neither.
    assert!(ports.len() >= 2, "random source ports: {sources:?}");
    assert!(ids.len() >= sources.len() - 1, "random IDs: {sources:?}");
}

/// A fake upstream that sends every query it gets back to `target` (as a
/// node resolver pointed at accel-dns would), once `target` is known.
async fn looping_upstream(
    target: tokio::sync::watch::Receiver<Option<SocketAddr>>,
) -> FakeUpstream {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(move |query, _| {
        let mut target = target.clone();
        let bytes = query.to_vec().expect("encode");
        tokio::spawn(async move {
            let Ok(addr) = target.wait_for(Option::is_some).await.map(|found| *found) else {
                return;
            };
            let Some(addr) = addr else { return };
            let _ = udp_raw(addr, &bytes, Duration::from_secs(2)).await;
        });
        Reply::Drop
    });
    upstream
}

#[tokio::test]
async fn an_upstream_that_forwards_back_to_us_is_dropped_and_readyz_fails() {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let looping = looping_upstream(rx).await;
    let server =
        TestServer::start(&upstreams_config(&[looping.addr], "1s"), Some(looping.addr)).await;
    tx.send(Some(server.dns)).expect("target");
    wait_until("/readyz fails: no upstream left", || async {
        server.admin_get("/readyz").await.0 == 503
    })
    .await;
    assert_eq!(server.admin_get("/healthz").await.0, 200);
    let loops = format!(
        "accel_dns_upstream_loops_total{{upstream=\"{}\"}}",
        looping.addr
    );
    assert!(server.metric(&loops).await.is_some_and(|v| v >= 1.0));
    // Still never silence.
    let answer = query_udp(server.dns, "after.example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(looping.count(), 0, "the looping upstream is no longer used");
}

#[tokio::test]
async fn a_looping_upstream_is_dropped_and_the_others_serve() {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let looping = looping_upstream(rx).await;
    let good = FakeUpstream::start().await;
    let server = TestServer::start(
        &upstreams_config(&[looping.addr, good.addr], "2s"),
        Some(good.addr),
    )
    .await;
    tx.send(Some(server.dns)).expect("target");
    let loops = format!(
        "accel_dns_upstream_loops_total{{upstream=\"{}\"}}",
        looping.addr
    );
    wait_until("the loop is detected", || async {
        server.metric(&loops).await.is_some_and(|v| v >= 1.0)
    })
    .await;
    assert_eq!(
        server.admin_get("/readyz").await.0,
        200,
        "one upstream is left"
    );
    let started = Instant::now();
    let answer = query_udp(server.dns, "fine.example.test.", RecordType::A).await;
    assert_eq!(a_records(&answer), vec![ip4("198.51.100.7")]);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(looping.count(), 0);
}

#[tokio::test]
async fn two_instances_pointed_at_each_other_find_the_loop() {
    let origin = FakeUpstream::start().await;
    let mut first = TestServer::start("", Some(origin.addr)).await;
    // The second forwards to the first: a working chain so far.
    let second = TestServer::start("", Some(first.dns)).await;
    let answer = query_udp(second.dns, "chain.example.test.", RecordType::A).await;
    assert_eq!(a_records(&answer), vec![ip4("198.51.100.7")]);
    assert_eq!(first.admin_get("/readyz").await.0, 200);

    // Now the first is pointed at the second: a loop.
    let text = std::fs::read_to_string(&first.config_path)
        .expect("config")
        .replace(&origin.addr.to_string(), &second.dns.to_string());
    std::fs::write(&first.config_path, text).expect("rewrite");
    first
        .server
        .as_ref()
        .expect("running")
        .reload
        .send(Trigger::Forced)
        .await
        .expect("reload");
    wait_until("the first instance finds the loop", || async {
        first.admin_get("/readyz").await.0 == 503
    })
    .await;
    let started = Instant::now();
    let answer = query_udp(first.dns, "other.example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(2));
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_queries_in_flight_are_bounded_and_the_excess_gets_servfail() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = silent().await;
    let server = TestServer::start(
        &upstreams_config(&[upstream.addr], "4s"),
        Some(upstream.addr),
    )
    .await;
    let bound = accel_dns::internals::upstream::MAX_IN_FLIGHT;
    // Over TCP, so that no query is lost on the way in: 64 queries for
    // distinct names on each of enough connections to pass the bound by 64.
    let per_connection = 64;
    let connections = bound / per_connection + 1;
    let extra = connections * per_connection - bound;
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..connections {
        let dns = server.dns;
        clients.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(dns).await.expect("connect");
            let mut burst = Vec::new();
            for i in 0..per_connection {
                let query = query_message(&format!("q{i}.c{c}.flood.test."), RecordType::A, None);
                let bytes = query.to_vec().expect("encode");
                burst.extend((bytes.len() as u16).to_be_bytes());
                burst.extend(bytes);
            }
            stream.write_all(&burst).await.expect("write");
            // Count the answers that come before the upstream timeout.
            let mut early = 0;
            while let Ok(Ok(len)) = tokio::time::timeout_at(
                (started + Duration::from_secs(3)).into(),
                stream.read_u16(),
            )
            .await
            {
                let mut buf = vec![0u8; len as usize];
                stream.read_exact(&mut buf).await.expect("read");
                let answer = Message::from_vec(&buf).expect("decode");
                assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
                early += 1;
            }
            early
        }));
    }
    let mut early = 0;
    for client in clients {
        early += client.await.expect("client");
    }
    assert_eq!(
        early, extra,
        "exactly the queries beyond the bound are answered at once, with SERVFAIL"
    );
}

#[tokio::test]
async fn upstreams_are_tried_in_order() {
    let first = FakeUpstream::start().await;
    let second = FakeUpstream::start().await;
    let server = TestServer::start(
        &upstreams_config(&[first.addr, second.addr], "2s"),
        Some(first.addr),
    )
    .await;
    for i in 0..10 {
        query_udp(server.dns, &format!("o{i}.example.test."), RecordType::A).await;
    }
    assert_eq!((first.count(), second.count()), (10, 0));
}

#[tokio::test]
async fn when_every_upstream_refuses_the_client_gets_servfail_not_refused() {
    let first = answering(ResponseCode::Refused).await;
    let second = answering(ResponseCode::Refused).await;
    let server = TestServer::start(
        &upstreams_config(&[first.addr, second.addr], "2s"),
        Some(first.addr),
    )
    .await;
    let started = Instant::now();
    let answer = query_udp(server.dns, "nope.example.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no waiting on a refusal"
    );
    assert_eq!((first.count(), second.count()), (1, 1));
}
