//! Durable transcripts: an acked message survives a SIGKILL of the gateway,
//! and sessions resume with their history after a restart.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Generous rates, so the test measures the store, not the limiter.
const CONFIG: &str = "[limits]\nmessage_rate = { per_sec = 10000.0, burst = 10000.0 }\nframe_rate = { per_sec = 10000.0, burst = 10000.0 }\n";

/// Messages per client: with their answers, inside the 200 items history carries.
const PER_CLIENT: usize = 90;

/// Per client: its cookie and every (id, seq) acked before the kill.
type Acks = BTreeMap<usize, (String, Vec<(String, u64)>)>;

#[test]
fn acked_messages_survive_sigkill() {
    let data = tempfile::tempdir().unwrap();
    let mut gw = Gateway::with(Opts {
        driver: "auto",
        config: Some(CONFIG),
        data_dir: Some(data.path()),
        ..Default::default()
    });
    let clients = 6;
    let acked_total = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Acks>> = Arc::default();
    let mut threads = Vec::new();
    for c in 0..clients {
        let mut client = connect(&gw, "/ws?site=demo", None, None).unwrap();
        client.hello();
        let cookie = client.cookie.clone().unwrap();
        acked.lock().unwrap().insert(c, (cookie, Vec::new()));
        let acked = acked.clone();
        let total = acked_total.clone();
        threads.push(std::thread::spawn(move || {
            for i in 0..PER_CLIENT {
                let id = format!("c{c}m{i}");
                if client
                    .ws
                    .send(tungstenite::Message::text(
                        json!({"type": "message", "id": id, "text": format!("message {i}")})
                            .to_string(),
                    ))
                    .is_err()
                {
                    return;
                }
                loop {
                    match client.ws.read() {
                        Ok(tungstenite::Message::Text(t)) => {
                            let m: serde_json::Value = serde_json::from_str(&t).unwrap();
                            if m["type"] == "ack" && m["id"] == id {
                                acked
                                    .lock()
                                    .unwrap()
                                    .get_mut(&c)
                                    .unwrap()
                                    .1
                                    .push((id.clone(), m["seq"].as_u64().unwrap()));
                                total.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                        }
                        Ok(_) => {}
                        // The gateway was killed.
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    // Kill while messages are flowing: after a few hundred acks, before all are done.
    let deadline = Instant::now() + WAIT;
    while acked_total.load(Ordering::SeqCst) < 300 {
        assert!(
            Instant::now() < deadline,
            "messages are not flowing: {}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = gw.signal_and_wait(libc::SIGKILL);
    assert!(!status.success());
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let n_acked: usize = acked.values().map(|(_, v)| v.len()).sum();
    assert!(
        n_acked >= 300 && n_acked < clients * 150,
        "killed mid-stream: {n_acked} acked"
    );

    // Restart on the same data: every acked message is in its conversation.
    let gw = Gateway::with(Opts {
        driver: "auto",
        config: Some(CONFIG),
        data_dir: Some(data.path()),
        ..Default::default()
    });
    for (c, (cookie, msgs)) in &acked {
        let mut client = connect(&gw, "/ws?site=demo", Some(cookie), None).unwrap();
        let w = client.hello();
        assert_eq!(w["resumed"], true, "client {c}");
        let history: BTreeMap<String, u64> = w["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["from"] == "visitor")
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_owned(),
                    i["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        for (id, seq) in msgs {
            assert_eq!(
                history.get(id),
                Some(seq),
                "client {c}: acked {id} (seq {seq}) is lost after SIGKILL"
            );
        }
        // A resend of an acked message after the restart gets its original ack.
        if let Some((id, seq)) = msgs.last() {
            client.send(json!({"type": "message", "id": id, "text": "again"}));
            let ack = client.recv_until("ack").pop().unwrap();
            assert_eq!(
                (ack["id"].as_str(), ack["seq"].as_u64()),
                (Some(id.as_str()), Some(*seq))
            );
        }
    }
    gw.stop();
}

#[test]
fn conversation_resumes_after_a_graceful_restart() {
    let data = tempfile::tempdir().unwrap();
    let fast = "";
    let gw = Gateway::with(Opts {
        driver: "auto",
        config: Some(fast),
        data_dir: Some(data.path()),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=demo", None, None).unwrap();
    let conversation = c.hello()["conversation"].clone();
    c.send(json!({"type": "hello", "lang": "de", "page": "https://shop.example/returns"}));
    c.recv();
    c.send(json!({"type": "message", "id": "q1", "text": "how do returns work?"}));
    let done = c.recv_until("done").pop().unwrap();
    let cookie = c.cookie.clone().unwrap();
    drop(c);
    gw.stop();

    let gw = Gateway::with(Opts {
        driver: "auto",
        config: Some(fast),
        data_dir: Some(data.path()),
        ..Default::default()
    });
    let mut c = connect(&gw, "/ws?site=demo", Some(&cookie), None).unwrap();
    let w = c.hello();
    assert_eq!(w["conversation"], conversation);
    assert_eq!(w["resumed"], true);
    let h = w["history"].as_array().unwrap();
    assert_eq!(h.len(), 2, "{w}");
    assert_eq!(
        (h[0]["id"].as_str(), h[0]["text"].as_str()),
        (Some("q1"), Some("how do returns work?"))
    );
    assert_eq!(
        (h[1]["from"].as_str(), &h[1]["seq"], &h[1]["reply"]),
        (Some("ai"), &done["seq"], &done["reply"])
    );
    // The conversation goes on where it was.
    c.send(json!({"type": "message", "id": "q2", "text": "and exchanges?"}));
    let seen = c.recv_until("done");
    assert_eq!(seen[0], json!({"type": "ack", "id": "q2", "seq": 3}));
    assert_ne!(
        seen.last().unwrap()["reply"],
        done["reply"],
        "reply ids stay unique across restarts"
    );
    let m = http(
        gw.addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(m.contains("lc_sessions_restored_total 1"), "{m}");
}
