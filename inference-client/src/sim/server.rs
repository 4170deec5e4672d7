//! The simulator served over the OpenAI-compatible HTTP API (the
//! `inference-sim` binary), on one monoio runtime.
//!
//! Routes: `POST /v1/chat/completions` (streamed or not), `POST
//! /v1/completions` (a string or an array `prompt`; streamed choices told
//! apart by `index`), `POST /v1/embeddings` (a string or an array `input`),
//! `GET /v1/models`, `GET /health`; for tests, `GET /admin/stats` (counters,
//! as JSON) and `POST /admin/faults` (a [`Faults`] as JSON, replacing the
//! current one). Streams are `text/event-stream` in chunked transfer coding,
//! in the chunk format vLLM writes.
//!
//! Like a real server it can demand a bearer key on `/v1/` routes
//! ([`ServerConfig::api_key`]: 401 otherwise) and serve one model only
//! ([`ServerConfig::model_required`]: 404 for another name), both with
//! OpenAI's error body, and it can speak TLS ([`ServerConfig::tls`]).
//!
//! One [`Engine`] schedules every sequence of every connection; a driver task
//! sleeps until its next iteration ends and hands the tokens to the
//! connections' mailboxes. A client that goes away is noticed when a write to
//! it fails (or, in a stalled stream, when its end of the connection closes);
//! its sequences are then cancelled and `streams_cancelled` counts it.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use std::sync::Arc;

use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, TRANSFER_ENCODING,
};
use http::{Method, StatusCode};
use monoio::net::TcpListener;
use serde::{Deserialize, Serialize};

use super::answer::{compose, split_pieces};
use super::embed::embed;
use super::engine::{Engine, SeqId, SimEvent};
use super::model::LatencyModel;
use crate::chunked::{encode_chunk, LAST_CHUNK};
use crate::http::request::{self, RequestHead};
use crate::http::response::encode_head;
use crate::openai::{self, ChatDelta, ChatMessage, ChunkMeta, FinishReason, Role, Usage};
use crate::runtime::{self, IoDriver};
use crate::signal::Signal;
use crate::tls::Stream;
use crate::tokens::{count_prompt_tokens, count_tokens};

/// Faults to inject, for tests of the client's failure handling. Settable at
/// start (flags) and at run time (`POST /admin/faults`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer every `/v1/` request with this status (and an OpenAI error body).
    pub http_status: Option<u16>,
    /// With `http_status`: a `Retry-After` in seconds.
    pub retry_after_secs: Option<u64>,
    /// Answer this fraction of `/v1/` requests with 500.
    pub fail_rate: f64,
    /// Stop sending after this many tokens of a stream, keeping the
    /// connection open (a stream that hangs).
    pub stall_after_tokens: Option<u32>,
    /// Close the connection after this many tokens of a stream, without the
    /// end of the chunked body or `[DONE]` (a reset mid-stream).
    pub drop_after_tokens: Option<u32>,
    /// Answer `/v1/` requests with bytes that are not HTTP, then close.
    pub garbage: bool,
    /// Answer `/health` with 503.
    pub unhealthy: bool,
}

/// What the server was asked and did (`GET /admin/stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// HTTP requests read.
    pub requests: u64,
    /// `/v1/chat/completions` requests.
    pub chat_requests: u64,
    /// `/v1/completions` requests.
    pub completion_requests: u64,
    /// `/v1/completions` requests with more than one prompt.
    pub batched_requests: u64,
    /// Most prompts in one request.
    pub largest_batch: u64,
    /// `/v1/embeddings` requests.
    pub embedding_requests: u64,
    /// Texts embedded.
    pub embedded_texts: u64,
    /// Streamed responses started.
    pub streams_started: u64,
    /// Streamed responses sent to the end.
    pub streams_completed: u64,
    /// Streams whose client went away before the end.
    pub streams_cancelled: u64,
    /// Tokens sent.
    pub tokens_sent: u64,
    /// Prompt tokens of the chat and completions requests (as their `usage`
    /// counts them), so a client can learn the prompt lengths it was sent
    /// (vLLM's `vllm:prompt_tokens_total`).
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Requests answered by an injected fault.
    pub faults_injected: u64,
    /// Sequences in the KV cache now.
    pub running: usize,
    /// Sequences waiting for KV room now.
    pub waiting: usize,
    /// Most sequences ever decoding at once.
    pub peak_running: usize,
    /// The server's own time to first token, per sequence: request read to
    /// its first token written (so a client can subtract it from its own).
    pub ttft: TtftSummary,
}

/// Percentiles of the server's own time to first token, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TtftSummary {
    /// Sequences measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model name it serves and reports (`--model`).
    pub model: String,
    /// Answer requests that name another model with 404, as a real server
    /// does (`--model` given); otherwise any name is accepted.
    pub model_required: bool,
    /// Demand `Authorization: Bearer <key>` on `/v1/` routes; 401 otherwise
    /// (`--api-key`).
    pub api_key: Option<String>,
    /// Speak TLS with these settings (`--tls-cert`, `--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The latency model.
    pub latency: LatencyModel,
    /// Most tokens per answer, whatever the request asks (`--max-tokens`).
    pub max_tokens: u32,
    /// Dimensions of embeddings (`--embedding-dim`).
    pub embedding_dim: usize,
    /// Faults from the start.
    pub faults: Faults,
    /// Largest request body accepted.
    pub max_body: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            model: "sim".into(),
            model_required: false,
            api_key: None,
            tls: None,
            latency: LatencyModel::default(),
            max_tokens: 256,
            embedding_dim: super::embed::DEFAULT_DIM,
            faults: Faults::default(),
            max_body: 4 * 1024 * 1024,
        }
    }
}

/// The model name the client sends when none is configured
/// ([`crate::ServiceConfig::model`]'s default).
const DEFAULT_CLIENT_MODEL: &str = "default";

/// Tokens waiting for one response: `(choice index, event)`.
#[derive(Default)]
struct Mailbox {
    events: RefCell<VecDeque<(u32, SimEvent)>>,
    signal: Signal,
}

struct Sim {
    cfg: ServerConfig,
    faults: RefCell<Faults>,
    stats: RefCell<ServerStats>,
    engine: RefCell<Engine>,
    mailboxes: RefCell<HashMap<SeqId, (Rc<Mailbox>, u32)>>,
    next_seq: Cell<SeqId>,
    next_id: Cell<u64>,
    rng: RefCell<fastrand::Rng>,
    /// Work was added: the driver re-plans its sleep.
    work: Signal,
    /// Request read to first token written, per sequence, in µs.
    ttft_us: RefCell<Histogram<u64>>,
}

/// Binds a listener for [`serve`] with a deep accept queue (1024), so a
/// burst of hundreds of connections is not dropped at the SYN.
pub fn bind(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Serves on `listener` until the process ends.
pub fn serve(
    listener: std::net::TcpListener,
    cfg: ServerConfig,
    driver: IoDriver,
) -> io::Result<()> {
    cfg.latency
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    listener.set_nonblocking(true)?;
    runtime::block_on(driver, move |kind| async move {
        tracing::info!(driver = kind.as_str(), "inference-sim serving");
        let listener = TcpListener::from_std(listener)?;
        let sim = Rc::new(Sim {
            engine: RefCell::new(Engine::new(cfg.latency.clone())),
            faults: RefCell::new(cfg.faults.clone()),
            rng: RefCell::new(fastrand::Rng::with_seed(cfg.latency.seed ^ 0x5eed)),
            cfg,
            stats: RefCell::default(),
            mailboxes: RefCell::default(),
            next_seq: Cell::new(1),
            next_id: Cell::new(1),
            work: Signal::new(),
            ttft_us: RefCell::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .map_err(|e| io::Error::other(e.to_string()))?,
            ),
        });
        monoio::spawn(drive(sim.clone()));
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let sim = sim.clone();
                    monoio::spawn(async move {
                        let stream = match &sim.cfg.tls {
                            None => Stream::Plain(tcp),
                            Some(tls) => match Stream::accept_tls(tcp, tls.clone()).await {
                                Ok(s) => s,
                                Err(e) => {
                                    tracing::info!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                            },
                        };
                        connection(sim, stream).await
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })?
}

/// Runs the engine's iterations in real time and delivers their tokens.
async fn drive(sim: Rc<Sim>) {
    let mut events = Vec::new();
    loop {
        let next = sim.engine.borrow().next_wake();
        match next {
            Some(t) => {
                let t = monoio::time::Instant::from_std(t);
                monoio::select! {
                    _ = monoio::time::sleep_until(t) => {}
                    _ = sim.work.wait() => {}
                }
            }
            None => sim.work.wait().await,
        }
        {
            let mut e = sim.engine.borrow_mut();
            e.advance(Instant::now());
            e.take_events(&mut events);
        }
        let mut boxes = sim.mailboxes.borrow_mut();
        for ev in events.drain(..) {
            let seq = match &ev {
                SimEvent::Token { seq, .. } | SimEvent::Finished { seq, .. } => *seq,
            };
            let finished = matches!(ev, SimEvent::Finished { .. });
            if let Some((mb, index)) = boxes.get(&seq) {
                mb.events.borrow_mut().push_back((*index, ev));
                mb.signal.notify();
            }
            if finished {
                boxes.remove(&seq);
            }
        }
    }
}

/// vLLM's sampling parameters that set an answer's length, as load
/// generators send them (`vllm bench serve --ignore-eos`, AIPerf) so that
/// every request gets the tokens it asked for: `ignore_eos` (generate to
/// `max_tokens`, finishing with `length`) and `min_tokens` (no end before).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Length {
    /// Never stop before `max_tokens`.
    pub ignore_eos: bool,
    /// Stop no earlier than this.
    pub min_tokens: Option<u32>,
}

impl Length {
    /// The length parameters of a request body (none if it is not JSON).
    pub fn of(body: &[u8]) -> Length {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The answer's pieces, made long enough by repeating them: past
    /// `max_tokens` with `ignore_eos` (so the engine cuts it there with
    /// `length`, as a model that never met its end), to `min_tokens` else.
    pub fn fit(self, mut pieces: Vec<String>, max_tokens: u32) -> Vec<String> {
        let want = if self.ignore_eos {
            max_tokens as usize + 1
        } else {
            self.min_tokens.unwrap_or(0).min(max_tokens) as usize
        };
        if pieces.is_empty() {
            pieces.push(" the".into());
        }
        let natural = pieces.len();
        for i in natural..want {
            let p = pieces[i % natural].trim_start().to_string();
            pieces.push(format!(" {p}"));
        }
        pieces
    }
}

impl Sim {
    fn add(
        &self,
        now: Instant,
        mailbox: &Rc<Mailbox>,
        index: u32,
        messages: &[ChatMessage],
        max_tokens: u32,
        length: Length,
    ) -> SeqId {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let max_tokens = max_tokens.min(self.cfg.max_tokens);
        let pieces = length.fit(split_pieces(&compose(messages)), max_tokens);
        self.mailboxes
            .borrow_mut()
            .insert(seq, (mailbox.clone(), index));
        self.engine
            .borrow_mut()
            .add(now, seq, count_prompt_tokens(messages), pieces, max_tokens);
        self.work.notify();
        seq
    }

    fn cancel(&self, seqs: &[SeqId]) {
        let now = Instant::now();
        let mut e = self.engine.borrow_mut();
        let mut boxes = self.mailboxes.borrow_mut();
        for s in seqs {
            e.cancel(now, *s);
            boxes.remove(s);
        }
    }

    fn meta_id(&self, prefix: &str) -> String {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        format!("{prefix}-sim{n:08x}")
    }

    fn stats_json(&self) -> String {
        let mut s = self.stats.borrow().clone();
        let e = self.engine.borrow();
        s.running = e.running();
        s.waiting = e.waiting();
        s.peak_running = e.stats().peak_running;
        let h = self.ttft_us.borrow();
        s.ttft = TtftSummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
        };
        serde_json::to_string(&s).unwrap_or_default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One client connection: requests in turn (keep-alive).
async fn connection(sim: Rc<Sim>, mut stream: Stream) {
    let mut inbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut rbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        // Read until a whole request (head and body) is in `inbuf`.
        let (head, head_len) = loop {
            match request::parse(&inbuf, sim.cfg.max_body) {
                Ok(Some((h, n))) if inbuf.len() >= n + h.content_length => break (h, n),
                Ok(_) => {}
                Err(e) => {
                    let _ = respond_error(&mut stream, e.status(), &e.to_string(), false).await;
                    return;
                }
            }
            let (r, b) = stream.read(rbuf).await;
            rbuf = b;
            match r {
                Ok(0) | Err(_) => return,
                Ok(n) => inbuf.extend_from_slice(&rbuf[..n]),
            }
        };
        let body: Vec<u8> = inbuf[head_len..head_len + head.content_length].to_vec();
        inbuf.drain(..head_len + head.content_length);
        sim.stats.borrow_mut().requests += 1;
        let keep = head.keep_alive;
        let ok = route(&sim, &mut stream, &head, &body)
            .await
            .unwrap_or(false);
        if !(ok && keep) {
            return;
        }
    }
}

/// Answers one request; `Ok(false)` when the connection must close.
async fn route(
    sim: &Rc<Sim>,
    stream: &mut Stream,
    head: &RequestHead,
    body: &[u8],
) -> io::Result<bool> {
    let path = head.request.uri().path();
    let method = head.request.method();
    let keep = head.keep_alive;
    match (method, path) {
        (&Method::GET, "/health") => {
            if sim.faults.borrow().unhealthy {
                respond_error(
                    stream,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unhealthy (injected)",
                    keep,
                )
                .await
            } else {
                respond(stream, StatusCode::OK, "text/plain", b"OK".to_vec(), keep).await
            }
        }
        (&Method::GET, "/v1/models") => {
            if let Some(r) = refuse(sim, stream, head, b"", keep).await {
                return r;
            }
            // Serving any name, it lists the client's default name too, so
            // the probe of a setup that names no model reports it ready.
            let body = if sim.cfg.model_required || sim.cfg.model == DEFAULT_CLIENT_MODEL {
                openai::models_response(&[sim.cfg.model.as_str()])
            } else {
                openai::models_response(&[sim.cfg.model.as_str(), DEFAULT_CLIENT_MODEL])
            }
            .into_bytes();
            respond(stream, StatusCode::OK, "application/json", body, keep).await
        }
        (&Method::GET, "/admin/stats") => {
            let body = sim.stats_json().into_bytes();
            respond(stream, StatusCode::OK, "application/json", body, keep).await
        }
        (&Method::POST, "/admin/faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => {
                let json = serde_json::to_vec(&f).unwrap_or_default();
                *sim.faults.borrow_mut() = f;
                respond(stream, StatusCode::OK, "application/json", json, keep).await
            }
            Err(e) => respond_error(stream, StatusCode::BAD_REQUEST, &e.to_string(), keep).await,
        },
        (&Method::POST, "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings") => {
            if let Some(r) = refuse(sim, stream, head, body, keep).await {
                return r;
            }
            if let Some(r) = inject(sim, stream, keep).await {
                return r;
            }
            match path {
                "/v1/chat/completions" => chat(sim, stream, body, keep).await,
                "/v1/completions" => completions(sim, stream, body, keep).await,
                _ => embeddings(sim, stream, body, keep).await,
            }
        }
        (
            _,
            "/health"
            | "/v1/models"
            | "/admin/stats"
            | "/admin/faults"
            | "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings",
        ) => {
            respond_error(
                stream,
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
                keep,
            )
            .await
        }
        _ => {
            respond_error(
                stream,
                StatusCode::NOT_FOUND,
                &format!("no route {path}"),
                keep,
            )
            .await
        }
    }
}

/// Why a `/v1/` request is refused before any work, as a real server would:
/// no or the wrong bearer key (401), a model it does not serve (404).
/// Sans-IO; `body` is the request's JSON (empty for `GET /v1/models`).
pub fn check_request(
    cfg: &ServerConfig,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<(), (StatusCode, String, &'static str)> {
    if let Some(key) = &cfg.api_key {
        let given = authorization.and_then(|a| a.strip_prefix("Bearer "));
        match given {
            None => {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "You didn't provide an API key. Send it as `Authorization: Bearer <key>`."
                        .into(),
                    "invalid_api_key",
                ))
            }
            Some(k) if k.trim() != key => {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    "Incorrect API key provided.".into(),
                    "invalid_api_key",
                ))
            }
            Some(_) => {}
        }
    }
    if cfg.model_required && !body.is_empty() {
        #[derive(Deserialize)]
        struct Named {
            model: Option<String>,
        }
        let named = serde_json::from_slice::<Named>(body)
            .ok()
            .and_then(|n| n.model);
        if let Some(m) = named.filter(|m| *m != cfg.model) {
            return Err((
                StatusCode::NOT_FOUND,
                format!("The model `{m}` does not exist."),
                "model_not_found",
            ));
        }
    }
    Ok(())
}

/// Answers 401 or 404 when [`check_request`] refuses the request.
async fn refuse(
    sim: &Rc<Sim>,
    stream: &mut Stream,
    head: &RequestHead,
    body: &[u8],
    keep: bool,
) -> Option<io::Result<bool>> {
    let auth = head
        .request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (status, message, code) = check_request(&sim.cfg, auth, body).err()?;
    let body = openai::error_body_coded(&message, "invalid_request_error", code).into_bytes();
    Some(respond(stream, status, "application/json", body, keep).await)
}

/// Answers with an injected fault, if one applies.
async fn inject(sim: &Rc<Sim>, stream: &mut Stream, keep: bool) -> Option<io::Result<bool>> {
    let f = sim.faults.borrow().clone();
    let fail = f.fail_rate > 0.0 && sim.rng.borrow_mut().f64() < f.fail_rate;
    if !(f.garbage || f.http_status.is_some() || fail) {
        return None;
    }
    sim.stats.borrow_mut().faults_injected += 1;
    if f.garbage {
        let (r, _) = stream
            .write_all(b"\x00\x7fSSH-2.0-garbage\r\n\xff\xfe not http at all\r\n\r\n".to_vec())
            .await;
        return Some(r.map(|_| false));
    }
    let status = f
        .http_status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = openai::error_body("injected fault", "server_error", status.as_u16()).into_bytes();
    let mut b = http::Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_LENGTH, body.len());
    if let (Some(s), Some(_)) = (f.retry_after_secs, f.http_status) {
        b = b.header(RETRY_AFTER, s);
    }
    Some(write_response(stream, b, body, keep).await)
}

fn bad_request(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, e.to_string())
}

/// Which streaming format a response uses.
#[derive(Debug, Clone, Copy)]
enum Format {
    /// `chat.completion.chunk`s.
    Chat,
    /// `text_completion` chunks, choices by index.
    Completions,
}

async fn chat(sim: &Rc<Sim>, stream: &mut Stream, body: &[u8], keep: bool) -> io::Result<bool> {
    sim.stats.borrow_mut().chat_requests += 1;
    let req: openai::ChatRequestIn = match serde_json::from_slice(body).map_err(bad_request) {
        Ok(r) => r,
        Err((s, m)) => return respond_error(stream, s, &m, keep).await,
    };
    let messages: Vec<ChatMessage> = req.messages.iter().map(|m| m.to_message()).collect();
    if messages.is_empty() {
        return respond_error(
            stream,
            StatusCode::BAD_REQUEST,
            "messages must not be empty",
            keep,
        )
        .await;
    }
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(sim.cfg.max_tokens);
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let prompt_tokens = count_prompt_tokens(&messages);
    sim.stats.borrow_mut().prompt_tokens += u64::from(prompt_tokens);
    let mailbox = Rc::new(Mailbox::default());
    let length = Length::of(body);
    let seq = sim.add(Instant::now(), &mailbox, 0, &messages, max_tokens, length);
    let id = sim.meta_id("chatcmpl");
    let model = req.model.unwrap_or_else(|| sim.cfg.model.clone());
    let meta = ChunkMeta {
        id: &id,
        created: unix_now(),
        model: &model,
    };
    if !req.stream {
        let (texts, usage) = collect(&mailbox, 1).await;
        let (text, finish) = texts
            .into_iter()
            .next()
            .unwrap_or(("".into(), FinishReason::Stop));
        let body = openai::chat_response(meta, &text, finish, usage).into_bytes();
        return respond(stream, StatusCode::OK, "application/json", body, keep).await;
    }
    let usage = include_usage.then_some(prompt_tokens);
    stream_out(
        sim,
        stream,
        &mailbox,
        &[seq],
        meta,
        Format::Chat,
        usage,
        keep,
    )
    .await
}

async fn completions(
    sim: &Rc<Sim>,
    stream: &mut Stream,
    body: &[u8],
    keep: bool,
) -> io::Result<bool> {
    let req: openai::CompletionsRequestIn = match serde_json::from_slice(body).map_err(bad_request)
    {
        Ok(r) => r,
        Err((s, m)) => {
            sim.stats.borrow_mut().completion_requests += 1;
            return respond_error(stream, s, &m, keep).await;
        }
    };
    let prompts = req.prompt.into_vec();
    {
        let mut st = sim.stats.borrow_mut();
        st.completion_requests += 1;
        if prompts.len() > 1 {
            st.batched_requests += 1;
        }
        st.largest_batch = st.largest_batch.max(prompts.len() as u64);
    }
    if prompts.is_empty() {
        return respond_error(
            stream,
            StatusCode::BAD_REQUEST,
            "prompt must not be empty",
            keep,
        )
        .await;
    }
    let max_tokens = req.max_tokens.unwrap_or(16);
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let mailbox = Rc::new(Mailbox::default());
    let mut seqs = Vec::with_capacity(prompts.len());
    let mut prompt_tokens = 0u32;
    let now = Instant::now();
    let length = Length::of(body);
    for (i, p) in prompts.iter().enumerate() {
        let messages = openai::parse_chatml(p)
            .unwrap_or_else(|| vec![ChatMessage::new(Role::User, p.as_str())]);
        prompt_tokens += count_tokens(p);
        seqs.push(sim.add(now, &mailbox, i as u32, &messages, max_tokens, length));
    }
    sim.stats.borrow_mut().prompt_tokens += u64::from(prompt_tokens);
    let id = sim.meta_id("cmpl");
    let model = req.model.unwrap_or_else(|| sim.cfg.model.clone());
    let meta = ChunkMeta {
        id: &id,
        created: unix_now(),
        model: &model,
    };
    if !req.stream {
        let (choices, mut usage) = collect(&mailbox, prompts.len()).await;
        usage.prompt_tokens = prompt_tokens;
        let body = openai::completion_response(meta, &choices, usage).into_bytes();
        return respond(stream, StatusCode::OK, "application/json", body, keep).await;
    }
    let usage = include_usage.then_some(prompt_tokens);
    stream_out(
        sim,
        stream,
        &mailbox,
        &seqs,
        meta,
        Format::Completions,
        usage,
        keep,
    )
    .await
}

async fn embeddings(
    sim: &Rc<Sim>,
    stream: &mut Stream,
    body: &[u8],
    keep: bool,
) -> io::Result<bool> {
    sim.stats.borrow_mut().embedding_requests += 1;
    let req: openai::EmbeddingsRequestIn = match serde_json::from_slice(body).map_err(bad_request) {
        Ok(r) => r,
        Err((s, m)) => return respond_error(stream, s, &m, keep).await,
    };
    let inputs = req.input.into_vec();
    sim.stats.borrow_mut().embedded_texts += inputs.len() as u64;
    let vectors: Vec<Vec<f32>> = inputs
        .iter()
        .map(|t| embed(t, sim.cfg.embedding_dim))
        .collect();
    let tokens = inputs.iter().map(|t| count_tokens(t)).sum();
    let model = req.model.unwrap_or_else(|| sim.cfg.model.clone());
    let body = openai::embeddings_response(&model, &vectors, tokens).into_bytes();
    respond(stream, StatusCode::OK, "application/json", body, keep).await
}

/// Waits for `n` sequences of a mailbox to finish; their texts by index.
async fn collect(mailbox: &Mailbox, n: usize) -> (Vec<(String, FinishReason)>, Usage) {
    let mut texts = vec![(String::new(), FinishReason::Stop); n];
    let mut usage = Usage::default();
    let mut live = n;
    while live > 0 {
        mailbox.signal.wait().await;
        let pending: Vec<(u32, SimEvent)> = mailbox.events.borrow_mut().drain(..).collect();
        for (i, ev) in pending {
            let Some(slot) = texts.get_mut(i as usize) else {
                continue;
            };
            match ev {
                SimEvent::Token { text, .. } => slot.0.push_str(&text),
                SimEvent::Finished {
                    reason, usage: u, ..
                } => {
                    slot.1 = reason;
                    usage.prompt_tokens += u.prompt_tokens;
                    usage.completion_tokens += u.completion_tokens;
                    live -= 1;
                }
            }
        }
    }
    (texts, usage)
}

fn sse(out: &mut Vec<u8>, data: &str) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Streams the sequences `seqs` of `mailbox` as server-sent events.
/// `usage` is the prompt's tokens when a usage chunk was asked for.
#[allow(clippy::too_many_arguments)]
async fn stream_out(
    sim: &Rc<Sim>,
    stream: &mut Stream,
    mailbox: &Mailbox,
    seqs: &[SeqId],
    meta: ChunkMeta<'_>,
    format: Format,
    usage: Option<u32>,
    keep: bool,
) -> io::Result<bool> {
    let started = Instant::now();
    // Which choices have had their first token (for the server's own TTFT).
    let mut first_seen = vec![false; seqs.len()];
    let mut out = Vec::with_capacity(4096);
    let head = http::Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/event-stream; charset=utf-8")
        .header(CACHE_CONTROL, "no-cache")
        .header(TRANSFER_ENCODING, "chunked")
        .body(())
        .map_err(io::Error::other)?;
    encode_head(&head, &mut out);
    let mut events = Vec::with_capacity(4096);
    if let Format::Chat = format {
        sse(&mut events, &openai::chat_chunk(meta, ChatDelta::Role));
    }
    encode_chunk(&events, &mut out);
    sim.stats.borrow_mut().streams_started += 1;
    let mut live = seqs.len();
    let mut sent = 0u32;
    loop {
        let (r, b) = stream.write_all(out).await;
        out = b;
        out.clear();
        if r.is_err() {
            sim.cancel(seqs);
            sim.stats.borrow_mut().streams_cancelled += 1;
            return Ok(false);
        }
        if live == 0 {
            sim.stats.borrow_mut().streams_completed += 1;
            return Ok(keep);
        }
        mailbox.signal.wait().await;
        events.clear();
        let pending: Vec<(u32, SimEvent)> = mailbox.events.borrow_mut().drain(..).collect();
        for (index, ev) in pending {
            match ev {
                SimEvent::Token { text, .. } => {
                    let (stall, drop) = {
                        let f = sim.faults.borrow();
                        (
                            f.stall_after_tokens.is_some_and(|n| sent >= n),
                            f.drop_after_tokens.is_some_and(|n| sent >= n),
                        )
                    };
                    if stall || drop {
                        sim.cancel(seqs);
                        encode_chunk(&events, &mut out);
                        let (r, _) = stream.write_all(out).await;
                        if stall && r.is_ok() {
                            wait_for_close(stream).await;
                        }
                        sim.stats.borrow_mut().streams_cancelled += u64::from(stall);
                        return Ok(false);
                    }
                    let chunk = match format {
                        Format::Chat => openai::chat_chunk(meta, ChatDelta::Content(&text)),
                        Format::Completions => openai::completion_chunk(meta, index, &text, None),
                    };
                    sse(&mut events, &chunk);
                    sent += 1;
                    sim.stats.borrow_mut().tokens_sent += 1;
                    if let Some(seen) = first_seen.get_mut(index as usize) {
                        if !*seen {
                            *seen = true;
                            let us = started.elapsed().as_micros().max(1) as u64;
                            let _ = sim.ttft_us.borrow_mut().record(us);
                        }
                    }
                }
                SimEvent::Finished { reason, .. } => {
                    live = live.saturating_sub(1);
                    let chunk = match format {
                        Format::Chat => openai::chat_chunk(meta, ChatDelta::Finish(reason)),
                        Format::Completions => {
                            openai::completion_chunk(meta, index, "", Some(reason))
                        }
                    };
                    sse(&mut events, &chunk);
                    if live == 0 {
                        if let Some(prompt_tokens) = usage {
                            let object = match format {
                                Format::Chat => "chat.completion.chunk",
                                Format::Completions => "text_completion",
                            };
                            let u = Usage {
                                prompt_tokens,
                                completion_tokens: sent,
                            };
                            sse(&mut events, &openai::usage_chunk(meta, object, u));
                        }
                        sse(&mut events, "[DONE]");
                    }
                }
            }
        }
        encode_chunk(&events, &mut out);
        if live == 0 {
            out.extend_from_slice(LAST_CHUNK);
        }
    }
}

/// Holds a stalled stream open until the client closes its end.
async fn wait_for_close(stream: &mut Stream) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let (r, b) = stream.read(buf).await;
        buf = b;
        match r {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn write_response(
    stream: &mut Stream,
    b: http::response::Builder,
    body: Vec<u8>,
    keep: bool,
) -> io::Result<bool> {
    let b = if keep {
        b
    } else {
        b.header(http::header::CONNECTION, "close")
    };
    let head = b.body(()).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(256 + body.len());
    encode_head(&head, &mut out);
    out.extend_from_slice(&body);
    let (r, _) = stream.write_all(out).await;
    r.map(|_| keep)
}

async fn respond(
    stream: &mut Stream,
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
    keep: bool,
) -> io::Result<bool> {
    let b = http::Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CONTENT_LENGTH, body.len());
    write_response(stream, b, body, keep).await
}

async fn respond_error(
    stream: &mut Stream,
    status: StatusCode,
    message: &str,
    keep: bool,
) -> io::Result<bool> {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let body = openai::error_body(message, kind, status.as_u16()).into_bytes();
    respond(stream, status, "application/json", body, keep).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(n: usize) -> Vec<String> {
        (0..n).map(|i| format!(" w{i}")).collect()
    }

    #[test]
    fn length_parameters_make_answers_the_length_asked_for() {
        let body = br#"{"max_tokens": 9, "ignore_eos": true, "min_tokens": 9}"#;
        let l = Length::of(body);
        assert_eq!(
            l,
            Length {
                ignore_eos: true,
                min_tokens: Some(9)
            }
        );
        assert_eq!(
            l.fit(pieces(3), 9).len(),
            10,
            "past max_tokens: cut with length"
        );
        let min = Length {
            ignore_eos: false,
            min_tokens: Some(5),
        };
        let p = min.fit(pieces(3), 100);
        assert_eq!(p.len(), 5);
        assert_eq!(p[3], " w0", "repeats the answer, one token a piece");
        let bounded = min.fit(pieces(3), 4);
        assert_eq!(bounded.len(), 4, "max_tokens bounds min_tokens");
        let as_is = Length::default().fit(pieces(3), 1);
        assert_eq!(as_is.len(), 3, "nothing asked: as is");
        assert_eq!(Length::of(b"not json"), Length::default());
        assert_eq!(Length::default().fit(Vec::new(), 9).len(), 1);
    }
}
