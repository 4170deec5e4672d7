//! When things happen, shared by the three worker shells (WebSocket,
//! long-polling, direct): the mark of a moment (warm-up or which stage), the
//! connect pacer, the once-a-second ticks, and the open model's arrival loop
//! that counts from each message's due time and never sleeps past it.

use std::time::{Duration, Instant};

use super::timer::PreciseTimer;
use crate::arrivals::Arrivals;
use crate::metrics::Mark;
use crate::scenario::{Scenario, Share};

/// Whether something starting at `at` is measured (not in warm-up), and in
/// which stage, for stages that started at `t0`.
pub fn mark_at(sc: &Scenario, t0: Option<Instant>, at: Instant) -> Mark {
    match t0 {
        // Before the stages (the connect phase): the first stage's, if
        // there is no warm-up.
        None => mark_of(sc, 0.0),
        Some(t0) => mark_of(sc, at.saturating_duration_since(t0).as_secs_f64()),
    }
}

/// The mark of something starting `t` seconds into the stages; the drain
/// after the last stage is the last stage's.
pub fn mark_of(sc: &Scenario, t: f64) -> Mark {
    if t < sc.warmup.secs() {
        return Mark::Warmup;
    }
    let last = sc.stages.len().saturating_sub(1);
    let i = sc.stage_index_at(t).unwrap_or(last);
    Mark::Stage(u16::try_from(i).unwrap_or(u16::MAX))
}

/// Paces connects: `rate` per second, with a burst of one control period.
pub struct Pacer {
    rate: f64,
    since: Instant,
    started: u64,
}

impl Pacer {
    /// A pacer of `rate` connects a second, starting now.
    pub fn new(rate: f64) -> Pacer {
        Pacer {
            rate,
            since: Instant::now(),
            started: 0,
        }
    }
    /// How many connects may start now; counts them as started.
    pub fn allowed(&mut self) -> u64 {
        let budget = (self.since.elapsed().as_secs_f64() * self.rate).floor() as u64 + 1;
        let n = budget.saturating_sub(self.started);
        self.started += n;
        n
    }
    /// Forgets unused budget (nothing was wanted).
    pub fn idle(&mut self) {
        self.since = Instant::now();
        self.started = 0;
    }
}

/// Calls `on_tick(k)` at `run_start + k + 1` seconds for k = 0, 1, ...,
/// until `finished()`: each worker's one-second intervals end on the same
/// instants, so the coordinator can add them up second by second.
pub async fn ticks(run_start: Instant, finished: impl Fn() -> bool, mut on_tick: impl FnMut(u64)) {
    let mut tick: u64 = 1;
    loop {
        let at = run_start + Duration::from_secs(tick);
        monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
        if finished() {
            return;
        }
        on_tick(tick - 1);
        tick += 1;
    }
}

/// The open model for one worker: `on_due(due, t)` for each arrival of its
/// `share` of the scenario's rate (times `weight`, 1 for an even share), at
/// its due time, `t` seconds into the stages; `on_unsent(t)` for each one
/// still unsent 100 ms past `end` (loadgen fell behind). Stops when
/// `stopping()` or at `end`.
#[allow(clippy::too_many_arguments)]
pub async fn arrivals(
    sc: &Scenario,
    share: Share,
    weight: f64,
    t0: Instant,
    end: Instant,
    stopping: impl Fn() -> bool,
    mut on_due: impl FnMut(Instant, f64),
    mut on_unsent: impl FnMut(f64),
) -> std::io::Result<()> {
    let rate = sc.rate_profile().scaled(weight);
    let phase = share.part as f64 / share.parts as f64;
    let seed = sc
        .seed
        .wrapping_add(share.part.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut arrivals = Arrivals::new(&rate, sc.arrivals, sc.burstiness, seed, phase).peekable();
    let timer = PreciseTimer::new()?;
    // Past this, messages still waiting to be sent are counted `unsent`.
    let give_up = end + Duration::from_millis(100);
    let mut burst = 0u32;
    while let Some(t) = arrivals.next() {
        if stopping() {
            break;
        }
        let due = t0 + Duration::from_secs_f64(t);
        if due > end {
            break;
        }
        let now = Instant::now();
        if due > now {
            burst = 0;
            timer.sleep_until(due).await?;
        } else if now > give_up {
            on_unsent(t);
            while let Some(t) = arrivals.next_if(|&t| t0 + Duration::from_secs_f64(t) <= end) {
                on_unsent(t);
            }
            break;
        } else {
            // Behind schedule: catch up, but let the driver deliver reads and
            // timers every few messages (ready tasks alone never park it).
            burst += 1;
            if burst % 32 == 0 {
                timer.pause().await?;
            }
        }
        on_due(due, t);
    }
    Ok(())
}

/// Counts a message that was due and never sent.
pub fn count_unsent(rec: &mut crate::metrics::Recorder, mark: Mark) {
    rec.count(mark, |c| {
        c.sent += 1;
        c.errors[crate::metrics::ErrorKind::Unsent.index()] += 1;
    });
}
