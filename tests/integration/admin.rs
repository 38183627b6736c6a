//! The admin endpoint (README "Admin endpoint and metrics"): `/healthz`, `/readyz` through start and
//! drain, and `/metrics` with every metric of the contract, counters that
//! move with the outcomes they count, and bounded labels. Also the helpers
//! the other operational tests share (queries from a chosen source, log
//! capture, waits with a latency bound).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accel_dns::internals::metrics::{
    BUILD_INFO, CACHE_ENTRIES, ENDPOINT_UP, LAST_RELOAD_SUCCESS, LAST_RELOAD_TIMESTAMP,
    QUERIES_TOTAL, READY, RECORD_HITS, RECORD_UP, RELOADS_TOTAL, UPSTREAM_DURATION,
    UPSTREAM_ERRORS,
};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::common::*;

/// One UDP query sent from `source` (an IP of 127.0.0.0/8, any port);
/// `None` without an answer within `wait`.
pub async fn query_from_wait(
    source: &str,
    server: SocketAddr,
    qname: &str,
    rtype: RecordType,
    wait: Duration,
) -> Option<Message> {
    let from: SocketAddr = format!("{source}:0").parse().expect("source address");
    let query = query_message(qname, rtype, None);
    let bytes = udp_raw_from(from, server, &query.to_vec().expect("encode"), wait).await?;
    let answer = Message::from_vec(&bytes).expect("answer decodes");
    assert_eq!(answer.metadata.id, query.metadata.id, "answer ID");
    Some(answer)
}

/// One UDP query from `source`; panics without an answer within 5 s.
pub async fn query_from(
    source: &str,
    server: SocketAddr,
    qname: &str,
    rtype: RecordType,
) -> Message {
    query_from_wait(source, server, qname, rtype, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no answer to {qname} {rtype} from {source}"))
}

/// The A addresses answered to `qname` from 127.0.0.1, as strings, sorted.
pub async fn answer_a(server: SocketAddr, qname: &str) -> Vec<String> {
    let mut list: Vec<String> = a_records(&query_udp(server, qname, RecordType::A).await)
        .iter()
        .map(ToString::to_string)
        .collect();
    list.sort();
    list
}

/// Rewrites the config file of `server` in place with `body`, completed the
/// way [`TestServer::start`] completes it (listeners on 127.0.0.1:0, the
/// fake upstream), so that only what `body` says changes.
pub fn rewrite(server: &TestServer, body: &str, upstream: SocketAddr) {
    server.write_config(&complete(body, upstream), Some(upstream));
}

/// `body` with the `[server]`, `[admin]` and `[upstream]` tables that
/// [`TestServer::start`] adds when they are missing.
pub fn complete(body: &str, upstream: SocketAddr) -> String {
    let mut text = body.to_string();
    if !text.contains("[server]") {
        text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{text}");
    }
    if !text.contains("[admin]") {
        text = format!("[admin]\nlisten = \"127.0.0.1:0\"\n{text}");
    }
    if !text.contains("[upstream]") {
        text = format!("[upstream]\nservers = [\"{upstream}\"]\ntimeout = \"1s\"\n{text}");
    }
    text
}

/// A metric's value, 0 when the series is absent.
pub async fn metric_or_zero(server: &TestServer, series: &str) -> f64 {
    server.metric(series).await.unwrap_or(0.0)
}

/// `accel_dns_queries_total` for UDP and `outcome` (the exposition sorts
/// labels by name).
pub fn udp_outcome(outcome: &str) -> String {
    format!("{QUERIES_TOTAL}{{outcome=\"{outcome}\",protocol=\"udp\"}}")
}

/// `accel_dns_reloads_total{result}`.
pub fn reloads(result: &str) -> String {
    format!("{RELOADS_TOTAL}{{result=\"{result}\"}}")
}

/// Waits until `condition` holds, polling every 10 ms, and returns how long
/// that took; panics if it takes longer than `limit`.
pub async fn wait_within<F, Fut>(limit: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            return start.elapsed();
        }
        let elapsed = start.elapsed();
        assert!(elapsed <= limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Captures the log lines of the current thread. Hold the guard for the
/// whole test, and use the default (current-thread) test runtime so that the
/// server's tasks log on this thread too.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Starts capturing (at debug level and above).
    pub fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        // tracing caches whether a log statement is enabled, for every thread
        // at once, the first time it runs. While a single dispatcher exists,
        // it asks only the subscriber of the thread that got there first: a
        // test without capture would switch the statement off for the
        // capturing test. A second, permanent dispatcher makes tracing ask
        // every live subscriber (each new one re-asks for every statement).
        static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let capture = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(capture.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (capture, guard)
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }

    /// The lines that contain every one of `parts`.
    pub fn lines_with(&self, parts: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| parts.iter().all(|p| line.contains(p)))
            .map(str::to_string)
            .collect()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn healthz_and_readyz_are_200_after_start() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start("", Some(upstream.addr)).await;
    assert_eq!(server.admin_get("/healthz").await.0, 200);
    let (status, body) = server.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.metric(READY).await, Some(1.0), "the gauge agrees");
    let (status, _) = server.admin_get("/no-such-page").await;
    assert_eq!(status, 404);
}

/// README "Live reload": on stop, `/readyz` fails first while queries are still answered
/// (the lame duck), then the listeners close.
#[tokio::test]
async fn readyz_fails_while_draining_and_queries_are_still_answered() {
    let upstream = FakeUpstream::start().await;
    let mut server = TestServer::start(
        "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n",
        Some(upstream.addr),
    )
    .await;
    let mut running = server.server.take().expect("running");
    running.lame_duck = Duration::from_secs(2);
    let stopping = tokio::spawn(running.stop());
    wait_until("/readyz answers 503", || async {
        server.admin_get("/readyz").await.0 == 503
    })
    .await;
    let (_, body) = server.admin_get("/readyz").await;
    assert!(body.contains("draining"), "{body}");
    assert_eq!(
        server.metric(READY).await,
        Some(0.0),
        "accel_dns_ready follows /readyz"
    );
    assert_eq!(server.admin_get("/healthz").await.0, 200, "still alive");
    assert_eq!(
        answer_a(server.dns, "docker.io.").await,
        vec!["203.0.113.10"],
        "still answering during the lame duck"
    );
    tokio::time::timeout(DEADLINE, stopping)
        .await
        .expect("stop returns")
        .expect("stop task");
    let query = query_message("docker.io.", RecordType::A, None)
        .to_vec()
        .expect("encode");
    assert!(
        udp_raw(server.dns, &query, Duration::from_millis(300))
            .await
            .is_none(),
        "the listeners are closed after stop"
    );
}

/// Every metric named in README "Admin endpoint and metrics" (and the health-check and build-info gauges) is
/// exported, under the names the crate exports as constants.
#[tokio::test]
async fn every_spec_metric_is_exported() {
    let upstream = FakeUpstream::start().await;
    let probe_target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = probe_target.local_addr().expect("addr").port();
    let server = TestServer::start(
        &format!(
            "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n\
             [[record]]\nname = \"probed.test\"\na = [\"127.0.0.1\"]\n\
             health_check = {{ port = {port}, interval = \"1s\" }}\n"
        ),
        Some(upstream.addr),
    )
    .await;
    query_udp(server.dns, "docker.io.", RecordType::A).await;
    query_udp(server.dns, "forwarded.test.", RecordType::A).await;
    let (status, body) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        QUERIES_TOTAL,
        UPSTREAM_DURATION,
        UPSTREAM_ERRORS,
        CACHE_ENTRIES,
        RECORD_HITS,
        RELOADS_TOTAL,
        LAST_RELOAD_SUCCESS,
        LAST_RELOAD_TIMESTAMP,
        RECORD_UP,
        ENDPOINT_UP,
        BUILD_INFO,
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} missing from /metrics:\n{body}"
        );
    }
    assert!(body.contains(&format!("# TYPE {UPSTREAM_DURATION} histogram")));
    let upstream_label = format!("upstream=\"{}\"", upstream.addr);
    assert!(
        body.lines()
            .any(|l| l.starts_with(&format!("{UPSTREAM_DURATION}_count{{{upstream_label}}}"))),
        "a duration histogram per upstream:\n{body}"
    );
    assert!(body.contains(&format!("{UPSTREAM_ERRORS}{{{upstream_label}}} 0")));
    for outcome in [
        "record", "cache", "upstream", "stale", "refused", "servfail", "formerr", "notimp",
        "badvers",
    ] {
        for protocol in ["udp", "tcp"] {
            let series =
                format!("{QUERIES_TOTAL}{{outcome=\"{outcome}\",protocol=\"{protocol}\"}}");
            assert!(
                metric_value(&body, &series).is_some(),
                "{series} missing:\n{body}"
            );
        }
    }
    assert_eq!(metric_value(&body, CACHE_ENTRIES), Some(1.0));
    assert_eq!(metric_value(&body, &reloads("ok")), Some(0.0));
    assert_eq!(metric_value(&body, &reloads("error")), Some(0.0));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        metric_value(&body, &format!("{BUILD_INFO}{{version=\"{version}\"}}")),
        Some(1.0)
    );
}

/// Regression: a fresh process reported `last_reload_success 0` (and no
/// timestamp) until its first reload, so a "last reload failed" alert fired
/// on every restart.
#[tokio::test]
async fn a_fresh_process_reports_its_configuration_as_loaded() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start("", Some(upstream.addr)).await;
    assert_eq!(server.metric(LAST_RELOAD_SUCCESS).await, Some(1.0));
    let stamp = server
        .metric(LAST_RELOAD_TIMESTAMP)
        .await
        .expect("timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - 60.0..=now + 1.0).contains(&stamp),
        "start time as the load time: {stamp} vs {now}"
    );
    assert_eq!(
        server.metric(&reloads("ok")).await,
        Some(0.0),
        "no reload yet"
    );
}

/// The outcome counters move by exactly the queries answered that way.
#[tokio::test]
async fn outcome_counters_move_with_record_cache_upstream_refused_and_formerr() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.1/32\"]\n\
         [[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n",
        Some(upstream.addr),
    )
    .await;
    let outcomes = ["record", "cache", "upstream", "refused", "formerr"];
    let mut before = Vec::new();
    for outcome in outcomes {
        before.push(metric_or_zero(&server, &udp_outcome(outcome)).await);
    }
    // record ×2, upstream ×1 then cache ×2, refused ×1, formerr ×1
    query_udp(server.dns, "docker.io.", RecordType::A).await;
    query_udp(server.dns, "DOCKER.io.", RecordType::AAAA).await;
    query_udp(server.dns, "pull.test.", RecordType::A).await;
    query_udp(server.dns, "pull.test.", RecordType::A).await;
    query_udp(server.dns, "Pull.Test.", RecordType::A).await;
    let refused = query_from("127.0.0.2", server.dns, "docker.io.", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    let no_question = Message::new(4242, MessageType::Query, OpCode::Query);
    let formerr = send_udp(server.dns, &no_question).await;
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    let expected = [2.0, 2.0, 1.0, 1.0, 1.0];
    for ((outcome, before), delta) in outcomes.iter().zip(before).zip(expected) {
        let after = metric_or_zero(&server, &udp_outcome(outcome)).await;
        assert_eq!(after - before, delta, "outcome {outcome}");
    }
    // TCP is counted under its own protocol label.
    query_tcp(server.dns, "docker.io.", RecordType::A).await;
    assert_eq!(
        server
            .metric(&format!(
                "{QUERIES_TOTAL}{{outcome=\"record\",protocol=\"tcp\"}}"
            ))
            .await,
        Some(1.0)
    );
    assert_eq!(upstream.count(), 1);
}

/// `record_hits` is labelled with the configured name (`*.docker.io`), never
/// with the name asked, so the label set stays bounded by the configuration.
#[tokio::test]
async fn record_hits_are_labelled_by_configured_name() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(
        "[[record]]\nname = \"Docker.IO\"\na = [\"203.0.113.10\"]\n\
         [[record]]\nname = \"*.docker.io\"\ncname = \"docker.io\"\n",
        Some(upstream.addr),
    )
    .await;
    for asked in [
        "registry-1.docker.io.",
        "auth.docker.io.",
        "a.b.c.docker.io.",
        "REGISTRY-1.docker.io.",
    ] {
        query_udp(server.dns, asked, RecordType::A).await;
    }
    query_udp(server.dns, "docker.io.", RecordType::A).await;
    let (_, body) = server.admin_get("/metrics").await;
    assert_eq!(
        metric_value(&body, &format!("{RECORD_HITS}{{record=\"*.docker.io\"}}")),
        Some(4.0),
        "{body}"
    );
    // The CNAME chase lands on docker.io four times, plus the direct query.
    assert_eq!(
        metric_value(&body, &format!("{RECORD_HITS}{{record=\"docker.io\"}}")),
        Some(5.0),
        "{body}"
    );
    for asked in ["registry-1", "auth.docker", "a.b.c", "127.0.0.1"] {
        assert!(
            !body
                .lines()
                .any(|l| l.starts_with(RECORD_HITS) && l.contains(asked)),
            "asked name or client {asked} leaked into a label:\n{body}"
        );
    }
}

/// Reload counters and gauges: ok, error, and back to ok.
#[tokio::test]
async fn reload_counters_move() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(
        "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.10\"]\n",
        Some(upstream.addr),
    )
    .await;
    let reloader = server.server.as_ref().expect("running").reload.clone();
    let start_stamp = server.metric(LAST_RELOAD_TIMESTAMP).await.expect("stamp");
    reloader
        .send(accel_dns::internals::reload::Trigger::Forced)
        .await
        .expect("send");
    wait_until("reloads_total{ok} = 1", || async {
        server.metric(&reloads("ok")).await == Some(1.0)
    })
    .await;
    assert!(server.metric(LAST_RELOAD_TIMESTAMP).await.expect("stamp") >= start_stamp);
    server.write_config("[[record]]\nname = \"docker.io\"\n", None);
    wait_until("reloads_total{error} = 1", || async {
        server.metric(&reloads("error")).await == Some(1.0)
    })
    .await;
    assert_eq!(server.metric(LAST_RELOAD_SUCCESS).await, Some(0.0));
    rewrite(
        &server,
        "[[record]]\nname = \"docker.io\"\na = [\"203.0.113.11\"]\n",
        upstream.addr,
    );
    wait_until("reloads_total{ok} = 2", || async {
        server.metric(&reloads("ok")).await == Some(2.0)
    })
    .await;
    assert_eq!(server.metric(LAST_RELOAD_SUCCESS).await, Some(1.0));
    assert_eq!(server.metric(&reloads("error")).await, Some(1.0));
}
