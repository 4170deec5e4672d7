//! The agent WebSocket's frames (docs/protocol.md, "Agent desk"): what an
//! agent sends ([`AgentMsg`], parsed with serde), what it gets ([`ToAgent`]),
//! and why a frame is refused ([`DeskError`], its [`AgentErrorCode`]).
//!
//! Key order: the desk has always built its frames as `serde_json::Value`s,
//! whose objects keep their keys sorted, and dashboards and tests have seen
//! exactly those bytes. [`ToAgent::to_bytes`] keeps them: every frame but
//! `queue` goes out with its keys sorted at every depth ([`Sorted`]); `queue`
//! is put together from cards rendered once per site, `type` first.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::directory::Account;
use crate::ids::AgentId;
use crate::store::{Author, StoredItem, Transcript};

/// A frame from an agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMsg {
    /// Available for new conversations, or away.
    Status {
        /// Available.
        available: bool,
    },
    /// Take a queued conversation.
    Take {
        /// Its id.
        conversation: String,
    },
    /// Refuse an offer.
    Decline {
        /// Its id.
        conversation: String,
    },
    /// Ask for a transcript.
    Open {
        /// Its id.
        conversation: String,
    },
    /// Write to the visitor.
    Message {
        /// Its id.
        conversation: String,
        /// The agent's own id of the message.
        id: String,
        /// The text.
        text: String,
    },
    /// The agent is typing.
    Typing {
        /// Its id.
        conversation: String,
    },
    /// Hand the conversation back to the AI.
    Release {
        /// Its id.
        conversation: String,
    },
    /// End the conversation.
    Resolve {
        /// Its id.
        conversation: String,
    },
    /// Give it to another agent (supervisors and admins).
    Transfer {
        /// Its id.
        conversation: String,
        /// The other agent's id.
        to: AgentId,
    },
    /// Answered by `pong`.
    Ping {
        /// Echoed.
        id: String,
    },
    /// A `type` this desk does not know.
    #[serde(other)]
    Unknown,
}

impl AgentMsg {
    /// The conversation the frame is about (an `error` answering it names it).
    pub fn conversation(&self) -> Option<&str> {
        match self {
            AgentMsg::Take { conversation }
            | AgentMsg::Decline { conversation }
            | AgentMsg::Open { conversation }
            | AgentMsg::Message { conversation, .. }
            | AgentMsg::Typing { conversation }
            | AgentMsg::Release { conversation }
            | AgentMsg::Resolve { conversation }
            | AgentMsg::Transfer { conversation, .. } => Some(conversation),
            AgentMsg::Status { .. } | AgentMsg::Ping { .. } | AgentMsg::Unknown => None,
        }
    }
}

/// Parses a frame; the error is what the `error` frame answering it says.
pub fn parse(text: &[u8]) -> Result<AgentMsg, DeskError> {
    match serde_json::from_slice::<AgentMsg>(text) {
        Ok(AgentMsg::Unknown) => {
            // Rare: read the frame again only to name the type.
            let ty = serde_json::from_slice::<Value>(text)
                .ok()
                .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            Err(DeskError::new(
                AgentErrorCode::UnknownType,
                format!("unknown frame type '{ty}'"),
            ))
        }
        Ok(m) => Ok(m),
        Err(e) => Err(DeskError::new(
            AgentErrorCode::BadRequest,
            format!("invalid frame: {e}"),
        )),
    }
}

/// The `code` of an agent `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentErrorCode {
    /// Not JSON, a missing or wrong field.
    BadRequest,
    /// A `type` the desk does not know.
    UnknownType,
    /// Not the agent's site or role, or a conversation they do not hold.
    Forbidden,
    /// No such conversation or agent.
    NotFound,
    /// Another agent took it first, or it is offered to someone else.
    Conflict,
    /// The text is over the message limit.
    TooLarge,
    /// A fault of the server's own (a store read or write failed).
    Internal,
}

impl AgentErrorCode {
    /// Every code.
    pub const ALL: [AgentErrorCode; 7] = [
        AgentErrorCode::BadRequest,
        AgentErrorCode::UnknownType,
        AgentErrorCode::Forbidden,
        AgentErrorCode::NotFound,
        AgentErrorCode::Conflict,
        AgentErrorCode::TooLarge,
        AgentErrorCode::Internal,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentErrorCode::BadRequest => "bad_request",
            AgentErrorCode::UnknownType => "unknown_type",
            AgentErrorCode::Forbidden => "forbidden",
            AgentErrorCode::NotFound => "not_found",
            AgentErrorCode::Conflict => "conflict",
            AgentErrorCode::TooLarge => "too_large",
            AgentErrorCode::Internal => "internal",
        }
    }

    /// The code with this wire name.
    pub fn from_wire(name: &str) -> Option<AgentErrorCode> {
        AgentErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for AgentErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the desk refused an agent's frame: the code and message of the `error`
/// frame that answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DeskError {
    /// The code.
    pub code: AgentErrorCode,
    /// A sentence the agent (or the dashboard's developer) can act on.
    pub message: Cow<'static, str>,
    /// The refused `message`'s own id, when the answer names it.
    pub id: Option<String>,
}

impl DeskError {
    /// A refusal with this code and message.
    pub fn new(code: AgentErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        DeskError {
            code,
            message: message.into(),
            id: None,
        }
    }

    /// `bad_request`.
    pub fn bad_request(message: &'static str) -> Self {
        Self::new(AgentErrorCode::BadRequest, message)
    }

    /// `forbidden`.
    pub fn forbidden(message: &'static str) -> Self {
        Self::new(AgentErrorCode::Forbidden, message)
    }

    /// `not_found`.
    pub fn not_found(message: &'static str) -> Self {
        Self::new(AgentErrorCode::NotFound, message)
    }

    /// The same refusal, naming the agent's message `id`.
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = Some(id.to_string());
        self
    }

    /// The `error` frame, about `conversation` if the refused frame named one.
    pub fn frame(&self, conversation: Option<&str>) -> Bytes {
        ToAgent::Error {
            code: self.code,
            message: &self.message,
            conversation,
            id: self.id.as_deref(),
        }
        .to_bytes()
    }
}

/// Where a conversation stands, as its card says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardState {
    /// In line, offered to nobody.
    Queued,
    /// In line and offered to an agent.
    Offered,
    /// An agent holds it.
    Assigned,
    /// It ended (the desk no longer has it).
    Ended,
    /// Not in the desk and not ended: the AI answers it.
    Idle,
}

/// The conversation card (docs/protocol.md) of a conversation the desk has:
/// what it knows and nothing else (absent fields are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveCard<'a> {
    /// Its id.
    pub conversation: String,
    /// Its site.
    pub site: &'a str,
    /// Queued, offered or assigned.
    pub state: CardState,
    /// Why it needs a person.
    pub reason: &'a str,
    /// When it asked for one, milliseconds since the Unix epoch.
    pub waiting_since_ms: u64,
    /// The visitor's language tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<&'a str>,
    /// The page the widget is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<&'a str>,
    /// That page's referrer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<&'a str>,
    /// The visitor's latest message, at most 200 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<&'a str>,
    /// The name of the agent holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<&'a str>,
    /// Its 1-based place in its site's line (in `queue` and `welcome`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
}

/// The card of a conversation the desk does not have, as the store keeps it:
/// what the store does not know is `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredCard<'a> {
    /// Its id.
    pub conversation: String,
    /// Its site.
    pub site: &'a str,
    /// Ended or idle.
    pub state: CardState,
    /// Why it once asked for a person.
    pub reason: Option<&'a str>,
    /// The visitor's language tag.
    pub lang: Option<&'a str>,
    /// The page the widget was on.
    pub page: Option<&'a str>,
    /// That page's referrer.
    pub referrer: Option<&'a str>,
    /// When the conversation started, milliseconds since the Unix epoch.
    pub waiting_since_ms: u64,
}

/// A conversation card of either kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Card<'a> {
    /// The desk has the conversation.
    Live(LiveCard<'a>),
    /// Only the store has it.
    Stored(StoredCard<'a>),
}

/// A message a visitor left for a person, as a card shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offline<'a> {
    /// Where to answer.
    pub email: &'a str,
    /// What the visitor wrote.
    pub text: &'a str,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A card with the whole transcript: the body of `assigned` and `transcript`,
/// and of `GET /admin/conversations/{id}` (there through [`Sorted`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FullCard<'a> {
    /// The card.
    #[serde(flatten)]
    pub card: Card<'a>,
    /// Every item, in the shape of the visitor protocol's `history` items.
    pub items: &'a [Value],
    /// Messages left while nobody was available.
    pub offline: &'a [Offline<'a>],
}

/// A canned reply, as `welcome` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Canned<'a> {
    /// Its site.
    pub site: &'a str,
    /// What the agent types to find it.
    pub shortcut: &'a str,
    /// The reply.
    pub text: &'a str,
}

/// One agent, as `agents` lists them for supervisors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentRow<'a> {
    /// Account id.
    pub id: AgentId,
    /// Display name.
    pub name: &'a str,
    /// A socket is open.
    pub online: bool,
    /// Takes new conversations.
    pub available: bool,
    /// Conversations held.
    pub load: u32,
    /// Most conversations held at once.
    pub capacity: u32,
}

/// Why an agent no longer holds (or is no longer offered) a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnassignedReason {
    /// They handed it back to the AI.
    Released,
    /// A supervisor gave it to another agent.
    Transferred,
    /// Their offer lapsed.
    Timeout,
    /// Their sockets stayed closed past the grace period, or their account went.
    Disconnected,
}

/// A frame for an agent.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent<'a> {
    /// Sent on connect.
    Welcome {
        /// The agent's account.
        agent: &'a Account,
        /// Their sites' line, each card with its position.
        queue: &'a [LiveCard<'a>],
        /// The conversations they hold.
        conversations: &'a [LiveCard<'a>],
        /// Their sites' canned replies.
        canned: &'a [Canned<'a>],
    },
    /// Their sites' line (at most the first cards of each site).
    Queue {
        /// Cards, each rendered once ([`render_card`]) for every agent who sees it.
        items: &'a [&'a RawValue],
        /// How many wait in all.
        total: usize,
    },
    /// Routing chose this agent: `take` it in time, or it goes to another.
    Offer {
        /// The conversation.
        #[serde(flatten)]
        card: &'a LiveCard<'a>,
        /// How long the offer stays open.
        expires_in_ms: u64,
    },
    /// The agent now holds the conversation.
    Assigned(&'a FullCard<'a>),
    /// The agent no longer holds it.
    Unassigned {
        /// Its id.
        conversation: &'a str,
        /// Why.
        reason: UnassignedReason,
    },
    /// The answer to `open`.
    Transcript(&'a FullCard<'a>),
    /// A new item of a conversation the agent holds.
    Message {
        /// Its id.
        conversation: &'a str,
        /// The item, in the shape of `history` items.
        item: &'a Value,
    },
    /// The visitor is typing.
    Typing {
        /// Its id.
        conversation: &'a str,
    },
    /// The agent's `message` is stored.
    Ack {
        /// The agent's id of the message.
        id: &'a str,
        /// Its conversation.
        conversation: &'a str,
        /// Its place in the transcript.
        seq: u64,
    },
    /// The conversation ended.
    Ended {
        /// Its id.
        conversation: &'a str,
        /// Why (`resolved`).
        reason: &'a str,
    },
    /// Supervisors and admins: the agents of their sites.
    Agents {
        /// One row each.
        items: &'a [AgentRow<'a>],
    },
    /// The answer to `ping`.
    Pong {
        /// The ping's id.
        id: &'a str,
    },
    /// A refusal or failure.
    Error {
        /// The code.
        code: AgentErrorCode,
        /// A sentence to act on.
        message: &'a str,
        /// The conversation the refused frame named.
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation: Option<&'a str>,
        /// The refused message's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl ToAgent<'_> {
    /// The JSON text of this frame, keys in the order agents have always
    /// received them (see the module's documentation).
    pub fn to_bytes(&self) -> Bytes {
        let json = match self {
            // Its cards are already text (sorted when rendered): only the
            // envelope is written here, `type` first as it always was.
            ToAgent::Queue { .. } => serde_json::to_vec(self),
            _ => serde_json::to_vec(&Sorted(self)),
        };
        // Nothing here has a map with non-string keys or a fallible Serialize:
        // this cannot fail, and an empty object is still valid JSON if it did.
        Bytes::from(json.unwrap_or_else(|_| b"{}".to_vec()))
    }
}

/// A card as the JSON text a `queue` frame carries (`null` in the
/// impossible case that it does not serialize, as in [`ToAgent::to_bytes`]).
pub fn render_card(card: &LiveCard<'_>) -> Box<RawValue> {
    serde_json::value::to_raw_value(&Sorted(card)).unwrap_or_default()
}

/// Serializes the value it wraps with the keys of every object in sorted
/// order, whatever the order of its fields (and whether or not serde_json
/// keeps insertion order).
pub struct Sorted<'a, T: ?Sized>(pub &'a T);

impl<T: Serialize + ?Sized> Serialize for Sorted<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut v = serde_json::to_value(self.0).map_err(serde::ser::Error::custom)?;
        v.sort_all_objects();
        v.serialize(serializer)
    }
}

/// A stored item in the shape of the visitor protocol's `history` items.
pub fn item(i: &StoredItem) -> Value {
    let mut v = json!({
        "seq": i.seq,
        "from": i.author.as_str(),
        "text": i.text,
        "ts": i.ts_ms,
    });
    match i.author {
        Author::Visitor => {
            if let Some(id) = &i.client_id {
                v["id"] = json!(id);
            }
        }
        Author::Ai => {
            if let Some(r) = &i.reply_id {
                v["reply"] = json!(r);
            }
            let sources = i
                .sources_json
                .as_deref()
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
                .unwrap_or_else(|| json!([]));
            v["sources"] = sources;
            if let Some(c) = i.confidence {
                v["confidence"] = json!(c);
            }
        }
        Author::Agent => {
            if let Some(n) = &i.agent_name {
                v["name"] = json!(n);
            }
        }
    }
    v
}

/// A transcript's items and offline messages, as cards carry them.
pub fn transcript_parts(t: &Transcript) -> (Vec<Value>, Vec<Offline<'_>>) {
    let items = t.items.iter().map(item).collect();
    let offline = t
        .offline
        .iter()
        .map(|o| Offline {
            email: &o.email,
            text: &o.text,
            at_ms: o.at_ms,
        })
        .collect();
    (items, offline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ConversationId;

    #[test]
    fn frames_parse_and_refuse() {
        assert_eq!(
            parse(br#"{"type":"take","conversation":"c_x"}"#),
            Ok(AgentMsg::Take {
                conversation: "c_x".into()
            })
        );
        assert_eq!(
            parse(br#"{"type":"transfer","conversation":"c_x","to":3}"#),
            Ok(AgentMsg::Transfer {
                conversation: "c_x".into(),
                to: AgentId::new(3)
            })
        );
        assert_eq!(
            parse(br#"{"type":"dance"}"#).unwrap_err().code.as_str(),
            "unknown_type"
        );
        assert_eq!(
            parse(br#"{"type":"take"}"#).unwrap_err().code.as_str(),
            "bad_request"
        );
        assert_eq!(parse(b"not json").unwrap_err().code.as_str(), "bad_request");
    }

    #[test]
    fn items_look_like_history() {
        let mut i = StoredItem::new(
            ConversationId::from_bytes([1; 12]),
            3,
            Author::Agent,
            "hi",
            5,
        );
        i.agent_name = Some("Ada".into());
        assert_eq!(
            item(&i),
            json!({"seq": 3, "from": "agent", "text": "hi", "ts": 5, "name": "Ada"})
        );
    }

    // The expected texts below are what the desk sent before its frames were
    // typed (built as `json!` values), captured byte for byte.

    fn name(n: u8) -> String {
        ConversationId::from_bytes([n; 12]).to_string()
    }

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    const PERSON: &str = "the visitor asked for a \"person\"";

    /// What a visitor's `preview` of 20 repeated questions is cut to.
    fn preview() -> String {
        "where is my order? ".repeat(20).chars().take(200).collect()
    }

    /// The transcript of conversation `n`: one item of each kind.
    fn transcript(n: u8, ended: bool, needs: bool) -> Transcript {
        use crate::store::{ConversationState, Mark, OfflineMessage, PageInfo};
        let c = ConversationId::from_bytes([n; 12]);
        let mut v = StoredItem::new(c, 1, Author::Visitor, "hello \"there\"\n", 10);
        v.client_id = Some("m1".into());
        let mut a = StoredItem::new(c, 2, Author::Ai, "an answer", 11);
        a.reply_id = Some("r2".into());
        a.sources_json = Some(r#"[{"url":"u","title":"T","chunk":"k1","score":0.7}]"#.into());
        a.confidence = Some(0.8);
        let mut a2 = StoredItem::new(c, 3, Author::Ai, "no sources", 12);
        a2.reply_id = Some("r3".into());
        let mut g = StoredItem::new(c, 4, Author::Agent, "from a person", 13);
        g.agent_name = Some("Ada".into());
        let g2 = StoredItem::new(c, 5, Author::Agent, "nameless", 14);
        let mark = |reason: &str, at_ms| Mark {
            reason: reason.into(),
            at_ms,
        };
        Transcript {
            conversation: ConversationState {
                id: c,
                site: "shop".into(),
                started_ms: 1234,
                page: PageInfo {
                    lang: Some("en".into()),
                    page: None,
                    referrer: Some("https://r.example/".into()),
                },
                needs_human: needs.then(|| mark("asked", 5)),
                assigned: None,
                ended: ended.then(|| mark("resolved", 6)),
                csat: None,
            },
            items: vec![v, a, a2, g, g2],
            offline: vec![OfflineMessage {
                email: "v@example.com".into(),
                text: "call me".into(),
                at_ms: 99,
            }],
        }
    }

    const ITEMS: &str = r#"[{"from":"visitor","id":"m1","seq":1,"text":"hello \"there\"\n","ts":10},{"confidence":0.800000011920929,"from":"ai","reply":"r2","seq":2,"sources":[{"chunk":"k1","score":0.7,"title":"T","url":"u"}],"text":"an answer","ts":11},{"from":"ai","reply":"r3","seq":3,"sources":[],"text":"no sources","ts":12},{"from":"agent","name":"Ada","seq":4,"text":"from a person","ts":13},{"from":"agent","seq":5,"text":"nameless","ts":14}]"#;

    /// An expected text with its transcript items and preview filled in.
    fn expect(template: &str) -> String {
        template
            .replace("{ITEMS}", ITEMS)
            .replace("{PREVIEW}", &preview())
    }

    /// Conversation 1's card while the desk has it, offered or held by Ada.
    fn live(state: CardState, preview: &str) -> LiveCard<'_> {
        LiveCard {
            conversation: name(1),
            site: "shop",
            state,
            reason: PERSON,
            waiting_since_ms: 5,
            lang: Some("en"),
            page: Some("https://shop.example/cart"),
            referrer: Some("https://ref.example/?q=<x>&y=\u{e9}"),
            preview: Some(preview),
            agent: (state == CardState::Assigned).then_some("Ada"),
            position: None,
        }
    }

    /// The card of a conversation as the store has it.
    fn stored(t: &Transcript, state: CardState) -> StoredCard<'_> {
        let c = &t.conversation;
        StoredCard {
            conversation: c.id.to_string(),
            site: &c.site,
            state,
            reason: c.needs_human.as_ref().map(|m| m.reason.as_str()),
            lang: c.page.lang.as_deref(),
            page: c.page.page.as_deref(),
            referrer: c.page.referrer.as_deref(),
            waiting_since_ms: c.started_ms,
        }
    }

    /// An offered conversation's card, as `queue` and `welcome` list it.
    fn queued(n: u8, lang: &'static str, position: u32) -> LiveCard<'static> {
        LiveCard {
            conversation: name(n),
            site: "shop",
            state: CardState::Offered,
            reason: PERSON,
            waiting_since_ms: 9,
            lang: Some(lang),
            page: None,
            referrer: None,
            preview: None,
            agent: None,
            position: Some(position),
        }
    }

    #[test]
    fn error_codes_have_their_wire_names() {
        let names: Vec<&str> = AgentErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "bad_request",
                "unknown_type",
                "forbidden",
                "not_found",
                "conflict",
                "too_large",
                "internal"
            ]
        );
        for c in AgentErrorCode::ALL {
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
            assert_eq!(AgentErrorCode::from_wire(c.as_str()), Some(c));
        }
        assert_eq!(AgentErrorCode::from_wire("teapot"), None);
    }

    #[test]
    fn refusals_frame_as_before() {
        let e = DeskError::not_found("no such conversation");
        assert_eq!(e.to_string(), "not_found: no such conversation");
        assert_eq!(
            text(e.frame(Some("c_nope"))),
            r#"{"code":"not_found","conversation":"c_nope","message":"no such conversation","type":"error"}"#
        );
        let big = DeskError::new(
            AgentErrorCode::TooLarge,
            format!("text is over {} bytes", 100),
        );
        assert_eq!(
            text(big.with_id("m").frame(Some(&name(1)))),
            r#"{"code":"too_large","conversation":"c_AQEBAQEBAQEBAQEB","id":"m","message":"text is over 100 bytes","type":"error"}"#
        );
        let internal = ToAgent::Error {
            code: AgentErrorCode::Internal,
            message: "the conversation is no longer \"held\"",
            conversation: Some(&name(1)),
            id: Some("m2"),
        };
        assert_eq!(
            text(internal.to_bytes()),
            r#"{"code":"internal","conversation":"c_AQEBAQEBAQEBAQEB","id":"m2","message":"the conversation is no longer \"held\"","type":"error"}"#
        );
        let unknown = parse(br#"{"type":"fly"}"#).unwrap_err();
        assert_eq!(
            text(unknown.frame(None)),
            r#"{"code":"unknown_type","message":"unknown frame type 'fly'","type":"error"}"#
        );
        let bad = parse(b"not json").unwrap_err();
        assert_eq!(
            text(bad.frame(None)),
            r#"{"code":"bad_request","message":"invalid frame: expected ident at line 1 column 2","type":"error"}"#
        );
        let negative = parse(br#"{"type":"transfer","conversation":"c","to":-1}"#).unwrap_err();
        assert_eq!(
            negative.message,
            "invalid frame: invalid value: integer `-1`, expected u64"
        );
        assert_eq!(
            text(DeskError::bad_request("send JSON in text frames").frame(None)),
            r#"{"code":"bad_request","message":"send JSON in text frames","type":"error"}"#
        );
    }

    #[test]
    fn small_frames_are_byte_for_byte_as_before() {
        let c1 = name(1);
        let cases = [
            (
                ToAgent::Pong { id: "p\"1\u{e9}" },
                r#"{"id":"p\"1é","type":"pong"}"#,
            ),
            (
                ToAgent::Ack {
                    id: "m\"1",
                    conversation: &c1,
                    seq: 4,
                },
                r#"{"conversation":"c_AQEBAQEBAQEBAQEB","id":"m\"1","seq":4,"type":"ack"}"#,
            ),
            (
                ToAgent::Typing { conversation: &c1 },
                r#"{"conversation":"c_AQEBAQEBAQEBAQEB","type":"typing"}"#,
            ),
            (
                ToAgent::Ended {
                    conversation: &c1,
                    reason: "resolved",
                },
                r#"{"conversation":"c_AQEBAQEBAQEBAQEB","reason":"resolved","type":"ended"}"#,
            ),
        ];
        for (frame, want) in cases {
            assert_eq!(text(frame.to_bytes()), want);
        }
        let item = json!({"seq": 3, "from": "ai", "text": "hi", "ts": 7, "sources": [{"score": 0.25, "chunk": "c"}], "confidence": 0.5});
        assert_eq!(
            text(
                ToAgent::Message {
                    conversation: &c1,
                    item: &item
                }
                .to_bytes()
            ),
            r#"{"conversation":"c_AQEBAQEBAQEBAQEB","item":{"confidence":0.5,"from":"ai","seq":3,"sources":[{"chunk":"c","score":0.25}],"text":"hi","ts":7},"type":"message"}"#
        );
        for (reason, word) in [
            (UnassignedReason::Released, "released"),
            (UnassignedReason::Transferred, "transferred"),
            (UnassignedReason::Timeout, "timeout"),
            (UnassignedReason::Disconnected, "disconnected"),
        ] {
            assert_eq!(
                text(
                    ToAgent::Unassigned {
                        conversation: &c1,
                        reason
                    }
                    .to_bytes()
                ),
                format!(
                    r#"{{"conversation":"c_AQEBAQEBAQEBAQEB","reason":"{word}","type":"unassigned"}}"#
                )
            );
        }
    }

    #[test]
    fn agents_rows_are_as_before() {
        let row = |id, name, online| AgentRow {
            id: AgentId::new(id),
            name,
            online,
            available: true,
            load: 0,
            capacity: 2,
        };
        let items = [
            row(1, "Ada", true),
            row(2, "Bob \"B\"", false),
            row(3, "Sue", true),
        ];
        assert_eq!(
            text(ToAgent::Agents { items: &items }.to_bytes()),
            r#"{"items":[{"available":true,"capacity":2,"id":1,"load":0,"name":"Ada","online":true},{"available":true,"capacity":2,"id":2,"load":0,"name":"Bob \"B\"","online":false},{"available":true,"capacity":2,"id":3,"load":0,"name":"Sue","online":true}],"type":"agents"}"#
        );
    }

    #[test]
    fn welcome_is_as_before() {
        use super::super::directory::{AccountInput, Directory, Role};
        let mut dir = Directory::default();
        let (ada, _) = dir.create(
            AccountInput {
                name: "Ada".into(),
                role: Role::Agent,
                languages: vec!["en".into()],
                skills: vec!["billing".into()],
                capacity: 2,
                sites: vec!["shop".into()],
            },
            1,
        );
        let held = LiveCard {
            state: CardState::Assigned,
            agent: Some("Ada"),
            position: None,
            ..queued(4, "en", 1)
        };
        let canned = [Canned {
            site: "shop",
            shortcut: "hi",
            text: "Hello!",
        }];
        let w = ToAgent::Welcome {
            agent: &ada,
            queue: &[],
            conversations: &[held],
            canned: &canned,
        };
        assert_eq!(
            text(w.to_bytes()),
            r#"{"agent":{"capacity":2,"id":1,"languages":["en"],"name":"Ada","role":"agent","sites":["shop"],"skills":["billing"]},"canned":[{"shortcut":"hi","site":"shop","text":"Hello!"}],"conversations":[{"agent":"Ada","conversation":"c_BAQEBAQEBAQEBAQE","lang":"en","reason":"the visitor asked for a \"person\"","site":"shop","state":"assigned","waiting_since_ms":9}],"queue":[],"type":"welcome"}"#
        );
    }

    #[test]
    fn queue_puts_type_first() {
        assert_eq!(
            text(
                ToAgent::Queue {
                    items: &[],
                    total: 0
                }
                .to_bytes()
            ),
            r#"{"type":"queue","items":[],"total":0}"#
        );
        let cards = [
            render_card(&queued(4, "en", 1)),
            render_card(&queued(5, "fr", 2)),
        ];
        let items: Vec<&RawValue> = cards.iter().map(|c| &**c).collect();
        assert_eq!(
            text(
                ToAgent::Queue {
                    items: &items,
                    total: 2
                }
                .to_bytes()
            ),
            r#"{"type":"queue","items":[{"conversation":"c_BAQEBAQEBAQEBAQE","lang":"en","position":1,"reason":"the visitor asked for a \"person\"","site":"shop","state":"offered","waiting_since_ms":9},{"conversation":"c_BQUFBQUFBQUFBQUF","lang":"fr","position":2,"reason":"the visitor asked for a \"person\"","site":"shop","state":"offered","waiting_since_ms":9}],"total":2}"#
        );
    }

    #[test]
    fn offers_are_as_before() {
        let p = preview();
        let card = live(CardState::Offered, &p);
        let offer = ToAgent::Offer {
            card: &card,
            expires_in_ms: 20_000,
        };
        assert_eq!(
            text(offer.to_bytes()),
            expect(
                r#"{"conversation":"c_AQEBAQEBAQEBAQEB","expires_in_ms":20000,"lang":"en","page":"https://shop.example/cart","preview":"{PREVIEW}","reason":"the visitor asked for a \"person\"","referrer":"https://ref.example/?q=<x>&y=é","site":"shop","state":"offered","type":"offer","waiting_since_ms":5}"#
            )
        );
    }

    #[test]
    fn transcripts_are_as_before() {
        let t = transcript(1, false, true);
        let (items, offline) = transcript_parts(&t);
        assert_eq!(serde_json::to_string(&items).unwrap(), ITEMS);
        let p = preview();
        let full = FullCard {
            card: Card::Live(live(CardState::Assigned, &p)),
            items: &items,
            offline: &offline,
        };
        assert_eq!(
            text(ToAgent::Assigned(&full).to_bytes()),
            expect(
                r#"{"agent":"Ada","conversation":"c_AQEBAQEBAQEBAQEB","items":{ITEMS},"lang":"en","offline":[{"at_ms":99,"email":"v@example.com","text":"call me"}],"page":"https://shop.example/cart","preview":"{PREVIEW}","reason":"the visitor asked for a \"person\"","referrer":"https://ref.example/?q=<x>&y=é","site":"shop","state":"assigned","type":"assigned","waiting_since_ms":5}"#
            )
        );
        assert_eq!(
            text(ToAgent::Transcript(&full).to_bytes()),
            expect(
                r#"{"agent":"Ada","conversation":"c_AQEBAQEBAQEBAQEB","items":{ITEMS},"lang":"en","offline":[{"at_ms":99,"email":"v@example.com","text":"call me"}],"page":"https://shop.example/cart","preview":"{PREVIEW}","reason":"the visitor asked for a \"person\"","referrer":"https://ref.example/?q=<x>&y=é","site":"shop","state":"assigned","type":"transcript","waiting_since_ms":5}"#
            )
        );

        // Conversations only the store has: what it does not know is null.
        // The HTTP API answers with the same, without a `type`.
        for (n, ended, state, http, want) in [
            (
                7,
                true,
                CardState::Ended,
                false,
                r#"{"conversation":"c_BwcHBwcHBwcHBwcH","items":{ITEMS},"lang":"en","offline":[{"at_ms":99,"email":"v@example.com","text":"call me"}],"page":null,"reason":"asked","referrer":"https://r.example/","site":"shop","state":"ended","type":"transcript","waiting_since_ms":1234}"#,
            ),
            (
                8,
                false,
                CardState::Idle,
                true,
                r#"{"conversation":"c_CAgICAgICAgICAgI","items":{ITEMS},"lang":"en","offline":[{"at_ms":99,"email":"v@example.com","text":"call me"}],"page":null,"reason":null,"referrer":"https://r.example/","site":"shop","state":"idle","waiting_since_ms":1234}"#,
            ),
        ] {
            let t = transcript(n, ended, ended);
            let (items, offline) = transcript_parts(&t);
            let full = FullCard {
                card: Card::Stored(stored(&t, state)),
                items: &items,
                offline: &offline,
            };
            let got = if http {
                serde_json::to_string(&Sorted(&full)).unwrap()
            } else {
                text(ToAgent::Transcript(&full).to_bytes())
            };
            assert_eq!(got, expect(want));
        }
    }
}
