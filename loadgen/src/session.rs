//! One client session as a state machine over bytes and instants, with no
//! socket: the upgrade, `hello` and `welcome`, the messages in flight, and the
//! attribution of every `ack`, `token`, `done` and `error` to the message that
//! caused it, turned into `connect`, `rtt`, `ttft`, `itl` and `reply` samples,
//! errors by code and goodput. The I/O shell feeds it what it reads and writes
//! what it returns.

use std::time::{Duration, Instant};

use thiserror::Error;
use wire::ws::{Event, Limits, Receiver, Role};

use crate::handshake::{self, HandshakeError};
use crate::metrics::{ErrorKind, Figure, Mark, Recorder};
use crate::protocol::{self, ServerFrame, Text};
use crate::slo::{meets_all, MessageFigures, Slo};
use crate::target::Target;

/// Frame and message size limits for what the server sends.
pub const LIMITS: Limits = Limits {
    max_frame: 16 << 20,
    max_message: 16 << 20,
};

/// What every session of a run shares.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Whether messages are settled by `done` (true) or by `ack`.
    pub replies: bool,
    /// A `busy` message is sent once more after its `retry_after_ms`.
    pub resend_busy: bool,
    /// Objectives defining goodput.
    pub slos: Vec<Slo>,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Upgrade request sent, awaiting 101.
    Upgrading,
    /// `hello` sent, awaiting `welcome`.
    Greeting,
    /// Ready for messages.
    Open,
    /// Closed by either side.
    Closed,
}

/// Why a session ended early.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The upgrade failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The server broke RFC 6455.
    #[error("the server broke RFC 6455: {0}")]
    Protocol(#[from] wire::ws::ProtocolError),
    /// `wss://`: the TLS handshake or a record failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl SessionError {
    /// The error kind to count.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SessionError::Handshake(HandshakeError::Status { status: 503, .. }) => {
                ErrorKind::Rejected
            }
            SessionError::Handshake(_) | SessionError::Tls(_) => ErrorKind::Handshake,
            SessionError::Protocol(_) => ErrorKind::Protocol,
        }
    }
}

/// What a call to [`Session::on_bytes`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// `welcome` arrived: the session is open.
    pub opened: bool,
    /// Messages settled (done, acked when replies are not awaited, or failed).
    pub settled: u32,
    /// The server closed the session.
    pub closed: bool,
}

#[derive(Debug)]
struct InFlight {
    n: u64,
    origin: Instant,
    mark: Mark,
    rtt: Option<u64>,
    ttft: Option<u64>,
    last_token: Option<Instant>,
    tokens: u32,
    itl_sum: u64,
    /// Which of the plan's texts it carries (for a resend).
    text: u32,
    /// Refused `busy`: when to send it again.
    resend_at: Option<Instant>,
    /// It was sent again after a `busy`.
    resent: bool,
}

fn micros(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}

/// One session's protocol state.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    key: Option<Box<str>>,
    connect_started: Instant,
    connect_mark: Mark,
    next_id: u64,
    inflight: Vec<InFlight>,
    rx: Receiver,
    pending: Vec<u8>,
    sent_close: bool,
    /// `lc_session=...` from the first upgrade: a reconnect sends it back.
    cookie: Option<Box<str>>,
    /// The next `welcome` ends a reconnect, not the session's first connect.
    reconnecting: bool,
}

impl Session {
    /// A session whose TCP connect started at `now`, in the stage `mark`
    /// names (or during warm-up).
    pub fn new(now: Instant, mark: Mark) -> Session {
        Session {
            phase: Phase::Upgrading,
            key: None,
            connect_started: now,
            connect_mark: mark,
            next_id: 1,
            inflight: Vec::new(),
            rx: Receiver::default(),
            pending: Vec::new(),
            sent_close: false,
            cookie: None,
            reconnecting: false,
        }
    }

    /// Starts over on a new connection whose TCP connect starts at `now`
    /// (a page reload, or back from offline): the upgrade carries the
    /// session cookie, so the server resumes the session. Message ids go on
    /// from where they were: they are unique within the session.
    pub fn reconnect(&mut self, now: Instant) {
        self.phase = Phase::Upgrading;
        self.key = None;
        self.connect_started = now;
        self.rx = Receiver::default();
        self.pending.clear();
        self.sent_close = false;
        self.reconnecting = true;
    }

    /// Whether the server set a session cookie to resume with.
    pub fn has_cookie(&self) -> bool {
        self.cookie.is_some()
    }

    /// Where the session is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the connect is measured, and in which stage.
    pub fn connect_mark(&self) -> Mark {
        self.connect_mark
    }

    /// Messages sent and not yet settled.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The upgrade request to send first.
    pub fn upgrade_request(&mut self, target: &Target, rng: &mut fastrand::Rng) -> Vec<u8> {
        let key = handshake::new_key(rng);
        let req = handshake::request(target, &key, self.cookie.as_deref());
        self.key = Some(key.into_boxed_str());
        req
    }

    /// A session whose transport is already in place (the long-polling
    /// fallback: no upgrade), waiting for its `welcome`; its connect started
    /// at `now`.
    pub fn greeting(now: Instant, mark: Mark) -> Session {
        let mut s = Session::new(now, mark);
        s.phase = Phase::Greeting;
        s
    }

    /// Sends message `text`, due at `origin` (open model) or sent now (closed
    /// model); its frame is appended to `out`. `index` names the text among
    /// the plan's (a resend after `busy` sends it again). Returns its id
    /// number.
    #[allow(clippy::too_many_arguments)]
    pub fn send_message(
        &mut self,
        origin: Instant,
        mark: Mark,
        index: u32,
        text: &Text,
        mask: [u8; 4],
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        rec: &mut Recorder,
    ) -> u64 {
        let n = self.track_message(origin, mark, index, rec);
        protocol::encode_message(out, scratch, n, text, mask);
        n
    }

    /// Counts a message as sent, due at `origin`, and awaits its answers;
    /// the caller sends it (as `m<N>`, N returned) on its transport.
    pub fn track_message(
        &mut self,
        origin: Instant,
        mark: Mark,
        index: u32,
        rec: &mut Recorder,
    ) -> u64 {
        let n = self.next_id;
        self.next_id += 1;
        rec.count(mark, |c| c.sent += 1);
        self.inflight.push(InFlight {
            n,
            origin,
            mark,
            rtt: None,
            ttft: None,
            last_token: None,
            tokens: 0,
            itl_sum: 0,
            text: index,
            resend_at: None,
            resent: false,
        });
        n
    }

    /// Sends again, with the same ids, the `busy` messages whose
    /// `retry_after_ms` has passed by `now`; `texts` are the plan's. Returns
    /// how many went out.
    pub fn resend_due(
        &mut self,
        now: Instant,
        texts: &[Text],
        mask: [u8; 4],
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        rec: &mut Recorder,
    ) -> u32 {
        let due = self.take_resends(now, rec);
        let mut sent = 0;
        for (n, index) in due {
            if let Some(text) = texts.get(index as usize) {
                protocol::encode_message(out, scratch, n, text, mask);
                sent += 1;
            }
        }
        sent
    }

    /// The `busy` messages whose `retry_after_ms` has passed by `now`, as
    /// (id number, text index), counted as resent; the caller sends them
    /// again on its transport.
    pub fn take_resends(&mut self, now: Instant, rec: &mut Recorder) -> Vec<(u64, u32)> {
        if self.phase != Phase::Open {
            return Vec::new();
        }
        let mut due = Vec::new();
        for m in &mut self.inflight {
            match m.resend_at {
                Some(at) if at <= now => {
                    m.resend_at = None;
                    m.resent = true;
                    rec.count(m.mark, |c| c.resent += 1);
                    due.push((m.n, m.text));
                }
                _ => {}
            }
        }
        due
    }

    /// Applies one server message that arrived as JSON at `now` without
    /// WebSocket framing (a long-poll `recv` answer carries several).
    pub fn on_server_json(
        &mut self,
        json: &mut [u8],
        now: Instant,
        cfg: &SessionConfig,
        rec: &mut Recorder,
    ) -> Progress {
        let mut progress = Progress::default();
        match protocol::parse_server(json) {
            Ok(frame) => on_frame(
                frame,
                now,
                cfg,
                rec,
                &mut progress,
                &mut self.phase,
                self.connect_started,
                self.connect_mark,
                &mut self.reconnecting,
                &mut self.inflight,
            ),
            Err(_) => rec.error(ErrorKind::Protocol),
        }
        progress
    }

    /// Feeds bytes read from the socket at `now`. Frames to send back (the
    /// `hello`, pongs, a close echo) are appended to `out`.
    pub fn on_bytes(
        &mut self,
        data: &mut [u8],
        now: Instant,
        cfg: &SessionConfig,
        rec: &mut Recorder,
        mask: [u8; 4],
        out: &mut Vec<u8>,
    ) -> Result<Progress, SessionError> {
        let mut progress = Progress::default();
        if self.phase == Phase::Closed {
            return Ok(progress);
        }
        if self.phase == Phase::Upgrading {
            self.pending.extend_from_slice(data);
            let key = self.key.as_deref().unwrap_or_default();
            match handshake::parse_response(&self.pending, key)? {
                None => return Ok(progress),
                Some(accepted) => {
                    self.pending.drain(..accepted.head_len);
                    if let Some(c) = accepted.session_cookie {
                        self.cookie = Some(c.into_boxed_str());
                    }
                    self.key = None;
                    self.phase = Phase::Greeting;
                    protocol::encode_hello(out, mask);
                }
            }
            let mut rest = std::mem::take(&mut self.pending);
            let r = self.feed(&mut rest, now, cfg, rec, mask, out, &mut progress);
            return r.map(|_| progress);
        }
        if self.pending.is_empty() {
            self.feed(data, now, cfg, rec, mask, out, &mut progress)?;
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(data);
            self.feed(&mut buf, now, cfg, rec, mask, out, &mut progress)?;
        }
        Ok(progress)
    }

    /// Decodes whole frames from `buf`, keeping an incomplete tail in `pending`.
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        buf: &mut [u8],
        now: Instant,
        cfg: &SessionConfig,
        rec: &mut Recorder,
        mask: [u8; 4],
        out: &mut Vec<u8>,
        progress: &mut Progress,
    ) -> Result<(), SessionError> {
        let Session {
            phase,
            connect_started,
            connect_mark,
            inflight,
            rx,
            sent_close,
            reconnecting,
            ..
        } = self;
        let used = rx.feed(buf, Role::Client, &LIMITS, |event| match event {
            Event::Text(payload) => match protocol::parse_server(payload) {
                Ok(frame) => on_frame(
                    frame,
                    now,
                    cfg,
                    rec,
                    progress,
                    phase,
                    *connect_started,
                    *connect_mark,
                    reconnecting,
                    inflight,
                ),
                Err(_) => rec.error(ErrorKind::Protocol),
            },
            Event::Binary(_) | Event::Pong(_) => {}
            Event::Ping(p) => protocol::encode_pong(out, p, mask),
            Event::Close(_) => {
                progress.closed = true;
                if !*sent_close {
                    *sent_close = true;
                    protocol::encode_goodbye(out, mask);
                }
            }
        })?;
        if progress.closed {
            self.phase = Phase::Closed;
        } else if used < buf.len() {
            self.pending = buf[used..].to_vec();
        }
        Ok(())
    }

    /// Settles every message older than `timeout` as a `timeout` error.
    pub fn expire(&mut self, now: Instant, timeout: Duration, rec: &mut Recorder) -> u32 {
        let before = self.inflight.len();
        self.inflight.retain(|m| {
            let late = now.saturating_duration_since(m.origin) > timeout;
            if late {
                rec.error_at(m.mark, ErrorKind::Timeout);
            }
            !late
        });
        (before - self.inflight.len()) as u32
    }

    /// Settles every message in flight with `kind` (the connection is gone).
    pub fn fail_all(&mut self, kind: ErrorKind, rec: &mut Recorder) -> u32 {
        let n = self.inflight.len() as u32;
        for m in self.inflight.drain(..) {
            rec.error_at(m.mark, kind);
        }
        self.phase = Phase::Closed;
        n
    }

    /// Starts a normal closure: the close frame goes to `out`. Frames already
    /// on their way are still read until the server's close arrives.
    pub fn close(&mut self, mask: [u8; 4], out: &mut Vec<u8>) {
        if !self.sent_close {
            self.sent_close = true;
            protocol::encode_goodbye(out, mask);
        }
    }
}

/// Time per output token after the first, from the reply time and the
/// first token's; `None` below two tokens.
fn tpot_of(m: &InFlight, reply_us: u64) -> Option<u64> {
    let ttft = m.ttft?;
    (m.tokens >= 2).then(|| reply_us.saturating_sub(ttft) / u64::from(m.tokens - 1))
}

/// Settles one message: good if it met every SLO, otherwise counted as `error`.
fn settle(
    m: &InFlight,
    error: Option<ErrorKind>,
    reply_us: Option<u64>,
    cfg: &SessionConfig,
    rec: &mut Recorder,
) {
    if !m.mark.counted() {
        return;
    }
    match error {
        Some(kind) => rec.error_at(m.mark, kind),
        None => {
            let figs = MessageFigures {
                rtt: m.rtt,
                ttft: m.ttft,
                itl_mean: (m.tokens >= 2).then(|| m.itl_sum / u64::from(m.tokens - 1)),
                reply: reply_us,
                tpot: reply_us.and_then(|r| tpot_of(m, r)),
            };
            if meets_all(&cfg.slos, &figs) {
                rec.count(m.mark, |c| c.good += 1);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn on_frame(
    frame: ServerFrame,
    now: Instant,
    cfg: &SessionConfig,
    rec: &mut Recorder,
    progress: &mut Progress,
    phase: &mut Phase,
    connect_started: Instant,
    connect_mark: Mark,
    reconnecting: &mut bool,
    inflight: &mut Vec<InFlight>,
) {
    let find = |inflight: &Vec<InFlight>, id: Option<u64>| {
        id.and_then(|n| inflight.iter().position(|m| m.n == n))
    };
    match frame {
        ServerFrame::Welcome { resumed } => {
            if *phase == Phase::Greeting && std::mem::take(reconnecting) {
                // Back on a new socket: counted as a reconnect, and whether
                // the server took the session up again.
                *phase = Phase::Open;
                progress.opened = true;
                rec.count(connect_mark, |c| {
                    c.reconnects += 1;
                    c.resumed += u64::from(resumed);
                });
            } else if *phase == Phase::Greeting {
                *phase = Phase::Open;
                progress.opened = true;
                if connect_mark.counted() {
                    rec.record(connect_mark, Figure::Connect, micros(connect_started, now));
                    rec.count(connect_mark, |c| c.sessions_opened += 1);
                } else {
                    rec.counters().warmup_sessions_opened += 1;
                }
            }
        }
        ServerFrame::Ack(id) => match find(inflight, id) {
            Some(i) if inflight[i].rtt.is_none() => {
                let m = &mut inflight[i];
                let rtt = micros(m.origin, now);
                m.rtt = Some(rtt);
                rec.record(m.mark, Figure::Rtt, rtt);
                let resent = m.resent;
                rec.count(m.mark, |c| {
                    c.acked += 1;
                    if resent {
                        c.resent_acked += 1;
                    }
                });
                if !cfg.replies {
                    let m = inflight.swap_remove(i);
                    settle(&m, None, None, cfg, rec);
                    progress.settled += 1;
                }
            }
            _ => rec.counters().late += 1,
        },
        ServerFrame::Token(id) => match find(inflight, id) {
            Some(i) => {
                let m = &mut inflight[i];
                match m.last_token {
                    None => {
                        let ttft = micros(m.origin, now);
                        m.ttft = Some(ttft);
                        rec.record(m.mark, Figure::Ttft, ttft);
                    }
                    Some(prev) => {
                        let gap = micros(prev, now);
                        m.itl_sum += gap;
                        rec.record(m.mark, Figure::Itl, gap);
                    }
                }
                m.tokens += 1;
                m.last_token = Some(now);
            }
            None => rec.counters().late += 1,
        },
        ServerFrame::Done(id) => match find(inflight, id) {
            Some(i) => {
                let m = inflight.swap_remove(i);
                let reply = micros(m.origin, now);
                rec.record(m.mark, Figure::Reply, reply);
                if let Some(tpot) = tpot_of(&m, reply) {
                    rec.record(m.mark, Figure::Tpot, tpot);
                }
                let tokens = u64::from(m.tokens);
                rec.count(m.mark, |c| {
                    c.replied += 1;
                    c.output_tokens += tokens;
                });
                settle(&m, None, Some(reply), cfg, rec);
                progress.settled += 1;
            }
            None => rec.counters().late += 1,
        },
        ServerFrame::Error {
            code,
            id,
            retry_after_ms,
        } => {
            let kind = ErrorKind::from_server_code(&code);
            match find(inflight, id) {
                // Refused once: counted as busy, sent again when asked.
                Some(i)
                    if kind == ErrorKind::Busy
                        && cfg.resend_busy
                        && !inflight[i].resent
                        && inflight[i].resend_at.is_none() =>
                {
                    let m = &mut inflight[i];
                    let wait = Duration::from_millis(retry_after_ms.unwrap_or(0));
                    m.resend_at = Some(now + wait);
                    rec.error_at(m.mark, kind);
                }
                // A resend refused again: settled, its busy already counted.
                Some(i) if kind == ErrorKind::Busy && inflight[i].resent => {
                    inflight.swap_remove(i);
                    progress.settled += 1;
                }
                Some(i) => {
                    let m = inflight.swap_remove(i);
                    settle(&m, Some(kind), None, cfg, rec);
                    progress.settled += 1;
                }
                // An error about no message of ours (or after it settled) still counts.
                None => rec.error(kind),
            }
        }
        ServerFrame::Other => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::ws::frame::encode_frame;
    use wire::ws::OpCode;

    const MASK: [u8; 4] = [1, 2, 3, 4];

    fn server_frame(json: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, json.as_bytes(), None);
        out
    }

    struct Rig {
        s: Session,
        cfg: SessionConfig,
        rec: Recorder,
        t0: Instant,
        out: Vec<u8>,
        scratch: Vec<u8>,
    }

    impl Rig {
        fn new(replies: bool, slos: &[&str]) -> Rig {
            let t0 = Instant::now();
            let mut s = Session::new(t0, Mark::Stage(0));
            let target = Target::parse("ws://127.0.0.1:1/ws").unwrap();
            let req = s.upgrade_request(&target, &mut fastrand::Rng::with_seed(5));
            let req = String::from_utf8(req).unwrap();
            let key = req
                .split("Sec-WebSocket-Key: ")
                .nth(1)
                .unwrap()
                .split("\r\n")
                .next()
                .unwrap()
                .to_string();
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut rig = Rig {
                s,
                cfg: SessionConfig {
                    replies,
                    resend_busy: false,
                    slos: slos.iter().map(|s| s.parse().unwrap()).collect(),
                },
                rec: Recorder::default(),
                t0,
                out: Vec::new(),
                scratch: Vec::new(),
            };
            let head = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
            // The head arrives in two pieces, the second carrying the welcome too.
            let mut bytes = head.into_bytes();
            bytes.extend(server_frame(
                r#"{"type":"welcome","conversation":"c","resumed":false,"history":[],"config":{}}"#,
            ));
            let p = rig.feed_at(&bytes[..10], 0);
            assert_eq!(p, Progress::default());
            assert_eq!(rig.s.phase(), Phase::Upgrading);
            let p = rig.feed_at(&bytes[10..], 3);
            assert!(p.opened);
            assert_eq!(rig.s.phase(), Phase::Open);
            assert!(!rig.out.is_empty(), "hello was queued");
            rig
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn feed_at(&mut self, bytes: &[u8], ms: u64) -> Progress {
            let now = self.at(ms);
            let mut b = bytes.to_vec();
            self.s
                .on_bytes(&mut b, now, &self.cfg, &mut self.rec, MASK, &mut self.out)
                .unwrap()
        }

        fn send_at(&mut self, ms: u64) -> u64 {
            let origin = self.at(ms);
            self.s.send_message(
                origin,
                Mark::Stage(0),
                0,
                &Text::new("hi"),
                MASK,
                &mut self.out,
                &mut self.scratch,
                &mut self.rec,
            )
        }
    }

    #[test]
    fn connect_counts_to_welcome() {
        let rig = Rig::new(true, &[]);
        let c = rig.rec.peek().figure(Figure::Connect);
        assert_eq!(c.len(), 1);
        assert!(c.equivalent(c.max(), 3000), "{}", c.max());
        assert_eq!(rig.rec.peek().counters.sessions_opened, 1);
    }

    #[test]
    fn attributes_interleaved_replies_to_their_messages() {
        let mut r = Rig::new(true, &["ttft:100ms"]);
        let a = r.send_at(10);
        let b = r.send_at(20);
        assert_eq!((a, b), (1, 2));
        r.feed_at(&server_frame(r#"{"type":"ack","id":"m2","seq":2}"#), 21);
        r.feed_at(&server_frame(r#"{"type":"ack","id":"m1","seq":1}"#), 25);
        r.feed_at(
            &server_frame(r#"{"type":"token","reply":"r2","in_reply_to":"m2","text":"a"}"#),
            70,
        );
        r.feed_at(
            &server_frame(r#"{"type":"token","reply":"r1","in_reply_to":"m1","text":"a"}"#),
            210,
        );
        r.feed_at(
            &server_frame(r#"{"type":"token","reply":"r2","in_reply_to":"m2","text":"b"}"#),
            90,
        );
        let p = r.feed_at(
            &server_frame(r#"{"type":"done","reply":"r2","in_reply_to":"m2","seq":3}"#),
            100,
        );
        assert_eq!(p.settled, 1);
        let p = r.feed_at(
            &server_frame(r#"{"type":"done","reply":"r1","in_reply_to":"m1","seq":4}"#),
            300,
        );
        assert_eq!(p.settled, 1);
        let i = r.rec.take();
        let eq = |f: Figure, got: u64, want: u64| {
            assert!(i.figure(f).equivalent(got, want), "{f:?}: {got} vs {want}")
        };
        let rtt = i.figure(Figure::Rtt);
        assert_eq!(rtt.len(), 2);
        eq(Figure::Rtt, rtt.min(), 1000);
        eq(Figure::Rtt, rtt.max(), 15_000);
        eq(Figure::Ttft, i.figure(Figure::Ttft).min(), 50_000); // m2: due 20, first token 70
        eq(Figure::Ttft, i.figure(Figure::Ttft).max(), 200_000); // m1: due 10, first token 210
        assert_eq!(i.figure(Figure::Itl).len(), 1);
        eq(Figure::Itl, i.figure(Figure::Itl).max(), 20_000);
        assert_eq!(i.figure(Figure::Reply).len(), 2);
        assert_eq!(
            (i.counters.sent, i.counters.acked, i.counters.replied),
            (2, 2, 2)
        );
        assert_eq!(i.counters.good, 1, "m1's first token came after 200ms");
        assert_eq!(r.s.in_flight(), 0);
    }

    #[test]
    fn ack_settles_when_no_reply_is_awaited() {
        let mut r = Rig::new(false, &["rtt:5ms"]);
        r.send_at(0);
        r.send_at(0);
        assert_eq!(
            r.feed_at(&server_frame(r#"{"type":"ack","id":"m1","seq":1}"#), 4)
                .settled,
            1
        );
        assert_eq!(
            r.feed_at(&server_frame(r#"{"type":"ack","id":"m2","seq":2}"#), 9)
                .settled,
            1
        );
        r.feed_at(&server_frame(r#"{"type":"ack","id":"m2","seq":2}"#), 10);
        let c = &r.rec.peek().counters;
        assert_eq!(
            (c.acked, c.good, c.late),
            (2, 1, 1),
            "a repeated ack is late, not a second sample"
        );
    }

    #[test]
    fn a_busy_message_is_resent_after_its_retry_after() {
        let mut r = Rig::new(false, &[]);
        r.cfg.resend_busy = true;
        r.send_at(0);
        r.send_at(0);
        let busy = |id: &str| {
            server_frame(&format!(
                r#"{{"type":"error","code":"busy","message":"full","id":"{id}","retry_after_ms":300}}"#
            ))
        };
        let p = r.feed_at(&busy("m1"), 10);
        assert_eq!(p.settled, 0, "kept for its resend");
        let texts = [Text::new("hi")];
        let resend = |r: &mut Rig, ms: u64| {
            r.out.clear();
            let now = r.at(ms);
            r.s.resend_due(now, &texts, MASK, &mut r.out, &mut r.scratch, &mut r.rec)
        };
        assert_eq!(resend(&mut r, 200), 0, "not before its time");
        assert_eq!(resend(&mut r, 310), 1);
        assert!(!r.out.is_empty(), "the frame went out");
        assert_eq!(resend(&mut r, 400), 0, "once only");
        // Acked the second time; figures from when it was first due.
        r.feed_at(&server_frame(r#"{"type":"ack","id":"m1","seq":1}"#), 320);
        // m2: refused, resent, refused again: settled, busy counted once.
        r.feed_at(&busy("m2"), 330);
        assert_eq!(resend(&mut r, 700), 1);
        assert_eq!(r.feed_at(&busy("m2"), 710).settled, 1);
        let i = r.rec.peek();
        let c = &i.counters;
        assert_eq!((c.resent, c.resent_acked, c.acked), (2, 1, 1));
        assert_eq!(c.error(ErrorKind::Busy), 2);
        let rtt = i.figure(Figure::Rtt).max();
        assert!((319_000..=321_000).contains(&rtt), "{rtt}");
        assert_eq!(r.s.in_flight(), 0);
    }

    #[test]
    fn busy_and_errors_are_counted_by_code() {
        let mut r = Rig::new(true, &[]);
        r.send_at(0);
        r.send_at(0);
        r.send_at(0);
        r.feed_at(
            &server_frame(
                r#"{"type":"error","code":"busy","message":"full","id":"m1","retry_after_ms":100}"#,
            ),
            1,
        );
        r.feed_at(&server_frame(r#"{"type":"ack","id":"m2","seq":1}"#), 1);
        r.feed_at(
            &server_frame(
                r#"{"type":"error","code":"unavailable","message":"pool down","id":"m2"}"#,
            ),
            2,
        );
        r.feed_at(
            &server_frame(r#"{"type":"error","code":"bad_request","message":"?"}"#),
            2,
        );
        r.feed_at(b"\x81\x03abc", 2);
        assert_eq!(r.s.in_flight(), 1);
        assert_eq!(
            r.s.expire(r.at(20_000), Duration::from_secs(10), &mut r.rec),
            1
        );
        let c = &r.rec.peek().counters;
        assert_eq!(c.error(ErrorKind::Busy), 1);
        assert_eq!(c.error(ErrorKind::Unavailable), 1);
        assert_eq!(c.error(ErrorKind::BadRequest), 1);
        assert_eq!(c.error(ErrorKind::Protocol), 1, "a frame that is not JSON");
        assert_eq!(c.error(ErrorKind::Timeout), 1);
        assert_eq!(c.errors_total(), 4);
        assert_eq!(c.good, 0);
    }

    #[test]
    fn frames_split_anywhere_are_reassembled_and_pings_answered() {
        let mut r = Rig::new(false, &[]);
        r.send_at(0);
        r.out.clear();
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, OpCode::Ping, b"p", None);
        bytes.extend(server_frame(r#"{"type":"ack","id":"m1","seq":1}"#));
        for (k, chunk) in bytes.chunks(3).enumerate() {
            r.feed_at(chunk, 5 + k as u64);
        }
        assert_eq!(r.rec.peek().counters.acked, 1);
        assert!(!r.out.is_empty(), "pong queued");
    }

    #[test]
    fn warm_up_messages_are_not_counted_and_closing_fails_the_rest() {
        let mut r = Rig::new(false, &[]);
        let origin = r.at(0);
        r.s.send_message(
            origin,
            Mark::Warmup,
            0,
            &Text::new("x"),
            MASK,
            &mut r.out,
            &mut r.scratch,
            &mut r.rec,
        );
        r.send_at(1);
        r.feed_at(&server_frame(r#"{"type":"ack","id":"m1","seq":1}"#), 2);
        assert_eq!(r.rec.peek().figure(Figure::Rtt).len(), 0);
        let mut close = Vec::new();
        wire::ws::frame::encode_close(&mut close, 1001, "bye", None);
        let p = r.feed_at(&close, 3);
        assert!(p.closed);
        assert_eq!(r.s.phase(), Phase::Closed);
        assert_eq!(r.s.fail_all(ErrorKind::Closed, &mut r.rec), 1);
        let c = &r.rec.peek().counters;
        assert_eq!((c.sent, c.acked, c.error(ErrorKind::Closed)), (1, 0, 1));
    }

    #[test]
    fn a_message_counts_in_the_stage_it_was_sent_in() {
        let mut r = Rig::new(true, &[]);
        let origin = r.at(0);
        r.s.send_message(
            origin,
            Mark::Stage(1),
            0,
            &Text::new("x"),
            MASK,
            &mut r.out,
            &mut r.scratch,
            &mut r.rec,
        );
        r.feed_at(&server_frame(r#"{"type":"ack","id":"m1","seq":1}"#), 5);
        for (frame, ms) in [
            (
                r#"{"type":"token","reply":"r1","in_reply_to":"m1","text":"a"}"#,
                50,
            ),
            (
                r#"{"type":"token","reply":"r1","in_reply_to":"m1","text":"b"}"#,
                70,
            ),
            (
                r#"{"type":"done","reply":"r1","in_reply_to":"m1","seq":2}"#,
                90,
            ),
        ] {
            r.feed_at(&server_frame(frame), ms);
        }
        let stages = r.rec.take_stages();
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[1].counters.sent, 1);
        assert_eq!(stages[1].counters.replied, 1);
        assert_eq!(stages[1].counters.output_tokens, 2);
        assert_eq!(stages[1].figure(Figure::Rtt).len(), 1);
        let tpot = stages[1].figure(Figure::Tpot);
        assert_eq!(tpot.len(), 1);
        assert!(
            tpot.equivalent(tpot.max(), 40_000),
            "(90 - 50) ms over one token after the first: {}",
            tpot.max()
        );
        assert_eq!(
            stages[0].counters.sent, 0,
            "the session's connect is stage 0's, the message is not"
        );
        assert_eq!(stages[0].counters.sessions_opened, 1);
    }

    #[test]
    fn a_session_without_websocket_framing_measures_the_same() {
        // As the long-polling transport drives it: JSON in, ids out.
        let t0 = Instant::now();
        let mut rec = Recorder::default();
        let cfg = SessionConfig {
            replies: true,
            resend_busy: true,
            slos: vec![],
        };
        let mut s = Session::greeting(t0, Mark::Stage(0));
        let ms = |n| t0 + Duration::from_millis(n);
        let mut json = |text: &str, at| {
            s.on_server_json(&mut text.as_bytes().to_vec(), ms(at), &cfg, &mut rec)
        };
        assert!(
            json(
                r#"{"type":"welcome","conversation":"c","resumed":false,"history":[],"config":{}}"#,
                4
            )
            .opened
        );
        let n = s.track_message(ms(10), Mark::Stage(0), 0, &mut rec);
        assert_eq!(n, 1);
        let mut json = |text: &str, at| {
            s.on_server_json(&mut text.as_bytes().to_vec(), ms(at), &cfg, &mut rec)
        };
        json(
            r#"{"type":"error","code":"busy","id":"m1","retry_after_ms":50}"#,
            12,
        );
        assert_eq!(s.take_resends(ms(30), &mut rec), vec![], "not yet");
        assert_eq!(s.take_resends(ms(70), &mut rec), vec![(1, 0)]);
        let mut json = |text: &str, at| {
            s.on_server_json(&mut text.as_bytes().to_vec(), ms(at), &cfg, &mut rec)
        };
        json(r#"{"type":"ack","id":"m1","seq":1}"#, 75);
        json(
            r#"{"type":"token","reply":"r1","in_reply_to":"m1","text":"a"}"#,
            90,
        );
        let p = json(
            r#"{"type":"done","reply":"r1","in_reply_to":"m1","seq":2}"#,
            100,
        );
        assert_eq!(p.settled, 1);
        json("not json", 101);
        let i = rec.take();
        assert!(i
            .figure(Figure::Connect)
            .equivalent(i.figure(Figure::Connect).max(), 4_000));
        assert!(
            i.figure(Figure::Rtt)
                .equivalent(i.figure(Figure::Rtt).max(), 65_000),
            "from its due time"
        );
        let c = &i.counters;
        assert_eq!(
            (c.sent, c.acked, c.replied, c.resent, c.resent_acked),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(
            (c.error(ErrorKind::Busy), c.error(ErrorKind::Protocol)),
            (1, 1)
        );
    }

    #[test]
    fn refused_upgrade_is_an_error_of_its_kind() {
        let mut s = Session::new(Instant::now(), Mark::Stage(0));
        let target = Target::parse("ws://127.0.0.1:1/ws").unwrap();
        s.upgrade_request(&target, &mut fastrand::Rng::with_seed(1));
        let mut b = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\r\n".to_vec();
        let cfg = SessionConfig {
            replies: true,
            resend_busy: false,
            slos: vec![],
        };
        let e = s
            .on_bytes(
                &mut b,
                Instant::now(),
                &cfg,
                &mut Recorder::default(),
                MASK,
                &mut Vec::new(),
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rejected);
    }
}
