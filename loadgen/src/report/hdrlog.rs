//! `--hdr-log FILE`: one histogram per figure per second in HdrHistogram's
//! interval log format (as Java's `HistogramLogWriter` writes and
//! `HistogramLogProcessor` reads), each line tagged with its figure.
//! Values are microseconds; `Interval_Max` is in milliseconds.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::{Figure, Interval};

use super::json::encode_hdr;

/// Writes an interval log as intervals arrive.
pub struct HdrLog<W: Write> {
    w: W,
}

impl<W: Write> HdrLog<W> {
    /// Writes the header; interval timestamps are seconds after `start`.
    pub fn new(mut w: W, start: SystemTime) -> io::Result<HdrLog<W>> {
        let t = start
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        writeln!(w, "#[Logged with loadgen {}]", env!("CARGO_PKG_VERSION"))?;
        writeln!(w, "#[Histogram log format version 1.3]")?;
        writeln!(w, "#[Values in microseconds; Interval_Max in milliseconds; tags: connect rtt ttft itl reply]")?;
        writeln!(w, "#[StartTime: {t:.3} (seconds since epoch)]")?;
        writeln!(w, "#[BaseTime: {t:.3} (seconds since epoch)]")?;
        writeln!(w, "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"")?;
        Ok(HdrLog { w })
    }

    /// Writes one line per figure with samples in `iv`, which covers `len`
    /// seconds from `offset` seconds after the start.
    pub fn interval(&mut self, offset: f64, len: f64, iv: &Interval) -> io::Result<()> {
        for f in Figure::ALL {
            let h = iv.figure(f);
            if h.is_empty() {
                continue;
            }
            writeln!(
                self.w,
                "Tag={},{:.3},{:.3},{:.3},{}",
                f.name(),
                offset,
                len,
                h.max() as f64 / 1000.0,
                encode_hdr(h)
            )?;
        }
        self.w.flush()
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Recorder;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn the_reference_reader_reads_it_back() {
        let mut log = HdrLog::new(Vec::new(), SystemTime::now()).unwrap();
        for s in 0..3u64 {
            let mut r = Recorder::default();
            r.record(crate::metrics::Mark::Stage(0), Figure::Rtt, 100 * (s + 1));
            r.record(crate::metrics::Mark::Stage(0), Figure::Ttft, 500_000);
            log.interval(s as f64, 1.0, &r.take()).unwrap();
        }
        let bytes = log.into_inner();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\n\"StartTimestamp\""));
        let mut tags = Vec::new();
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                tags.push(h.tag().map(|t| t.as_str().to_string()).unwrap_or_default());
                let hist = crate::report::json::decode_hdr(h.encoded_histogram()).unwrap();
                assert_eq!(hist.len(), 1);
            }
        }
        assert_eq!(tags, ["rtt", "ttft", "rtt", "ttft", "rtt", "ttft"]);
    }
}
