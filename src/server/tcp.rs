//! The TCP side of the listeners: accepts connections up to
//! `max_tcp_connections` and serves each as a pipeline of length-prefixed
//! queries answered as they complete (RFC 7766), with the idle timeout and
//! the drain of README "Command line".

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Protocol;
use crate::request::Handled;
use crate::resolve::Resolver;
use crate::wire;

/// Answers queued per TCP connection before its reader waits.
const TCP_PIPELINE_DEPTH: usize = 64;
/// After shutdown, a TCP connection quiet for this long is closed.
const TCP_DRAIN_IDLE: Duration = Duration::from_millis(200);

pub(super) async fn tcp_accept_loop(
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
        let mut out = Vec::new();
        match self.resolver.handle(frame, client, Protocol::Tcp, &mut out) {
            Handled::Reply => answers.send(out).await.is_ok(),
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
