//! The client side of the RFC 6455 opening handshake: the upgrade request
//! loadgen sends and the check of the `101 Switching Protocols` answer.

use base64::Engine;
use thiserror::Error;

use crate::target::Target;

/// Largest response head loadgen reads before giving up.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why the server did not accept the upgrade.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// An HTTP status other than 101 (503 when the server is full).
    #[error("the server answered the upgrade with HTTP {status}{}", retry_after.as_ref().map(|r| format!(" (Retry-After: {r})")).unwrap_or_default())]
    Status {
        /// Status code.
        status: u16,
        /// `Retry-After`, if sent.
        retry_after: Option<String>,
    },
    /// `Sec-WebSocket-Accept` missing or wrong.
    #[error("the server's Sec-WebSocket-Accept does not match the key sent")]
    BadAccept,
    /// Not HTTP, or a head over [`MAX_RESPONSE_HEAD`].
    #[error("the server's answer to the upgrade is not a valid HTTP response: {0}")]
    Malformed(String),
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
pub fn new_key(rng: &mut fastrand::Rng) -> String {
    let bytes: [u8; 16] = std::array::from_fn(|_| rng.u8(..));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The cookie that carries a chat session (PROTOCOL.md, Transport).
pub const SESSION_COOKIE: &str = "lc_session";

/// The upgrade request for `target`, with the target's own `Origin`;
/// `cookie` (`lc_session=...`, from an earlier upgrade) resumes a session.
pub fn request(target: &Target, key: &str, cookie: Option<&str>) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\nUser-Agent: loadgen/{version}\r\n{cookie}\r\n",
        path = target.path,
        host = target.host_header(),
        origin = target.origin(),
        version = env!("CARGO_PKG_VERSION"),
        cookie = cookie.map_or_else(String::new, |c| format!("Cookie: {c}\r\n")),
    )
    .into_bytes()
}

/// An accepted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Length of the response head; bytes after it are WebSocket frames.
    pub head_len: usize,
    /// `lc_session=...` from `Set-Cookie`, to send back on a reconnect.
    pub session_cookie: Option<String>,
}

/// The `name=value` of the session cookie in a `Set-Cookie` value.
pub fn session_cookie(set_cookie: &str) -> Option<String> {
    let pair = set_cookie.split(';').next()?.trim();
    let (name, value) = pair.split_once('=')?;
    (name.trim() == SESSION_COOKIE && !value.trim().is_empty()).then(|| pair.to_string())
}

/// Reads the response head at the front of `buf`.
///
/// `Ok(None)`: not complete yet. `Ok(Some(_))`: accepted.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<Accepted>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HandshakeError::Malformed(format!(
                "head over {MAX_RESPONSE_HEAD} bytes"
            )))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err(HandshakeError::Status {
            status,
            retry_after: header("retry-after"),
        });
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if header("sec-websocket-accept").as_deref() != Some(expected.as_str()) {
        return Err(HandshakeError::BadAccept);
    }
    let session_cookie = resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("set-cookie"))
        .find_map(|h| session_cookie(&String::from_utf8_lossy(h.value)));
    Ok(Some(Accepted {
        head_len: n,
        session_cookie,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_names_host_origin_and_key() {
        let t = Target::parse("ws://127.0.0.1:9000/ws?site=demo").unwrap();
        let r = String::from_utf8(request(&t, "dGhlIHNhbXBsZSBub25jZQ==", None)).unwrap();
        assert!(r.starts_with("GET /ws?site=demo HTTP/1.1\r\n"));
        assert!(r.contains("\r\nHost: 127.0.0.1:9000\r\n"));
        assert!(r.contains("\r\nOrigin: http://127.0.0.1:9000\r\n"));
        assert!(r.contains("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        assert!(!r.contains("Cookie"));
        let again = String::from_utf8(request(&t, "k", Some("lc_session=abc"))).unwrap();
        assert!(again.contains("\r\nCookie: lc_session=abc\r\n") && again.ends_with("\r\n\r\n"));
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(new_key(&mut rng).len(), 24);
    }

    #[test]
    fn accepts_the_rfc_example_and_keeps_trailing_frames() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x00]);
        for cut in 0..head.len() {
            assert_eq!(parse_response(&bytes[..cut], key), Ok(None), "cut {cut}");
        }
        assert_eq!(
            parse_response(&bytes, key),
            Ok(Some(Accepted {
                head_len: head.len(),
                session_cookie: None
            }))
        );
        let with_cookie = head.replace(
            "\r\n\r\n",
            "\r\nSet-Cookie: other=1\r\nSet-Cookie: lc_session=tok123; HttpOnly; SameSite=Lax; Path=/\r\n\r\n",
        );
        let a = parse_response(with_cookie.as_bytes(), key)
            .unwrap()
            .unwrap();
        assert_eq!(a.session_cookie.as_deref(), Some("lc_session=tok123"));
        assert_eq!(session_cookie("lc_session=; Path=/"), None);
    }

    #[test]
    fn refusals_are_reported() {
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n",
            "k",
        );
        assert_eq!(
            r,
            Err(HandshakeError::Status {
                status: 503,
                retry_after: Some("2".into())
            })
        );
        let r = parse_response(
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n",
            "k",
        );
        assert_eq!(r, Err(HandshakeError::BadAccept));
        assert!(matches!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", "k"),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
