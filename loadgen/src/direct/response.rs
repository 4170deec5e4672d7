//! One streamed response, read as it arrives, and what it measured. Sans-IO:
//! the shell feeds [`Exchange`] the bytes of each read with the instant the
//! read returned; the bytes go through inference_client's HTTP
//! ([`ResponseDecoder`]), server-sent events ([`SseDecoder`]) and OpenAI
//! chunk ([`parse_stream_event`]) decoders, and the exchange keeps the
//! instants that matter: the response head, each content chunk, the end.
//! [`Outcome`] is the result as a plain value; [`settle`] records it.
//!
//! A response is *settled* (its figures are final) at `[DONE]`, at a failure,
//! or when its body ends; it is *finished* (the connection may carry the
//! next request) when its HTTP body has been read to the end. The two differ
//! when a server writes `[DONE]` and the body's last chunk separately (uvicorn
//! does): the reply is over at `[DONE]`, the connection a moment later.

use std::time::{Duration, Instant};

use inference_client::http::{Part, ResponseDecoder};
use inference_client::openai::{error_message, parse_stream_event, OpenAiError, StreamItem};
use inference_client::sse::SseDecoder;
use inference_client::Usage;
use thiserror::Error;

use crate::metrics::{ErrorKind, Figure, Mark, Recorder};
use crate::slo::{meets_all, MessageFigures, Slo};

/// Most bytes of an error response's body kept for its message.
const ERROR_BODY: usize = 4 * 1024;

/// Why a request failed, as loadgen saw it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The status code.
        status: u16,
        /// The body's message.
        message: String,
    },
    /// The response broke HTTP, the event stream or the OpenAI schema.
    #[error("malformed response: {0}")]
    Protocol(String),
    /// The server reported an error in the stream after its 200.
    #[error("the server failed mid-stream: {0}")]
    Server(String),
    /// The connection closed before the response was complete.
    #[error("connection closed: {0}")]
    Closed(String),
    /// No complete response within the timeout.
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
    /// The connection (or its TLS handshake) could not be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// loadgen could not make the request.
    #[error("{0}")]
    Unsent(String),
}

impl Failure {
    /// The kind it is counted as: 429 and 503 are `busy` (the server pacing
    /// its clients), other 5xx `unavailable`, 4xx `bad_request`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Failure::Status { status, .. } => match status {
                429 | 503 => ErrorKind::Busy,
                500..=599 => ErrorKind::Unavailable,
                400..=499 => ErrorKind::BadRequest,
                _ => ErrorKind::OtherServer,
            },
            Failure::Protocol(_) => ErrorKind::Protocol,
            Failure::Server(_) => ErrorKind::Unavailable,
            Failure::Closed(_) => ErrorKind::Closed,
            Failure::Timeout(_) => ErrorKind::Timeout,
            Failure::Connect(_) => ErrorKind::Connect,
            Failure::Unsent(_) => ErrorKind::Unsent,
        }
    }
}

/// What one request measured, once settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// When the response head arrived, with its status.
    pub head: Option<(Instant, u16)>,
    /// When each content chunk arrived, in order (the first is the first token).
    pub chunks: Vec<Instant>,
    /// When the stream ended (`[DONE]`, or the body's end after a
    /// `finish_reason`).
    pub end: Option<Instant>,
    /// The server's token counts, if it sent them.
    pub usage: Option<Usage>,
    /// `None` for a complete reply.
    pub failure: Option<Failure>,
}

impl Outcome {
    /// A request that failed before any response (connect, timeout in the queue).
    pub fn failed(f: Failure) -> Outcome {
        Outcome {
            head: None,
            chunks: Vec::new(),
            end: None,
            usage: None,
            failure: Some(f),
        }
    }

    /// Output tokens: the server's count, else one per content chunk.
    pub fn output_tokens(&self) -> u32 {
        self.usage.map_or_else(
            || u32::try_from(self.chunks.len()).unwrap_or(u32::MAX),
            |u| u.completion_tokens,
        )
    }
}

/// Where an exchange stands after a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// More bytes are needed.
    More,
    /// The figures are final; the body has not ended yet.
    Settled,
    /// The response was read to its end (or failed): nothing more to read.
    Finished,
}

/// One request's response as it arrives.
#[derive(Debug)]
pub struct Exchange {
    http: ResponseDecoder,
    sse: SseDecoder,
    items: Vec<StreamItem>,
    head: Option<(Instant, u16)>,
    keep_alive: bool,
    chunks: Vec<Instant>,
    finish_seen: bool,
    end: Option<Instant>,
    usage: Option<Usage>,
    error_body: Vec<u8>,
    failure: Option<Failure>,
    settled: bool,
    finished: bool,
    received_any: bool,
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

impl Exchange {
    /// An exchange waiting for the response head.
    pub fn new() -> Exchange {
        Exchange {
            http: ResponseDecoder::new(),
            sse: SseDecoder::new(),
            items: Vec::new(),
            head: None,
            keep_alive: false,
            chunks: Vec::new(),
            finish_seen: false,
            end: None,
            usage: None,
            error_body: Vec::new(),
            failure: None,
            settled: false,
            finished: false,
            received_any: false,
        }
    }

    /// Whether any byte of the response arrived (none on a reused
    /// connection means the server had closed it: send again on a new one).
    pub fn received_any(&self) -> bool {
        self.received_any
    }

    /// Whether the figures are final.
    pub fn is_settled(&self) -> bool {
        self.settled
    }

    /// Whether the connection can carry another request: the response was
    /// read whole (an error status with its whole body is), and the server
    /// keeps it open.
    pub fn reusable(&self) -> bool {
        self.finished
            && self.keep_alive
            && matches!(self.failure, None | Some(Failure::Status { .. }))
    }

    fn step(&self) -> Step {
        if self.finished {
            Step::Finished
        } else if self.settled {
            Step::Settled
        } else {
            Step::More
        }
    }

    fn fail(&mut self, f: Failure) {
        self.finished = true;
        if !self.settled {
            self.settled = true;
            self.failure = Some(f);
        }
        // Once settled, a failure only costs the connection.
        self.keep_alive = false;
    }

    /// Feeds the bytes of one read, which returned at `at`.
    pub fn feed(&mut self, bytes: &[u8], at: Instant) -> Step {
        if self.finished {
            return Step::Finished;
        }
        if !bytes.is_empty() {
            self.received_any = true;
        }
        let Exchange {
            http,
            sse,
            items,
            error_body,
            ..
        } = self;
        let mut head = None;
        let mut ended = false;
        let mut body_error: Option<Failure> = None;
        let is_ok = |status: Option<(Instant, u16)>| status.is_some_and(|(_, s)| s / 100 == 2);
        let mut status = self.head;
        let fed = http.feed(bytes, |part| match part {
            Part::Head(h) => {
                let s = (at, h.status.as_u16());
                head = Some((s, h.keep_alive));
                status = Some(s);
            }
            Part::Data(d) if is_ok(status) => {
                if body_error.is_none() {
                    let r = sse.feed(d, |ev| {
                        if body_error.is_none() {
                            if let Err(e) = parse_stream_event(ev.data, items) {
                                body_error = Some(match e {
                                    OpenAiError::Server(m) => Failure::Server(m),
                                    OpenAiError::Json(m) => Failure::Protocol(m),
                                });
                            }
                        }
                    });
                    if let Err(e) = r {
                        body_error.get_or_insert(Failure::Protocol(e.to_string()));
                    }
                }
            }
            Part::Data(d) => {
                let room = ERROR_BODY.saturating_sub(error_body.len());
                error_body.extend_from_slice(&d[..d.len().min(room)]);
            }
            Part::End => ended = true,
        });
        if let Some((s, keep)) = head {
            self.head = Some(s);
            self.keep_alive = keep;
        }
        self.take_items(at);
        match fed {
            Err(e) => self.fail(Failure::Protocol(e.to_string())),
            // Bytes after the response: a server that pipelines or is
            // confused; either way the connection is not reused.
            Ok(used) if used < bytes.len() => self.keep_alive = false,
            Ok(_) => {}
        }
        if let Some(f) = body_error {
            self.fail(f);
        }
        if ended {
            self.body_ended(at);
        }
        self.step()
    }

    fn take_items(&mut self, at: Instant) {
        for item in self.items.drain(..) {
            if self.settled {
                break;
            }
            match item {
                StreamItem::Token { .. } => self.chunks.push(at),
                StreamItem::Finish { .. } => self.finish_seen = true,
                StreamItem::Usage(u) => self.usage = Some(u),
                StreamItem::Done => {
                    self.end = Some(at);
                    self.settled = true;
                }
            }
        }
    }

    fn body_ended(&mut self, at: Instant) {
        self.finished = true;
        if self.settled {
            return;
        }
        self.settled = true;
        match self.head {
            Some((_, s)) if s / 100 == 2 => {
                if self.finish_seen {
                    // No `[DONE]` (some servers omit it): the body's end is the end.
                    self.end = Some(at);
                } else {
                    self.failure = Some(Failure::Protocol(
                        "the stream ended without [DONE] or a finish_reason".into(),
                    ));
                }
            }
            Some((_, status)) => {
                self.failure = Some(Failure::Status {
                    status,
                    message: error_message(&self.error_body),
                })
            }
            // The decoder ends a body only after a head.
            None => self.failure = Some(Failure::Protocol("a body without a head".into())),
        }
    }

    /// The server closed the connection (a read returned 0 bytes at `at`).
    pub fn eof(&mut self, at: Instant) -> Step {
        if self.finished {
            return Step::Finished;
        }
        let mut ended = false;
        let r = self.http.eof(|p| {
            if let Part::End = p {
                ended = true;
            }
        });
        if ended {
            self.keep_alive = false;
            self.body_ended(at);
        } else if let Err(e) = r {
            let why = if self.received_any {
                format!("the server closed the connection mid-response ({e})")
            } else {
                "the server closed the connection without answering".to_string()
            };
            self.fail(Failure::Closed(why));
        }
        self.finished = true;
        self.step()
    }

    /// Reading failed, or the time ran out, before the response was complete.
    pub fn abort(&mut self, f: Failure) -> Step {
        self.fail(f);
        self.step()
    }

    /// What was measured; meaningful once settled (before, a failure
    /// `Closed` is reported).
    pub fn outcome(&self) -> Outcome {
        let failure = match (&self.failure, self.settled) {
            (Some(f), _) => Some(f.clone()),
            (None, true) => None,
            (None, false) => Some(Failure::Closed("the response is incomplete".into())),
        };
        Outcome {
            head: self.head,
            chunks: self.chunks.clone(),
            end: self.end,
            usage: self.usage,
            failure,
        }
    }
}

fn micros(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}

/// Records one settled request due at `due` (its figures count from then)
/// into `rec` under `mark`. `sent` was counted when it was due; `acked` is a
/// 2xx head, recorded with `rtt` whatever followed; a complete reply records
/// `ttft`, `itl`, `tpot` and `reply`, counts `replied`, its output tokens
/// and its input tokens (the server's counts, else one per chunk and
/// `input_estimate`), and `good` when it met every SLO. Failed requests add
/// nothing but their error, as `vllm bench serve` leaves failed requests out
/// of its figures.
pub fn settle(
    o: &Outcome,
    due: Instant,
    mark: Mark,
    input_estimate: u32,
    slos: &[Slo],
    rec: &mut Recorder,
) {
    let mut rtt = None;
    if let Some((at, status)) = o.head {
        if status / 100 == 2 {
            let us = micros(due, at);
            rtt = Some(us);
            rec.record(mark, Figure::Rtt, us);
            rec.count(mark, |c| c.acked += 1);
        }
    }
    if let Some(f) = &o.failure {
        rec.error_at(mark, f.kind());
        return;
    }
    let Some(end) = o.end else {
        rec.error_at(mark, ErrorKind::Protocol);
        return;
    };
    let reply = micros(due, end);
    let ttft = o.chunks.first().map(|&t| micros(due, t));
    if let Some(v) = ttft {
        rec.record(mark, Figure::Ttft, v);
    }
    let mut itl_sum = 0;
    for w in o.chunks.windows(2) {
        let gap = micros(w[0], w[1]);
        itl_sum += gap;
        rec.record(mark, Figure::Itl, gap);
    }
    rec.record(mark, Figure::Reply, reply);
    let tokens = o.output_tokens();
    let tpot = match ttft {
        Some(t) if tokens >= 2 => Some(reply.saturating_sub(t) / u64::from(tokens - 1)),
        _ => None,
    };
    if let Some(v) = tpot {
        rec.record(mark, Figure::Tpot, v);
    }
    let gaps = o.chunks.len().saturating_sub(1) as u64;
    let figures = MessageFigures {
        rtt,
        ttft,
        itl_mean: (gaps > 0).then(|| itl_sum / gaps),
        reply: Some(reply),
        tpot,
    };
    let input = o.usage.map_or(input_estimate, |u| u.prompt_tokens);
    let good = meets_all(slos, &figures);
    rec.count(mark, |c| {
        c.replied += 1;
        c.output_tokens += u64::from(tokens);
        c.input_tokens += u64::from(input);
        if good {
            c.good += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_client::chunked::{encode_chunk, LAST_CHUNK};

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n";

    fn chat_event(content: &str) -> String {
        format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
            serde_json::to_string(content).unwrap()
        )
    }

    const ROLE: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    const FINISH: &str =
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    /// A chunked event-stream response: each event its own HTTP chunk.
    fn stream(events: &[&str], last_chunk: bool) -> Vec<Vec<u8>> {
        let mut parts = vec![HEAD.to_vec()];
        for e in events {
            let mut c = Vec::new();
            encode_chunk(e.as_bytes(), &mut c);
            parts.push(c);
        }
        if last_chunk {
            parts.push(LAST_CHUNK.to_vec());
        }
        parts
    }

    fn sim_reply() -> Vec<Vec<u8>> {
        let (a, b, c) = (chat_event(" Hel"), chat_event("lo"), chat_event("!"));
        stream(&[ROLE, &a, &b, &c, FINISH, USAGE, DONE], true)
    }

    /// Feeds `parts` one per millisecond from `t0`; the outcome and the last step.
    fn run(parts: &[Vec<u8>], t0: Instant, eof: bool) -> (Exchange, Step) {
        let mut ex = Exchange::new();
        let mut step = Step::More;
        for (i, p) in parts.iter().enumerate() {
            step = ex.feed(p, t0 + Duration::from_millis(i as u64 + 1));
        }
        if eof {
            step = ex.eof(t0 + Duration::from_millis(parts.len() as u64 + 1));
        }
        (ex, step)
    }

    #[test]
    fn a_streamed_reply_at_every_split_gives_the_same_outcome() {
        let whole: Vec<u8> = sim_reply().concat();
        let t0 = Instant::now();
        let at = t0 + Duration::from_millis(5);
        for i in 0..=whole.len() {
            let mut ex = Exchange::new();
            ex.feed(&whole[..i], at);
            let step = ex.feed(&whole[i..], at);
            assert_eq!(step, Step::Finished, "split at {i}");
            let o = ex.outcome();
            assert_eq!(o.failure, None, "split at {i}");
            assert_eq!(o.chunks.len(), 3, "split at {i}");
            assert_eq!(o.output_tokens(), 3);
            assert!(ex.reusable());
        }
    }

    #[test]
    fn instants_are_those_of_the_reads_that_carried_them() {
        let t0 = Instant::now();
        let (ex, step) = run(&sim_reply(), t0, false);
        assert_eq!(step, Step::Finished);
        let o = ex.outcome();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert_eq!(o.head, Some((ms(1), 200)));
        // Head at 1, role chunk at 2 (no content: not a token), tokens at 3, 4, 5.
        assert_eq!(o.chunks, [ms(3), ms(4), ms(5)]);
        assert_eq!(o.end, Some(ms(8)), "[DONE] came in the 8th read");
        assert_eq!(
            o.usage,
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 3
            })
        );
    }

    #[test]
    fn done_before_the_last_chunk_settles_then_finishes() {
        let t0 = Instant::now();
        let mut parts = sim_reply();
        let last = parts.pop().unwrap();
        let (mut ex, step) = run(&parts, t0, false);
        assert_eq!(step, Step::Settled);
        assert!(ex.is_settled() && !ex.reusable());
        let settled = ex.outcome();
        assert_eq!(ex.feed(&last, t0 + Duration::from_secs(1)), Step::Finished);
        assert!(ex.reusable());
        assert_eq!(
            ex.outcome(),
            settled,
            "the end is [DONE], not the last chunk"
        );
        // A connection lost after [DONE] costs the connection, not the reply.
        let (mut ex, _) = run(&parts, t0, false);
        assert_eq!(ex.eof(t0 + Duration::from_secs(1)), Step::Finished);
        assert_eq!(ex.outcome().failure, None);
        assert!(!ex.reusable());
    }

    #[test]
    fn a_finish_reason_and_the_bodys_end_are_a_reply_without_done() {
        let a = chat_event("x");
        let (ex, step) = run(&stream(&[&a, FINISH], true), Instant::now(), false);
        assert_eq!(step, Step::Finished);
        let o = ex.outcome();
        assert_eq!((&o.failure, o.usage, o.output_tokens()), (&None, None, 1));
        let (ex, _) = run(&stream(&[&a], true), Instant::now(), false);
        assert!(matches!(ex.outcome().failure, Some(Failure::Protocol(_))));
    }

    #[test]
    fn error_statuses_are_busy_unavailable_or_bad_request() {
        for (status, kind) in [
            (503, ErrorKind::Busy),
            (429, ErrorKind::Busy),
            (500, ErrorKind::Unavailable),
            (502, ErrorKind::Unavailable),
            (400, ErrorKind::BadRequest),
            (404, ErrorKind::BadRequest),
            (302, ErrorKind::OtherServer),
        ] {
            let body = r#"{"error":{"message":"slow down","code":1}}"#;
            let r = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut ex = Exchange::new();
            assert_eq!(ex.feed(r.as_bytes(), Instant::now()), Step::Finished);
            let f = ex.outcome().failure.unwrap();
            assert_eq!(f.kind(), kind, "{status}");
            assert!(f.to_string().contains("slow down"), "{f}");
            assert!(
                ex.reusable(),
                "an error with its whole body keeps the connection"
            );
        }
    }

    #[test]
    fn garbage_and_broken_streams_are_protocol_errors() {
        let mut ex = Exchange::new();
        let step = ex.feed(
            b"\x00\x7fSSH-2.0-garbage\r\n\xff\xfe not http at all\r\n\r\n",
            Instant::now(),
        );
        assert_eq!(step, Step::Finished);
        assert_eq!(ex.outcome().failure.unwrap().kind(), ErrorKind::Protocol);
        for bad in [
            "data: {\"choices\":3}\n\n",
            "data: nope\n\n",
            "data: \u{0}{\n\n",
        ] {
            let (ex, step) = run(&stream(&[bad], true), Instant::now(), false);
            assert_eq!(step, Step::Finished);
            let f = ex.outcome().failure.unwrap();
            assert_eq!(f.kind(), ErrorKind::Protocol, "{bad}: {f}");
        }
        let mut parts = stream(&[], false);
        parts.push(b"zz\r\n".to_vec());
        let (ex, _) = run(&parts, Instant::now(), false);
        assert_eq!(ex.outcome().failure.unwrap().kind(), ErrorKind::Protocol);
    }

    #[test]
    fn an_error_chunk_mid_stream_is_the_server_failing() {
        let a = chat_event("x");
        let err = "data: {\"error\":{\"message\":\"engine died\"}}\n\n";
        let (ex, step) = run(&stream(&[&a, err], false), Instant::now(), false);
        assert_eq!(step, Step::Finished);
        let f = ex.outcome().failure.unwrap();
        assert_eq!(f.kind(), ErrorKind::Unavailable);
        assert!(f.to_string().contains("engine died"));
    }

    #[test]
    fn closes_and_timeouts() {
        let t0 = Instant::now();
        let mut parts = sim_reply();
        parts.truncate(3);
        let (ex, step) = run(&parts, t0, true);
        assert_eq!(step, Step::Finished);
        let f = ex.outcome().failure.unwrap();
        assert_eq!(f.kind(), ErrorKind::Closed);
        assert!(ex.received_any());
        let (ex, _) = run(&[], t0, true);
        assert_eq!(ex.outcome().failure.unwrap().kind(), ErrorKind::Closed);
        assert!(
            !ex.received_any(),
            "a stale keep-alive connection: send again"
        );
        let (mut ex, _) = run(&parts, t0, false);
        ex.abort(Failure::Timeout(Duration::from_secs(1)));
        assert_eq!(ex.outcome().failure.unwrap().kind(), ErrorKind::Timeout);
        // An until-close body ends at eof.
        let mut ex = Exchange::new();
        let body = format!("{}{DONE}", chat_event("a"));
        ex.feed(
            b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n\r\n",
            t0,
        );
        ex.feed(body.as_bytes(), t0);
        assert_eq!(ex.eof(t0), Step::Finished);
        assert_eq!(ex.outcome().failure, None);
    }

    fn outcome(t0: Instant, head: u64, chunks: &[u64], end: u64, usage: Option<u32>) -> Outcome {
        let ms = |n: u64| t0 + Duration::from_millis(n);
        Outcome {
            head: Some((ms(head), 200)),
            chunks: chunks.iter().map(|&c| ms(c)).collect(),
            end: Some(ms(end)),
            usage: usage.map(|n| Usage {
                prompt_tokens: 40,
                completion_tokens: n,
            }),
            failure: None,
        }
    }

    #[test]
    fn settle_records_the_figures_vllm_bench_serve_defines() {
        let t0 = Instant::now();
        let mut rec = Recorder::default();
        let m = Mark::Stage(0);
        // Due at 0: head at 5, tokens at 100, 120, 140, 160, [DONE] at 161.
        let o = outcome(t0, 5, &[100, 120, 140, 160], 161, Some(4));
        let slos: Vec<Slo> = vec!["ttft:150ms".parse().unwrap(), "tpot:25ms".parse().unwrap()];
        settle(&o, t0, m, 9, &slos, &mut rec);
        let i = rec.take();
        let one = |f: Figure| {
            let h = i.figure(f);
            assert_eq!(h.len(), 1, "{f:?}");
            h.max()
        };
        let eq = |f: Figure, us: u64| {
            let h = i.figure(f);
            assert!(h.equivalent(one(f), us), "{f:?}: {} vs {us}", one(f));
        };
        eq(Figure::Rtt, 5_000);
        eq(Figure::Ttft, 100_000);
        eq(Figure::Reply, 161_000);
        // (161 - 100) / (4 - 1) ms
        eq(Figure::Tpot, 20_333);
        assert_eq!(i.figure(Figure::Itl).len(), 3);
        let c = &i.counters;
        assert_eq!((c.acked, c.replied, c.good), (1, 1, 1));
        assert_eq!(
            (c.output_tokens, c.input_tokens),
            (4, 40),
            "the server's counts"
        );
        assert_eq!(c.sent, 0, "sent is counted when due, not here");
    }

    #[test]
    fn without_usage_chunks_are_tokens_and_the_estimate_is_the_input() {
        let t0 = Instant::now();
        let mut rec = Recorder::default();
        let o = outcome(t0, 1, &[10, 30], 31, None);
        let strict: Vec<Slo> = vec!["ttft:5ms".parse().unwrap()];
        settle(&o, t0, Mark::Stage(0), 9, &strict, &mut rec);
        let one_token = outcome(t0, 1, &[10], 11, None);
        settle(&one_token, t0, Mark::Stage(0), 9, &[], &mut rec);
        let i = rec.take();
        let c = &i.counters;
        assert_eq!((c.output_tokens, c.input_tokens), (3, 18));
        assert_eq!((c.replied, c.good), (2, 1), "ttft 10ms missed ttft:5ms");
        assert_eq!(i.figure(Figure::Tpot).len(), 1, "one token: no tpot");
    }

    #[test]
    fn failures_count_their_kind_and_no_figures_but_the_ack() {
        let t0 = Instant::now();
        let mut rec = Recorder::default();
        let mut mid = outcome(t0, 2, &[10], 11, None);
        mid.failure = Some(Failure::Closed("x".into()));
        settle(&mid, t0, Mark::Stage(0), 1, &[], &mut rec);
        let busy = Outcome {
            head: Some((t0, 503)),
            ..Outcome::failed(Failure::Status {
                status: 503,
                message: "busy".into(),
            })
        };
        settle(&busy, t0, Mark::Stage(0), 1, &[], &mut rec);
        settle(
            &Outcome::failed(Failure::Connect("refused".into())),
            t0,
            Mark::Stage(0),
            1,
            &[],
            &mut rec,
        );
        settle(&busy, t0, Mark::Warmup, 1, &[], &mut rec);
        let i = rec.take();
        let c = &i.counters;
        assert_eq!((c.acked, c.replied, c.good), (1, 0, 0));
        assert_eq!(c.error(ErrorKind::Closed), 1);
        assert_eq!(c.error(ErrorKind::Busy), 1, "warm-up is not counted");
        assert_eq!(c.error(ErrorKind::Connect), 1);
        assert_eq!(i.figure(Figure::Rtt).len(), 1);
        assert_eq!(i.figure(Figure::Ttft).len(), 0);
    }
}
