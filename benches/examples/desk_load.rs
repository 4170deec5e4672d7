//! Assignment latency of the agent desk under load: how long from a visitor's
//! `human` to their `agent` `joined`, with many agents and a long line.
//!
//! Against a running gateway (its admin token in `LC_ADMIN_TOKEN`):
//! makes `AGENTS` agent accounts, opens their sockets (each agent takes every
//! offer at once and resolves a conversation `HOLD_MS` after taking it), then
//! opens `VISITORS` visitor sessions that all ask for a person within
//! `SPREAD_MS`. Prints latency percentiles overall and by the position each
//! visitor was first given in the line.
//!
//! ```sh
//! LC_ADMIN_TOKEN=... cargo run --release -p benches --example desk_load -- \
//!     127.0.0.1:8080 AGENTS VISITORS HOLD_MS SPREAD_MS
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

fn http(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut all = String::new();
    s.read_to_string(&mut all).expect("read");
    let status = all[9..12].parse().unwrap_or(0);
    let body = all.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn ws(
    addr: SocketAddr,
    path: &str,
    header: Option<(&'static str, String)>,
) -> WebSocket<TcpStream> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("url");
    if let Some((k, v)) = header {
        req.headers_mut().insert(k, v.parse().expect("header"));
    }
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).ok();
    let (w, _) = tungstenite::client::client(req, s).expect("upgrade");
    w
}

fn read_json(w: &mut WebSocket<TcpStream>) -> Option<Value> {
    match w.read() {
        Ok(Message::Text(t)) => serde_json::from_str(&t).ok(),
        Ok(_) => None,
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("socket: {e}"),
    }
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = args
        .first()
        .expect("ADDR")
        .parse()
        .expect("ADDR is host:port");
    let num = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (agents, visitors, hold_ms, spread_ms) =
        (num(1, 50), num(2, 1000), num(3, 200), num(4, 1000));
    let token = std::env::var("LC_ADMIN_TOKEN").expect("LC_ADMIN_TOKEN");

    let mut agent_threads = Vec::new();
    let (ready_tx, ready_rx) = mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for i in 0..agents {
        let body = json!({"name": format!("Agent {i}"), "languages": ["en"], "capacity": 4, "sites": ["demo"]});
        let (st, v) = http(addr, "POST", "/admin/agents", &token, &body.to_string());
        assert_eq!(st, 201, "making an agent: {v}");
        let t = v["token"].as_str().expect("token").to_string();
        let ready = ready_tx.clone();
        let stop = stop.clone();
        agent_threads.push(std::thread::spawn(move || {
            let mut w = ws(
                addr,
                "/agent/ws",
                Some(("Authorization", format!("Bearer {t}"))),
            );
            w.get_ref()
                .set_read_timeout(Some(Duration::from_millis(5)))
                .ok();
            let _ = ready.send(());
            let mut due: Vec<(Instant, String)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(f) = read_json(&mut w) {
                    match f["type"].as_str() {
                        Some("offer") => {
                            let c = f["conversation"].as_str().unwrap_or("").to_string();
                            let _ = w.send(Message::text(
                                json!({"type": "take", "conversation": c}).to_string(),
                            ));
                        }
                        Some("assigned") => {
                            let c = f["conversation"].as_str().unwrap_or("").to_string();
                            due.push((Instant::now() + Duration::from_millis(hold_ms), c));
                        }
                        _ => {}
                    }
                }
                let now = Instant::now();
                due.retain(|(t, c)| {
                    if *t <= now {
                        let _ = w.send(Message::text(
                            json!({"type": "resolve", "conversation": c}).to_string(),
                        ));
                        false
                    } else {
                        true
                    }
                });
            }
        }));
    }
    for _ in 0..agents {
        ready_rx.recv().expect("agent ready");
    }

    // Visitors: a few threads, each with many sockets polled in turn.
    let threads = 8.min(visitors.max(1));
    let (res_tx, res_rx) = mpsc::channel::<(f64, u64)>();
    let start = Instant::now() + Duration::from_millis(500);
    let mut vthreads = Vec::new();
    for k in 0..threads {
        let res = res_tx.clone();
        let n = visitors / threads + u64::from(k < visitors % threads);
        vthreads.push(std::thread::spawn(move || {
            struct V {
                w: WebSocket<TcpStream>,
                at: Instant,
                asked: Option<Instant>,
                first_pos: u64,
                done: bool,
            }
            let mut vs: Vec<V> = (0..n)
                .map(|j| {
                    let mut w = ws(addr, "/ws?site=demo", None);
                    w.send(Message::text(
                        json!({"type": "hello", "lang": "en"}).to_string(),
                    ))
                    .unwrap();
                    while read_json(&mut w).is_none_or(|m| m["type"] != "welcome") {}
                    w.get_ref().set_nonblocking(true).ok();
                    let off = spread_ms * (j * threads + k) / visitors.max(1);
                    V {
                        w,
                        at: start + Duration::from_millis(off),
                        asked: None,
                        first_pos: 0,
                        done: false,
                    }
                })
                .collect();
            let deadline = start + Duration::from_secs(300);
            while vs.iter().any(|v| !v.done) && Instant::now() < deadline {
                let mut idle = true;
                for v in vs.iter_mut().filter(|v| !v.done) {
                    if v.asked.is_none() && Instant::now() >= v.at {
                        v.w.send(Message::text(json!({"type": "human"}).to_string()))
                            .unwrap();
                        v.asked = Some(Instant::now());
                    }
                    while let Some(m) = read_json(&mut v.w) {
                        idle = false;
                        if m["type"] == "agent" {
                            match m["event"].as_str() {
                                Some("queued") if v.first_pos == 0 => {
                                    v.first_pos = m["position"].as_u64().unwrap_or(0)
                                }
                                Some("joined") => {
                                    let ms =
                                        v.asked.map_or(0.0, |a| a.elapsed().as_secs_f64() * 1000.0);
                                    let _ = res.send((ms, v.first_pos));
                                    v.done = true;
                                    break;
                                }
                                Some("none_available") => {
                                    panic!("none_available: raise agents.queue_timeout_ms")
                                }
                                _ => {}
                            }
                        }
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }));
    }
    drop(res_tx);
    let results: Vec<(f64, u64)> = res_rx.iter().collect();
    for t in vthreads {
        let _ = t.join();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in agent_threads {
        let _ = t.join();
    }
    let mut all: Vec<f64> = results.iter().map(|r| r.0).collect();
    let max_pos = results.iter().map(|r| r.1).max().unwrap_or(0);
    println!(
        "agents={agents} capacity=4 visitors={visitors} hold_ms={hold_ms} spread_ms={spread_ms}: joined {} of {visitors}, longest line {max_pos}",
        results.len()
    );
    println!(
        "  all: p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        pct(&mut all, 0.5),
        pct(&mut all, 0.9),
        pct(&mut all, 0.99),
        pct(&mut all, 1.0)
    );
    for (lo, hi) in [(0, 0), (1, 10), (11, 100), (101, 1000), (1001, u64::MAX)] {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|r| r.1 >= lo && r.1 <= hi)
            .map(|r| r.0)
            .collect();
        if v.is_empty() {
            continue;
        }
        let label = if lo == 0 {
            "offered at once".to_string()
        } else {
            format!(
                "first position {lo}-{}",
                if hi == u64::MAX {
                    "..".into()
                } else {
                    hi.to_string()
                }
            )
        };
        println!(
            "  {label:>26}: n={:5} p50 {:8.1} ms  p99 {:8.1} ms",
            v.len(),
            pct(&mut v, 0.5),
            pct(&mut v, 0.99)
        );
    }
}
