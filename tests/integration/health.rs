//! Fail-open health-checked records (SPEC §8), end to end: TCP listeners on
//! 127.0.0.x stand in for the accelerated endpoints (the probe port is per
//! record, so each endpoint is its own loopback address on one port);
//! stopping them takes addresses out of the answers after `fall` probes,
//! steps the record aside when none is left, and starting them again brings
//! it back after `rise`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use accel_dns::metrics::{ENDPOINT_UP, RECORD_UP};
use hickory_proto::rr::{RData, RecordType};

use crate::admin::{LogCapture, answer_a, complete, query_from, rewrite};
use crate::common::*;

/// Probe interval of every test here.
const INTERVAL: Duration = Duration::from_millis(50);

/// A TCP endpoint that accepts (and counts) probe connections while started.
struct FakeEndpoint {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeEndpoint {
    fn new(ip: &str, port: u16) -> Self {
        Self {
            addr: format!("{ip}:{port}").parse().expect("addr"),
            accepted: Arc::new(AtomicUsize::new(0)),
            task: None,
        }
    }

    /// Listens (again); probes connect.
    async fn start(&mut self) {
        assert!(self.task.is_none(), "already started");
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("bind {}: {e}", self.addr));
        let accepted = self.accepted.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        }));
    }

    /// Closes the listener: probes are refused from now on.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Endpoints on `ips`, all on one port free on each of them, started.
async fn endpoints(ips: &[&str]) -> (u16, Vec<FakeEndpoint>) {
    'port: for _ in 0..50 {
        let first = std::net::TcpListener::bind(format!("{}:0", ips[0])).expect("bind");
        let port = first.local_addr().expect("addr").port();
        drop(first);
        let mut list: Vec<FakeEndpoint> =
            ips.iter().map(|ip| FakeEndpoint::new(ip, port)).collect();
        for endpoint in &list {
            if std::net::TcpListener::bind(endpoint.addr).is_err() {
                continue 'port;
            }
        }
        for endpoint in &mut list {
            endpoint.start().await;
        }
        return (port, list);
    }
    panic!("no port free on every one of {ips:?}");
}

/// A health-checked record `name` over `ips`.
fn checked(name: &str, ips: &[&str], port: u16, fall: u32, rise: u32) -> String {
    let list: Vec<String> = ips.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[record]]\nname = \"{name}\"\na = [{}]\n\
         health_check = {{ port = {port}, interval = \"{}ms\", timeout = \"200ms\", fall = {fall}, rise = {rise} }}\n",
        list.join(", "),
        INTERVAL.as_millis()
    )
}

fn record_up(record: &str) -> String {
    format!("{RECORD_UP}{{record=\"{record}\"}}")
}

fn endpoint_up(record: &str, address: &str) -> String {
    format!("{ENDPOINT_UP}{{address=\"{address}\",record=\"{record}\"}}")
}

/// Waits until `qname` answers exactly `expected` and returns how long that took.
async fn until_answer(server: &TestServer, qname: &str, expected: &[&str]) -> Duration {
    let start = Instant::now();
    wait_until(&format!("{qname} answers {expected:?}"), || async {
        answer_a(server.dns, qname).await == expected
    })
    .await;
    start.elapsed()
}

#[tokio::test]
async fn dead_endpoints_leave_the_answers_and_all_dead_steps_the_record_aside() {
    let (logs, _guard) = LogCapture::start();
    let upstream = FakeUpstream::start().await;
    let ips = ["127.0.0.21", "127.0.0.22"];
    let (port, mut eps) = endpoints(&ips).await;
    let (fall, rise) = (3, 2);
    let server = TestServer::start(
        &format!(
            "{}{}[[record]]\nname = \"*.wild.test\"\na = [\"203.0.113.99\"]\n",
            checked("registry.test", &ips, port, fall, rise),
            checked("hub.wild.test", &ips, port, fall, rise),
        ),
        Some(upstream.addr),
    )
    .await;
    assert_eq!(answer_a(server.dns, "registry.test.").await, ips);
    wait_until("both endpoints probed", || async {
        eps.iter().all(|e| e.accepted() >= 2)
    })
    .await;
    assert_eq!(server.metric(&record_up("registry.test")).await, Some(1.0));
    assert_eq!(
        server
            .metric(&endpoint_up("registry.test", "127.0.0.21"))
            .await,
        Some(1.0)
    );

    // One endpoint dies: it leaves the answers after `fall` failed probes.
    eps[0].stop().await;
    let took = until_answer(&server, "registry.test.", &["127.0.0.22"]).await;
    let fall_time = INTERVAL * (fall - 1);
    assert!(
        took >= fall_time,
        "removed after {took:?}, before {fall} probes failed"
    );
    eprintln!("one endpoint down: out of the answers after {took:?} (fall {fall} × {INTERVAL:?})");
    assert_eq!(
        server
            .metric(&endpoint_up("registry.test", "127.0.0.21"))
            .await,
        Some(0.0)
    );
    assert_eq!(server.metric(&record_up("registry.test")).await, Some(1.0));

    // Both dead: the record steps aside; the name resolves as if it did not
    // exist — upstream, or the wildcard below which it sits.
    eps[1].stop().await;
    until_answer(&server, "registry.test.", &["198.51.100.7"]).await;
    until_answer(&server, "hub.wild.test.", &["203.0.113.99"]).await;
    assert_eq!(server.metric(&record_up("registry.test")).await, Some(0.0));
    assert_eq!(
        server
            .metric(&endpoint_up("registry.test", "127.0.0.22"))
            .await,
        Some(0.0)
    );
    // AAAA, too, now comes from upstream rather than NODATA from the record.
    let aaaa = query_udp(server.dns, "registry.test.", RecordType::AAAA).await;
    assert!(
        aaaa.answers
            .iter()
            .any(|r| matches!(r.data, RData::AAAA(_))),
        "{aaaa:?}"
    );

    // One comes back: after `rise` good probes the record answers again, with it alone.
    let restarted = Instant::now();
    eps[1].start().await;
    until_answer(&server, "registry.test.", &["127.0.0.22"]).await;
    let took = restarted.elapsed();
    assert!(
        took >= INTERVAL * (rise - 1),
        "back after {took:?}, before {rise} probes succeeded"
    );
    eprintln!(
        "one endpoint back: record answers again after {took:?} (rise {rise} × {INTERVAL:?})"
    );
    until_answer(&server, "hub.wild.test.", &["127.0.0.22"]).await;
    assert_eq!(server.metric(&record_up("registry.test")).await, Some(1.0));

    eps[0].start().await;
    until_answer(&server, "registry.test.", &ips).await;

    // Each change of a record is logged at warn level.
    let aside = logs.lines_with(&["WARN", "registry.test", "steps aside"]);
    let back = logs.lines_with(&["WARN", "registry.test", "answers again"]);
    assert_eq!((aside.len(), back.len()), (1, 1), "{}", logs.text());
    assert!(
        !logs
            .lines_with(&["WARN", "127.0.0.21", "endpoint is down"])
            .is_empty(),
        "{}",
        logs.text()
    );
}

/// A CNAME record whose target is a health-checked record follows its state:
/// the chase goes upstream while the target steps aside.
#[tokio::test]
async fn a_cname_to_a_checked_record_follows_its_state() {
    let upstream = FakeUpstream::start().await;
    let ips = ["127.0.0.23"];
    let (port, mut eps) = endpoints(&ips).await;
    let server = TestServer::start(
        &format!(
            "{}[[record]]\nname = \"alias.test\"\ncname = \"ga.accel.test\"\n",
            checked("ga.accel.test", &ips, port, 2, 1),
        ),
        Some(upstream.addr),
    )
    .await;
    let answer = query_udp(server.dns, "alias.test.", RecordType::A).await;
    assert!(
        matches!(answer.answers[0].data, RData::CNAME(_)),
        "{answer:?}"
    );
    assert_eq!(answer_a(server.dns, "alias.test.").await, ips);

    eps[0].stop().await;
    until_answer(&server, "alias.test.", &["198.51.100.7"]).await;
    let answer = query_udp(server.dns, "alias.test.", RecordType::A).await;
    assert!(
        matches!(answer.answers[0].data, RData::CNAME(_)),
        "CNAME first: {answer:?}"
    );
    assert_eq!(
        upstream.seen().last().expect("asked").queries[0]
            .name()
            .to_ascii(),
        "ga.accel.test."
    );

    eps[0].start().await;
    until_answer(&server, "alias.test.", &ips).await;
}

/// A reload keeps the state of probes whose record, address and check are
/// unchanged; a changed check starts over (up until `fall` failures); a
/// removed record's probes stop.
#[tokio::test]
async fn a_reload_keeps_probe_state_and_a_changed_check_restarts_it() {
    let upstream = FakeUpstream::start().await;
    let ips = ["127.0.0.24", "127.0.0.25"];
    let (port, mut eps) = endpoints(&ips).await;
    let record = |fall: u32| checked("registry.test", &ips, port, fall, 1);
    let clock_ip = ["127.0.0.26"];
    let (clock_port, clock) = endpoints(&clock_ip).await;
    // A second checked record on another endpoint: its probes tell time.
    let clock_record = checked("clock.test", &clock_ip, clock_port, 2, 1);
    let server =
        TestServer::start(&format!("{}{clock_record}", record(2)), Some(upstream.addr)).await;
    eps[0].stop().await;
    until_answer(&server, "registry.test.", &["127.0.0.25"]).await;

    // Unchanged record, other things changed: the down state is kept, so
    // the dead address does not come back for even one answer.
    rewrite(
        &server,
        &format!(
            "{}{clock_record}[[record]]\nname = \"new.test\"\na = [\"203.0.113.7\"]\n",
            record(2)
        ),
        upstream.addr,
    );
    until_answer(&server, "new.test.", &["203.0.113.7"]).await;
    assert_eq!(answer_a(server.dns, "registry.test.").await, ["127.0.0.25"]);

    // A changed check (fall 2 → 100) starts over: every address counts as
    // up until it has failed 100 probes (5 s here).
    rewrite(
        &server,
        &format!("{}{clock_record}", record(100)),
        upstream.addr,
    );
    let restarted = until_answer(&server, "registry.test.", &ips).await;
    eprintln!("changed check: dead address back in the answers {restarted:?} after the write");
    assert!(
        answer_a(server.dns, "new.test.").await != ["203.0.113.7"],
        "the reload is in force"
    );

    // The record goes away: its probes stop (no task of the old
    // configuration keeps running), while the clock record's go on.
    let alive = eps[1].accepted();
    rewrite(&server, &clock_record, upstream.addr);
    wait_until("registry.test is gone", || async {
        answer_a(server.dns, "registry.test.").await == ["198.51.100.7"]
    })
    .await;
    let after_reload = eps[1].accepted();
    assert!(after_reload >= alive);
    let ticks = clock[0].accepted();
    wait_until("ten more probes of the clock endpoint", || async {
        clock[0].accepted() >= ticks + 10
    })
    .await;
    assert!(
        eps[1].accepted() <= after_reload + 1,
        "the removed record is still probed: {} probes after the reload",
        eps[1].accepted() - after_reload
    );
}

/// Views and health checks combine: a view whose addresses are all down
/// steps aside for its network, which then gets the record without
/// `clients`; `record_up` of the name is 0 while any of its records is.
#[tokio::test]
async fn a_view_stepped_aside_falls_back_to_the_default_record() {
    let upstream = FakeUpstream::start().await;
    let (port, mut eps) = endpoints(&["127.0.0.29", "127.0.0.30"]).await;
    let server = TestServer::start(
        &format!(
            "{}{}clients = [\"127.0.9.0/24\"]\n",
            checked("docker.io", &["127.0.0.29"], port, 2, 1),
            checked("docker.io", &["127.0.0.30"], port, 2, 1),
        ),
        Some(upstream.addr),
    )
    .await;
    let from = |source: &'static str| {
        let dns = server.dns;
        async move {
            a_records(&query_from(source, dns, "docker.io.", RecordType::A).await)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(from("127.0.9.5").await, ["127.0.0.30"]);
    assert_eq!(from("127.0.0.1").await, ["127.0.0.29"]);
    assert_eq!(server.metric(&record_up("docker.io")).await, Some(1.0));

    eps[1].stop().await;
    wait_until("the view steps aside", || async {
        from("127.0.9.5").await == ["127.0.0.29"]
    })
    .await;
    assert_eq!(from("127.0.0.1").await, ["127.0.0.29"]);
    assert_eq!(server.metric(&record_up("docker.io")).await, Some(0.0));
    assert_eq!(
        server.metric(&endpoint_up("docker.io", "127.0.0.30")).await,
        Some(0.0)
    );
    assert_eq!(
        server.metric(&endpoint_up("docker.io", "127.0.0.29")).await,
        Some(1.0)
    );

    eps[1].start().await;
    wait_until("the view is back", || async {
        from("127.0.9.5").await == ["127.0.0.30"]
    })
    .await;
    assert_eq!(server.metric(&record_up("docker.io")).await, Some(1.0));
}

/// Records that probe the same address and port with the same check share
/// one probe; the health state applies to both.
#[tokio::test]
async fn records_share_the_probe_of_an_endpoint() {
    let upstream = FakeUpstream::start().await;
    let ips = ["127.0.0.27"];
    let (port, mut eps) = endpoints(&ips).await;
    let clock_ip = ["127.0.0.28"];
    let (clock_port, clock) = endpoints(&clock_ip).await;
    let server = TestServer::start(
        &format!(
            "{}{}{}",
            checked("one.test", &ips, port, 2, 1),
            checked("two.test", &ips, port, 2, 1),
            checked("clock.test", &clock_ip, clock_port, 2, 1),
        ),
        Some(upstream.addr),
    )
    .await;
    let (shared_start, clock_start) = (eps[0].accepted(), clock[0].accepted());
    wait_until("twenty probes of the clock endpoint", || async {
        clock[0].accepted() >= clock_start + 20
    })
    .await;
    let shared = eps[0].accepted() - shared_start;
    let ticks = clock[0].accepted() - clock_start;
    assert!(
        shared <= ticks + 2,
        "two records, one endpoint: {shared} probes while the clock saw {ticks}"
    );
    eps[0].stop().await;
    until_answer(&server, "one.test.", &["198.51.100.7"]).await;
    assert_eq!(answer_a(server.dns, "two.test.").await, ["198.51.100.7"]);
}

/// `health_check` on a CNAME record is a validation error (also at reload).
#[tokio::test]
async fn a_health_check_on_a_cname_record_is_rejected() {
    let upstream = FakeUpstream::start().await;
    let server = TestServer::start(
        "[[record]]\nname = \"alias.test\"\ncname = \"docker.io\"\n",
        Some(upstream.addr),
    )
    .await;
    let text = complete(
        "[[record]]\nname = \"alias.test\"\ncname = \"other.test\"\n\
         health_check = { port = 443 }\n",
        upstream.addr,
    );
    let error =
        accel_dns::config::parse(&text, None, &test_env(server.dir.path())).expect_err("invalid");
    assert!(
        error
            .to_string()
            .contains("health_check is only allowed on address records"),
        "{error}"
    );
    server.write_config(&text, None);
    wait_until("the reload is rejected", || async {
        server.metric(&crate::admin::reloads("error")).await == Some(1.0)
    })
    .await;
    let answer = query_udp(server.dns, "alias.test.", RecordType::A).await;
    assert_eq!(
        answer.answers[0].data,
        RData::CNAME(hickory_proto::rr::rdata::CNAME(name("docker.io.")))
    );
}
