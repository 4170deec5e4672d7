//! Protocol v1 end to end over real sockets, on both io drivers: sessions,
//! resuming, every socket of a session, streaming, isolation between visitors.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::*;
use serde_json::json;

fn hello_message_stream_done(driver: &str) {
    let gw = Gateway::start(driver);
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    assert!(
        c.cookie
            .as_deref()
            .is_some_and(|k| k.starts_with("lc_session=")),
        "a new session sets the cookie"
    );
    let w = c.hello();
    assert_eq!(w["resumed"], false);
    assert_eq!(w["history"], json!([]));
    assert_eq!(w["config"]["site"], "demo");
    assert!(w["conversation"].as_str().unwrap().starts_with("c_"));
    let cookie_value = c.cookie.clone().unwrap();
    assert!(
        !w.to_string()
            .contains(cookie_value.trim_start_matches("lc_session=")),
        "the token never appears in a frame"
    );

    c.send(json!({"type": "ping", "id": "p1"}));
    assert_eq!(c.recv(), json!({"type": "pong", "id": "p1"}));

    c.send(json!({"type": "message", "id": "m1", "text": "Do you ship to Norway?"}));
    let seen = c.recv_until("done");
    assert_eq!(seen[0], json!({"type": "ack", "id": "m1", "seq": 1}));
    let tokens: Vec<_> = seen.iter().filter(|m| m["type"] == "token").collect();
    assert!(tokens.len() > 3, "the answer streams in pieces");
    assert!(tokens.iter().all(|t| t["in_reply_to"] == "m1"));
    let done = seen.last().unwrap();
    assert_eq!(
        (done["in_reply_to"].as_str(), done["seq"].as_u64()),
        (Some("m1"), Some(2))
    );
    assert!(done["confidence"].as_f64().is_some() && done["sources"].is_array());
    let text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert!(text.contains("Do you ship to Norway?"), "{text}");
}

fn history_after_reconnect(driver: &str) {
    let gw = Gateway::start(driver);
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    c.send(json!({"type": "message", "id": "m1", "text": "first"}));
    c.recv_until("done");
    let cookie = c.cookie.clone().unwrap();
    drop(c);
    let mut d = connect(&gw, "/ws?site=demo", Some(&cookie), None).unwrap();
    let w = d.hello();
    assert_eq!(w["resumed"], true);
    let h = w["history"].as_array().unwrap();
    assert_eq!(h.len(), 2, "{w}");
    assert_eq!(
        (
            h[0]["from"].as_str(),
            h[0]["id"].as_str(),
            h[0]["seq"].as_u64()
        ),
        (Some("visitor"), Some("m1"), Some(1))
    );
    assert_eq!(
        (h[1]["from"].as_str(), h[1]["seq"].as_u64()),
        (Some("ai"), Some(2))
    );
    assert!(h[1]["reply"].is_string() && h[1]["ts"].is_u64());
}

fn every_socket_of_a_session_receives(driver: &str) {
    let gw = Gateway::start(driver);
    let mut a = connect(&gw, "/ws?site=demo", None, None).unwrap();
    a.hello();
    let cookie = a.cookie.clone().unwrap();
    let mut b = connect(&gw, "/ws?site=demo", Some(&cookie), None).unwrap();
    b.hello();
    a.send(json!({"type": "message", "id": "tab1", "text": "from tab one"}));
    let on_a = a.recv_until("done");
    let on_b = b.recv_until("done");
    assert_eq!(on_a, on_b, "both tabs see the same ack, tokens and done");
    assert_eq!(on_b[0]["id"], "tab1");
}

fn reply_continues_on_new_socket(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: Some("[inference.sim]\ndecode_step_ms = 40.0\n"),
        ..Default::default()
    });
    let mut a = connect(&gw, "/ws?site=demo", None, None).unwrap();
    a.hello();
    a.send(json!({"type": "message", "id": "q", "text": "a question with a long answer"}));
    a.recv_until("token");
    let cookie = a.cookie.clone().unwrap();
    drop(a);
    // Reconnect while the reply is still streaming.
    let mut b = connect(&gw, "/ws?site=demo", Some(&cookie), None).unwrap();
    let w = b.hello();
    let streaming = w["streaming"]
        .as_array()
        .expect("the reply in flight is announced");
    assert_eq!(streaming[0]["in_reply_to"], "q");
    let so_far = streaming[0]["text"].as_str().unwrap().to_owned();
    let rest = b.recv_until("done");
    let tail = token_text(&rest);
    let whole = format!("{so_far}{tail}");
    assert!(whole.contains("a question with a long answer"), "{whole}");
    assert!(whole.starts_with("Thanks"), "{whole}");
}

fn visitors_are_isolated(driver: &str) {
    let gw = Gateway::start(driver);
    let mut a = connect(&gw, "/ws?site=demo", None, None).unwrap();
    a.hello();
    a.send(json!({"type": "message", "id": "secret", "text": "my address is 1 Private Road"}));
    a.recv_until("done");
    let mut b = connect(&gw, "/ws?site=demo", None, None).unwrap();
    let w = b.hello();
    assert_eq!(w["history"], json!([]));
    assert_ne!(w["conversation"], json!(null));
    // A forged or unknown token starts a new session with a new cookie.
    let mut f = connect(
        &gw,
        "/ws?site=demo",
        Some("lc_session=AAAAAAAAAAAAAAAAAAAAAA"),
        None,
    )
    .unwrap();
    let fw = f.hello();
    assert_eq!(
        (
            fw["resumed"].as_bool(),
            fw["history"].as_array().map(Vec::len)
        ),
        (Some(false), Some(0))
    );
    assert!(f
        .cookie
        .is_some_and(|c| c != "lc_session=AAAAAAAAAAAAAAAAAAAAAA"));
}

fn human_request_is_answered(driver: &str) {
    let gw = Gateway::start(driver);
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    c.hello();
    c.send(json!({"type": "human", "reason": "I want a person"}));
    let m = c.recv();
    assert_eq!(
        (m["type"].as_str(), m["event"].as_str()),
        (Some("agent"), Some("none_available"))
    );
}

fn session_cookie_attributes(driver: &str) {
    let gw = Gateway::start(driver);
    let c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    drop(c);
    let raw = format!(
        "GET /ws?site=demo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        gw.addr
    );
    let mut s = tcp(gw.addr);
    std::io::Write::write_all(&mut s, raw.as_bytes()).unwrap();
    let mut buf = [0u8; 2048];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    let line = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .expect("set-cookie");
    for attr in ["httponly", "samesite=lax", "path=/", "max-age=2592000"] {
        assert!(line.contains(attr), "{line} lacks {attr}");
    }
}

fn many_sessions_many_messages(driver: &str) {
    let gw = Gateway::with(Opts {
        driver,
        config: None,
        ..Default::default()
    });
    let started = Instant::now();
    let mut clients: Vec<Client> = (0..20)
        .map(|_| connect(&gw, "/ws?site=demo", None, None).unwrap())
        .collect();
    for c in &mut clients {
        c.hello();
    }
    for round in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(json!({"type": "message", "id": format!("c{i}r{round}"), "text": format!("client {i} round {round}")}));
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let seen = c.recv_until("done");
            assert_eq!(seen[0]["id"], format!("c{i}r{round}"));
            assert!(seen.iter().all(|m| m
                .get("in_reply_to")
                .is_none_or(|r| *r == json!(format!("c{i}r{round}")))));
        }
    }
    assert!(started.elapsed() < WAIT * 3);
}

both_drivers!(
    hello_message_stream_done,
    history_after_reconnect,
    every_socket_of_a_session_receives,
    reply_continues_on_new_socket,
    visitors_are_isolated,
    human_request_is_answered,
    session_cookie_attributes,
    many_sessions_many_messages,
);
