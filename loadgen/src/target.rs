//! The target URL (`ws://HOST:PORT/PATH?QUERY`): what to connect to and the
//! `Host` and `Origin` headers the opening handshake carries.

use std::net::{SocketAddr, ToSocketAddrs};

use thiserror::Error;

/// A parsed `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host as written (name or address).
    pub host: String,
    /// Port (80 when not written).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// A URL loadgen cannot use.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Not `ws://`.
    #[error("'{0}': only ws:// URLs are supported (wss:// needs TLS, which loadgen does not speak; put a TLS terminator's plain side under test)")]
    Scheme(String),
    /// No host, or a bad port.
    #[error("'{0}' is not a URL of the form ws://HOST:PORT/ws?site=ID")]
    Malformed(String),
    /// The host name did not resolve.
    #[error("cannot resolve '{host}': {reason}")]
    Resolve {
        /// Host.
        host: String,
        /// Resolver message.
        reason: String,
    },
}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH][?QUERY]`.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| TargetError::Scheme(url.to_string()))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let malformed = || TargetError::Malformed(url.to_string());
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            // [v6]:port
            let (h, after) = h.split_once(']').ok_or_else(malformed)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| malformed())?,
                None if after.is_empty() => 80,
                None => return Err(malformed()),
            };
            (format!("[{h}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| malformed())?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(malformed());
        }
        Ok(Target { host, port, path })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The target's own origin, which the gateway allows for site `demo`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.host_header())
    }

    /// Resolves the host to one socket address (the first the resolver gives).
    pub fn resolve(&self) -> Result<SocketAddr, TargetError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        (host, self.port)
            .to_socket_addrs()
            .map_err(|e| TargetError::Resolve {
                host: self.host.clone(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| TargetError::Resolve {
                host: self.host.clone(),
                reason: "no addresses".to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gateway_urls() {
        let t = Target::parse("ws://127.0.0.1:8080/ws?site=demo").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/ws?site=demo")
        );
        assert_eq!(t.origin(), "http://127.0.0.1:8080");
        let t = Target::parse("ws://localhost?site=x").unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.host_header().as_str()),
            (80, "/?site=x", "localhost")
        );
        let t = Target::parse("ws://[::1]:9000/ws").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("[::1]", 9000));
        assert_eq!(t.resolve().unwrap().port(), 9000);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(matches!(
            Target::parse("wss://h/ws"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("http://h/ws"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("ws://:80/ws"),
            Err(TargetError::Malformed(_))
        ));
        assert!(matches!(
            Target::parse("ws://h:port/ws"),
            Err(TargetError::Malformed(_))
        ));
    }
}
