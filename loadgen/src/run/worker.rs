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
use super::signal::Signal;
use super::timer::PreciseTimer;
use crate::arrivals::{Arrivals, Profile};
use crate::metrics::{ErrorKind, Interval, Recorder};
use crate::protocol::Text;
use crate::scenario::{Model, Scenario, Shard, Share, ThinkDist};
use crate::session::{Phase, Session, SessionConfig};
use crate::target::Target;

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
    /// The worker finished; what it measured since its last tick.
    Done {
        /// Worker index.
        worker: u32,
        /// Measurements.
        interval: Box<Interval>,
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
    /// Messages due before the session opened: (due, counted, text).
    queued: RefCell<Vec<(Instant, bool, u32)>>,
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

    /// Whether something starting at `at` is measured (not in warm-up).
    fn counted_at(&self, at: Instant) -> bool {
        let warmup = self.scenario().warmup.0;
        match self.t0.get() {
            None => warmup.is_zero(),
            Some(t0) => at.saturating_duration_since(t0) >= warmup,
        }
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
                if c.session.borrow().phase() == Phase::Open {
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
    stop_sessions(&w).await;
    finish(&w);
}

fn finish(w: &Rc<Worker>) {
    w.finished.set(true);
    let interval = Box::new(w.rec.borrow_mut().take());
    let _ = w.tx.send(Report::Done {
        worker: w.index,
        interval,
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
            for (_, counted, _) in c.queued.borrow_mut().drain(..) {
                if counted {
                    rec.counters().sent += 1;
                    rec.error(ErrorKind::Timeout);
                }
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

/// Paces connects: `rate` per second, with a burst of one control period.
struct Pacer {
    rate: f64,
    since: Instant,
    started: u64,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer {
            rate,
            since: Instant::now(),
            started: 0,
        }
    }
    /// How many connects may start now; counts them as started.
    fn allowed(&mut self) -> u64 {
        let budget = (self.since.elapsed().as_secs_f64() * self.rate).floor() as u64 + 1;
        let n = budget.saturating_sub(self.started);
        self.started += n;
        n
    }
    /// Forgets unused budget (nothing was wanted).
    fn idle(&mut self) {
        self.since = Instant::now();
        self.started = 0;
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
    let mut tick: u64 = 1;
    loop {
        let at = w.run_start + Duration::from_secs(tick);
        monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
        if w.finished.get() {
            return;
        }
        let interval = Box::new(w.rec.borrow_mut().take());
        let _ = w.tx.send(Report::Tick {
            worker: w.index,
            tick: tick - 1,
            interval,
            open: w.open.get(),
        });
        tick += 1;
    }
}

/// The open model: send each message when it is due, on any session.
async fn open_model(w: &Rc<Worker>, t0: Instant, end: Instant) -> std::io::Result<()> {
    let sc = w.scenario();
    let rate = sc.rate_profile().scaled(w.share.fraction());
    let phase = w.share.part as f64 / w.share.parts as f64;
    let seed = sc
        .seed
        .wrapping_add(w.share.part.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let arrivals = Arrivals::new(&rate, sc.arrivals, sc.burstiness, seed, phase);
    let warmup = sc.warmup.secs();
    let timer = PreciseTimer::new()?;
    // Past this, messages still waiting to be sent are counted `unsent`.
    let give_up = end + Duration::from_millis(100);
    let mut burst = 0u32;
    let mut arrivals = arrivals.peekable();
    while let Some(t) = arrivals.next() {
        if w.stopping.get() {
            break;
        }
        let due = t0 + Duration::from_secs_f64(t);
        if due > end {
            break;
        }
        let now = Instant::now();
        if due > now {
            burst = 0;
            timer.sleep_until(due).await?;
        } else if now > give_up {
            let mut unsent = 1;
            while arrivals
                .next_if(|&t| t0 + Duration::from_secs_f64(t) <= end)
                .is_some()
            {
                unsent += 1;
            }
            let mut rec = w.rec.borrow_mut();
            rec.counters().sent += unsent;
            rec.counters().errors[ErrorKind::Unsent.index()] += unsent;
            break;
        } else {
            // Behind schedule: catch up, but let the driver deliver reads and
            // timers every few messages (ready tasks alone never park it).
            burst += 1;
            if burst % 32 == 0 {
                timer.pause().await?;
            }
        }
        dispatch(w, due, t >= warmup);
    }
    Ok(())
}

/// Sends one message due at `due` on the next session in turn.
fn dispatch(w: &Rc<Worker>, due: Instant, counted: bool) {
    let text = w.rng.borrow_mut().u32(..w.plan.texts.len() as u32);
    let conns = w.conns.borrow();
    let len = conns.len();
    for _ in 0..len {
        let i = w.rr.get() % len;
        w.rr.set(i + 1);
        let c = conns[i].clone();
        let phase = c.session.borrow().phase();
        match phase {
            Phase::Open if !c.closing.get() => {
                drop(conns);
                send_on(w, &c, due, counted, text);
                return;
            }
            Phase::Upgrading | Phase::Greeting => {
                c.queued.borrow_mut().push((due, counted, text));
                return;
            }
            _ => continue,
        }
    }
    if counted {
        let mut rec = w.rec.borrow_mut();
        rec.counters().sent += 1;
        rec.error(ErrorKind::NoSession);
    }
}

fn send_on(w: &Rc<Worker>, c: &Rc<Conn>, origin: Instant, counted: bool, text: u32) {
    let mask = w.mask();
    if counted && w.scenario().model == Model::Open {
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
            counted,
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
        send_on(&w, &c, now, w.counted_at(now), text);
        while c.session.borrow().in_flight() > 0 && !c.dead.get() && !w.stopping.get() {
            c.settled.wait().await;
        }
    }
}

fn open_session(w: &Rc<Worker>) {
    let n = w.next_conn.get();
    w.next_conn.set(n + 1);
    let now = Instant::now();
    let counted = w.counted_at(now);
    let mut rec = w.rec.borrow_mut();
    if counted {
        rec.counters().sessions_attempted += 1;
    } else {
        rec.counters().warmup_sessions_attempted += 1;
    }
    drop(rec);
    let conn = Rc::new(Conn {
        n,
        slot: Cell::new(0),
        listed: Cell::new(true),
        session: RefCell::new(Session::new(now, counted)),
        stream: RefCell::new(None),
        fd: Cell::new(-1),
        out: RefCell::new(Vec::new()),
        flushing: Cell::new(false),
        closing: Cell::new(false),
        close_later: Cell::new(false),
        shut: Cell::new(false),
        dead: Cell::new(false),
        queued: RefCell::new(Vec::new()),
        settled: Signal::default(),
    });
    {
        let mut v = w.conns.borrow_mut();
        conn.slot.set(v.len());
        v.push(conn.clone());
    }
    w.connecting.set(w.connecting.get() + 1);
    monoio::spawn(session_task(w.clone(), conn));
}

async fn session_task(w: Rc<Worker>, c: Rc<Conn>) {
    let established = monoio::time::timeout(w.plan.connect_timeout, establish(&w, &c)).await;
    w.connecting.set(w.connecting.get() - 1);
    let failure = match established {
        Ok(Ok(())) => None,
        Ok(Err(f)) => Some(f),
        Err(_) => Some((
            ErrorKind::Connect,
            format!(
                "no welcome within {:?} of connecting",
                w.plan.connect_timeout
            ),
        )),
    };
    if let Some((kind, msg)) = failure {
        w.failed.set(w.failed.get() + 1);
        w.note_error(msg);
        {
            let mut rec = w.rec.borrow_mut();
            if c.session.borrow().connect_counted() {
                rec.error(kind);
            }
            // Messages that waited for this session fail with it.
            for (_, counted, _) in c.queued.borrow_mut().drain(..) {
                if counted {
                    rec.counters().sent += 1;
                    rec.error(kind);
                }
            }
            c.session.borrow_mut().fail_all(kind, &mut rec);
        }
        w.remove(&c);
        c.dead.set(true);
        c.settled.notify();
        return;
    }
    if c.close_later.get() {
        // Closed (scaled down or stopped) while it was connecting.
        begin_close(&w, &c);
    }
    let open = w.open.get() + 1;
    w.open.set(open);
    w.peak_open.set(w.peak_open.get().max(open));
    let queued: Vec<(Instant, bool, u32)> = std::mem::take(&mut *c.queued.borrow_mut());
    for (due, counted, text) in queued {
        send_on(&w, &c, due, counted, text);
    }
    if w.scenario().model == Model::Closed && w.t0.get().is_some() {
        monoio::spawn(closed_loop(w.clone(), c.clone()));
    }
    serve(&w, &c).await;
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
                    let p = c.session.borrow_mut().on_bytes(
                        &mut buf[..n],
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
    if !c.out.borrow().is_empty() {
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
    match net::send_queued(fd, &mut c.out.borrow_mut()) {
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
