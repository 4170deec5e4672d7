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
use serde_json::value::RawValue;

use crate::handoff::{SessionEvent, VisitorEvent};
use crate::http::response::Body;
use crate::ids::SubId;
use crate::ids::{AgentId, ConversationId, SessionKey};
use crate::store::{PageCursor, Transcript, Write};
use directory::{Caller, Directory, Role};
use routing::{Router, Waiting};
use wire::{
    AgentErrorCode, AgentMsg, AgentRow, Canned, Card, CardState, DeskError, FullCard, LiveCard,
    StoredCard, ToAgent, UnassignedReason,
};

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

/// Per site: how many wait, and the first cards, rendered once.
type SiteCards = HashMap<String, (usize, Vec<Box<RawValue>>)>;

/// A `queue` frame of the cards of `sites`.
fn queue_frame(sites: &[&String], per_site: &SiteCards) -> Bytes {
    let mut items: Vec<&RawValue> = Vec::new();
    let mut total = 0;
    for s in sites {
        let Some((n, cards)) = per_site.get(*s) else {
            continue;
        };
        total += n;
        items.extend(cards.iter().map(|c| &**c));
    }
    ToAgent::Queue {
        items: &items,
        total,
    }
    .to_bytes()
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

/// An `unassigned` frame.
fn unassigned(conversation: &str, reason: UnassignedReason) -> Bytes {
    ToAgent::Unassigned {
        conversation,
        reason,
    }
    .to_bytes()
}

/// The conversation an agent's frame names.
fn lookup(name: &str) -> Result<ConversationId, DeskError> {
    ConversationId::parse(name).ok_or_else(|| DeskError::not_found("no such conversation"))
}

/// A well-formed id of a conversation the desk does not have.
fn not_in_desk() -> DeskError {
    DeskError::not_found("no such conversation in the desk")
}

/// A conversation someone else holds (or nobody does).
fn not_yours() -> DeskError {
    DeskError::forbidden("you do not hold this conversation")
}

/// The card of a conversation only the store has.
fn stored_card(t: &Transcript) -> StoredCard<'_> {
    let c = &t.conversation;
    StoredCard {
        conversation: conv_name(&c.id),
        site: &c.site,
        state: if c.ended.is_some() {
            CardState::Ended
        } else {
            CardState::Idle
        },
        reason: c.needs_human.as_ref().map(|m| m.reason.as_str()),
        lang: c.page.lang.as_deref(),
        page: c.page.page.as_deref(),
        referrer: c.page.referrer.as_deref(),
        waiting_since_ms: c.started_ms,
    }
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

    /// An agent's display name (empty for an account that is gone).
    fn agent_name(&self, agent: AgentId) -> String {
        self.dir
            .get(agent)
            .map(|a| a.name.clone())
            .unwrap_or_default()
    }

    fn card<'a>(
        &'a self,
        conv: &ConversationId,
        c: &'a Conv,
        position: Option<u32>,
    ) -> LiveCard<'a> {
        let state = match c.held {
            Some(_) => CardState::Assigned,
            None if self.router.offered_to(conv).is_some() => CardState::Offered,
            None => CardState::Queued,
        };
        LiveCard {
            conversation: conv_name(conv),
            site: &c.site,
            state,
            reason: &c.reason,
            waiting_since_ms: c.since_ms,
            lang: c.lang.as_deref(),
            page: c.page.as_deref(),
            referrer: c.referrer.as_deref(),
            preview: c.preview.as_deref(),
            agent: c
                .held
                .and_then(|a| self.dir.get(a))
                .map(|a| a.name.as_str()),
            position,
        }
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
                        let msg = ToAgent::Message {
                            conversation: &conv_name(&conv),
                            item: &item,
                        }
                        .to_bytes();
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
                    let msg = ToAgent::Typing {
                        conversation: &conv_name(&conv),
                    }
                    .to_bytes();
                    self.send_agent(agent, msg);
                }
            }
            VisitorEvent::AgentMessageStored {
                conv,
                agent,
                id,
                seq,
            } => {
                let msg = ToAgent::Ack {
                    id: &id,
                    conversation: &conv_name(&conv),
                    seq,
                }
                .to_bytes();
                self.send_agent(agent, msg);
            }
            VisitorEvent::AgentMessageFailed {
                conv,
                agent,
                id,
                error,
            } => {
                let msg = ToAgent::Error {
                    code: AgentErrorCode::Internal,
                    message: &error,
                    conversation: Some(&conv_name(&conv)),
                    id: Some(&id),
                }
                .to_bytes();
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
        let welcome = self.welcome_frame(&account);
        self.send_sub(sub, welcome);
        if account.role >= Role::Supervisor {
            let list = self.agents_frame(&account);
            self.send_sub(sub, list);
        }
        self.broadcast_agents();
        self.queue_changed(now);
    }

    /// The `welcome` frame of an agent who just connected.
    fn welcome_frame(&self, account: &directory::Account) -> Bytes {
        let queue = self.queue_cards(|site| account.serves(site));
        let held: Vec<LiveCard<'_>> = self
            .convs
            .iter()
            .filter(|(_, c)| c.held == Some(account.id))
            .map(|(k, c)| self.card(k, c, None))
            .collect();
        let canned: Vec<Canned<'_>> = self
            .dir
            .canned_for(account)
            .map(|(site, shortcut, text)| Canned {
                site,
                shortcut,
                text,
            })
            .collect();
        ToAgent::Welcome {
            agent: account,
            queue: &queue,
            conversations: &held,
            canned: &canned,
        }
        .to_bytes()
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
            let msg = unassigned(&conv_name(&o.conv), UnassignedReason::Timeout);
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
            self.requeue_held(agent, UnassignedReason::Disconnected);
            changed = true;
        }
        if changed {
            self.queue_changed(now);
        } else if self.queue_dirty && self.next_push.is_none_or(|t| now >= t) {
            self.push_queue(now);
        }
    }

    /// Puts every conversation `agent` holds back in line, keeping its place.
    fn requeue_held(&mut self, agent: AgentId, reason: UnassignedReason) {
        let name = self.agent_name(agent);
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
            self.send_agent(agent, unassigned(&conv_name(&conv), reason));
        }
    }

    // ---- agent frames ---------------------------------------------------

    /// A frame from an agent's socket: parsed, then handed to the `on_*` of
    /// its type. A refusal is answered on this socket with an `error` frame
    /// naming the frame's conversation.
    pub fn on_agent_frame(&mut self, agent: AgentId, sub: SubId, text: &[u8], now: Instant) {
        let msg = match wire::parse(text) {
            Ok(m) => m,
            Err(e) => {
                self.send_sub(sub, e.frame(None));
                return;
            }
        };
        if self.dir.get(agent).is_none() {
            self.out.push(DeskOut::Close { sub });
            return;
        }
        let result = match &msg {
            // `wire::parse` answers unknown types itself.
            AgentMsg::Unknown => Ok(()),
            AgentMsg::Ping { id } => {
                self.on_ping(sub, id);
                Ok(())
            }
            AgentMsg::Status { available } => {
                self.on_status(agent, *available, now);
                Ok(())
            }
            AgentMsg::Take { conversation } => self.on_take(agent, conversation, now),
            AgentMsg::Decline { conversation } => self.on_decline(agent, conversation, now),
            AgentMsg::Open { conversation } => self.on_open(agent, sub, conversation),
            AgentMsg::Message {
                conversation,
                id,
                text,
            } => self.on_message(agent, conversation, id, text),
            AgentMsg::Typing { conversation } => {
                self.on_typing(agent, conversation);
                Ok(())
            }
            AgentMsg::Release { conversation } => self.on_release(agent, conversation, now),
            AgentMsg::Resolve { conversation } => self.on_resolve(agent, sub, conversation, now),
            AgentMsg::Transfer { conversation, to } => {
                self.on_transfer(agent, conversation, *to, now)
            }
        };
        if let Err(e) = result {
            self.send_sub(sub, e.frame(msg.conversation()));
        }
    }

    /// `ping`: a `pong` with its id.
    fn on_ping(&mut self, sub: SubId, id: &str) {
        self.send_sub(sub, ToAgent::Pong { id }.to_bytes());
    }

    /// `status`: away agents get no new offers (and lose the open ones).
    fn on_status(&mut self, agent: AgentId, available: bool, now: Instant) {
        self.router.set_available(agent, available);
        self.broadcast_agents();
        self.queue_changed(now);
    }

    /// `take`: a waiting conversation of the agent's sites, theirs now if
    /// routing allows (not offered to someone else, under their capacity).
    fn on_take(
        &mut self,
        agent: AgentId,
        conversation: &str,
        now: Instant,
    ) -> Result<(), DeskError> {
        let conv = lookup(conversation)?;
        if let Err(e) = self.router.take(&conv, agent) {
            let code = match e {
                routing::TakeError::WrongSite => AgentErrorCode::Forbidden,
                routing::TakeError::NotWaiting if !self.convs.contains_key(&conv) => {
                    AgentErrorCode::NotFound
                }
                _ => AgentErrorCode::Conflict,
            };
            return Err(DeskError::new(code, e.to_string()));
        }
        self.assign(conv, agent);
        self.queue_changed(now);
        Ok(())
    }

    /// `decline`: the offer goes to the next agent.
    fn on_decline(
        &mut self,
        agent: AgentId,
        conversation: &str,
        now: Instant,
    ) -> Result<(), DeskError> {
        let conv = lookup(conversation)?;
        if self.router.decline(&conv, agent) {
            self.queue_changed(now);
        }
        Ok(())
    }

    /// `open`: the transcript is read; who may see it is decided when it
    /// comes back ([`Desk::on_transcript`]).
    fn on_open(&mut self, agent: AgentId, sub: SubId, conversation: &str) -> Result<(), DeskError> {
        let conv = lookup(conversation)?;
        self.out.push(DeskOut::ReadTranscript {
            conv,
            purpose: ReadPurpose::Open { agent, sub },
        });
        Ok(())
    }

    /// `message`: to the visitor's session, which stores it and answers with
    /// [`VisitorEvent::AgentMessageStored`] (the agent's `ack`).
    fn on_message(
        &mut self,
        agent: AgentId,
        conversation: &str,
        id: &str,
        text: &str,
    ) -> Result<(), DeskError> {
        if id.is_empty() || id.len() > 64 {
            return Err(DeskError::bad_request("id must be 1 to 64 bytes"));
        }
        if text.trim().is_empty() {
            return Err(DeskError::bad_request("text must not be empty"));
        }
        if text.len() > self.cfg.max_text_bytes {
            let m = format!("text is over {} bytes", self.cfg.max_text_bytes);
            return Err(DeskError::new(AgentErrorCode::TooLarge, m).with_id(id));
        }
        let (conv, key) = self
            .held_by(conversation, agent)
            .map_err(|e| e.with_id(id))?;
        let name = self.agent_name(agent);
        self.tell_session(
            key,
            SessionEvent::AgentMessage {
                conv,
                agent,
                name,
                id: id.to_string(),
                text: text.to_string(),
            },
        );
        Ok(())
    }

    /// `typing`: shown to the visitor when the agent holds the conversation,
    /// dropped without a word otherwise (it is only a hint).
    fn on_typing(&mut self, agent: AgentId, conversation: &str) {
        if let Ok((_, key)) = self.held_by(conversation, agent) {
            let name = self.agent_name(agent);
            self.tell_session(key, SessionEvent::AgentTyping { name });
        }
    }

    /// `release`: the AI answers the conversation again.
    fn on_release(
        &mut self,
        agent: AgentId,
        conversation: &str,
        now: Instant,
    ) -> Result<(), DeskError> {
        let (conv, key) = self.held_by(conversation, agent)?;
        self.router.release(agent);
        self.convs.remove(&conv);
        let name = self.agent_name(agent);
        self.tell_session(key, SessionEvent::Left { name });
        self.send_agent(agent, unassigned(conversation, UnassignedReason::Released));
        self.queue_changed(now);
        Ok(())
    }

    /// `resolve`: by the agent holding the conversation, or by a supervisor
    /// of its site (held or still in line), who is told on this socket.
    fn on_resolve(
        &mut self,
        agent: AgentId,
        sub: SubId,
        conversation: &str,
        now: Instant,
    ) -> Result<(), DeskError> {
        let Some((conv, c)) =
            ConversationId::parse(conversation).and_then(|id| self.convs.get(&id).map(|c| (id, c)))
        else {
            return Err(not_in_desk());
        };
        let held = c.held;
        if held != Some(agent)
            && !self
                .dir
                .may(Caller::Agent(agent), &c.site, Role::Supervisor)
        {
            return Err(not_yours());
        }
        if let Some(h) = held {
            self.router.release(h);
        } else {
            self.router.dequeue(&conv);
        }
        if let Some(c) = self.convs.remove(&conv) {
            self.tell_session(c.key, SessionEvent::End { reason: "resolved" });
        }
        let m = ToAgent::Ended {
            conversation,
            reason: "resolved",
        }
        .to_bytes();
        if let Some(h) = held {
            self.send_agent(h, m.clone());
        }
        if held != Some(agent) {
            self.send_sub(sub, m);
        }
        self.queue_changed(now);
        Ok(())
    }

    /// `transfer`: a supervisor of the conversation's site gives it (held or
    /// in line) to an agent of that site.
    fn on_transfer(
        &mut self,
        agent: AgentId,
        conversation: &str,
        to: AgentId,
        now: Instant,
    ) -> Result<(), DeskError> {
        let conv = lookup(conversation)?;
        let Some(c) = self.convs.get(&conv) else {
            return Err(not_in_desk());
        };
        if !self
            .dir
            .may(Caller::Agent(agent), &c.site, Role::Supervisor)
        {
            return Err(DeskError::forbidden(
                "only supervisors and admins transfer conversations",
            ));
        }
        let Some(target) = self.dir.get(to) else {
            return Err(DeskError::not_found("no such agent"));
        };
        if !target.serves(&c.site) {
            return Err(DeskError::forbidden(
                "that agent does not serve this conversation's site",
            ));
        }
        match c.held {
            Some(old) if old == to => return Ok(()),
            Some(old) => {
                self.router.release(old);
                self.send_agent(old, unassigned(conversation, UnassignedReason::Transferred));
            }
            None => {
                self.router.dequeue(&conv);
            }
        }
        self.router.hold(to);
        self.assign(conv, to);
        self.queue_changed(now);
        Ok(())
    }

    /// The conversation `name` if `agent` holds it, with its session.
    fn held_by(
        &self,
        name: &str,
        agent: AgentId,
    ) -> Result<(ConversationId, SessionKey), DeskError> {
        let conv = lookup(name)?;
        match self.convs.get(&conv) {
            Some(c) if c.held == Some(agent) => Ok((conv, c.key)),
            Some(_) => Err(not_yours()),
            None => Err(not_in_desk()),
        }
    }

    /// `agent` now holds `conv` (the router already counts it).
    fn assign(&mut self, conv: ConversationId, agent: AgentId) {
        let name = self.agent_name(agent);
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
        let site = t.conversation.site.as_str();
        let (items, offline) = wire::transcript_parts(&t);
        let card = match self.convs.get(&conv) {
            Some(c) => Card::Live(self.card(&conv, c, None)),
            None => Card::Stored(stored_card(&t)),
        };
        let full = FullCard {
            card,
            items: &items,
            offline: &offline,
        };
        match purpose {
            ReadPurpose::Assigned { agent } => {
                if self.convs.get(&conv).and_then(|c| c.held) != Some(agent) {
                    return; // moved on meanwhile
                }
                let msg = ToAgent::Assigned(&full).to_bytes();
                self.send_agent(agent, msg);
            }
            ReadPurpose::Open { agent, sub } => {
                let c = self.convs.get(&conv);
                let allowed = c.is_some_and(|c| c.held == Some(agent))
                    || (c.is_some_and(|c| c.held.is_none())
                        && self.dir.may(Caller::Agent(agent), site, Role::Agent))
                    || self.dir.may(Caller::Agent(agent), site, Role::Supervisor);
                let msg = if allowed {
                    ToAgent::Transcript(&full).to_bytes()
                } else {
                    DeskError::forbidden("not a conversation you may read").frame(Some(&name))
                };
                self.send_sub(sub, msg);
            }
            ReadPurpose::Http { caller, sub } => {
                let held_by_caller = matches!(caller, Caller::Agent(a) if self.convs.get(&conv).and_then(|c| c.held) == Some(a));
                let resp = if held_by_caller || self.dir.may(caller, site, Role::Supervisor) {
                    crate::http::response::json(http::StatusCode::OK, &wire::Sorted(&full))
                } else {
                    api::forbidden("this conversation belongs to a site you do not supervise")
                };
                self.out.push(DeskOut::Http { sub, resp });
            }
        }
    }

    fn answer_read(&mut self, purpose: ReadPurpose, name: &str, status: u16, msg: &'static str) {
        match purpose {
            ReadPurpose::Assigned { .. } => {}
            ReadPurpose::Open { sub, .. } => {
                let code = if status == 404 {
                    AgentErrorCode::NotFound
                } else {
                    AgentErrorCode::Internal
                };
                self.send_sub(sub, DeskError::new(code, msg).frame(Some(name)));
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
            let msg = ToAgent::Offer {
                card: &self.card(&o.conv, c, None),
                expires_in_ms: self.cfg.offer_timeout.as_millis() as u64,
            }
            .to_bytes();
            self.send_agent(o.agent, msg);
        }
    }

    fn queue_cards(&self, serves: impl Fn(&str) -> bool) -> Vec<LiveCard<'_>> {
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
        let mut per_site = SiteCards::new();
        for &(conv, pos) in positions {
            if let Some(c) = self.convs.get(&conv) {
                let (n, cards) = per_site.entry(c.site.clone()).or_default();
                *n += 1;
                if cards.len() < QUEUE_FRAME_CARDS {
                    cards.push(wire::render_card(&self.card(&conv, c, Some(pos))));
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
        let items: Vec<AgentRow<'_>> = self
            .dir
            .all()
            .filter(|a| {
                a.sites.iter().any(|s| viewer.serves(s)) || viewer.sites.iter().any(|s| s == "*")
            })
            .map(|a| {
                let (load, capacity) = self.router.load_of(a.id).unwrap_or((0, a.capacity));
                AgentRow {
                    id: a.id,
                    name: &a.name,
                    online: self.socks.contains_key(&a.id),
                    available: self.router.is_available(a.id),
                    load,
                    capacity,
                }
            })
            .collect();
        ToAgent::Agents { items: &items }.to_bytes()
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
        self.requeue_held(id, UnassignedReason::Disconnected);
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
