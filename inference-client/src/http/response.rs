//! HTTP/1.1 responses, sans-IO: the client's [`ResponseDecoder`] (the head
//! parsed by httparse into `http` types, then the body by its framing:
//! `Content-Length`, chunked, or until the connection closes) and
//! [`encode_head`], which the simulator's server writes responses with.

use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, RETRY_AFTER};
use http::{StatusCode, Version};

use crate::chunked::{ChunkedDecoder, ChunkedError};

/// Largest response head accepted, in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head.
pub const MAX_HEADERS: usize = 64;

/// Why a response is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The head is not an HTTP/1.x response.
    #[error("response head is not HTTP/1.x: {0}")]
    Parse(String),
    /// The head is over [`MAX_HEAD`] bytes (or has over [`MAX_HEADERS`] fields).
    #[error("response head larger than {MAX_HEAD} bytes or {MAX_HEADERS} fields")]
    HeadTooLarge,
    /// `Content-Length` is not a number, or several disagree.
    #[error("invalid Content-Length")]
    BadLength,
    /// A transfer coding other than `chunked` (we ask for none).
    #[error("unsupported Transfer-Encoding {0:?}")]
    BadEncoding(String),
    /// The chunked body is malformed.
    #[error("bad chunked body: {0}")]
    Chunked(#[from] ChunkedError),
    /// The connection closed before the response was complete.
    #[error("connection closed before the response was complete")]
    Truncated,
}

/// How the body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields.
    pub headers: HeaderMap,
    /// How the body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// `Retry-After` in its delay-seconds form (an HTTP date is ignored).
    pub fn retry_after(&self) -> Option<Duration> {
        let v = self.headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
        v.parse::<u64>().ok().map(Duration::from_secs)
    }

    /// Whether the body is an event stream.
    pub fn is_event_stream(&self) -> bool {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
    }
}

/// Parses a response head from the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD {
                Err(HttpError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(e) => return Err(HttpError::Parse(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| HttpError::Parse(format!("status code {code} out of range")))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut headers = HeaderMap::with_capacity(resp.headers.len());
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| HttpError::Parse(format!("bad header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| HttpError::Parse(format!("bad value for header {}", h.name)))?;
        headers.append(name, value);
    }
    let framing = framing(status, &headers)?;
    let conn_has = |token: &str| {
        headers.get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let keep_alive = framing != Framing::UntilClose
        && match version {
            Version::HTTP_10 => conn_has("keep-alive"),
            _ => !conn_has("close"),
        };
    Ok(Some((
        ResponseHead {
            status,
            version,
            headers,
            framing,
            keep_alive,
        },
        len,
    )))
}

fn framing(status: StatusCode, headers: &HeaderMap) -> Result<Framing, HttpError> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    let mut codings = Vec::new();
    for v in headers.get_all(http::header::TRANSFER_ENCODING) {
        let s = v
            .to_str()
            .map_err(|_| HttpError::BadEncoding("non-ASCII".into()))?;
        codings.extend(
            s.split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .filter(|t| !t.is_empty()),
        );
    }
    if !codings.is_empty() {
        return if codings.len() == 1 && codings[0] == "chunked" {
            Ok(Framing::Chunked)
        } else {
            Err(HttpError::BadEncoding(codings.join(", ")))
        };
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        let s = v.to_str().map_err(|_| HttpError::BadLength)?;
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadLength);
            }
            let n: u64 = part.parse().map_err(|_| HttpError::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// A piece of a response, in order: one `Head`, any `Data`, one `End`.
#[derive(Debug)]
pub enum Part<'a> {
    /// The final (non-1xx) head.
    Head(&'a ResponseHead),
    /// Body bytes (chunk framing removed).
    Data(&'a [u8]),
    /// The body is complete.
    End,
}

#[derive(Debug)]
enum State {
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// Incremental decoder of one response.
#[derive(Debug)]
pub struct ResponseDecoder {
    state: State,
    head_buf: Vec<u8>,
    head: Option<ResponseHead>,
}

impl Default for ResponseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseDecoder {
    /// A decoder waiting for a response head.
    pub fn new() -> Self {
        ResponseDecoder {
            state: State::Head,
            head_buf: Vec::new(),
            head: None,
        }
    }

    /// The head, once parsed.
    pub fn head(&self) -> Option<&ResponseHead> {
        self.head.as_ref()
    }

    /// Whether the whole response has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Decodes `input`, calling `on` with each [`Part`]. Returns how many
    /// bytes were consumed: all, unless the response ended inside `input`.
    pub fn feed(&mut self, input: &[u8], mut on: impl FnMut(Part<'_>)) -> Result<usize, HttpError> {
        let mut used = 0;
        while used < input.len() {
            match &mut self.state {
                State::Head => {
                    // Parse in place when nothing is carried over, else append.
                    let rest = &input[used..];
                    let carried = self.head_buf.len();
                    let parsed = if carried == 0 {
                        parse_head(rest)?
                    } else {
                        let take = rest.len().min(MAX_HEAD + 1 - carried.min(MAX_HEAD));
                        self.head_buf.extend_from_slice(&rest[..take]);
                        parse_head(&self.head_buf)?
                    };
                    let Some((head, len)) = parsed else {
                        if carried == 0 {
                            self.head_buf.extend_from_slice(rest);
                        }
                        return Ok(input.len());
                    };
                    // The head ended `len - carried` bytes into `rest`.
                    used += len - carried;
                    self.head_buf.clear();
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue; // 100 Continue, 103 Early Hints: the real head follows.
                    }
                    self.state = match head.framing {
                        Framing::Empty => State::Done,
                        Framing::Length(n) => State::Length(n),
                        Framing::Chunked => State::Chunked(ChunkedDecoder::new()),
                        Framing::UntilClose => State::UntilClose,
                    };
                    let head = self.head.insert(head);
                    on(Part::Head(head));
                    if self.is_done() {
                        on(Part::End);
                        return Ok(used);
                    }
                }
                State::Length(remaining) => {
                    let n = (*remaining).min((input.len() - used) as u64) as usize;
                    on(Part::Data(&input[used..used + n]));
                    used += n;
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = State::Done;
                        on(Part::End);
                        return Ok(used);
                    }
                }
                State::Chunked(dec) => {
                    used += dec.feed(&input[used..], |d| on(Part::Data(d)))?;
                    if dec.is_done() {
                        self.state = State::Done;
                        on(Part::End);
                        return Ok(used);
                    }
                }
                State::UntilClose => {
                    on(Part::Data(&input[used..]));
                    used = input.len();
                }
                State::Done => return Ok(used),
            }
        }
        Ok(used)
    }

    /// The connection reached end of file: ends an until-close body, or
    /// reports a truncated response.
    pub fn eof(&mut self, mut on: impl FnMut(Part<'_>)) -> Result<(), HttpError> {
        match self.state {
            State::UntilClose => {
                self.state = State::Done;
                on(Part::End);
                Ok(())
            }
            State::Done => Ok(()),
            _ => Err(HttpError::Truncated),
        }
    }
}

/// Writes a response head (status line and fields, then the blank line).
pub fn encode_head(resp: &http::Response<()>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(resp.status().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        resp.status()
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq)]
    struct Got {
        status: u16,
        body: Vec<u8>,
        ended: bool,
        heads: usize,
    }

    fn decode(pieces: &[&[u8]], eof: bool) -> Result<(Got, usize), HttpError> {
        let mut d = ResponseDecoder::new();
        let mut g = Got::default();
        let mut used = 0;
        let mut on = |p: Part<'_>| match p {
            Part::Head(h) => {
                g.status = h.status.as_u16();
                g.heads += 1;
            }
            Part::Data(b) => g.body.extend_from_slice(b),
            Part::End => g.ended = true,
        };
        for p in pieces {
            used += d.feed(p, &mut on)?;
            if d.is_done() {
                break;
            }
        }
        if eof {
            d.eof(&mut on)?;
        }
        Ok((g, used))
    }

    fn every_split(input: &[u8], eof: bool) -> Got {
        let (whole, _) = decode(&[input], eof).unwrap();
        for i in 0..=input.len() {
            let (g, _) = decode(&[&input[..i], &input[i..]], eof).unwrap();
            assert_eq!(g, whole, "split at {i}");
        }
        whole
    }

    #[test]
    fn chunked_event_stream_at_every_split() {
        let mut r = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let events = include_bytes!("../../tests/fixtures/openai_chat.sse");
        for c in events.chunks(97) {
            crate::chunked::encode_chunk(c, &mut r);
        }
        r.extend_from_slice(crate::chunked::LAST_CHUNK);
        let g = every_split(&r, false);
        assert_eq!(g.status, 200);
        assert_eq!(g.body, events);
        assert!(g.ended);
        assert_eq!(g.heads, 1);
    }

    #[test]
    fn content_length_body_and_what_follows() {
        let r = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 5\r\n\r\nbusy!EXTRA";
        let (g, used) = decode(&[r], false).unwrap();
        assert_eq!(g.status, 503);
        assert_eq!(g.body, b"busy!");
        assert!(g.ended);
        assert_eq!(used, r.len() - 5);
        let (head, _) = parse_head(r).unwrap().unwrap();
        assert_eq!(head.retry_after(), Some(Duration::from_secs(7)));
        assert!(head.keep_alive);
        every_split(&r[..r.len() - 5], false);
    }

    #[test]
    fn until_close_body_ends_at_eof() {
        let r = b"HTTP/1.0 200 OK\r\n\r\nhello";
        let g = every_split(r, true);
        assert_eq!(g.body, b"hello");
        assert!(g.ended);
        let (head, _) = parse_head(r).unwrap().unwrap();
        assert!(!head.keep_alive);
    }

    #[test]
    fn informational_heads_are_skipped() {
        let r = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let g = every_split(r, false);
        assert_eq!(g.status, 204);
        assert_eq!(g.heads, 1);
        assert!(g.ended);
    }

    #[test]
    fn connection_close_and_http10_keep_alive() {
        let (h, _) =
            parse_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!h.keep_alive);
        let (h, _) =
            parse_head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(h.keep_alive);
    }

    #[test]
    fn errors() {
        let e = |r: &[u8]| decode(&[r], true).unwrap_err();
        assert!(matches!(e(b"garbage\r\n\r\n"), HttpError::Parse(_)));
        assert!(matches!(e(b"\x00\x01\x02\x03"), HttpError::Parse(_)));
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            HttpError::BadLength
        );
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            HttpError::BadLength
        );
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            HttpError::BadEncoding("gzip, chunked".into())
        );
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            HttpError::Truncated
        );
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
            HttpError::Truncated
        );
        assert_eq!(e(b"HTTP/1.1 200 O"), HttpError::Truncated);
        assert!(matches!(
            e(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            HttpError::Chunked(_)
        ));
        let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
        while big.len() <= MAX_HEAD {
            big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        // Fed whole, and fed in small pieces: both refuse it.
        assert_eq!(decode(&[&big], false).unwrap_err(), HttpError::HeadTooLarge);
        let pieces: Vec<&[u8]> = big.chunks(1000).collect();
        assert_eq!(decode(&pieces, false).unwrap_err(), HttpError::HeadTooLarge);
    }

    #[test]
    fn encode_head_round_trips() {
        let resp = http::Response::builder()
            .status(429)
            .header("retry-after", "2")
            .header("content-length", "0")
            .body(())
            .unwrap();
        let mut out = Vec::new();
        encode_head(&resp, &mut out);
        let (h, n) = parse_head(&out).unwrap().unwrap();
        assert_eq!(n, out.len());
        assert_eq!(h.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(h.framing, Framing::Empty);
    }
}
