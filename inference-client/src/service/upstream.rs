//! The HTTP transport: upstream calls to OpenAI-compatible endpoints over
//! HTTP/1.1 keep-alive connections, one monoio task per call.
//!
//! A generation call is a streamed `/v1/chat/completions` (one member) or
//! `/v1/completions` with an array `prompt` (a batch); its bytes go through
//! the chunked and SSE decoders and the OpenAI chunk parser, and each network
//! read becomes one [`UpMsg::Items`]. The call ends with [`UpMsg::End`] or
//! [`UpMsg::Fault`]. Closing a call ([`Transport::close`]) drops its task,
//! and with it the connection: that is how a server (vLLM included) learns
//! to abort the sequence. Idle connections are kept per endpoint for reuse;
//! a request whose reused connection turns out closed before any response
//! byte is retried once on a fresh one.
//!
//! `https` endpoints speak TLS (rustls, [`crate::tls`]) on the same
//! connections. At start each endpoint is probed ([`HttpTransport::probe_all`]);
//! a failed call is logged with the endpoint's URL and its cause, at most
//! once per [`WARN_EVERY`] per endpoint (a count of the others follows), and
//! health checks log an endpoint going down and coming back.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::Method;

use super::config::{Api, ApiKey, EndpointConfig, ServiceConfig, Target};
use super::core::{Call, Transport, UpId, UpMsg};
use crate::error::Fault;
use crate::http::conn::{read_response, Collect, Conn, ReadFailure, ResponseSink, TlsTarget};
use crate::http::request;
use crate::http::Part;
use crate::openai::{self, StreamItem};
use crate::probe::{self, Health, ProbeBoard, ProbeReport};
use crate::signal::Signal;
use crate::sse::SseDecoder;

/// Largest error or embeddings body kept.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Largest error body kept for the log.
const MAX_ERROR_BODY: usize = 4096;
/// Largest `/v1/models` body the probe reads.
const MAX_MODELS_BODY: usize = 1024 * 1024;
/// At most one warning per endpoint this often about failed calls.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(5);

/// One endpoint as the transport sees it.
struct Endpoint {
    /// The URL as configured, for the log.
    url: String,
    addr: SocketAddr,
    tls: Option<TlsTarget>,
    authority: String,
    base: String,
    api: Api,
    model: String,
    api_key: Option<ApiKey>,
    include_usage: bool,
    health_path: String,
    idle: RefCell<Vec<Conn>>,
    max_idle: usize,
    /// When a failed call was last logged, and how many were not since.
    last_warn: Cell<Option<Instant>>,
    unlogged: Cell<u64>,
    /// The last health check's verdict (to log changes only).
    healthy: Cell<Option<bool>>,
    /// The start-up probe reports the first state: the first health
    /// check's failure is not logged again.
    probed: bool,
}

#[derive(Clone, Copy)]
struct Timeouts {
    connect: Duration,
    read: Duration,
    health: Duration,
}

impl Endpoint {
    /// An idle connection, or a new one.
    async fn checkout(&self, timeout: Duration) -> Result<Conn, Fault> {
        let idle = self.idle.borrow_mut().pop();
        match idle {
            Some(c) => Ok(c),
            None => Conn::connect(self.addr, self.tls.as_ref(), timeout).await,
        }
    }

    fn checkin(&self, mut conn: Conn) {
        conn.reused = true;
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// Encodes a request to `path` (under the endpoint's base path).
    fn request(&self, method: Method, path: &str, accept: &str, body: Vec<u8>) -> Vec<u8> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header(HOST, &self.authority)
            .header(USER_AGENT, "livechat-inference-client/0.1")
            .header(ACCEPT, accept);
        if !body.is_empty() {
            b = b.header(CONTENT_TYPE, "application/json");
        }
        if let Some(k) = &self.api_key {
            b = b.header(AUTHORIZATION, format!("Bearer {}", k.expose()));
        }
        let mut out = Vec::with_capacity(256 + body.len());
        match b.body(body) {
            Ok(req) => request::encode(&req, &mut out),
            Err(e) => tracing::error!(error = %e, "cannot build an upstream request"),
        }
        out
    }

    /// Logs a failed call (`what`: the route) with the URL and its cause,
    /// rate-limited; a 429 or 503 with `Retry-After` is the server pacing
    /// us, not a failure, and goes to the debug log.
    fn log_failure(&self, what: &str, fault: &Fault) {
        let cause = probe::explain(fault, &self.model, self.api_key.is_some());
        if fault.overloaded().is_some() {
            tracing::debug!(endpoint = %self.url, "inference endpoint {}: {what} paced: {cause}", self.url);
            return;
        }
        let now = Instant::now();
        if self
            .last_warn
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < WARN_EVERY)
        {
            self.unlogged.set(self.unlogged.get() + 1);
            return;
        }
        self.last_warn.set(Some(now));
        let unlogged = self.unlogged.replace(0);
        if unlogged > 0 {
            tracing::warn!(
                endpoint = %self.url,
                "inference endpoint {}: {what} failed: {cause} ({unlogged} more failed calls not logged since the last warning)",
                self.url
            );
        } else {
            tracing::warn!(endpoint = %self.url, "inference endpoint {}: {what} failed: {cause}", self.url);
        }
    }

    /// Sends `req` and reads the response into `sink`, retrying once on a
    /// fresh connection when a reused one was found closed.
    async fn exchange(
        &self,
        req: Vec<u8>,
        t: Timeouts,
        read_timeout: Duration,
        mut make_sink: impl FnMut() -> Box<dyn StatusSink>,
    ) -> Result<Box<dyn StatusSink>, Fault> {
        let mut retried = false;
        loop {
            let mut conn = self.checkout(t.connect).await?;
            let reused = conn.reused;
            let mut sink = make_sink();
            let written = conn.write_all(req.clone()).await;
            let result = match written {
                Ok(()) => read_response(&mut conn, read_timeout, &mut sink).await,
                Err(fault) => Err(ReadFailure {
                    fault,
                    received_any: false,
                }),
            };
            match result {
                Ok(reusable) => {
                    if reusable {
                        self.checkin(conn);
                    }
                    return Ok(sink);
                }
                Err(f) if reused && !retried && !f.received_any => {
                    retried = true;
                    continue;
                }
                Err(f) => return Err(f.fault),
            }
        }
    }
}

/// A response sink that also reports the status and error body.
trait StatusSink: ResponseSink {
    /// The status, the `Retry-After`, and the error body (when not 2xx).
    fn outcome(&self) -> (u16, Option<Duration>, &[u8]);
}

impl ResponseSink for Box<dyn StatusSink> {
    fn part(&mut self, part: Part<'_>) -> Result<(), Fault> {
        (**self).part(part)
    }
    fn after_read(&mut self, at: Instant) {
        (**self).after_read(at)
    }
}

impl StatusSink for Collect {
    fn outcome(&self) -> (u16, Option<Duration>, &[u8]) {
        (self.status, self.retry_after, &self.body)
    }
}

/// Decodes a streamed completion into [`UpMsg::Items`], one per read.
struct StreamSink {
    up: UpId,
    tx: flume::Sender<UpMsg>,
    sse: SseDecoder,
    items: Vec<StreamItem>,
    error: Option<Collect>,
    status: u16,
}

impl ResponseSink for StreamSink {
    fn part(&mut self, part: Part<'_>) -> Result<(), Fault> {
        match part {
            Part::Head(h) => {
                self.status = h.status.as_u16();
                if !h.status.is_success() {
                    let mut c = Collect::new(MAX_ERROR_BODY);
                    c.part(Part::Head(h))?;
                    self.error = Some(c);
                }
                Ok(())
            }
            Part::Data(d) => {
                if let Some(c) = &mut self.error {
                    return c.part(Part::Data(d));
                }
                let items = &mut self.items;
                let mut err = None;
                self.sse
                    .feed(d, |ev| {
                        if err.is_none() {
                            if let Err(e) = openai::parse_stream_event(ev.data, items) {
                                err = Some(e);
                            }
                        }
                    })
                    .map_err(|e| Fault::Protocol(e.to_string()))?;
                match err {
                    Some(e) => Err(Fault::Protocol(e.to_string())),
                    None => Ok(()),
                }
            }
            Part::End => Ok(()),
        }
    }

    fn after_read(&mut self, at: Instant) {
        if !self.items.is_empty() {
            let items = std::mem::take(&mut self.items);
            let _ = self.tx.send(UpMsg::Items {
                up: self.up,
                at,
                items,
            });
        }
    }
}

impl StatusSink for StreamSink {
    fn outcome(&self) -> (u16, Option<Duration>, &[u8]) {
        match &self.error {
            Some(c) => (c.status, c.retry_after, &c.body),
            None => (self.status, None, &[]),
        }
    }
}

fn status_fault(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Fault {
    Fault::Status {
        status,
        retry_after,
        body: openai::error_message(body),
    }
}

/// The transport.
pub(crate) struct HttpTransport {
    endpoints: Vec<Rc<Endpoint>>,
    tasks: HashMap<UpId, Rc<Signal>>,
    tx: flume::Sender<UpMsg>,
    timeouts: Timeouts,
    health_running: Vec<Rc<std::cell::Cell<bool>>>,
}

impl HttpTransport {
    /// The transport for `targets`; `tls` is the client settings for the
    /// `https` ones (made by [`crate::tls::client_config`]).
    pub(crate) fn new(
        targets: &[(EndpointConfig, Target, SocketAddr)],
        cfg: &ServiceConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        tx: flume::Sender<UpMsg>,
    ) -> Self {
        HttpTransport {
            endpoints: targets
                .iter()
                .map(|(e, t, addr)| {
                    let tls = match (&tls, t.tls) {
                        (Some(config), true) => {
                            crate::tls::server_name(&t.host).ok().map(|name| TlsTarget {
                                config: config.clone(),
                                name,
                            })
                        }
                        _ => None,
                    };
                    Rc::new(Endpoint {
                        url: e.url.clone(),
                        addr: *addr,
                        tls,
                        authority: t.authority.clone(),
                        base: t.base.clone(),
                        api: e.api,
                        model: e.model.clone().unwrap_or_else(|| cfg.model.clone()),
                        api_key: e.api_key.clone().or_else(|| cfg.api_key.clone()),
                        include_usage: e.include_usage,
                        health_path: e.health_path.clone(),
                        idle: RefCell::new(Vec::new()),
                        max_idle: e.max_sequences,
                        last_warn: Cell::new(None),
                        unlogged: Cell::new(0),
                        healthy: Cell::new(None),
                        probed: cfg.probe_at_start,
                    })
                })
                .collect(),
            health_running: targets
                .iter()
                .map(|_| Rc::new(std::cell::Cell::new(false)))
                .collect(),
            tasks: HashMap::new(),
            tx,
            timeouts: Timeouts {
                connect: cfg.connect_timeout,
                read: cfg.read_timeout,
                health: cfg.health_timeout,
            },
        }
    }

    /// Probes every endpoint with `GET /v1/models`, once, in the
    /// background: logs its URL and what it found (the models it serves and
    /// whether the configured one is among them; a refused key; why it
    /// cannot be reached), and posts the report on `board`.
    pub(crate) fn probe_all(&self, board: Arc<ProbeBoard>) {
        for (i, ep) in self.endpoints.iter().enumerate() {
            let ep = ep.clone();
            let board = board.clone();
            let t = self.timeouts;
            let req = ep.request(Method::GET, "/v1/models", "application/json", Vec::new());
            monoio::spawn(async move {
                let limit = t.health + t.connect;
                let call =
                    ep.exchange(req, t, t.health, || Box::new(Collect::new(MAX_MODELS_BODY)));
                let health = match monoio::time::timeout(limit, call).await {
                    Ok(Ok(sink)) => {
                        let (status, _, body) = sink.outcome();
                        probe::judge(status, body, &ep.model, ep.api_key.is_some())
                    }
                    Ok(Err(fault)) => probe::unreachable(&fault),
                    Err(_) => Health::Unreachable(format!("no reply within {limit:?}")),
                };
                let report = ProbeReport {
                    url: ep.url.clone(),
                    model: ep.model.clone(),
                    health,
                };
                if report.is_ready() {
                    tracing::info!(endpoint = %ep.url, "inference endpoint {}: {report}", ep.url);
                } else {
                    tracing::warn!(endpoint = %ep.url, "inference endpoint {}: {report}", ep.url);
                }
                board.post(i, report);
            });
        }
    }
}

impl Transport for HttpTransport {
    fn start(&mut self, _now: Instant, up: UpId, endpoint: usize, call: Call) {
        let Some(ep) = self.endpoints.get(endpoint).cloned() else {
            let _ = self.tx.send(UpMsg::Fault {
                up,
                fault: Fault::Connect(format!("no endpoint {endpoint}")),
            });
            return;
        };
        let cancel = Rc::new(Signal::new());
        self.tasks.insert(up, cancel.clone());
        let tx = self.tx.clone();
        let t = self.timeouts;
        match call {
            Call::Generate { members, batched } => {
                let max_tokens = members.iter().map(|m| m.max_tokens).max().unwrap_or(1);
                let (path, body) = if batched || ep.api == Api::Completions {
                    let prompts: Vec<String> = members
                        .iter()
                        .map(|m| openai::render_chatml(&m.messages))
                        .collect();
                    (
                        "/v1/completions",
                        openai::completions_request(
                            &ep.model,
                            &prompts,
                            max_tokens,
                            ep.include_usage,
                        ),
                    )
                } else {
                    let messages = members.first().map_or(&[][..], |m| &m.messages[..]);
                    (
                        "/v1/chat/completions",
                        openai::chat_request(&ep.model, messages, max_tokens, ep.include_usage),
                    )
                };
                let req = ep.request(Method::POST, path, "text/event-stream", body);
                monoio::spawn(async move {
                    let call = ep.exchange(req, t, t.read, || {
                        Box::new(StreamSink {
                            up,
                            tx: tx.clone(),
                            sse: SseDecoder::new(),
                            items: Vec::new(),
                            error: None,
                            status: 0,
                        })
                    });
                    monoio::select! {
                        r = call => {
                            let msg = match r {
                                Ok(sink) => match sink.outcome() {
                                    (200..=299, _, _) => UpMsg::End { up },
                                    (s, ra, body) => UpMsg::Fault { up, fault: status_fault(s, ra, body) },
                                },
                                Err(fault) => UpMsg::Fault { up, fault },
                            };
                            if let UpMsg::Fault { fault, .. } = &msg {
                                ep.log_failure(path, fault);
                            }
                            let _ = tx.send(msg);
                        }
                        _ = cancel.wait() => {}
                    }
                });
            }
            Call::Embed { texts } => {
                let n = texts.len();
                let body = openai::embeddings_request(&ep.model, &texts);
                let req = ep.request(Method::POST, "/v1/embeddings", "application/json", body);
                monoio::spawn(async move {
                    let call = ep.exchange(req, t, t.read, || Box::new(Collect::new(MAX_BODY)));
                    monoio::select! {
                        r = call => {
                            let msg = match r {
                                Ok(sink) => match sink.outcome() {
                                    (200..=299, _, body) => match openai::parse_embeddings(body, n) {
                                        Ok(vectors) => UpMsg::Embeddings { up, at: Instant::now(), vectors },
                                        Err(e) => UpMsg::Fault { up, fault: Fault::Protocol(e.to_string()) },
                                    },
                                    (s, ra, body) => UpMsg::Fault { up, fault: status_fault(s, ra, body) },
                                },
                                Err(fault) => UpMsg::Fault { up, fault },
                            };
                            if let UpMsg::Fault { fault, .. } = &msg {
                                ep.log_failure("/v1/embeddings", fault);
                            }
                            let _ = tx.send(msg);
                        }
                        _ = cancel.wait() => {}
                    }
                });
            }
        }
    }

    fn close(&mut self, _now: Instant, up: UpId) {
        if let Some(c) = self.tasks.remove(&up) {
            c.notify();
        }
    }

    fn check_health(&mut self, endpoint: usize) {
        let (Some(ep), Some(running)) = (
            self.endpoints.get(endpoint).cloned(),
            self.health_running.get(endpoint).cloned(),
        ) else {
            return;
        };
        if running.replace(true) {
            return; // the last check is still out
        }
        let tx = self.tx.clone();
        let t = self.timeouts;
        let req = ep.request(Method::GET, &ep.health_path, "*/*", Vec::new());
        monoio::spawn(async move {
            let call = ep.exchange(req, t, t.health, || Box::new(Collect::new(MAX_ERROR_BODY)));
            let limit = t.health + t.connect;
            let verdict = match monoio::time::timeout(limit, call).await {
                Ok(Ok(sink)) => match sink.outcome() {
                    (200..=299, _, _) => Ok(()),
                    (s, ra, body) => Err(probe::explain(
                        &status_fault(s, ra, body),
                        &ep.model,
                        ep.api_key.is_some(),
                    )),
                },
                Ok(Err(fault)) => Err(fault.to_string()),
                Err(_) => Err(format!("no reply within {limit:?}")),
            };
            let ok = verdict.is_ok();
            // Log changes only: an endpoint going down, or coming back.
            match (ep.healthy.replace(Some(ok)), verdict) {
                (None, Err(_)) if ep.probed => {}
                (Some(true) | None, Err(why)) => tracing::warn!(
                    endpoint = %ep.url,
                    "inference endpoint {}: health check {} failed: {why}",
                    ep.url,
                    ep.health_path
                ),
                (Some(false), Ok(())) => tracing::info!(
                    endpoint = %ep.url,
                    "inference endpoint {}: health check passes again",
                    ep.url
                ),
                _ => {}
            }
            running.set(false);
            let _ = tx.send(UpMsg::Health { endpoint, ok });
        });
    }
}
