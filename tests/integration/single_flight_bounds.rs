//! README "How a query is answered", limits, clients waiting on one upstream query (issue 11, item 3):
//! identical queries that miss the cache share one upstream query, and the
//! clients joining it are bounded per name and in total, so a flood of one
//! uncached name at a dead upstream is not an unbounded queue: the excess
//! gets SERVFAIL at once, the rest SERVFAIL at the timeout.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use accel_dns::internals::inflight::{MAX_WAITERS, MAX_WAITERS_PER_NAME};
use accel_dns::internals::metrics::QUERIES_TOTAL;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::common::*;

/// The upstream timeout of these tests; an answer before it was refused
/// without waiting for the upstream.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Starts a server whose only upstream never answers.
async fn dead_upstream_server() -> (FakeUpstream, TestServer) {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|_, _| Reply::Drop);
    let server = TestServer::start(
        "[upstream]\nservers = [\"@UPSTREAM@\"]\ntimeout = \"3s\"\n",
        Some(upstream.addr),
    )
    .await;
    (upstream, server)
}

/// Sends one UDP query per name in `names` and sorts the answers: (SERVFAIL
/// before the timeout, SERVFAIL at the timeout). The queries go from
/// many sockets, so that the answers arriving together at the timeout fit
/// their receive buffers.
async fn flood(dns: SocketAddr, names: &[String]) -> (usize, usize) {
    const SOCKETS: usize = 64;
    let started = Instant::now();
    let counts = futures_util::future::join_all((0..SOCKETS).map(|first| async move {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        // Connected: only the server's datagrams reach it, never a late
        // answer meant for an earlier owner of the port.
        socket.connect(dns).await.expect("connect");
        let mut sent = HashSet::new();
        for name in names.iter().skip(first).step_by(SOCKETS) {
            let query = query_message(name, RecordType::A, None);
            socket
                .send(&query.to_vec().expect("encode"))
                .await
                .expect("send");
            sent.insert(query.metadata.id);
        }
        let (mut at_once, mut at_timeout) = (0, 0);
        let mut buf = vec![0u8; 4096];
        let end = started + TIMEOUT + Duration::from_secs(3);
        while !sent.is_empty() {
            let Ok(Ok(len)) = tokio::time::timeout_at(end.into(), socket.recv(&mut buf)).await
            else {
                break;
            };
            let answer = Message::from_vec(&buf[..len]).expect("decodes");
            let id = answer.metadata.id;
            assert!(
                sent.remove(&id),
                "one answer per query: {id} again ({:?}, {} left)",
                answer.queries,
                sent.len()
            );
            assert_eq!(answer.metadata.response_code, ResponseCode::ServFail);
            // The upstream never answers, so an answer before the timeout
            // is a refusal, not the end of a wait.
            if started.elapsed() < TIMEOUT {
                at_once += 1;
            } else {
                at_timeout += 1;
            }
        }
        (at_once, at_timeout)
    }))
    .await;
    counts
        .into_iter()
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

async fn servfails(server: &TestServer) -> Option<f64> {
    server
        .metric(&format!(
            "{QUERIES_TOTAL}{{outcome=\"servfail\",protocol=\"udp\"}}"
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_name_queries_beyond_the_per_name_bound_get_servfail_at_once() {
    let (upstream, server) = dead_upstream_server().await;
    let excess = 64;
    let total = MAX_WAITERS_PER_NAME + excess;
    let names = vec!["flood.example.test.".to_string(); total];
    let (at_once, at_timeout) = flood(server.dns, &names).await;
    assert_eq!(
        at_once + at_timeout,
        total,
        "every query answered: {at_once} at once, {at_timeout} at the timeout"
    );
    assert!(
        at_once >= excess,
        "{at_once} SERVFAIL at once, {at_timeout} at the timeout"
    );
    assert!(
        at_timeout >= MAX_WAITERS_PER_NAME / 2,
        "the clients within the bound wait for the upstream: {at_timeout}"
    );
    assert_eq!(upstream.count(), 1, "one upstream query for all of them");
    assert_eq!(
        servfails(&server).await,
        Some(total as f64),
        "every refusal counted as servfail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_clients_over_every_name_are_bounded_too() {
    let (upstream, server) = dead_upstream_server().await;
    // Every name within its own bound, together past the total one.
    let names_count = MAX_WAITERS / MAX_WAITERS_PER_NAME + 1;
    let names: Vec<String> = (0..MAX_WAITERS_PER_NAME)
        .flat_map(|_| (0..names_count).map(|n| format!("n{n}.flood.example.test.")))
        .collect();
    let excess = names.len() - MAX_WAITERS;
    let (at_once, at_timeout) = flood(server.dns, &names).await;
    assert_eq!(at_once + at_timeout, names.len(), "every query answered");
    assert!(
        at_once >= excess,
        "{at_once} SERVFAIL at once (at least {excess}), {at_timeout} at the timeout"
    );
    assert!(at_timeout <= MAX_WAITERS, "{at_timeout} waited");
    assert_eq!(upstream.count(), names_count, "one upstream query per name");
}
