//! Surge admission, sans-IO: predict a request's time to first token from
//! the state of the pool, refuse at once (`busy`) what would miss the TTFT
//! budget, and give each refusal an honest time to come back, so that what
//! is admitted keeps its latency however much is offered (goodput over
//! throughput).
//!
//! # The prediction
//!
//! For a prompt of `p` tokens joining the line at position `k` (1-based,
//! counting the requests ahead of it), with `C` sequence slots in the usable
//! endpoints, a measured service time `S` per sequence (sent to done), `P`
//! prompt tokens ahead of it still to be prefilled (queued here, or sent and
//! without a first token yet), a prefill cost `f` per token, a measured base
//! TTFT `B` (upstream TTFT less the prefill it waited for), and `pre` the
//! caller's own stages before it submits (the store's commit, retrieval):
//!
//! ```text
//! R         = the slots' free times, soonest first: 0 for each free slot,
//!             then (sent + S - now) for each sequence in flight
//! slot(k)   = R[(k-1) mod C] + floor((k-1) / C) * S
//! prefill   = (P + (k-1 unpublished) * p) * f
//! predicted = max_wait + pre + max(slot(k), prefill) + B + p * f
//! ```
//!
//! Two resources bound a server: its KV slots (`slot`, which follows bursts
//! exactly: sequences that started together finish together) and its
//! compute for prefill, which every new prompt shares (`prefill`: a server
//! prefills prompts one after another, so a request waits for the prompts
//! ahead of it whether or not a slot is free). Both are read from the state,
//! not learned, so the prediction falls as soon as the pool drains.
//!
//! # Estimates that cannot lock admission out
//!
//! `S` and `B` are averages the service thread updates as requests finish
//! ([`Estimator`]), weighted by time: a sample after a long silence replaces
//! what was learned before instead of nudging it, so a surge's inflated
//! estimate does not outlive the surge. And an idle pool (nothing queued or
//! in flight, no reservation due) always admits: an estimate fed only by
//! admitted requests must keep being fed.
//!
//! What the model misses (the CPU the gateway's own stages share with
//! everything else, a server's scheduling) is learned as a bias: each first
//! token's lateness against the prediction made when it was admitted moves a
//! correction added to every prediction (never below zero, at most half the
//! budget), and the correction fades with silence like the averages.
//!
//! # Honest retry-after: places in line
//!
//! A refusal books a place in a virtual line ([`Places`]): the earliest time
//! at or after the predicted excess when the pool frees room, spaced from
//! the places booked before it by the pool's measured pace (`interval`, the
//! time between two sequences' worth of room). `retry_after` is that time.
//! A resend that comes back holding its place is judged without the line
//! ahead of it; a fresh request counts the places due within the budget as
//! ahead of it, weighted by the share of places whose holders did come back
//! (`show_rate`: clients that never resend do not keep room empty). Beyond
//! `max_retry` no place is booked; the refusal then says `max_retry`.
//!
//! After every round of work the service thread publishes a [`Snapshot`]
//! into [`Published`] atomics; each gateway worker decides on its own thread
//! from it, counting its own requests not yet received by the service as
//! ahead in line, without a round trip.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
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
    /// Weight of a new sample in the averages when samples come close
    /// together.
    pub ewma_alpha: f64,
    /// How long the averages remember: a sample this long after the one
    /// before keeps only about a third of the old value's weight.
    pub memory: Duration,
    /// Shortest retry-after given.
    pub min_retry: Duration,
    /// Longest retry-after given, and the furthest place booked.
    pub max_retry: Duration,
    /// How late a resend may come after its place and still hold it.
    pub place_grace: Duration,
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
            memory: Duration::from_secs(10),
            min_retry: Duration::from_millis(250),
            max_retry: Duration::from_secs(30),
            place_grace: Duration::from_secs(2),
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
    /// Measured base TTFT (upstream TTFT less the prefill it waited for).
    pub base_ttft: Duration,
    /// Measured service time per sequence.
    pub service: Duration,
    /// Wait for a slot of the next [`LOOKAHEAD`] requests to join the queue.
    pub waits: [Duration; LOOKAHEAD],
    /// Prompt tokens still to be prefilled: queued in the service, or sent
    /// upstream without a first token yet.
    pub prefill_ahead: u64,
    /// Between two places in line at the pool's measured pace.
    pub interval: Duration,
    /// Share of booked places whose holders came back, in thousandths.
    pub show_permille: u32,
    /// How far recent first tokens came after their prediction,
    /// nanoseconds (negative: before), added to every prediction.
    pub bias_ns: i64,
    /// Requests admitted after the snapshot was published (the client's own
    /// still in transit): ahead in line of the one being decided.
    pub unpublished: u64,
}

impl Snapshot {
    /// Nothing queued, in transit or in flight: an idle pool admits.
    pub fn idle(&self) -> bool {
        self.queued == 0 && self.unpublished == 0 && self.in_flight == 0 && self.prefill_ahead == 0
    }
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
    /// A place in line was booked for a resend at `retry_after`: a resend
    /// then (up to [`AdmissionConfig::place_grace`] late) holds it.
    pub place: bool,
}

/// What admission is asked about one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// The prompt's size in tokens.
    pub prompt_tokens: u32,
    /// The caller's own stages before it submits the request (the store's
    /// commit, the knowledge base's retrieval and its queue).
    pub before_submit: Duration,
    /// A resend holding the place an earlier refusal booked, now due.
    pub holds_place: bool,
}

impl Ask {
    /// A request of `prompt_tokens` tokens with nothing before it.
    pub fn tokens(prompt_tokens: u32) -> Self {
        Ask {
            prompt_tokens,
            ..Default::default()
        }
    }
}

/// `d * n`, saturating.
fn times(d: Duration, n: u64) -> Duration {
    let ns = d.as_nanos().saturating_mul(n as u128).min(u64::MAX as u128);
    Duration::from_nanos(ns as u64)
}

/// Predicted time to first token of a request admitted now.
pub fn predict_ttft(s: &Snapshot, ask: &Ask, cfg: &AdmissionConfig) -> Duration {
    let i = s.unpublished as usize;
    let slot = if s.capacity == 0 {
        Duration::ZERO
    } else if i < LOOKAHEAD {
        s.waits[i]
    } else {
        let beyond = (i + 1 - LOOKAHEAD) as f64 / s.capacity as f64;
        s.waits[LOOKAHEAD - 1] + s.service.mul_f64(beyond)
    };
    let ahead = s
        .prefill_ahead
        .saturating_add(s.unpublished.saturating_mul(ask.prompt_tokens as u64));
    let prefill = times(cfg.prefill_per_token, ahead);
    let p = cfg.max_wait
        + ask.before_submit
        + slot.max(prefill)
        + s.base_ttft
        + times(cfg.prefill_per_token, ask.prompt_tokens as u64);
    // The correction is bounded: a model that is far off is a model to fix,
    // not one to lean on.
    let limit = (cfg.ttft_budget / 2).as_nanos().min(i64::MAX as u128) as i64;
    let bias = s.bias_ns.clamp(-limit, limit);
    if bias >= 0 {
        p + Duration::from_nanos(bias as u64)
    } else {
        p.saturating_sub(Duration::from_nanos(bias.unsigned_abs()))
    }
}

/// Admits a request with its predicted time to first token, or says by how
/// much it would miss the budget. `line` is the time the places booked ahead
/// of it take (zero for a resend holding its own). With no usable endpoint it
/// admits: the request then fails at once as unavailable (the gateway stores
/// the message and offers a person), which is the answer for a pool that is
/// down rather than busy.
pub fn decide(
    s: &Snapshot,
    ask: &Ask,
    line: Duration,
    cfg: &AdmissionConfig,
) -> Result<Duration, Duration> {
    let queued = s.queued + s.unpublished;
    if s.capacity > 0 && queued >= cfg.queue_capacity as u64 {
        let over = queued + 1 - cfg.queue_capacity as u64;
        return Err(s.service.mul_f64(over as f64 / s.capacity as f64));
    }
    let predicted = predict_ttft(s, ask, cfg);
    if s.capacity == 0 || (s.idle() && line.is_zero()) {
        return Ok(predicted);
    }
    if predicted + line > cfg.ttft_budget {
        return Err(predicted + line - cfg.ttft_budget);
    }
    Ok(predicted)
}

/// The virtual line of places booked by refusals, shared by every worker
/// (lock-free: a place is booked with one compare-and-swap).
#[derive(Debug)]
pub struct Places {
    epoch: Instant,
    /// The first time not yet booked, in nanoseconds from `epoch`.
    next_ns: AtomicU64,
    booked: AtomicU64,
    redeemed: AtomicU64,
}

impl Default for Places {
    fn default() -> Self {
        Places::new(Instant::now())
    }
}

impl Places {
    /// An empty line; times are kept relative to `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Places {
            epoch,
            next_ns: AtomicU64::new(0),
            booked: AtomicU64::new(0),
            redeemed: AtomicU64::new(0),
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u64::MAX as u128) as u64
    }

    /// How much of the line lies ahead of `now`, at most `horizon`.
    pub fn ahead(&self, now: Instant, horizon: Duration) -> Duration {
        let next = self.next_ns.load(Relaxed);
        Duration::from_nanos(next.saturating_sub(self.ns(now))).min(horizon)
    }

    /// Books the first place at or after `earliest` and at least `interval`
    /// after the last one booked; `None` (nothing booked) when that is
    /// further than `horizon` from `now`.
    pub fn book(
        &self,
        now: Instant,
        earliest: Instant,
        interval: Duration,
        horizon: Duration,
    ) -> Option<Instant> {
        let earliest = self.ns(earliest);
        let limit = self.ns(now).saturating_add(horizon.as_nanos() as u64);
        let step = interval.as_nanos().max(1) as u64;
        let mut cur = self.next_ns.load(Relaxed);
        loop {
            let at = cur.max(earliest);
            if at > limit {
                return None;
            }
            match self
                .next_ns
                .compare_exchange_weak(cur, at + step, Relaxed, Relaxed)
            {
                Ok(_) => {
                    self.booked.fetch_add(1, Relaxed);
                    return Some(self.epoch + Duration::from_nanos(at));
                }
                Err(seen) => cur = seen,
            }
        }
    }

    /// A resend came back holding its place.
    pub fn redeem(&self) {
        self.redeemed.fetch_add(1, Relaxed);
    }

    /// Places booked and redeemed so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.booked.load(Relaxed), self.redeemed.load(Relaxed))
    }
}

/// The share of places whose holders come back, learned over windows of
/// bookings (the service thread keeps it; it starts at one half).
#[derive(Debug, Clone)]
pub struct ShowRate {
    permille: u32,
    last: (u64, u64),
}

impl Default for ShowRate {
    fn default() -> Self {
        ShowRate {
            permille: 500,
            last: (0, 0),
        }
    }
}

impl ShowRate {
    /// Bookings a window needs before it moves the rate.
    const WINDOW: u64 = 20;

    /// Takes the line's counts; returns the rate in thousandths.
    pub fn update(&mut self, (booked, redeemed): (u64, u64)) -> u32 {
        let db = booked.saturating_sub(self.last.0);
        if db >= Self::WINDOW {
            let dr = redeemed.saturating_sub(self.last.1);
            let sample = (dr.min(db) * 1000 / db) as u32;
            self.permille = (self.permille + sample) / 2;
            self.last = (booked, redeemed);
        }
        self.permille
    }
}

/// The averages of base TTFT, service time and prompt size, fed by
/// finished requests and weighted by time ([`AdmissionConfig::memory`]).
#[derive(Debug, Clone)]
pub struct Estimator {
    base_ttft: Duration,
    service: Duration,
    prompt_tokens: f64,
    prefill_per_token: Duration,
    alpha: f64,
    memory: Duration,
    last_ttft: Option<Instant>,
    last_service: Option<Instant>,
    last_prompt: Option<Instant>,
    /// The prediction's measured error, seconds (see [`Estimator::observe_error`]).
    bias: f64,
    last_error: Option<Instant>,
}

impl Estimator {
    /// Starting from the configured priors.
    pub fn new(cfg: &AdmissionConfig) -> Self {
        Estimator {
            base_ttft: cfg.initial_ttft,
            service: cfg.initial_service,
            prompt_tokens: 0.0,
            prefill_per_token: cfg.prefill_per_token,
            alpha: cfg.ewma_alpha.clamp(0.0, 1.0),
            memory: cfg.memory.max(Duration::from_millis(1)),
            last_ttft: None,
            last_service: None,
            last_prompt: None,
            bias: 0.0,
            last_error: None,
        }
    }

    /// A first token came `error` after (negative: before) the TTFT
    /// predicted when its request was admitted. The correction moves by a
    /// share of each error and fades over [`AdmissionConfig::memory`] of
    /// silence, so an old surge's error does not outlive it.
    pub fn observe_error(&mut self, error_secs: f64, now: Instant) {
        let fade = match self.last_error.replace(now) {
            None => 1.0,
            Some(t) => {
                let dt = now.saturating_duration_since(t).as_secs_f64();
                (-dt / self.memory.as_secs_f64()).exp()
            }
        };
        // Only lateness corrects: first tokens that come early are the
        // margin that keeps the tail within the budget, not an error to
        // remove (aiming the mean at the budget puts the p99 over it).
        self.bias = (self.bias * fade + self.alpha * error_secs).max(0.0);
    }

    /// The correction added to predictions, nanoseconds.
    pub fn bias_ns(&self) -> i64 {
        (self.bias * 1e9) as i64
    }

    /// The weight the old value keeps for a sample at `now` after the one
    /// at `last` (updated to `now`): `1 - alpha` when samples come close
    /// together, falling to nothing after a few `memory`s of silence.
    fn keep(alpha: f64, memory: Duration, last: &mut Option<Instant>, now: Instant) -> f64 {
        let w = match last.replace(now) {
            None => 0.0,
            Some(t) => {
                let dt = now.saturating_duration_since(t).as_secs_f64();
                (1.0 - alpha) * (-dt / memory.as_secs_f64()).exp()
            }
        };
        w.clamp(0.0, 1.0)
    }

    /// A first token arrived `upstream_ttft` after the request was sent;
    /// `prefilled` prompt tokens (its own and those still being prefilled
    /// ahead of it when it was sent) are what it waited for.
    pub fn observe_ttft(&mut self, upstream_ttft: Duration, prefilled: u64, now: Instant) {
        let base = upstream_ttft.saturating_sub(times(self.prefill_per_token, prefilled));
        let keep = Self::keep(self.alpha, self.memory, &mut self.last_ttft, now);
        self.base_ttft = self.base_ttft.mul_f64(keep) + base.mul_f64(1.0 - keep);
    }

    /// A sequence finished `service` after it was sent.
    pub fn observe_service(&mut self, service: Duration, now: Instant) {
        let keep = Self::keep(self.alpha, self.memory, &mut self.last_service, now);
        self.service = self.service.mul_f64(keep) + service.mul_f64(1.0 - keep);
    }

    /// A request of `tokens` prompt tokens was submitted.
    pub fn observe_prompt(&mut self, tokens: u32, now: Instant) {
        let keep = Self::keep(self.alpha, self.memory, &mut self.last_prompt, now);
        self.prompt_tokens = self.prompt_tokens * keep + tokens as f64 * (1.0 - keep);
    }

    /// Current base TTFT.
    pub fn base_ttft(&self) -> Duration {
        self.base_ttft
    }

    /// Current service time.
    pub fn service(&self) -> Duration {
        self.service
    }

    /// Between two places in line, with `capacity` slots: the larger of a
    /// slot's turn (`S / C`) and a typical prompt's prefill.
    pub fn interval(&self, capacity: usize) -> Duration {
        let slot = if capacity == 0 {
            self.service
        } else {
            self.service / capacity as u32
        };
        slot.max(self.prefill_per_token.mul_f64(self.prompt_tokens))
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
    prefill_ahead: AtomicU64,
    interval_ns: AtomicU64,
    show_permille: AtomicU32,
    bias_ns: std::sync::atomic::AtomicI64,
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
        self.prefill_ahead.store(s.prefill_ahead, Relaxed);
        self.interval_ns.store(ns(s.interval), Relaxed);
        self.show_permille.store(s.show_permille, Relaxed);
        self.bias_ns.store(s.bias_ns, Relaxed);
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
            prefill_ahead: self.prefill_ahead.load(Relaxed),
            interval: Duration::from_nanos(self.interval_ns.load(Relaxed)),
            show_permille: self.show_permille.load(Relaxed),
            bias_ns: self.bias_ns.load(Relaxed),
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

    fn ask(tokens: u32) -> Ask {
        Ask::tokens(tokens)
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
            interval: ms(25),
            ..Default::default()
        }
    }

    #[test]
    fn idle_pool_predicts_prefill_plus_base() {
        let p = predict_ttft(&snap(0, 0), &ask(500), &cfg());
        assert_eq!(p, ms(2 + 20 + 50));
        assert!(decide(&snap(0, 0), &ask(500), Duration::ZERO, &cfg()).is_ok());
    }

    #[test]
    fn free_slots_absorb_the_queue() {
        assert_eq!(predict_ttft(&snap(9, 54), &ask(0), &cfg()), ms(22));
        // Full: the 1st in line waits for the oldest (due in 25 ms).
        assert_eq!(predict_ttft(&snap(0, 64), &ask(0), &cfg()), ms(22 + 25));
        assert_eq!(
            predict_ttft(&snap(10, 64), &ask(0), &cfg()),
            ms(22 + 11 * 25)
        );
        // A full round later: the slot freed first, taken again for 1.6 s.
        assert_eq!(
            predict_ttft(&snap(64, 64), &ask(0), &cfg()),
            ms(22 + 25 + 1600)
        );
    }

    #[test]
    fn prompts_ahead_are_prefilled_first_even_with_free_slots() {
        // 10 slots free, but 9,000 tokens ahead still to prefill: 900 ms.
        let mut s = snap(3, 54);
        s.prefill_ahead = 9_000;
        assert_eq!(predict_ttft(&s, &ask(1000), &cfg()), ms(2 + 900 + 20 + 100));
        assert!(decide(&s, &ask(1000), Duration::ZERO, &cfg()).is_err());
        // Requests in transit bring prompts like this one's.
        s.prefill_ahead = 0;
        s.unpublished = 2;
        assert_eq!(predict_ttft(&s, &ask(1000), &cfg()), ms(2 + 200 + 20 + 100));
        // The caller's own stages count too.
        let a = Ask {
            before_submit: ms(300),
            ..ask(1000)
        };
        assert_eq!(predict_ttft(&s, &a, &cfg()), ms(2 + 300 + 200 + 20 + 100));
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
    fn refuses_what_would_miss_the_budget_by_how_much() {
        let z = Duration::ZERO;
        // 22 ms + k * 25 ms <= 1000 ms while k <= 39.
        assert!(decide(&snap(38, 64), &ask(0), z, &cfg()).is_ok());
        assert_eq!(decide(&snap(39, 64), &ask(0), z, &cfg()), Err(ms(22)));
        // A long prompt misses where a short one fits.
        assert!(decide(&snap(30, 64), &ask(0), z, &cfg()).is_ok());
        assert!(decide(&snap(30, 64), &ask(3000), z, &cfg()).is_err());
        assert_eq!(
            decide(&snap(63, 64), &ask(0), z, &cfg()),
            Err(ms(22 + 64 * 25 - 1000))
        );
        // The places booked ahead count for a fresh request.
        assert!(decide(&snap(0, 64), &ask(0), ms(990), &cfg()).is_err());
    }

    #[test]
    fn requests_in_transit_are_ahead_in_line() {
        let mut s = snap(0, 64);
        s.unpublished = 3;
        assert_eq!(predict_ttft(&s, &ask(0), &cfg()), ms(22 + 4 * 25));
        // Past the published positions, the even drain extrapolates.
        s.unpublished = 10;
        assert_eq!(predict_ttft(&s, &ask(0), &cfg()), ms(22 + 8 * 25 + 3 * 25));
    }

    #[test]
    fn full_queue_refuses_and_no_capacity_admits() {
        let c = AdmissionConfig {
            queue_capacity: 4,
            ttft_budget: Duration::from_secs(100),
            ..cfg()
        };
        let z = Duration::ZERO;
        assert!(decide(&snap(3, 0), &ask(0), z, &c).is_ok());
        assert!(decide(&snap(4, 0), &ask(0), z, &c).is_err());
        let mut down = snap(1000, 0);
        down.capacity = 0;
        assert!(decide(&down, &ask(0), z, &c).is_ok(), "down, not busy");
    }

    /// The lock-out of issue 12: a surge taught the estimate a base TTFT of
    /// 30 s; once nothing was admitted it never learned otherwise.
    #[test]
    fn an_idle_pool_admits_whatever_the_estimates_say() {
        let mut s = snap(0, 0);
        s.base_ttft = Duration::from_secs(30);
        s.service = Duration::from_secs(30);
        assert!(decide(&s, &ask(100), Duration::ZERO, &cfg()).is_ok());
        // Not idle: the estimate rules.
        s.in_flight = 1;
        assert!(decide(&s, &ask(100), Duration::ZERO, &cfg()).is_err());
    }

    #[test]
    fn estimates_forget_after_silence() {
        let c = AdmissionConfig {
            ewma_alpha: 0.5,
            initial_ttft: ms(100),
            initial_service: ms(1000),
            memory: Duration::from_secs(10),
            ..cfg()
        };
        let t0 = Instant::now();
        let mut e = Estimator::new(&c);
        // The first sample replaces the prior.
        e.observe_ttft(ms(70), 500, t0); // base 20 ms
        assert_eq!(e.base_ttft(), ms(20));
        // Close together: the configured weight.
        e.observe_ttft(ms(250), 500, t0); // base 200 ms
        assert_eq!(e.base_ttft(), ms(110));
        e.observe_service(ms(2000), t0);
        e.observe_service(ms(1000), t0);
        assert_eq!(e.service(), ms(1500));
        // Three minutes later one sample is all that counts.
        let later = t0 + Duration::from_secs(180);
        e.observe_ttft(ms(50), 0, later);
        assert!(e.base_ttft() < ms(51), "{:?}", e.base_ttft());
        // The waits for prompts ahead are not part of the base.
        e.observe_ttft(ms(50) + ms(300), 3000, later + Duration::from_secs(60));
        assert!(e.base_ttft() < ms(51), "{:?}", e.base_ttft());
    }

    #[test]
    fn predictions_learn_their_error_and_forget_it() {
        let c = AdmissionConfig {
            ewma_alpha: 0.5,
            ..cfg()
        };
        let t0 = Instant::now();
        let mut e = Estimator::new(&c);
        // First tokens come 200 ms after their predictions.
        for _ in 0..20 {
            e.observe_error(0.2, t0);
        }
        assert!(
            (e.bias_ns() - 2_000_000_000).abs() < 10_000_000,
            "{}",
            e.bias_ns()
        );
        let mut s = snap(0, 10);
        s.bias_ns = e.bias_ns();
        // Bounded by half the budget.
        assert_eq!(predict_ttft(&s, &ask(0), &c), ms(22 + 500));
        // Early first tokens only bring the correction back down to zero.
        for _ in 0..100 {
            e.observe_error(-0.2, t0);
        }
        assert_eq!(e.bias_ns(), 0);
        e.observe_error(0.2, t0);
        // After a long silence the old error is gone.
        e.observe_error(0.0, t0 + Duration::from_secs(300));
        assert_eq!(e.bias_ns(), 0);
    }

    #[test]
    fn interval_is_the_tighter_resource() {
        let mut e = Estimator::new(&cfg());
        let t0 = Instant::now();
        e.observe_service(ms(1600), t0);
        assert_eq!(e.interval(64), ms(25));
        e.observe_prompt(1000, t0); // 100 ms of prefill
        assert_eq!(e.interval(64), ms(100));
    }

    #[test]
    fn places_are_booked_in_line_and_only_so_far() {
        let t0 = Instant::now();
        let p = Places::new(t0);
        let h = Duration::from_secs(1);
        assert_eq!(p.ahead(t0, h), Duration::ZERO);
        assert_eq!(p.book(t0, t0 + ms(300), ms(100), h), Some(t0 + ms(300)));
        // The next one is an interval later, even if it could come sooner.
        assert_eq!(p.book(t0, t0 + ms(10), ms(100), h), Some(t0 + ms(400)));
        assert_eq!(p.ahead(t0, h), ms(500));
        assert_eq!(p.ahead(t0 + ms(450), h), ms(50));
        // Past the horizon nothing is booked.
        for _ in 0..6 {
            assert!(p.book(t0, t0, ms(100), h).is_some());
        }
        assert_eq!(p.book(t0, t0, ms(100), h), None);
        assert_eq!(p.counts(), (8, 0));
        // Once the line has passed, a place is had at once.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(p.ahead(later, h), Duration::ZERO);
        assert_eq!(
            p.book(later, later + ms(1), ms(100), h),
            Some(later + ms(1))
        );
        p.redeem();
        assert_eq!(p.counts(), (9, 1));
    }

    #[test]
    fn show_rate_follows_who_comes_back() {
        let mut r = ShowRate::default();
        assert_eq!(r.update((10, 0)), 500, "a window needs 20 bookings");
        assert_eq!(r.update((20, 0)), 250);
        assert_eq!(r.update((40, 0)), 125);
        assert_eq!(r.update((60, 20)), 562);
    }

    #[test]
    fn published_round_trips() {
        let p = Published::default();
        let mut s = snap(1, 2);
        s.prefill_ahead = 77;
        s.show_permille = 321;
        p.store(&s);
        assert_eq!(p.load(), s);
    }
}
