//! Views (README "Views (answers by client network)"): records limited to client networks. Queries are sent
//! from sockets bound to different 127.0.0.x sources, which stand in for
//! the networks of a fleet.

use std::net::SocketAddr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::admin::{query_from, rewrite};
use crate::common::*;

/// The A addresses answered to `qname` for a client at `source`.
async fn a_from(source: &str, server: SocketAddr, qname: &str) -> Vec<String> {
    let answer = query_from(source, server, qname, RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    a_records(&answer).iter().map(ToString::to_string).collect()
}

/// One TCP query from a connection bound to `source`.
async fn tcp_a_from(source: &str, server: SocketAddr, qname: &str) -> Vec<String> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("addr"))
        .expect("bind");
    let mut stream = socket.connect(server).await.expect("connect");
    let bytes = query_message(qname, RecordType::A, None)
        .to_vec()
        .expect("encode");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.expect("write");
    let len = stream.read_u16().await.expect("length");
    let mut buf = vec![0u8; len as usize];
    stream.read_exact(&mut buf).await.expect("answer");
    let answer = Message::from_vec(&buf).expect("decodes");
    a_records(&answer).iter().map(ToString::to_string).collect()
}

/// The fleet of the tests: a default, a /16-like wide network and a more
/// specific one inside it, and names only some networks have.
const FLEET: &str = r#"
[[record]]
name = "docker.io"
a = ["203.0.113.10"]

[[record]]
name = "docker.io"
clients = ["127.0.9.0/24", "127.0.10.0/24"]
a = ["203.0.113.50"]

[[record]]
name = "docker.io"
clients = ["127.0.9.128/25"]
a = ["203.0.113.60"]

[[record]]
name = "only.test"
clients = ["127.0.9.0/24"]
a = ["203.0.113.70"]
"#;

#[tokio::test]
async fn each_network_gets_its_own_answer_and_the_most_specific_wins() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(FLEET, Some(upstream.addr)).await;
    // Outside every `clients`: the record without `clients`.
    assert_eq!(
        a_from("127.0.0.1", server.dns, "docker.io.").await,
        ["203.0.113.10"]
    );
    assert_eq!(
        a_from("127.0.8.1", server.dns, "docker.io.").await,
        ["203.0.113.10"]
    );
    // In the /24s.
    assert_eq!(
        a_from("127.0.9.5", server.dns, "docker.io.").await,
        ["203.0.113.50"]
    );
    assert_eq!(
        a_from("127.0.10.9", server.dns, "docker.io.").await,
        ["203.0.113.50"]
    );
    // In the /25 inside the first /24: the most specific network wins.
    assert_eq!(
        a_from("127.0.9.200", server.dns, "docker.io.").await,
        ["203.0.113.60"]
    );
    assert_eq!(
        a_from("127.0.9.127", server.dns, "docker.io.").await,
        ["203.0.113.50"]
    );
    // TCP clients are matched by their source address too.
    assert_eq!(
        tcp_a_from("127.0.9.200", server.dns, "docker.io.").await,
        ["203.0.113.60"]
    );
    assert_eq!(
        tcp_a_from("127.0.0.1", server.dns, "docker.io.").await,
        ["203.0.113.10"]
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn a_name_no_record_of_which_matches_the_client_is_forwarded() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(FLEET, Some(upstream.addr)).await;
    assert_eq!(
        a_from("127.0.9.5", server.dns, "only.test.").await,
        ["203.0.113.70"]
    );
    assert_eq!(upstream.count(), 0);
    assert_eq!(
        a_from("127.0.0.1", server.dns, "only.test.").await,
        ["198.51.100.7"]
    );
    assert_eq!(upstream.count(), 1);
    // The forwarded answer is cached, but never shadows the record for the
    // network that has one.
    assert_eq!(
        a_from("127.0.9.6", server.dns, "only.test.").await,
        ["203.0.113.70"]
    );
    assert_eq!(
        a_from("127.0.0.2", server.dns, "only.test.").await,
        ["198.51.100.7"]
    );
    assert_eq!(upstream.count(), 1);
}

/// Exact beats wildcard first, then the client match decides among the
/// records of that name; a name whose exact records all miss the client
/// falls through to the wildcard, and a hosts-file line counts as exact.
#[tokio::test]
async fn exact_beats_wildcard_first_then_the_client_match() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(
        r#"
[[record]]
name = "*.example.test"
clients = ["127.0.9.0/24"]
a = ["203.0.113.80"]

[[record]]
name = "*.example.test"
a = ["203.0.113.81"]

[[record]]
name = "pinned.example.test"
a = ["203.0.113.82"]

[[record]]
name = "region.example.test"
clients = ["127.0.9.0/24"]
a = ["203.0.113.83"]
"#,
        Some(upstream.addr),
    )
    .await;
    // An exact record without `clients` beats a wildcard that matches the client.
    assert_eq!(
        a_from("127.0.9.5", server.dns, "pinned.example.test.").await,
        ["203.0.113.82"]
    );
    // The exact record for the client's network.
    assert_eq!(
        a_from("127.0.9.5", server.dns, "region.example.test.").await,
        ["203.0.113.83"]
    );
    // Its exact records miss this client: the wildcard answers, the default one.
    assert_eq!(
        a_from("127.0.0.1", server.dns, "region.example.test.").await,
        ["203.0.113.81"]
    );
    // Wildcards choose by network among themselves.
    assert_eq!(
        a_from("127.0.9.5", server.dns, "other.example.test.").await,
        ["203.0.113.80"]
    );
    assert_eq!(
        a_from("127.0.0.1", server.dns, "other.example.test.").await,
        ["203.0.113.81"]
    );
    assert_eq!(upstream.count(), 0);
}

/// A hosts-file line answers a client that no `[[record]]` of its name matches.
#[tokio::test]
async fn a_hosts_file_answers_clients_outside_the_records_networks() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("view.hosts"), "203.0.113.91 mirror.test\n").expect("hosts");
    let config_path = dir.path().join("accel-dns.toml");
    std::fs::write(
        &config_path,
        crate::admin::complete(
            "[records]\nhosts_files = [\"view.hosts\"]\n\
             [[record]]\nname = \"mirror.test\"\nclients = [\"127.0.9.0/24\"]\na = [\"203.0.113.90\"]\n",
            upstream.addr,
        ),
    )
    .expect("config");
    let server = crate::reload::start_prepared(dir, config_path).await;
    assert_eq!(
        a_from("127.0.9.5", server.dns, "mirror.test.").await,
        ["203.0.113.90"]
    );
    assert_eq!(
        a_from("127.0.0.1", server.dns, "mirror.test.").await,
        ["203.0.113.91"]
    );
}

/// Views follow reloads, and the same name with the same `clients` set twice
/// is rejected (the running views stay).
#[tokio::test]
async fn views_follow_reloads_and_a_duplicate_clients_set_is_rejected() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(FLEET, Some(upstream.addr)).await;
    let duplicate = format!(
        "{FLEET}\n[[record]]\nname = \"docker.io\"\nclients = [\"127.0.10.0/24\", \"127.0.9.0/24\"]\na = [\"203.0.113.99\"]\n"
    );
    let error = accel_dns::config::parse(
        &crate::admin::complete(&duplicate, upstream.addr),
        None,
        &test_env(server.dir.path()),
    )
    .expect_err("the same clients set twice");
    assert!(
        error.to_string().contains("defined more than once"),
        "{error}"
    );
    rewrite(&server, &duplicate, upstream.addr);
    wait_until("the duplicate is rejected", || async {
        server.metric(&crate::admin::reloads("error")).await == Some(1.0)
    })
    .await;
    assert_eq!(
        a_from("127.0.9.5", server.dns, "docker.io.").await,
        ["203.0.113.50"]
    );

    rewrite(
        &server,
        &FLEET.replace("127.0.9.128/25", "127.0.9.0/25"),
        upstream.addr,
    );
    wait_until("the /25 moved to the lower half", || async {
        a_from("127.0.9.5", server.dns, "docker.io.").await == ["203.0.113.60"]
    })
    .await;
    assert_eq!(
        a_from("127.0.9.200", server.dns, "docker.io.").await,
        ["203.0.113.50"]
    );
}
