//! A visitor's session: the conversation transcript, idempotent acks, replies
//! still streaming, the sockets and poller subscribed to it, and the
//! long-polling log.
//!
//! Sans-IO: each method takes an event (a client message, a streamed token, a
//! poll) and pushes effects to an [`Out`] list: bytes for a subscriber, a poll
//! to complete, an answer to start. The worker that owns the session carries
//! the effects out; tests drive it directly.

pub mod log;
pub mod ratelimit;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::chat::client::{ClientError, ClientMsg, Hello};
use crate::chat::server::{AgentEvent, Author, Item, ServerMsg, Source, Streaming};
use crate::chat::ErrorCode;
use log::{PollLog, Since};
use ratelimit::{Rate, TokenBucket};
use smallvec::SmallVec;
use token::{ConversationId, SessionKey};

/// A subscriber (socket or poller) as the worker addresses it; opaque here.
pub type SubId = u64;

/// Where a client message came from, which is where direct answers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A WebSocket subscribed to the session.
    Socket(SubId),
    /// `POST /poll/send`: answers go to the poll log.
    Poll,
}

/// The time, twice: monotonic for rates, wall-clock for transcript stamps.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// The current time.
    pub fn current() -> Self {
        Now {
            mono: Instant::now(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
}

/// The settings a session consults, from the configuration and its site.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// The site's widget configuration, sent in `welcome`.
    pub site_config: &'a RawValue,
    /// Messages per session.
    pub message_rate: Rate,
    /// Most items `welcome`'s history carries.
    pub history_items: usize,
    /// Server messages kept for long-pollers.
    pub poll_log_cap: usize,
}

/// A reply to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerJob {
    /// Reply id.
    pub reply: String,
    /// The visitor's message id.
    pub in_reply_to: String,
    /// The visitor's text.
    pub question: String,
}

/// An effect for the worker to carry out.
#[derive(Debug, PartialEq)]
pub enum Out {
    /// Send one message to one socket.
    Send {
        /// The socket.
        to: SubId,
        /// JSON text of the message.
        msg: Bytes,
    },
    /// Complete a held `GET /poll/recv`.
    PollReady {
        /// The poller.
        to: SubId,
        /// The cursor after `messages`.
        cursor: u64,
        /// Messages past the poller's cursor.
        messages: Vec<Bytes>,
    },
    /// Start answering a visitor's message.
    Answer(AnswerJob),
    /// An `error` with this code was sent (for metrics).
    ErrorSent(ErrorCode),
}

#[derive(Debug)]
struct LiveReply {
    id: String,
    in_reply_to: String,
    text: String,
}

#[derive(Debug)]
struct PollState {
    log: PollLog,
    /// The held recv and its cursor.
    pending: Option<(SubId, u64)>,
}

/// What `hello` said (language, page, referrer), in one allocation: every
/// session keeps it, so it should cost one small block, not four.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageInfo {
    text: Box<str>,
    lang_end: u16,
    page_end: u16,
}

impl PageInfo {
    /// Packs a `hello`'s fields (each at most [`crate::chat::client::MAX_META_LEN`] bytes).
    pub fn new(h: &Hello) -> Self {
        let part = |o: &Option<String>| o.as_deref().unwrap_or("").to_owned();
        let (lang, page, referrer) = (part(&h.lang), part(&h.page), part(&h.referrer));
        PageInfo {
            lang_end: lang.len() as u16,
            page_end: (lang.len() + page.len()) as u16,
            text: format!("{lang}{page}{referrer}").into_boxed_str(),
        }
    }

    fn field(&self, from: usize, to: usize) -> Option<&str> {
        self.text.get(from..to).filter(|s| !s.is_empty())
    }

    /// The visitor's language tag.
    pub fn lang(&self) -> Option<&str> {
        self.field(0, self.lang_end as usize)
    }

    /// The page the widget is on.
    pub fn page(&self) -> Option<&str> {
        self.field(self.lang_end as usize, self.page_end as usize)
    }

    /// That page's referrer.
    pub fn referrer(&self) -> Option<&str> {
        self.field(self.page_end as usize, self.text.len())
    }
}

/// What a session holds once the visitor has written: an idle session
/// (connected, greeted, silent) does not pay for it.
#[derive(Debug)]
struct Transcript {
    items: Vec<Item>,
    next_seq: u64,
    acked: HashMap<String, u64>,
    replies: Vec<LiveReply>,
    next_reply: u32,
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript {
            items: Vec::new(),
            next_seq: 1,
            acked: HashMap::new(),
            replies: Vec::new(),
            next_reply: 1,
        }
    }
}

/// One visitor's session on one site.
#[derive(Debug)]
pub struct Session {
    /// The secret the session cookie carries.
    pub key: SessionKey,
    /// Public conversation id.
    pub conversation: ConversationId,
    /// The site the session belongs to.
    pub site: Arc<str>,
    /// When the session last saw a client message or a subscriber.
    pub last_active: Instant,
    t: Option<Box<Transcript>>,
    /// Almost always one socket, sometimes two tabs: no heap for those.
    subs: SmallVec<[SubId; 2]>,
    /// Created on the first long-poll; a WebSocket-only session never pays for it.
    poll: Option<Box<PollState>>,
    bucket: TokenBucket,
    page: Option<PageInfo>,
    welcomed: bool,
    csat: Option<u8>,
}

impl Session {
    /// A new, empty session.
    pub fn new(
        key: SessionKey,
        conversation: ConversationId,
        site: Arc<str>,
        rate: Rate,
        now: Instant,
    ) -> Self {
        Session {
            key,
            conversation,
            site,
            last_active: now,
            t: None,
            subs: SmallVec::new(),
            poll: None,
            bucket: TokenBucket::new(rate, now),
            page: None,
            welcomed: false,
            csat: None,
        }
    }

    fn transcript(&mut self) -> &mut Transcript {
        self.t.get_or_insert_with(Box::default)
    }

    /// Subscribes a socket to every server message of the session.
    pub fn attach(&mut self, sub: SubId, now: Instant) {
        if !self.subs.contains(&sub) {
            self.subs.push(sub);
        }
        self.last_active = now;
    }

    /// Unsubscribes a socket or poller.
    pub fn detach(&mut self, sub: SubId) {
        self.subs.retain(|s| *s != sub);
        if let Some(p) = self.poll.as_mut() {
            if p.pending.is_some_and(|(s, _)| s == sub) {
                p.pending = None;
            }
        }
    }

    /// Sockets subscribed now.
    pub fn subscribers(&self) -> &[SubId] {
        &self.subs
    }

    /// Whether nothing is listening and nothing is in flight.
    pub fn is_quiet(&self) -> bool {
        self.subs.is_empty()
            && self.t.as_ref().is_none_or(|t| t.replies.is_empty())
            && self.poll.as_ref().is_none_or(|p| p.pending.is_none())
    }

    /// The conversation's complete items.
    pub fn items(&self) -> &[Item] {
        self.t.as_ref().map_or(&[], |t| &t.items)
    }

    /// What the visitor's latest `hello` said about the page.
    pub fn page_info(&self) -> Option<&PageInfo> {
        self.page.as_ref()
    }

    /// The CSAT score the visitor gave, if any.
    pub fn csat(&self) -> Option<u8> {
        self.csat
    }

    /// Handles one client message.
    pub fn on_client(
        &mut self,
        from: Origin,
        msg: ClientMsg,
        now: Now,
        s: &Settings<'_>,
        out: &mut Vec<Out>,
    ) {
        self.last_active = now.mono;
        match msg {
            ClientMsg::Hello(h) => {
                self.page = Some(PageInfo::new(&h));
                let welcome = self.welcome(s);
                self.direct(from, welcome, s, out);
            }
            ClientMsg::Message { id, text } => self.on_message(from, id, text, now, s, out),
            ClientMsg::Ping { id } => {
                let pong = ServerMsg::Pong { id: &id }.to_bytes();
                self.direct(from, pong, s, out);
            }
            // Forwarded to a human agent once one holds the conversation.
            ClientMsg::Typing => {}
            ClientMsg::Human { .. } => {
                // No agent desk yet: say so at once rather than leave the visitor waiting.
                let msg = ServerMsg::Agent {
                    event: AgentEvent::NoneAvailable,
                    position: None,
                    name: None,
                }
                .to_bytes();
                self.broadcast(msg, out);
            }
            ClientMsg::Csat { score, .. } => self.csat = Some(score),
        }
        self.wake_poller(out);
    }

    /// Reports a refused client message to where it came from.
    pub fn on_client_error(
        &mut self,
        from: Origin,
        err: &ClientError,
        s: &Settings<'_>,
        out: &mut Vec<Out>,
    ) {
        self.direct(
            from,
            error_msg(err.code, &err.message, err.id.as_deref(), None),
            s,
            out,
        );
        out.push(Out::ErrorSent(err.code));
        self.wake_poller(out);
    }

    fn on_message(
        &mut self,
        from: Origin,
        id: String,
        text: String,
        now: Now,
        s: &Settings<'_>,
        out: &mut Vec<Out>,
    ) {
        if let Some(&seq) = self.t.as_ref().and_then(|t| t.acked.get(&id)) {
            // A resend after a lost ack: the same ack again, nothing done twice.
            let ack = ServerMsg::Ack { id: &id, seq }.to_bytes();
            self.direct(from, ack, s, out);
            return;
        }
        if let Err(wait) = self.bucket.take(s.message_rate, now.mono) {
            let ms = wait.as_millis().max(1) as u64;
            let msg = format!(
                "more than {} messages per second; resend after retry_after_ms",
                s.message_rate.per_sec
            );
            self.direct(
                from,
                error_msg(ErrorCode::RateLimited, &msg, Some(&id), Some(ms)),
                s,
                out,
            );
            out.push(Out::ErrorSent(ErrorCode::RateLimited));
            return;
        }
        let t = self.transcript();
        let seq = t.next_seq;
        t.next_seq += 1;
        t.items.push(Item {
            seq,
            from: Author::Visitor,
            text: text.clone(),
            ts: now.unix_ms,
            id: Some(id.clone()),
            reply: None,
            sources: None,
            name: None,
        });
        t.acked.insert(id.clone(), seq);
        let reply = format!("r{}", t.next_reply);
        t.next_reply += 1;
        t.replies.push(LiveReply {
            id: reply.clone(),
            in_reply_to: id.clone(),
            text: String::new(),
        });
        let ack = ServerMsg::Ack { id: &id, seq }.to_bytes();
        self.broadcast(ack, out);
        out.push(Out::Answer(AnswerJob {
            reply,
            in_reply_to: id,
            question: text,
        }));
    }

    /// Streams one piece of a reply to every subscriber.
    ///
    /// Returns false when the reply is unknown (already finished or cancelled).
    pub fn reply_token(&mut self, reply: &str, text: &str, out: &mut Vec<Out>) -> bool {
        let Some(r) = self
            .t
            .as_mut()
            .and_then(|t| t.replies.iter_mut().find(|r| r.id == reply))
        else {
            return false;
        };
        r.text.push_str(text);
        let msg = ServerMsg::Token {
            reply,
            in_reply_to: &r.in_reply_to,
            text,
        }
        .to_bytes();
        self.broadcast(msg, out);
        self.wake_poller(out);
        true
    }

    /// Completes a reply: stores it in the transcript and sends `done`.
    pub fn reply_done(
        &mut self,
        reply: &str,
        sources: Vec<Source>,
        confidence: f32,
        now: Now,
        out: &mut Vec<Out>,
    ) -> bool {
        let Some(t) = self.t.as_mut() else {
            return false;
        };
        let Some(pos) = t.replies.iter().position(|r| r.id == reply) else {
            return false;
        };
        let r = t.replies.swap_remove(pos);
        let seq = t.next_seq;
        t.next_seq += 1;
        let msg = ServerMsg::Done {
            reply,
            in_reply_to: &r.in_reply_to,
            seq,
            sources: &sources,
            confidence,
        }
        .to_bytes();
        t.items.push(Item {
            seq,
            from: Author::Ai,
            text: r.text,
            ts: now.unix_ms,
            id: None,
            reply: Some(r.id),
            sources: Some(sources),
            name: None,
        });
        self.broadcast(msg, out);
        self.wake_poller(out);
        true
    }

    /// A `GET /poll/recv` with `cursor`: answered at once when there is
    /// something past it, otherwise held (ending any recv already held).
    pub fn poll_recv(
        &mut self,
        sub: SubId,
        cursor: u64,
        now: Instant,
        s: &Settings<'_>,
        out: &mut Vec<Out>,
    ) {
        self.last_active = now;
        let poll = self.poll_state(s);
        if let Some((old, old_cursor)) = poll.pending.take() {
            out.push(Out::PollReady {
                to: old,
                cursor: old_cursor,
                messages: Vec::new(),
            });
        }
        match poll.log.since(cursor) {
            Since::Messages(messages, cursor) => out.push(Out::PollReady {
                to: sub,
                cursor,
                messages,
            }),
            Since::Nothing => poll.pending = Some((sub, cursor)),
            Since::Expired => {
                let expired = error_msg(
                    ErrorCode::CursorExpired,
                    "cursor is older than the messages kept; a fresh welcome follows",
                    None,
                    None,
                );
                let welcome = self.welcome(s);
                let poll = self.poll_state(s);
                let from = poll.log.end();
                poll.log.push(expired);
                poll.log.push(welcome);
                out.push(Out::ErrorSent(ErrorCode::CursorExpired));
                if let Since::Messages(messages, cursor) = poll.log.since(from) {
                    out.push(Out::PollReady {
                        to: sub,
                        cursor,
                        messages,
                    });
                }
            }
        }
    }

    /// Ends a held recv with nothing new (its time is up, or the server is stopping).
    pub fn poll_timeout(&mut self, sub: SubId, out: &mut Vec<Out>) {
        if let Some(p) = self.poll.as_mut() {
            if let Some((held, cursor)) = p.pending {
                if held == sub {
                    p.pending = None;
                    out.push(Out::PollReady {
                        to: sub,
                        cursor,
                        messages: Vec::new(),
                    });
                }
            }
        }
    }

    fn welcome(&mut self, s: &Settings<'_>) -> Bytes {
        let resumed = self.welcomed;
        self.welcomed = true;
        let (items, replies): (&[Item], &[LiveReply]) = match &self.t {
            Some(t) => (&t.items, &t.replies),
            None => (&[], &[]),
        };
        let from = items.len().saturating_sub(s.history_items);
        let streaming: Vec<Streaming<'_>> = replies
            .iter()
            .map(|r| Streaming {
                reply: &r.id,
                in_reply_to: &r.in_reply_to,
                text: &r.text,
            })
            .collect();
        let conversation = self.conversation.to_string();
        ServerMsg::Welcome {
            conversation: &conversation,
            resumed,
            history: &items[from..],
            config: s.site_config,
            streaming: &streaming,
        }
        .to_bytes()
    }

    fn poll_state(&mut self, s: &Settings<'_>) -> &mut PollState {
        self.poll.get_or_insert_with(|| {
            Box::new(PollState {
                log: PollLog::new(s.poll_log_cap),
                pending: None,
            })
        })
    }

    /// A message for the sender only: its socket, or the poll log.
    fn direct(&mut self, from: Origin, msg: Bytes, s: &Settings<'_>, out: &mut Vec<Out>) {
        match from {
            Origin::Socket(to) => out.push(Out::Send { to, msg }),
            Origin::Poll => self.poll_state(s).log.push(msg),
        }
    }

    /// A message for every socket and, when anyone has polled, the poll log.
    fn broadcast(&mut self, msg: Bytes, out: &mut Vec<Out>) {
        for &to in &self.subs {
            out.push(Out::Send {
                to,
                msg: msg.clone(),
            });
        }
        if let Some(p) = self.poll.as_mut() {
            p.log.push(msg);
        }
    }

    /// Completes a held recv if the log has moved past its cursor. Called once
    /// per event, so one event's messages reach the poller in one answer.
    fn wake_poller(&mut self, out: &mut Vec<Out>) {
        let Some(p) = self.poll.as_mut() else { return };
        let Some((sub, cursor)) = p.pending else {
            return;
        };
        if let Since::Messages(messages, end) = p.log.since(cursor) {
            p.pending = None;
            out.push(Out::PollReady {
                to: sub,
                cursor: end,
                messages,
            });
        }
    }
}

/// An `error` frame.
pub fn error_msg(
    code: ErrorCode,
    message: &str,
    id: Option<&str>,
    retry_after_ms: Option<u64>,
) -> Bytes {
    ServerMsg::Error {
        code,
        message,
        id,
        retry_after_ms,
    }
    .to_bytes()
}

#[cfg(test)]
mod tests;
