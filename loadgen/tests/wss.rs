//! `wss://`: loadgen's WebSocket sessions over TLS, against loadgen's test
//! server behind a TLS terminator (rustls, a certificate of a private CA),
//! on both io drivers: the figures are the plain run's, and a certificate
//! not trusted is a connection failure that names TLS.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use support::{certificate, terminator};

use inference_client::IoDriver;
use loadgen::metrics::Figure;
use loadgen::run::{self, RunOptions};
use loadgen::scenario::Scenario;
use loadgen::testserver::{self, script::Behaviour, Config};

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
