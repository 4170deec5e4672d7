//! The service's state machine: every request from submission to its final
//! event, the batches and upstream calls they ride in, failover before the
//! first token, cancellation, deadlines, health-check timing, and the
//! admission state it publishes. It drives the [`Pool`], the [`Batcher`]s and
//! the [`Estimator`], and reaches upstreams only through a [`Transport`]; it
//! does no I/O and takes the time from the shell (`now`; it reads the clock
//! only to measure its own overhead), so the tests run it with a fake
//! transport and a fake clock.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Event, EventSink, GenerateRequest, RequestId, Shared, Timings};
use crate::admission::{slot_waits, AdmissionConfig, Estimator, ShowRate, Snapshot};
use crate::batcher::{Batcher, BatcherConfig};
use crate::error::{Fault, InferenceError};
use crate::openai::{ChatMessage, FinishReason, StreamItem, Usage};
use crate::pool::{FailureKind, Pick, Pool};
use crate::stats::ClientCounters;
use crate::tokens::{count_prompt_tokens, count_tokens};

/// A client (one per gateway worker).
pub(crate) type ClientId = u32;
/// A request, service-wide.
pub(crate) type Key = (ClientId, RequestId);
/// An upstream call.
pub(crate) type UpId = u64;

/// What clients send the service thread.
pub(crate) enum Cmd {
    Register {
        client: ClientId,
        sink: Arc<dyn EventSink>,
        counters: Arc<ClientCounters>,
    },
    Unregister {
        client: ClientId,
    },
    Submit {
        client: ClientId,
        req: GenerateRequest,
    },
    Cancel {
        client: ClientId,
        id: RequestId,
    },
    Embed {
        client: ClientId,
        id: RequestId,
        texts: Vec<String>,
        submitted: Instant,
    },
    Shutdown,
}

/// One sequence of a generation call.
#[derive(Debug, Clone)]
pub(crate) struct CallMember {
    pub messages: Rc<[ChatMessage]>,
    pub prompt_tokens: u32,
    pub max_tokens: u32,
}

/// What an upstream call asks for.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    /// Generate for each member: one request carrying them all (`batched`),
    /// or a single member on its own chat stream.
    Generate {
        members: Vec<CallMember>,
        batched: bool,
    },
    /// Embed these texts in one request.
    Embed { texts: Vec<String> },
}

/// What comes back from upstreams (and health checks).
#[derive(Debug)]
pub(crate) enum UpMsg {
    /// What one network read (or in-process step) produced; `at` is when.
    Items {
        up: UpId,
        at: Instant,
        items: Vec<StreamItem>,
    },
    /// The response ended cleanly.
    End { up: UpId },
    /// The call failed.
    Fault { up: UpId, fault: Fault },
    /// An embeddings call's vectors, in input order.
    Embeddings {
        up: UpId,
        at: Instant,
        vectors: Vec<Vec<f32>>,
    },
    /// A health check's outcome.
    Health { endpoint: usize, ok: bool },
}

/// How the core reaches upstreams.
pub(crate) trait Transport {
    /// Starts call `up` on `endpoint`; its results come back as [`UpMsg`]s.
    fn start(&mut self, now: Instant, up: UpId, endpoint: usize, call: Call);
    /// Stops call `up` (closing its connection if it is still running).
    fn close(&mut self, now: Instant, up: UpId);
    /// Member `index` of batched call `up` is no longer wanted; true if the
    /// upstream frees its sequence at once (the in-process engine does; an
    /// HTTP batch cannot, and runs on until every member is gone).
    fn drop_member(&mut self, _now: Instant, _up: UpId, _index: u32) -> bool {
        false
    }
    /// Starts a health check of `endpoint`.
    fn check_health(&mut self, _endpoint: usize) {}
    /// Moves the messages due by `now` into `out` (for in-process work).
    fn poll(&mut self, _now: Instant, _out: &mut Vec<UpMsg>) {}
    /// When `poll` next has something.
    fn next_wake(&self) -> Option<Instant> {
        None
    }
}

/// The core's settings.
pub(crate) struct CoreConfig {
    pub batcher: BatcherConfig,
    pub request_deadline: Duration,
    pub health_interval: Option<Duration>,
    /// Per endpoint: whether one request carries a whole batch.
    pub batched: Vec<bool>,
    pub admission: AdmissionConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    Running { up: UpId, index: usize },
}

enum Kind {
    Generate {
        messages: Rc<[ChatMessage]>,
        max_tokens: u32,
    },
    Embed {
        texts: Vec<String>,
    },
}

struct Req {
    kind: Kind,
    prompt_tokens: u32,
    submitted: Instant,
    received: Instant,
    deadline: Instant,
    state: State,
    /// Endpoints tried, as bits.
    tried: u64,
    attempts: u32,
    tokens: u32,
    first_token: Option<Instant>,
    dispatched: Option<Instant>,
    upstream_ttft: Option<Duration>,
    /// Prompt tokens sent before it and still being prefilled when it was
    /// sent: what its first token waited for besides its own prompt.
    prefill_ahead: u64,
    /// When admission let it in, and the TTFT it predicted then.
    admitted: Option<(Instant, Duration)>,
    overhead: Duration,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    endpoint: usize,
}

struct Upstream {
    endpoint: usize,
    /// The members still wanting results (`None` once finished or gone).
    members: Vec<Option<Key>>,
    /// Per member: the upstream still works on it (holds a pool slot).
    holding: Vec<bool>,
    started: Instant,
    first_token: Option<Instant>,
    own_stream: bool,
    /// For embeddings: texts per member.
    embed_counts: Option<Vec<usize>>,
}

impl Upstream {
    fn held(&self) -> usize {
        self.holding.iter().filter(|h| **h).count()
    }

    fn live(&self) -> bool {
        self.members.iter().any(Option::is_some)
    }
}

fn bit(endpoint: usize) -> u64 {
    1u64 << (endpoint as u64 & 63)
}

/// The state machine.
pub(crate) struct Core {
    cfg: CoreConfig,
    sinks: HashMap<ClientId, (Arc<dyn EventSink>, Arc<ClientCounters>)>,
    requests: HashMap<Key, Req>,
    generate: Batcher<Key>,
    embed: Batcher<Key>,
    deadlines: BinaryHeap<Reverse<(Instant, Key)>>,
    /// Generation requests in flight, by when they were sent.
    running: BTreeSet<(Instant, Key)>,
    pool: Pool,
    estimator: Estimator,
    show_rate: ShowRate,
    upstreams: HashMap<UpId, Upstream>,
    next_up: UpId,
    transport: Box<dyn Transport>,
    shared: Arc<Shared>,
    next_health: Option<Instant>,
    scratch: Vec<UpMsg>,
}

impl Core {
    pub(crate) fn new(
        cfg: CoreConfig,
        pool: Pool,
        transport: Box<dyn Transport>,
        shared: Arc<Shared>,
    ) -> Core {
        Core {
            generate: Batcher::new(cfg.batcher),
            embed: Batcher::new(cfg.batcher),
            estimator: Estimator::new(&cfg.admission),
            show_rate: ShowRate::default(),
            next_health: cfg.health_interval.map(|_| Instant::now()),
            cfg,
            sinks: HashMap::new(),
            requests: HashMap::new(),
            deadlines: BinaryHeap::new(),
            running: BTreeSet::new(),
            pool,
            upstreams: HashMap::new(),
            next_up: 1,
            transport,
            shared,
            scratch: Vec::new(),
        }
    }

    /// Handles a client's command; false on `Shutdown`.
    pub(crate) fn on_cmd(&mut self, cmd: Cmd, now: Instant) -> bool {
        match cmd {
            Cmd::Register {
                client,
                sink,
                counters,
            } => {
                self.sinks.insert(client, (sink, counters));
            }
            Cmd::Unregister { client } => {
                let keys: Vec<Key> = self
                    .requests
                    .keys()
                    .filter(|k| k.0 == client)
                    .copied()
                    .collect();
                for k in keys {
                    self.end(k, InferenceError::Cancelled, now);
                }
                self.sinks.remove(&client);
            }
            Cmd::Submit { client, req } => {
                if let Some((_, c)) = self.sinks.get(&client) {
                    c.received.inc();
                }
                self.submit(client, req, now)
            }
            Cmd::Cancel { client, id } => self.end((client, id), InferenceError::Cancelled, now),
            Cmd::Embed {
                client,
                id,
                texts,
                submitted,
            } => self.submit_embed(client, id, texts, submitted, now),
            Cmd::Shutdown => return false,
        }
        true
    }

    fn emit(&self, client: ClientId, ev: Event) {
        if let Some((s, _)) = self.sinks.get(&client) {
            s.send(ev);
        }
    }

    /// Ends a request with a failure (it must not be queued any more).
    fn fail(&mut self, key: Key, error: InferenceError) {
        let Some(r) = self.requests.remove(&key) else {
            return;
        };
        if let Some(t) = r.dispatched {
            self.running.remove(&(t, key));
        }
        let st = &self.shared.stats;
        match error {
            InferenceError::Deadline => st.expired.inc(),
            InferenceError::Cancelled => st.cancelled.inc(),
            _ => st.failed.inc(),
        }
        self.emit(key.0, Event::Failed { id: key.1, error });
    }

    fn submit(&mut self, client: ClientId, req: GenerateRequest, now: Instant) {
        let key = (client, req.id);
        let deadline = req
            .deadline
            .unwrap_or(req.submitted + self.cfg.request_deadline);
        let refuse = |core: &mut Core, error| {
            let st = &core.shared.stats;
            match error {
                InferenceError::Deadline => st.expired.inc(),
                _ => st.failed.inc(),
            }
            core.emit(client, Event::Failed { id: req.id, error });
        };
        if self.requests.contains_key(&key) {
            return refuse(
                self,
                InferenceError::Invalid(format!("request id {} is already in flight", req.id)),
            );
        }
        if req.messages.is_empty() {
            return refuse(self, InferenceError::Invalid("no messages".into()));
        }
        if deadline <= now {
            return refuse(self, InferenceError::Deadline);
        }
        if !self.pool.any_usable(now) {
            return refuse(self, InferenceError::Unavailable);
        }
        if self.generate.push(key, now).is_err() {
            return refuse(self, InferenceError::Overloaded);
        }
        let prompt_tokens = count_prompt_tokens(&req.messages);
        self.estimator.observe_prompt(prompt_tokens, now);
        self.requests.insert(
            key,
            Req {
                prompt_tokens,
                kind: Kind::Generate {
                    messages: req.messages.into(),
                    max_tokens: req.max_tokens,
                },
                submitted: req.submitted,
                received: now,
                deadline,
                state: State::Queued,
                tried: 0,
                attempts: 0,
                tokens: 0,
                first_token: None,
                dispatched: None,
                upstream_ttft: None,
                prefill_ahead: 0,
                admitted: req.admitted,
                overhead: now.saturating_duration_since(req.submitted),
                finish: None,
                usage: None,
                endpoint: 0,
            },
        );
        self.deadlines.push(Reverse((deadline, key)));
    }

    fn submit_embed(
        &mut self,
        client: ClientId,
        id: RequestId,
        texts: Vec<String>,
        submitted: Instant,
        now: Instant,
    ) {
        let key = (client, id);
        if self.requests.contains_key(&key) {
            self.shared.stats.failed.inc();
            let error = InferenceError::Invalid(format!("request id {id} is already in flight"));
            return self.emit(client, Event::Failed { id, error });
        }
        if texts.is_empty() {
            return self.emit(
                client,
                Event::Embeddings {
                    id,
                    vectors: Vec::new(),
                },
            );
        }
        if !self.pool.any_usable(now) || self.embed.push(key, now).is_err() {
            self.shared.stats.failed.inc();
            let error = if self.pool.any_usable(now) {
                InferenceError::Overloaded
            } else {
                InferenceError::Unavailable
            };
            return self.emit(client, Event::Failed { id, error });
        }
        let deadline = submitted + self.cfg.request_deadline;
        self.requests.insert(
            key,
            Req {
                prompt_tokens: texts.iter().map(|t| count_tokens(t)).sum(),
                kind: Kind::Embed { texts },
                submitted,
                received: now,
                deadline,
                state: State::Queued,
                tried: 0,
                attempts: 0,
                tokens: 0,
                first_token: None,
                dispatched: None,
                upstream_ttft: None,
                prefill_ahead: 0,
                admitted: None,
                overhead: Duration::ZERO,
                finish: None,
                usage: None,
                endpoint: 0,
            },
        );
        self.deadlines.push(Reverse((deadline, key)));
    }

    /// Stops a request for `error` (cancelled, or its deadline passed): out
    /// of the queue, or out of its upstream call, closing the call if it was
    /// the request's own stream or its last member.
    fn end(&mut self, key: Key, error: InferenceError, now: Instant) {
        let Some(state) = self.requests.get(&key).map(|r| r.state) else {
            return;
        };
        match state {
            State::Queued => {
                if !self.generate.remove(key) {
                    self.embed.remove(key);
                }
                self.fail(key, error);
            }
            State::Running { up, index } => {
                self.fail(key, error);
                let Some(mut u) = self.upstreams.remove(&up) else {
                    return;
                };
                if let Some(m) = u.members.get_mut(index) {
                    *m = None;
                }
                if u.own_stream || !u.live() {
                    self.pool.release(u.endpoint, u.held());
                    self.transport.close(now, up);
                } else {
                    if self.transport.drop_member(now, up, index as u32) && u.holding[index] {
                        u.holding[index] = false;
                        self.pool.release(u.endpoint, 1);
                    }
                    self.upstreams.insert(up, u);
                }
            }
        }
    }

    /// Handles a message from an upstream call or health check.
    pub(crate) fn on_up(&mut self, msg: UpMsg, now: Instant) {
        match msg {
            UpMsg::Items { up, at, items } => self.on_items(up, at, items, now),
            UpMsg::End { up } => self.on_end(up, now),
            UpMsg::Fault { up, fault } => self.on_fault(up, fault, now),
            UpMsg::Embeddings { up, at, vectors } => self.on_embeddings(up, at, vectors, now),
            UpMsg::Health { endpoint, ok } => {
                if endpoint < self.pool.len() {
                    self.pool.on_health(endpoint, now, ok);
                }
            }
        }
    }

    fn on_items(&mut self, up: UpId, at: Instant, items: Vec<StreamItem>, now: Instant) {
        let Some(mut u) = self.upstreams.remove(&up) else {
            return;
        };
        let mut touched: Vec<Key> = Vec::new();
        for item in items {
            match item {
                StreamItem::Token { index, text } => {
                    let i = index as usize;
                    let Some(Some(key)) = u.members.get(i).copied() else {
                        continue;
                    };
                    let Some(r) = self.requests.get_mut(&key) else {
                        continue;
                    };
                    let Kind::Generate { max_tokens, .. } = r.kind else {
                        continue;
                    };
                    if r.tokens >= max_tokens {
                        continue; // a batch member past its own limit
                    }
                    r.tokens += 1;
                    if r.first_token.is_none() {
                        r.first_token = Some(now);
                        let dispatched = r.dispatched.unwrap_or(r.received);
                        let upstream = at.saturating_duration_since(dispatched);
                        r.upstream_ttft = Some(upstream);
                        let prefilled = r.prefill_ahead + r.prompt_tokens as u64;
                        self.estimator.observe_ttft(upstream, prefilled, now);
                        if let Some((at, predicted)) = r.admitted {
                            let actual = now.saturating_duration_since(at).as_secs_f64();
                            let error = actual - predicted.as_secs_f64();
                            self.estimator.observe_error(error, now);
                        }
                        self.shared
                            .stats
                            .ttft
                            .observe(now.saturating_duration_since(r.submitted));
                        u.first_token.get_or_insert(at);
                    }
                    let cut = r.tokens >= max_tokens && !u.own_stream;
                    self.shared.stats.tokens.inc();
                    if !touched.contains(&key) {
                        touched.push(key);
                    }
                    self.emit(key.0, Event::Token { id: key.1, text });
                    if cut {
                        if let Some(r) = self.requests.get_mut(&key) {
                            r.finish = Some(FinishReason::Length);
                        }
                        u.members[i] = None;
                        if self.transport.drop_member(now, up, index) && u.holding[i] {
                            u.holding[i] = false;
                            self.pool.release(u.endpoint, 1);
                        }
                        touched.retain(|k| *k != key);
                        self.add_overhead(key, at);
                        self.complete(key, now);
                    }
                }
                StreamItem::Finish {
                    index,
                    reason,
                    usage,
                } => {
                    let i = index as usize;
                    if u.own_stream {
                        if let Some(Some(key)) = u.members.get(i) {
                            if let Some(r) = self.requests.get_mut(key) {
                                r.finish = Some(reason);
                                r.usage = usage.or(r.usage);
                            }
                        }
                        continue;
                    }
                    // A batch member is complete on its own finish.
                    if u.holding.get(i).copied().unwrap_or(false) {
                        u.holding[i] = false;
                        self.pool.release(u.endpoint, 1);
                    }
                    if let Some(Some(key)) = u.members.get(i).copied() {
                        u.members[i] = None;
                        if let Some(r) = self.requests.get_mut(&key) {
                            r.finish = Some(reason);
                            r.usage = usage;
                        }
                        touched.retain(|k| *k != key);
                        self.add_overhead(key, at);
                        self.complete(key, now);
                    }
                }
                StreamItem::Usage(usage) => {
                    if u.own_stream {
                        if let Some(Some(key)) = u.members.first() {
                            if let Some(r) = self.requests.get_mut(key) {
                                r.usage = Some(usage);
                            }
                        }
                    }
                }
                StreamItem::Done => {}
            }
        }
        let done = std::time::Instant::now().max(now);
        for key in touched {
            if let Some(r) = self.requests.get_mut(&key) {
                r.overhead += done.saturating_duration_since(at);
            }
        }
        self.upstreams.insert(up, u);
    }

    fn add_overhead(&mut self, key: Key, at: Instant) {
        let done = std::time::Instant::now();
        if let Some(r) = self.requests.get_mut(&key) {
            r.overhead += done.saturating_duration_since(at);
        }
    }

    /// Sends `Done` for a request.
    fn complete(&mut self, key: Key, now: Instant) {
        let Some(r) = self.requests.remove(&key) else {
            return;
        };
        if let Some(t) = r.dispatched {
            self.running.remove(&(t, key));
        }
        let dispatched = r.dispatched.unwrap_or(r.received);
        let usage = r.usage.unwrap_or(Usage {
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.tokens,
        });
        let total = now.saturating_duration_since(r.submitted);
        let timings = Timings {
            queued: dispatched.saturating_duration_since(r.submitted),
            ttft: r
                .first_token
                .map_or(total, |t| t.saturating_duration_since(r.submitted)),
            upstream_ttft: r.upstream_ttft.unwrap_or_default(),
            total,
            overhead: r.overhead,
            attempts: r.attempts,
            endpoint: r.endpoint,
        };
        self.estimator
            .observe_service(now.saturating_duration_since(dispatched), now);
        let st = &self.shared.stats;
        st.completed.inc();
        st.overhead.observe(r.overhead);
        self.emit(
            key.0,
            Event::Done {
                id: key.1,
                finish_reason: r.finish.unwrap_or(FinishReason::Stop),
                usage,
                timings,
            },
        );
    }

    fn on_end(&mut self, up: UpId, now: Instant) {
        let Some(u) = self.upstreams.remove(&up) else {
            return;
        };
        let ep = u.endpoint;
        let mut complete = true;
        for key in u.members.iter().rev().flatten() {
            if self.requests.get(key).is_some_and(|r| r.finish.is_some()) {
                self.complete(*key, now);
            } else {
                complete = false;
                let f = Fault::Protocol("the stream ended before the reply was complete".into());
                self.retry_or_fail(*key, ep, &f);
            }
        }
        self.pool.release(ep, u.held());
        if complete {
            let ttft = u
                .first_token
                .map(|t| t.saturating_duration_since(u.started));
            self.pool.on_success(ep, now, ttft);
        } else {
            self.pool.on_failure(ep, now, FailureKind::Error);
        }
        self.transport.close(now, up);
    }

    fn on_fault(&mut self, up: UpId, fault: Fault, now: Instant) {
        let Some(u) = self.upstreams.remove(&up) else {
            return;
        };
        let ep = u.endpoint;
        tracing::debug!(endpoint = ep, %fault, "upstream call failed");
        let kind = match (&fault, fault.overloaded()) {
            (_, Some(d)) => FailureKind::Overloaded(d),
            (Fault::Connect(_), _) => FailureKind::Connect,
            _ => FailureKind::Error,
        };
        self.pool.on_failure(ep, now, kind);
        self.pool.release(ep, u.held());
        for key in u.members.iter().rev().flatten() {
            self.retry_or_fail(*key, ep, &fault);
        }
        self.transport.close(now, up);
    }

    fn on_embeddings(&mut self, up: UpId, at: Instant, vectors: Vec<Vec<f32>>, now: Instant) {
        let Some(u) = self.upstreams.remove(&up) else {
            return;
        };
        let counts = u.embed_counts.clone().unwrap_or_default();
        if counts.iter().sum::<usize>() != vectors.len() {
            let f = Fault::Protocol(format!(
                "{} vectors for {} texts",
                vectors.len(),
                counts.iter().sum::<usize>()
            ));
            self.upstreams.insert(up, u);
            return self.on_fault(up, f, now);
        }
        let mut vectors = vectors.into_iter();
        for (m, n) in u.members.iter().zip(counts) {
            let mine: Vec<Vec<f32>> = vectors.by_ref().take(n).collect();
            let Some(key) = m else { continue };
            if let Some(mut r) = self.requests.remove(key) {
                r.overhead += std::time::Instant::now().saturating_duration_since(at);
                self.shared.stats.completed.inc();
                self.emit(
                    key.0,
                    Event::Embeddings {
                        id: key.1,
                        vectors: mine,
                    },
                );
            }
        }
        self.pool.on_success(u.endpoint, now, None);
        self.transport.close(now, up);
    }

    /// A call failed for this request: back to the queue to try another
    /// endpoint if it has no token yet, else a failure.
    fn retry_or_fail(&mut self, key: Key, endpoint: usize, fault: &Fault) {
        let Some(r) = self.requests.get_mut(&key) else {
            return;
        };
        if r.tokens > 0 {
            return self.fail(key, InferenceError::Upstream(fault.to_string()));
        }
        r.tried |= bit(endpoint);
        r.state = State::Queued;
        if let Some(t) = r.dispatched.take() {
            self.running.remove(&(t, key));
        }
        self.shared.stats.failovers.inc();
        match r.kind {
            Kind::Generate { .. } => self.generate.push_front(key, r.received),
            Kind::Embed { .. } => self.embed.push_front(key, r.received),
        }
    }

    /// Expires deadlines, runs in-process work, health checks, dispatches
    /// batches, and publishes the admission state.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        while let Some(Reverse((t, key))) = self.deadlines.peek().copied() {
            if t > now {
                break;
            }
            self.deadlines.pop();
            if self.requests.get(&key).is_some_and(|r| r.deadline == t) {
                self.end(key, InferenceError::Deadline, now);
            }
        }
        let mut msgs = std::mem::take(&mut self.scratch);
        self.transport.poll(now, &mut msgs);
        for m in msgs.drain(..) {
            self.on_up(m, now);
        }
        self.scratch = msgs;
        if let (Some(interval), Some(t)) = (self.cfg.health_interval, self.next_health) {
            if t <= now {
                for ep in 0..self.pool.len() {
                    self.transport.check_health(ep);
                }
                self.next_health = Some(now + interval);
            }
        }
        self.pump(now);
        self.publish(now);
    }

    /// Sends out what can go: batches of generation requests, then embeddings.
    fn pump(&mut self, now: Instant) {
        while let Some(head) = self.generate.front() {
            if !self.generate.ready(now) {
                break;
            }
            let tried = self.requests.get(&head).map_or(0, |r| r.tried);
            match self.pool.pick(now, |i| tried & bit(i) != 0) {
                Pick::None => {
                    self.generate.remove(head);
                    self.fail(head, InferenceError::Unavailable);
                }
                Pick::Saturated => break,
                Pick::Endpoint(ep) => {
                    let room = self.pool.room(ep, now);
                    let requests = &self.requests;
                    let keys = self.generate.take(now, room, |k| {
                        requests.get(&k).is_some_and(|r| r.tried & bit(ep) == 0)
                    });
                    if keys.is_empty() {
                        break;
                    }
                    if self.cfg.batched.get(ep).copied().unwrap_or(false) {
                        self.dispatch(ep, keys, now);
                    } else {
                        for k in keys {
                            self.dispatch(ep, vec![k], now);
                        }
                    }
                }
            }
        }
        while let Some(head) = self.embed.front() {
            if !self.embed.ready(now) {
                break;
            }
            let tried = self.requests.get(&head).map_or(0, |r| r.tried);
            let mut ep = None;
            for i in 0..self.pool.len() {
                if tried & bit(i) != 0 || !self.pool.usable(i, now) {
                    continue;
                }
                let load = self.pool.endpoint(i).in_flight;
                if ep.is_none_or(|(_, l)| load < l) {
                    ep = Some((i, load));
                }
            }
            let Some((ep, _)) = ep else {
                self.embed.remove(head);
                self.fail(head, InferenceError::Unavailable);
                continue;
            };
            let requests = &self.requests;
            let keys = self.embed.take(now, usize::MAX, |k| {
                requests.get(&k).is_some_and(|r| r.tried & bit(ep) == 0)
            });
            if keys.is_empty() {
                break;
            }
            self.dispatch_embed(ep, keys, now);
        }
    }

    fn next_up_id(&mut self) -> UpId {
        let up = self.next_up;
        self.next_up += 1;
        up
    }

    fn dispatch(&mut self, ep: usize, keys: Vec<Key>, now: Instant) {
        let up = self.next_up_id();
        let mut members = Vec::with_capacity(keys.len());
        let mut ahead = self.prefilling();
        for (index, key) in keys.iter().enumerate() {
            let Some(r) = self.requests.get_mut(key) else {
                continue;
            };
            r.state = State::Running { up, index };
            r.dispatched = Some(now);
            r.prefill_ahead = ahead;
            ahead += r.prompt_tokens as u64;
            r.attempts += 1;
            r.endpoint = ep;
            self.shared
                .stats
                .queue_wait
                .observe(now.saturating_duration_since(r.submitted));
            if let Kind::Generate {
                messages,
                max_tokens,
            } = &r.kind
            {
                self.running.insert((now, *key));
                members.push(CallMember {
                    messages: messages.clone(),
                    prompt_tokens: r.prompt_tokens,
                    max_tokens: *max_tokens,
                });
            }
        }
        let n = keys.len();
        self.pool.acquire(ep, n);
        let st = &self.shared.stats;
        st.upstream_calls.inc();
        st.upstream_sequences.add(n as u64);
        let batched = self.cfg.batched.get(ep).copied().unwrap_or(false);
        self.upstreams.insert(
            up,
            Upstream {
                endpoint: ep,
                members: keys.into_iter().map(Some).collect(),
                holding: vec![true; n],
                started: now,
                first_token: None,
                own_stream: !batched,
                embed_counts: None,
            },
        );
        self.transport
            .start(now, up, ep, Call::Generate { members, batched });
    }

    fn dispatch_embed(&mut self, ep: usize, keys: Vec<Key>, now: Instant) {
        let up = self.next_up_id();
        let mut texts = Vec::new();
        let mut counts = Vec::with_capacity(keys.len());
        for (index, key) in keys.iter().enumerate() {
            let Some(r) = self.requests.get_mut(key) else {
                counts.push(0);
                continue;
            };
            r.state = State::Running { up, index };
            r.dispatched = Some(now);
            r.attempts += 1;
            r.endpoint = ep;
            if let Kind::Embed { texts: t } = &r.kind {
                counts.push(t.len());
                texts.extend(t.iter().cloned());
            }
        }
        self.shared.stats.upstream_calls.inc();
        let n = keys.len();
        self.upstreams.insert(
            up,
            Upstream {
                endpoint: ep,
                members: keys.into_iter().map(Some).collect(),
                holding: vec![false; n],
                started: now,
                first_token: None,
                own_stream: false,
                embed_counts: Some(counts),
            },
        );
        self.transport.start(now, up, ep, Call::Embed { texts });
    }

    /// Prompt tokens sent upstream without a first token yet.
    fn prefilling(&self) -> u64 {
        self.running
            .iter()
            .filter_map(|(_, k)| self.requests.get(k))
            .filter(|r| r.first_token.is_none())
            .map(|r| r.prompt_tokens as u64)
            .sum()
    }

    /// Prompt tokens of the generation requests queued here.
    fn queued_tokens(&self) -> u64 {
        self.requests
            .values()
            .filter(|r| r.state == State::Queued && matches!(r.kind, Kind::Generate { .. }))
            .map(|r| r.prompt_tokens as u64)
            .sum()
    }

    /// Publishes the admission state and the gauges.
    fn publish(&mut self, now: Instant) {
        let service = self.estimator.service();
        let capacity = self.pool.usable_capacity(now);
        let in_flight = self.pool.in_flight();
        let queued = self.generate.len();
        let waits = slot_waits(
            now,
            service,
            capacity,
            in_flight,
            self.running.iter().map(|(t, _)| *t),
            queued,
        );
        let snap = Snapshot {
            queued: queued as u64,
            in_flight: in_flight as u64,
            capacity: capacity as u64,
            base_ttft: self.estimator.base_ttft(),
            service,
            waits,
            prefill_ahead: self.prefilling() + self.queued_tokens(),
            interval: self.estimator.interval(capacity),
            show_permille: self.show_rate.update(self.shared.places.counts()),
            bias_ns: self.estimator.bias_ns(),
            unpublished: 0,
        };
        self.shared.published.store(&snap);
        let st = &self.shared.stats;
        st.queue_depth
            .set((self.generate.len() + self.embed.len()) as i64);
        st.in_flight.set(snap.in_flight as i64);
        st.capacity.set(snap.capacity as i64);
        st.endpoints_up.set(self.pool.usable_count(now) as i64);
    }

    /// When `on_timer` next has work (a deadline, a batch's wait, in-process
    /// work, a health check).
    pub(crate) fn next_wake(&self, now: Instant) -> Option<Instant> {
        let batch = [self.generate.next_wake(), self.embed.next_wake()]
            .into_iter()
            .flatten()
            .filter(|t| *t > now);
        let deadline = self.deadlines.peek().map(|Reverse((t, _))| *t);
        batch
            .chain(deadline)
            .chain(self.transport.next_wake())
            .chain(self.next_health)
            .min()
    }

    /// Fails everything pending with `Shutdown` and closes every call.
    pub(crate) fn shutdown(&mut self, now: Instant) {
        let ups: Vec<UpId> = self.upstreams.keys().copied().collect();
        for up in ups {
            self.transport.close(now, up);
        }
        self.upstreams.clear();
        self.generate.drain().for_each(drop);
        self.embed.drain().for_each(drop);
        let keys: Vec<Key> = self.requests.keys().copied().collect();
        for k in keys {
            self.fail(k, InferenceError::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests;
