//! One probe of one endpoint (README "Health-checked records (fail-open)"): a TCP connect, then, when the check
//! asks for them, a TLS handshake (rustls over ring, the certificate
//! verified for the server name against the system's trust store or the
//! record's `ca_file`) and an HTTP/1.1 `GET` through hyper's client, up only
//! if the status is below 500. Every step shares one deadline, so a probe
//! as a whole never takes longer than the check's `timeout`.
//!
//! Why a probe goes further than a connect: a layer-4 accelerator (Global
//! Accelerator's TCP listeners) completes the TCP handshake at its own
//! edge, so a connect succeeds while nothing behind it works. Only a
//! handshake with the origin's certificate, or an HTTP answer, shows that.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::config::{HealthCheckConfig, HttpCheck};

/// What the probe sends as `User-Agent`, so that a registry's logs say who asks.
const AGENT: &str = concat!("accel-dns/", env!("CARGO_PKG_VERSION"), " health-check");

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ProbeError {
    /// The whole probe ran out of its `timeout`.
    #[error("no answer within the timeout")]
    Timeout,
    /// The TCP connect failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (certificate included).
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// No TLS client could be built for the check (an invalid SNI name).
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("HTTP request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The server answered 500 or above.
    #[error("HTTP status {0}")]
    Status(StatusCode),
}

/// Everything one endpoint's probes need, built once when the endpoint is.
pub(super) struct Probe {
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<Result<Tls, String>>,
    http: Option<Http>,
}

struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

struct Http {
    path: String,
    host: String,
}

impl Probe {
    /// The probe of `addr` under `check`.
    pub(super) fn new(addr: SocketAddr, check: &HealthCheckConfig) -> Self {
        let tls = check.tls.as_ref().map(|tls| {
            let name = tls.server_name.to_ascii();
            let name = name.trim_end_matches('.');
            let server_name = ServerName::try_from(name.to_string())
                .map_err(|_| format!("{name:?} cannot be sent as SNI"))?;
            let roots = match &tls.ca {
                Some(ca) => ca.roots.clone(),
                None => system_roots(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            if check.http.is_some() {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
            }
            Ok(Tls {
                connector: TlsConnector::from(Arc::new(config)),
                server_name,
            })
        });
        let default_port = if check.tls.is_some() { 443 } else { 80 };
        let http = check.http.as_ref().map(|http: &HttpCheck| {
            let host = http.host.to_ascii();
            let host = host.trim_end_matches('.');
            Http {
                path: http.path.clone(),
                // RFC 9110 §7.2: the port is part of Host unless it is the scheme's default.
                host: if addr.port() == default_port {
                    host.to_string()
                } else {
                    format!("{host}:{}", addr.port())
                },
            }
        });
        Self {
            addr,
            timeout: check.timeout,
            tls,
            http,
        }
    }

    /// One probe: `Ok` if the endpoint is up.
    pub(super) async fn run(&self) -> Result<(), ProbeError> {
        let deadline = Instant::now() + self.timeout;
        let tcp = within(deadline, TcpStream::connect(self.addr))
            .await?
            .map_err(ProbeError::Connect)?;
        let tls = match &self.tls {
            None => {
                return match &self.http {
                    Some(http) => http.get(tcp, deadline).await,
                    None => Ok(()),
                };
            }
            Some(Err(error)) => return Err(ProbeError::TlsSetup(error.clone())),
            Some(Ok(tls)) => tls,
        };
        let mut stream = within(
            deadline,
            tls.connector.connect(tls.server_name.clone(), tcp),
        )
        .await?
        .map_err(ProbeError::Tls)?;
        match &self.http {
            Some(http) => http.get(stream, deadline).await,
            None => {
                // A close_notify, so that the server logs a clean close; its
                // fate does not change the verdict.
                let _ = within(deadline, stream.shutdown()).await;
                Ok(())
            }
        }
    }
}

impl Http {
    async fn get<S>(&self, stream: S, deadline: Instant) -> Result<(), ProbeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = within(
            deadline,
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await??;
        let request = Request::get(self.path.as_str())
            .header(HOST, self.host.as_str())
            .header(USER_AGENT, AGENT)
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())?;
        // The connection is driven here rather than in a task of its own,
        // so that nothing of the probe outlives its deadline.
        // With `connection: close` the connection can finish in the same
        // poll that hands over the answer: then the answer is still read.
        let exchange = async {
            let mut connection = std::pin::pin!(connection);
            let mut response = std::pin::pin!(sender.send_request(request));
            let response = tokio::select! {
                biased;
                response = &mut response => response,
                ended = &mut connection => match ended {
                    Err(error) => return Err(ProbeError::Http(error)),
                    Ok(()) => response.await,
                },
            };
            Ok::<_, ProbeError>(response?.status())
        };
        let status = within(deadline, exchange).await??;
        if status.as_u16() >= 500 {
            return Err(ProbeError::Status(status));
        }
        Ok(())
    }
}

/// `future`, or [`ProbeError::Timeout`] at `deadline`.
async fn within<F: Future>(deadline: Instant, future: F) -> Result<F::Output, ProbeError> {
    tokio::time::timeout_at(deadline, future)
        .await
        .map_err(|_| ProbeError::Timeout)
}

/// The system's trust store (rustls-native-certs: on Linux the bundle of
/// the distribution's `ca-certificates`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`),
/// read once per process. Empty if there is none, with one warning: then
/// every `tls` probe without `ca_file` fails, and its records step aside.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
            for error in &loaded.errors {
                tracing::warn!(%error, "health check: reading the system's trust store");
            }
            if added == 0 {
                tracing::warn!("health check: no certificate in the system's trust store; tls probes without ca_file will fail");
            } else {
                tracing::debug!(added, ignored, "health check: system trust store loaded");
            }
            Arc::new(roots)
        })
        .clone()
}
