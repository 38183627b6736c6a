//! README "How a query is answered", cache and "caching rules": the answer cache. Remaining TTLs, the key (name
//! case-insensitive, type, class, DO bit), negative caching from the SOA,
//! SERVFAIL at most 5 s, truncated answers never, `max_entries`,
//! `min_ttl`/`max_ttl`, and `serve_stale`.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

use crate::common::*;

fn ip4(text: &str) -> Ipv4Addr {
    text.parse().expect("test IPv4")
}

/// A fake upstream whose A answers carry TTL `ttl` and address 198.51.100.<n>,
/// n counting the queries it answered (so a fresh answer is told from a cached one).
async fn counting_upstream(ttl: u32) -> (FakeUpstream, Arc<AtomicU32>) {
    let upstream = FakeUpstream::start().await;
    let served = Arc::new(AtomicU32::new(0));
    let counter = served.clone();
    upstream.set_handler(move |query, tcp| {
        let q = &query.queries[0];
        if q.query_type() != RecordType::A {
            return default_reply(query, tcp);
        }
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let mut response = response_to(query);
        response.add_answer(Record::from_rdata(
            q.name().clone(),
            ttl,
            RData::A(A(Ipv4Addr::new(198, 51, 100, n as u8))),
        ));
        Reply::Answer(response)
    });
    (upstream, served)
}

fn config(cache: &str) -> String {
    format!("[upstream]\nservers = [\"@UPSTREAM@\"]\ntimeout = \"500ms\"\n[cache]\n{cache}\n")
}

#[tokio::test]
async fn cached_answers_carry_their_remaining_ttl() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start("", Some(upstream.addr)).await;
    let first = query_udp(server.dns, "ttl.example.test.", RecordType::A).await;
    assert_eq!(first.answers[0].ttl, 300);
    let hit = query_udp(server.dns, "ttl.example.test.", RecordType::A).await;
    assert!(hit.answers[0].ttl <= 300);
    wait_until("the cached TTL goes down", || async {
        query_udp(server.dns, "ttl.example.test.", RecordType::A)
            .await
            .answers[0]
            .ttl
            < 300
    })
    .await;
    let later = query_tcp(server.dns, "ttl.example.test.", RecordType::A).await;
    assert!(
        (298..300).contains(&later.answers[0].ttl),
        "{}",
        later.answers[0].ttl
    );
    assert_eq!(
        upstream.count(),
        1,
        "every later answer came from the cache"
    );
    assert!(
        server
            .metric("accel_dns_queries_total{outcome=\"cache\",protocol=\"udp\"}")
            .await
            .is_some_and(|v| v >= 2.0)
    );
}

#[tokio::test]
async fn the_key_ignores_name_case_and_holds_type_class_and_the_do_bit() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start("", Some(upstream.addr)).await;
    query_udp(server.dns, "key.example.test.", RecordType::A).await;
    let upper = query_udp(server.dns, "KEY.Example.TEST.", RecordType::A).await;
    assert_eq!(upper.queries[0].name().to_ascii(), "KEY.Example.TEST.");
    assert_eq!(
        upper.answers[0].name.to_lowercase().to_ascii(),
        "key.example.test."
    );
    assert_eq!(upstream.count(), 1, "name case does not matter");

    query_udp(server.dns, "key.example.test.", RecordType::AAAA).await;
    assert_eq!(upstream.count(), 2, "the type does");

    let mut dnssec = query_message("key.example.test.", RecordType::A, Some(1232));
    if let Some(edns) = dnssec.edns.as_mut() {
        edns.set_dnssec_ok(true);
    }
    let answer = send_udp(server.dns, &dnssec).await;
    assert!(answer.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
    assert_eq!(upstream.count(), 3, "the DO bit does");
    send_tcp(server.dns, &dnssec).await;
    assert_eq!(upstream.count(), 3);

    // EDNS without DO shares the entry of the plain query.
    let edns = query_message("key.example.test.", RecordType::A, Some(1232));
    send_udp(server.dns, &edns).await;
    assert_eq!(upstream.count(), 3);

    let mut chaos = query_message("key.example.test.", RecordType::A, None);
    chaos.queries[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    send_udp(server.dns, &chaos).await;
    assert_eq!(upstream.count(), 4, "the class does");
}

#[tokio::test]
async fn negative_answers_are_cached_for_the_soa_ttl_capped_by_negative_max_ttl() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&config("negative_max_ttl = \"2s\""), Some(upstream.addr)).await;
    // NXDOMAIN with a SOA whose negative TTL is 300: held for 2 s only.
    let first = query_udp(server.dns, "a.nx.test.", RecordType::A).await;
    assert_eq!(first.metadata.response_code, ResponseCode::NXDomain);
    let started = Instant::now();
    let hit = query_udp(server.dns, "a.nx.test.", RecordType::A).await;
    assert_eq!(hit.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(hit.authorities[0].data, RData::SOA(_)));
    assert!(
        hit.authorities[0].ttl <= 2,
        "capped: {}",
        hit.authorities[0].ttl
    );
    // NODATA (a type the fake has nothing for, with a SOA of 60): likewise.
    query_udp(server.dns, "nodata.example.test.", RecordType::MX).await;
    let nodata = query_udp(server.dns, "nodata.example.test.", RecordType::MX).await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(nodata.authorities[0].ttl <= 2);
    assert_eq!(upstream.count(), 2, "both negative answers were cached");

    wait_until("the negative entry expires", || async {
        query_udp(server.dns, "a.nx.test.", RecordType::A).await;
        upstream.count() == 3
    })
    .await;
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(1500) && held < Duration::from_secs(4),
        "held about negative_max_ttl: {held:?}"
    );
}

#[tokio::test]
async fn a_negative_answer_without_a_soa_is_not_cached() {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|query, _| {
        let mut response = response_to(query);
        if query.queries[0].query_type() == RecordType::A {
            response.metadata.response_code = ResponseCode::NXDomain;
        }
        Reply::Answer(response)
    });
    let server = TestServer::start("", Some(upstream.addr)).await;
    for _ in 0..3 {
        let nx = query_udp(server.dns, "nosoa.example.test.", RecordType::A).await;
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        let nodata = query_udp(server.dns, "nosoa.example.test.", RecordType::AAAA).await;
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    }
    assert_eq!(upstream.count(), 6, "nothing was cached");
}

#[tokio::test]
async fn an_upstream_servfail_is_cached_for_at_most_5_seconds() {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|query, _| {
        let mut response = response_to(query);
        response.metadata.response_code = ResponseCode::ServFail;
        Reply::Answer(response)
    });
    let server = TestServer::start("", Some(upstream.addr)).await;
    let first = query_udp(server.dns, "sf.example.test.", RecordType::A).await;
    assert_eq!(first.metadata.response_code, ResponseCode::ServFail);
    let started = Instant::now();
    let again = query_udp(server.dns, "sf.example.test.", RecordType::A).await;
    assert_eq!(again.metadata.response_code, ResponseCode::ServFail);
    let remembered = upstream.count();
    assert_eq!(remembered, 1, "a SERVFAIL is remembered briefly");
    upstream.set_handler(default_reply);
    wait_until("the SERVFAIL is forgotten", || async {
        query_udp(server.dns, "sf.example.test.", RecordType::A)
            .await
            .metadata
            .response_code
            == ResponseCode::NoError
    })
    .await;
    assert!(
        started.elapsed() <= Duration::from_millis(5500),
        "at most 5 s: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn truncated_answers_are_never_cached() {
    let upstream = FakeUpstream::start().await;
    // Truncated over UDP and over TCP alike: the best there is, relayed, not kept.
    upstream.set_handler(|query, _| {
        let mut response = response_to(query);
        response.metadata.truncation = true;
        response.add_answer(Record::from_rdata(
            query.queries[0].name().clone(),
            300,
            RData::A(A(ip4("198.51.100.9"))),
        ));
        Reply::Answer(response)
    });
    let server = TestServer::start("", Some(upstream.addr)).await;
    let first = query_tcp(server.dns, "tc.example.test.", RecordType::A).await;
    assert!(first.metadata.truncation);
    let after_first = upstream.count();
    assert!(after_first >= 1);
    query_tcp(server.dns, "tc.example.test.", RecordType::A).await;
    assert_eq!(upstream.count(), 2 * after_first, "asked upstream again");
}

#[tokio::test]
async fn the_cache_never_holds_more_than_max_entries() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&config("max_entries = 10"), Some(upstream.addr)).await;
    for i in 0..60 {
        query_udp(server.dns, &format!("n{i}.example.test."), RecordType::A).await;
    }
    let entries = server
        .metric("accel_dns_cache_entries")
        .await
        .expect("accel_dns_cache_entries");
    assert!(
        entries > 0.0 && entries <= 10.0,
        "accel_dns_cache_entries = {entries}"
    );
}

#[tokio::test]
async fn max_entries_0_turns_the_cache_off() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(&config("max_entries = 0"), Some(upstream.addr)).await;
    for _ in 0..3 {
        query_udp(server.dns, "off.example.test.", RecordType::A).await;
        query_udp(server.dns, "x.nx.test.", RecordType::A).await;
    }
    assert_eq!(upstream.count(), 6);
    assert_eq!(server.metric("accel_dns_cache_entries").await, Some(0.0));
}

#[tokio::test]
async fn positive_ttls_are_bounded_by_min_and_max_ttl() {
    let (low, _) = counting_upstream(1).await;
    let server = TestServer::start(&config("min_ttl = \"60s\""), Some(low.addr)).await;
    query_udp(server.dns, "short.example.test.", RecordType::A).await;
    let hit = query_udp(server.dns, "short.example.test.", RecordType::A).await;
    assert!(
        (59..=60).contains(&hit.answers[0].ttl),
        "{}",
        hit.answers[0].ttl
    );
    assert_eq!(low.count(), 1);

    let (high, _) = counting_upstream(86_400 * 7).await;
    let server = TestServer::start(&config("max_ttl = \"100s\""), Some(high.addr)).await;
    query_udp(server.dns, "long.example.test.", RecordType::A).await;
    let hit = query_udp(server.dns, "long.example.test.", RecordType::A).await;
    assert!(
        (99..=100).contains(&hit.answers[0].ttl),
        "{}",
        hit.answers[0].ttl
    );
}

#[tokio::test]
async fn an_expired_answer_is_refreshed_from_upstream() {
    let (upstream, served) = counting_upstream(1).await;
    let server = TestServer::start(&config(""), Some(upstream.addr)).await;
    let first = query_udp(server.dns, "short.example.test.", RecordType::A).await;
    assert_eq!(a_records(&first), vec![ip4("198.51.100.1")]);
    wait_until("a fresh answer after the TTL", || async {
        a_records(&query_udp(server.dns, "short.example.test.", RecordType::A).await)
            == vec![ip4("198.51.100.2")]
    })
    .await;
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn serve_stale_answers_with_ttl_30_when_every_upstream_fails() {
    let (upstream, _) = counting_upstream(1).await;
    let server = TestServer::start(&config("serve_stale = \"1h\""), Some(upstream.addr)).await;
    let first = query_udp(server.dns, "stale.example.test.", RecordType::A).await;
    assert_eq!(a_records(&first), vec![ip4("198.51.100.1")]);

    // The upstream dies (never answers again).
    upstream.set_handler(|_, _| Reply::Drop);
    let asked = Arc::new(AtomicUsize::new(0));
    wait_until("a stale answer", || {
        let asked = asked.clone();
        let dns = server.dns;
        async move {
            asked.fetch_add(1, Ordering::SeqCst);
            let answer = query_udp(dns, "stale.example.test.", RecordType::A).await;
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            answer.answers[0].ttl == 30
        }
    })
    .await;
    let started = Instant::now();
    let stale = query_tcp(server.dns, "stale.example.test.", RecordType::A).await;
    assert_eq!(a_records(&stale), vec![ip4("198.51.100.1")]);
    assert_eq!(stale.answers[0].ttl, 30);
    assert!(started.elapsed() < Duration::from_secs(1), "within timeout");
    assert!(
        server
            .metric("accel_dns_queries_total{outcome=\"stale\",protocol=\"tcp\"}")
            .await
            .is_some_and(|v| v >= 1.0)
    );

    // An upstream SERVFAIL counts as failing, too.
    upstream.set_handler(|query, _| {
        let mut response = response_to(query);
        response.metadata.response_code = ResponseCode::ServFail;
        Reply::Answer(response)
    });
    let stale = query_udp(server.dns, "stale.example.test.", RecordType::A).await;
    assert_eq!(a_records(&stale), vec![ip4("198.51.100.1")]);
    assert_eq!(stale.answers[0].ttl, 30);
}

#[tokio::test]
async fn without_serve_stale_an_expired_answer_is_not_used() {
    let (upstream, _) = counting_upstream(1).await;
    let server = TestServer::start(&config(""), Some(upstream.addr)).await;
    query_udp(server.dns, "gone.example.test.", RecordType::A).await;
    upstream.set_handler(|_, _| Reply::Drop);
    wait_until("SERVFAIL once the entry expired", || async {
        let answer: Message = query_udp(server.dns, "gone.example.test.", RecordType::A).await;
        answer.metadata.response_code == ResponseCode::ServFail
    })
    .await;
}

#[tokio::test]
async fn serve_stale_also_answers_the_target_of_a_cname_record() {
    let (upstream, _) = counting_upstream(1).await;
    let config = format!(
        "{}[[record]]\nname = \"production.cloudflare.docker.com\"\ncname = \"ga.example.test\"\n",
        config("serve_stale = \"1h\"")
    );
    let server = TestServer::start(&config, Some(upstream.addr)).await;
    let first = query_udp(
        server.dns,
        "production.cloudflare.docker.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(a_records(&first), vec![ip4("198.51.100.1")]);

    upstream.set_handler(|_, _| Reply::Drop);
    // The target expires (TTL 1) and is then served stale when asked directly…
    wait_until("the target is stale", || async {
        query_udp(server.dns, "ga.example.test.", RecordType::A)
            .await
            .answers
            .first()
            .is_some_and(|r| r.ttl == 30)
    })
    .await;
    // …and through the CNAME record alike: the accelerator keeps working
    // while the upstream is down.
    let chased = query_udp(
        server.dns,
        "production.cloudflare.docker.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(chased.metadata.response_code, ResponseCode::NoError);
    assert_eq!(chased.answers.len(), 2, "{chased:?}");
    assert_eq!(a_records(&chased), vec![ip4("198.51.100.1")]);
    assert_eq!(chased.answers[1].ttl, 30);
}
