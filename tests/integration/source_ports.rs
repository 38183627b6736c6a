//! README "How a query is answered", upstream, upstream source ports (issue 11, item 6): the pool's sockets
//! are replaced after a bounded number of queries, so the upstream sees the
//! source ports change, and no answer is lost across the replacements.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use accel_dns::internals::upstream::pool::{POOL_SIZE, ROTATE_AFTER_QUERIES};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

use crate::common::*;

/// A UDP upstream that answers every query with its own bytes and QR set
/// (an empty NOERROR answer), and keeps each query's source port.
async fn echo_upstream() -> (SocketAddr, Arc<Mutex<Vec<u16>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let ports = Arc::new(Mutex::new(Vec::new()));
    let seen = ports.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let mut answer = buf[..len].to_vec();
            let probe = String::from_utf8_lossy(&answer).contains("accel-dns-loop-probe");
            if !probe {
                seen.lock().expect("lock").push(from.port());
            }
            answer[2] |= 0x80;
            let _ = socket.send_to(&answer, from).await;
        }
    });
    (addr, ports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_source_ports_change_after_the_bound_and_no_answer_is_lost() {
    let (upstream, ports) = echo_upstream().await;
    let server = TestServer::start(
        "[upstream]\nservers = [\"@UPSTREAM@\"]\ntimeout = \"5s\"\n",
        Some(upstream),
    )
    .await;
    // One more query than the pool's sockets carry before any is replaced.
    let total = POOL_SIZE * ROTATE_AFTER_QUERIES as usize + 64;
    let clients = 32;
    let answered = futures_util::future::join_all((0..clients).map(|client| {
        let dns = server.dns;
        async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            // Connected: only the server's datagrams reach it.
            socket.connect(dns).await.expect("connect");
            let mut buf = vec![0u8; 4096];
            let mut answered = 0;
            for index in (client..total).step_by(clients) {
                let query = query_message(&format!("n{index}.ports.test."), RecordType::A, None);
                socket
                    .send(&query.to_vec().expect("encode"))
                    .await
                    .expect("send");
                let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("query {index} answered"))
                    .expect("recv");
                let answer = Message::from_vec(&buf[..len]).expect("decodes");
                assert_eq!(answer.metadata.id, query.metadata.id);
                assert_eq!(
                    answer.metadata.response_code,
                    ResponseCode::NoError,
                    "query {index}"
                );
                answered += 1;
            }
            answered
        }
    }))
    .await;
    assert_eq!(
        answered.iter().sum::<usize>(),
        total,
        "every query answered"
    );
    let seen = ports.lock().expect("lock").clone();
    assert_eq!(seen.len(), total, "each query went upstream once");
    let distinct: HashSet<u16> = seen.iter().copied().collect();
    assert!(
        distinct.len() > POOL_SIZE,
        "{} source ports for {total} queries: the pool never rotated",
        distinct.len()
    );
}
