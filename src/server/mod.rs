//! The DNS listeners (README "Command line", "Live reload"): UDP and TCP on every `listen`
//! address, each socket with `SO_REUSEPORT` so that a new instance can bind
//! beside a running one. Thin by design: bytes in, [`Resolver::handle`],
//! bytes out; queries that need upstream run in tasks tracked for the drain.
//!
//! This is the project's own lean loop on hickory-proto's wire format rather
//! than hickory-server's `ServerFuture`: a cache hit or a record is answered
//! in the receiving task without a spawn, a full message decode/encode, or
//! an allocation per query beyond the answer (see README, "Design").

mod bind;
mod tcp;
mod udp;
pub(crate) mod udp_batch;

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use bind::Listeners;

use crate::resolve::Resolver;

/// Serves until `shutdown` fires, then drains for at most `drain`: queries
/// in flight are tracked by `tasks`.
pub(crate) async fn serve(
    listeners: Listeners,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    drain: Duration,
) -> io::Result<()> {
    let mut loops = Vec::new();
    for (number, socket) in listeners.udp.into_iter().enumerate() {
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        loops.push(tokio::spawn(udp::udp_loop(
            number,
            socket,
            resolver.clone(),
            shutdown.clone(),
            tasks.clone(),
            drain,
        )));
    }
    let connections = Arc::new(AtomicUsize::new(0));
    for listener in listeners.tcp {
        let listener = TcpListener::from_std(listener)?;
        loops.push(tokio::spawn(tcp::tcp_accept_loop(
            listener,
            resolver.clone(),
            shutdown.clone(),
            tasks.clone(),
            connections.clone(),
            drain,
        )));
    }
    for handle in loops {
        let _ = handle.await;
    }
    Ok(())
}
