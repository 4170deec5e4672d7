//! The long-polling transport, exactly as PROTOCOL.md defines it: same
//! messages, same session, cursor semantics, on both io drivers.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn send(gw: &Gateway, cookie: Option<&str>, msgs: Value) -> Resp {
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(c) = cookie {
        h.push(("Cookie", c));
    }
    request(
        gw.addr,
        "POST",
        "/poll/send?site=demo",
        &h,
        msgs.to_string().as_bytes(),
    )
}

fn recv(gw: &Gateway, cookie: &str, cursor: u64) -> (u64, Vec<Value>) {
    let r = request(
        gw.addr,
        "GET",
        &format!("/poll/recv?site=demo&cursor={cursor}"),
        &[("Cookie", cookie)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    (
        v["cursor"].as_u64().unwrap(),
        v["messages"].as_array().unwrap().clone(),
    )
}

/// Polls until a message of `ty` arrives; returns every message and the last cursor.
fn recv_until(gw: &Gateway, cookie: &str, mut cursor: u64, ty: &str) -> (u64, Vec<Value>) {
    let mut all = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no {ty}: {all:?}");
        let (c, msgs) = recv(gw, cookie, cursor);
        assert!(c >= cursor, "cursor went back");
        cursor = c;
        let found = msgs.iter().any(|m| m["type"] == ty);
        all.extend(msgs);
        if found {
            return (cursor, all);
        }
    }
}

fn conversation_over_long_polling(driver: &str) {
    let gw = Gateway::start(driver);
    let r = send(&gw, None, json!([{"type": "hello", "lang": "en"}]));
    assert_eq!(r.status, 204);
    let cookie = r.cookie().expect("a new session sets the cookie");
    let (cursor, msgs) = recv(&gw, &cookie, 0);
    assert_eq!((cursor, msgs[0]["type"].as_str()), (1, Some("welcome")));
    assert_eq!(
        send(
            &gw,
            Some(&cookie),
            json!([{"type": "message", "id": "m1", "text": "hi over polling"}])
        )
        .status,
        204
    );
    let (cursor, msgs) = recv_until(&gw, &cookie, cursor, "done");
    assert_eq!(msgs[0], json!({"type": "ack", "id": "m1", "seq": 1}));
    assert!(msgs.iter().filter(|m| m["type"] == "token").count() > 3);
    assert_eq!(
        cursor,
        1 + msgs.len() as u64,
        "the cursor counts messages delivered"
    );
    // Asking again from an older cursor replays from there.
    let (c2, again) = recv(&gw, &cookie, 1);
    assert_eq!((c2, again.len()), (cursor, msgs.len()));
}

fn held_recv_completes_when_a_message_arrives(driver: &str) {
    let gw = Gateway::start(driver);
    let cookie = send(&gw, None, json!([{"type": "hello"}]))
        .cookie()
        .unwrap();
    let (cursor, _) = recv(&gw, &cookie, 0);
    let addr = gw.addr;
    let c2 = cookie.clone();
    let held = std::thread::spawn(move || {
        let r = request(
            addr,
            "GET",
            &format!("/poll/recv?site=demo&cursor={cursor}"),
            &[("Cookie", &c2)],
            b"",
        );
        r.json()
    });
    // The recv is held: wait until the gateway reports it, then send.
    let deadline = Instant::now() + WAIT;
    while !poll_is_held(&gw) {
        assert!(Instant::now() < deadline, "the recv was never held");
        std::thread::sleep(Duration::from_millis(10));
    }
    send(&gw, Some(&cookie), json!([{"type": "ping", "id": "wake"}]));
    let v = held.join().unwrap();
    assert_eq!(v["messages"][0], json!({"type": "pong", "id": "wake"}));
    assert_eq!(v["cursor"], cursor + 1);
}

/// Whether a poll is held now.
fn poll_is_held(gw: &Gateway) -> bool {
    let m = http(
        gw.addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    m.lines().any(|l| l == "lc_polls_held 1")
}

fn new_recv_ends_the_held_one(driver: &str) {
    let gw = Gateway::start(driver);
    let cookie = send(&gw, None, json!([{"type": "hello"}]))
        .cookie()
        .unwrap();
    let (cursor, _) = recv(&gw, &cookie, 0);
    let addr = gw.addr;
    let c2 = cookie.clone();
    let first = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            &format!("/poll/recv?site=demo&cursor={cursor}"),
            &[("Cookie", &c2)],
            b"",
        )
        .json()
    });
    let deadline = Instant::now() + WAIT;
    while !poll_is_held(&gw) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let addr = gw.addr;
    let c3 = cookie.clone();
    let second = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            &format!("/poll/recv?site=demo&cursor={cursor}"),
            &[("Cookie", &c3)],
            b"",
        )
        .json()
    });
    let v = first.join().unwrap();
    assert_eq!(
        v,
        json!({"cursor": cursor, "messages": []}),
        "the first recv ends empty"
    );
    send(&gw, Some(&cookie), json!([{"type": "ping", "id": "p"}]));
    assert_eq!(second.join().unwrap()["messages"][0]["type"], "pong");
}

fn expired_cursor(driver: &str) {
    let gw = Gateway::start(driver);
    let pings: Vec<Value> = (0..1100)
        .map(|i| json!({"type": "ping", "id": format!("p{i}")}))
        .collect();
    let r = send(&gw, None, Value::Array(pings));
    assert_eq!(r.status, 204);
    let cookie = r.cookie().unwrap();
    // 1100 pongs: cursor 0 is older than the 1000 kept.
    let (cursor, msgs) = recv(&gw, &cookie, 0);
    assert_eq!(msgs[0]["type"], "error");
    assert_eq!(msgs[0]["code"], "cursor_expired");
    assert_eq!(msgs[1]["type"], "welcome");
    assert_eq!(cursor, 1102);
    // A recent cursor still works.
    let (c, recent) = recv(&gw, &cookie, 1099);
    assert_eq!(
        (c, recent.len(), recent[0]["id"].as_str()),
        (1102, 3, Some("p1099"))
    );
}

fn recv_times_out_empty(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[limits]\npoll_hold_ms = 200\n"),
        ..Default::default()
    });
    let cookie = send(&gw, None, json!([{"type": "hello"}]))
        .cookie()
        .unwrap();
    let (cursor, _) = recv(&gw, &cookie, 0);
    let (c, msgs) = recv(&gw, &cookie, cursor);
    assert_eq!((c, msgs.len()), (cursor, 0));
}

fn bad_bodies_and_elements(driver: &str) {
    let gw = Gateway::start(driver);
    let r = request(
        gw.addr,
        "POST",
        "/poll/send?site=demo",
        &[],
        b"{\"type\":\"hello\"}",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "bad_request");
    let r = request(gw.addr, "POST", "/poll/send?site=demo", &[], b"not json");
    assert_eq!(r.status, 400);
    // Each element is judged alone; errors come back in the stream with the id.
    let r = send(
        &gw,
        None,
        json!([{"type": "hello"}, {"type": "warp", "id": "w1"}, {"type": "ping", "id": "ok"}]),
    );
    assert_eq!(r.status, 204);
    let cookie = r.cookie().unwrap();
    let (_, msgs) = recv(&gw, &cookie, 0);
    let types: Vec<_> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["welcome", "error", "pong"]);
    assert_eq!(
        (msgs[1]["code"].as_str(), msgs[1]["id"].as_str()),
        (Some("unknown_type"), Some("w1"))
    );
    let r = request(
        gw.addr,
        "GET",
        "/poll/recv?site=demo",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(r.status, 400, "a cursor is required");
}

fn websocket_and_poller_share_a_session(driver: &str) {
    let gw = Gateway::start(driver);
    let mut ws = connect(&gw, "/ws?site=demo", None, None).unwrap();
    ws.hello();
    let cookie = ws.cookie.clone().unwrap();
    // The poller joins with hello: its cursor space starts now.
    send(&gw, Some(&cookie), json!([{"type": "hello"}]));
    let (cursor, msgs) = recv(&gw, &cookie, 0);
    assert_eq!(msgs.last().unwrap()["type"], "welcome");
    ws.send(json!({"type": "message", "id": "from-ws", "text": "typed in the socket tab"}));
    ws.recv_until("done");
    let (_, polled) = recv_until(&gw, &cookie, cursor, "done");
    assert_eq!(polled[0], json!({"type": "ack", "id": "from-ws", "seq": 1}));
}

both_drivers!(
    conversation_over_long_polling,
    held_recv_completes_when_a_message_arrives,
    new_recv_ends_the_held_one,
    expired_cursor,
    recv_times_out_empty,
    bad_bodies_and_elements,
    websocket_and_poller_share_a_session,
);
