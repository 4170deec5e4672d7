//! A small protocol v1 server to aim loadgen at when the gateway is not the
//! subject: for tests (acks after a known delay, stalls, `busy`) and for
//! measuring loadgen itself (its floor against a zero-delay server, how many
//! sessions one process holds). One monoio runtime per thread, each with its
//! own `SO_REUSEPORT` listener, framing by `wire::ws`; answers are planned
//! by [`script`].

pub mod script;

use inference_client::runtime::{self, IoDriver};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};
use socket2::{Domain, Socket, Type};
use wire::ws::frame::encode_frame;
use wire::ws::{Event, Limits, OpCode, Receiver, Role};

use crate::run::net::{self as rawnet, Io};
use script::{answer, queue_delay, release_at, Behaviour, ConnState, Planned};

/// How to run the test server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// Threads (one runtime and listener each).
    pub threads: usize,
    /// What it answers.
    pub behaviour: Behaviour,
    /// Use the epoll driver even where io_uring works.
    pub epoll: bool,
}

const LIMITS: Limits = Limits {
    max_frame: 1 << 20,
    max_message: 1 << 20,
};

/// Binds the listeners and starts the server threads; returns the bound
/// address at once. The threads run until the process exits.
pub fn spawn(cfg: Config) -> io::Result<SocketAddr> {
    let mut listeners = Vec::new();
    let mut addr = cfg.listen;
    for _ in 0..cfg.threads.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        addr = s
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        listeners.push(std::net::TcpListener::from(s));
    }
    for (i, l) in listeners.into_iter().enumerate() {
        let behaviour = cfg.behaviour.clone();
        let epoll = cfg.epoll;
        std::thread::Builder::new()
            .name(format!("testserver-{i}"))
            .spawn(move || serve_thread(l, behaviour, epoll))?;
    }
    Ok(addr)
}

fn serve_thread(l: std::net::TcpListener, b: Behaviour, epoll: bool) {
    let choice = if epoll {
        IoDriver::Epoll
    } else {
        IoDriver::Auto
    };
    if let Err(e) = runtime::block_on(choice, |_| accept_loop(l, b)) {
        eprintln!("loadgen-testserver: cannot start a runtime: {e}");
    }
}

/// What one server thread shares among its connections.
struct Shared {
    b: Behaviour,
    buf: RefCell<Box<[u8]>>,
    messages: Cell<u64>,
    /// When the one-at-a-time queue (`service_time`) empties.
    free_at: Cell<Option<Instant>>,
    convs: Cell<u64>,
    stall: Cell<Option<(Instant, Instant)>>,
}

async fn accept_loop(l: std::net::TcpListener, b: Behaviour) {
    let _ = l.set_nonblocking(true);
    let Ok(listener) = TcpListener::from_std(l) else {
        return;
    };
    let shared = Rc::new(Shared {
        b,
        buf: RefCell::new(vec![0u8; 64 * 1024].into_boxed_slice()),
        messages: Cell::new(0),
        free_at: Cell::new(None),
        convs: Cell::new(0),
        stall: Cell::new(None),
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(connection(shared.clone(), stream));
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

struct Conn {
    stream: TcpStream,
    fd: RawFd,
    out: RefCell<Vec<u8>>,
    flushing: Cell<bool>,
    dead: Cell<bool>,
}

impl Conn {
    fn push(self: &Rc<Self>, json: &str) {
        encode_frame(
            &mut self.out.borrow_mut(),
            OpCode::Text,
            json.as_bytes(),
            None,
        );
        self.flush();
    }

    fn flush(self: &Rc<Self>) {
        if self.flushing.get() || self.dead.get() {
            return;
        }
        if let Io::WouldBlock = self.try_send() {
            self.flushing.set(true);
            let c = self.clone();
            monoio::spawn(async move {
                while c.stream.writable(false).await.is_ok() {
                    if !matches!(c.try_send(), Io::WouldBlock) {
                        break;
                    }
                }
                c.flushing.set(false);
            });
        }
    }

    fn try_send(&self) -> Io {
        let io = rawnet::send_queued(self.fd, &mut self.out.borrow_mut());
        if matches!(io, Io::Closed) {
            self.dead.set(true);
        }
        io
    }
}

async fn connection(shared: Rc<Shared>, stream: TcpStream) {
    let fd = stream.as_raw_fd();
    let conn = Rc::new(Conn {
        stream,
        fd,
        out: RefCell::new(Vec::new()),
        flushing: Cell::new(false),
        dead: Cell::new(false),
    });
    let mut conv = shared.convs.get() + 1;
    shared.convs.set(conv);
    let mut pending: Vec<u8> = Vec::new();
    let mut upgraded = false;
    let mut rx = Receiver::default();
    let mut state = ConnState::default();
    loop {
        if conn.stream.readable(false).await.is_err() {
            return;
        }
        let mut eof = false;
        loop {
            let mut buf = shared.buf.borrow_mut();
            let n = match rawnet::recv(fd, &mut buf) {
                Io::Done(n) => n,
                Io::WouldBlock => break,
                Io::Closed => {
                    eof = true;
                    break;
                }
            };
            pending.extend_from_slice(&buf[..n]);
            drop(buf);
            if !upgraded {
                match upgrade(&pending) {
                    Upgrade::Partial => continue,
                    Upgrade::Bad => {
                        conn.out
                            .borrow_mut()
                            .extend_from_slice(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        conn.flush();
                        return;
                    }
                    Upgrade::Done {
                        used,
                        response,
                        resumed,
                    } => {
                        pending.drain(..used);
                        // A cookie from an earlier upgrade takes up that conversation.
                        if let Some(c) = resumed {
                            conv = c;
                            state.resumed = true;
                        }
                        let response = response.replace("{conv}", &conv.to_string());
                        conn.out.borrow_mut().extend_from_slice(response.as_bytes());
                        conn.flush();
                        upgraded = true;
                    }
                }
            }
            let mut closed = false;
            let mut planned: Vec<Planned> = Vec::new();
            let received = Instant::now();
            let used = rx.feed(&mut pending, Role::Server, &LIMITS, |ev| match ev {
                Event::Text(t) => {
                    let mut n = shared.messages.get();
                    let mut answers = answer(&shared.b, &mut state, conv, &mut n, t);
                    let was = shared.messages.replace(n);
                    if n > was {
                        let mut free_at = shared.free_at.get();
                        let wait = queue_delay(shared.b.service_time, &mut free_at, received);
                        shared.free_at.set(free_at);
                        for p in &mut answers {
                            p.after += wait;
                        }
                    }
                    planned.extend(answers);
                    if n > was && shared.stall.get().is_none() {
                        if let Some(after) = shared.b.stall_after {
                            let start = received + after;
                            shared.stall.set(Some((start, start + shared.b.stall_for)));
                        }
                    }
                }
                Event::Ping(p) => encode_frame(&mut conn.out.borrow_mut(), OpCode::Pong, p, None),
                Event::Close(_) => {
                    wire::ws::frame::encode_close(&mut conn.out.borrow_mut(), 1000, "", None);
                    closed = true;
                }
                _ => {}
            });
            match used {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(e) => {
                    wire::ws::frame::encode_close(
                        &mut conn.out.borrow_mut(),
                        e.close_code(),
                        "",
                        None,
                    );
                    closed = true;
                }
            }
            schedule(&shared, &conn, received, planned);
            conn.flush();
            if closed {
                rawnet::shutdown_write(fd);
                return;
            }
        }
        if eof || conn.dead.get() {
            return;
        }
    }
}

/// Sends planned frames now or at their time, in order, honouring the stall.
fn schedule(shared: &Rc<Shared>, conn: &Rc<Conn>, received: Instant, planned: Vec<Planned>) {
    if planned.is_empty() {
        return;
    }
    let stall = shared.stall.get();
    let immediate = planned
        .iter()
        .all(|p| p.after.is_zero() && release_at(received, stall) <= Instant::now());
    if immediate {
        for p in &planned {
            encode_frame(
                &mut conn.out.borrow_mut(),
                OpCode::Text,
                p.json.as_bytes(),
                None,
            );
        }
        return;
    }
    let conn = conn.clone();
    let shared = shared.clone();
    monoio::spawn(async move {
        for p in planned {
            let at = release_at(received + p.after, shared.stall.get());
            if at > Instant::now() {
                monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
            }
            if conn.dead.get() {
                return;
            }
            conn.push(&p.json);
        }
    });
}

enum Upgrade {
    Partial,
    Bad,
    Done {
        used: usize,
        response: String,
        /// The conversation a `lc_session` cookie names.
        resumed: Option<u64>,
    },
}

fn upgrade(buf: &[u8]) -> Upgrade {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => return Upgrade::Partial,
        _ => return Upgrade::Bad,
    };
    let Some(key) = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|h| h.value)
    else {
        return Upgrade::Bad;
    };
    let accept = tungstenite::handshake::derive_accept_key(key);
    let resumed = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| {
            String::from_utf8_lossy(h.value)
                .split(';')
                .map(|p| p.trim().to_string())
                .collect::<Vec<_>>()
        })
        .find_map(|pair| {
            pair.strip_prefix("lc_session=c")
                .and_then(|n| n.parse().ok())
        });
    Upgrade::Done {
        used,
        // `{conv}` is filled in by the caller, who knows the conversation.
        response: format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSet-Cookie: lc_session=c{{conv}}; HttpOnly; SameSite=Lax; Path=/\r\n\r\n"
        ),
        resumed,
    }
}
