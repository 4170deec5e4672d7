//! Connections: accepting, reading into the worker's shared buffer, the
//! per-connection protocol mode (HTTP, waiting on a session, held poll,
//! WebSocket), and the bounded write queue.
//!
//! A connection's task does nothing but wait for readiness and hand the bytes
//! to [`Worker::on_readable`]; everything else is synchronous code over the
//! connection table. Writes go straight to the socket; only what the socket
//! does not take is queued, and a flush task exists only while something is.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use monoio::net::{TcpListener, TcpStream};

mod queue;
mod state;

pub(crate) use state::{AgentWs, Conn, Connections, Detach, Mode, Pending, PollHeld, WsChat};

use super::sys;
use super::worker::{Op, Worker};
use crate::chat::client::{self, ClientMsg};
use crate::chat::server::ServerMsg;
use crate::chat::ErrorCode;
use crate::http::response::{self, Body};
use crate::ids::{AgentId, SubId};
use crate::session::error_msg;
use crate::ws::frame::{encode_close, write_header, MAX_HEADER_LEN};
use crate::ws::message::CloseFrame;
use crate::ws::{close, Event, Limits, OpCode, Role};

/// Accepts connections until the worker stops.
pub(crate) async fn accept_loop(w: Rc<Worker>, listener: TcpListener) {
    let mut last_warn: Option<Instant> = None;
    loop {
        let r = listener.accept().await;
        if w.stopping.get() {
            break;
        }
        match r {
            Ok((stream, _peer)) => {
                w.m().accepted.inc();
                let open = w
                    .shared
                    .open_conns
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                if open >= w.shared.max_connections {
                    w.shared
                        .open_conns
                        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                    w.m().refused_full.inc();
                    w.m().http_status(503);
                    monoio::spawn(refuse_full(stream, w.date.borrow().clone()));
                    continue;
                }
                monoio::spawn(conn_task(w.clone(), stream));
            }
            Err(e) => {
                let out_of_fds = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE)
                        | Some(libc::ENFILE)
                        | Some(libc::ENOBUFS)
                        | Some(libc::ENOMEM)
                );
                if out_of_fds {
                    if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(worker = w.id, error = %e, "accept failed: out of descriptors; lower limits.max_connections or raise the open-files limit");
                        last_warn = Some(Instant::now());
                    }
                    // Back off briefly instead of spinning on a full table.
                    monoio::time::sleep(Duration::from_millis(10)).await;
                } else {
                    tracing::debug!(worker = w.id, error = %e, "accept failed");
                }
            }
        }
    }
}

/// Answers 503 to a connection over the limit without reading its request,
/// then waits (briefly) for the peer to close so the answer is not reset.
async fn refuse_full(stream: TcpStream, date: HeaderValue) {
    let mut resp = response::unavailable(
        1,
        "the server is at its connection limit; retry after a second",
    );
    resp.headers_mut().insert(header::DATE, date);
    let mut bytes = Vec::new();
    response::encode(&resp, false, false, &mut bytes);
    let fd = stream.as_raw_fd();
    let _ = sys::send_parts(fd, &[&bytes]);
    sys::shutdown(fd, libc::SHUT_WR);
    let mut sink = [0u8; 4096];
    let _ = monoio::time::timeout(Duration::from_secs(1), async {
        loop {
            if stream.readable(false).await.is_err() {
                return;
            }
            match sys::recv(fd, &mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if sys::would_block(&e) => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

async fn conn_task(w: Rc<Worker>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let stream = Rc::new(stream);
    let slot = w.register(stream.clone());
    loop {
        if stream.readable(false).await.is_err() {
            break;
        }
        if !w.on_readable(slot) {
            break;
        }
    }
    w.on_conn_end(slot);
}

/// Bytes for the write path: borrowed (copied only if queued) or shared.
pub(crate) enum Payload<'a> {
    Slice(&'a [u8]),
    Shared(&'a Bytes),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Slice(s) => s,
            Payload::Shared(b) => b,
        }
    }

    fn tail(&self, from: usize) -> Bytes {
        match self {
            Payload::Slice(s) => Bytes::copy_from_slice(&s[from..]),
            Payload::Shared(b) => b.slice(from..),
        }
    }
}

enum Flush {
    More,
    Done,
    Gone,
}

impl Worker {
    fn register(&self, stream: Rc<TcpStream>) -> usize {
        let now = Instant::now();
        self.m().connections.add(1);
        self.conns.borrow_mut().open(stream, now)
    }

    /// The subscriber id of a connection as it is now.
    pub(crate) fn sub_of(&self, slot: usize) -> SubId {
        self.conns.borrow().sub_of(slot)
    }

    /// A fresh subscriber id for the connection (each poll request gets one).
    pub(crate) fn renew_sub(&self, slot: usize) -> SubId {
        self.conns.borrow_mut().renew_sub(slot)
    }

    /// The connection a subscriber id names, if it is still that subscriber.
    pub(crate) fn slot_of(&self, sub: SubId) -> Option<usize> {
        self.conns.borrow().slot_of(sub)
    }

    /// Reads once; false when the connection is finished.
    fn on_readable(self: &Rc<Self>, slot: usize) -> bool {
        let fd = match self.conns.borrow().get(slot) {
            Some(c) if !c.dead => c.fd,
            _ => return false,
        };
        let mut buf = std::mem::take(&mut *self.read_buf.borrow_mut());
        let keep = match sys::recv(fd, &mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.m().bytes_in.add(n as u64);
                self.on_input(slot, &mut buf[..n]);
                self.conns.borrow().get(slot).is_some_and(|c| !c.dead)
            }
            Err(e) if sys::would_block(&e) => true,
            Err(_) => false,
        };
        *self.read_buf.borrow_mut() = buf;
        keep
    }

    fn on_input(self: &Rc<Self>, slot: usize, data: &mut [u8]) {
        let now = Instant::now();
        let mut buf = {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns.get_mut(slot) else { return };
            c.last_rx = now;
            c.ping_out = false;
            if matches!(c.mode(), Mode::Closing) {
                return;
            }
            if matches!(c.mode(), Mode::Http) && c.inbuf.is_empty() {
                // A new request starts: the handshake timeout counts from here.
                c.since = now;
            }
            std::mem::take(&mut c.inbuf)
        };
        if buf.is_empty() {
            let used = self.process(slot, data);
            if used < data.len() {
                self.keep_input(slot, data[used..].to_vec());
            }
        } else {
            buf.extend_from_slice(data);
            let used = self.process(slot, &mut buf);
            buf.drain(..used);
            self.keep_input(slot, buf);
        }
    }

    /// Stores unconsumed input, refusing to hold more than any request or frame may be.
    fn keep_input(self: &Rc<Self>, slot: usize, mut buf: Vec<u8>) {
        let l = &self.shared.config.limits;
        let cap = (l.max_head_bytes
            + self
                .http_limits()
                .upload
                .map_or(l.max_body_bytes, |u| u.max_body))
        .max(l.max_frame_bytes as usize + MAX_HEADER_LEN)
        .max(if self.shared.config.echo {
            l.echo_max_message_bytes + MAX_HEADER_LEN
        } else {
            0
        });
        let mut conns = self.conns.borrow_mut();
        let Some(c) = conns.get_mut(slot) else { return };
        if buf.len() > cap {
            c.dead = true;
            sys::shutdown(c.fd, libc::SHUT_RDWR);
            return;
        }
        if buf.capacity() > 4 * buf.len() + 4096 {
            buf.shrink_to_fit();
        }
        c.inbuf = buf;
    }

    /// Processes buffered input after a mode change (an answer from a session's owner).
    pub(crate) fn resume_input(self: &Rc<Self>, slot: usize) {
        let buf = match self.conns.borrow_mut().get_mut(slot) {
            Some(c) if !c.inbuf.is_empty() && !c.dead => std::mem::take(&mut c.inbuf),
            _ => return,
        };
        let mut buf = buf;
        let used = self.process(slot, &mut buf);
        buf.drain(..used);
        if !buf.is_empty() {
            self.keep_input(slot, buf);
        }
    }

    /// Consumes as much of `buf` as the connection's mode can take now.
    fn process(self: &Rc<Self>, slot: usize, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            enum Kind {
                Http,
                Ws,
                Wait,
                Discard,
            }
            let kind = match self.conns.borrow().get(slot) {
                Some(c) if !c.dead => match c.mode() {
                    Mode::Http => Kind::Http,
                    Mode::Ws(_) | Mode::Echo(_) | Mode::Agent(_) => Kind::Ws,
                    Mode::Pending(_) | Mode::PollHeld(_) => Kind::Wait,
                    Mode::Closing => Kind::Discard,
                },
                _ => return buf.len(),
            };
            match kind {
                Kind::Http => match crate::http::request::parse(&buf[pos..], &self.http_limits()) {
                    Ok(Some(p)) => {
                        pos += p.consumed;
                        self.on_request(slot, p);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let resp = response::text(e.status(), e.to_string());
                        self.respond(slot, resp, false, false);
                        return buf.len();
                    }
                },
                Kind::Ws => {
                    pos += self.on_ws_input(slot, &mut buf[pos..]);
                    break;
                }
                Kind::Wait => break,
                Kind::Discard => return buf.len(),
            }
        }
        pos
    }

    fn http_limits(&self) -> crate::http::request::Limits<'_> {
        let c = &self.shared.config;
        let l = &c.limits;
        crate::http::request::Limits {
            max_head: l.max_head_bytes,
            max_headers: l.max_headers,
            max_body: l.max_body_bytes,
            // Knowledge-base documents, from the admin only.
            upload: self
                .shared
                .admin_token
                .as_ref()
                .map(|token| crate::http::request::Upload {
                    max_body: c.knowledge.max_upload_bytes.max(l.max_body_bytes),
                    path_prefix: "/admin/sites/",
                    token,
                }),
        }
    }

    /// Feeds WebSocket input to the connection's receiver.
    fn on_ws_input(self: &Rc<Self>, slot: usize, buf: &mut [u8]) -> usize {
        let l = &self.shared.config.limits;
        let (mut rx, echo, agent) = {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns.get_mut(slot) else {
                return buf.len();
            };
            let (echo, agent) = match c.mode() {
                Mode::Ws(_) => (false, None),
                Mode::Echo(_) => (true, None),
                Mode::Agent(a) => (false, Some(a.agent)),
                _ => return 0,
            };
            match c.receiver_mut() {
                Some(rx) => (std::mem::take(rx), echo, agent),
                None => return 0,
            }
        };
        let limits = if echo {
            Limits {
                max_frame: l.echo_max_message_bytes as u64,
                max_message: l.echo_max_message_bytes,
            }
        } else {
            Limits {
                max_frame: l.max_frame_bytes,
                max_message: l.max_frame_bytes as usize,
            }
        };
        let result = rx.feed(buf, Role::Server, &limits, |ev| {
            self.m().frames_in.inc();
            if echo {
                self.on_echo_event(slot, ev);
            } else if let Some(agent) = agent {
                self.on_agent_event(slot, agent, ev);
            } else {
                self.on_chat_event(slot, ev);
            }
        });
        if let Some(r) = self
            .conns
            .borrow_mut()
            .get_mut(slot)
            .and_then(|c| c.receiver_mut())
        {
            *r = rx;
        }
        match result {
            Ok(n) => n,
            Err(e) => {
                self.ws_fail(slot, e.close_code(), &e.to_string());
                buf.len()
            }
        }
    }

    fn on_echo_event(self: &Rc<Self>, slot: usize, ev: Event<'_>) {
        match ev {
            Event::Text(t) => self.send_frame(slot, OpCode::Text, Payload::Slice(t)),
            Event::Binary(b) => self.send_frame(slot, OpCode::Binary, Payload::Slice(b)),
            Event::Ping(p) => self.send_frame(slot, OpCode::Pong, Payload::Slice(p)),
            Event::Pong(_) => {}
            Event::Close(c) => self.ws_close_reply(slot, c),
        }
    }

    /// An agent socket's frames go to the desk as they are; it parses them.
    fn on_agent_event(self: &Rc<Self>, slot: usize, agent: AgentId, ev: Event<'_>) {
        match ev {
            Event::Text(payload) => {
                let Some(sub) = self
                    .conns
                    .borrow()
                    .get(slot)
                    .map(|c| SubId::new(self.id, slot, c.gen))
                else {
                    return;
                };
                let _ = self.shared.desk.send(super::desk::DeskMsg::AgentFrame {
                    agent,
                    sub,
                    text: payload.to_vec(),
                });
            }
            Event::Binary(_) => self.send_json(
                slot,
                &crate::desk::wire::DeskError::bad_request("send JSON in text frames").frame(None),
            ),
            Event::Ping(p) => self.send_frame(slot, OpCode::Pong, Payload::Slice(p)),
            Event::Pong(_) => {}
            Event::Close(c) => self.ws_close_reply(slot, c),
        }
    }

    fn on_chat_event(self: &Rc<Self>, slot: usize, ev: Event<'_>) {
        match ev {
            Event::Text(payload) => {
                let now = Instant::now();
                let limits = &self.shared.config.limits;
                let (key, sub, allowed) = {
                    let mut conns = self.conns.borrow_mut();
                    let Some(c) = conns.get_mut(slot) else { return };
                    let gen = c.gen;
                    let Some(ws) = c.chat_mut() else { return };
                    (
                        ws.key,
                        SubId::new(self.id, slot, gen),
                        ws.frames.take(limits.frame_rate, now),
                    )
                };
                if let Err(wait) = allowed {
                    let msg = format!(
                        "more than {} frames per second; slow down",
                        limits.frame_rate.per_sec
                    );
                    let ms = wait.as_millis().max(1) as u64;
                    self.send_error(slot, ErrorCode::RateLimited, &msg, None, Some(ms));
                    return;
                }
                match client::parse(payload, limits.max_text_bytes) {
                    // Answered here: a ping touches no session and no store.
                    Ok(ClientMsg::Ping { id }) => {
                        self.send_json(slot, &ServerMsg::Pong { id: &id }.to_bytes())
                    }
                    Ok(msg) => self.submit(key, sub, Op::Client { msg, received: now }),
                    Err(e) => self.send_error(slot, e.code, &e.message, e.id.as_deref(), None),
                }
            }
            Event::Binary(_) => self.send_error(
                slot,
                ErrorCode::BadRequest,
                "binary frames are not part of the protocol; send JSON in text frames",
                None,
                None,
            ),
            Event::Ping(p) => self.send_frame(slot, OpCode::Pong, Payload::Slice(p)),
            Event::Pong(_) => {}
            Event::Close(c) => self.ws_close_reply(slot, c),
        }
    }

    /// Sends an `error` frame on a chat socket.
    pub(crate) fn send_error(
        self: &Rc<Self>,
        slot: usize,
        code: ErrorCode,
        msg: &str,
        id: Option<&str>,
        retry_after_ms: Option<u64>,
    ) {
        self.m().error(code);
        self.send_json(slot, &error_msg(code, msg, id, retry_after_ms));
    }

    /// Sends a JSON text frame.
    pub(crate) fn send_json(self: &Rc<Self>, slot: usize, json: &Bytes) {
        self.send_frame(slot, OpCode::Text, Payload::Shared(json));
    }

    fn send_frame(self: &Rc<Self>, slot: usize, op: OpCode, payload: Payload<'_>) {
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = write_header(&mut hdr, true, op, payload.as_slice().len(), None);
        self.m().frames_out.inc();
        self.write(slot, &hdr[..n], payload);
    }

    /// Delivers a session message to a chat socket of this worker.
    pub(crate) fn deliver_ws(self: &Rc<Self>, to: SubId, msg: &Bytes) {
        let Some(slot) = self.slot_of(to) else { return };
        if matches!(
            self.conns.borrow().get(slot).map(Conn::mode),
            Some(Mode::Ws(_) | Mode::Agent(_))
        ) {
            self.send_json(slot, msg);
        }
    }

    /// The peer closed: answer with its code and close our side.
    fn ws_close_reply(self: &Rc<Self>, slot: usize, frame: Option<CloseFrame<'_>>) {
        let code = frame.map_or(close::NORMAL, |f| f.code);
        self.write_close(slot, code, "");
    }

    /// Closes a WebSocket with `code` (protocol error, size, UTF-8, slowness, shutdown).
    pub(crate) fn ws_fail(self: &Rc<Self>, slot: usize, code: u16, reason: &str) {
        if code != close::GOING_AWAY {
            self.m().ws_closed_by_server.inc();
        }
        self.write_close(slot, code, reason);
    }

    /// Writes a close frame (the last frame the connection sends), then closes our side.
    fn write_close(self: &Rc<Self>, slot: usize, code: u16, reason: &str) {
        let mut out = Vec::new();
        encode_close(&mut out, code, reason, None);
        self.m().frames_out.inc();
        self.write(slot, &out, Payload::Slice(&[]));
        if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
            c.close_sent = true;
        }
        self.begin_close(slot);
    }

    /// Our side is done: detach from the session, flush, then send FIN and
    /// wait (bounded by the sweeper) for the peer to close.
    pub(crate) fn begin_close(self: &Rc<Self>, slot: usize) {
        let now = Instant::now();
        let (detach, gen, shut_now) = {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns.get_mut(slot) else { return };
            let old = c.enter(Mode::Closing, self.m());
            c.since = now;
            c.inbuf = Vec::new();
            c.shut_after_flush = true;
            (old.detach(), c.gen, !c.flushing && c.out.is_none())
        };
        if shut_now {
            if let Some(c) = self.conns.borrow().get(slot) {
                sys::shutdown(c.fd, libc::SHUT_WR);
            }
        }
        self.let_go(SubId::new(self.id, slot, gen), detach);
    }

    /// Carries out what a connection leaving its mode lets go of: its
    /// subscription to a session, or (an agent's socket) the desk's record
    /// of it.
    fn let_go(self: &Rc<Self>, sub: SubId, detach: Detach) {
        match detach {
            Detach::Nothing => {}
            Detach::Session(key) => self.submit(key, sub, Op::Detach),
            Detach::Agent(agent) => {
                let _ = self
                    .shared
                    .desk
                    .send(super::desk::DeskMsg::AgentClosed { agent, sub });
            }
        }
    }

    /// Drops a connection at once.
    pub(crate) fn kill(&self, slot: usize) {
        if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
            c.dead = true;
            sys::shutdown(c.fd, libc::SHUT_RDWR);
        }
    }

    /// Writes an HTTP response; closes after it unless `keep_alive`.
    pub(crate) fn respond(
        self: &Rc<Self>,
        slot: usize,
        mut resp: Response<Body>,
        keep_alive: bool,
        head_only: bool,
    ) {
        let h = resp.headers_mut();
        h.insert(header::DATE, self.date.borrow().clone());
        h.insert("x-lc-worker", HeaderValue::from(self.id));
        self.m().http_status(resp.status().as_u16());
        let mut out = Vec::with_capacity(256 + resp.body().len());
        response::encode(&resp, keep_alive, head_only, &mut out);
        self.write(slot, &out, Payload::Slice(&[]));
        if keep_alive {
            if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
                c.since = Instant::now();
                c.served += 1;
            }
        } else {
            self.begin_close(slot);
        }
    }

    /// Writes `head` then `body`: straight to the socket when nothing is queued,
    /// queuing what it does not take.
    pub(crate) fn write(self: &Rc<Self>, slot: usize, head: &[u8], body: Payload<'_>) {
        let l = &self.shared.config.limits;
        let mut spawn_flush = None;
        let mut too_slow = false;
        {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns.get_mut(slot) else { return };
            if c.dead || c.close_sent {
                return;
            }
            let body_s = body.as_slice();
            let total = head.len() + body_s.len();
            let mut written = 0;
            if c.out.is_none() && !c.flushing {
                match sys::send_parts(c.fd, &[head, body_s]) {
                    Ok(n) => written = n,
                    Err(e) if sys::would_block(&e) => {}
                    Err(_) => {
                        c.dead = true;
                        sys::shutdown(c.fd, libc::SHUT_RDWR);
                        return;
                    }
                }
                self.m().bytes_out.add(written as u64);
                if written == total {
                    return;
                }
            }
            // The echo route must hold one whole echoed message of the largest size it takes.
            let limit = match c.mode() {
                Mode::Echo(_) => l.outbound_queue_bytes.max(2 * l.echo_max_message_bytes),
                _ => l.outbound_queue_bytes,
            };
            let q = c.out.get_or_insert_with(Box::default);
            q.push_rest(head, body_s.len(), |from| body.tail(from), written);
            if q.bytes() > limit {
                too_slow = true;
            } else if !c.flushing {
                c.flushing = true;
                spawn_flush = Some(c.stream.clone());
            }
        }
        if too_slow {
            self.slow_reader(slot);
        } else if let Some(stream) = spawn_flush {
            monoio::spawn(flush_task(self.clone(), slot, stream));
        }
    }

    /// A reader too far behind: drop what it has not started to receive, then
    /// close with 1008 (WebSocket) or drop the connection (HTTP).
    fn slow_reader(self: &Rc<Self>, slot: usize) {
        tracing::debug!(
            worker = self.id,
            slot,
            "closing a reader that fell too far behind"
        );
        let stream = {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns.get_mut(slot) else { return };
            if !c.mode().is_websocket() {
                drop(conns);
                return self.kill(slot);
            }
            let q = c.out.get_or_insert_with(Box::default);
            q.cut_to_frame();
            let mut frame = Vec::new();
            encode_close(&mut frame, close::POLICY, "reader too slow", None);
            q.push(Bytes::from(frame), true);
            c.close_sent = true;
            if c.flushing {
                None
            } else {
                c.flushing = true;
                Some(c.stream.clone())
            }
        };
        self.m().ws_closed_by_server.inc();
        self.begin_close(slot);
        if let Some(stream) = stream {
            monoio::spawn(flush_task(self.clone(), slot, stream));
        }
    }

    /// Writes queued output; says whether more remains.
    fn flush_some(&self, slot: usize, stream: &Rc<TcpStream>) -> Flush {
        let mut conns = self.conns.borrow_mut();
        let Some(c) = conns.get_mut(slot) else {
            return Flush::Gone;
        };
        if !Rc::ptr_eq(&c.stream, stream) || c.dead {
            return Flush::Gone;
        }
        if let Some(q) = c.out.as_mut() {
            let parts: Vec<&[u8]> = q.front(64).collect();
            match sys::send_parts(c.fd, &parts) {
                Ok(n) => {
                    self.m().bytes_out.add(n as u64);
                    q.consume(n);
                }
                Err(e) if sys::would_block(&e) => return Flush::More,
                Err(_) => {
                    c.dead = true;
                    sys::shutdown(c.fd, libc::SHUT_RDWR);
                    return Flush::Gone;
                }
            }
            if !q.is_empty() {
                return Flush::More;
            }
        }
        c.out = None;
        c.flushing = false;
        if c.shut_after_flush {
            sys::shutdown(c.fd, libc::SHUT_WR);
        }
        Flush::Done
    }

    fn on_conn_end(self: &Rc<Self>, slot: usize) {
        let Some(c) = self.conns.borrow_mut().close(slot) else {
            return;
        };
        self.shared
            .open_conns
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.m().connections.add(-1);
        let sub = SubId::new(self.id, slot, c.gen);
        let detach = c.leave(self.m());
        self.let_go(sub, detach);
        if self.stopping.get() && self.conns.borrow().is_empty() {
            self.drained.set();
        }
    }

    /// Shutdown: close sockets with 1001, finish held polls, drop idle connections.
    pub(crate) fn shutdown_conn(self: &Rc<Self>, slot: usize) {
        enum Act {
            GoingAway,
            FinishPoll,
            Kill,
            Nothing,
        }
        let act = match self.conns.borrow().get(slot).map(|c| c.mode()) {
            Some(Mode::Ws(_) | Mode::Echo(_) | Mode::Agent(_)) => Act::GoingAway,
            Some(Mode::PollHeld(_)) => Act::FinishPoll,
            Some(Mode::Http | Mode::Pending(_)) => Act::Kill,
            _ => Act::Nothing,
        };
        match act {
            Act::GoingAway => self.ws_fail(slot, close::GOING_AWAY, "server shutting down"),
            Act::FinishPoll => self.expire_poll(slot, false),
            Act::Kill => self.kill(slot),
            Act::Nothing => {}
        }
    }
}

/// Writes a connection's queue whenever the socket can take more.
async fn flush_task(w: Rc<Worker>, slot: usize, stream: Rc<TcpStream>) {
    loop {
        if stream.writable(false).await.is_err() {
            if let Some(c) = w.conns.borrow_mut().get_mut(slot) {
                if Rc::ptr_eq(&c.stream, &stream) {
                    c.dead = true;
                    sys::shutdown(c.fd, libc::SHUT_RDWR);
                }
            }
            return;
        }
        match w.flush_some(slot, &stream) {
            Flush::More => {}
            Flush::Done | Flush::Gone => return,
        }
    }
}

#[cfg(test)]
mod tests {
    /// An idle session costs its connection record and its session state; these
    /// bounds keep a new field from quietly growing every one of them.
    #[test]
    fn per_connection_state_stays_small() {
        let (mode, conn) = (
            std::mem::size_of::<super::Mode>(),
            std::mem::size_of::<super::Conn>(),
        );
        let session = std::mem::size_of::<crate::session::Session>();
        assert!(mode <= 64, "Mode is {mode} bytes: box large, rare variants");
        assert!(conn <= 160, "Conn is {conn} bytes");
        assert!(session <= 160, "Session is {session} bytes");
    }
}
