//! Server-sent events (the WHATWG `text/event-stream` format), sans-IO.
//!
//! [`SseDecoder`] is fed byte slices however the network split them. Lines end
//! with CRLF, LF or a lone CR (a CR at the end of one slice and an LF at the
//! start of the next are one line end). A line starting with `:` is a comment
//! (`: ping` keep-alives); `data:` lines accumulate, joined by `\n`, into one
//! event that a blank line dispatches; `event:`, `id:` and `retry:` are kept;
//! other fields are ignored; a leading byte-order mark is dropped. An event
//! left unterminated when the stream ends is discarded, as the standard says.
//!
//! Unlike a browser, the decoder rejects invalid UTF-8 and over-long lines or
//! events with an [`SseError`]: for an API client, a garbled stream is an error
//! for that request.

/// Longest line accepted, in bytes.
pub const DEFAULT_MAX_LINE: usize = 256 * 1024;
/// Largest event (its `data` joined) accepted, in bytes.
pub const DEFAULT_MAX_EVENT: usize = 1024 * 1024;

/// Why an event stream is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line is over the limit.
    #[error("event-stream line longer than {0} bytes")]
    LineTooLong(usize),
    /// An event's data is over the limit.
    #[error("event-stream event larger than {0} bytes")]
    EventTooLarge(usize),
    /// A line is not UTF-8.
    #[error("event-stream line is not valid UTF-8")]
    InvalidUtf8,
}

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, or `message` when there was none.
    pub event: &'a str,
    /// The `data:` lines joined by `\n`.
    pub data: &'a str,
    /// The last event id seen in the stream, if any.
    pub id: Option<&'a str>,
}

/// Incremental decoder of one event stream.
#[derive(Debug, Clone)]
pub struct SseDecoder {
    /// The incomplete line carried over from earlier input.
    line: Vec<u8>,
    /// The previous input ended with CR: an LF first in the next is part of it.
    after_cr: bool,
    /// No line has completed yet (a BOM may lead the first).
    at_start: bool,
    data: String,
    has_data: bool,
    event: String,
    id: Option<String>,
    retry: Option<u64>,
    comments: u64,
    max_line: usize,
    max_event: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// A decoder with the default limits.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_LINE, DEFAULT_MAX_EVENT)
    }

    /// A decoder with these limits on a line and on an event's data.
    pub fn with_limits(max_line: usize, max_event: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            data: String::new(),
            has_data: false,
            event: String::new(),
            id: None,
            retry: None,
            comments: 0,
            max_line,
            max_event,
        }
    }

    /// The last `retry:` value, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Comment lines seen so far (keep-alives).
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Whether an event has started (has data) but not been dispatched.
    pub fn has_pending(&self) -> bool {
        self.has_data || !self.line.is_empty()
    }

    /// Decodes `input`, calling `on_event` for each complete event.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_event: impl FnMut(SseEvent<'_>),
    ) -> Result<(), SseError> {
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = input {
                input = rest;
            }
        }
        while !input.is_empty() {
            let Some(end) = input.iter().position(|&b| b == b'\n' || b == b'\r') else {
                if self.line.len() + input.len() > self.max_line {
                    return Err(SseError::LineTooLong(self.max_line));
                }
                self.line.extend_from_slice(input);
                return Ok(());
            };
            let cr = input[end] == b'\r';
            let mut next = end + 1;
            if cr {
                match input.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                if end > self.max_line {
                    return Err(SseError::LineTooLong(self.max_line));
                }
                self.process_line(&input[..end], &mut on_event)?;
            } else {
                if self.line.len() + end > self.max_line {
                    return Err(SseError::LineTooLong(self.max_line));
                }
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[..end]);
                let r = self.process_line(&line, &mut on_event);
                line.clear();
                self.line = line;
                r?;
            }
            input = &input[next..];
        }
        Ok(())
    }

    fn process_line(
        &mut self,
        mut line: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>),
    ) -> Result<(), SseError> {
        if self.at_start {
            self.at_start = false;
            if let [0xEF, 0xBB, 0xBF, rest @ ..] = line {
                line = rest;
            }
        }
        if line.is_empty() {
            if self.has_data {
                let event = if self.event.is_empty() {
                    "message"
                } else {
                    self.event.as_str()
                };
                on_event(SseEvent {
                    event,
                    data: &self.data,
                    id: self.id.as_deref(),
                });
            }
            self.data.clear();
            self.has_data = false;
            self.event.clear();
            return Ok(());
        }
        if line[0] == b':' {
            self.comments += 1;
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_event {
                    return Err(SseError::EventTooLarge(self.max_event));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Ev {
        event: String,
        data: String,
        id: Option<String>,
    }

    fn decode(pieces: &[&[u8]]) -> Result<Vec<Ev>, SseError> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for p in pieces {
            d.feed(p, |e| {
                out.push(Ev {
                    event: e.event.to_string(),
                    data: e.data.to_string(),
                    id: e.id.map(str::to_string),
                })
            })?;
        }
        Ok(out)
    }

    /// Decodes `input` whole, then split at every position, then byte by
    /// byte, and checks every way gives the same events.
    fn decode_every_split(input: &[u8]) -> Vec<Ev> {
        let whole = decode(&[input]).unwrap();
        for i in 0..=input.len() {
            assert_eq!(
                decode(&[&input[..i], &input[i..]]).unwrap(),
                whole,
                "split at {i}"
            );
        }
        let singles: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode(&singles).unwrap(), whole, "byte by byte");
        whole
    }

    fn data(evs: &[Ev]) -> Vec<&str> {
        evs.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn openai_chat_stream_fixture() {
        let evs = decode_every_split(include_bytes!("../tests/fixtures/openai_chat.sse"));
        assert_eq!(evs.len(), 6);
        assert!(evs.iter().all(|e| e.event == "message"));
        assert_eq!(evs.last().unwrap().data, "[DONE]");
        assert!(evs[0].data.contains(r#""role":"assistant""#));
    }

    #[test]
    fn crlf_and_lone_cr_line_ends() {
        let lf = decode_every_split(b"data: a\n\ndata: b\n\n");
        let crlf = decode_every_split(b"data: a\r\n\r\ndata: b\r\n\r\n");
        let cr = decode_every_split(b"data: a\r\rdata: b\r\r");
        let mixed = decode_every_split(b"data: a\r\n\ndata: b\r\r\n");
        assert_eq!(data(&lf), ["a", "b"]);
        assert_eq!(lf, crlf);
        assert_eq!(lf, cr);
        assert_eq!(lf, mixed);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let evs = decode_every_split(b"data: {\"a\":\ndata:  1}\ndata\n\n");
        assert_eq!(data(&evs), ["{\"a\":\n 1}\n"]);
    }

    #[test]
    fn comments_fields_and_ids() {
        let input =
            b": ping\n\nevent: error\nid: 7\nretry: 1500\nfoo: bar\ndata: x\n\n: ping\ndata: y\n\n";
        let evs = decode_every_split(input);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].event, "error");
        assert_eq!(evs[0].id.as_deref(), Some("7"));
        assert_eq!(
            evs[1].event, "message",
            "the event type resets after dispatch"
        );
        assert_eq!(evs[1].id.as_deref(), Some("7"), "the last id persists");
        let mut d = SseDecoder::new();
        d.feed(input, |_| {}).unwrap();
        assert_eq!(d.retry(), Some(1500));
        assert_eq!(d.comments(), 2);
    }

    #[test]
    fn blank_lines_without_data_dispatch_nothing() {
        assert!(decode_every_split(b"\n\n\r\n: c\n\nevent: x\n\n").is_empty());
    }

    #[test]
    fn unterminated_event_is_pending_not_dispatched() {
        let mut d = SseDecoder::new();
        let mut n = 0;
        d.feed(b"data: [DONE]\n", |_| n += 1).unwrap();
        assert_eq!(n, 0);
        assert!(d.has_pending());
    }

    #[test]
    fn byte_order_mark_is_dropped_once() {
        let evs = decode_every_split(b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n");
        assert_eq!(evs.len(), 1, "a BOM later on makes an unknown field");
        assert_eq!(evs[0].data, "a");
    }

    #[test]
    fn field_without_space_and_colon_in_value() {
        let evs = decode_every_split(b"data:a: b\n\n");
        assert_eq!(data(&evs), ["a: b"]);
    }

    #[test]
    fn errors() {
        let mut d = SseDecoder::with_limits(16, 32);
        assert_eq!(
            d.feed(&[b'x'; 17], |_| {}).unwrap_err(),
            SseError::LineTooLong(16)
        );
        let mut d = SseDecoder::with_limits(16, 32);
        d.feed(b"data: 0123456789", |_| {}).unwrap();
        assert_eq!(
            d.feed(b"abcdef\n", |_| {}).unwrap_err(),
            SseError::LineTooLong(16)
        );
        let mut d = SseDecoder::with_limits(64, 20);
        assert_eq!(
            d.feed(b"data: 0123456789\ndata: 0123456789\n", |_| {})
                .unwrap_err(),
            SseError::EventTooLarge(20)
        );
        let mut d = SseDecoder::new();
        assert_eq!(
            d.feed(b"data: \xff\xfe\n\n", |_| {}).unwrap_err(),
            SseError::InvalidUtf8
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..2000 {
            let n = rng.usize(0..80);
            let bytes: Vec<u8> = (0..n)
                .map(|_| *rng.choice(b"data: \r\n:xe\xff{}".iter()).unwrap_or(&b'a'))
                .collect();
            let mut d = SseDecoder::with_limits(32, 64);
            let _ = d.feed(&bytes, |_| {});
        }
    }
}
