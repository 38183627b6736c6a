//! README "Command line", shutdown with TCP clients (issue 11, item 1): an open TCP
//! connection with no query in it is closed at once and does not hold the
//! exit; one with a query in flight gets its answer first; and whatever a
//! client does (half a query, never reading), the stop ends within the
//! drain. The real binary under SIGTERM is in `cli.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use accel_dns::app::{DRAIN_TIMEOUT, Server};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const RECORDS: &str = "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n";

/// What `stop` may take beyond the lame duck when no query is in flight:
/// the short grace for a query on its way, and scheduling. Today's code
/// took the whole drain (5 s) instead.
const GRACE: Duration = Duration::from_millis(1500);

fn framed(message: &Message) -> Vec<u8> {
    let bytes = message.to_vec().expect("encode");
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&bytes);
    out
}

async fn read_answer(stream: &mut TcpStream) -> Message {
    let bytes = tokio::time::timeout(DEADLINE, async {
        let len = stream.read_u16().await.expect("answer length");
        let mut buf = vec![0u8; len as usize];
        stream.read_exact(&mut buf).await.expect("answer");
        buf
    })
    .await
    .expect("answer in time");
    Message::from_vec(&bytes).expect("answer decodes")
}

/// A connection that asked once and got its answer, then stays open and quiet
/// (what `dig +keepopen`, kdig or a CoreDNS forwarder leave behind).
async fn quiet_connection(dns: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(dns).await.expect("connect");
    stream
        .write_all(&framed(&query_message("docker.io.", RecordType::A, None)))
        .await
        .expect("write");
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    stream
}

/// Runs `stop` and returns how long it took.
async fn timed_stop(server: Server) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(DEADLINE, server.stop())
        .await
        .expect("stop returns");
    started.elapsed()
}

/// Whether the server closed `stream` (EOF or reset), within `DEADLINE`.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(DEADLINE, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tcp_connection_does_not_hold_the_exit() {
    let mut server = TestServer::start(RECORDS, None).await;
    let mut idle = quiet_connection(server.dns).await;
    let mut fresh = TcpStream::connect(server.dns).await.expect("connect");
    let running = server.server.take().expect("running");
    let lame_duck = running.lame_duck;
    let took = timed_stop(running).await;
    assert!(
        took < lame_duck + GRACE,
        "stop took {took:?} with idle TCP clients (lame duck {lame_duck:?})"
    );
    assert!(
        closed_by_server(&mut idle).await,
        "the quiet connection is closed"
    );
    assert!(
        closed_by_server(&mut fresh).await,
        "the silent connection is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_tcp_query_does_not_hold_the_exit() {
    let mut server = TestServer::start(RECORDS, None).await;
    let mut slow = quiet_connection(server.dns).await;
    // Slowloris: a length prefix and a few bytes of the query, then nothing.
    let query = framed(&query_message("docker.io.", RecordType::A, None));
    slow.write_all(&query[..5]).await.expect("write");
    let mut running = server.server.take().expect("running");
    running.lame_duck = Duration::from_millis(200);
    let lame_duck = running.lame_duck;
    let took = timed_stop(running).await;
    assert!(
        took < lame_duck + GRACE,
        "stop took {took:?} with half a query pending"
    );
    assert!(
        closed_by_server(&mut slow).await,
        "the slow connection is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_query_in_flight_at_stop_is_answered_before_the_close() {
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(|query, tcp| {
        Reply::Delay(
            Duration::from_millis(1200),
            Box::new(default_reply(query, tcp)),
        )
    });
    let mut server = TestServer::start(
        "[upstream]\nservers = [\"@UPSTREAM@\"]\ntimeout = \"4s\"\n",
        Some(upstream.addr),
    )
    .await;
    let mut stream = TcpStream::connect(server.dns).await.expect("connect");
    stream
        .write_all(&framed(&query_message(
            "slow.example.test.",
            RecordType::A,
            None,
        )))
        .await
        .expect("write");
    wait_until("the query is upstream", || async { upstream.count() >= 1 }).await;
    let mut running = server.server.take().expect("running");
    running.lame_duck = Duration::ZERO;
    let stopping = tokio::spawn(timed_stop(running));
    let answer = read_answer(&mut stream).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&answer).len(), 1, "the upstream's address");
    assert!(
        closed_by_server(&mut stream).await,
        "closed after the answer"
    );
    let took = stopping.await.expect("stop task");
    assert!(took < DRAIN_TIMEOUT, "stop took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_client_that_never_reads_is_cut_off_at_the_end_of_the_drain() {
    let mut server = TestServer::start(RECORDS, None).await;
    let mut greedy = TcpStream::connect(server.dns).await.expect("connect");
    // Far more answers than the socket buffers hold, none of them read.
    let query = framed(&query_message("docker.io.", RecordType::A, None));
    let burst: Vec<u8> = query
        .iter()
        .copied()
        .cycle()
        .take(query.len() * 200_000)
        .collect();
    let writing = tokio::spawn(async move {
        let _ = greedy.write_all(&burst).await;
        greedy
    });
    let mut running = server.server.take().expect("running");
    running.lame_duck = Duration::ZERO;
    let took = timed_stop(running).await;
    assert!(
        took < DRAIN_TIMEOUT + Duration::from_secs(1),
        "stop took {took:?} with a client that never reads"
    );
    let mut greedy = tokio::time::timeout(DEADLINE, writing)
        .await
        .expect("the writer ends once the server closes")
        .expect("writer task");
    // Drain what the kernel still holds; the stream must end.
    let mut sink = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match greedy.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(ended, Ok(true), "the connection is closed by the server");
}
