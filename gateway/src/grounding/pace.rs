//! How fast the retrieval threads ground questions, so that admission can
//! count the wait a grounded answer has before it reaches the inference
//! service: the questions already in line, and the search itself.
//!
//! The retrieval threads write it once per batch; every worker reads it when
//! it decides admission. Relaxed atomics: a reader may mix two consecutive
//! batches' figures, which only blurs an estimate.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Weight of a new batch in the averages.
const ALPHA: f64 = 0.2;

/// The retrieval threads' measured pace.
#[derive(Debug, Default)]
pub struct RetrievalPace {
    /// Average time of a batch, nanoseconds.
    batch_ns: AtomicU64,
    /// Average time per question in a batch, nanoseconds.
    item_ns: AtomicU64,
}

impl RetrievalPace {
    /// A batch of `n` questions took `took`.
    pub fn observe(&self, n: usize, took: Duration) {
        let took = took.as_nanos().min(u64::MAX as u128) as f64;
        let per = took / n.max(1) as f64;
        let mix = |a: &AtomicU64, v: f64| {
            let old = a.load(Relaxed);
            let new = if old == 0 {
                v
            } else {
                old as f64 * (1.0 - ALPHA) + v * ALPHA
            };
            a.store(new as u64, Relaxed);
        };
        mix(&self.batch_ns, took);
        mix(&self.item_ns, per);
    }

    /// The wait of a question joining `queued` others in line with
    /// `threads` retrieval threads: the batch under way, then the questions
    /// ahead shared among the threads, then its own.
    pub fn predict(&self, queued: usize, threads: usize) -> Duration {
        let batch = self.batch_ns.load(Relaxed);
        let item = self.item_ns.load(Relaxed);
        let ahead = (queued as u64).div_ceil(threads.max(1) as u64);
        Duration::from_nanos(batch.saturating_add(item.saturating_mul(ahead + 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicts_the_line_and_the_search() {
        let p = RetrievalPace::default();
        assert_eq!(p.predict(10, 1), Duration::ZERO, "nothing measured yet");
        // A batch of 4 in 40 ms: 10 ms a question.
        p.observe(4, Duration::from_millis(40));
        assert_eq!(p.predict(0, 1), Duration::from_millis(50));
        assert_eq!(p.predict(10, 1), Duration::from_millis(150));
        assert_eq!(p.predict(10, 2), Duration::from_millis(100));
        // Later batches move it a fifth of the way.
        p.observe(1, Duration::from_millis(90));
        assert_eq!(p.predict(0, 1), Duration::from_millis(50 + 10 + 16));
    }
}
