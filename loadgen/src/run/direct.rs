//! One direct-mode worker thread: the I/O shell of [`crate::direct`]. Like
//! the WebSocket worker (`worker`), it is a monoio runtime (io_uring or
//! epoll) pinned to a core, carries its share of the stages, speaks to the
//! coordinator with the same [`Report`] and [`Control`] messages, ticks on
//! the run's whole seconds, and marks each request with the stage it was due
//! in. Its "sessions" are keep-alive connections to the inference server:
//! at most its share of the stage's `sessions` at once (`vllm bench serve
//! --max-concurrency`). A due request takes an idle connection, opens a new
//! one while fewer exist, or waits in line (first come, first served); its
//! figures count from when it was due either way. It only moves bytes and
//! time: the requests are [`Workload`]'s, the reading is
//! [`Exchange`]'s, the recording [`settle`]'s.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inference_client::error::Fault;
use inference_client::http::Conn;
use inference_client::runtime;

use super::schedule;
use super::signal::Signal;
use super::worker::{Control, Plan, Report, WorkerSpec};
use crate::arrivals::Profile;
use crate::direct::response::{settle, Exchange, Failure, Outcome, Step};
use crate::direct::{Prepared, Workload};
use crate::metrics::{ErrorKind, Figure, Mark, Recorder};
use crate::scenario::{Model, Scenario, ScenarioError, Share, ThinkDist};

/// How often the connection cap follows the stage's `sessions`.
const CONTROL_EVERY: Duration = Duration::from_millis(10);
/// How long, after `[DONE]`, the rest of a response (its last chunk) may
/// take before its connection is given up rather than reused.
const DRAIN: Duration = Duration::from_secs(1);

/// The workload of a run whose target is `http(s)://`, `None` for `ws://`.
pub fn prepare(plan: &Plan) -> Result<Option<Arc<Workload>>, ScenarioError> {
    if !plan.target.is_direct() {
        return Ok(None);
    }
    let texts = plan.scenario.resolved_texts()?;
    let w = Workload::new(&plan.scenario, &plan.target, &texts)?;
    Ok(Some(Arc::new(w)))
}

/// Runs a direct-mode worker on the current thread until it is done.
pub fn run(spec: WorkerSpec, work: Arc<Workload>) {
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
    if let Err(e) = runtime::block_on(spec.driver, move |kind| {
        worker_main(spec, work, kind.as_str())
    }) {
        let _ = tx.send(Report::Failed {
            worker: index,
            error: format!("cannot start a runtime: {e}"),
        });
    }
}

/// An open connection; dropping it closes it and counts it closed.
struct Live {
    conn: Conn,
    open: Rc<Cell<u64>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.open.set(self.open.get().saturating_sub(1));
    }
}

/// What a request may use: a connection, or the right to open one.
enum Grant {
    Conn(Live),
    Open,
}

/// A request waiting for a connection.
#[derive(Default)]
struct Waiter {
    grant: RefCell<Option<Grant>>,
    signal: Signal,
    /// It stopped waiting (its deadline passed): grant it nothing more.
    gone: Cell<bool>,
}

struct Worker {
    index: u32,
    share: Share,
    plan: Arc<Plan>,
    work: Arc<Workload>,
    tx: flume::Sender<Report>,
    run_start: Instant,
    sessions_profile: Profile,
    /// This worker's part of the arrival rate: its part of the connections,
    /// so that a worker with no connection gets no requests.
    weight: f64,
    rec: RefCell<Recorder>,
    idle: RefCell<Vec<Live>>,
    /// Connections open, being opened, or granted to be opened.
    slots: Cell<u64>,
    /// Most connections now.
    cap: Cell<u64>,
    waiters: RefCell<VecDeque<Rc<Waiter>>>,
    open: Rc<Cell<u64>>,
    peak_open: Cell<u64>,
    /// Requests in flight, by id, with their marks.
    pending: RefCell<HashMap<u64, Mark>>,
    next_id: Cell<u64>,
    /// Requests this worker made: its `k`-th is the run's `k * parts + part`-th.
    made: Cell<u64>,
    /// Closed-model sessions running.
    loops: Cell<u64>,
    failed: Cell<u64>,
    first_error: RefCell<Option<String>>,
    rng: RefCell<fastrand::Rng>,
    t0: Cell<Option<Instant>>,
    stopping: Cell<bool>,
    finished: Cell<bool>,
}

impl Worker {
    fn scenario(&self) -> &Scenario {
        &self.plan.scenario
    }

    /// The mark of something starting at `at`.
    fn mark_at(&self, at: Instant) -> Mark {
        schedule::mark_at(self.scenario(), self.t0.get(), at)
    }

    /// The mark of something starting `t` seconds into the stages.
    fn mark_of(&self, t: f64) -> Mark {
        schedule::mark_of(self.scenario(), t)
    }

    /// Connections this worker may hold `t` seconds into the stages.
    fn cap_at(&self, t: f64) -> u64 {
        self.share.count(self.sessions_profile.at(t).floor() as u64)
    }

    fn note_error(&self, e: String) {
        self.first_error.borrow_mut().get_or_insert(e);
    }

    /// The next waiter still waiting.
    fn next_waiter(&self) -> Option<Rc<Waiter>> {
        let mut q = self.waiters.borrow_mut();
        while let Some(w) = q.pop_front() {
            if !w.gone.get() {
                return Some(w);
            }
        }
        None
    }

    /// Lets waiters open connections while there is room under the cap.
    fn grant_opens(&self) {
        while self.slots.get() < self.cap.get() {
            let Some(waiter) = self.next_waiter() else {
                return;
            };
            self.slots.set(self.slots.get() + 1);
            *waiter.grant.borrow_mut() = Some(Grant::Open);
            waiter.signal.notify();
        }
    }

    /// A request is done with its connection: `Some` if it can carry another.
    fn release(&self, conn: Option<Live>) {
        match conn {
            Some(c) if self.slots.get() <= self.cap.get() => match self.next_waiter() {
                Some(waiter) => {
                    *waiter.grant.borrow_mut() = Some(Grant::Conn(c));
                    waiter.signal.notify();
                }
                None => self.idle.borrow_mut().push(c),
            },
            // Over the cap (the stage asks for fewer): close it.
            Some(_) | None => {
                self.slots.set(self.slots.get().saturating_sub(1));
                self.grant_opens();
            }
        }
    }

    /// Follows a new cap: closes idle connections above it, lets waiters
    /// open connections below it.
    fn set_cap(&self, cap: u64) {
        self.cap.set(cap);
        while self.slots.get() > cap {
            if self.idle.borrow_mut().pop().is_none() {
                break;
            }
            self.slots.set(self.slots.get() - 1);
        }
        self.grant_opens();
    }
}

async fn worker_main(spec: WorkerSpec, work: Arc<Workload>, driver: &'static str) {
    let plan = spec.plan.clone();
    let share = Share::of(plan.shard, spec.index, spec.workers);
    let sc = &plan.scenario;
    let peak = sc.peak_sessions();
    let weight = if peak > 0 {
        share.count(peak) as f64 / peak as f64
    } else {
        0.0
    };
    let seed = sc.seed ^ share.part.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let w = Rc::new(Worker {
        index: spec.index,
        share,
        sessions_profile: sc.sessions_profile(),
        weight,
        plan: plan.clone(),
        work,
        tx: spec.tx.clone(),
        run_start: spec.run_start,
        rec: RefCell::new(Recorder::default()),
        idle: RefCell::new(Vec::new()),
        slots: Cell::new(0),
        cap: Cell::new(0),
        waiters: RefCell::new(VecDeque::new()),
        open: Rc::new(Cell::new(0)),
        peak_open: Cell::new(0),
        pending: RefCell::new(HashMap::new()),
        next_id: Cell::new(0),
        made: Cell::new(0),
        loops: Cell::new(0),
        failed: Cell::new(0),
        first_error: RefCell::new(None),
        rng: RefCell::new(fastrand::Rng::with_seed(seed)),
        t0: Cell::new(None),
        stopping: Cell::new(false),
        finished: Cell::new(false),
    });
    let _ = w.tx.send(Report::Up {
        worker: w.index,
        driver,
    });
    monoio::spawn(reporter(w.clone()));

    // Connect phase: one connection, so that a server that is not there is
    // a failure to start, not a run of errors.
    match spec.control.recv_async().await {
        Ok(Control::Connect) => {}
        _ => return finish(&w),
    }
    w.cap.set(w.cap_at(0.0));
    let mut opened = 0;
    if w.cap.get() > 0 {
        w.slots.set(1);
        match connect(&w, Instant::now() + w.plan.connect_timeout).await {
            Ok(c) => {
                opened = 1;
                w.idle.borrow_mut().push(c);
            }
            Err(_) => w.slots.set(0),
        }
    }
    let _ = w.tx.send(Report::Ready {
        worker: w.index,
        opened,
        failed: w.failed.get(),
        first_error: w.first_error.borrow().clone(),
    });
    let t0 = match spec.control.recv_async().await {
        Ok(Control::Start(t0)) => t0,
        _ => return finish(&w),
    };
    monoio::time::sleep_until(monoio::time::Instant::from_std(t0)).await;
    w.t0.set(Some(t0));
    let end = t0 + w.scenario().total();
    monoio::spawn(controller(w.clone(), end));
    let abort = spec.control.clone();
    let w2 = w.clone();
    monoio::spawn(async move {
        if let Ok(Control::Abort) = abort.recv_async().await {
            w2.stopping.set(true);
        }
    });
    if w.scenario().model == Model::Open {
        if let Err(e) = open_model(&w, t0, end).await {
            w.note_error(format!("arrival timer failed: {e}"));
        }
    }
    while Instant::now() < end && !w.stopping.get() {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    // Drain: every request settles by its own deadline (due + timeout).
    let drain_until = Instant::now() + w.scenario().timeout.0 + DRAIN + Duration::from_millis(500);
    while !w.stopping.get() && !w.pending.borrow().is_empty() && Instant::now() < drain_until {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    finish(&w);
}

/// Counts what is still in flight as timeouts, closes the connections and
/// sends the last measurements.
fn finish(w: &Rc<Worker>) {
    w.finished.set(true);
    w.stopping.set(true);
    let measured = {
        let mut rec = w.rec.borrow_mut();
        for (_, mark) in w.pending.borrow_mut().drain() {
            rec.error_at(mark, ErrorKind::Timeout);
        }
        Box::new(rec.finish())
    };
    w.idle.borrow_mut().clear();
    let _ = w.tx.send(Report::Done {
        worker: w.index,
        measured,
        peak_open: w.peak_open.get(),
    });
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

/// Keeps the connection cap (and, in the closed model, the number of
/// sessions) on the stage's `sessions` while the stages run.
async fn controller(w: Rc<Worker>, end: Instant) {
    let t0 = w.t0.get().unwrap_or_else(Instant::now);
    let closed = w.scenario().model == Model::Closed;
    while !w.stopping.get() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let cap = w.cap_at((now - t0).as_secs_f64());
        if cap != w.cap.get() {
            w.set_cap(cap);
        }
        while closed && w.loops.get() < cap {
            w.loops.set(w.loops.get() + 1);
            monoio::spawn(closed_loop(w.clone(), end));
        }
        monoio::time::sleep(CONTROL_EVERY).await;
    }
}

/// The open model: each request when it is due, whatever the server does.
async fn open_model(w: &Rc<Worker>, t0: Instant, end: Instant) -> std::io::Result<()> {
    schedule::arrivals(
        w.scenario(),
        w.share,
        w.weight,
        t0,
        end,
        || w.stopping.get(),
        |due, t| {
            let mark = w.mark_of(t);
            if mark.counted() {
                let lag = Instant::now().saturating_duration_since(due);
                w.rec
                    .borrow_mut()
                    .record_lag(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
            }
            monoio::spawn(request(w.clone(), due, mark));
        },
        |t| schedule::count_unsent(&mut w.rec.borrow_mut(), w.mark_of(t)),
    )
    .await
}

/// One closed-model session: think, send, await the whole reply, repeat.
async fn closed_loop(w: Rc<Worker>, end: Instant) {
    let sc = w.scenario();
    let Some(think) = sc.think else { return };
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
        if w.stopping.get() || now >= end || w.loops.get() > w.cap.get() {
            w.loops.set(w.loops.get().saturating_sub(1));
            return;
        }
        request(w.clone(), now, w.mark_at(now)).await;
    }
}

/// One request due at `due`: counted `sent` now, settled when its response
/// is (or its deadline, `due + timeout`, passes).
async fn request(w: Rc<Worker>, due: Instant, mark: Mark) {
    let id = w.next_id.get();
    w.next_id.set(id + 1);
    w.pending.borrow_mut().insert(id, mark);
    w.rec.borrow_mut().count(mark, |c| c.sent += 1);
    let k = w.made.get() * w.share.parts + w.share.part;
    w.made.set(w.made.get() + 1);
    let (outcome, input_estimate) = match w.work.request(k) {
        Ok(req) => (perform(&w, &req, due).await, req.input_estimate),
        Err(e) => (Outcome::failed(Failure::Unsent(e.to_string())), 0),
    };
    // Not pending any more: the run ended and counted it a timeout.
    if w.pending.borrow_mut().remove(&id).is_none() {
        return;
    }
    settle(
        &outcome,
        due,
        mark,
        input_estimate,
        &w.scenario().slos,
        &mut w.rec.borrow_mut(),
    );
}

/// Gets a connection (or the right to open one) by `deadline`.
async fn acquire(w: &Rc<Worker>, deadline: Instant) -> Result<Grant, Failure> {
    if let Some(c) = w.idle.borrow_mut().pop() {
        return Ok(Grant::Conn(c));
    }
    if w.slots.get() < w.cap.get() {
        w.slots.set(w.slots.get() + 1);
        return Ok(Grant::Open);
    }
    let waiter = Rc::new(Waiter::default());
    w.waiters.borrow_mut().push_back(waiter.clone());
    monoio::select! {
        _ = waiter.signal.wait() => {}
        _ = monoio::time::sleep_until(monoio::time::Instant::from_std(deadline)) => {}
    }
    waiter.gone.set(true);
    let granted = waiter.grant.borrow_mut().take();
    match granted {
        Some(g) if Instant::now() < deadline => Ok(g),
        Some(g) => {
            w.release(match g {
                Grant::Conn(c) => Some(c),
                Grant::Open => None,
            });
            Err(Failure::Timeout(w.scenario().timeout.0))
        }
        None => Err(Failure::Timeout(w.scenario().timeout.0)),
    }
}

/// Opens a connection (TCP, and TLS for https) by `deadline`, recording
/// its `connect` time.
async fn connect(w: &Rc<Worker>, deadline: Instant) -> Result<Live, Failure> {
    let start = Instant::now();
    let mark = w.mark_at(start);
    {
        let mut rec = w.rec.borrow_mut();
        if mark.counted() {
            rec.count(mark, |c| c.sessions_attempted += 1);
        } else {
            rec.counters().warmup_sessions_attempted += 1;
        }
    }
    let limit = w
        .plan
        .connect_timeout
        .min(deadline.saturating_duration_since(start));
    if limit.is_zero() {
        return Err(Failure::Timeout(w.scenario().timeout.0));
    }
    match Conn::connect(w.plan.addr, w.work.tls.as_ref(), limit).await {
        Ok(conn) => {
            let now = Instant::now();
            let mut rec = w.rec.borrow_mut();
            if mark.counted() {
                let us = u64::try_from((now - start).as_micros()).unwrap_or(u64::MAX);
                rec.record(mark, Figure::Connect, us);
                rec.count(mark, |c| c.sessions_opened += 1);
            } else {
                rec.counters().warmup_sessions_opened += 1;
            }
            let open = w.open.get() + 1;
            w.open.set(open);
            w.peak_open.set(w.peak_open.get().max(open));
            Ok(Live {
                conn,
                open: w.open.clone(),
            })
        }
        Err(f) => {
            w.failed.set(w.failed.get() + 1);
            let msg = match f {
                Fault::Connect(m) => m,
                other => other.to_string(),
            };
            w.note_error(msg.clone());
            if Instant::now() >= deadline {
                Err(Failure::Timeout(w.scenario().timeout.0))
            } else {
                Err(Failure::Connect(msg))
            }
        }
    }
}

/// Sends `req` and reads its response, by `due + timeout`; gives the
/// connection back (or closes it) and returns what was measured.
async fn perform(w: &Rc<Worker>, req: &Prepared, due: Instant) -> Outcome {
    let deadline = due + w.scenario().timeout.0;
    let mut grant = match acquire(w, deadline).await {
        Ok(g) => g,
        Err(f) => return Outcome::failed(f),
    };
    let mut retried = false;
    loop {
        let live = match grant {
            Grant::Conn(c) => c,
            Grant::Open => match connect(w, deadline).await {
                Ok(c) => c,
                Err(f) => {
                    w.release(None);
                    return Outcome::failed(f);
                }
            },
        };
        match exchange(w, live, req, deadline).await {
            // The server had closed the idle connection: once more, on a new one.
            Exchanged::Stale if !retried => {
                retried = true;
                grant = Grant::Open;
            }
            Exchanged::Stale => {
                w.release(None);
                return Outcome::failed(Failure::Closed(
                    "the server closed the connection without answering".into(),
                ));
            }
            Exchanged::Done { outcome, keep } => {
                w.release(keep);
                return outcome;
            }
        }
    }
}

// Returned once per request and taken apart at once: boxing the big
// variant would only add an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Exchanged {
    /// A reused connection turned out closed before any byte of an answer.
    Stale,
    /// Answered (or failed); the connection, if it can carry another request.
    Done {
        outcome: Outcome,
        keep: Option<Live>,
    },
}

async fn exchange(w: &Rc<Worker>, mut live: Live, req: &Prepared, deadline: Instant) -> Exchanged {
    let timeout = w.scenario().timeout.0;
    let reused = std::mem::replace(&mut live.conn.reused, true);
    let done = |f: Failure| Exchanged::Done {
        outcome: Outcome::failed(f),
        keep: None,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return done(Failure::Timeout(timeout));
    }
    match monoio::time::timeout(left, live.conn.write_all(req.bytes.clone())).await {
        Err(_) => return done(Failure::Timeout(timeout)),
        Ok(Err(_)) if reused => return Exchanged::Stale,
        Ok(Err(f)) => return done(Failure::Closed(f.to_string())),
        Ok(Ok(())) => {}
    }
    let mut ex = Exchange::new();
    let mut settled_at: Option<Instant> = None;
    loop {
        let until = settled_at.map_or(deadline, |s| deadline.min(s + DRAIN));
        let left = until.saturating_duration_since(Instant::now());
        let step = if left.is_zero() {
            ex.abort(Failure::Timeout(timeout))
        } else {
            match live.conn.read(left).await {
                Ok(0) => ex.eof(Instant::now()),
                Ok(n) => {
                    let at = Instant::now();
                    let buf = live.conn.buf();
                    ex.feed(&buf[..n.min(buf.len())], at)
                }
                Err(Fault::Timeout(_)) => ex.abort(Failure::Timeout(timeout)),
                Err(f) => ex.abort(Failure::Closed(f.to_string())),
            }
        };
        match step {
            Step::Finished => break,
            Step::Settled => {
                settled_at.get_or_insert_with(Instant::now);
            }
            Step::More => {}
        }
    }
    let outcome = ex.outcome();
    if reused && !ex.received_any() && matches!(outcome.failure, Some(Failure::Closed(_))) {
        return Exchanged::Stale;
    }
    let keep = ex.reusable().then_some(live);
    Exchanged::Done { outcome, keep }
}
