//! The effects of the HTTP routes `router` decides: upgrades, long-polling,
//! handing requests to the desk and retrieval threads, and completing
//! requests that waited on a session's owner or another thread. The pure
//! answers are `router::respond`'s.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::conn::{AgentWs, Mode, Pending, PollHeld, WsChat};
use super::worker::{Op, Worker};
use crate::chat::client;
use crate::http::request::Parsed;
use crate::http::response::{self, Body};
use crate::ids::SessionKey;
use crate::ids::SubId;
use crate::router::{self, respond, Route};
use crate::session::ratelimit::TokenBucket;
use crate::sites::Site;
use crate::ws::{handshake, Receiver};

impl Worker {
    /// Acts on one request as the router routes it.
    pub(crate) fn on_request(self: &Rc<Self>, slot: usize, p: Parsed) {
        let Parsed {
            request: req,
            keep_alive,
            ..
        } = p;
        let head = req.method() == Method::HEAD;
        let switches = router::Switches {
            echo: self.shared.config.echo,
        };
        match router::route(&req, switches) {
            Route::ChatUpgrade => self.upgrade_chat(slot, req),
            Route::EchoUpgrade => self.upgrade_echo(slot, req),
            Route::PollSend => self.poll(slot, req, keep_alive, |req| self.poll_batch(req)),
            Route::PollRecv => self.poll(slot, req, keep_alive, |req| {
                respond::poll_cursor(req).map(|cursor| PollOp::Recv { cursor })
            }),
            Route::Health => self.respond(slot, respond::health(), keep_alive, head),
            Route::Metrics => {
                let r = respond::metrics(self.render_metrics());
                self.respond(slot, r, keep_alive, head);
            }
            Route::AgentUpgrade => self.upgrade_agent(slot, req),
            Route::AgentPage => self.respond(slot, respond::agent_page(&req), keep_alive, head),
            Route::Desk => self.to_desk(slot, req, keep_alive),
            Route::KnowledgeBase => self.to_retrieval(slot, req, keep_alive),
            Route::Admin => {
                let r = crate::admin::handle(
                    &req,
                    self.shared.admin_token.as_ref(),
                    &self.shared.sites,
                );
                self.respond(slot, r, keep_alive, head);
            }
            Route::Asset(name) => self.respond(slot, respond::asset(&req, name), keep_alive, head),
            Route::ChatFrame => {
                let r = match self.site_for(&req, false) {
                    Ok(site) => respond::chat_frame(&req, &site),
                    Err(r) => *r,
                };
                self.respond(slot, r, keep_alive, head);
            }
            Route::MethodNotAllowed(msg) => {
                let r = response::text(StatusCode::METHOD_NOT_ALLOWED, msg);
                self.respond(slot, r, keep_alive, head);
            }
            Route::NotFound(msg) => {
                let r = response::text(StatusCode::NOT_FOUND, msg);
                self.respond(slot, r, keep_alive, head);
            }
        }
    }

    /// The Prometheus exposition of this worker's view of the server.
    fn render_metrics(&self) -> String {
        let mut s = String::with_capacity(8192);
        crate::metrics::render(&self.shared.metrics, self.shared.max_connections, &mut s);
        crate::metrics::render_store(&self.shared.store_stats, &mut s);
        crate::metrics::render_pipeline(
            &self.shared.retrieval_metrics,
            self.shared.retrieval.len(),
            &self.shared.desk_metrics,
            super::persist::unix_ms(),
            &mut s,
        );
        crate::metrics::render_build_info(&mut s);
        self.inference.stats().render_prometheus(&mut s);
        s
    }

    /// A request the agent desk answers: handed to its thread.
    fn to_desk(self: &Rc<Self>, slot: usize, req: Request<Vec<u8>>, keep_alive: bool) {
        let desk = &self.shared.desk;
        self.answer_elsewhere(slot, keep_alive, |sub| {
            let _ = desk.send(super::desk::DeskMsg::Http { sub, req });
        });
    }

    /// A knowledge-base admin request: handed to the retrieval threads (an
    /// upload is chunked and embedded there).
    fn to_retrieval(self: &Rc<Self>, slot: usize, req: Request<Vec<u8>>, keep_alive: bool) {
        let retrieval = &self.shared.retrieval;
        self.answer_elsewhere(slot, keep_alive, |sub| {
            let _ = retrieval.send(super::retrieval::RetrievalMsg::Http { sub, req });
        });
    }

    /// Parks the connection until another thread's answer comes back as
    /// `WorkerMsg::HttpAnswer` for the id `send` hands that thread.
    fn answer_elsewhere(self: &Rc<Self>, slot: usize, keep_alive: bool, send: impl FnOnce(SubId)) {
        let sub = self.renew_sub(slot);
        self.set_pending(slot, Pending::Elsewhere { keep_alive });
        send(sub);
    }

    /// `GET /agent/ws`: the handshake is checked here, who it is by the desk.
    fn upgrade_agent(self: &Rc<Self>, slot: usize, req: Request<Vec<u8>>) {
        let resp = match handshake::accept(&req) {
            Ok(r) => r,
            Err(e) => return self.respond(slot, e.response(), false, false),
        };
        let sub = self.renew_sub(slot);
        self.set_pending(slot, Pending::AgentUpgrade { resp });
        let _ = self
            .shared
            .desk
            .send(super::desk::DeskMsg::Upgrade { sub, req });
    }

    /// The connection's pending request, if it is one `wanted` accepts; the
    /// connection is back to reading HTTP. Anything else is left as it was.
    fn take_pending(&self, slot: usize, wanted: impl Fn(&Pending) -> bool) -> Option<Pending> {
        self.conns
            .borrow_mut()
            .get_mut(slot)?
            .take_pending(wanted, self.m())
    }

    /// Another thread's answer to a request handed to it.
    pub(crate) fn on_http_answer(self: &Rc<Self>, sub: SubId, resp: Response<Body>) {
        let Some(slot) = self.slot_of(sub) else {
            return;
        };
        let Some(Pending::Elsewhere { keep_alive }) =
            self.take_pending(slot, |p| matches!(p, Pending::Elsewhere { .. }))
        else {
            return;
        };
        self.respond(slot, resp, keep_alive, false);
        self.resume_input(slot);
    }

    /// The desk's answer to an `/agent/ws` upgrade.
    pub(crate) fn on_agent_upgrade(
        self: &Rc<Self>,
        sub: SubId,
        result: Result<crate::ids::AgentId, Response<Body>>,
    ) {
        let Some(slot) = self.slot_of(sub) else {
            return;
        };
        let Some(Pending::AgentUpgrade { mut resp }) =
            self.take_pending(slot, |p| matches!(p, Pending::AgentUpgrade { .. }))
        else {
            return;
        };
        match result {
            Ok(agent) => {
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                self.respond(slot, resp, true, false);
                if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
                    let agent_ws = AgentWs {
                        agent,
                        rx: Receiver::default(),
                    };
                    c.enter(Mode::Agent(Box::new(agent_ws)), self.m());
                }
                let _ = self
                    .shared
                    .desk
                    .send(super::desk::DeskMsg::AgentOpen { agent, sub });
                self.resume_input(slot);
            }
            Err(refusal) => self.respond(slot, refusal, false, false),
        }
    }

    /// The site a chat request names, after the Origin check; or the refusal.
    fn site_for(
        &self,
        req: &Request<Vec<u8>>,
        check_origin: bool,
    ) -> Result<Arc<Site>, respond::Refusal> {
        let id = respond::site_id(req)?;
        let site = self
            .shared
            .sites
            .get(&id)
            .ok_or_else(|| respond::unknown_site(&id))?;
        if check_origin {
            respond::check_origin(req.headers(), &site)?;
        }
        Ok(site)
    }

    /// The `Set-Cookie` that carries (or refreshes) a session token.
    fn session_cookie(&self, key: &SessionKey) -> HeaderValue {
        respond::session_cookie(key, &self.shared.config.session)
    }

    fn upgrade_chat(self: &Rc<Self>, slot: usize, req: Request<Vec<u8>>) {
        let site = match self.site_for(&req, true) {
            Ok(s) => s,
            Err(r) => return self.respond(slot, *r, false, false),
        };
        let resp = match handshake::accept(&req) {
            Ok(r) => r,
            Err(e) => return self.respond(slot, e.response(), false, false),
        };
        match router::session_key(&req) {
            Some(key) => {
                let sub = self.renew_sub(slot);
                self.set_pending(
                    slot,
                    Pending::Upgrade {
                        key,
                        site: site.id.clone(),
                        resp,
                    },
                );
                self.submit(
                    key,
                    sub,
                    Op::Attach {
                        site: site.id.clone(),
                    },
                );
            }
            None => self.upgrade_new_session(slot, &site.id, resp),
        }
    }

    /// A chat upgrade that starts a new session here.
    fn upgrade_new_session(self: &Rc<Self>, slot: usize, site: &Arc<str>, resp: Response<Body>) {
        let Some(key) = self.new_session_or_refuse(slot, site) else {
            return;
        };
        let sub = self.sub_of(slot);
        self.submit(key, sub, Op::Attach { site: site.clone() });
        // The local attach answered through on_op_done only if a request
        // was pending; here none was, so finish directly.
        self.finish_upgrade(slot, key, resp);
    }

    /// A new session owned by this worker, or a 500 already sent.
    fn new_session_or_refuse(self: &Rc<Self>, slot: usize, site: &Arc<str>) -> Option<SessionKey> {
        match self.create_session(site) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::error!(error = %e, "cannot create a session");
                let r =
                    response::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot create a session");
                self.respond(slot, r, false, false);
                None
            }
        }
    }

    fn finish_upgrade(self: &Rc<Self>, slot: usize, key: SessionKey, mut resp: Response<Body>) {
        let cookie = self.session_cookie(&key);
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.respond(slot, resp, true, false);
        let now = Instant::now();
        if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
            let chat = WsChat {
                key,
                rx: Receiver::default(),
                frames: TokenBucket::new(self.shared.config.limits.frame_rate, now),
            };
            c.enter(Mode::Ws(chat), self.m());
        }
    }

    fn upgrade_echo(self: &Rc<Self>, slot: usize, req: Request<Vec<u8>>) {
        match handshake::accept(&req) {
            Ok(resp) => {
                self.respond(slot, resp, true, false);
                if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
                    c.enter(Mode::Echo(Receiver::default()), self.m());
                }
            }
            Err(e) => self.respond(slot, e.response(), false, false),
        }
    }

    fn set_pending(&self, slot: usize, p: Pending) {
        if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
            c.enter(Mode::Pending(Box::new(p)), self.m());
            c.since = Instant::now();
        }
    }

    /// A long-poll request of either kind: the site it names, then what it
    /// asks (`op` reads that from the request, or refuses), then its session.
    fn poll(
        self: &Rc<Self>,
        slot: usize,
        mut req: Request<Vec<u8>>,
        keep_alive: bool,
        op: impl FnOnce(&mut Request<Vec<u8>>) -> Result<PollOp, respond::Refusal>,
    ) {
        let site = match self.site_for(&req, true) {
            Ok(s) => s,
            Err(r) => return self.respond(slot, *r, keep_alive, false),
        };
        let op = match op(&mut req) {
            Ok(op) => op,
            Err(r) => return self.respond(slot, *r, keep_alive, false),
        };
        let sub = self.renew_sub(slot);
        self.poll_session(
            slot,
            sub,
            router::session_key(&req),
            &site.id,
            op,
            keep_alive,
        );
    }

    /// The messages of a `POST /poll/send`, or the 400 for a batch that is
    /// not one (counted under its error code).
    fn poll_batch(&self, req: &mut Request<Vec<u8>>) -> Result<PollOp, respond::Refusal> {
        match client::parse_batch(req.body_mut(), self.shared.config.limits.max_text_bytes) {
            Ok(msgs) => Ok(PollOp::Send(msgs)),
            Err(e) => {
                self.m().error(e.code);
                let body = crate::session::error_msg(e.code, &e.message, None, None);
                Err(Box::new(response::with_body(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    body,
                )))
            }
        }
    }

    /// The one path from a long-poll to its session: the session `key`
    /// names, whose owner answers through `on_op_done`; else (no key, or the
    /// owner did not know it) a new session here and its cookie, or a 500 if
    /// none can be made.
    fn poll_session(
        self: &Rc<Self>,
        slot: usize,
        sub: SubId,
        key: Option<SessionKey>,
        site: &Arc<str>,
        op: PollOp,
        keep_alive: bool,
    ) {
        if let Some(key) = key {
            self.set_pending(slot, op.pending(key, site.clone(), keep_alive));
            self.submit(key, sub, op.into_op(site.clone()));
            return;
        }
        let Some(key) = self.new_session_or_refuse(slot, site) else {
            return;
        };
        let cookie = Some(self.session_cookie(&key));
        match op {
            PollOp::Send(_) => {
                self.submit(key, sub, op.into_op(site.clone()));
                self.respond(slot, respond::poll_sent(cookie), keep_alive, false);
            }
            PollOp::Recv { cursor } => {
                // A new session is this worker's, so the op runs at once: the
                // poll must be held already for what it delivers.
                self.hold_poll(slot, key, cursor, keep_alive, cookie);
                self.submit(key, sub, op.into_op(site.clone()));
            }
        }
    }

    fn hold_poll(
        &self,
        slot: usize,
        key: SessionKey,
        cursor: u64,
        keep_alive: bool,
        set_cookie: Option<HeaderValue>,
    ) {
        let hold = Duration::from_millis(self.shared.config.limits.poll_hold_ms);
        if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
            let held = PollHeld {
                key,
                cursor,
                keep_alive,
                set_cookie,
                deadline: Instant::now() + hold,
            };
            c.enter(Mode::PollHeld(Box::new(held)), self.m());
        }
    }

    /// The owner's answer to a pending request's `Op`.
    pub(crate) fn on_op_done(self: &Rc<Self>, sub: SubId, found: bool) {
        let Some(slot) = self.slot_of(sub) else {
            return;
        };
        // Desk requests are answered by the desk, never by a session's owner.
        let Some(pending) = self.take_pending(slot, |p| p.key().is_some()) else {
            return;
        };
        match pending {
            Pending::Upgrade { key, site, resp } => {
                if found {
                    self.finish_upgrade(slot, key, resp);
                } else {
                    // Unknown or expired token, or another site's: a new session and cookie.
                    self.upgrade_new_session(slot, &site, resp);
                }
            }
            Pending::PollSend {
                site,
                msgs,
                keep_alive,
                ..
            } => {
                if found {
                    self.respond(slot, respond::poll_sent(None), keep_alive, false);
                } else {
                    let sub = self.renew_sub(slot);
                    self.poll_session(slot, sub, None, &site, PollOp::Send(msgs), keep_alive);
                }
            }
            // Taken only with a session key (above).
            Pending::Elsewhere { .. } | Pending::AgentUpgrade { .. } => return,
            Pending::PollRecv {
                key,
                site,
                cursor,
                keep_alive,
            } => {
                if found {
                    self.hold_poll(slot, key, cursor, keep_alive, None);
                } else {
                    let sub = self.renew_sub(slot);
                    let op = PollOp::Recv { cursor };
                    self.poll_session(slot, sub, None, &site, op, keep_alive);
                }
            }
        }
        self.resume_input(slot);
    }

    /// Answers a held `GET /poll/recv`.
    pub(crate) fn deliver_poll(self: &Rc<Self>, to: SubId, cursor: u64, messages: Vec<Bytes>) {
        let Some(slot) = self.slot_of(to) else { return };
        // Not waiting (timed out, or closed): the messages stay in the
        // session's log for the next recv.
        let held = self
            .conns
            .borrow_mut()
            .get_mut(slot)
            .and_then(|c| c.take_poll(self.m()));
        let Some(held) = held else {
            return;
        };
        let r = respond::poll_answer(cursor, &messages, held.set_cookie);
        self.respond(slot, r, held.keep_alive, false);
        self.resume_input(slot);
    }

    /// A held poll whose time is up (or the server is stopping): answer with nothing new.
    pub(crate) fn expire_poll(self: &Rc<Self>, slot: usize, keep_alive: bool) {
        let (held, sub) = {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns.get_mut(slot) else { return };
            let sub = SubId::new(self.id, slot, c.gen);
            match c.take_poll(self.m()) {
                Some(h) => (h, sub),
                None => return,
            }
        };
        self.submit(held.key, sub, Op::Detach);
        let r = respond::poll_answer(held.cursor, &[], held.set_cookie);
        self.respond(slot, r, keep_alive && held.keep_alive, false);
        self.resume_input(slot);
    }
}

/// What a long-poll asks of its session.
enum PollOp {
    /// `POST /poll/send`: messages for the session to take.
    Send(Vec<Result<client::ClientMsg, client::ClientError>>),
    /// `GET /poll/recv`: what is new after `cursor`.
    Recv { cursor: u64 },
}

impl PollOp {
    /// The request as it waits for the owner of session `key`.
    fn pending(&self, key: SessionKey, site: Arc<str>, keep_alive: bool) -> Pending {
        match self {
            PollOp::Send(msgs) => Pending::PollSend {
                key,
                site,
                msgs: msgs.clone(),
                keep_alive,
            },
            PollOp::Recv { cursor } => Pending::PollRecv {
                key,
                site,
                cursor: *cursor,
                keep_alive,
            },
        }
    }

    /// The operation the session's owner runs.
    fn into_op(self, site: Arc<str>) -> Op {
        match self {
            PollOp::Send(msgs) => Op::PollSend { site, msgs },
            PollOp::Recv { cursor } => Op::PollRecv { site, cursor },
        }
    }
}
