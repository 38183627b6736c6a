//! The DNS listeners (SPEC §2, §4.7, §6): UDP and TCP on every `listen`
//! address, each socket with `SO_REUSEPORT` so that a new instance can bind
//! beside a running one. Thin by design: bytes in, [`Resolver::handle`],
//! bytes out; queries that need upstream run in tasks tracked for the drain.
//!
//! This is the project's own lean loop on hickory-proto's wire format rather
//! than hickory-server's `ServerFuture`: a cache hit or a record is answered
//! in the receiving task without a spawn, a full message decode/encode, or
//! an allocation per query beyond the answer (see README, "Design").

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Protocol;
use crate::resolve::{Handled, Resolver};

/// Largest UDP query read.
const UDP_QUERY_BUFFER: usize = 4096;
/// Answers queued per TCP connection before its reader waits.
const TCP_PIPELINE_DEPTH: usize = 64;
/// Socket receive buffer asked for each UDP socket (the kernel may cap it).
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Sockets bound and ready to serve.
#[derive(Debug)]
pub struct Listeners {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// Binds every address over UDP (`udp_sockets_per_address` sockets each,
    /// spread by the kernel) and TCP.
    pub fn bind(addrs: &[SocketAddr], udp_sockets_per_address: usize) -> io::Result<Self> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in addrs {
            let first = bind_udp(*addr)?;
            // Port 0 (tests) gets a real port from the first socket; the rest share it.
            let bound = first.local_addr()?;
            udp.push(first);
            for _ in 1..udp_sockets_per_address.max(1) {
                udp.push(bind_udp(bound)?);
            }
            tcp.push(bind_tcp(bound)?);
        }
        Ok(Self { udp, tcp })
    }

    /// The addresses actually bound (distinct, in `listen` order).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    prepare(&socket, addr)?;
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProtocol::TCP),
    )?;
    prepare(&socket, addr)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn prepare(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)
}

/// Serves until `shutdown` fires; queries in flight are tracked by `tasks`.
pub async fn serve(
    listeners: Listeners,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> io::Result<()> {
    let mut loops = Vec::new();
    for socket in listeners.udp {
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        loops.push(tokio::spawn(udp_loop(
            socket,
            resolver.clone(),
            shutdown.clone(),
            tasks.clone(),
        )));
    }
    let connections = Arc::new(AtomicUsize::new(0));
    for listener in listeners.tcp {
        let listener = TcpListener::from_std(listener)?;
        loops.push(tokio::spawn(tcp_accept_loop(
            listener,
            resolver.clone(),
            shutdown.clone(),
            tasks.clone(),
            connections.clone(),
        )));
    }
    for handle in loops {
        let _ = handle.await;
    }
    Ok(())
}

async fn udp_loop(
    socket: Arc<UdpSocket>,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut buffer = vec![0u8; UDP_QUERY_BUFFER];
    loop {
        let (len, client) = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    // ICMP errors from earlier sends surface here on some kernels; never fatal.
                    tracing::debug!(%error, "UDP receive error");
                    continue;
                }
            },
        };
        match resolver.handle(&buffer[..len], client, Protocol::Udp) {
            Handled::Reply(answer) => send_udp(&socket, &answer, client).await,
            Handled::Drop => {}
            Handled::Pending(pending) => {
                let socket = socket.clone();
                let resolver = resolver.clone();
                tasks.spawn(async move {
                    let answer = resolver.finish(pending).await;
                    send_udp(&socket, &answer, client).await;
                });
            }
        }
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

async fn tcp_accept_loop(
    listener: TcpListener,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    connections: Arc<AtomicUsize>,
) {
    loop {
        let (stream, client) = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "TCP accept failed");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let limits = resolver.snapshot().config.server.clone();
        if connections.fetch_add(1, Ordering::AcqRel) >= limits.max_tcp_connections {
            connections.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(%client, "max_tcp_connections reached; closing the new connection");
            continue;
        }
        let guard = ConnectionSlot(connections.clone());
        let resolver = resolver.clone();
        let shutdown = shutdown.clone();
        let inner_tasks = tasks.clone();
        tasks.spawn(async move {
            let _guard = guard;
            serve_connection(
                stream,
                client,
                resolver,
                shutdown,
                inner_tasks,
                limits.tcp_idle_timeout,
            )
            .await;
        });
    }
}

/// Frees a TCP connection slot when the connection ends.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads length-prefixed queries and writes answers as they complete
/// (RFC 7766 pipelining). A frame must arrive whole within the idle timeout.
async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (answers, mut outbox) = mpsc::channel::<Vec<u8>>(TCP_PIPELINE_DEPTH);
    let write_loop = async move {
        while let Some(answer) = outbox.recv().await {
            let Ok(len) = u16::try_from(answer.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(answer.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&answer);
            if writer.write_all(&framed).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    };
    let writer_task = tokio::spawn(write_loop);
    let mut buffer = Vec::new();
    loop {
        let frame = async {
            let len = reader.read_u16().await? as usize;
            buffer.resize(len, 0);
            reader.read_exact(&mut buffer).await?;
            io::Result::Ok(())
        };
        let read = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            read = tokio::time::timeout(idle, frame) => read,
        };
        match read {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        match resolver.handle(&buffer, client, Protocol::Tcp) {
            Handled::Reply(answer) => {
                if answers.send(answer).await.is_err() {
                    break;
                }
            }
            Handled::Drop => break,
            Handled::Pending(pending) => {
                let resolver = resolver.clone();
                let answers = answers.clone();
                tasks.spawn(async move {
                    let answer = resolver.finish(pending).await;
                    let _ = answers.send(answer).await;
                });
            }
        }
    }
    drop(answers);
    let _ = writer_task.await;
}
