//! Fail-open health-checked records (README "Health-checked records (fail-open)"), end to end: TCP listeners on
//! 127.0.0.x stand in for the accelerated endpoints (the probe port is per
//! record, so each endpoint is its own loopback address on one port);
//! stopping them takes addresses out of the answers after `fall` probes,
//! steps the record aside when none is left, and starting them again brings
//! it back after `rise`. Then the probes that see through a layer-4 edge:
//! TLS servers with a CA made at test time, which answer HTTP with a status
//! the test sets, or accept TCP and fail TLS, or never answer; and CNAME
//! records whose target the fake upstream resolves to those servers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accel_dns::internals::metrics::{ENDPOINT_UP, RECORD_UP};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, Record, RecordType};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

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

/// A CA made for one test: it signs the servers' certificates and is
/// written out as the `ca_file` of the records.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(label: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("accel-dns test CA {label}"));
        let key = KeyPair::generate().expect("key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    /// Writes the CA certificate (PEM) to `path`.
    fn write(&self, path: &Path) {
        std::fs::write(path, self.issuer.pem()).expect("write CA file");
    }

    /// A TLS acceptor whose certificate covers `names`.
    fn acceptor(&self, names: &[&str]) -> TlsAcceptor {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(ToString::to_string).collect();
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("sign");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("server config");
        TlsAcceptor::from(Arc::new(config))
    }
}

/// What a [`Service`] does with each connection it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// TLS handshake, then the request head answered with this status
    /// (none: the handshake alone, then wait for the client to close).
    Tls(Option<u16>),
    /// Accepts TCP, sends bytes that are not TLS, closes: a layer-4 edge
    /// whose backend is gone.
    Garbage,
    /// Accepts TCP and never sends a byte.
    Silent,
}

/// A TLS (or not) endpoint on one loopback address whose behaviour the
/// test switches while it runs.
struct Service {
    mode: Arc<Mutex<Mode>>,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Service {
    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

/// Reads one request head (bounded) and answers it with `status`.
async fn answer_http<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    status: u16,
) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let response =
        format!("HTTP/1.1 {status} Test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    String::from_utf8_lossy(&head).into_owned()
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    mode: Arc<Mutex<Mode>>,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
) {
    while let Ok((mut stream, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::SeqCst);
        let now = *mode.lock().expect("lock");
        let (acceptor, heads) = (acceptor.clone(), heads.clone());
        tokio::spawn(async move {
            match now {
                Mode::Garbage => {
                    let _ = stream.write_all(b"SSH-2.0-not-tls\r\n").await;
                }
                Mode::Silent => {
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                }
                Mode::Tls(status) => {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    match status {
                        Some(status) => {
                            // A handshake-only probe closes without a request.
                            let head = answer_http(tls, status).await;
                            if !head.is_empty() {
                                heads.lock().expect("lock").push(head);
                            }
                        }
                        None => {
                            let mut rest = Vec::new();
                            let _ = tls.read_to_end(&mut rest).await;
                        }
                    }
                }
            }
        });
    }
}

/// Services on `ips`, all on one port free on each of them, in `mode`.
async fn services(ips: &[&str], acceptor: &TlsAcceptor, mode: Mode) -> (u16, Vec<Service>) {
    'port: for _ in 0..50 {
        let first = std::net::TcpListener::bind(format!("{}:0", ips[0])).expect("bind");
        let port = first.local_addr().expect("addr").port();
        drop(first);
        let mut listeners = Vec::new();
        for ip in ips {
            match tokio::net::TcpListener::bind(format!("{ip}:{port}")).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => continue 'port,
            }
        }
        let list = listeners
            .into_iter()
            .map(|listener| {
                let mode = Arc::new(Mutex::new(mode));
                let accepted = Arc::new(AtomicUsize::new(0));
                let heads = Arc::new(Mutex::new(Vec::new()));
                let task = tokio::spawn(serve(
                    listener,
                    acceptor.clone(),
                    mode.clone(),
                    accepted.clone(),
                    heads.clone(),
                ));
                Service {
                    mode,
                    accepted,
                    heads,
                    task,
                }
            })
            .collect();
        return (port, list);
    }
    panic!("no port free on every one of {ips:?}");
}

/// A record `name` (addresses or `cname = ...`) checked with `extra` keys.
fn probed(name: &str, data: &str, port: u16, extra: &str) -> String {
    format!(
        "[[record]]\nname = \"{name}\"\n{data}\n\
         health_check = {{ port = {port}, interval = \"{}ms\", timeout = \"1s\", fall = 2, rise = 1{extra} }}\n",
        INTERVAL.as_millis()
    )
}

/// `a = [...]` of `ips`.
fn addresses(ips: &[&str]) -> String {
    let list: Vec<String> = ips.iter().map(|a| format!("\"{a}\"")).collect();
    format!("a = [{}]", list.join(", "))
}

/// A directory holding the CA file of a test, outside the server's own.
fn ca_dir(ca: &TestCa) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ca.pem");
    ca.write(&path);
    let shown = path.display().to_string();
    (dir, shown)
}

/// `tls`/`path` probes step a record aside when the handshake, the
/// certificate or the HTTP status fails, while a TCP-only probe of the same
/// endpoint — what a layer-4 accelerator's edge accepts — keeps its record
/// in the answers.
#[tokio::test]
async fn tls_and_http_probes_see_what_a_tcp_connect_cannot() {
    let (logs, _guard) = LogCapture::start();
    let upstream = FakeUpstream::start().await;
    let ca = TestCa::new("edge");
    let (_ca_dir, ca_file) = ca_dir(&ca);
    let acceptor = ca.acceptor(&["edge.test", "registry.wild.test"]);
    let ips = ["127.0.0.41"];
    let (port, edge) = services(&ips, &acceptor, Mode::Tls(Some(200))).await;
    let ca_key = format!(", ca_file = \"{ca_file}\"");
    let server = TestServer::start(
        &[
            probed(
                "edge.test",
                &addresses(&ips),
                port,
                &format!(", tls = true, path = \"/v2/\"{ca_key}"),
            ),
            probed(
                "handshake.edge.test",
                &addresses(&ips),
                port,
                &format!(", tls = \"edge.test\"{ca_key}"),
            ),
            probed("tcp.edge.test", &addresses(&ips), port, ""),
            probed(
                "*.wild.test",
                &addresses(&ips),
                port,
                &format!(", tls = \"registry.wild.test\"{ca_key}"),
            ),
            // The certificate is not valid for this name: never up.
            probed(
                "wrong.test",
                &addresses(&ips),
                port,
                &format!(", tls = true{ca_key}"),
            ),
        ]
        .concat(),
        Some(upstream.addr),
    )
    .await;
    let all_up = [
        "edge.test.",
        "handshake.edge.test.",
        "tcp.edge.test.",
        "x.wild.test.",
    ];
    for name in all_up {
        assert_eq!(answer_a(server.dns, name).await, ips, "{name}");
    }
    until_answer(&server, "wrong.test.", &["198.51.100.7"]).await;
    assert_eq!(
        server
            .metric(&endpoint_up("wrong.test", "127.0.0.41"))
            .await,
        Some(0.0)
    );
    assert!(
        !logs
            .lines_with(&[
                "WARN",
                "127.0.0.41",
                "tls wrong.test",
                "endpoint is down",
                "TLS handshake"
            ])
            .is_empty(),
        "{}",
        logs.text()
    );
    // The GET carries the path and the SNI name as Host (with the port: not 443).
    wait_until("a GET seen", || async { !edge[0].heads().is_empty() }).await;
    let head = edge[0].heads()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /v2/ http/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("host: edge.test:{port}\r\n")),
        "{head}"
    );

    // 401 (a registry asking for a token) is up: more probes, same answers.
    edge[0].set(Mode::Tls(Some(401)));
    let seen = edge[0].heads().len();
    wait_until("five probes answered 401", || async {
        edge[0].heads().len() >= seen + 5
    })
    .await;
    assert_eq!(answer_a(server.dns, "edge.test.").await, ips);

    // 503: the HTTP probe steps its record aside; the handshake and the
    // connect still succeed.
    edge[0].set(Mode::Tls(Some(503)));
    let took = until_answer(&server, "edge.test.", &["198.51.100.7"]).await;
    eprintln!(
        "HTTP 503: path probe stepped the record aside after {took:?} (fall 2 × {INTERVAL:?})"
    );
    assert_eq!(server.metric(&record_up("edge.test")).await, Some(0.0));
    assert_eq!(
        server.metric(&endpoint_up("edge.test", "127.0.0.41")).await,
        Some(0.0)
    );
    for name in ["handshake.edge.test.", "tcp.edge.test.", "x.wild.test."] {
        assert_eq!(answer_a(server.dns, name).await, ips, "{name}");
    }
    assert!(
        !logs
            .lines_with(&["WARN", "127.0.0.41", "endpoint is down", "HTTP status 503"])
            .is_empty(),
        "{}",
        logs.text()
    );

    // TCP accepted, TLS fails: every TLS probe goes down, the TCP one stays up.
    edge[0].set(Mode::Garbage);
    until_answer(&server, "handshake.edge.test.", &["198.51.100.7"]).await;
    until_answer(&server, "x.wild.test.", &["198.51.100.7"]).await;
    let accepted = edge[0].accepted();
    wait_until("ten more connects", || async {
        edge[0].accepted() >= accepted + 10
    })
    .await;
    assert_eq!(answer_a(server.dns, "tcp.edge.test.").await, ips);
    assert_eq!(server.metric(&record_up("tcp.edge.test")).await, Some(1.0));

    // Healthy again: every record but the misnamed one answers again.
    edge[0].set(Mode::Tls(Some(200)));
    for name in all_up {
        until_answer(&server, name, &ips).await;
    }
    assert_eq!(answer_a(server.dns, "wrong.test.").await, ["198.51.100.7"]);
}

/// A server that accepts and never answers: the probe fails at its
/// `timeout` (it would hang for ever otherwise), so the record steps aside
/// after `fall` probes of `timeout` each.
#[tokio::test]
async fn a_probe_that_gets_no_answer_fails_at_its_timeout() {
    let upstream = FakeUpstream::start().await;
    let ca = TestCa::new("silent");
    let (_ca_dir, ca_file) = ca_dir(&ca);
    let ips = ["127.0.0.42"];
    let (port, _silent) = services(&ips, &ca.acceptor(&["silent.test"]), Mode::Silent).await;
    let started = Instant::now();
    let server = TestServer::start(
        &probed(
            "silent.test",
            &addresses(&ips),
            port,
            &format!(", tls = true, path = \"/v2/\", ca_file = \"{ca_file}\""),
        ),
        Some(upstream.addr),
    )
    .await;
    until_answer(&server, "silent.test.", &["198.51.100.7"]).await;
    let took = started.elapsed();
    // fall = 2 probes of timeout = 1 s each, one interval between them.
    assert!(
        took >= Duration::from_secs(2),
        "down after {took:?}: before two timeouts"
    );
    assert!(took < Duration::from_secs(5), "down after {took:?}");
    eprintln!("silent endpoint: record stepped aside after {took:?} (fall 2 × timeout 1s)");
}

/// A `ca_file` is read relative to the config file, checked at every
/// reload (a bad one leaves the running configuration in force), and a CA
/// file rewritten with another CA is another check: the probes start over
/// and fail against a certificate the new CA did not sign.
#[tokio::test]
async fn a_ca_file_is_relative_to_the_config_checked_at_reload_and_followed() {
    let upstream = FakeUpstream::start().await;
    let ca = TestCa::new("first");
    let ips = ["127.0.0.43"];
    let (port, _edge) = services(&ips, &ca.acceptor(&["ca.test"]), Mode::Tls(Some(200))).await;
    let (_ca_dir, absolute) = ca_dir(&ca);
    let record = |file: &str| {
        probed(
            "ca.test",
            &addresses(&ips),
            port,
            &format!(", tls = true, ca_file = \"{file}\""),
        )
    };
    let server = TestServer::start(&record(&absolute), Some(upstream.addr)).await;
    assert_eq!(answer_a(server.dns, "ca.test.").await, ips);

    // A relative path names a file beside the config file.
    ca.write(&server.dir.path().join("ca.pem"));
    rewrite(
        &server,
        &format!(
            "{}[[record]]\nname = \"marker.test\"\na = [\"203.0.113.1\"]\n",
            record("ca.pem")
        ),
        upstream.addr,
    );
    until_answer(&server, "marker.test.", &["203.0.113.1"]).await;
    assert_eq!(answer_a(server.dns, "ca.test.").await, ips);

    // A CA file that is not PEM: the reload fails with the line, nothing changes.
    std::fs::write(server.dir.path().join("broken.pem"), "not a certificate\n").expect("write");
    let text = complete(&record("broken.pem"), upstream.addr);
    let error = accel_dns::config::parse(
        &text,
        Some(&server.config_path),
        &test_env(server.dir.path()),
    )
    .expect_err("invalid");
    let message = error.to_string();
    assert!(
        message.contains("accel-dns.toml:")
            && message.contains("broken.pem")
            && message.contains("BEGIN CERTIFICATE"),
        "{message}"
    );
    server.write_config(&text, Some(upstream.addr));
    wait_until("the reload is rejected", || async {
        server.metric(&crate::admin::reloads("error")).await == Some(1.0)
    })
    .await;
    assert_eq!(answer_a(server.dns, "ca.test.").await, ips);

    // Back to the good file, then the file is rewritten with another CA:
    // the reload follows the file, and the server's certificate no longer
    // verifies.
    rewrite(&server, &record("ca.pem"), upstream.addr);
    until_answer(&server, "marker.test.", &["198.51.100.7"]).await;
    TestCa::new("second").write(&server.dir.path().join("ca.pem"));
    until_answer(&server, "ca.test.", &["198.51.100.7"]).await;
}

/// The fake upstream's zone for CNAME targets: `ga.accel.test` resolves to
/// the addresses in `targets` (TTL 0, so that every resolution asks), or
/// NXDOMAIN when it is empty; everything else as [`default_reply`].
fn target_zone(
    targets: Arc<Mutex<Vec<std::net::Ipv4Addr>>>,
) -> impl Fn(&hickory_proto::op::Message, bool) -> Reply + Send + Sync + 'static {
    move |query, tcp| {
        let q = &query.queries[0];
        if q.name().to_lowercase().to_ascii() != "ga.accel.test." {
            return default_reply(query, tcp);
        }
        let mut response = response_to(query);
        let list = targets.lock().expect("lock").clone();
        if list.is_empty() {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(soa_record("accel.test.", 0));
        } else if q.query_type() == RecordType::A {
            for ip in list {
                response.add_answer(Record::from_rdata(
                    q.name().clone(),
                    0,
                    RData::A(hickory_proto::rr::rdata::A(ip)),
                ));
            }
        } else {
            response.add_authority(soa_record("accel.test.", 0));
        }
        Reply::Answer(response)
    }
}

/// A health-checked CNAME record (README "Health-checked records (fail-open)"): its target is resolved through
/// upstream every interval, each address is probed with the record's name
/// as SNI; all down, or the target NXDOMAIN, and the record steps aside
/// (the name answered from upstream); back, and the CNAME answers again.
/// `accel_dns_endpoint_up` follows the resolved addresses.
#[tokio::test]
async fn a_health_checked_cname_record_steps_aside_when_its_target_fails() {
    let (logs, _guard) = LogCapture::start();
    let targets = Arc::new(Mutex::new(vec![
        std::net::Ipv4Addr::new(127, 0, 0, 44),
        std::net::Ipv4Addr::new(127, 0, 0, 45),
    ]));
    let upstream = FakeUpstream::start().await;
    upstream.set_handler(target_zone(targets.clone()));
    let ca = TestCa::new("cname");
    let (_ca_dir, ca_file) = ca_dir(&ca);
    let ips = ["127.0.0.44", "127.0.0.45"];
    // The accelerator passes TLS through: the origin's certificate, for the record's name.
    let (port, edges) = services(&ips, &ca.acceptor(&["docker.io"]), Mode::Tls(Some(200))).await;
    let record = probed(
        "docker.io",
        "cname = \"ga.accel.test\"",
        port,
        &format!(", tls = true, path = \"/v2/\", ca_file = \"{ca_file}\""),
    );
    let server = TestServer::start(&record, Some(upstream.addr)).await;
    let is_cname = |answer: &hickory_proto::op::Message| {
        matches!(
            answer.answers.first().map(|r| &r.data),
            Some(RData::CNAME(_))
        )
    };
    let answer = query_udp(server.dns, "docker.io.", RecordType::A).await;
    assert!(is_cname(&answer), "{answer:?}");
    assert_eq!(answer_a(server.dns, "docker.io.").await, ips);
    wait_until("both resolved addresses probed", || async {
        edges.iter().all(|e| !e.heads().is_empty())
    })
    .await;
    let head = edges[0].heads()[0].to_ascii_lowercase();
    assert!(
        head.contains(&format!("host: docker.io:{port}\r\n")),
        "SNI and Host are the record's name: {head}"
    );
    assert_eq!(server.metric(&record_up("docker.io")).await, Some(1.0));
    assert_eq!(
        server.metric(&endpoint_up("docker.io", "127.0.0.44")).await,
        Some(1.0)
    );

    // One down: still the CNAME.
    edges[0].set(Mode::Tls(Some(503)));
    wait_until("127.0.0.44 down", || async {
        server.metric(&endpoint_up("docker.io", "127.0.0.44")).await == Some(0.0)
    })
    .await;
    assert!(is_cname(
        &query_udp(server.dns, "docker.io.", RecordType::A).await
    ));
    assert_eq!(server.metric(&record_up("docker.io")).await, Some(1.0));

    // Both down: the record steps aside, docker.io comes from upstream.
    edges[1].set(Mode::Garbage);
    let took = until_answer(&server, "docker.io.", &["198.51.100.7"]).await;
    eprintln!("CNAME record, every address down: stepped aside after {took:?}");
    assert!(!is_cname(
        &query_udp(server.dns, "docker.io.", RecordType::A).await
    ));
    assert_eq!(server.metric(&record_up("docker.io")).await, Some(0.0));
    assert_eq!(
        logs.lines_with(&["WARN", "docker.io", "steps aside"]).len(),
        1,
        "{}",
        logs.text()
    );

    // A reload that leaves the record alone keeps its probes' state.
    rewrite(
        &server,
        &format!("{record}[[record]]\nname = \"marker.test\"\na = [\"203.0.113.1\"]\n"),
        upstream.addr,
    );
    until_answer(&server, "marker.test.", &["203.0.113.1"]).await;
    assert_eq!(answer_a(server.dns, "docker.io.").await, ["198.51.100.7"]);

    // Back up: the CNAME answers again.
    edges[1].set(Mode::Tls(Some(200)));
    until_answer(&server, "docker.io.", &ips).await;
    assert!(is_cname(
        &query_udp(server.dns, "docker.io.", RecordType::A).await
    ));
    assert_eq!(
        logs.lines_with(&["WARN", "docker.io", "answers again"])
            .len(),
        1,
        "{}",
        logs.text()
    );

    // The target moves to one address: the other's series is retired.
    *targets.lock().expect("lock") = vec![std::net::Ipv4Addr::new(127, 0, 0, 45)];
    wait_until("127.0.0.44 no longer resolved", || async {
        server
            .metric(&endpoint_up("docker.io", "127.0.0.44"))
            .await
            .is_none()
    })
    .await;
    assert_eq!(
        server.metric(&endpoint_up("docker.io", "127.0.0.45")).await,
        Some(1.0)
    );

    // The target does not resolve (NXDOMAIN): the record steps aside.
    targets.lock().expect("lock").clear();
    let took = until_answer(&server, "docker.io.", &["198.51.100.7"]).await;
    eprintln!("CNAME target NXDOMAIN: record stepped aside after {took:?} (fall 2 × {INTERVAL:?})");
    assert!(!is_cname(
        &query_udp(server.dns, "docker.io.", RecordType::A).await
    ));
    assert_eq!(server.metric(&record_up("docker.io")).await, Some(0.0));
    assert!(
        !logs
            .lines_with(&["WARN", "ga.accel.test", "does not resolve"])
            .is_empty(),
        "{}",
        logs.text()
    );
    *targets.lock().expect("lock") = vec![std::net::Ipv4Addr::new(127, 0, 0, 44)];
    edges[0].set(Mode::Tls(Some(200)));
    until_answer(&server, "docker.io.", &["127.0.0.44"]).await;
    assert!(is_cname(
        &query_udp(server.dns, "docker.io.", RecordType::A).await
    ));
}

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/health")
        .join(relative)
}

/// `accel-dns check` on the fixtures of the probe keys: the valid one
/// passes (its `ca_file` found beside it), each invalid one names its file,
/// line and what is wrong, and exits 1.
#[test]
fn check_validates_the_probe_keys_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.1\n").expect("write");
    let check = |path: PathBuf| {
        Command::new(env!("CARGO_BIN_EXE_accel-dns"))
            .env_remove("ACCEL_DNS_CONFIG")
            .env_remove("RUST_LOG")
            .env("ACCEL_DNS_RESOLV_CONF", &resolv)
            .args(["check", "--config"])
            .arg(path)
            .output()
            .expect("run accel-dns check")
    };
    let out = check(fixture("valid/probes.toml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("4 records"), "{stdout}");
    let expected = [
        ("ca-file-without-tls.toml", ":4:", "ca_file needs tls"),
        (
            "missing-ca-file.toml",
            ":4:",
            "does-not-exist.pem: cannot read",
        ),
        (
            "not-a-ca-file.toml",
            ":4:",
            "no \"BEGIN CERTIFICATE\" block",
        ),
        ("bad-path.toml", ":4:", "not an absolute request path"),
        (
            "tls-on-wildcard.toml",
            ":4:",
            "tls = true on a wildcard record",
        ),
        ("bad-tls.toml", ":4:", "true, false, or the server name"),
    ];
    let mut files: Vec<String> = std::fs::read_dir(fixture("invalid"))
        .expect("fixtures")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = expected.iter().map(|e| e.0.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "every invalid fixture has an expectation");
    for (file, line, problem) in expected {
        let out = check(fixture(&format!("invalid/{file}")));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(
            stderr.contains(&format!("{file}{line}")),
            "{file}: {stderr}"
        );
        assert!(stderr.contains(problem), "{file}: {stderr}");
    }
}
