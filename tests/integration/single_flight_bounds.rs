//! SPEC §7, clients waiting on one upstream query (issue 11, item 3):
//! identical queries that miss the cache share one upstream query, and the
//! clients joining it are bounded per name (and in total), so a flood of
//! one uncached name at a dead upstream is not an unbounded queue: the
//! excess gets SERVFAIL at once, the rest SERVFAIL at the timeout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use accel_dns::metrics::QUERIES_TOTAL;
use accel_dns::resolve::MAX_WAITERS_PER_NAME;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_queries_beyond_the_per_name_bound_get_servfail_at_once() {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|_, _| Reply::Drop);
    let timeout = Duration::from_secs(3);
    let server = TestServer::start(
        "[upstream]\nservers = [\"@UPSTREAM@\"]\ntimeout = \"3s\"\n",
        Some(upstream.addr),
    )
    .await;
    let excess = 64;
    let total = MAX_WAITERS_PER_NAME + excess;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut sent = HashMap::new();
    let started = Instant::now();
    for _ in 0..total {
        let query = query_message("flood.example.test.", RecordType::A, None);
        socket
            .send_to(&query.to_vec().expect("encode"), server.dns)
            .await
            .expect("send");
        sent.insert(query.metadata.id, ());
    }
    let sending = started.elapsed();
    let mut at_once = 0;
    let mut at_timeout = 0;
    let mut buf = vec![0u8; 4096];
    let end = started + timeout + Duration::from_secs(3);
    while at_once + at_timeout < total {
        let Ok(Ok(len)) = tokio::time::timeout_at(end.into(), socket.recv(&mut buf)).await else {
            break;
        };
        let answer = Message::from_vec(&buf[..len]).expect("decodes");
        assert!(
            sent.remove(&answer.metadata.id).is_some(),
            "an answer per query"
        );
        assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
        if started.elapsed() < timeout / 2 {
            at_once += 1;
        } else {
            at_timeout += 1;
        }
    }
    assert!(
        at_once >= excess,
        "{at_once} SERVFAIL at once (sending took {sending:?}), {at_timeout} at the timeout"
    );
    assert!(
        at_timeout + at_once == total,
        "every query answered: {at_once} at once, {at_timeout} at the timeout, of {total}"
    );
    assert!(
        at_timeout >= MAX_WAITERS_PER_NAME / 2,
        "the clients within the bound wait for the upstream: {at_timeout}"
    );
    assert_eq!(upstream.count(), 1, "one upstream query for all of them");
    let servfail = server
        .metric(&format!(
            "{QUERIES_TOTAL}{{outcome=\"servfail\",protocol=\"udp\"}}"
        ))
        .await;
    assert_eq!(
        servfail,
        Some(total as f64),
        "every refusal counted as servfail"
    );
}
