//! One worker thread: a monoio runtime (io_uring, or epoll where io_uring is
//! blocked), pinned to a core, carrying its share of the sessions and of the
//! arrivals. It opens sessions at the connect rate, keeps their number on the
//! stage targets, sends messages on the schedule (open model) or after think
//! time (closed model), feeds what it reads to each [`Session`], and reports an
//! [`Interval`] of measurements every second. It only moves bytes and time;
//! every decision about the protocol is in `session`.

use inference_client::runtime::{self, IoDriver};
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use super::net::{self, Io};
use super::schedule::{self, Pacer};
use super::signal::Signal;
use super::timer::PreciseTimer;
use crate::arrivals::Profile;
use crate::conversation::{Next, Visitor, DEFAULT_THINK};
use crate::metrics::{ErrorKind, Final, Interval, Mark, Recorder};
use crate::protocol;
use crate::protocol::Text;
use crate::scenario::{Model, Scenario, Shard, Share, ThinkDist};
use crate::session::{Phase, Session, SessionConfig};
use crate::target::Target;
use crate::tls::TlsLayer;
use crate::trace::{Trace, OPEN_AHEAD};
use inference_client::http::TlsTarget;
use std::collections::HashMap;

/// Size of the one read buffer a worker shares among all its sessions.
const RECV_BUF: usize = 64 * 1024;
/// Most connects a worker has in progress at once.
const MAX_CONNECTING: u64 = 1_024;
/// How often session targets are adjusted.
const CONTROL_EVERY: Duration = Duration::from_millis(5);
/// How often in-flight messages are checked against the timeout.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Everything a run's workers share, read-only.
#[derive(Debug)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// Where to connect.
    pub target: Target,
    /// The target's resolved address.
    pub addr: SocketAddr,
    /// Texts, escaped once.
    pub texts: Vec<Text>,
    /// What sessions share.
    pub session: SessionConfig,
    /// Whether to spread source addresses over 127.0.0.0/8 (loopback targets).
    pub bind_sources: bool,
    /// TCP connect to `welcome`, at most.
    pub connect_timeout: Duration,
    /// How long closing sessions may take at the end.
    pub close_grace: Duration,
    /// This process's shard.
    pub shard: Shard,
    /// Where each conversation's `say` texts start in `texts`, in order.
    pub conversation_texts: Vec<u32>,
    /// `--trace`: the trace, its entries' texts indexing `texts`.
    pub trace: Option<Trace>,
    /// `wss://` (and `https://` over long-polling): the TLS settings and
    /// the name the certificate must carry.
    pub tls: Option<TlsTarget>,
}

/// Orders from the main thread.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// Open the sessions of the first stage.
    Connect,
    /// Start the stages at this instant.
    Start(Instant),
    /// Stop at once (the run is abandoned).
    Abort,
}

/// What a worker tells the main thread.
#[derive(Debug)]
pub enum Report {
    /// The runtime is up with this driver.
    Up {
        /// Worker index.
        worker: u32,
        /// `io_uring` or `epoll`.
        driver: &'static str,
    },
    /// The first stage's sessions are open (or failed).
    Ready {
        /// Worker index.
        worker: u32,
        /// Sessions open.
        opened: u64,
        /// Sessions that failed.
        failed: u64,
        /// The first failure, for the user.
        first_error: Option<String>,
    },
    /// One second of measurements.
    Tick {
        /// Worker index.
        worker: u32,
        /// Seconds since the run started (the interval ends at tick + 1).
        tick: u64,
        /// Measurements.
        interval: Box<Interval>,
        /// Sessions open now.
        open: u64,
    },
    /// The worker finished; what it measured since its last tick, and by
    /// stage and turn.
    Done {
        /// Worker index.
        worker: u32,
        /// Measurements.
        measured: Box<Final>,
        /// Most sessions it had open at once.
        peak_open: u64,
    },
    /// The worker could not run.
    Failed {
        /// Worker index.
        worker: u32,
        /// Why.
        error: String,
    },
}

/// What one worker thread is given.
pub struct WorkerSpec {
    /// Index within this process.
    pub index: u32,
    /// Workers in this process.
    pub workers: u32,
    /// When the run started (ticks count from here).
    pub run_start: Instant,
    /// The shared plan.
    pub plan: Arc<Plan>,
    /// Reports to the main thread.
    pub tx: flume::Sender<Report>,
    /// Orders from the main thread.
    pub control: flume::Receiver<Control>,
    /// I/O driver.
    pub driver: IoDriver,
    /// CPU to pin to.
    pub cpu: Option<usize>,
}

/// Runs a worker on the current thread until it is done.
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

/// One session as the shell holds it.
struct Conn {
    n: u64,
    slot: Cell<usize>,
    listed: Cell<bool>,
    session: RefCell<Session>,
    stream: RefCell<Option<Rc<TcpStream>>>,
    fd: Cell<RawFd>,
    out: RefCell<Vec<u8>>,
    flushing: Cell<bool>,
    closing: Cell<bool>,
    close_later: Cell<bool>,
    shut: Cell<bool>,
    dead: Cell<bool>,
    /// Messages due before the session opened: (due, mark, text).
    queued: RefCell<Vec<(Instant, Mark, u32)>>,
    /// A scripted reload or offline spell: once the socket closes, open a
    /// new one after this long, resuming the session.
    reconnect: Cell<Option<Duration>>,
    /// `wss://`: the TLS between the socket and the session's bytes.
    tls: RefCell<Option<TlsLayer>>,
    settled: Signal,
}

struct Worker {
    index: u32,
    share: Share,
    plan: Arc<Plan>,
    tx: flume::Sender<Report>,
    run_start: Instant,
    sessions_profile: Profile,
    rec: RefCell<Recorder>,
    conns: RefCell<Vec<Rc<Conn>>>,
    rr: Cell<usize>,
    rng: RefCell<fastrand::Rng>,
    recv_buf: RefCell<Box<[u8]>>,
    /// Plaintext of what a `wss://` session read, before its session sees it.
    plain: RefCell<Vec<u8>>,
    scratch: RefCell<Vec<u8>>,
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

    /// Whether something starting at `at` is measured (not in warm-up),
    /// and in which stage.
    fn mark_at(&self, at: Instant) -> Mark {
        schedule::mark_at(self.scenario(), self.t0.get(), at)
    }

    /// The mark of something starting `t` seconds into the stages.
    fn mark_of(&self, t: f64) -> Mark {
        schedule::mark_of(self.scenario(), t)
    }

    fn mask(&self) -> [u8; 4] {
        self.rng.borrow_mut().u32(..).to_ne_bytes()
    }

    /// Sessions this worker should hold at `t` seconds into the stages.
    fn target_sessions(&self, t: f64) -> u64 {
        self.share.count(self.sessions_profile.at(t).floor() as u64)
    }

    fn note_error(&self, e: String) {
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(e);
        }
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
            .map(|c| c.session.borrow().in_flight() + c.queued.borrow().len())
            .sum()
    }
}

async fn worker_main(spec: WorkerSpec, driver: &'static str) {
    let plan = spec.plan.clone();
    let share = Share::of(plan.shard, spec.index, spec.workers);
    let seed = plan.scenario.seed ^ share.part.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let w = Rc::new(Worker {
        index: spec.index,
        share,
        sessions_profile: plan.scenario.sessions_profile(),
        plan,
        tx: spec.tx.clone(),
        run_start: spec.run_start,
        rec: RefCell::new(Recorder::default()),
        conns: RefCell::new(Vec::new()),
        rr: Cell::new(0),
        rng: RefCell::new(fastrand::Rng::with_seed(seed)),
        recv_buf: RefCell::new(vec![0u8; RECV_BUF].into_boxed_slice()),
        plain: RefCell::new(Vec::new()),
        scratch: RefCell::new(Vec::with_capacity(256)),
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
            stop_sessions(&w).await;
            return finish(&w);
        }
    };
    monoio::time::sleep_until(monoio::time::Instant::from_std(t0)).await;
    w.t0.set(Some(t0));
    let end = t0 + w.scenario().total();

    // A trace opens and closes its own sessions.
    if w.plan.trace.is_none() {
        monoio::spawn(controller(w.clone(), end));
    }
    monoio::spawn(sweeper(w.clone()));
    let abort = spec.control.clone();
    let w2 = w.clone();
    monoio::spawn(async move {
        if let Ok(Control::Abort) = abort.recv_async().await {
            w2.stopping.set(true);
        }
    });
    // Sessions that drive themselves (closed model, conversations) start
    // now; later ones start as they open.
    let open: Vec<Rc<Conn>> = w.conns.borrow().clone();
    for c in open {
        if c.session.borrow().phase() == Phase::Open {
            start_visitor(&w, &c);
        }
    }
    if w.scenario().conversations.is_empty() && w.scenario().model == Model::Open {
        let result = match &w.plan.trace {
            Some(trace) => trace_model(&w, trace, t0, end).await,
            None => open_model(&w, t0, end).await,
        };
        if let Err(e) = result {
            w.note_error(format!("arrival timer failed: {e}"));
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
    stop_sessions(&w).await;
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

/// Settles what is still in flight as timeouts and closes every session.
async fn stop_sessions(w: &Rc<Worker>) {
    w.stopping.set(true);
    let all: Vec<Rc<Conn>> = std::mem::take(&mut *w.conns.borrow_mut());
    {
        let mut rec = w.rec.borrow_mut();
        for c in &all {
            c.listed.set(false);
            c.session
                .borrow_mut()
                .fail_all(ErrorKind::Timeout, &mut rec);
            for (_, mark, _) in c.queued.borrow_mut().drain(..) {
                rec.count(mark, |c| c.sent += 1);
                rec.error_at(mark, ErrorKind::Timeout);
            }
        }
    }
    for c in &all {
        begin_close(w, c);
    }
    drop(all);
    let until = Instant::now() + w.plan.close_grace;
    while (w.open.get() > 0 || w.connecting.get() > 0) && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
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
                let extra: Vec<Rc<Conn>> = {
                    let v = w.conns.borrow();
                    v[want as usize..].to_vec()
                };
                for c in extra {
                    w.remove(&c);
                    begin_close(&w, &c);
                }
            }
        }
        monoio::time::sleep(CONTROL_EVERY).await;
    }
}

/// Settles messages older than the timeout and sends again the `busy` ones
/// whose retry-after has passed (`--resend-busy`), every [`SWEEP_EVERY`].
async fn sweeper(w: Rc<Worker>) {
    let timeout = w.scenario().timeout.0;
    while !w.finished.get() && !w.stopping.get() {
        monoio::time::sleep(SWEEP_EVERY).await;
        let now = Instant::now();
        let conns: Vec<Rc<Conn>> = w.conns.borrow().clone();
        let mut rec = w.rec.borrow_mut();
        let resend = w.scenario().resend_busy;
        for c in conns {
            if c.session.borrow_mut().expire(now, timeout, &mut rec) > 0 {
                c.settled.notify();
            }
            if resend {
                let sent = {
                    let mut out = c.out.borrow_mut();
                    let mut scratch = w.scratch.borrow_mut();
                    c.session.borrow_mut().resend_due(
                        now,
                        &w.plan.texts,
                        w.mask(),
                        &mut out,
                        &mut scratch,
                        &mut rec,
                    )
                };
                if sent > 0 {
                    flush(&w, &c);
                }
            }
        }
    }
}

/// Sends each worker's interval once a second, on the second since the run started.
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

/// Sends one message due at `due` on the next session in turn.
fn dispatch(w: &Rc<Worker>, due: Instant, mark: Mark) {
    let text = w.rng.borrow_mut().u32(..w.plan.texts.len() as u32);
    let len = w.conns.borrow().len();
    for _ in 0..len {
        let i = w.rr.get() % len;
        w.rr.set(i + 1);
        let c = w.conns.borrow()[i].clone();
        if deliver(w, &c, due, mark, text) {
            return;
        }
    }
    no_session(w, mark);
}

/// Sends a message due at `due` on `c` if it is open, or queues it for its
/// `welcome` if it is opening; false when `c` can carry nothing.
fn deliver(w: &Rc<Worker>, c: &Rc<Conn>, due: Instant, mark: Mark, text: u32) -> bool {
    let phase = c.session.borrow().phase();
    match phase {
        Phase::Open if !c.closing.get() => {
            send_on(w, c, due, mark, text);
            true
        }
        Phase::Upgrading | Phase::Greeting if !c.dead.get() => {
            c.queued.borrow_mut().push((due, mark, text));
            true
        }
        _ => false,
    }
}

/// A message was due with no session to carry it.
fn no_session(w: &Rc<Worker>, mark: Mark) {
    let mut rec = w.rec.borrow_mut();
    rec.count(mark, |c| c.sent += 1);
    rec.error_at(mark, ErrorKind::NoSession);
}

/// `--trace`: each of this worker's trace sessions opens shortly before its
/// first message, sends each message at its time, and closes once its last
/// is answered.
async fn trace_model(
    w: &Rc<Worker>,
    trace: &Trace,
    t0: Instant,
    end: Instant,
) -> std::io::Result<()> {
    let (part, parts) = (w.share.part, w.share.parts);
    let mine = |s: u32| Trace::is_mine(s, part, parts);
    let mut opens: Vec<(Duration, u32)> = trace
        .session_spans()
        .iter()
        .enumerate()
        .filter(|(s, _)| mine(*s as u32))
        .map(|(s, span)| (span.0.saturating_sub(OPEN_AHEAD), s as u32))
        .collect();
    opens.sort_unstable();
    let mut left: HashMap<u32, u32> = HashMap::new();
    for e in trace.entries.iter().filter(|e| mine(e.session)) {
        *left.entry(e.session).or_default() += 1;
    }
    let timer = PreciseTimer::new()?;
    let mut conns: HashMap<u32, Rc<Conn>> = HashMap::new();
    let mut next_open = 0;
    for e in trace.entries.iter().filter(|e| mine(e.session)) {
        while let Some(&(at, s)) = opens.get(next_open).filter(|(at, _)| *at <= e.at) {
            let when = t0 + at;
            if when > Instant::now() {
                timer.sleep_until(when).await?;
            }
            conns.insert(s, open_session(w));
            next_open += 1;
        }
        let due = t0 + e.at;
        if w.stopping.get() || due > end {
            break;
        }
        if due > Instant::now() {
            timer.sleep_until(due).await?;
        }
        let mark = w.mark_of(e.at.as_secs_f64());
        let Some(c) = conns.get(&e.session).cloned() else {
            no_session(w, mark);
            continue;
        };
        if !deliver(w, &c, due, mark, e.text) {
            no_session(w, mark);
        }
        let n = left.entry(e.session).or_default();
        *n = n.saturating_sub(1);
        if *n == 0 {
            monoio::spawn(close_when_settled(w.clone(), c));
        }
    }
    Ok(())
}

/// Closes a session once nothing it sent is in flight.
async fn close_when_settled(w: Rc<Worker>, c: Rc<Conn>) {
    while (c.session.borrow().in_flight() > 0 || !c.queued.borrow().is_empty())
        && !c.dead.get()
        && !w.stopping.get()
    {
        c.settled.wait().await;
    }
    w.remove(&c);
    begin_close(&w, &c);
}

fn send_on(w: &Rc<Worker>, c: &Rc<Conn>, origin: Instant, mark: Mark, text: u32) {
    let mask = w.mask();
    if mark.counted() && w.scenario().model == Model::Open {
        let lag = Instant::now().saturating_duration_since(origin);
        w.rec
            .borrow_mut()
            .record_lag(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
    }
    {
        let mut session = c.session.borrow_mut();
        let mut out = c.out.borrow_mut();
        let mut scratch = w.scratch.borrow_mut();
        let mut rec = w.rec.borrow_mut();
        session.send_message(
            origin,
            mark,
            text,
            &w.plan.texts[text as usize],
            mask,
            &mut out,
            &mut scratch,
            &mut rec,
        );
    }
    flush(w, c);
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
        if w.stopping.get() || c.dead.get() || c.closing.get() || now >= end {
            return;
        }
        if c.session.borrow().phase() != Phase::Open {
            return;
        }
        let text = w.rng.borrow_mut().u32(..w.plan.texts.len() as u32);
        send_on(&w, &c, now, w.mark_at(now), text);
        until_settled(&w, &c).await;
    }
}

fn open_session(w: &Rc<Worker>) -> Rc<Conn> {
    let n = w.next_conn.get();
    w.next_conn.set(n + 1);
    let now = Instant::now();
    let mark = w.mark_at(now);
    let mut rec = w.rec.borrow_mut();
    if mark.counted() {
        rec.count(mark, |c| c.sessions_attempted += 1);
    } else {
        rec.counters().warmup_sessions_attempted += 1;
    }
    drop(rec);
    let conn = Rc::new(Conn {
        n,
        slot: Cell::new(0),
        listed: Cell::new(true),
        session: RefCell::new(Session::new(now, mark)),
        stream: RefCell::new(None),
        fd: Cell::new(-1),
        out: RefCell::new(Vec::new()),
        flushing: Cell::new(false),
        closing: Cell::new(false),
        close_later: Cell::new(false),
        shut: Cell::new(false),
        dead: Cell::new(false),
        queued: RefCell::new(Vec::new()),
        reconnect: Cell::new(None),
        tls: RefCell::new(None),
        settled: Signal::default(),
    });
    {
        let mut v = w.conns.borrow_mut();
        conn.slot.set(v.len());
        v.push(conn.clone());
    }
    w.connecting.set(w.connecting.get() + 1);
    monoio::spawn(session_task(w.clone(), conn.clone()));
    conn
}

async fn session_task(w: Rc<Worker>, c: Rc<Conn>) {
    let established = connect_within_timeout(&w, &c).await;
    w.connecting.set(w.connecting.get() - 1);
    if let Err((kind, msg)) = established {
        w.failed.set(w.failed.get() + 1);
        fail_session(&w, &c, kind, msg);
        return;
    }
    if c.close_later.get() {
        // Closed (scaled down or stopped) while it was connecting.
        begin_close(&w, &c);
    }
    let open = w.open.get() + 1;
    w.open.set(open);
    w.peak_open.set(w.peak_open.get().max(open));
    let queued: Vec<(Instant, Mark, u32)> = std::mem::take(&mut *c.queued.borrow_mut());
    for (due, mark, text) in queued {
        send_on(&w, &c, due, mark, text);
    }
    if w.t0.get().is_some() {
        start_visitor(&w, &c);
    }
    serve(&w, &c).await;
    // A scripted reload or offline spell: the same session on a new socket.
    while let Some(delay) = c.reconnect.take() {
        c.stream.borrow_mut().take();
        c.fd.set(-1);
        monoio::time::sleep(delay).await;
        if w.stopping.get() || !c.listed.get() {
            break;
        }
        c.closing.set(false);
        c.shut.set(false);
        c.session.borrow_mut().reconnect(Instant::now());
        if let Err((kind, msg)) = connect_within_timeout(&w, &c).await {
            w.open.set(w.open.get() - 1);
            fail_session(&w, &c, kind, msg);
            return;
        }
        // The conversation goes on.
        c.settled.notify();
        serve(&w, &c).await;
    }
    {
        let mut rec = w.rec.borrow_mut();
        c.session.borrow_mut().fail_all(ErrorKind::Closed, &mut rec);
    }
    c.dead.set(true);
    c.settled.notify();
    w.open.set(w.open.get() - 1);
    w.remove(&c);
    // Dropping the last reference to the stream closes the socket.
    c.stream.borrow_mut().take();
}

type Failure = (ErrorKind, String);

/// Starts what drives an open session by itself, if anything does: a
/// scripted conversation, or the closed model's think-send-await loop (the
/// open model's arrivals are the worker's, not the session's).
fn start_visitor(w: &Rc<Worker>, c: &Rc<Conn>) {
    if !w.scenario().conversations.is_empty() {
        monoio::spawn(conversation_loop(w.clone(), c.clone()));
    } else if w.scenario().model == Model::Closed {
        monoio::spawn(closed_loop(w.clone(), c.clone()));
    }
}

/// Waits until nothing `c` sent is in flight (or it or the run ended).
async fn until_settled(w: &Worker, c: &Conn) {
    while c.session.borrow().in_flight() > 0 && !c.dead.get() && !w.stopping.get() {
        c.settled.wait().await;
    }
}

/// [`establish`], bounded by the connect timeout.
async fn connect_within_timeout(w: &Rc<Worker>, c: &Rc<Conn>) -> Result<(), Failure> {
    match monoio::time::timeout(w.plan.connect_timeout, establish(w, c)).await {
        Ok(r) => r,
        Err(_) => Err((
            ErrorKind::Connect,
            format!(
                "no welcome within {:?} of connecting",
                w.plan.connect_timeout
            ),
        )),
    }
}

/// Ends a session whose (re)connect failed: the failure is counted, and so
/// is every message that waited for it.
fn fail_session(w: &Rc<Worker>, c: &Rc<Conn>, kind: ErrorKind, msg: String) {
    w.note_error(msg);
    {
        let mut rec = w.rec.borrow_mut();
        rec.error_at(c.session.borrow().connect_mark(), kind);
        for (_, mark, _) in c.queued.borrow_mut().drain(..) {
            rec.count(mark, |c| c.sent += 1);
            rec.error_at(mark, kind);
        }
        c.session.borrow_mut().fail_all(kind, &mut rec);
    }
    w.remove(c);
    c.dead.set(true);
    c.settled.notify();
    c.stream.borrow_mut().take();
}

/// A scripted visitor: plays one conversation on its session, turn by turn,
/// then leaves (the stage's session target brings the next visitor).
async fn conversation_loop(w: Rc<Worker>, c: Rc<Conn>) {
    let sc = w.scenario();
    let end = w.t0.get().unwrap_or_else(Instant::now) + sc.total();
    let convs = &sc.conversations;
    let mut visitor = Visitor::choose(convs, w.rng.borrow_mut().f64());
    let base = w
        .plan
        .conversation_texts
        .get(visitor.conversation())
        .copied()
        .unwrap_or(0);
    // Visitors who arrive together do not all speak at once.
    let first = DEFAULT_THINK.mul_f64(w.rng.borrow_mut().f64());
    monoio::time::sleep(first).await;
    loop {
        let gone = || w.stopping.get() || c.dead.get() || c.closing.get() || Instant::now() >= end;
        if gone() {
            return;
        }
        let (next, think) = visitor.next(convs, w.rng.borrow_mut().f64());
        match next {
            Next::Say { turn, .. } => {
                let now = Instant::now();
                let text = base + u32::from(turn) - 1;
                send_on(&w, &c, now, w.mark_at(now).with_turn(turn), text);
                until_settled(&w, &c).await;
            }
            Next::Human(reason) => {
                let mask = w.mask();
                protocol::encode_human(&mut c.out.borrow_mut(), reason, mask);
                flush(&w, &c);
            }
            Next::Csat(score) => {
                let mask = w.mask();
                protocol::encode_csat(&mut c.out.borrow_mut(), score, mask);
                flush(&w, &c);
            }
            Next::Reload => {
                if !reconnect(&w, &c, Duration::ZERO, false).await {
                    return;
                }
            }
            Next::Offline(d) => {
                if !reconnect(&w, &c, d, true).await {
                    return;
                }
            }
            Next::Leave => {
                w.remove(&c);
                begin_close(&w, &c);
                return;
            }
        }
        if !think.is_zero() {
            monoio::time::sleep(think).await;
        }
    }
}

/// Closes the session's socket (politely for a reload, abruptly for a lost
/// network) and waits until the session is open again on a new one after
/// `delay`; false when it is not (it failed, or the run ended).
async fn reconnect(w: &Rc<Worker>, c: &Rc<Conn>, delay: Duration, abrupt: bool) -> bool {
    if !c.session.borrow().has_cookie() {
        w.note_error("the server set no session cookie: a reload cannot resume the session".into());
    }
    c.reconnect.set(Some(delay));
    if abrupt {
        net::shutdown_both(c.fd.get());
    } else {
        begin_close(w, c);
    }
    loop {
        c.settled.wait().await;
        if c.dead.get() || w.stopping.get() {
            return false;
        }
        if c.reconnect.get().is_none()
            && c.session.borrow().phase() == Phase::Open
            && !c.closing.get()
        {
            return true;
        }
    }
}

/// TCP connect, upgrade, `hello`, until `welcome`.
async fn establish(w: &Rc<Worker>, c: &Rc<Conn>) -> Result<(), Failure> {
    let plan = &w.plan;
    let source = plan.bind_sources.then(|| {
        IpAddr::V4(net::source_ip(
            u64::from(plan.shard.index - 1),
            u64::from(w.index),
            c.n,
        ))
    });
    let connect_err =
        |e: std::io::Error| (ErrorKind::Connect, format!("connect to {}: {e}", plan.addr));
    let std_stream = net::start_connect(plan.addr, source).map_err(connect_err)?;
    let stream = Rc::new(TcpStream::from_std(std_stream).map_err(connect_err)?);
    let fd = stream.as_raw_fd();
    stream.writable(false).await.map_err(connect_err)?;
    net::take_error(fd).map_err(connect_err)?;
    *c.stream.borrow_mut() = Some(stream.clone());
    c.fd.set(fd);
    if let Some(tls) = &plan.tls {
        let layer = TlsLayer::new(tls.config.clone(), tls.name.clone())
            .map_err(|e| (ErrorKind::Handshake, e.to_string()))?;
        *c.tls.borrow_mut() = Some(layer);
    }
    let req = c
        .session
        .borrow_mut()
        .upgrade_request(&plan.target, &mut w.rng.borrow_mut());
    c.out.borrow_mut().extend_from_slice(&req);
    flush(w, c);
    loop {
        stream.readable(false).await.map_err(connect_err)?;
        let r = read_available(w, c).map_err(|e| (e.kind(), e.to_string()))?;
        if r.opened {
            return Ok(());
        }
        if r.closed || c.dead.get() {
            return Err((
                ErrorKind::Handshake,
                "the server closed the connection before welcome".to_string(),
            ));
        }
    }
}

/// Reads until the session closes.
async fn serve(w: &Rc<Worker>, c: &Rc<Conn>) {
    let Some(stream) = c.stream.borrow().clone() else {
        return;
    };
    loop {
        if stream.readable(false).await.is_err() {
            return;
        }
        match read_available(w, c) {
            Ok(r) if r.closed => return,
            Ok(_) => {}
            Err(e) => {
                if !w.stopping.get() {
                    w.rec.borrow_mut().error(e.kind());
                }
                return;
            }
        }
        if c.dead.get() {
            return;
        }
    }
}

struct ReadOutcome {
    opened: bool,
    closed: bool,
}

/// Reads everything the socket has into the shared buffer and feeds it to the session.
fn read_available(
    w: &Rc<Worker>,
    c: &Rc<Conn>,
) -> Result<ReadOutcome, crate::session::SessionError> {
    let mut outcome = ReadOutcome {
        opened: false,
        closed: false,
    };
    let mut settled = 0;
    let fd = c.fd.get();
    {
        let mut buf = w.recv_buf.borrow_mut();
        loop {
            match net::recv(fd, &mut buf) {
                Io::Done(n) => {
                    let now = Instant::now();
                    let mask = w.mask();
                    let mut plain = w.plain.borrow_mut();
                    let bytes: &mut [u8] = match c.tls.borrow_mut().as_mut() {
                        Some(tls) => {
                            plain.clear();
                            tls.receive(&buf[..n], &mut plain)?;
                            &mut plain[..]
                        }
                        None => &mut buf[..n],
                    };
                    let p = c.session.borrow_mut().on_bytes(
                        bytes,
                        now,
                        &w.plan.session,
                        &mut w.rec.borrow_mut(),
                        mask,
                        &mut c.out.borrow_mut(),
                    )?;
                    outcome.opened |= p.opened;
                    settled += p.settled;
                    if p.closed {
                        outcome.closed = true;
                        break;
                    }
                    if n < buf.len() {
                        break;
                    }
                }
                Io::WouldBlock => break,
                Io::Closed => {
                    outcome.closed = true;
                    break;
                }
            }
        }
    }
    let tls_pending = c
        .tls
        .borrow_mut()
        .as_mut()
        .is_some_and(|t| !t.wire().is_empty());
    if !c.out.borrow().is_empty() || tls_pending {
        flush(w, c);
    }
    if settled > 0 {
        c.settled.notify();
    }
    Ok(outcome)
}

/// Sends what is queued; what the socket does not take now is sent by a
/// flusher task when it becomes writable.
fn flush(w: &Rc<Worker>, c: &Rc<Conn>) {
    if c.flushing.get() || c.fd.get() < 0 {
        return;
    }
    match try_send(c) {
        Io::WouldBlock => {
            c.flushing.set(true);
            monoio::spawn(flusher(w.clone(), c.clone()));
        }
        Io::Closed | Io::Done(_) => {}
    }
}

/// Sends until the queue is empty (`Done`), the socket is full (`WouldBlock`)
/// or the connection is gone (`Closed`).
fn try_send(c: &Conn) -> Io {
    let fd = c.fd.get();
    let sent = match c.tls.borrow_mut().as_mut() {
        Some(tls) => match tls.send(&mut c.out.borrow_mut()) {
            Ok(()) => net::send_queued(fd, tls.wire()),
            Err(_) => Io::Closed,
        },
        None => net::send_queued(fd, &mut c.out.borrow_mut()),
    };
    match sent {
        Io::Done(_) => {}
        Io::WouldBlock => return Io::WouldBlock,
        Io::Closed => {
            c.dead.set(true);
            return Io::Closed;
        }
    }
    if c.closing.get() && !c.shut.replace(true) {
        net::shutdown_write(fd);
    }
    Io::Done(0)
}

async fn flusher(_w: Rc<Worker>, c: Rc<Conn>) {
    let stream = c.stream.borrow().clone();
    if let Some(stream) = stream {
        loop {
            if stream.writable(false).await.is_err() {
                c.dead.set(true);
                break;
            }
            if !matches!(try_send(&c), Io::WouldBlock) {
                break;
            }
        }
    }
    c.flushing.set(false);
}

/// Sends a close frame and half-closes; the reader ends when the server closes.
fn begin_close(w: &Rc<Worker>, c: &Rc<Conn>) {
    if c.fd.get() < 0 {
        // Still connecting: close once it opens.
        c.close_later.set(true);
        return;
    }
    if c.closing.replace(true) {
        return;
    }
    let mask = w.mask();
    c.session.borrow_mut().close(mask, &mut c.out.borrow_mut());
    flush(w, c);
}
