//! Single-flight: identical queries that miss the cache at the same moment
//! go upstream once (README "How a query is answered", upstream), whichever
//! UDP worker, TCP connection or CNAME chase each one comes from; the
//! clients waiting are bounded per question and over every question (its
//! limits).
//!
//! The first miss owns the upstream query: a UDP worker in its own pending
//! table ([`crate::upstream::pending`]), anything else in a task
//! ([`InFlight::fetch`]). An identical query arriving on the same UDP worker
//! joins the owner's flight there; any other is handed over here ([`Handed`])
//! and answered by the owner when the query is over. A unique miss costs
//! two short locks of one shard of 64.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::rr::{DNSClass, Name, RecordType};
use nohash_hasher::BuildNoHashHasher;
use socket2::{SockAddr, SockRef};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::cache::CacheKey;
use crate::metrics::Metrics;
use crate::reply;
use crate::request::{FetchResult, Fetched, Request};
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamError;
use crate::wire::QuestionBytes;

/// Clients that may wait on one upstream query (the first included); the
/// next identical query gets SERVFAIL at once (README "How a query is
/// answered", limits). Clients joining a query in flight take no upstream
/// permit, so without this a flood of one uncached name at a slow upstream
/// queued without bound (issue 11: 58 MB at 5,000 in flight). BIND's
/// `clients-per-query` (10, growing to 100) is the same idea; 256 keeps a
/// popular name's burst at expiry answered.
pub const MAX_WAITERS_PER_NAME: usize = 256;

/// Clients that may wait on upstream queries at once, over every name: a
/// waiting client holds its query, about 2.3 KB, so this caps them near
/// 10 MB. Above [`crate::upstream::MAX_IN_FLIGHT`] (2048) so that every
/// upstream query in flight can have a few clients on it.
pub const MAX_WAITERS: usize = 4096;

/// Shards of the map: a power of two, so that a key picks one by its low bits.
const SHARDS: usize = 64;

/// The owner name of queries resolved in a task rather than a UDP worker.
const TASK_OWNER: usize = usize::MAX;

/// A client handed to the owner of its question, answered when the query is over.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a handed query is moved once into the owner's list; boxing it would allocate"
)]
pub enum Handed {
    /// A UDP query: answered through the listener socket it came on.
    Udp {
        /// The query.
        request: Request,
        /// The listener socket it arrived on.
        socket: Arc<UdpSocket>,
    },
    /// A task (TCP, a CNAME chase, a health check) waiting for the result.
    Task(oneshot::Sender<FetchResult>),
}

/// One question in flight.
#[derive(Debug)]
struct Entry {
    owner: usize,
    question: QuestionBytes,
    dnssec_ok: bool,
    /// Clients waiting on it, the owner's and the handed ones.
    waiters: usize,
    handed: Vec<Handed>,
}

type Shard = Mutex<HashMap<CacheKey, Entry, BuildNoHashHasher<CacheKey>>>;

/// What to do with a miss.
#[derive(Debug)]
pub enum Claim<W> {
    /// Nothing identical in flight: the caller sends the query, and calls
    /// [`InFlight::finish`] when it is over.
    Own(W),
    /// The caller (a UDP worker) already has the identical query in flight:
    /// join it there.
    JoinOwn(W),
    /// Handed to the owner of the identical query.
    Handed,
    /// Another question with the same hash is in flight: resolve this one
    /// on its own, and call [`InFlight::release`] with its clients when done.
    Alone(W),
    /// A bound is reached: answer at once with this error.
    Refused(W, UpstreamError),
}

/// The question one fetch resolves.
pub struct Question<'a> {
    /// Its cache key.
    pub key: CacheKey,
    /// `QNAME QTYPE QCLASS` in wire form, as asked.
    pub bytes: &'a QuestionBytes,
    /// The name.
    pub name: &'a Name,
    /// The type.
    pub query_type: RecordType,
    /// The class.
    pub class: DNSClass,
    /// The DO bit.
    pub dnssec_ok: bool,
}

/// The questions in flight over every listener.
#[derive(Debug)]
pub struct InFlight {
    shards: Box<[Shard]>,
    waiting: AtomicUsize,
    metrics: Metrics,
}

impl InFlight {
    /// An empty map; handed clients are counted in `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            waiting: AtomicUsize::new(0),
            metrics,
        }
    }

    fn shard(&self, key: &CacheKey) -> &Shard {
        &self.shards[(key.value() as usize) & (SHARDS - 1)]
    }

    /// Decides for `waiter`, a miss of `key` for `question` from `owner` (a
    /// UDP worker's number); `hand` makes the [`Handed`] form of the waiter
    /// if it is handed over.
    pub fn claim<W>(
        &self,
        key: CacheKey,
        question: &QuestionBytes,
        dnssec_ok: bool,
        owner: usize,
        waiter: W,
        hand: impl FnOnce(W) -> Handed,
    ) -> Claim<W> {
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        let full = self.waiting.load(Ordering::Relaxed) >= MAX_WAITERS;
        match shard.get_mut(&key) {
            Some(entry)
                if entry.dnssec_ok == dnssec_ok
                    && entry.question.eq_ignore_ascii_case(question) =>
            {
                if full || entry.waiters >= MAX_WAITERS_PER_NAME {
                    return Claim::Refused(waiter, UpstreamError::Overloaded);
                }
                entry.waiters += 1;
                self.waiting.fetch_add(1, Ordering::Relaxed);
                if entry.owner == owner && owner != TASK_OWNER {
                    Claim::JoinOwn(waiter)
                } else {
                    entry.handed.push(hand(waiter));
                    Claim::Handed
                }
            }
            Some(_) | None if full => Claim::Refused(waiter, UpstreamError::Overloaded),
            Some(_) => {
                self.waiting.fetch_add(1, Ordering::Relaxed);
                Claim::Alone(waiter)
            }
            None => {
                shard.insert(
                    key,
                    Entry {
                        owner,
                        question: *question,
                        dnssec_ok,
                        waiters: 1,
                        handed: Vec::new(),
                    },
                );
                self.waiting.fetch_add(1, Ordering::Relaxed);
                Claim::Own(waiter)
            }
        }
    }

    /// The query `owner` owned for `key` is over: removes it and returns
    /// the clients handed to it.
    pub fn finish(&self, key: CacheKey, owner: usize) -> Vec<Handed> {
        let mut shard = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if shard.get(&key).is_none_or(|entry| entry.owner != owner) {
            return Vec::new();
        }
        let Some(entry) = shard.remove(&key) else {
            return Vec::new();
        };
        drop(shard);
        self.release(entry.waiters);
        entry.handed
    }

    /// `count` clients that waited outside the map (see [`Claim::Alone`]) are done.
    pub fn release(&self, count: usize) {
        let _ = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some(w.saturating_sub(count))
            });
    }

    /// Answers the clients handed to a query of `key` that is over.
    pub fn answer_handed(&self, handed: Vec<Handed>, key: CacheKey, result: &FetchResult) {
        for handed in handed {
            match handed {
                Handed::Task(tx) => {
                    let _ = tx.send(result.clone());
                }
                Handed::Udp { request, socket } => {
                    let mut out = Vec::new();
                    let fetched = result.as_deref().map_err(|e| *e);
                    reply::forwarded(&self.metrics, &request, key, fetched, &mut out);
                    send_from(socket, out, request.client);
                }
            }
        }
    }

    /// One upstream resolution of `question` shared by every identical
    /// query that misses the cache at the same moment; stores the answer in
    /// the cache. For the queries that are not a UDP worker's.
    pub async fn fetch(&self, snapshot: &Arc<Snapshot>, question: Question<'_>) -> FetchResult {
        let Question {
            key,
            bytes,
            name,
            query_type,
            class,
            dnssec_ok,
        } = question;
        let (tx, rx) = oneshot::channel();
        match self.claim(key, bytes, dnssec_ok, TASK_OWNER, tx, Handed::Task) {
            Claim::Handed => rx.await.unwrap_or(Err(UpstreamError::AllFailed)),
            Claim::Refused(_, error) => Err(error),
            Claim::Alone(_) => {
                let _release = Release {
                    flights: self,
                    state: Held::Alone,
                };
                resolve(snapshot, key, name, query_type, class, dnssec_ok).await
            }
            Claim::Own(_) | Claim::JoinOwn(_) => {
                // Cancelled (the TCP client went away) or not, the entry goes.
                let mut release = Release {
                    flights: self,
                    state: Held::Owned(key),
                };
                let result = resolve(snapshot, key, name, query_type, class, dnssec_ok).await;
                release.state = Held::Nothing;
                let handed = self.finish(key, TASK_OWNER);
                self.answer_handed(handed, key, &result);
                result
            }
        }
    }
}

/// What a task's query holds in the map until it ends.
enum Held {
    /// The entry of this key, with its handed clients.
    Owned(CacheKey),
    /// One client counted outside the map.
    Alone,
    /// Nothing any more.
    Nothing,
}

/// Takes a task's query out of the map however the task ends: a cancelled
/// owner fails its handed clients rather than leaving them waiting.
struct Release<'a> {
    flights: &'a InFlight,
    state: Held,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        match self.state {
            Held::Owned(key) => {
                let handed = self.flights.finish(key, TASK_OWNER);
                self.flights
                    .answer_handed(handed, key, &Err(UpstreamError::AllFailed));
            }
            Held::Alone => self.flights.release(1),
            Held::Nothing => {}
        }
    }
}

/// One upstream resolution, stored in the cache.
async fn resolve(
    snapshot: &Arc<Snapshot>,
    key: CacheKey,
    name: &Name,
    query_type: RecordType,
    class: DNSClass,
    dnssec_ok: bool,
) -> FetchResult {
    let answer = snapshot
        .upstreams
        .resolve(name, query_type, class, dnssec_ok)
        .await?;
    Ok(Arc::new(Fetched::store(
        &snapshot.cache,
        key,
        dnssec_ok,
        answer,
    )))
}

/// Sends `answer` to `client` through `socket` without waiting; from a task
/// when the socket buffer is full.
pub(crate) fn send_from(socket: Arc<UdpSocket>, answer: Vec<u8>, client: std::net::SocketAddr) {
    if answer.is_empty() {
        return;
    }
    // Straight to the kernel: tokio's `try_send_to` answers from its cached
    // readiness, which another thread's socket may not have yet.
    let sent = SockRef::from(socket.as_ref()).send_to(&answer, &SockAddr::from(client));
    if let Err(error) = sent {
        if error.kind() != std::io::ErrorKind::WouldBlock {
            tracing::debug!(%client, %error, "UDP send failed");
            return;
        }
        tokio::spawn(async move {
            if let Err(error) = socket.send_to(&answer, client).await {
                tracing::debug!(%client, %error, "UDP send failed");
            }
        });
    }
}
