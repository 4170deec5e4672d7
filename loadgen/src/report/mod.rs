//! The result of a run (or of several merged): the stable, documented JSON
//! shape (`schema = "loadgen-report/1"`), built from what a run measured, and
//! turned back into histograms and counters for merging and for budgets.
//!
//! Each latency figure sits at `metrics.<name>` with `count`, `min_us`,
//! `p50_us`, `p90_us`, `p99_us`, `p999_us`, `max_us` (and more), and `hdr`, the
//! whole histogram in HdrHistogram's compressed V2 encoding, base64.

pub mod hdrlog;
pub mod html;
pub mod json;
pub mod junit;
pub mod series;
pub mod svg;
pub mod table;

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::budget::{evaluate_all, Aborted, Budget, Facts, Outcome};
use crate::metrics::{Counters, ErrorKind, Figure, Interval};
use crate::run::RunOutcome;
use crate::scenario::{Scenario, Shard};
use crate::slo::Slo;
use crate::system::Machine;
pub use series::SeriesPoint;

/// The schema name and version every report carries.
pub const SCHEMA: &str = "loadgen-report/1";

/// Percentiles listed in `metrics.<name>.percentiles`.
pub const PERCENTILES: [f64; 21] = [
    0.0, 10.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 90.0, 95.0, 97.5, 99.0, 99.5,
    99.9, 99.95, 99.99, 99.999, 100.0,
];

/// One latency figure. Every `*_us` is `null` when `count` is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_us: Option<u64>,
    /// Mean.
    pub mean_us: Option<f64>,
    /// Standard deviation.
    pub stddev_us: Option<f64>,
    /// Median.
    pub p50_us: Option<u64>,
    /// 75th percentile.
    pub p75_us: Option<u64>,
    /// 90th percentile.
    pub p90_us: Option<u64>,
    /// 95th percentile.
    pub p95_us: Option<u64>,
    /// 99th percentile.
    pub p99_us: Option<u64>,
    /// 99.9th percentile.
    pub p999_us: Option<u64>,
    /// 99.99th percentile.
    pub p9999_us: Option<u64>,
    /// Largest.
    pub max_us: Option<u64>,
    /// Every percentile of [`PERCENTILES`].
    pub percentiles: Vec<PercentileValue>,
    /// The whole histogram: HdrHistogram V2 compressed encoding, base64 (`HISTFAAA...`).
    pub hdr: String,
}

/// One point of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentileValue {
    /// Percentile, 0-100.
    pub percentile: f64,
    /// Value at it, microseconds.
    pub value_us: u64,
}

impl Metric {
    /// Summarises a histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Metric {
        let q = |p: f64| (!h.is_empty()).then(|| h.value_at_quantile(p / 100.0));
        Metric {
            count: h.len(),
            min_us: (!h.is_empty()).then(|| h.min()),
            mean_us: (!h.is_empty()).then(|| h.mean()),
            stddev_us: (!h.is_empty()).then(|| h.stdev()),
            p50_us: q(50.0),
            p75_us: q(75.0),
            p90_us: q(90.0),
            p95_us: q(95.0),
            p99_us: q(99.0),
            p999_us: q(99.9),
            p9999_us: q(99.99),
            max_us: (!h.is_empty()).then(|| h.max()),
            percentiles: if h.is_empty() {
                Vec::new()
            } else {
                PERCENTILES
                    .iter()
                    .map(|&p| PercentileValue {
                        percentile: p,
                        value_us: h.value_at_quantile(p / 100.0),
                    })
                    .collect()
            },
            hdr: json::encode_hdr(h),
        }
    }
}

/// Sessions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    /// Most open at once (sampled each second; summed over merged shards).
    pub peak_open: u64,
    /// Connects started after warm-up.
    pub attempted: u64,
    /// Of those, reached `welcome`.
    pub opened: u64,
    /// Resident memory before any session (per shard; summed when merged).
    pub rss_baseline_bytes: u64,
    /// Resident memory at the peak.
    pub rss_peak_bytes: u64,
    /// (peak - baseline) / peak sessions: loadgen's memory per client
    /// session; `null` below [`PER_SESSION_MIN`] sessions, where the
    /// process's own growth (buffers, histograms, threads) would be most of it.
    pub bytes_per_session: Option<u64>,
    /// Connects started during warm-up (not measured, not in `attempted`).
    #[serde(default)]
    pub warmup_attempted: u64,
    /// Of those, reached `welcome`.
    #[serde(default)]
    pub warmup_opened: u64,
}

/// Fewest sessions at the peak for a per-session memory figure.
pub const PER_SESSION_MIN: u64 = 1000;

/// More than this share of messages answered `busy` earns a warning.
pub const BUSY_WARN_SHARE: f64 = 0.2;

/// The warning for a run where more than [`BUSY_WARN_SHARE`] of the `sent`
/// messages came back `busy`, saying what that means; `None` otherwise.
pub fn busy_warning(busy: u64, sent: u64) -> Option<String> {
    if sent == 0 || (busy as f64) <= BUSY_WARN_SHARE * sent as f64 {
        return None;
    }
    Some(format!(
        "{busy} of {sent} messages ({:.0}%) came back `busy`: the server refused them as over \
         capacity, because the offered rate exceeds what it admits within its TTFT budget. \
         Busy messages are refusals, not failures of the server's latency: the latency figures \
         are of the messages it admitted. Lower --rate, or raise the server's capacity, to \
         measure it below saturation.",
        100.0 * busy as f64 / sent as f64
    ))
}

/// Messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Messages {
    /// Sent (or due) after warm-up.
    pub sent: u64,
    /// Acked.
    pub acked: u64,
    /// Answered with `done`.
    pub replied: u64,
    /// Met every SLO.
    pub good: u64,
    /// Refused with `busy`.
    pub busy: u64,
    /// Errors other than `busy` (messages and sessions).
    pub errors: u64,
    /// `busy` messages sent again after their `retry_after_ms` (`--resend-busy`).
    #[serde(default)]
    pub resent: u64,
    /// Of those, acked the second time: how honest the server's
    /// `retry_after_ms` was.
    #[serde(default)]
    pub resent_acked: u64,
    /// Frames about messages already settled (not errors).
    pub late: u64,
    /// Sent per second over the measured stages.
    pub rate_per_s: f64,
    /// Output tokens of the completed replies (see [`Counters::output_tokens`]).
    #[serde(default)]
    pub output_tokens: u64,
    /// Output tokens per second over the measured stages.
    #[serde(default)]
    pub output_tokens_per_s: f64,
    /// Prompt tokens sent (direct mode).
    #[serde(default)]
    pub input_tokens: u64,
    /// Reconnects of scripted conversations that reached `welcome`.
    #[serde(default)]
    pub reconnects: u64,
    /// Of those, resumed with the session's history.
    #[serde(default)]
    pub resumed: u64,
}

/// Goodput.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    /// The per-request objectives.
    pub slos: Vec<Slo>,
    /// Messages that met all of them.
    pub good: u64,
    /// Messages sent.
    pub total: u64,
    /// good / total in percent; `null` with no messages.
    pub percent: Option<f64>,
    /// Good messages per second over the measured stages.
    #[serde(default)]
    pub per_s: f64,
}

/// Where a shard ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Shard.
    pub shard: Shard,
    /// Machine.
    pub machine: Machine,
}

/// The tool that wrote the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `loadgen`.
    pub name: String,
    /// Crate version.
    pub version: String,
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Who wrote it.
    pub tool: Tool,
    /// Wall-clock start, milliseconds since the Unix epoch (earliest shard when merged).
    pub started_at_unix_ms: u64,
    /// When the stages started (after the connect phase), milliseconds since
    /// the Unix epoch (earliest shard when merged); `t_s` of the series
    /// counts from here.
    #[serde(default)]
    pub stages_started_at_unix_ms: Option<u64>,
    /// Start to finish, seconds (longest shard when merged).
    pub elapsed_s: f64,
    /// Stage time after warm-up, seconds.
    pub measured_s: f64,
    /// False when a hard deadline cut a run short.
    pub complete: bool,
    /// What load was offered (all shards together).
    pub scenario: Scenario,
    /// The shard(s) this report covers, with their machines.
    pub shards: Vec<ShardInfo>,
    /// Sessions.
    pub sessions: Sessions,
    /// Messages.
    pub messages: Messages,
    /// Errors by code (`busy` included here), only codes seen.
    pub errors: BTreeMap<String, u64>,
    /// Goodput.
    pub goodput: Goodput,
    /// `connect`, `rtt`, `ttft`, `itl`, `reply`, `tpot`: always all six.
    pub metrics: BTreeMap<String, Metric>,
    /// How late loadgen sent open-model messages after they were due (its own
    /// share of every figure; large values mean loadgen, not the server, was slow).
    pub send_lag: Metric,
    /// Each budget's verdict.
    pub budgets: Vec<Outcome>,
    /// `pass` (every budget holds), `fail`, or `none` (no budgets).
    pub verdict: String,
    /// Things the user should know.
    pub warnings: Vec<String>,
    /// Set when more than a fifth of the messages came back `busy`: what
    /// that means ([`busy_warning`]).
    #[serde(default)]
    pub busy_warning: Option<String>,
    /// Each scenario stage's own figures: a message belongs to the stage it
    /// was due (or sent) in, whenever it settled.
    #[serde(default)]
    pub stages: Vec<StageReport>,
    /// One point per second of the run, from the first second of the stages.
    #[serde(default)]
    pub series: Vec<SeriesPoint>,
    /// With `[[conversation]]`: the figures of each conversation's first
    /// message, second, ... (whatever the conversation), in turn order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<TurnReport>,
    /// Set when `--abort-on-fail` ended the run early: when, and which
    /// budgets had stopped holding.
    #[serde(default)]
    pub aborted: Option<Aborted>,
}

/// The figures of the `turn`th message of every conversation played.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnReport {
    /// 1 for each conversation's first message, 2 for the second, ...
    pub turn: u32,
    /// Its messages (rates over the run's measured time).
    pub messages: Messages,
    /// Its errors by code, `busy` included, only codes seen.
    pub errors: BTreeMap<String, u64>,
    /// Its goodput.
    pub goodput: Goodput,
    /// Every figure, as in [`Report::metrics`].
    pub metrics: BTreeMap<String, Metric>,
}

impl TurnReport {
    /// The turn `turn` of `totals`, over `measured_s` seconds.
    pub fn of(turn: u32, totals: &Interval, slos: &[Slo], measured_s: f64) -> TurnReport {
        let c = &totals.counters;
        TurnReport {
            turn,
            messages: Messages::of(c, per_second(c.sent, measured_s), measured_s),
            errors: errors_of(c),
            goodput: Goodput::of(c, slos, measured_s),
            metrics: metrics_of(totals),
        }
    }

    /// The turn's measurements back (lossless).
    pub fn to_interval(&self) -> Result<Interval, json::ReportError> {
        decode(&self.metrics, &self.messages, &self.errors)
    }
}

/// One scenario stage's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage's name (`stage-N` when the scenario gives none).
    pub name: String,
    /// Seconds from the start of the stages to this stage's start.
    pub start_s: f64,
    /// Its length, seconds.
    pub duration_s: f64,
    /// Sessions it holds at its end.
    pub sessions: u64,
    /// Messages per second it offers at its end (open model).
    pub rate_per_s: f64,
    /// Its messages (rates over its measured part: after warm-up).
    pub messages: Messages,
    /// Its errors by code, `busy` included, only codes seen.
    pub errors: BTreeMap<String, u64>,
    /// Its goodput.
    pub goodput: Goodput,
    /// Every figure, as in [`Report::metrics`].
    pub metrics: BTreeMap<String, Metric>,
}

/// What [`Report::assemble`] needs besides the measurements.
#[derive(Debug, Clone)]
pub struct Context {
    /// Scenario.
    pub scenario: Scenario,
    /// Shards covered.
    pub shards: Vec<ShardInfo>,
    /// Start, ms since epoch.
    pub started_at_unix_ms: u64,
    /// Elapsed seconds.
    pub elapsed_s: f64,
    /// Measured seconds.
    pub measured_s: f64,
    /// Completed within deadlines.
    pub complete: bool,
    /// Peak sessions.
    pub peak_open: u64,
    /// Rate sent per second.
    pub rate_per_s: f64,
    /// RSS before sessions.
    pub rss_baseline_bytes: u64,
    /// RSS at peak.
    pub rss_peak_bytes: u64,
    /// Warnings.
    pub warnings: Vec<String>,
    /// Each stage's measurements.
    pub stages: Vec<StageInput>,
    /// The per-second series.
    pub series: Vec<SeriesPoint>,
    /// Each conversation turn's measurements (index 0 is turn 1).
    pub turns: Vec<Interval>,
    /// Why the run ended early, if it did.
    pub aborted: Option<Aborted>,
    /// When the stages started, ms since the epoch.
    pub stages_started_at_unix_ms: Option<u64>,
}

impl Report {
    /// A report from a run of one shard.
    pub fn from_run(outcome: &RunOutcome, scenario: &Scenario, shard: Shard) -> Report {
        let ctx = Context {
            scenario: scenario.clone(),
            shards: vec![ShardInfo {
                shard,
                machine: Machine::describe(outcome.threads, &outcome.driver, outcome.open_files.0),
            }],
            started_at_unix_ms: outcome
                .started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            elapsed_s: outcome.elapsed.as_secs_f64(),
            measured_s: outcome.measured.as_secs_f64(),
            complete: outcome.complete,
            peak_open: outcome.peak_sessions,
            rate_per_s: outcome.rate_per_s(),
            rss_baseline_bytes: outcome.rss_baseline,
            rss_peak_bytes: outcome.rss_at_peak,
            warnings: outcome.warnings.clone(),
            stages: outcome.stage_inputs(scenario),
            series: outcome.series.clone(),
            turns: outcome.turns.clone(),
            aborted: outcome.aborted.clone(),
            stages_started_at_unix_ms: outcome
                .stages_started_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
        };
        Report::assemble(&outcome.totals, ctx)
    }

    /// Builds the report and checks the scenario's budgets.
    pub fn assemble(totals: &Interval, ctx: Context) -> Report {
        let c = &totals.counters;
        let metrics = metrics_of(totals);
        let errors = errors_of(c);
        let turns = ctx
            .turns
            .iter()
            .enumerate()
            .map(|(i, t)| TurnReport::of(i as u32 + 1, t, &ctx.scenario.slos, ctx.measured_s))
            .collect();
        let facts = Facts {
            totals,
            peak_sessions: ctx.peak_open,
            rate_per_s: ctx.rate_per_s,
        };
        let budgets = evaluate_all(&ctx.scenario.budgets, &facts);
        let verdict = verdict_of(&budgets).to_string();
        let mut warnings = ctx.warnings;
        let unsent = c.error(ErrorKind::Unsent);
        let lost = c.reconnects.saturating_sub(c.resumed);
        if lost > 0 && !warnings.iter().any(|w| w.contains("not resumed")) {
            warnings.push(format!(
                "{lost} of {} reconnects were not resumed: the server started a new session instead of taking up the one the cookie named",
                c.reconnects
            ));
        }
        if unsent > 0 && !warnings.iter().any(|w| w.contains("fell behind")) {
            warnings.push(format!(
                "loadgen fell behind its schedule: {unsent} due messages were never sent (counted as `unsent` errors); give it more --threads or --shard the load"
            ));
        }
        Report {
            schema: SCHEMA.to_string(),
            tool: Tool {
                name: "loadgen".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
            started_at_unix_ms: ctx.started_at_unix_ms,
            elapsed_s: ctx.elapsed_s,
            measured_s: ctx.measured_s,
            complete: ctx.complete,
            sessions: Sessions {
                peak_open: ctx.peak_open,
                attempted: c.sessions_attempted,
                opened: c.sessions_opened,
                rss_baseline_bytes: ctx.rss_baseline_bytes,
                rss_peak_bytes: ctx.rss_peak_bytes,
                bytes_per_session: (ctx.peak_open >= PER_SESSION_MIN).then(|| {
                    ctx.rss_peak_bytes.saturating_sub(ctx.rss_baseline_bytes) / ctx.peak_open
                }),
                warmup_attempted: c.warmup_sessions_attempted,
                warmup_opened: c.warmup_sessions_opened,
            },
            messages: Messages::of(c, ctx.rate_per_s, ctx.measured_s),
            errors,
            goodput: Goodput::of(c, &ctx.scenario.slos, ctx.measured_s),
            metrics,
            send_lag: Metric::from_histogram(&totals.send_lag),
            budgets,
            verdict,
            warnings,
            busy_warning: busy_warning(c.error(ErrorKind::Busy), c.sent),
            scenario: ctx.scenario,
            shards: ctx.shards,
            stages: ctx.stages.iter().map(StageInput::report).collect(),
            series: ctx.series,
            turns,
            aborted: ctx.aborted,
            stages_started_at_unix_ms: ctx.stages_started_at_unix_ms,
        }
    }

    /// The measurements back as histograms and counters (lossless).
    pub fn to_interval(&self) -> Result<Interval, json::ReportError> {
        let mut iv = decode(&self.metrics, &self.messages, &self.errors)?;
        let lag = json::decode_hdr(&self.send_lag.hdr)?;
        for v in lag.iter_recorded() {
            iv.send_lag
                .saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
        let c = &mut iv.counters;
        c.sessions_attempted = self.sessions.attempted;
        c.sessions_opened = self.sessions.opened;
        c.warmup_sessions_attempted = self.sessions.warmup_attempted;
        c.warmup_sessions_opened = self.sessions.warmup_opened;
        Ok(iv)
    }

    /// Whether every budget held (true with no budgets).
    pub fn passed(&self) -> bool {
        self.budgets.iter().all(|b| b.pass)
    }

    /// Budgets again, against this report's own measurements (after a merge,
    /// or with budgets given later).
    pub fn rejudge(&mut self, budgets: &[Budget]) -> Result<(), json::ReportError> {
        let totals = self.to_interval()?;
        let facts = Facts {
            totals: &totals,
            peak_sessions: self.sessions.peak_open,
            rate_per_s: self.messages.rate_per_s,
        };
        self.scenario.budgets = budgets.to_vec();
        self.budgets = evaluate_all(budgets, &facts);
        self.verdict = verdict_of(&self.budgets).to_string();
        Ok(())
    }
}

impl Messages {
    /// The message counts of `c`, sent at `rate_per_s` over `measured_s`.
    pub fn of(c: &Counters, rate_per_s: f64, measured_s: f64) -> Messages {
        Messages {
            sent: c.sent,
            acked: c.acked,
            replied: c.replied,
            good: c.good,
            busy: c.error(ErrorKind::Busy),
            errors: c.errors_total(),
            resent: c.resent,
            resent_acked: c.resent_acked,
            late: c.late,
            rate_per_s,
            output_tokens: c.output_tokens,
            output_tokens_per_s: per_second(c.output_tokens, measured_s),
            input_tokens: c.input_tokens,
            reconnects: c.reconnects,
            resumed: c.resumed,
        }
    }
}

impl Goodput {
    /// Goodput of `c` under `slos` over `measured_s`.
    pub fn of(c: &Counters, slos: &[Slo], measured_s: f64) -> Goodput {
        Goodput {
            slos: slos.to_vec(),
            good: c.good,
            total: c.sent,
            percent: (c.sent > 0).then(|| 100.0 * c.good as f64 / c.sent as f64),
            per_s: per_second(c.good, measured_s),
        }
    }
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Every figure of `totals`, by name.
fn metrics_of(totals: &Interval) -> BTreeMap<String, Metric> {
    Figure::ALL
        .iter()
        .map(|&f| {
            (
                f.name().to_string(),
                Metric::from_histogram(totals.figure(f)),
            )
        })
        .collect()
}

/// The error counts of `c` by name, only those seen.
fn errors_of(c: &Counters) -> BTreeMap<String, u64> {
    ErrorKind::ALL
        .iter()
        .filter(|k| c.error(**k) > 0)
        .map(|k| (k.name().to_string(), c.error(*k)))
        .collect()
}

/// Histograms and message counters back from their report form (lossless;
/// session counts are the caller's).
fn decode(
    metrics: &BTreeMap<String, Metric>,
    messages: &Messages,
    errors: &BTreeMap<String, u64>,
) -> Result<Interval, json::ReportError> {
    let mut iv = Interval::default();
    for f in Figure::ALL {
        if let Some(m) = metrics.get(f.name()) {
            let h = json::decode_hdr(&m.hdr)?;
            let dst = &mut iv.hist[f.index()];
            for v in h.iter_recorded() {
                dst.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }
    let mut c = Counters {
        sent: messages.sent,
        acked: messages.acked,
        replied: messages.replied,
        good: messages.good,
        late: messages.late,
        resent: messages.resent,
        resent_acked: messages.resent_acked,
        output_tokens: messages.output_tokens,
        input_tokens: messages.input_tokens,
        reconnects: messages.reconnects,
        resumed: messages.resumed,
        ..Counters::default()
    };
    for (name, n) in errors {
        let kind = ErrorKind::from_name(name).unwrap_or(ErrorKind::OtherServer);
        c.errors[kind.index()] += n;
    }
    iv.counters = c;
    Ok(iv)
}

/// A stage as a run measured it, before it becomes a [`StageReport`].
#[derive(Debug, Clone)]
pub struct StageInput {
    /// Name.
    pub name: String,
    /// Start, seconds from the start of the stages.
    pub start_s: f64,
    /// Length, seconds.
    pub duration_s: f64,
    /// Sessions at its end.
    pub sessions: u64,
    /// Offered rate at its end.
    pub rate_per_s: f64,
    /// Its time after warm-up, seconds: what its rates are over.
    pub measured_s: f64,
    /// SLOs goodput is judged by.
    pub slos: Vec<Slo>,
    /// What it measured.
    pub totals: Interval,
}

impl StageInput {
    fn report(&self) -> StageReport {
        let c = &self.totals.counters;
        StageReport {
            name: self.name.clone(),
            start_s: self.start_s,
            duration_s: self.duration_s,
            sessions: self.sessions,
            rate_per_s: self.rate_per_s,
            messages: Messages::of(c, per_second(c.sent, self.measured_s), self.measured_s),
            errors: errors_of(c),
            goodput: Goodput::of(c, &self.slos, self.measured_s),
            metrics: metrics_of(&self.totals),
        }
    }
}

impl StageReport {
    /// The stage's measurements back (lossless).
    pub fn to_interval(&self) -> Result<Interval, json::ReportError> {
        decode(&self.metrics, &self.messages, &self.errors)
    }

    /// Seconds of the stage after warm-up, from its own counts.
    fn measured_s(&self) -> f64 {
        if self.messages.rate_per_s > 0.0 {
            self.messages.sent as f64 / self.messages.rate_per_s
        } else {
            self.duration_s
        }
    }
}

/// Turns of several reports, added turn by turn.
fn merge_turns(reports: &[Report]) -> Result<Vec<Interval>, json::ReportError> {
    let mut out: Vec<Interval> = Vec::new();
    for r in reports {
        for t in &r.turns {
            let i = t.turn.saturating_sub(1) as usize;
            if out.len() <= i {
                out.resize_with(i + 1, Interval::default);
            }
            out[i].add(&t.to_interval()?);
        }
    }
    Ok(out)
}

/// Stages of shards that ran the same scenario, added stage by stage.
fn merge_stages(reports: &[Report]) -> Result<Vec<StageInput>, json::ReportError> {
    let Some(first) = reports.first() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(first.stages.len());
    for (i, st) in first.stages.iter().enumerate() {
        let mut totals = Interval::default();
        let mut sessions = 0;
        let mut rate = 0.0;
        for r in reports {
            if let Some(other) = r.stages.get(i) {
                totals.add(&other.to_interval()?);
                sessions += other.sessions;
                rate += other.rate_per_s;
            }
        }
        out.push(StageInput {
            name: st.name.clone(),
            start_s: st.start_s,
            duration_s: st.duration_s,
            sessions,
            rate_per_s: rate,
            measured_s: st.measured_s(),
            slos: st.goodput.slos.clone(),
            totals,
        });
    }
    Ok(out)
}

fn verdict_of(budgets: &[Outcome]) -> &'static str {
    if budgets.is_empty() {
        "none"
    } else if budgets.iter().all(|b| b.pass) {
        "pass"
    } else {
        "fail"
    }
}

/// Merges the reports of several shards (or runs): histograms and counts add
/// up losslessly; peaks and rates add (shards run side by side); budgets are
/// those given, or the first report's.
pub fn merge(reports: &[Report], budgets: Option<&[Budget]>) -> Result<Report, json::ReportError> {
    let first = reports.first().ok_or(json::ReportError::Empty)?;
    let mut totals = Interval::default();
    let mut warnings = Vec::new();
    for r in reports {
        totals.add(&r.to_interval()?);
        if r.goodput.slos != first.goodput.slos {
            warnings.push(format!(
                "reports use different SLOs ({:?} and {:?}); goodput adds their own verdicts",
                first
                    .goodput
                    .slos
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
                r.goodput
                    .slos
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
            ));
        }
        warnings.extend(r.warnings.iter().cloned());
    }
    warnings.dedup();
    let mut stage_starts: Vec<u64> = reports
        .iter()
        .filter_map(|r| r.stages_started_at_unix_ms)
        .collect();
    stage_starts.sort_unstable();
    if let (Some(a), Some(b)) = (stage_starts.first(), stage_starts.last()) {
        // The series add up second by second of each shard's own stages.
        if b - a > 1000 {
            warnings.push(format!(
                "the shards' stages started {:.1} s apart: their per-second series are added by second since each shard's own start; start them together with --start-at",
                (b - a) as f64 / 1000.0
            ));
        }
    }
    let mut scenario = first.scenario.clone();
    if let Some(b) = budgets {
        scenario.budgets = b.to_vec();
    }
    let start = reports
        .iter()
        .map(|r| r.started_at_unix_ms)
        .min()
        .unwrap_or(0);
    let sum = |f: &dyn Fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let ctx = Context {
        scenario,
        shards: reports
            .iter()
            .flat_map(|r| r.shards.iter().cloned())
            .collect(),
        started_at_unix_ms: start,
        elapsed_s: reports.iter().map(|r| r.elapsed_s).fold(0.0, f64::max),
        measured_s: reports.iter().map(|r| r.measured_s).fold(0.0, f64::max),
        complete: reports.iter().all(|r| r.complete),
        peak_open: sum(&|r| r.sessions.peak_open),
        rate_per_s: reports.iter().map(|r| r.messages.rate_per_s).sum(),
        rss_baseline_bytes: sum(&|r| r.sessions.rss_baseline_bytes),
        rss_peak_bytes: sum(&|r| r.sessions.rss_peak_bytes),
        warnings,
        stages: merge_stages(reports)?,
        series: series::merge(reports.iter().map(|r| r.series.as_slice()))?,
        turns: merge_turns(reports)?,
        aborted: reports.iter().find_map(|r| r.aborted.clone()),
        stages_started_at_unix_ms: stage_starts.first().copied(),
    };
    Ok(Report::assemble(&totals, ctx))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metrics::Recorder;
    use std::time::Duration;

    /// A small report with known figures, for the output tests.
    pub(crate) fn sample(seed: u64, budgets: &[&str]) -> Report {
        let mut r = Recorder::default();
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..1000 {
            r.record(
                crate::metrics::Mark::Stage(0),
                Figure::Rtt,
                100 + rng.u64(..900),
            );
            r.record(
                crate::metrics::Mark::Stage(0),
                Figure::Ttft,
                200_000 + rng.u64(..600_000),
            );
            r.record(
                crate::metrics::Mark::Stage(0),
                Figure::Connect,
                300 + rng.u64(..100),
            );
            r.record_lag(rng.u64(..50));
        }
        r.counters().sent = 1000;
        r.counters().acked = 1000;
        r.counters().good = 990;
        r.counters().sessions_attempted = 10;
        r.counters().sessions_opened = 10;
        r.error(ErrorKind::Busy);
        r.error(ErrorKind::Timeout);
        let mut sc = Scenario::simple("ws://127.0.0.1:1/ws", 10, 100.0, Duration::from_secs(10));
        sc.budgets = budgets.iter().map(|b| b.parse().unwrap()).collect();
        sc.slos = vec!["ttft:1s".parse().unwrap()];
        let ctx = Context {
            scenario: sc,
            shards: vec![ShardInfo {
                shard: Shard::default(),
                machine: Machine::default(),
            }],
            started_at_unix_ms: 1_700_000_000_000 + seed,
            elapsed_s: 11.0,
            measured_s: 10.0,
            complete: true,
            peak_open: 10,
            rate_per_s: 100.0,
            rss_baseline_bytes: 1_000_000,
            rss_peak_bytes: 1_020_000,
            warnings: vec![],
            stages: vec![],
            series: vec![],
            turns: vec![],
            aborted: None,
            stages_started_at_unix_ms: None,
        };
        Report::assemble(&r.take(), ctx)
    }

    #[test]
    fn assembles_every_figure_and_verdict() {
        let r = sample(1, &["rtt.p99<2ms", "errors<0.05%"]);
        assert_eq!(r.metrics.len(), Figure::ALL.len());
        assert_eq!(r.metrics["rtt"].count, 1000);
        assert_eq!(r.metrics["itl"].count, 0);
        assert_eq!(r.metrics["itl"].p99_us, None);
        assert!(
            r.metrics["rtt"].hdr.starts_with("HISTFAAA"),
            "{}",
            r.metrics["rtt"].hdr
        );
        assert_eq!(r.errors["busy"], 1);
        assert_eq!(r.messages.errors, 1);
        assert_eq!(
            r.sessions.bytes_per_session, None,
            "10 sessions are too few for a per-session figure"
        );
        assert_eq!(r.busy_warning, None, "1 busy of 1000");
        assert_eq!(r.goodput.percent, Some(99.0));
        assert_eq!(r.verdict, "fail", "{:?}", r.budgets);
        assert!(r.budgets[0].pass && !r.budgets[1].pass);
    }

    #[test]
    fn per_session_memory_needs_a_meaningful_count() {
        let at = |peak_open: u64| {
            let mut r = Recorder::default();
            let sc = Scenario::simple("ws://127.0.0.1:1/ws", 10, 1.0, Duration::from_secs(1));
            let ctx = Context {
                scenario: sc,
                shards: vec![],
                started_at_unix_ms: 0,
                elapsed_s: 1.0,
                measured_s: 1.0,
                complete: true,
                peak_open,
                rate_per_s: 1.0,
                rss_baseline_bytes: 10_000_000,
                rss_peak_bytes: 14_000_000,
                warnings: vec![],
                stages: vec![],
                series: vec![],
                turns: vec![],
                aborted: None,
                stages_started_at_unix_ms: None,
            };
            Report::assemble(&r.take(), ctx).sessions.bytes_per_session
        };
        // The defect: 2 sessions reported the process's growth as ~2 MB each.
        assert_eq!(at(2), None);
        assert_eq!(at(PER_SESSION_MIN - 1), None);
        assert_eq!(at(2000), Some(2_000));
    }

    #[test]
    fn a_busy_fifth_warns_and_says_what_it_means() {
        assert_eq!(busy_warning(0, 0), None);
        assert_eq!(busy_warning(20, 100), None, "a fifth exactly is not more");
        let w = busy_warning(21, 100).expect("a warning");
        for part in [
            "21 of 100",
            "over capacity",
            "TTFT budget",
            "--rate",
            "not failures",
        ] {
            assert!(w.contains(part), "{part} missing: {w}");
        }
        let mut r = Recorder::default();
        r.counters().sent = 10;
        for _ in 0..3 {
            r.error(ErrorKind::Busy);
        }
        let mut sample = sample(1, &[]);
        sample.busy_warning = None;
        let ctx = Context {
            scenario: sample.scenario.clone(),
            shards: vec![],
            started_at_unix_ms: 0,
            elapsed_s: 1.0,
            measured_s: 1.0,
            complete: true,
            peak_open: 1,
            rate_per_s: 10.0,
            rss_baseline_bytes: 0,
            rss_peak_bytes: 0,
            warnings: vec![],
            stages: vec![],
            series: vec![],
            turns: vec![],
            aborted: None,
            stages_started_at_unix_ms: None,
        };
        let rep = Report::assemble(&r.take(), ctx);
        assert!(rep
            .busy_warning
            .as_deref()
            .is_some_and(|w| w.contains("3 of 10")));
        let json = serde_json::to_value(&rep).expect("json");
        assert!(
            json["busy_warning"].as_str().is_some(),
            "a field of the report"
        );
        let merged = merge(&[rep.clone(), rep], None).expect("merge");
        assert!(merged
            .busy_warning
            .as_deref()
            .is_some_and(|w| w.contains("6 of 20")));
    }

    #[test]
    fn merging_is_lossless_and_rejudges() {
        let a = sample(1, &["rtt.p99<2ms"]);
        let b = sample(2, &["rtt.p99<2ms"]);
        let m = merge(&[a.clone(), b.clone()], None).unwrap();
        assert_eq!(m.metrics["rtt"].count, 2000);
        assert_eq!(m.send_lag.count, 2000);
        assert_eq!(m.messages.sent, 2000);
        assert_eq!(m.errors["timeout"], 2);
        assert_eq!(m.sessions.peak_open, 20);
        assert_eq!(m.shards.len(), 2);
        let mut both = a.to_interval().unwrap();
        both.add(&b.to_interval().unwrap());
        assert_eq!(
            m.to_interval().unwrap().figure(Figure::Rtt),
            both.figure(Figure::Rtt)
        );
        assert_eq!(m.verdict, "pass");
        let strict: Vec<Budget> = vec!["rtt.max<500us".parse().unwrap()];
        let m = merge(&[a, b], Some(&strict)).unwrap();
        assert_eq!(m.verdict, "fail");
        assert!(merge(&[], None).is_err());
    }
}
