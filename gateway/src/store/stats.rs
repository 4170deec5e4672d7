//! Counters and histograms the gateway exports: plain atomics, read with
//! relaxed loads whenever `/metrics` is scraped.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets in microseconds (the gateway's
/// `metrics::LATENCY_BUCKETS_US`); a last bucket counts what is above.
pub use crate::metrics::LATENCY_BUCKETS_US;

/// Upper bounds of the batch size buckets (writes per transaction); a last
/// bucket counts what is above.
pub const BATCH_BUCKETS: [u64; 11] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Counts per bucket of [`LATENCY_BUCKETS_US`] (not cumulative); the last
    /// entry counts observations above the last bound.
    pub buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// Observations.
    pub count: AtomicU64,
    /// Sum of the observations in microseconds.
    pub sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// The bucket counts now.
    pub fn snapshot(&self) -> [u64; LATENCY_BUCKETS_US.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Relaxed))
    }

    /// The upper bound of the bucket holding quantile `q` (0 to 1), in
    /// microseconds; `u64::MAX` when it is above the last bound; 0 when empty.
    pub fn quantile_bound_us(&self, q: f64) -> u64 {
        let counts = self.snapshot();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return LATENCY_BUCKETS_US.get(i).copied().unwrap_or(u64::MAX);
            }
        }
        u64::MAX
    }
}

/// The store's counters. Written by the store's threads (queue depths also by
/// the handles), read by anyone.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Transactions committed (a batch is one; a batch retried write by write is one per write).
    pub commits: AtomicU64,
    /// Writes stored (including resends found already stored); a
    /// `write_many` counts once.
    pub writes: AtomicU64,
    /// Visitor items found already stored (resends), reported as success.
    pub duplicates: AtomicU64,
    /// Writes that failed (their `done` got the error).
    pub write_errors: AtomicU64,
    /// Batches whose transaction failed and were retried write by write.
    pub batch_retries: AtomicU64,
    /// Batch sizes: counts per bucket of [`BATCH_BUCKETS`] (not cumulative),
    /// the last entry counting batches above the last bound.
    pub batch_sizes: [AtomicU64; BATCH_BUCKETS.len() + 1],
    /// Time from `BEGIN` to the end of `COMMIT` of each transaction (the WAL
    /// sync in `Full` mode is in it).
    pub commit_latency: LatencyHistogram,
    /// Time from [`super::StoreHandle::write`] to the write's `done` being
    /// called: what an `ack` waits for the store.
    pub ack_latency: LatencyHistogram,
    /// Writes queued and not yet taken by the writer thread.
    pub queue_depth: AtomicI64,
    /// Checkpoints run by the checkpoint thread, beside the writer.
    pub checkpoints: AtomicU64,
    /// Time each of those took.
    pub checkpoint_latency: LatencyHistogram,
    /// Checkpoints the writer ran itself, commits waiting meanwhile: to
    /// restart a long WAL once the checkpoint thread has caught up, or
    /// because the WAL grew past 16 intervals (the checkpoint thread fell behind).
    pub writer_checkpoints: AtomicU64,
    /// Time each of those took.
    pub writer_checkpoint_latency: LatencyHistogram,
    /// Reads answered (with data or with an error).
    pub reads: AtomicU64,
    /// Reads that failed.
    pub read_errors: AtomicU64,
    /// Reads queued and not yet taken by a reader thread.
    pub read_queue_depth: AtomicI64,
    /// Time from the read's request to its answer.
    pub read_latency: LatencyHistogram,
}

impl StoreStats {
    /// Records one committed batch of `n` writes.
    pub(crate) fn observe_batch(&self, n: usize) {
        let n = n as u64;
        let i = BATCH_BUCKETS
            .iter()
            .position(|&b| n <= b)
            .unwrap_or(BATCH_BUCKETS.len());
        self.batch_sizes[i].fetch_add(1, Relaxed);
    }

    /// Average writes per commit so far.
    pub fn mean_batch(&self) -> f64 {
        let commits = self.commits.load(Relaxed);
        if commits == 0 {
            return 0.0;
        }
        (self.writes.load(Relaxed) + self.write_errors.load(Relaxed)) as f64 / commits as f64
    }
}
