//! HTTP/1.1 requests, sans-IO: [`encode`] writes the client's requests (from
//! `http::Request`), [`parse`] reads the requests the simulator's server gets
//! (httparse into `http` types, bodies framed by `Content-Length` only).

use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, Request, StatusCode, Version};

/// Largest request head the server accepts.
pub const MAX_HEAD: usize = 32 * 1024;
/// Most header fields the server accepts.
pub const MAX_HEADERS: usize = 64;

/// Writes `req` (its body included) to `out`. A `Content-Length` is added for
/// a body or a method that carries one; `Host` must be among the headers.
pub fn encode(req: &Request<Vec<u8>>, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let body = req.body();
    if !req.headers().contains_key(CONTENT_LENGTH)
        && (!body.is_empty() || matches!(*req.method(), Method::POST | Method::PUT))
    {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Why a request cannot be served; [`RequestError::status`] is the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not an HTTP/1.x request.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The head is over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields.
    #[error("request head too large")]
    HeadTooLarge,
    /// A chunked request body (not supported here).
    #[error("request bodies must have a Content-Length")]
    LengthRequired,
    /// The body is over the server's limit.
    #[error("request body over {0} bytes")]
    BodyTooLarge(usize),
}

impl RequestError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::Malformed(_) => StatusCode::BAD_REQUEST,
            RequestError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            RequestError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target, version and fields.
    pub request: Request<()>,
    /// Length of the body that follows the head.
    pub content_length: usize,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
}

/// Parses a request head from the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and its length.
pub fn parse(buf: &[u8], max_body: usize) -> Result<Option<(RequestHead, usize)>, RequestError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(RequestError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::HeadTooLarge),
        Err(e) => return Err(RequestError::Malformed(e.to_string())),
    };
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| RequestError::Malformed("bad method".into()))?;
    let version = if req.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut b = Request::builder()
        .method(method)
        .uri(req.path.unwrap_or("/"))
        .version(version);
    let mut content_length = 0usize;
    let mut keep_alive = version == Version::HTTP_11;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| RequestError::Malformed(format!("bad header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| RequestError::Malformed(format!("bad value for {}", h.name)))?;
        if name == TRANSFER_ENCODING {
            return Err(RequestError::LengthRequired);
        }
        if name == CONTENT_LENGTH {
            content_length = value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| RequestError::Malformed("bad Content-Length".into()))?;
            if content_length > max_body {
                return Err(RequestError::BodyTooLarge(max_body));
            }
        }
        if name == CONNECTION {
            let v = value.to_str().unwrap_or("").to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
        b = b.header(name, value);
    }
    let request = b
        .body(())
        .map_err(|e| RequestError::Malformed(e.to_string()))?;
    Ok(Some((
        RequestHead {
            request,
            content_length,
            keep_alive,
        },
        len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse() {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/chat/completions")
            .header("host", "127.0.0.1:8000")
            .header("content-type", "application/json")
            .body(b"{\"a\":1}".to_vec())
            .unwrap();
        let mut out = Vec::new();
        encode(&req, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"));
        assert!(text.contains("content-length: 7\r\n"));
        let (head, n) = parse(&out, 1024).unwrap().unwrap();
        assert_eq!(head.request.uri().path(), "/v1/chat/completions");
        assert_eq!(head.content_length, 7);
        assert!(head.keep_alive);
        assert_eq!(&out[n..], b"{\"a\":1}");
        for i in 0..n {
            assert!(parse(&out[..i], 1024).unwrap().is_none(), "partial at {i}");
        }
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 10).unwrap_err(),
            RequestError::LengthRequired
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 10).unwrap_err(),
            RequestError::BodyTooLarge(10)
        );
        assert!(matches!(
            parse(b"\x16\x03\x01garbage\r\n\r\n", 10).unwrap_err(),
            RequestError::Malformed(_)
        ));
        assert!(parse(&vec![b'a'; MAX_HEAD], 10).is_err());
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() < MAX_HEAD {
            big.extend_from_slice(b"X: y\r\n");
        }
        assert_eq!(parse(&big, 10).unwrap_err(), RequestError::HeadTooLarge);
        let (h, _) = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 10)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
    }
}
