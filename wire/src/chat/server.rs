//! Server-to-client messages of protocol v1, serialized once to JSON and then
//! shared by every socket and poller of the session.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ErrorCode;

/// Who wrote a transcript item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    /// The website visitor.
    Visitor,
    /// The AI answerer.
    Ai,
    /// A human agent.
    Agent,
}

/// A knowledge-base passage an AI reply drew on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Chunk id.
    pub chunk: String,
    /// Document title.
    pub title: String,
    /// Document URL, or path relative to the ingested folder.
    pub url: String,
    /// Retrieval score, higher is better.
    pub score: f32,
}

/// One complete item of a conversation, as `welcome`'s `history` carries it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Position in the conversation, from 1.
    pub seq: u64,
    /// Author.
    pub from: Author,
    /// Text.
    pub text: String,
    /// Milliseconds since the Unix epoch when the item was stored.
    pub ts: u64,
    /// The client's id (visitor messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Reply id (AI replies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Sources (AI replies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Source>>,
    /// Agent's display name (agent messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A reply still streaming when a socket joins: its text so far, so the new
/// socket can show it before the next `token` (an extension of `welcome`).
#[derive(Debug, Clone, Serialize)]
pub struct Streaming<'a> {
    /// Reply id.
    pub reply: &'a str,
    /// The visitor message it answers.
    pub in_reply_to: &'a str,
    /// Text streamed so far.
    pub text: &'a str,
}

/// Hand-off progress events of the `agent` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEvent {
    /// Waiting for a person; `position` tells where in the queue.
    Queued,
    /// A person took the conversation.
    Joined,
    /// The person left.
    Left,
    /// Nobody is available.
    NoneAvailable,
    /// The visitor's `leave_message` is stored (extension).
    MessageLeft,
}

/// Where a hand-off to a person stands, as `welcome` tells a client that
/// (re)connects (an extension; absent while the AI answers). The `agent`
/// events that said so may have gone to a page the visitor has since left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handoff {
    /// A person is asked for: the conversation is in the queue or offered.
    Waiting,
    /// An agent holds the conversation.
    Held,
}

/// One server message.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    /// Session ready.
    Welcome {
        /// Public conversation id (never the session token).
        conversation: &'a str,
        /// Whether an existing session was resumed.
        resumed: bool,
        /// The last complete items, ascending `seq`.
        history: &'a [Item],
        /// The site's widget configuration.
        config: &'a RawValue,
        /// Replies still streaming (extension).
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        streaming: &'a [Streaming<'a>],
        /// A person asked for or holding the conversation (extension).
        #[serde(skip_serializing_if = "Option::is_none")]
        handoff: Option<Handoff>,
    },
    /// The message is stored.
    Ack {
        /// The client's id.
        id: &'a str,
        /// Its position in the conversation.
        seq: u64,
    },
    /// One streamed piece of an answer.
    Token {
        /// Reply id.
        reply: &'a str,
        /// The client message answered.
        in_reply_to: &'a str,
        /// The piece.
        text: &'a str,
    },
    /// The answer is complete and stored.
    Done {
        /// Reply id.
        reply: &'a str,
        /// The client message answered.
        in_reply_to: &'a str,
        /// The reply's position in the conversation.
        seq: u64,
        /// Passages the answer drew on, best first.
        sources: &'a [Source],
        /// 0 to 1.
        confidence: f32,
    },
    /// A human agent wrote.
    Message {
        /// Position in the conversation.
        seq: u64,
        /// Always `agent`.
        from: Author,
        /// Agent's display name.
        name: &'a str,
        /// Text.
        text: &'a str,
    },
    /// The agent is typing.
    Typing {
        /// Always `agent`.
        from: Author,
        /// Agent's display name.
        name: &'a str,
    },
    /// Hand-off progress.
    Agent {
        /// What happened.
        event: AgentEvent,
        /// 1-based queue position.
        #[serde(skip_serializing_if = "Option::is_none")]
        position: Option<u32>,
        /// Agent's display name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    },
    /// The conversation ended.
    Ended {
        /// `resolved`, `timeout`, ...
        reason: &'a str,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's id.
        id: &'a str,
    },
    /// A refusal or failure.
    Error {
        /// Error code.
        code: ErrorCode,
        /// A sentence the client developer can act on.
        message: &'a str,
        /// The offending message's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// When to try again.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl ServerMsg<'_> {
    /// The JSON text of this message.
    pub fn to_bytes(&self) -> Bytes {
        // Serializing these types cannot fail: no maps with non-string keys, no
        // fallible Serialize impls. An empty object is still valid JSON if it did.
        Bytes::from(serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let ack = ServerMsg::Ack { id: "m1", seq: 3 }.to_bytes();
        assert_eq!(&ack[..], br#"{"type":"ack","id":"m1","seq":3}"#);
        let err = ServerMsg::Error {
            code: ErrorCode::RateLimited,
            message: "slow down",
            id: Some("m2"),
            retry_after_ms: Some(250),
        }
        .to_bytes();
        assert_eq!(
            &err[..],
            br#"{"type":"error","code":"rate_limited","message":"slow down","id":"m2","retry_after_ms":250}"#
        );
        let cfg = RawValue::from_string(r#"{"theme":{}}"#.into()).unwrap();
        let item = Item {
            seq: 1,
            from: Author::Visitor,
            text: "hi".into(),
            ts: 5,
            id: Some("m1".into()),
            reply: None,
            sources: None,
            name: None,
        };
        let w = ServerMsg::Welcome {
            conversation: "c1",
            resumed: false,
            history: &[item],
            config: &cfg,
            streaming: &[],
            handoff: None,
        }
        .to_bytes();
        assert_eq!(
            std::str::from_utf8(&w).unwrap(),
            r#"{"type":"welcome","conversation":"c1","resumed":false,"history":[{"seq":1,"from":"visitor","text":"hi","ts":5,"id":"m1"}],"config":{"theme":{}}}"#
        );
        let held = ServerMsg::Welcome {
            conversation: "c1",
            resumed: true,
            history: &[],
            config: &cfg,
            streaming: &[],
            handoff: Some(Handoff::Held),
        }
        .to_bytes();
        assert!(std::str::from_utf8(&held)
            .unwrap()
            .ends_with(r#""config":{"theme":{}},"handoff":"held"}"#));
    }
}
