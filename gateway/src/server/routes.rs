//! HTTP routes: static files, health, metrics, admin, the chat and echo
//! upgrades, and long-polling; plus completing requests that waited on a
//! session's owner.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::conn::{Mode, Pending, PollHeld, WsChat};
use super::worker::{Op, Worker};
use crate::assets::{self, Asset};
use crate::chat::client;
use crate::config::CookieMode;
use crate::http::request::{query_param, Parsed};
use crate::http::response::{self, Body};
use crate::ids::SessionKey;
use crate::ids::SubId;
use crate::session::ratelimit::TokenBucket;
use crate::sites::Site;
use crate::ws::{handshake, Receiver};

/// Name of the session cookie (PROTOCOL.md).
pub const SESSION_COOKIE: &str = "lc_session";

impl Worker {
    /// Routes one request.
    pub(crate) fn on_request(self: &Rc<Self>, slot: usize, p: Parsed) {
        let Parsed {
            request: req,
            keep_alive,
            ..
        } = p;
        let head = req.method() == Method::HEAD;
        let get = req.method() == Method::GET || head;
        let path = req.uri().path();
        match path {
            "/ws" if req.method() == Method::GET => self.upgrade_chat(slot, req),
            "/echo" if req.method() == Method::GET && self.shared.config.echo => {
                self.upgrade_echo(slot, req)
            }
            "/poll/send" if req.method() == Method::POST => self.poll_send(slot, req, keep_alive),
            "/poll/recv" if req.method() == Method::GET => self.poll_recv(slot, req, keep_alive),
            "/healthz" if get => {
                self.respond(slot, response::text(StatusCode::OK, "ok"), keep_alive, head)
            }
            "/metrics" if get => {
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
                let r = response::with_body(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    s,
                );
                self.respond(slot, r, keep_alive, head);
            }
            "/agent/ws" if req.method() == Method::GET => self.upgrade_agent(slot, req),
            "/agent" if get => self.serve_asset(slot, &req, "agent.html", keep_alive),
            p if is_desk_route(p) => self.to_desk(slot, req, keep_alive),
            p if crate::grounding::api::is_kb_route(p) => self.to_retrieval(slot, req, keep_alive),
            p if p == "/admin" || p.starts_with("/admin/") => {
                let r = crate::admin::handle(
                    &req,
                    self.shared.admin_token.as_ref(),
                    &self.shared.sites,
                );
                self.respond(slot, r, keep_alive, head);
            }
            "/" if get => self.serve_asset(slot, &req, "demo.html", keep_alive),
            "/chat" if get => self.serve_chat_frame(slot, &req, keep_alive),
            p if get && assets::find(&p[1..]).is_some() => {
                self.serve_asset(slot, &req, &p[1..], keep_alive)
            }
            "/ws" | "/poll/send" | "/poll/recv" | "/healthz" | "/metrics" | "/" | "/chat" => {
                let r = response::text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{} is not allowed on {path}", req.method()),
                );
                self.respond(slot, r, keep_alive, head);
            }
            _ => self.respond(
                slot,
                response::text(StatusCode::NOT_FOUND, format!("no such resource: {path}")),
                keep_alive,
                head,
            ),
        }
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
        let mut conns = self.conns.borrow_mut();
        let c = conns.get_mut(slot)?;
        match &c.mode {
            Mode::Pending(p) if wanted(p) => match std::mem::replace(&mut c.mode, Mode::Http) {
                Mode::Pending(p) => Some(*p),
                _ => None,
            },
            _ => None,
        }
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
        result: Result<u64, Response<Body>>,
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
                    c.mode = Mode::Agent(Box::new(super::conn::AgentWs {
                        agent,
                        rx: Receiver::default(),
                    }));
                }
                self.m().websockets.add(1);
                let _ = self
                    .shared
                    .desk
                    .send(super::desk::DeskMsg::AgentOpen { agent, sub });
                self.resume_input(slot);
            }
            Err(refusal) => self.respond(slot, refusal, false, false),
        }
    }

    fn serve_asset(
        self: &Rc<Self>,
        slot: usize,
        req: &Request<Vec<u8>>,
        name: &str,
        keep_alive: bool,
    ) {
        let head = req.method() == Method::HEAD;
        let resp = match assets::find(name) {
            Some(a) => asset_response(req, a, cache_policy(name)),
            None => response::text(
                StatusCode::NOT_FOUND,
                format!("{name} is not built into this gateway; build the widget (see README)"),
            ),
        };
        self.respond(slot, resp, keep_alive, head);
    }

    /// The chat window's document, embeddable only by the site's own pages.
    fn serve_chat_frame(self: &Rc<Self>, slot: usize, req: &Request<Vec<u8>>, keep_alive: bool) {
        let head = req.method() == Method::HEAD;
        let site = match self.site_for(req, false) {
            Ok(s) => s,
            Err(r) => return self.respond(slot, *r, keep_alive, head),
        };
        let Some(asset) = assets::find("chat.html") else {
            return self.serve_asset(slot, req, "chat.html", keep_alive);
        };
        let mut resp = asset_response(req, asset, cache_policy("chat.html"));
        let mut ancestors = String::from("frame-ancestors 'self'");
        for o in &site.config.allowed_origins {
            ancestors.push(' ');
            ancestors.push_str(o);
        }
        if let Ok(v) = HeaderValue::from_str(&ancestors) {
            resp.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, v);
        }
        self.respond(slot, resp, keep_alive, head);
    }

    /// The site a chat request names, after the Origin check; or the refusal.
    fn site_for(
        &self,
        req: &Request<Vec<u8>>,
        check_origin: bool,
    ) -> Result<Arc<Site>, Box<Response<Body>>> {
        let refuse = |status, msg: String| Err(Box::new(response::text(status, msg)));
        let Some(id) = query_param(req.uri(), "site") else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "missing ?site=ID: every chat request names its site".into(),
            );
        };
        let Some(site) = self.shared.sites.get(&id) else {
            return refuse(StatusCode::NOT_FOUND, format!("unknown site '{id}'"));
        };
        if check_origin {
            let header_str = |name| {
                req.headers()
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
            };
            let origin = header_str(header::ORIGIN);
            if !site.origin_allowed(origin, header_str(header::HOST)) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "origin {} may not use site '{id}'; add it to the site's allowed_origins",
                        origin.unwrap_or("")
                    ),
                );
            }
        }
        Ok(site)
    }

    /// The `Set-Cookie` that carries (or refreshes) a session token.
    fn session_cookie(&self, key: &SessionKey) -> HeaderValue {
        let lifetime = self
            .shared
            .config
            .session
            .lifetime_secs
            .min(i64::MAX as u64) as i64;
        let mut b = cookie::Cookie::build((SESSION_COOKIE, key.to_cookie()))
            .http_only(true)
            .path("/")
            .max_age(cookie::time::Duration::seconds(lifetime));
        b = match self.shared.config.session.cookie {
            CookieMode::Lax => b.same_site(cookie::SameSite::Lax),
            CookieMode::CrossSite => b
                .same_site(cookie::SameSite::None)
                .secure(true)
                .partitioned(true),
        };
        // Token characters are base64url: always a valid header value.
        HeaderValue::from_str(&b.build().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""))
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
        match cookie_key(&req) {
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
            c.mode = Mode::Ws(WsChat {
                key,
                rx: Receiver::default(),
                frames: TokenBucket::new(self.shared.config.limits.frame_rate, now),
            });
        }
        self.m().websockets.add(1);
    }

    fn upgrade_echo(self: &Rc<Self>, slot: usize, req: Request<Vec<u8>>) {
        match handshake::accept(&req) {
            Ok(resp) => {
                self.respond(slot, resp, true, false);
                if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
                    c.mode = Mode::Echo(Receiver::default());
                }
                self.m().websockets.add(1);
            }
            Err(e) => self.respond(slot, e.response(), false, false),
        }
    }

    fn set_pending(&self, slot: usize, p: Pending) {
        if let Some(c) = self.conns.borrow_mut().get_mut(slot) {
            c.mode = Mode::Pending(Box::new(p));
            c.since = Instant::now();
        }
    }

    fn poll_send(self: &Rc<Self>, slot: usize, mut req: Request<Vec<u8>>, keep_alive: bool) {
        let site = match self.site_for(&req, true) {
            Ok(s) => s,
            Err(r) => return self.respond(slot, *r, keep_alive, false),
        };
        let msgs =
            match client::parse_batch(req.body_mut(), self.shared.config.limits.max_text_bytes) {
                Ok(m) => m,
                Err(e) => {
                    self.m().error(e.code);
                    let body = crate::session::error_msg(e.code, &e.message, None, None);
                    let r = response::with_body(StatusCode::BAD_REQUEST, "application/json", body);
                    return self.respond(slot, r, keep_alive, false);
                }
            };
        let sub = self.renew_sub(slot);
        match cookie_key(&req) {
            Some(key) => {
                self.set_pending(
                    slot,
                    Pending::PollSend {
                        key,
                        site: site.id.clone(),
                        msgs: msgs.clone(),
                        keep_alive,
                    },
                );
                self.submit(
                    key,
                    sub,
                    Op::PollSend {
                        site: site.id.clone(),
                        msgs,
                    },
                );
            }
            None => self.poll_send_new_session(slot, sub, &site.id, msgs, keep_alive),
        }
    }

    fn poll_send_new_session(
        self: &Rc<Self>,
        slot: usize,
        sub: SubId,
        site: &Arc<str>,
        msgs: Vec<Result<client::ClientMsg, client::ClientError>>,
        keep_alive: bool,
    ) {
        let Some(key) = self.new_session_or_refuse(slot, site) else {
            return;
        };
        self.submit(
            key,
            sub,
            Op::PollSend {
                site: site.clone(),
                msgs,
            },
        );
        let mut r = response::empty(StatusCode::NO_CONTENT);
        r.headers_mut()
            .insert(header::SET_COOKIE, self.session_cookie(&key));
        self.respond(slot, r, keep_alive, false);
    }

    fn poll_recv(self: &Rc<Self>, slot: usize, req: Request<Vec<u8>>, keep_alive: bool) {
        let site = match self.site_for(&req, true) {
            Ok(s) => s,
            Err(r) => return self.respond(slot, *r, keep_alive, false),
        };
        let Some(cursor) = query_param(req.uri(), "cursor").and_then(|c| c.parse::<u64>().ok())
        else {
            let r = response::text(
                StatusCode::BAD_REQUEST,
                "missing or invalid ?cursor=N (send 0 on the first call)",
            );
            return self.respond(slot, r, keep_alive, false);
        };
        let sub = self.renew_sub(slot);
        match cookie_key(&req) {
            Some(key) => {
                self.set_pending(
                    slot,
                    Pending::PollRecv {
                        key,
                        site: site.id.clone(),
                        cursor,
                        keep_alive,
                    },
                );
                self.submit(
                    key,
                    sub,
                    Op::PollRecv {
                        site: site.id.clone(),
                        cursor,
                    },
                );
            }
            None => self.poll_recv_new_session(slot, sub, &site.id, cursor, keep_alive),
        }
    }

    fn poll_recv_new_session(
        self: &Rc<Self>,
        slot: usize,
        sub: SubId,
        site: &Arc<str>,
        cursor: u64,
        keep_alive: bool,
    ) {
        let Some(key) = self.new_session_or_refuse(slot, site) else {
            return;
        };
        self.hold_poll(
            slot,
            key,
            cursor,
            keep_alive,
            Some(self.session_cookie(&key)),
        );
        self.submit(
            key,
            sub,
            Op::PollRecv {
                site: site.clone(),
                cursor,
            },
        );
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
            self.m().polls_held.add(1);
            c.mode = Mode::PollHeld(Box::new(PollHeld {
                key,
                cursor,
                keep_alive,
                set_cookie,
                deadline: Instant::now() + hold,
            }));
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
                    self.respond(
                        slot,
                        response::empty(StatusCode::NO_CONTENT),
                        keep_alive,
                        false,
                    );
                } else {
                    let sub = self.renew_sub(slot);
                    self.poll_send_new_session(slot, sub, &site, msgs, keep_alive);
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
                    self.poll_recv_new_session(slot, sub, &site, cursor, keep_alive);
                }
            }
        }
        self.resume_input(slot);
    }

    /// Answers a held `GET /poll/recv`.
    pub(crate) fn deliver_poll(self: &Rc<Self>, to: SubId, cursor: u64, messages: Vec<Bytes>) {
        let Some(slot) = self.slot_of(to) else { return };
        let held = {
            let mut conns = self.conns.borrow_mut();
            let c = &mut conns[slot];
            match std::mem::replace(&mut c.mode, Mode::Http) {
                Mode::PollHeld(h) => {
                    self.m().polls_held.add(-1);
                    h
                }
                other => {
                    // Not waiting (timed out, or closed): the messages stay in
                    // the session's log for the next recv.
                    c.mode = other;
                    return;
                }
            }
        };
        self.answer_poll(slot, cursor, &messages, held.keep_alive, held.set_cookie);
        self.resume_input(slot);
    }

    /// A held poll whose time is up (or the server is stopping): answer with nothing new.
    pub(crate) fn expire_poll(self: &Rc<Self>, slot: usize, keep_alive: bool) {
        let (held, sub) = {
            let mut conns = self.conns.borrow_mut();
            let Some(c) = conns.get_mut(slot) else { return };
            let sub = SubId::new(self.id, slot, c.gen);
            match std::mem::replace(&mut c.mode, Mode::Http) {
                Mode::PollHeld(h) => {
                    self.m().polls_held.add(-1);
                    (h, sub)
                }
                other => {
                    c.mode = other;
                    return;
                }
            }
        };
        self.submit(held.key, sub, Op::Detach);
        self.answer_poll(
            slot,
            held.cursor,
            &[],
            keep_alive && held.keep_alive,
            held.set_cookie,
        );
        self.resume_input(slot);
    }

    fn answer_poll(
        self: &Rc<Self>,
        slot: usize,
        cursor: u64,
        messages: &[Bytes],
        keep_alive: bool,
        set_cookie: Option<HeaderValue>,
    ) {
        let len: usize = messages.iter().map(|m| m.len() + 1).sum();
        let mut body = Vec::with_capacity(48 + len);
        body.extend_from_slice(format!("{{\"cursor\":{cursor},\"messages\":[").as_bytes());
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(m);
        }
        body.extend_from_slice(b"]}");
        let mut r = response::with_body(StatusCode::OK, "application/json", body);
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(c) = set_cookie {
            r.headers_mut().insert(header::SET_COOKIE, c);
        }
        self.respond(slot, r, keep_alive, false);
    }
}

/// Paths the agent desk answers (docs/protocol.md, "Agent HTTP API").
fn is_desk_route(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    matches!(p, "/agent/login" | "/agent/logout" | "/agent/me")
        || p == "/admin/agents"
        || p.starts_with("/admin/agents/")
        || p == "/admin/conversations"
        || p.starts_with("/admin/conversations/")
        || (p.starts_with("/admin/sites/") && p.split('/').nth(4) == Some("canned"))
}

/// The session token the request's cookie carries, if it is well formed.
fn cookie_key<B>(req: &Request<B>) -> Option<SessionKey> {
    crate::http::request::cookie(req, SESSION_COOKIE).and_then(|c| SessionKey::from_cookie(&c))
}

/// Cache policy by file: the loader revalidates often, so a new widget reaches
/// visitors within minutes; documents always revalidate.
fn cache_policy(name: &str) -> &'static str {
    if name.ends_with(".html") {
        "no-cache"
    } else {
        "public, max-age=300"
    }
}

/// A static file: 304 on a matching `If-None-Match`, gzip when accepted.
fn asset_response<B>(req: &Request<B>, a: &'static Asset, cache: &'static str) -> Response<Body> {
    let inm = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t == a.etag || t.strip_prefix("W/") == Some(a.etag)
        });
    let mut r = if inm {
        response::empty(StatusCode::NOT_MODIFIED)
    } else {
        let accept = req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let gzip = crate::http::accept::negotiate(accept) == crate::http::accept::Encoding::Gzip;
        let mut r = response::with_body(
            StatusCode::OK,
            a.content_type,
            Bytes::from_static(if gzip { a.gzip } else { a.raw }),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}
