//! A client of the admin endpoint, for the subcommands that talk to a
//! running server (`status`, `node-resolv`): one HTTP/1.1 `GET` through
//! hyper's client over a plain TCP connection, with one deadline.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a `GET` failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// No connection (nothing listens there, or it is unreachable).
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// Where.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// No whole answer within the deadline.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout {
        /// Where.
        addr: SocketAddr,
        /// The deadline.
        timeout: Duration,
    },
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("HTTP request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// `GET path` on `addr`: the status and the body as text.
pub(crate) async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, String), ClientError> {
    match tokio::time::timeout(timeout, exchange(addr, path)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { addr, timeout }),
    }
}

async fn exchange(addr: SocketAddr, path: &str) -> Result<(StatusCode, String), ClientError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| ClientError::Connect { addr, error })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .header(USER_AGENT, concat!("accel-dns/", env!("CARGO_PKG_VERSION")))
        .header(CONNECTION, "close")
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
