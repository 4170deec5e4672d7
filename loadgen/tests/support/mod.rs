//! What the TLS tests share: a certificate of its own root for 127.0.0.1,
//! and a TLS terminator (rustls) in front of a plain server, one thread per
//! connection waiting on both sockets with poll(2).

// Each test binary uses what it needs of this.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

/// A certificate for 127.0.0.1, its own root, as a PEM file; and the
/// server's settings.
pub fn certificate() -> (PathBuf, Arc<rustls::ServerConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    // Tests run side by side in one process: each its own files.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loadgen-wss-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, key) = (dir.join("ca.pem"), dir.join("key.pem"));
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    (
        ca.clone(),
        inference_client::tls::server_config(&ca, &key).unwrap(),
    )
}

/// A TLS terminator in front of `backend`: one thread per connection,
/// waiting on both sockets with poll(2), for as long as either is open.
pub fn terminator(backend: SocketAddr, config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    serve(listener, backend, config);
    addr
}

/// The terminator on a listener bound already (its address known before
/// the backend's, for a backend that must allow it as an origin).
pub fn serve(listener: TcpListener, backend: SocketAddr, config: Arc<rustls::ServerConfig>) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let config = config.clone();
            std::thread::spawn(move || pump(client, backend, config));
        }
    });
}

fn pump(mut client: TcpStream, backend: SocketAddr, config: Arc<rustls::ServerConfig>) {
    let Ok(mut back) = TcpStream::connect(backend) else {
        return;
    };
    let mut tls = rustls::ServerConnection::new(config).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while tls.wants_write() {
            if tls.write_tls(&mut client).is_err() {
                return;
            }
        }
        let mut fds = [
            libc::pollfd {
                fd: client.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: back.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds of sockets this thread owns.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 30_000) };
        if n <= 0 {
            return;
        }
        if fds[0].revents != 0 {
            match tls.read_tls(&mut client) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if tls.process_new_packets().is_err() {
                // Let the client read the alert that says why.
                let _ = tls.write_tls(&mut client);
                return;
            }
            let mut plain = Vec::new();
            let _ = tls.reader().read_to_end(&mut plain);
            if back.write_all(&plain).is_err() {
                return;
            }
        }
        if fds[1].revents != 0 {
            match back.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tls.writer().write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    }
}
