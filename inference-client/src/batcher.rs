//! The dynamic batcher, sans-IO: a bounded FIFO of requests from every
//! gateway worker that releases a batch once `max_batch` requests wait or the
//! oldest has waited `max_wait`, as far as the chosen endpoint has room.
//! Time is the caller's `now`; [`Batcher::next_wake`] says when to look again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The queue is at its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batch queue is full")]
pub struct QueueFull;

/// Batcher settings.
#[derive(Debug, Clone, Copy)]
pub struct BatcherConfig {
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Longest the oldest request waits for a batch to fill.
    pub max_wait: Duration,
    /// Most requests queued.
    pub capacity: usize,
}

/// A FIFO of requests (by key) forming batches.
#[derive(Debug)]
pub struct Batcher<K> {
    cfg: BatcherConfig,
    queue: VecDeque<(K, Instant)>,
}

impl<K: Copy + Eq> Batcher<K> {
    /// An empty batcher.
    pub fn new(cfg: BatcherConfig) -> Self {
        Batcher {
            cfg: BatcherConfig {
                max_batch: cfg.max_batch.max(1),
                ..cfg
            },
            queue: VecDeque::new(),
        }
    }

    /// Requests queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The oldest request.
    pub fn front(&self) -> Option<K> {
        self.queue.front().map(|(k, _)| *k)
    }

    /// Queues a request arriving at `now`.
    pub fn push(&mut self, key: K, now: Instant) -> Result<(), QueueFull> {
        if self.queue.len() >= self.cfg.capacity {
            return Err(QueueFull);
        }
        self.queue.push_back((key, now));
        Ok(())
    }

    /// Puts a request back at the head (a retry), keeping its original
    /// arrival time; the capacity does not apply.
    pub fn push_front(&mut self, key: K, since: Instant) {
        self.queue.push_front((key, since));
    }

    /// Removes a request (cancelled or expired); true if it was queued.
    pub fn remove(&mut self, key: K) -> bool {
        match self.queue.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                self.queue.remove(i);
                true
            }
            None => false,
        }
    }

    /// Whether a batch is due: `max_batch` wait, or the oldest has waited
    /// `max_wait`.
    pub fn ready(&self, now: Instant) -> bool {
        match self.queue.front() {
            None => false,
            Some((_, since)) => {
                self.queue.len() >= self.cfg.max_batch || now >= *since + self.cfg.max_wait
            }
        }
    }

    /// Takes the next batch if one is due: up to `room` (and `max_batch`)
    /// requests that `fits` accepts, oldest first; the others keep their
    /// places.
    pub fn take(&mut self, now: Instant, room: usize, fits: impl Fn(K) -> bool) -> Vec<K> {
        let n = room.min(self.cfg.max_batch);
        if n == 0 || !self.ready(now) {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(n.min(self.queue.len()));
        let mut i = 0;
        while i < self.queue.len() && out.len() < n {
            if fits(self.queue[i].0) {
                if let Some((k, _)) = self.queue.remove(i) {
                    out.push(k);
                }
            } else {
                i += 1;
            }
        }
        out
    }

    /// When a batch falls due by waiting (`None` if empty or due already by
    /// size).
    pub fn next_wake(&self) -> Option<Instant> {
        if self.queue.len() >= self.cfg.max_batch {
            return None;
        }
        self.queue
            .front()
            .map(|(_, since)| *since + self.cfg.max_wait)
    }

    /// Empties the queue.
    pub fn drain(&mut self) -> impl Iterator<Item = K> + '_ {
        self.queue.drain(..).map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_batch: usize, wait_ms: u64, capacity: usize) -> BatcherConfig {
        BatcherConfig {
            max_batch,
            max_wait: Duration::from_millis(wait_ms),
            capacity,
        }
    }

    #[test]
    fn releases_on_size_or_wait() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(3, 5, 10));
        b.push(1, t0).unwrap();
        b.push(2, t0 + Duration::from_millis(1)).unwrap();
        assert!(!b.ready(t0 + Duration::from_millis(4)));
        assert!(b.take(t0, 10, |_| true).is_empty());
        assert_eq!(b.next_wake(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(b.take(t0 + Duration::from_millis(5), 10, |_| true), [1, 2]);
        assert!(b.is_empty());
        assert_eq!(b.next_wake(), None);
        for k in 3..=6 {
            b.push(k, t0).unwrap();
        }
        assert!(b.ready(t0), "full batch waits for nothing");
        assert_eq!(b.next_wake(), None);
        assert_eq!(b.take(t0, 10, |_| true), [3, 4, 5]);
        assert_eq!(
            b.take(t0, 10, |_| true),
            Vec::<i32>::new(),
            "one left, not due"
        );
    }

    #[test]
    fn room_and_fit_limit_the_batch() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(8, 0, 10));
        for k in 1..=6 {
            b.push(k, t0).unwrap();
        }
        assert_eq!(b.take(t0, 2, |_| true), [1, 2]);
        assert_eq!(b.take(t0, 0, |_| true), Vec::<i32>::new());
        assert_eq!(b.take(t0, 8, |k| k % 2 == 0), [4, 6]);
        assert_eq!(b.front(), Some(3));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn capacity_remove_and_retry_at_front() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(4, 10, 2));
        b.push(1, t0).unwrap();
        b.push(2, t0).unwrap();
        assert_eq!(b.push(3, t0), Err(QueueFull));
        assert!(b.remove(1));
        assert!(!b.remove(1));
        b.push_front(9, t0 - Duration::from_millis(50));
        assert!(b.ready(t0), "a retry keeps its age");
        assert_eq!(b.take(t0, 4, |_| true), [9, 2]);
        b.push(5, t0).unwrap();
        assert_eq!(b.drain().collect::<Vec<_>>(), [5]);
    }
}
