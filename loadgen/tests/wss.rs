//! `wss://`: loadgen's WebSocket sessions over TLS, against loadgen's test
//! server behind a TLS terminator (rustls, a certificate of a private CA),
//! on both io drivers: the figures are the plain run's, and a certificate
//! not trusted is a connection failure that names TLS.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use inference_client::IoDriver;
use loadgen::metrics::Figure;
use loadgen::run::{self, RunOptions};
use loadgen::scenario::Scenario;
use loadgen::testserver::{self, script::Behaviour, Config};

/// A certificate for 127.0.0.1, its own root, as a PEM file; and the
/// server's settings.
fn certificate() -> (PathBuf, Arc<rustls::ServerConfig>) {
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
fn terminator(backend: SocketAddr, config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let config = config.clone();
            std::thread::spawn(move || pump(client, backend, config));
        }
    });
    addr
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

fn wss_server() -> (SocketAddr, PathBuf) {
    let plain = testserver::spawn(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        behaviour: Behaviour {
            ack_delay: Duration::from_millis(5),
            tokens: 3,
            token_interval: Duration::from_millis(5),
            ..Behaviour::default()
        },
        epoll: false,
    })
    .unwrap();
    let (ca, config) = certificate();
    (terminator(plain, config), ca)
}

fn opts(driver: IoDriver) -> RunOptions {
    RunOptions {
        threads: 1,
        pin: false,
        progress: false,
        driver,
        ..RunOptions::default()
    }
}

fn scenario(addr: SocketAddr, ca: Option<PathBuf>) -> Scenario {
    let mut sc = Scenario::simple(
        &format!("wss://{addr}/ws?site=demo"),
        6,
        30.0,
        Duration::from_secs(2),
    );
    sc.direct.ca = ca;
    sc
}

#[test]
fn wss_sessions_measure_as_plain_ones_on_both_drivers() {
    let (addr, ca) = wss_server();
    for driver in [IoDriver::Uring, IoDriver::Epoll] {
        let out = run::execute(&scenario(addr, Some(ca.clone())), &opts(driver), |_| {})
            .unwrap_or_else(|e| panic!("{driver:?}: {e}"));
        let c = &out.totals.counters;
        assert_eq!(c.errors_total(), 0, "{driver:?}: {:?}", c.errors);
        assert!(c.sent >= 30, "{driver:?}: {}", c.sent);
        assert_eq!((c.acked, c.replied), (c.sent, c.sent), "{driver:?}");
        assert_eq!(c.sessions_opened, 6);
        // Through TLS the ack still comes at least 5 ms after the message.
        let rtt = out.totals.figure(Figure::Rtt);
        assert!(
            rtt.min() >= 5_000 && rtt.value_at_quantile(0.5) < 60_000,
            "{driver:?}: {}",
            rtt.min()
        );
        assert_eq!(out.totals.figure(Figure::Ttft).len(), c.replied);
    }
}

#[test]
fn a_certificate_not_trusted_is_a_connection_failure_naming_tls() {
    let (addr, _) = wss_server();
    let e = run::execute(&scenario(addr, None), &opts(IoDriver::Auto), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("could not open any session") && e.contains("TLS"),
        "{e}"
    );
}
