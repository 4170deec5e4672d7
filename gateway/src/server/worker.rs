//! One worker: the sessions it owns, the connections it accepted, and its inbox
//! from the other workers.
//!
//! A session lives on the worker its token hashes to; a connection lives on the
//! worker that accepted it. When they differ, the connection's worker sends the
//! session's worker an [`Op`] and gets [`WorkerMsg::OpDone`], deliveries and
//! poll answers back, all through flume. Each worker's channel is FIFO, so one
//! session's messages reach one socket in order.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use inference_client::DriverKind;

use super::answer::Answers;
pub(crate) use super::answer::InboxSink;
use super::conn::{self, Connections};
use super::sessions::Sessions;
use super::{sweep, sys, Shared};
use crate::chat::client::{ClientError, ClientMsg};
use crate::handoff::SessionEvent;
use crate::ids::SessionKey;
use crate::ids::SubId;
use crate::metrics::WorkerMetrics;
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
    /// The connections it accepted.
    pub(crate) conns: RefCell<Connections>,
    /// The sessions this worker owns.
    pub(crate) sessions: RefCell<Sessions>,
    pub(crate) store: StoreHandle,
    /// This worker's handle on the inference service.
    pub(crate) inference: inference_client::Client,
    /// Its requests to the inference service in flight.
    pub(crate) answers: RefCell<Answers>,
    /// Average time from a visitor's message to its commit (admission
    /// counts it before an answer can start).
    pub(super) commit_pace: Cell<Duration>,
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
        conns: RefCell::new(Connections::new(id)),
        sessions: RefCell::new(Sessions::default()),
        store,
        inference,
        answers: RefCell::new(Answers::default()),
        commit_pace: Cell::new(Duration::ZERO),
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
            WorkerMsg::Committed { key, result } => self.on_committed(key, result),
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
