//! One connection's state, and the only ways to change its mode.
//!
//! A connection is reading HTTP, waiting for a session's owner, holding a
//! long-poll, speaking one of the WebSocket protocols (chat, echo, agent), or
//! closing. Entering and leaving a mode goes through [`Conn::enter`] (and
//! [`Conn::leave`] when the connection is gone), which keeps the worker's
//! gauges of open WebSockets and held polls and says, as a [`Detach`], what
//! the mode left behind for the shell to let go of. [`Connections`] is the
//! worker's table of them, and the subscriber ids ([`SubId`]) that name them.

use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use http::{HeaderValue, Response};
use monoio::net::TcpStream;

use super::queue::WriteQueue;
use crate::chat::client::{ClientError, ClientMsg};
use crate::http::response::Body;
use slab::Slab;

use crate::ids::{AgentId, SessionKey, SubId};
use crate::metrics::{Gauge, WorkerMetrics};
use crate::session::ratelimit::TokenBucket;
use crate::ws::Receiver;

/// A request waiting for the session's owner to answer an `Op`.
pub(crate) enum Pending {
    /// A chat upgrade; the 101 is sent once the session is known.
    Upgrade {
        key: SessionKey,
        site: std::sync::Arc<str>,
        resp: Response<Body>,
    },
    /// `POST /poll/send`.
    PollSend {
        key: SessionKey,
        site: std::sync::Arc<str>,
        msgs: Vec<Result<ClientMsg, ClientError>>,
        keep_alive: bool,
    },
    /// `GET /poll/recv`.
    PollRecv {
        key: SessionKey,
        site: std::sync::Arc<str>,
        cursor: u64,
        keep_alive: bool,
    },
    /// A request another thread answers (the agent desk's API, the
    /// knowledge-base admin API), waiting for its answer.
    Elsewhere { keep_alive: bool },
    /// An `/agent/ws` upgrade, waiting for the desk to say who it is; the
    /// 101 is sent once it does.
    AgentUpgrade { resp: Response<Body> },
}

impl Pending {
    /// The session it concerns (requests answered elsewhere concern none).
    pub(crate) fn key(&self) -> Option<SessionKey> {
        match self {
            Pending::Upgrade { key, .. }
            | Pending::PollSend { key, .. }
            | Pending::PollRecv { key, .. } => Some(*key),
            Pending::Elsewhere { .. } | Pending::AgentUpgrade { .. } => None,
        }
    }
}

/// An agent's WebSocket (`/agent/ws`).
pub(crate) struct AgentWs {
    pub(crate) agent: AgentId,
    pub(crate) rx: Receiver,
}

/// A held `GET /poll/recv`.
pub(crate) struct PollHeld {
    pub(crate) key: SessionKey,
    pub(crate) cursor: u64,
    pub(crate) keep_alive: bool,
    pub(crate) set_cookie: Option<HeaderValue>,
    pub(crate) deadline: Instant,
}

/// A chat WebSocket.
pub(crate) struct WsChat {
    pub(crate) key: SessionKey,
    pub(crate) rx: Receiver,
    pub(crate) frames: TokenBucket,
}

/// What the connection is doing.
pub(crate) enum Mode {
    /// Reading HTTP requests.
    Http,
    /// Waiting for a session's owner; input is kept until it answers.
    /// (Boxed, like `PollHeld`: rare and large, they would bloat every connection.)
    Pending(Box<Pending>),
    /// Holding a long-poll.
    PollHeld(Box<PollHeld>),
    /// A chat WebSocket.
    Ws(WsChat),
    /// The `/echo` WebSocket.
    Echo(Receiver),
    /// An agent's WebSocket (rare: boxed).
    Agent(Box<AgentWs>),
    /// Our side is closing; input is discarded until the peer closes.
    Closing,
}

/// What a connection leaving its mode must let go of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detach {
    /// Nothing.
    Nothing,
    /// Its subscription to a session (a chat socket, a held or pending poll,
    /// a pending upgrade).
    Session(SessionKey),
    /// An agent's socket, which the desk must hear is closed.
    Agent(AgentId),
}

impl Mode {
    /// The gauge this mode counts in: open WebSockets, or held polls.
    fn gauge<'m>(&self, gauges: &'m WorkerMetrics) -> Option<&'m Gauge> {
        match self {
            Mode::Ws(_) | Mode::Echo(_) | Mode::Agent(_) => Some(&gauges.websockets),
            Mode::PollHeld(_) => Some(&gauges.polls_held),
            Mode::Http | Mode::Pending(_) | Mode::Closing => None,
        }
    }

    /// What leaving this mode lets go of.
    pub(crate) fn detach(&self) -> Detach {
        match self {
            Mode::Ws(ws) => Detach::Session(ws.key),
            Mode::PollHeld(h) => Detach::Session(h.key),
            Mode::Pending(p) => p.key().map_or(Detach::Nothing, Detach::Session),
            Mode::Agent(a) => Detach::Agent(a.agent),
            Mode::Echo(_) | Mode::Http | Mode::Closing => Detach::Nothing,
        }
    }

    /// Whether this is a WebSocket (chat, echo or agent).
    pub(crate) fn is_websocket(&self) -> bool {
        matches!(self, Mode::Ws(_) | Mode::Echo(_) | Mode::Agent(_))
    }
}

/// One connection.
pub(crate) struct Conn {
    /// Generation of the current subscriber identity (changes per poll request).
    pub(crate) gen: u64,
    pub(crate) stream: Rc<TcpStream>,
    pub(crate) fd: RawFd,
    mode: Mode,
    /// Input not yet consumed: a partial request or frame. Empty (unallocated) when idle.
    pub(crate) inbuf: Vec<u8>,
    pub(super) out: Option<Box<WriteQueue>>,
    pub(super) flushing: bool,
    pub(super) shut_after_flush: bool,
    /// A close frame is queued or sent: nothing may follow it.
    pub(super) close_sent: bool,
    pub(crate) dead: bool,
    pub(crate) last_rx: Instant,
    /// Start of the current wait: accept, request start, last response, close.
    pub(crate) since: Instant,
    pub(crate) served: u32,
    pub(crate) ping_out: bool,
}

impl Conn {
    /// A new connection, reading HTTP.
    pub(crate) fn new(gen: u64, stream: Rc<TcpStream>, now: Instant) -> Self {
        let fd = stream.as_raw_fd();
        Conn {
            gen,
            stream,
            fd,
            mode: Mode::Http,
            inbuf: Vec::new(),
            out: None,
            flushing: false,
            shut_after_flush: false,
            close_sent: false,
            dead: false,
            last_rx: now,
            since: now,
            served: 0,
            ping_out: false,
        }
    }

    /// What the connection is doing.
    pub(crate) fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Leaves the current mode for `next`, keeping the worker's gauges of
    /// open WebSockets and held polls; returns the mode left, whose
    /// [`Mode::detach`] says what the caller must let go of.
    pub(crate) fn enter(&mut self, next: Mode, gauges: &WorkerMetrics) -> Mode {
        if let Some(g) = next.gauge(gauges) {
            g.add(1);
        }
        let old = std::mem::replace(&mut self.mode, next);
        if let Some(g) = old.gauge(gauges) {
            g.add(-1);
        }
        old
    }

    /// The connection is gone: its mode's gauge is given back, and what it
    /// held is returned to be let go of.
    pub(crate) fn leave(self, gauges: &WorkerMetrics) -> Detach {
        if let Some(g) = self.mode.gauge(gauges) {
            g.add(-1);
        }
        self.mode.detach()
    }

    /// The held poll, if the connection holds one; it reads HTTP again.
    pub(crate) fn take_poll(&mut self, gauges: &WorkerMetrics) -> Option<Box<PollHeld>> {
        if !matches!(self.mode, Mode::PollHeld(_)) {
            return None;
        }
        match self.enter(Mode::Http, gauges) {
            Mode::PollHeld(h) => Some(h),
            _ => None,
        }
    }

    /// The pending request, if it is one `wanted` accepts; the connection
    /// reads HTTP again. Anything else is left as it was.
    pub(crate) fn take_pending(
        &mut self,
        wanted: impl Fn(&Pending) -> bool,
        gauges: &WorkerMetrics,
    ) -> Option<Pending> {
        match &self.mode {
            Mode::Pending(p) if wanted(p) => match self.enter(Mode::Http, gauges) {
                Mode::Pending(p) => Some(*p),
                _ => None,
            },
            _ => None,
        }
    }

    /// The chat WebSocket's state, in that mode.
    pub(crate) fn chat_mut(&mut self) -> Option<&mut WsChat> {
        match &mut self.mode {
            Mode::Ws(ws) => Some(ws),
            _ => None,
        }
    }

    /// The frame receiver of a WebSocket mode (chat, echo, agent).
    pub(crate) fn receiver_mut(&mut self) -> Option<&mut Receiver> {
        match &mut self.mode {
            Mode::Ws(ws) => Some(&mut ws.rx),
            Mode::Echo(rx) => Some(rx),
            Mode::Agent(a) => Some(&mut a.rx),
            _ => None,
        }
    }
    /// Whether this connection is waiting for its first request, or is part way through one.
    pub(crate) fn in_request(&self) -> bool {
        self.served == 0 || !self.inbuf.is_empty()
    }
}

/// The connections part of a worker: its table of connections, by slot, and
/// the generations that tell a slot's successive subscribers apart.
pub(crate) struct Connections {
    worker: usize,
    slab: Slab<Conn>,
    /// The next generation to hand out: a message for a subscriber whose
    /// connection has closed (and whose slot was reused) is then stale.
    next_gen: u64,
}

impl Connections {
    /// The empty table of worker `worker`.
    pub(crate) fn new(worker: usize) -> Self {
        Connections {
            worker,
            slab: Slab::new(),
            next_gen: 1,
        }
    }

    fn next_gen(&mut self) -> u64 {
        let g = self.next_gen;
        self.next_gen += 1;
        g
    }

    /// Takes in an accepted connection; its slot.
    pub(crate) fn open(&mut self, stream: Rc<TcpStream>, now: Instant) -> usize {
        let gen = self.next_gen();
        self.slab.insert(Conn::new(gen, stream, now))
    }

    /// The connection at `slot`.
    pub(crate) fn get(&self, slot: usize) -> Option<&Conn> {
        self.slab.get(slot)
    }

    /// The connection at `slot`, to change.
    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Conn> {
        self.slab.get_mut(slot)
    }

    /// The connection at `slot` is finished: out of the table.
    pub(crate) fn close(&mut self, slot: usize) -> Option<Conn> {
        self.slab.try_remove(slot)
    }

    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether none is.
    pub(crate) fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every connection with its slot.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slab.iter()
    }

    /// The subscriber id of a connection as it is now.
    pub(crate) fn sub_of(&self, slot: usize) -> SubId {
        let gen = self.slab.get(slot).map_or(0, |c| c.gen);
        SubId::new(self.worker, slot, gen)
    }

    /// A fresh subscriber id for the connection (each poll request gets one).
    pub(crate) fn renew_sub(&mut self, slot: usize) -> SubId {
        let gen = self.next_gen();
        if let Some(c) = self.slab.get_mut(slot) {
            c.gen = gen;
        }
        SubId::new(self.worker, slot, gen)
    }

    /// The connection a subscriber id names, if it is still that subscriber.
    pub(crate) fn slot_of(&self, sub: SubId) -> Option<usize> {
        let slot = sub.slot();
        (sub.worker() == self.worker
            && self
                .slab
                .get(slot)
                .is_some_and(|c| sub.is_generation(c.gen) && !c.dead))
        .then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_is_counted_in_its_gauge_while_it_lasts() {
        let m = WorkerMetrics::default();
        let ws = || Mode::Echo(Receiver::default());
        assert!(ws().gauge(&m).is_some());
        assert!(Mode::Http.gauge(&m).is_none());
        assert_eq!(Mode::Http.detach(), Detach::Nothing);
        assert_eq!(ws().detach(), Detach::Nothing);
        let agent = Mode::Agent(Box::new(AgentWs {
            agent: AgentId::new(7),
            rx: Receiver::default(),
        }));
        assert_eq!(agent.detach(), Detach::Agent(AgentId::new(7)));
        assert!(agent.is_websocket() && !Mode::Closing.is_websocket());
    }
}
