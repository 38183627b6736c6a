//! The query pipeline (README "How a query is answered"), top to bottom:
//! parse → loop guard → ACL → records → cache → upstream.
//!
//! [`Resolver::handle`] answers everything that needs no upstream
//! synchronously (errors, REFUSED, records, cache hits) into the caller's
//! buffer, so the listeners answer those without spawning a task; the rest
//! comes back as a [`Pending`] query for [`Resolver::finish`]: a forwarded
//! miss (single-flight in `inflight.rs`, then `upstream/`), or a CNAME
//! record's target (`chase.rs`).

mod lookup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};

use crate::cache::{CacheKey, Lookup};
use crate::chase::chase;
use crate::inflight::{InFlight, Question};
use crate::loop_guard::LoopGuard;
use crate::metrics::{Metrics, Outcome, Protocol};
use crate::records::{Answer, RecordMatch};
use crate::reply;
use crate::request::{Failure, Handled, Pending, Request, Transport, Work};
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamError;
use crate::wire::{self, Inbound, LowerName};

/// The query path over the current snapshot.
pub struct Resolver {
    snapshot: ArcSwap<Snapshot>,
    metrics: Metrics,
    loops: Arc<LoopGuard>,
    inflight: InFlight,
}

impl Resolver {
    /// A resolver serving `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>, metrics: Metrics, loops: Arc<LoopGuard>) -> Self {
        Self {
            snapshot: ArcSwap::new(snapshot),
            inflight: InFlight::new(metrics.clone()),
            metrics,
            loops,
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

    /// The single-flight map of every listener.
    pub fn inflight(&self) -> &InFlight {
        &self.inflight
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answers `packet` from `client` into `out` if no upstream is needed.
    pub fn handle(
        &self,
        packet: &[u8],
        client: SocketAddr,
        protocol: Protocol,
        out: &mut Vec<u8>,
    ) -> Handled {
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
                return sent(reply::unamplified(&message, packet, out));
            }
        };
        let transport = Transport::of(&query, protocol);
        let request = Request {
            snapshot: self.snapshot.load_full(),
            question: None,
            query,
            client,
            transport,
            started,
        };
        let query = &request.query;
        let snapshot = &request.snapshot;

        if let Some(server) = self.loops.looped_through(query.name()) {
            server.mark_looped();
            self.metrics.query(protocol, Failure::Looped.outcome());
            reply::error_answer(query, ResponseCode::Refused, transport, out);
            return sent(!out.is_empty());
        }
        if !snapshot.allows(client.ip()) {
            let failure = Failure::NotAllowed;
            self.metrics.query(protocol, failure.outcome());
            request.log(failure.outcome(), failure.rcode());
            // The REFUSED answer is never larger than the query: no amplification.
            return sent(reply::unamplified(
                &query.response(failure.rcode()),
                packet,
                out,
            ));
        }

        let class = query.query.query_class();
        // Lower-cased once, for the records, the report and the cache key.
        let lower = LowerName::of(query.name());
        let packet_question = wire::packet_question(packet);
        // Whether no record exists for the name: it is forwarded as any
        // other name, and reported if a watched zone holds it (README
        // "Unmapped names").
        let mut absent = false;
        if class == DNSClass::IN || class == DNSClass::ANY {
            match snapshot
                .records
                .find_lower(&lower, client.ip().to_canonical())
            {
                RecordMatch::Answers(record) => {
                    record.hits.inc();
                    if let Answer::Cname(_) = record.answer
                        && query.query_type() != RecordType::CNAME
                    {
                        let work = Work::Chase(record.clone());
                        return self.pending(request, packet, work);
                    }
                    request.answered(&self.metrics, Outcome::Record, ResponseCode::NoError);
                    if let Some(question) = packet_question
                        && reply::write_record_answer(query, question, record, transport, out)
                    {
                        return Handled::Reply;
                    }
                    // A compressed question, or too large for the client:
                    // built and fitted by hickory.
                    let message = reply::record_answer(query, record);
                    return sent(reply::encode_into(&message, transport, out));
                }
                RecordMatch::Absent => absent = true,
                // Mapped, though no record answers this client now.
                RecordMatch::PassedOver => {}
            }
        }

        if absent {
            snapshot.watch.note(&lower, query.name());
        }
        let key = snapshot
            .cache
            .key_of(&lower, query.query_type(), class, query.dnssec_ok());
        if let Some(question) = packet_question
            && let Lookup::Fresh(entry) = snapshot.cache.get(&key, question, query.dnssec_ok())
        {
            out.clear();
            entry.answer.render(
                query,
                packet_question,
                entry.ttl_rule(),
                transport.udp_limit(),
                out,
            );
            request.answered(&self.metrics, Outcome::Cache, entry.answer.rcode());
            return Handled::Reply;
        }
        self.pending(request, packet, Work::Forward(key))
    }

    fn pending(&self, mut request: Request, packet: &[u8], work: Work) -> Handled {
        // The question as asked; rebuilt from the parsed query when the
        // packet's name is compressed.
        request.question = wire::packet_question(packet)
            .and_then(wire::QuestionBytes::new)
            .or_else(|| wire::QuestionBytes::new(&request.asked()));
        Handled::Pending(Pending { request, work })
    }

    /// Answers a query that needs upstream. Always returns an answer within
    /// the upstream timeout (SERVFAIL at worst).
    pub async fn finish(&self, pending: Pending) -> Vec<u8> {
        let Pending { request, work } = pending;
        let mut out = Vec::new();
        match work {
            Work::Forward(key) => self.forward(&request, key, &mut out).await,
            Work::Chase(record) => match chase(&self.inflight, &request, &record).await {
                Ok(message) => {
                    request.answered(
                        &self.metrics,
                        Outcome::Record,
                        message.metadata.response_code,
                    );
                    reply::encode_or_servfail(
                        &message,
                        &request.query,
                        request.transport,
                        &mut out,
                    );
                }
                Err(failure) => request.fail(&self.metrics, &failure, &mut out),
            },
        }
        out
    }

    /// A cache miss: one upstream resolution shared with identical misses;
    /// when it fails, the serve-stale rescue, else SERVFAIL.
    async fn forward(&self, request: &Request, key: CacheKey, out: &mut Vec<u8>) {
        let query = &request.query;
        // `pending` holds the question of every miss.
        let fetched = match &request.question {
            Some(bytes) => {
                let question = Question {
                    key,
                    bytes,
                    name: query.name(),
                    query_type: query.query_type(),
                    class: query.query.query_class(),
                    dnssec_ok: query.dnssec_ok(),
                };
                self.inflight.fetch(&request.snapshot, question).await
            }
            None => Err(UpstreamError::AllFailed),
        };
        reply::forwarded(
            &self.metrics,
            request,
            key,
            fetched.as_deref().map_err(|e| *e),
            out,
        );
    }
}

/// [`Handled::Reply`] if an answer was written, else [`Handled::Drop`].
fn sent(written: bool) -> Handled {
    if written {
        Handled::Reply
    } else {
        Handled::Drop
    }
}
