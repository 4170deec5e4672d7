//! The command line: `loadgen [run flags]` runs a scenario, `loadgen merge`
//! merges reports of several shards, `loadgen sweep` finds the capacity at
//! SLO (exit 0 when a capacity was found, 1 when even the first step missed
//! its budgets). Flags become a [`Scenario`] (or override
//! the TOML one), the run's outcome becomes a [`Report`], outputs are written,
//! and the exit code tells CI what happened:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every budget holds (or none was given) |
//! | 1 | a budget was missed |
//! | 2 | usage, scenario or connection failure: nothing was measured |
//! | 3 | `--abort-on-fail` ended the run early: a budget stopped holding |

use std::ffi::OsString;
use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand, ValueEnum};
use inference_client::IoDriver;
use thiserror::Error;

use crate::arrivals::ArrivalKind;
use crate::budget::{AbortRule, Budget};
use crate::live::{self, ExtraHeader, Live, LiveConfig, LiveError, RemoteWriteConfig, RunInfo};
use crate::metrics::Figure;
use crate::report::hdrlog::HdrLog;
use crate::report::json::{self, ReportError};
use crate::report::{self, Report};
use crate::run::{self, RunError, RunOptions};
use crate::scenario::{Model, Scenario, ScenarioError, Shard, ThinkDist, Transport};
use crate::slo::Slo;
use crate::sweep::{self, Mode, Plan, Settings, Step};
use crate::units::Dur;

/// Every budget holds.
pub const EXIT_PASS: i32 = 0;
/// A budget was missed.
pub const EXIT_BUDGET_MISSED: i32 = 1;
/// Usage, scenario or connection failure.
pub const EXIT_FAILURE: i32 = 2;
/// `--abort-on-fail` ended the run early: a budget stopped holding.
pub const EXIT_ABORTED: i32 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for the live-chat gateway: open-model WebSocket load with latency budgets for CI",
    after_help = "Exit codes: 0 every budget holds; 1 a budget was missed; 2 usage, scenario or connection failure; 3 --abort-on-fail ended the run early.\nCapacity at SLO: loadgen sweep --from 10 --to 100 --step 10 --sessions 200 --url ... --budget 'ttft.p99<1s'\nMerge shards: loadgen merge A.json B.json --budget 'rtt.p99<80ms'",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Merge JSON reports of several shards losslessly and apply the budgets again.
    Merge(MergeArgs),
    /// Capacity at SLO: raise the offered rate step by step (or search) until
    /// the budgets stop holding, and report the highest rate at which they held.
    Sweep(Box<SweepArgs>),
}

#[derive(Args, Debug)]
struct SweepArgs {
    /// First offered rate, messages per second (the low end of a search).
    #[arg(long, value_name = "MESSAGES_PER_S")]
    from: f64,
    /// Last offered rate (the high end of a search).
    #[arg(long, value_name = "MESSAGES_PER_S")]
    to: f64,
    /// Increment between steps.
    #[arg(
        long,
        value_name = "MESSAGES_PER_S",
        required_unless_present = "search",
        conflicts_with = "search"
    )]
    step: Option<f64>,
    /// Bisect between --from and --to instead of stepping.
    #[arg(long)]
    search: bool,
    /// With --search, stop when the bracket is narrower than this [default: (to - from) / 32].
    #[arg(long, value_name = "MESSAGES_PER_S", requires = "search")]
    resolution: Option<f64>,
    /// Warm-up of each step, not measured.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    settle: Dur,
    /// Measured window of each step.
    #[arg(long, value_name = "DURATION", default_value = "20s")]
    step_duration: Dur,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct MergeArgs {
    /// Reports written with --json, or directories of them (every `*.json`
    /// in each, in name order: write the merged report elsewhere).
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Budgets to apply instead of the first report's (repeatable).
    #[arg(long = "budget", value_name = "EXPR")]
    budgets: Vec<Budget>,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args, Debug, Default, Clone)]
struct OutputArgs {
    /// Write the full report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write one JUnit test case per budget.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a latency-by-percentile plot (SVG).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Write the report as one self-contained HTML page (charts, tables, no script).
    #[arg(long, value_name = "FILE.html")]
    html: Option<PathBuf>,
    /// No live progress (also when CI=true).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModelArg {
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TransportArg {
    /// One WebSocket per session.
    Ws,
    /// The long-polling fallback: two keep-alive HTTP connections per session.
    Poll,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ArrivalArg {
    Constant,
    Poisson,
    Gamma,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ThinkDistArg {
    Constant,
    Exponential,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Target: the gateway, ws://127.0.0.1:8080/ws?site=demo, or an inference
    /// server directly, http(s)://127.0.0.1:8000/v1 (the only place load goes).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// How sessions reach the gateway: ws, or poll (the long-polling
    /// fallback; --url ws://HOST:PORT/ws?site=ID or http://HOST:PORT/?site=ID) [default: ws].
    #[arg(long, value_enum)]
    transport: Option<TransportArg>,
    /// Scenario file (TOML); flags below override its fields.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Concurrent sessions (one-stage run).
    #[arg(long, value_name = "N")]
    sessions: Option<u64>,
    /// Messages per second over all sessions (one-stage open-model run).
    #[arg(long, value_name = "MESSAGES_PER_S")]
    rate: Option<f64>,
    /// Length of a one-stage run, e.g. 30s.
    #[arg(long, value_name = "DURATION")]
    duration: Option<Dur>,
    /// New sessions per second [default: 5000].
    #[arg(long, value_name = "PER_S")]
    connect_rate: Option<f64>,
    /// open: arrivals on a schedule; closed: send, await, think [default: open, closed with --think].
    #[arg(long, value_enum)]
    model: Option<ModelArg>,
    /// Mean think time of the closed model, e.g. 2s.
    #[arg(long, value_name = "DURATION")]
    think: Option<Dur>,
    /// Think-time distribution [default: exponential].
    #[arg(long, value_enum)]
    think_dist: Option<ThinkDistArg>,
    /// Arrival process of the open model [default: poisson].
    #[arg(long, value_enum)]
    arrivals: Option<ArrivalArg>,
    /// Gamma shape for --arrivals gamma: 1 is Poisson, lower is burstier.
    #[arg(long, value_name = "K")]
    burstiness: Option<f64>,
    /// Leading time not counted in results, e.g. 5s.
    #[arg(long, value_name = "DURATION")]
    warmup: Option<Dur>,
    /// A message without its ack (or done) within this is a timeout [default: 10s].
    #[arg(long, value_name = "DURATION")]
    timeout: Option<Dur>,
    /// Messages are settled by their ack; no tokens or done are awaited.
    #[arg(long)]
    no_replies: bool,
    /// Send a message refused `busy` once more after its retry_after_ms.
    #[arg(long)]
    resend_busy: bool,
    /// A message text (repeatable).
    #[arg(long = "text", value_name = "TEXT")]
    texts: Vec<String>,
    /// A file of message texts, one per line.
    #[arg(long, value_name = "FILE")]
    texts_file: Option<PathBuf>,
    /// Replay a JSONL trace, one `{"at_ms": N, "text": "...", "session": "..."}`
    /// per line: each message at its time on its session (no --sessions,
    /// --rate or --duration needed).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Direct mode (--url http(s)://HOST:PORT/v1): the API requests go to [default: chat].
    #[arg(long, value_enum, help_heading = DIRECT)]
    api: Option<crate::direct::Api>,
    /// The model name the server serves (vLLM's --served-model-name).
    #[arg(long, value_name = "NAME", help_heading = DIRECT)]
    served_model: Option<String>,
    /// Sent as `Authorization: Bearer KEY`; never written to a report.
    #[arg(
        long,
        value_name = "KEY",
        env = "LOADGEN_API_KEY",
        hide_env_values = true,
        value_parser = parse_api_key,
        help_heading = DIRECT
    )]
    api_key: Option<inference_client::ApiKey>,
    /// A PEM CA file trusted for https:// and wss:// (besides the system's roots).
    #[arg(long, value_name = "FILE", help_heading = DIRECT)]
    ca: Option<PathBuf>,
    /// Prompts, one JSON object a line: {"prompt": "...", "output_tokens": N}.
    #[arg(long, value_name = "FILE.jsonl", help_heading = DIRECT)]
    prompts: Option<PathBuf>,
    /// Synthetic prompts of this many tokens: N, normal:MEAN,STDDEV or uniform:MIN..MAX.
    #[arg(long, value_name = "DIST", help_heading = DIRECT)]
    input_tokens: Option<crate::direct::prompts::TokenDist>,
    /// Output tokens each request asks for (same forms) [default: 128].
    #[arg(long, value_name = "DIST", help_heading = DIRECT)]
    output_tokens: Option<crate::direct::prompts::TokenDist>,
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Per-request objective defining goodput, e.g. ttft:1s (repeatable).
    #[arg(long = "slo", value_name = "FIGURE:LIMIT")]
    slos: Vec<Slo>,
    /// Budget, e.g. 'rtt.p99<80ms', 'errors<0.1%', 'goodput>99%' (repeatable).
    #[arg(long = "budget", value_name = "EXPR")]
    budgets: Vec<Budget>,
    /// Run share I of N of the scenario (1-based), e.g. 2/4; `auto` takes I
    /// from a Kubernetes Indexed Job's 0-based JOB_COMPLETION_INDEX.
    #[arg(long, value_name = "I/N|auto")]
    shard: Option<ShardArg>,
    /// With --shard auto: how many shards there are.
    #[arg(long, value_name = "N", env = "LOADGEN_SHARD_COUNT")]
    shard_count: Option<u32>,
    /// Start the stages at this time (RFC 3339 or Unix milliseconds), so that
    /// shards started apart run together; sessions open before it.
    #[arg(long, value_name = "TIME", value_parser = crate::units::parse_time)]
    start_at: Option<SystemTime>,
    /// Worker threads [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
    /// Do not pin worker threads to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// I/O driver.
    #[arg(long, value_enum, default_value = "auto")]
    driver: IoDriver,
    /// TCP connect to welcome, at most, per session.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    connect_timeout: Dur,
    /// End the run as soon as a budget stops holding (exit code 3), judged
    /// each second over everything measured so far.
    #[arg(long)]
    abort_on_fail: bool,
    /// With --abort-on-fail: budgets are not judged before this far into the stages.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0s",
        requires = "abort_on_fail"
    )]
    abort_grace: Dur,
    /// With --abort-on-fail: how long a breach must last before the run ends.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "0s",
        requires = "abort_on_fail"
    )]
    abort_after: Dur,
    /// Write the HDR interval log (one histogram per figure per second).
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
    /// Serve live metrics at http://ADDR/metrics while the run lasts (Prometheus text format; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Push live metrics with Prometheus remote write 1.0, e.g. http://127.0.0.1:9090/api/v1/write.
    #[arg(long, value_name = "URL")]
    prometheus_remote_write: Option<String>,
    /// Time between remote write pushes.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    prometheus_remote_write_interval: Dur,
    /// A header of every push, e.g. 'Authorization: Bearer TOKEN' or 'X-Scope-OrgID: TENANT' (repeatable).
    #[arg(
        long = "prometheus-remote-write-header",
        value_name = "NAME: VALUE",
        requires = "prometheus_remote_write"
    )]
    prometheus_remote_write_headers: Vec<ExtraHeader>,
    /// The `run` label of live metrics; give every shard the same [default: the start time, e.g. 20261124T101500Z].
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
}

/// A failure that ends loadgen with [`EXIT_FAILURE`].
#[derive(Debug, Error)]
pub enum CliError {
    /// Flags that do not make a scenario.
    #[error("{0}")]
    Usage(String),
    /// The scenario.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A report.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Live metrics could not start.
    #[error(transparent)]
    Live(#[from] LiveError),
    /// An output file.
    #[error("cannot write {path}: {source}")]
    Output {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The `--help` heading of direct mode's flags.
const DIRECT: &str = "Direct mode (an inference server without the gateway)";

/// `--api-key` (or `LOADGEN_API_KEY`), straight into a type whose `Debug`
/// hides it.
fn parse_api_key(s: &str) -> Result<inference_client::ApiKey, String> {
    inference_client::ApiKey::new(s).ok_or_else(|| "the API key is empty".to_string())
}

fn build_scenario(a: &RunArgs) -> Result<Scenario, CliError> {
    let one_stage = a.sessions.is_some() || a.rate.is_some() || a.duration.is_some();
    let mut sc = match &a.scenario {
        Some(path) => {
            if one_stage {
                return Err(CliError::Usage(
                    "--sessions, --rate and --duration describe a one-stage run; with --scenario, put [[stages]] in the file"
                        .into(),
                ));
            }
            Scenario::load(path)?
        }
        None if a.trace.is_some() => {
            if one_stage {
                return Err(CliError::Usage(
                    "--trace sets the sessions and the times itself: drop --sessions, --rate and --duration".into(),
                ));
            }
            let url = a.url.clone().ok_or_else(|| {
                CliError::Usage("give --url ws://HOST:PORT/ws?site=ID with --trace".into())
            })?;
            let mut sc = Scenario::simple(&url, 0, 0.0, std::time::Duration::ZERO);
            sc.stages.clear();
            sc
        }
        None => {
            let url = a.url.clone().ok_or_else(|| {
                CliError::Usage("give --url ws://HOST:PORT/ws?site=ID (or http(s)://HOST:PORT/v1) with --sessions, --rate and --duration, or --scenario FILE".into())
            })?;
            let sessions = a
                .sessions
                .ok_or_else(|| CliError::Usage("give --sessions N (concurrent sessions)".into()))?;
            let duration = a
                .duration
                .ok_or_else(|| CliError::Usage("give --duration, e.g. 30s".into()))?;
            let closed = matches!(a.model, Some(ModelArg::Closed))
                || (a.model.is_none() && a.think.is_some());
            let rate = match (a.rate, closed) {
                (Some(r), _) => r,
                (None, true) => 0.0,
                (None, false) => {
                    return Err(CliError::Usage(
                        "give --rate MESSAGES_PER_S (open model), or --think DURATION for the closed model".into(),
                    ))
                }
            };
            Scenario::simple(&url, sessions, rate, duration.0)
        }
    };
    if let Some(u) = &a.url {
        sc.url = u.clone();
    }
    if let Some(t) = a.transport {
        sc.transport = match t {
            TransportArg::Ws => Transport::Ws,
            TransportArg::Poll => Transport::Poll,
        };
    }
    if let Some(v) = a.seed {
        sc.seed = v;
    }
    if let Some(v) = a.connect_rate {
        sc.connect_rate = v;
    }
    if let Some(v) = a.think {
        sc.think = Some(v);
        if a.model.is_none() {
            sc.model = Model::Closed;
        }
    }
    if let Some(m) = a.model {
        sc.model = match m {
            ModelArg::Open => Model::Open,
            ModelArg::Closed => Model::Closed,
        };
    }
    if let Some(d) = a.think_dist {
        sc.think_dist = match d {
            ThinkDistArg::Constant => ThinkDist::Constant,
            ThinkDistArg::Exponential => ThinkDist::Exponential,
        };
    }
    if let Some(k) = a.arrivals {
        sc.arrivals = match k {
            ArrivalArg::Constant => ArrivalKind::Constant,
            ArrivalArg::Poisson => ArrivalKind::Poisson,
            ArrivalArg::Gamma => ArrivalKind::Gamma,
        };
    }
    if let Some(b) = a.burstiness {
        sc.burstiness = b;
    }
    if let Some(w) = a.warmup {
        sc.warmup = w;
    }
    if let Some(t) = a.timeout {
        sc.timeout = t;
    }
    if a.no_replies {
        sc.replies = false;
    }
    if a.resend_busy {
        sc.resend_busy = true;
    }
    sc.texts.extend(a.texts.iter().cloned());
    if let Some(f) = &a.texts_file {
        sc.texts_file = Some(f.clone());
    }
    let d = &mut sc.direct;
    if let Some(api) = a.api {
        d.api = api;
    }
    if let Some(m) = &a.served_model {
        d.served_model = Some(m.clone());
    }
    if let Some(k) = &a.api_key {
        d.api_key = Some(k.clone());
    }
    if let Some(f) = &a.ca {
        d.ca = Some(f.clone());
    }
    if let Some(f) = &a.prompts {
        d.prompts = Some(f.clone());
    }
    if let Some(t) = a.input_tokens {
        d.input_tokens = Some(t);
    }
    if let Some(t) = a.output_tokens {
        d.output_tokens = Some(t);
    }
    sc.slos.extend(a.slos.iter().copied());
    sc.budgets.extend(a.budgets.iter().cloned());
    if let Some(t) = &a.trace {
        sc.trace = Some(t.clone());
    }
    sc.fill_trace_stage()?;
    sc.validate()?;
    Ok(sc)
}

fn write_file(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|source| CliError::Output {
        path: path.to_path_buf(),
        source,
    })
}

/// Prints the summary and writes the requested outputs; returns the exit code.
fn finish(r: &Report, out: &OutputArgs) -> Result<i32, CliError> {
    print!("{}", report::table::render(r));
    if let Some(w) = &r.busy_warning {
        eprintln!("loadgen: warning: {w}");
    }
    if let Some(p) = &out.json {
        json::write(p, r)?;
    }
    if let Some(p) = &out.junit {
        write_file(p, &report::junit::render(r))?;
    }
    if let Some(p) = &out.plot {
        let iv = r.to_interval()?;
        let hists: Vec<_> = Figure::ALL
            .iter()
            .map(|&f| (f, iv.figure(f).clone()))
            .collect();
        write_file(p, &report::svg::render(r, &hists))?;
    }
    if let Some(p) = &out.html {
        write_file(p, &report::html::render(r))?;
    }
    Ok(if r.aborted.is_some() {
        EXIT_ABORTED
    } else if r.passed() {
        EXIT_PASS
    } else {
        EXIT_BUDGET_MISSED
    })
}

fn run_cmd(a: &RunArgs) -> Result<i32, CliError> {
    let result = run_scenario(a);
    if let (Err(e), Some(path)) = (&result, &a.out.junit) {
        // CI keeps the JUnit file whatever happened: say why there are no results.
        let url = a.url.clone().unwrap_or_default();
        let _ = std::fs::write(path, report::junit::render_failure(&url, &e.to_string()));
    }
    result
}

fn run_scenario(a: &RunArgs) -> Result<i32, CliError> {
    let sc = build_scenario(a)?;
    let r = measure(a, &sc)?;
    finish(&r, &a.out)
}

/// `--shard`: a fixed share, or `auto` for a Kubernetes Indexed Job.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ShardArg {
    Fixed(Shard),
    Auto,
}

impl std::str::FromStr for ShardArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            Ok(ShardArg::Auto)
        } else {
            s.parse().map(ShardArg::Fixed)
        }
    }
}

/// The shard of this process: `--shard I/N`, or with `--shard auto` the
/// 0-based `JOB_COMPLETION_INDEX` (as a Kubernetes Indexed Job sets it) and
/// `--shard-count`.
fn resolve_shard(
    arg: Option<ShardArg>,
    count: Option<u32>,
    job_index: Option<&str>,
) -> Result<Shard, CliError> {
    match arg {
        None => Ok(Shard::default()),
        Some(ShardArg::Fixed(s)) => Ok(s),
        Some(ShardArg::Auto) => {
            let count = count.ok_or_else(|| {
                CliError::Usage(
                    "--shard auto needs --shard-count N (or LOADGEN_SHARD_COUNT)".into(),
                )
            })?;
            let raw = job_index.ok_or_else(|| {
                CliError::Usage(
                    "--shard auto reads JOB_COMPLETION_INDEX, which is not set: run it as a Kubernetes Indexed Job, or give --shard I/N".into(),
                )
            })?;
            let i: u32 = raw.trim().parse().map_err(|_| {
                CliError::Usage(format!("JOB_COMPLETION_INDEX '{raw}' is not a number"))
            })?;
            if count == 0 || i >= count {
                return Err(CliError::Usage(format!(
                    "JOB_COMPLETION_INDEX {i} is not below --shard-count {count}"
                )));
            }
            Ok(Shard {
                index: i + 1,
                count,
            })
        }
    }
}

fn run_options(a: &RunArgs) -> Result<RunOptions, CliError> {
    let job_index = std::env::var("JOB_COMPLETION_INDEX").ok();
    let shard = resolve_shard(a.shard, a.shard_count, job_index.as_deref())?;
    Ok(RunOptions {
        threads: a.threads.unwrap_or_else(|| RunOptions::default().threads),
        pin: !a.no_pin,
        driver: a.driver,
        progress: crate::progress::enabled(a.out.quiet, std::env::var("CI").ok().as_deref()),
        shard,
        connect_timeout: a.connect_timeout.0,
        abort: a.abort_on_fail.then_some(AbortRule {
            grace: a.abort_grace.0,
            after: a.abort_after.0,
        }),
        start_at: a.start_at,
    })
}

/// Live metrics for `sc`, when a flag asks for them.
fn start_live(a: &RunArgs, sc: &Scenario, shard: Shard) -> Result<Option<Live>, CliError> {
    if a.metrics_listen.is_none() && a.prometheus_remote_write.is_none() {
        return Ok(None);
    }
    let run_id = a
        .run_id
        .clone()
        .unwrap_or_else(|| live::default_run_id(SystemTime::now()));
    let l = Live::start(LiveConfig {
        info: RunInfo::of(sc, &run_id, shard),
        listen: a.metrics_listen,
        remote_write: a
            .prometheus_remote_write
            .as_ref()
            .map(|url| RemoteWriteConfig {
                url: url.clone(),
                interval: a.prometheus_remote_write_interval.0,
                headers: a.prometheus_remote_write_headers.clone(),
                // The system's roots only, until the command line has a CA flag.
                ca_file: None,
            }),
    })?;
    if let Some(addr) = l.local_addr() {
        eprintln!("loadgen: metrics at http://{addr}/metrics");
    }
    Ok(Some(l))
}

/// Runs `sc` and returns its report, writing the HDR log as it goes.
fn measure(a: &RunArgs, sc: &Scenario) -> Result<Report, CliError> {
    let opts = run_options(a)?;
    let mut log = match &a.hdr_log {
        Some(p) => {
            let f = File::create(p).map_err(|source| CliError::Output {
                path: p.clone(),
                source,
            })?;
            Some((
                p.clone(),
                HdrLog::new(BufWriter::new(f), SystemTime::now()).map_err(|source| {
                    CliError::Output {
                        path: p.clone(),
                        source,
                    }
                })?,
            ))
        }
        None => None,
    };
    let mut live = start_live(a, sc, opts.shard)?;
    let mut log_error = None;
    let result = run::execute(sc, &opts, |second| {
        if let Some((path, l)) = log.as_mut() {
            if let Err(e) = l.interval(second.tick as f64, 1.0, second.interval) {
                log_error.get_or_insert(CliError::Output {
                    path: path.clone(),
                    source: e,
                });
            }
        }
        if let Some(l) = live.as_mut() {
            l.on_second(second);
        }
    });
    // Finished whatever the run's result: a failed run's last numbers are
    // pushed too.
    if let Some(l) = live {
        for w in l.finish().warnings() {
            eprintln!("loadgen: warning: {w}");
        }
    }
    let outcome = result?;
    if let Some(e) = log_error {
        return Err(e);
    }
    Ok(Report::from_run(&outcome, sc, opts.shard))
}

fn sweep_cmd(s: &SweepArgs) -> Result<i32, CliError> {
    let a = &s.run;
    for (given, flag) in [
        (a.rate.is_some(), "--rate"),
        (a.duration.is_some(), "--duration"),
        (a.warmup.is_some(), "--warmup"),
        (a.scenario.is_some(), "--scenario"),
        (a.hdr_log.is_some(), "--hdr-log"),
        (a.think.is_some(), "--think"),
    ] {
        if given {
            return Err(CliError::Usage(format!(
                "sweep sets each step's rate, length and warm-up itself (--from/--to/--step, --step-duration, --settle) under the open model; {flag} does not apply"
            )));
        }
    }
    if a.budgets.is_empty() {
        return Err(CliError::Usage(
            "sweep needs at least one --budget: the capacity is the highest rate at which every budget holds".into(),
        ));
    }
    let mode = if s.search {
        Mode::Search {
            from: s.from,
            to: s.to,
            resolution: s.resolution.unwrap_or((s.to - s.from) / 32.0),
        }
    } else {
        Mode::Steps {
            from: s.from,
            to: s.to,
            step: s.step.unwrap_or(0.0),
        }
    };
    let mut plan = Plan::new(mode).map_err(|e| CliError::Usage(e.to_string()))?;
    let settings = Settings {
        mode,
        settle_s: s.settle.secs(),
        step_duration_s: s.step_duration.secs(),
        sessions: a.sessions.unwrap_or(0),
    };
    let step_args = |rate: f64| {
        let mut one = a.clone();
        one.rate = Some(rate);
        one.duration = Some(Dur(s.settle.0 + s.step_duration.0));
        one.warmup = Some(s.settle);
        one.model = Some(ModelArg::Open);
        one
    };
    // The first step's scenario checks the flags before anything runs.
    let first = build_scenario(&step_args(s.from))?;
    let started = SystemTime::now();
    let mut steps = Vec::new();
    println!(
        "loadgen sweep -> {}: {} s settle + {} s measured per step",
        first.url,
        s.settle.secs(),
        s.step_duration.secs()
    );
    println!("{}", report::table::sweep_header());
    while let Some(rate) = plan.next() {
        let one = step_args(rate);
        let sc = build_scenario(&one)?;
        let r = measure(&one, &sc)?;
        let step = Step::of(rate, r);
        println!("{}", report::table::sweep_row(&step));
        plan.record(rate, step.passed);
        steps.push(step);
    }
    let report = sweep::assemble(
        &first.url,
        settings,
        first.slos.clone(),
        first.budgets.clone(),
        steps,
        &plan,
        started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    print!("{}", report::table::sweep_summary(&report));
    for w in &report.warnings {
        eprintln!("loadgen: warning: {w}");
    }
    if let Some(p) = &a.out.json {
        json::write(p, &report)?;
    }
    if let Some(p) = &a.out.junit {
        write_file(p, &report::junit::render_sweep(&report))?;
    }
    if let Some(p) = &a.out.html {
        write_file(p, &report::html::render_sweep(&report))?;
    }
    Ok(if report.capacity_per_s.is_some() {
        EXIT_PASS
    } else {
        EXIT_BUDGET_MISSED
    })
}

/// The report files named: files as given, directories by their `*.json`.
fn report_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CliError> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let unreadable = |source| CliError::Usage(format!("cannot read {}: {source}", p.display()));
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(unreadable)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "json"))
            .collect();
        if found.is_empty() {
            return Err(CliError::Usage(format!(
                "{} holds no .json report",
                p.display()
            )));
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

fn merge_cmd(m: &MergeArgs) -> Result<i32, CliError> {
    let reports = report_files(&m.reports)?
        .iter()
        .map(|p| json::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let budgets = (!m.budgets.is_empty()).then_some(m.budgets.as_slice());
    let r = report::merge(&reports, budgets)?;
    finish(&r, &m.out)
}

/// Runs loadgen with these arguments (the first is the program name) and
/// returns the process exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_FAILURE
            } else {
                EXIT_PASS
            };
        }
    };
    let result = match &cli.cmd {
        Some(Cmd::Merge(m)) => merge_cmd(m),
        Some(Cmd::Sweep(sw)) => sweep_cmd(sw),
        None => run_cmd(&cli.run),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e}");
            EXIT_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<Scenario, CliError> {
        let cli = Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
            .map_err(|e| CliError::Usage(e.to_string()))?;
        build_scenario(&cli.run)
    }

    #[test]
    fn the_issue_command_line_makes_a_one_stage_scenario() {
        let sc = parse(&[
            "--url",
            "ws://127.0.0.1:8080/ws?site=demo",
            "--sessions",
            "1000",
            "--rate",
            "500",
            "--duration",
            "30s",
            "--slo",
            "ttft:1s",
            "--slo",
            "rtt:80ms",
            "--budget",
            "rtt.p99<80ms",
            "--budget",
            "goodput>99%",
        ])
        .unwrap();
        assert_eq!(sc.stages.len(), 1);
        assert_eq!(sc.stages[0].sessions, 1000);
        assert_eq!(sc.stages[0].rate, 500.0);
        assert_eq!(sc.total(), Duration::from_secs(30));
        assert_eq!((sc.slos.len(), sc.budgets.len()), (2, 2));
    }

    #[test]
    fn shard_auto_takes_the_indexed_jobs_index() {
        let auto = Some(ShardArg::Auto);
        assert_eq!(
            resolve_shard(auto, Some(3), Some("0")).unwrap(),
            Shard { index: 1, count: 3 }
        );
        assert_eq!(
            resolve_shard(auto, Some(3), Some("2")).unwrap(),
            Shard { index: 3, count: 3 }
        );
        let e = |c, i| resolve_shard(auto, c, i).unwrap_err().to_string();
        assert!(e(None, Some("0")).contains("--shard-count"));
        assert!(e(Some(3), None).contains("JOB_COMPLETION_INDEX"));
        assert!(e(Some(3), Some("3")).contains("not below"));
        assert!(e(Some(3), Some("x")).contains("not a number"));
        assert_eq!("auto".parse::<ShardArg>(), Ok(ShardArg::Auto));
        assert_eq!(
            "2/4".parse::<ShardArg>(),
            Ok(ShardArg::Fixed(Shard { index: 2, count: 4 }))
        );
        assert_eq!(resolve_shard(None, None, None).unwrap(), Shard::default());
    }

    #[test]
    fn think_time_selects_the_closed_model() {
        let sc = parse(&[
            "--url",
            "ws://127.0.0.1:1/ws",
            "--sessions",
            "10",
            "--duration",
            "5s",
            "--think",
            "1s",
        ])
        .unwrap();
        assert_eq!(sc.model, Model::Closed);
    }

    #[test]
    fn missing_or_bad_flags_say_what_to_give() {
        let e = parse(&["--sessions", "10"]).unwrap_err().to_string();
        assert!(e.contains("--url"), "{e}");
        let e = parse(&[
            "--url",
            "ws://127.0.0.1:1/ws",
            "--sessions",
            "10",
            "--duration",
            "5s",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--rate"), "{e}");
        let e = parse(&[
            "--url",
            "ws://h/ws",
            "--sessions",
            "1",
            "--rate",
            "1",
            "--duration",
            "1s",
            "--budget",
            "rtt<1",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("rtt<1"), "{e}");
        let e = parse(&["--scenario", "x.toml", "--sessions", "3"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[[stages]]"), "{e}");
    }
}
