//! The endpoint pool's bookkeeping, sans-IO: each endpoint's load against its
//! cap on concurrent sequences, its health, its circuit breaker, its pause
//! after a 429/503, and the choice of endpoint for the next request. Time is
//! the caller's `now`; the service thread owns the one [`Pool`].
//!
//! - **Selection**: the least loaded usable endpoint (in-flight over cap; ties
//!   to the lower TTFT EWMA, then the lower index), or power-of-two-choices
//!   over the TTFT EWMA weighted by load.
//! - **Health**: `unhealthy_after` failed health checks in a row (or, when
//!   health checks run, one refused connection) take an endpoint down; a
//!   passing check brings it back.
//! - **Circuit breaker**: `failure_threshold` failed requests in a row open
//!   it for `open_for`; then it is half-open and lets one trial request
//!   through: success closes it, failure opens it again for twice as long (up
//!   to `max_open_for`).
//! - **Overload**: a 429 or a 503 with `Retry-After` pauses the endpoint for
//!   that long without counting as a failure.

use std::time::{Duration, Instant};

/// How the next endpoint is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Selection {
    /// The least loaded usable endpoint.
    #[default]
    LeastLoaded,
    /// The better of two random usable endpoints, by TTFT EWMA times load.
    PowerOfTwo,
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Failed requests in a row that open an endpoint's breaker.
    pub failure_threshold: u32,
    /// How long a breaker first stays open.
    pub open_for: Duration,
    /// The longest it stays open (the period doubles on each failed trial).
    pub max_open_for: Duration,
    /// Failed health checks in a row that take an endpoint down.
    pub unhealthy_after: u32,
    /// Longest pause honoured from a `Retry-After`.
    pub max_pause: Duration,
    /// Weight of a new sample in the TTFT EWMA.
    pub ewma_alpha: f64,
    /// Selection policy.
    pub selection: Selection,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(2),
            max_open_for: Duration::from_secs(60),
            unhealthy_after: 2,
            max_pause: Duration::from_secs(30),
            ewma_alpha: 0.2,
            selection: Selection::LeastLoaded,
        }
    }
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Requests flow; `failures` in a row so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// No requests until `until`.
    Open {
        /// When it turns half-open.
        until: Instant,
        /// How long it was opened for.
        period: Duration,
    },
    /// One trial request may go; `trial` once it has.
    HalfOpen {
        /// The last open period (doubled if the trial fails).
        period: Duration,
        /// Whether the trial is in flight.
        trial: bool,
    },
}

/// How a request to an endpoint failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Could not connect.
    Connect,
    /// Told to come back after this long (429, 503 with `Retry-After`).
    Overloaded(Duration),
    /// Anything else: an error status, a reset, garbage, a timeout.
    Error,
}

/// One endpoint's state.
#[derive(Debug, Clone)]
pub struct EndpointState {
    /// Most sequences in flight.
    pub capacity: usize,
    /// Sequences in flight now.
    pub in_flight: usize,
    /// Passing health checks (or not yet checked).
    pub healthy: bool,
    health_failures: u32,
    /// The breaker.
    pub breaker: Breaker,
    /// Paused (overloaded) until then.
    pub paused_until: Option<Instant>,
    /// EWMA of time to first token, once measured.
    pub ewma_ttft: Option<Duration>,
}

/// The pool's choice for the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// This endpoint has room.
    Endpoint(usize),
    /// Usable endpoints exist but all are full: wait.
    Saturated,
    /// No usable endpoint (down, open, paused, or excluded).
    None,
}

/// The endpoints' bookkeeping.
#[derive(Debug)]
pub struct Pool {
    cfg: PoolConfig,
    endpoints: Vec<EndpointState>,
    health_checks: bool,
    rng: fastrand::Rng,
}

impl Pool {
    /// A pool of endpoints with these caps. `health_checks`: whether health
    /// checks run (only then does a refused connection take an endpoint down,
    /// as only a check can bring it back).
    pub fn new(capacities: &[usize], cfg: PoolConfig, health_checks: bool, seed: u64) -> Pool {
        Pool {
            endpoints: capacities
                .iter()
                .map(|&c| EndpointState {
                    capacity: c.max(1),
                    in_flight: 0,
                    healthy: true,
                    health_failures: 0,
                    breaker: Breaker::Closed { failures: 0 },
                    paused_until: None,
                    ewma_ttft: None,
                })
                .collect(),
            cfg,
            health_checks,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the pool has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// One endpoint's state.
    pub fn endpoint(&self, i: usize) -> &EndpointState {
        &self.endpoints[i]
    }

    /// Whether endpoint `i` may take requests now (moving an open breaker
    /// whose time is up to half-open).
    pub fn usable(&mut self, i: usize, now: Instant) -> bool {
        let e = &mut self.endpoints[i];
        if let Breaker::Open { until, period } = e.breaker {
            if now >= until {
                e.breaker = Breaker::HalfOpen {
                    period,
                    trial: false,
                };
            }
        }
        if e.paused_until.is_some_and(|t| now >= t) {
            e.paused_until = None;
        }
        e.healthy && e.paused_until.is_none() && !matches!(e.breaker, Breaker::Open { .. })
    }

    /// Sequences endpoint `i` can take now (0 if unusable; 1 at most while
    /// half-open).
    pub fn room(&mut self, i: usize, now: Instant) -> usize {
        if !self.usable(i, now) {
            return 0;
        }
        let e = &self.endpoints[i];
        let free = e.capacity.saturating_sub(e.in_flight);
        match e.breaker {
            Breaker::HalfOpen { trial: true, .. } => 0,
            Breaker::HalfOpen { trial: false, .. } => free.min(1),
            _ => free,
        }
    }

    /// Chooses an endpoint with room, skipping those `excluded` says.
    pub fn pick(&mut self, now: Instant, excluded: impl Fn(usize) -> bool) -> Pick {
        let mut candidates: Vec<usize> = Vec::new();
        let mut any_usable = false;
        for i in 0..self.endpoints.len() {
            if excluded(i) || !self.usable(i, now) {
                continue;
            }
            any_usable = true;
            if self.room(i, now) > 0 {
                candidates.push(i);
            }
        }
        if candidates.is_empty() {
            return if any_usable {
                Pick::Saturated
            } else {
                Pick::None
            };
        }
        let load = |e: &EndpointState| e.in_flight as f64 / e.capacity as f64;
        let ttft = |e: &EndpointState| e.ewma_ttft.unwrap_or(Duration::ZERO);
        let best = match self.cfg.selection {
            Selection::PowerOfTwo if candidates.len() > 2 => {
                let a = candidates[self.rng.usize(..candidates.len())];
                let mut b = candidates[self.rng.usize(..candidates.len() - 1)];
                if b == a {
                    b = candidates[candidates.len() - 1];
                }
                let cost = |i: usize| {
                    let e = &self.endpoints[i];
                    (ttft(e).as_secs_f64() + 1e-3) * (e.in_flight + 1) as f64 / e.capacity as f64
                };
                if cost(b) < cost(a) {
                    b
                } else {
                    a
                }
            }
            _ => *candidates
                .iter()
                .min_by(|&&a, &&b| {
                    let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                    load(ea)
                        .total_cmp(&load(eb))
                        .then(ttft(ea).cmp(&ttft(eb)))
                        .then(a.cmp(&b))
                })
                .unwrap_or(&candidates[0]),
        };
        Pick::Endpoint(best)
    }

    /// Whether any endpoint is usable (ignoring room).
    pub fn any_usable(&mut self, now: Instant) -> bool {
        (0..self.endpoints.len()).any(|i| self.usable(i, now))
    }

    /// Endpoints usable now.
    pub fn usable_count(&mut self, now: Instant) -> usize {
        (0..self.endpoints.len())
            .filter(|&i| self.usable(i, now))
            .count()
    }

    /// Sequences all usable endpoints can take in all (their caps).
    pub fn usable_capacity(&mut self, now: Instant) -> usize {
        let mut total = 0;
        for i in 0..self.endpoints.len() {
            if self.usable(i, now) {
                total += self.endpoints[i].capacity;
            }
        }
        total
    }

    /// Sequences in flight on all endpoints.
    pub fn in_flight(&self) -> usize {
        self.endpoints.iter().map(|e| e.in_flight).sum()
    }

    /// `n` sequences start on endpoint `i` (a half-open breaker's trial).
    pub fn acquire(&mut self, i: usize, n: usize) {
        let e = &mut self.endpoints[i];
        e.in_flight += n;
        if let Breaker::HalfOpen { period, .. } = e.breaker {
            e.breaker = Breaker::HalfOpen {
                period,
                trial: true,
            };
        }
    }

    /// `n` sequences on endpoint `i` ended. A half-open trial that ended with
    /// neither success nor failure (cancelled) lets another trial go.
    pub fn release(&mut self, i: usize, n: usize) {
        let e = &mut self.endpoints[i];
        e.in_flight = e.in_flight.saturating_sub(n);
        if let Breaker::HalfOpen {
            period,
            trial: true,
        } = e.breaker
        {
            if e.in_flight == 0 {
                e.breaker = Breaker::HalfOpen {
                    period,
                    trial: false,
                };
            }
        }
    }

    /// A request to endpoint `i` succeeded; `ttft` is its time to first
    /// token, if it had one.
    pub fn on_success(&mut self, i: usize, _now: Instant, ttft: Option<Duration>) {
        let alpha = self.cfg.ewma_alpha;
        let e = &mut self.endpoints[i];
        e.breaker = Breaker::Closed { failures: 0 };
        if let Some(t) = ttft {
            e.ewma_ttft = Some(match e.ewma_ttft {
                Some(old) => old.mul_f64(1.0 - alpha) + t.mul_f64(alpha),
                None => t,
            });
        }
    }

    /// A request to endpoint `i` failed.
    pub fn on_failure(&mut self, i: usize, now: Instant, kind: FailureKind) {
        let cfg = &self.cfg;
        let e = &mut self.endpoints[i];
        if let FailureKind::Overloaded(d) = kind {
            e.paused_until = Some(now + d.min(cfg.max_pause));
            return;
        }
        if kind == FailureKind::Connect && self.health_checks {
            e.healthy = false;
        }
        e.breaker = match e.breaker {
            Breaker::Closed { failures } if failures + 1 >= cfg.failure_threshold => {
                Breaker::Open {
                    until: now + cfg.open_for,
                    period: cfg.open_for,
                }
            }
            Breaker::Closed { failures } => Breaker::Closed {
                failures: failures + 1,
            },
            Breaker::HalfOpen { period, .. } => {
                let period = period.saturating_mul(2).min(cfg.max_open_for);
                Breaker::Open {
                    until: now + period,
                    period,
                }
            }
            open @ Breaker::Open { .. } => open,
        };
    }

    /// A health check of endpoint `i` passed or failed.
    pub fn on_health(&mut self, i: usize, _now: Instant, ok: bool) {
        let threshold = self.cfg.unhealthy_after.max(1);
        let e = &mut self.endpoints[i];
        if ok {
            e.healthy = true;
            e.health_failures = 0;
        } else {
            e.health_failures += 1;
            if e.health_failures >= threshold {
                e.healthy = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(caps: &[usize]) -> Pool {
        Pool::new(caps, PoolConfig::default(), true, 1)
    }

    #[test]
    fn least_loaded_by_ratio_then_ttft_then_index() {
        let t = Instant::now();
        let mut p = pool(&[4, 8, 4]);
        assert_eq!(p.pick(t, |_| false), Pick::Endpoint(0));
        p.acquire(0, 1);
        // 1/4 vs 0/8 vs 0/4: endpoint 1 (tie with 2, lower index).
        assert_eq!(p.pick(t, |_| false), Pick::Endpoint(1));
        p.acquire(1, 2);
        assert_eq!(p.pick(t, |_| false), Pick::Endpoint(2));
        p.acquire(2, 1);
        // All at 1/4: ties broken by TTFT EWMA.
        p.on_success(0, t, Some(Duration::from_millis(300)));
        p.on_success(1, t, Some(Duration::from_millis(100)));
        p.on_success(2, t, Some(Duration::from_millis(200)));
        assert_eq!(p.pick(t, |_| false), Pick::Endpoint(1));
        assert_eq!(p.pick(t, |i| i == 1), Pick::Endpoint(2));
    }

    #[test]
    fn saturated_versus_none() {
        let t = Instant::now();
        let mut p = pool(&[1, 1]);
        p.acquire(0, 1);
        p.acquire(1, 1);
        assert_eq!(p.pick(t, |_| false), Pick::Saturated);
        assert_eq!(p.pick(t, |_| true), Pick::None);
        p.release(1, 1);
        assert_eq!(p.pick(t, |_| false), Pick::Endpoint(1));
        assert_eq!(p.in_flight(), 1);
        assert_eq!(p.usable_capacity(t), 2);
    }

    #[test]
    fn breaker_opens_half_opens_and_closes() {
        let t0 = Instant::now();
        let mut p = pool(&[4]);
        for _ in 0..2 {
            p.on_failure(0, t0, FailureKind::Error);
            assert!(p.usable(0, t0), "below the threshold");
        }
        p.on_success(0, t0, None);
        for _ in 0..3 {
            p.on_failure(0, t0, FailureKind::Error);
        }
        assert!(!p.usable(0, t0));
        assert_eq!(p.pick(t0, |_| false), Pick::None);
        let t1 = t0 + Duration::from_secs(2);
        assert!(p.usable(0, t1), "half-open after open_for");
        assert_eq!(p.room(0, t1), 1, "one trial at a time");
        p.acquire(0, 1);
        assert_eq!(p.room(0, t1), 0);
        assert_eq!(p.pick(t1, |_| false), Pick::Saturated);
        // The trial fails: open again, twice as long.
        p.on_failure(0, t1, FailureKind::Error);
        p.release(0, 1);
        assert!(!p.usable(0, t1 + Duration::from_secs(3)));
        let t2 = t1 + Duration::from_secs(4);
        assert!(p.usable(0, t2));
        p.acquire(0, 1);
        p.on_success(0, t2, Some(Duration::from_millis(50)));
        p.release(0, 1);
        assert_eq!(p.endpoint(0).breaker, Breaker::Closed { failures: 0 });
        assert_eq!(p.room(0, t2), 4);
    }

    #[test]
    fn open_period_is_capped() {
        let t = Instant::now();
        let cfg = PoolConfig {
            failure_threshold: 1,
            max_open_for: Duration::from_secs(5),
            ..Default::default()
        };
        let mut p = Pool::new(&[1], cfg, true, 0);
        let mut now = t;
        p.on_failure(0, now, FailureKind::Error);
        for _ in 0..5 {
            now += Duration::from_secs(10);
            assert!(p.usable(0, now));
            p.on_failure(0, now, FailureKind::Error);
        }
        assert_eq!(
            p.endpoint(0).breaker,
            Breaker::Open {
                until: now + Duration::from_secs(5),
                period: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn cancelled_trial_frees_the_half_open_slot() {
        let t0 = Instant::now();
        let cfg = PoolConfig {
            failure_threshold: 1,
            ..Default::default()
        };
        let mut p = Pool::new(&[4], cfg, true, 0);
        p.on_failure(0, t0, FailureKind::Error);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(p.room(0, t1), 1);
        p.acquire(0, 1);
        assert_eq!(p.room(0, t1), 0);
        p.release(0, 1);
        assert_eq!(p.room(0, t1), 1);
    }

    #[test]
    fn overload_pauses_without_opening() {
        let t = Instant::now();
        let mut p = pool(&[2, 2]);
        for _ in 0..5 {
            p.on_failure(0, t, FailureKind::Overloaded(Duration::from_secs(3)));
        }
        assert_eq!(p.endpoint(0).breaker, Breaker::Closed { failures: 0 });
        assert_eq!(p.pick(t, |_| false), Pick::Endpoint(1));
        assert!(p.usable(0, t + Duration::from_secs(3)));
    }

    #[test]
    fn health_checks_take_down_and_bring_back() {
        let t = Instant::now();
        let mut p = pool(&[2]);
        p.on_health(0, t, false);
        assert!(p.usable(0, t), "one failed check is not enough");
        p.on_health(0, t, false);
        assert!(!p.usable(0, t));
        p.on_health(0, t, true);
        assert!(p.usable(0, t));
        // A refused connection takes it down at once when checks run...
        p.on_failure(0, t, FailureKind::Connect);
        assert!(!p.any_usable(t));
        p.on_health(0, t, true);
        assert!(p.any_usable(t));
        // ...but not when nothing would bring it back.
        let mut q = Pool::new(&[2], PoolConfig::default(), false, 0);
        q.on_failure(0, t, FailureKind::Connect);
        assert!(q.any_usable(t));
    }

    #[test]
    fn power_of_two_prefers_faster_endpoints() {
        let t = Instant::now();
        let cfg = PoolConfig {
            selection: Selection::PowerOfTwo,
            ..Default::default()
        };
        let mut p = Pool::new(&[100, 100, 100, 100], cfg, true, 42);
        p.on_success(0, t, Some(Duration::from_millis(10)));
        for i in 1..4 {
            p.on_success(i, t, Some(Duration::from_millis(500)));
        }
        let mut hits = [0; 4];
        for _ in 0..400 {
            if let Pick::Endpoint(i) = p.pick(t, |_| false) {
                hits[i] += 1;
            }
        }
        // Endpoint 0 wins whenever it is drawn (about half the draws).
        assert!(hits[0] > 150, "{hits:?}");
        assert!(hits.iter().all(|&h| h < 400));
    }
}
