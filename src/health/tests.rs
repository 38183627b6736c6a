//! Unit tests of the probes and of the state kept per endpoint and per
//! CNAME target, on local servers (127.0.0.1:0) with a test CA made here.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::probe::ProbeError;
use super::*;
use crate::config::{CaBundle, HttpCheck, TlsCheck};

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("name")
}

fn check(port: u16) -> HealthCheckConfig {
    HealthCheckConfig {
        port,
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(1),
        fall: 2,
        rise: 1,
        tls: None,
        http: None,
    }
}

/// A CA made for the test, and server configurations it signs.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "accel-dns unit-test CA");
        let key = KeyPair::generate().expect("key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The CA as `ca_file` would give it.
    fn bundle(&self) -> CaBundle {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, self.issuer.pem()).expect("write CA");
        CaBundle::load(&path).expect("valid CA file")
    }

    fn server(&self, names: &[&str]) -> tokio_rustls::TlsAcceptor {
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
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// What a test server does with each connection.
#[derive(Clone)]
enum Serve {
    /// TLS, then (if any) answer the request head with this status.
    Tls(tokio_rustls::TlsAcceptor, Option<u16>),
    /// Plain HTTP with this status.
    Http(u16),
    /// Sends bytes that are not TLS and closes.
    Garbage,
    /// Accepts and never sends anything.
    Silent,
}

/// Reads a request head (bounded) and answers it with `status`.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
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
    let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
    String::from_utf8_lossy(&head).into_owned()
}

/// A server on 127.0.0.1:0; the request heads it saw come out of the channel.
async fn server(serve: Serve) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen, heads) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let (serve, seen) = (serve.clone(), seen.clone());
            match serve {
                Serve::Silent => held.push(stream),
                Serve::Garbage => {
                    let _ = stream.write_all(b"SSH-2.0-not-tls\r\n").await;
                }
                Serve::Http(status) => {
                    tokio::spawn(async move {
                        let _ = seen.send(answer(stream, status).await);
                    });
                }
                Serve::Tls(acceptor, status) => {
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        match status {
                            Some(status) => {
                                let _ = seen.send(answer(tls, status).await);
                            }
                            None => {
                                let mut rest = Vec::new();
                                let _ = tls.read_to_end(&mut rest).await;
                            }
                        }
                    });
                }
            }
        }
    });
    (addr, heads)
}

fn tls_check(port: u16, sni: &str, ca: &TestCa, path: Option<&str>) -> HealthCheckConfig {
    HealthCheckConfig {
        tls: Some(TlsCheck {
            server_name: name(sni),
            ca: Some(ca.bundle()),
        }),
        http: path.map(|path| HttpCheck {
            path: path.to_string(),
            host: name(sni),
        }),
        ..check(port)
    }
}

async fn probe_once(addr: SocketAddr, check: &HealthCheckConfig) -> Result<(), ProbeError> {
    Probe::new(addr, check).run().await
}

#[tokio::test]
async fn a_tls_probe_verifies_the_certificate_for_the_name_and_the_http_status() {
    let ca = TestCa::new();
    let acceptor = ca.server(&["registry.test"]);

    let (addr, _) = server(Serve::Tls(acceptor.clone(), None)).await;
    let result = probe_once(addr, &tls_check(addr.port(), "registry.test", &ca, None)).await;
    assert!(result.is_ok(), "handshake only: {result:?}");
    // A certificate for another name fails.
    let result = probe_once(addr, &tls_check(addr.port(), "other.test", &ca, None)).await;
    assert!(matches!(result, Err(ProbeError::Tls(_))), "{result:?}");
    // So does one from a CA that is not trusted.
    let stranger = TestCa::new();
    let result = probe_once(
        addr,
        &tls_check(addr.port(), "registry.test", &stranger, None),
    )
    .await;
    assert!(matches!(result, Err(ProbeError::Tls(_))), "{result:?}");

    for (status, up) in [
        (200, true),
        (401, true),
        (404, true),
        (503, false),
        (500, false),
    ] {
        let (addr, mut heads) = server(Serve::Tls(acceptor.clone(), Some(status))).await;
        let result = probe_once(
            addr,
            &tls_check(addr.port(), "registry.test", &ca, Some("/v2/")),
        )
        .await;
        assert_eq!(result.is_ok(), up, "status {status}: {result:?}");
        let head = heads.recv().await.expect("request seen");
        assert!(head.starts_with("GET /v2/ HTTP/1.1\r\n"), "{head}");
        let host = format!("host: registry.test:{}\r\n", addr.port());
        assert!(head.to_ascii_lowercase().contains(&host), "{head}");
    }
}

#[tokio::test]
async fn a_tls_probe_fails_where_a_connect_succeeds() {
    let ca = TestCa::new();
    for serve in [Serve::Garbage, Serve::Http(200)] {
        let (addr, _) = server(serve).await;
        assert!(
            probe_once(addr, &check(addr.port())).await.is_ok(),
            "TCP only"
        );
        let result = probe_once(addr, &tls_check(addr.port(), "registry.test", &ca, None)).await;
        assert!(
            result.is_err(),
            "TLS against a server that speaks none: {result:?}"
        );
    }
    // Plain HTTP: `path` without `tls`.
    let (addr, mut heads) = server(Serve::Http(503)).await;
    let plain = HealthCheckConfig {
        http: Some(HttpCheck {
            path: "/healthz?full=1".into(),
            host: name("registry.test"),
        }),
        ..check(addr.port())
    };
    let result = probe_once(addr, &plain).await;
    assert!(
        matches!(result, Err(ProbeError::Status(s)) if s.as_u16() == 503),
        "{result:?}"
    );
    let head = heads.recv().await.expect("request seen");
    assert!(
        head.starts_with("GET /healthz?full=1 HTTP/1.1\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn a_probe_never_outlives_its_timeout() {
    let ca = TestCa::new();
    let (addr, _) = server(Serve::Silent).await;
    for check in [
        tls_check(addr.port(), "registry.test", &ca, None),
        tls_check(addr.port(), "registry.test", &ca, Some("/v2/")),
        HealthCheckConfig {
            http: Some(HttpCheck {
                path: "/".into(),
                host: name("registry.test"),
            }),
            ..check(addr.port())
        },
    ] {
        let check = HealthCheckConfig {
            timeout: Duration::from_millis(300),
            ..check
        };
        let started = Instant::now();
        let result = probe_once(addr, &check).await;
        let took = started.elapsed();
        assert!(matches!(result, Err(ProbeError::Timeout)), "{result:?}");
        assert!(
            took >= check.timeout && took < check.timeout + Duration::from_millis(300),
            "took {took:?} for a timeout of {:?}",
            check.timeout
        );
    }
}

#[test]
fn a_streak_flips_after_fall_failures_and_rise_successes() {
    let check = HealthCheckConfig {
        fall: 3,
        rise: 2,
        ..check(1)
    };
    let mut streak = Streak::default();
    let mut up = true;
    let mut verdicts = Vec::new();
    for ok in [
        false, false, true, false, false, false, true, false, true, true, false,
    ] {
        if let Some(next) = streak.record(ok, up, &check) {
            up = next;
        }
        verdicts.push(up);
    }
    assert_eq!(
        verdicts,
        [
            true, true, true, true, true, false, false, false, false, true, true
        ]
    );
}

#[test]
fn the_log_says_what_a_check_probes() {
    let plain = check(443);
    assert_eq!(describe(&plain), "tcp");
    let tls = HealthCheckConfig {
        tls: Some(TlsCheck {
            server_name: name("registry-1.docker.io."),
            ca: None,
        }),
        http: Some(HttpCheck {
            path: "/v2/".into(),
            host: name("registry-1.docker.io."),
        }),
        ..check(443)
    };
    assert_eq!(describe(&tls), "tls registry-1.docker.io GET /v2/");
}

#[tokio::test]
async fn endpoints_are_shared_and_go_down_and_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let registry = HealthRegistry::default();
    let ip: IpAddr = Ipv4Addr::LOCALHOST.into();
    let first = registry.endpoint(ip, &check(port));
    let second = registry.endpoint(ip, &check(port));
    assert!(Arc::ptr_eq(&first, &second));
    let other = HealthCheckConfig {
        http: Some(HttpCheck {
            path: "/".into(),
            host: name("a.test"),
        }),
        ..check(port)
    };
    assert!(
        !Arc::ptr_eq(&first, &registry.endpoint(ip, &other)),
        "another check, another probe"
    );
    assert!(first.is_up());
    drop(listener);
    wait(|| !first.is_up(), "never went down").await;
    let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind");
    wait(|| first.is_up(), "never came back").await;
}

async fn wait(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A resolver whose answer the test sets.
struct FakeResolver(Mutex<TargetLookup>);

impl TargetResolver for FakeResolver {
    fn addresses<'a>(&'a self, _name: &'a Name) -> BoxFuture<'a, TargetLookup> {
        let answer = lock(&self.0).clone();
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn a_cname_target_is_down_when_it_does_not_resolve_or_every_address_is() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let live: IpAddr = Ipv4Addr::LOCALHOST.into();
    let registry = HealthRegistry::default();
    let fake = Arc::new(FakeResolver(Mutex::new(TargetLookup::Addresses(vec![
        live,
    ]))));
    let check = check(port);
    let health = registry.target(&name("ga.accel.test."), &check);
    assert!(health.is_up(), "up before the first resolution");
    assert!(Arc::ptr_eq(
        &health,
        &registry.target(&name("ga.accel.test."), &check)
    ));
    // Nothing is resolved until the resolver is wired in.
    let as_dyn: Arc<dyn TargetResolver> = fake.clone();
    registry.set_resolver(Arc::downgrade(&as_dyn));
    wait(|| health.endpoints() == [(live, true)], "resolved").await;

    // Resolves to nothing: down after `fall` resolutions, its series gone.
    *lock(&fake.0) = TargetLookup::NotFound;
    wait(|| !health.is_up(), "steps aside").await;
    assert!(health.endpoints().is_empty());
    *lock(&fake.0) = TargetLookup::Addresses(vec![live]);
    wait(|| health.is_up(), "back").await;

    // Resolves, but its only address is down.
    drop(listener);
    wait(|| !health.is_up(), "every address down").await;
    assert_eq!(health.endpoints(), [(live, false)]);
    // Under a check of a port where only a new address listens: that one
    // is up, the old one goes down, and the target stays up.
    let other = std::net::TcpListener::bind("127.0.0.2:0").expect("bind");
    let moved = HealthCheckConfig {
        port: other.local_addr().expect("addr").port(),
        ..check
    };
    let moved_health = registry.target(&name("ga.accel.test."), &moved);
    let new: IpAddr = [127, 0, 0, 2].into();
    *lock(&fake.0) = TargetLookup::Addresses(vec![new, live, new]);
    wait(
        || moved_health.endpoints() == [(live, false), (new, true)],
        "both addresses probed",
    )
    .await;
    assert!(moved_health.is_up());
    drop(as_dyn);
}
