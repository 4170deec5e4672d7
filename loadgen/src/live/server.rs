//! `--metrics-listen`: a blocking std listener on a thread of its own that
//! answers `GET /metrics` with the latest snapshot in the text format, 404
//! to other paths and 405 to other methods. [`answer`] is the sans-IO part
//! (bytes in, response out); the thread only moves bytes. One connection at
//! a time, each bounded by [`IO_TIMEOUT`]: a scraper asks every few seconds,
//! and a stuck client only delays the next scrape, never the run.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};
use inference_client::http::response::encode_head;

use super::exposition;

/// Longest a connection may take to send its request and read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// What to do with the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The request head is not complete yet.
    NeedMore,
    /// Send this and close.
    Reply(Vec<u8>),
}

fn reply(status: StatusCode, content_type: &'static str, body: &[u8], allow: bool) -> Vec<u8> {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    if allow {
        h.insert(ALLOW, HeaderValue::from_static("GET"));
    }
    let mut out = Vec::with_capacity(128 + body.len());
    encode_head(&resp, &mut out);
    out.extend_from_slice(body);
    out
}

/// The response to the request at the start of `buf`; `metrics` makes the
/// body of a `GET /metrics` (only then).
pub fn answer(buf: &[u8], metrics: impl FnOnce() -> String) -> Answer {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut fields);
    let text = "text/plain; charset=utf-8";
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => Answer::NeedMore,
        Ok(httparse::Status::Partial) => Answer::Reply(reply(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            text,
            b"request head too large\n",
            false,
        )),
        Err(_) => Answer::Reply(reply(
            StatusCode::BAD_REQUEST,
            text,
            b"bad request\n",
            false,
        )),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            if path != "/metrics" {
                Answer::Reply(reply(
                    StatusCode::NOT_FOUND,
                    text,
                    b"not found: loadgen serves /metrics\n",
                    false,
                ))
            } else if req.method != Some("GET") {
                Answer::Reply(reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    text,
                    b"method not allowed: GET /metrics\n",
                    true,
                ))
            } else {
                let body = metrics();
                Answer::Reply(reply(
                    StatusCode::OK,
                    exposition::CONTENT_TYPE,
                    body.as_bytes(),
                    false,
                ))
            }
        }
    }
}

/// The running listener.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves on `listener` until [`Server::stop`]; `metrics` renders the
    /// body of each scrape.
    pub fn spawn(
        listener: TcpListener,
        metrics: impl Fn() -> String + Send + 'static,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("loadgen-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Acquire) {
                        break;
                    }
                    match conn {
                        Ok(s) => {
                            let _ = serve(s, &metrics);
                        }
                        // Out of descriptors, say: back off rather than spin.
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the thread, if it can be woken.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        let Some(thread) = self.thread.take() else {
            return;
        };
        // `accept` has no timeout: a connection of our own wakes it to see
        // the flag. If even that fails the thread is left to the process's
        // exit rather than joined forever.
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        if TcpStream::connect_timeout(&SocketAddr::new(ip, self.addr.port()), IO_TIMEOUT).is_ok() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve(mut s: TcpStream, metrics: &dyn Fn() -> String) -> io::Result<()> {
    let deadline = Instant::now() + IO_TIMEOUT;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let out = loop {
        match answer(&buf, metrics) {
            Answer::Reply(out) => break out,
            Answer::NeedMore => {}
        }
        if Instant::now() >= deadline {
            return Ok(());
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    s.write_all(&out)?;
    s.flush()?;
    // Half-close, then drain what the client still sends, so that closing
    // does not reset the connection before it has read the answer.
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(s.read(&mut chunk), Ok(n) if n > 0) {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a: Answer) -> String {
        match a {
            Answer::Reply(b) => String::from_utf8(b).unwrap(),
            Answer::NeedMore => panic!("no reply"),
        }
    }

    #[test]
    fn get_metrics_is_the_exposition_and_nothing_else_is() {
        let ok = text(answer(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", || {
            "a 1\n".into()
        }));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4\r\n"),
            "{ok}"
        );
        assert!(ok.contains("content-length: 4\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\na 1\n"), "{ok}");
        let q = text(answer(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", || "b".into()));
        assert!(q.starts_with("HTTP/1.1 200"), "{q}");

        let never = || -> String { panic!("rendered for a request that is not a scrape") };
        let nf = text(answer(b"GET / HTTP/1.1\r\n\r\n", never));
        assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
        let na = text(answer(b"POST /metrics HTTP/1.1\r\n\r\n", never));
        assert!(na.starts_with("HTTP/1.1 405 "), "{na}");
        assert!(na.contains("allow: GET\r\n"), "{na}");
        let bad = text(answer(b"\x01\x02 nonsense\r\n\r\n", never));
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        assert_eq!(answer(b"GET /metr", never), Answer::NeedMore);
        let big = vec![b'a'; MAX_REQUEST + 1];
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend_from_slice(&big);
        assert!(text(answer(&huge, never)).starts_with("HTTP/1.1 431 "));
    }

    #[test]
    fn it_serves_over_tcp_and_stops() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = Server::spawn(l, || "loadgen_x 1\n".into()).unwrap();
        let addr = server.local_addr();
        let fetch = |req: &[u8]| {
            let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            s.write_all(req).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let got = fetch(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.ends_with("loadgen_x 1\n"), "{got}");
        let got = fetch(b"GET /other HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 404"), "{got}");
        server.stop();
        assert!(
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err(),
            "the listener is closed once stopped"
        );
    }
}
