//! A visitor's session: the conversation transcript, idempotent acks, replies
//! still streaming, the sockets and poller subscribed to it, and the
//! long-polling log.
//!
//! Sans-IO: each method takes an event (a client message, a streamed token, a
//! commit, a poll) and pushes effects to an [`Out`] list: bytes for a
//! subscriber, records to make durable, a poll to complete, an answer to start.
//! The worker that owns the session carries the effects out; tests drive it
//! directly.
//!
//! Durability: a visitor's message is appended in memory, handed to the store
//! as an [`Out::Commit`], and acknowledged only when the worker reports the
//! commit back through [`Session::on_committed`]. Commits of one session
//! complete in the order they were made, so a queue of what to do after each
//! one is enough.

pub mod ask_person;
pub mod log;
pub mod prompt;
pub mod ratelimit;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::chat::client::{ClientError, ClientMsg, Hello};
use crate::chat::server::{AgentEvent, Author, Handoff, Item, ServerMsg, Source, Streaming};
use crate::chat::ErrorCode;
use crate::handoff::{SessionEvent, VisitorEvent};
use crate::ids::{AgentId, ConversationId, SessionKey, SubId};
use inference_client::{Admitted, Ask, Busy};
use log::{PollLog, Since};
use prompt::PromptMessage;
use ratelimit::{Rate, TokenBucket};
use smallvec::SmallVec;

/// Why the store did not keep a session's records. The worker logs the
/// store's own error; a visitor is told only this, never a path or a SQL error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// The store is closed: the gateway is stopping.
    Closed,
    /// The store failed or refused the write.
    Failed,
}

impl NotStored {
    /// What the visitor is told of it.
    fn reason(self) -> &'static str {
        match self {
            NotStored::Closed => "the server is restarting",
            NotStored::Failed => "a storage error",
        }
    }
}

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

/// Surge admission, asked before a message is accepted (PROTOCOL.md: `busy`
/// is sent instead of the `ack`, and the message is not stored).
pub trait Admission {
    /// A place for a message whose answer is asked as `ask` (`grounded`:
    /// it goes through the knowledge base's retrieval first), or how long
    /// the client should wait before resending and whether a place is kept
    /// for that resend.
    fn admit(&self, ask: Ask, grounded: bool) -> Result<Admitted, Busy>;

    /// How late a resend may come after its place and still hold it.
    fn place_grace(&self) -> Duration {
        Duration::from_secs(2)
    }
}

/// The settings a session consults, from the configuration and its site.
#[derive(Clone, Copy)]
pub struct Settings<'a> {
    /// The site's widget configuration, sent in `welcome`.
    pub site_config: &'a RawValue,
    /// The standing part of the site's system prompt
    /// ([`prompt::system_text`]).
    pub instructions: &'a str,
    /// Tokens kept back in each prompt for the knowledge base's sources (0
    /// when the site has none): counted by admission, left out of the
    /// conversation's budget.
    pub grounding_tokens: u32,
    /// Messages per session.
    pub message_rate: Rate,
    /// Most items `welcome`'s history carries.
    pub history_items: usize,
    /// Server messages kept for long-pollers.
    pub poll_log_cap: usize,
    /// Token budget of a prompt (instructions plus conversation).
    pub context_tokens: u32,
    /// Token estimate of a text.
    pub count_tokens: fn(&str) -> u32,
    /// Surge admission.
    pub admission: &'a dyn Admission,
    /// The site's rules for handing a conversation to a person.
    pub handoff: &'a [crate::sites::HandoffRule],
}

/// A reply to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerJob {
    /// Reply id.
    pub reply: String,
    /// The visitor's message id.
    pub in_reply_to: String,
    /// The prompt: instructions, then the conversation.
    pub prompt: Vec<PromptMessage>,
    /// Its estimated size in tokens (with the sources' allowance).
    pub prompt_tokens: u32,
    /// What to search the site's knowledge base for; `None` when the site
    /// has none (its settings keep back no tokens for sources).
    pub query: Option<String>,
    /// Its place in the inference service's line: submitted with the
    /// request, or given back when the job is dropped on any path.
    pub admitted: Admitted,
}

/// Something to make durable.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A transcript item, with what the wire item does not carry.
    Item {
        /// The item as `history` shows it.
        item: Item,
        /// For AI replies: the visitor message answered.
        in_reply_to: Option<String>,
        /// For AI replies: 0 to 1.
        confidence: Option<f32>,
        /// For AI replies: time to first token, milliseconds.
        ttft_ms: Option<u32>,
        /// For AI replies: time to `done`, milliseconds.
        total_ms: Option<u32>,
    },
    /// The conversation needs a person.
    NeedsHuman {
        /// Why.
        reason: String,
    },
    /// The visitor's rating.
    Csat {
        /// 1 to 5.
        score: u8,
        /// Free text.
        comment: Option<String>,
    },
    /// What `hello` said about the page.
    Page(PageInfo),
    /// A human agent took the conversation (`Some`) or left it (`None`).
    Assigned {
        /// The agent's name.
        agent: Option<String>,
    },
    /// The conversation ended.
    Ended {
        /// Why (`resolved`).
        reason: String,
    },
    /// A message left for a person when nobody was available.
    Offline {
        /// Where to answer.
        email: String,
        /// What the visitor wrote.
        text: String,
    },
    /// The session's previous conversation ended: this one is new (the
    /// session's `conversation` already names it).
    ConversationOpened,
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
    /// Make these records durable, then call [`Session::on_committed`].
    Commit(Vec<Record>),
    /// Start answering a visitor's message.
    Answer(AnswerJob),
    /// Stop producing these replies (their visitor is gone).
    Cancel(Vec<String>),
    /// An `error` with this code was sent (for metrics).
    ErrorSent(ErrorCode),
    /// An `ack` went out this long after its message arrived (for metrics).
    Acked(Duration),
    /// News for the agent desk.
    Desk(VisitorEvent),
}

/// Why a reply failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFailure {
    /// The inference pool is down or refused.
    Unavailable,
    /// The pool was too slow for the deadline.
    Deadline,
}

/// Timing of a finished reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplyTimings {
    /// Time to first token, milliseconds.
    pub ttft_ms: u32,
    /// Time to the last token, milliseconds.
    pub total_ms: u32,
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
        Self::from_parts(h.lang.as_deref(), h.page.as_deref(), h.referrer.as_deref())
    }

    /// Packs the three fields.
    pub fn from_parts(lang: Option<&str>, page: Option<&str>, referrer: Option<&str>) -> Self {
        let (lang, page, referrer) = (
            lang.unwrap_or(""),
            page.unwrap_or(""),
            referrer.unwrap_or(""),
        );
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

/// What to do once a commit completes.
#[derive(Debug)]
enum AfterCommit {
    /// Acknowledge a visitor message, then do what `next` says.
    Ack {
        id: String,
        seq: u64,
        received: Instant,
        next: Next,
    },
    /// An agent's message is stored: show it to the visitor, tell the desk.
    AgentMessage {
        msg: Bytes,
        agent: AgentId,
        id: String,
        seq: u64,
    },
    /// Show something once it is stored.
    Broadcast(Bytes),
    /// Announce a finished reply.
    Done {
        msg: Bytes,
        in_reply_to: String,
        /// Offer the conversation to a person once `done` is out (why).
        ask: Option<String>,
    },
    /// Nothing visible.
    Nothing,
}

#[derive(Debug)]
struct LiveReply {
    id: String,
    in_reply_to: String,
    text: String,
    started: Instant,
    first_token: Option<Instant>,
}

/// A visitor message id's seq, and whether its ack has gone out.
#[derive(Debug, Clone, Copy)]
struct Acked {
    seq: u64,
    committed: bool,
}

/// What a session holds once the visitor has written: an idle session
/// (connected, greeted, silent) does not pay for it.
#[derive(Debug)]
struct Transcript {
    items: Vec<Item>,
    next_seq: u64,
    acked: HashMap<String, Acked>,
    replies: Vec<LiveReply>,
    after_commit: VecDeque<AfterCommit>,
    /// Why the conversation needs a person, if it does.
    needs_human: Option<Box<str>>,
    /// The message rate limit; full until the first message.
    bucket: Option<TokenBucket>,
    /// Where a hand-off to a person stands.
    human: Human,
    /// The conversation ended; the next message opens a new one.
    ended: bool,
    /// Agents' message ids already stored, and their seq (a resend after a
    /// lost ack is acknowledged again, not stored twice).
    agent_ids: HashMap<String, u64>,
    /// Messages refused `busy` with a place kept for their resend: the id
    /// and when the place is due (a few at most).
    places: Vec<(Box<str>, Instant)>,
}

/// What follows a visitor message's ack.
#[derive(Debug)]
enum Next {
    /// The AI answers it (admission already granted).
    Answer(AnswerJob),
    /// A person is asked for or holds the conversation: the desk passes it on.
    Desk,
    /// A site rule hands the conversation to a person: why, and the skill.
    Handoff {
        reason: String,
        skill: Option<String>,
    },
}

/// Where a hand-off to a person stands. While a person is asked for or holds
/// the conversation, the AI does not answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Human {
    /// The AI answers.
    #[default]
    None,
    /// Waiting for the desk's answer or in its line.
    Waiting,
    /// An agent holds the conversation.
    Held(Box<str>),
}

impl Default for Transcript {
    fn default() -> Self {
        Transcript {
            items: Vec::new(),
            next_seq: 1,
            acked: HashMap::new(),
            replies: Vec::new(),
            after_commit: VecDeque::new(),
            needs_human: None,
            bucket: None,
            human: Human::None,
            ended: false,
            agent_ids: HashMap::new(),
            places: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct PollState {
    log: PollLog,
    /// The held recv and its cursor.
    pending: Option<(SubId, u64)>,
}

/// A session as the store gives it back after a restart.
#[derive(Debug, Default)]
pub struct Restored {
    /// The conversation's items (the newest, as many as history shows).
    pub items: Vec<Item>,
    /// The next seq to assign.
    pub next_seq: u64,
    /// Every visitor message id of the conversation and its seq.
    pub acked: Vec<(String, u64)>,
    /// What `hello` said.
    pub page: Option<PageInfo>,
    /// Why the conversation needs a person, if it does.
    pub needs_human: Option<String>,
    /// The conversation has ended (the next message opens a new one).
    pub ended: bool,
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
    /// When the last subscriber left (for abandoning replies nobody waits for).
    pub unwatched_since: Option<Instant>,
    t: Option<Box<Transcript>>,
    /// Almost always one socket, sometimes two tabs: no heap for those.
    subs: SmallVec<[SubId; 2]>,
    /// Created on the first long-poll; a WebSocket-only session never pays for it.
    poll: Option<Box<PollState>>,
    page: Option<PageInfo>,
    welcomed: bool,
    csat: Option<u8>,
    /// Commits with nothing to do afterwards, made before the session had a
    /// transcript (a `hello`'s page info): counted here so that an idle
    /// session never allocates a transcript. They complete before any commit
    /// queued in the transcript, since a session's commits complete in order.
    bare_commits: u16,
}

impl Session {
    /// A new, empty session.
    pub fn new(
        key: SessionKey,
        conversation: ConversationId,
        site: Arc<str>,
        now: Instant,
    ) -> Self {
        Session {
            key,
            conversation,
            site,
            last_active: now,
            unwatched_since: Some(now),
            t: None,
            subs: SmallVec::new(),
            poll: None,
            page: None,
            welcomed: false,
            csat: None,
            bare_commits: 0,
        }
    }

    /// A session brought back from the store after a restart.
    pub fn restore(
        key: SessionKey,
        conversation: ConversationId,
        site: Arc<str>,
        now: Instant,
        r: Restored,
    ) -> Self {
        let mut s = Session::new(key, conversation, site, now);
        s.page = r.page;
        // The visitor has been here before: the next welcome says so.
        s.welcomed = true;
        if !r.items.is_empty() || !r.acked.is_empty() || r.needs_human.is_some() || r.ended {
            let mut t = Transcript {
                next_seq: r.next_seq.max(r.items.last().map_or(1, |i| i.seq + 1)),
                items: r.items,
                needs_human: r.needs_human.map(String::into_boxed_str),
                ended: r.ended,
                ..Transcript::default()
            };
            for (id, seq) in r.acked {
                t.acked.insert(
                    id,
                    Acked {
                        seq,
                        committed: true,
                    },
                );
            }
            s.t = Some(Box::new(t));
        }
        s
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
        self.unwatched_since = None;
    }

    /// Unsubscribes a socket or poller.
    pub fn detach(&mut self, sub: SubId, now: Instant) {
        self.subs.retain(|s| *s != sub);
        if let Some(p) = self.poll.as_mut() {
            if p.pending.is_some_and(|(s, _)| s == sub) {
                p.pending = None;
            }
        }
        if self.subs.is_empty() && self.unwatched_since.is_none() {
            self.unwatched_since = Some(now);
        }
    }

    /// Sockets subscribed now.
    #[cfg(test)]
    pub fn subscribers(&self) -> &[SubId] {
        &self.subs
    }

    /// Whether nothing is listening and nothing is in flight.
    pub fn is_quiet(&self) -> bool {
        self.subs.is_empty()
            && self.bare_commits == 0
            && self
                .t
                .as_ref()
                .is_none_or(|t| t.replies.is_empty() && t.after_commit.is_empty())
            && self.poll.as_ref().is_none_or(|p| p.pending.is_none())
    }

    /// The conversation's complete items.
    pub fn items(&self) -> &[Item] {
        self.t.as_ref().map_or(&[], |t| &t.items)
    }

    /// What the visitor's latest `hello` said about the page.
    #[cfg(test)]
    pub fn page_info(&self) -> Option<&PageInfo> {
        self.page.as_ref()
    }

    /// Why the conversation needs a person, if it does.
    #[cfg(test)]
    pub fn needs_human(&self) -> Option<&str> {
        self.t.as_ref().and_then(|t| t.needs_human.as_deref())
    }

    /// Replies being produced now.
    pub fn live_replies(&self) -> impl Iterator<Item = &str> {
        self.t
            .iter()
            .flat_map(|t| t.replies.iter().map(|r| r.id.as_str()))
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
                let page = PageInfo::new(&h);
                if self.page.as_ref() != Some(&page) {
                    self.commit(vec![Record::Page(page.clone())], AfterCommit::Nothing, out);
                    self.page = Some(page);
                }
                let welcome = self.welcome(s);
                self.direct(from, welcome, s, out);
            }
            ClientMsg::Message { id, text } => self.on_message(from, id, text, now, s, out),
            ClientMsg::Ping { id } => {
                let pong = ServerMsg::Pong { id: &id }.to_bytes();
                self.direct(from, pong, s, out);
            }
            // Forwarded to the agent holding the conversation.
            ClientMsg::Typing => {
                if matches!(self.t.as_ref().map(|t| &t.human), Some(Human::Held(_))) {
                    out.push(Out::Desk(VisitorEvent::Typing {
                        conv: self.conversation,
                    }));
                }
            }
            ClientMsg::Human { reason } => {
                if self.t.as_ref().is_some_and(|t| t.ended) {
                    self.reopen(out);
                }
                let reason = reason.unwrap_or_else(|| "the visitor asked for a person".into());
                self.ask_for_person(reason, None, out);
            }
            ClientMsg::LeaveMessage { email, text } => {
                let msg = agent_event(AgentEvent::MessageLeft, None, None);
                self.commit(
                    vec![Record::Offline { email, text }],
                    AfterCommit::Broadcast(msg),
                    out,
                );
            }
            ClientMsg::Csat { score, comment } => {
                self.csat = Some(score);
                self.commit(
                    vec![Record::Csat { score, comment }],
                    AfterCommit::Nothing,
                    out,
                );
            }
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

    /// A visitor's message: stored, then acknowledged (on commit), then
    /// answered by the AI, handed to a person, or passed to the one holding
    /// the conversation. A resend is acknowledged again; a message over the
    /// rate or refused by admission is not stored.
    fn on_message(
        &mut self,
        from: Origin,
        id: String,
        text: String,
        now: Now,
        s: &Settings<'_>,
        out: &mut Vec<Out>,
    ) {
        if self.answer_resend(from, &id, s, out) || !self.within_rate(from, &id, now, s, out) {
            return;
        }
        if self.t.as_ref().is_some_and(|t| t.ended) {
            self.reopen(out);
        }
        let handoff = self.handoff_for(&text, s);
        let seq = self.t.as_ref().map_or(1, |t| t.next_seq);
        let item = Item {
            seq,
            from: Author::Visitor,
            text,
            ts: now.unix_ms,
            id: Some(id.clone()),
            reply: None,
            sources: None,
            name: None,
        };
        let next = match handoff {
            Some(next) => next,
            None => match self.admit_answer(from, &id, &item, now, s, out) {
                Some(job) => Next::Answer(job),
                None => return,
            },
        };
        self.store_visitor_message(id, item, next, now.mono, out);
    }

    /// Answers a resend of message `id` (after a lost ack) with the same ack,
    /// doing nothing twice: true when `id` was seen before. Not yet
    /// committed, its ack is on its way to every socket anyway.
    fn answer_resend(
        &mut self,
        from: Origin,
        id: &str,
        s: &Settings<'_>,
        out: &mut Vec<Out>,
    ) -> bool {
        let Some(a) = self.t.as_ref().and_then(|t| t.acked.get(id)).copied() else {
            return false;
        };
        if a.committed {
            let ack = ServerMsg::Ack { id, seq: a.seq }.to_bytes();
            self.direct(from, ack, s, out);
        }
        true
    }

    /// Takes one message from the session's rate; false (and message `id`
    /// refused `rate_limited`) when it is used up.
    fn within_rate(
        &mut self,
        from: Origin,
        id: &str,
        now: Now,
        s: &Settings<'_>,
        out: &mut Vec<Out>,
    ) -> bool {
        let bucket = self
            .transcript()
            .bucket
            .get_or_insert_with(|| TokenBucket::new(s.message_rate, now.mono));
        let Err(wait) = bucket.take(s.message_rate, now.mono) else {
            return true;
        };
        let ms = wait.as_millis().max(1) as u64;
        let msg = format!(
            "more than {} messages per second; resend after retry_after_ms",
            s.message_rate.per_sec
        );
        self.refuse(from, ErrorCode::RateLimited, &msg, id, ms, s, out);
        false
    }

    /// Who answers a new visitor message other than the AI: while a person is
    /// asked for or holds the conversation, the desk passes it on; a visitor
    /// asking for one in so many words, or a site rule, hands this very
    /// message to a person.
    fn handoff_for(&self, text: &str, s: &Settings<'_>) -> Option<Next> {
        if self.t.as_ref().is_some_and(|t| t.human != Human::None) {
            return Some(Next::Desk);
        }
        let lower = text.to_lowercase();
        let page = self.page.as_ref().and_then(|p| p.page());
        let (reason, skill) = match s.handoff.iter().find(|r| r.matches(&lower, page)) {
            Some(r) => (r.reason(), r.skill.clone()),
            None => {
                if !ask_person::asks_for_person(&lower) {
                    return None;
                }
                ("the visitor asked for a person".to_string(), None)
            }
        };
        Some(Next::Handoff { reason, skill })
    }

    /// The AI's answer to `item`, if admission gives it a place; otherwise
    /// the message is refused `busy` (keeping a place for its resend when
    /// admission says so) and `None`.
    fn admit_answer(
        &mut self,
        from: Origin,
        id: &str,
        item: &Item,
        now: Now,
        s: &Settings<'_>,
        out: &mut Vec<Out>,
    ) -> Option<AnswerJob> {
        // The prompt this message would be answered with: its size decides
        // admission.
        let prompt = prompt::build(
            s.instructions,
            self.items(),
            item,
            s.context_tokens.saturating_sub(s.grounding_tokens).max(1),
            s.count_tokens,
        );
        let prompt_tokens = prompt::tokens(&prompt, s.count_tokens) + s.grounding_tokens;
        let ask = Ask {
            prompt_tokens,
            before_submit: Duration::ZERO,
            holds_place: self.take_place(id, now.mono, s.admission.place_grace()),
        };
        let admitted = match s.admission.admit(ask, s.grounding_tokens > 0) {
            Ok(a) => a,
            Err(busy) => {
                if busy.place {
                    self.keep_place(id, now.mono + busy.retry_after);
                }
                let ms = busy.retry_after.as_millis().max(1) as u64;
                let msg = "over capacity: the message was not stored; resend after retry_after_ms";
                self.refuse(from, ErrorCode::Busy, msg, id, ms, s, out);
                return None;
            }
        };
        // One reply per visitor message at most: naming it after the
        // message's seq keeps reply ids unique across restarts.
        Some(AnswerJob {
            reply: format!("r{}", item.seq),
            in_reply_to: id.to_string(),
            prompt,
            prompt_tokens,
            query: (s.grounding_tokens > 0)
                .then(|| prompt::retrieval_query(self.items(), &item.text)),
            admitted,
        })
    }

    /// Appends a visitor message to the transcript and makes it durable; its
    /// ack and `next` wait for the commit.
    fn store_visitor_message(
        &mut self,
        id: String,
        item: Item,
        next: Next,
        received: Instant,
        out: &mut Vec<Out>,
    ) {
        let seq = item.seq;
        let t = self.transcript();
        t.next_seq += 1;
        t.items.push(item.clone());
        t.acked.insert(
            id.clone(),
            Acked {
                seq,
                committed: false,
            },
        );
        self.commit(
            vec![plain_item(item)],
            AfterCommit::Ack {
                id,
                seq,
                received,
                next,
            },
            out,
        );
    }

    /// Opens a new conversation in this session (the last one ended).
    fn reopen(&mut self, out: &mut Vec<Out>) {
        let Ok(id) = ConversationId::random() else {
            return;
        };
        self.conversation = id;
        let t = self.transcript();
        // Seqs go on counting: a client that orders by seq never sees one twice.
        t.items.clear();
        t.ended = false;
        t.human = Human::None;
        t.needs_human = None;
        t.agent_ids.clear();
        self.csat = None;
        self.commit(vec![Record::ConversationOpened], AfterCommit::Nothing, out);
    }

    /// The conversation needs a person: the desk puts it in line (or answers
    /// that nobody is available); meanwhile the AI is silent.
    fn ask_for_person(&mut self, reason: String, skill: Option<String>, out: &mut Vec<Out>) {
        self.mark_needs_human(reason.clone(), out);
        let t = self.transcript();
        if t.human == Human::None {
            t.human = Human::Waiting;
        }
        let preview = t
            .items
            .iter()
            .rev()
            .find(|i| i.from == Author::Visitor)
            .map(|i| i.text.clone());
        let page = self.page.as_ref();
        out.push(Out::Desk(VisitorEvent::NeedsHuman {
            conv: self.conversation,
            key: self.key,
            site: self.site.to_string(),
            reason,
            lang: page.and_then(|p| p.lang()).map(str::to_owned),
            page: page.and_then(|p| p.page()).map(str::to_owned),
            referrer: page.and_then(|p| p.referrer()).map(str::to_owned),
            preview,
            skill,
        }));
    }

    /// What the agent desk says about this conversation.
    pub fn on_desk(&mut self, ev: SessionEvent, now: Now, out: &mut Vec<Out>) {
        match ev {
            SessionEvent::Queued { position } => {
                self.transcript().human = Human::Waiting;
                self.broadcast(agent_event(AgentEvent::Queued, Some(position), None), out);
            }
            SessionEvent::Joined { name } => self.on_agent_joined(name, out),
            SessionEvent::Left { name } => self.on_agent_left(name, out),
            SessionEvent::NoneAvailable => {
                self.transcript().human = Human::None;
                self.broadcast(agent_event(AgentEvent::NoneAvailable, None, None), out);
            }
            SessionEvent::AgentTyping { name } => {
                let msg = ServerMsg::Typing {
                    from: Author::Agent,
                    name: &name,
                }
                .to_bytes();
                self.broadcast(msg, out);
            }
            SessionEvent::AgentMessage {
                agent,
                name,
                id,
                text,
                ..
            } => self.on_agent_message(agent, name, id, text, now, out),
            SessionEvent::End { reason } => self.on_end(reason, out),
        }
        self.wake_poller(out);
    }

    /// An agent holds the conversation now: stored, and the visitor told.
    fn on_agent_joined(&mut self, name: String, out: &mut Vec<Out>) {
        self.transcript().human = Human::Held(name.clone().into_boxed_str());
        let msg = agent_event(AgentEvent::Joined, None, Some(&name));
        self.commit(
            vec![Record::Assigned { agent: Some(name) }],
            AfterCommit::Nothing,
            out,
        );
        self.broadcast(msg, out);
    }

    /// The agent let go; the AI answers again.
    fn on_agent_left(&mut self, name: String, out: &mut Vec<Out>) {
        self.transcript().human = Human::None;
        let msg = agent_event(AgentEvent::Left, None, Some(&name));
        self.commit(
            vec![Record::Assigned { agent: None }],
            AfterCommit::Nothing,
            out,
        );
        self.broadcast(msg, out);
    }

    /// An agent's message: stored, then (on commit) shown to the visitor and
    /// acknowledged to the desk. A resend is acknowledged again; a message
    /// for a conversation no agent holds any more is refused.
    fn on_agent_message(
        &mut self,
        agent: AgentId,
        name: String,
        id: String,
        text: String,
        now: Now,
        out: &mut Vec<Out>,
    ) {
        let conv = self.conversation;
        let t = self.transcript();
        if let Some(&seq) = t.agent_ids.get(&id) {
            out.push(Out::Desk(VisitorEvent::AgentMessageStored {
                conv,
                agent,
                id,
                seq,
            }));
            return;
        }
        if !matches!(t.human, Human::Held(_)) || t.ended {
            out.push(Out::Desk(VisitorEvent::AgentMessageFailed {
                conv,
                agent,
                id,
                error: "the conversation is no longer held by an agent".into(),
            }));
            return;
        }
        let (item, msg) = self.append_agent_item(name, text, &id, now);
        let seq = item.seq;
        self.commit(
            vec![plain_item(item)],
            AfterCommit::AgentMessage {
                msg,
                agent,
                id,
                seq,
            },
            out,
        );
    }

    /// Appends agent `name`'s message `id` to the transcript: the item, and
    /// the `message` frame that shows it.
    fn append_agent_item(
        &mut self,
        name: String,
        text: String,
        id: &str,
        now: Now,
    ) -> (Item, Bytes) {
        let t = self.transcript();
        let seq = t.next_seq;
        t.next_seq += 1;
        let item = Item {
            seq,
            from: Author::Agent,
            text,
            ts: now.unix_ms,
            id: None,
            reply: None,
            sources: None,
            name: Some(name),
        };
        t.items.push(item.clone());
        t.agent_ids.insert(id.to_string(), seq);
        let msg = ServerMsg::Message {
            seq,
            from: Author::Agent,
            name: item.name.as_deref().unwrap_or(""),
            text: &item.text,
        }
        .to_bytes();
        (item, msg)
    }

    /// The conversation ended: stored, then (on commit) the visitor told.
    fn on_end(&mut self, reason: &'static str, out: &mut Vec<Out>) {
        let t = self.transcript();
        t.ended = true;
        t.human = Human::None;
        let msg = ServerMsg::Ended { reason }.to_bytes();
        self.commit(
            vec![Record::Ended {
                reason: reason.to_string(),
            }],
            AfterCommit::Broadcast(msg),
            out,
        );
    }

    /// Most places kept per conversation (a visitor resends one message at a
    /// time; a few cover tabs and retries).
    const PLACES: usize = 4;

    /// Whether message `id` comes back holding the place its `busy` kept:
    /// at its time (a little early is forgiven) and within `grace` after.
    /// The place is used up either way.
    fn take_place(&mut self, id: &str, now: Instant, grace: Duration) -> bool {
        let Some(t) = self.t.as_mut() else {
            return false;
        };
        let Some(i) = t.places.iter().position(|(p, _)| &**p == id) else {
            return false;
        };
        let (_, due) = t.places.swap_remove(i);
        let early = Duration::from_millis(100);
        now + early >= due && now <= due + grace
    }

    /// Keeps the place a `busy` booked for message `id`'s resend at `due`.
    fn keep_place(&mut self, id: &str, due: Instant) {
        let t = self.transcript();
        t.places.retain(|(p, _)| &**p != id);
        if t.places.len() >= Self::PLACES {
            t.places.remove(0);
        }
        t.places.push((id.into(), due));
    }

    /// A refusal of one message: `rate_limited` or `busy`, with its id and wait.
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        from: Origin,
        code: ErrorCode,
        msg: &str,
        id: &str,
        retry_after_ms: u64,
        s: &Settings<'_>,
        out: &mut Vec<Out>,
    ) {
        self.direct(
            from,
            error_msg(code, msg, Some(id), Some(retry_after_ms)),
            s,
            out,
        );
        out.push(Out::ErrorSent(code));
    }

    fn commit(&mut self, records: Vec<Record>, then: AfterCommit, out: &mut Vec<Out>) {
        if matches!(then, AfterCommit::Nothing) && self.t.is_none() && self.bare_commits < u16::MAX
        {
            self.bare_commits += 1;
        } else {
            self.transcript().after_commit.push_back(then);
        }
        out.push(Out::Commit(records));
    }

    fn mark_needs_human(&mut self, reason: String, out: &mut Vec<Out>) {
        let t = self.transcript();
        if t.needs_human.is_none() {
            t.needs_human = Some(reason.clone().into_boxed_str());
            self.commit(
                vec![Record::NeedsHuman { reason }],
                AfterCommit::Nothing,
                out,
            );
        }
    }

    /// The store has committed (or failed to commit) the oldest outstanding
    /// [`Out::Commit`] of this session.
    pub fn on_committed(
        &mut self,
        result: Result<(), NotStored>,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        if self.bare_commits > 0 {
            self.bare_commits -= 1;
            return;
        }
        let Some(then) = self.t.as_mut().and_then(|t| t.after_commit.pop_front()) else {
            return;
        };
        match (then, result) {
            (
                AfterCommit::Ack {
                    id,
                    seq,
                    received,
                    next,
                },
                Ok(()),
            ) => self.on_message_stored(id, seq, received, next, now, out),
            // Dropping `next` gives an answer job's place in line back.
            (AfterCommit::Ack { id, seq, .. }, Err(e)) => {
                // Not stored: forget it so a resend starts afresh.
                if let Some(t) = self.t.as_mut() {
                    t.acked.remove(&id);
                    t.items.retain(|i| i.seq != seq);
                }
                let msg = format!(
                    "the message could not be stored ({}); resend it",
                    e.reason()
                );
                self.broadcast_internal(&msg, Some(&id), Some(1000), out);
            }
            (AfterCommit::Done { msg, ask, .. }, Ok(())) => {
                self.broadcast(msg, out);
                if let Some(reason) = ask {
                    if self.t.as_ref().is_some_and(|t| t.human == Human::None) {
                        self.ask_for_person(reason, None, out);
                    }
                }
            }
            (AfterCommit::Broadcast(msg), Ok(())) => self.broadcast(msg, out),
            (AfterCommit::Broadcast(_), Err(e)) => {
                let msg = format!("could not be stored ({}); try again", e.reason());
                self.broadcast_internal(&msg, None, None, out);
            }
            (
                AfterCommit::AgentMessage {
                    msg,
                    agent,
                    id,
                    seq,
                },
                Ok(()),
            ) => {
                self.broadcast(msg, out);
                out.push(Out::Desk(VisitorEvent::AgentMessageStored {
                    conv: self.conversation,
                    agent,
                    id,
                    seq,
                }));
            }
            (AfterCommit::AgentMessage { agent, id, seq, .. }, Err(e)) => {
                self.agent_message_not_stored(agent, id, seq, e, out)
            }
            (AfterCommit::Done { in_reply_to, .. }, Err(e)) => {
                let msg = format!("the reply could not be stored ({})", e.reason());
                self.broadcast_internal(&msg, Some(&in_reply_to), None, out);
            }
            (AfterCommit::Nothing, _) => {}
        }
        self.wake_poller(out);
    }

    /// A visitor message is stored: its ack goes to every subscriber, then
    /// what follows it starts.
    fn on_message_stored(
        &mut self,
        id: String,
        seq: u64,
        received: Instant,
        next: Next,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        if let Some(a) = self.t.as_mut().and_then(|t| t.acked.get_mut(&id)) {
            a.committed = true;
        }
        // Counted before it is sent: a client that reads its ack and then
        // asks `/metrics` (of any worker) finds it counted.
        out.push(Out::Acked(now.saturating_duration_since(received)));
        let ack = ServerMsg::Ack { id: &id, seq }.to_bytes();
        self.broadcast(ack, out);
        match next {
            Next::Answer(job) => self.start_answer(job, now, out),
            // The desk gets the conversation, this message as its preview.
            Next::Handoff { reason, skill } => self.ask_for_person(reason, skill, out),
            Next::Desk => self.pass_to_desk(seq, out),
        }
    }

    /// Starts producing the AI's answer.
    fn start_answer(&mut self, job: AnswerJob, now: Instant, out: &mut Vec<Out>) {
        self.transcript().replies.push(LiveReply {
            id: job.reply.clone(),
            in_reply_to: job.in_reply_to.clone(),
            text: String::new(),
            started: now,
            first_token: None,
        });
        out.push(Out::Answer(job));
    }

    /// Passes item `seq` to the agent desk (a person is asked for or holds
    /// the conversation).
    fn pass_to_desk(&mut self, seq: u64, out: &mut Vec<Out>) {
        if let Some(item) = self.items().iter().rev().find(|i| i.seq == seq) {
            let item = serde_json::to_value(item).unwrap_or_default();
            out.push(Out::Desk(VisitorEvent::Item {
                conv: self.conversation,
                item,
            }));
        }
    }

    /// An agent's message could not be stored: forgotten, so that the agent
    /// may send it again, and the desk told why.
    fn agent_message_not_stored(
        &mut self,
        agent: AgentId,
        id: String,
        seq: u64,
        e: NotStored,
        out: &mut Vec<Out>,
    ) {
        if let Some(t) = self.t.as_mut() {
            t.agent_ids.remove(&id);
            t.items.retain(|i| i.seq != seq);
        }
        out.push(Out::Desk(VisitorEvent::AgentMessageFailed {
            conv: self.conversation,
            agent,
            id,
            error: format!(
                "the message could not be stored ({}); send it again",
                e.reason()
            ),
        }));
    }

    /// An `internal` error for every subscriber: something was not stored.
    fn broadcast_internal(
        &mut self,
        msg: &str,
        id: Option<&str>,
        retry_after_ms: Option<u64>,
        out: &mut Vec<Out>,
    ) {
        self.broadcast(error_msg(ErrorCode::Internal, msg, id, retry_after_ms), out);
        out.push(Out::ErrorSent(ErrorCode::Internal));
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
        r.first_token.get_or_insert_with(Instant::now);
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

    /// Completes a reply: stores it, then (on commit) sends `done`.
    ///
    /// A `confidence` under `human_below` (the site's threshold) offers the
    /// conversation to a person once that `done` is out.
    pub fn reply_done(
        &mut self,
        reply: &str,
        sources: Vec<Source>,
        confidence: f32,
        human_below: f32,
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
        let ms = |d: Duration| d.as_millis().min(u32::MAX as u128) as u32;
        let timings = ReplyTimings {
            ttft_ms: r
                .first_token
                .map_or(0, |f| ms(f.saturating_duration_since(r.started))),
            total_ms: ms(now.mono.saturating_duration_since(r.started)),
        };
        let msg = ServerMsg::Done {
            reply,
            in_reply_to: &r.in_reply_to,
            seq,
            sources: &sources,
            confidence,
        }
        .to_bytes();
        let item = Item {
            seq,
            from: Author::Ai,
            text: r.text,
            ts: now.unix_ms,
            id: None,
            reply: Some(r.id),
            sources: Some(sources),
            name: None,
        };
        t.items.push(item.clone());
        let record = Record::Item {
            item,
            in_reply_to: Some(r.in_reply_to.clone()),
            confidence: Some(confidence),
            ttft_ms: Some(timings.ttft_ms),
            total_ms: Some(timings.total_ms),
        };
        self.commit(
            vec![record],
            AfterCommit::Done {
                msg,
                in_reply_to: r.in_reply_to,
                ask: (confidence < human_below)
                    .then(|| format!("the AI's confidence was low ({confidence:.2})")),
            },
            out,
        );
        true
    }

    /// A reply failed upstream: the visitor is told at once, with the message's
    /// id, and the conversation is offered to a person.
    pub fn reply_failed(&mut self, reply: &str, why: ReplyFailure, out: &mut Vec<Out>) -> bool {
        let Some(t) = self.t.as_mut() else {
            return false;
        };
        let Some(pos) = t.replies.iter().position(|r| r.id == reply) else {
            return false;
        };
        let r = t.replies.swap_remove(pos);
        let (msg, reason) = match why {
            ReplyFailure::Unavailable => (
                "the assistant is unavailable right now; your message is kept and a person will be offered",
                "the inference pool was unavailable",
            ),
            ReplyFailure::Deadline => (
                "the assistant took too long to answer; your message is kept and a person will be offered",
                "the inference pool missed its deadline",
            ),
        };
        self.broadcast(
            error_msg(ErrorCode::Unavailable, msg, Some(&r.in_reply_to), None),
            out,
        );
        out.push(Out::ErrorSent(ErrorCode::Unavailable));
        // Offered to a person, once per conversation.
        if self.t.as_ref().is_some_and(|t| t.human == Human::None) {
            self.ask_for_person(reason.to_string(), None, out);
        } else {
            self.mark_needs_human(reason.to_string(), out);
        }
        self.wake_poller(out);
        true
    }

    /// Gives up the replies nobody has watched for `grace` (the visitor left);
    /// their generation is cancelled upstream.
    pub fn abandon_unwatched(&mut self, now: Instant, grace: Duration, out: &mut Vec<Out>) {
        let waiting = self.poll.as_ref().is_some_and(|p| p.pending.is_some());
        let gone = self
            .unwatched_since
            .is_some_and(|t| !waiting && now.saturating_duration_since(t) >= grace);
        let Some(t) = self.t.as_mut() else { return };
        if gone && !t.replies.is_empty() {
            let ids = t.replies.drain(..).map(|r| r.id).collect();
            out.push(Out::Cancel(ids));
        }
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
    #[cfg(test)]
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
        let handoff = match self.t.as_ref().map(|t| &t.human) {
            Some(Human::Waiting) => Some(Handoff::Waiting),
            Some(Human::Held(_)) => Some(Handoff::Held),
            Some(Human::None) | None => None,
        };
        ServerMsg::Welcome {
            conversation: &conversation,
            resumed,
            history: &items[from..],
            config: s.site_config,
            streaming: &streaming,
            handoff,
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

/// An `agent` message (hand-off progress).
fn agent_event(event: AgentEvent, position: Option<u32>, name: Option<&str>) -> Bytes {
    ServerMsg::Agent {
        event,
        position,
        name,
    }
    .to_bytes()
}

/// The record of a transcript item that is not an AI reply.
fn plain_item(item: Item) -> Record {
    Record::Item {
        item,
        in_reply_to: None,
        confidence: None,
        ttft_ms: None,
        total_ms: None,
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
