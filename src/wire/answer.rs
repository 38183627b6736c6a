//! Answers held in encoded form: [`WireAnswer`], made once from an
//! upstream's bytes or a built message, and rendered for each client by
//! patching the ID, flags, question case and TTLs in place ([`TtlRule`]), so
//! that a cache hit costs a copy rather than a full encode.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use super::EDNS_PAYLOAD;
use super::query::ClientQuery;
use super::walk::{Records, Section, Walked};

/// An answer held in encoded form: the header (ID 0), one question in lower
/// case, the records, and no OPT — one allocation. [`WireAnswer::render`]
/// makes a client's answer out of it by patching the ID, flags, question
/// case and TTLs (found by walking the records, never stored twice).
#[derive(Debug, Clone)]
pub struct WireAnswer {
    bytes: Box<[u8]>,
    question_end: u16,
}

/// What the cache rules look at in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerFacts {
    /// The rcode.
    pub rcode: ResponseCode,
    /// TC set.
    pub truncated: bool,
    /// Records in the answer section.
    pub answers: usize,
    /// Smallest TTL of the answer and authority sections.
    pub smallest_ttl: Option<u32>,
    /// The first SOA of the authority section: (record TTL, MINIMUM).
    pub soa: Option<(u32, u32)>,
}

/// Why an upstream message cannot be held as a [`WireAnswer`].
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// hickory could not encode it.
    #[error("cannot encode answer: {0}")]
    Encode(#[from] hickory_proto::ProtoError),
    /// The bytes do not walk as one DNS message with one question.
    #[error("answer is not walkable")]
    Walk,
}

impl WireAnswer {
    /// Encodes `message` in canonical form (ID 0, question lower-cased, OPT
    /// removed).
    pub fn from_message(message: &Message) -> Result<Self, WireError> {
        let mut canonical = message.clone();
        canonical.metadata.id = 0;
        canonical.metadata.message_type = MessageType::Response;
        canonical.metadata.recursion_available = true;
        canonical.edns = None;
        canonical.signature = None;
        for query in &mut canonical.queries {
            let lower = query.name().to_lowercase();
            query.set_name(lower);
        }
        if canonical.metadata.response_code.high() > 0 {
            // Extended rcodes need an OPT; without one the nearest is SERVFAIL.
            canonical.metadata.response_code = ResponseCode::ServFail;
        }
        Self::from_canonical(canonical.to_vec()?)
    }

    /// Takes an upstream answer's own bytes (already checked by
    /// [`is_answer_to`]) without decoding or re-encoding them: ID 0, RA set,
    /// question lower-cased, the trailing OPT cut off. Falls back to a
    /// decode and [`WireAnswer::from_message`] for the rare shapes it cannot
    /// cut (OPT not last, an extended rcode).
    pub fn from_upstream(mut bytes: Vec<u8>) -> Result<Self, WireError> {
        let Some(cut) = opt_position(&bytes) else {
            let message = Message::from_vec(&bytes).map_err(|_| WireError::Walk)?;
            return Self::from_message(&message);
        };
        if let Some((opt_start, arcount)) = cut.opt {
            bytes.truncate(opt_start);
            bytes[10..12].copy_from_slice(&(arcount - 1).to_be_bytes());
        }
        bytes[0..2].fill(0);
        bytes[3] |= 0x80;
        let mut at = 12;
        while let Some(&len) = bytes.get(at) {
            if len == 0 || len > 63 {
                break;
            }
            let end = (at + 1 + len as usize).min(bytes.len());
            bytes[at + 1..end].make_ascii_lowercase();
            at = end;
        }
        Self::from_canonical(bytes)
    }

    fn from_canonical(bytes: Vec<u8>) -> Result<Self, WireError> {
        let question_end = walk_records(&bytes, |_| {}).ok_or(WireError::Walk)?;
        Ok(Self {
            bytes: bytes.into_boxed_slice(),
            question_end: u16::try_from(question_end).map_err(|_| WireError::Walk)?,
        })
    }

    fn question_end(&self) -> usize {
        usize::from(self.question_end)
    }

    /// The rcode (4 bits; extended rcodes never get here).
    pub fn rcode(&self) -> ResponseCode {
        ResponseCode::from_low(self.bytes[3] & 0x0F)
    }

    /// Whether TC was set.
    pub fn truncated(&self) -> bool {
        self.bytes[2] & 0x02 != 0
    }

    /// The lower-cased question (`QNAME QTYPE QCLASS` in wire form).
    pub fn question(&self) -> &[u8] {
        &self.bytes[12..self.question_end()]
    }

    /// What the cache needs to know of this answer (README "How a query is answered", caching rules).
    pub fn facts(&self) -> AnswerFacts {
        let mut facts = AnswerFacts {
            rcode: self.rcode(),
            truncated: self.truncated(),
            answers: 0,
            smallest_ttl: None,
            soa: None,
        };
        let soa = u16::from(RecordType::SOA);
        walk_records(&self.bytes, |record| {
            if record.section == Section::Answer {
                facts.answers += 1;
            }
            if record.section < Section::Additional {
                facts.smallest_ttl = Some(
                    facts
                        .smallest_ttl
                        .map_or(record.ttl, |t: u32| t.min(record.ttl)),
                );
            }
            if record.section == Section::Authority
                && record.rtype == soa
                && facts.soa.is_none()
                && record.rdata.len() >= 22
            {
                let end = record.rdata.end;
                let minimum = self.bytes[end - 4..end]
                    .try_into()
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                facts.soa = Some((record.ttl, minimum));
            }
        });
        facts
    }

    /// Bytes held (for memory accounting).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the encoding is empty (never, for a built answer).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Decodes the held answer with TTLs written by `ttl` (used by CNAME
    /// chasing, which needs the records themselves).
    pub fn to_message(&self, ttl: TtlRule) -> Option<Message> {
        let mut bytes = self.bytes.to_vec();
        self.patch_ttls(&mut bytes, ttl);
        Message::from_vec(&bytes).ok()
    }

    /// Writes TTLs into `out`, a copy of the held bytes.
    fn patch_ttls(&self, out: &mut [u8], rule: TtlRule) {
        walk_records(&self.bytes, |record| {
            let (at, original) = (record.ttl_at, record.ttl);
            let ttl = match rule {
                TtlRule::Aged { age, min, max } => {
                    original.clamp(min.min(max), max).saturating_sub(age)
                }
                TtlRule::Fixed(ttl) => ttl,
            };
            if let Some(field) = out.get_mut(at..at + 4) {
                field.copy_from_slice(&ttl.to_be_bytes());
            }
        });
    }

    /// Writes the answer for `query` into `out`: the client's ID, RD and
    /// question case, TTLs by `ttl`, an OPT if the client sent one, and over
    /// UDP a truncated form when it does not fit `udp_limit`.
    pub fn render(
        &self,
        query: &ClientQuery,
        packet_question: Option<&[u8]>,
        ttl: TtlRule,
        udp_limit: Option<usize>,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        let opt_len = if query.edns.is_some() { 11 } else { 0 };
        let full_len = self.bytes.len() + opt_len;
        let truncate = udp_limit.is_some_and(|limit| full_len > limit);
        let body_end = if truncate {
            self.question_end()
        } else {
            self.bytes.len()
        };
        out.extend_from_slice(&self.bytes[..body_end]);
        out[0..2].copy_from_slice(&query.id.to_be_bytes());
        // Flags: keep QR/opcode/AA/TC/AD/CD/rcode, set RD as asked and RA.
        out[2] = (out[2] & !0x01) | u8::from(query.recursion_desired);
        out[3] |= 0x80;
        if let Some(question) = packet_question
            && question.len() == self.question_end() - 12
            && question.eq_ignore_ascii_case(&self.bytes[12..self.question_end()])
        {
            out[12..self.question_end()].copy_from_slice(question);
        }
        if truncate {
            out[2] |= 0x02;
            out[6..12].fill(0);
        } else {
            self.patch_ttls(out, ttl);
        }
        if let Some(edns) = query.edns {
            push_opt(out, edns.dnssec_ok);
        }
    }
}

/// Appends this server's OPT record (README "How a query is answered",
/// EDNS) to the message in `out` and counts it in ARCOUNT.
fn push_opt(out: &mut Vec<u8>, dnssec_ok: bool) {
    if let Some(count) = out.get_mut(10..12) {
        let arcount = u16::from_be_bytes([count[0], count[1]]).saturating_add(1);
        count.copy_from_slice(&arcount.to_be_bytes());
    }
    out.push(0); // root owner
    out.extend_from_slice(&u16::from(RecordType::OPT).to_be_bytes());
    out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
    // Extended rcode 0, version 0, DO as asked; no options.
    out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
    out.extend_from_slice(&[0, 0]);
}

/// An answer of this server's own records written byte by byte into the
/// caller's buffer (no message built, nothing allocated once the buffer
/// has grown): the client's ID, RD and CD, QR and RA set, rcode NOERROR,
/// the question as the client sent it, then each record with its owner a
/// compression pointer to the question's name (RFC 1035 §4.1.4), class IN.
pub(crate) struct AnswerWriter<'a> {
    out: &'a mut Vec<u8>,
    answers: u16,
    dnssec_ok: Option<bool>,
}

/// The compression pointer to the question's name, right after the header.
const POINTER_TO_QUESTION: [u8; 2] = [0xc0, 0x0c];

impl<'a> AnswerWriter<'a> {
    /// Starts the answer to `query`, whose question's bytes (`QNAME QTYPE
    /// QCLASS`, the name without compression) are `question`.
    pub(crate) fn start(query: &ClientQuery, question: &[u8], out: &'a mut Vec<u8>) -> Self {
        out.clear();
        out.extend_from_slice(&query.id.to_be_bytes());
        // QR, opcode QUERY, RD as asked; RA, CD as asked, NOERROR.
        out.push(0x80 | u8::from(query.recursion_desired));
        out.push(0x80 | if query.checking_disabled { 0x10 } else { 0 });
        // QDCOUNT 1; ANCOUNT patched by `finish`; NSCOUNT and ARCOUNT 0.
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(question);
        Self {
            out,
            answers: 0,
            dnssec_ok: query.edns.map(|e| e.dnssec_ok),
        }
    }

    /// Adds an A record.
    pub(crate) fn a(&mut self, ttl: u32, ip: Ipv4Addr) {
        self.record(RecordType::A, ttl, &ip.octets());
    }

    /// Adds an AAAA record.
    pub(crate) fn aaaa(&mut self, ttl: u32, ip: Ipv6Addr) {
        self.record(RecordType::AAAA, ttl, &ip.octets());
    }

    /// Adds a CNAME record to `target` (written without compression).
    pub(crate) fn cname(&mut self, ttl: u32, target: &Name) {
        let rdata_at = self.header(RecordType::CNAME, ttl);
        for label in target.iter() {
            // A parsed name's labels are at most 63 bytes.
            self.out.push(label.len() as u8);
            self.out.extend_from_slice(label);
        }
        self.out.push(0);
        self.close(rdata_at);
    }

    /// Ends the answer (ANCOUNT, the OPT when the client sent one);
    /// `false` when it is larger than `udp_limit`, which then is the
    /// caller's to truncate.
    pub(crate) fn finish(self, udp_limit: Option<usize>) -> bool {
        if let Some(count) = self.out.get_mut(6..8) {
            count.copy_from_slice(&self.answers.to_be_bytes());
        }
        if let Some(dnssec_ok) = self.dnssec_ok {
            push_opt(self.out, dnssec_ok);
        }
        udp_limit.is_none_or(|limit| self.out.len() <= limit)
    }

    fn record(&mut self, rtype: RecordType, ttl: u32, rdata: &[u8]) {
        let rdata_at = self.header(rtype, ttl);
        self.out.extend_from_slice(rdata);
        self.close(rdata_at);
    }

    /// Writes a record's owner, type, class and TTL, and room for its
    /// RDLENGTH; returns where its RDATA starts.
    fn header(&mut self, rtype: RecordType, ttl: u32) -> usize {
        self.out.extend_from_slice(&POINTER_TO_QUESTION);
        self.out.extend_from_slice(&u16::from(rtype).to_be_bytes());
        self.out
            .extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        self.out.extend_from_slice(&[0, 0]);
        self.out.len()
    }

    /// Fills in the RDLENGTH of the record whose RDATA started at `rdata_at`.
    fn close(&mut self, rdata_at: usize) {
        let len = (self.out.len() - rdata_at) as u16;
        if let Some(field) = self.out.get_mut(rdata_at - 2..rdata_at) {
            field.copy_from_slice(&len.to_be_bytes());
        }
        self.answers = self.answers.saturating_add(1);
    }
}

/// How TTLs are written when an answer is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlRule {
    /// Bounded to `[min, max]`, then lowered by `age` seconds held (never below 0).
    Aged {
        /// Seconds held.
        age: u32,
        /// Lower bound before ageing.
        min: u32,
        /// Upper bound before ageing.
        max: u32,
    },
    /// All set to this value (stale answers).
    Fixed(u32),
}

/// Calls `visit` for every record of `bytes` but OPT; `None` if the message
/// (one question) does not walk, else where the question ends.
fn walk_records(bytes: &[u8], mut visit: impl FnMut(Walked)) -> Option<usize> {
    let records = Records::new(bytes)?;
    let question_end = records.question_end();
    for record in records {
        let record = record.ok()?;
        if record.rtype != u16::from(RecordType::OPT) {
            visit(record);
        }
    }
    Some(question_end)
}

/// Where an answer's OPT record is, when it is the last record.
struct OptCut {
    /// (offset of the OPT record, ARCOUNT) if there is one.
    opt: Option<(usize, u16)>,
}

/// Finds the OPT record of an answer; `None` if the message does not walk
/// or has an OPT that is not the last record.
fn opt_position(bytes: &[u8]) -> Option<OptCut> {
    let mut records = Records::new(bytes)?;
    let total = records.total();
    let arcount = super::walk::counts(bytes)?[3];
    let mut opt = None;
    for record in records.by_ref() {
        let record = record.ok()?;
        if record.rtype == u16::from(RecordType::OPT) {
            let extended_rcode = *bytes.get(record.ttl_at)?;
            // The OPT must be the last record *and* in the additional section:
            // an upstream may put one last in the answer section with ARCOUNT 0,
            // and cutting it there would underflow ARCOUNT (found by fuzzing;
            // regression test below). Such odd shapes take the decode path.
            if record.index + 1 != total || arcount == 0 || extended_rcode != 0 {
                return None;
            }
            opt = Some((record.offset, arcount));
        }
    }
    (records.position() == bytes.len()).then_some(OptCut { opt })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{OpCode, Query};
    use hickory_proto::rr::{DNSClass, Name};

    use super::super::testing::query_bytes;
    use super::super::{
        Inbound, address_record_a, is_answer_to, packet_question, parse_query, question_bytes,
        server_edns,
    };
    use super::*;

    #[test]
    fn wire_answer_patches_id_case_and_ttls() {
        let packet = query_bytes("Docker.IO.", RecordType::A, true);
        let Inbound::Query(query) = parse_query(&packet) else {
            panic!("not a query")
        };
        let mut response = query.response(ResponseCode::NoError);
        response.add_answer(address_record_a(
            &query.name().to_lowercase(),
            300,
            Ipv4Addr::new(203, 0, 113, 10),
        ));
        let wire = WireAnswer::from_message(&response).expect("wire");
        let mut out = Vec::new();
        wire.render(
            &query,
            packet_question(&packet),
            TtlRule::Aged {
                age: 100,
                min: 0,
                max: u32::MAX,
            },
            Some(512),
            &mut out,
        );
        let decoded = Message::from_vec(&out).expect("decode");
        assert_eq!(decoded.metadata.id, 0x1234);
        assert_eq!(decoded.queries[0].name().to_ascii(), "Docker.IO.");
        assert_eq!(decoded.answers[0].ttl, 200);
        assert!(decoded.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
        assert!(decoded.metadata.recursion_available);
    }

    #[test]
    fn oversized_udp_answers_are_truncated() {
        let packet = query_bytes("big.example.", RecordType::A, false);
        let Inbound::Query(query) = parse_query(&packet) else {
            panic!("not a query")
        };
        let mut response = query.response(ResponseCode::NoError);
        for i in 0..60u8 {
            response.add_answer(address_record_a(
                query.name(),
                60,
                Ipv4Addr::new(198, 51, 100, i),
            ));
        }
        let wire = WireAnswer::from_message(&response).expect("wire");
        let mut out = Vec::new();
        wire.render(
            &query,
            None,
            TtlRule::Aged {
                age: 0,
                min: 0,
                max: u32::MAX,
            },
            Some(query.udp_limit()),
            &mut out,
        );
        let decoded = Message::from_vec(&out).expect("decode");
        assert!(decoded.metadata.truncation);
        assert!(decoded.answers.is_empty());
        wire.render(
            &query,
            None,
            TtlRule::Aged {
                age: 0,
                min: 0,
                max: u32::MAX,
            },
            None,
            &mut out,
        );
        assert_eq!(Message::from_vec(&out).expect("decode").answers.len(), 60);
    }

    #[test]
    fn upstream_bytes_are_held_without_their_opt() {
        let name = Name::from_ascii("MiXed.Example.").expect("name");
        let mut message = Message::new(0x4242, MessageType::Response, OpCode::Query);
        message.add_query(Query::query(name.clone(), RecordType::A));
        message.add_answer(address_record_a(&name, 120, Ipv4Addr::new(198, 51, 100, 1)));
        message.set_edns(server_edns(false));
        let bytes = message.to_vec().expect("encode");
        let question = question_bytes(&name, RecordType::A, DNSClass::IN);
        assert!(is_answer_to(&bytes, 0x4242, &question));
        assert!(!is_answer_to(&bytes, 0x4243, &question));
        let held = WireAnswer::from_upstream(bytes).expect("held");
        assert_eq!(held.question(), &question[..]);
        let facts = held.facts();
        assert_eq!(
            (facts.answers, facts.smallest_ttl, facts.soa),
            (1, Some(120), None)
        );
        let decoded = held.to_message(TtlRule::Fixed(7)).expect("decode");
        assert!(decoded.edns.is_none());
        assert_eq!(decoded.answers[0].ttl, 7);
    }

    #[test]
    fn an_opt_record_in_the_answer_section_is_not_cut_as_the_additional_opt() {
        let name = Name::from_ascii("example.").expect("name");
        let question = question_bytes(&name, RecordType::AAAA, DNSClass::IN);
        let mut bytes = vec![0x42, 0x42, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        bytes.extend_from_slice(&question);
        // One "answer": an OPT (root owner, TYPE 41, payload 1232, no data).
        bytes.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert!(is_answer_to(&bytes, 0x4242, &question));
        // Held through the decode path, or refused; never a panic.
        if let Ok(held) = WireAnswer::from_upstream(bytes) {
            assert_eq!(held.question(), &question[..]);
            assert_eq!(held.bytes[10..12], [0, 0], "ARCOUNT stays 0");
        }
        // The artifact as the fuzzer wrote it.
        let artifact = [
            0x42, 0x42, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c,
            0x00, 0x01, 0xc0, 0x0c, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00, 0x10,
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x29, 0x04,
            0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let _ = WireAnswer::from_upstream(artifact.to_vec());
    }
}
