//! The brief's bad-input table, row by row, over real sockets on both io
//! drivers: each bad input gets its answer, and the gateway keeps serving others.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn malformed_http(driver: &str) {
    let gw = Gateway::start(driver);
    let r = http(gw.addr, "GARBAGE\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.to_ascii_lowercase().contains("connection: close"));
    let r = http(gw.addr, "GET / HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "a request without Host: {r}");
    still_serves(&gw);
}

fn oversize_headers(driver: &str) {
    let gw = Gateway::start(driver);
    let big = "a".repeat(10_000);
    let r = http(
        gw.addr,
        &format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    let r = http(gw.addr, &format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n"));
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    still_serves(&gw);
}

fn slow_handshake(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[limits]\nhandshake_timeout_ms = 300\n"),
        ..Default::default()
    });
    // Half a request, then nothing.
    let mut s = tcp(gw.addr);
    s.write_all(b"GET /ws?site=demo HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let started = Instant::now();
    let r = read_to_close(&mut s);
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(
        started.elapsed() < WAIT,
        "the 408 came only at the test's own timeout"
    );
    // A connection that never sends a byte gets the same.
    let mut idle = tcp(gw.addr);
    assert!(read_to_close(&mut idle).starts_with("HTTP/1.1 408"));
    still_serves(&gw);
}

fn frame_over_limit(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[limits]\nmax_frame_bytes = 1024\n"),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    c.ws.send(tungstenite::Message::text("x".repeat(2000)))
        .unwrap();
    assert_eq!(c.close_code(), Some(1009));
    still_serves(&gw);
}

fn text_over_chat_limit(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[limits]\nmax_text_bytes = 100\n"),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    c.send(json!({"type": "message", "id": "big", "text": "y".repeat(101)}));
    let e = c.recv();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["id"].as_str()),
        (Some("error"), Some("too_large"), Some("big"))
    );
    // The session lives on.
    c.send(json!({"type": "message", "id": "ok", "text": "short"}));
    let a = c.recv();
    assert_eq!(
        (a["type"].as_str(), a["id"].as_str()),
        (Some("ack"), Some("ok"))
    );
    still_serves(&gw);
}

fn origin_and_site(driver: &str) {
    let gw = Gateway::start(driver);
    let evil = Some("https://evil.example");
    match connect(&gw, "/ws?site=demo", None, evil) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    match connect(&gw, "/ws?site=nope", None, None) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    // The gateway's own origin is allowed.
    let own = format!("http://{}", gw.addr);
    assert!(connect(&gw, "/ws?site=demo", None, Some(&own)).is_ok());
    // Long-polling has the same checks.
    let r = http(gw.addr, "GET /poll/recv?site=demo&cursor=0 HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = http(gw.addr, "POST /poll/send?site=nope HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    still_serves(&gw);
}

fn invalid_utf8(driver: &str) {
    let gw = Gateway::start(driver);
    let mut s = raw_upgrade(gw.addr, "/ws?site=demo");
    s.write_all(&raw_frame(true, 0x1, &[b'{', 0xFF, 0xFE, b'}'], true))
        .unwrap();
    assert_eq!(read_close_code(&mut s), 1007);
    still_serves(&gw);
}

fn protocol_violation(driver: &str) {
    let gw = Gateway::start(driver);
    let mut s = raw_upgrade(gw.addr, "/ws?site=demo");
    // An unmasked client frame.
    s.write_all(&raw_frame(true, 0x1, b"{}", false)).unwrap();
    assert_eq!(read_close_code(&mut s), 1002);
    still_serves(&gw);
}

fn bad_json_unknown_type_missing_field(driver: &str) {
    let gw = Gateway::start(driver);
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    c.ws.send(tungstenite::Message::text("{not json")).unwrap();
    let e = c.recv();
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    c.send(json!({"type": "teleport", "id": "t1"}));
    let e = c.recv();
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unknown_type"), Some("t1"))
    );
    c.send(json!({"type": "message", "id": "m1"}));
    let e = c.recv();
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("bad_request"), Some("m1"))
    );
    assert!(e["message"].as_str().unwrap().contains("text"), "{e}");
    // The session lives on.
    c.send(json!({"type": "message", "id": "m1", "text": "hello"}));
    assert_eq!(c.recv()["type"], "ack");
    still_serves(&gw);
}

fn flooding(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[limits]\nmessage_rate = { per_sec = 1.0, burst = 3.0 }\n"),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    for i in 0..4 {
        c.send(json!({"type": "message", "id": format!("f{i}"), "text": "spam"}));
    }
    let mut limited = None;
    let deadline = Instant::now() + WAIT;
    while limited.is_none() {
        assert!(Instant::now() < deadline);
        let m = c.recv();
        if m["type"] == "error" {
            limited = Some(m);
        }
    }
    let e = limited.unwrap();
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("rate_limited"), Some("f3"))
    );
    assert!(e["retry_after_ms"].as_u64().unwrap() > 0, "{e}");
    still_serves(&gw);
}

fn frame_flooding(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[limits]\nframe_rate = { per_sec = 1.0, burst = 5.0 }\n"),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    for i in 0..6 {
        c.send(json!({"type": "ping", "id": format!("p{i}")}));
    }
    let msgs: Vec<_> = (0..6).map(|_| c.recv()).collect();
    let e = msgs
        .iter()
        .find(|m| m["type"] == "error")
        .expect("a rate_limited error");
    assert_eq!(e["code"], "rate_limited");
    assert!(e["retry_after_ms"].as_u64().unwrap() > 0);
    still_serves(&gw);
}

fn server_full(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        args: &["--max-connections", "2"],
        ..Default::default()
    });
    let _a = connect(&gw, "/ws?site=demo", None, None).unwrap();
    let _b = connect(&gw, "/ws?site=demo", None, None).unwrap();
    let r = http(gw.addr, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 1"), "{r}");
    drop(_a);
    drop(_b);
    // Once the others are gone, connections are served again (the close is
    // asynchronous, so retry for a bounded time).
    let deadline = Instant::now() + WAIT;
    while !gw.healthy() {
        assert!(
            Instant::now() < deadline,
            "never served again after connections closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn resend_same_id(driver: &str) {
    let gw = Gateway::start(driver);
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    c.send(json!({"type": "message", "id": "dup", "text": "once"}));
    let first = c.recv();
    assert_eq!(first["type"], "ack");
    c.send(json!({"type": "message", "id": "dup", "text": "once"}));
    // Skip the reply's tokens; the second ack is the same ack.
    let again = c.recv_until("ack").pop().unwrap();
    assert_eq!(again, first);
    // Nothing done twice: one reply, one visitor item in the history.
    c.recv_until("done");
    let mut d = connect(&gw, "/ws?site=demo", c.cookie.as_deref(), None).unwrap();
    let w = d.hello();
    let items = w["history"].as_array().unwrap();
    assert_eq!(
        items.iter().filter(|i| i["from"] == "visitor").count(),
        1,
        "{w}"
    );
    assert_eq!(items.iter().filter(|i| i["from"] == "ai").count(), 1, "{w}");
}

fn slow_reader(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[limits]\noutbound_queue_bytes = 16384\n"),
        ..Default::default()
    });
    let mut s = raw_upgrade(gw.addr, "/ws?site=demo");
    // Never read: pongs fill both kernel buffers, then pile up on the server.
    let ping = raw_frame(true, 0x9, &[7u8; 125], true);
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 100)
        .collect();
    // Short write timeouts: the test must notice the close within the server's
    // grace period, not sit in a blocked write.
    s.set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut closed = false;
    while Instant::now() < deadline {
        if let Err(e) = s.write_all(&burst) {
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                closed = true;
                break;
            }
        }
        if gw_closed_slow_reader(&gw) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the gateway never gave up on a reader that does not read"
    );
    // Now read: after the pongs that were on their way comes close 1008.
    s.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(read_close_code(&mut s), 1008);
    still_serves(&gw);
}

/// Whether /metrics counts a WebSocket closed by the server.
fn gw_closed_slow_reader(gw: &Gateway) -> bool {
    let m = http(
        gw.addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    m.lines()
        .find(|l| l.starts_with("lc_ws_closed_by_server_total "))
        .and_then(|l| l.split(' ').nth(1))
        .is_some_and(|v| v != "0")
}

fn heartbeat_and_idle_timeout(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[limits]\nping_interval_ms = 200\nidle_timeout_ms = 1500\n"),
        ..Default::default()
    });
    // A peer that never answers: first a ping, then the connection is dropped.
    let mut silent = raw_upgrade(gw.addr, "/ws?site=demo");
    let (op, _) = read_frame(&mut silent).expect("a ping");
    assert_eq!(op, 0x9, "the server pings a quiet socket");
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut silent, &mut rest);
    assert!(
        started.elapsed() < WAIT,
        "a silent peer is dropped, not kept"
    );
    // A peer that answers pings (tungstenite does, while reading) stays.
    let mut alive = connect(&gw, "/ws?site=demo", None, None).unwrap();
    alive.hello();
    alive
        .ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = Instant::now() + Duration::from_millis(3000);
    while Instant::now() < until {
        match alive.ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("a peer that answers pings was dropped: {e}"),
        }
    }
    alive.ws.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    alive.send(json!({"type": "ping", "id": "still-here"}));
    assert_eq!(alive.recv()["id"], "still-here");
}

both_drivers!(
    heartbeat_and_idle_timeout,
    malformed_http,
    oversize_headers,
    slow_handshake,
    frame_over_limit,
    text_over_chat_limit,
    origin_and_site,
    invalid_utf8,
    protocol_violation,
    bad_json_unknown_type_missing_field,
    flooding,
    frame_flooding,
    server_full,
    resend_same_id,
    slow_reader,
);
