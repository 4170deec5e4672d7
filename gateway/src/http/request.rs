//! HTTP/1.1 request parsing over a byte buffer, with the gateway's limits.
//!
//! [`parse`] turns the bytes read so far into an `http::Request` once the head
//! and any `Content-Length` body are complete. Limits are enforced while the
//! bytes arrive, so an oversize head is refused before it is buffered whole.

use http::{header, HeaderName, HeaderValue, Method, Request, Uri, Version};
use thiserror::Error;

/// Limits on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    /// Request line plus headers, in bytes.
    pub max_head: usize,
    /// Number of header fields.
    pub max_headers: usize,
    /// Body bytes (only `Content-Length` bodies are accepted).
    pub max_body: usize,
    /// A larger body for uploads by the admin, if any.
    pub upload: Option<Upload<'a>>,
}

/// Who may send a body over [`Limits::max_body`], and how large: a `PUT`
/// under `path_prefix` with `Authorization: Bearer <token>` (checked before
/// a byte of the body is kept).
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    /// Body bytes allowed.
    pub max_body: usize,
    /// Paths it applies to.
    pub path_prefix: &'static str,
    /// The bearer token it needs.
    pub token: &'a crate::admin::AdminToken,
}

impl Default for Limits<'static> {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            max_headers: 64,
            max_body: 64 * 1024,
            upload: None,
        }
    }
}

/// Why a request cannot be served; each maps to a status code.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not HTTP/1.x.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Head over `max_head` or more than `max_headers` fields.
    #[error("request header fields too large")]
    HeadTooLarge,
    /// Body over `max_body`.
    #[error("request body over {0} bytes")]
    BodyTooLarge(usize),
    /// `Transfer-Encoding` on a request: not accepted, a length is required.
    #[error("Transfer-Encoding is not accepted on requests; send Content-Length")]
    LengthRequired,
}

impl ParseError {
    /// The status code that answers this error.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ParseError::Malformed(_) => S::BAD_REQUEST,
            ParseError::HeadTooLarge => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ParseError::BodyTooLarge(_) => S::PAYLOAD_TOO_LARGE,
            ParseError::LengthRequired => S::LENGTH_REQUIRED,
        }
    }
}

/// A parsed request and the number of bytes it took from the buffer.
#[derive(Debug)]
pub struct Parsed {
    /// The request, body included.
    pub request: Request<Vec<u8>>,
    /// Bytes of head and body consumed.
    pub consumed: usize,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

/// Parses one request from the front of `buf`; `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8], limits: &Limits<'_>) -> Result<Option<Parsed>, ParseError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head {
                return Err(ParseError::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::HeadTooLarge),
        Err(e) => return Err(ParseError::Malformed(e.to_string())),
    };
    if head_len > limits.max_head {
        return Err(ParseError::HeadTooLarge);
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| ParseError::Malformed("bad method".into()))?;
    let path = req.path.unwrap_or("");
    if !path.starts_with('/') {
        // Origin-form only: the gateway is not a proxy.
        return Err(ParseError::Malformed(
            "request target must start with '/'".into(),
        ));
    }
    let uri: Uri = path
        .parse()
        .map_err(|_| ParseError::Malformed("bad request target".into()))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };

    let mut builder = Request::builder()
        .method(method.clone())
        .uri(uri)
        .version(version);
    let mut content_length: Option<usize> = None;
    let mut connection_close = version == Version::HTTP_10;
    let mut has_host = false;
    let mut bearer: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| ParseError::Malformed(format!("bad header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| ParseError::Malformed(format!("bad value for header {name}")))?;
        if name == header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| ParseError::Malformed("bad Content-Length".into()))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(ParseError::Malformed("conflicting Content-Length".into()));
            }
            content_length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            return Err(ParseError::LengthRequired);
        } else if name == header::CONNECTION {
            let v = h.value.to_ascii_lowercase();
            if has_token(&v, b"close") {
                connection_close = true;
            } else if has_token(&v, b"keep-alive") {
                connection_close = false;
            }
        } else if name == header::HOST {
            has_host = true;
        } else if name == header::AUTHORIZATION {
            bearer = h.value.strip_prefix(b"Bearer ");
        }
        builder = builder.header(name, value);
    }
    if version == Version::HTTP_11 && !has_host {
        return Err(ParseError::Malformed(
            "HTTP/1.1 request without Host".into(),
        ));
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body {
        let upload = limits.upload.filter(|u| {
            method == Method::PUT
                && path.starts_with(u.path_prefix)
                && bearer.is_some_and(|b| u.token.matches(b))
        });
        match upload {
            Some(u) if body_len <= u.max_body => {}
            Some(u) => return Err(ParseError::BodyTooLarge(u.max_body)),
            None => return Err(ParseError::BodyTooLarge(limits.max_body)),
        }
    }
    if buf.len() < head_len + body_len {
        return Ok(None);
    }
    let body = buf[head_len..head_len + body_len].to_vec();
    let request = builder
        .body(body)
        .map_err(|e| ParseError::Malformed(e.to_string()))?;
    Ok(Some(Parsed {
        request,
        consumed: head_len + body_len,
        keep_alive: !connection_close,
    }))
}

/// Whether a comma-separated header value (already lower-cased) holds `token`.
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The value of query parameter `name`, percent-decoded.
pub fn query_param(uri: &Uri, name: &str) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The value of the request's cookie `name`, if it sends one.
pub fn cookie<B>(req: &http::Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits<'static> {
        Limits {
            max_head: 256,
            max_headers: 8,
            max_body: 16,
            upload: None,
        }
    }

    #[test]
    fn only_the_admin_may_send_an_upload_body() {
        let token = crate::admin::AdminToken::from_secret("secret-token");
        let l = Limits {
            upload: Some(Upload {
                max_body: 32,
                path_prefix: "/admin/sites/",
                token: &token,
            }),
            ..limits()
        };
        let req = |method: &str, path: &str, auth: &str, len: usize| {
            let mut r = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {len}\r\n\r\n"
            )
            .into_bytes();
            r.extend(std::iter::repeat_n(b'a', len));
            r
        };
        let admin = "Authorization: Bearer secret-token\r\n";
        let ok = parse(&req("PUT", "/admin/sites/demo/kb/a.md", admin, 30), &l);
        assert_eq!(ok.unwrap().unwrap().request.body().len(), 30);
        // Over the upload limit, a wrong token, no token, another path or method.
        let too_big = parse(&req("PUT", "/admin/sites/demo/kb/a.md", admin, 33), &l);
        assert_eq!(too_big.unwrap_err(), ParseError::BodyTooLarge(32));
        let wrong = "Authorization: Bearer secret-tokeX\r\n";
        for r in [
            req("PUT", "/admin/sites/demo/kb/a.md", wrong, 30),
            req("PUT", "/admin/sites/demo/kb/a.md", "", 30),
            req("PUT", "/poll/send", admin, 30),
            req("POST", "/admin/sites/demo/kb/a.md", admin, 30),
        ] {
            assert_eq!(parse(&r, &l).unwrap_err(), ParseError::BodyTooLarge(16));
        }
        // Refused from the head alone: the body need not have arrived.
        let head_only = b"PUT /poll/send HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\n";
        assert_eq!(
            parse(head_only, &l).unwrap_err(),
            ParseError::BodyTooLarge(16)
        );
    }

    #[test]
    fn parses_at_every_split_point() {
        let raw =
            b"POST /poll/send?site=demo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        for cut in 0..raw.len() {
            assert!(
                parse(&raw[..cut], &limits()).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let p = parse(raw, &limits()).unwrap().unwrap();
        assert_eq!(p.consumed, raw.len());
        assert_eq!(p.request.method(), Method::POST);
        assert_eq!(p.request.uri().path(), "/poll/send");
        assert_eq!(
            query_param(p.request.uri(), "site").as_deref(),
            Some("demo")
        );
        assert_eq!(p.request.body(), b"hello");
        assert!(p.keep_alive);
    }

    #[test]
    fn pipelined_requests_consume_one_at_a_time() {
        let raw = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let a = parse(raw, &limits()).unwrap().unwrap();
        assert_eq!(a.request.uri().path(), "/a");
        let b = parse(&raw[a.consumed..], &limits()).unwrap().unwrap();
        assert_eq!(b.request.uri().path(), "/b");
        assert!(!b.keep_alive);
    }

    #[test]
    fn limits_and_errors_map_to_statuses() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(300)
        );
        let e = parse(big.as_bytes(), &limits()).unwrap_err();
        assert_eq!(e.status(), 431);
        // An incomplete head already over the limit is refused without waiting.
        let e = parse(&big.as_bytes()[..280], &limits()).unwrap_err();
        assert_eq!(e, ParseError::HeadTooLarge);
        let many: String = (0..9).map(|i| format!("X{i}: y\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(parse(raw.as_bytes(), &limits()).unwrap_err().status(), 431);
        assert_eq!(
            parse(b"NOT HTTP\r\n\r\n", &limits()).unwrap_err().status(),
            400
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n", &limits())
                .unwrap_err()
                .status(),
            400
        );
        let body = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\n";
        assert_eq!(parse(body, &limits()).unwrap_err().status(), 413);
        let te = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(te, &limits()).unwrap_err().status(), 411);
        let abs = b"GET http://evil/ HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parse(abs, &limits()).unwrap_err().status(), 400);
    }

    #[test]
    fn http10_closes_by_default() {
        let p = parse(b"GET / HTTP/1.0\r\n\r\n", &limits())
            .unwrap()
            .unwrap();
        assert!(!p.keep_alive);
    }

    #[test]
    fn connection_tokens() {
        assert!(has_token(b"keep-alive, upgrade", b"Upgrade"));
        assert!(!has_token(b"keep-alive", b"upgrade"));
    }
}
