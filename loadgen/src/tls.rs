//! `wss://`: rustls between a session's socket and its WebSocket bytes, as
//! bytes in and bytes out. The worker reads ciphertext from the socket and
//! hands it here for plaintext; it queues plaintext here and sends the
//! ciphertext that comes out. No I/O of its own, so the worker keeps its one
//! shared read buffer and its non-blocking sends, and tests need no socket.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use thiserror::Error;

/// Plaintext read out of rustls at a time.
const PLAIN_CHUNK: usize = 16 * 1024;

/// A TLS failure: the handshake (a certificate not trusted, say) or a
/// record the server sent.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("TLS: {0}")]
pub struct TlsError(pub String);

/// One session's TLS client connection.
pub struct TlsLayer {
    conn: rustls::ClientConnection,
    wire: Vec<u8>,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .field("wire", &self.wire.len())
            .finish()
    }
}

impl TlsLayer {
    /// A client connection to `name` with `config`; its ClientHello is
    /// ready in [`TlsLayer::wire`] at once.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<TlsLayer, TlsError> {
        let conn =
            rustls::ClientConnection::new(config, name).map_err(|e| TlsError(e.to_string()))?;
        let mut layer = TlsLayer {
            conn,
            wire: Vec::new(),
        };
        layer.drain_records()?;
        Ok(layer)
    }

    /// Takes ciphertext from the socket and appends the plaintext it
    /// carries to `plain`; handshake answers go to [`TlsLayer::wire`].
    pub fn receive(&mut self, mut cipher: &[u8], plain: &mut Vec<u8>) -> Result<(), TlsError> {
        while !cipher.is_empty() {
            self.conn
                .read_tls(&mut cipher)
                .map_err(|e| TlsError(e.to_string()))?;
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| TlsError(e.to_string()))?;
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 {
                let start = plain.len();
                plain.resize(start + left.min(PLAIN_CHUNK), 0);
                match self.conn.reader().read(&mut plain[start..]) {
                    Ok(n) => {
                        plain.truncate(start + n);
                        left = left.saturating_sub(n);
                        if n == 0 {
                            break;
                        }
                    }
                    Err(e) => {
                        plain.truncate(start);
                        return Err(TlsError(e.to_string()));
                    }
                }
            }
        }
        self.drain_records()
    }

    /// Encrypts `plain` (taken, leaving it empty) into [`TlsLayer::wire`];
    /// before the handshake ends rustls keeps it and sends it after.
    pub fn send(&mut self, plain: &mut Vec<u8>) -> Result<(), TlsError> {
        if !plain.is_empty() {
            self.conn
                .writer()
                .write_all(plain)
                .map_err(|e| TlsError(e.to_string()))?;
            plain.clear();
        }
        self.drain_records()
    }

    /// Ciphertext to send on the socket (the caller drains what it sent).
    pub fn wire(&mut self) -> &mut Vec<u8> {
        &mut self.wire
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn drain_records(&mut self) -> Result<(), TlsError> {
        while self.conn.wants_write() {
            self.conn
                .write_tls(&mut self.wire)
                .map_err(|e| TlsError(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    fn configs() -> (Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .unwrap();
        (Arc::new(client), Arc::new(server))
    }

    /// Moves the server's pending records to the client and back, until
    /// neither has anything to say; returns the plaintext each received.
    fn exchange(c: &mut TlsLayer, s: &mut rustls::ServerConnection) -> (Vec<u8>, Vec<u8>) {
        let (mut at_client, mut at_server) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let to_server = std::mem::take(c.wire());
            if !to_server.is_empty() {
                s.read_tls(&mut to_server.as_slice()).unwrap();
                s.process_new_packets().unwrap();
                let _ = s.reader().read_to_end(&mut at_server);
            }
            let mut to_client = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut to_client).unwrap();
            }
            if to_server.is_empty() && to_client.is_empty() {
                break;
            }
            c.receive(&to_client, &mut at_client).unwrap();
        }
        (at_client, at_server)
    }

    #[test]
    fn bytes_written_before_the_handshake_arrive_after_it_both_ways() {
        let (client, server) = configs();
        let mut c = TlsLayer::new(client, ServerName::try_from("localhost").unwrap()).unwrap();
        assert!(!c.wire().is_empty(), "the ClientHello is ready at once");
        let mut s = rustls::ServerConnection::new(server).unwrap();
        // The upgrade request goes in before the handshake is done.
        let mut req = b"GET /ws HTTP/1.1\r\n\r\n".to_vec();
        c.send(&mut req).unwrap();
        assert!(req.is_empty());
        let (_, at_server) = exchange(&mut c, &mut s);
        assert!(!c.is_handshaking());
        assert_eq!(at_server, b"GET /ws HTTP/1.1\r\n\r\n");
        s.writer()
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .unwrap();
        let (at_client, _) = exchange(&mut c, &mut s);
        assert_eq!(at_client, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    }

    #[test]
    fn a_server_not_trusted_is_an_error() {
        let (_, server) = configs();
        let (other, _) = configs();
        let mut c = TlsLayer::new(other, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        let hello = std::mem::take(c.wire());
        s.read_tls(&mut hello.as_slice()).unwrap();
        s.process_new_packets().unwrap();
        let mut back = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut back).unwrap();
        }
        let e = c.receive(&back, &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
    }
}
