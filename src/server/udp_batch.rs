//! Batched UDP I/O for the listeners: `recvmmsg` takes up to [`BATCH`]
//! queued datagrams in one system call and `sendmmsg` sends the answers made
//! at once in one more, where one `recvfrom`/`sendto` pair per query spends
//! most of a cache hit's CPU in the kernel's entry and exit. Linux only, as
//! the product is.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams taken or sent per system call.
pub(crate) const BATCH: usize = 32;
/// Largest query read; a longer datagram is cut (and then does not parse).
pub(crate) const DATAGRAM: usize = 4096;

/// Receive buffers for one socket, reused for every batch.
pub(crate) struct RecvBatch {
    buffers: Vec<Box<[u8; DATAGRAM]>>,
    addrs: Vec<SockAddrStorage>,
    lens: Vec<usize>,
    addr_lens: Vec<libc::socklen_t>,
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// Buffers for [`BATCH`] datagrams.
    pub(crate) fn new() -> Self {
        Self {
            buffers: (0..BATCH).map(|_| Box::new([0u8; DATAGRAM])).collect(),
            addrs: (0..BATCH).map(|_| SockAddrStorage::zeroed()).collect(),
            lens: vec![0; BATCH],
            addr_lens: vec![0; BATCH],
            count: 0,
        }
    }

    /// Takes what is queued on `socket` (non-blocking): the number of
    /// datagrams, or `WouldBlock` when there are none.
    pub(crate) fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let mut iovecs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain old data; all zeroes is a valid value.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iovecs[i].iov_base = self.buffers[i].as_mut_ptr().cast();
            iovecs[i].iov_len = DATAGRAM;
            headers[i].msg_hdr.msg_namelen = self.addrs[i].size_of();
            headers[i].msg_hdr.msg_name = std::ptr::from_mut(&mut self.addrs[i]).cast();
            headers[i].msg_hdr.msg_iov = std::ptr::from_mut(&mut iovecs[i]);
            headers[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every pointer in `headers` points into buffers owned by
        // `self` or into `iovecs`, all alive and unaliased for the call.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        let count = received as usize;
        for (i, header) in headers.iter().take(count).enumerate() {
            self.lens[i] = header.msg_len as usize;
            self.addr_lens[i] = header.msg_hdr.msg_namelen;
        }
        self.count = count;
        Ok(count)
    }

    /// Datagram `index` of the last batch and its source, if the source is
    /// an IP address.
    pub(crate) fn get(&self, index: usize) -> Option<(&[u8], SocketAddr)> {
        if index >= self.count {
            return None;
        }
        // SAFETY: the storage is plain old data (copying it is sound), and the
        // kernel wrote a socket address of `addr_lens[index]` bytes into it.
        let addr =
            unsafe { SockAddr::new(std::ptr::read(&self.addrs[index]), self.addr_lens[index]) };
        let source = addr.as_socket()?;
        let len = self.lens[index].min(DATAGRAM);
        Some((&self.buffers[index][..len], source))
    }
}

/// Sends `answers` with as few `sendmmsg` calls as the socket takes without
/// blocking; returns how many were sent (the rest would block). `addrs` is
/// scratch space the caller keeps from one call to the next, so that a send
/// allocates nothing.
pub(crate) fn send_batch(
    socket: &impl AsRawFd,
    answers: &[(Vec<u8>, SocketAddr)],
    addrs: &mut Vec<SockAddr>,
) -> io::Result<usize> {
    let mut sent = 0;
    while sent < answers.len() {
        let chunk = &answers[sent..answers.len().min(sent + BATCH)];
        addrs.clear();
        addrs.extend(chunk.iter().map(|(_, to)| SockAddr::from(*to)));
        let mut iovecs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain old data; all zeroes is a valid value.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (bytes, _)) in chunk.iter().enumerate() {
            iovecs[i].iov_base = bytes.as_ptr().cast_mut().cast();
            iovecs[i].iov_len = bytes.len();
            headers[i].msg_hdr.msg_name = addrs[i].as_ptr().cast_mut().cast();
            headers[i].msg_hdr.msg_namelen = addrs[i].len();
            headers[i].msg_hdr.msg_iov = std::ptr::from_mut(&mut iovecs[i]);
            headers[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the headers point into `addrs`, `iovecs` and the answers,
        // all alive for the call; the kernel only reads them.
        let result = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                chunk.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if result < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::WouldBlock {
                return Ok(sent);
            }
            // One bad destination fails the call: step over it and go on.
            tracing::debug!(%error, client = %chunk[0].1, "UDP send failed");
            sent += 1;
            continue;
        }
        if result == 0 {
            return Ok(sent);
        }
        sent += result as usize;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_over_loopback() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let server_addr = server.local_addr().expect("addr");
        for i in 0..5u8 {
            client.send_to(&[i; 3], server_addr).expect("send");
        }
        let mut batch = RecvBatch::new();
        let mut got = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut answers = Vec::new();
        while got < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "datagrams never arrived"
            );
            match batch.recv(&server) {
                Ok(n) => {
                    for i in 0..n {
                        let (bytes, from) = batch.get(i).expect("datagram");
                        assert_eq!(from, client.local_addr().expect("addr"));
                        answers.push((bytes.to_vec(), from));
                    }
                    got += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            send_batch(&server, &answers, &mut Vec::new()).expect("send"),
            5
        );
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        for _ in 0..5 {
            let (len, _) = client.recv_from(&mut buf).expect("echo");
            assert_eq!(len, 3);
        }
    }
}
