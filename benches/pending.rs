//! The UDP worker's pending table (`upstream::pending`): what one cache
//! miss costs the table itself, with a loopback responder in a thread of
//! its own answering every query at once, and what the 5 ms deadline
//! sweep costs with many queries in flight and none due.
//!
//! `cargo bench --bench pending`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use accel_dns::config::CacheConfig;
use accel_dns::internals::cache::{AnswerCache, CacheKey};
use accel_dns::internals::metrics::Metrics;
use accel_dns::internals::upstream::UpstreamPool;
use accel_dns::internals::upstream::pending::{Completed, PendingTable};
use accel_dns::internals::wire;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::sync::{Semaphore, mpsc};

/// Queries started together in one round.
const ROUND: usize = 64;

/// A loopback responder: answers each query with itself, QR set (a valid
/// empty NOERROR answer to its question), until `stop`.
fn responder(stop: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let addr = socket.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let Ok((len, from)) = socket.recv_from(&mut buffer) else {
                continue;
            };
            if len < 12 {
                continue;
            }
            buffer[2] |= 0x80;
            buffer[3] |= 0x80;
            let _ = socket.send_to(&buffer[..len], from);
        }
    });
    addr
}

/// A socket that takes queries and never answers.
fn black_hole() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

fn pool(upstream: SocketAddr, timeout: Duration) -> Arc<UpstreamPool> {
    Arc::new(UpstreamPool::new(
        &[upstream],
        timeout,
        Arc::new(Semaphore::new(4096)),
        &Metrics::new(),
    ))
}

/// `count` distinct questions with their cache keys.
fn questions(count: usize) -> Vec<(CacheKey, wire::QuestionBytes)> {
    let cache = AnswerCache::new(CacheConfig {
        max_entries: 16,
        min_ttl: Duration::ZERO,
        max_ttl: Duration::from_secs(60),
        negative_max_ttl: Duration::from_secs(60),
        serve_stale: Duration::ZERO,
    });
    (0..count)
        .map(|n| {
            let name = Name::from_ascii(format!("n{n}.bench.test.")).expect("name");
            let key = cache.key(&name, RecordType::A, DNSClass::IN, false);
            (
                key,
                wire::QuestionBytes::new(&wire::question_bytes(&name, RecordType::A, DNSClass::IN))
                    .expect("a short question"),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let (retried, _retried_rx) = mpsc::unbounded_channel();
    let mut done: Vec<Completed<u32>> = Vec::with_capacity(4096);

    let stop = Arc::new(AtomicBool::new(false));
    let answering = pool(responder(stop.clone()), Duration::from_secs(2));
    let round = questions(ROUND);
    let mut table: PendingTable<u32> = PendingTable::new(retried.clone());
    c.bench_function("pending/64 misses started and answered (loopback)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for (n, (key, question)) in round.iter().enumerate() {
                    let started =
                        table.start(&answering, *key, question, false, n as u32, &mut done);
                    assert!(started.is_ok(), "the query was placed");
                }
                let deadline = Instant::now() + Duration::from_secs(2);
                while done.len() < ROUND && Instant::now() < deadline {
                    tokio::select! {
                        () = table.readable() => table.read_answers(&mut done),
                        () = tokio::time::sleep(Duration::from_millis(5)) => {
                            table.sweep(Instant::now(), &mut done)
                        }
                    }
                }
                assert_eq!(done.len(), ROUND, "every query was answered");
                black_box(done.drain(..).count())
            })
        })
    });

    let (_hole, hole_addr) = black_hole();
    let silent = pool(hole_addr, Duration::from_secs(3600));
    let many = questions(1024);
    c.bench_function("pending/sweep, 1024 in flight, none due", |b| {
        b.iter_batched_ref(
            || {
                let mut table: PendingTable<u32> = PendingTable::new(retried.clone());
                let mut failed = Vec::new();
                for (n, (key, question)) in many.iter().enumerate() {
                    let started =
                        table.start(&silent, *key, question, false, n as u32, &mut failed);
                    assert!(started.is_ok() && failed.is_empty(), "the query was placed");
                }
                table
            },
            |table| {
                table.sweep(Instant::now(), &mut done);
                assert!(done.is_empty(), "nothing was due");
                black_box(table.is_empty())
            },
            BatchSize::LargeInput,
        )
    });
    stop.store(true, Ordering::Relaxed);
}

criterion_group!(benches, bench);
criterion_main!(benches);
