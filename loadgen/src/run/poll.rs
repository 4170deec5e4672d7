//! One worker thread of a `--transport poll` run: the I/O shell of
//! [`crate::poll`]. Like the WebSocket worker (`worker`) it is a monoio
//! runtime (io_uring or epoll) pinned to a core, carries its share of the
//! sessions and arrivals, speaks to the coordinator with the same
//! [`Report`] and [`Control`] messages, ticks on the run's whole seconds and
//! marks everything with the stage it started in (`worker::mark_at`). Each
//! session holds two keep-alive connections, one task each: the send
//! connection carries `POST [hello]` and then a POST of whatever messages are
//! due whenever the previous POST is answered; the recv connection keeps a
//! `GET /poll/recv` outstanding at all times. Sockets are awaited for
//! readiness and read into the worker's one buffer, so a held recv owns no
//! read buffer. Every decision about the bytes is [`PollSession`]'s.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inference_client::runtime;
use monoio::net::TcpStream;

use super::net::{self, Io};
use super::schedule::{self, Pacer};
use super::signal::Signal;
use super::worker::{Control, Plan, Report, WorkerSpec};
use crate::arrivals::Profile;
use crate::metrics::{ErrorKind, Mark, Recorder};
use crate::poll::{Channel, Endpoints, PollError, PollSession, Step};
use crate::scenario::{Model, Scenario, Share, ThinkDist};
use crate::tls::TlsLayer;

/// Size of the one read buffer a worker shares among all its connections.
const RECV_BUF: usize = 64 * 1024;
/// Most sessions a worker has opening at once.
const MAX_CONNECTING: u64 = 1_024;
/// How often session targets are adjusted.
const CONTROL_EVERY: Duration = Duration::from_millis(5);
/// How often in-flight messages are checked against the timeout.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Runs a long-polling worker on the current thread until it is done.
pub fn run(spec: WorkerSpec) {
    if let Some(cpu) = spec.cpu {
        let _ = monoio::utils::bind_to_cpu_set([cpu]);
    }
    // Wake-ups as close to their time as the kernel allows (default slack is 50us).
    // SAFETY: plain prctl on the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let tx = spec.tx.clone();
    let index = spec.index;
    if let Err(e) = runtime::block_on(spec.driver, move |kind| worker_main(spec, kind.as_str())) {
        let _ = tx.send(Report::Failed {
            worker: index,
            error: format!("cannot start a runtime: {e}"),
        });
    }
}

/// Where a session is, as the shell counts sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Started, no `welcome` yet.
    Connecting,
    /// `welcome` received.
    Open,
    /// Failed or closed; its tasks are ending.
    Ended,
}

/// How a session ends.
enum End {
    /// It failed with this kind (before or after its welcome).
    Failed(ErrorKind, String),
    /// loadgen closed it (fewer sessions wanted, or the run is over).
    Closed,
}

/// One session as the shell holds it.
struct Conn {
    n: u64,
    slot: Cell<usize>,
    listed: Cell<bool>,
    state: Cell<State>,
    /// Scaled down while opening: close once open.
    close_later: Cell<bool>,
    ps: RefCell<PollSession>,
    /// Per channel: there may be a request to write.
    wake: [Signal; 2],
    /// Per channel: the session ended, the task should too.
    stop: [Signal; 2],
    /// Opened, or ended before opening.
    greeted: Signal,
    settled: Signal,
}

impl Conn {
    fn ended(&self) -> bool {
        self.state.get() == State::Ended
    }
}

struct Worker {
    index: u32,
    share: Share,
    plan: Arc<Plan>,
    endpoints: Endpoints,
    tx: flume::Sender<Report>,
    run_start: Instant,
    sessions_profile: Profile,
    rec: RefCell<Recorder>,
    conns: RefCell<Vec<Rc<Conn>>>,
    rr: Cell<usize>,
    rng: RefCell<fastrand::Rng>,
    recv_buf: RefCell<Box<[u8]>>,
    next_conn: Cell<u64>,
    open: Cell<u64>,
    peak_open: Cell<u64>,
    connecting: Cell<u64>,
    failed: Cell<u64>,
    first_error: RefCell<Option<String>>,
    t0: Cell<Option<Instant>>,
    stopping: Cell<bool>,
    finished: Cell<bool>,
}

impl Worker {
    fn scenario(&self) -> &Scenario {
        &self.plan.scenario
    }

    fn mark_at(&self, at: Instant) -> Mark {
        schedule::mark_at(self.scenario(), self.t0.get(), at)
    }

    fn mark_of(&self, t: f64) -> Mark {
        schedule::mark_of(self.scenario(), t)
    }

    /// Sessions this worker should hold at `t` seconds into the stages.
    fn target_sessions(&self, t: f64) -> u64 {
        self.share.count(self.sessions_profile.at(t).floor() as u64)
    }

    fn note_error(&self, e: String) {
        self.first_error.borrow_mut().get_or_insert(e);
    }

    fn remove(&self, conn: &Rc<Conn>) {
        if !conn.listed.replace(false) {
            return;
        }
        let mut v = self.conns.borrow_mut();
        let i = conn.slot.get();
        v.swap_remove(i);
        if i < v.len() {
            v[i].slot.set(i);
        }
    }

    fn in_flight(&self) -> usize {
        self.conns
            .borrow()
            .iter()
            .map(|c| c.ps.borrow().in_flight())
            .sum()
    }
}

async fn worker_main(spec: WorkerSpec, driver: &'static str) {
    let plan = spec.plan.clone();
    let endpoints = match Endpoints::new(&plan.target) {
        Ok(e) => e,
        Err(e) => {
            let _ = spec.tx.send(Report::Failed {
                worker: spec.index,
                error: e.to_string(),
            });
            return;
        }
    };
    let share = Share::of(plan.shard, spec.index, spec.workers);
    let seed = plan.scenario.seed ^ share.part.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let w = Rc::new(Worker {
        index: spec.index,
        share,
        sessions_profile: plan.scenario.sessions_profile(),
        plan,
        endpoints,
        tx: spec.tx.clone(),
        run_start: spec.run_start,
        rec: RefCell::new(Recorder::default()),
        conns: RefCell::new(Vec::new()),
        rr: Cell::new(0),
        rng: RefCell::new(fastrand::Rng::with_seed(seed)),
        recv_buf: RefCell::new(vec![0u8; RECV_BUF].into_boxed_slice()),
        next_conn: Cell::new(0),
        open: Cell::new(0),
        peak_open: Cell::new(0),
        connecting: Cell::new(0),
        failed: Cell::new(0),
        first_error: RefCell::new(None),
        t0: Cell::new(None),
        stopping: Cell::new(false),
        finished: Cell::new(false),
    });
    let _ = w.tx.send(Report::Up {
        worker: w.index,
        driver,
    });
    monoio::spawn(reporter(w.clone()));

    // Connect phase: the first stage's sessions, before the clock starts.
    match spec.control.recv_async().await {
        Ok(Control::Connect) => {}
        _ => return finish(&w),
    }
    let initial = w.target_sessions(0.0);
    let connect_secs = initial as f64 / (w.scenario().connect_rate * w.share.fraction());
    let deadline = Instant::now() + Duration::from_secs_f64(connect_secs) + w.plan.connect_timeout;
    let mut pacer = Pacer::new(w.scenario().connect_rate * w.share.fraction());
    // Each session is tried once here; the stages replace the ones that failed.
    let mut started = 0;
    while started < initial && Instant::now() < deadline {
        let n = pacer.allowed().min(initial - started);
        for _ in 0..n {
            open_session(&w);
        }
        started += n;
        monoio::time::sleep(CONTROL_EVERY).await;
    }
    while w.connecting.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(CONTROL_EVERY).await;
    }
    let _ = w.tx.send(Report::Ready {
        worker: w.index,
        opened: w.open.get(),
        failed: w.failed.get(),
        first_error: w.first_error.borrow().clone(),
    });
    let t0 = match spec.control.recv_async().await {
        Ok(Control::Start(t0)) => t0,
        _ => {
            stop_sessions(&w);
            return finish(&w);
        }
    };
    monoio::time::sleep_until(monoio::time::Instant::from_std(t0)).await;
    w.t0.set(Some(t0));
    let end = t0 + w.scenario().total();

    monoio::spawn(controller(w.clone(), end));
    monoio::spawn(sweeper(w.clone()));
    let abort = spec.control.clone();
    let w2 = w.clone();
    monoio::spawn(async move {
        if let Ok(Control::Abort) = abort.recv_async().await {
            w2.stopping.set(true);
        }
    });
    match w.scenario().model {
        Model::Open => {
            if let Err(e) = open_model(&w, t0, end).await {
                w.note_error(format!("arrival timer failed: {e}"));
            }
        }
        Model::Closed => {
            let open: Vec<Rc<Conn>> = w.conns.borrow().clone();
            for c in open {
                if c.state.get() == State::Open {
                    monoio::spawn(closed_loop(w.clone(), c));
                }
            }
        }
    }
    // Stages without arrivals (a cool-down, say) still hold their sessions to the end.
    while Instant::now() < end && !w.stopping.get() {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    // Drain: wait for what is in flight, up to the message timeout.
    let drain_until = Instant::now() + w.scenario().timeout.0;
    while !w.stopping.get() && w.in_flight() > 0 && Instant::now() < drain_until {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_sessions(&w);
    finish(&w);
}

fn finish(w: &Rc<Worker>) {
    w.finished.set(true);
    let measured = Box::new(w.rec.borrow_mut().finish());
    let _ = w.tx.send(Report::Done {
        worker: w.index,
        measured,
        peak_open: w.peak_open.get(),
    });
}

/// Settles what is still in flight as timeouts and ends every session: a
/// long-polling session has no close handshake, its connections just go.
fn stop_sessions(w: &Rc<Worker>) {
    w.stopping.set(true);
    let all: Vec<Rc<Conn>> = std::mem::take(&mut *w.conns.borrow_mut());
    for c in &all {
        c.listed.set(false);
        c.ps.borrow_mut()
            .fail(ErrorKind::Timeout, &mut w.rec.borrow_mut());
        end_session(w, c, End::Closed);
    }
}

/// Sends each worker's interval once a second, on the second since the run
/// started (as the WebSocket worker's reporter does).
async fn reporter(w: Rc<Worker>) {
    schedule::ticks(
        w.run_start,
        || w.finished.get(),
        |tick| {
            let interval = Box::new(w.rec.borrow_mut().take());
            let _ = w.tx.send(Report::Tick {
                worker: w.index,
                tick,
                interval,
                open: w.open.get(),
            });
        },
    )
    .await;
}

/// Keeps the session count on the stage targets while the stages run.
async fn controller(w: Rc<Worker>, end: Instant) {
    let t0 = w.t0.get().unwrap_or_else(Instant::now);
    let mut pacer = Pacer::new(w.scenario().connect_rate * w.share.fraction());
    while !w.stopping.get() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let want = w.target_sessions((now - t0).as_secs_f64());
        let have = w.conns.borrow().len() as u64;
        if have < want {
            let room = MAX_CONNECTING.saturating_sub(w.connecting.get());
            let n = pacer.allowed().min(want - have).min(room);
            for _ in 0..n {
                open_session(&w);
            }
        } else {
            pacer.idle();
            if have > want {
                // Close the newest sessions first.
                let extra: Vec<Rc<Conn>> = w.conns.borrow()[want as usize..].to_vec();
                for c in extra {
                    w.remove(&c);
                    if c.state.get() == State::Connecting {
                        c.close_later.set(true);
                    } else {
                        end_session(&w, &c, End::Closed);
                    }
                }
            }
        }
        monoio::time::sleep(CONTROL_EVERY).await;
    }
}

/// Settles messages older than the timeout and puts the `busy` ones whose
/// retry-after has passed (`--resend-busy`) in the next POST.
async fn sweeper(w: Rc<Worker>) {
    let timeout = w.scenario().timeout.0;
    let resend = w.scenario().resend_busy;
    while !w.finished.get() && !w.stopping.get() {
        monoio::time::sleep(SWEEP_EVERY).await;
        let now = Instant::now();
        let conns: Vec<Rc<Conn>> = w.conns.borrow().clone();
        let mut rec = w.rec.borrow_mut();
        for c in conns {
            let mut ps = c.ps.borrow_mut();
            if ps.expire(now, timeout, &mut rec) > 0 {
                c.settled.notify();
            }
            if resend && ps.resend_due(now, &mut rec) > 0 {
                c.wake[Channel::Send.index()].notify();
            }
        }
    }
}

/// The open model: send each message when it is due, on any session.
async fn open_model(w: &Rc<Worker>, t0: Instant, end: Instant) -> std::io::Result<()> {
    schedule::arrivals(
        w.scenario(),
        w.share,
        w.share.fraction(),
        t0,
        end,
        || w.stopping.get(),
        |due, t| dispatch(w, due, w.mark_of(t)),
        |t| schedule::count_unsent(&mut w.rec.borrow_mut(), w.mark_of(t)),
    )
    .await
}

/// Sends one message due at `due` on the next session in turn; one that
/// is still opening keeps it for its `welcome`.
fn dispatch(w: &Rc<Worker>, due: Instant, mark: Mark) {
    let text = w.rng.borrow_mut().u32(..w.plan.texts.len() as u32);
    let len = w.conns.borrow().len();
    for _ in 0..len {
        let i = w.rr.get() % len;
        w.rr.set(i + 1);
        let c = w.conns.borrow()[i].clone();
        if c.state.get() != State::Ended && !c.close_later.get() {
            send_on(w, &c, due, mark, text);
            return;
        }
    }
    let mut rec = w.rec.borrow_mut();
    rec.count(mark, |c| c.sent += 1);
    rec.error_at(mark, ErrorKind::NoSession);
}

fn send_on(w: &Rc<Worker>, c: &Rc<Conn>, origin: Instant, mark: Mark, text: u32) {
    let mut rec = w.rec.borrow_mut();
    if mark.counted() && w.scenario().model == Model::Open {
        let lag = Instant::now().saturating_duration_since(origin);
        rec.record_lag(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
    }
    c.ps.borrow_mut().send_message(origin, mark, text, &mut rec);
    // The send task wakes on the next turn: what else falls due in this one
    // goes in the same POST.
    c.wake[Channel::Send.index()].notify();
}

/// The closed model for one session: think, send, await the answer, repeat.
async fn closed_loop(w: Rc<Worker>, c: Rc<Conn>) {
    let sc = w.scenario();
    let Some(think) = sc.think else { return };
    let end = w.t0.get().unwrap_or_else(Instant::now) + sc.total();
    loop {
        let d = match sc.think_dist {
            ThinkDist::Constant => think.0,
            ThinkDist::Exponential => {
                let u = w.rng.borrow_mut().f64();
                think.0.mul_f64(-(1.0 - u).ln())
            }
        };
        monoio::time::sleep(d).await;
        let now = Instant::now();
        if w.stopping.get() || c.state.get() != State::Open || now >= end {
            return;
        }
        let text = w.rng.borrow_mut().u32(..w.plan.texts.len() as u32);
        send_on(&w, &c, now, w.mark_at(now), text);
        while c.ps.borrow().in_flight() > 0 && !c.ended() && !w.stopping.get() {
            c.settled.wait().await;
        }
    }
}

fn open_session(w: &Rc<Worker>) {
    let n = w.next_conn.get();
    w.next_conn.set(n + 1);
    let now = Instant::now();
    let mark = w.mark_at(now);
    {
        let mut rec = w.rec.borrow_mut();
        if mark.counted() {
            rec.count(mark, |c| c.sessions_attempted += 1);
        } else {
            rec.counters().warmup_sessions_attempted += 1;
        }
    }
    let conn = Rc::new(Conn {
        n,
        slot: Cell::new(0),
        listed: Cell::new(true),
        state: Cell::new(State::Connecting),
        close_later: Cell::new(false),
        ps: RefCell::new(PollSession::new(now, mark)),
        wake: Default::default(),
        stop: Default::default(),
        greeted: Signal::default(),
        settled: Signal::default(),
    });
    {
        let mut v = w.conns.borrow_mut();
        conn.slot.set(v.len());
        v.push(conn.clone());
    }
    w.connecting.set(w.connecting.get() + 1);
    for ch in Channel::BOTH {
        monoio::spawn(channel_task(w.clone(), conn.clone(), ch));
    }
    monoio::spawn(greeting_deadline(w.clone(), conn));
}

/// A session not open within the connect timeout fails as a `connect`.
async fn greeting_deadline(w: Rc<Worker>, c: Rc<Conn>) {
    let _ = monoio::time::timeout(w.plan.connect_timeout, c.greeted.wait()).await;
    if c.state.get() == State::Connecting {
        let msg = format!(
            "no welcome within {:?} of the first POST /poll/send",
            w.plan.connect_timeout
        );
        end_session(&w, &c, End::Failed(ErrorKind::Connect, msg));
    }
}

/// The session's `welcome` arrived.
fn on_open(w: &Rc<Worker>, c: &Rc<Conn>) {
    if c.state.get() != State::Connecting {
        return;
    }
    c.state.set(State::Open);
    w.connecting.set(w.connecting.get() - 1);
    let open = w.open.get() + 1;
    w.open.set(open);
    w.peak_open.set(w.peak_open.get().max(open));
    c.greeted.notify();
    // What waited for the welcome is in the next POST.
    c.wake[Channel::Send.index()].notify();
    if c.close_later.get() {
        // Closed (scaled down or stopped) while it was opening.
        return end_session(w, c, End::Closed);
    }
    if w.scenario().model == Model::Closed && w.t0.get().is_some() && !w.stopping.get() {
        monoio::spawn(closed_loop(w.clone(), c.clone()));
    }
}

/// Ends a session once: counts it as the WebSocket worker counts a failed
/// or closed one, and stops both of its tasks (their connections close
/// with them).
fn end_session(w: &Rc<Worker>, c: &Rc<Conn>, why: End) {
    let was = c.state.replace(State::Ended);
    if was == State::Ended {
        return;
    }
    {
        let mut rec = w.rec.borrow_mut();
        let mut ps = c.ps.borrow_mut();
        match (was, why) {
            (State::Connecting, End::Failed(kind, msg)) => {
                w.failed.set(w.failed.get() + 1);
                w.note_error(msg);
                rec.error_at(ps.connect_mark(), kind);
                // Messages that waited for this session fail with it.
                ps.fail(kind, &mut rec);
            }
            (State::Open, End::Failed(kind, _)) => {
                if !w.stopping.get() {
                    rec.error(kind);
                }
                ps.fail(ErrorKind::Closed, &mut rec);
            }
            (_, _) => {
                ps.fail(ErrorKind::Closed, &mut rec);
            }
        }
    }
    match was {
        State::Connecting => w.connecting.set(w.connecting.get() - 1),
        State::Open => w.open.set(w.open.get() - 1),
        State::Ended => {}
    }
    w.remove(c);
    for s in &c.stop {
        s.notify();
    }
    c.greeted.notify();
    c.settled.notify();
}

/// Whether a wait finished or the session ended first.
enum Waited<T> {
    Done(T),
    Stopped,
}

/// Awaits `fut` unless the session ends first.
async fn or_stop<T>(c: &Conn, ch: Channel, fut: impl std::future::Future<Output = T>) -> Waited<T> {
    if c.ended() {
        return Waited::Stopped;
    }
    monoio::select! {
        v = fut => Waited::Done(v),
        _ = c.stop[ch.index()].wait() => Waited::Stopped,
    }
}

/// One of a session's connections, for as long as the session lasts:
/// connects (again when the last answer said so), writes the request the
/// session has for it, reads the answer, and waits for the next.
async fn channel_task(w: Rc<Worker>, c: Rc<Conn>, ch: Channel) {
    let mut stream: Option<TcpStream> = None;
    // https: the TLS of the current connection, bytes in and bytes out.
    let mut tls: Option<TlsLayer> = None;
    let mut out = Vec::new();
    // Both connections open at once, so the recv's is ready when the cookie comes.
    let mut eager = true;
    while !c.ended() {
        out.clear();
        let next =
            c.ps.borrow_mut()
                .next_request(ch, &w.endpoints, &w.plan.texts, &mut out);
        let has = match next {
            Ok(has) => has,
            Err(e) => return lost(&w, &c, &e),
        };
        if stream.is_none() && (has || eager) {
            match or_stop(&c, ch, connect(&w, &c, ch)).await {
                Waited::Stopped => return,
                Waited::Done(Ok(s)) => {
                    stream = Some(s);
                    tls = match &w.plan.tls {
                        Some(t) => match TlsLayer::new(t.config.clone(), t.name.clone()) {
                            Ok(layer) => Some(layer),
                            Err(e) => return lost(&w, &c, &PollError::Tls(e)),
                        },
                        None => None,
                    };
                }
                Waited::Done(Err(msg)) => {
                    return end_session(&w, &c, End::Failed(ErrorKind::Connect, msg));
                }
            }
        }
        eager = false;
        let Some(s) = stream.as_ref() else {
            // Nothing to send and no connection: wait for a request.
            if let Waited::Stopped = or_stop(&c, ch, c.wake[ch.index()].wait()).await {
                return;
            }
            continue;
        };
        let fd = s.as_raw_fd();
        // Handshake records (and what rustls held back until it ended) go
        // out whether or not there is a request.
        let tls_pending = tls.as_mut().is_some_and(|t| !t.wire().is_empty());
        if has || tls_pending {
            match write_all(&c, ch, s, fd, &mut out, tls.as_mut()).await {
                Waited::Stopped => return,
                Waited::Done(true) => {}
                // The server closed the kept-alive connection: as if it ended now.
                Waited::Done(false) => {
                    let step = {
                        let cfg = &w.plan.session;
                        let mut rec = w.rec.borrow_mut();
                        c.ps.borrow_mut().on_eof(ch, Instant::now(), cfg, &mut rec)
                    };
                    match step {
                        Ok(step) => {
                            apply(&w, &c, step);
                            stream = None;
                            tls = None;
                            continue;
                        }
                        Err(e) => return lost(&w, &c, &e),
                    }
                }
            }
        }
        if !c.ps.borrow().outstanding(ch) {
            if let Waited::Stopped = or_stop(&c, ch, c.wake[ch.index()].wait()).await {
                return;
            }
            continue;
        }
        match or_stop(&c, ch, s.readable(false)).await {
            Waited::Stopped => return,
            Waited::Done(Err(e)) => {
                let e = format!("{ch}: {e}");
                return end_session(&w, &c, End::Failed(ErrorKind::Closed, e));
            }
            Waited::Done(Ok(())) => {}
        }
        match read_available(&w, &c, ch, fd, tls.as_mut()) {
            Ok(reconnect) => {
                if reconnect {
                    stream = None;
                    tls = None;
                }
            }
            Err(e) => return lost(&w, &c, &e),
        }
    }
}

/// A session the gateway's answers ended.
fn lost(w: &Rc<Worker>, c: &Rc<Conn>, e: &PollError) {
    end_session(w, c, End::Failed(e.kind(), e.to_string()));
}

/// A TCP connection for one of session `c`'s channels, from a source
/// address of its own on loopback targets.
async fn connect(w: &Rc<Worker>, c: &Conn, ch: Channel) -> Result<TcpStream, String> {
    let plan = &w.plan;
    let source = plan.bind_sources.then(|| {
        IpAddr::V4(net::source_ip(
            u64::from(plan.shard.index - 1),
            u64::from(w.index),
            c.n * crate::poll::CONNECTIONS_PER_SESSION + ch.index() as u64,
        ))
    });
    let err = |e: std::io::Error| format!("connect to {} ({ch}): {e}", plan.addr);
    let open = async {
        let std_stream = net::start_connect(plan.addr, source).map_err(err)?;
        let stream = TcpStream::from_std(std_stream).map_err(err)?;
        stream.writable(false).await.map_err(err)?;
        net::take_error(stream.as_raw_fd()).map_err(err)?;
        Ok(stream)
    };
    match monoio::time::timeout(plan.connect_timeout, open).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "connect to {} ({ch}): no answer within {:?}",
            plan.addr, plan.connect_timeout
        )),
    }
}

/// Writes all of `out` (through `tls`, for https); `false` when the
/// connection is gone.
async fn write_all(
    c: &Conn,
    ch: Channel,
    s: &TcpStream,
    fd: RawFd,
    out: &mut Vec<u8>,
    mut tls: Option<&mut TlsLayer>,
) -> Waited<bool> {
    if let Some(t) = tls.as_deref_mut() {
        if t.send(out).is_err() {
            return Waited::Done(false);
        }
    }
    loop {
        let queued = match tls.as_deref_mut() {
            Some(t) => t.wire(),
            None => &mut *out,
        };
        match net::send_queued(fd, queued) {
            Io::Done(_) => return Waited::Done(true),
            Io::Closed => return Waited::Done(false),
            Io::WouldBlock => match or_stop(c, ch, s.writable(false)).await {
                Waited::Stopped => return Waited::Stopped,
                Waited::Done(Err(_)) => return Waited::Done(false),
                Waited::Done(Ok(())) => {}
            },
        }
    }
}

/// Reads everything the connection has into the worker's buffer and feeds
/// it to the session; `true` when the connection is to be replaced.
fn read_available(
    w: &Rc<Worker>,
    c: &Rc<Conn>,
    ch: Channel,
    fd: RawFd,
    mut tls: Option<&mut TlsLayer>,
) -> Result<bool, PollError> {
    let cfg = &w.plan.session;
    let mut steps = Vec::new();
    let mut plain = Vec::new();
    let read = {
        let mut buf = w.recv_buf.borrow_mut();
        let mut rec = w.rec.borrow_mut();
        let mut ps = c.ps.borrow_mut();
        loop {
            // A short read drained the socket: no need to hear so again.
            let (step, drained) = match net::recv(fd, &mut buf) {
                Io::Done(n) => match tls.as_deref_mut() {
                    Some(t) => {
                        plain.clear();
                        if let Err(e) = t.receive(&buf[..n], &mut plain) {
                            break Err(PollError::Tls(e));
                        }
                        // Handshake answers now; what is left the channel sends.
                        let _ = net::send_queued(fd, t.wire());
                        if plain.is_empty() {
                            // Only TLS records (handshake, session tickets).
                            if n < buf.len() {
                                break Ok(());
                            }
                            continue;
                        }
                        (
                            ps.on_bytes(ch, &plain, Instant::now(), cfg, &mut rec),
                            n < buf.len(),
                        )
                    }
                    None => (
                        ps.on_bytes(ch, &buf[..n], Instant::now(), cfg, &mut rec),
                        n < buf.len(),
                    ),
                },
                Io::WouldBlock => break Ok(()),
                Io::Closed => (ps.on_eof(ch, Instant::now(), cfg, &mut rec), true),
            };
            match step {
                Ok(s) => {
                    let last = drained || s.reconnect;
                    steps.push(s);
                    if last {
                        break Ok(());
                    }
                }
                Err(e) => break Err(e),
            }
        }
    };
    // What was read before a failure still counts (a welcome, say).
    let mut reconnect = false;
    for step in steps {
        reconnect |= step.reconnect;
        apply(w, c, step);
    }
    read.map(|()| reconnect)
}

/// Carries out what a step asks of the shell.
fn apply(w: &Rc<Worker>, c: &Rc<Conn>, step: Step) {
    if step.cookie {
        c.wake[Channel::Recv.index()].notify();
    }
    if step.progress.opened {
        on_open(w, c);
    }
    if step.progress.settled > 0 {
        c.settled.notify();
    }
}
