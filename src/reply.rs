//! The answers this server makes itself: from records, and error answers
//! (FORMERR, NOTIMP, BADVERS, REFUSED, SERVFAIL), each written into the
//! caller's buffer and fitted to the transport.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::cache::{CacheKey, STALE_TTL};
use crate::metrics::{Metrics, Outcome};
use crate::records::{Answer, CompiledRecord};
use crate::request::{Failure, Fetched, Request, Transport};
use crate::upstream::UpstreamError;
use crate::wire::{self, ClientQuery};

/// The answer a record gives `query` (an address record, or a CNAME record
/// asked for its CNAME).
pub(crate) fn record_answer(query: &ClientQuery, record: &CompiledRecord) -> Message {
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

/// Writes the answer `record` gives `query` (as [`record_answer`] makes
/// it) straight into `out`, without building a message: the client's
/// header and `question` (its bytes as sent), the records with their
/// owner a pointer to the question's name, and the OPT when the client
/// sent one. Nothing is allocated once `out` has grown to size. `false`
/// (and `out` to be rewritten) when the answer does not fit the client's
/// UDP buffer: [`encode_into`] then truncates it.
pub(crate) fn write_record_answer(
    query: &ClientQuery,
    question: &[u8],
    record: &CompiledRecord,
    transport: Transport,
    out: &mut Vec<u8>,
) -> bool {
    let query_type = query.query_type();
    let mut answer = wire::AnswerWriter::start(query, question, out);
    match &record.answer {
        Answer::Cname(target) => answer.cname(record.ttl, target),
        Answer::Addresses { .. } => {
            if matches!(query_type, RecordType::A | RecordType::ANY) {
                for ip in record.a() {
                    answer.a(record.ttl, ip);
                }
            }
            if matches!(query_type, RecordType::AAAA | RecordType::ANY) {
                for ip in record.aaaa() {
                    answer.aaaa(record.ttl, ip);
                }
            }
        }
    }
    let udp_limit = transport
        .udp_limit()
        .map(|l| l.max(wire::CLASSIC_UDP_LIMIT));
    answer.finish(udp_limit)
}

/// Adds the addresses of `record` for `query_type` under `owner`.
pub(crate) fn add_addresses(
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

/// Encodes `message` for `transport` into `out`; `false` if it cannot be
/// encoded at all.
pub(crate) fn encode_into(message: &Message, transport: Transport, out: &mut Vec<u8>) -> bool {
    let udp_limit = transport
        .udp_limit()
        .map(|l| l.max(wire::CLASSIC_UDP_LIMIT));
    out.clear();
    match wire::encode_for(message, udp_limit) {
        Some(bytes) => {
            out.extend_from_slice(&bytes);
            true
        }
        None => false,
    }
}

/// `message` for `transport` into `out`, or SERVFAIL if it cannot be encoded.
pub(crate) fn encode_or_servfail(
    message: &Message,
    query: &ClientQuery,
    transport: Transport,
    out: &mut Vec<u8>,
) {
    if !encode_into(message, transport, out) {
        error_answer(query, ResponseCode::ServFail, transport, out);
    }
}

/// An empty answer with `rcode` to `query` into `out`.
pub(crate) fn error_answer(
    query: &ClientQuery,
    rcode: ResponseCode,
    transport: Transport,
    out: &mut Vec<u8>,
) {
    if !encode_into(&query.response(rcode), transport, out) {
        out.clear();
    }
}

/// An error answer (FORMERR, NOTIMP, BADVERS, REFUSED) to `packet` into
/// `out`, never larger than `packet` over either transport: these go to
/// anyone, so they must not amplify (README "How a query is answered",
/// malformed input and access). Echoing the question is not enough to
/// ensure that: a query's name can be a compression pointer into its own
/// header, two bytes on the wire that decode to a label of up to ten, so
/// the echo outgrew an 18-byte query by 10 bytes (found by fuzzing; see the
/// regression test below). Such an answer goes without its question (QDCOUNT
/// 0 is valid in an error answer), and without its OPT if even that is too
/// long; it cannot be, as the query held both. `false`: nothing fits.
pub(crate) fn unamplified(message: &Message, packet: &[u8], out: &mut Vec<u8>) -> bool {
    let fits = |m: &Message| m.to_vec().ok().filter(|bytes| bytes.len() <= packet.len());
    let bytes = fits(message).or_else(|| {
        let mut bare = message.clone();
        bare.queries.clear();
        fits(&bare).or_else(|| {
            bare.edns = None;
            fits(&bare)
        })
    });
    out.clear();
    match bytes {
        Some(bytes) => {
            out.extend_from_slice(&bytes);
            true
        }
        None => false,
    }
}

/// Writes the answer to a forwarded miss of `key` into `out`, once its
/// upstream resolution is over: the answer fetched; when there is none
/// or it is SERVFAIL, the serve-stale rescue; else SERVFAIL.
pub(crate) fn forwarded(
    metrics: &Metrics,
    request: &Request,
    key: CacheKey,
    fetched: Result<&Fetched, UpstreamError>,
    out: &mut Vec<u8>,
) {
    let query = &request.query;
    let snapshot = &request.snapshot;
    let asked = request.asked();
    let failed = match &fetched {
        Ok(f) => f.wire().rcode() == ResponseCode::ServFail,
        Err(_) => true,
    };
    if failed && let Some(entry) = snapshot.cache.rescue(&key, &asked, query.dnssec_ok()) {
        entry.answer.render(
            query,
            Some(&asked),
            wire::TtlRule::Fixed(STALE_TTL),
            request.transport.udp_limit(),
            out,
        );
        request.answered(metrics, Outcome::Stale, entry.answer.rcode());
        return;
    }
    match fetched {
        Ok(fetched) => {
            fetched.wire().render(
                query,
                Some(&asked),
                fetched.ttl_rule(),
                request.transport.udp_limit(),
                out,
            );
            request.answered(metrics, Outcome::Upstream, fetched.wire().rcode());
        }
        Err(error) => request.fail(metrics, &Failure::Upstream(error), out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Inbound;

    fn reply_len(message: &Message, packet: &[u8]) -> usize {
        let mut out = Vec::new();
        if !unamplified(message, packet, &mut out) {
            return 0;
        }
        assert!(Message::from_vec(&out).is_ok(), "the error answer decodes");
        out.len()
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
        let len = reply_len(&message, &notimp);
        assert!((12..=notimp.len()).contains(&len), "{len} bytes");

        let mut refused = notimp;
        refused[2] = 0x01; // a plain QUERY with RD
        let Inbound::Query(query) = wire::parse_query(&refused) else {
            panic!("a query");
        };
        assert_eq!(query.name().num_labels(), 1);
        let len = reply_len(&query.response(ResponseCode::Refused), &refused);
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
        let mut out = Vec::new();
        assert!(unamplified(
            &query.response(ResponseCode::Refused),
            &packet,
            &mut out
        ));
        assert_eq!(out.len(), packet.len());
        assert_eq!(Message::from_vec(&out).expect("decode").queries.len(), 1);
    }

    /// The records of one configuration, for the record-answer tests.
    fn records(text: &str) -> crate::records::RecordTable {
        let dir = tempfile::tempdir().expect("tempdir");
        let resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(&resolv_conf, "nameserver 10.0.0.2\n").expect("write");
        let config = crate::config::parse(text, None, &crate::config::LoadEnv { resolv_conf })
            .expect("valid");
        crate::records::RecordTable::compile(
            &config,
            &crate::health::HealthRegistry::default(),
            &Metrics::new(),
        )
    }

    /// The bytes written for a record answer decode to the message that
    /// hickory's path builds, for every shape the writer takes (both
    /// families, ANY, NODATA, a CNAME asked for, with and without OPT,
    /// RD and CD as asked, the client's letter case).
    #[test]
    fn written_record_answers_decode_as_the_built_ones() {
        let table = records(
            "[[record]]\nname = \"docker.io\"\nttl = 77\n\
             a = [\"203.0.113.10\", \"203.0.113.12\"]\naaaa = [\"2001:db8::10\"]\n\
             [[record]]\nname = \"alias.test\"\ncname = \"Edge.Accel.test\"\n",
        );
        let client = std::net::IpAddr::from([127, 0, 0, 1]);
        let cases = [
            ("DOCKER.io.", RecordType::A),
            ("docker.io.", RecordType::AAAA),
            ("docker.io.", RecordType::ANY),
            ("docker.io.", RecordType::MX),
            ("Alias.Test.", RecordType::CNAME),
        ];
        for (name, rtype) in cases {
            for (edns, cd, rd) in [(false, false, true), (true, true, false)] {
                let mut message = Message::query();
                message.metadata.id = 0xbeef;
                message.metadata.recursion_desired = rd;
                message.metadata.checking_disabled = cd;
                message.add_query(hickory_proto::op::Query::query(
                    Name::from_ascii(name).expect("name"),
                    rtype,
                ));
                if edns {
                    message.set_edns(wire::server_edns(true));
                }
                let packet = message.to_vec().expect("encode");
                let Inbound::Query(query) = wire::parse_query(&packet) else {
                    panic!("a query");
                };
                let record = table.lookup(query.name(), client).expect("a record");
                let question = wire::packet_question(&packet).expect("plain question");
                let mut written = Vec::new();
                let transport = Transport::Udp { limit: 512 };
                assert!(write_record_answer(
                    &query,
                    question,
                    record,
                    transport,
                    &mut written
                ));
                let mut built = Vec::new();
                assert!(encode_into(
                    &record_answer(&query, record),
                    transport,
                    &mut built
                ));
                let written = Message::from_vec(&written).expect("written decodes");
                let built = Message::from_vec(&built).expect("built decodes");
                assert_eq!(written, built, "{name} {rtype} EDNS {edns}");
            }
        }
    }

    #[test]
    fn a_written_record_answer_too_large_for_the_client_is_left_to_truncation() {
        let addresses: Vec<String> = (1..=40).map(|i| format!("\"203.0.113.{i}\"")).collect();
        let table = records(&format!(
            "[[record]]\nname = \"many.test\"\na = [{}]\n",
            addresses.join(", ")
        ));
        let mut message = Message::query();
        message.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("many.test.").expect("name"),
            RecordType::A,
        ));
        let packet = message.to_vec().expect("encode");
        let Inbound::Query(query) = wire::parse_query(&packet) else {
            panic!("a query");
        };
        let record = table
            .lookup(query.name(), std::net::IpAddr::from([127, 0, 0, 1]))
            .expect("a record");
        let question = wire::packet_question(&packet).expect("plain question");
        let mut out = Vec::new();
        // 40 A records take 640 bytes: more than 512 over UDP, fine over TCP.
        assert!(!write_record_answer(
            &query,
            question,
            record,
            Transport::Udp { limit: 512 },
            &mut out
        ));
        assert!(write_record_answer(
            &query,
            question,
            record,
            Transport::Tcp,
            &mut out
        ));
        assert_eq!(Message::from_vec(&out).expect("decodes").answers.len(), 40);
    }
}
