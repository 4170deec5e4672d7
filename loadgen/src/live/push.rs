//! `--prometheus-remote-write`: the pusher thread. Every interval it turns
//! the latest snapshot into a remote write body, queues it (bounded: the
//! oldest is dropped and counted when the receiver is away for long) and
//! posts the queue oldest first, so that each series' samples arrive in time
//! order. A failed post waits for the next interval; a refusal that retrying
//! cannot fix (4xx other than 429) drops its batch, as Prometheus's own
//! sender does. After the run one final push, bounded by [`FINAL_TIMEOUT`].
//!
//! HTTP/1.1 over a blocking `std::net::TcpStream` (https through rustls),
//! one connection per post: a post every few seconds needs no pool, and the
//! run's threads never wait for any of it.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_ENCODING, CONTENT_TYPE, HOST, USER_AGENT,
};
use http::{Method, Request, Uri};
use inference_client::http::response::{parse_head, Framing};

use super::{remote_write, Latest};

/// How long the push after the run may take, all retries included.
pub const FINAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bodies kept for a receiver that is away: ten minutes at the default
/// 5 s interval. Older ones are dropped first.
pub const MAX_QUEUE: usize = 120;
/// Longest one post may take during the run.
const MAX_POST: Duration = Duration::from_secs(10);
/// Response body kept for an error message.
const MAX_ERROR_BODY: usize = 512;

/// Where remote write goes: an `http` or `https` URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As given.
    pub url: String,
    uri: Uri,
    tls: bool,
    host: String,
    port: u16,
    authority: HeaderValue,
}

impl Endpoint {
    /// Checks and splits a URL such as `http://127.0.0.1:9090/api/v1/write`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("the URL must start with http:// or https://".into()),
        };
        let auth = uri.authority().ok_or("the URL has no host")?;
        if auth.as_str().contains('@') {
            return Err(
                "credentials in the URL are not sent; use --prometheus-remote-write-header \
                 'Authorization: Basic ...'"
                    .into(),
            );
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = HeaderValue::from_str(auth.as_str()).map_err(|e| e.to_string())?;
        Ok(Endpoint {
            url: url.to_string(),
            tls,
            host: host.to_string(),
            port,
            authority,
            uri,
        })
    }

    /// Whether it is `https`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// Headers loadgen sets itself and that a flag may not replace.
const RESERVED: [&str; 8] = [
    "host",
    "content-length",
    "content-encoding",
    "content-type",
    "transfer-encoding",
    "connection",
    "user-agent",
    "x-prometheus-remote-write-version",
];

/// One `--prometheus-remote-write-header 'Name: value'`. Its value is
/// marked sensitive and never printed.
#[derive(Clone)]
pub struct ExtraHeader {
    /// Field name.
    pub name: HeaderName,
    /// Field value.
    pub value: HeaderValue,
}

impl fmt::Debug for ExtraHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: <redacted>", self.name)
    }
}

impl FromStr for ExtraHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s
            .split_once(':')
            .ok_or_else(|| format!("'{}' is not a header: write 'Name: value'", s.trim()))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("'{}' is not a header name", name.trim()))?;
        if RESERVED.contains(&name.as_str()) {
            return Err(format!("{name} is set by loadgen itself"));
        }
        let mut value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("the value of {name} is not a valid header value"))?;
        value.set_sensitive(true);
        Ok(ExtraHeader { name, value })
    }
}

/// How the pusher posts.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Receiver.
    pub endpoint: Endpoint,
    /// Time between pushes.
    pub interval: Duration,
    /// Extra header fields.
    pub headers: Vec<ExtraHeader>,
    /// TLS settings, for `https`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What the pusher did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Bodies the receiver accepted.
    pub pushed: u64,
    /// Posts that failed and were kept for another try.
    pub failed: u64,
    /// Bodies dropped unsent because the queue was full.
    pub dropped: u64,
    /// Bodies the receiver refused for good (4xx other than 429).
    pub rejected: u64,
    /// Bodies still unsent when the final push's time ran out.
    pub unsent: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// Why a post did not go through.
#[derive(Debug)]
enum PostError {
    /// Worth trying again: no connection, a timeout, 429, 5xx.
    Retry(String),
    /// The receiver will never take this body.
    Refused(String),
}

enum Control {
    /// Push what there is, then stop.
    Final,
    /// Stop now.
    Now,
}

/// The running pusher thread.
pub struct Pusher {
    control: flume::Sender<Control>,
    thread: Option<JoinHandle<PushStats>>,
}

impl Pusher {
    /// Starts pushing `latest` every `cfg.interval`.
    pub fn spawn(cfg: PushConfig, latest: Latest) -> io::Result<Pusher> {
        let (control, rx) = flume::unbounded();
        let state = State {
            cfg,
            latest,
            queue: VecDeque::new(),
            last_at: None,
            stats: PushStats::default(),
            warned: false,
        };
        let thread = std::thread::Builder::new()
            .name("loadgen-push".into())
            .spawn(move || state.run(rx))?;
        Ok(Pusher {
            control,
            thread: Some(thread),
        })
    }

    /// Pushes the latest snapshot one last time (within [`FINAL_TIMEOUT`]
    /// and one post's timeout) and says how it all went.
    pub fn finish(mut self) -> PushStats {
        let _ = self.control.send(Control::Final);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(stats)) => stats,
            _ => PushStats {
                last_error: Some("the pusher thread failed".into()),
                ..PushStats::default()
            },
        }
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        // Not joined: a post in progress may take its timeout, and a
        // dropped handle must not hold its owner up for that.
        if self.thread.is_some() {
            let _ = self.control.send(Control::Now);
        }
    }
}

struct State {
    cfg: PushConfig,
    latest: Latest,
    queue: VecDeque<Vec<u8>>,
    last_at: Option<i64>,
    stats: PushStats,
    warned: bool,
}

impl State {
    fn run(mut self, control: flume::Receiver<Control>) -> PushStats {
        let interval = self.cfg.interval.max(Duration::from_millis(100));
        let mut next = Instant::now() + interval;
        loop {
            match control.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Err(flume::RecvTimeoutError::Timeout) => {
                    self.enqueue_latest();
                    let per_post = interval.clamp(Duration::from_secs(1), MAX_POST);
                    self.flush(Instant::now() + interval, per_post);
                    next += interval;
                    // After a slow flush, start counting again rather
                    // than pushing several times in a row to catch up.
                    let now = Instant::now();
                    if next <= now {
                        next = now + interval;
                    }
                }
                Ok(Control::Final) => {
                    self.enqueue_latest();
                    self.flush(Instant::now() + FINAL_TIMEOUT, FINAL_TIMEOUT);
                    break;
                }
                Ok(Control::Now) | Err(flume::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.stats.unsent = self.queue.len() as u64;
        self.stats
    }

    fn enqueue_latest(&mut self) {
        let snap = super::lock(&self.latest).clone();
        // The same snapshot twice would be the same samples again.
        if self.last_at == Some(snap.at_ms) {
            return;
        }
        self.last_at = Some(snap.at_ms);
        let body = remote_write::encode(&remote_write::build(&snap.families, snap.at_ms));
        self.queue.push_back(body);
        while self.queue.len() > MAX_QUEUE {
            self.queue.pop_front();
            self.stats.dropped += 1;
        }
    }

    fn flush(&mut self, deadline: Instant, per_post: Duration) {
        while let Some(body) = self.queue.front() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match post(&self.cfg, body, per_post.min(left)) {
                Ok(()) => {
                    self.queue.pop_front();
                    self.stats.pushed += 1;
                }
                Err(PostError::Refused(e)) => {
                    self.queue.pop_front();
                    self.stats.rejected += 1;
                    self.fail(e);
                }
                Err(PostError::Retry(e)) => {
                    self.stats.failed += 1;
                    self.fail(e);
                    return;
                }
            }
        }
    }

    fn fail(&mut self, e: String) {
        if !self.warned {
            self.warned = true;
            eprintln!(
                "loadgen: warning: remote write to {}: {e}; trying again every {:?}",
                self.cfg.endpoint.url, self.cfg.interval
            );
        }
        self.stats.last_error = Some(e);
    }
}

/// A stream whose reads and writes can be given a timeout.
trait Timed: Read + Write {
    fn set_timeout(&self, d: Duration) -> io::Result<()>;
}

impl Timed for TcpStream {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

impl Timed for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.sock.set_timeout(d)
    }
}

fn request_bytes(cfg: &PushConfig, body: &[u8]) -> Vec<u8> {
    let ep = &cfg.endpoint;
    let mut req = Request::new(body.to_vec());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = ep.uri.clone();
    let h = req.headers_mut();
    h.insert(HOST, ep.authority.clone());
    h.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("loadgen/", env!("CARGO_PKG_VERSION"))),
    );
    h.insert(
        CONTENT_ENCODING,
        HeaderValue::from_static(remote_write::CONTENT_ENCODING),
    );
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(remote_write::CONTENT_TYPE),
    );
    h.insert(
        HeaderName::from_static("x-prometheus-remote-write-version"),
        HeaderValue::from_static(remote_write::VERSION),
    );
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    for x in &cfg.headers {
        h.append(x.name.clone(), x.value.clone());
    }
    let mut out = Vec::with_capacity(512 + body.len());
    inference_client::http::request::encode(&req, &mut out);
    out
}

fn connect(ep: &Endpoint, deadline: Instant) -> Result<TcpStream, PostError> {
    let addrs = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| PostError::Retry(format!("cannot resolve {}: {e}", ep.host)))?;
    let mut last = format!("{} resolves to no address", ep.host);
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(PostError::Retry(last))
}

fn post(cfg: &PushConfig, body: &[u8], timeout: Duration) -> Result<(), PostError> {
    let deadline = Instant::now() + timeout;
    let ep = &cfg.endpoint;
    let bytes = request_bytes(cfg, body);
    let tcp = connect(ep, deadline)?;
    match (&cfg.tls, ep.tls) {
        (Some(tls), true) => {
            let name = inference_client::tls::server_name(&ep.host).map_err(PostError::Refused)?;
            let conn = rustls::ClientConnection::new(tls.clone(), name)
                .map_err(|e| PostError::Retry(format!("TLS: {e}")))?;
            exchange(&mut rustls::StreamOwned::new(conn, tcp), &bytes, deadline)
        }
        (_, false) => exchange(&mut { tcp }, &bytes, deadline),
        // Live::start makes the settings for every https URL; never fall
        // back to plain text on a TLS port.
        (None, true) => Err(PostError::Refused("https without TLS settings".into())),
    }
}

fn exchange(s: &mut impl Timed, request: &[u8], deadline: Instant) -> Result<(), PostError> {
    // A socket timeout reads as EAGAIN on Linux: say what it means.
    let io = |e: io::Error| {
        PostError::Retry(match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                "no response from the receiver in time".into()
            }
            _ => e.to_string(),
        })
    };
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(PostError::Retry("timed out".into()))
        } else {
            Ok(d)
        }
    };
    s.set_timeout(left()?).map_err(io)?;
    s.write_all(request).map_err(io)?;
    s.flush().map_err(io)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (head, len) = loop {
        if let Some(h) = parse_head(&buf).map_err(|e| PostError::Retry(e.to_string()))? {
            break h;
        }
        s.set_timeout(left()?).map_err(io)?;
        let n = s.read(&mut chunk).map_err(io)?;
        if n == 0 {
            return Err(PostError::Retry(
                "the connection closed before a response".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let status = head.status;
    if status.is_success() {
        return Ok(());
    }
    // An error's body says why (Prometheus: "out of order sample", say):
    // read a little of it, as far as the time allows.
    let want = match head.framing {
        Framing::Empty => 0,
        Framing::Length(n) => usize::try_from(n).unwrap_or(usize::MAX),
        _ => usize::MAX,
    }
    .min(MAX_ERROR_BODY);
    let mut body = buf.split_off(len);
    while body.len() < want {
        let Ok(d) = left() else { break };
        if s.set_timeout(d).is_err() {
            break;
        }
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    body.truncate(want);
    let text = String::from_utf8_lossy(&body);
    let msg = format!("HTTP {status}: {}", text.trim());
    if status.as_u16() == 429 || status.is_server_error() {
        Err(PostError::Retry(msg))
    } else {
        Err(PostError::Refused(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::exposition::{Family, Kind, Sample};
    use crate::live::Snapshot;
    use std::net::TcpListener;
    use std::sync::Mutex;

    #[test]
    fn urls_are_checked_and_split() {
        let e = Endpoint::parse("http://127.0.0.1:9090/api/v1/write").unwrap();
        assert_eq!((e.host(), e.port, e.is_tls()), ("127.0.0.1", 9090, false));
        let e = Endpoint::parse("https://mimir.example/api/v1/push").unwrap();
        assert_eq!((e.host(), e.port, e.is_tls()), ("mimir.example", 443, true));
        let e = Endpoint::parse("http://[::1]:9/w").unwrap();
        assert_eq!((e.host(), e.port), ("::1", 9));
        for bad in [
            "ftp://h/x",
            "127.0.0.1:9090/api",
            "http://u:p@h/x",
            "not a url",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_flags_parse_and_never_print_their_value() {
        let h: ExtraHeader = "Authorization: Bearer s3cret".parse().unwrap();
        assert_eq!(h.name, "authorization");
        assert_eq!(h.value, "Bearer s3cret");
        assert!(h.value.is_sensitive());
        assert!(!format!("{h:?}").contains("s3cret"));
        let t: ExtraHeader = "X-Scope-OrgID:tenant-1".parse().unwrap();
        assert_eq!(t.value, "tenant-1");
        assert!("no colon".parse::<ExtraHeader>().is_err());
        assert!("Content-Type: text/plain".parse::<ExtraHeader>().is_err());
        assert!("bad name: x".parse::<ExtraHeader>().is_err());
    }

    #[test]
    fn the_request_carries_the_protocols_headers() {
        let cfg = PushConfig {
            endpoint: Endpoint::parse("http://127.0.0.1:9/api/v1/write").unwrap(),
            interval: Duration::from_secs(5),
            headers: vec!["X-Scope-OrgID: t1".parse().unwrap()],
            tls: None,
        };
        let bytes = request_bytes(&cfg, b"abc");
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("POST /api/v1/write HTTP/1.1\r\n"),
            "{text}"
        );
        for h in [
            "host: 127.0.0.1:9\r\n",
            "content-encoding: snappy\r\n",
            "content-type: application/x-protobuf\r\n",
            "x-prometheus-remote-write-version: 0.1.0\r\n",
            "x-scope-orgid: t1\r\n",
            "content-length: 3\r\n",
        ] {
            assert!(text.contains(h), "{h} missing from {text}");
        }
        assert!(text.ends_with("\r\n\r\nabc"));
    }

    fn snapshot(at_ms: i64, v: f64) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            at_ms,
            families: vec![Family {
                name: "loadgen_messages_sent_total".into(),
                help: "h".into(),
                kind: Kind::Counter,
                samples: vec![Sample {
                    name: "loadgen_messages_sent_total".into(),
                    labels: vec![("run".into(), "r".into())],
                    value: v,
                }],
            }],
        })
    }

    /// Answers each connection with the next status of `statuses`,
    /// handing on each body it read.
    fn receiver(statuses: Vec<u16>) -> (String, flume::Receiver<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/v1/write", l.local_addr().unwrap());
        let (tx, rx) = flume::unbounded();
        std::thread::spawn(move || {
            for status in statuses {
                let (mut s, _) = l.accept().unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = s.read(&mut chunk).unwrap();
                    assert!(n > 0, "closed before a whole request");
                    buf.extend_from_slice(&chunk[..n]);
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut fields);
                    if let httparse::Status::Complete(len) = req.parse(&buf).unwrap() {
                        let cl: usize = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                            .unwrap();
                        if buf.len() >= len + cl {
                            break buf[len..len + cl].to_vec();
                        }
                    }
                };
                let reason = if status == 204 { "" } else { "nope" };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}",
                    reason.len()
                );
                s.write_all(resp.as_bytes()).unwrap();
                let _ = tx.send(body);
            }
        });
        (url, rx)
    }

    fn state(url: &str, latest: Latest) -> State {
        State {
            cfg: PushConfig {
                endpoint: Endpoint::parse(url).unwrap(),
                interval: Duration::from_secs(1),
                headers: Vec::new(),
                tls: None,
            },
            latest,
            queue: VecDeque::new(),
            last_at: None,
            stats: PushStats::default(),
            warned: false,
        }
    }

    #[test]
    fn a_failed_push_is_kept_and_sent_first_next_time() {
        let (url, bodies) = receiver(vec![503, 204, 204]);
        let latest: Latest = Arc::new(Mutex::new(snapshot(1_000, 1.0)));
        let mut st = state(&url, latest.clone());
        let far = Instant::now() + Duration::from_secs(10);
        st.enqueue_latest();
        st.flush(far, Duration::from_secs(5));
        assert_eq!(st.queue.len(), 1, "kept after a 503");
        assert_eq!((st.stats.failed, st.stats.pushed), (1, 0));
        assert!(st.stats.last_error.as_deref().unwrap().contains("503"));
        st.enqueue_latest();
        assert_eq!(st.queue.len(), 1, "the same snapshot is not queued twice");
        *crate::live::lock(&latest) = snapshot(2_000, 5.0);
        st.enqueue_latest();
        st.flush(far, Duration::from_secs(5));
        assert_eq!((st.stats.pushed, st.queue.len()), (2, 0));
        let recv = |_| {
            remote_write::decode(&bodies.recv_timeout(Duration::from_secs(5)).unwrap()).unwrap()
        };
        let stamps: Vec<(i64, f64)> = (0..3)
            .map(recv)
            .map(|r| {
                let s = &r.timeseries[0].samples[0];
                (s.timestamp, s.value)
            })
            .collect();
        assert_eq!(stamps, [(1_000, 1.0), (1_000, 1.0), (2_000, 5.0)]);
    }

    #[test]
    fn a_refused_body_is_dropped_and_the_queue_is_bounded() {
        let (url, _bodies) = receiver(vec![400]);
        let latest: Latest = Arc::new(Mutex::new(snapshot(1, 1.0)));
        let mut st = state(&url, latest.clone());
        st.enqueue_latest();
        st.flush(
            Instant::now() + Duration::from_secs(10),
            Duration::from_secs(5),
        );
        assert_eq!((st.stats.rejected, st.queue.len()), (1, 0));
        assert!(st.stats.last_error.as_deref().unwrap().contains("nope"));
        for at in 0..(MAX_QUEUE as i64 + 3) {
            *crate::live::lock(&latest) = snapshot(100 + at, 1.0);
            st.enqueue_latest();
        }
        assert_eq!(st.queue.len(), MAX_QUEUE);
        assert_eq!(st.stats.dropped, 3);
    }

    /// A private CA and a certificate for 127.0.0.1 signed by it, as PEM
    /// files: (CA, certificate, key).
    fn test_ca() -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let dir = std::env::temp_dir().join(format!("loadgen-push-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let paths = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&paths.0, ca_cert.pem()).unwrap();
        std::fs::write(&paths.1, leaf.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }

    #[test]
    fn https_goes_through_rustls_and_checks_the_certificate() {
        let (ca, cert, key) = test_ca();
        let server_cfg = inference_client::tls::server_config(&cert, &key).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/api/v1/write", l.local_addr().unwrap());
        let (tx, bodies) = flume::unbounded();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(tcp) = conn else { continue };
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let tls = rustls::ServerConnection::new(server_cfg.clone()).unwrap();
                let mut s = rustls::StreamOwned::new(tls, tcp);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // A client that refuses the certificate ends the handshake:
                // the read fails and the next connection is served.
                let got = loop {
                    match s.read(&mut chunk) {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => break None,
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    let mut req = httparse::Request::new(&mut fields);
                    if let Ok(httparse::Status::Complete(len)) = req.parse(&buf) {
                        let cl: usize = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                            .unwrap();
                        if buf.len() >= len + cl {
                            break Some(buf[len..len + cl].to_vec());
                        }
                    }
                };
                let Some(body) = got else { continue };
                let _ = tx.send(body);
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
                let _ = s.flush();
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        });
        let cfg = |ca_file: Option<&std::path::Path>| PushConfig {
            endpoint: Endpoint::parse(&url).unwrap(),
            interval: Duration::from_secs(1),
            headers: Vec::new(),
            tls: inference_client::tls::client_config(ca_file).ok(),
        };
        let body = remote_write::encode(&remote_write::build(&snapshot(7, 3.0).families, 7));
        post(&cfg(Some(&ca)), &body, Duration::from_secs(5)).unwrap();
        let got = bodies.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got, body, "the body arrives whole through TLS");
        // Without the private CA the certificate is refused; nothing is sent.
        // (The machine may have no system roots at all: then there are no
        // TLS settings and the post is refused before connecting.)
        let untrusted = cfg(None);
        match post(&untrusted, &body, Duration::from_secs(5)) {
            Err(PostError::Retry(e)) => assert!(e.to_lowercase().contains("certificate"), "{e}"),
            Err(PostError::Refused(e)) => assert!(untrusted.tls.is_none(), "{e}"),
            Ok(()) => panic!("an unknown CA was trusted"),
        }
        assert!(bodies.try_recv().is_err());
    }

    #[test]
    fn a_silent_receiver_costs_no_more_than_the_timeout() {
        // Accepts (the kernel's backlog does) and never answers.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let latest: Latest = Arc::new(Mutex::new(snapshot(1, 1.0)));
        let mut st = state(&format!("http://{}/w", l.local_addr().unwrap()), latest);
        st.enqueue_latest();
        let t = Instant::now();
        st.flush(
            Instant::now() + Duration::from_millis(300),
            Duration::from_secs(5),
        );
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!((st.stats.failed, st.queue.len()), (1, 1));
        let e = st.stats.last_error.unwrap();
        assert!(e.contains("no response"), "{e}");
        drop(l);
    }

    #[test]
    fn an_absent_receiver_costs_one_failure_per_flush() {
        // Bound then closed: nothing listens on this port.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let latest: Latest = Arc::new(Mutex::new(snapshot(1, 1.0)));
        let mut st = state(&format!("http://127.0.0.1:{port}/w"), latest);
        st.enqueue_latest();
        let t = Instant::now();
        st.flush(
            Instant::now() + Duration::from_secs(10),
            Duration::from_secs(5),
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!((st.stats.failed, st.queue.len()), (1, 1));
    }
}
