//! The DNS wire format at the edges of the query path: turning client bytes
//! into a [`ClientQuery`] or the error answer that README "How a query is
//! answered" (malformed input) names ([`query`]), building answers and
//! fitting them to the client's buffer, holding answers in encoded form
//! ([`WireAnswer`], in `answer`), the bytes exchanged with upstreams
//! (`upstream`), whether hickory-proto would decode an upstream's answer,
//! told without decoding it ([`rdata_verdict`], in `check`), and the one
//! walker of the record framing they all read messages with (`walk`).

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

mod answer;
mod check;
mod query;
mod upstream;
mod walk;

pub(crate) use answer::{AnswerFacts, AnswerWriter};
pub use answer::{TtlRule, WireAnswer};
pub use check::{Check, rdata_verdict};
#[cfg(test)]
pub(crate) use query::server_edns;
pub use query::{ClientQuery, Inbound, packet_question, parse_query};
pub use upstream::{encode_upstream_query, is_answer_to};
pub(crate) use upstream::{encode_upstream_query_into, header_and_question};

/// The two client-query parsers side by side, for the differential fuzz
/// target `query_parse` and the `query_parse` bench: [`parse_query`] is the
/// lean one with the full decode as its fallback.
pub(crate) mod parsers {
    pub use super::query::{Verdict, parse_full, parse_lean};
}

/// The EDNS buffer size this server announces and uses towards upstreams.
pub(crate) const EDNS_PAYLOAD: u16 = 1232;
/// The UDP answer limit for a client without EDNS.
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// Encodes `message`; over UDP, an answer larger than `limit` is replaced by
/// the same header and question with TC set and no records (README "How a query is answered", size).
/// `None` only if the message cannot be encoded at all.
pub(crate) fn encode_for(message: &Message, udp_limit: Option<usize>) -> Option<Vec<u8>> {
    let bytes = message.to_vec().ok()?;
    match udp_limit {
        Some(limit) if bytes.len() > limit => message.truncate().to_vec().ok(),
        _ => Some(bytes),
    }
}

/// An A, AAAA or CNAME record of this server's own.
pub fn address_record_a(name: &Name, ttl: u32, ip: Ipv4Addr) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::A(A(ip)))
}

/// An AAAA record of this server's own.
pub(crate) fn address_record_aaaa(name: &Name, ttl: u32, ip: Ipv6Addr) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(ip)))
}

/// A CNAME record of this server's own.
pub(crate) fn cname_record(name: &Name, ttl: u32, target: &Name) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::CNAME(CNAME(target.clone())))
}

/// The lower-cased wire form of a name: the cache's key, without allocation
/// beyond the one buffer.
pub(crate) fn name_key(name: &Name) -> Box<[u8]> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out.into_boxed_slice()
}

/// The wire form of a question (`QNAME QTYPE QCLASS`), name lower-cased.
pub fn question_bytes(name: &Name, query_type: RecordType, class: DNSClass) -> Box<[u8]> {
    let mut out = name_key(name).into_vec();
    out.extend_from_slice(&u16::from(query_type).to_be_bytes());
    out.extend_from_slice(&u16::from(class).to_be_bytes());
    out.into_boxed_slice()
}

/// Longest question: a name of 255 bytes (RFC 1035 §2.3.4), QTYPE, QCLASS.
pub(crate) const MAX_QUESTION: usize = 255 + 4;

/// A question's bytes (`QNAME QTYPE QCLASS`) held inline, so that a query
/// in flight carries its question without an allocation; copied by value.
#[derive(Clone, Copy)]
pub struct QuestionBytes {
    len: u16,
    bytes: [u8; MAX_QUESTION],
}

impl QuestionBytes {
    /// `question` held inline; `None` if it is longer than any question
    /// can be ([`MAX_QUESTION`]).
    pub fn new(question: &[u8]) -> Option<Self> {
        let len = u16::try_from(question.len())
            .ok()
            .filter(|&l| usize::from(l) <= MAX_QUESTION)?;
        let mut bytes = [0u8; MAX_QUESTION];
        bytes[..question.len()].copy_from_slice(question);
        Some(Self { len, bytes })
    }
}

impl std::ops::Deref for QuestionBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for QuestionBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("QuestionBytes").field(&&**self).finish()
    }
}

/// A name's wire form in lower case, root label included, on the stack:
/// what the cache key hashes and the unmapped-names report matches, made
/// once per query (RFC 1035 §2.3.4: at most 255 bytes).
pub struct LowerName {
    buf: [u8; 256],
    len: usize,
}

impl LowerName {
    /// The lower-cased wire form of `name`.
    pub fn of(name: &Name) -> Self {
        let mut buf = [0u8; 256];
        let mut len = 0;
        for label in name.iter() {
            // A parsed name always fits; stop rather than overrun.
            let Ok(label_len) = u8::try_from(label.len()) else {
                break;
            };
            let end = len + 1 + label.len();
            if end >= buf.len() {
                break;
            }
            buf[len] = label_len;
            for (slot, byte) in buf[len + 1..end].iter_mut().zip(label) {
                *slot = byte.to_ascii_lowercase();
            }
            len = end;
        }
        // The root label (buf[len] is already 0).
        Self { buf, len: len + 1 }
    }

    /// The bytes, root label included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Helpers shared by the unit tests of `wire`'s modules.
#[cfg(test)]
mod testing {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    use super::server_edns;

    /// A query for `name` with RD set and ID 0x1234; an OPT with DO if `edns`.
    pub(super) fn query_bytes(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
        if edns {
            message.set_edns(server_edns(true));
        }
        message.to_vec().expect("encode")
    }
}
