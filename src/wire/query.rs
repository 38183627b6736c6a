//! The client's query: [`parse_query`] classifies a client's bytes as a
//! [`ClientQuery`] to answer, an error answer to send at once, or bytes to
//! drop (README "How a query is answered", malformed input).
//!
//! Two parsers give the verdict. [`parse_lean`] reads what a usual query
//! holds — the header, one question written without compression, at most
//! one OPT — without building a hickory `Message`; the question is read
//! with hickory's own `Query` decoder, so the `Name` is the one a full
//! decode makes (case kept, stored inline for names up to 32 bytes: no
//! allocation). Anything else it is not sure of (a compressed name, more or
//! fewer questions, records in other sections, an OPT option hickory reads
//! by content, framing that does not fit exactly) it leaves to
//! [`parse_full`], the full decode, which is the reference: both must give
//! the same verdict on every input (the `query_parse` fuzz target checks).

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};

use super::walk::{self, Records, Section, Walked};
use super::{CLASSIC_UDP_LIMIT, EDNS_PAYLOAD};

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
pub(crate) fn server_edns(dnssec_ok: bool) -> Edns {
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

/// Classifies raw bytes from a client (README "How a query is answered",
/// malformed input): the lean parser first, the full decode for anything
/// it leaves.
pub fn parse_query(packet: &[u8]) -> Inbound {
    parse_lean(packet).unwrap_or_else(|| parse_full(packet))
}

/// The error answer to a query: ID, opcode, RD and (when there is exactly
/// one) the question copied, RA set, an OPT when the client sent one
/// (`edns` is then its DO bit).
fn reject(
    header: &Message,
    query: Option<Query>,
    edns: Option<bool>,
    rcode: ResponseCode,
) -> Inbound {
    let mut out = Message::response(header.metadata.id, header.metadata.op_code);
    out.metadata.recursion_desired = header.metadata.recursion_desired;
    out.metadata.recursion_available = true;
    out.metadata.response_code = rcode;
    if let Some(query) = query {
        out.add_query(query);
    }
    if let Some(dnssec_ok) = edns {
        out.set_edns(server_edns(dnssec_ok));
    }
    Inbound::Reject(out, rcode)
}

/// The verdict once the message is read: NOTIMP for another opcode,
/// FORMERR unless there is exactly one question, BADVERS for an EDNS
/// version other than 0, else the query.
fn classify(header: &Message, mut queries: Vec<Query>, edns: Option<&Edns>) -> Inbound {
    let dnssec_ok = edns.map(|e| e.flags().dnssec_ok);
    let single = |queries: &mut Vec<Query>| (queries.len() == 1).then(|| queries.remove(0));
    if header.metadata.op_code != OpCode::Query {
        return reject(
            header,
            single(&mut queries),
            dnssec_ok,
            ResponseCode::NotImp,
        );
    }
    let Some(query) = single(&mut queries) else {
        return reject(header, None, dnssec_ok, ResponseCode::FormErr);
    };
    if edns.is_some_and(|e| e.version() != 0) {
        return reject(header, Some(query), dnssec_ok, ResponseCode::BADVERS);
    }
    Inbound::Query(ClientQuery {
        id: header.metadata.id,
        recursion_desired: header.metadata.recursion_desired,
        checking_disabled: header.metadata.checking_disabled,
        query,
        edns: edns.map(|e| ClientEdns {
            payload: e.max_payload().max(CLASSIC_UDP_LIMIT as u16),
            dnssec_ok: e.flags().dnssec_ok,
        }),
    })
}

/// The full decode: hickory's `Message::from_vec`, then [`classify`]; a
/// message that does not decode gets FORMERR if only its OPT is at fault
/// ([`malformed_edns`]) and is dropped otherwise. The reference verdict.
pub fn parse_full(packet: &[u8]) -> Inbound {
    let Ok(mut message) = Message::from_vec(packet) else {
        return malformed_edns(packet).unwrap_or(Inbound::Drop);
    };
    if message.metadata.message_type != MessageType::Query {
        // Answers sent to a server are never answered: that way lies reflection.
        return Inbound::Drop;
    }
    let queries = std::mem::take(&mut message.queries);
    let edns = message.edns.take();
    classify(&message, queries, edns.as_ref())
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
    // A query (QR clear) with one question; the opcode is checked below.
    if packet.get(2)? & 0x80 != 0 {
        return None;
    }
    let records = Records::new(packet)?;
    // Every record's framing must hold; the OPT records are cut out.
    let mut kept = packet[..records.question_end()].to_vec();
    let mut counts = walk::counts(packet)?;
    let mut cut = false;
    for record in records {
        let record = record.ok()?;
        if record.rtype == u16::from(RecordType::OPT) {
            counts[1 + record.section as usize] -= 1;
            cut = true;
        } else {
            kept.extend_from_slice(&packet[record.offset..record.end()]);
        }
    }
    if !cut {
        return None;
    }
    for (section, value) in counts[1..].iter().enumerate() {
        kept[6 + 2 * section..8 + 2 * section].copy_from_slice(&value.to_be_bytes());
    }
    let mut message = Message::from_vec(&kept).ok()?;
    if message.metadata.message_type != MessageType::Query || message.queries.len() != 1 {
        return None;
    }
    let query = message.queries.pop();
    Some(reject(&message, query, Some(false), ResponseCode::FormErr))
}

/// What the lean parser reads of an OPT record.
struct LeanEdns {
    /// The payload size as hickory keeps it (at least 512, RFC 6891 §6.2.3).
    payload: u16,
    /// The EDNS version.
    version: u8,
    /// DNSSEC OK.
    dnssec_ok: bool,
}

/// Option codes whose data hickory decodes by content (NSID, DAU, DHU,
/// N3U, client subnet) and may refuse: left to the full decode.
const OPTIONS_READ_BY_CONTENT: [u16; 5] = [3, 5, 6, 7, 8];

/// The OPT facts of `record`, if it is one the lean parser is sure hickory
/// reads the same way: root owner, in the additional section, options that
/// exactly fill the RDATA (RFC 6891 §6.1.2) and none read by content.
fn lean_opt(packet: &[u8], record: &Walked) -> Option<LeanEdns> {
    if record.rtype != u16::from(RecordType::OPT)
        || record.section != Section::Additional
        || packet.get(record.name.clone())? != [0]
    {
        return None;
    }
    let mut at = record.rdata.start;
    while at < record.rdata.end {
        let code = walk::read_u16(packet, at)?;
        let length = usize::from(walk::read_u16(packet, at + 2)?);
        at += 4 + length;
        if at > record.rdata.end || OPTIONS_READ_BY_CONTENT.contains(&code) {
            return None;
        }
    }
    Some(LeanEdns {
        payload: record.class.max(CLASSIC_UDP_LIMIT as u16),
        version: (record.ttl >> 16) as u8,
        dnssec_ok: record.ttl & 0x8000 != 0,
    })
}

/// The lean parser: the verdict on a usual query without building a
/// hickory `Message`, or `None` when it leaves the packet to
/// [`parse_full`] (see the module doc for what it leaves).
pub fn parse_lean(packet: &[u8]) -> Option<Inbound> {
    let Some(&[id_high, id_low, flags, flags_low]) = packet.get(..4) else {
        // Too short for a header: hickory cannot decode it either.
        return Some(Inbound::Drop);
    };
    if packet.len() < 12 || flags & 0x80 != 0 {
        // A short header or QR set: dropped whatever follows.
        return Some(Inbound::Drop);
    }
    let [_, answers, authorities, additionals] = walk::counts(packet)?;
    if answers != 0 || authorities != 0 || additionals > 1 {
        return None;
    }
    let mut records = Records::new(packet)?;
    if walk::plain_name_end(packet, 12)? + 4 != records.question_end() {
        return None;
    }
    let mut decoder = BinDecoder::new(packet);
    decoder.read_slice(12).ok()?;
    let query = Query::read(&mut decoder).ok()?;
    let edns = match records.next() {
        None => None,
        Some(record) => Some(lean_opt(packet, &record.ok()?)?),
    };
    let mut header = Message::new(
        u16::from_be_bytes([id_high, id_low]),
        MessageType::Query,
        OpCode::from_u8((flags & 0x78) >> 3),
    );
    header.metadata.recursion_desired = flags & 0x01 != 0;
    header.metadata.checking_disabled = flags_low & 0x10 != 0;
    let dnssec_ok = edns.as_ref().map(|e| e.dnssec_ok);
    if header.metadata.op_code != OpCode::Query {
        return Some(reject(
            &header,
            Some(query),
            dnssec_ok,
            ResponseCode::NotImp,
        ));
    }
    if edns.as_ref().is_some_and(|e| e.version != 0) {
        return Some(reject(
            &header,
            Some(query),
            dnssec_ok,
            ResponseCode::BADVERS,
        ));
    }
    Some(Inbound::Query(ClientQuery {
        id: header.metadata.id,
        recursion_desired: header.metadata.recursion_desired,
        checking_disabled: header.metadata.checking_disabled,
        query,
        edns: edns.map(|e| ClientEdns {
            payload: e.payload,
            dnssec_ok: e.dnssec_ok,
        }),
    }))
}

/// A verdict in comparable form: what the differential fuzz target and the
/// tests hold the two parsers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted: the header bits, the question as sent and the EDNS facts.
    Query {
        /// Message ID.
        id: u16,
        /// RD.
        recursion_desired: bool,
        /// CD.
        checking_disabled: bool,
        /// The name's labels as sent (case kept), root label last.
        name: Vec<u8>,
        /// Whether the name is fully qualified.
        fqdn: bool,
        /// QTYPE.
        query_type: u16,
        /// QCLASS.
        query_class: u16,
        /// The OPT facts.
        edns: Option<ClientEdns>,
    },
    /// An error answer: its rcode and its encoding (`None` if it does not encode).
    Reject {
        /// The rcode.
        rcode: u16,
        /// The answer's bytes.
        answer: Option<Vec<u8>>,
    },
    /// Dropped.
    Drop,
}

impl Verdict {
    /// The comparable form of `inbound`.
    pub fn of(inbound: &Inbound) -> Self {
        match inbound {
            Inbound::Query(query) => Self::Query {
                id: query.id,
                recursion_desired: query.recursion_desired,
                checking_disabled: query.checking_disabled,
                name: labels(query.name()),
                fqdn: query.name().is_fqdn(),
                query_type: u16::from(query.query_type()),
                query_class: u16::from(query.query.query_class()),
                edns: query.edns,
            },
            Inbound::Reject(message, rcode) => Self::Reject {
                rcode: u16::from(*rcode),
                answer: message.to_bytes().ok(),
            },
            Inbound::Drop => Self::Drop,
        }
    }
}

/// A name's labels in wire form, case kept.
fn labels(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// The question bytes of a client packet (`QNAME QTYPE QCLASS`), if the name
/// is written without compression (always, in a sane query).
pub fn packet_question(packet: &[u8]) -> Option<&[u8]> {
    packet.get(12..walk::plain_name_end(packet, 12)? + 4)
}

#[cfg(test)]
mod tests {
    use super::super::testing::query_bytes;
    use super::*;

    /// A header: ID 0x1234, `flags`, and the four counts.
    fn header(flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut out = vec![0x12, 0x34];
        out.extend_from_slice(&flags.to_be_bytes());
        for count in counts {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out
    }

    /// `labels` written out, then QTYPE A, QCLASS IN.
    fn question(labels: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for label in labels {
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.extend_from_slice(&[0, 0, 1, 0, 1]);
        out
    }

    /// An OPT: payload, version, DO, and raw option bytes.
    fn opt(payload: u16, version: u8, dnssec_ok: bool, options: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 41];
        out.extend_from_slice(&payload.to_be_bytes());
        out.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0]);
        out.extend_from_slice(&(options.len() as u16).to_be_bytes());
        out.extend_from_slice(options);
        out
    }

    fn packet(flags: u16, counts: [u16; 4], parts: &[&[u8]]) -> Vec<u8> {
        let mut out = header(flags, counts);
        for part in parts {
            out.extend_from_slice(part);
        }
        out
    }

    /// Checks that the lean parser decides `packet` (or leaves it, when
    /// `lean` is false) and agrees with the full decode; the verdict.
    fn agreed(packet: &[u8], lean: bool) -> Verdict {
        let full = Verdict::of(&parse_full(packet));
        let fast = parse_lean(packet);
        assert_eq!(fast.is_some(), lean, "lean parser decided: {fast:?}");
        if let Some(fast) = fast {
            assert_eq!(Verdict::of(&fast), full, "packet {packet:02x?}");
        }
        assert_eq!(Verdict::of(&parse_query(packet)), full);
        full
    }

    fn rcode(verdict: &Verdict) -> Option<u16> {
        match verdict {
            Verdict::Reject { rcode, .. } => Some(*rcode),
            _ => None,
        }
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
    fn a_plain_query_is_read_by_the_lean_parser_with_its_case() {
        let bytes = packet(0x0100, [1, 0, 0, 0], &[&question(&[b"Docker", b"IO"])]);
        let Verdict::Query {
            id,
            recursion_desired,
            name,
            fqdn,
            edns,
            ..
        } = agreed(&bytes, true)
        else {
            panic!("not a query")
        };
        assert_eq!(
            (id, recursion_desired, fqdn, edns),
            (0x1234, true, true, None)
        );
        assert_eq!(name, b"\x06Docker\x02IO\x00");
        let Some(Inbound::Query(query)) = parse_lean(&bytes) else {
            panic!("not a query")
        };
        assert_eq!(query.name().to_ascii(), "Docker.IO.");
        assert_eq!(query.query_type(), RecordType::A);
    }

    #[test]
    fn an_opt_with_do_and_options_is_read() {
        // A cookie option (10) and padding (12) of 0 bytes.
        let options = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 12, 0, 0];
        let bytes = packet(
            0x0110,
            [1, 0, 0, 1],
            &[&question(&[b"example"]), &opt(4096, 0, true, &options)],
        );
        let Verdict::Query {
            edns,
            checking_disabled,
            ..
        } = agreed(&bytes, true)
        else {
            panic!("not a query")
        };
        assert!(checking_disabled);
        assert_eq!(
            edns,
            Some(ClientEdns {
                payload: 4096,
                dnssec_ok: true
            })
        );
        // A payload under 512 counts as 512 (RFC 6891 §6.2.3).
        let small = packet(
            0x0100,
            [1, 0, 0, 1],
            &[&question(&[b"a"]), &opt(100, 0, false, &[])],
        );
        let Verdict::Query { edns, .. } = agreed(&small, true) else {
            panic!("not a query")
        };
        assert_eq!(
            edns,
            Some(ClientEdns {
                payload: 512,
                dnssec_ok: false
            })
        );
        assert_eq!(
            agreed(&query_bytes("a.b.", RecordType::AAAA, true), true),
            Verdict::of(&parse_full(&query_bytes("a.b.", RecordType::AAAA, true)))
        );
    }

    #[test]
    fn edns_version_1_is_badvers_with_an_opt() {
        let bytes = packet(
            0x0100,
            [1, 0, 0, 1],
            &[&question(&[b"a"]), &opt(1232, 1, true, &[])],
        );
        let verdict = agreed(&bytes, true);
        assert_eq!(rcode(&verdict), Some(u16::from(ResponseCode::BADVERS)));
        let Some(Inbound::Reject(answer, _)) = parse_lean(&bytes) else {
            panic!("not rejected")
        };
        assert!(answer.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
    }

    #[test]
    fn another_opcode_is_notimp() {
        // Opcode 2 (STATUS).
        let bytes = packet(0x1100, [1, 0, 0, 0], &[&question(&[b"a"])]);
        assert_eq!(
            rcode(&agreed(&bytes, true)),
            Some(u16::from(ResponseCode::NotImp))
        );
    }

    #[test]
    fn no_question_or_two_are_formerr_by_the_full_decode() {
        let none = packet(0x0100, [0, 0, 0, 0], &[]);
        assert_eq!(
            rcode(&agreed(&none, false)),
            Some(u16::from(ResponseCode::FormErr))
        );
        let q = question(&[b"a"]);
        let two = packet(0x0100, [2, 0, 0, 0], &[&q, &q]);
        assert_eq!(
            rcode(&agreed(&two, false)),
            Some(u16::from(ResponseCode::FormErr))
        );
    }

    #[test]
    fn an_answer_is_dropped() {
        let bytes = packet(0x8100, [1, 0, 0, 0], &[&question(&[b"a"])]);
        assert_eq!(agreed(&bytes, true), Verdict::Drop);
    }

    #[test]
    fn truncated_packets_are_dropped_or_left() {
        let full = packet(
            0x0100,
            [1, 0, 0, 1],
            &[
                &question(&[b"abc"]),
                &opt(1232, 0, false, &[0, 10, 0, 2, 1, 2]),
            ],
        );
        for len in 0..full.len() {
            let verdict = agreed(&full[..len], len < 12);
            assert_eq!(verdict, Verdict::Drop, "cut at {len}");
        }
        // An option longer than its record: left to the full decode.
        let long = packet(
            0x0100,
            [1, 0, 0, 1],
            &[&question(&[b"a"]), &opt(1232, 0, false, &[0, 10, 0, 9, 1])],
        );
        agreed(&long, false);
    }

    #[test]
    fn a_compressed_question_name_is_left_to_the_full_decode() {
        // The name is a pointer to offset 12 of its own: hickory refuses it.
        let mut bytes = packet(0x0100, [1, 0, 0, 0], &[&[0xC0, 12, 0, 1, 0, 1]]);
        assert_eq!(agreed(&bytes, false), Verdict::Drop);
        // A pointer to a name in the header's place: hickory refuses it too.
        bytes[12..14].copy_from_slice(&[0xC0, 2]);
        agreed(&bytes, false);
    }

    #[test]
    fn long_labels_and_names_are_refused_as_hickory_refuses_them() {
        let long_label = [b'x'; 64];
        let bytes = packet(0x0100, [1, 0, 0, 0], &[&question(&[&long_label])]);
        assert_eq!(agreed(&bytes, false), Verdict::Drop);
        let label = [b'y'; 63];
        // 4 × 64 + 1 = 257 bytes: over 255.
        let bytes = packet(
            0x0100,
            [1, 0, 0, 0],
            &[&question(&[&label, &label, &label, &label])],
        );
        assert_eq!(agreed(&bytes, false), Verdict::Drop);
        // 3 × 64 + 62 + 1 = 255 bytes: hickory's limit.
        let bytes = packet(
            0x0100,
            [1, 0, 0, 0],
            &[&question(&[&label, &label, &label, &label[..61]])],
        );
        let _ = agreed(&bytes, parse_lean(&bytes).is_some());
    }

    #[test]
    fn odd_shapes_are_left_to_the_full_decode() {
        let q = question(&[b"a"]);
        let a_record = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1];
        agreed(&packet(0x0100, [1, 1, 0, 0], &[&q, &a_record]), false);
        agreed(&packet(0x0100, [1, 0, 0, 1], &[&q, &a_record]), false);
        // Two OPTs: FORMERR with an OPT, from the full path.
        let o = opt(1232, 0, false, &[]);
        let two = agreed(&packet(0x0100, [1, 0, 0, 2], &[&q, &o, &o]), false);
        assert_eq!(rcode(&two), Some(u16::from(ResponseCode::FormErr)));
        // A client-subnet option is read by content.
        let subnet = opt(1232, 0, false, &[0, 8, 0, 4, 0, 9, 0, 0]);
        agreed(&packet(0x0100, [1, 0, 0, 1], &[&q, &subnet]), false);
        // An OPT with a non-root owner.
        let mut named = vec![1, b'a'];
        named.extend_from_slice(&o[1..]);
        agreed(&packet(0x0100, [1, 0, 0, 1], &[&q, &named]), false);
    }

    #[test]
    fn trailing_bytes_are_ignored_as_hickory_ignores_them() {
        let bytes = packet(0x0100, [1, 0, 0, 0], &[&question(&[b"a"]), &[1, 2, 3]]);
        assert!(matches!(agreed(&bytes, true), Verdict::Query { .. }));
    }
}
