//! A pool of UDP sockets towards one upstream (README "How a query is answered", upstream): 16 sockets, each
//! bound to a kernel-chosen random port and connected to the upstream (so
//! the kernel drops datagrams from any other address or port), shared by
//! every query to that upstream. A query takes a socket at random and a
//! random ID not in use on it; one reader task per socket hands each answer
//! to the query whose ID *and* question it matches, and ignores the rest.
//! This costs one `send` and a share of a `recv` per query, where a fresh
//! socket per query costs four more system calls.
//!
//! The ports rotate: a socket that has carried [`ROTATE_AFTER_QUERIES`]
//! queries or is [`ROTATE_AFTER`] old is replaced by a fresh one (on a new
//! random port) before the next query goes out on its slot. A port learned
//! by an off-path attacker (a side-channel scan of the port range takes
//! longer than that) is worth a few hundred queries at most, not the life
//! of the configuration. The old socket is not closed under the queries
//! still waiting on it: each query holds its socket, and the socket and its
//! reader end when the last of them is answered or times out.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::wire::{encode_upstream_query, is_answer_to};

/// Sockets per upstream.
pub const POOL_SIZE: usize = 16;
/// Largest answer read.
pub(crate) const RECEIVE_BUFFER: usize = 4096;
/// Queries one socket carries before it is replaced: opening a socket
/// (socket, bind, connect, a reader task) costs a few microseconds, a hundredth
/// of a microsecond per query at this bound.
pub const ROTATE_AFTER_QUERIES: u32 = 256;
/// Age at which a socket is replaced at its next use, however few queries it
/// carried: well under the time a side-channel scan of the port range takes.
pub(crate) const ROTATE_AFTER: Duration = Duration::from_secs(10);

/// Why an exchange over the pool failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// No matching answer before the deadline.
    #[error("timed out")]
    Timeout,
    /// The upstream port is closed (ICMP port unreachable) or the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Every ID of the chosen socket is in use.
    #[error("no free query ID")]
    Busy,
}

/// What a reader hands a waiting query: the answer's bytes.
type Delivery = Result<Vec<u8>, io::ErrorKind>;
/// Queries in flight on one socket, by ID.
type Waiters = Mutex<HashMap<u16, Waiter>>;

/// One query in flight: the question in wire form, who waits, and a ticket
/// that tells this query from a later one that reuses its ID.
struct Waiter {
    question: Box<[u8]>,
    tx: oneshot::Sender<Delivery>,
    ticket: u64,
}

/// Tickets of [`Waiter`]s, unique in the process.
static NEXT_TICKET: AtomicU64 = AtomicU64::new(0);

struct PooledSocket {
    socket: Arc<UdpSocket>,
    waiters: Arc<Waiters>,
    reader: tokio::task::JoinHandle<()>,
    opened: Instant,
    /// Queries sent on it so far (the one taking it included).
    queries: AtomicU32,
}

impl Drop for PooledSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The sockets towards one upstream, opened on first use.
pub(crate) struct UdpPool {
    upstream: SocketAddr,
    /// One slot per socket; a rotation swaps in a fresh socket.
    sockets: OnceLock<Vec<ArcSwap<PooledSocket>>>,
    rotate_after_queries: u32,
    rotate_after: Duration,
}

impl std::fmt::Debug for UdpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpPool")
            .field("upstream", &self.upstream)
            .finish()
    }
}

impl UdpPool {
    /// A pool towards `upstream`; no socket is opened yet.
    pub(crate) fn new(upstream: SocketAddr) -> Self {
        Self::with_rotation(upstream, ROTATE_AFTER_QUERIES, ROTATE_AFTER)
    }

    /// A pool whose sockets are replaced after `queries` queries or at `age`.
    fn with_rotation(upstream: SocketAddr, queries: u32, age: Duration) -> Self {
        Self {
            upstream,
            sockets: OnceLock::new(),
            rotate_after_queries: queries,
            rotate_after: age,
        }
    }

    fn sockets(&self) -> Result<&[ArcSwap<PooledSocket>], io::Error> {
        if let Some(sockets) = self.sockets.get() {
            return Ok(sockets);
        }
        // A failure is not kept: a node resolver may start before the route
        // to its upstream exists, and the next query must try again rather
        // than fail until a reload.
        let opened = (0..POOL_SIZE)
            .map(|_| open(self.upstream).map(ArcSwap::from_pointee))
            .collect::<Result<Vec<_>, _>>()?;
        // Two first queries may race here; the loser's sockets are dropped.
        Ok(self.sockets.get_or_init(|| opened))
    }

    /// The socket of `slot` for one more query, replaced first if it has
    /// served its time. Queries still waiting on the old one keep it alive.
    fn take(&self, slot: &ArcSwap<PooledSocket>) -> Arc<PooledSocket> {
        let current = slot.load_full();
        let used = current.queries.fetch_add(1, Ordering::Relaxed);
        if used < self.rotate_after_queries && current.opened.elapsed() < self.rotate_after {
            return current;
        }
        let fresh = match open(self.upstream) {
            Ok(fresh) => Arc::new(fresh),
            Err(error) => {
                // Out of descriptors and the like: the old port still works.
                tracing::debug!(upstream = %self.upstream, %error, "cannot open a fresh upstream socket; keeping the old one");
                return current;
            }
        };
        fresh.queries.store(1, Ordering::Relaxed);
        let previous = slot.compare_and_swap(&current, fresh.clone());
        if Arc::ptr_eq(&previous, &current) {
            fresh
        } else {
            // Another query rotated this slot first: use its socket, drop ours.
            let theirs = slot.load_full();
            theirs.queries.fetch_add(1, Ordering::Relaxed);
            theirs
        }
    }

    /// Sends a query for `question` (`QNAME QTYPE QCLASS`, wire form) and
    /// waits until `deadline` for the answer with its ID and question;
    /// returns the answer's bytes.
    pub(crate) async fn exchange(
        &self,
        question: &[u8],
        dnssec_ok: bool,
        deadline: Instant,
    ) -> Result<Vec<u8>, PoolError> {
        let sockets = self.sockets()?;
        let pooled = self.take(&sockets[rand::random_range(0..sockets.len())]);
        let (tx, rx) = oneshot::channel();
        let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
        let id = {
            let mut waiters = pooled.waiters.lock().unwrap_or_else(|e| e.into_inner());
            let mut id = rand::random::<u16>();
            let mut tries = 0;
            while waiters.contains_key(&id) {
                tries += 1;
                if tries > 64 {
                    return Err(PoolError::Busy);
                }
                id = rand::random();
            }
            let question = question.into();
            waiters.insert(
                id,
                Waiter {
                    question,
                    tx,
                    ticket,
                },
            );
            id
        };
        let _forget = ForgetOnDrop {
            waiters: &pooled.waiters,
            id,
            ticket,
        };
        pooled
            .socket
            .send(&encode_upstream_query(id, question, dnssec_ok))
            .await?;
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(kind))) => Err(PoolError::Io(kind.into())),
            Ok(Err(_)) => Err(PoolError::Io(io::ErrorKind::BrokenPipe.into())),
            Err(_) => Err(PoolError::Timeout),
        }
    }
}

/// Removes a waiter whose query ended (answered, timed out, or cancelled),
/// if it is still there: once the reader has handed over the answer (and
/// removed the waiter), a new query may take the same ID at once, and
/// removing *that* waiter dropped its sender, so the new query failed with
/// "broken pipe" and its client got SERVFAIL (about 3 in a million queries
/// in bench/soak.sh at 18 000 misses a second). The ticket tells them apart.
struct ForgetOnDrop<'a> {
    waiters: &'a Waiters,
    id: u16,
    ticket: u64,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters
            .get(&self.id)
            .is_some_and(|w| w.ticket == self.ticket)
        {
            waiters.remove(&self.id);
        }
    }
}

/// A non-blocking UDP socket on a kernel-chosen random port, connected to
/// `upstream`: the kernel drops datagrams from any other address or port.
pub(crate) fn connected_socket(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let std_socket = std::net::UdpSocket::bind(local)?;
    std_socket.connect(upstream)?;
    std_socket.set_nonblocking(true)?;
    UdpSocket::from_std(std_socket)
}

fn open(upstream: SocketAddr) -> io::Result<PooledSocket> {
    let socket = Arc::new(connected_socket(upstream)?);
    let waiters: Arc<Waiters> = Arc::new(Mutex::new(HashMap::new()));
    let reader = tokio::spawn(read_answers(socket.clone(), waiters.clone()));
    Ok(PooledSocket {
        socket,
        waiters,
        reader,
        opened: Instant::now(),
        queries: AtomicU32::new(0),
    })
}

/// Hands every answer to the waiter with its ID if the question matches too.
async fn read_answers(socket: Arc<UdpSocket>, waiters: Arc<Waiters>) {
    // One byte more than an answer may have, to tell a datagram that was cut.
    let mut buffer = vec![0u8; RECEIVE_BUFFER + 1];
    loop {
        let len = match socket.recv(&mut buffer).await {
            Ok(len) => len,
            Err(error) => {
                // A connected UDP socket reports ICMP port unreachable here: every
                // query in flight on it is going to a closed port.
                let mut waiting = waiters.lock().unwrap_or_else(|e| e.into_inner());
                for (_, waiter) in waiting.drain() {
                    let _ = waiter.tx.send(Err(error.kind()));
                }
                continue;
            }
        };
        if len > RECEIVE_BUFFER {
            // An upstream that ignores the EDNS size we announce sent more than
            // we read: the cut answer is marked truncated (TC), so the query is
            // retried over TCP (README "How a query is answered", upstream) instead of failing as malformed
            // (found by the hostile_upstreams tests).
            buffer[2] |= 0x02;
        }
        let answer = &buffer[..len.min(RECEIVE_BUFFER)];
        let Some(id) = answer.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            continue;
        };
        let waiter = {
            let mut waiting = waiters.lock().unwrap_or_else(|e| e.into_inner());
            let matches = waiting
                .get(&id)
                .is_some_and(|waiter| is_answer_to(answer, id, &waiter.question));
            if matches { waiting.remove(&id) } else { None }
        };
        match waiter {
            Some(waiter) => {
                let _ = waiter.tx.send(Ok(answer.to_vec()));
            }
            None => {
                tracing::debug!("ignored an upstream answer whose ID or question does not match")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn waiter(ticket: u64) -> (Waiter, oneshot::Receiver<Delivery>) {
        let (tx, rx) = oneshot::channel();
        let question = Box::from(&b"\x01a\x00\x00\x01\x00\x01"[..]);
        (
            Waiter {
                question,
                tx,
                ticket,
            },
            rx,
        )
    }

    /// Found by bench/soak.sh: query A is answered (the reader removes its
    /// waiter), query B takes the same ID before A's guard runs, and A's
    /// guard removed B's waiter: B failed with "broken pipe".
    #[test]
    fn a_finished_query_never_forgets_the_next_query_with_its_id() {
        let waiters: Waiters = Mutex::new(HashMap::new());
        let (a, _a_rx) = waiter(1);
        waiters.lock().expect("lock").insert(7, a);
        let guard_a = ForgetOnDrop {
            waiters: &waiters,
            id: 7,
            ticket: 1,
        };
        // The reader hands A its answer...
        let taken = waiters.lock().expect("lock").remove(&7);
        assert!(taken.is_some());
        // ...and B takes ID 7 before A's guard is dropped.
        let (b, mut b_rx) = waiter(2);
        waiters.lock().expect("lock").insert(7, b);
        drop(guard_a);
        let still = waiters.lock().expect("lock").get(&7).map(|w| w.ticket);
        assert_eq!(still, Some(2), "B's waiter survives A's guard");
        assert!(
            matches!(b_rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)),
            "B is still waiting, not failed"
        );
    }

    /// A local upstream that answers every query (its own bytes with QR
    /// set) after `delay`, and keeps the source port of each.
    async fn echo_upstream(delay: Duration) -> (SocketAddr, Arc<Mutex<Vec<u16>>>) {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let addr = socket.local_addr().expect("addr");
        let ports = Arc::new(Mutex::new(Vec::new()));
        let seen = ports.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                seen.lock().expect("lock").push(from.port());
                let mut answer = buf[..len].to_vec();
                answer[2] |= 0x80;
                let socket = socket.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&answer, from).await;
                });
            }
        });
        (addr, ports)
    }

    fn question(index: usize) -> Vec<u8> {
        let label = format!("q{index}");
        let mut out = vec![label.len() as u8];
        out.extend_from_slice(label.as_bytes());
        out.extend_from_slice(&[0, 0, 1, 0, 1]);
        out
    }

    async fn ask(pool: &UdpPool, index: usize) -> Result<Vec<u8>, PoolError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        pool.exchange(&question(index), false, deadline).await
    }

    fn distinct(ports: &Mutex<Vec<u16>>) -> usize {
        let mut ports = ports.lock().expect("lock").clone();
        ports.sort_unstable();
        ports.dedup();
        ports.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sockets_are_replaced_after_their_query_bound_and_no_answer_is_lost() {
        let (upstream, ports) = echo_upstream(Duration::from_millis(20)).await;
        let pool = UdpPool::with_rotation(upstream, 4, Duration::from_secs(3600));
        for index in 0..100 {
            let answer = ask(&pool, index).await.expect("answered in sequence");
            assert_eq!(
                &answer[12..12 + question(index).len()],
                &question(index)[..]
            );
        }
        // In parallel: sockets are retired while queries still wait on them.
        // At most 64 at a time: 300 datagrams sent at once overflow the echo
        // upstream's receive buffer when the machine is loaded, and a query
        // the kernel dropped is not what this test is about.
        let answers: Vec<_> = futures_util::stream::iter((100..400).map(|i| ask(&pool, i)))
            .buffer_unordered(64)
            .collect()
            .await;
        let lost = answers.iter().filter(|a| a.is_err()).count();
        assert_eq!(lost, 0, "every query answered across the rotations");
        let used = distinct(&ports);
        assert!(
            used >= 400 / 4 - POOL_SIZE,
            "{used} source ports for 400 queries at 4 per socket"
        );
    }

    #[tokio::test]
    async fn a_socket_past_its_age_is_replaced_before_its_next_query() {
        let (upstream, ports) = echo_upstream(Duration::ZERO).await;
        let pool = UdpPool::with_rotation(upstream, u32::MAX, Duration::ZERO);
        for index in 0..20 {
            ask(&pool, index).await.expect("answered");
        }
        let used = distinct(&ports);
        assert!(used >= 18, "{used} source ports for 20 queries at age 0");
    }

    #[tokio::test]
    async fn a_retired_socket_and_its_reader_end_with_its_last_query() {
        let (upstream, _ports) = echo_upstream(Duration::from_millis(50)).await;
        let pool = UdpPool::with_rotation(upstream, 1, Duration::from_secs(3600));
        ask(&pool, 0).await.expect("answered");
        let slots = pool.sockets().expect("open");
        let first: Vec<std::sync::Weak<UdpSocket>> = slots
            .iter()
            .map(|slot| Arc::downgrade(&slot.load().socket))
            .collect();
        // Queries wait on sockets that the next query on their slot replaces.
        let waiting = futures_util::future::join_all((1..=4 * POOL_SIZE).map(|i| ask(&pool, i)));
        assert!(waiting.await.iter().all(Result::is_ok), "answered");
        let retired: Vec<_> = first
            .into_iter()
            .zip(slots)
            .filter(|(weak, slot)| !std::ptr::eq(weak.as_ptr(), Arc::as_ptr(&slot.load().socket)))
            .map(|(weak, _)| weak)
            .collect();
        assert!(!retired.is_empty(), "some slot was rotated");
        let deadline = Instant::now() + Duration::from_secs(5);
        while retired.iter().any(|weak| weak.strong_count() > 0) {
            assert!(Instant::now() < deadline, "retired sockets still open");
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn a_cancelled_query_forgets_its_own_waiter() {
        let waiters: Waiters = Mutex::new(HashMap::new());
        let (a, _a_rx) = waiter(5);
        waiters.lock().expect("lock").insert(9, a);
        drop(ForgetOnDrop {
            waiters: &waiters,
            id: 9,
            ticket: 5,
        });
        assert!(waiters.lock().expect("lock").is_empty());
    }
}
