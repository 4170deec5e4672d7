//! HTTP/1.1 response encoding, and the constructors every route answers with.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// The body type of every response the gateway writes.
pub type Body = Bytes;

/// Writes the status line, headers and body of `resp` to `out`.
///
/// Adds `Content-Length` (except on 101, 204 and 304) and `Connection: close`
/// when `keep_alive` is false. `head_only` leaves the body out (HEAD requests).
pub fn encode(resp: &Response<Body>, keep_alive: bool, head_only: bool, out: &mut Vec<u8>) {
    let status = resp.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodyless = matches!(
        status,
        StatusCode::SWITCHING_PROTOCOLS | StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    );
    if !bodyless && !resp.headers().contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(resp.body().len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive && status != StatusCode::SWITCHING_PROTOCOLS {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodyless {
        out.extend_from_slice(resp.body());
    }
}

/// A response with a body and content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A plain-text response; error answers carry a sentence the caller can act on.
pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut s = msg.into();
    s.push('\n');
    with_body(status, "text/plain; charset=utf-8", s)
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(v) => with_body(status, "application/json", v),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode response: {e}"),
        ),
    }
}

/// An empty response.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::new());
    *r.status_mut() = status;
    r
}

/// 503 with `Retry-After`, for a full server.
pub fn unavailable(retry_after_s: u32, msg: &str) -> Response<Body> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_length_and_close() {
        let r = text(StatusCode::NOT_FOUND, "unknown site 'x'");
        let mut out = Vec::new();
        encode(&r, false, false, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("content-length: 17\r\n"));
        assert!(s.contains("connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\nunknown site 'x'\n"));
    }

    #[test]
    fn no_body_on_304_and_head() {
        let mut out = Vec::new();
        encode(&empty(StatusCode::NOT_MODIFIED), true, false, &mut out);
        assert!(!String::from_utf8_lossy(&out).contains("content-length"));
        let mut out = Vec::new();
        encode(&text(StatusCode::OK, "body"), true, true, &mut out);
        assert!(String::from_utf8_lossy(&out).ends_with("content-length: 5\r\n\r\n"));
    }
}
