//! The pending table of one UDP worker (README "How a query is answered",
//! upstream): the upstream queries this worker has in flight, its own
//! random-port sockets towards each upstream, and its own single-flight map.
//!
//! Nothing here is shared with another worker and nothing is spawned per
//! query: a query in flight is one slab entry, found again by the socket it
//! went out on and its ID. The worker's loop waits on every socket of the
//! table at once ([`PendingTable::readable`]), reads what arrived
//! ([`PendingTable::read_answers`]), and every few milliseconds moves the
//! queries past their deadline on to the next server
//! ([`PendingTable::sweep`]). Only a truncated answer leaves the loop: its
//! TCP retry runs in a task, which hands the result back through a channel.
//!
//! The rules are those of the async path ([`super::UpstreamPool::resolve`]):
//! the same server order, budget shares and failover ([`super::Failover`]);
//! the sockets follow [`super::pool`]'s: [`POOL_SIZE`] per upstream, random
//! IDs, answers matched by socket (connected, so the kernel checks the
//! source), ID and question, and rotated after [`ROTATE_AFTER_QUERIES`]
//! queries or [`ROTATE_AFTER`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use slab::Slab;
use socket2::SockRef;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::pool::{
    POOL_SIZE, RECEIVE_BUFFER, ROTATE_AFTER, ROTATE_AFTER_QUERIES, connected_socket,
};
use super::{ExchangeError, Failover, UpstreamError, UpstreamPool, UpstreamServer, share_of};
use crate::cache::CacheKey;
use crate::wire::{
    MAX_QUESTION, QuestionBytes, WireAnswer, encode_upstream_query_into, is_answer_to,
};

/// How often the deadlines of the queries in flight are looked at: a query
/// moves on to the next server at most this late.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(5);

/// An upstream query that is over: its answer (or why there is none) and
/// the clients that waited on it.
#[derive(Debug)]
pub struct Completed<W> {
    /// Which flight it was.
    pub id: FlightId,
    /// The cache key it was asked under.
    pub key: CacheKey,
    /// The DO bit it was asked with.
    pub dnssec_ok: bool,
    /// The answer, or why there is none.
    pub result: Result<WireAnswer, UpstreamError>,
    /// Every client that waited on it, the first included.
    pub waiters: Vec<W>,
}

/// A flight's place in its table: slab slot and ticket (slots are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightId {
    index: usize,
    ticket: u64,
}

/// A TCP retry of a truncated answer, finished in its task.
#[derive(Debug)]
pub struct TcpRetried {
    flight: usize,
    ticket: u64,
    position: usize,
    result: Result<Vec<u8>, ExchangeError>,
    truncated: Vec<u8>,
}

/// Where the current attempt of a query in flight stands.
#[derive(Debug)]
enum Attempt {
    /// Sent on `socket` (a key of [`PendingTable::sockets`]) with `id`.
    Udp { socket: usize, id: u16 },
    /// Truncated over UDP; the TCP retry runs in a task.
    Tcp,
}

/// One upstream query in flight and the clients waiting on it.
#[derive(Debug)]
struct Flight<W> {
    key: CacheKey,
    /// `QNAME QTYPE QCLASS`, as the first client asked it.
    question: QuestionBytes,
    dnssec_ok: bool,
    waiters: Vec<W>,
    /// The servers to try, in order, and the position of the current one.
    order: Vec<Arc<UpstreamServer>>,
    position: usize,
    failover: Failover,
    /// The end of the whole budget, and of the current attempt's share.
    deadline: Instant,
    attempt_until: Instant,
    attempt_started: Instant,
    attempt: Attempt,
    /// Tells this flight from a later one in the same slab slot.
    ticket: u64,
    _permit: OwnedSemaphorePermit,
}

/// One of the worker's sockets towards an upstream.
#[derive(Debug)]
struct PooledSocket {
    socket: UdpSocket,
    /// Queries waiting on it: ID → flight.
    waiting: HashMap<u16, usize>,
    queries: u32,
    opened: Instant,
    /// Replaced by a fresh socket; closed once nothing waits on it.
    retired: bool,
}

/// The upstream queries one UDP worker has in flight.
#[derive(Debug)]
pub struct PendingTable<W> {
    flights: Slab<Flight<W>>,
    sockets: Slab<PooledSocket>,
    /// Each upstream's sockets in use (keys of `sockets`). A pool has a
    /// few upstreams: scanning them costs less than hashing the address.
    active: Vec<(SocketAddr, Vec<usize>)>,
    next_ticket: u64,
    retried: mpsc::UnboundedSender<TcpRetried>,
    /// The answer being read.
    buffer: Box<[u8]>,
    /// The query being sent (reused).
    outgoing: Vec<u8>,
}

impl<W> PendingTable<W> {
    /// An empty table; TCP retries report to `retried`.
    pub fn new(retried: mpsc::UnboundedSender<TcpRetried>) -> Self {
        Self {
            flights: Slab::new(),
            sockets: Slab::new(),
            active: Vec::new(),
            next_ticket: 0,
            retried,
            // One byte more than an answer may have, to tell a datagram that was cut.
            buffer: vec![0u8; RECEIVE_BUFFER + 1].into_boxed_slice(),
            outgoing: Vec::with_capacity(12 + MAX_QUESTION + 11),
        }
    }

    /// Whether no query is in flight.
    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }

    /// Sends a new query for `question` (`QNAME QTYPE QCLASS`, wire form)
    /// with `waiter` as its first client; returns its place in the table, or
    /// the waiter and the reason when the in-flight bound is reached or no
    /// upstream can be tried. When every server fails to take the query at
    /// once, its [`Completed`] is pushed to `done` before this returns.
    pub fn start(
        &mut self,
        pool: &Arc<UpstreamPool>,
        key: CacheKey,
        question: &QuestionBytes,
        dnssec_ok: bool,
        waiter: W,
        done: &mut Vec<Completed<W>>,
    ) -> Result<FlightId, (W, UpstreamError)> {
        let Ok(permit) = pool.permits.clone().try_acquire_owned() else {
            return Err((waiter, UpstreamError::Overloaded));
        };
        let order = match pool.order() {
            Ok(order) => order,
            Err(error) => return Err((waiter, error)),
        };
        let now = Instant::now();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let index = self.flights.insert(Flight {
            key,
            question: *question,
            dnssec_ok,
            waiters: vec![waiter],
            order,
            position: 0,
            failover: Failover::new(),
            deadline: now + pool.timeout,
            attempt_until: now,
            attempt_started: now,
            attempt: Attempt::Tcp,
            ticket,
            _permit: permit,
        });
        let id = FlightId { index, ticket };
        self.start_attempt(index, now, done);
        Ok(id)
    }

    /// Adds `waiter` to the flight `id` if it is still in flight; gives it
    /// back if not.
    pub(crate) fn join(&mut self, id: FlightId, waiter: W) -> Result<(), W> {
        match self.flights.get_mut(id.index) {
            Some(flight) if flight.ticket == id.ticket => {
                flight.waiters.push(waiter);
                Ok(())
            }
            _ => Err(waiter),
        }
    }

    /// Waits until a socket of the table has something to read (or an
    /// error to report); pending for ever when the table has no socket.
    pub async fn readable(&self) {
        poll_fn(|cx| {
            for (_, pooled) in &self.sockets {
                if pooled.socket.poll_recv_ready(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Reads every answer the sockets hold and settles the queries they
    /// answer; queries whose socket reports an error (ICMP port
    /// unreachable: the upstream port is closed) move on to the next server.
    pub fn read_answers(&mut self, done: &mut Vec<Completed<W>>) {
        let now = Instant::now();
        for socket in 0..self.sockets.capacity() {
            while let Some(pooled) = self.sockets.get(socket) {
                let len = match pooled.socket.try_recv(&mut self.buffer) {
                    Ok(len) => len,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        self.socket_failed(socket, error, now, done);
                        continue;
                    }
                };
                if len > RECEIVE_BUFFER {
                    // An upstream that ignores the EDNS size we announce sent more
                    // than we read: the cut answer is marked truncated (TC), so the
                    // query is retried over TCP instead of failing as malformed
                    // (found by the hostile_upstreams tests).
                    self.buffer[2] |= 0x02;
                }
                let len = len.min(RECEIVE_BUFFER);
                self.answer_arrived(socket, len, now, done);
            }
            self.close_if_retired(socket);
        }
    }

    /// Moves every query whose attempt is past its share of the budget on to
    /// the next server (a timeout counts as that server failing), and closes
    /// the sockets of upstreams no snapshot uses any more once idle.
    pub fn sweep(&mut self, now: Instant, done: &mut Vec<Completed<W>>) {
        let late: Vec<usize> = self
            .flights
            .iter()
            .filter(|(_, flight)| flight.attempt_until <= now)
            .map(|(index, _)| index)
            .collect();
        for index in late {
            self.attempt_failed(index, Err(ExchangeError::Timeout), now, done);
        }
        // ICMP port unreachable (the upstream port is closed) leaves an error
        // on the socket that wakes no reader (epoll reports it as EPOLLERR
        // alone, which tokio's read readiness does not include): it is
        // collected here, so the queries on it move on within one sweep
        // instead of at their timeout.
        for socket in 0..self.sockets.capacity() {
            let error = match self.sockets.get(socket) {
                Some(pooled) if !pooled.waiting.is_empty() => pooled.socket.take_error(),
                _ => continue,
            };
            if let Ok(Some(error)) = error {
                self.socket_failed(socket, error, now, done);
            }
        }
    }

    /// Closes the idle sockets towards upstreams that are not in `pool`
    /// (removed by a reload).
    pub(crate) fn forget_upstreams_not_in(&mut self, pool: &UpstreamPool) {
        let mut gone = Vec::new();
        self.active.retain(|(addr, keys)| {
            let kept = pool.servers.iter().any(|server| server.addr == *addr);
            if !kept {
                gone.extend_from_slice(keys);
            }
            kept
        });
        for socket in gone {
            if let Some(pooled) = self.sockets.get_mut(socket) {
                pooled.retired = true;
            }
            self.close_if_retired(socket);
        }
    }

    /// Settles a TCP retry reported by its task.
    pub(crate) fn tcp_retried(&mut self, retried: TcpRetried, done: &mut Vec<Completed<W>>) {
        let TcpRetried {
            flight,
            ticket,
            position,
            result,
            truncated,
        } = retried;
        let current = self.flights.get(flight).is_some_and(|f| {
            f.ticket == ticket && f.position == position && matches!(f.attempt, Attempt::Tcp)
        });
        if !current {
            // Its deadline passed first: the query moved on without it.
            return;
        }
        let bytes = match result {
            Ok(full) => full,
            Err(error) => {
                tracing::debug!(%error, "TCP retry of a truncated answer failed; relaying the truncated one");
                truncated
            }
        };
        self.attempt_done(flight, super::accept_answer(bytes), Instant::now(), done);
    }

    /// A datagram of `len` bytes (in `self.buffer`) arrived on `socket`.
    fn answer_arrived(
        &mut self,
        socket: usize,
        len: usize,
        now: Instant,
        done: &mut Vec<Completed<W>>,
    ) {
        let answer = &self.buffer[..len];
        let Some(id) = answer.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            return;
        };
        let Some(pooled) = self.sockets.get_mut(socket) else {
            return;
        };
        let flight = pooled.waiting.get(&id).copied().filter(|&index| {
            self.flights
                .get(index)
                .is_some_and(|flight| is_answer_to(answer, id, &flight.question))
        });
        let Some(index) = flight else {
            tracing::debug!("ignored an upstream answer whose ID or question does not match");
            return;
        };
        pooled.waiting.remove(&id);
        let truncated = answer.get(2).is_some_and(|flags| flags & 0x02 != 0);
        if truncated {
            self.retry_over_tcp(index, len);
            return;
        }
        let bytes = answer.to_vec();
        self.attempt_done(index, super::accept_answer(bytes), now, done);
    }

    /// Starts the TCP retry of a truncated answer (in `self.buffer`).
    fn retry_over_tcp(&mut self, index: usize, len: usize) {
        let Some(flight) = self.flights.get_mut(index) else {
            return;
        };
        flight.attempt = Attempt::Tcp;
        let Some(server) = flight.order.get(flight.position).cloned() else {
            return;
        };
        let question = flight.question;
        let dnssec_ok = flight.dnssec_ok;
        let deadline = flight.attempt_until;
        let ticket = flight.ticket;
        let position = flight.position;
        let truncated = self.buffer[..len].to_vec();
        let report = self.retried.clone();
        tokio::spawn(async move {
            let result = server.exchange_tcp(&question, dnssec_ok, deadline).await;
            let _ = report.send(TcpRetried {
                flight: index,
                ticket,
                position,
                result,
                truncated,
            });
        });
    }

    /// Every query waiting on `socket` failed with `error`.
    fn socket_failed(
        &mut self,
        socket: usize,
        error: io::Error,
        now: Instant,
        done: &mut Vec<Completed<W>>,
    ) {
        let Some(pooled) = self.sockets.get_mut(socket) else {
            return;
        };
        let failed: Vec<usize> = pooled.waiting.drain().map(|(_, index)| index).collect();
        for index in failed {
            let error = ExchangeError::Io(io::Error::from(error.kind()));
            self.attempt_failed(index, Err(error), now, done);
        }
    }

    /// The current attempt of flight `index` failed (its socket entry, if
    /// any, is released here).
    fn attempt_failed(
        &mut self,
        index: usize,
        result: Result<WireAnswer, ExchangeError>,
        now: Instant,
        done: &mut Vec<Completed<W>>,
    ) {
        self.release_socket_entry(index);
        self.attempt_done(index, result, now, done);
    }

    /// Takes the outcome of flight `index`'s current attempt: done, or on to
    /// the next server.
    fn attempt_done(
        &mut self,
        index: usize,
        result: Result<WireAnswer, ExchangeError>,
        now: Instant,
        done: &mut Vec<Completed<W>>,
    ) {
        let Some(flight) = self.flights.get_mut(index) else {
            return;
        };
        let Some(server) = flight.order.get(flight.position).cloned() else {
            return;
        };
        if result.is_ok() {
            server
                .duration
                .observe(flight.attempt_started.elapsed().as_secs_f64());
        }
        if let Some(answer) = flight.failover.attempted(&server, result) {
            self.complete(index, Ok(answer), done);
            return;
        }
        flight.position += 1;
        self.start_attempt(index, now, done);
    }

    /// Sends flight `index`'s query to the server at its position, or
    /// completes it when no server or no time is left.
    fn start_attempt(&mut self, index: usize, now: Instant, done: &mut Vec<Completed<W>>) {
        loop {
            let Some(flight) = self.flights.get_mut(index) else {
                return;
            };
            let count = flight.order.len();
            // A server found failing since the order was made (by another
            // query) goes after those still working, as at the start.
            let position = flight.position;
            if flight.order.get(position).is_some_and(|s| s.is_skipped())
                && let Some(working) = flight.order[position..]
                    .iter()
                    .position(|s| !s.is_skipped())
            {
                flight.order[position..].swap(0, working);
            }
            let Some(server) = flight.order.get(flight.position).cloned() else {
                let failover = std::mem::replace(&mut flight.failover, Failover::new());
                self.complete(index, failover.give_up(), done);
                return;
            };
            let remaining = flight.deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                flight.failover.out_of_time();
                let failover = std::mem::replace(&mut flight.failover, Failover::new());
                self.complete(index, failover.give_up(), done);
                return;
            }
            flight.attempt_started = now;
            flight.attempt_until = now + share_of(remaining, flight.position, count);
            let question = flight.question;
            let dnssec_ok = flight.dnssec_ok;
            match self.send(index, server.addr, &question, dnssec_ok) {
                Ok(()) => return,
                Err(error) => {
                    let Some(flight) = self.flights.get_mut(index) else {
                        return;
                    };
                    // Fails this server like any other attempt, then the next.
                    if let Some(answer) = flight
                        .failover
                        .attempted(&server, Err(ExchangeError::Io(error)))
                    {
                        self.complete(index, Ok(answer), done);
                        return;
                    }
                    flight.position += 1;
                }
            }
        }
    }

    /// Sends flight `index`'s query to `upstream` on one of its sockets
    /// picked at random, with a random ID free on it.
    fn send(
        &mut self,
        index: usize,
        upstream: SocketAddr,
        question: &[u8],
        dnssec_ok: bool,
    ) -> io::Result<()> {
        let socket = self.socket_for(upstream)?;
        let Some(pooled) = self.sockets.get_mut(socket) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let mut tries = 0;
        let (id, free) = loop {
            let id = rand::random::<u16>();
            if let Entry::Vacant(free) = pooled.waiting.entry(id) {
                break (id, free);
            }
            tries += 1;
            if tries > 64 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        };
        // Straight to the kernel: tokio's `try_send` answers "would block"
        // from its cached readiness, which a socket just opened has not had
        // yet; a UDP send blocks only when the socket buffer is full.
        encode_upstream_query_into(&mut self.outgoing, id, question, dnssec_ok);
        SockRef::from(&pooled.socket).send(&self.outgoing)?;
        free.insert(index);
        pooled.queries += 1;
        if let Some(flight) = self.flights.get_mut(index) {
            flight.attempt = Attempt::Udp { socket, id };
        }
        Ok(())
    }

    /// A socket towards `upstream` picked at random, opened on first use and
    /// replaced by a fresh one (a new random port) once it has served its
    /// time; the old one stays open until nothing waits on it.
    fn socket_for(&mut self, upstream: SocketAddr) -> io::Result<usize> {
        let known = self.active.iter().position(|(addr, _)| *addr == upstream);
        let place = match known {
            Some(place) => place,
            None => {
                // A failure is not kept: the next query tries again.
                let mut opened = Vec::with_capacity(POOL_SIZE);
                for _ in 0..POOL_SIZE {
                    let socket = connected_socket(upstream)?;
                    opened.push(socket);
                }
                let keys = opened
                    .into_iter()
                    .map(|socket| self.sockets.insert(PooledSocket::new(socket)))
                    .collect();
                self.active.push((upstream, keys));
                self.active.len() - 1
            }
        };
        let Some((_, keys)) = self.active.get_mut(place) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let slot = rand::random_range(0..keys.len());
        let key = keys[slot];
        let worn = self.sockets.get(key).is_none_or(|pooled| {
            pooled.queries >= ROTATE_AFTER_QUERIES || pooled.opened.elapsed() >= ROTATE_AFTER
        });
        if !worn {
            return Ok(key);
        }
        match connected_socket(upstream) {
            Ok(fresh) => {
                let fresh = self.sockets.insert(PooledSocket::new(fresh));
                keys[slot] = fresh;
                if let Some(old) = self.sockets.get_mut(key) {
                    old.retired = true;
                }
                self.close_if_retired(key);
                Ok(fresh)
            }
            Err(error) => {
                // Out of descriptors and the like: the old port still works.
                tracing::debug!(%upstream, %error, "cannot open a fresh upstream socket; keeping the old one");
                Ok(key)
            }
        }
    }

    /// Closes `socket` if it was retired and nothing waits on it any more.
    fn close_if_retired(&mut self, socket: usize) {
        if self
            .sockets
            .get(socket)
            .is_some_and(|pooled| pooled.retired && pooled.waiting.is_empty())
        {
            self.sockets.remove(socket);
        }
    }

    /// Forgets flight `index`'s ID on its socket, if its attempt is over UDP.
    fn release_socket_entry(&mut self, index: usize) {
        let Some(flight) = self.flights.get(index) else {
            return;
        };
        if let Attempt::Udp { socket, id } = flight.attempt
            && let Some(pooled) = self.sockets.get_mut(socket)
        {
            if pooled.waiting.get(&id) == Some(&index) {
                pooled.waiting.remove(&id);
            }
            self.close_if_retired(socket);
        }
    }

    /// Removes flight `index` and hands its waiters over with `result`.
    fn complete(
        &mut self,
        index: usize,
        result: Result<WireAnswer, UpstreamError>,
        done: &mut Vec<Completed<W>>,
    ) {
        self.release_socket_entry(index);
        let Some(flight) = self.flights.try_remove(index) else {
            return;
        };
        done.push(Completed {
            id: FlightId {
                index,
                ticket: flight.ticket,
            },
            key: flight.key,
            dnssec_ok: flight.dnssec_ok,
            result,
            waiters: flight.waiters,
        });
    }
}

impl PooledSocket {
    fn new(socket: UdpSocket) -> Self {
        Self {
            socket,
            waiting: HashMap::new(),
            queries: 0,
            opened: Instant::now(),
            retired: false,
        }
    }
}
