//! The I/O shell of a run: starts one worker thread per core, opens the first
//! stage's sessions, starts the clock, merges the workers' one-second
//! intervals in order (for the live progress line and the HDR log), watches
//! resident memory, and stops everything by a hard deadline so that every run
//! is bounded in time.

pub mod direct;
pub mod net;
pub mod poll;
pub mod schedule;
pub mod signal;
pub mod timer;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use inference_client::IoDriver;
use thiserror::Error;

use crate::budget::{evaluate_all, AbortRule, AbortWatch, Aborted, Facts};
use crate::metrics::{ErrorKind, Figure, Final, Interval};
use crate::progress::{self, ProgressView};
use crate::protocol::Text;
use crate::report::{SeriesPoint, StageInput};
use crate::scenario::{Model, Scenario, ScenarioError, Shard, Share, Transport};
use crate::session::SessionConfig;
use crate::system;
use worker::{Control, Plan, Report, WorkerSpec};

/// How to run (not what load to offer: that is the scenario).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads (one per core by default).
    pub threads: usize,
    /// Pin worker `i` to CPU `i`.
    pub pin: bool,
    /// I/O driver.
    pub driver: IoDriver,
    /// Print progress on stderr.
    pub progress: bool,
    /// This process's share of the scenario.
    pub shard: Shard,
    /// TCP connect to `welcome`, at most, per session.
    pub connect_timeout: Duration,
    /// End the run early when the budgets stop holding (`--abort-on-fail`).
    pub abort: Option<AbortRule>,
    /// Start the stages at this wall-clock time (`--start-at`), so that
    /// shards started apart run together.
    pub start_at: Option<SystemTime>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: true,
            driver: IoDriver::Auto,
            progress: false,
            shard: Shard::default(),
            connect_timeout: Duration::from_secs(10),
            abort: None,
            start_at: None,
        }
    }
}

/// A run that could not take place.
#[derive(Debug, Error)]
pub enum RunError {
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Not a single session could be opened.
    #[error("could not open any session to {url}: {reason}")]
    NoSession {
        /// Target.
        url: String,
        /// The first failure.
        reason: String,
    },
    /// A worker thread could not run.
    #[error("worker failed: {0}")]
    Worker(String),
}

/// One second of a run, as [`execute`] hands it on in order: every worker's
/// measurements of that second, merged.
#[derive(Debug, Clone, Copy)]
pub struct Second<'a> {
    /// Seconds since the run started (connect phase included); the second
    /// ends at `tick + 1`.
    pub tick: u64,
    /// Seconds since the stages started, `None` before (the connect
    /// phase). Stages start on a tick boundary, so this second is whole.
    pub t_s: Option<u64>,
    /// What was measured in it.
    pub interval: &'a Interval,
    /// Sessions open at its end (this process).
    pub open: u64,
    /// Messages the schedule offered in it (this process's share; 0 before
    /// the stages and in closed-model runs).
    pub offered: f64,
}

/// What a run measured, before it is turned into a report.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Everything measured after warm-up.
    pub totals: Interval,
    /// Most sessions open at once (sampled each second).
    pub peak_sessions: u64,
    /// Resident memory before any session.
    pub rss_baseline: u64,
    /// Resident memory when the most sessions were open.
    pub rss_at_peak: u64,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// From start to the end of closing.
    pub elapsed: Duration,
    /// Stage time after warm-up: what rates are computed over.
    pub measured: Duration,
    /// I/O driver the workers used.
    pub driver: String,
    /// Worker threads.
    pub threads: usize,
    /// Open-files limit (soft after raising, hard).
    pub open_files: (u64, u64),
    /// False when the hard deadline cut the run short.
    pub complete: bool,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// Each stage's measurements, by stage index.
    pub stages: Vec<Interval>,
    /// Each conversation turn's measurements (index 0 is turn 1).
    pub turns: Vec<Interval>,
    /// One point per second from the start of the stages.
    pub series: Vec<SeriesPoint>,
    /// Set when `--abort-on-fail` ended the run early.
    pub aborted: Option<Aborted>,
    /// Wall-clock time the stages started (after the connect phase).
    pub stages_started_at: Option<SystemTime>,
}

impl RunOutcome {
    /// The stages as the report takes them: the scenario's shape with what
    /// each measured.
    pub fn stage_inputs(&self, sc: &Scenario) -> Vec<StageInput> {
        let warmup = sc.warmup.secs();
        let mut start = 0.0;
        sc.stages
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let duration = st.duration.secs();
                let end = start + duration;
                let measured = (end - start.max(warmup)).max(0.0);
                let input = StageInput {
                    name: sc.stage_name(i),
                    start_s: start,
                    duration_s: duration,
                    sessions: st.sessions,
                    rate_per_s: st.rate,
                    measured_s: measured,
                    slos: sc.slos.clone(),
                    totals: self.stages.get(i).cloned().unwrap_or_default(),
                };
                start = end;
                input
            })
            .collect()
    }

    /// Messages sent per second over the measured stages.
    pub fn rate_per_s(&self) -> f64 {
        let s = self.measured.as_secs_f64();
        if s > 0.0 {
            self.totals.counters.sent as f64 / s
        } else {
            0.0
        }
    }

    /// Resident bytes per open session at the peak.
    pub fn bytes_per_session(&self) -> Option<u64> {
        (self.peak_sessions > 0)
            .then(|| self.rss_at_peak.saturating_sub(self.rss_baseline) / self.peak_sessions)
    }
}

struct Tally {
    totals: Interval,
    peak_sessions: u64,
    rss_at_peak: u64,
}

fn print_progress(
    sc: &Scenario,
    opts: &RunOptions,
    initial: u64,
    t0: Option<Instant>,
    p: &PendingTick,
    totals: &Interval,
) {
    let total = sc.total().as_secs_f64();
    let elapsed = t0.map(|t0| Instant::now().saturating_duration_since(t0).as_secs_f64());
    let (stage, target) = match elapsed {
        None => ("connect".to_string(), initial),
        Some(e) => match sc.stage_at(e) {
            Some((_, name)) => (name, sc.sessions_profile().at(e).floor() as u64),
            None => ("drain".to_string(), 0),
        },
    };
    let c = &totals.counters;
    let view = ProgressView {
        elapsed: elapsed.map(|e| e.min(total)),
        total,
        stage,
        open: p.open,
        target: opts.shard_share(target),
        rate: p.interval.counters.sent,
        rtt: progress::p50_p99(totals.figure(Figure::Rtt)),
        ttft: progress::p50_p99(totals.figure(Figure::Ttft)),
        errors: c.errors_total(),
        busy: c.error(ErrorKind::Busy),
    };
    eprintln!("{}", progress::line(&view));
}

struct PendingTick {
    reported: usize,
    interval: Interval,
    open: u64,
}

/// Runs `scenario` (this shard's share of it); `on_second` gets each
/// second's merged measurements in order, then the remainder measured after
/// the last full second.
pub fn execute(
    scenario: &Scenario,
    opts: &RunOptions,
    mut on_second: impl FnMut(&Second<'_>),
) -> Result<RunOutcome, RunError> {
    let target = scenario.validate()?;
    let mut texts: Vec<Text> = scenario
        .resolved_texts()?
        .iter()
        .map(|t| Text::new(t))
        .collect();
    // wss:// (and https:// over long-polling); direct mode makes its own.
    let wss = if target.is_direct() {
        None
    } else {
        target
            .tls(scenario.direct.ca.as_deref())
            .map_err(|e| ScenarioError::Invalid(format!("wss://: {e}")))?
    };
    // A trace's texts follow the plain texts; its entries index them.
    let trace = match &scenario.trace {
        Some(path) => {
            let mut t = crate::trace::Trace::load(path).map_err(ScenarioError::from)?;
            let base = texts.len() as u32;
            texts.extend(t.texts.iter().map(|x| Text::new(x)));
            for e in &mut t.entries {
                e.text += base;
            }
            Some(t)
        }
        None => None,
    };
    // Each conversation's `say` texts follow the plain texts, in order.
    let mut conversation_texts = Vec::with_capacity(scenario.conversations.len());
    for conv in &scenario.conversations {
        conversation_texts.push(texts.len() as u32);
        for turn in &conv.turns {
            if let crate::conversation::Action::Say(t) = &turn.action {
                texts.push(Text::new(t));
            }
        }
    }
    let addr = target.resolve().map_err(ScenarioError::from)?;
    let open_files = system::raise_nofile_limit();
    let mut warnings = Vec::new();
    let threads = opts.threads.max(1);
    let my_sessions: u64 = (0..threads as u32)
        .map(|w| Share::of(opts.shard, w, threads as u32).count(scenario.peak_sessions()))
        .sum();
    // A long-polling session holds two connections: the budget halves.
    let per_session = scenario.transport.connections_per_session();
    if my_sessions * per_session + 64 > open_files.0 {
        let conns = if per_session > 1 {
            format!(
                " ({} connections, {per_session} per long-polling session)",
                my_sessions * per_session
            )
        } else {
            String::new()
        };
        warnings.push(format!(
            "this process is to hold {my_sessions} sessions{conns} but may open only {} files; run several processes with --shard I/N",
            open_files.0
        ));
    }
    let bind_sources = matches!(addr.ip(), std::net::IpAddr::V4(ip) if ip.is_loopback());
    let plan = Arc::new(Plan {
        scenario: scenario.clone(),
        target,
        addr,
        texts,
        session: SessionConfig {
            replies: scenario.replies,
            resend_busy: scenario.resend_busy,
            slos: scenario.slos.clone(),
        },
        bind_sources,
        connect_timeout: opts.connect_timeout,
        close_grace: Duration::from_secs(2),
        shard: opts.shard,
        conversation_texts,
        trace,
        tls: wss,
    });
    let direct_work = direct::prepare(&plan)?;

    let started_at = SystemTime::now();
    let now = Instant::now();
    // With --start-at, the run's clock is set back by under a second so that
    // the start falls on one of its whole seconds: each second of the series
    // is then a whole second of the stages, on every shard alike.
    let planned_start: Option<(Instant, u64)> = match opts.start_at {
        Some(at) => match at.duration_since(started_at) {
            Ok(wait) => Some((
                now + wait,
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            )),
            Err(_) => {
                warnings.push(
                    "--start-at has passed: the stages started as soon as the sessions were open"
                        .to_string(),
                );
                None
            }
        },
        None => None,
    };
    let run_start = planned_start
        .and_then(|(start, whole)| start.checked_sub(Duration::from_secs(whole)))
        .unwrap_or(now);
    let (tx, rx) = flume::unbounded::<Report>();
    let mut controls = Vec::new();
    let mut handles = Vec::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for i in 0..threads {
        let (ctx, crx) = flume::unbounded();
        controls.push(ctx);
        let spec = WorkerSpec {
            index: i as u32,
            workers: threads as u32,
            run_start,
            plan: plan.clone(),
            tx: tx.clone(),
            control: crx,
            driver: opts.driver,
            cpu: opts.pin.then_some(i % cpus),
        };
        // An http(s):// target is an inference server, loaded directly.
        let work = direct_work.clone();
        let transport = plan.scenario.transport;
        let h = std::thread::Builder::new()
            .name(format!("loadgen-w{i}"))
            .spawn(move || match work {
                Some(work) => direct::run(spec, work),
                None if transport == Transport::Poll => poll::run(spec),
                None => worker::run(spec),
            })
            .map_err(|e| RunError::Worker(format!("cannot start a thread: {e}")))?;
        handles.push(h);
    }
    drop(tx);
    let broadcast = |c: Control| {
        for ctx in &controls {
            let _ = ctx.send(c);
        }
    };

    let sc = scenario;
    let total = sc.total();
    let initial: u64 = sc.sessions_profile().at(0.0).floor() as u64;
    let connect_bound =
        Duration::from_secs_f64(initial as f64 / sc.connect_rate) + opts.connect_timeout;
    // Hard bound: start-up, connect phase, stages, drain, closing, slack.
    let mut deadline = run_start + Duration::from_secs(10) + connect_bound + Duration::from_secs(5);
    let mut ups = 0usize;
    let mut readies = 0usize;
    let mut driver = String::new();
    let mut rss_baseline = 0;
    let mut opened_at_ready = 0;
    let mut first_error: Option<String> = None;
    let mut t0: Option<Instant> = None;
    let mut alive = threads;
    let mut pending: BTreeMap<u64, PendingTick> = BTreeMap::new();
    let mut tally = Tally {
        totals: Interval::default(),
        peak_sessions: 0,
        rss_at_peak: 0,
    };
    let mut remainder = Final::default();
    let mut complete = true;
    let mut failure: Option<RunError> = None;

    let my_fraction: f64 = (0..threads as u32)
        .map(|w| Share::of(opts.shard, w, threads as u32).fraction())
        .sum();
    let rate_profile = sc.rate_profile().scaled(my_fraction);
    let open_model = sc.model == Model::Open;
    let mut series: Vec<SeriesPoint> = Vec::new();
    let mut t0_tick: Option<u64> = None;
    let mut watch = opts.abort.map(AbortWatch::new);
    let mut aborted: Option<Aborted> = None;
    let warmup_s = sc.warmup.secs();
    let mut handle_tick = |tick: u64,
                           p: PendingTick,
                           tally: &mut Tally,
                           t0: Option<Instant>,
                           t0_tick: Option<u64>| {
        tally.totals.add(&p.interval);
        let t_s = t0_tick.and_then(|t| tick.checked_sub(t));
        let offered = match t_s {
            Some(t) if open_model => rate_profile.integral_between(t as f64, t as f64 + 1.0),
            _ => 0.0,
        };
        on_second(&Second {
            tick,
            t_s,
            interval: &p.interval,
            open: p.open,
            offered,
        });
        if let Some(t) = t_s {
            series.push(SeriesPoint::of(t, offered, &p.interval, p.open));
        }
        if let (Some(t), Some(w), None) = (t_s, watch.as_mut(), aborted.as_ref()) {
            // Judged over everything measured so far, as the final verdict is.
            let end = (t + 1) as f64;
            let measured = (end.min(total.as_secs_f64()) - warmup_s).max(0.0);
            let facts = Facts {
                totals: &tally.totals,
                peak_sessions: tally.peak_sessions.max(p.open),
                rate_per_s: if measured > 0.0 {
                    tally.totals.counters.sent as f64 / measured
                } else {
                    0.0
                },
            };
            if end > warmup_s {
                if let Some(a) = w.observe(end, &evaluate_all(&sc.budgets, &facts)) {
                    broadcast(Control::Abort);
                    aborted = Some(a);
                }
            }
        }
        if p.open >= tally.peak_sessions && p.open > 0 {
            tally.peak_sessions = p.open;
            tally.rss_at_peak = system::rss_bytes();
        }
        if opts.progress {
            print_progress(sc, opts, initial, t0, &p, &tally.totals);
        }
    };

    while alive > 0 {
        let msg = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => Some(m),
            Err(flume::RecvTimeoutError::Timeout) => None,
            Err(flume::RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            Some(Report::Up { driver: d, .. }) => {
                ups += 1;
                if driver.is_empty() || driver == d {
                    driver = d.to_string();
                } else {
                    driver = "mixed".to_string();
                }
                if ups == threads {
                    rss_baseline = system::rss_bytes();
                    broadcast(Control::Connect);
                }
            }
            Some(Report::Ready {
                opened,
                failed,
                first_error: e,
                ..
            }) => {
                readies += 1;
                opened_at_ready += opened;
                if first_error.is_none() {
                    first_error = e;
                }
                let _ = failed;
                if readies == threads {
                    if opened_at_ready == 0 && initial > 0 {
                        failure = Some(RunError::NoSession {
                            url: sc.url.clone(),
                            reason: first_error
                                .clone()
                                .unwrap_or_else(|| "no session opened".into()),
                        });
                        broadcast(Control::Abort);
                    } else {
                        // The stages start on a tick boundary, so that each
                        // second of the series is a whole second of them.
                        let soon = Instant::now() + Duration::from_millis(5);
                        let (start, tick) = match planned_start {
                            Some((at, tick)) if soon <= at => (at, tick),
                            _ => {
                                if planned_start.is_some() {
                                    warnings.push("the sessions opened after --start-at: this shard started late; give the sessions more time".to_string());
                                }
                                let ahead = soon.saturating_duration_since(run_start);
                                let tick = ahead.as_secs() + u64::from(ahead.subsec_nanos() > 0);
                                (run_start + Duration::from_secs(tick), tick)
                            }
                        };
                        t0 = Some(start);
                        t0_tick = Some(tick);
                        if opened_at_ready >= tally.peak_sessions {
                            tally.peak_sessions = opened_at_ready;
                            tally.rss_at_peak = system::rss_bytes();
                        }
                        deadline = start
                            + total
                            + sc.timeout.0
                            + Duration::from_secs(2)
                            + Duration::from_secs(5);
                        broadcast(Control::Start(start));
                    }
                }
            }
            Some(Report::Tick {
                tick,
                interval,
                open,
                ..
            }) => {
                let p = pending.entry(tick).or_insert_with(|| PendingTick {
                    reported: 0,
                    interval: Interval::default(),
                    open: 0,
                });
                p.reported += 1;
                p.interval.add(&interval);
                p.open += open;
            }
            Some(Report::Done { measured, .. }) => {
                alive -= 1;
                remainder.add(&measured);
            }
            Some(Report::Failed { error, .. }) => {
                alive -= 1;
                failure.get_or_insert(RunError::Worker(error));
                broadcast(Control::Abort);
            }
            None => {}
        }
        while let Some(entry) = pending.first_entry() {
            if entry.get().reported < alive.max(1) && alive > 0 {
                break;
            }
            let (tick, p) = entry.remove_entry();
            handle_tick(tick, p, &mut tally, t0, t0_tick);
        }
        if Instant::now() > deadline {
            complete = false;
            warnings.push(
                "the run passed its hard deadline; results cover what was measured until then"
                    .into(),
            );
            broadcast(Control::Abort);
            break;
        }
    }
    let last_tick = pending.keys().last().copied();
    for (tick, p) in std::mem::take(&mut pending) {
        handle_tick(tick, p, &mut tally, t0, t0_tick);
    }
    let tail_tick = last_tick.map_or_else(|| run_start.elapsed().as_secs(), |t| t + 1);
    tally.totals.add(&remainder.interval);
    on_second(&Second {
        tick: tail_tick,
        t_s: t0_tick.and_then(|t| tail_tick.checked_sub(t)),
        interval: &remainder.interval,
        open: 0,
        offered: 0.0,
    });
    if complete {
        for h in handles {
            let _ = h.join();
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let Final {
        mut stages, turns, ..
    } = remainder;
    // One interval per stage, those that measured nothing included.
    if stages.len() < sc.stages.len() {
        stages.resize_with(sc.stages.len(), Interval::default);
    }
    let ran = aborted
        .as_ref()
        .map_or(total, |a| Duration::from_secs_f64(a.at_s).min(total));
    let measured = ran.saturating_sub(sc.warmup.0);
    Ok(RunOutcome {
        totals: tally.totals,
        peak_sessions: tally.peak_sessions,
        rss_baseline,
        rss_at_peak: tally.rss_at_peak,
        started_at,
        elapsed: run_start.elapsed(),
        measured,
        driver,
        threads,
        open_files,
        complete,
        warnings,
        stages,
        turns,
        series,
        aborted,
        stages_started_at: t0.map(|t0| started_at + t0.saturating_duration_since(now)),
    })
}

impl RunOptions {
    /// This process's share of a count over all shards.
    fn shard_share(&self, total: u64) -> u64 {
        (0..self.threads.max(1) as u32)
            .map(|w| Share::of(self.shard, w, self.threads.max(1) as u32).count(total))
            .sum()
    }
}
