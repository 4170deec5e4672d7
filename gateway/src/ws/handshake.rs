//! The server side of the RFC 6455 opening handshake, over `http` types.

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use thiserror::Error;

use crate::http::request::has_token;
use crate::http::response::{self, Body};

/// Why an upgrade request is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not `GET` over HTTP/1.1.
    #[error("a WebSocket upgrade must be a GET over HTTP/1.1")]
    NotGet,
    /// `Upgrade: websocket` or `Connection: Upgrade` missing.
    #[error("missing 'Upgrade: websocket' and 'Connection: Upgrade' headers")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` other than 13.
    #[error("unsupported Sec-WebSocket-Version; this server speaks 13")]
    Version,
    /// `Sec-WebSocket-Key` missing or not 16 bytes in base64.
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
}

impl HandshakeError {
    /// The refusal to send back.
    pub fn response(&self) -> Response<Body> {
        let status = match self {
            HandshakeError::Version => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut r = response::text(status, self.to_string());
        if *self == HandshakeError::Version {
            r.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        r
    }
}

/// Whether the request asks for a WebSocket upgrade at all.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| has_token(v.as_bytes(), b"websocket"))
}

/// Validates an upgrade request and builds the `101 Switching Protocols` answer.
///
/// The caller adds its own headers (a session cookie, say) before sending it.
pub fn accept<B>(req: &Request<B>) -> Result<Response<Body>, HandshakeError> {
    if req.method() != Method::GET || req.version() != Version::HTTP_11 {
        return Err(HandshakeError::NotGet);
    }
    let h = req.headers();
    let connection_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"upgrade"));
    if !is_upgrade(req) || !connection_upgrade {
        return Err(HandshakeError::NotUpgrade);
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(HandshakeError::Version);
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(HandshakeError::Key)?;
    // A key is 16 random bytes in base64: 24 characters ending in "==".
    let k = key.as_bytes();
    if k.len() != 24 || !k.ends_with(b"==") {
        return Err(HandshakeError::Key);
    }
    let accept = tungstenite::handshake::derive_accept_key(k);
    let mut r = response::empty(StatusCode::SWITCHING_PROTOCOLS);
    let hs = r.headers_mut();
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| HandshakeError::Key)?,
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: &str, key: &str) -> Request<()> {
        Request::builder()
            .uri("/ws")
            .header("Host", "x")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Version", version)
            .header("Sec-WebSocket-Key", key)
            .body(())
            .unwrap()
    }

    #[test]
    fn rfc_example_accept_key() {
        let r = accept(&req("13", "dGhlIHNhbXBsZSBub25jZQ==")).unwrap();
        assert_eq!(r.status(), 101);
        assert_eq!(
            r.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            accept(&req("8", "dGhlIHNhbXBsZSBub25jZQ==")).unwrap_err(),
            HandshakeError::Version
        );
        assert_eq!(HandshakeError::Version.response().status(), 426);
        assert_eq!(
            accept(&req("13", "short")).unwrap_err(),
            HandshakeError::Key
        );
        let plain = Request::builder().uri("/ws").body(()).unwrap();
        assert_eq!(accept(&plain).unwrap_err(), HandshakeError::NotUpgrade);
        assert!(!is_upgrade(&plain));
    }
}
