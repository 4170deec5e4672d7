//! The client's I/O shell for one HTTP/1.1 connection on monoio: connect with
//! a timeout, write a request, read the response into the sans-IO
//! [`ResponseDecoder`]. It only moves bytes; every decision about them is made
//! by the decoders and by the caller's [`ResponseSink`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::response::{Part, ResponseDecoder};
use crate::error::Fault;

/// Bytes read per `read` call.
pub const READ_BUF: usize = 16 * 1024;

/// One connection to an upstream server.
pub struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Whether this connection already carried a request (a stale keep-alive
    /// connection may be closed by the server; such a request is retried once).
    pub reused: bool,
}

impl Conn {
    /// Connects, giving up after `timeout`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, Fault> {
        match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(Conn {
                    stream,
                    rbuf: Vec::with_capacity(READ_BUF),
                    reused: false,
                })
            }
            Ok(Err(e)) => Err(Fault::Connect(format!("{addr}: {e}"))),
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
