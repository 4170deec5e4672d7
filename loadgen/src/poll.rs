//! The long-polling fallback (PROTOCOL.md, Transport) as a sans-IO state
//! machine: one visitor's session over two keep-alive HTTP/1.1 connections,
//! one for `POST /poll/send`, one for `GET /poll/recv`. It owns the session
//! cookie, the recv cursor, which request each connection has outstanding,
//! and what goes out next (the `hello`, then batches of messages); it turns
//! the gateway's answers, read with `inference_client`'s `ResponseDecoder`,
//! into server messages for [`Session::on_server_json`], which attributes
//! every figure exactly as on `/ws`. The I/O shell (`run::poll`) only opens
//! connections, writes the bytes it is given and feeds back what it reads.

use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONTENT_TYPE, COOKIE, HOST, ORIGIN, SET_COOKIE, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use inference_client::http::{request, HttpError, Part, ResponseDecoder, ResponseHead};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::handshake;
use crate::metrics::{ErrorKind, Mark, Recorder};
use crate::protocol::{self, ServerFrame, Text};
use crate::session::{Phase, Progress, Session, SessionConfig};
use crate::target::{Scheme, Target};

/// Connections one long-polling session holds: one for sends, one for the
/// held recv (the open-files budget is per connection).
pub const CONNECTIONS_PER_SESSION: u64 = 2;

/// Largest answer body read; a welcome with its history is well under it.
pub const MAX_BODY: usize = 16 << 20;

/// One of a session's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `POST /poll/send`: the `hello`, then the messages.
    Send,
    /// `GET /poll/recv`: always one outstanding once the cookie is known.
    Recv,
}

impl Channel {
    /// Both, in index order.
    pub const BOTH: [Channel; 2] = [Channel::Send, Channel::Recv];

    /// 0 for send, 1 for recv.
    pub fn index(self) -> usize {
        match self {
            Channel::Send => 0,
            Channel::Recv => 1,
        }
    }
}

impl std::fmt::Display for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Channel::Send => "POST /poll/send",
            Channel::Recv => "GET /poll/recv",
        })
    }
}

/// A URL the long-polling transport cannot use.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// The host, port or query cannot go into a request.
    #[error("'{url}' cannot make a long-polling request: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// What `http` said.
        reason: String,
    },
}

/// The gateway target of a long-polling run. `ws://HOST:PORT/ws?site=ID`
/// (the same URL as a WebSocket run, so switching is one flag) and
/// `http://HOST:PORT/?site=ID` both name the gateway: an `http` target is
/// returned with the gateway's scheme, so it is not taken for direct mode.
pub fn gateway_target(mut target: Target) -> Result<Target, UrlError> {
    match target.scheme {
        Scheme::Ws | Scheme::Wss => {}
        Scheme::Http => target.scheme = Scheme::Ws,
        // Over TLS: the gateway's scheme too, so it is not taken for direct mode.
        Scheme::Https => target.scheme = Scheme::Wss,
    }
    Endpoints::new(&target)?;
    Ok(target)
}

/// What every request of a run carries: the two paths and the headers that
/// do not change. The URL's last path segment is replaced, so `/ws` and `/`
/// both mean the gateway's root and `/chat/ws` a gateway under `/chat/`;
/// the query (`site=ID`) is kept.
#[derive(Debug, Clone)]
pub struct Endpoints {
    host: HeaderValue,
    origin: HeaderValue,
    agent: HeaderValue,
    send: Uri,
    /// The recv path and query up to the cursor's value.
    recv_prefix: String,
}

impl Endpoints {
    /// The endpoints of `target` (a `ws://` or `http://` gateway URL).
    pub fn new(target: &Target) -> Result<Endpoints, UrlError> {
        let bad = |reason: String| UrlError::Request {
            url: format!("{}{}", target.host_header(), target.path),
            reason,
        };
        let (path, query) = match target.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target.path.as_str(), None),
        };
        let dir = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "/",
        };
        let send = match query {
            Some(q) => format!("{dir}poll/send?{q}"),
            None => format!("{dir}poll/send"),
        };
        let recv_prefix = match query {
            Some(q) => format!("{dir}poll/recv?{q}&cursor="),
            None => format!("{dir}poll/recv?cursor="),
        };
        let header = |v: String| HeaderValue::try_from(v).map_err(|e| bad(e.to_string()));
        let ep = Endpoints {
            host: header(target.host_header())?,
            origin: header(target.origin())?,
            agent: header(format!("loadgen/{}", env!("CARGO_PKG_VERSION")))?,
            send: Uri::try_from(send).map_err(|e| bad(e.to_string()))?,
            recv_prefix,
        };
        ep.recv_uri(0).map_err(|e| bad(e.to_string()))?;
        Ok(ep)
    }

    /// `POST` here: path and query.
    pub fn send_path(&self) -> &str {
        self.send.path_and_query().map_or("/", |p| p.as_str())
    }

    fn recv_uri(&self, cursor: u64) -> Result<Uri, http::uri::InvalidUri> {
        Uri::try_from(format!("{}{cursor}", self.recv_prefix))
    }
}

/// Why a session over long polling cannot go on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PollError {
    /// The answer is not HTTP/1.1 as `ResponseDecoder` reads it.
    #[error("the answer to {channel} is not valid HTTP: {source}")]
    Http {
        /// Which request.
        channel: Channel,
        /// The decoder's reason.
        source: HttpError,
    },
    /// Refused with an HTTP status (and, for a 4xx, maybe an `error` object).
    #[error("the gateway answered {channel} with HTTP {status}{}{}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default(), retry_after.map(|r| format!(", Retry-After {}s", r.as_secs())).unwrap_or_default())]
    Status {
        /// Which request.
        channel: Channel,
        /// The status code.
        status: u16,
        /// The `code` of the `error` object in the body, if there is one.
        code: Option<String>,
        /// `Retry-After`, if sent.
        retry_after: Option<Duration>,
    },
    /// The answer that started the session set no `lc_session` cookie.
    #[error("the answer to the first POST /poll/send set no lc_session cookie")]
    NoCookie,
    /// A recv answer that is not `{"cursor": N, "messages": [...]}`.
    #[error("a GET /poll/recv answer is not {{\"cursor\": N, \"messages\": [...]}}: {0}")]
    Body(String),
    /// An answer body over [`MAX_BODY`].
    #[error("an answer body is over {MAX_BODY} bytes")]
    TooLarge,
    /// The connection closed before the answer was complete, or twice in a
    /// row before any of it.
    #[error("the connection closed before the answer to {channel} was complete")]
    Closed {
        /// Which request.
        channel: Channel,
    },
    /// Bytes when no request was outstanding, or past the end of an answer.
    #[error("the gateway sent bytes no request asked for on the {channel} connection")]
    Unsolicited {
        /// Which connection.
        channel: Channel,
    },
    /// The request could not be built (a cookie that is no header value).
    #[error("cannot build a long-polling request: {0}")]
    Request(String),
    /// `https://`: the TLS handshake or a record failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl PollError {
    /// The error kind to count, as the WebSocket path counts its own: a 503
    /// is the server being full, a refusal with an `error` object is that
    /// error, other statuses are a failed handshake.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PollError::Status { status: 503, .. } => ErrorKind::Rejected,
            PollError::Status {
                code: Some(code), ..
            } => ErrorKind::from_server_code(code),
            PollError::Status { .. }
            | PollError::NoCookie
            | PollError::Request(_)
            | PollError::Tls(_) => ErrorKind::Handshake,
            PollError::Http { .. }
            | PollError::Body(_)
            | PollError::TooLarge
            | PollError::Unsolicited { .. } => ErrorKind::Protocol,
            PollError::Closed { .. } => ErrorKind::Closed,
        }
    }
}

/// What feeding one connection's bytes (or its end) changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// What the server messages did (welcome, messages settled).
    pub progress: Progress,
    /// The answer is complete: the connection may carry the next request.
    pub answered: bool,
    /// Open a new connection before this channel's next request (the
    /// answer said `Connection: close`, or the connection ended).
    pub reconnect: bool,
    /// The session's cookie arrived: the recv channel may start.
    pub cookie: bool,
}

/// One connection's exchange.
#[derive(Debug, Default)]
enum Exchange {
    /// Nothing outstanding.
    #[default]
    Idle,
    /// A request written, its answer being read.
    Waiting {
        decoder: ResponseDecoder,
        body: Vec<u8>,
        /// Any byte of the answer arrived.
        received: bool,
        /// This is the request's second try.
        retried: bool,
    },
    /// A kept-alive connection turned out closed before any byte of the
    /// answer: the same request goes once more, on a new connection (ids
    /// and cursors make that safe: a repeated id is acked once, an old
    /// cursor replays).
    Again,
}

/// What the send channel's outstanding (or repeated) POST carries.
#[derive(Debug, Default)]
enum Carrying {
    #[default]
    Nothing,
    Hello,
    /// Messages as (id number, text index).
    Messages(Vec<(u64, u32)>),
}

#[derive(Deserialize)]
struct RecvAnswer<'a> {
    cursor: u64,
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

/// What [`PollSession::send_message`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Counted as sent (id `m<N>`), in the next POST.
    Batched(u64),
    /// Due before the `welcome`: it waits for it (its figures include the wait).
    Waiting,
    /// The session is over: counted as sent and `closed`.
    Refused,
}

/// One session over long polling.
#[derive(Debug)]
pub struct PollSession {
    session: Session,
    cookie: Option<HeaderValue>,
    cursor: u64,
    send: Exchange,
    recv: Exchange,
    carrying: Carrying,
    hello_sent: bool,
    /// Counted as sent, not yet in a POST: (id number, text index).
    batch: Vec<(u64, u32)>,
    /// Due before the welcome: (due, mark, text index).
    waiting: Vec<(Instant, Mark, u32)>,
}

fn merge(into: &mut Progress, p: Progress) {
    into.opened |= p.opened;
    into.settled += p.settled;
    into.closed |= p.closed;
}

impl PollSession {
    /// A session whose first send (its connection's TCP connect, then
    /// `POST [hello]`) starts at `now`, in the stage `mark` names: `connect`
    /// counts from here to the `welcome`.
    pub fn new(now: Instant, mark: Mark) -> PollSession {
        PollSession {
            session: Session::greeting(now, mark),
            cookie: None,
            cursor: 0,
            send: Exchange::Idle,
            recv: Exchange::Idle,
            carrying: Carrying::Nothing,
            hello_sent: false,
            batch: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// Greeting until the `welcome`, then open, closed once failed.
    pub fn phase(&self) -> Phase {
        self.session.phase()
    }

    /// Whether the connect is measured, and in which stage.
    pub fn connect_mark(&self) -> Mark {
        self.session.connect_mark()
    }

    /// Messages not settled yet, those waiting for the welcome included.
    pub fn in_flight(&self) -> usize {
        self.session.in_flight() + self.waiting.len()
    }

    /// The cursor the next recv sends.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether the session cookie is known.
    pub fn has_cookie(&self) -> bool {
        self.cookie.is_some()
    }

    fn exchange(&mut self, ch: Channel) -> &mut Exchange {
        match ch {
            Channel::Send => &mut self.send,
            Channel::Recv => &mut self.recv,
        }
    }

    /// Whether `ch` has a request whose answer is awaited.
    pub fn outstanding(&self, ch: Channel) -> bool {
        let ex = match ch {
            Channel::Send => &self.send,
            Channel::Recv => &self.recv,
        };
        matches!(ex, Exchange::Waiting { .. })
    }

    /// Sends message `index` of the plan's texts, due at `origin` (open
    /// model) or now (closed model), with the next POST; before the
    /// welcome it waits for it.
    pub fn send_message(
        &mut self,
        origin: Instant,
        mark: Mark,
        index: u32,
        rec: &mut Recorder,
    ) -> Queued {
        match self.session.phase() {
            Phase::Open => {
                let n = self.session.track_message(origin, mark, index, rec);
                self.batch.push((n, index));
                Queued::Batched(n)
            }
            Phase::Upgrading | Phase::Greeting => {
                self.waiting.push((origin, mark, index));
                Queued::Waiting
            }
            Phase::Closed => {
                rec.count(mark, |c| c.sent += 1);
                rec.error_at(mark, ErrorKind::Closed);
                Queued::Refused
            }
        }
    }

    /// Puts the `busy` messages whose `retry_after_ms` has passed by `now`
    /// in the next POST (same ids); returns how many.
    pub fn resend_due(&mut self, now: Instant, rec: &mut Recorder) -> usize {
        let due = self.session.take_resends(now, rec);
        let n = due.len();
        self.batch.extend(due);
        n
    }

    /// Settles every message older than `timeout` as a `timeout`.
    pub fn expire(&mut self, now: Instant, timeout: Duration, rec: &mut Recorder) -> u32 {
        self.session.expire(now, timeout, rec)
    }

    /// Ends the session: every message not settled (waiting ones counted as
    /// sent) fails with `kind`. Returns how many.
    pub fn fail(&mut self, kind: ErrorKind, rec: &mut Recorder) -> u32 {
        let waiting = self.waiting.len() as u32;
        for (_, mark, _) in self.waiting.drain(..) {
            rec.count(mark, |c| c.sent += 1);
            rec.error_at(mark, kind);
        }
        self.batch.clear();
        self.carrying = Carrying::Nothing;
        self.send = Exchange::Idle;
        self.recv = Exchange::Idle;
        waiting + self.session.fail_all(kind, rec)
    }

    /// The request `ch` should carry now, appended to `out`; `false` when it
    /// has none (one is outstanding, or nothing is to be sent). `texts` are
    /// the plan's.
    pub fn next_request(
        &mut self,
        ch: Channel,
        ep: &Endpoints,
        texts: &[Text],
        out: &mut Vec<u8>,
    ) -> Result<bool, PollError> {
        if self.session.phase() == Phase::Closed {
            return Ok(false);
        }
        let retried = match self.exchange(ch) {
            Exchange::Waiting { .. } => return Ok(false),
            Exchange::Again => true,
            Exchange::Idle => false,
        };
        let (method, uri, body) = match ch {
            Channel::Send => {
                if !retried {
                    if !self.hello_sent {
                        self.hello_sent = true;
                        self.carrying = Carrying::Hello;
                    } else if self.cookie.is_some() && !self.batch.is_empty() {
                        self.carrying = Carrying::Messages(std::mem::take(&mut self.batch));
                    } else {
                        return Ok(false);
                    }
                }
                (Method::POST, ep.send.clone(), self.post_body(texts))
            }
            Channel::Recv => {
                if !retried && self.cookie.is_none() {
                    return Ok(false);
                }
                let uri = ep
                    .recv_uri(self.cursor)
                    .map_err(|e| PollError::Request(e.to_string()))?;
                (Method::GET, uri, Vec::new())
            }
        };
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, ep.host.clone())
            .header(ORIGIN, ep.origin.clone())
            .header(USER_AGENT, ep.agent.clone());
        if let Some(c) = &self.cookie {
            b = b.header(COOKIE, c.clone());
        }
        if !body.is_empty() {
            b = b.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let req = b
            .body(body)
            .map_err(|e| PollError::Request(e.to_string()))?;
        request::encode(&req, out);
        *self.exchange(ch) = Exchange::Waiting {
            decoder: ResponseDecoder::new(),
            body: Vec::new(),
            received: false,
            retried,
        };
        Ok(true)
    }

    fn post_body(&self, texts: &[Text]) -> Vec<u8> {
        let mut body = Vec::with_capacity(128);
        body.push(b'[');
        match &self.carrying {
            Carrying::Nothing => {}
            Carrying::Hello => body.extend_from_slice(protocol::HELLO_JSON),
            Carrying::Messages(ids) => {
                let mut first = true;
                for &(n, index) in ids {
                    let Some(text) = texts.get(index as usize) else {
                        continue;
                    };
                    if !first {
                        body.push(b',');
                    }
                    first = false;
                    protocol::message_json(&mut body, n, text);
                }
            }
        }
        body.push(b']');
        body
    }

    /// Feeds bytes read on `ch`'s connection at `now`.
    pub fn on_bytes(
        &mut self,
        ch: Channel,
        data: &[u8],
        now: Instant,
        cfg: &SessionConfig,
        rec: &mut Recorder,
    ) -> Result<Step, PollError> {
        if data.is_empty() {
            return Ok(Step::default());
        }
        let Exchange::Waiting {
            decoder,
            body,
            received,
            ..
        } = self.exchange(ch)
        else {
            return Err(PollError::Unsolicited { channel: ch });
        };
        *received = true;
        let mut too_large = false;
        let used = decoder
            .feed(data, |part| {
                if let Part::Data(d) = part {
                    if body.len() + d.len() > MAX_BODY {
                        too_large = true;
                    } else {
                        body.extend_from_slice(d);
                    }
                }
            })
            .map_err(|source| PollError::Http {
                channel: ch,
                source,
            })?;
        if too_large {
            return Err(PollError::TooLarge);
        }
        if !decoder.is_done() {
            return Ok(Step::default());
        }
        if used < data.len() {
            return Err(PollError::Unsolicited { channel: ch });
        }
        self.complete(ch, now, cfg, rec)
    }

    /// `ch`'s connection ended (end of file, or reset) at `now`.
    pub fn on_eof(
        &mut self,
        ch: Channel,
        now: Instant,
        cfg: &SessionConfig,
        rec: &mut Recorder,
    ) -> Result<Step, PollError> {
        let reconnect = Step {
            reconnect: true,
            ..Step::default()
        };
        let ex = self.exchange(ch);
        match ex {
            Exchange::Idle | Exchange::Again => Ok(reconnect),
            Exchange::Waiting {
                received: false,
                retried: false,
                ..
            } => {
                *ex = Exchange::Again;
                Ok(reconnect)
            }
            Exchange::Waiting { decoder, .. } => {
                decoder
                    .eof(|_| {})
                    .map_err(|_| PollError::Closed { channel: ch })?;
                let mut step = self.complete(ch, now, cfg, rec)?;
                step.reconnect = true;
                Ok(step)
            }
        }
    }

    /// A whole answer on `ch`.
    fn complete(
        &mut self,
        ch: Channel,
        now: Instant,
        cfg: &SessionConfig,
        rec: &mut Recorder,
    ) -> Result<Step, PollError> {
        let Exchange::Waiting {
            decoder, mut body, ..
        } = std::mem::take(self.exchange(ch))
        else {
            return Err(PollError::Unsolicited { channel: ch });
        };
        let Some(head) = decoder.head() else {
            return Err(PollError::Closed { channel: ch });
        };
        let mut step = Step {
            answered: true,
            reconnect: !head.keep_alive,
            ..Step::default()
        };
        if let Some(c) = set_session_cookie(head) {
            let value = HeaderValue::try_from(c).map_err(|e| PollError::Request(e.to_string()))?;
            self.cookie = Some(value);
        }
        let status = head.status;
        // simd-json parses in place: the body is read for its code once.
        let code = if status.is_success() {
            None
        } else {
            error_code(&mut body)
        };
        let refusal = |code: Option<String>| PollError::Status {
            channel: ch,
            status: status.as_u16(),
            code,
            retry_after: head.retry_after(),
        };
        match ch {
            Channel::Send => {
                let carrying = std::mem::take(&mut self.carrying);
                if status.is_success() {
                    if let Carrying::Hello = carrying {
                        if self.cookie.is_none() {
                            return Err(PollError::NoCookie);
                        }
                        step.cookie = true;
                    }
                    return Ok(step);
                }
                match (carrying, code) {
                    // The whole batch refused with an `error` object: each
                    // message gets that error as if the stream had carried
                    // it (as it does for an element refused alone); the
                    // session lives on.
                    (Carrying::Messages(ids), Some(code)) if status.is_client_error() => {
                        for (n, _) in ids {
                            let mut frame = serde_json::to_vec(&serde_json::json!({
                                "type": "error", "code": code, "id": format!("m{n}"),
                            }))
                            .unwrap_or_default();
                            let p = self.session.on_server_json(&mut frame, now, cfg, rec);
                            merge(&mut step.progress, p);
                        }
                        Ok(step)
                    }
                    (_, code) => Err(refusal(code)),
                }
            }
            Channel::Recv => {
                if status != StatusCode::OK {
                    return Err(refusal(code));
                }
                let answer: RecvAnswer<'_> =
                    serde_json::from_slice(&body).map_err(|e| PollError::Body(e.to_string()))?;
                self.cursor = answer.cursor;
                let mut scratch = Vec::new();
                for m in answer.messages {
                    scratch.clear();
                    scratch.extend_from_slice(m.get().as_bytes());
                    let p = self.session.on_server_json(&mut scratch, now, cfg, rec);
                    merge(&mut step.progress, p);
                }
                if step.progress.opened {
                    for (due, mark, index) in std::mem::take(&mut self.waiting) {
                        let n = self.session.track_message(due, mark, index, rec);
                        self.batch.push((n, index));
                    }
                }
                Ok(step)
            }
        }
    }
}

/// `lc_session=...` from the answer's `Set-Cookie` fields, if one sets it.
fn set_session_cookie(head: &ResponseHead) -> Option<String> {
    head.headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(handshake::session_cookie)
}

/// The `code` of an `error` object body.
fn error_code(body: &mut [u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    match protocol::parse_server(body) {
        Ok(ServerFrame::Error { code, .. }) if !code.is_empty() => Some(code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Figure;

    const WELCOME: &str =
        r#"{"type":"welcome","conversation":"c_x","resumed":false,"history":[],"config":{}}"#;

    struct Rig {
        ps: PollSession,
        ep: Endpoints,
        texts: Vec<Text>,
        cfg: SessionConfig,
        rec: Recorder,
        t0: Instant,
    }

    fn no_content(cookie: Option<&str>) -> String {
        let set = cookie.map_or(String::new(), |c| {
            format!(
                "Set-Cookie: lc_session={c}; HttpOnly; SameSite=Lax; Path=/; Max-Age=2592000\r\n"
            )
        });
        format!("HTTP/1.1 204 No Content\r\n{set}\r\n")
    }

    fn ok_json(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn poll_answer(cursor: u64, messages: &[&str]) -> String {
        ok_json(&format!(
            r#"{{"cursor":{cursor},"messages":[{}]}}"#,
            messages.join(",")
        ))
    }

    impl Rig {
        fn new(url: &str) -> Rig {
            let t0 = Instant::now();
            let target = gateway_target(Target::parse(url).unwrap()).unwrap();
            Rig {
                ps: PollSession::new(t0, Mark::Stage(0)),
                ep: Endpoints::new(&target).unwrap(),
                texts: vec![Text::new("hi"), Text::new("say \"x\"")],
                cfg: SessionConfig {
                    replies: true,
                    resend_busy: true,
                    slos: vec![],
                },
                rec: Recorder::default(),
                t0,
            }
        }

        /// A session through hello, cookie and welcome (at 5 ms).
        fn open() -> Rig {
            let mut r = Rig::new("ws://127.0.0.1:8080/ws?site=demo");
            assert!(r.request(Channel::Send).unwrap().starts_with("POST "));
            let s = r.feed(Channel::Send, &no_content(Some("tok")), 1).unwrap();
            assert!(s.cookie && s.answered);
            r.request(Channel::Recv).unwrap();
            let s = r
                .feed(Channel::Recv, &poll_answer(1, &[WELCOME]), 5)
                .unwrap();
            assert!(s.progress.opened);
            assert_eq!(r.ps.phase(), Phase::Open);
            r
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn request(&mut self, ch: Channel) -> Option<String> {
            let mut out = Vec::new();
            self.ps
                .next_request(ch, &self.ep, &self.texts, &mut out)
                .unwrap()
                .then(|| String::from_utf8(out).unwrap())
        }

        fn feed(&mut self, ch: Channel, bytes: &str, ms: u64) -> Result<Step, PollError> {
            let now = self.at(ms);
            self.ps
                .on_bytes(ch, bytes.as_bytes(), now, &self.cfg, &mut self.rec)
        }

        fn send(&mut self, due_ms: u64, text: u32) -> Queued {
            let due = self.at(due_ms);
            self.ps
                .send_message(due, Mark::Stage(0), text, &mut self.rec)
        }
    }

    fn body_of(req: &str) -> serde_json::Value {
        serde_json::from_str(req.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    }

    #[test]
    fn urls_map_to_the_poll_endpoints() {
        let ep = |url: &str| {
            let t = gateway_target(Target::parse(url).unwrap()).unwrap();
            assert!(!t.is_direct(), "{url} is the gateway, not direct mode");
            let e = Endpoints::new(&t).unwrap();
            (
                e.send_path().to_string(),
                e.recv_uri(7).unwrap().to_string(),
            )
        };
        let demo = (
            "/poll/send?site=demo".to_string(),
            "/poll/recv?site=demo&cursor=7".to_string(),
        );
        assert_eq!(ep("ws://127.0.0.1:8080/ws?site=demo"), demo);
        assert_eq!(ep("http://127.0.0.1:8080/?site=demo"), demo);
        assert_eq!(ep("http://127.0.0.1:8080?site=demo"), demo);
        assert_eq!(
            ep("ws://h/chat/ws?site=s"),
            (
                "/chat/poll/send?site=s".into(),
                "/chat/poll/recv?site=s&cursor=7".into()
            )
        );
        assert_eq!(
            ep("http://h"),
            ("/poll/send".into(), "/poll/recv?cursor=7".into())
        );
        let tls = gateway_target(Target::parse("https://h/?site=demo").unwrap()).unwrap();
        assert_eq!(
            (tls.scheme, tls.port),
            (Scheme::Wss, 443),
            "over TLS, not direct mode"
        );
    }

    #[test]
    fn hello_then_cookie_then_a_recv_held_with_it() {
        let mut r = Rig::new("http://127.0.0.1:8080/?site=demo");
        assert_eq!(r.request(Channel::Recv), None, "no recv before the cookie");
        let hello = r.request(Channel::Send).unwrap();
        assert!(
            hello.starts_with("POST /poll/send?site=demo HTTP/1.1\r\n"),
            "{hello}"
        );
        let lower = hello.to_ascii_lowercase();
        assert!(lower.contains("host: 127.0.0.1:8080\r\n"));
        assert!(lower.contains("content-type: application/json\r\n"));
        assert!(!lower.contains("cookie"), "the first send has no cookie");
        assert_eq!(body_of(&hello)[0]["type"], "hello");
        assert_eq!(r.request(Channel::Send), None, "one POST at a time");
        assert!(r.ps.outstanding(Channel::Send));
        // The 204 in two pieces.
        let answer = no_content(Some("abcDEF123"));
        let s = r.feed(Channel::Send, &answer[..20], 1).unwrap();
        assert_eq!(s, Step::default());
        let s = r.feed(Channel::Send, &answer[20..], 2).unwrap();
        assert!(s.answered && s.cookie && !s.reconnect);
        assert_eq!(
            r.request(Channel::Send),
            None,
            "nothing to send until welcome"
        );
        let recv = r.request(Channel::Recv).unwrap();
        assert!(
            recv.starts_with("GET /poll/recv?site=demo&cursor=0 HTTP/1.1\r\n"),
            "{recv}"
        );
        // `http` writes header names in lower case; the token as it came.
        assert!(recv.contains("cookie: lc_session=abcDEF123\r\n"), "{recv}");
        assert!(!recv.to_ascii_lowercase().contains("content-length"));
        // The welcome, byte by byte: connect counts to its last byte.
        let w = poll_answer(1, &[WELCOME]);
        for (i, b) in w.bytes().enumerate() {
            let s =
                r.ps.on_bytes(Channel::Recv, &[b], r.at(10), &r.cfg, &mut r.rec)
                    .unwrap();
            assert_eq!(s.progress.opened, i + 1 == w.len());
        }
        assert_eq!(r.ps.cursor(), 1);
        let next = r.request(Channel::Recv).unwrap();
        assert!(
            next.contains("cursor=1 "),
            "re-issued at once with the cursor"
        );
        let c = r.rec.peek().figure(Figure::Connect);
        assert_eq!(c.len(), 1);
        assert!(c.equivalent(c.max(), 10_000), "{}", c.max());
    }

    #[test]
    fn messages_due_together_go_in_one_post_and_replies_are_attributed() {
        let mut r = Rig::open();
        assert_eq!(r.send(10, 0), Queued::Batched(1));
        assert_eq!(r.send(10, 1), Queued::Batched(2));
        let post = r.request(Channel::Send).unwrap();
        assert!(post
            .to_ascii_lowercase()
            .contains("cookie: lc_session=tok\r\n"));
        let body = body_of(&post);
        assert_eq!(body.as_array().unwrap().len(), 2);
        assert_eq!(
            (body[0]["id"].as_str(), body[1]["id"].as_str()),
            (Some("m1"), Some("m2"))
        );
        assert_eq!(body[1]["text"], "say \"x\"");
        // A third, due while the POST is outstanding, waits for its 204.
        r.send(12, 0);
        assert_eq!(r.request(Channel::Send), None);
        let s = r.feed(Channel::Send, &no_content(None), 13).unwrap();
        assert!(s.answered && !s.cookie);
        let next = r.request(Channel::Send).unwrap();
        assert_eq!(body_of(&next)[0]["id"], "m3");
        r.request(Channel::Recv).unwrap();
        let s = r
            .feed(
                Channel::Recv,
                &poll_answer(
                    4,
                    &[
                        r#"{"type":"ack","id":"m1","seq":1}"#,
                        r#"{"type":"ack","id":"m2","seq":2}"#,
                        r#"{"type":"token","reply":"r1","in_reply_to":"m1","text":"a"}"#,
                    ],
                ),
                30,
            )
            .unwrap();
        assert_eq!(s.progress.settled, 0);
        r.request(Channel::Recv).unwrap();
        let s = r
            .feed(
                Channel::Recv,
                &poll_answer(
                    6,
                    &[
                        r#"{"type":"token","reply":"r1","in_reply_to":"m1","text":"b"}"#,
                        r#"{"type":"done","reply":"r1","in_reply_to":"m1","seq":3,"sources":[],"confidence":1}"#,
                    ],
                ),
                50,
            )
            .unwrap();
        assert_eq!(s.progress.settled, 1);
        assert_eq!(r.ps.in_flight(), 2);
        let i = r.rec.peek();
        let near = |f: Figure, us: u64| {
            let h = i.figure(f);
            assert!(h.equivalent(h.max(), us), "{f:?} {} vs {us}", h.max());
        };
        near(Figure::Rtt, 20_000);
        near(Figure::Ttft, 20_000);
        near(Figure::Itl, 20_000);
        near(Figure::Reply, 40_000);
        let c = &i.counters;
        assert_eq!((c.sent, c.acked, c.replied), (3, 2, 1));
    }

    #[test]
    fn messages_due_before_the_welcome_wait_for_it() {
        let mut r = Rig::new("ws://127.0.0.1:8080/ws?site=demo");
        r.request(Channel::Send).unwrap();
        assert_eq!(r.send(0, 0), Queued::Waiting);
        assert_eq!(r.ps.in_flight(), 1);
        assert_eq!(r.rec.peek().counters.sent, 0, "counted when it goes");
        r.feed(Channel::Send, &no_content(Some("t")), 1).unwrap();
        assert_eq!(r.request(Channel::Send), None);
        r.request(Channel::Recv).unwrap();
        r.feed(Channel::Recv, &poll_answer(1, &[WELCOME]), 2)
            .unwrap();
        let post = r.request(Channel::Send).unwrap();
        assert_eq!(body_of(&post)[0]["id"], "m1");
        assert_eq!(r.rec.peek().counters.sent, 1);
        // Failing counts waiting ones too.
        let mut r = Rig::new("ws://127.0.0.1:8080/ws?site=demo");
        r.send(0, 0);
        assert_eq!(r.ps.fail(ErrorKind::Connect, &mut r.rec), 1);
        let c = &r.rec.peek().counters;
        assert_eq!((c.sent, c.error(ErrorKind::Connect)), (1, 1));
        assert_eq!(r.ps.phase(), Phase::Closed);
        assert_eq!(r.request(Channel::Send), None);
    }

    #[test]
    fn a_busy_message_goes_again_in_a_later_post() {
        let mut r = Rig::open();
        r.send(0, 1);
        r.request(Channel::Send).unwrap();
        r.feed(Channel::Send, &no_content(None), 1).unwrap();
        r.request(Channel::Recv).unwrap();
        r.feed(
            Channel::Recv,
            &poll_answer(
                2,
                &[r#"{"type":"error","code":"busy","message":"full","id":"m1","retry_after_ms":100}"#],
            ),
            3,
        )
        .unwrap();
        let now = r.at(50);
        assert_eq!(r.ps.resend_due(now, &mut r.rec), 0, "not yet");
        let now = r.at(110);
        assert_eq!(r.ps.resend_due(now, &mut r.rec), 1);
        let post = r.request(Channel::Send).unwrap();
        let body = body_of(&post);
        assert_eq!(
            (body[0]["id"].as_str(), body[0]["text"].as_str()),
            (Some("m1"), Some("say \"x\""))
        );
        let c = &r.rec.peek().counters;
        assert_eq!((c.sent, c.resent, c.error(ErrorKind::Busy)), (1, 1, 1));
    }

    #[test]
    fn a_refused_batch_fails_its_messages_and_the_session_lives_on() {
        let mut r = Rig::open();
        r.send(0, 0);
        r.send(0, 0);
        r.request(Channel::Send).unwrap();
        let body = r#"{"type":"error","code":"bad_request","message":"not a JSON array"}"#;
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let s = r.feed(Channel::Send, &answer, 5).unwrap();
        assert_eq!(s.progress.settled, 2);
        assert_eq!(r.ps.phase(), Phase::Open);
        assert_eq!(r.ps.in_flight(), 0);
        assert_eq!(r.rec.peek().counters.error(ErrorKind::BadRequest), 2);
        // A 503 is the server full: the session cannot go on.
        r.send(6, 0);
        r.request(Channel::Send).unwrap();
        let e = r
            .feed(
                Channel::Send,
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 4\r\n\r\nfull",
                7,
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rejected);
        assert!(e.to_string().contains("503"), "{e}");
    }

    #[test]
    fn a_refused_start_is_an_error_of_its_kind() {
        let refuse = |answer: &str| {
            let mut r = Rig::new("ws://127.0.0.1:8080/ws?site=nope");
            r.request(Channel::Send).unwrap();
            r.feed(Channel::Send, answer, 1).unwrap_err()
        };
        assert_eq!(
            refuse(
                "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
            )
            .kind(),
            ErrorKind::Rejected
        );
        let e = refuse("HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\nno such site");
        assert_eq!(
            (e.kind(), e.to_string().contains("404")),
            (ErrorKind::Handshake, true)
        );
        assert_eq!(refuse(&no_content(None)), PollError::NoCookie);
        assert_eq!(
            refuse("SSH-2.0-OpenSSH\r\n\r\n").kind(),
            ErrorKind::Protocol
        );
    }

    #[test]
    fn an_expired_cursor_is_counted_and_the_session_goes_on() {
        let mut r = Rig::open();
        r.send(0, 0);
        r.request(Channel::Recv).unwrap();
        r.feed(
            Channel::Recv,
            &poll_answer(
                1200,
                &[
                    r#"{"type":"error","code":"cursor_expired","message":"cursor is older than the messages kept"}"#,
                    WELCOME,
                ],
            ),
            20,
        )
        .unwrap();
        assert_eq!(r.ps.cursor(), 1200);
        assert_eq!(r.ps.phase(), Phase::Open);
        assert_eq!(r.ps.in_flight(), 1, "the message is still awaited");
        let c = &r.rec.peek().counters;
        assert_eq!(
            (c.error(ErrorKind::CursorExpired), c.sessions_opened),
            (1, 1)
        );
        assert!(r.request(Channel::Recv).unwrap().contains("cursor=1200 "));
    }

    #[test]
    fn a_closed_keep_alive_connection_is_retried_once() {
        let mut r = Rig::open();
        r.send(0, 0);
        let first = r.request(Channel::Send).unwrap();
        let now = r.at(1);
        let s = r.ps.on_eof(Channel::Send, now, &r.cfg, &mut r.rec).unwrap();
        assert!(s.reconnect && !s.answered);
        assert!(!r.ps.outstanding(Channel::Send));
        let again = r.request(Channel::Send).unwrap();
        assert_eq!(again, first, "the same POST, same ids");
        let e =
            r.ps.on_eof(Channel::Send, now, &r.cfg, &mut r.rec)
                .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed);
        // An answer cut short is not retried.
        let mut r = Rig::open();
        r.request(Channel::Recv).unwrap();
        r.feed(
            Channel::Recv,
            "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"cur",
            2,
        )
        .unwrap();
        let now = r.at(3);
        let e =
            r.ps.on_eof(Channel::Recv, now, &r.cfg, &mut r.rec)
                .unwrap_err();
        assert_eq!(
            e,
            PollError::Closed {
                channel: Channel::Recv
            }
        );
    }

    #[test]
    fn chunked_and_closing_answers_are_read() {
        let mut r = Rig::open();
        r.send(0, 0);
        r.request(Channel::Send).unwrap();
        r.feed(Channel::Send, &no_content(None), 1).unwrap();
        r.request(Channel::Recv).unwrap();
        let body = format!(
            r#"{{"cursor":2,"messages":[{}]}}"#,
            r#"{"type":"ack","id":"m1","seq":1}"#
        );
        let (a, b) = body.split_at(10);
        let answer = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let s = r.feed(Channel::Recv, &answer, 4).unwrap();
        assert!(s.answered && s.reconnect, "Connection: close");
        assert_eq!(r.rec.peek().counters.acked, 1);
        let e = r.feed(Channel::Recv, "HTTP/1.1 200 OK\r\n", 5).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "nothing was asked");
        // A recv that is not a poll answer.
        let mut r = Rig::open();
        r.request(Channel::Recv).unwrap();
        let e = r
            .feed(Channel::Recv, &ok_json(r#"{"messages":[]}"#), 6)
            .unwrap_err();
        assert!(matches!(e, PollError::Body(_)), "{e:?}");
    }

    #[test]
    fn a_new_cookie_is_taken_as_a_browser_would() {
        let mut r = Rig::open();
        r.request(Channel::Recv).unwrap();
        let body = r#"{"cursor":0,"messages":[]}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\nSet-Cookie: lc_session=fresh; Path=/\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        r.feed(Channel::Recv, &answer, 3).unwrap();
        assert!(r
            .request(Channel::Recv)
            .unwrap()
            .contains("lc_session=fresh\r\n"));
    }
}
