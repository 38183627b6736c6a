//! Shared test harness: the server in process on `127.0.0.1:0`, a
//! programmable fake upstream in process, DNS clients over UDP and TCP, and
//! waits on conditions with deadlines (never a fixed sleep to synchronise).
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accel_dns::app::Server;
use accel_dns::config::{self, LoadEnv};
use accel_dns::internals::logging::LogHandle;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Default deadline of every wait.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Parses a name or panics (test input only).
pub fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("test name")
}

/// What the fake upstream does with one query.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Send this message (its ID and question are set from the query).
    Answer(Message),
    /// Send nothing.
    Drop,
    /// Wait, then do the inner reply.
    Delay(Duration, Box<Reply>),
    /// Over UDP: an empty answer with TC set; over TCP: the inner reply.
    TruncateUdp(Box<Reply>),
    /// Send these raw bytes.
    Raw(Vec<u8>),
}

/// A handler deciding the reply to each query (`true` = it came over TCP).
pub type Handler = Arc<dyn Fn(&Message, bool) -> Reply + Send + Sync>;

/// A programmable DNS server on 127.0.0.1 (UDP and TCP, same port).
pub struct FakeUpstream {
    /// Its address.
    pub addr: SocketAddr,
    handler: Arc<Mutex<Handler>>,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Message>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The default zone of the fake upstream:
/// `*.nx.test.` NXDOMAIN with a SOA (negative TTL 300); `big.test. TXT` ~2 KB;
/// anything else A 198.51.100.7 / AAAA 2001:db8::7, TTL 300; other types NODATA with SOA.
pub fn default_reply(query: &Message, _tcp: bool) -> Reply {
    let q = &query.queries[0];
    let mut response = response_to(query);
    let lower = q.name().to_lowercase().to_ascii();
    if lower.ends_with("nx.test.") {
        response.metadata.response_code = ResponseCode::NXDomain;
        response.add_authority(soa_record("nx.test.", 300));
        return Reply::Answer(response);
    }
    match q.query_type() {
        RecordType::A => {
            response.add_answer(Record::from_rdata(
                q.name().clone(),
                300,
                RData::A(A(Ipv4Addr::new(198, 51, 100, 7))),
            ));
        }
        RecordType::AAAA => {
            response.add_answer(Record::from_rdata(
                q.name().clone(),
                300,
                RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))),
            ));
        }
        RecordType::TXT if lower == "big.test." => {
            let strings: Vec<String> = (0..16)
                .map(|i| format!("{i:02}{}", "x".repeat(130)))
                .collect();
            response.add_answer(Record::from_rdata(
                q.name().clone(),
                300,
                RData::TXT(TXT::new(strings)),
            ));
        }
        _ => {
            response.add_authority(soa_record("test.", 60));
        }
    }
    Reply::Answer(response)
}

/// An empty NOERROR response to `query` (ID, question, RD copied; RA set).
pub fn response_to(query: &Message) -> Message {
    let mut response = Message::response(query.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(query.queries.iter().cloned());
    response
}

/// A SOA record for `zone` with this negative TTL.
pub fn soa_record(zone: &str, negative_ttl: u32) -> Record {
    let zone = name(zone);
    let soa = SOA::new(
        name("ns.test."),
        name("hostmaster.test."),
        1,
        3600,
        600,
        86400,
        negative_ttl,
    );
    Record::from_rdata(zone, negative_ttl, RData::SOA(soa))
}

impl FakeUpstream {
    /// Starts with [`default_reply`].
    pub async fn start() -> Self {
        Self::start_on(
            "127.0.0.1:0".parse().expect("addr"),
            Arc::new(default_reply),
        )
        .await
    }

    /// Starts on `addr` (port 0: any) with `handler`.
    pub async fn start_on(addr: SocketAddr, handler: Handler) -> Self {
        // Port 0: the UDP port the kernel picks may be taken over TCP (by
        // another test's listener): pick again rather than fail.
        let mut attempts = if addr.port() == 0 { 50 } else { 1 };
        let (udp, tcp) = loop {
            attempts -= 1;
            let udp = UdpSocket::bind(addr).await.expect("bind fake upstream UDP");
            let bound = udp.local_addr().expect("addr");
            match TcpListener::bind(bound).await {
                Ok(tcp) => break (Arc::new(udp), tcp),
                Err(error) if attempts == 0 => panic!("bind fake upstream TCP: {error}"),
                Err(_) => continue,
            }
        };
        let addr = udp.local_addr().expect("addr");
        let handler = Arc::new(Mutex::new(handler));
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        {
            let (handler, count, seen) = (handler.clone(), count.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((len, from)) = udp.recv_from(&mut buf).await else {
                        return;
                    };
                    let Ok(query) = Message::from_vec(&buf[..len]) else {
                        continue;
                    };
                    record(&count, &seen, &query);
                    let reply = (handler.lock().expect("lock").clone())(&query, false);
                    let udp = udp.clone();
                    tokio::spawn(async move {
                        if let Some(bytes) = render(reply, &query, false).await {
                            let _ = udp.send_to(&bytes, from).await;
                        }
                    });
                }
            }));
        }
        {
            let (handler, count, seen) = (handler.clone(), count.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        return;
                    };
                    let (handler, count, seen) = (handler.clone(), count.clone(), seen.clone());
                    tokio::spawn(async move {
                        loop {
                            let Ok(len) = stream.read_u16().await else {
                                return;
                            };
                            let mut buf = vec![0u8; len as usize];
                            if stream.read_exact(&mut buf).await.is_err() {
                                return;
                            }
                            let Ok(query) = Message::from_vec(&buf) else {
                                return;
                            };
                            record(&count, &seen, &query);
                            let reply = (handler.lock().expect("lock").clone())(&query, true);
                            if let Some(bytes) = render(reply, &query, true).await {
                                let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                                framed.extend_from_slice(&bytes);
                                if stream.write_all(&framed).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            }));
        }
        Self {
            addr,
            handler,
            count,
            seen,
            tasks,
        }
    }

    /// Replaces the handler.
    pub fn set_handler(&self, handler: impl Fn(&Message, bool) -> Reply + Send + Sync + 'static) {
        *self.handler.lock().expect("lock") = Arc::new(handler);
    }

    /// Queries received so far (UDP and TCP), loop probes excluded.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Every query received so far.
    pub fn seen(&self) -> Vec<Message> {
        self.seen.lock().expect("lock").clone()
    }
}

/// Counts and keeps a query, except accel-dns's own forwarding-loop probes.
fn record(count: &AtomicUsize, seen: &Mutex<Vec<Message>>, query: &Message) {
    let is_probe = query
        .queries
        .first()
        .is_some_and(|q| q.name().to_ascii().ends_with(".accel-dns-loop-probe."));
    if !is_probe {
        count.fetch_add(1, Ordering::SeqCst);
        seen.lock().expect("lock").push(query.clone());
    }
}

fn render(
    reply: Reply,
    query: &Message,
    tcp: bool,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<u8>>> + Send>> {
    let query = query.clone();
    Box::pin(async move {
        match reply {
            Reply::Answer(mut message) => {
                message.metadata.id = query.metadata.id;
                message.metadata.message_type = MessageType::Response;
                if message.queries.is_empty() {
                    message.add_queries(query.queries.iter().cloned());
                }
                if query.edns.is_some() && message.edns.is_none() {
                    let mut edns = Edns::new();
                    edns.set_max_payload(1232);
                    message.set_edns(edns);
                }
                Some(message.to_vec().expect("encode"))
            }
            Reply::Drop => None,
            Reply::Delay(wait, inner) => {
                tokio::time::sleep(wait).await;
                render(*inner, &query, tcp).await
            }
            Reply::TruncateUdp(_) if !tcp => {
                let mut message = response_to(&query);
                message.metadata.truncation = true;
                Some(message.to_vec().expect("encode"))
            }
            Reply::TruncateUdp(inner) => render(*inner, &query, tcp).await,
            Reply::Raw(bytes) => Some(bytes),
        }
    })
}

/// A server started in process from config text.
pub struct TestServer {
    /// The running server.
    pub server: Option<Server>,
    /// Its first DNS address.
    pub dns: SocketAddr,
    /// Its admin address.
    pub admin: Option<SocketAddr>,
    /// Holds the config file, resolv.conf and any other file of the test.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config_path: PathBuf,
}

impl TestServer {
    /// Starts a server with `body` as the config (`@UPSTREAM@` is replaced by
    /// `upstream`). Unless `body` has a `[server]`/`[admin]` table, it
    /// listens on 127.0.0.1:0 and serves admin on 127.0.0.1:0.
    pub async fn start(body: &str, upstream: Option<SocketAddr>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = body.replace(
            "@UPSTREAM@",
            &upstream.map(|a| a.to_string()).unwrap_or_default(),
        );
        text = text.replace("@DIR@", &dir.path().display().to_string());
        if !text.contains("[server]") {
            text = format!("[server]\nlisten = [\"127.0.0.1:0\"]\n{text}");
        }
        if !text.contains("[admin]") {
            text = format!("[admin]\nlisten = \"127.0.0.1:0\"\n{text}");
        }
        if !text.contains("[upstream]") {
            let servers = upstream
                .map(|a| format!("\"{a}\""))
                .unwrap_or_else(|| "\"127.0.0.1:9\"".into());
            text = format!("[upstream]\nservers = [{servers}]\ntimeout = \"1s\"\n{text}");
        }
        let config_path = dir.path().join("accel-dns.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let env = test_env(dir.path());
        let config = config::load(&config_path, &env)
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let server = Server::start(
            config,
            Some(config_path.clone()),
            env,
            LogHandle::detached(),
        )
        .await
        .expect("server starts");
        Self {
            dns: server.dns_addrs[0],
            admin: server.admin_addr,
            server: Some(server),
            dir,
            config_path,
        }
    }

    /// Rewrites the config file in place (`@UPSTREAM@`/`@DIR@` replaced as at start).
    pub fn write_config(&self, text: &str, upstream: Option<SocketAddr>) {
        let text = text
            .replace(
                "@UPSTREAM@",
                &upstream.map(|a| a.to_string()).unwrap_or_default(),
            )
            .replace("@DIR@", &self.dir.path().display().to_string());
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// GET on the admin endpoint: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin.expect("admin enabled"), path).await
    }

    /// The value of one metric line (exact name with labels), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.admin_get("/metrics").await;
        metric_value(&body, series)
    }

    /// Stops the server (drain included).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }
}

/// The value of `series` in a Prometheus text body.
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// A load environment whose resolv.conf is a file in `dir` (never the machine's).
pub fn test_env(dir: &Path) -> LoadEnv {
    let resolv_conf = dir.join("resolv.conf");
    if !resolv_conf.exists() {
        std::fs::write(&resolv_conf, "nameserver 127.0.0.1\n").expect("write resolv.conf");
    }
    LoadEnv { resolv_conf }
}

/// Minimal HTTP/1.0 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect admin");
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut response))
        .await
        .expect("admin answers in time")
        .expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A query message.
pub fn query_message(qname: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let mut query = Query::query(name(qname), rtype);
    query.set_query_class(DNSClass::IN);
    message.add_query(query);
    if let Some(payload) = edns {
        let mut e = Edns::new();
        e.set_max_payload(payload);
        message.set_edns(e);
    }
    message
}

fn rand_id() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

/// Sends raw bytes over UDP from `from` and waits for one answer.
pub async fn udp_raw_from(
    from: SocketAddr,
    server: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind(from).await.expect("bind client");
    socket.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Ok(Ok(len)) => Some(buf[..len].to_vec()),
        _ => None,
    }
}

/// Sends raw bytes over UDP and waits for one answer.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    udp_raw_from("127.0.0.1:0".parse().expect("addr"), server, bytes, wait).await
}

/// One UDP query; panics without an answer within 5 s.
pub async fn query_udp(server: SocketAddr, qname: &str, rtype: RecordType) -> Message {
    send_udp(server, &query_message(qname, rtype, None)).await
}

/// Sends `message` over UDP; panics without an answer within 5 s.
pub async fn send_udp(server: SocketAddr, message: &Message) -> Message {
    let bytes = message.to_vec().expect("encode");
    let answer = udp_raw(server, &bytes, Duration::from_secs(5))
        .await
        .expect("UDP answer within 5 s");
    let decoded = Message::from_vec(&answer).expect("answer decodes");
    assert_eq!(decoded.metadata.id, message.metadata.id, "answer ID");
    decoded
}

/// Sends raw bytes over one TCP connection and reads one framed answer.
pub async fn tcp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await.ok()?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.ok()?;
    tokio::time::timeout(Duration::from_secs(5), async {
        let len = stream.read_u16().await.ok()?;
        let mut buf = vec![0u8; len as usize];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf)
    })
    .await
    .ok()
    .flatten()
}

/// One TCP query; panics without an answer within 5 s.
pub async fn query_tcp(server: SocketAddr, qname: &str, rtype: RecordType) -> Message {
    send_tcp(server, &query_message(qname, rtype, None)).await
}

/// Sends `message` over TCP; panics without an answer within 5 s.
pub async fn send_tcp(server: SocketAddr, message: &Message) -> Message {
    let bytes = message.to_vec().expect("encode");
    let answer = tcp_raw(server, &bytes)
        .await
        .expect("TCP answer within 5 s");
    Message::from_vec(&answer).expect("answer decodes")
}

/// The A addresses of an answer section.
pub fn a_records(message: &Message) -> Vec<Ipv4Addr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// Waits until `condition` holds, polling every 20 ms; panics after `DEADLINE`.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
