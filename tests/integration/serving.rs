//! README "How a query is answered", records: names answered from `[[record]]` and hosts files — precedence,
//! A/AAAA, NODATA, ANY, CNAME chasing (through the records and through
//! upstream), chain and loop limits, the target's rcode, the header bits and
//! the question echoed as asked. An overridden name is never forwarded.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use accel_dns::internals::reload::Trigger;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::common::*;

fn ip4(text: &str) -> Ipv4Addr {
    text.parse().expect("test IPv4")
}

fn aaaa_records(message: &Message) -> Vec<Ipv6Addr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The (owner, target) of every CNAME in the answer, lower-cased.
fn cnames(message: &Message) -> Vec<(String, String)> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some((
                r.name.to_lowercase().to_ascii(),
                c.0.to_lowercase().to_ascii(),
            )),
            _ => None,
        })
        .collect()
}

const RECORDS: &str = r#"
[records]
ttl = 45

[[record]]
name = "docker.io"
a = ["203.0.113.10", "203.0.113.11"]
aaaa = ["2001:db8::10"]
ttl = 30

[[record]]
name = "*.docker.io"
a = ["203.0.113.20"]

[[record]]
name = "*.cdn.docker.io"
a = ["203.0.113.30"]

[[record]]
name = "v4only.test"
a = ["203.0.113.40"]

[[record]]
name = "v6only.test"
aaaa = ["2001:db8::40"]
"#;

#[tokio::test]
async fn exact_beats_wildcard_and_the_longest_wildcard_wins() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(RECORDS, Some(upstream.addr)).await;

    let exact = query_udp(server.dns, "docker.io.", RecordType::A).await;
    assert_eq!(exact.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        a_records(&exact),
        vec![ip4("203.0.113.10"), ip4("203.0.113.11")]
    );
    assert!(
        exact.answers.iter().all(|r| r.ttl == 30),
        "the record's own TTL"
    );

    let wild = query_udp(server.dns, "registry-1.docker.io.", RecordType::A).await;
    assert_eq!(a_records(&wild), vec![ip4("203.0.113.20")]);
    assert!(
        wild.answers.iter().all(|r| r.ttl == 45),
        "[records] ttl applies to a record without its own"
    );
    assert_eq!(
        wild.answers[0].name.to_ascii(),
        "registry-1.docker.io.",
        "a wildcard answers with the asked name as owner"
    );

    let deep = query_udp(server.dns, "a.b.cdn.docker.io.", RecordType::A).await;
    assert_eq!(a_records(&deep), vec![ip4("203.0.113.30")]);
    // `cdn.docker.io` itself is below `*.docker.io`, not below `*.cdn.docker.io`.
    let cdn = query_udp(server.dns, "cdn.docker.io.", RecordType::A).await;
    assert_eq!(a_records(&cdn), vec![ip4("203.0.113.20")]);

    // A name that only ends like a record is not one of them: forwarded.
    let other = query_udp(server.dns, "notdocker.io.", RecordType::A).await;
    assert_eq!(a_records(&other), vec![ip4("198.51.100.7")]);
    assert_eq!(upstream.count(), 1, "only notdocker.io went upstream");
}

#[tokio::test]
async fn hosts_file_names_are_exact_and_a_record_beats_the_hosts_line() {
    let upstream = FakeUpstream::start().await;
    let files = tempfile::tempdir().expect("tempdir");
    let hosts = files.path().join("hosts");
    std::fs::write(
        &hosts,
        "# registry overrides\n\
         198.18.0.1 docker.io\n\
         198.18.0.2 hub.docker.io hub-alias.test # trailing comment\n\
         2001:db8::2 hub.docker.io\n",
    )
    .expect("write hosts");
    let config = format!(
        "[records]\nhosts_files = [\"{}\"]\n{}",
        hosts.display(),
        RECORDS.replace("[records]\nttl = 45\n", "")
    );
    let server = TestServer::start(&config, Some(upstream.addr)).await;

    // [[record]] beats the hosts-file line for the same name.
    let exact = query_udp(server.dns, "docker.io.", RecordType::A).await;
    assert_eq!(
        a_records(&exact),
        vec![ip4("203.0.113.10"), ip4("203.0.113.11")]
    );
    // A hosts-file name is an exact record: it beats `*.docker.io`.
    let hub = query_udp(server.dns, "HUB.docker.io.", RecordType::A).await;
    assert_eq!(a_records(&hub), vec![ip4("198.18.0.2")]);
    let hub6 = query_udp(server.dns, "hub.docker.io.", RecordType::AAAA).await;
    assert_eq!(
        aaaa_records(&hub6),
        vec!["2001:db8::2".parse::<Ipv6Addr>().expect("ip")]
    );
    let alias = query_udp(server.dns, "hub-alias.test.", RecordType::A).await;
    assert_eq!(a_records(&alias), vec![ip4("198.18.0.2")]);
    // Missing family of a hosts-file name: NODATA, not forwarded.
    let alias6 = query_udp(server.dns, "hub-alias.test.", RecordType::AAAA).await;
    assert_eq!(alias6.metadata.response_code, ResponseCode::NoError);
    assert!(alias6.answers.is_empty());
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_and_aaaa_answer_their_family_and_the_missing_family_is_nodata() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(RECORDS, Some(upstream.addr)).await;

    let six = query_udp(server.dns, "docker.io.", RecordType::AAAA).await;
    assert_eq!(
        aaaa_records(&six),
        vec!["2001:db8::10".parse::<Ipv6Addr>().expect("ip")]
    );
    assert!(a_records(&six).is_empty());

    for (qname, rtype) in [
        ("v4only.test.", RecordType::AAAA),
        ("v6only.test.", RecordType::A),
        ("x.docker.io.", RecordType::AAAA),
    ] {
        let answer = query_udp(server.dns, qname, rtype).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NoError,
            "{qname} {rtype}"
        );
        assert!(answer.answers.is_empty(), "{qname} {rtype}: NODATA");
        let tcp = query_tcp(server.dns, qname, rtype).await;
        assert_eq!(tcp.metadata.response_code, ResponseCode::NoError);
        assert!(tcp.answers.is_empty());
    }
    assert_eq!(
        upstream.count(),
        0,
        "an overridden name is never forwarded, whatever the type"
    );
}

#[tokio::test]
async fn every_other_type_of_an_address_record_is_nodata_and_never_forwarded() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(RECORDS, Some(upstream.addr)).await;
    for rtype in [
        RecordType::HTTPS,
        RecordType::SVCB,
        RecordType::MX,
        RecordType::TXT,
        RecordType::NS,
        RecordType::SOA,
        RecordType::CAA,
        RecordType::CNAME,
    ] {
        for qname in ["docker.io.", "registry-1.docker.io."] {
            let answer = query_udp(server.dns, qname, rtype).await;
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::NoError,
                "{qname} {rtype}"
            );
            assert!(answer.answers.is_empty(), "{qname} {rtype}: NODATA");
        }
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn any_returns_the_addresses_of_both_families() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(RECORDS, Some(upstream.addr)).await;
    let any = query_tcp(server.dns, "docker.io.", RecordType::ANY).await;
    assert_eq!(any.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        a_records(&any),
        vec![ip4("203.0.113.10"), ip4("203.0.113.11")]
    );
    assert_eq!(
        aaaa_records(&any),
        vec!["2001:db8::10".parse::<Ipv6Addr>().expect("ip")]
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_cname_target_is_resolved_through_the_records() {
    let upstream = FakeUpstream::start().await;
    let config = r#"
[[record]]
name = "production.cloudflare.docker.com"
cname = "ga-bp1test.aliyunga0019.com"

[[record]]
name = "ga-bp1test.aliyunga0019.com"
a = ["203.0.113.99"]
aaaa = ["2001:db8::99"]
"#;
    let server = TestServer::start(config, Some(upstream.addr)).await;
    let answer = query_udp(
        server.dns,
        "production.cloudflare.docker.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        cnames(&answer),
        vec![(
            "production.cloudflare.docker.com.".to_string(),
            "ga-bp1test.aliyunga0019.com.".to_string()
        )]
    );
    assert!(
        matches!(answer.answers[0].data, RData::CNAME(_)),
        "the answer starts with the CNAME"
    );
    assert_eq!(a_records(&answer), vec![ip4("203.0.113.99")]);
    assert_eq!(
        answer.answers[1].name.to_ascii(),
        "ga-bp1test.aliyunga0019.com.",
        "the address belongs to the target"
    );
    let six = query_udp(
        server.dns,
        "production.cloudflare.docker.com.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(
        aaaa_records(&six),
        vec!["2001:db8::99".parse::<Ipv6Addr>().expect("ip")]
    );
    // A type the target has no data for: the CNAME, then nothing (NODATA).
    let txt = query_udp(
        server.dns,
        "production.cloudflare.docker.com.",
        RecordType::TXT,
    )
    .await;
    assert_eq!(txt.metadata.response_code, ResponseCode::NoError);
    assert_eq!(txt.answers.len(), 1);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_cname_target_is_resolved_upstream_through_the_cache() {
    let upstream = FakeUpstream::start().await;
    let config = r#"
[[record]]
name = "production.cloudflare.docker.com"
cname = "ga-bp1test.aliyunga0019.com"
ttl = 20
"#;
    let server = TestServer::start(config, Some(upstream.addr)).await;
    let answer = query_udp(
        server.dns,
        "production.cloudflare.docker.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        cnames(&answer),
        vec![(
            "production.cloudflare.docker.com.".to_string(),
            "ga-bp1test.aliyunga0019.com.".to_string()
        )]
    );
    assert_eq!(answer.answers[0].ttl, 20);
    assert_eq!(a_records(&answer), vec![ip4("198.51.100.7")]);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].queries[0].name().to_lowercase().to_ascii(),
        "ga-bp1test.aliyunga0019.com.",
        "the target is asked upstream, never the overridden name"
    );
    assert_eq!(seen[0].queries[0].query_type(), RecordType::A);

    // Again, over TCP: the target comes from the cache.
    let again = query_tcp(
        server.dns,
        "production.cloudflare.docker.com.",
        RecordType::A,
    )
    .await;
    assert_eq!(a_records(&again), vec![ip4("198.51.100.7")]);
    assert_eq!(upstream.count(), 1, "the target was cached");
    // The target asked directly is served from the same cache entry.
    let direct = query_udp(server.dns, "ga-bp1test.aliyunga0019.com.", RecordType::A).await;
    assert_eq!(a_records(&direct), vec![ip4("198.51.100.7")]);
    assert_eq!(upstream.count(), 1);

    // Asking for the CNAME itself gives the alias only.
    let cname = query_udp(
        server.dns,
        "production.cloudflare.docker.com.",
        RecordType::CNAME,
    )
    .await;
    assert_eq!(cname.answers.len(), 1);
    assert_eq!(cnames(&cname).len(), 1);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_chain_of_cnames_through_records_then_upstream_is_followed() {
    let upstream = FakeUpstream::start().await;
    let config = r#"
[[record]]
name = "a.chain.test"
cname = "b.chain.test"

[[record]]
name = "*.chain.test"
cname = "outside.example"
"#;
    let server = TestServer::start(config, Some(upstream.addr)).await;
    let answer = query_udp(server.dns, "a.chain.test.", RecordType::AAAA).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        cnames(&answer),
        vec![
            ("a.chain.test.".into(), "b.chain.test.".into()),
            ("b.chain.test.".into(), "outside.example.".into()),
        ]
    );
    assert_eq!(
        aaaa_records(&answer),
        vec!["2001:db8::7".parse::<Ipv6Addr>().expect("ip")]
    );
}

#[tokio::test]
async fn a_cname_loop_or_a_chain_longer_than_8_gets_servfail() {
    let upstream = FakeUpstream::start().await;
    // c0 → c1 → … → c8: eight CNAMEs, then the address of c8.
    let mut config = String::new();
    for i in 0..8 {
        config += &format!(
            "[[record]]\nname = \"c{i}.ok.test\"\ncname = \"c{}.ok.test\"\n",
            i + 1
        );
    }
    config += "[[record]]\nname = \"c8.ok.test\"\na = [\"203.0.113.8\"]\n";
    // d0 → … → d9: nine CNAMEs.
    for i in 0..9 {
        config += &format!(
            "[[record]]\nname = \"d{i}.long.test\"\ncname = \"d{}.long.test\"\n",
            i + 1
        );
    }
    config += "[[record]]\nname = \"d9.long.test\"\na = [\"203.0.113.9\"]\n";
    config += "[[record]]\nname = \"x.loop.test\"\ncname = \"y.loop.test\"\n";
    config += "[[record]]\nname = \"y.loop.test\"\ncname = \"X.LOOP.test\"\n";
    config += "[[record]]\nname = \"self.loop.test\"\ncname = \"self.loop.test\"\n";
    let server = TestServer::start(&config, Some(upstream.addr)).await;

    let eight = query_udp(server.dns, "c0.ok.test.", RecordType::A).await;
    assert_eq!(eight.metadata.response_code, ResponseCode::NoError);
    assert_eq!(cnames(&eight).len(), 8);
    assert_eq!(a_records(&eight), vec![ip4("203.0.113.8")]);

    for qname in ["d0.long.test.", "x.loop.test.", "self.loop.test."] {
        let answer = query_udp(server.dns, qname, RecordType::A).await;
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::ServFail,
            "{qname}"
        );
    }
    assert_eq!(upstream.count(), 0, "a loop never goes upstream");
}

#[tokio::test]
async fn the_rcode_is_the_targets_and_upstream_failure_is_servfail() {
    let upstream = FakeUpstream::start().await;
    let config = r#"
[upstream]
servers = ["@UPSTREAM@"]
timeout = "500ms"

[[record]]
name = "gone.test"
cname = "target.nx.test"

[[record]]
name = "broken.test"
cname = "target.broken.example"
"#;
    let server = TestServer::start(config, Some(upstream.addr)).await;
    let answer = query_udp(server.dns, "gone.test.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        cnames(&answer),
        vec![("gone.test.".into(), "target.nx.test.".into())]
    );
    assert!(
        answer
            .authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA),
        "the target's SOA comes with its NXDOMAIN"
    );

    upstream.set_handler(|query, tcp| {
        if query.queries[0].name().to_ascii().contains("broken") {
            Reply::Drop
        } else {
            default_reply(query, tcp)
        }
    });
    let started = std::time::Instant::now();
    let failed = query_udp(server.dns, "broken.test.", RecordType::A).await;
    assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "SERVFAIL within the upstream timeout"
    );
}

#[tokio::test]
async fn ra_is_set_rd_is_copied_and_the_question_is_echoed_as_asked() {
    let upstream = FakeUpstream::start().await;
    let config = r#"
[[record]]
name = "docker.io"
a = ["203.0.113.10"]

[[record]]
name = "alias.test"
cname = "target.example"
"#;
    let server = TestServer::start(config, Some(upstream.addr)).await;
    // Records, CNAME chase, upstream, then the same from the cache.
    for qname in [
        "DoCkEr.Io.",
        "ALIAS.test.",
        "WwW.ExAmPle.test.",
        "www.EXAMPLE.TEST.",
    ] {
        for rd in [true, false] {
            for tcp in [false, true] {
                let mut query = query_message(qname, RecordType::A, None);
                query.metadata.recursion_desired = rd;
                let answer = if tcp {
                    send_tcp(server.dns, &query).await
                } else {
                    send_udp(server.dns, &query).await
                };
                assert!(answer.metadata.recursion_available, "{qname}: RA");
                assert_eq!(answer.metadata.recursion_desired, rd, "{qname}: RD copied");
                assert_eq!(answer.queries.len(), 1);
                assert_eq!(
                    answer.queries[0].name().to_ascii(),
                    qname,
                    "question echoed with its letter case"
                );
                assert_eq!(answer.queries[0].query_type(), RecordType::A);
                assert!(!a_records(&answer).is_empty(), "{qname}");
            }
        }
    }
    assert_eq!(
        upstream.count(),
        2,
        "target.example and www.example.test once each"
    );
}

#[tokio::test]
async fn record_answers_are_never_cached_a_reload_takes_effect_at_the_next_query() {
    let upstream = FakeUpstream::start().await;
    let before = "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n";
    let server = TestServer::start(before, Some(upstream.addr)).await;
    let answer = query_udp(server.dns, "docker.io.", RecordType::A).await;
    assert_eq!(a_records(&answer), vec![ip4("203.0.113.10")]);

    let running = server.server.as_ref().expect("running");
    let text = std::fs::read_to_string(&server.config_path)
        .expect("config")
        .replace("203.0.113.10", "203.0.113.77");
    std::fs::write(&server.config_path, text).expect("rewrite config");
    running
        .reload
        .send(Trigger::Forced)
        .await
        .expect("reload path runs");
    let resolver = running.resolver.clone();
    wait_until("the new configuration is in force", || {
        let resolver = resolver.clone();
        async move {
            resolver
                .snapshot()
                .config
                .records
                .entries
                .iter()
                .any(|r| format!("{:?}", r.data).contains("203.0.113.77"))
        }
    })
    .await;
    // The very next query answers from the new record.
    let answer = query_udp(server.dns, "docker.io.", RecordType::A).await;
    assert_eq!(a_records(&answer), vec![ip4("203.0.113.77")]);
    assert_eq!(upstream.count(), 0);
}
