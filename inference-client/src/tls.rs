//! TLS for upstream endpoints and the simulator's server: the rustls
//! settings (the system's trusted roots plus an optional private CA file on
//! the client side; a certificate and key on the server side), and
//! [`Stream`], the byte stream HTTP runs over, plain TCP or rustls's sans-IO
//! connection driven over monoio's TCP stream (so it works on both io
//! drivers, with the same owned-buffer calls as a plain stream).
//!
//! The crypto provider is *ring*, named explicitly rather than taken from the
//! process default, so another crate enabling a second provider cannot make
//! the choice ambiguous.

use std::io::{self, Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Ciphertext read from the socket per call.
const CIPHERTEXT_BUF: usize = 16 * 1024 + 256;

/// Why TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A file that should hold certificates holds none.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    /// Nothing to trust: the system's store is empty or missing and no CA
    /// file was given.
    #[error(
        "no trusted root certificates: the system's store is empty or missing ({0}); install the \
         system's CA certificates or give the server's CA as a PEM file (ca_file)"
    )]
    NoRoots(String),
    /// rustls refused the settings.
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Every certificate of a PEM file (at least one).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

/// The client settings for `https` endpoints: the system's roots (as
/// rustls-native-certs finds them, `SSL_CERT_FILE` and `SSL_CERT_DIR`
/// included) plus every certificate of `ca_file`, if given.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (system, _) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        for c in load_certificates(path)? {
            roots.add(c).map_err(|e| file_error(path, e))?;
        }
    }
    if roots.is_empty() {
        let why = native
            .errors
            .first()
            .map_or_else(|| "no certificate found".to_string(), |e| e.to_string());
        return Err(TlsError::NoRoots(why));
    }
    tracing::debug!(
        system_roots = system,
        ca_file = ca_file.map(|p| p.display().to_string()),
        "TLS roots loaded"
    );
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Server settings from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = load_certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

/// The name a server's certificate is checked against: a DNS name or an IP
/// address, as the URL gives it.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?}: {e}"))
}

/// A byte stream: plain TCP or TLS over TCP. Its calls take and give back
/// owned buffers the way monoio's do: [`Stream::read`] fills the buffer from
/// its start up to its capacity and sets its length.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// A TLS client connection over `tcp`, handshake done.
    pub async fn connect_tls(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<Stream> {
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = TlsStream::new(tcp, conn.into());
        s.handshake().await?;
        Ok(Stream::Tls(Box::new(s)))
    }

    /// A TLS server connection over `tcp`, handshake done.
    pub async fn accept_tls(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<Stream> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        let mut s = TlsStream::new(tcp, conn.into());
        s.handshake().await?;
        Ok(Stream::Tls(Box::new(s)))
    }

    /// Reads once into `buf` (from its start, up to its capacity); `Ok(0)`
    /// is the end of the stream.
    pub async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => s.write_all(buf).await,
        }
    }

    /// Whether this stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

/// rustls's connection state machine and the TCP stream it talks over.
pub struct TlsStream {
    tcp: TcpStream,
    tls: rustls::Connection,
    /// Ciphertext read from the socket; `cbuf[cpos..]` not yet given to rustls.
    cbuf: Vec<u8>,
    cpos: usize,
    /// Ciphertext to write (kept to reuse its allocation).
    obuf: Vec<u8>,
    /// The socket reached its end.
    eof: bool,
}

impl TlsStream {
    fn new(tcp: TcpStream, tls: rustls::Connection) -> Self {
        TlsStream {
            tcp,
            tls,
            cbuf: Vec::with_capacity(CIPHERTEXT_BUF),
            cpos: 0,
            obuf: Vec::new(),
            eof: false,
        }
    }

    async fn handshake(&mut self) -> io::Result<()> {
        while self.tls.is_handshaking() {
            if self.tls.wants_write() {
                self.flush().await?;
            } else if self.eof {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            } else {
                self.fill().await?;
            }
        }
        // The last flight (the client's Finished, the server's tickets).
        self.flush().await
    }

    /// Sends whatever rustls has to send.
    async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            let mut out = std::mem::take(&mut self.obuf);
            out.clear();
            while self.tls.wants_write() {
                self.tls.write_tls(&mut out)?;
            }
            let (r, b) = self.tcp.write_all(out).await;
            self.obuf = b;
            r?;
        }
        Ok(())
    }

    /// Gives rustls more ciphertext (what is left of the last socket read,
    /// else a new one) and processes it. A protocol error is sent to the
    /// peer as an alert, then returned.
    async fn fill(&mut self) -> io::Result<()> {
        if self.cpos >= self.cbuf.len() {
            let mut buf = std::mem::take(&mut self.cbuf);
            buf.clear();
            if buf.capacity() < CIPHERTEXT_BUF {
                buf.reserve(CIPHERTEXT_BUF);
            }
            let (r, b) = self.tcp.read(buf).await;
            self.cbuf = b;
            self.cpos = 0;
            if r? == 0 {
                self.eof = true;
                self.cbuf.clear();
            }
        }
        let mut rest = &self.cbuf[self.cpos..];
        let used = self.tls.read_tls(&mut rest)?;
        self.cpos += used;
        if let Err(e) = self.tls.process_new_packets() {
            let _ = self.flush().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(())
    }

    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let cap = buf.capacity().max(1);
        buf.clear();
        buf.resize(cap, 0);
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return (Ok(n), buf);
                }
                // A peer that closes without close_notify: HTTP's own framing
                // tells whether the response was whole.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    buf.clear();
                    return (Ok(0), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    buf.clear();
                    return (Err(e), buf);
                }
            }
            if self.eof && self.cpos >= self.cbuf.len() {
                buf.clear();
                return (Ok(0), buf);
            }
            let r = match self.fill().await {
                Ok(()) => self.flush().await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                buf.clear();
                return (Err(e), buf);
            }
        }
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let mut off = 0;
        while off < buf.len() {
            let n = match self.tls.writer().write(&buf[off..]) {
                Ok(n) => n,
                Err(e) => return (Err(e), buf),
            };
            if n == 0 && !self.tls.wants_write() {
                return (Err(io::ErrorKind::WriteZero.into()), buf);
            }
            off += n;
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
        }
        let n = buf.len();
        (Ok(n), buf)
    }
}
