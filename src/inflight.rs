//! Single-flight: identical queries that miss the cache at the same moment
//! share one upstream resolution (README "How a query is answered",
//! upstream), bounded per name and over every name (its limits).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::cache::CacheKey;
use crate::request::{FetchResult, Fetched};
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamError;

/// Clients that may wait on one upstream query (the first included); the
/// next identical query gets SERVFAIL at once (README "How a query is
/// answered", limits). Clients joining a query in flight take no upstream
/// permit, so without this a flood of one uncached name at a slow upstream
/// queued without bound (issue 11: 58 MB at 5,000 in flight). BIND's
/// `clients-per-query` (10, growing to 100) is the same idea; 256 keeps a
/// popular name's burst at expiry answered.
pub const MAX_WAITERS_PER_NAME: usize = 256;

/// Clients that may wait on upstream queries at once, over every name: a
/// waiting client holds its task and query, about 2.3 KB, so this caps
/// them near 10 MB. Above [`crate::upstream::MAX_IN_FLIGHT`] (2048) so that
/// every upstream query in flight can have a few clients on it.
pub const MAX_WAITERS: usize = 4096;

type SharedFetch = Shared<BoxFuture<'static, FetchResult>>;

/// A resolution in flight, with the question it is for: the cache key is a
/// hash, so a joiner checks the question before sharing the result.
struct Running {
    question: Box<[u8]>,
    dnssec_ok: bool,
    future: SharedFetch,
    /// Clients waiting on it now.
    waiters: usize,
    /// Tells this resolution from a later one for the same key.
    flight: u64,
}

/// The single-flight table and its bounds' counts.
#[derive(Default)]
struct Flights {
    running: HashMap<CacheKey, Running>,
    /// Clients waiting on any entry of `running`.
    waiting: usize,
    next_flight: u64,
}

/// The resolutions in flight, shared by every listener.
#[derive(Default)]
pub struct InFlight {
    flights: Mutex<Flights>,
}

/// The question one fetch resolves.
pub struct Question<'a> {
    /// Its cache key.
    pub key: CacheKey,
    /// `QNAME QTYPE QCLASS` in wire form, as asked.
    pub bytes: &'a [u8],
    /// The name.
    pub name: &'a Name,
    /// The type.
    pub query_type: RecordType,
    /// The class.
    pub class: DNSClass,
    /// The DO bit.
    pub dnssec_ok: bool,
}

impl InFlight {
    /// One upstream resolution of `question` shared by every identical
    /// query that misses the cache at the same moment; stores the answer in
    /// the cache.
    pub async fn fetch(&self, snapshot: &Arc<Snapshot>, question: Question<'_>) -> FetchResult {
        let Question {
            key,
            bytes,
            name,
            query_type,
            class,
            dnssec_ok,
        } = question;
        let pool = snapshot.upstreams.clone();
        let cache = snapshot.cache.clone();
        let owned_name = name.clone();
        let mut resolve = Some(async move {
            let answer = pool
                .resolve(&owned_name, query_type, class, dnssec_ok)
                .await?;
            Ok(Arc::new(match cache.store(key, dnssec_ok, answer) {
                Ok(entry) => Fetched::Cached(entry),
                Err(answer) => Fetched::Uncached(answer),
            }))
        });
        let joined = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            let full = flights.waiting >= MAX_WAITERS;
            let next_flight = flights.next_flight;
            let joined = match flights.running.get_mut(&key) {
                Some(running)
                    if running.dnssec_ok == dnssec_ok
                        && running.question.eq_ignore_ascii_case(bytes) =>
                {
                    if full || running.waiters >= MAX_WAITERS_PER_NAME {
                        return Err(UpstreamError::Overloaded);
                    }
                    running.waiters += 1;
                    Some((running.future.clone(), running.flight))
                }
                // A different question with the same hash: resolve it on its own.
                Some(_) => None,
                None => {
                    if full {
                        return Err(UpstreamError::Overloaded);
                    }
                    let Some(first) = resolve.take() else {
                        return Err(UpstreamError::AllFailed);
                    };
                    let future = first.boxed().shared();
                    flights.running.insert(
                        key,
                        Running {
                            question: bytes.into(),
                            dnssec_ok,
                            future: future.clone(),
                            waiters: 1,
                            flight: next_flight,
                        },
                    );
                    flights.next_flight += 1;
                    Some((future, next_flight))
                }
            };
            if joined.is_some() {
                flights.waiting += 1;
            }
            joined
        };
        let Some((shared, flight)) = joined else {
            return match resolve {
                Some(alone) => alone.await,
                None => Err(UpstreamError::AllFailed),
            };
        };
        let _cleanup = InFlightGuard {
            flights: &self.flights,
            key,
            flight,
        };
        shared.await
    }
}

/// Counts a waiting client out of the single-flight table when it is done
/// (answered or cancelled), and removes the entry once it is finished or
/// nobody waits on it any more.
struct InFlightGuard<'a> {
    flights: &'a Mutex<Flights>,
    key: CacheKey,
    flight: u64,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        flights.waiting = flights.waiting.saturating_sub(1);
        let remove = match flights.running.get_mut(&self.key) {
            Some(running) if running.flight == self.flight => {
                running.waiters = running.waiters.saturating_sub(1);
                running.waiters == 0 || running.future.peek().is_some()
            }
            _ => false,
        };
        if remove {
            flights.running.remove(&self.key);
        }
    }
}
