//! The query pipeline (README "How a query is answered"): guard (parse, ACL) → records → cache →
//! upstream, and the CNAME chase that joins records to upstream answers.
//!
//! [`Resolver::handle`] answers everything that needs no upstream
//! synchronously (errors, REFUSED, records, cache hits), so the listeners
//! answer those without spawning a task; the rest comes back as a
//! [`Pending`] query for [`Resolver::finish`], which the listener runs in a
//! task of its own.

mod lookup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::cache::{CacheEntry, CacheKey, Lookup, STALE_TTL};
use crate::loop_guard::LoopGuard;
use crate::metrics::{Metrics, Outcome, Protocol};
use crate::records::{Answer, CompiledRecord, RecordMatch};
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamError;
use crate::wire::{self, ClientQuery, Inbound, LowerName, TtlRule, WireAnswer};

/// Longest chain of CNAME records followed inside the records.
pub const MAX_CNAME_CHAIN: usize = 8;

/// Clients that may wait on one upstream query (the first included); the
/// next identical query gets SERVFAIL at once (README "How a query is answered", limits). Clients joining a
/// query in flight take no upstream permit, so without this a flood of one
/// uncached name at a slow upstream queued without bound (issue 11: 58 MB
/// at 5,000 in flight). BIND's `clients-per-query` (10, growing to 100) is
/// the same idea; 256 keeps a popular name's burst at expiry answered.
pub const MAX_WAITERS_PER_NAME: usize = 256;

/// Clients that may wait on upstream queries at once, over every name: a
/// waiting client holds its task and query, about 2.3 KB, so this caps
/// them near 10 MB. Above [`crate::upstream::MAX_IN_FLIGHT`] (2048) so that
/// every upstream query in flight can have a few clients on it.
pub const MAX_WAITERS: usize = 4096;

/// What the listener does with a packet.
pub enum Handled {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Send nothing (UDP) or close the connection (TCP).
    Drop,
    /// Needs upstream: run [`Resolver::finish`] on it in a task.
    Pending(Box<Pending>),
}

/// A query waiting for upstream.
pub struct Pending {
    snapshot: Arc<Snapshot>,
    query: ClientQuery,
    question: Option<Box<[u8]>>,
    client: SocketAddr,
    protocol: Protocol,
    started: Instant,
    work: Work,
}

enum Work {
    Forward(CacheKey),
    Chase(Arc<CompiledRecord>),
}

/// An upstream answer as fetched once for every identical query waiting:
/// as stored in the cache (its TTLs then follow the cache's bounds from the
/// first answer on), or as received when it is not to be cached.
#[derive(Debug)]
enum Fetched {
    Cached(Arc<CacheEntry>),
    Uncached(WireAnswer),
}

impl Fetched {
    fn wire(&self) -> &WireAnswer {
        match self {
            Fetched::Cached(entry) => &entry.answer,
            Fetched::Uncached(wire) => wire,
        }
    }

    fn ttl_rule(&self) -> TtlRule {
        match self {
            Fetched::Cached(entry) => entry.ttl_rule(),
            Fetched::Uncached(_) => TtlRule::Aged {
                age: 0,
                min: 0,
                max: u32::MAX,
            },
        }
    }
}

type FetchResult = Result<Arc<Fetched>, UpstreamError>;
type InFlight = Shared<BoxFuture<'static, FetchResult>>;

/// A resolution in flight, with the question it is for: the cache key is a
/// hash, so a joiner checks the question before sharing the result.
struct Running {
    question: Box<[u8]>,
    dnssec_ok: bool,
    future: InFlight,
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

/// The query path over the current snapshot.
pub struct Resolver {
    snapshot: ArcSwap<Snapshot>,
    metrics: Metrics,
    loops: Arc<LoopGuard>,
    in_flight: Mutex<Flights>,
}

impl Resolver {
    /// A resolver serving `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>, metrics: Metrics, loops: Arc<LoopGuard>) -> Self {
        Self {
            snapshot: ArcSwap::new(snapshot),
            metrics,
            loops,
            in_flight: Mutex::new(Flights::default()),
        }
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts `next` in force; queries already running finish on the old one.
    /// Returns the old one.
    pub fn swap(&self, next: Arc<Snapshot>) -> Arc<Snapshot> {
        self.snapshot.swap(next)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answers `packet` from `client` if no upstream is needed.
    pub fn handle(&self, packet: &[u8], client: SocketAddr, protocol: Protocol) -> Handled {
        let started = Instant::now();
        let query = match wire::parse_query(packet) {
            Inbound::Query(query) => query,
            Inbound::Drop => return Handled::Drop,
            Inbound::Reject(message, rcode) => {
                let outcome = match rcode {
                    ResponseCode::NotImp => Outcome::Notimp,
                    ResponseCode::BADVERS => Outcome::Badvers,
                    _ => Outcome::Formerr,
                };
                self.metrics.query(protocol, outcome);
                tracing::debug!(%client, %rcode, "rejected a malformed query");
                return error_reply(&message, packet);
            }
        };
        let snapshot = self.snapshot.load_full();
        let udp_limit = (protocol == Protocol::Udp).then(|| query.udp_limit());

        if let Some(server) = self.loops.looped_through(query.name()) {
            server.mark_looped();
            self.metrics.query(protocol, Outcome::Refused);
            return reply_message(&query.response(ResponseCode::Refused), protocol, None);
        }
        if !snapshot.allows(client.ip()) {
            self.metrics.query(protocol, Outcome::Refused);
            self.log(
                &snapshot,
                &query,
                client,
                Outcome::Refused,
                ResponseCode::Refused,
                started,
            );
            // The REFUSED answer is never larger than the query: no amplification.
            return error_reply(&query.response(ResponseCode::Refused), packet);
        }

        let class = query.query.query_class();
        // Whether no record exists for the name: it is forwarded as any
        // other name, and reported if a watched zone holds it (README "Unmapped names").
        let mut absent = false;
        if class == DNSClass::IN || class == DNSClass::ANY {
            match snapshot
                .records
                .find(query.name(), client.ip().to_canonical())
            {
                RecordMatch::Answers(record) => {
                    record.hits.inc();
                    if let Answer::Cname(_) = record.answer
                        && query.query_type() != RecordType::CNAME
                    {
                        let record = record.clone();
                        return self.pending(
                            snapshot,
                            query,
                            wire::packet_question(packet),
                            client,
                            protocol,
                            started,
                            Work::Chase(record),
                        );
                    }
                    let message = answer_from_record(&query, record);
                    self.count(
                        &snapshot,
                        &query,
                        client,
                        protocol,
                        Outcome::Record,
                        ResponseCode::NoError,
                        started,
                    );
                    return reply_message(&message, protocol, udp_limit);
                }
                RecordMatch::Absent => absent = true,
                // Mapped, though no record answers this client now.
                RecordMatch::PassedOver => {}
            }
        }

        // Lower-cased once, for the report and the cache key.
        let lower = LowerName::of(query.name());
        if absent {
            snapshot.watch.note(&lower, query.name());
        }
        let key = snapshot
            .cache
            .key_of(&lower, query.query_type(), class, query.dnssec_ok());
        let packet_question = wire::packet_question(packet);
        if let Some(question) = packet_question
            && let Lookup::Fresh(entry) = snapshot.cache.get(&key, question, query.dnssec_ok())
        {
            let mut out = Vec::with_capacity(entry.answer.len() + 16);
            entry.answer.render(
                &query,
                packet_question,
                entry.ttl_rule(),
                udp_limit,
                &mut out,
            );
            self.count(
                &snapshot,
                &query,
                client,
                protocol,
                Outcome::Cache,
                entry.answer.rcode(),
                started,
            );
            return Handled::Reply(out);
        }
        self.pending(
            snapshot,
            query,
            packet_question,
            client,
            protocol,
            started,
            Work::Forward(key),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn pending(
        &self,
        snapshot: Arc<Snapshot>,
        query: ClientQuery,
        question: Option<&[u8]>,
        client: SocketAddr,
        protocol: Protocol,
        started: Instant,
        work: Work,
    ) -> Handled {
        Handled::Pending(Box::new(Pending {
            snapshot,
            question: question.map(Box::from),
            query,
            client,
            protocol,
            started,
            work,
        }))
    }

    /// Answers a query that needs upstream. Always returns an answer within
    /// the upstream timeout (SERVFAIL at worst).
    pub async fn finish(&self, pending: Box<Pending>) -> Vec<u8> {
        let Pending {
            snapshot,
            query,
            question,
            client,
            protocol,
            started,
            work,
        } = *pending;
        let udp_limit = (protocol == Protocol::Udp).then(|| query.udp_limit());
        match work {
            Work::Forward(key) => {
                // The client's own question bytes (their case is echoed); built
                // only for the odd query whose name is compressed.
                let asked = question.unwrap_or_else(|| {
                    wire::question_bytes(
                        query.name(),
                        query.query_type(),
                        query.query.query_class(),
                    )
                });
                let fetched = self
                    .fetch(
                        &snapshot,
                        key,
                        &asked,
                        query.name(),
                        query.query_type(),
                        query.query.query_class(),
                        query.dnssec_ok(),
                    )
                    .await;
                let failed = match &fetched {
                    Ok(f) => f.wire().rcode() == ResponseCode::ServFail,
                    Err(_) => true,
                };
                if failed
                    && let Lookup::Stale(entry) | Lookup::Fresh(entry) =
                        snapshot.cache.get(&key, &asked, query.dnssec_ok())
                    && entry.answer.rcode() != ResponseCode::ServFail
                {
                    let mut out = Vec::new();
                    entry.answer.render(
                        &query,
                        Some(&asked),
                        TtlRule::Fixed(STALE_TTL),
                        udp_limit,
                        &mut out,
                    );
                    self.count(
                        &snapshot,
                        &query,
                        client,
                        protocol,
                        Outcome::Stale,
                        entry.answer.rcode(),
                        started,
                    );
                    return out;
                }
                match fetched {
                    Ok(fetched) => {
                        let mut out = Vec::new();
                        fetched.wire().render(
                            &query,
                            Some(&asked),
                            fetched.ttl_rule(),
                            udp_limit,
                            &mut out,
                        );
                        self.count(
                            &snapshot,
                            &query,
                            client,
                            protocol,
                            Outcome::Upstream,
                            fetched.wire().rcode(),
                            started,
                        );
                        out
                    }
                    Err(error) => {
                        tracing::debug!(%client, name = %query.name(), %error, "answering SERVFAIL");
                        self.servfail(&snapshot, &query, client, protocol, started, udp_limit)
                    }
                }
            }
            Work::Chase(record) => match self.chase(&snapshot, &query, client, &record).await {
                Some(message) => {
                    let rcode = message.metadata.response_code;
                    self.count(
                        &snapshot,
                        &query,
                        client,
                        protocol,
                        Outcome::Record,
                        rcode,
                        started,
                    );
                    encode_or_servfail(&message, &query, udp_limit)
                }
                None => self.servfail(&snapshot, &query, client, protocol, started, udp_limit),
            },
        }
    }

    fn servfail(
        &self,
        snapshot: &Snapshot,
        query: &ClientQuery,
        client: SocketAddr,
        protocol: Protocol,
        started: Instant,
        udp_limit: Option<usize>,
    ) -> Vec<u8> {
        self.count(
            snapshot,
            query,
            client,
            protocol,
            Outcome::Servfail,
            ResponseCode::ServFail,
            started,
        );
        encode_or_servfail(&query.response(ResponseCode::ServFail), query, udp_limit)
    }

    /// Follows a CNAME record: through the records while they match, then
    /// upstream through the cache. `None` means SERVFAIL (loop, chain too
    /// long, upstream failed).
    async fn chase(
        &self,
        snapshot: &Arc<Snapshot>,
        query: &ClientQuery,
        client: SocketAddr,
        first: &Arc<CompiledRecord>,
    ) -> Option<Message> {
        let mut response = query.response(ResponseCode::NoError);
        let query_type = query.query_type();
        let mut owner = query.name().clone();
        let mut record = first.clone();
        let mut seen: Vec<Name> = vec![owner.clone()];
        loop {
            let target = match &record.answer {
                Answer::Cname(target) => target.clone(),
                Answer::Addresses { .. } => {
                    add_addresses(&mut response, &owner, query_type, &record);
                    return Some(response);
                }
            };
            if seen.len() > MAX_CNAME_CHAIN || seen.contains(&target) {
                tracing::warn!(name = %query.name(), "CNAME loop or chain longer than {MAX_CNAME_CHAIN} in the records");
                return None;
            }
            response.add_answer(wire::cname_record(&owner, record.ttl, &target));
            seen.push(target.clone());
            owner = target;
            match snapshot.records.lookup(&owner, client.ip().to_canonical()) {
                Some(next) => {
                    if !Arc::ptr_eq(next, first) {
                        next.hits.inc();
                    }
                    record = next.clone();
                }
                None => break,
            }
        }
        let key = snapshot
            .cache
            .key(&owner, query_type, DNSClass::IN, query.dnssec_ok());
        let asked = wire::question_bytes(&owner, query_type, DNSClass::IN);
        let message = match snapshot.cache.get(&key, &asked, query.dnssec_ok()) {
            Lookup::Fresh(entry) => entry.answer.to_message(entry.ttl_rule())?,
            _ => {
                let fetched = self
                    .fetch(
                        snapshot,
                        key,
                        &asked,
                        &owner,
                        query_type,
                        DNSClass::IN,
                        query.dnssec_ok(),
                    )
                    .await;
                match fetched {
                    Ok(fetched) if fetched.wire().rcode() != ResponseCode::ServFail => {
                        fetched.wire().to_message(TtlRule::Aged {
                            age: 0,
                            min: 0,
                            max: u32::MAX,
                        })?
                    }
                    // Every upstream failed: the target gets the same serve_stale
                    // rescue as a forwarded name (README "How a query is answered", upstream), or a CNAME record
                    // pointing at an accelerator would fail while its target is
                    // still in the cache.
                    _ => match snapshot.cache.get(&key, &asked, query.dnssec_ok()) {
                        Lookup::Stale(entry) | Lookup::Fresh(entry)
                            if entry.answer.rcode() != ResponseCode::ServFail =>
                        {
                            entry.answer.to_message(TtlRule::Fixed(STALE_TTL))?
                        }
                        _ => return None,
                    },
                }
            }
        };
        if message.metadata.response_code == ResponseCode::ServFail {
            return None;
        }
        response.metadata.response_code = message.metadata.response_code;
        response.add_answers(message.answers);
        response.add_authorities(message.authorities);
        Some(response)
    }

    /// One upstream resolution shared by every identical query that misses
    /// the cache at the same moment; stores the answer in the cache.
    #[allow(clippy::too_many_arguments)]
    async fn fetch(
        &self,
        snapshot: &Arc<Snapshot>,
        key: CacheKey,
        question: &[u8],
        name: &Name,
        query_type: RecordType,
        class: DNSClass,
        dnssec_ok: bool,
    ) -> FetchResult {
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
            let mut flights = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let full = flights.waiting >= MAX_WAITERS;
            let next_flight = flights.next_flight;
            let joined = match flights.running.get_mut(&key) {
                Some(running)
                    if running.dnssec_ok == dnssec_ok
                        && running.question.eq_ignore_ascii_case(question) =>
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
                            question: question.into(),
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
            flights: &self.in_flight,
            key,
            flight,
        };
        shared.await
    }

    #[allow(clippy::too_many_arguments)]
    fn count(
        &self,
        snapshot: &Snapshot,
        query: &ClientQuery,
        client: SocketAddr,
        protocol: Protocol,
        outcome: Outcome,
        rcode: ResponseCode,
        started: Instant,
    ) {
        self.metrics.query(protocol, outcome);
        self.log(snapshot, query, client, outcome, rcode, started);
    }

    fn log(
        &self,
        snapshot: &Snapshot,
        query: &ClientQuery,
        client: SocketAddr,
        outcome: Outcome,
        rcode: ResponseCode,
        started: Instant,
    ) {
        if snapshot.config.log.queries {
            tracing::info!(
                target: "accel_dns::query",
                client = %client,
                name = %query.name(),
                r#type = %query.query_type(),
                outcome = outcome.as_str(),
                rcode = %rcode,
                latency_us = started.elapsed().as_micros() as u64,
                "query"
            );
        }
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

fn answer_from_record(query: &ClientQuery, record: &CompiledRecord) -> Message {
    let mut response = query.response(ResponseCode::NoError);
    match &record.answer {
        Answer::Cname(target) => {
            response.add_answer(wire::cname_record(query.name(), record.ttl, target));
        }
        Answer::Addresses { .. } => {
            add_addresses(&mut response, query.name(), query.query_type(), record)
        }
    }
    response
}

fn add_addresses(
    response: &mut Message,
    owner: &Name,
    query_type: RecordType,
    record: &CompiledRecord,
) {
    if matches!(query_type, RecordType::A | RecordType::ANY) {
        for ip in record.a() {
            response.add_answer(wire::address_record_a(owner, record.ttl, ip));
        }
    }
    if matches!(query_type, RecordType::AAAA | RecordType::ANY) {
        for ip in record.aaaa() {
            response.add_answer(wire::address_record_aaaa(owner, record.ttl, ip));
        }
    }
}

fn reply_message(message: &Message, protocol: Protocol, limit: Option<usize>) -> Handled {
    let udp_limit = match protocol {
        Protocol::Udp => Some(
            limit
                .unwrap_or(wire::CLASSIC_UDP_LIMIT)
                .max(wire::CLASSIC_UDP_LIMIT),
        ),
        Protocol::Tcp => None,
    };
    match wire::encode_for(message, udp_limit) {
        Some(bytes) => Handled::Reply(bytes),
        None => Handled::Drop,
    }
}

/// An error answer (FORMERR, NOTIMP, BADVERS, REFUSED) to `packet`, never
/// larger than `packet` over either transport: these go to anyone, so they
/// must not amplify (README "How a query is answered", malformed input, §4.2). Echoing the question is not enough to
/// ensure that: a query's name can be a compression pointer into its own
/// header, two bytes on the wire that decode to a label of up to ten, so
/// the echo outgrew an 18-byte query by 10 bytes (found by fuzzing; see the
/// regression test below). Such an answer goes without its question (QDCOUNT
/// 0 is valid in an error answer), and without its OPT if even that is too
/// long; it cannot be, as the query held both.
fn error_reply(message: &Message, packet: &[u8]) -> Handled {
    let fits = |m: &Message| m.to_vec().ok().filter(|bytes| bytes.len() <= packet.len());
    if let Some(bytes) = fits(message) {
        return Handled::Reply(bytes);
    }
    let mut bare = message.clone();
    bare.queries.clear();
    if let Some(bytes) = fits(&bare) {
        return Handled::Reply(bytes);
    }
    bare.edns = None;
    fits(&bare).map_or(Handled::Drop, Handled::Reply)
}

fn encode_or_servfail(message: &Message, query: &ClientQuery, udp_limit: Option<usize>) -> Vec<u8> {
    wire::encode_for(message, udp_limit)
        .or_else(|| wire::encode_for(&query.response(ResponseCode::ServFail), udp_limit))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Inbound;

    fn reply_len(handled: Handled) -> usize {
        match handled {
            Handled::Reply(bytes) => {
                assert!(
                    Message::from_vec(&bytes).is_ok(),
                    "the error answer decodes"
                );
                bytes.len()
            }
            Handled::Drop => 0,
            Handled::Pending(_) => panic!("an error answer is never pending"),
        }
    }

    /// Found by fuzzing (target `query_path`): an 18-byte query whose name is
    /// a pointer to offset 0, so that the ID, flags and counts decode as a
    /// 10-byte label; opcode 7 got a 28-byte NOTIMP, and the same query from
    /// outside the ACL a 28-byte REFUSED.
    #[test]
    fn error_answers_to_a_name_compressed_into_the_header_are_no_larger_than_the_query() {
        let notimp = [
            0x0a, 0x34, 0x38, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x00, 0x00, 0x01, 0x80,
            0x01,
        ];
        let Inbound::Reject(message, ResponseCode::NotImp) = wire::parse_query(&notimp) else {
            panic!("the fuzzer's packet gets NOTIMP");
        };
        let len = reply_len(error_reply(&message, &notimp));
        assert!((12..=notimp.len()).contains(&len), "{len} bytes");

        let mut refused = notimp;
        refused[2] = 0x01; // a plain QUERY with RD
        let Inbound::Query(query) = wire::parse_query(&refused) else {
            panic!("a query");
        };
        assert_eq!(query.name().num_labels(), 1);
        let len = reply_len(error_reply(
            &query.response(ResponseCode::Refused),
            &refused,
        ));
        assert!((12..=refused.len()).contains(&len), "{len} bytes");
    }

    #[test]
    fn an_ordinary_error_answer_keeps_its_question() {
        let mut message = Message::query();
        message.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("docker.io.").expect("name"),
            RecordType::A,
        ));
        let packet = message.to_vec().expect("encode");
        let Inbound::Query(query) = wire::parse_query(&packet) else {
            panic!("a query");
        };
        let Handled::Reply(bytes) = error_reply(&query.response(ResponseCode::Refused), &packet)
        else {
            panic!("a reply");
        };
        assert_eq!(bytes.len(), packet.len());
        assert_eq!(Message::from_vec(&bytes).expect("decode").queries.len(), 1);
    }
}
