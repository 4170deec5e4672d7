//! Protocol v1 frames as loadgen writes and reads them: `hello`, `message`
//! and close out (masked, as a client must); the server frames that carry
//! figures (`welcome`, `ack`, `token`, `done`, `error`) in, parsed in place
//! with simd-json. Message ids are `m<N>`, unique within a session.

use std::borrow::Cow;

use serde::Deserialize;
use wire::ws::frame::{encode_close, encode_frame};
use wire::ws::OpCode;

/// Appends a masked `hello` frame.
pub fn encode_hello(out: &mut Vec<u8>, mask: [u8; 4]) {
    encode_frame(out, OpCode::Text, HELLO_JSON, Some(mask));
}

/// A text ready to go in a `message`: its JSON string literal, quotes included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    /// Escapes `s` once, so sending it is a copy.
    pub fn new(s: &str) -> Text {
        Text(serde_json::to_string(s).expect("a string always serializes"))
    }
}

/// Appends a masked `message` frame with id `m<n>`; `scratch` is reused to
/// build the payload.
pub fn encode_message(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    n: u64,
    text: &Text,
    mask: [u8; 4],
) {
    scratch.clear();
    message_json(scratch, n, text);
    encode_frame(out, OpCode::Text, scratch, Some(mask));
}

/// Appends the JSON of a `message` with id `m<n>` (no framing: the
/// long-polling transport sends it in a JSON array).
pub fn message_json(out: &mut Vec<u8>, n: u64, text: &Text) {
    use std::io::Write;
    let _ = write!(out, r#"{{"type":"message","id":"m{n}","text":{}}}"#, text.0);
}

/// The JSON of the `hello` every session starts with.
pub const HELLO_JSON: &[u8] = br#"{"type":"hello","lang":"en","page":"/loadgen"}"#;

/// Appends a masked normal-closure frame.
pub fn encode_goodbye(out: &mut Vec<u8>, mask: [u8; 4]) {
    encode_close(out, wire::ws::close::NORMAL, "loadgen done", Some(mask));
}

/// Appends a masked `human`: the visitor asks for a person.
pub fn encode_human(out: &mut Vec<u8>, reason: Option<&str>, mask: [u8; 4]) {
    let json = match reason {
        Some(r) => serde_json::json!({"type": "human", "reason": r}),
        None => serde_json::json!({"type": "human"}),
    };
    encode_frame(out, OpCode::Text, json.to_string().as_bytes(), Some(mask));
}

/// Appends a masked `csat` rating of 1-5.
pub fn encode_csat(out: &mut Vec<u8>, score: u8, mask: [u8; 4]) {
    let json = format!(r#"{{"type":"csat","score":{score}}}"#);
    encode_frame(out, OpCode::Text, json.as_bytes(), Some(mask));
}

/// Appends a masked pong answering a ping.
pub fn encode_pong(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    encode_frame(out, OpCode::Pong, payload, Some(mask));
}

/// The id number of `m<N>`, or `None` for an id loadgen did not make.
pub fn parse_id(id: &str) -> Option<u64> {
    id.strip_prefix('m')?.parse().ok()
}

/// A server frame, reduced to what attributes figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// Session ready; `resumed` when an earlier session was taken up again.
    Welcome {
        /// The server resumed the session the cookie named.
        resumed: bool,
    },
    /// A message stored; `id` is the client's id number.
    Ack(Option<u64>),
    /// A piece of a reply to message `in_reply_to`.
    Token(Option<u64>),
    /// A reply complete.
    Done(Option<u64>),
    /// An error, about message `id` if it names one.
    Error {
        /// Wire code.
        code: String,
        /// The message it concerns.
        id: Option<u64>,
        /// Wait asked for before resending.
        retry_after_ms: Option<u64>,
    },
    /// Any other type (`pong`, `typing`, `agent`, ...): carries no figure.
    Other,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    in_reply_to: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
    #[serde(default)]
    resumed: bool,
}

/// Parses a server text frame in place (simd-json rewrites the buffer).
pub fn parse_server(payload: &mut [u8]) -> Result<ServerFrame, String> {
    let raw: Raw<'_> = simd_json::serde::from_slice(payload).map_err(|e| e.to_string())?;
    let id = |v: &Option<Cow<'_, str>>| v.as_deref().and_then(parse_id);
    Ok(match raw.kind.as_ref() {
        "welcome" => ServerFrame::Welcome {
            resumed: raw.resumed,
        },
        "ack" => ServerFrame::Ack(id(&raw.id)),
        "token" => ServerFrame::Token(id(&raw.in_reply_to)),
        "done" => ServerFrame::Done(id(&raw.in_reply_to)),
        "error" => ServerFrame::Error {
            code: raw.code.map(Cow::into_owned).unwrap_or_default(),
            id: id(&raw.id),
            retry_after_ms: raw.retry_after_ms,
        },
        _ => ServerFrame::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::ws::frame::{apply_mask, parse_header};

    fn unmask(frame: &[u8]) -> Vec<u8> {
        let h = parse_header(frame, true, 1 << 20).unwrap().unwrap();
        let mut p = frame[h.header_len..].to_vec();
        apply_mask(&mut p, h.mask.unwrap());
        p
    }

    #[test]
    fn message_frames_are_masked_json() {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        encode_message(
            &mut out,
            &mut scratch,
            42,
            &Text::new("say \"hi\"\n"),
            [1, 2, 3, 4],
        );
        let v: serde_json::Value = serde_json::from_slice(&unmask(&out)).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["id"], "m42");
        assert_eq!(v["text"], "say \"hi\"\n");
        out.clear();
        encode_hello(&mut out, [9, 9, 9, 9]);
        let v: serde_json::Value = serde_json::from_slice(&unmask(&out)).unwrap();
        assert_eq!(v["type"], "hello");
    }

    #[test]
    fn parses_every_frame_that_carries_a_figure() {
        let p = |s: &str| parse_server(&mut s.as_bytes().to_vec()).unwrap();
        assert_eq!(
            p(
                r##"{"type":"welcome","conversation":"c1","resumed":false,"history":[{"seq":1,"from":"ai","text":"x","ts":1,"sources":[{"chunk":"a","score":0.5}]}],"config":{"theme":{"color":"#fff"},"triggers":[]}}"##
            ),
            ServerFrame::Welcome { resumed: false }
        );
        assert_eq!(
            p(r#"{"type":"welcome","conversation":"c1","resumed":true,"history":[],"config":{}}"#),
            ServerFrame::Welcome { resumed: true }
        );
        assert_eq!(
            p(r#"{"type":"ack","id":"m7","seq":3}"#),
            ServerFrame::Ack(Some(7))
        );
        assert_eq!(
            p(r#"{"type":"token","reply":"r1","in_reply_to":"m7","text":"Hel\"lo"}"#),
            ServerFrame::Token(Some(7))
        );
        assert_eq!(
            p(
                r#"{"seq":4,"type":"done","reply":"r1","in_reply_to":"m7","sources":[],"confidence":0.9}"#
            ),
            ServerFrame::Done(Some(7))
        );
        assert_eq!(
            p(
                r#"{"type":"error","code":"busy","message":"over capacity","id":"m8","retry_after_ms":250}"#
            ),
            ServerFrame::Error {
                code: "busy".into(),
                id: Some(8),
                retry_after_ms: Some(250)
            }
        );
        assert_eq!(
            p(r#"{"type":"ack","id":"client-1","seq":3}"#),
            ServerFrame::Ack(None)
        );
        assert_eq!(p(r#"{"type":"pong","id":"p1"}"#), ServerFrame::Other);
        assert!(parse_server(&mut b"not json".to_vec()).is_err());
        assert!(parse_server(&mut br#"{"id":"m1"}"#.to_vec()).is_err());
    }
}
