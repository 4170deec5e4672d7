//! The agent WebSocket's frames (docs/protocol.md, "Agent desk"): what an
//! agent sends, parsed with serde, and the small builders of what it gets.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

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
        to: u64,
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

/// Parses a frame; the error is the code and message for an `error` frame.
pub fn parse(text: &[u8]) -> Result<AgentMsg, (&'static str, String)> {
    match serde_json::from_slice::<AgentMsg>(text) {
        Ok(AgentMsg::Unknown) => {
            // Rare: read the frame again only to name the type.
            let ty = serde_json::from_slice::<Value>(text)
                .ok()
                .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default();
            Err(("unknown_type", format!("unknown frame type '{ty}'")))
        }
        Ok(m) => Ok(m),
        Err(e) => Err(("bad_request", format!("invalid frame: {e}"))),
    }
}

/// A frame as bytes.
pub fn frame(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// An `error` frame.
pub fn error(code: &str, message: &str, conversation: Option<&str>, id: Option<&str>) -> Bytes {
    let mut v = json!({"type": "error", "code": code, "message": message});
    if let Some(c) = conversation {
        v["conversation"] = json!(c);
    }
    if let Some(i) = id {
        v["id"] = json!(i);
    }
    frame(&v)
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

/// A transcript's items and offline messages as JSON.
pub fn transcript_parts(t: &Transcript) -> (Vec<Value>, Vec<Value>) {
    let items = t.items.iter().map(item).collect();
    let offline = t
        .offline
        .iter()
        .map(|o| json!({"email": o.email, "text": o.text, "at_ms": o.at_ms}))
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
                to: 3
            })
        );
        assert_eq!(parse(br#"{"type":"dance"}"#).unwrap_err().0, "unknown_type");
        assert_eq!(parse(br#"{"type":"take"}"#).unwrap_err().0, "bad_request");
        assert_eq!(parse(b"not json").unwrap_err().0, "bad_request");
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
}
