//! Thread-per-core behaviour: sessions resume on any worker, the epoll
//! fallback, graceful shutdown, the open-files limit.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

/// Reconnects (a bounded number of times) until a worker other than `not`
/// accepts the connection.
fn connect_elsewhere(gw: &Gateway, cookie: &str, not: &str) -> Client {
    for _ in 0..200 {
        let c = connect(gw, "/ws?site=demo", Some(cookie), None).expect("connect");
        if c.worker != not {
            return c;
        }
    }
    panic!("200 connections all landed on worker {not}");
}

fn resume_on_another_worker(driver: &str) {
    let gw = Gateway::start(driver);
    let mut a = connect(&gw, "/ws?site=demo", None, None).unwrap();
    let first_worker = a.worker.clone();
    assert!(!first_worker.is_empty(), "the 101 names its worker");
    let w = a.hello();
    let conversation = w["conversation"].clone();
    a.send(json!({"type": "message", "id": "before", "text": "asked on one worker"}));
    a.recv_until("done");
    let cookie = a.cookie.clone().unwrap();
    drop(a);

    let mut b = connect_elsewhere(&gw, &cookie, &first_worker);
    assert_ne!(b.worker, first_worker);
    assert!(
        b.cookie.as_deref() == Some(cookie.as_str()),
        "the same session, the same token"
    );
    let w = b.hello();
    assert_eq!(w["resumed"], true);
    assert_eq!(w["conversation"], conversation);
    assert_eq!(w["history"][0]["id"], "before");
    // The conversation goes on from the other worker: its state lives on the owner.
    b.send(json!({"type": "message", "id": "after", "text": "asked on another"}));
    let seen = b.recv_until("done");
    assert_eq!(seen[0], json!({"type": "ack", "id": "after", "seq": 3}));
    let metrics = http(
        gw.addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let cross: u64 = metric(&metrics, "lc_cross_worker_messages_total");
    assert!(cross > 0, "messages crossed between workers: {cross}");
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no metric {name}")) as u64
}

fn sockets_on_two_workers_share_a_session(driver: &str) {
    let gw = Gateway::start(driver);
    let mut a = connect(&gw, "/ws?site=demo", None, None).unwrap();
    a.hello();
    let cookie = a.cookie.clone().unwrap();
    let mut b = connect_elsewhere(&gw, &cookie, &a.worker);
    b.hello();
    b.send(json!({"type": "message", "id": "x", "text": "sent from the other worker"}));
    assert_eq!(a.recv_until("done"), b.recv_until("done"));
}

#[test]
fn epoll_fallback_when_io_uring_is_denied() {
    let gw = Gateway::with(Opts {
        driver: "auto",
        env: &[("LC_TEST_DENY_IO_URING", "1")],
        ..Default::default()
    });
    let log = gw.log();
    assert!(log.contains("falling back to epoll"), "{log}");
    let m = http(
        gw.addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(
        m.contains("lc_io_driver{worker=\"0\",driver=\"epoll\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("lc_io_driver{worker=\"1\",driver=\"epoll\"} 1"),
        "{m}"
    );
    still_serves(&gw);
    gw.stop();
}

#[test]
fn uring_required_but_denied_fails_to_start_with_a_reason() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--io-driver",
            "uring",
            "--no-pin",
        ])
        .arg("--data-dir")
        .arg(tempfile::tempdir().unwrap().path())
        .env("LC_TEST_DENY_IO_URING", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("io_uring cannot start"), "{err}");
}

#[test]
fn auto_uses_io_uring_where_it_works() {
    let gw = Gateway::start("auto");
    let m = http(
        gw.addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(m.contains("driver=\"io_uring\"} 1"), "{m}");
}

fn graceful_shutdown(driver: &str) {
    let mut gw = Gateway::start(driver);
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    let status = gw.signal_and_wait(libc::SIGTERM);
    assert!(status.success(), "exit status {status}");
    assert_eq!(c.close_code(), Some(1001));
}

fn sigint_also_stops(driver: &str) {
    let mut gw = Gateway::start(driver);
    assert!(gw.signal_and_wait(libc::SIGINT).success());
}

#[test]
fn open_files_limit_is_raised_to_the_hard_limit() {
    let gw = Gateway::start("auto");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gw.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums[0], nums[1], "soft limit equals hard limit: {line}");
}

both_drivers!(
    resume_on_another_worker,
    sockets_on_two_workers_share_a_session,
    graceful_shutdown,
    sigint_also_stops,
);
