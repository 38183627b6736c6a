//! Unmapped names (README "Unmapped names", second half): a query for a name of a watched
//! zone that no record covers is forwarded as usual and reported — the
//! `accel_dns_unmapped_queries_total{zone}` counter, one warn line per new
//! name, `GET /unmapped` — while mapped names (exact, wildcard, a record
//! stepped aside, a view that does not match the client) and names outside
//! the watched zones are not. The report survives a reload; a zone no
//! longer watched leaves `/metrics`.

use accel_dns::internals::metrics::{RECORD_UP, UNMAPPED_QUERIES};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::admin::{LogCapture, answer_a, query_from, reloads, rewrite};
use crate::common::*;

/// The fake upstream's answer to every A query.
const UPSTREAM_A: &str = "198.51.100.7";

fn unmapped_series(zone: &str) -> String {
    format!("{UNMAPPED_QUERIES}{{zone=\"{zone}\"}}")
}

/// `GET /unmapped` as (name, zone, queries), in the order served; checks
/// the content type on the way.
async fn unmapped(server: &TestServer) -> Vec<(String, String, u64)> {
    let admin = server.admin.expect("admin enabled");
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    let (mut read, mut write) = stream.into_split();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    write
        .write_all(b"GET /unmapped HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, read.read_to_end(&mut raw))
        .await
        .expect("admin answers in time")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let rows: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    rows.as_array()
        .expect("a JSON array")
        .iter()
        .map(|row| {
            (
                row["name"].as_str().expect("name").to_string(),
                row["zone"].as_str().expect("zone").to_string(),
                row["queries"].as_u64().expect("queries"),
            )
        })
        .collect()
}

fn row(name: &str, zone: &str, queries: u64) -> (String, String, u64) {
    (name.into(), zone.into(), queries)
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

const CONFIG: &str = r#"
[records]
watch = ["docker.io", "Quay.IO."]

[[record]]
name = "registry-1.docker.io"
a = ["203.0.113.10"]

[[record]]
name = "*.cdn.docker.io"
a = ["203.0.113.11"]

[[record]]
name = "view.docker.io"
clients = ["127.0.0.77/32"]
a = ["203.0.113.12"]
"#;

#[tokio::test]
async fn a_watched_name_without_record_is_forwarded_and_reported_and_mapped_ones_are_not() {
    let (logs, _guard) = LogCapture::start();
    let upstream = FakeUpstream::start().await;
    let port = closed_port().await;
    let body = format!(
        "{CONFIG}\n[[record]]\nname = \"aside.docker.io\"\na = [\"127.0.0.1\"]\n\
         health_check = {{ port = {port}, interval = \"50ms\", timeout = \"200ms\", fall = 1, rise = 1 }}\n"
    );
    let server = TestServer::start(&body, Some(upstream.addr)).await;
    let aside_down = format!("{RECORD_UP}{{record=\"aside.docker.io\"}}");
    wait_until("the record whose port is closed steps aside", || async {
        server.metric(&aside_down).await == Some(0.0)
    })
    .await;

    // Unmapped: forwarded (the upstream's answer), counted and listed.
    for _ in 0..3 {
        assert_eq!(
            answer_a(server.dns, "production.cloudflare.docker.io.").await,
            [UPSTREAM_A]
        );
    }
    // Any letter case is the same name.
    assert_eq!(answer_a(server.dns, "Auth.Docker.IO.").await, [UPSTREAM_A]);
    assert_eq!(answer_a(server.dns, "auth.docker.io.").await, [UPSTREAM_A]);
    // The zone itself is in it; a wildcard covers only names below it.
    assert_eq!(answer_a(server.dns, "docker.io.").await, [UPSTREAM_A]);
    assert_eq!(answer_a(server.dns, "cdn.docker.io.").await, [UPSTREAM_A]);
    // A second watched zone, configured in another case and with a dot.
    assert_eq!(answer_a(server.dns, "cdn01.quay.io.").await, [UPSTREAM_A]);
    // Other types are the same names: AAAA goes upstream too.
    let aaaa = query_udp(server.dns, "auth.docker.io.", RecordType::AAAA).await;
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);

    // Mapped: exact, wildcard, stepped aside (forwarded), view not matching (forwarded).
    assert_eq!(
        answer_a(server.dns, "registry-1.docker.io.").await,
        ["203.0.113.10"]
    );
    assert_eq!(
        answer_a(server.dns, "a.b.cdn.docker.io.").await,
        ["203.0.113.11"]
    );
    assert_eq!(answer_a(server.dns, "aside.docker.io.").await, [UPSTREAM_A]);
    assert_eq!(answer_a(server.dns, "view.docker.io.").await, [UPSTREAM_A]);
    let in_view = query_from("127.0.0.77", server.dns, "view.docker.io.", RecordType::A).await;
    assert_eq!(
        a_records(&in_view)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["203.0.113.12"]
    );
    // Outside the watched zones, and a name that only ends like one.
    assert_eq!(answer_a(server.dns, "ghcr.io.").await, [UPSTREAM_A]);
    assert_eq!(answer_a(server.dns, "notdocker.io.").await, [UPSTREAM_A]);

    assert_eq!(
        unmapped(&server).await,
        [
            row("auth.docker.io", "docker.io", 3),
            row("production.cloudflare.docker.io", "docker.io", 3),
            row("cdn.docker.io", "docker.io", 1),
            row("cdn01.quay.io", "quay.io", 1),
            row("docker.io", "docker.io", 1),
        ]
    );
    assert_eq!(
        server.metric(&unmapped_series("docker.io")).await,
        Some(8.0)
    );
    assert_eq!(server.metric(&unmapped_series("quay.io")).await, Some(1.0));
    // Forwarded as usual: through the cache (repeats), else upstream.
    assert!(upstream.count() >= 5, "{}", upstream.count());

    // One warn line per name, the first time only.
    let warned = |name: &str| logs.lines_with(&["WARN", "unmapped name", &format!("name={name} ")]);
    assert_eq!(
        warned("production.cloudflare.docker.io").len(),
        1,
        "{}",
        logs.text()
    );
    assert_eq!(warned("auth.docker.io").len(), 1, "{}", logs.text());
    let line = &warned("cdn01.quay.io")[0];
    assert!(line.contains("zone=quay.io"), "{line}");
    for mapped in [
        "registry-1.docker.io",
        "a.b.cdn.docker.io",
        "aside.docker.io",
        "view.docker.io",
        "ghcr.io",
        "notdocker.io",
    ] {
        assert!(warned(mapped).is_empty(), "{mapped}: {}", logs.text());
    }
}

#[tokio::test]
async fn the_report_survives_a_reload_and_a_zone_no_longer_watched_leaves_the_metrics() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(CONFIG, Some(upstream.addr)).await;
    for name in ["auth.docker.io.", "auth.docker.io.", "cdn01.quay.io."] {
        assert_eq!(answer_a(server.dns, name).await, [UPSTREAM_A]);
    }
    assert_eq!(server.metric(&unmapped_series("quay.io")).await, Some(1.0));

    // quay.io is no longer watched; a record now maps one docker.io name.
    rewrite(
        &server,
        "[records]\nwatch = [\"docker.io\"]\n\
         [[record]]\nname = \"index.docker.io\"\na = [\"203.0.113.20\"]\n",
        upstream.addr,
    );
    wait_until("the reload", || async {
        server.metric(&reloads("ok")).await == Some(1.0)
    })
    .await;
    assert_eq!(server.metric(&unmapped_series("quay.io")).await, None);
    assert_eq!(
        server.metric(&unmapped_series("docker.io")).await,
        Some(2.0)
    );
    assert_eq!(
        unmapped(&server).await,
        [row("auth.docker.io", "docker.io", 2)]
    );

    // The counts go on where they were; a newly mapped name is not reported.
    assert_eq!(answer_a(server.dns, "auth.docker.io.").await, [UPSTREAM_A]);
    assert_eq!(
        answer_a(server.dns, "index.docker.io.").await,
        ["203.0.113.20"]
    );
    assert_eq!(answer_a(server.dns, "cdn01.quay.io.").await, [UPSTREAM_A]);
    assert_eq!(
        unmapped(&server).await,
        [row("auth.docker.io", "docker.io", 3)]
    );
    assert_eq!(
        server.metric(&unmapped_series("docker.io")).await,
        Some(3.0)
    );

    // Watched again: the zone's series starts afresh, the name keeps its count.
    rewrite(&server, CONFIG, upstream.addr);
    wait_until("the second reload", || async {
        server.metric(&reloads("ok")).await == Some(2.0)
    })
    .await;
    assert_eq!(answer_a(server.dns, "cdn01.quay.io.").await, [UPSTREAM_A]);
    assert_eq!(server.metric(&unmapped_series("quay.io")).await, Some(1.0));
    assert_eq!(
        unmapped(&server).await,
        [
            row("auth.docker.io", "docker.io", 3),
            row("cdn01.quay.io", "quay.io", 2),
        ]
    );
}

#[tokio::test]
async fn without_watched_zones_nothing_is_reported() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start("", Some(upstream.addr)).await;
    assert_eq!(answer_a(server.dns, "auth.docker.io.").await, [UPSTREAM_A]);
    assert!(unmapped(&server).await.is_empty());
    let (_, body) = server.admin_get("/metrics").await;
    assert!(!body.contains(&format!("{UNMAPPED_QUERIES}{{")), "{body}");
}

/// The zones of every bundle in use are watched without `watch`: a name the
/// bundle leaves out (`exclude`) is forwarded and reported under the
/// bundle's zone, and the bundle's own names are not.
#[tokio::test]
async fn the_zones_of_a_bundle_in_use_are_watched_without_watch() {
    let upstream = FakeUpstream::start().await;
    let body = r#"
[[record]]
registry = "docker-hub"
exclude = ["auth.docker.io"]
a = ["203.0.113.10"]
"#;
    let server = TestServer::start(body, Some(upstream.addr)).await;
    assert_eq!(
        answer_a(server.dns, "registry-1.docker.io.").await,
        ["203.0.113.10"]
    );
    assert_eq!(answer_a(server.dns, "auth.docker.io.").await, [UPSTREAM_A]);
    wait_until("the excluded name is listed", || async {
        unmapped(&server).await == [row("auth.docker.io", "docker.io", 1)]
    })
    .await;
    assert_eq!(
        server.metric(&unmapped_series("docker.io")).await,
        Some(1.0)
    );
}
