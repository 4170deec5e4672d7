//! The target URL: `ws://HOST:PORT/PATH?QUERY` (the gateway) or
//! `http(s)://HOST:PORT/v1` (an inference server directly, see
//! [`crate::direct`]): what to connect to and the `Host` and `Origin` headers
//! the requests carry.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

use inference_client::http::TlsTarget;
use inference_client::tls::{self, TlsError};
use thiserror::Error;

/// How to speak to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`: the gateway's protocol v1 over WebSocket.
    Ws,
    /// `wss://`: the same over TLS.
    Wss,
    /// `http://`: an OpenAI-compatible inference server (direct mode).
    Http,
    /// `https://`: the same over TLS.
    Https,
}

impl Scheme {
    /// The port a URL without one means.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Ws | Scheme::Http => 80,
            Scheme::Wss | Scheme::Https => 443,
        }
    }
}

/// A parsed `ws://` or `http(s)://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `ws`, `http` or `https`.
    pub scheme: Scheme,
    /// Host as written (name or address).
    pub host: String,
    /// Port (80, or 443 for https, when not written).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// A URL loadgen cannot use.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// Not `ws://`, `wss://`, `http://` or `https://`.
    #[error(
        "'{0}': give ws:// or wss:// (the gateway) or http(s):// (an inference server directly)"
    )]
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

/// A TLS target whose settings cannot be made.
#[derive(Debug, Error)]
pub enum TargetTlsError {
    /// The roots or the CA file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The host is no name a certificate can carry.
    #[error("the host is no TLS server name: {0}")]
    ServerName(String),
}

impl Target {
    /// Parses `ws://`, `http://` or `https://HOST[:PORT][/PATH][?QUERY]`.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let (scheme, rest) = [
            ("ws://", Scheme::Ws),
            ("wss://", Scheme::Wss),
            ("http://", Scheme::Http),
            ("https://", Scheme::Https),
        ]
        .into_iter()
        .find_map(|(prefix, scheme)| url.strip_prefix(prefix).map(|rest| (scheme, rest)))
        .ok_or_else(|| TargetError::Scheme(url.to_string()))?;
        let default_port = scheme.default_port();
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
                None if after.is_empty() => default_port,
                None => return Err(malformed()),
            };
            (format!("[{h}]"), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| malformed())?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || host.contains(['@', ' ']) {
            return Err(malformed());
        }
        Ok(Target {
            scheme,
            host,
            port,
            path,
        })
    }

    /// Whether this is an inference server to load directly (`http(s)://`).
    pub fn is_direct(&self) -> bool {
        matches!(self.scheme, Scheme::Http | Scheme::Https)
    }

    /// Whether the connection is TLS (`wss://`, `https://`).
    pub fn is_tls(&self) -> bool {
        matches!(self.scheme, Scheme::Wss | Scheme::Https)
    }

    /// The TLS settings of a `wss://` or `https://` target (`None` for a
    /// plain one): the system's roots plus `ca`, and the host the
    /// certificate must name.
    pub fn tls(&self, ca: Option<&Path>) -> Result<Option<TlsTarget>, TargetTlsError> {
        if !self.is_tls() {
            return Ok(None);
        }
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        Ok(Some(TlsTarget {
            config: tls::client_config(ca)?,
            name: tls::server_name(host).map_err(TargetTlsError::ServerName)?,
        }))
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The target's own origin, which the gateway allows for site `demo`.
    pub fn origin(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.host_header())
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
        assert!(!t.is_direct());
    }

    #[test]
    fn parses_inference_server_urls() {
        let t = Target::parse("http://127.0.0.1:8000/v1").unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port, t.path.as_str()),
            (Scheme::Http, "127.0.0.1", 8000, "/v1")
        );
        assert!(t.is_direct());
        let t = Target::parse("wss://chat.example.com/ws?site=demo").unwrap();
        assert_eq!(
            (t.scheme, t.port, t.is_tls(), t.is_direct()),
            (Scheme::Wss, 443, true, false)
        );
        assert_eq!(t.origin(), "https://chat.example.com");
        let t = Target::parse("https://llm.example.com/v1").unwrap();
        assert_eq!((t.scheme, t.port), (Scheme::Https, 443));
        assert_eq!(t.host_header(), "llm.example.com");
        let t = Target::parse("https://llm.example.com:8443").unwrap();
        assert_eq!(
            (t.host_header().as_str(), t.path.as_str()),
            ("llm.example.com:8443", "/")
        );
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(matches!(
            Target::parse("ftp://h/ws"),
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
