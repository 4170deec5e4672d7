//! Sockets for sessions: non-blocking connects bound to a source address
//! spread over 127.0.0.0/8 (so one destination's ephemeral ports never run
//! out), and the raw `send`/`recv` the shell does once monoio says a socket is
//! ready (so idle sessions own no read buffer).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::RawFd;

use socket2::{Domain, Socket, Type};

/// Sessions per source address: well under the ~28,000 ephemeral ports one
/// (source, destination) pair offers.
pub const SESSIONS_PER_SOURCE: u64 = 8_192;
/// Source addresses a worker may use (a million sessions per worker).
pub const SOURCES_PER_WORKER: u64 = 128;
/// Workers per shard the address plan leaves room for.
pub const WORKERS_PER_SHARD: u64 = 64;

/// The source address of a worker's `n`th session, in 127.0.0.0/8, avoiding
/// last octets 0 and 255. Distinct shards and workers get distinct addresses.
pub fn source_ip(shard0: u64, worker: u64, n: u64) -> Ipv4Addr {
    let idx = (shard0 * WORKERS_PER_SHARD + worker % WORKERS_PER_SHARD) * SOURCES_PER_WORKER
        + (n / SESSIONS_PER_SOURCE) % SOURCES_PER_WORKER;
    let z = (idx % 254 + 1) as u8;
    let a = idx / 254;
    let y = (a % 256) as u8;
    let x = (1 + (a / 256) % 254) as u8;
    Ipv4Addr::new(127, x, y, z)
}

/// Starts a non-blocking TCP connect to `dest`, from `source` when given.
/// The connect completes when the socket becomes writable.
pub fn start_connect(dest: SocketAddr, source: Option<IpAddr>) -> io::Result<std::net::TcpStream> {
    let sock = Socket::new(Domain::for_address(dest), Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if let Some(src) = source {
        // Let connect() pick the port per destination instead of bind(): the
        // port range then limits (source, destination) pairs, not sources.
        let one: libc::c_int = 1;
        // SAFETY: a valid fd and a c_int option of the right size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(&SocketAddr::new(src, 0).into())?;
    }
    match sock.connect(&dest.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(sock.into())
}

/// The pending error of a socket whose connect finished (`SO_ERROR`).
pub fn take_error(fd: RawFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid pointers to an int and its length.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(())
}

/// What a non-blocking read or write did.
#[derive(Debug, PartialEq, Eq)]
pub enum Io {
    /// Moved this many bytes (more than zero).
    Done(usize),
    /// Nothing to do now; wait for readiness.
    WouldBlock,
    /// The peer closed (read) or the connection is gone.
    Closed,
}

/// Reads what is available into `buf`.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> Io {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    classify(n)
}

/// Writes what the socket takes of `buf`.
pub fn send(fd: RawFd, buf: &[u8]) -> Io {
    // SAFETY: buf is valid for reads of its length.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    classify(n)
}

/// Writes from the front of `out` until it is empty (`Done(0)`), the socket is
/// full (`WouldBlock`) or the connection is gone (`Closed`, and `out` is
/// cleared). A large emptied buffer is shrunk, so an idle connection keeps little.
pub fn send_queued(fd: RawFd, out: &mut Vec<u8>) -> Io {
    while !out.is_empty() {
        match send(fd, out) {
            Io::Done(n) => {
                out.drain(..n);
            }
            Io::WouldBlock => return Io::WouldBlock,
            Io::Closed => {
                out.clear();
                return Io::Closed;
            }
        }
    }
    if out.capacity() > 4096 {
        out.shrink_to(256);
    }
    Io::Done(0)
}

fn classify(n: isize) -> Io {
    if n > 0 {
        return Io::Done(n as usize);
    }
    if n == 0 {
        return Io::Closed;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Io::WouldBlock,
        _ => Io::Closed,
    }
}

/// Half-closes the sending side (after a close frame went out).
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: plain syscall on an fd we own; errors are irrelevant here.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Shuts both directions at once, as a lost network does to the server:
/// no close frame, the reader sees the end at once.
pub fn shutdown_both(fd: RawFd) {
    if fd < 0 {
        return;
    }
    // SAFETY: plain syscall on an fd we own; errors are irrelevant here.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn source_addresses_are_loopback_distinct_and_usable() {
        let mut seen = HashSet::new();
        for shard in 0..4 {
            for worker in 0..4 {
                for block in 0..SOURCES_PER_WORKER {
                    let ip = source_ip(shard, worker, block * SESSIONS_PER_SOURCE);
                    assert!(ip.is_loopback());
                    let o = ip.octets();
                    assert!(o[3] != 0 && o[3] != 255, "{ip}");
                    assert!(seen.insert(ip), "{ip} reused");
                }
            }
        }
        assert_eq!(source_ip(0, 0, 0), source_ip(0, 0, SESSIONS_PER_SOURCE - 1));
    }

    #[test]
    fn connects_from_a_chosen_source() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let src = source_ip(0, 0, 3 * SESSIONS_PER_SOURCE);
        let s = start_connect(l.local_addr().unwrap(), Some(IpAddr::V4(src))).unwrap();
        let (_peer, from) = l.accept().unwrap();
        assert_eq!(from.ip(), IpAddr::V4(src));
        assert_eq!(
            take_error(std::os::fd::AsRawFd::as_raw_fd(&s)).ok(),
            Some(())
        );
    }
}
