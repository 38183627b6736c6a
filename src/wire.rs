//! The DNS wire format at the edges of the query path: turning client bytes
//! into a [`ClientQuery`] (or the error answer README "How a query is answered", malformed input names), building
//! answers, fitting them to the client's buffer (§4.7), and [`WireAnswer`]:
//! an encoded answer whose ID, question case and TTLs are patched in place,
//! so that a cache hit costs a copy rather than a full encode.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// The EDNS buffer size this server announces and uses towards upstreams.
pub const EDNS_PAYLOAD: u16 = 1232;
/// The UDP answer limit for a client without EDNS.
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// The EDNS facts of a client's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEdns {
    /// Largest UDP answer the client accepts (at least 512).
    pub payload: u16,
    /// DNSSEC OK.
    pub dnssec_ok: bool,
}

/// A well-formed query with exactly one question.
#[derive(Debug, Clone)]
pub struct ClientQuery {
    /// The client's message ID.
    pub id: u16,
    /// RD as asked, copied into the answer.
    pub recursion_desired: bool,
    /// CD as asked.
    pub checking_disabled: bool,
    /// The question, with the client's letter case.
    pub query: Query,
    /// The client's OPT, if any.
    pub edns: Option<ClientEdns>,
}

impl ClientQuery {
    /// The asked name, as sent.
    pub fn name(&self) -> &Name {
        self.query.name()
    }

    /// The asked type.
    pub fn query_type(&self) -> RecordType {
        self.query.query_type()
    }

    /// Whether DO was set.
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// Largest answer that fits this client over UDP.
    pub fn udp_limit(&self) -> usize {
        self.edns.map_or(CLASSIC_UDP_LIMIT, |e| {
            usize::from(e.payload).max(CLASSIC_UDP_LIMIT)
        })
    }

    /// An empty answer to this query: ID, RD and question copied, RA set,
    /// OPT echoed when the client sent one.
    pub fn response(&self, rcode: ResponseCode) -> Message {
        let mut message = Message::response(self.id, OpCode::Query);
        message.metadata.recursion_desired = self.recursion_desired;
        message.metadata.recursion_available = true;
        message.metadata.checking_disabled = self.checking_disabled;
        message.metadata.response_code = rcode;
        message.add_query(self.query.clone());
        if let Some(edns) = self.edns {
            message.set_edns(server_edns(edns.dnssec_ok));
        }
        message
    }
}

/// The OPT this server puts in its answers.
pub fn server_edns(dnssec_ok: bool) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    edns.set_version(0);
    edns.set_dnssec_ok(dnssec_ok);
    edns
}

/// What the first look at a packet decides.
#[derive(Debug)]
pub enum Inbound {
    /// A query to answer.
    Query(ClientQuery),
    /// A query that gets an error answer at once (FORMERR, NOTIMP, BADVERS).
    Reject(Message, ResponseCode),
    /// Not a DNS query: dropped (UDP) or the connection ends (TCP).
    Drop,
}

/// Classifies raw bytes from a client (README "How a query is answered", malformed input).
pub fn parse_query(packet: &[u8]) -> Inbound {
    let Ok(message) = Message::from_vec(packet) else {
        return malformed_edns(packet).unwrap_or(Inbound::Drop);
    };
    if message.metadata.message_type != MessageType::Query {
        // Answers sent to a server are never answered: that way lies reflection.
        return Inbound::Drop;
    }
    let reply = |rcode: ResponseCode, with_edns: bool| {
        let mut out = Message::response(message.metadata.id, message.metadata.op_code);
        out.metadata.recursion_desired = message.metadata.recursion_desired;
        out.metadata.recursion_available = true;
        out.metadata.response_code = rcode;
        if message.queries.len() == 1 {
            out.add_queries(message.queries.iter().cloned());
        }
        if with_edns || message.edns.is_some() {
            let dnssec_ok = message.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
            out.set_edns(server_edns(dnssec_ok));
        }
        Inbound::Reject(out, rcode)
    };
    if message.metadata.op_code != OpCode::Query {
        return reply(ResponseCode::NotImp, false);
    }
    if message.queries.len() != 1 {
        return reply(ResponseCode::FormErr, false);
    }
    if let Some(edns) = &message.edns
        && edns.version() != 0
    {
        return reply(ResponseCode::BADVERS, true);
    }
    let edns = message.edns.as_ref().map(|e| ClientEdns {
        payload: e.max_payload().max(CLASSIC_UDP_LIMIT as u16),
        dnssec_ok: e.flags().dnssec_ok,
    });
    let Some(query) = message.queries.into_iter().next() else {
        return Inbound::Drop;
    };
    Inbound::Query(ClientQuery {
        id: message.metadata.id,
        recursion_desired: message.metadata.recursion_desired,
        checking_disabled: message.metadata.checking_disabled,
        query,
        edns,
    })
}

/// FORMERR for a query that does not decode only because of its OPT
/// records: an option that hickory cannot read (a client-subnet option with
/// an unknown family, an option running past the record), two OPTs, an OPT
/// outside the additional section. RFC 6891 §7 asks for FORMERR with an OPT
/// in the answer, so that the client tells a format error in EDNS from a
/// server without EDNS; dropping it left the client to time out. `None`
/// when the packet is not such a query (it is then dropped like any other
/// bytes that are not a DNS query). Runs only on packets that failed to
/// decode, never on the path of a well-formed query.
fn malformed_edns(packet: &[u8]) -> Option<Inbound> {
    let count = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]))
    };
    // A query (QR clear) with one question; the opcode is checked below.
    if packet.get(2)? & 0x80 != 0 || count(4)? != 1 {
        return None;
    }
    let mut at = skip_name(packet, 12)? + 4;
    // Every record's framing must hold; the OPT records are cut out.
    let mut kept = packet.get(..at)?.to_vec();
    let counts = [count(6)?, count(8)?, count(10)?];
    let mut opts = [0u16; 3];
    for section in 0..3 {
        for _ in 0..counts[section] {
            let start = at;
            at = skip_name(packet, at)?;
            let rtype = count(at)?;
            let rdlength = usize::from(count(at + 8)?);
            at += 10 + rdlength;
            if at > packet.len() {
                return None;
            }
            if rtype == u16::from(RecordType::OPT) {
                opts[section] += 1;
            } else {
                kept.extend_from_slice(&packet[start..at]);
            }
        }
    }
    if opts == [0; 3] {
        return None;
    }
    for (section, cut) in opts.iter().enumerate() {
        let value = counts[section] - cut;
        kept[6 + 2 * section..8 + 2 * section].copy_from_slice(&value.to_be_bytes());
    }
    let message = Message::from_vec(&kept).ok()?;
    if message.metadata.message_type != MessageType::Query || message.queries.len() != 1 {
        return None;
    }
    let mut out = Message::response(message.metadata.id, message.metadata.op_code);
    out.metadata.recursion_desired = message.metadata.recursion_desired;
    out.metadata.recursion_available = true;
    out.metadata.response_code = ResponseCode::FormErr;
    out.add_queries(message.queries);
    out.set_edns(server_edns(false));
    Some(Inbound::Reject(out, ResponseCode::FormErr))
}

/// Encodes `message`; over UDP, an answer larger than `limit` is replaced by
/// the same header and question with TC set and no records (README "How a query is answered", size).
/// `None` only if the message cannot be encoded at all.
pub fn encode_for(message: &Message, udp_limit: Option<usize>) -> Option<Vec<u8>> {
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
pub fn address_record_aaaa(name: &Name, ttl: u32, ip: Ipv6Addr) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(ip)))
}

/// A CNAME record of this server's own.
pub fn cname_record(name: &Name, ttl: u32, target: &Name) -> Record {
    Record::from_rdata(name.clone(), ttl, RData::CNAME(CNAME(target.clone())))
}

/// The lower-cased wire form of a name: the cache's key, without allocation
/// beyond the one buffer.
pub fn name_key(name: &Name) -> Box<[u8]> {
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
        let mut question_end = 0;
        walk_records(&bytes, &mut question_end, |_| {}).ok_or(WireError::Walk)?;
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
        let mut ignored = 0;
        let soa = u16::from(RecordType::SOA);
        walk_records(&self.bytes, &mut ignored, |record| {
            if record.section == 0 {
                facts.answers += 1;
            }
            if record.section < 2 {
                facts.smallest_ttl = Some(
                    facts
                        .smallest_ttl
                        .map_or(record.ttl, |t: u32| t.min(record.ttl)),
                );
            }
            if record.section == 1
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
        let mut ignored = 0;
        walk_records(&self.bytes, &mut ignored, |record| {
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
            let arcount = u16::from_be_bytes([out[10], out[11]]).saturating_add(1);
            out[10..12].copy_from_slice(&arcount.to_be_bytes());
            out.push(0); // root owner
            out.extend_from_slice(&u16::from(RecordType::OPT).to_be_bytes());
            out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
            out.extend_from_slice(&[0, 0, if edns.dnssec_ok { 0x80 } else { 0 }, 0]);
            out.extend_from_slice(&[0, 0]);
        }
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

/// The question bytes of a client packet (`QNAME QTYPE QCLASS`), if the name
/// is written without compression (always, in a sane query).
pub fn packet_question(packet: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    loop {
        let len = *packet.get(at)? as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
    packet.get(12..at + 4)
}

/// One resource record seen by [`walk_records`].
struct WalkedRecord {
    /// 0 answer, 1 authority, 2 additional.
    section: u8,
    rtype: u16,
    ttl_at: usize,
    ttl: u32,
    rdata: std::ops::Range<usize>,
}

/// Walks an encoded message with one question: sets where the question
/// ends and calls `visit` for every record but OPT. `None` if it does not walk.
fn walk_records(
    bytes: &[u8],
    question_end: &mut usize,
    mut visit: impl FnMut(WalkedRecord),
) -> Option<()> {
    let count = |at: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]) as usize)
    };
    if count(4)? != 1 {
        return None;
    }
    let (answers, authorities) = (count(6)?, count(8)?);
    let records = answers + authorities + count(10)?;
    let mut at = skip_name(bytes, 12)? + 4;
    if at > bytes.len() {
        return None;
    }
    *question_end = at;
    for index in 0..records {
        at = skip_name(bytes, at)?;
        let rtype = count(at)?;
        let ttl_at = at + 4;
        let value = u32::from_be_bytes(bytes.get(ttl_at..ttl_at + 4)?.try_into().ok()?);
        let rdlength = count(at + 8)?;
        let rdata = at + 10..at + 10 + rdlength;
        at = rdata.end;
        if at > bytes.len() {
            return None;
        }
        if rtype != usize::from(u16::from(RecordType::OPT)) {
            let section = if index < answers {
                0
            } else if index < answers + authorities {
                1
            } else {
                2
            };
            visit(WalkedRecord {
                section,
                rtype: rtype as u16,
                ttl_at,
                ttl: value,
                rdata,
            });
        }
    }
    Some(())
}

/// Where an answer's OPT record is, when it is the last record.
struct OptCut {
    /// (offset of the OPT record, ARCOUNT) if there is one.
    opt: Option<(usize, u16)>,
}

/// Finds the OPT record of an answer; `None` if the message does not walk
/// or has an OPT that is not the last record.
fn opt_position(bytes: &[u8]) -> Option<OptCut> {
    let count = |at: usize| -> Option<usize> {
        Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]) as usize)
    };
    if count(4)? != 1 {
        return None;
    }
    let arcount = count(10)?;
    let records = count(6)? + count(8)? + arcount;
    let mut at = skip_name(bytes, 12)? + 4;
    let mut opt = None;
    for index in 0..records {
        let start = at;
        at = skip_name(bytes, at)?;
        let rtype = count(at)?;
        let rdlength = count(at + 8)?;
        at += 10 + rdlength;
        if at > bytes.len() {
            return None;
        }
        if rtype == usize::from(u16::from(RecordType::OPT)) {
            let extended_rcode = *bytes.get(at - rdlength - 6)?;
            // The OPT must be the last record *and* in the additional section:
            // an upstream may put one last in the answer section with ARCOUNT 0,
            // and cutting it there would underflow ARCOUNT (found by fuzzing;
            // regression test below). Such odd shapes take the decode path.
            if index + 1 != records || arcount == 0 || extended_rcode != 0 {
                return None;
            }
            opt = Some((start, u16::try_from(arcount).ok()?));
        }
    }
    (at == bytes.len()).then_some(OptCut { opt })
}

fn skip_name(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *bytes.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l if l < 64 => at += 1 + l as usize,
            _ => return None,
        }
    }
}

/// The bytes of a query for upstream: ID, RD and AD set, `question`
/// (`QNAME QTYPE QCLASS` in wire form), and an OPT with our buffer size and
/// the client's DO bit. Built by hand: this runs on every cache miss.
pub fn encode_upstream_query(id: u16, question: &[u8], dnssec_ok: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + question.len() + 11);
    out.extend_from_slice(&id.to_be_bytes());
    // RD; AD asks a validating upstream to say what it validated (RFC 6840 §5.7).
    out.extend_from_slice(&[0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1]);
    out.extend_from_slice(question);
    out.push(0);
    out.extend_from_slice(&u16::from(RecordType::OPT).to_be_bytes());
    out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    out
}

/// Whether `answer` is a response with `id` to exactly `question` (case
/// aside): the anti-spoofing check of README "How a query is answered", upstream, on bytes.
pub fn is_answer_to(answer: &[u8], id: u16, question: &[u8]) -> bool {
    answer.len() >= 12 + question.len()
        && answer[0..2] == id.to_be_bytes()
        && answer[2] & 0x80 != 0
        && answer[2] & 0x78 == 0
        && answer[4..6] == [0, 1]
        && answer[12..12 + question.len()].eq_ignore_ascii_case(question)
}

/// The header and question of an encoded answer with TC set and no
/// records: what is sent when the answer cannot be sent whole.
pub fn header_and_question(answer: &[u8]) -> Option<Vec<u8>> {
    let end = skip_name(answer, 12)? + 4;
    let mut out = answer.get(..end)?.to_vec();
    out[2] |= 0x02;
    out[4..6].copy_from_slice(&[0, 1]);
    out[6..12].fill(0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).expect("name"), rtype));
        if edns {
            message.set_edns(server_edns(true));
        }
        message.to_vec().expect("encode")
    }

    #[test]
    fn garbage_is_dropped_and_bad_queries_rejected() {
        assert!(matches!(parse_query(&[1, 2, 3]), Inbound::Drop));
        let mut message = Message::new(1, MessageType::Query, OpCode::Query);
        let bytes = message.to_vec().expect("encode");
        assert!(matches!(
            parse_query(&bytes),
            Inbound::Reject(_, ResponseCode::FormErr)
        ));
        message.metadata.op_code = OpCode::Status;
        message.add_query(Query::query(Name::root(), RecordType::A));
        let bytes = message.to_vec().expect("encode");
        assert!(matches!(
            parse_query(&bytes),
            Inbound::Reject(_, ResponseCode::NotImp)
        ));
    }

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
    fn upstream_queries_are_well_formed() {
        let name = Name::from_ascii("a.example.").expect("name");
        let question = question_bytes(&name, RecordType::AAAA, DNSClass::IN);
        let bytes = encode_upstream_query(7, &question, true);
        let decoded = Message::from_vec(&bytes).expect("decode");
        assert_eq!(decoded.metadata.id, 7);
        assert!(decoded.metadata.recursion_desired);
        assert_eq!(decoded.queries[0].query_type(), RecordType::AAAA);
        let edns = decoded.edns.expect("edns");
        assert_eq!(edns.max_payload(), EDNS_PAYLOAD);
        assert!(edns.flags().dnssec_ok);
    }

    /// Fuzzing (fuzz target `upstream_answer`) found an upstream answer with
    /// ARCOUNT 0 whose last record, in the answer section, is an OPT: it was
    /// cut as if it were the additional section's, and `arcount - 1`
    /// underflowed (a panic with overflow checks, a bogus ARCOUNT without).
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
