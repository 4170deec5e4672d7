//! RFC 6455 message layer for one connection: fragmentation, control frames
//! interleaved with fragments, UTF-8 validation of text and close payloads.
//!
//! [`Receiver::feed`] takes the bytes read so far and reports each complete
//! message or control frame to a callback. An idle connection's receiver is one
//! pointer and a flag: the buffer of a fragmented message exists only while one
//! is in flight.

use thiserror::Error;

use super::close;
use super::frame::{apply_mask, parse_header, FrameError, OpCode};

/// Which end of the connection this receiver sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepts masked frames (the gateway).
    Server,
    /// Accepts unmasked frames (the load generator).
    Client,
}

/// Size limits for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload of one frame.
    pub max_frame: u64,
    /// Largest message once its fragments are joined.
    pub max_message: usize,
}

/// One complete message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A text message, already checked to be valid UTF-8. Mutable so that a
    /// JSON parser that works in place (simd-json) can use it.
    Text(&'a mut [u8]),
    /// A binary message.
    Binary(&'a mut [u8]),
    /// A ping; the peer expects a pong with the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame; no data follows it.
    Close(Option<CloseFrame<'a>>),
}

/// The payload of a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// Status code.
    pub code: u16,
    /// UTF-8 reason.
    pub reason: &'a str,
}

/// A violation that ends the connection, with the close code to send.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// The frame header itself is invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A fragmented message grew past the message size limit.
    #[error("message over the size limit of {0} bytes")]
    MessageTooLarge(usize),
    /// A text message or close reason is not valid UTF-8.
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// A continuation frame arrived with no message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was in progress.
    #[error("new message started before the fragmented one ended")]
    ExpectedContinuation,
    /// A close frame with a one-byte payload or a code that may not be sent.
    #[error("invalid close frame")]
    BadClose,
}

impl ProtocolError {
    /// The close code RFC 6455 prescribes for this violation.
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::Frame(FrameError::TooLarge { .. })
            | ProtocolError::MessageTooLarge(_) => close::TOO_BIG,
            ProtocolError::InvalidUtf8 => close::INVALID_PAYLOAD,
            _ => close::PROTOCOL_ERROR,
        }
    }
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    buf: Vec<u8>,
    /// Prefix of `buf` known to be whole, valid UTF-8 characters, so that each
    /// fragment is checked once and an invalid one fails at once.
    utf8_checked: usize,
}

impl Partial {
    /// Checks the bytes after `utf8_checked`; an incomplete character at the end
    /// is allowed unless this is the last fragment.
    fn check_utf8(&mut self, fin: bool) -> Result<(), ProtocolError> {
        if !self.text {
            return Ok(());
        }
        match simdutf8::compat::from_utf8(&self.buf[self.utf8_checked..]) {
            Ok(_) => {
                self.utf8_checked = self.buf.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !fin => {
                self.utf8_checked += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }
}

/// Receive state of one WebSocket connection.
#[derive(Debug, Default)]
pub struct Receiver {
    partial: Option<Box<Partial>>,
    closed: bool,
}

impl Receiver {
    /// Whether a close frame has been received (nothing after it is read).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether a fragmented message is being assembled.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes every whole frame at the front of `buf` (unmasking in place) and
    /// reports each complete message and control frame to `on_event`.
    ///
    /// Returns how many bytes were consumed; the rest is an incomplete frame the
    /// caller keeps and offers again with more bytes appended. After a close
    /// frame nothing more is consumed.
    pub fn feed<F>(
        &mut self,
        buf: &mut [u8],
        role: Role,
        limits: &Limits,
        mut on_event: F,
    ) -> Result<usize, ProtocolError>
    where
        F: FnMut(Event<'_>),
    {
        let mut pos = 0;
        while !self.closed {
            let Some(h) = parse_header(&buf[pos..], role == Role::Server, limits.max_frame)? else {
                break;
            };
            let frame_len = h.frame_len();
            if ((buf.len() - pos) as u64) < frame_len {
                break;
            }
            let start = pos + h.header_len;
            let end = pos + frame_len as usize;
            pos = end;
            let payload = &mut buf[start..end];
            if let Some(mask) = h.mask {
                apply_mask(payload, mask);
            }
            match h.opcode {
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ProtocolError::ExpectedContinuation);
                    }
                    let text = h.opcode == OpCode::Text;
                    if h.fin {
                        if text {
                            simdutf8::basic::from_utf8(payload)
                                .map_err(|_| ProtocolError::InvalidUtf8)?;
                            on_event(Event::Text(payload));
                        } else {
                            on_event(Event::Binary(payload));
                        }
                    } else {
                        if payload.len() > limits.max_message {
                            return Err(ProtocolError::MessageTooLarge(limits.max_message));
                        }
                        let mut p = Box::new(Partial {
                            text,
                            buf: payload.to_vec(),
                            utf8_checked: 0,
                        });
                        p.check_utf8(false)?;
                        self.partial = Some(p);
                    }
                }
                OpCode::Continuation => {
                    let Some(p) = self.partial.as_mut() else {
                        return Err(ProtocolError::UnexpectedContinuation);
                    };
                    if p.buf.len() + payload.len() > limits.max_message {
                        return Err(ProtocolError::MessageTooLarge(limits.max_message));
                    }
                    p.buf.extend_from_slice(payload);
                    p.check_utf8(h.fin)?;
                    if h.fin {
                        let mut p = self.partial.take().expect("checked above");
                        if p.text {
                            on_event(Event::Text(&mut p.buf));
                        } else {
                            on_event(Event::Binary(&mut p.buf));
                        }
                    }
                }
                OpCode::Ping => on_event(Event::Ping(payload)),
                OpCode::Pong => on_event(Event::Pong(payload)),
                OpCode::Close => {
                    self.closed = true;
                    let frame = parse_close(payload)?;
                    on_event(Event::Close(frame));
                }
            }
        }
        Ok(pos)
    }
}

/// Validates a close payload: empty, or a code that may be sent plus a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::BadClose),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close::is_sendable(code) {
                return Err(ProtocolError::BadClose);
            }
            let reason = simdutf8::basic::from_utf8(&payload[2..])
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{encode_frame, write_header, MAX_HEADER_LEN};
    use super::*;

    const LIMITS: Limits = Limits {
        max_frame: 1 << 20,
        max_message: 1 << 20,
    };

    /// What a test saw, owned so it outlives the callback.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<(u16, String)>),
    }

    fn frame(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = write_header(&mut hdr, fin, op, payload.len(), Some(mask));
        let mut out = hdr[..n].to_vec();
        let s = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[s..], mask);
        out
    }

    /// Feeds `bytes` split into pieces at `cut`, as a socket would deliver them,
    /// keeping unconsumed bytes like the I/O shell does.
    fn run(bytes: &[u8], cut: usize) -> (Vec<Seen>, Result<(), ProtocolError>) {
        let mut rx = Receiver::default();
        let mut seen = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for chunk in [&bytes[..cut], &bytes[cut..]] {
            pending.extend_from_slice(chunk);
            let r = rx.feed(&mut pending, Role::Server, &LIMITS, |e| {
                seen.push(match e {
                    Event::Text(t) => Seen::Text(String::from_utf8(t.to_vec()).unwrap()),
                    Event::Binary(b) => Seen::Binary(b.to_vec()),
                    Event::Ping(p) => Seen::Ping(p.to_vec()),
                    Event::Pong(p) => Seen::Pong(p.to_vec()),
                    Event::Close(c) => Seen::Close(c.map(|c| (c.code, c.reason.to_string()))),
                })
            });
            match r {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) => return (seen, Err(e)),
            }
        }
        (seen, Ok(()))
    }

    #[test]
    fn fragmented_text_with_interleaved_ping_at_every_split() {
        let mut bytes = frame(false, OpCode::Text, "héllo ".as_bytes());
        bytes.extend(frame(true, OpCode::Ping, b"p"));
        bytes.extend(frame(true, OpCode::Continuation, "wörld".as_bytes()));
        for cut in 0..=bytes.len() {
            let (seen, r) = run(&bytes, cut);
            assert_eq!(r, Ok(()), "cut {cut}");
            assert_eq!(
                seen,
                vec![Seen::Ping(b"p".to_vec()), Seen::Text("héllo wörld".into())],
                "cut {cut}"
            );
        }
    }

    #[test]
    fn multibyte_char_split_across_fragments_is_valid() {
        let s = "€"; // three bytes
        let mut bytes = frame(false, OpCode::Text, &s.as_bytes()[..1]);
        bytes.extend(frame(true, OpCode::Continuation, &s.as_bytes()[1..]));
        let (seen, r) = run(&bytes, bytes.len());
        assert_eq!(r, Ok(()));
        assert_eq!(seen, vec![Seen::Text(s.into())]);
    }

    #[test]
    fn invalid_utf8_fails_on_the_fragment_that_carries_it() {
        let mut bytes = frame(false, OpCode::Text, b"ok");
        bytes.extend(frame(false, OpCode::Continuation, &[0xFF]));
        let (_, r) = run(&bytes, bytes.len());
        assert_eq!(r, Err(ProtocolError::InvalidUtf8));
        assert_eq!(ProtocolError::InvalidUtf8.close_code(), 1007);
        // Incomplete character at the end of the last fragment.
        let bytes = frame(true, OpCode::Text, &"€".as_bytes()[..2]);
        assert_eq!(run(&bytes, 0).1, Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn continuation_rules() {
        let bytes = frame(true, OpCode::Continuation, b"x");
        assert_eq!(run(&bytes, 0).1, Err(ProtocolError::UnexpectedContinuation));
        let mut bytes = frame(false, OpCode::Text, b"a");
        bytes.extend(frame(true, OpCode::Text, b"b"));
        assert_eq!(run(&bytes, 0).1, Err(ProtocolError::ExpectedContinuation));
    }

    #[test]
    fn message_limit_counts_joined_fragments() {
        let limits = Limits {
            max_frame: 10,
            max_message: 15,
        };
        let mut bytes = frame(false, OpCode::Binary, &[0; 10]);
        bytes.extend(frame(true, OpCode::Continuation, &[0; 10]));
        let mut rx = Receiver::default();
        let r = rx.feed(&mut bytes, Role::Server, &limits, |_| {});
        assert_eq!(r, Err(ProtocolError::MessageTooLarge(15)));
        assert_eq!(r.unwrap_err().close_code(), 1009);
    }

    #[test]
    fn close_frames() {
        let (seen, r) = run(&frame(true, OpCode::Close, &[]), 0);
        assert_eq!((seen, r), (vec![Seen::Close(None)], Ok(())));
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"bye");
        let (seen, _) = run(&frame(true, OpCode::Close, &p), 0);
        assert_eq!(seen, vec![Seen::Close(Some((1000, "bye".into())))]);
        assert_eq!(
            run(&frame(true, OpCode::Close, &[3]), 0).1,
            Err(ProtocolError::BadClose)
        );
        let bad_code = 1005u16.to_be_bytes();
        assert_eq!(
            run(&frame(true, OpCode::Close, &bad_code), 0).1,
            Err(ProtocolError::BadClose)
        );
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.push(0xFF);
        assert_eq!(
            run(&frame(true, OpCode::Close, &bad_reason), 0).1,
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn nothing_is_consumed_after_close() {
        let mut bytes = frame(true, OpCode::Close, &[]);
        let close_len = bytes.len();
        bytes.extend(frame(true, OpCode::Text, b"late"));
        let mut rx = Receiver::default();
        let mut n_events = 0;
        let used = rx
            .feed(&mut bytes, Role::Server, &LIMITS, |_| n_events += 1)
            .unwrap();
        assert_eq!((used, n_events), (close_len, 1));
        assert!(rx.is_closed());
    }

    #[test]
    fn client_role_reads_unmasked_frames() {
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, b"hi", None);
        let mut rx = Receiver::default();
        let mut got = Vec::new();
        rx.feed(&mut out, Role::Client, &LIMITS, |e| {
            if let Event::Text(t) = e {
                got.extend_from_slice(t)
            }
        })
        .unwrap();
        assert_eq!(got, b"hi");
    }
}
