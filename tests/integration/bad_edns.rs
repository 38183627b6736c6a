//! Error answers and how they are counted (issue 11, extras): a query whose
//! OPT cannot be decoded gets FORMERR with an OPT (RFC 6891 §7) instead of
//! silence, and NOTIMP and BADVERS answers have outcomes of their own in
//! `accel_dns_queries_total` rather than being counted as `formerr`.

use std::time::Duration;

use accel_dns::internals::metrics::QUERIES_TOTAL;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::common::*;

/// `edns.example.test. A`, with RD, ID 0x4242, and no record yet.
fn bare_query() -> Vec<u8> {
    let mut message = query_message("edns.example.test.", RecordType::A, None);
    message.metadata.id = 0x4242;
    message.to_vec().expect("encode")
}

/// An OPT record (owner root, payload 1232, DO clear) with `rdata`.
fn opt(rdata: &[u8]) -> Vec<u8> {
    let mut record = vec![0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0];
    record.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    record.extend_from_slice(rdata);
    record
}

/// `bare_query` with these records in the additional section.
fn with_additional(count: u8, records: &[u8]) -> Vec<u8> {
    let mut packet = bare_query();
    packet[11] = count;
    packet.extend_from_slice(records);
    packet
}

async fn outcome(server: &TestServer, outcome: &str, protocol: &str) -> f64 {
    server
        .metric(&format!(
            "{QUERIES_TOTAL}{{outcome=\"{outcome}\",protocol=\"{protocol}\"}}"
        ))
        .await
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_query_with_an_undecodable_edns_option_gets_formerr_with_an_opt() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start("", Some(upstream.addr)).await;
    let packets = [
        // A client-subnet option (code 8) with family 9: hickory cannot read it.
        (
            "subnet family 9",
            with_additional(1, &opt(&[0, 8, 0, 7, 0, 9, 24, 0, 1, 2, 3])),
        ),
        // A client-subnet option with no data at all.
        ("empty subnet", with_additional(1, &opt(&[0, 8, 0, 0]))),
        // An option whose length runs past the record.
        (
            "option past the record",
            with_additional(1, &opt(&[0, 10, 0, 40, 1, 2, 3])),
        ),
        // Two OPT records (RFC 6891 §6.1.1: FORMERR).
        (
            "two OPTs",
            with_additional(2, &[opt(&[]), opt(&[])].concat()),
        ),
    ];
    for (what, packet) in &packets {
        assert!(
            Message::from_vec(packet).is_err(),
            "{what}: the packet is one hickory cannot decode"
        );
        let reply = udp_raw(server.dns, packet, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("{what}: answered, not dropped"));
        assert!(reply.len() <= packet.len(), "{what}: no amplification");
        let answer = Message::from_vec(&reply).expect("the answer decodes");
        assert_eq!(answer.metadata.id, 0x4242, "{what}");
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::FormErr,
            "{what}"
        );
        assert!(
            answer.edns.is_some(),
            "{what}: FORMERR comes with an OPT (RFC 6891 §7)"
        );
        assert_eq!(answer.queries.len(), 1, "{what}: the question is echoed");
        let over_tcp = tcp_raw(server.dns, packet)
            .await
            .unwrap_or_else(|| panic!("{what}: answered over TCP"));
        let answer = Message::from_vec(&over_tcp).expect("decodes");
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::FormErr,
            "{what}"
        );
    }
    assert_eq!(
        outcome(&server, "formerr", "udp").await,
        packets.len() as f64
    );
    assert_eq!(
        outcome(&server, "formerr", "tcp").await,
        packets.len() as f64
    );
    assert_eq!(upstream.count(), 0, "nothing forwarded");
    // Bytes that are not a query at all are still dropped.
    let mut garbage = with_additional(1, &opt(&[0, 8, 0, 0]));
    garbage.truncate(garbage.len() - 3);
    assert!(
        udp_raw(server.dns, &garbage, Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn notimp_and_badvers_are_counted_under_their_own_outcomes() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start("", Some(upstream.addr)).await;
    let mut notify = query_message("docker.io.", RecordType::SOA, None);
    notify.metadata.op_code = OpCode::Notify;
    let answer = send_udp(server.dns, &notify).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NotImp);
    let mut version_1 = query_message("docker.io.", RecordType::A, None);
    let mut edns = Edns::new();
    edns.set_version(1);
    version_1.set_edns(edns);
    let answer = send_udp(server.dns, &version_1).await;
    assert_eq!(u16::from(answer.metadata.response_code), 16, "BADVERS");
    let no_question = Message::new(4242, MessageType::Query, OpCode::Query);
    let answer = send_tcp(server.dns, &no_question).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);

    assert_eq!(outcome(&server, "notimp", "udp").await, 1.0);
    assert_eq!(outcome(&server, "badvers", "udp").await, 1.0);
    assert_eq!(
        outcome(&server, "formerr", "udp").await,
        0.0,
        "neither is a formerr"
    );
    assert_eq!(outcome(&server, "formerr", "tcp").await, 1.0);
}
