//! The per-second series of a run: what each second offered, sent, got back
//! and how fast, for charts and for watching a run change over time. Each
//! point keeps its `rtt` and `ttft` histograms so that merged shards'
//! percentiles are exact, not averaged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::json::{self, ReportError};
use crate::metrics::{ErrorKind, Figure, Interval};

/// One second of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Seconds from the start of the stages to this second's start.
    pub t_s: u64,
    /// Messages the schedule offered in this second (open model; 0 closed).
    pub offered: f64,
    /// Messages sent.
    pub sent: u64,
    /// Acked.
    pub acked: u64,
    /// Refused with `busy`.
    pub busy: u64,
    /// Errors other than `busy`.
    pub errors: u64,
    /// Replies completed.
    pub replied: u64,
    /// Good messages (met every SLO).
    pub good: u64,
    /// Sessions open at the end of the second.
    pub open: u64,
    /// Median `rtt` of the samples recorded in this second, microseconds.
    pub rtt_p50_us: Option<u64>,
    /// 99th percentile of `rtt`.
    pub rtt_p99_us: Option<u64>,
    /// Median `ttft`.
    pub ttft_p50_us: Option<u64>,
    /// 99th percentile of `ttft`.
    pub ttft_p99_us: Option<u64>,
    /// This second's `rtt` histogram (HdrHistogram V2, base64), so that
    /// merged shards' percentiles are exact.
    pub rtt_hdr: String,
    /// This second's `ttft` histogram.
    pub ttft_hdr: String,
}

impl SeriesPoint {
    /// The point of second `t_s`, which offered `offered` messages, measured
    /// `iv`, and ended with `open` sessions.
    pub fn of(t_s: u64, offered: f64, iv: &Interval, open: u64) -> SeriesPoint {
        let c = &iv.counters;
        let q = |f: Figure, p: f64| {
            let h = iv.figure(f);
            (!h.is_empty()).then(|| h.value_at_quantile(p))
        };
        SeriesPoint {
            t_s,
            offered,
            sent: c.sent,
            acked: c.acked,
            busy: c.error(ErrorKind::Busy),
            errors: c.errors_total(),
            replied: c.replied,
            good: c.good,
            open,
            rtt_p50_us: q(Figure::Rtt, 0.5),
            rtt_p99_us: q(Figure::Rtt, 0.99),
            ttft_p50_us: q(Figure::Ttft, 0.5),
            ttft_p99_us: q(Figure::Ttft, 0.99),
            rtt_hdr: json::encode_hdr(iv.figure(Figure::Rtt)),
            ttft_hdr: json::encode_hdr(iv.figure(Figure::Ttft)),
        }
    }

    /// This point's counts and its two histograms as an interval.
    fn to_interval(&self) -> Result<Interval, ReportError> {
        let mut iv = Interval::default();
        for (f, hdr) in [(Figure::Rtt, &self.rtt_hdr), (Figure::Ttft, &self.ttft_hdr)] {
            if hdr.is_empty() {
                continue;
            }
            let h = json::decode_hdr(hdr)?;
            let dst = &mut iv.hist[f.index()];
            for v in h.iter_recorded() {
                dst.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        let c = &mut iv.counters;
        c.sent = self.sent;
        c.acked = self.acked;
        c.replied = self.replied;
        c.good = self.good;
        c.errors[ErrorKind::Busy.index()] = self.busy;
        // Errors other than busy keep their total only: the point does not
        // say which kinds they were.
        c.errors[ErrorKind::OtherServer.index()] = self.errors;
        Ok(iv)
    }
}

/// The series of several shards, second by second: counts and offered load
/// add, percentiles come from the added histograms.
pub fn merge<'a>(
    all: impl IntoIterator<Item = &'a [SeriesPoint]>,
) -> Result<Vec<SeriesPoint>, ReportError> {
    let mut by_second: BTreeMap<u64, (f64, Interval, u64)> = BTreeMap::new();
    for series in all {
        for p in series {
            let e = by_second
                .entry(p.t_s)
                .or_insert_with(|| (0.0, Interval::default(), 0));
            e.0 += p.offered;
            e.1.add(&p.to_interval()?);
            e.2 += p.open;
        }
    }
    Ok(by_second
        .into_iter()
        .map(|(t, (offered, iv, open))| SeriesPoint::of(t, offered, &iv, open))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Recorder;

    fn second(t: u64, rtts: &[u64], busy: u64) -> SeriesPoint {
        let mut r = Recorder::default();
        for &v in rtts {
            r.record(crate::metrics::Mark::Stage(0), Figure::Rtt, v);
        }
        r.counters().sent = rtts.len() as u64 + busy;
        r.counters().acked = rtts.len() as u64;
        for _ in 0..busy {
            r.error(ErrorKind::Busy);
        }
        SeriesPoint::of(t, 10.0, &r.take(), 3)
    }

    #[test]
    fn shards_merge_second_by_second_with_exact_percentiles() {
        let a = vec![second(0, &[100, 200], 1), second(1, &[300], 0)];
        let b = vec![second(1, &[10_000, 20_000, 30_000], 2)];
        let m = merge([a.as_slice(), b.as_slice()]).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].sent, m[0].busy, m[0].open), (3, 1, 3));
        assert_eq!((m[1].sent, m[1].acked, m[1].busy), (6, 4, 2));
        assert_eq!(m[1].offered, 20.0);
        assert_eq!(m[1].open, 6);
        // Median of {300, 10000, 20000, 30000}: an average of the shards'
        // medians (300 and 20000) would say 10150.
        let p50 = m[1].rtt_p50_us.unwrap();
        assert!((9_990..=10_010).contains(&p50), "{p50}");
        assert_eq!(m[1].ttft_p50_us, None);
    }
}
