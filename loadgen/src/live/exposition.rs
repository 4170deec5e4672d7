//! The running totals of a live run and their Prometheus form, sans-IO: each
//! second's [`Interval`] is reduced to a small [`Digest`] (bucket counts,
//! sums, last-second quantiles, counters), digests add up into [`Totals`],
//! totals become metric [`Family`]s, and [`render`] writes the text
//! exposition format 0.0.4. Remote write sends the same families, so
//! scraping and pushing can never disagree on a series.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::metrics::{Counters, ErrorKind, Figure, Interval};
use crate::scenario::{Model, Scenario, Shard};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Upper bounds of the latency buckets: microseconds and the `le` label.
/// Log-spaced (1, 2.5, 5 per decade) from loadgen's own loopback floor
/// (about 100 us) to a minute, past any message timeout worth running with.
pub const BUCKETS: [(u64, &str); 18] = [
    (100, "0.0001"),
    (250, "0.00025"),
    (500, "0.0005"),
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1"),
    (2_500_000, "2.5"),
    (5_000_000, "5"),
    (10_000_000, "10"),
    (30_000_000, "30"),
    (60_000_000, "60"),
];

/// Buckets with `+Inf`.
const SLOTS: usize = BUCKETS.len() + 1;

/// Latency series: every [`Figure`], then loadgen's own send lag.
pub const LATENCIES: usize = Figure::ALL.len() + 1;

/// The name of latency series `i` (`loadgen_<name>_seconds`).
pub fn latency_name(i: usize) -> &'static str {
    match Figure::ALL.get(i) {
        Some(f) => f.name(),
        None => "send_lag",
    }
}

fn latency_help(i: usize) -> &'static str {
    match Figure::ALL.get(i) {
        Some(Figure::Connect) => "TCP connect started to welcome received.",
        Some(Figure::Rtt) => "Message due (open model) or sent to its ack.",
        Some(Figure::Ttft) => "Message due or sent to its first token.",
        Some(Figure::Itl) => "Time between successive tokens of one reply.",
        Some(Figure::Reply) => "Message due or sent to its done.",
        Some(Figure::Tpot) => "Time per output token after the first, one sample per reply.",
        None => "How late loadgen sent open-model messages after they were due.",
    }
}

fn histogram_of(iv: &Interval, i: usize) -> &Histogram<u64> {
    match Figure::ALL.get(i) {
        Some(&f) => iv.figure(f),
        None => &iv.send_lag,
    }
}

/// One latency histogram of one second, in Prometheus buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencyDigest {
    /// Samples per bucket (not cumulative); the last is above every bound.
    pub buckets: [u64; SLOTS],
    /// Samples.
    pub count: u64,
    /// Sum of the samples, microseconds.
    pub sum_us: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
}

impl LatencyDigest {
    /// The digest of `h`; `None` when it holds no sample.
    pub fn of(h: &Histogram<u64>) -> Option<LatencyDigest> {
        if h.is_empty() {
            return None;
        }
        let mut d = LatencyDigest {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            ..LatencyDigest::default()
        };
        for v in h.iter_recorded() {
            // A sample is bucketed by the top of its HdrHistogram bucket, as
            // the report's percentiles are: the exported figures may round
            // up by 0.1%, never down.
            let top = v.value_iterated_to();
            let slot = BUCKETS
                .iter()
                .position(|&(le, _)| top <= le)
                .unwrap_or(BUCKETS.len());
            let n = v.count_at_value();
            d.buckets[slot] += n;
            // The sum takes the middle of each bucket, as HdrHistogram's mean does.
            d.sum_us = d
                .sum_us
                .saturating_add(h.median_equivalent(top).saturating_mul(n));
        }
        Some(d)
    }
}

/// What one second adds to the totals: small enough to hand to another
/// thread once a second, whatever the run's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    /// The second's counters.
    pub counters: Counters,
    /// Each latency series (by [`latency_name`] index) with samples.
    pub latency: [Option<LatencyDigest>; LATENCIES],
    /// Sessions open at the second's end.
    pub open: u64,
    /// Messages the schedule offered in the second.
    pub offered: f64,
    /// Seconds since the stages started (`None` while connecting).
    pub t_s: Option<u64>,
}

impl Digest {
    /// The digest of one second's measurements.
    pub fn of(iv: &Interval, open: u64, offered: f64, t_s: Option<u64>) -> Digest {
        Digest {
            counters: iv.counters.clone(),
            latency: std::array::from_fn(|i| LatencyDigest::of(histogram_of(iv, i))),
            open,
            offered,
            t_s,
        }
    }
}

/// One latency series summed over every second so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cumulative {
    /// Samples per bucket (not cumulative).
    pub buckets: [u64; SLOTS],
    /// Samples.
    pub count: u64,
    /// Sum, microseconds.
    pub sum_us: u64,
}

/// Everything measured so far, plus what the last second said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Counters over the run so far.
    pub counters: Counters,
    /// Latency series over the run so far.
    pub latency: [Cumulative; LATENCIES],
    /// The last second's median and 99th percentile of each latency series
    /// with samples in it, microseconds.
    pub last: [Option<(u64, u64)>; LATENCIES],
    /// Sessions open at the end of the last second.
    pub open: u64,
    /// Messages offered in the last second.
    pub offered: f64,
    /// The last second's time since the stages started.
    pub t_s: Option<u64>,
    /// Seconds added.
    pub seconds: u64,
}

impl Totals {
    /// Adds one second.
    pub fn add(&mut self, d: &Digest) {
        self.counters.add(&d.counters);
        for (i, l) in d.latency.iter().enumerate() {
            self.last[i] = l.map(|l| (l.p50_us, l.p99_us));
            let Some(l) = l else { continue };
            let c = &mut self.latency[i];
            for (a, b) in c.buckets.iter_mut().zip(l.buckets) {
                *a += b;
            }
            c.count += l.count;
            c.sum_us = c.sum_us.saturating_add(l.sum_us);
        }
        self.open = d.open;
        self.offered = d.offered;
        self.t_s = d.t_s;
        self.seconds += 1;
    }
}

/// A stage as the `loadgen_stage` gauge names it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpan {
    /// Display name.
    pub name: String,
    /// End, seconds after the stages start.
    pub end_s: f64,
}

/// What identifies the run on every series, and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// The `run` label.
    pub run: String,
    /// The `shard` label (`I/N`), only when the scenario is sharded.
    pub shard: Option<Shard>,
    /// Target URL (on `loadgen_run_info`).
    pub url: String,
    /// `open` or `closed` (on `loadgen_run_info`).
    pub model: String,
    /// The stages in order.
    pub stages: Vec<StageSpan>,
}

/// The `stage` before the stages start.
pub const STAGE_CONNECT: &str = "connect";
/// The `stage` after the last one ends.
pub const STAGE_DRAIN: &str = "drain";

impl RunInfo {
    /// The run of `sc` as shard `shard`, labelled `run`.
    pub fn of(sc: &Scenario, run: &str, shard: Shard) -> RunInfo {
        let mut end = 0.0;
        let stages = sc
            .stages
            .iter()
            .enumerate()
            .map(|(i, st)| {
                end += st.duration.secs();
                StageSpan {
                    name: sc.stage_name(i),
                    end_s: end,
                }
            })
            .collect();
        RunInfo {
            run: run.to_string(),
            shard: (shard.count > 1).then_some(shard),
            url: sc.url.clone(),
            model: match sc.model {
                Model::Open => "open",
                Model::Closed => "closed",
            }
            .to_string(),
            stages,
        }
    }

    /// The labels every series carries.
    pub fn base_labels(&self) -> Vec<(String, String)> {
        let mut l = vec![("run".to_string(), self.run.clone())];
        if let Some(s) = self.shard {
            l.push(("shard".to_string(), s.to_string()));
        }
        l
    }

    /// Every value of `loadgen_stage`'s `stage` label, in run order, once
    /// each (two stages of one name are one state).
    pub fn states(&self) -> Vec<&str> {
        let mut v = vec![STAGE_CONNECT];
        for s in &self.stages {
            if !v.contains(&s.name.as_str()) {
                v.push(&s.name);
            }
        }
        if !v.contains(&STAGE_DRAIN) {
            v.push(STAGE_DRAIN);
        }
        v
    }

    /// The state at `t_s` seconds after the stages started.
    pub fn state_at(&self, t_s: Option<u64>) -> &str {
        let Some(t) = t_s else { return STAGE_CONNECT };
        self.stages
            .iter()
            .find(|s| (t as f64) < s.end_s)
            .map_or(STAGE_DRAIN, |s| &s.name)
    }
}

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Any value.
    Gauge,
    /// Cumulative buckets, sum and count.
    Histogram,
}

impl Kind {
    /// The word on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One series' current value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series name (`loadgen_rtt_seconds_bucket`, say).
    pub name: String,
    /// Labels, the run's first.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

/// A metric family: its name, help, type and series.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Family name (a histogram's, without `_bucket`).
    pub name: String,
    /// One line saying what it is.
    pub help: String,
    /// Type.
    pub kind: Kind,
    /// Series.
    pub samples: Vec<Sample>,
}

struct Builder<'a> {
    base: &'a [(String, String)],
    out: Vec<Family>,
}

impl Builder<'_> {
    fn family(&mut self, name: &str, help: &str, kind: Kind) {
        self.out.push(Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            samples: Vec::new(),
        });
    }

    fn sample(&mut self, suffix: &str, extra: &[(&str, &str)], value: f64) {
        let Some(f) = self.out.last_mut() else { return };
        let mut labels = self.base.to_vec();
        labels.extend(extra.iter().map(|&(k, v)| (k.to_string(), v.to_string())));
        f.samples.push(Sample {
            name: format!("{}{suffix}", f.name),
            labels,
            value,
        });
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, Kind::Counter);
        self.sample("", &[], value as f64);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, Kind::Gauge);
        self.sample("", &[], value);
    }
}

/// The metric families of `t`, in a fixed order.
pub fn families(t: &Totals, info: &RunInfo) -> Vec<Family> {
    let base = info.base_labels();
    let mut b = Builder {
        base: &base,
        out: Vec::new(),
    };
    b.family(
        "loadgen_run_info",
        "The run: target, arrival model and loadgen version. Always 1.",
        Kind::Gauge,
    );
    b.sample(
        "",
        &[
            ("url", &info.url),
            ("model", &info.model),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    b.family(
        "loadgen_stage",
        "1 for the stage running now (connect before the stages, drain after), 0 for the others.",
        Kind::Gauge,
    );
    let now = info.state_at(t.t_s);
    for s in info.states() {
        b.sample("", &[("stage", s)], if s == now { 1.0 } else { 0.0 });
    }
    let c = &t.counters;
    b.counter(
        "loadgen_messages_sent_total",
        "Messages sent (or due with no session to carry them) after warm-up.",
        c.sent,
    );
    b.counter("loadgen_messages_acked_total", "Messages acked.", c.acked);
    b.counter(
        "loadgen_messages_replied_total",
        "Replies completed with done.",
        c.replied,
    );
    b.counter(
        "loadgen_messages_good_total",
        "Messages that met every SLO (goodput's numerator).",
        c.good,
    );
    b.counter(
        "loadgen_busy_total",
        "Messages refused with busy (not counted as errors).",
        c.error(ErrorKind::Busy),
    );
    b.family(
        "loadgen_errors_total",
        "Errors by kind, busy excluded.",
        Kind::Counter,
    );
    for k in ErrorKind::ALL {
        if k != ErrorKind::Busy {
            b.sample("", &[("kind", k.name())], c.error(k) as f64);
        }
    }
    b.counter(
        "loadgen_output_tokens_total",
        "Output tokens of completed replies.",
        c.output_tokens,
    );
    b.counter(
        "loadgen_sessions_attempted_total",
        "Sessions whose connect started after warm-up.",
        c.sessions_attempted,
    );
    b.counter(
        "loadgen_sessions_opened_total",
        "Of those, sessions that reached welcome.",
        c.sessions_opened,
    );
    b.gauge(
        "loadgen_sessions_open",
        "Sessions open at the end of the last second.",
        t.open as f64,
    );
    b.gauge(
        "loadgen_offered_rate",
        "Messages per second the schedule offered in the last second (0 in closed-model runs).",
        t.offered,
    );
    for (i, l) in t.latency.iter().enumerate() {
        if l.count == 0 {
            continue;
        }
        let name = format!("loadgen_{}_seconds", latency_name(i));
        b.family(&name, latency_help(i), Kind::Histogram);
        let mut acc = 0;
        for (n, &(_, le)) in l.buckets.iter().zip(BUCKETS.iter()) {
            acc += n;
            b.sample("_bucket", &[("le", le)], acc as f64);
        }
        b.sample("_bucket", &[("le", "+Inf")], l.count as f64);
        b.sample("_sum", &[], l.sum_us as f64 / 1e6);
        b.sample("_count", &[], l.count as f64);
    }
    for (i, q) in t.last.iter().enumerate() {
        let Some((p50, p99)) = *q else { continue };
        let name = format!("loadgen_{}_seconds_last", latency_name(i));
        let help = format!(
            "The last second's {} quantiles (HdrHistogram, 3 significant digits).",
            latency_name(i)
        );
        b.family(&name, &help, Kind::Gauge);
        b.sample("", &[("quantile", "0.5")], p50 as f64 / 1e6);
        b.sample("", &[("quantile", "0.99")], p99 as f64 / 1e6);
    }
    b.out
}

/// A value as the text format writes it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Rust's shortest round-trip form, never an exponent: integers
        // print without a fraction, as Prometheus's own clients do.
        format!("{v}")
    }
}

fn escape_label(v: &str, out: &mut String) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The text exposition format 0.0.4 of `families`.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        out.push_str("# HELP ");
        out.push_str(&f.name);
        out.push(' ');
        escape_help(&f.help, &mut out);
        out.push('\n');
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in &f.samples {
            out.push_str(&s.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(v, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&format_value(s.value));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Mark, Recorder};

    fn info() -> RunInfo {
        RunInfo {
            run: "r1".into(),
            shard: None,
            url: "ws://127.0.0.1:1/ws?site=demo".into(),
            model: "open".into(),
            stages: vec![StageSpan {
                name: "hold".into(),
                end_s: 10.0,
            }],
        }
    }

    fn second(rtts: &[u64], sent: u64) -> Interval {
        let mut r = Recorder::default();
        let m = Mark::Stage(0);
        for &us in rtts {
            r.record(m, Figure::Rtt, us);
        }
        r.count(m, |c| {
            c.sent += sent;
            c.acked += sent;
        });
        r.error_at(m, ErrorKind::Busy);
        r.error_at(m, ErrorKind::Timeout);
        r.take()
    }

    #[test]
    fn samples_fall_into_the_bucket_of_their_hdr_top() {
        let mut h = crate::metrics::new_histogram();
        // 100 us is exact; 5000 us shares [5000, 5003] and so goes above 5 ms.
        for us in [100, 101, 5_000, 90_000_000] {
            h.record(us).unwrap();
        }
        let d = LatencyDigest::of(&h).unwrap();
        assert_eq!(d.count, 4);
        assert_eq!(d.buckets[0], 1, "100 us is <= 0.0001 s");
        assert_eq!(d.buckets[1], 1, "101 us is in (0.0001, 0.00025]");
        assert_eq!(d.buckets[6], 1, "5000..5003 us is above 0.005 s");
        assert_eq!(d.buckets[BUCKETS.len()], 1, "90 s is above every bound");
        assert_eq!(d.buckets.iter().sum::<u64>(), 4);
        assert!(LatencyDigest::of(&crate::metrics::new_histogram()).is_none());
    }

    #[test]
    fn seconds_add_up_and_keep_the_last_quantiles() {
        let mut t = Totals::default();
        t.add(&Digest::of(&second(&[150, 3_000], 2), 5, 2.0, Some(0)));
        t.add(&Digest::of(&second(&[20_000], 1), 4, 1.5, Some(1)));
        let rtt = &t.latency[Figure::Rtt.index()];
        assert_eq!(rtt.count, 3);
        assert_eq!(rtt.buckets.iter().sum::<u64>(), 3);
        // 20 ms shares the HdrHistogram bucket [20000, 20015]: quantiles
        // report its top, as the report does.
        assert_eq!(t.last[Figure::Rtt.index()], Some((20_015, 20_015)));
        assert_eq!(t.last[Figure::Ttft.index()], None);
        assert_eq!((t.counters.sent, t.open, t.offered), (3, 4, 1.5));
        assert_eq!(t.seconds, 2);
    }

    #[test]
    fn the_text_format_is_exactly_this() {
        let mut t = Totals::default();
        t.add(&Digest::of(&second(&[150, 3_000], 2), 5, 2.5, Some(3)));
        let text = render(&families(&t, &info()));
        let expected = r#"# HELP loadgen_run_info The run: target, arrival model and loadgen version. Always 1.
# TYPE loadgen_run_info gauge
loadgen_run_info{run="r1",url="ws://127.0.0.1:1/ws?site=demo",model="open",version="VERSION"} 1
# HELP loadgen_stage 1 for the stage running now (connect before the stages, drain after), 0 for the others.
# TYPE loadgen_stage gauge
loadgen_stage{run="r1",stage="connect"} 0
loadgen_stage{run="r1",stage="hold"} 1
loadgen_stage{run="r1",stage="drain"} 0
# HELP loadgen_messages_sent_total Messages sent (or due with no session to carry them) after warm-up.
# TYPE loadgen_messages_sent_total counter
loadgen_messages_sent_total{run="r1"} 2
# HELP loadgen_messages_acked_total Messages acked.
# TYPE loadgen_messages_acked_total counter
loadgen_messages_acked_total{run="r1"} 2
# HELP loadgen_messages_replied_total Replies completed with done.
# TYPE loadgen_messages_replied_total counter
loadgen_messages_replied_total{run="r1"} 0
# HELP loadgen_messages_good_total Messages that met every SLO (goodput's numerator).
# TYPE loadgen_messages_good_total counter
loadgen_messages_good_total{run="r1"} 0
# HELP loadgen_busy_total Messages refused with busy (not counted as errors).
# TYPE loadgen_busy_total counter
loadgen_busy_total{run="r1"} 1
# HELP loadgen_errors_total Errors by kind, busy excluded.
# TYPE loadgen_errors_total counter
loadgen_errors_total{run="r1",kind="bad_request"} 0
loadgen_errors_total{run="r1",kind="unknown_type"} 0
loadgen_errors_total{run="r1",kind="too_large"} 0
loadgen_errors_total{run="r1",kind="rate_limited"} 0
loadgen_errors_total{run="r1",kind="unavailable"} 0
loadgen_errors_total{run="r1",kind="cursor_expired"} 0
loadgen_errors_total{run="r1",kind="internal"} 0
loadgen_errors_total{run="r1",kind="other_server_error"} 0
loadgen_errors_total{run="r1",kind="timeout"} 1
loadgen_errors_total{run="r1",kind="closed"} 0
loadgen_errors_total{run="r1",kind="connect"} 0
loadgen_errors_total{run="r1",kind="handshake"} 0
loadgen_errors_total{run="r1",kind="rejected"} 0
loadgen_errors_total{run="r1",kind="protocol"} 0
loadgen_errors_total{run="r1",kind="no_session"} 0
loadgen_errors_total{run="r1",kind="unsent"} 0
# HELP loadgen_output_tokens_total Output tokens of completed replies.
# TYPE loadgen_output_tokens_total counter
loadgen_output_tokens_total{run="r1"} 0
# HELP loadgen_sessions_attempted_total Sessions whose connect started after warm-up.
# TYPE loadgen_sessions_attempted_total counter
loadgen_sessions_attempted_total{run="r1"} 0
# HELP loadgen_sessions_opened_total Of those, sessions that reached welcome.
# TYPE loadgen_sessions_opened_total counter
loadgen_sessions_opened_total{run="r1"} 0
# HELP loadgen_sessions_open Sessions open at the end of the last second.
# TYPE loadgen_sessions_open gauge
loadgen_sessions_open{run="r1"} 5
# HELP loadgen_offered_rate Messages per second the schedule offered in the last second (0 in closed-model runs).
# TYPE loadgen_offered_rate gauge
loadgen_offered_rate{run="r1"} 2.5
# HELP loadgen_rtt_seconds Message due (open model) or sent to its ack.
# TYPE loadgen_rtt_seconds histogram
loadgen_rtt_seconds_bucket{run="r1",le="0.0001"} 0
loadgen_rtt_seconds_bucket{run="r1",le="0.00025"} 1
loadgen_rtt_seconds_bucket{run="r1",le="0.0005"} 1
loadgen_rtt_seconds_bucket{run="r1",le="0.001"} 1
loadgen_rtt_seconds_bucket{run="r1",le="0.0025"} 1
loadgen_rtt_seconds_bucket{run="r1",le="0.005"} 2
loadgen_rtt_seconds_bucket{run="r1",le="0.01"} 2
loadgen_rtt_seconds_bucket{run="r1",le="0.025"} 2
loadgen_rtt_seconds_bucket{run="r1",le="0.05"} 2
loadgen_rtt_seconds_bucket{run="r1",le="0.1"} 2
loadgen_rtt_seconds_bucket{run="r1",le="0.25"} 2
loadgen_rtt_seconds_bucket{run="r1",le="0.5"} 2
loadgen_rtt_seconds_bucket{run="r1",le="1"} 2
loadgen_rtt_seconds_bucket{run="r1",le="2.5"} 2
loadgen_rtt_seconds_bucket{run="r1",le="5"} 2
loadgen_rtt_seconds_bucket{run="r1",le="10"} 2
loadgen_rtt_seconds_bucket{run="r1",le="30"} 2
loadgen_rtt_seconds_bucket{run="r1",le="60"} 2
loadgen_rtt_seconds_bucket{run="r1",le="+Inf"} 2
loadgen_rtt_seconds_sum{run="r1"} 0.003151
loadgen_rtt_seconds_count{run="r1"} 2
# HELP loadgen_rtt_seconds_last The last second's rtt quantiles (HdrHistogram, 3 significant digits).
# TYPE loadgen_rtt_seconds_last gauge
loadgen_rtt_seconds_last{run="r1",quantile="0.5"} 0.00015
loadgen_rtt_seconds_last{run="r1",quantile="0.99"} 0.003001
"#
        .replace("VERSION", env!("CARGO_PKG_VERSION"));
        assert_eq!(text, expected);
    }

    #[test]
    fn shards_are_labelled_and_values_escaped() {
        let mut i = info();
        i.shard = Some(Shard { index: 2, count: 3 });
        i.url = "ws://h/ws?q=\"a\\b\"\n".into();
        let text = render(&families(&Totals::default(), &i));
        assert!(
            text.contains(r#"loadgen_run_info{run="r1",shard="2/3",url="ws://h/ws?q=\"a\\b\"\n","#),
            "{text}"
        );
        assert!(text.contains("loadgen_stage{run=\"r1\",shard=\"2/3\",stage=\"connect\"} 1\n"));
        assert!(
            !text.contains("_seconds"),
            "no latency series before a sample"
        );
        let single = render(&families(&Totals::default(), &info()));
        assert!(!single.contains("shard="), "one shard is not labelled");
    }

    #[test]
    fn states_run_from_connect_through_the_stages_to_drain() {
        let mut i = info();
        i.stages.push(StageSpan {
            name: "hold".into(),
            end_s: 20.0,
        });
        i.stages.push(StageSpan {
            name: "surge".into(),
            end_s: 30.0,
        });
        assert_eq!(i.states(), ["connect", "hold", "surge", "drain"]);
        assert_eq!(i.state_at(None), "connect");
        assert_eq!(i.state_at(Some(15)), "hold");
        assert_eq!(i.state_at(Some(29)), "surge");
        assert_eq!(i.state_at(Some(30)), "drain");
    }

    #[test]
    fn values_print_as_prometheus_reads_them() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.000127), "0.000127");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }
}
