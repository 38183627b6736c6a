//! The DNS listeners (README "Command line", §4.7, §6): UDP and TCP on every `listen`
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

use socket2::{Domain, Protocol as SockProtocol, SockRef, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Protocol;
use crate::resolve::{Handled, Pending, Resolver};
use crate::udp_batch::{BATCH, RecvBatch, send_batch};
use crate::wire;

/// Largest UDP query read.
const UDP_QUERY_BUFFER: usize = 4096;
/// Answers queued per TCP connection before its reader waits.
const TCP_PIPELINE_DEPTH: usize = 64;
/// Socket receive buffer asked for each UDP socket (the kernel may cap it).
const UDP_RECV_BUFFER: usize = 4 << 20;
/// After shutdown, a TCP connection quiet for this long is closed.
const TCP_DRAIN_IDLE: Duration = Duration::from_millis(200);

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
            let (first, listener) = bind_pair(*addr)?;
            let bound = first.local_addr()?;
            udp.push(first);
            for _ in 1..udp_sockets_per_address.max(1) {
                udp.push(bind_udp(bound)?);
            }
            tcp.push(listener);
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

/// Binds UDP and TCP on `addr`. Port 0 (tests) takes the port the kernel
/// gives the UDP socket, and picks again when that port is already in use
/// over TCP (by some client connection): the two must share one port.
fn bind_pair(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    const ATTEMPTS: usize = 64;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = bind_udp(addr)?;
        let bound = udp.local_addr()?;
        match bind_tcp(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error)
                if addr.port() == 0
                    && error.kind() == io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS => {}
            Err(error) => return Err(error),
        }
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

/// Serves until `shutdown` fires, then drains for at most `drain`: queries
/// in flight are tracked by `tasks`.
pub async fn serve(
    listeners: Listeners,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    drain: Duration,
) -> io::Result<()> {
    let mut loops = Vec::new();
    for socket in listeners.udp {
        let socket = Arc::new(UdpSocket::from_std(socket)?);
        loops.push(tokio::spawn(udp_loop(
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
        loops.push(tokio::spawn(tcp_accept_loop(
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

/// How often a draining UDP loop looks whether its socket can close.
const UDP_DRAIN_CHECK: Duration = Duration::from_millis(5);

async fn udp_loop(
    socket: Arc<UdpSocket>,
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    drain: Duration,
) {
    let mut buffer = vec![0u8; UDP_QUERY_BUFFER];
    let mut batch = RecvBatch::new();
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
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
                match resolver.handle(packet, client, Protocol::Udp) {
                    Handled::Reply(answer) => replies.push((answer, client)),
                    Handled::Drop => {}
                    Handled::Pending(pending) => {
                        spawn_pending(&socket, pending, client, &resolver, &tasks)
                    }
                }
            }
            send_replies(&socket, &mut replies).await;
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
    match resolver.handle(packet, client, Protocol::Udp) {
        Handled::Reply(answer) => send_udp(socket, &answer, client).await,
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
async fn send_replies(socket: &Arc<UdpSocket>, replies: &mut Vec<(Vec<u8>, SocketAddr)>) {
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
    replies.clear();
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
    drain: Duration,
) {
    let serve = |stream: TcpStream, client: SocketAddr, drain_until: Option<Instant>| {
        let limits = resolver.snapshot().config.server.clone();
        if connections.fetch_add(1, Ordering::AcqRel) >= limits.max_tcp_connections {
            connections.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(%client, "max_tcp_connections reached; closing the new connection");
            return;
        }
        let connection = Connection {
            resolver: resolver.clone(),
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            idle: limits.tcp_idle_timeout,
            drain,
        };
        let guard = ConnectionSlot(connections.clone());
        tasks.spawn(async move {
            let _guard = guard;
            connection.serve(stream, client, drain_until).await;
        });
    };
    loop {
        let (stream, client) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
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
        serve(stream, client, None);
    }
    // Connections the kernel completed but nobody accepted yet are reset
    // when the listener closes: take them first (asking the kernel itself,
    // not tokio's cached readiness), serve them as draining connections, and
    // close right after.
    let drain_until = Instant::now() + drain;
    let Ok(direct) = SockRef::from(&listener).try_clone() else {
        return;
    };
    let direct = std::net::TcpListener::from(direct);
    while let Ok((stream, client)) = direct.accept() {
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        if let Ok(stream) = TcpStream::from_std(stream) {
            serve(stream, client, Some(drain_until));
        }
    }
}

/// Frees a TCP connection slot when the connection ends.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What one TCP connection needs.
struct Connection {
    resolver: Arc<Resolver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    idle: Duration,
    drain: Duration,
}

impl Connection {
    /// Reads length-prefixed queries and writes answers as they complete
    /// (RFC 7766 pipelining). Waiting for a frame to begin is bounded by the
    /// idle timeout, and a frame once begun must arrive whole within it.
    ///
    /// From shutdown on (`drain_until` set) the connection is never what
    /// holds the exit (README "Command line"): it keeps reading only while complete queries
    /// keep coming, each within [`TCP_DRAIN_IDLE`] of the last (a query
    /// already on its way is answered rather than cut off by the close),
    /// then stops reading, sends the answers of the queries in flight, and
    /// closes. A connection that is quiet, or holds only half a query, is
    /// closed after that short grace; whatever the client does (never reads,
    /// trickles bytes), everything ends at the drain deadline.
    async fn serve(self, stream: TcpStream, client: SocketAddr, drain_until: Option<Instant>) {
        let _ = stream.set_nodelay(true);
        let (reader, mut writer) = stream.into_split();
        let (answers, mut outbox) = mpsc::channel::<Vec<u8>>(TCP_PIPELINE_DEPTH);
        let write_loop = async move {
            while let Some(mut answer) = outbox.recv().await {
                if answer.len() > usize::from(u16::MAX) {
                    // Larger than a TCP frame can carry: the header and question
                    // with TC set, rather than silence.
                    answer = wire::header_and_question(&answer).unwrap_or_default();
                }
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
        let mut writer_task = tokio::spawn(write_loop);
        // The hard end: the drain deadline, from shutdown on.
        let drain = self.drain;
        let shutdown = self.shutdown.clone();
        let hard_stop = async move {
            match drain_until {
                Some(end) => tokio::time::sleep_until(end).await,
                None => {
                    shutdown.cancelled().await;
                    tokio::time::sleep(drain).await;
                }
            }
        };
        let work = async {
            self.read_queries(reader, answers, client, drain_until)
                .await;
            // The reader is done and has dropped its sender: the writer ends
            // once the answers of the queries in flight are sent.
            let _ = (&mut writer_task).await;
        };
        tokio::select! {
            () = work => {}
            () = hard_stop => {
                tracing::debug!(%client, "drain over; closing a TCP connection that still had work");
            }
        }
        // Dropping the halves closes the socket; the queries still running
        // finish in their tasks and their answers go nowhere.
        writer_task.abort();
    }

    /// The read side of [`Connection::serve`]: frames out of one buffer, so
    /// that a shutdown is seen whatever state the current frame is in.
    async fn read_queries(
        &self,
        mut reader: tokio::net::tcp::OwnedReadHalf,
        answers: mpsc::Sender<Vec<u8>>,
        client: SocketAddr,
        mut drain_until: Option<Instant>,
    ) {
        let mut buffer: Vec<u8> = Vec::with_capacity(512);
        // Until when the next frame (or the rest of the current one) may take.
        let mut frame_deadline = Instant::now() + self.idle;
        // While draining: until when the next complete query may take.
        let mut quiet_until = Instant::now() + TCP_DRAIN_IDLE;
        loop {
            // Every complete frame in the buffer, in order.
            let mut consumed = 0;
            while let Some(frame) = next_frame(&buffer[consumed..]) {
                let frame_len = frame.len();
                let keep_going = self.answer(frame, client, &answers).await;
                consumed += 2 + frame_len;
                if !keep_going {
                    return;
                }
                frame_deadline = Instant::now() + self.idle;
                quiet_until = Instant::now() + TCP_DRAIN_IDLE;
            }
            buffer.drain(..consumed);
            let deadline = match drain_until {
                None => frame_deadline,
                Some(end) => frame_deadline.min(quiet_until).min(end),
            };
            let was_empty = buffer.is_empty();
            buffer.reserve(512);
            tokio::select! {
                biased;
                () = self.shutdown.cancelled(), if drain_until.is_none() => {
                    drain_until = Some(Instant::now() + self.drain);
                    quiet_until = Instant::now() + TCP_DRAIN_IDLE;
                }
                () = tokio::time::sleep_until(deadline) => return,
                read = reader.read_buf(&mut buffer) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if was_empty {
                            // A new frame begins: it has the idle timeout to arrive whole.
                            frame_deadline = Instant::now() + self.idle;
                        }
                    }
                },
            }
        }
    }

    /// Answers one query; `false` ends the connection.
    async fn answer(
        &self,
        frame: &[u8],
        client: SocketAddr,
        answers: &mpsc::Sender<Vec<u8>>,
    ) -> bool {
        match self.resolver.handle(frame, client, Protocol::Tcp) {
            Handled::Reply(answer) => answers.send(answer).await.is_ok(),
            Handled::Drop => false,
            Handled::Pending(pending) => {
                // Take the answer's slot before starting the work: at most
                // TCP_PIPELINE_DEPTH queries are in flight or queued per
                // connection, so a client that sends without reading is held
                // back by TCP itself instead of piling up tasks (README "How a query is answered", limits).
                let Ok(slot) = answers.clone().reserve_owned().await else {
                    return false;
                };
                let resolver = self.resolver.clone();
                self.tasks.spawn(async move {
                    let answer = resolver.finish(pending).await;
                    slot.send(answer);
                });
                true
            }
        }
    }
}

/// The first complete length-prefixed frame at the start of `buffer`.
fn next_frame(buffer: &[u8]) -> Option<&[u8]> {
    let len = u16::from_be_bytes([*buffer.first()?, *buffer.get(1)?]);
    buffer.get(2..2 + usize::from(len))
}
