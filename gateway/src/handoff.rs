//! What a visitor's session and the agent desk tell each other: the events of
//! a hand-off to a person and of the conversation the person then holds.
//!
//! Both sides depend on this module and not on each other, so the session
//! core builds without the desk and the desk without the session.

use serde_json::Value;

use crate::ids::{AgentId, ConversationId, SessionKey};

/// A visitor session's news for the desk.
#[derive(Debug, Clone, PartialEq)]
pub enum VisitorEvent {
    /// The conversation needs a person.
    NeedsHuman {
        /// The conversation.
        conv: ConversationId,
        /// Its session (which worker owns it).
        key: SessionKey,
        /// Its site.
        site: String,
        /// Why.
        reason: String,
        /// The visitor's language tag.
        lang: Option<String>,
        /// The page the widget is on.
        page: Option<String>,
        /// That page's referrer.
        referrer: Option<String>,
        /// The visitor's latest message.
        preview: Option<String>,
        /// The skill a site rule asks for.
        skill: Option<String>,
    },
    /// A new transcript item (JSON in the shape of `history` items).
    Item {
        /// The conversation.
        conv: ConversationId,
        /// The item.
        item: Value,
    },
    /// The visitor is typing.
    Typing {
        /// The conversation.
        conv: ConversationId,
    },
    /// An agent's message is stored under `seq`.
    AgentMessageStored {
        /// The conversation.
        conv: ConversationId,
        /// The agent.
        agent: AgentId,
        /// The agent's message id.
        id: String,
        /// Its place in the transcript.
        seq: u64,
    },
    /// An agent's message could not be delivered.
    AgentMessageFailed {
        /// The conversation.
        conv: ConversationId,
        /// The agent.
        agent: AgentId,
        /// The agent's message id.
        id: String,
        /// Why.
        error: String,
    },
}

/// What the desk tells a visitor session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Waiting, at this 1-based position in the site's line.
    Queued {
        /// Position.
        position: u32,
    },
    /// An agent holds the conversation.
    Joined {
        /// The agent's name.
        name: String,
    },
    /// The agent let go; the AI answers again.
    Left {
        /// The agent's name.
        name: String,
    },
    /// Nobody can take the conversation.
    NoneAvailable,
    /// The agent wrote.
    AgentMessage {
        /// The conversation.
        conv: ConversationId,
        /// The agent.
        agent: AgentId,
        /// Their name.
        name: String,
        /// The agent's message id.
        id: String,
        /// The text.
        text: String,
    },
    /// The agent is typing.
    AgentTyping {
        /// Their name.
        name: String,
    },
    /// The conversation ended.
    End {
        /// Why (`resolved`).
        reason: &'static str,
    },
}
