//! The client's I/O shell for one HTTP/1.1 connection on monoio: connect
//! (and, for `https`, the TLS handshake) with a timeout, write a request,
//! read the response into the sans-IO [`ResponseDecoder`]. It only moves
//! bytes; every decision about them is made by the decoders and by the
//! caller's [`ResponseSink`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

use super::response::{Part, ResponseDecoder};
use crate::error::Fault;
use crate::tls::Stream;

/// How to speak TLS to an endpoint: the client settings and the name its
/// certificate must carry.
#[derive(Clone)]
pub struct TlsTarget {
    /// rustls's client settings (the trusted roots).
    pub config: Arc<rustls::ClientConfig>,
    /// The host name or address of the URL.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The roots are hundreds of certificates: the name says which target.
        f.debug_struct("TlsTarget")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Bytes read per `read` call.
pub const READ_BUF: usize = 16 * 1024;

/// One connection to an upstream server.
pub struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    /// Whether this connection already carried a request (a stale keep-alive
    /// connection may be closed by the server; such a request is retried once).
    pub reused: bool,
}

impl Conn {
    /// Connects (and with `tls`, completes the handshake), giving up after
    /// `timeout` in all.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&TlsTarget>,
        timeout: Duration,
    ) -> Result<Conn, Fault> {
        let open = async {
            let tcp = TcpStream::connect_addr(addr)
                .await
                .map_err(|e| Fault::Connect(format!("{addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => Ok(Stream::Plain(tcp)),
                Some(t) => Stream::connect_tls(tcp, t.config.clone(), t.name.clone())
                    .await
                    .map_err(|e| Fault::Connect(tls_failure(addr, &e))),
            }
        };
        match monoio::time::timeout(timeout, open).await {
            Ok(Ok(stream)) => Ok(Conn {
                stream,
                rbuf: Vec::with_capacity(READ_BUF),
                reused: false,
            }),
            Ok(Err(f)) => Err(f),
            Err(_) => Err(Fault::Connect(format!(
                "{addr}: timed out after {timeout:?}"
            ))),
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, data: Vec<u8>) -> Result<(), Fault> {
        let (r, _) = self.stream.write_all(data).await;
        r.map(|_| ())
            .map_err(|e| Fault::Closed(format!("writing the request: {e}")))
    }

    /// Reads once, waiting at most `timeout`; `Ok(0)` is end of file. The
    /// bytes are then in [`Conn::buf`].
    pub async fn read(&mut self, timeout: Duration) -> Result<usize, Fault> {
        let mut buf = std::mem::take(&mut self.rbuf);
        if buf.capacity() < READ_BUF {
            buf.reserve(READ_BUF);
        }
        match monoio::time::timeout(timeout, self.stream.read(buf)).await {
            Ok((r, b)) => {
                self.rbuf = b;
                r.map_err(|e| Fault::Closed(e.to_string()))
            }
            Err(_) => Err(Fault::Timeout(timeout)),
        }
    }

    /// The bytes of the last read.
    pub fn buf(&self) -> &[u8] {
        &self.rbuf
    }
}

/// A failed TLS handshake in words, with the likely remedy when the
/// server's certificate is not trusted.
fn tls_failure(addr: SocketAddr, e: &std::io::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("unknown issuer") {
        "; the server's certificate is not signed by a trusted CA: add its CA as a PEM file (ca_file, --inference-ca)"
    } else if text.contains("NotValidForName") {
        "; the certificate is not for this host name: use the name it was issued to in the URL"
    } else {
        ""
    };
    format!("{addr}: TLS handshake failed: {text}{hint}")
}

/// Where the parts of a response go.
pub trait ResponseSink {
    /// One part; an error stops reading (and the connection is not reused).
    fn part(&mut self, part: Part<'_>) -> Result<(), Fault>;
    /// Called after the parts of each network read, with the time the read
    /// returned (to batch work per read and measure the client's own overhead).
    fn after_read(&mut self, _read_at: Instant) {}
}

/// Why reading a response failed.
#[derive(Debug)]
pub struct ReadFailure {
    /// What went wrong.
    pub fault: Fault,
    /// Whether any byte of the response had arrived (if none did on a reused
    /// connection, the server had probably closed it: retry on a new one).
    pub received_any: bool,
}

/// Reads one response from `conn` into `sink`, each read bounded by
/// `timeout`. Returns whether the connection can carry another request.
pub async fn read_response(
    conn: &mut Conn,
    timeout: Duration,
    sink: &mut impl ResponseSink,
) -> Result<bool, ReadFailure> {
    let mut dec = ResponseDecoder::new();
    let mut received_any = false;
    let fail = |fault, received_any| ReadFailure {
        fault,
        received_any,
    };
    loop {
        let n = conn
            .read(timeout)
            .await
            .map_err(|f| fail(f, received_any))?;
        let at = Instant::now();
        let mut err = None;
        let mut on = |p: Part<'_>| {
            if err.is_none() {
                if let Err(e) = sink.part(p) {
                    err = Some(e);
                }
            }
        };
        if n == 0 {
            let r = dec.eof(&mut on);
            if let Some(e) = err {
                return Err(fail(e, received_any));
            }
            return match r {
                Ok(()) => {
                    sink.after_read(at);
                    Ok(false)
                }
                Err(e) if !received_any => Err(fail(
                    Fault::Closed(format!("server closed the connection: {e}")),
                    false,
                )),
                Err(e) => Err(fail(Fault::Closed(e.to_string()), true)),
            };
        }
        received_any = true;
        let used = dec
            .feed(&conn.rbuf[..n], &mut on)
            .map_err(|e| fail(Fault::Protocol(e.to_string()), true))?;
        if let Some(e) = err {
            return Err(fail(e, true));
        }
        sink.after_read(at);
        if dec.is_done() {
            // Bytes past the response would be a pipelining error: don't reuse.
            return Ok(used == n && dec.head().is_some_and(|h| h.keep_alive));
        }
    }
}

/// A sink that keeps the status, `Retry-After` and up to `limit` body bytes.
#[derive(Debug)]
pub struct Collect {
    /// The status, once the head arrived.
    pub status: u16,
    /// `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// The body (up to the limit).
    pub body: Vec<u8>,
    /// Most body bytes kept.
    pub limit: usize,
    /// Whether the body was longer than the limit.
    pub truncated: bool,
}

impl Collect {
    /// A collector keeping up to `limit` body bytes.
    pub fn new(limit: usize) -> Self {
        Collect {
            status: 0,
            retry_after: None,
            body: Vec::new(),
            limit,
            truncated: false,
        }
    }
}

impl ResponseSink for Collect {
    fn part(&mut self, part: Part<'_>) -> Result<(), Fault> {
        match part {
            Part::Head(h) => {
                self.status = h.status.as_u16();
                self.retry_after = h.retry_after();
            }
            Part::Data(d) => {
                let room = self.limit.saturating_sub(self.body.len());
                if d.len() > room {
                    self.truncated = true;
                }
                self.body.extend_from_slice(&d[..d.len().min(room)]);
            }
            Part::End => {}
        }
        Ok(())
    }
}
