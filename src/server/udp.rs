//! The UDP side of the listeners: one loop per socket reads batches
//! (`recvmmsg`), answers what needs no upstream in the loop and sends those
//! answers in one `sendmmsg`; queries that need upstream run in tasks
//! tracked for the drain.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::udp_batch::{BATCH, RecvBatch, send_batch};
use crate::metrics::Protocol;
use crate::request::{Handled, Pending};
use crate::resolve::Resolver;

/// Largest UDP query read.
const UDP_QUERY_BUFFER: usize = 4096;

/// How often a draining UDP loop looks whether its socket can close.
const UDP_DRAIN_CHECK: Duration = Duration::from_millis(5);

pub(super) async fn udp_loop(
    socket: Arc<UdpSocket>,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    drain: Duration,
) {
    let mut buffer = vec![0u8; UDP_QUERY_BUFFER];
    let mut batch = RecvBatch::new();
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    // Answer buffers, reused from one batch to the next.
    let mut spare: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            ready = socket.readable() => {
                if let Err(error) = ready {
                    tracing::debug!(%error, "UDP readiness error");
                    continue;
                }
            }
        }
        // Everything queued, a batch per system call; answers that need no
        // upstream go back in one `sendmmsg` per batch.
        loop {
            let received = socket.try_io(Interest::READABLE, || batch.recv(socket.as_ref()));
            let count = match received {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    // ICMP errors from earlier sends surface here on some kernels; never fatal.
                    tracing::debug!(%error, "UDP receive error");
                    break;
                }
            };
            for index in 0..count {
                let Some((packet, client)) = batch.get(index) else {
                    continue;
                };
                let mut out = spare.pop().unwrap_or_default();
                match resolver.handle(packet, client, Protocol::Udp, &mut out) {
                    Handled::Reply => replies.push((out, client)),
                    Handled::Drop => spare.push(out),
                    Handled::Pending(pending) => {
                        spawn_pending(&socket, pending, client, &resolver, &tasks)
                    }
                }
            }
            send_replies(&socket, &replies).await;
            spare.extend(replies.drain(..).map(|(buffer, _)| buffer));
            if count < BATCH {
                break;
            }
            // A full batch: more may be queued. Let the tasks just spawned (and
            // the upstream readers) run first, so a burst is forwarded in step
            // with how it is read rather than piling up behind this loop.
            tokio::task::yield_now().await;
        }
    }

    // Draining. With SO_REUSEPORT the kernel spreads queries over every
    // socket of the address, this one included, for as long as it is open,
    // and the datagrams still queued in it when it closes are lost. It stays
    // open anyway while answers of queries in flight are sent through it
    // (they must come from the address the client asked), so it keeps being
    // read all that time; once nothing else holds it, what is queued is taken
    // without waiting and the socket closes at once. That leaves a window of
    // microseconds, not the length of an upstream query, in which a datagram
    // can arrive unread; a client's retry then reaches the new instance.
    let deadline = tokio::time::Instant::now() + drain;
    // tokio's `try_recv_from` answers "would block" from its cached readiness
    // without asking the kernel; a duplicate descriptor of the same socket
    // (non-blocking, as it shares the open file) asks the kernel itself.
    let direct = SockRef::from(socket.as_ref())
        .try_clone()
        .map(std::net::UdpSocket::from);
    loop {
        let idle = Arc::strong_count(&socket) == 1;
        if idle || tokio::time::Instant::now() >= deadline {
            let mut took_any = false;
            loop {
                let received = match &direct {
                    Ok(direct) => direct.recv_from(&mut buffer),
                    Err(_) => socket.try_recv_from(&mut buffer),
                };
                match received {
                    Ok((len, client)) => {
                        took_any = true;
                        udp_answer(&socket, &buffer[..len], client, &resolver, &tasks).await;
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => tracing::debug!(%error, "UDP receive error"),
                }
            }
            if !took_any || tokio::time::Instant::now() >= deadline {
                // Answers still in flight keep their clone and are sent.
                return;
            }
            continue;
        }
        tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok((len, client)) => {
                    udp_answer(&socket, &buffer[..len], client, &resolver, &tasks).await;
                }
                Err(error) => tracing::debug!(%error, "UDP receive error"),
            },
            () = tokio::time::sleep(UDP_DRAIN_CHECK) => {}
        }
    }
}

/// Answers one UDP datagram: at once, or from a task when upstream is needed.
async fn udp_answer(
    socket: &Arc<UdpSocket>,
    packet: &[u8],
    client: SocketAddr,
    resolver: &Arc<Resolver>,
    tasks: &TaskTracker,
) {
    let mut out = Vec::new();
    match resolver.handle(packet, client, Protocol::Udp, &mut out) {
        Handled::Reply => send_udp(socket, &out, client).await,
        Handled::Drop => {}
        Handled::Pending(pending) => spawn_pending(socket, pending, client, resolver, tasks),
    }
}

/// Answers a query that needs upstream from a task of its own.
fn spawn_pending(
    socket: &Arc<UdpSocket>,
    pending: Box<Pending>,
    client: SocketAddr,
    resolver: &Arc<Resolver>,
    tasks: &TaskTracker,
) {
    let socket = socket.clone();
    let resolver = resolver.clone();
    tasks.spawn(async move {
        let answer = resolver.finish(pending).await;
        send_udp(&socket, &answer, client).await;
    });
}

/// Sends the answers of one batch: `sendmmsg` while the socket takes them,
/// then one by one, waiting, for any the socket buffer had no room for.
async fn send_replies(socket: &Arc<UdpSocket>, replies: &[(Vec<u8>, SocketAddr)]) {
    if replies.is_empty() {
        return;
    }
    let sent = socket
        .try_io(Interest::WRITABLE, || {
            match send_batch(socket.as_ref(), replies) {
                Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                other => other,
            }
        })
        .unwrap_or(0);
    for (answer, client) in replies.iter().skip(sent) {
        send_udp(socket, answer, *client).await;
    }
}

async fn send_udp(socket: &UdpSocket, answer: &[u8], client: SocketAddr) {
    if answer.is_empty() {
        return;
    }
    if let Err(error) = socket.send_to(answer, client).await {
        tracing::debug!(%client, %error, "UDP send failed");
    }
}
