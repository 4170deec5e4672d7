//! Test support: runs the real `gateway` binary on a free port and talks to it
//! over real sockets, with bounded timeouts everywhere so a bug fails a test
//! instead of hanging it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The simulated inference server at test speed: 1 ms per token.
pub const FAST_SIM: &str = "\n[inference.sim]\ndecode_step_ms = 1.0\nprefill_us_per_token = 1.0\n";

/// Knowledge bases off unless a test asks: the demo site's built-in one
/// would ground (and change) every answer the other tests check.
pub const NO_KNOWLEDGE: &str = "\n[knowledge]\nembedder = \"lexical\"\ndemo = false\n";

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

/// A gateway process.
pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    stderr: std::path::PathBuf,
    /// Standard output's lines after `LISTENING`, as they come.
    stdout: mpsc::Receiver<String>,
}

/// How to start a gateway.
#[derive(Default)]
pub struct Opts<'a> {
    pub driver: &'a str,
    pub args: &'a [&'a str],
    pub config: Option<&'a str>,
    pub env: &'a [(&'a str, &'a str)],
    /// Keep this data directory (to restart on the same data).
    pub data_dir: Option<&'a std::path::Path>,
}

impl Gateway {
    /// Starts a gateway with two workers on `driver` and default settings.
    pub fn start(driver: &str) -> Gateway {
        Self::with(Opts {
            driver,
            ..Default::default()
        })
    }

    /// Starts a gateway and waits until it prints its address.
    pub fn with(o: Opts<'_>) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = o
            .data_dir
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| dir.path().join("data"));
        let stderr = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--workers")
            .arg("2")
            .arg("--io-driver")
            .arg(if o.driver.is_empty() {
                "auto"
            } else {
                o.driver
            })
            .arg("--data-dir")
            .arg(&data)
            .arg("--no-pin")
            .args(o.args)
            .env("LC_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (k, v) in o.env {
            cmd.env(k, v);
        }
        // The in-process simulator, fast: tests wait for whole answers.
        let mut cfg = o.config.unwrap_or("").to_string();
        if !cfg.contains("[inference.sim]") {
            cfg.push_str(FAST_SIM);
        }
        if !cfg.contains("[knowledge]") {
            cfg.push_str(NO_KNOWLEDGE);
        }
        let p = dir.path().join("gateway.toml");
        std::fs::write(&p, cfg).expect("write config");
        cmd.arg("--config").arg(p);
        let mut child = cmd.spawn().expect("spawn gateway");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        // Every line is read (the pipe stays open while the gateway runs)
        // and handed over; the first is the address.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            for l in lines.map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let line = match rx.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "gateway did not start: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        };
        let Some(addr) = line.trim().strip_prefix("LISTENING ") else {
            let _ = child.wait();
            panic!(
                "gateway did not start (stdout {line:?}): {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        Gateway {
            child: Some(child),
            addr: addr.parse().expect("address"),
            dir,
            stderr,
            stdout: rx,
        }
    }

    /// Standard output's lines after `LISTENING`, up to and with the first
    /// that starts with `last` (bounded by [`WAIT`]).
    pub fn stdout_until(&self, last: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(l) => {
                    let done = l.starts_with(last);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no stdout line starting {last:?} within {WAIT:?}: {seen:?}"),
            }
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// `ws://addr/path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Sends a signal and waits (bounded) for the process to exit.
    pub fn signal_and_wait(&mut self, sig: i32) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("gateway did not exit after signal {sig}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops gracefully and checks the exit status.
    pub fn stop(mut self) {
        let st = self.signal_and_wait(libc::SIGTERM);
        assert!(st.success(), "gateway exited with {st}: {}", self.log());
    }

    /// Whether the gateway still answers /healthz.
    pub fn healthy(&self) -> bool {
        http(
            self.addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .starts_with("HTTP/1.1 200")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Connects a raw TCP socket with read and write timeouts.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    s
}

/// Sends raw bytes and reads until the server closes (or the timeout).
pub fn http(addr: SocketAddr, raw: &str) -> String {
    let mut s = tcp(addr);
    s.write_all(raw.as_bytes()).expect("write");
    read_to_close(&mut s)
}

/// Reads until EOF, a reset, or the timeout.
pub fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A WebSocket client (tungstenite: an independent implementation).
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    /// `lc_session=...` to resend on reconnect.
    pub cookie: Option<String>,
    /// Which worker accepted the connection.
    pub worker: String,
}

/// Connects to `/ws?site=demo` (or `path`) with optional cookie and origin.
pub fn connect(
    gw: &Gateway,
    path: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Result<Client, tungstenite::Error> {
    let mut req = gw.ws_url(path).into_client_request()?;
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("Cookie", c.parse().expect("cookie header"));
    }
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", o.parse().expect("origin header"));
    }
    let stream = tcp(gw.addr);
    let (ws, resp) = tungstenite::client::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
    })?;
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let worker = resp
        .headers()
        .get("x-lc-worker")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok(Client { ws, cookie, worker })
}

impl Client {
    pub fn send(&mut self, v: serde_json::Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    /// The next JSON message (skipping control frames).
    pub fn recv(&mut self) -> serde_json::Value {
        loop {
            match self.ws.read().expect("read (timed out or closed)") {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON from server"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Reads until a message of `ty` arrives; returns everything read.
    pub fn recv_until(&mut self, ty: &str) -> Vec<serde_json::Value> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "no {ty} within {WAIT:?}: {seen:?}"
            );
            let m = self.recv();
            let done = m["type"] == ty;
            seen.push(m);
            if done {
                return seen;
            }
        }
    }

    /// hello, and the welcome it gets.
    pub fn hello(&mut self) -> serde_json::Value {
        self.send(
            serde_json::json!({"type": "hello", "lang": "en", "page": "https://shop.example/"}),
        );
        let w = self.recv();
        assert_eq!(w["type"], "welcome", "{w}");
        w
    }

    /// The close frame's code, reading past anything before it.
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(f))) => return Some(f.code.into()),
                Ok(Message::Close(None)) => return None,
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed)
                | Err(tungstenite::Error::AlreadyClosed) => return None,
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        }
    }
}

/// A masked client frame, for tests that send what tungstenite never would.
pub fn raw_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x11, 0x22, 0x33, 0x44];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Opens a WebSocket by hand and returns the socket after the 101.
pub fn raw_upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = tcp(addr);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("read 101");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Reads one unmasked server frame: (opcode, payload).
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[0] & 0x0F, p))
}

/// Reads frames until a close frame; returns its code.
pub fn read_close_code(s: &mut TcpStream) -> u16 {
    loop {
        let (op, p) = read_frame(s).expect("a close frame before EOF");
        if op == 0x8 {
            assert!(p.len() >= 2, "close frame without a code");
            return u16::from_be_bytes([p[0], p[1]]);
        }
    }
}

/// A WebSocket round trip on a fresh session, proving the gateway still serves.
pub fn still_serves(gw: &Gateway) {
    assert!(gw.healthy(), "healthz failed: {}", gw.log());
    let mut c = connect(gw, "/ws?site=demo", None, None).expect("connect after bad input");
    c.hello();
    c.send(serde_json::json!({"type": "ping", "id": "alive"}));
    assert_eq!(c.recv()["type"], "pong");
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// `lc_session=...` from Set-Cookie.
    pub fn cookie(&self) -> Option<String> {
        self.header("set-cookie")
            .and_then(|v| v.split(';').next())
            .map(str::to_owned)
    }
}

/// One HTTP request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = tcp(addr);
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    s.write_all(raw.as_bytes()).expect("write");
    s.write_all(body).expect("write body");
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read response");
    parse_response(&all)
}

/// Parses one response from raw bytes.
pub fn parse_response(all: &[u8]) -> Resp {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hs);
    let n = match r.parse(all) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("bad response {other:?}: {}", String::from_utf8_lossy(all)),
    };
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Resp {
        status: r.code.unwrap_or(0),
        headers,
        body: all[n..].to_vec(),
    }
}

/// The text of the `token`s among `seen`, in order: a streamed reply.
pub fn token_text(seen: &[serde_json::Value]) -> String {
    seen.iter()
        .filter(|m| m["type"] == "token")
        .filter_map(|m| m["text"].as_str())
        .collect()
}

/// Waits, at most `within`, for `found` to find something the gateway does
/// in its own time (a metric that moves, a log line); fails the test with
/// `what` if it never does. It polls: the gateway offers no event to wait on.
pub fn eventually<T>(what: &str, within: Duration, mut found: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = found() {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
