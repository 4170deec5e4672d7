//! The inference service: one thread, with its own monoio runtime (io_uring,
//! or epoll where io_uring cannot start), that owns the pool's HTTP
//! connections, the batcher and the admission estimator, and serves every
//! gateway worker through a [`Client`].
//!
//! - Workers talk to it over one flume channel ([`Client::submit`],
//!   [`Client::cancel`], [`Client::embed`]), so batching sees the requests of
//!   every worker without a lock.
//! - Admission ([`Client::admit`]) is decided on the worker's own thread from
//!   atomics the service publishes after each round of work.
//! - Each request's events go to the [`EventSink`] its client was made with:
//!   zero or more [`Event::Token`], then exactly one [`Event::Done`] or
//!   [`Event::Failed`] (or one [`Event::Embeddings`] or `Failed` for
//!   [`Client::embed`]). A cancelled request gets `Failed(Cancelled)`.
//! - Dropping the [`Service`] (or [`Service::shutdown`]) fails what is
//!   pending with `Failed(Shutdown)`, closes every upstream connection and
//!   joins the thread.
//!
//! The thread's loop is a thin shell: it feeds commands, upstream messages
//! and the time to the state machine in `core`, whose upstream calls go
//! through a transport: `upstream` (HTTP, the real client) or `inprocess`
//! (the simulator's engine, no HTTP).

pub mod config;
mod core;
mod inprocess;
mod upstream;

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use config::{Api, ApiKey, Backend, EndpointConfig, ServiceConfig, IN_PROCESS};

use self::core::{Cmd, Core, CoreConfig, UpMsg};
use crate::admission::{self, AdmissionConfig, Ask, Busy, Places, Published};
use crate::batcher::BatcherConfig;
use crate::error::InferenceError;
use crate::openai::{ChatMessage, FinishReason, Usage};
use crate::pool::Pool;
use crate::probe::{ProbeBoard, ProbeReport};
use crate::runtime::{self, DriverKind};
use crate::stats::{ClientCounters, Stats};

/// A request's id: unique among one client's requests in flight.
pub type RequestId = u64;

/// A generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Its id (unique per client while in flight).
    pub id: RequestId,
    /// The prompt: instructions, then the conversation.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// When to give up (`None`: submitted + [`ServiceConfig::request_deadline`]).
    pub deadline: Option<Instant>,
    /// When the requester submitted it (TTFT and timings count from here).
    pub submitted: Instant,
    /// When admission let it in and what it predicted for its first token
    /// (set by [`Client::submit_admitted`]): the service learns from the
    /// difference how far off its predictions run.
    pub admitted: Option<(Instant, Duration)>,
}

impl GenerateRequest {
    /// A request submitted now, with the service's default deadline.
    pub fn new(id: RequestId, messages: Vec<ChatMessage>, max_tokens: u32) -> Self {
        GenerateRequest {
            id,
            messages,
            max_tokens,
            deadline: None,
            submitted: Instant::now(),
            admitted: None,
        }
    }
}

/// Where the time of a finished request went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Submitted to sent upstream (the queue and the batch wait).
    pub queued: Duration,
    /// Submitted to the first token handed to the sink (the whole time when
    /// no token came).
    pub ttft: Duration,
    /// Sent upstream to its first token read back (the pool's share).
    pub upstream_ttft: Duration,
    /// Submitted to done.
    pub total: Duration,
    /// Time in the service's own code (see [`Stats::overhead`]).
    pub overhead: Duration,
    /// Endpoints tried (more than one after a failover).
    pub attempts: u32,
    /// Index of the endpoint that answered (0 in-process).
    pub endpoint: usize,
}

/// What the service tells a requester.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A piece of the reply.
    Token {
        /// The request.
        id: RequestId,
        /// The text.
        text: String,
    },
    /// The reply is complete.
    Done {
        /// The request.
        id: RequestId,
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts (the server's, else estimates).
        usage: Usage,
        /// Where the time went.
        timings: Timings,
    },
    /// The request failed (no more events follow).
    Failed {
        /// The request.
        id: RequestId,
        /// Why.
        error: InferenceError,
    },
    /// The vectors of an [`Client::embed`] request, in input order.
    Embeddings {
        /// The request.
        id: RequestId,
        /// One vector per text.
        vectors: Vec<Vec<f32>>,
    },
}

impl Event {
    /// The request the event is about.
    pub fn id(&self) -> RequestId {
        match self {
            Event::Token { id, .. }
            | Event::Done { id, .. }
            | Event::Failed { id, .. }
            | Event::Embeddings { id, .. } => *id,
        }
    }

    /// Whether no more events follow for this request.
    pub fn is_final(&self) -> bool {
        !matches!(self, Event::Token { .. })
    }
}

/// Where a client's events go. Called on the service thread; it must not
/// block (the gateway implements it over its workers' flume inboxes).
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one event.
    fn send(&self, ev: Event);
}

impl EventSink for flume::Sender<Event> {
    fn send(&self, ev: Event) {
        let _ = flume::Sender::send(self, ev);
    }
}

/// An [`EventSink`] from a closure.
pub struct FnSink<F>(pub F);

impl<F: Fn(Event) + Send + Sync + 'static> EventSink for FnSink<F> {
    fn send(&self, ev: Event) {
        (self.0)(ev)
    }
}

/// State shared by the service thread and every client.
pub(crate) struct Shared {
    pub(crate) stats: Stats,
    pub(crate) published: Published,
    pub(crate) admission: AdmissionConfig,
    /// The line of places booked by refusals.
    pub(crate) places: Places,
}

/// The running service. Dropping it shuts it down.
pub struct Service {
    tx: flume::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    next_client: AtomicU32,
    driver: DriverKind,
    probes: Arc<ProbeBoard>,
}

impl Service {
    /// Starts the service thread (named `lc-inference`). Fails on a bad
    /// configuration or when no runtime can start; an endpoint that is down
    /// is not an error (requests fail over, or fail as unavailable).
    pub fn start(cfg: ServiceConfig) -> Result<Service, InferenceError> {
        cfg.validate()?;
        let admission = admission_config(&cfg);
        let shared = Arc::new(Shared {
            stats: Stats::default(),
            published: Published::default(),
            admission: admission.clone(),
            places: Places::default(),
        });
        // Resolve endpoints here, on the caller's thread (blocking DNS).
        let targets = match &cfg.backend {
            Backend::Endpoints(eps) => eps
                .iter()
                .map(|e| {
                    let t = config::parse_url(&e.url)?;
                    let addr = config::resolve(&t)?;
                    Ok((e.clone(), t, addr))
                })
                .collect::<Result<Vec<_>, InferenceError>>()?,
            Backend::InProcess(_) => Vec::new(),
        };
        // Loading the system's roots reads files: here too, and only when
        // some endpoint needs them.
        let tls = if targets.iter().any(|(_, t, _)| t.tls) {
            let c = crate::tls::client_config(cfg.ca_file.as_deref())
                .map_err(|e| InferenceError::Config(e.to_string()))?;
            Some(c)
        } else {
            if let Some(p) = &cfg.ca_file {
                tracing::warn!(ca_file = %p.display(), "a CA file is set but no endpoint uses https");
            }
            None
        };
        let probes = Arc::new(ProbeBoard::new(if cfg.probe_at_start {
            targets.len()
        } else {
            0
        }));
        let thread_probes = probes.clone();
        let (tx, rx) = flume::unbounded::<Cmd>();
        let (ready_tx, ready_rx) = flume::bounded::<std::io::Result<DriverKind>>(1);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("lc-inference".into())
            .spawn(move || {
                let ready = ready_tx.clone();
                let r = runtime::block_on(cfg.io_driver, move |kind| {
                    thread_shared.stats.driver.store(
                        match kind {
                            DriverKind::Uring => 1,
                            DriverKind::Epoll => 2,
                        },
                        Relaxed,
                    );
                    let _ = ready.send(Ok(kind));
                    run(
                        cfg,
                        admission,
                        targets,
                        tls,
                        thread_shared,
                        thread_probes,
                        rx,
                    )
                });
                if let Err(e) = r {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| InferenceError::Start(format!("cannot spawn its thread: {e}")))?;
        let driver = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(kind)) => kind,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(InferenceError::Start(e.to_string()));
            }
            Err(_) => {
                return Err(InferenceError::Start(
                    "the service thread did not start".into(),
                ))
            }
        };
        tracing::info!(driver = driver.as_str(), "inference service started");
        Ok(Service {
            tx,
            thread: Some(thread),
            shared,
            next_client: AtomicU32::new(1),
            driver,
            probes,
        })
    }

    /// A handle for one gateway worker; the events of its requests go to
    /// `sink`. Move it into the worker's thread.
    pub fn client(&self, sink: Box<dyn EventSink>) -> Client {
        let id = self.next_client.fetch_add(1, Relaxed);
        let sink: Arc<dyn EventSink> = Arc::from(sink);
        let counters = self.shared.stats.register();
        let _ = self.tx.send(Cmd::Register {
            client: id,
            sink: sink.clone(),
            counters: counters.clone(),
        });
        Client {
            id,
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            counters,
            sink,
            _not_sync: PhantomData,
        }
    }

    /// Counters and histograms (read them from any thread).
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The start-up probes' reports (`GET /v1/models` on each endpoint),
    /// waiting up to `wait` for all of them; those in by then, in endpoint
    /// order. Empty in-process or with [`ServiceConfig::probe_at_start`] off.
    /// Each report is also logged as it arrives.
    pub fn probes(&self, wait: Duration) -> Vec<ProbeReport> {
        self.probes.wait(wait)
    }

    /// The io driver the service thread runs on.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    /// Stops the service: pending requests get `Failed(Shutdown)`, upstream
    /// connections close, the thread is joined.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Cmd::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A place in the service's line, given by [`Client::admit`]: it counts as
/// ahead of later requests until it is submitted ([`Client::submit`]) or
/// dropped, whichever thread drops it, so no path that loses a request can
/// leave admission counting it for ever.
///
/// Clones are detached (they hold no place), and all compare equal: a
/// place is not part of what a job is.
#[derive(Debug, Default)]
pub struct Admitted {
    counters: Option<Arc<ClientCounters>>,
    /// When it was admitted and the TTFT predicted then.
    prediction: Option<(Instant, Duration)>,
}

impl Admitted {
    /// An admission that holds no place (no inference service, or tests).
    pub fn detached() -> Self {
        Admitted::default()
    }

    fn consume(mut self) -> Option<(Instant, Duration)> {
        self.counters = None;
        self.prediction.take()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(c) = self.counters.take() {
            c.released.fetch_add(1, Relaxed);
        }
    }
}

impl Clone for Admitted {
    fn clone(&self) -> Self {
        Admitted::detached()
    }
}

impl PartialEq for Admitted {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Admitted {}

/// One gateway worker's handle on the service: `Send` (move it into the
/// worker), not `Sync` (its counters have one writer).
pub struct Client {
    id: u32,
    tx: flume::Sender<Cmd>,
    shared: Arc<Shared>,
    counters: Arc<ClientCounters>,
    sink: Arc<dyn EventSink>,
    _not_sync: PhantomData<Cell<()>>,
}

impl Client {
    /// Surge admission, decided at once on the calling thread: an
    /// [`Admitted`] if the request is predicted to get its first token within
    /// the TTFT budget given the queue, the prompts ahead and the pool's
    /// measured pace, else [`Busy`] with how long to wait before resending
    /// (and, within [`AdmissionConfig::max_retry`], a place in line booked
    /// for the resend). When no endpoint is usable it admits, and the
    /// request then fails as unavailable.
    ///
    /// The queue it counts is the one the service last published plus this
    /// client's own requests still on their way to the service thread, so a
    /// burst from one worker is judged request by request. Submit the
    /// request with the [`Admitted`]; dropping it instead gives the place
    /// back.
    pub fn admit(&self, ask: Ask) -> Result<Admitted, Busy> {
        let cfg = &self.shared.admission;
        let now = Instant::now();
        let s = self.admission_snapshot();
        let places = &self.shared.places;
        let line = if ask.holds_place {
            places.redeem();
            Duration::ZERO
        } else {
            let show = s.show_permille.min(1000) as f64 / 1000.0;
            places.ahead(now, cfg.ttft_budget).mul_f64(show)
        };
        match admission::decide(&s, &ask, line, cfg) {
            Ok(predicted) => {
                self.counters.admitted.inc();
                Ok(Admitted {
                    counters: Some(self.counters.clone()),
                    prediction: Some((now, predicted)),
                })
            }
            Err(excess) => {
                self.counters.refused.inc();
                let wait = excess.clamp(cfg.min_retry, cfg.max_retry);
                let interval = s.interval.max(Duration::from_millis(1));
                let busy = match places.book(now, now + wait, interval, cfg.max_retry) {
                    Some(at) => Busy {
                        retry_after: at.saturating_duration_since(now).max(cfg.min_retry),
                        place: true,
                    },
                    None => Busy {
                        retry_after: cfg.max_retry,
                        place: false,
                    },
                };
                Err(busy)
            }
        }
    }

    /// The predicted time to first token of a request submitted now.
    pub fn predicted_ttft(&self, ask: Ask) -> Duration {
        admission::predict_ttft(&self.admission_snapshot(), &ask, &self.shared.admission)
    }

    /// The state admission decides from: the service's last published
    /// snapshot, with this client's requests in transit counted as queued.
    pub fn admission_snapshot(&self) -> admission::Snapshot {
        let mut s = self.shared.published.load();
        s.unpublished = self.counters.in_transit();
        s
    }

    /// How late a resend may come after its place and still hold it.
    pub fn place_grace(&self) -> Duration {
        self.shared.admission.place_grace
    }

    /// The service's counters and histograms (for a worker's `/metrics`).
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Queues a request admitted by [`Client::admit`], its place handed to
    /// the service's queue; its events arrive at the sink.
    pub fn submit_admitted(&self, req: GenerateRequest, admitted: Admitted) {
        // From here the service's `received` count takes over the place.
        let mut req = req;
        req.admitted = admitted.consume();
        self.submit(req);
    }

    /// Queues a request without asking admission; its events arrive at the
    /// sink.
    pub fn submit(&self, req: GenerateRequest) {
        let id = req.id;
        self.counters.submitted.inc();
        if self
            .tx
            .send(Cmd::Submit {
                client: self.id,
                req,
            })
            .is_err()
        {
            self.sink.send(Event::Failed {
                id,
                error: InferenceError::Shutdown,
            });
        }
    }

    /// The requester left: stops the request and cancels it upstream (its own
    /// stream is closed; a batched request is closed once all its members are
    /// cancelled). A `Failed(Cancelled)` follows unless it had already ended.
    pub fn cancel(&self, id: RequestId) {
        let _ = self.tx.send(Cmd::Cancel {
            client: self.id,
            id,
        });
    }

    /// Embeds `texts` (batched with other requests into `/v1/embeddings`
    /// calls; the in-process simulator hashes words into vectors). The
    /// answer is one [`Event::Embeddings`] or [`Event::Failed`].
    pub fn embed(&self, id: RequestId, texts: Vec<String>) {
        if self
            .tx
            .send(Cmd::Embed {
                client: self.id,
                id,
                texts,
                submitted: Instant::now(),
            })
            .is_err()
        {
            self.sink.send(Event::Failed {
                id,
                error: InferenceError::Shutdown,
            });
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Unregister { client: self.id });
    }
}

/// The admission settings and priors for `cfg`.
fn admission_config(cfg: &ServiceConfig) -> AdmissionConfig {
    let (prefill, ttft, service) = match &cfg.backend {
        Backend::InProcess(o) => (
            o.latency.prefill(1_000).div_f64(1_000.0),
            o.latency.decode(1),
            o.latency.decode(1) * 40,
        ),
        Backend::Endpoints(_) => (
            Duration::from_micros(100),
            Duration::from_millis(50),
            Duration::from_secs(1),
        ),
    };
    AdmissionConfig {
        ttft_budget: cfg.ttft_budget,
        queue_capacity: cfg.queue_capacity,
        max_wait: cfg.max_wait,
        prefill_per_token: cfg.prefill_per_token.unwrap_or(prefill),
        initial_ttft: cfg.initial_ttft.unwrap_or(ttft),
        initial_service: cfg.initial_service.unwrap_or(service),
        ..Default::default()
    }
}

/// The service thread's loop.
async fn run(
    cfg: ServiceConfig,
    admission: AdmissionConfig,
    targets: Vec<(EndpointConfig, config::Target, std::net::SocketAddr)>,
    tls: Option<Arc<rustls::ClientConfig>>,
    shared: Arc<Shared>,
    probes: Arc<ProbeBoard>,
    rx: flume::Receiver<Cmd>,
) {
    let (up_tx, up_rx) = flume::unbounded::<UpMsg>();
    let (transport, caps, batched): (Box<dyn core::Transport>, Vec<usize>, Vec<bool>) =
        match &cfg.backend {
            Backend::InProcess(o) => (
                Box::new(inprocess::InProcess::new(o.clone())),
                vec![o.latency.kv_capacity],
                vec![true],
            ),
            Backend::Endpoints(_) => (
                {
                    let http = upstream::HttpTransport::new(&targets, &cfg, tls, up_tx.clone());
                    if cfg.probe_at_start {
                        http.probe_all(probes);
                    }
                    Box::new(http)
                },
                targets.iter().map(|(e, _, _)| e.max_sequences).collect(),
                targets
                    .iter()
                    .map(|(e, _, _)| e.api == Api::Completions)
                    .collect(),
            ),
        };
    let health = matches!(cfg.backend, Backend::Endpoints(_)) && !cfg.health_interval.is_zero();
    let pool = Pool::new(&caps, cfg.pool.clone(), health, 0x1c_1f);
    let core_cfg = CoreConfig {
        batcher: BatcherConfig {
            max_batch: cfg.max_batch,
            max_wait: cfg.max_wait,
            capacity: cfg.queue_capacity,
        },
        request_deadline: cfg.request_deadline,
        health_interval: health.then_some(cfg.health_interval),
        batched,
        admission,
    };
    let mut core = Core::new(core_cfg, pool, transport, shared);
    let mut now = Instant::now();
    core.on_timer(now);
    loop {
        // Everything already waiting, then timers, then publish and sleep.
        let mut open = true;
        while let Ok(cmd) = rx.try_recv() {
            open &= core.on_cmd(cmd, now);
        }
        while let Ok(m) = up_rx.try_recv() {
            core.on_up(m, now);
        }
        if !open {
            break;
        }
        now = Instant::now();
        core.on_timer(now);
        let wake = core
            .next_wake(now)
            .unwrap_or(now + Duration::from_secs(3600));
        let wake = monoio::time::Instant::from_std(wake);
        monoio::select! {
            cmd = rx.recv_async() => match cmd {
                Ok(cmd) => {
                    now = Instant::now();
                    if !core.on_cmd(cmd, now) {
                        break;
                    }
                }
                Err(_) => break,
            },
            m = up_rx.recv_async() => {
                if let Ok(m) = m {
                    now = Instant::now();
                    core.on_up(m, now);
                }
            }
            _ = monoio::time::sleep_until(wake) => {}
        }
        now = Instant::now();
    }
    core.shutdown(Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threading_contract() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<Client>(); // moved into a worker thread
        send_sync::<Service>(); // may be shared (Arc) by the gateway
        send_sync::<Stats>();
        send::<Event>();
        send::<GenerateRequest>();
    }
}
