//! What the store keeps and hands back: plain types over the shared ids
//! ([`crate::ids`]), so the store needs nothing else of the gateway.

use std::collections::HashMap;
use std::fmt;

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::ids::{ConversationId, SessionKey};

// A conversation id is stored as its 12 bytes (a BLOB), so the schema's
// keys stay compact and compare as bytes.
impl ToSql for ConversationId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Blob(self.as_bytes())))
    }
}

impl FromSql for ConversationId {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let b = <[u8; 12]>::column_result(v)?;
        Ok(ConversationId::from_bytes(b))
    }
}

/// Who wrote an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Author {
    /// The website's visitor.
    Visitor,
    /// The AI answerer.
    Ai,
    /// A human agent.
    Agent,
}

impl Author {
    /// The name stored in the `items.author` column (and used on the wire).
    pub fn as_str(self) -> &'static str {
        match self {
            Author::Visitor => "visitor",
            Author::Ai => "ai",
            Author::Agent => "agent",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "visitor" => Some(Author::Visitor),
            "ai" => Some(Author::Ai),
            "agent" => Some(Author::Agent),
            _ => None,
        }
    }
}

/// One item of a conversation: a visitor's message, an AI reply or an agent's
/// message, with what is known about how it was produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredItem {
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// Position in the conversation, from 1; unique per conversation.
    pub seq: u64,
    /// Who wrote it.
    pub author: Author,
    /// Its text (for a reply, the complete text).
    pub text: String,
    /// Milliseconds since the Unix epoch when it was stored.
    pub ts_ms: u64,
    /// The visitor's message id (visitor messages); unique per conversation,
    /// so a resend is stored once.
    pub client_id: Option<String>,
    /// Reply id (AI replies).
    pub reply_id: Option<String>,
    /// The visitor's message id this replies to (AI replies).
    pub in_reply_to: Option<String>,
    /// The sources as a JSON array, as the gateway serialized them (AI replies).
    pub sources_json: Option<String>,
    /// The answerer's confidence, 0 to 1 (AI replies).
    pub confidence: Option<f32>,
    /// Time to first token in milliseconds (AI replies).
    pub ttft_ms: Option<u32>,
    /// Time to the complete reply in milliseconds (AI replies).
    pub total_ms: Option<u32>,
    /// The agent's display name (agent messages).
    pub agent_name: Option<String>,
}

impl StoredItem {
    /// An item with only the fields every item has; set the others as needed.
    pub fn new(
        conversation: ConversationId,
        seq: u64,
        author: Author,
        text: impl Into<String>,
        ts_ms: u64,
    ) -> Self {
        StoredItem {
            conversation,
            seq,
            author,
            text: text.into(),
            ts_ms,
            client_id: None,
            reply_id: None,
            in_reply_to: None,
            sources_json: None,
            confidence: None,
            ttft_ms: None,
            total_ms: None,
            agent_name: None,
        }
    }
}

/// What the visitor's `hello` said about where the widget is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageInfo {
    /// The visitor's language tag.
    pub lang: Option<String>,
    /// The page the widget is on.
    pub page: Option<String>,
    /// That page's referrer.
    pub referrer: Option<String>,
}

/// A state a conversation entered, with why and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Why (a short code such as `resolved`, or the visitor's words).
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The human agent a conversation is assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The agent's name.
    pub agent: String,
    /// When the agent was assigned, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The visitor's rating of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsatRating {
    /// 1 to 5.
    pub score: u8,
    /// The visitor's comment.
    pub comment: Option<String>,
}

/// A conversation's own state, without its items.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationState {
    /// Public id.
    pub id: ConversationId,
    /// The site it belongs to.
    pub site: String,
    /// When it started, milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Where the visitor was.
    pub page: PageInfo,
    /// Set once the conversation asked for a person.
    pub needs_human: Option<Mark>,
    /// The agent holding it, if any.
    pub assigned: Option<Assignment>,
    /// Set once it ended; a later message opens a new conversation.
    pub ended: Option<Mark>,
    /// The visitor's rating, if given.
    pub csat: Option<CsatRating>,
}

/// A session as a restarted gateway resumes it: its current (newest)
/// conversation with the most recent items.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    /// The site the session belongs to.
    pub site: String,
    /// When the session was created, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the session was last seen, milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
    /// The current conversation.
    pub conversation: ConversationState,
    /// Its last `history_limit` items, in ascending `seq`.
    pub items: Vec<StoredItem>,
    /// The `seq` the next item gets (1 for an empty conversation).
    pub next_seq: u64,
    /// Every visitor message id of the conversation and its `seq`, so a resend
    /// after a restart gets its original `ack` again.
    pub client_ids: HashMap<String, u64>,
}

/// One line of the agents' conversation list.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationSummary {
    /// The conversation.
    pub conversation: ConversationState,
    /// How many items it has.
    pub items: u64,
    /// When its newest item was stored (None without items).
    pub last_item_ms: Option<u64>,
}

impl ConversationSummary {
    /// The cursor that asks for the page after this line.
    pub fn cursor(&self) -> PageCursor {
        PageCursor {
            started_ms: self.conversation.started_ms,
            conversation: self.conversation.id,
        }
    }
}

/// Where a page of [`ConversationSummary`] continues: conversations strictly
/// older than this one (by start time, then id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    /// Start time of the last conversation already shown.
    pub started_ms: u64,
    /// Its id.
    pub conversation: ConversationId,
}

/// A message a visitor left for a person when no agent was available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Where to answer.
    pub email: String,
    /// What the visitor wrote.
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// A whole conversation, for an agent reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The conversation's state.
    pub conversation: ConversationState,
    /// Every item, in ascending `seq`.
    pub items: Vec<StoredItem>,
    /// Messages left while no agent was available, oldest first.
    pub offline: Vec<OfflineMessage>,
}

/// An agent account as stored (the desk owns its meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAgent {
    /// Account id, chosen by the desk (1, 2, ...).
    pub id: u64,
    /// Display name, shown to visitors.
    pub name: String,
    /// `agent`, `supervisor` or `admin`.
    pub role: String,
    /// Language tags the agent speaks.
    pub languages: Vec<String>,
    /// Skills (free-form tags such as `billing`).
    pub skills: Vec<String>,
    /// Most conversations held at once.
    pub capacity: u32,
    /// Sites the agent serves.
    pub sites: Vec<String>,
    /// SHA-256 of the agent's API token.
    pub token_hash: [u8; 32],
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// A canned reply of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedReply {
    /// The site.
    pub site: String,
    /// What the agent types to find it (`/shipping`, say, without the slash).
    pub shortcut: String,
    /// The reply.
    pub text: String,
}

/// What the agent desk loads at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeskDirectory {
    /// Every agent account, by id.
    pub agents: Vec<StoredAgent>,
    /// Every canned reply, by site and shortcut.
    pub canned: Vec<CannedReply>,
}

/// One logical change to the store, applied atomically.
///
/// `Debug` never shows a session key.
#[derive(Clone, PartialEq)]
pub enum Write {
    /// A new session and its first conversation.
    SessionCreated {
        /// The session token.
        key: SessionKey,
        /// Its first conversation.
        conversation: ConversationId,
        /// The site.
        site: String,
        /// Milliseconds since the Unix epoch.
        created_ms: u64,
    },
    /// The session was seen (a client message or a reconnect).
    SessionSeen {
        /// The session token.
        key: SessionKey,
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A new conversation in an existing session (the previous one ended).
    /// It inherits the previous conversation's page info.
    ConversationOpened {
        /// The session token.
        key: SessionKey,
        /// The new conversation.
        conversation: ConversationId,
        /// The site.
        site: String,
        /// Milliseconds since the Unix epoch.
        started_ms: u64,
    },
    /// What the visitor's `hello` said about the page.
    PageInfo {
        /// The conversation.
        conversation: ConversationId,
        /// The visitor's language tag.
        lang: Option<String>,
        /// The page the widget is on.
        page: Option<String>,
        /// That page's referrer.
        referrer: Option<String>,
    },
    /// An item. A visitor item whose (conversation, client id) is already
    /// stored is a resend: it is not stored again and reports success.
    Item(StoredItem),
    /// The conversation asks for a person.
    NeedsHuman {
        /// The conversation.
        conversation: ConversationId,
        /// Why.
        reason: String,
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A human agent took the conversation (`Some`) or left it (`None`).
    Assigned {
        /// The conversation.
        conversation: ConversationId,
        /// The agent's name.
        agent: Option<String>,
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// The conversation ended.
    Ended {
        /// The conversation.
        conversation: ConversationId,
        /// Why (`resolved`, `timeout`, ...).
        reason: String,
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// The visitor rated the conversation (a later rating replaces it).
    Csat {
        /// The conversation.
        conversation: ConversationId,
        /// 1 to 5.
        score: u8,
        /// The visitor's comment.
        comment: Option<String>,
    },
    /// A message left for a person when no agent was available.
    OfflineMessage {
        /// The conversation.
        conversation: ConversationId,
        /// Where to answer.
        email: String,
        /// What the visitor wrote.
        text: String,
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// An agent account made or changed (by id).
    AgentSaved(StoredAgent),
    /// An agent account removed.
    AgentDeleted {
        /// Its id.
        id: u64,
    },
    /// A canned reply made or changed (by site and shortcut).
    CannedSaved(CannedReply),
    /// A canned reply removed.
    CannedDeleted {
        /// The site.
        site: String,
        /// Its shortcut.
        shortcut: String,
    },
}

impl Write {
    /// The variant's name, for logs and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Write::SessionCreated { .. } => "SessionCreated",
            Write::SessionSeen { .. } => "SessionSeen",
            Write::ConversationOpened { .. } => "ConversationOpened",
            Write::PageInfo { .. } => "PageInfo",
            Write::Item(_) => "Item",
            Write::NeedsHuman { .. } => "NeedsHuman",
            Write::Assigned { .. } => "Assigned",
            Write::Ended { .. } => "Ended",
            Write::Csat { .. } => "Csat",
            Write::OfflineMessage { .. } => "OfflineMessage",
            Write::AgentSaved(_) => "AgentSaved",
            Write::AgentDeleted { .. } => "AgentDeleted",
            Write::CannedSaved(_) => "CannedSaved",
            Write::CannedDeleted { .. } => "CannedDeleted",
        }
    }

    /// The conversation the write concerns, if it names one.
    pub fn conversation(&self) -> Option<&ConversationId> {
        match self {
            Write::SessionSeen { .. }
            | Write::AgentSaved(_)
            | Write::AgentDeleted { .. }
            | Write::CannedSaved(_)
            | Write::CannedDeleted { .. } => None,
            Write::SessionCreated { conversation, .. }
            | Write::ConversationOpened { conversation, .. }
            | Write::PageInfo { conversation, .. }
            | Write::NeedsHuman { conversation, .. }
            | Write::Assigned { conversation, .. }
            | Write::Ended { conversation, .. }
            | Write::Csat { conversation, .. }
            | Write::OfflineMessage { conversation, .. } => Some(conversation),
            Write::Item(item) => Some(&item.conversation),
        }
    }
}

impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Session keys are bearer secrets: show which write it is and what it
        // concerns, never the key.
        match self {
            Write::Item(item) => f.debug_tuple("Item").field(item).finish(),
            // The token hash stays out of logs too.
            Write::AgentSaved(a) => f
                .debug_struct("AgentSaved")
                .field("id", &a.id)
                .field("name", &a.name)
                .finish_non_exhaustive(),
            other => {
                let mut d = f.debug_struct(other.kind());
                if let Some(c) = other.conversation() {
                    d.field("conversation", c);
                }
                d.finish_non_exhaustive()
            }
        }
    }
}
