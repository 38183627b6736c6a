//! A first end-to-end check of the harness: a record and a forwarded name.

use crate::common::*;
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn records_and_forwarding_over_udp_and_tcp() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(
        "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n",
        Some(upstream.addr),
    )
    .await;
    let answer = query_udp(server.dns, "docker.io.", RecordType::A).await;
    assert_eq!(
        a_records(&answer),
        vec!["203.0.113.10".parse::<std::net::Ipv4Addr>().expect("ip")]
    );
    let answer = query_tcp(server.dns, "example.test.", RecordType::A).await;
    assert_eq!(
        a_records(&answer),
        vec!["198.51.100.7".parse::<std::net::Ipv4Addr>().expect("ip")]
    );
    assert_eq!(upstream.count(), 1);
}
