//! The agent desk: human agents, the queue of conversations that need a
//! person, routing, and the hand-off between visitor and agent.
//!
//! Sans-IO, like the session: the desk's shell (`server::desk`) runs it on a
//! thread of its own and feeds it what happened — an agent's frame or HTTP
//! request, a visitor session's news, a store read's answer, the clock — and
//! carries out the [`DeskOut`] effects it pushes: frames for agent sockets,
//! events for visitor sessions (on whichever worker owns them), store writes
//! and reads, HTTP answers. Nothing here touches a socket, so the tests drive
//! it directly.
//!
//! One desk for all workers: the queue and agents' load are global, and agent
//! traffic is tiny next to visitors', so one thread holds it all without locks.

pub mod api;
pub mod directory;
pub mod routing;
pub mod wire;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use crate::handoff::{SessionEvent, VisitorEvent};
use crate::http::response::Body;
use crate::ids::SubId;
use crate::ids::{AgentId, ConversationId, SessionKey};
use crate::store::{PageCursor, Transcript, Write};
use directory::{Caller, Directory, Role};
use routing::{Router, Waiting};
use wire::AgentMsg;

/// The desk's settings (`[agents]` in the configuration).
#[derive(Debug, Clone)]
pub struct DeskConfig {
    /// How long an offer stays open.
    pub offer_timeout: Duration,
    /// How long a conversation waits in line before `none_available`.
    pub queue_timeout: Duration,
    /// How long an agent's conversations wait for one of their sockets to come back.
    pub reconnect_grace: Duration,
    /// How long a dashboard sign-in lasts.
    pub login_ttl: Duration,
    /// Longest agent message, in bytes (the visitor's limit).
    pub max_text_bytes: usize,
    /// The admin token (configured, or made at first start).
    pub admin_token: Option<crate::admin::AdminToken>,
}

/// The desk's figures at one moment ([`Desk::gauges`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeskGauges {
    /// Agents with a socket open.
    pub agents_online: usize,
    /// Conversations in line, offered ones included.
    pub waiting: usize,
    /// When the longest-waiting of them joined the line.
    pub oldest_since: Option<Instant>,
}

/// Why the desk reads a transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPurpose {
    /// For the `assigned` frame of an agent who now holds it.
    Assigned {
        /// The agent.
        agent: AgentId,
    },
    /// For an agent's `open`.
    Open {
        /// The agent.
        agent: AgentId,
        /// The socket that asked.
        sub: SubId,
    },
    /// For `GET /admin/conversations/{id}`.
    Http {
        /// Who asked.
        caller: Caller,
        /// The request's connection.
        sub: SubId,
    },
}

/// An effect for the desk's shell.
#[derive(Debug)]
pub enum DeskOut {
    /// A frame for an agent socket.
    Frame {
        /// The socket.
        to: SubId,
        /// JSON text.
        msg: Bytes,
    },
    /// Close an agent socket (its account was removed).
    Close {
        /// The socket.
        sub: SubId,
    },
    /// The answer to an HTTP request.
    Http {
        /// The request's connection.
        sub: SubId,
        /// The answer.
        resp: Response<Body>,
    },
    /// The answer to an agent WebSocket upgrade: the agent, or the refusal.
    Upgrade {
        /// The request's connection.
        sub: SubId,
        /// Who it is.
        result: Result<AgentId, Response<Body>>,
    },
    /// An event for a visitor session.
    Session {
        /// The session.
        key: SessionKey,
        /// The event.
        ev: SessionEvent,
    },
    /// A store write; `then` is answered once it is committed (500 if it fails).
    Write {
        /// The write.
        write: Write,
        /// The HTTP answer waiting on it.
        then: Option<(SubId, Response<Body>)>,
    },
    /// Read a transcript, then call [`Desk::on_transcript`].
    ReadTranscript {
        /// The conversation.
        conv: ConversationId,
        /// Why.
        purpose: ReadPurpose,
    },
    /// List a site's conversations, then call [`Desk::on_list`].
    ListConversations {
        /// The site.
        site: String,
        /// Page size.
        limit: usize,
        /// Where the page starts.
        before: Option<PageCursor>,
        /// The request's connection.
        sub: SubId,
    },
}

/// A conversation the desk is handling.
#[derive(Debug, Clone)]
struct Conv {
    key: SessionKey,
    site: String,
    reason: String,
    lang: Option<String>,
    page: Option<String>,
    referrer: Option<String>,
    preview: Option<String>,
    since: Instant,
    since_ms: u64,
    held: Option<AgentId>,
    /// The last position the visitor was told.
    told: u32,
}

/// A `queue` frame of the cards of `sites`.
fn queue_frame(sites: &[&String], per_site: &HashMap<String, (usize, Vec<String>)>) -> Bytes {
    let mut body = String::from(r#"{"type":"queue","items":["#);
    let mut first = true;
    let mut total = 0;
    for s in sites {
        let Some((n, cards)) = per_site.get(*s) else {
            continue;
        };
        total += n;
        for card in cards {
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str(card);
        }
    }
    body.push_str(&format!("],\"total\":{total}}}"));
    Bytes::from(body)
}

/// The agent desk's state.
pub struct Desk {
    cfg: DeskConfig,
    dir: Directory,
    router: Router,
    convs: HashMap<ConversationId, Conv>,
    /// Each online agent's sockets.
    socks: HashMap<AgentId, Vec<SubId>>,
    /// Agents whose last socket closed, and when.
    gone: HashMap<AgentId, Instant>,
    /// The line changed since agents and waiting visitors were last told.
    queue_dirty: bool,
    /// When they may be told next (see [`QUEUE_PUSH_INTERVAL`]).
    next_push: Option<Instant>,
    out: Vec<DeskOut>,
}

/// Shortest time between two pushes of the line (`queue` frames to agents,
/// new positions to waiting visitors). A busy line changes with every
/// arrival and assignment; telling every agent the whole line each time
/// costs agents x line per change. Coalesced, it costs that at most five
/// times a second, and every push carries the line as it is then: nobody
/// misses the latest position, only the ones in between. A visitor joining
/// the line hears their position at once.
pub const QUEUE_PUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Most cards per site in a `queue` frame (its `total` says how many wait).
pub const QUEUE_FRAME_CARDS: usize = 100;

fn conv_name(c: &ConversationId) -> String {
    c.to_string()
}

fn preview(text: &str) -> String {
    text.chars().take(200).collect()
}

impl Desk {
    /// A desk over a loaded directory.
    pub fn new(cfg: DeskConfig, dir: Directory) -> Self {
        let mut router = Router::new();
        for a in dir.all() {
            router.upsert_agent(a.profile());
        }
        Desk {
            cfg,
            dir,
            router,
            convs: HashMap::new(),
            socks: HashMap::new(),
            gone: HashMap::new(),
            queue_dirty: false,
            next_push: None,
            out: Vec::new(),
        }
    }

    /// Agents online, the line's length and its longest wait, for `/metrics`.
    pub fn gauges(&self) -> DeskGauges {
        DeskGauges {
            agents_online: self.socks.len(),
            waiting: self.router.waiting().count(),
            oldest_since: self.router.waiting().map(|w| w.since).min(),
        }
    }

    /// The effects pushed since the last call.
    pub fn take_out(&mut self) -> Vec<DeskOut> {
        std::mem::take(&mut self.out)
    }

    /// The directory (for the API).
    pub fn directory(&self) -> &Directory {
        &self.dir
    }

    /// Conversations waiting, and held.
    pub fn counts(&self) -> (usize, usize) {
        let held = self.convs.values().filter(|c| c.held.is_some()).count();
        (self.convs.len() - held, held)
    }

    fn send_agent(&mut self, agent: AgentId, msg: Bytes) {
        if let Some(subs) = self.socks.get(&agent) {
            for &to in subs {
                self.out.push(DeskOut::Frame {
                    to,
                    msg: msg.clone(),
                });
            }
        }
    }

    fn send_sub(&mut self, to: SubId, msg: Bytes) {
        self.out.push(DeskOut::Frame { to, msg });
    }

    fn tell_session(&mut self, key: SessionKey, ev: SessionEvent) {
        self.out.push(DeskOut::Session { key, ev });
    }

    fn card(&self, conv: &ConversationId, c: &Conv, position: Option<u32>) -> Value {
        let state = match c.held {
            Some(_) => "assigned",
            None if self.router.offered_to(conv).is_some() => "offered",
            None => "queued",
        };
        let mut v = json!({
            "conversation": conv_name(conv),
            "site": c.site,
            "state": state,
            "reason": c.reason,
            "waiting_since_ms": c.since_ms,
        });
        let mut set = |k: &str, val: &Option<String>| {
            if let Some(x) = val {
                v[k] = json!(x);
            }
        };
        set("lang", &c.lang);
        set("page", &c.page);
        set("referrer", &c.referrer);
        set("preview", &c.preview);
        if let Some(agent) = c.held.and_then(|a| self.dir.get(a)) {
            v["agent"] = json!(agent.name);
        }
        if let Some(p) = position {
            v["position"] = json!(p);
        }
        v
    }

    // ---- visitor side -------------------------------------------------

    /// News from a visitor session.
    pub fn on_visitor(&mut self, ev: VisitorEvent, now: Instant, now_ms: u64) {
        match ev {
            VisitorEvent::NeedsHuman {
                conv,
                key,
                site,
                reason,
                lang,
                page,
                referrer,
                preview: pv,
                skill,
            } => {
                if let Some(c) = self.convs.get_mut(&conv) {
                    // Asked again (a reconnect, a second `human`): say where it stands.
                    c.key = key;
                    let ev = match c.held.and_then(|a| self.dir.get(a)) {
                        Some(a) => SessionEvent::Joined {
                            name: a.name.clone(),
                        },
                        None => SessionEvent::Queued {
                            position: c.told.max(1),
                        },
                    };
                    self.tell_session(key, ev);
                    return;
                }
                if !self.router.anyone_for(&site) {
                    self.tell_session(key, SessionEvent::NoneAvailable);
                    return;
                }
                self.convs.insert(
                    conv,
                    Conv {
                        key,
                        site: site.clone(),
                        reason,
                        lang: lang.clone(),
                        page,
                        referrer,
                        preview: pv.map(|t| preview(&t)),
                        since: now,
                        since_ms: now_ms,
                        held: None,
                        told: 0,
                    },
                );
                self.router.enqueue(Waiting {
                    conv,
                    site,
                    lang,
                    skill,
                    since: now,
                });
                if let Some(pos) = self.router.position(&conv) {
                    if let Some(c) = self.convs.get_mut(&conv) {
                        c.told = pos;
                    }
                    self.tell_session(key, SessionEvent::Queued { position: pos });
                }
                self.queue_changed(now);
            }
            VisitorEvent::Item { conv, item } => {
                let Some(c) = self.convs.get_mut(&conv) else {
                    return;
                };
                match c.held {
                    Some(agent) => {
                        let msg = wire::frame(&json!({
                            "type": "message",
                            "conversation": conv_name(&conv),
                            "item": item,
                        }));
                        self.send_agent(agent, msg);
                    }
                    None => {
                        if item["from"] == "visitor" {
                            c.preview = item["text"].as_str().map(preview);
                            self.queue_dirty = true;
                        }
                    }
                }
            }
            VisitorEvent::Typing { conv } => {
                if let Some(agent) = self.convs.get(&conv).and_then(|c| c.held) {
                    let msg =
                        wire::frame(&json!({"type": "typing", "conversation": conv_name(&conv)}));
                    self.send_agent(agent, msg);
                }
            }
            VisitorEvent::AgentMessageStored {
                conv,
                agent,
                id,
                seq,
            } => {
                let msg = wire::frame(&json!({
                    "type": "ack", "id": id, "conversation": conv_name(&conv), "seq": seq,
                }));
                self.send_agent(agent, msg);
            }
            VisitorEvent::AgentMessageFailed {
                conv,
                agent,
                id,
                error,
            } => {
                let msg = wire::error("internal", &error, Some(&conv_name(&conv)), Some(&id));
                self.send_agent(agent, msg);
            }
        }
    }

    // ---- agent connections ---------------------------------------------

    /// An agent socket opened (after [`DeskOut::Upgrade`] said yes).
    pub fn on_agent_open(&mut self, agent: AgentId, sub: SubId, now: Instant) {
        let Some(account) = self.dir.get(agent).cloned() else {
            self.out.push(DeskOut::Close { sub });
            return;
        };
        self.socks.entry(agent).or_default().push(sub);
        self.gone.remove(&agent);
        self.router.set_online(agent, true);
        let queue = self.queue_cards(|site| account.serves(site));
        let held: Vec<Value> = self
            .convs
            .iter()
            .filter(|(_, c)| c.held == Some(agent))
            .map(|(k, c)| self.card(k, c, None))
            .collect();
        let canned: Vec<Value> = self
            .dir
            .canned_for(&account)
            .map(|(site, shortcut, text)| json!({"site": site, "shortcut": shortcut, "text": text}))
            .collect();
        let welcome = wire::frame(&json!({
            "type": "welcome",
            "agent": account,
            "queue": queue,
            "conversations": held,
            "canned": canned,
        }));
        self.send_sub(sub, welcome);
        if account.role >= Role::Supervisor {
            let list = self.agents_frame(&account);
            self.send_sub(sub, list);
        }
        self.broadcast_agents();
        self.queue_changed(now);
    }

    /// An agent socket closed.
    pub fn on_agent_closed(&mut self, agent: AgentId, sub: SubId, now: Instant) {
        let Some(subs) = self.socks.get_mut(&agent) else {
            return;
        };
        subs.retain(|s| *s != sub);
        if subs.is_empty() {
            self.socks.remove(&agent);
            self.gone.insert(agent, now);
            // No new offers to an agent nobody is watching for; what they hold
            // waits out the grace period (a page reload comes back at once).
            let revoked = self.router.set_online(agent, false);
            if !revoked.is_empty() {
                self.queue_changed(now);
            }
            self.broadcast_agents();
        }
    }

    /// The next time [`Desk::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let offers = self.router.next_offer_deadline();
        let waits = self
            .router
            .oldest_waiting()
            .map(|t| t + self.cfg.queue_timeout);
        let gone = self
            .gone
            .values()
            .min()
            .map(|t| *t + self.cfg.reconnect_grace);
        let push = if self.queue_dirty {
            self.next_push
        } else {
            None
        };
        [offers, waits, gone, push].into_iter().flatten().min()
    }

    /// Timeouts: lapsed offers, conversations that waited too long, agents
    /// who did not come back.
    pub fn tick(&mut self, now: Instant) {
        let mut changed = false;
        for o in self.router.expire_offers(now) {
            let msg = wire::frame(&json!({
                "type": "unassigned", "conversation": conv_name(&o.conv), "reason": "timeout",
            }));
            self.send_agent(o.agent, msg);
            changed = true;
        }
        if let Some(cutoff) = now.checked_sub(self.cfg.queue_timeout) {
            for w in self.router.expire_waiting(cutoff) {
                if let Some(c) = self.convs.remove(&w.conv) {
                    self.tell_session(c.key, SessionEvent::NoneAvailable);
                }
                changed = true;
            }
        }
        let lost: Vec<AgentId> = self
            .gone
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= self.cfg.reconnect_grace)
            .map(|(a, _)| *a)
            .collect();
        for agent in lost {
            self.gone.remove(&agent);
            self.requeue_held(agent, "disconnected");
            changed = true;
        }
        if changed {
            self.queue_changed(now);
        } else if self.queue_dirty && self.next_push.is_none_or(|t| now >= t) {
            self.push_queue(now);
        }
    }

    /// Puts every conversation `agent` holds back in line, keeping its place.
    fn requeue_held(&mut self, agent: AgentId, reason: &str) {
        let name = self
            .dir
            .get(agent)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let held: Vec<ConversationId> = self
            .convs
            .iter()
            .filter(|(_, c)| c.held == Some(agent))
            .map(|(k, _)| *k)
            .collect();
        for conv in held {
            self.router.release(agent);
            let Some(c) = self.convs.get_mut(&conv) else {
                continue;
            };
            c.held = None;
            c.told = 0;
            let (key, w) = (
                c.key,
                Waiting {
                    conv,
                    site: c.site.clone(),
                    lang: c.lang.clone(),
                    skill: None,
                    since: c.since,
                },
            );
            self.router.enqueue(w);
            self.tell_session(key, SessionEvent::Left { name: name.clone() });
            let msg = wire::frame(&json!({
                "type": "unassigned", "conversation": conv_name(&conv), "reason": reason,
            }));
            self.send_agent(agent, msg);
        }
    }

    // ---- agent frames ---------------------------------------------------

    /// A frame from an agent's socket.
    pub fn on_agent_frame(&mut self, agent: AgentId, sub: SubId, text: &[u8], now: Instant) {
        let msg = match wire::parse(text) {
            Ok(m) => m,
            Err((code, message)) => {
                self.send_sub(sub, wire::error(code, &message, None, None));
                return;
            }
        };
        let Some(account) = self.dir.get(agent).cloned() else {
            self.out.push(DeskOut::Close { sub });
            return;
        };
        let err =
            |code: &str, message: &str, conv: &str| wire::error(code, message, Some(conv), None);
        let lookup = |name: &str| ConversationId::parse(name);
        match msg {
            // `wire::parse` answers unknown types itself.
            AgentMsg::Unknown => {}
            AgentMsg::Ping { id } => {
                self.send_sub(sub, wire::frame(&json!({"type": "pong", "id": id})))
            }
            AgentMsg::Status { available } => {
                self.router.set_available(agent, available);
                self.broadcast_agents();
                self.queue_changed(now);
            }
            AgentMsg::Take { conversation } => {
                let Some(conv) = lookup(&conversation) else {
                    self.send_sub(sub, err("not_found", "no such conversation", &conversation));
                    return;
                };
                match self.router.take(&conv, agent) {
                    Ok(_) => {
                        self.assign(conv, agent);
                        self.queue_changed(now);
                    }
                    Err(e) => {
                        let code = match e {
                            routing::TakeError::WrongSite => "forbidden",
                            routing::TakeError::NotWaiting if !self.convs.contains_key(&conv) => {
                                "not_found"
                            }
                            _ => "conflict",
                        };
                        self.send_sub(sub, err(code, &e.to_string(), &conversation));
                    }
                }
            }
            AgentMsg::Decline { conversation } => {
                let Some(conv) = lookup(&conversation) else {
                    self.send_sub(sub, err("not_found", "no such conversation", &conversation));
                    return;
                };
                if self.router.decline(&conv, agent) {
                    self.queue_changed(now);
                }
            }
            AgentMsg::Open { conversation } => match lookup(&conversation) {
                Some(conv) => self.out.push(DeskOut::ReadTranscript {
                    conv,
                    purpose: ReadPurpose::Open { agent, sub },
                }),
                None => self.send_sub(sub, err("not_found", "no such conversation", &conversation)),
            },
            AgentMsg::Message {
                conversation,
                id,
                text,
            } => {
                if id.is_empty() || id.len() > 64 {
                    self.send_sub(
                        sub,
                        err("bad_request", "id must be 1 to 64 bytes", &conversation),
                    );
                    return;
                }
                if text.trim().is_empty() {
                    self.send_sub(
                        sub,
                        err("bad_request", "text must not be empty", &conversation),
                    );
                    return;
                }
                if text.len() > self.cfg.max_text_bytes {
                    let m = format!("text is over {} bytes", self.cfg.max_text_bytes);
                    self.send_sub(
                        sub,
                        wire::error("too_large", &m, Some(&conversation), Some(&id)),
                    );
                    return;
                }
                match self.held_by(&conversation, agent) {
                    Ok((conv, key)) => self.tell_session(
                        key,
                        SessionEvent::AgentMessage {
                            conv,
                            agent,
                            name: account.name.clone(),
                            id,
                            text,
                        },
                    ),
                    Err((code, m)) => {
                        self.send_sub(sub, wire::error(code, m, Some(&conversation), Some(&id)))
                    }
                }
            }
            AgentMsg::Typing { conversation } => {
                if let Ok((_, key)) = self.held_by(&conversation, agent) {
                    self.tell_session(
                        key,
                        SessionEvent::AgentTyping {
                            name: account.name.clone(),
                        },
                    );
                }
            }
            AgentMsg::Release { conversation } => match self.held_by(&conversation, agent) {
                Ok((conv, key)) => {
                    self.router.release(agent);
                    self.convs.remove(&conv);
                    self.tell_session(
                        key,
                        SessionEvent::Left {
                            name: account.name.clone(),
                        },
                    );
                    let m = wire::frame(
                        &json!({"type": "unassigned", "conversation": conversation, "reason": "released"}),
                    );
                    self.send_agent(agent, m);
                    self.queue_changed(now);
                }
                Err((code, m)) => self.send_sub(sub, err(code, m, &conversation)),
            },
            AgentMsg::Resolve { conversation } => {
                let holder = lookup(&conversation)
                    .and_then(|c| self.convs.get(&c).map(|x| (c, x.held, x.site.clone())));
                let allowed = match &holder {
                    Some((_, Some(h), _)) if *h == agent => true,
                    Some((_, _, site)) => {
                        self.dir.may(Caller::Agent(agent), site, Role::Supervisor)
                    }
                    None => false,
                };
                match holder {
                    Some((conv, held, _)) if allowed => {
                        if let Some(h) = held {
                            self.router.release(h);
                        } else {
                            self.router.dequeue(&conv);
                        }
                        if let Some(c) = self.convs.remove(&conv) {
                            self.tell_session(c.key, SessionEvent::End { reason: "resolved" });
                        }
                        let m = wire::frame(
                            &json!({"type": "ended", "conversation": conversation, "reason": "resolved"}),
                        );
                        if let Some(h) = held {
                            self.send_agent(h, m.clone());
                        }
                        if held != Some(agent) {
                            self.send_sub(sub, m);
                        }
                        self.queue_changed(now);
                    }
                    Some(_) => self.send_sub(
                        sub,
                        err(
                            "forbidden",
                            "you do not hold this conversation",
                            &conversation,
                        ),
                    ),
                    None => self.send_sub(
                        sub,
                        err(
                            "not_found",
                            "no such conversation in the desk",
                            &conversation,
                        ),
                    ),
                }
            }
            AgentMsg::Transfer { conversation, to } => {
                let Some(conv) = lookup(&conversation) else {
                    self.send_sub(sub, err("not_found", "no such conversation", &conversation));
                    return;
                };
                let Some(c) = self.convs.get(&conv).cloned() else {
                    self.send_sub(
                        sub,
                        err(
                            "not_found",
                            "no such conversation in the desk",
                            &conversation,
                        ),
                    );
                    return;
                };
                if !self
                    .dir
                    .may(Caller::Agent(agent), &c.site, Role::Supervisor)
                {
                    self.send_sub(
                        sub,
                        err(
                            "forbidden",
                            "only supervisors and admins transfer conversations",
                            &conversation,
                        ),
                    );
                    return;
                }
                let Some(target) = self.dir.get(to).cloned() else {
                    self.send_sub(sub, err("not_found", "no such agent", &conversation));
                    return;
                };
                if !target.serves(&c.site) {
                    self.send_sub(
                        sub,
                        err(
                            "forbidden",
                            "that agent does not serve this conversation's site",
                            &conversation,
                        ),
                    );
                    return;
                }
                if c.held == Some(to) {
                    return;
                }
                match c.held {
                    Some(old) => {
                        self.router.release(old);
                        let m = wire::frame(
                            &json!({"type": "unassigned", "conversation": conversation, "reason": "transferred"}),
                        );
                        self.send_agent(old, m);
                    }
                    None => {
                        self.router.dequeue(&conv);
                    }
                }
                self.router.hold(to);
                self.assign(conv, to);
                self.queue_changed(now);
            }
        }
    }

    /// The conversation `name` if `agent` holds it, with its session.
    fn held_by(
        &self,
        name: &str,
        agent: AgentId,
    ) -> Result<(ConversationId, SessionKey), (&'static str, &'static str)> {
        let conv = ConversationId::parse(name).ok_or(("not_found", "no such conversation"))?;
        match self.convs.get(&conv) {
            Some(c) if c.held == Some(agent) => Ok((conv, c.key)),
            Some(_) => Err(("forbidden", "you do not hold this conversation")),
            None => Err(("not_found", "no such conversation in the desk")),
        }
    }

    /// `agent` now holds `conv` (the router already counts it).
    fn assign(&mut self, conv: ConversationId, agent: AgentId) {
        let name = self
            .dir
            .get(agent)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let Some(c) = self.convs.get_mut(&conv) else {
            return;
        };
        c.held = Some(agent);
        let key = c.key;
        self.tell_session(key, SessionEvent::Joined { name });
        self.out.push(DeskOut::ReadTranscript {
            conv,
            purpose: ReadPurpose::Assigned { agent },
        });
    }

    /// A transcript read's answer.
    pub fn on_transcript(
        &mut self,
        conv: ConversationId,
        purpose: ReadPurpose,
        result: Result<Option<Transcript>, crate::store::StoreError>,
    ) {
        let name = conv_name(&conv);
        let t = match result {
            Ok(Some(t)) => t,
            Ok(None) => {
                self.answer_read(purpose, &name, 404, "no such conversation");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "agent desk: cannot read a transcript");
                self.answer_read(purpose, &name, 500, "the transcript could not be read");
                return;
            }
        };
        let site = t.conversation.site.clone();
        let (items, offline) = wire::transcript_parts(&t);
        let mut card = match self.convs.get(&conv) {
            Some(c) => self.card(&conv, c, None),
            None => json!({
                "conversation": name,
                "site": site,
                "state": if t.conversation.ended.is_some() { "ended" } else { "idle" },
                "reason": t.conversation.needs_human.as_ref().map(|m| m.reason.clone()),
                "lang": t.conversation.page.lang,
                "page": t.conversation.page.page,
                "referrer": t.conversation.page.referrer,
                "waiting_since_ms": t.conversation.started_ms,
            }),
        };
        card["offline"] = json!(offline);
        match purpose {
            ReadPurpose::Assigned { agent } => {
                if self.convs.get(&conv).and_then(|c| c.held) != Some(agent) {
                    return; // moved on meanwhile
                }
                card["type"] = json!("assigned");
                card["items"] = json!(items);
                self.send_agent(agent, wire::frame(&card));
            }
            ReadPurpose::Open { agent, sub } => {
                let c = self.convs.get(&conv);
                let allowed = c.is_some_and(|c| c.held == Some(agent))
                    || (c.is_some_and(|c| c.held.is_none())
                        && self.dir.may(Caller::Agent(agent), &site, Role::Agent))
                    || self.dir.may(Caller::Agent(agent), &site, Role::Supervisor);
                if !allowed {
                    self.send_sub(
                        sub,
                        wire::error(
                            "forbidden",
                            "not a conversation you may read",
                            Some(&name),
                            None,
                        ),
                    );
                    return;
                }
                card["type"] = json!("transcript");
                card["items"] = json!(items);
                self.send_sub(sub, wire::frame(&card));
            }
            ReadPurpose::Http { caller, sub } => {
                let held_by_caller = matches!(caller, Caller::Agent(a) if self.convs.get(&conv).and_then(|c| c.held) == Some(a));
                let resp = if held_by_caller || self.dir.may(caller, &site, Role::Supervisor) {
                    card["items"] = json!(items);
                    crate::http::response::json(http::StatusCode::OK, &card)
                } else {
                    api::forbidden("this conversation belongs to a site you do not supervise")
                };
                self.out.push(DeskOut::Http { sub, resp });
            }
        }
    }

    fn answer_read(&mut self, purpose: ReadPurpose, name: &str, status: u16, msg: &str) {
        match purpose {
            ReadPurpose::Assigned { .. } => {}
            ReadPurpose::Open { sub, .. } => {
                let code = if status == 404 {
                    "not_found"
                } else {
                    "internal"
                };
                self.send_sub(sub, wire::error(code, msg, Some(name), None));
            }
            ReadPurpose::Http { sub, .. } => {
                let st = http::StatusCode::from_u16(status)
                    .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                self.out.push(DeskOut::Http {
                    sub,
                    resp: crate::http::response::text(st, msg.to_string()),
                });
            }
        }
    }

    // ---- the line -------------------------------------------------------

    /// After any change to the line or to agents: make offers at once; tell
    /// visitors their new positions and show agents the line, coalesced.
    fn queue_changed(&mut self, now: Instant) {
        self.make_offers(now);
        self.queue_dirty = true;
        if self.next_push.is_none_or(|t| now >= t) {
            self.push_queue(now);
        }
    }

    /// Tells waiting visitors their positions and agents the line, now.
    fn push_queue(&mut self, now: Instant) {
        self.queue_dirty = false;
        self.next_push = Some(now + QUEUE_PUSH_INTERVAL);
        let positions = self.router.positions();
        for &(conv, pos) in &positions {
            if let Some(c) = self.convs.get_mut(&conv) {
                if c.told != pos {
                    c.told = pos;
                    let key = c.key;
                    self.tell_session(key, SessionEvent::Queued { position: pos });
                }
            }
        }
        self.broadcast_queue(&positions);
    }

    fn make_offers(&mut self, now: Instant) {
        for o in self.router.dispatch(now, self.cfg.offer_timeout) {
            let Some(c) = self.convs.get(&o.conv) else {
                continue;
            };
            let mut card = self.card(&o.conv, c, None);
            card["type"] = json!("offer");
            card["expires_in_ms"] = json!(self.cfg.offer_timeout.as_millis() as u64);
            self.send_agent(o.agent, wire::frame(&card));
        }
    }

    fn queue_cards(&self, serves: impl Fn(&str) -> bool) -> Vec<Value> {
        self.router
            .positions()
            .into_iter()
            .filter_map(|(conv, pos)| {
                let c = self.convs.get(&conv)?;
                serves(&c.site).then(|| self.card(&conv, c, Some(pos)))
            })
            .collect()
    }

    /// Sends every online agent the queue of their sites. Each site's cards
    /// are rendered once, however many agents see them.
    fn broadcast_queue(&mut self, positions: &[(ConversationId, u32)]) {
        // Per site: how many wait, and the first cards rendered once.
        let mut per_site: HashMap<String, (usize, Vec<String>)> = HashMap::new();
        for &(conv, pos) in positions {
            if let Some(c) = self.convs.get(&conv) {
                let (n, cards) = per_site.entry(c.site.clone()).or_default();
                *n += 1;
                if cards.len() < QUEUE_FRAME_CARDS {
                    cards.push(self.card(&conv, c, Some(pos)).to_string());
                }
            }
        }
        // Agents serving the same sites share one frame.
        let mut frames: HashMap<Vec<&String>, Bytes> = HashMap::new();
        let mut sends: Vec<(AgentId, Bytes)> = Vec::new();
        for &agent in self.socks.keys() {
            let Some(a) = self.dir.get(agent) else {
                continue;
            };
            let mut sites: Vec<&String> = per_site.keys().filter(|s| a.serves(s)).collect();
            sites.sort();
            let frame = frames
                .entry(sites)
                .or_insert_with_key(|sites| queue_frame(sites, &per_site))
                .clone();
            sends.push((agent, frame));
        }
        for (agent, frame) in sends {
            self.send_agent(agent, frame);
        }
    }

    fn agents_frame(&self, viewer: &directory::Account) -> Bytes {
        let items: Vec<Value> = self
            .dir
            .all()
            .filter(|a| {
                a.sites.iter().any(|s| viewer.serves(s)) || viewer.sites.iter().any(|s| s == "*")
            })
            .map(|a| {
                let (load, capacity) = self.router.load_of(a.id).unwrap_or((0, a.capacity));
                json!({
                    "id": a.id, "name": a.name, "online": self.socks.contains_key(&a.id),
                    "available": self.router.is_available(a.id), "load": load, "capacity": capacity,
                })
            })
            .collect();
        wire::frame(&json!({"type": "agents", "items": items}))
    }

    fn broadcast_agents(&mut self) {
        let viewers: Vec<directory::Account> = self
            .socks
            .keys()
            .filter_map(|a| self.dir.get(*a))
            .filter(|a| a.role >= Role::Supervisor)
            .cloned()
            .collect();
        for v in viewers {
            let f = self.agents_frame(&v);
            self.send_agent(v.id, f);
        }
    }

    // ---- changes from the API -------------------------------------------

    /// An account was made or changed.
    pub fn account_changed(&mut self, id: AgentId, now: Instant) {
        if let Some(a) = self.dir.get(id) {
            self.router.upsert_agent(a.profile());
        }
        self.queue_changed(now);
    }

    /// An account was removed: its sockets close, what it held goes back in line.
    pub fn account_removed(&mut self, id: AgentId, now: Instant) {
        self.requeue_held(id, "disconnected");
        self.router.remove_agent(id);
        for sub in self.socks.remove(&id).unwrap_or_default() {
            self.out.push(DeskOut::Close { sub });
        }
        self.gone.remove(&id);
        self.queue_changed(now);
    }
}

#[cfg(test)]
mod tests;
