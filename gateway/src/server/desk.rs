//! The agent desk's shell: one thread that owns the [`Desk`], takes what the
//! workers and the store send it, and carries out its effects.
//!
//! Workers reach it through one flume channel ([`DeskMsg`]); it answers
//! through their inboxes (frames for agent sockets, HTTP answers, events for
//! the worker owning a visitor's session). Store reads and writes come back
//! as messages on its own channel. Timers (offers, waits, reconnect grace)
//! are the channel's receive deadline.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};

use super::worker::WorkerMsg;
use super::Shared;
use crate::desk::directory::Directory;
use crate::desk::{Desk, DeskConfig, DeskOut, ReadPurpose};
use crate::handoff::VisitorEvent;
use crate::http::response::{self, Body};
use crate::ids::SubId;
use crate::ids::{AgentId, ConversationId};
use crate::store::{ConversationSummary, StoreError, StoreHandle, Transcript};

/// What the desk thread receives.
#[derive(Debug)]
pub(crate) enum DeskMsg {
    /// An HTTP request of the desk's API.
    Http { sub: SubId, req: Request<Vec<u8>> },
    /// May this request open `/agent/ws`?
    Upgrade { sub: SubId, req: Request<Vec<u8>> },
    /// An agent socket opened.
    AgentOpen { agent: AgentId, sub: SubId },
    /// A text frame from an agent socket.
    AgentFrame {
        agent: AgentId,
        sub: SubId,
        text: Vec<u8>,
    },
    /// An agent socket closed.
    AgentClosed { agent: AgentId, sub: SubId },
    /// News from a visitor session.
    Visitor(VisitorEvent),
    /// A transcript read's answer.
    Transcript {
        conv: ConversationId,
        purpose: ReadPurpose,
        result: Result<Option<Transcript>, StoreError>,
    },
    /// A conversation list's answer.
    List {
        sub: SubId,
        result: Result<Vec<ConversationSummary>, StoreError>,
    },
    /// A write committed (or failed); its HTTP answer goes out now.
    Committed {
        then: Option<(SubId, Response<Body>)>,
        result: Result<(), StoreError>,
    },
    /// Stop.
    Shutdown,
}

/// Loads the directory from the store (waiting at most `timeout`).
pub(crate) fn load_directory(
    store: &StoreHandle,
    timeout: Duration,
) -> Result<Directory, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel();
    store.load_desk(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    let d = rx
        .recv_timeout(timeout)
        .map_err(|_| StoreError::NoAnswer(timeout))??;
    Ok(Directory::load(d.agents, d.canned))
}

/// Stores an agent account before the desk starts (waiting at most `timeout`).
pub(crate) fn save_agent(
    store: &StoreHandle,
    agent: crate::store::StoredAgent,
    timeout: Duration,
) -> Result<(), StoreError> {
    let (tx, rx) = std::sync::mpsc::channel();
    store.write(
        crate::store::Write::AgentSaved(agent),
        Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
    );
    rx.recv_timeout(timeout)
        .map_err(|_| StoreError::NoAnswer(timeout))?
}

/// Starts the desk thread.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    store: StoreHandle,
    dir: Directory,
    tx: flume::Sender<DeskMsg>,
    rx: flume::Receiver<DeskMsg>,
) -> std::io::Result<JoinHandle<()>> {
    let a = &shared.config.agents;
    let cfg = DeskConfig {
        offer_timeout: Duration::from_millis(a.offer_timeout_ms),
        queue_timeout: Duration::from_millis(a.queue_timeout_ms),
        reconnect_grace: Duration::from_millis(a.reconnect_grace_ms),
        login_ttl: Duration::from_secs(a.login_ttl_secs),
        max_text_bytes: shared.config.limits.max_text_bytes,
        admin_token: shared.admin_token.clone(),
    };
    std::thread::Builder::new()
        .name("lc-desk".into())
        .spawn(move || run(Desk::new(cfg, dir), shared, store, tx, rx))
}

fn run(
    mut desk: Desk,
    shared: Arc<Shared>,
    store: StoreHandle,
    tx: flume::Sender<DeskMsg>,
    rx: flume::Receiver<DeskMsg>,
) {
    loop {
        let msg = match desk.next_deadline() {
            Some(t) => match rx.recv_deadline(t) {
                Ok(m) => Some(m),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            },
        };
        let now = Instant::now();
        if let Some(msg) = msg {
            if !handle(&mut desk, &shared, msg, now) {
                return;
            }
        }
        desk.tick(now);
        for o in desk.take_out() {
            carry_out(o, &shared, &store, &tx);
        }
        publish(&desk.gauges(), &shared.desk_metrics, now);
    }
}

/// One message; false to stop.
fn handle(desk: &mut Desk, shared: &Shared, msg: DeskMsg, now: Instant) -> bool {
    match msg {
        DeskMsg::Http { sub, req } => {
            desk.on_http(sub, req, &shared.sites, now, super::persist::unix_ms())
        }
        DeskMsg::Upgrade { sub, req } => desk.on_agent_upgrade(sub, &req, now),
        DeskMsg::AgentOpen { agent, sub } => desk.on_agent_open(agent, sub, now),
        DeskMsg::AgentFrame { agent, sub, text } => desk.on_agent_frame(agent, sub, &text, now),
        DeskMsg::AgentClosed { agent, sub } => desk.on_agent_closed(agent, sub, now),
        DeskMsg::Visitor(ev) => desk.on_visitor(ev, now, super::persist::unix_ms()),
        DeskMsg::Transcript {
            conv,
            purpose,
            result,
        } => desk.on_transcript(conv, purpose, result),
        DeskMsg::List { sub, result } => desk.on_list(sub, result),
        DeskMsg::Committed { then, result } => {
            if let Some((sub, resp)) = then {
                let resp = match result {
                    Ok(()) => resp,
                    Err(e) => {
                        tracing::error!(error = %e, "agent desk: a write failed");
                        response::text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "the change could not be stored; try again",
                        )
                    }
                };
                shared.send_to(sub, WorkerMsg::HttpAnswer { sub, resp });
            }
        }
        DeskMsg::Shutdown => return false,
    }
    true
}

/// The desk's gauges for `/metrics` (the longest wait as the Unix time it began).
fn publish(g: &crate::desk::DeskGauges, m: &crate::metrics::DeskMetrics, now: Instant) {
    m.agents_online.set(g.agents_online as i64);
    m.waiting.set(g.waiting as i64);
    let since = g.oldest_since.map_or(0, |t| {
        super::persist::unix_ms()
            .saturating_sub(now.saturating_duration_since(t).as_millis() as u64)
    });
    m.oldest_since_ms.set(since as i64);
}

fn carry_out(o: DeskOut, shared: &Shared, store: &StoreHandle, tx: &flume::Sender<DeskMsg>) {
    match o {
        DeskOut::Frame { to, msg } => shared.send_to(to, WorkerMsg::Deliver { to, msg }),
        DeskOut::Close { sub } => shared.send_to(sub, WorkerMsg::CloseAgent { sub }),
        DeskOut::Http { sub, resp } => shared.send_to(sub, WorkerMsg::HttpAnswer { sub, resp }),
        DeskOut::Upgrade { sub, result } => {
            shared.send_to(sub, WorkerMsg::AgentUpgrade { sub, result })
        }
        DeskOut::Session { key, ev } => {
            let owner = key.owner(shared.inboxes.len());
            let _ = shared.inboxes[owner].send(WorkerMsg::Desk { key, ev });
        }
        DeskOut::Write { write, then } => {
            let tx = tx.clone();
            store.write(
                write,
                Some(Box::new(move |r| {
                    let _ = tx.send(DeskMsg::Committed { then, result: r });
                })),
            );
        }
        DeskOut::ReadTranscript { conv, purpose } => {
            let tx = tx.clone();
            store.transcript(
                &conv,
                Box::new(move |r| {
                    let _ = tx.send(DeskMsg::Transcript {
                        conv,
                        purpose,
                        result: r,
                    });
                }),
            );
        }
        DeskOut::ListConversations {
            site,
            limit,
            before,
            sub,
        } => {
            let tx = tx.clone();
            store.list_conversations(
                &site,
                limit,
                before,
                Box::new(move |r| {
                    let _ = tx.send(DeskMsg::List { sub, result: r });
                }),
            );
        }
    }
}
