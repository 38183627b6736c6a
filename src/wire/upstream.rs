//! The wire side of forwarding: the query this server sends upstream
//! ([`encode_upstream_query`]), the anti-spoofing check of what comes back
//! ([`is_answer_to`]), and the header-and-question form an answer shrinks to
//! when it cannot be sent whole ([`header_and_question`]).

use hickory_proto::rr::RecordType;

use super::EDNS_PAYLOAD;
use super::walk;

/// The bytes of a query for upstream: ID, RD and AD set, `question`
/// (`QNAME QTYPE QCLASS` in wire form), and an OPT with our buffer size and
/// the client's DO bit. Built by hand: this runs on every cache miss.
pub fn encode_upstream_query(id: u16, question: &[u8], dnssec_ok: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + question.len() + 11);
    encode_upstream_query_into(&mut out, id, question, dnssec_ok);
    out
}

/// [`encode_upstream_query`] into `out` (cleared first): a buffer reused
/// from one query to the next.
pub(crate) fn encode_upstream_query_into(
    out: &mut Vec<u8>,
    id: u16,
    question: &[u8],
    dnssec_ok: bool,
) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    // RD; AD asks a validating upstream to say what it validated (RFC 6840 §5.7).
    out.extend_from_slice(&[0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1]);
    out.extend_from_slice(question);
    out.push(0);
    out.extend_from_slice(&u16::from(RecordType::OPT).to_be_bytes());
    out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
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
pub(crate) fn header_and_question(answer: &[u8]) -> Option<Vec<u8>> {
    let end = walk::question_end(answer)?;
    let mut out = answer[..end].to_vec();
    out[2] |= 0x02;
    out[4..6].copy_from_slice(&[0, 1]);
    out[6..12].fill(0);
    Some(out)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Message;
    use hickory_proto::rr::{DNSClass, Name};

    use super::super::question_bytes;
    use super::*;

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
    fn header_and_question_keeps_the_question_and_sets_tc() {
        let name = Name::from_ascii("a.example.").expect("name");
        let question = question_bytes(&name, RecordType::A, DNSClass::IN);
        let mut answer = encode_upstream_query(9, &question, false);
        answer[2] |= 0x80;
        let short = header_and_question(&answer).expect("question");
        assert_eq!(short.len(), 12 + question.len());
        assert_eq!(short[2] & 0x02, 0x02);
        assert_eq!(short[6..12], [0; 6]);
        assert_eq!(header_and_question(&answer[..14]), None);
    }
}
