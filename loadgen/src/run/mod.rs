//! The I/O shell of a run: starts one worker thread per core, opens the first
//! stage's sessions, starts the clock, merges the workers' one-second
//! intervals in order (for the live progress line and the HDR log), watches
//! resident memory, and stops everything by a hard deadline so that every run
//! is bounded in time.

pub mod net;
pub mod signal;
pub mod timer;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use inference_client::IoDriver;
use thiserror::Error;

use crate::metrics::{ErrorKind, Figure, Interval};
use crate::progress::{self, ProgressView};
use crate::protocol::Text;
use crate::scenario::{Scenario, ScenarioError, Shard, Share};
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
}

impl RunOutcome {
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

/// Runs `scenario` (this shard's share of it); `on_interval` gets each
/// second's merged measurements in order, then the remainder measured after
/// the last full second.
pub fn execute(
    scenario: &Scenario,
    opts: &RunOptions,
    mut on_interval: impl FnMut(u64, &Interval),
) -> Result<RunOutcome, RunError> {
    let target = scenario.validate()?;
    let texts: Vec<Text> = scenario
        .resolved_texts()?
        .iter()
        .map(|t| Text::new(t))
        .collect();
    let addr = target.resolve().map_err(ScenarioError::from)?;
    let open_files = system::raise_nofile_limit();
    let mut warnings = Vec::new();
    let threads = opts.threads.max(1);
    let my_sessions: u64 = (0..threads as u32)
        .map(|w| Share::of(opts.shard, w, threads as u32).count(scenario.peak_sessions()))
        .sum();
    if my_sessions + 64 > open_files.0 {
        warnings.push(format!(
            "this process is to hold {my_sessions} sessions but may open only {} files; run several processes with --shard I/N",
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
    });

    let started_at = SystemTime::now();
    let run_start = Instant::now();
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
        let h = std::thread::Builder::new()
            .name(format!("loadgen-w{i}"))
            .spawn(move || worker::run(spec))
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
    let mut remainder = Interval::default();
    let mut complete = true;
    let mut failure: Option<RunError> = None;

    let mut handle_tick = |tick: u64, p: PendingTick, tally: &mut Tally, t0: Option<Instant>| {
        tally.totals.add(&p.interval);
        on_interval(tick, &p.interval);
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
                        let start = Instant::now() + Duration::from_millis(5);
                        t0 = Some(start);
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
            Some(Report::Done { interval, .. }) => {
                alive -= 1;
                remainder.add(&interval);
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
            handle_tick(tick, p, &mut tally, t0);
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
        handle_tick(tick, p, &mut tally, t0);
    }
    let tail_tick = last_tick.map_or_else(|| run_start.elapsed().as_secs(), |t| t + 1);
    tally.totals.add(&remainder);
    on_interval(tail_tick, &remainder);
    if complete {
        for h in handles {
            let _ = h.join();
        }
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let measured = total.saturating_sub(sc.warmup.0);
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
