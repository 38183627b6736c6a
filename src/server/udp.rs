//! The UDP worker: one per listener socket (one socket per core and
//! `listen` address, spread by the kernel with `SO_REUSEPORT`), sharing
//! nothing on the hot path with the others.
//!
//! The worker reads batches of queries (`recvmmsg`), answers what needs no
//! upstream at once, puts cache misses in its own pending table
//! ([`crate::upstream::pending`]: its own upstream sockets, no task, no
//! channel, no timer per query), reads the upstream answers itself, and
//! sends every answer made in one pass in one `sendmmsg`. Identical misses
//! share one upstream query across workers through [`crate::inflight`]. A CNAME
//! record's target is chased in a task (it may need several lookups).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nohash_hasher::BuildNoHashHasher;
use socket2::{SockAddr, SockRef};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::udp_batch::{BATCH, RecvBatch, send_batch};
use crate::cache::CacheKey;
use crate::inflight::{Claim, Handed};
use crate::metrics::Protocol;
use crate::reply;
use crate::request::{Failure, Fetched, Handled, Pending, Request, Work};
use crate::resolve::Resolver;
use crate::upstream::UpstreamError;
use crate::upstream::pending::{Completed, FlightId, PendingTable, SWEEP_EVERY, TcpRetried};

/// Largest UDP query read while draining.
const UDP_QUERY_BUFFER: usize = 4096;

/// What woke the worker.
enum Event {
    Shutdown,
    Client(io::Result<()>),
    Upstream,
    Retried(TcpRetried),
    Tick,
}

/// One UDP worker's state.
struct Worker {
    /// Its number among the workers (its owner name in the single-flight map).
    number: usize,
    socket: Arc<UdpSocket>,
    resolver: Arc<Resolver>,
    tasks: TaskTracker,
    table: PendingTable<Request>,
    /// The flights of this worker that other queries may join.
    owned: HashMap<CacheKey, FlightId, BuildNoHashHasher<CacheKey>>,
    completed: Vec<Completed<Request>>,
    replies: Vec<(Vec<u8>, SocketAddr)>,
    /// Answer buffers, reused from one pass to the next.
    spare: Vec<Vec<u8>>,
    /// The clients' addresses of a `sendmmsg` (reused).
    addresses: Vec<SockAddr>,
}

/// Serves `socket` until `shutdown`, then drains for at most `drain`.
pub(super) async fn udp_loop(
    number: usize,
    socket: Arc<UdpSocket>,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    drain: Duration,
) {
    let (retried_tx, mut retried_rx) = mpsc::unbounded_channel();
    let mut worker = Worker {
        number,
        socket,
        resolver,
        tasks,
        table: PendingTable::new(retried_tx),
        owned: HashMap::default(),
        completed: Vec::new(),
        replies: Vec::with_capacity(BATCH),
        spare: Vec::with_capacity(BATCH),
        addresses: Vec::with_capacity(BATCH),
    };
    let mut batch = RecvBatch::new();
    let mut draining: Option<Instant> = None;
    let mut next_sweep = Instant::now() + SWEEP_EVERY;
    let mut upstreams = Arc::downgrade(&worker.resolver.snapshot().upstreams);
    loop {
        let ticking = !worker.table.is_empty() || draining.is_some();
        let tick_at = tokio::time::Instant::from_std(next_sweep);
        let event = tokio::select! {
            () = shutdown.cancelled(), if draining.is_none() => Event::Shutdown,
            ready = worker.socket.readable() => Event::Client(ready),
            () = worker.table.readable() => Event::Upstream,
            Some(retried) = retried_rx.recv() => Event::Retried(retried),
            () = tokio::time::sleep_until(tick_at), if ticking => Event::Tick,
        };
        match event {
            Event::Shutdown => draining = Some(Instant::now() + drain),
            Event::Client(Err(error)) => tracing::debug!(%error, "UDP readiness error"),
            Event::Client(Ok(())) => {
                if worker.read_queries(&mut batch) == BATCH {
                    // A full batch: more may be queued. The runtime polls the
                    // sockets first, and the upstream answers that arrived
                    // meanwhile are taken before the next batch: a burst is
                    // forwarded in step with how it is answered (a failing
                    // upstream is skipped within it), not all behind it.
                    tokio::task::yield_now().await;
                    worker.table.read_answers(&mut worker.completed);
                }
            }
            Event::Upstream => worker.table.read_answers(&mut worker.completed),
            Event::Retried(retried) => worker.table.tcp_retried(retried, &mut worker.completed),
            Event::Tick => {}
        }
        let now = Instant::now();
        if now >= next_sweep {
            worker.table.sweep(now, &mut worker.completed);
            next_sweep = now + SWEEP_EVERY;
            // Only after a reload: the sockets of upstreams it removed close.
            let snapshot = worker.resolver.snapshot();
            // (A weak reference: the worker never keeps an old pool alive.)
            if !std::ptr::eq(upstreams.as_ptr(), Arc::as_ptr(&snapshot.upstreams)) {
                worker.table.forget_upstreams_not_in(&snapshot.upstreams);
                upstreams = Arc::downgrade(&snapshot.upstreams);
            }
        }
        worker.answer_completed();
        worker.send_replies().await;
        if let Some(deadline) = draining
            && worker.drained(deadline).await
        {
            return;
        }
    }
}

impl Worker {
    /// Takes one batch of queued queries and answers or places each;
    /// returns how many there were.
    fn read_queries(&mut self, batch: &mut RecvBatch) -> usize {
        // A batch shorter than BATCH emptied the socket's queue: the closure
        // then reports "would block", which makes tokio clear the socket's
        // readiness (unless a datagram arrived since the readiness was seen)
        // without the extra `recvmmsg` that would only return EAGAIN.
        let mut short = None;
        let received = self.socket.try_io(Interest::READABLE, || {
            let count = batch.recv(self.socket.as_ref())?;
            if count < BATCH {
                short = Some(count);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(count)
        });
        let count = match (received, short) {
            (_, Some(count)) => count,
            (Ok(count), None) => count,
            (Err(error), None) if error.kind() == io::ErrorKind::WouldBlock => return 0,
            (Err(error), None) => {
                // ICMP errors from earlier sends surface here on some kernels; never fatal.
                tracing::debug!(%error, "UDP receive error");
                return 0;
            }
        };
        for index in 0..count {
            let Some((packet, client)) = batch.get(index) else {
                continue;
            };
            self.answer(packet, client);
        }
        count
    }

    /// Answers one query, or places it in the pending table.
    fn answer(&mut self, packet: &[u8], client: SocketAddr) {
        let mut out = self.spare.pop().unwrap_or_default();
        match self
            .resolver
            .handle(packet, client, Protocol::Udp, &mut out)
        {
            Handled::Reply => self.replies.push((out, client)),
            Handled::Drop => self.spare.push(out),
            Handled::Pending(pending) => {
                self.spare.push(out);
                let Pending { request, work } = pending;
                match work {
                    Work::Forward(key) => self.forward(request, key),
                    Work::Chase(record) => self.chase(Pending {
                        request,
                        work: Work::Chase(record),
                    }),
                }
            }
        }
    }

    /// A cache miss: joins the identical query in flight or sends one.
    fn forward(&mut self, request: Request, key: CacheKey) {
        let Some(question) = request.question else {
            // `Resolver::pending` holds the question of every miss.
            self.fail(&request, UpstreamError::AllFailed);
            return;
        };
        let dnssec_ok = request.query.dnssec_ok();
        let socket = &self.socket;
        let claim = self.resolver.inflight().claim(
            key,
            &question,
            dnssec_ok,
            self.number,
            request,
            |request| Handed::Udp {
                request,
                socket: socket.clone(),
            },
        );
        let (request, own) = match claim {
            Claim::Handed => return,
            Claim::Refused(request, error) => {
                self.fail(&request, error);
                return;
            }
            Claim::JoinOwn(request) => match self.owned.get(&key) {
                Some(&id) => match self.table.join(id, request) {
                    Ok(()) => return,
                    Err(request) => (request, false),
                },
                None => (request, false),
            },
            Claim::Own(request) => (request, true),
            Claim::Alone(request) => (request, false),
        };
        let pool = request.snapshot.upstreams.clone();
        match self.table.start(
            &pool,
            key,
            &question,
            dnssec_ok,
            request,
            &mut self.completed,
        ) {
            Ok(id) => {
                if own {
                    self.owned.insert(key, id);
                }
            }
            Err((request, error)) => {
                let inflight = self.resolver.inflight();
                if own {
                    let handed = inflight.finish(key, self.number);
                    inflight.answer_handed(handed, key, &Err(error));
                } else {
                    inflight.release(1);
                }
                self.fail(&request, error);
            }
        }
    }

    /// Chases a CNAME record's target in a task of its own.
    fn chase(&mut self, pending: Pending) {
        let socket = self.socket.clone();
        let resolver = self.resolver.clone();
        let client = pending.request.client;
        self.tasks.spawn(async move {
            let answer = resolver.finish(pending).await;
            send_udp(&socket, &answer, client).await;
        });
    }

    /// Answers `request` with the error answer for `error`.
    fn fail(&mut self, request: &Request, error: UpstreamError) {
        let mut out = self.spare.pop().unwrap_or_default();
        out.clear();
        request.fail(self.resolver.metrics(), &Failure::Upstream(error), &mut out);
        self.replies.push((out, request.client));
    }

    /// Answers every client of the upstream queries that are over.
    fn answer_completed(&mut self) {
        while let Some(completed) = self.completed.pop() {
            let Completed {
                id,
                key,
                dnssec_ok,
                result,
                waiters,
            } = completed;
            let fetched = match (result, waiters.first()) {
                (Ok(answer), Some(first)) => Ok(Arc::new(Fetched::store(
                    &first.snapshot.cache,
                    key,
                    dnssec_ok,
                    answer,
                ))),
                (Ok(_), None) => Err(UpstreamError::AllFailed),
                (Err(error), _) => Err(error),
            };
            let inflight = self.resolver.inflight();
            let handed = if self.owned.get(&key) == Some(&id) {
                self.owned.remove(&key);
                inflight.finish(key, self.number)
            } else {
                inflight.release(waiters.len());
                Vec::new()
            };
            for request in &waiters {
                let mut out = self.spare.pop().unwrap_or_default();
                out.clear();
                let result = fetched.as_deref().map_err(|e| *e);
                reply::forwarded(self.resolver.metrics(), request, key, result, &mut out);
                self.replies.push((out, request.client));
            }
            inflight.answer_handed(handed, key, &fetched);
        }
    }

    /// Sends the answers made: `sendmmsg` while the socket takes them, then
    /// one by one, waiting, for any the socket buffer had no room for.
    async fn send_replies(&mut self) {
        if self.replies.is_empty() {
            return;
        }
        let socket = &self.socket;
        let replies = &self.replies;
        let addresses = &mut self.addresses;
        let sent = socket
            .try_io(Interest::WRITABLE, || {
                match send_batch(socket.as_ref(), replies, addresses) {
                    Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                    other => other,
                }
            })
            .unwrap_or(0);
        for (answer, client) in self.replies.iter().skip(sent) {
            send_udp(&self.socket, answer, *client).await;
        }
        self.spare
            .extend(self.replies.drain(..).map(|(buffer, _)| buffer));
    }

    /// Whether a draining worker is done: nothing in flight and nothing
    /// else holding the socket (chases), or the drain deadline passed.
    ///
    /// With SO_REUSEPORT the kernel spreads queries over every socket of
    /// the address, this one included, for as long as it is open, and the
    /// datagrams still queued in it when it closes are lost. It stays open
    /// anyway while answers of queries in flight are sent through it (they
    /// must come from the address the client asked), so it keeps being read
    /// all that time; once nothing else holds it, what is queued is taken
    /// without waiting and the socket closes at once. That leaves a window
    /// of microseconds, not the length of an upstream query, in which a
    /// datagram can arrive unread; a client's retry then reaches the new
    /// instance.
    async fn drained(&mut self, deadline: Instant) -> bool {
        let idle = self.table.is_empty() && Arc::strong_count(&self.socket) == 1;
        let late = Instant::now() >= deadline;
        if !idle && !late {
            return false;
        }
        // tokio's `try_recv_from` answers "would block" from its cached
        // readiness without asking the kernel; a duplicate descriptor of the
        // same socket (non-blocking, as it shares the open file) asks the
        // kernel itself.
        let direct = SockRef::from(self.socket.as_ref())
            .try_clone()
            .map(std::net::UdpSocket::from);
        let mut buffer = vec![0u8; UDP_QUERY_BUFFER];
        let mut took_any = false;
        loop {
            let received = match &direct {
                Ok(direct) => direct.recv_from(&mut buffer),
                Err(_) => self.socket.try_recv_from(&mut buffer),
            };
            match received {
                Ok((len, client)) => {
                    took_any = true;
                    self.answer(&buffer[..len], client);
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => tracing::debug!(%error, "UDP receive error"),
            }
        }
        self.answer_completed();
        self.send_replies().await;
        // Past the deadline, queries still in flight are given up.
        late || !took_any && self.table.is_empty()
    }
}

async fn send_udp(socket: &UdpSocket, answer: &[u8], client: SocketAddr) {
    if answer.is_empty() {
        return;
    }
    if let Err(error) = socket.send_to(answer, client).await {
        tracing::debug!(%client, %error, "UDP send failed");
    }
}
