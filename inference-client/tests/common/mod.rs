//! Test support: runs the real `inference-sim` binary on a free port, talks
//! to its admin routes over plain std sockets, and collects a request's
//! events from the service, with bounded waits everywhere so a bug fails a
//! test instead of hanging it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use inference_client::{Event, RequestId};

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs a test body once per io driver.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn uring() {
                    super::$name("uring");
                }
                #[test]
                fn epoll() {
                    super::$name("epoll");
                }
            }
        )*
    };
}

/// An `inference-sim` process, killed on drop.
pub struct Sim {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl Sim {
    /// Starts a simulator with these flags (plus `--listen 127.0.0.1:0`).
    pub fn start(args: &[&str]) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_inference-sim"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn inference-sim");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("inference-sim did not start");
            }
        };
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("inference-sim printed {line:?}"))
            .parse()
            .expect("address");
        Sim {
            child: Some(child),
            addr,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the process (its port then refuses connections).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `GET /admin/stats` as JSON.
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http(self.addr, "GET", "/admin/stats", "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// One counter of `/admin/stats`.
    pub fn stat(&self, name: &str) -> u64 {
        self.stats()[name].as_u64().unwrap_or(0)
    }

    /// Waits (bounded) until `name` reaches at least `want`; returns it.
    pub fn wait_stat(&self, name: &str, want: u64) -> u64 {
        let end = Instant::now() + WAIT;
        loop {
            let v = self.stat(name);
            if v >= want || Instant::now() > end {
                return v;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `POST /admin/faults`.
    pub fn faults(&self, json: &str) {
        let (status, body) = http(self.addr, "POST", "/admin/faults", json);
        assert_eq!(status, 200, "{body}");
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request with `Connection: close`; (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// What one request produced.
#[derive(Debug)]
pub struct Outcome {
    pub text: String,
    pub tokens: usize,
    pub last: Event,
}

/// Collects the events of request `id` until its final one (others are
/// kept in `stash`).
pub fn collect(rx: &flume::Receiver<Event>, id: RequestId, stash: &mut Vec<Event>) -> Outcome {
    let mut text = String::new();
    let mut tokens = 0;
    let mut pending: Vec<Event> = Vec::new();
    let mut take = |ev: Event, text: &mut String, tokens: &mut usize| -> Option<Event> {
        if ev.id() != id {
            pending.push(ev);
            return None;
        }
        match ev {
            Event::Token { text: t, .. } => {
                text.push_str(&t);
                *tokens += 1;
                None
            }
            ev => Some(ev),
        }
    };
    let mut earlier = std::mem::take(stash).into_iter();
    let last = loop {
        let ev = match earlier.next() {
            Some(ev) => ev,
            None => rx
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no final event for request {id}")),
        };
        if let Some(last) = take(ev, &mut text, &mut tokens) {
            break last;
        }
    };
    stash.extend(earlier);
    stash.extend(pending);
    Outcome { text, tokens, last }
}
