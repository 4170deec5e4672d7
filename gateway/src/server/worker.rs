//! One worker: the sessions it owns, the connections it accepted, and its inbox
//! from the other workers.
//!
//! A session lives on the worker its token hashes to; a connection lives on the
//! worker that accepted it. When they differ, the connection's worker sends the
//! session's worker an [`Op`] and gets [`WorkerMsg::OpDone`], deliveries and
//! poll answers back, all through flume. Each worker's channel is FIFO, so one
//! session's messages reach one socket in order.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use inference_client::DriverKind;
use serde_json::value::RawValue;
use slab::Slab;

pub(crate) use super::answer::InboxSink;
use super::answer::ServiceAdmission;
use super::conn::{self, Conn};
use super::{sweep, sys, Shared};
use crate::chat::client::{ClientError, ClientMsg};
use crate::handoff::SessionEvent;
use crate::ids::SubId;
use crate::ids::{ConversationId, SessionKey};
use crate::metrics::WorkerMetrics;
use crate::session::{NotStored, Now, Origin, Out, Session, Settings};
use crate::sites::Site;
use crate::store::{StoreError, StoreHandle};

/// What a connection's worker asks of a session's worker.
#[derive(Debug)]
pub(crate) enum Op {
    /// Subscribe a socket, if the session exists on this site; answered by `OpDone`.
    Attach { site: Arc<str> },
    /// Unsubscribe a socket or poller.
    Detach,
    /// A client message from a subscribed socket.
    Client { msg: ClientMsg, received: Instant },
    /// Messages from `POST /poll/send`; answered by `OpDone`.
    PollSend {
        site: Arc<str>,
        msgs: Vec<Result<ClientMsg, ClientError>>,
    },
    /// A `GET /poll/recv`; answered by `OpDone`, then `PollReady` when there is something.
    PollRecv { site: Arc<str>, cursor: u64 },
}

/// What waits for a session to be loaded from the store.
#[derive(Debug)]
pub(crate) enum Waiting {
    /// A subscriber's operation.
    Op { sub: SubId, op: Op },
    /// News from the agent desk.
    Desk(SessionEvent),
}

/// A message between workers.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    /// To a session's owner.
    Op { key: SessionKey, sub: SubId, op: Op },
    /// News from the agent desk for a session's owner (no subscriber asked:
    /// nothing is answered).
    Desk { key: SessionKey, ev: SessionEvent },
    /// Whether the session of an `Op` existed.
    OpDone { sub: SubId, found: bool },
    /// A server message for a socket.
    Deliver { to: SubId, msg: Bytes },
    /// The answer to a held `GET /poll/recv`.
    PollReady {
        to: SubId,
        cursor: u64,
        messages: Vec<Bytes>,
    },
    /// The store committed (or failed) a session's oldest outstanding records.
    Committed {
        key: SessionKey,
        result: Result<(), StoreError>,
    },
    /// The store answered a session load.
    Loaded {
        key: SessionKey,
        result: Result<Option<Box<crate::store::StoredSession>>, StoreError>,
    },
    /// An event of the inference service about one of this worker's requests.
    Inference(inference_client::Event),
    /// A retrieval thread grounded an answer job (`None`: the site's
    /// knowledge base is gone); the job goes to the inference service now.
    Grounded {
        key: SessionKey,
        job: crate::session::AnswerJob,
        grounding: Option<crate::grounding::Grounding>,
    },
    /// Another thread's answer to an HTTP request handed to it (the agent
    /// desk, a retrieval thread).
    HttpAnswer {
        sub: SubId,
        resp: http::Response<crate::http::response::Body>,
    },
    /// The agent desk's answer to an `/agent/ws` upgrade.
    AgentUpgrade {
        sub: SubId,
        result: Result<crate::ids::AgentId, http::Response<crate::http::response::Body>>,
    },
    /// Close an agent socket (its account was removed).
    CloseAgent { sub: SubId },
    /// Begin a graceful shutdown.
    Shutdown,
}

/// A worker's word that it started (its index and io driver), or why it
/// could not (its index and the cause).
pub(crate) type Ready = Result<(usize, DriverKind), (usize, std::io::Error)>;

/// A one-shot event on one thread: set once, awaited by one task.
#[derive(Default)]
pub(crate) struct LocalEvent {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalEvent {
    pub(crate) fn set(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub(crate) fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.set.get() {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// One worker's state. Lives in an `Rc` on its own thread.
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) n: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) conns: RefCell<Slab<Conn>>,
    /// Boxed: the map's spare capacity then costs a pointer per slot, not a session.
    pub(crate) sessions: RefCell<HashMap<SessionKey, Box<Session>>>,
    /// Sessions being loaded from the store, and the operations waiting for them.
    pub(crate) loading: RefCell<HashMap<SessionKey, Vec<Waiting>>>,
    pub(crate) store: StoreHandle,
    /// This worker's handle on the inference service.
    pub(crate) inference: inference_client::Client,
    /// Requests in flight: which session's which reply.
    pub(crate) requests: RefCell<HashMap<inference_client::RequestId, super::answer::InFlight>>,
    pub(crate) next_request: Cell<inference_client::RequestId>,
    /// Average time from a visitor's message to its commit (admission
    /// counts it before an answer can start).
    commit_pace: Cell<Duration>,
    next_gen: Cell<u64>,
    /// The one read buffer every connection of this worker reads into.
    pub(crate) read_buf: RefCell<Vec<u8>>,
    /// The `Date` header, refreshed every second.
    pub(crate) date: RefCell<http::HeaderValue>,
    pub(crate) stopping: Cell<bool>,
    stop: LocalEvent,
    pub(crate) drained: LocalEvent,
    pub(crate) listener_fd: Cell<RawFd>,
}

/// Per-worker read buffer: one large read per readiness event.
const READ_BUF: usize = 64 * 1024;

/// What a worker is started with.
pub(crate) struct Parts {
    pub(crate) id: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) listener: std::net::TcpListener,
    pub(crate) inbox: flume::Receiver<WorkerMsg>,
    pub(crate) store: StoreHandle,
    pub(crate) inference: inference_client::Client,
    pub(crate) driver: DriverKind,
    /// Learns once the worker accepts (or why it cannot).
    pub(crate) ready: std::sync::mpsc::Sender<Ready>,
}

/// Runs a worker until shutdown completes.
pub(crate) async fn run(p: Parts) -> std::io::Result<()> {
    let Parts {
        id,
        shared,
        listener,
        inbox,
        store,
        inference,
        driver,
        ready,
    } = p;
    shared.metrics[id]
        .driver
        .store(driver as u8, std::sync::atomic::Ordering::Relaxed);
    shared.metrics[id]
        .tid
        .store(sys::gettid(), std::sync::atomic::Ordering::Relaxed);
    let listener = (|| {
        if driver == DriverKind::Epoll {
            listener.set_nonblocking(true)?;
        }
        monoio::net::TcpListener::from_std(listener)
    })();
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err((id, std::io::Error::new(e.kind(), e.to_string()))));
            return Err(e);
        }
    };
    tracing::info!(worker = id, driver = driver.as_str(), "worker started");
    let n = shared.metrics.len();
    let w = Rc::new(Worker {
        id,
        n,
        shared,
        conns: RefCell::new(Slab::new()),
        sessions: RefCell::new(HashMap::new()),
        loading: RefCell::new(HashMap::new()),
        store,
        inference,
        requests: RefCell::new(HashMap::new()),
        next_request: Cell::new(1),
        commit_pace: Cell::new(Duration::ZERO),
        next_gen: Cell::new(1),
        read_buf: RefCell::new(vec![0; READ_BUF]),
        date: RefCell::new(http_date()),
        stopping: Cell::new(false),
        stop: LocalEvent::default(),
        drained: LocalEvent::default(),
        listener_fd: Cell::new(listener.as_raw_fd()),
    });
    monoio::spawn(conn::accept_loop(w.clone(), listener));
    monoio::spawn(sweep::run(w.clone()));
    monoio::spawn(inbox_loop(w.clone(), inbox));
    let _ = ready.send(Ok((id, driver)));

    w.stop.wait().await;
    w.begin_shutdown();
    let grace = Duration::from_millis(w.shared.config.limits.shutdown_grace_ms);
    if monoio::time::timeout(grace, w.drained.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = id,
            open = w.conns.borrow().len(),
            "shutdown grace period over; dropping connections"
        );
    }
    tracing::info!(worker = id, "worker stopped");
    Ok(())
}

async fn inbox_loop(w: Rc<Worker>, inbox: flume::Receiver<WorkerMsg>) {
    while let Ok(msg) = inbox.recv_async().await {
        w.on_msg(msg);
        // Take what else is queued now, without a wake-up each.
        for msg in inbox.try_iter() {
            w.on_msg(msg);
        }
    }
}

/// The widget config of a site that has been deleted while sessions remained.
fn empty_config() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| RawValue::from_string("{}".to_string()).expect("constant JSON"))
}

/// The current time as an HTTP `Date` header.
pub(crate) fn http_date() -> http::HeaderValue {
    http::HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now()))
        .unwrap_or_else(|_| http::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

impl Worker {
    /// This worker's metrics.
    pub(crate) fn m(&self) -> &WorkerMetrics {
        &self.shared.metrics[self.id]
    }

    /// A generation no subscriber of this worker has had.
    pub(crate) fn next_gen(&self) -> u64 {
        let g = self.next_gen.get();
        self.next_gen.set(g + 1);
        g
    }

    fn on_msg(self: &Rc<Self>, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Op { key, sub, op } => self.run_op(key, sub, op),
            WorkerMsg::Desk { key, ev } => self.on_desk_news(key, ev),
            WorkerMsg::OpDone { sub, found } => self.on_op_done(sub, found),
            WorkerMsg::Deliver { to, msg } => self.deliver_ws(to, &msg),
            WorkerMsg::PollReady {
                to,
                cursor,
                messages,
            } => self.deliver_poll(to, cursor, messages),
            WorkerMsg::Committed { key, result } => {
                let now = Instant::now();
                let result = result.map_err(|e| {
                    tracing::error!(worker = self.id, error = %e, "a session's records were not stored");
                    NotStored::from(&e)
                });
                self.with_session(key, |s, out| {
                    s.on_committed(result, now, out);
                    true
                });
            }
            WorkerMsg::Loaded { key, result } => self.on_loaded(key, result),
            WorkerMsg::Inference(ev) => self.on_inference(ev),
            WorkerMsg::Grounded {
                key,
                job,
                grounding,
            } => self.on_grounded(key, job, grounding),
            WorkerMsg::HttpAnswer { sub, resp } => self.on_http_answer(sub, resp),
            WorkerMsg::AgentUpgrade { sub, result } => self.on_agent_upgrade(sub, result),
            WorkerMsg::CloseAgent { sub } => {
                if let Some(slot) = self.slot_of(sub) {
                    self.ws_fail(
                        slot,
                        crate::ws::close::POLICY,
                        "the agent account was removed",
                    );
                }
            }
            WorkerMsg::Shutdown => self.stop.set(),
        }
    }

    /// Runs `op` on the session's owner: here, or through the owner's inbox.
    pub(crate) fn submit(self: &Rc<Self>, key: SessionKey, sub: SubId, op: Op) {
        let owner = key.owner(self.n);
        if owner == self.id {
            self.run_op(key, sub, op);
        } else {
            self.m().cross_worker.inc();
            let _ = self.shared.inboxes[owner].send(WorkerMsg::Op { key, sub, op });
        }
    }

    fn reply_op(self: &Rc<Self>, sub: SubId, found: bool) {
        let worker = sub.worker();
        if worker == self.id {
            self.on_op_done(sub, found);
        } else {
            let _ = self.shared.inboxes[worker].send(WorkerMsg::OpDone { sub, found });
        }
    }

    /// The session settings for a site (an empty widget config if the site was deleted).
    fn with_settings<R>(&self, site: &str, f: impl FnOnce(&Settings<'_>) -> R) -> R {
        let site: Option<Arc<Site>> = self.shared.sites.get(site);
        let site_config: &RawValue = match &site {
            Some(s) => &s.widget_config,
            None => empty_config(),
        };
        let instructions = site.as_ref().map_or("", |s| s.system_prompt.as_str());
        let grounding_tokens = site
            .as_ref()
            .map_or(0, |s| self.shared.library.allowance(&s.id));
        let handoff = site
            .as_ref()
            .map_or(&[][..], |s| s.config.handoff.as_slice());
        let l = &self.shared.config.limits;
        let admission = ServiceAdmission {
            client: &self.inference,
            commit: self.commit_pace.get(),
            retrieval: &self.shared.retrieval_pace,
            retrieval_queue: self.shared.retrieval.len(),
            retrieval_threads: self.shared.config.knowledge.threads.max(1),
        };
        f(&Settings {
            site_config,
            instructions,
            grounding_tokens,
            message_rate: l.message_rate,
            history_items: self.shared.config.session.history_items,
            poll_log_cap: l.poll_log_messages,
            context_tokens: self.shared.config.inference.context_tokens,
            count_tokens: inference_client::count_tokens,
            admission: &admission,
            handoff,
        })
    }

    /// Carries out an `Op` on a session this worker owns, loading the session
    /// from the store first when it is not in memory (after a restart, or an
    /// eviction).
    pub(crate) fn run_op(self: &Rc<Self>, key: SessionKey, sub: SubId, op: Op) {
        let wants_session = matches!(
            op,
            Op::Attach { .. } | Op::PollSend { .. } | Op::PollRecv { .. }
        );
        if wants_session && !self.sessions.borrow().contains_key(&key) {
            return self.load_then(key, Waiting::Op { sub, op });
        }
        self.run_op_loaded(key, sub, op);
    }

    /// `run_op` once the store has been asked: a session still missing is unknown.
    pub(crate) fn run_op_loaded(self: &Rc<Self>, key: SessionKey, sub: SubId, op: Op) {
        let now = Now::current();
        let mut out = Vec::new();
        let mut sessions = self.sessions.borrow_mut();
        let sess = sessions.get_mut(&key);
        let reply: Option<bool> = match op {
            Op::Attach { site } => match sess {
                Some(s) if *s.site == *site => {
                    s.attach(sub, now.mono);
                    Some(true)
                }
                _ => Some(false),
            },
            Op::Detach => {
                if let Some(s) = sess {
                    s.detach(sub, now.mono);
                }
                None
            }
            Op::Client { msg, received } => {
                match sess {
                    Some(s) => {
                        // The ack's latency counts from the frame's arrival on its worker.
                        let now = Now {
                            mono: received.min(now.mono),
                            ..now
                        };
                        let site = s.site.clone();
                        self.with_settings(&site, |st| {
                            s.on_client(Origin::Socket(sub), msg, now, st, &mut out)
                        });
                    }
                    None => out.push(Out::Send {
                        to: sub,
                        msg: crate::session::error_msg(
                            crate::chat::ErrorCode::Internal,
                            "the session is gone; reconnect to start a new one",
                            None,
                            None,
                        ),
                    }),
                }
                None
            }
            Op::PollSend { site, msgs } => match sess {
                Some(s) if *s.site == *site => {
                    self.with_settings(&site, |st| {
                        for m in msgs {
                            match m {
                                Ok(m) => s.on_client(Origin::Poll, m, now, st, &mut out),
                                Err(e) => s.on_client_error(Origin::Poll, &e, st, &mut out),
                            }
                        }
                    });
                    Some(true)
                }
                _ => Some(false),
            },
            Op::PollRecv { site, cursor } => match sess {
                Some(s) if *s.site == *site => {
                    self.with_settings(&site, |st| {
                        s.poll_recv(sub, cursor, now.mono, st, &mut out)
                    });
                    Some(true)
                }
                _ => Some(false),
            },
        };
        drop(sessions);
        // The answer to the op goes first: a poll answer must not overtake it.
        if let Some(found) = reply {
            self.reply_op(sub, found);
        }
        self.apply(key, out);
    }

    /// News from the agent desk for a session this worker owns (loaded from
    /// the store first when it is not in memory).
    pub(crate) fn on_desk_news(self: &Rc<Self>, key: SessionKey, ev: SessionEvent) {
        if !self.sessions.borrow().contains_key(&key) {
            return self.load_then(key, Waiting::Desk(ev));
        }
        self.on_desk_news_loaded(key, ev);
    }

    /// `on_desk_news` once the store has been asked. An agent's message for a
    /// session that no longer exists goes back to the desk as failed.
    pub(crate) fn on_desk_news_loaded(self: &Rc<Self>, key: SessionKey, ev: SessionEvent) {
        let now = Now::current();
        let mut out = Vec::new();
        let mut sessions = self.sessions.borrow_mut();
        match sessions.get_mut(&key) {
            Some(s) => s.on_desk(ev, now, &mut out),
            None => {
                if let SessionEvent::AgentMessage {
                    conv, agent, id, ..
                } = ev
                {
                    let _ = self.shared.desk.send(super::desk::DeskMsg::Visitor(
                        crate::handoff::VisitorEvent::AgentMessageFailed {
                            conv,
                            agent,
                            id,
                            error: "the visitor's session no longer exists".into(),
                        },
                    ));
                }
            }
        }
        drop(sessions);
        self.apply(key, out);
    }

    /// Creates a session owned by this worker.
    pub(crate) fn create_session(&self, site: &Arc<str>) -> std::io::Result<SessionKey> {
        let key = SessionKey::random_owned_by(self.id, self.n).map_err(std::io::Error::other)?;
        let conversation = ConversationId::random().map_err(std::io::Error::other)?;
        let now = Instant::now();
        let s = Session::new(key, conversation, site.clone(), now);
        self.sessions.borrow_mut().insert(key, Box::new(s));
        self.record_session(key, conversation, site);
        self.m().sessions.add(1);
        Ok(key)
    }

    /// Carries out a session's effects.
    pub(crate) fn apply(self: &Rc<Self>, key: SessionKey, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Send { to, msg } => {
                    let worker = to.worker();
                    if worker == self.id {
                        self.deliver_ws(to, &msg);
                    } else {
                        let _ = self.shared.inboxes[worker].send(WorkerMsg::Deliver { to, msg });
                    }
                }
                Out::PollReady {
                    to,
                    cursor,
                    messages,
                } => {
                    let worker = to.worker();
                    if worker == self.id {
                        self.deliver_poll(to, cursor, messages);
                    } else {
                        let _ = self.shared.inboxes[worker].send(WorkerMsg::PollReady {
                            to,
                            cursor,
                            messages,
                        });
                    }
                }
                Out::ErrorSent(code) => self.m().error(code),
                Out::Acked(waited) => {
                    self.m().messages.inc();
                    self.m().ack_latency.observe(waited);
                    let old = self.commit_pace.get();
                    self.commit_pace.set(old.mul_f64(0.9) + waited.mul_f64(0.1));
                }
                Out::Answer(job) => self.start_answer(key, job),
                Out::Commit(records) => self.commit(key, records),
                Out::Cancel(replies) => self.cancel_replies(key, &replies),
                Out::Desk(ev) => {
                    let _ = self.shared.desk.send(super::desk::DeskMsg::Visitor(ev));
                }
            }
        }
    }

    /// Runs `f` on a session this worker owns and carries out its effects;
    /// false when the session is gone or `f` says so.
    pub(crate) fn with_session(
        self: &Rc<Self>,
        key: SessionKey,
        f: impl FnOnce(&mut Session, &mut Vec<Out>) -> bool,
    ) -> bool {
        let mut out = Vec::new();
        let r = match self.sessions.borrow_mut().get_mut(&key) {
            Some(s) => f(s, &mut out),
            None => false,
        };
        self.apply(key, out);
        r
    }

    /// Cancels the replies of sessions nobody has watched for
    /// `inference.abandon_after_ms` (the visitor closed the page).
    pub(crate) fn abandon_unwatched(self: &Rc<Self>, now: Instant) {
        let grace = Duration::from_millis(self.shared.config.inference.abandon_after_ms);
        let mut effects = Vec::new();
        for (key, s) in self.sessions.borrow_mut().iter_mut() {
            if s.unwatched_since.is_some() && s.live_replies().next().is_some() {
                let mut out = Vec::new();
                s.abandon_unwatched(now, grace, &mut out);
                if !out.is_empty() {
                    effects.push((*key, out));
                }
            }
        }
        for (key, out) in effects {
            self.apply(key, out);
        }
    }

    /// Drops from memory the sessions nobody has used for a while; the store
    /// keeps them, and the next request for one loads it again.
    pub(crate) fn evict_sessions(&self, now: Instant) {
        let ttl = Duration::from_secs(self.shared.config.session.memory_idle_secs);
        let mut sessions = self.sessions.borrow_mut();
        let before = sessions.len();
        sessions
            .retain(|_, s| !(s.is_quiet() && now.saturating_duration_since(s.last_active) > ttl));
        let evicted = before - sessions.len();
        if evicted > 0 {
            self.m().sessions.add(-(evicted as i64));
        }
    }

    /// Stops accepting and closes every connection politely.
    fn begin_shutdown(self: &Rc<Self>) {
        self.stopping.set(true);
        sys::shutdown(self.listener_fd.get(), libc::SHUT_RDWR);
        let slots: Vec<usize> = self.conns.borrow().iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.shutdown_conn(slot);
        }
        if self.conns.borrow().is_empty() {
            self.drained.set();
        }
    }
}
