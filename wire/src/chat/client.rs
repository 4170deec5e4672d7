//! Client-to-server messages of protocol v1, parsed from JSON with simd-json.
//!
//! Parsing is strict about what the contract requires (a `type`, the fields
//! each type needs) and lenient about the rest (unknown fields are ignored),
//! and every refusal names the field and echoes the message's `id` when it has
//! one, so the client can tell which of its messages was refused.

use std::cell::RefCell;

use simd_json::prelude::*;
use simd_json::tape::{Tape, Value};
use simd_json::Buffers;

use super::ErrorCode;

/// Longest message id, in bytes (PROTOCOL.md: a string of 1-64 chars).
pub const MAX_ID_LEN: usize = 64;
/// Longest optional text field other than `text` (page, referrer, reason, comment).
pub const MAX_META_LEN: usize = 2048;

/// What the visitor's `hello` says about the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// Preferred language (BCP 47 tag as sent).
    pub lang: Option<String>,
    /// URL of the page the widget is on.
    pub page: Option<String>,
    /// Referrer of that page.
    pub referrer: Option<String>,
}

/// One client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    /// First frame; answered by `welcome`.
    Hello(Hello),
    /// A visitor's chat message.
    Message {
        /// The client's id, unique in the session.
        id: String,
        /// The text.
        text: String,
    },
    /// Liveness probe, answered by `pong` at once.
    Ping {
        /// Echoed in the `pong`.
        id: String,
    },
    /// The visitor is typing.
    Typing,
    /// The visitor asks for a person.
    Human {
        /// Why, in the visitor's words.
        reason: Option<String>,
    },
    /// A message for a person, left when nobody was available (extension).
    LeaveMessage {
        /// Where to answer.
        email: String,
        /// What the visitor wrote.
        text: String,
    },
    /// Rating of the conversation just ended.
    Csat {
        /// 1 to 5.
        score: u8,
        /// Free text.
        comment: Option<String>,
    },
}

/// A refused client message, answered with an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// Protocol error code.
    pub code: ErrorCode,
    /// A sentence the client developer can act on.
    pub message: String,
    /// The offending message's `id`, when it had a usable one.
    pub id: Option<String>,
}

impl ClientError {
    fn bad(message: impl Into<String>, id: Option<&str>) -> Self {
        ClientError {
            code: ErrorCode::BadRequest,
            message: message.into(),
            id: id.map(str::to_owned),
        }
    }
}

/// simd-json's working memory, kept per thread so a parse allocates nothing
/// but the strings it returns.
struct Scratch {
    buffers: Buffers,
    /// An empty tape, kept for its allocation.
    tape: Option<Tape<'static>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        buffers: Buffers::new(1024),
        tape: None,
    });
}

/// Parses `buf` in place onto a reused tape and hands its root value to `f`.
fn with_tape<R>(
    buf: &mut [u8],
    what: &str,
    f: impl FnOnce(Value<'_, '_>) -> Result<R, ClientError>,
) -> Result<R, ClientError> {
    SCRATCH.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let Scratch { buffers, tape } = &mut *scratch;
        let mut t: Tape<'_> = tape.take().unwrap_or_else(Tape::null).reset();
        let r = match simd_json::fill_tape(buf, buffers, &mut t) {
            Ok(()) => f(t.as_value()),
            Err(e) => Err(ClientError::bad(
                format!("{what} is not valid JSON: {e}"),
                None,
            )),
        };
        *tape = Some(t.reset());
        r
    })
}

/// Parses one JSON text frame. The buffer is parsed in place (simd-json).
pub fn parse(buf: &mut [u8], max_text: usize) -> Result<ClientMsg, ClientError> {
    with_tape(buf, "frame", |v| from_value(v, max_text))
}

/// Parses the body of `POST /poll/send`: a JSON array of client messages.
///
/// The array itself must parse; each element is then judged on its own so that
/// one bad message does not cost the others.
pub fn parse_batch(
    buf: &mut [u8],
    max_text: usize,
) -> Result<Vec<Result<ClientMsg, ClientError>>, ClientError> {
    with_tape(buf, "body", |v| {
        let arr = v
            .as_array()
            .ok_or_else(|| ClientError::bad("body must be a JSON array of messages", None))?;
        Ok(arr.iter().map(|v| from_value(v, max_text)).collect())
    })
}

/// Interprets one parsed JSON value as a client message.
fn from_value(v: Value<'_, '_>, max_text: usize) -> Result<ClientMsg, ClientError> {
    let obj = v
        .as_object()
        .ok_or_else(|| ClientError::bad("a message must be a JSON object", None))?;
    // The id is read first so that every later refusal can carry it.
    // Tape values are views: keep them in locals so their strings can be borrowed.
    let raw_id = obj.get("id");
    let id_str = raw_id.as_ref().and_then(|v| v.as_str());
    let usable_id = id_str.filter(|s| valid_id(s));
    let ty_value = obj.get("type");
    let ty = match &ty_value {
        Some(t) => t
            .as_str()
            .ok_or_else(|| ClientError::bad("field 'type' must be a string", usable_id))?,
        None => return Err(ClientError::bad("missing field 'type'", usable_id)),
    };
    let opt = |name: &str| -> Result<Option<String>, ClientError> {
        match obj.get(name) {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) if s.len() <= MAX_META_LEN => Ok(Some(s.to_owned())),
                Some(_) => Err(ClientError::bad(
                    format!("field '{name}' is over {MAX_META_LEN} bytes"),
                    usable_id,
                )),
                None => Err(ClientError::bad(
                    format!("field '{name}' must be a string"),
                    usable_id,
                )),
            },
        }
    };
    let require_id = || -> Result<String, ClientError> {
        match (&raw_id, id_str) {
            (None, _) => Err(ClientError::bad(
                format!("'{ty}' needs an 'id' field"),
                None,
            )),
            (Some(_), Some(s)) if valid_id(s) => Ok(s.to_owned()),
            _ => Err(ClientError::bad(
                format!("field 'id' must be a string of 1-{MAX_ID_LEN} bytes"),
                None,
            )),
        }
    };
    match ty {
        "hello" => Ok(ClientMsg::Hello(Hello {
            lang: opt("lang")?,
            page: opt("page")?,
            referrer: opt("referrer")?,
        })),
        "message" => {
            let id = require_id()?;
            let text_value = obj.get("text");
            let text = match &text_value {
                None => {
                    return Err(ClientError::bad(
                        "'message' needs a 'text' field",
                        Some(&id),
                    ))
                }
                Some(t) => t
                    .as_str()
                    .ok_or_else(|| ClientError::bad("field 'text' must be a string", Some(&id)))?,
            };
            check_text(text, max_text, Some(&id))?;
            Ok(ClientMsg::Message {
                id,
                text: text.to_owned(),
            })
        }
        "ping" => Ok(ClientMsg::Ping { id: require_id()? }),
        "typing" => Ok(ClientMsg::Typing),
        "human" => Ok(ClientMsg::Human {
            reason: opt("reason")?,
        }),
        "csat" => {
            let score = obj
                .get("score")
                .and_then(|s| s.as_u64())
                .filter(|s| (1..=5).contains(s))
                .ok_or_else(|| {
                    ClientError::bad("field 'score' must be an integer from 1 to 5", usable_id)
                })?;
            Ok(ClientMsg::Csat {
                score: score as u8,
                comment: opt("comment")?,
            })
        }
        "leave_message" => {
            let field = |name: &str| -> Result<String, ClientError> {
                match obj.get(name).and_then(|v| v.as_str().map(str::to_owned)) {
                    Some(v) => Ok(v),
                    None => Err(ClientError::bad(
                        format!("'leave_message' needs a string '{name}'"),
                        usable_id,
                    )),
                }
            };
            let email = field("email")?;
            let text = field("text")?;
            if email.len() > 254 || !email.contains('@') || email.trim() != email {
                return Err(ClientError::bad(
                    "field 'email' must be an email address (at most 254 bytes)",
                    usable_id,
                ));
            }
            check_text(&text, max_text, usable_id)?;
            Ok(ClientMsg::LeaveMessage { email, text })
        }
        other => Err(ClientError {
            code: ErrorCode::UnknownType,
            message: format!("unknown message type '{}'", truncate(other, 64)),
            id: usable_id.map(str::to_owned),
        }),
    }
}

/// A visitor's text: within the chat message limit (`too_large`), not blank.
fn check_text(text: &str, max_text: usize, id: Option<&str>) -> Result<(), ClientError> {
    if text.len() > max_text {
        return Err(ClientError {
            code: ErrorCode::TooLarge,
            message: format!(
                "message text is {} bytes, over the limit of {max_text}",
                text.len()
            ),
            id: id.map(str::to_owned),
        });
    }
    if text.trim().is_empty() {
        return Err(ClientError::bad("field 'text' is empty", id));
    }
    Ok(())
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<ClientMsg, ClientError> {
        let mut b = s.as_bytes().to_vec();
        parse(&mut b, 100)
    }

    #[test]
    fn each_type_parses() {
        assert_eq!(
            p(r#"{"type":"hello","lang":"de","page":"https://shop/p","extra":1}"#),
            Ok(ClientMsg::Hello(Hello {
                lang: Some("de".into()),
                page: Some("https://shop/p".into()),
                referrer: None
            }))
        );
        assert_eq!(
            p(r#"{"type":"message","id":"m1","text":"hi \u00e9"}"#),
            Ok(ClientMsg::Message {
                id: "m1".into(),
                text: "hi é".into()
            })
        );
        assert_eq!(
            p(r#"{"type":"ping","id":"p"}"#),
            Ok(ClientMsg::Ping { id: "p".into() })
        );
        assert_eq!(p(r#"{"type":"typing"}"#), Ok(ClientMsg::Typing));
        assert_eq!(
            p(r#"{"type":"human"}"#),
            Ok(ClientMsg::Human { reason: None })
        );
        assert_eq!(
            p(r#"{"type":"csat","score":5,"comment":"great"}"#),
            Ok(ClientMsg::Csat {
                score: 5,
                comment: Some("great".into())
            })
        );
    }

    #[test]
    fn refusals_carry_code_and_id() {
        let e = p("not json").unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None));
        let e = p(r#"[1,2]"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = p(r#"{"id":"m9","text":"x"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::BadRequest, Some("m9"))
        );
        let e = p(r#"{"type":"dance","id":"m2"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::UnknownType, Some("m2"))
        );
        let e = p(r#"{"type":"message","id":"m3"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::BadRequest, Some("m3"))
        );
        assert!(e.message.contains("'text'"));
        let e = p(r#"{"type":"message","text":"x"}"#).unwrap_err();
        assert!(e.message.contains("'id'"));
        let e = p(r#"{"type":"message","id":42,"text":"x"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let long_id = "x".repeat(65);
        let e = p(&format!(
            r#"{{"type":"message","id":"{long_id}","text":"x"}}"#
        ))
        .unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::BadRequest, None));
        let e = p(r#"{"type":"csat","score":9}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn text_over_the_limit_is_too_large_with_id() {
        let text = "a".repeat(101);
        let e = p(&format!(
            r#"{{"type":"message","id":"big","text":"{text}"}}"#
        ))
        .unwrap_err();
        assert_eq!(
            (e.code, e.id.as_deref()),
            (ErrorCode::TooLarge, Some("big"))
        );
    }

    #[test]
    fn batch_judges_each_element() {
        let mut b = br#"[{"type":"ping","id":"a"},{"type":"nope"},{"type":"typing"}]"#.to_vec();
        let out = parse_batch(&mut b, 100).unwrap();
        assert_eq!(out.len(), 3);
        assert!(out[0].is_ok() && out[2].is_ok());
        assert_eq!(out[1].as_ref().unwrap_err().code, ErrorCode::UnknownType);
        let mut b = br#"{"type":"ping"}"#.to_vec();
        assert!(parse_batch(&mut b, 100).is_err());
    }
}
