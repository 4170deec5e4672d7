//! Surge admission, sans-IO: predict a request's time to first token from
//! the queue and the pool's measured pace, and refuse at once (`busy`, with a
//! retry-after) what would miss the TTFT budget, so that what is admitted
//! keeps its latency however much is offered (goodput over throughput).
//!
//! The prediction for a prompt of `p` tokens joining the queue at position
//! `k` (1-based, counting the requests queued before it), with `C` sequence
//! slots in the usable endpoints, a measured service time `S` per sequence
//! (sent to done), and a measured base TTFT `B` (upstream TTFT less the
//! prompt's prefill):
//!
//! ```text
//! R         = the slots' free times, soonest first: 0 for each free slot,
//!             then (sent + S - now) for each sequence in flight
//! wait(k)   = R[(k-1) mod C] + floor((k-1) / C) * S
//! predicted = max_wait + wait(k) + B + p * prefill_per_token
//! ```
//!
//! That is, the k-th request in line takes the k-th slot to free up, and a
//! slot is taken again for `S` each round. It follows bursts exactly
//! (sequences that started together finish together: a request behind them
//! waits for the whole burst) where an even drain of `C / S` per second would
//! be up to a round too hopeful.
//!
//! A request is refused when `predicted > budget` or the queue is full; its
//! `retry_after` is how far over the budget it was (at least `min_retry`).
//! `S` and `B` are EWMAs the service thread updates as requests finish
//! ([`Estimator`]). After every round of work the service thread publishes a
//! [`Snapshot`] with `wait(k)` for the next [`LOOKAHEAD`] positions into
//! [`Published`] atomics; each gateway worker decides on its own thread from
//! it, counting its own requests not yet received by the service as ahead in
//! line, without a round trip.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Admission settings.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Predicted TTFT above which a request is refused.
    pub ttft_budget: Duration,
    /// Most requests queued in the service.
    pub queue_capacity: usize,
    /// The batcher's wait (added to every prediction).
    pub max_wait: Duration,
    /// Prefill cost per prompt token assumed by the prediction.
    pub prefill_per_token: Duration,
    /// Base TTFT assumed before any is measured.
    pub initial_ttft: Duration,
    /// Service time per sequence assumed before any is measured.
    pub initial_service: Duration,
    /// Weight of a new sample in the EWMAs.
    pub ewma_alpha: f64,
    /// Shortest retry-after given.
    pub min_retry: Duration,
    /// Longest retry-after given.
    pub max_retry: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            ttft_budget: Duration::from_secs(1),
            queue_capacity: 1024,
            max_wait: Duration::from_millis(2),
            prefill_per_token: Duration::from_micros(100),
            initial_ttft: Duration::from_millis(50),
            initial_service: Duration::from_secs(1),
            ewma_alpha: 0.1,
            min_retry: Duration::from_millis(250),
            max_retry: Duration::from_secs(30),
        }
    }
}

/// Queue positions whose wait the service thread publishes.
pub const LOOKAHEAD: usize = 8;

/// The state a decision is made from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Requests queued in the service (not yet sent upstream).
    pub queued: u64,
    /// Sequences in flight upstream.
    pub in_flight: u64,
    /// Sequences the usable endpoints take in all (0: none usable).
    pub capacity: u64,
    /// Measured base TTFT (upstream TTFT less prefill).
    pub base_ttft: Duration,
    /// Measured service time per sequence.
    pub service: Duration,
    /// Wait for a slot of the next [`LOOKAHEAD`] requests to join the queue.
    pub waits: [Duration; LOOKAHEAD],
    /// Requests admitted after the snapshot was published (the client's own
    /// still in transit): ahead in line of the one being decided.
    pub unpublished: u64,
}

/// `wait(k)` for the [`LOOKAHEAD`] positions after `queued`: `running` are
/// the send times of the sequences in flight, oldest first; slots neither
/// free nor accounted for by `running` are taken as just started.
pub fn slot_waits(
    now: Instant,
    service: Duration,
    capacity: usize,
    in_flight: usize,
    running: impl Iterator<Item = Instant>,
    queued: usize,
) -> [Duration; LOOKAHEAD] {
    let mut out = [Duration::ZERO; LOOKAHEAD];
    if capacity == 0 {
        return out;
    }
    let free = capacity.saturating_sub(in_flight);
    let need = (queued + LOOKAHEAD).min(capacity);
    // The slots' free times, soonest first, as far as needed.
    let mut r: Vec<Duration> = Vec::with_capacity(need);
    r.extend(std::iter::repeat_n(Duration::ZERO, free.min(need)));
    r.extend(
        running
            .take(need - r.len())
            .map(|t| (t + service).saturating_duration_since(now)),
    );
    r.resize(need, service);
    for (j, w) in out.iter_mut().enumerate() {
        let k = queued + j; // 0-based position in line
        *w = r[k % capacity] + service * (k / capacity) as u32;
    }
    out
}

/// A refusal: resend after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("over capacity: retry after {retry_after:?}")]
pub struct Busy {
    /// How long the client should wait before resending.
    pub retry_after: Duration,
}

/// Predicted time to first token of a `prompt_tokens` prompt admitted now.
pub fn predict_ttft(s: &Snapshot, prompt_tokens: u32, cfg: &AdmissionConfig) -> Duration {
    let i = s.unpublished as usize;
    let wait = if s.capacity == 0 {
        Duration::ZERO
    } else if i < LOOKAHEAD {
        s.waits[i]
    } else {
        let beyond = (i + 1 - LOOKAHEAD) as f64 / s.capacity as f64;
        s.waits[LOOKAHEAD - 1] + s.service.mul_f64(beyond)
    };
    cfg.max_wait + wait + s.base_ttft + cfg.prefill_per_token * prompt_tokens
}

/// Admits or refuses a request of `prompt_tokens` tokens. With no usable
/// endpoint it admits: the request then fails at once as unavailable (the
/// gateway stores the message and offers a person), which is the answer for
/// a pool that is down rather than busy.
pub fn decide(s: &Snapshot, prompt_tokens: u32, cfg: &AdmissionConfig) -> Result<(), Busy> {
    let clamp = |d: Duration| d.clamp(cfg.min_retry, cfg.max_retry);
    if s.capacity == 0 {
        return Ok(());
    }
    let queued = s.queued + s.unpublished;
    if queued >= cfg.queue_capacity as u64 {
        let over = queued + 1 - cfg.queue_capacity as u64;
        return Err(Busy {
            retry_after: clamp(s.service.mul_f64(over as f64 / s.capacity as f64)),
        });
    }
    let predicted = predict_ttft(s, prompt_tokens, cfg);
    if predicted > cfg.ttft_budget {
        return Err(Busy {
            retry_after: clamp(predicted - cfg.ttft_budget),
        });
    }
    Ok(())
}

/// The EWMAs of base TTFT and service time, fed by finished requests.
#[derive(Debug, Clone)]
pub struct Estimator {
    base_ttft: Duration,
    service: Duration,
    prefill_per_token: Duration,
    alpha: f64,
}

impl Estimator {
    /// Starting from the configured priors.
    pub fn new(cfg: &AdmissionConfig) -> Self {
        Estimator {
            base_ttft: cfg.initial_ttft,
            service: cfg.initial_service,
            prefill_per_token: cfg.prefill_per_token,
            alpha: cfg.ewma_alpha.clamp(0.0, 1.0),
        }
    }

    fn mix(&self, old: Duration, new: Duration) -> Duration {
        old.mul_f64(1.0 - self.alpha) + new.mul_f64(self.alpha)
    }

    /// A first token arrived `upstream_ttft` after the request (of
    /// `prompt_tokens` tokens) was sent.
    pub fn observe_ttft(&mut self, upstream_ttft: Duration, prompt_tokens: u32) {
        let base = upstream_ttft.saturating_sub(self.prefill_per_token * prompt_tokens);
        self.base_ttft = self.mix(self.base_ttft, base);
    }

    /// A sequence finished `service` after it was sent.
    pub fn observe_service(&mut self, service: Duration) {
        self.service = self.mix(self.service, service);
    }

    /// Current base TTFT.
    pub fn base_ttft(&self) -> Duration {
        self.base_ttft
    }

    /// Current service time.
    pub fn service(&self) -> Duration {
        self.service
    }
}

/// A [`Snapshot`] in atomics: written by the service thread, read by every
/// worker. (Fields are read one by one: a reader may mix two consecutive
/// snapshots, which only blurs an estimate.)
#[derive(Debug, Default)]
pub struct Published {
    queued: AtomicU64,
    in_flight: AtomicU64,
    capacity: AtomicU64,
    base_ttft_ns: AtomicU64,
    service_ns: AtomicU64,
    waits_ns: [AtomicU64; LOOKAHEAD],
}

impl Published {
    /// Publishes a snapshot (service thread only).
    pub fn store(&self, s: &Snapshot) {
        let ns = |d: Duration| d.as_nanos().min(u64::MAX as u128) as u64;
        self.queued.store(s.queued, Relaxed);
        self.in_flight.store(s.in_flight, Relaxed);
        self.capacity.store(s.capacity, Relaxed);
        self.base_ttft_ns.store(ns(s.base_ttft), Relaxed);
        self.service_ns.store(ns(s.service), Relaxed);
        for (a, w) in self.waits_ns.iter().zip(s.waits) {
            a.store(ns(w), Relaxed);
        }
    }

    /// The last snapshot published.
    pub fn load(&self) -> Snapshot {
        let mut waits = [Duration::ZERO; LOOKAHEAD];
        for (w, a) in waits.iter_mut().zip(&self.waits_ns) {
            *w = Duration::from_nanos(a.load(Relaxed));
        }
        Snapshot {
            queued: self.queued.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            capacity: self.capacity.load(Relaxed),
            base_ttft: Duration::from_nanos(self.base_ttft_ns.load(Relaxed)),
            service: Duration::from_nanos(self.service_ns.load(Relaxed)),
            waits,
            unpublished: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg() -> AdmissionConfig {
        AdmissionConfig {
            max_wait: ms(2),
            prefill_per_token: Duration::from_micros(100),
            ..Default::default()
        }
    }

    /// 64 slots, service 1.6 s; `in_flight` sequences sent evenly over the
    /// last 1.6 s (one every 25 ms), so a slot frees every 25 ms.
    fn snap(queued: u64, in_flight: u64) -> Snapshot {
        let now = Instant::now();
        let service = ms(1600);
        let sent: Vec<Instant> = (0..in_flight)
            .rev()
            .map(|i| now - ms(25) * (i as u32 + 1) + ms(25))
            .collect();
        Snapshot {
            queued,
            in_flight,
            capacity: 64,
            base_ttft: ms(20),
            service,
            waits: slot_waits(
                now,
                service,
                64,
                in_flight as usize,
                sent.into_iter(),
                queued as usize,
            ),
            unpublished: 0,
        }
    }

    #[test]
    fn idle_pool_predicts_prefill_plus_base() {
        let p = predict_ttft(&snap(0, 0), 500, &cfg());
        assert_eq!(p, ms(2 + 20 + 50));
        assert!(decide(&snap(0, 0), 500, &cfg()).is_ok());
    }

    #[test]
    fn free_slots_absorb_the_queue() {
        assert_eq!(predict_ttft(&snap(9, 54), 0, &cfg()), ms(22));
        // Full: the 1st in line waits for the oldest (due in 25 ms).
        assert_eq!(predict_ttft(&snap(0, 64), 0, &cfg()), ms(22 + 25));
        assert_eq!(predict_ttft(&snap(10, 64), 0, &cfg()), ms(22 + 11 * 25));
        // A full round later: the slot freed first, taken again for 1.6 s.
        assert_eq!(predict_ttft(&snap(64, 64), 0, &cfg()), ms(22 + 25 + 1600));
    }

    #[test]
    fn bursts_wait_for_the_whole_burst() {
        // 16 slots: one sequence almost done, 15 sent together just now.
        let now = Instant::now();
        let s = ms(744);
        let mut sent = vec![now - ms(732)];
        sent.extend(std::iter::repeat_n(now, 15));
        let w = slot_waits(now, s, 16, 16, sent.into_iter(), 18);
        // Position 19 waits for a slot of the burst, then a whole round.
        assert_eq!(w[0], ms(744) + ms(744));
        // The old sequence's slot came back around at position 17.
        let sent2 = vec![now - ms(732)]
            .into_iter()
            .chain(std::iter::repeat_n(now, 15));
        let w = slot_waits(now, s, 16, 16, sent2, 16);
        assert_eq!(w[0], ms(12) + ms(744));
        assert_eq!(w[1], ms(744) + ms(744));
    }

    #[test]
    fn unaccounted_slots_count_as_just_started() {
        let now = Instant::now();
        let w = slot_waits(now, ms(100), 4, 4, std::iter::empty(), 0);
        assert_eq!(w[..5], [ms(100), ms(100), ms(100), ms(100), ms(200)]);
    }

    #[test]
    fn refuses_what_would_miss_the_budget() {
        // 22 ms + k * 25 ms <= 1000 ms while k <= 39.
        assert!(decide(&snap(38, 64), 0, &cfg()).is_ok());
        let busy = decide(&snap(39, 64), 0, &cfg()).unwrap_err();
        assert_eq!(busy.retry_after, ms(250), "clamped up to min_retry");
        // A long prompt misses where a short one fits.
        assert!(decide(&snap(30, 64), 0, &cfg()).is_ok());
        assert!(decide(&snap(30, 64), 3000, &cfg()).is_err());
        let busy = decide(&snap(63, 64), 0, &cfg()).unwrap_err();
        assert_eq!(busy.retry_after, ms(22 + 64 * 25 - 1000));
    }

    #[test]
    fn requests_in_transit_are_ahead_in_line() {
        let mut s = snap(0, 64);
        s.unpublished = 3;
        assert_eq!(predict_ttft(&s, 0, &cfg()), ms(22 + 4 * 25));
        // Past the published positions, the even drain extrapolates.
        s.unpublished = 10;
        assert_eq!(predict_ttft(&s, 0, &cfg()), ms(22 + 8 * 25 + 3 * 25));
    }

    #[test]
    fn full_queue_refuses_and_no_capacity_admits() {
        let c = AdmissionConfig {
            queue_capacity: 4,
            ttft_budget: Duration::from_secs(100),
            ..cfg()
        };
        assert!(decide(&snap(3, 0), 0, &c).is_ok());
        assert!(decide(&snap(4, 0), 0, &c).is_err());
        let mut down = snap(1000, 0);
        down.capacity = 0;
        assert!(decide(&down, 0, &c).is_ok(), "down, not busy");
    }

    #[test]
    fn estimator_moves_towards_samples() {
        let c = AdmissionConfig {
            ewma_alpha: 0.5,
            initial_ttft: ms(100),
            initial_service: ms(1000),
            ..cfg()
        };
        let mut e = Estimator::new(&c);
        e.observe_ttft(ms(70), 500); // base 20 ms
        assert_eq!(e.base_ttft(), ms(60));
        e.observe_service(ms(2000));
        assert_eq!(e.service(), ms(1500));
        let p = Published::default();
        let s = snap(1, 2);
        p.store(&s);
        assert_eq!(p.load(), s);
    }
}
