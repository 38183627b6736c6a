//! One query on its way through the pipeline, and the types the pipeline's
//! parts share: what the listener does with a packet ([`Handled`]), the
//! query that waits for upstream ([`Pending`]), and the one failure type
//! ([`Failure`]) that knows its rcode, its metric outcome and its reason.
//!
//! Nothing here imports the pipeline (`resolve.rs`): the chase, the
//! single-flight and the replies build on these types, and the pipeline on
//! all of them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::ResponseCode;

use crate::cache::{AnswerCache, CacheEntry, CacheKey};
use crate::metrics::{Metrics, Outcome, Protocol};
use crate::records::CompiledRecord;
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamError;
use crate::wire::{ClientQuery, QuestionBytes, TtlRule, WireAnswer};

/// What the listener does with a packet.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "the pending query is moved once, not boxed per miss"
)]
pub enum Handled {
    /// Send the answer written into the caller's buffer.
    Reply,
    /// Send nothing (UDP) or close the connection (TCP).
    Drop,
    /// Needs upstream: run [`crate::resolve::Resolver::finish`] on it.
    /// Not boxed: every UDP miss takes this way, and a move of a few
    /// hundred bytes costs less than an allocation per miss.
    Pending(Pending),
}

/// How the query came, and so how large its answer may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: the answer is cut (TC) past `limit` bytes, the client's EDNS
    /// buffer (512 without EDNS).
    Udp {
        /// Largest answer the client takes.
        limit: usize,
    },
    /// TCP: the whole answer.
    Tcp,
}

impl Transport {
    /// The transport of `query` arriving over `protocol`.
    pub fn of(query: &ClientQuery, protocol: Protocol) -> Self {
        match protocol {
            Protocol::Udp => Transport::Udp {
                limit: query.udp_limit(),
            },
            Protocol::Tcp => Transport::Tcp,
        }
    }

    /// The size bound of an answer: `None` over TCP.
    pub fn udp_limit(self) -> Option<usize> {
        match self {
            Transport::Udp { limit } => Some(limit),
            Transport::Tcp => None,
        }
    }

    /// The metric label.
    pub fn protocol(self) -> Protocol {
        match self {
            Transport::Udp { .. } => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        }
    }
}

/// A parsed query from a client allowed to ask, with the snapshot it is
/// answered from.
#[derive(Debug)]
pub struct Request {
    /// The configuration in force when the query arrived.
    pub snapshot: Arc<Snapshot>,
    /// The query.
    pub query: ClientQuery,
    /// The question's bytes as the client sent them (`None` for the odd
    /// query whose name is compressed).
    pub question: Option<QuestionBytes>,
    /// Who asked.
    pub client: SocketAddr,
    /// How.
    pub transport: Transport,
    /// When the query arrived.
    pub started: Instant,
}

impl Request {
    /// The question's bytes as asked (`QNAME QTYPE QCLASS`, the client's
    /// case), built from the parsed name for the odd query whose name is
    /// compressed.
    pub fn asked(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.question {
            Some(question) => std::borrow::Cow::Borrowed(&**question),
            None => std::borrow::Cow::Owned(
                crate::wire::question_bytes(
                    self.query.name(),
                    self.query.query_type(),
                    self.query.query.query_class(),
                )
                .into_vec(),
            ),
        }
    }

    /// Counts the answer in the metrics and writes its log line.
    pub fn answered(&self, metrics: &Metrics, outcome: Outcome, rcode: ResponseCode) {
        metrics.query(self.transport.protocol(), outcome);
        self.log(outcome, rcode);
    }

    /// The query log line, when `[log] queries` is on.
    pub fn log(&self, outcome: Outcome, rcode: ResponseCode) {
        if self.snapshot.config.log.queries {
            tracing::info!(
                target: "accel_dns::query",
                client = %self.client,
                name = %self.query.name(),
                r#type = %self.query.query_type(),
                outcome = outcome.as_str(),
                rcode = %rcode,
                latency_us = self.started.elapsed().as_micros() as u64,
                "query"
            );
        }
    }

    /// Counts and logs `failure`, and writes its error answer into `out`.
    pub fn fail(&self, metrics: &Metrics, failure: &Failure, out: &mut Vec<u8>) {
        tracing::debug!(client = %self.client, name = %self.query.name(), reason = %failure, "answering {}", failure.rcode());
        self.answered(metrics, failure.outcome(), failure.rcode());
        crate::reply::error_answer(&self.query, failure.rcode(), self.transport, out);
    }
}

/// Why a query gets an error answer instead of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The client's source address is outside `allow`.
    #[error("client outside allow")]
    NotAllowed,
    /// The query came back from an upstream: a forwarding loop.
    #[error("the query came back through a forwarding loop")]
    Looped,
    /// No upstream answer could be had.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// A CNAME loop, or a chain longer than
    /// [`crate::chase::MAX_CNAME_CHAIN`], in the records.
    #[error("CNAME loop or chain too long in the records")]
    CnameLoop,
    /// The answer for a CNAME target could not be decoded or the whole
    /// answer could not be encoded.
    #[error("the answer could not be decoded or encoded")]
    Unencodable,
}

impl Failure {
    /// The rcode of its answer.
    pub fn rcode(&self) -> ResponseCode {
        match self {
            Failure::NotAllowed | Failure::Looped => ResponseCode::Refused,
            Failure::Upstream(_) | Failure::CnameLoop | Failure::Unencodable => {
                ResponseCode::ServFail
            }
        }
    }

    /// Its metric outcome.
    pub fn outcome(&self) -> Outcome {
        match self.rcode() {
            ResponseCode::Refused => Outcome::Refused,
            _ => Outcome::Servfail,
        }
    }
}

/// A query waiting for upstream.
#[derive(Debug)]
pub struct Pending {
    /// The query.
    pub request: Request,
    /// What upstream work it needs.
    pub work: Work,
}

/// What upstream work a [`Pending`] query needs.
#[derive(Debug)]
pub enum Work {
    /// Forward the question (a cache miss), keyed for the cache.
    Forward(CacheKey),
    /// Follow this CNAME record.
    Chase(Arc<CompiledRecord>),
}

/// An upstream answer as fetched once for every identical query waiting:
/// as stored in the cache (its TTLs then follow the cache's bounds from the
/// first answer on), or as received when it is not to be cached.
#[derive(Debug)]
pub enum Fetched {
    /// Stored in the cache.
    Cached(Arc<CacheEntry>),
    /// Not cacheable (truncated, no SOA for a negative answer, ...).
    Uncached(WireAnswer),
}

impl Fetched {
    /// Stores `answer` in `cache` under `key` if the caching rules take it.
    pub fn store(cache: &AnswerCache, key: CacheKey, dnssec_ok: bool, answer: WireAnswer) -> Self {
        match cache.store(key, dnssec_ok, answer) {
            Ok(entry) => Fetched::Cached(entry),
            Err(answer) => Fetched::Uncached(answer),
        }
    }

    /// The answer's bytes.
    pub fn wire(&self) -> &WireAnswer {
        match self {
            Fetched::Cached(entry) => &entry.answer,
            Fetched::Uncached(wire) => wire,
        }
    }

    /// How its TTLs are written into an answer.
    pub fn ttl_rule(&self) -> TtlRule {
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

/// The result of one upstream resolution, shared by its waiters.
pub(crate) type FetchResult = Result<Arc<Fetched>, UpstreamError>;
