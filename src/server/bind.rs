//! Binding the DNS listeners: UDP and TCP on every `listen` address, each
//! socket with `SO_REUSEPORT` so that a new instance can bind beside a
//! running one (README "Live reload").

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};

/// Socket receive buffer asked for each UDP socket (the kernel may cap it).
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Sockets bound and ready to serve.
#[derive(Debug)]
pub(crate) struct Listeners {
    pub(super) udp: Vec<std::net::UdpSocket>,
    pub(super) tcp: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// Binds every address over UDP (`udp_sockets_per_address` sockets each,
    /// spread by the kernel) and TCP.
    pub(crate) fn bind(addrs: &[SocketAddr], udp_sockets_per_address: usize) -> io::Result<Self> {
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
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Binds UDP and TCP on `addr`: the two must share one port.
///
/// Port 0 (tests) takes the port the kernel gives the TCP listener, then
/// binds UDP on it, and picks again if that fails. Not the other way round:
/// for UDP sockets with `SO_REUSEADDR`/`SO_REUSEPORT`, the kernel's choice
/// for port 0 may be a port that another such socket of the same user holds
/// (403 of 5,000 binds on this machine), so two servers started side by
/// side (the integration tests) could share a port and each get some of
/// the other's queries; for TCP it never is (0 of 5,000). See the test below.
/// The TCP port being free does not make the UDP port free, though: a
/// server that is draining has closed its TCP listener but still reads its
/// UDP sockets, and a reuse-port bind beside them would share their queries
/// (seen in CI: an answer from another test's server). So the UDP port is
/// first bound alone, without reuse, which fails while any socket holds it.
fn bind_pair(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    if addr.port() != 0 {
        return Ok((bind_udp(addr)?, bind_tcp(addr)?));
    }
    const ATTEMPTS: usize = 64;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tcp = bind_tcp(addr)?;
        let bound = tcp.local_addr()?;
        match udp_port_is_free(bound).and_then(|()| bind_udp(bound)) {
            Ok(udp) => return Ok((udp, tcp)),
            Err(error) if error.kind() == io::ErrorKind::AddrInUse && attempt < ATTEMPTS => {}
            Err(error) => return Err(error),
        }
    }
}

/// `Ok` if a UDP socket without `SO_REUSEADDR`/`SO_REUSEPORT` can bind
/// `addr`, that is if no socket holds it; the probe closes at once.
fn udp_port_is_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.bind(&addr.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Seen in CI (an answer from another test's server): a draining
    /// server's UDP sockets hold a port whose TCP listener is gone, and a
    /// listener bound to port 0 took the port beside them. 2,000 such
    /// "draining" ports held, 300 listeners bound: before the UDP probe,
    /// about 1 in 14 landed on one of them.
    #[test]
    fn listeners_on_port_zero_never_share_a_draining_servers_udp_port() {
        crate::app::raise_file_limit();
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let draining: Vec<std::net::UdpSocket> =
            (0..2000).map_while(|_| bind_udp(any).ok()).collect();
        let held: std::collections::HashSet<u16> = draining
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|a| a.port())
            .collect();
        assert!(held.len() >= 500, "only {} ports held", held.len());
        let mut shared = 0;
        for _ in 0..300 {
            let listeners = Listeners::bind(&[any], 1).expect("bind");
            let port = listeners.udp[0].local_addr().expect("addr").port();
            if held.contains(&port) {
                shared += 1;
            }
        }
        assert_eq!(shared, 0, "listeners took a draining server's UDP port");
    }

    /// The probe that test relies on.
    #[test]
    fn a_udp_port_a_draining_server_still_reads_is_not_free() {
        let draining = bind_udp("127.0.0.1:0".parse().expect("address")).expect("bind");
        let port = draining.local_addr().expect("addr");
        let held = udp_port_is_free(port).expect_err("held by a reuse-port socket");
        assert_eq!(held.kind(), io::ErrorKind::AddrInUse);
        drop(draining);
        udp_port_is_free(port).expect("free once closed");
    }

    /// Found by the hostile_upstreams tests, where one query in a full run
    /// of the suite got no answer at all: listeners bound to port 0 all get
    /// ports of their own, so no server sees another's queries. With the UDP
    /// socket bound first, 600 of them shared ports about six times per run.
    #[test]
    fn listeners_bound_to_port_zero_never_share_a_port() {
        crate::app::raise_file_limit();
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut held = Vec::new();
        let mut ports = std::collections::HashSet::new();
        for _ in 0..600 {
            let listeners = Listeners::bind(&[addr], 1).expect("bind");
            for socket in &listeners.udp {
                let port = socket.local_addr().expect("addr").port();
                assert!(ports.insert(port), "UDP port {port} handed out twice");
            }
            held.push(listeners);
        }
    }
}
