//! The command line: `loadgen [run flags]` runs a scenario, `loadgen merge`
//! merges reports of several shards. Flags become a [`Scenario`] (or override
//! the TOML one), the run's outcome becomes a [`Report`], outputs are written,
//! and the exit code tells CI what happened:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | every budget holds (or none was given) |
//! | 1 | a budget was missed |
//! | 2 | usage, scenario or connection failure: nothing was measured |

use std::ffi::OsString;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand, ValueEnum};
use inference_client::IoDriver;
use thiserror::Error;

use crate::arrivals::ArrivalKind;
use crate::budget::Budget;
use crate::metrics::Figure;
use crate::report::hdrlog::HdrLog;
use crate::report::json::{self, ReportError};
use crate::report::{self, Report};
use crate::run::{self, RunError, RunOptions};
use crate::scenario::{Model, Scenario, ScenarioError, Shard, ThinkDist};
use crate::slo::Slo;
use crate::units::Dur;

/// Every budget holds.
pub const EXIT_PASS: i32 = 0;
/// A budget was missed.
pub const EXIT_BUDGET_MISSED: i32 = 1;
/// Usage, scenario or connection failure.
pub const EXIT_FAILURE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for the live-chat gateway: open-model WebSocket load with latency budgets for CI",
    after_help = "Exit codes: 0 every budget holds; 1 a budget was missed; 2 usage, scenario or connection failure.\nMerge shards: loadgen merge A.json B.json --budget 'rtt.p99<80ms'",
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
}

#[derive(Args, Debug)]
struct MergeArgs {
    /// Reports written with --json.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
    /// Budgets to apply instead of the first report's (repeatable).
    #[arg(long = "budget", value_name = "EXPR")]
    budgets: Vec<Budget>,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args, Debug, Default)]
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

#[derive(Args, Debug)]
struct RunArgs {
    /// Target, e.g. ws://127.0.0.1:8080/ws?site=demo (the only place load goes).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
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
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// Per-request objective defining goodput, e.g. ttft:1s (repeatable).
    #[arg(long = "slo", value_name = "FIGURE:LIMIT")]
    slos: Vec<Slo>,
    /// Budget, e.g. 'rtt.p99<80ms', 'errors<0.1%', 'goodput>99%' (repeatable).
    #[arg(long = "budget", value_name = "EXPR")]
    budgets: Vec<Budget>,
    /// Run share I of N of the scenario (1-based), e.g. 2/4.
    #[arg(long, value_name = "I/N")]
    shard: Option<Shard>,
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
    /// Write the HDR interval log (one histogram per figure per second).
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
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
    /// An output file.
    #[error("cannot write {path}: {source}")]
    Output {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
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
        None => {
            let url = a.url.clone().ok_or_else(|| {
                CliError::Usage("give --url ws://HOST:PORT/ws?site=ID with --sessions, --rate and --duration, or --scenario FILE".into())
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
    sc.slos.extend(a.slos.iter().copied());
    sc.budgets.extend(a.budgets.iter().cloned());
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
    Ok(if r.passed() {
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
    let shard = a.shard.unwrap_or_default();
    let opts = RunOptions {
        threads: a.threads.unwrap_or_else(|| RunOptions::default().threads),
        pin: !a.no_pin,
        driver: a.driver,
        progress: crate::progress::enabled(a.out.quiet, std::env::var("CI").ok().as_deref()),
        shard,
        connect_timeout: a.connect_timeout.0,
    };
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
    let mut log_error = None;
    let outcome = run::execute(&sc, &opts, |tick, iv| {
        if let Some((path, l)) = log.as_mut() {
            if let Err(e) = l.interval(tick as f64, 1.0, iv) {
                log_error.get_or_insert(CliError::Output {
                    path: path.clone(),
                    source: e,
                });
            }
        }
    })?;
    if let Some(e) = log_error {
        return Err(e);
    }
    let r = Report::from_run(&outcome, &sc, shard);
    finish(&r, &a.out)
}

fn merge_cmd(m: &MergeArgs) -> Result<i32, CliError> {
    let reports = m
        .reports
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
