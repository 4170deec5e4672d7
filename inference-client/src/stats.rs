//! The service's counters and histograms, readable from any thread.
//!
//! Every counter has one writer: the service thread for most, and each
//! [`crate::Client`] (one per gateway worker) for its own `admitted` and
//! `refused`, so an update is a relaxed load and store, never a locked
//! read-modify-write. Readers ([`Stats`]'s accessors, [`Stats::render_prometheus`])
//! sum the per-client blocks under a mutex taken only when a client is
//! created and when the stats are read, never on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (only the owning thread may call this).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge with a single writer.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Relaxed);
    }

    /// Adds `n` (may be negative; only the owning thread may call this).
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed) + n, Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Upper bounds of the histogram buckets, microseconds (a last bucket, +Inf,
/// follows). From 10 µs, for the service's own overhead, to 10 s, for TTFT.
pub const BUCKETS_US: [u64; 19] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A latency histogram with fixed buckets and a single writer.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS_US.len() + 1],
    count: Counter,
    sum_us: Counter,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[i].inc();
        self.count.inc();
        self.sum_us.add(us);
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.buckets.iter().map(Counter::get).collect(),
            count: self.count.get(),
            sum_us: self.sum_us.get(),
        }
    }
}

/// A histogram's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative): `counts[i]` for bucket
    /// `BUCKETS_US[i]`, the last for values above every bound.
    pub counts: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Their sum, microseconds.
    pub sum_us: u64,
}

impl HistogramSnapshot {
    /// The mean, if anything was observed.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(self.sum_us / self.count))
    }

    /// An upper bound of the `q` quantile (0-1): the bound of the bucket it
    /// falls in (`None` if empty or above every bound).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return BUCKETS_US.get(i).map(|&b| Duration::from_micros(b));
            }
        }
        None
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in BUCKETS_US.iter().enumerate() {
            cum += self.counts[i];
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1e6);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// One client's counters: `admitted`, `refused` and `submitted` are written
/// by the client's thread, `received` by the service thread.
#[derive(Debug, Default)]
pub(crate) struct ClientCounters {
    pub(crate) admitted: Counter,
    pub(crate) refused: Counter,
    /// Admissions given back without a request (an [`crate::Admitted`]
    /// dropped unsubmitted). Any thread may drop one, so it is added to
    /// atomically.
    pub(crate) released: AtomicU64,
    /// Generation requests submitted.
    pub(crate) submitted: Counter,
    /// Of those, received by the service thread.
    pub(crate) received: Counter,
}

impl ClientCounters {
    /// Requests admitted and not yet in the service's queue. Counted from
    /// the admission, not the submission: a requester may take a while
    /// between the two (the gateway stores the message first), and requests
    /// admitted meanwhile must see the ones ahead of them.
    pub(crate) fn in_transit(&self) -> u64 {
        self.admitted
            .get()
            .saturating_sub(self.released.load(Relaxed))
            .saturating_sub(self.received.get())
    }
}

/// The service's statistics. Get it from [`crate::Service::stats`].
#[derive(Debug, Default)]
pub struct Stats {
    clients: Mutex<Vec<Arc<ClientCounters>>>,
    /// Requests whose deadline passed (queued or streaming).
    pub expired: Counter,
    /// Requests completed (`Done`).
    pub completed: Counter,
    /// Requests failed for any reason but cancellation and deadline.
    pub failed: Counter,
    /// Requests cancelled by their requester.
    pub cancelled: Counter,
    /// Requests that failed over to another endpoint (one per retry).
    pub failovers: Counter,
    /// Upstream calls made (HTTP requests, or in-process batches).
    pub upstream_calls: Counter,
    /// Sequences sent upstream (over `upstream_calls`: the mean batch size).
    pub upstream_sequences: Counter,
    /// Tokens delivered.
    pub tokens: Counter,
    /// Requests waiting in the service's queue.
    pub queue_depth: Gauge,
    /// Sequences in flight upstream.
    pub in_flight: Gauge,
    /// Sequences the usable endpoints can take in all.
    pub capacity: Gauge,
    /// Endpoints usable now (healthy, breaker not open, not paused).
    pub endpoints_up: Gauge,
    /// Submitted to first token delivered.
    pub ttft: Histogram,
    /// Time a reply spent in the service's own code rather than in the queue
    /// or the pool: the hop from the requester's thread, and from each
    /// network read (or in-process step) to its events handed to the sink,
    /// summed per request.
    pub overhead: Histogram,
    /// Submitted to sent upstream.
    pub queue_wait: Histogram,
    pub(crate) driver: AtomicU8,
}

impl Stats {
    pub(crate) fn register(&self) -> Arc<ClientCounters> {
        let c = Arc::new(ClientCounters::default());
        if let Ok(mut v) = self.clients.lock() {
            v.push(c.clone());
        }
        c
    }

    fn sum(&self, f: impl Fn(&ClientCounters) -> u64) -> u64 {
        self.clients
            .lock()
            .map(|v| v.iter().map(|c| f(c)).sum())
            .unwrap_or(0)
    }

    /// Requests admitted by [`crate::Client::admit`].
    pub fn admitted(&self) -> u64 {
        self.sum(|c| c.admitted.get())
    }

    /// Requests refused by [`crate::Client::admit`] (`busy`).
    pub fn refused(&self) -> u64 {
        self.sum(|c| c.refused.get())
    }

    /// The io driver of the service thread: `io_uring`, `epoll`, or `none`
    /// before it started.
    pub fn driver(&self) -> &'static str {
        match self.driver.load(Relaxed) {
            1 => "io_uring",
            2 => "epoll",
            _ => "none",
        }
    }

    /// Renders everything in the Prometheus text format, names prefixed
    /// `lc_inference_`.
    pub fn render_prometheus(&self, out: &mut String) {
        let counters: [(&str, &str, u64); 10] = [
            ("admitted_total", "Requests admitted.", self.admitted()),
            (
                "refused_total",
                "Requests refused as busy by surge admission.",
                self.refused(),
            ),
            (
                "expired_total",
                "Requests whose deadline passed.",
                self.expired.get(),
            ),
            (
                "completed_total",
                "Requests completed.",
                self.completed.get(),
            ),
            (
                "failed_total",
                "Requests failed (not cancelled, not expired).",
                self.failed.get(),
            ),
            (
                "cancelled_total",
                "Requests cancelled by their requester.",
                self.cancelled.get(),
            ),
            (
                "failovers_total",
                "Retries on another endpoint before the first token.",
                self.failovers.get(),
            ),
            (
                "upstream_calls_total",
                "Upstream calls (HTTP requests or in-process batches).",
                self.upstream_calls.get(),
            ),
            (
                "upstream_sequences_total",
                "Sequences sent upstream.",
                self.upstream_sequences.get(),
            ),
            ("tokens_total", "Tokens delivered.", self.tokens.get()),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP lc_inference_{name} {help}\n# TYPE lc_inference_{name} counter\nlc_inference_{name} {v}"
            );
        }
        let gauges: [(&str, &str, i64); 4] = [
            (
                "queue_depth",
                "Requests waiting in the inference queue.",
                self.queue_depth.get(),
            ),
            (
                "in_flight",
                "Sequences in flight upstream.",
                self.in_flight.get(),
            ),
            (
                "capacity",
                "Sequences the usable endpoints can take.",
                self.capacity.get(),
            ),
            (
                "endpoints_up",
                "Usable inference endpoints.",
                self.endpoints_up.get(),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP lc_inference_{name} {help}\n# TYPE lc_inference_{name} gauge\nlc_inference_{name} {v}"
            );
        }
        self.ttft.snapshot().render(
            "lc_inference_ttft_seconds",
            "Request submitted to first token delivered.",
            out,
        );
        self.overhead.snapshot().render(
            "lc_inference_overhead_seconds",
            "Time a reply spent in the gateway's own inference code, not waiting on the pool.",
            out,
        );
        self.queue_wait.snapshot().render(
            "lc_inference_queue_wait_seconds",
            "Request submitted to sent upstream.",
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        for us in [5, 20, 20, 900, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 2);
        assert_eq!(s.counts[6], 1);
        assert_eq!(s.counts[BUCKETS_US.len()], 1);
        assert_eq!(s.quantile(0.5), Some(Duration::from_micros(25)));
        assert_eq!(s.quantile(0.8), Some(Duration::from_micros(1000)));
        assert_eq!(s.quantile(1.0), None);
        let mut out = String::new();
        s.render("x", "help", &mut out);
        assert!(out.contains("x_bucket{le=\"0.000025\"} 3"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 5"));
    }

    #[test]
    fn client_blocks_are_summed() {
        let s = Stats::default();
        let a = s.register();
        let b = s.register();
        a.admitted.add(2);
        b.admitted.inc();
        b.refused.inc();
        assert_eq!(s.admitted(), 3);
        assert_eq!(s.refused(), 1);
        let mut out = String::new();
        s.render_prometheus(&mut out);
        assert!(out.contains("lc_inference_admitted_total 3"));
        assert!(out.contains("lc_inference_ttft_seconds_count 0"));
    }
}
