//! The simulated server's scheduler, sans-IO: continuous batching over the
//! [`LatencyModel`], driven by the caller's clock.
//!
//! Like vLLM's scheduler, the engine runs iterations back to back while it has
//! work. An iteration starts by admitting waiting sequences while the KV cache
//! has room (first come, first served); it costs the prefill of the prompts it
//! admitted plus one decode step for every sequence it runs, and at its end
//! each running sequence has produced one token (a newly admitted one, its
//! first). A sequence that arrives mid-iteration waits for the next one.
//! Finished and cancelled sequences free their KV room at once.
//!
//! Time only moves when the caller says so: [`Engine::advance`] completes the
//! iterations due by `now`, and [`Engine::next_wake`] says when the next one
//! ends. The events are taken with [`Engine::take_events`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::model::LatencyModel;
use crate::openai::{FinishReason, Usage};

/// A sequence's id, chosen by the caller.
pub type SeqId = u64;

/// What the engine produced.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEvent {
    /// A token of sequence `seq`.
    Token {
        /// The sequence.
        seq: SeqId,
        /// The token's text.
        text: String,
    },
    /// Sequence `seq` is complete (its last token came just before).
    Finished {
        /// The sequence.
        seq: SeqId,
        /// `Stop` when the answer was complete, `Length` when `max_tokens` cut it.
        reason: FinishReason,
        /// Its token counts.
        usage: Usage,
    },
}

#[derive(Debug)]
struct Seq {
    prompt_tokens: u32,
    pieces: Vec<String>,
    emitted: usize,
    limit: usize,
    prefilled: bool,
}

/// Counters of what the engine did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Iterations completed.
    pub iterations: u64,
    /// Tokens produced.
    pub tokens: u64,
    /// Sequences finished.
    pub finished: u64,
    /// Sequences cancelled before finishing.
    pub cancelled: u64,
    /// Most sequences ever running in one iteration.
    pub peak_running: usize,
}

/// The scheduler of one simulated server.
#[derive(Debug)]
pub struct Engine {
    model: LatencyModel,
    rng: fastrand::Rng,
    waiting: VecDeque<SeqId>,
    running: Vec<SeqId>,
    seqs: HashMap<SeqId, Seq>,
    /// When the current iteration ends.
    iteration_ends: Option<Instant>,
    /// When it started, the prompt tokens it prefills, and its jitter factor
    /// (arrivals at the very instant it started join it).
    iteration_start: Option<Instant>,
    iteration_prefill: u64,
    iteration_jitter: f64,
    events: Vec<SimEvent>,
    stats: EngineStats,
}

impl Engine {
    /// An idle engine.
    pub fn new(model: LatencyModel) -> Self {
        Engine {
            rng: fastrand::Rng::with_seed(model.seed),
            model,
            waiting: VecDeque::new(),
            running: Vec::new(),
            seqs: HashMap::new(),
            iteration_ends: None,
            iteration_start: None,
            iteration_prefill: 0,
            iteration_jitter: 1.0,
            events: Vec::new(),
            stats: EngineStats::default(),
        }
    }

    /// The latency model.
    pub fn model(&self) -> &LatencyModel {
        &self.model
    }

    /// Counters so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Sequences holding KV room.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Sequences waiting for KV room.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// When the current iteration ends (`None` when idle).
    pub fn next_wake(&self) -> Option<Instant> {
        self.iteration_ends
    }

    /// Queues a sequence arriving at `now`: a prompt of `prompt_tokens`
    /// tokens whose answer is `pieces` (one token each), cut at `max_tokens`.
    /// An id already in use is ignored.
    pub fn add(
        &mut self,
        now: Instant,
        seq: SeqId,
        prompt_tokens: u32,
        pieces: Vec<String>,
        max_tokens: u32,
    ) {
        self.advance(now);
        if self.seqs.contains_key(&seq) {
            return;
        }
        let limit = pieces.len().min(max_tokens as usize);
        self.seqs.insert(
            seq,
            Seq {
                prompt_tokens,
                pieces,
                emitted: 0,
                limit,
                prefilled: false,
            },
        );
        if self.iteration_ends.is_none() {
            self.waiting.push_back(seq);
            self.start_iteration(now);
        } else if self.iteration_start == Some(now)
            && self.waiting.is_empty()
            && self.running.len() < self.model.kv_capacity
            && self.iteration_prefill + prompt_tokens as u64 <= self.model.max_prefill_tokens as u64
        {
            // Arrived with the iteration's start: it joins (same scheduling pass).
            self.running.push(seq);
            self.iteration_prefill += prompt_tokens as u64;
            self.plan_iteration(now);
        } else {
            self.waiting.push_back(seq);
        }
    }

    /// Drops a sequence (its requester left); true if it was there.
    pub fn cancel(&mut self, now: Instant, seq: SeqId) -> bool {
        self.advance(now);
        if self.seqs.remove(&seq).is_none() {
            return false;
        }
        self.stats.cancelled += 1;
        if let Some(i) = self.running.iter().position(|&s| s == seq) {
            self.running.swap_remove(i);
        } else if let Some(i) = self.waiting.iter().position(|&s| s == seq) {
            self.waiting.remove(i);
        }
        true
    }

    /// Completes every iteration that ends by `now`.
    pub fn advance(&mut self, now: Instant) {
        while let Some(ends) = self.iteration_ends {
            if ends > now {
                break;
            }
            self.complete_iteration(ends);
        }
    }

    /// Moves the events produced so far into `out`.
    pub fn take_events(&mut self, out: &mut Vec<SimEvent>) {
        out.append(&mut self.events);
    }

    fn start_iteration(&mut self, at: Instant) {
        let mut prefill_tokens = 0u64;
        while self.running.len() < self.model.kv_capacity {
            let Some(&seq) = self.waiting.front() else {
                break;
            };
            let Some(s) = self.seqs.get(&seq) else {
                self.waiting.pop_front();
                continue;
            };
            let tokens = s.prompt_tokens as u64;
            if prefill_tokens > 0 && prefill_tokens + tokens > self.model.max_prefill_tokens as u64
            {
                break; // the rest waits for the next iteration's prefill budget
            }
            prefill_tokens += tokens;
            self.waiting.pop_front();
            self.running.push(seq);
        }
        if self.running.is_empty() {
            self.iteration_ends = None;
            self.iteration_start = None;
            return;
        }
        self.iteration_prefill = prefill_tokens;
        self.iteration_jitter = if self.model.jitter > 0.0 {
            (1.0 + self.model.jitter * (self.rng.f64() * 2.0 - 1.0)).max(0.0)
        } else {
            1.0
        };
        self.plan_iteration(at);
    }

    /// Sets the end of the iteration starting at `at` from what it runs.
    fn plan_iteration(&mut self, at: Instant) {
        self.stats.peak_running = self.stats.peak_running.max(self.running.len());
        let cost = (self.model.prefill(self.iteration_prefill)
            + self.model.decode(self.running.len()))
        .mul_f64(self.iteration_jitter);
        self.iteration_start = Some(at);
        // A zero-cost model still moves forward one iteration per call.
        self.iteration_ends = Some(at + cost.max(Duration::from_nanos(1)));
    }

    fn complete_iteration(&mut self, ends: Instant) {
        self.stats.iterations += 1;
        let mut i = 0;
        while i < self.running.len() {
            let seq = self.running[i];
            let Some(s) = self.seqs.get_mut(&seq) else {
                self.running.swap_remove(i);
                continue;
            };
            s.prefilled = true;
            if s.emitted < s.limit {
                let text = std::mem::take(&mut s.pieces[s.emitted]);
                s.emitted += 1;
                self.stats.tokens += 1;
                self.events.push(SimEvent::Token { seq, text });
            }
            if s.emitted >= s.limit {
                let reason = if s.limit < s.pieces.len() {
                    FinishReason::Length
                } else {
                    FinishReason::Stop
                };
                self.events.push(SimEvent::Finished {
                    seq,
                    reason,
                    usage: Usage {
                        prompt_tokens: s.prompt_tokens,
                        completion_tokens: s.emitted as u32,
                    },
                });
                self.stats.finished += 1;
                self.seqs.remove(&seq);
                // Keep arrival order among the rest: remove, don't swap.
                self.running.remove(i);
                continue;
            }
            i += 1;
        }
        self.start_iteration(ends);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(n: usize) -> Vec<String> {
        (0..n).map(|i| format!(" t{i}")).collect()
    }

    fn model() -> LatencyModel {
        LatencyModel::default()
    }

    /// Runs the engine to idle, returning (time, event) pairs.
    fn run(e: &mut Engine) -> Vec<(Instant, SimEvent)> {
        let mut out = Vec::new();
        let mut evs = Vec::new();
        while let Some(t) = e.next_wake() {
            e.advance(t);
            e.take_events(&mut evs);
            out.extend(evs.drain(..).map(|ev| (t, ev)));
        }
        out
    }

    fn first_token_at(evs: &[(Instant, SimEvent)], seq: SeqId) -> Option<Instant> {
        evs.iter()
            .find(|(_, e)| matches!(e, SimEvent::Token { seq: s, .. } if *s == seq))
            .map(|(t, _)| *t)
    }

    #[test]
    fn idle_ttft_is_prefill_plus_one_step() {
        let t0 = Instant::now();
        let mut e = Engine::new(model());
        e.add(t0, 1, 500, pieces(3), 100);
        let evs = run(&mut e);
        assert_eq!(
            first_token_at(&evs, 1),
            Some(t0 + Duration::from_millis(70))
        );
        // Then one token per 20 ms step; finished with the last.
        let times: Vec<_> = evs
            .iter()
            .filter(|(_, e)| matches!(e, SimEvent::Token { .. }))
            .map(|(t, _)| t.duration_since(t0).as_millis())
            .collect();
        assert_eq!(times, [70, 90, 110]);
        assert_eq!(
            evs.last().unwrap().1,
            SimEvent::Finished {
                seq: 1,
                reason: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: 500,
                    completion_tokens: 3
                }
            }
        );
    }

    #[test]
    fn batch_steps_slow_with_the_batch() {
        let t0 = Instant::now();
        let mut e = Engine::new(model());
        for s in 0..4 {
            e.add(t0, s, 0, pieces(2), 100);
        }
        let evs = run(&mut e);
        // One iteration of 4: 20 ms * (1 + 3 * 0.015) = 20.9 ms per step.
        for s in 0..4 {
            assert_eq!(
                first_token_at(&evs, s),
                Some(t0 + Duration::from_micros(20_900))
            );
        }
        assert_eq!(e.stats().iterations, 2);
        assert_eq!(e.stats().peak_running, 4);
    }

    #[test]
    fn late_arrival_waits_for_the_current_iteration() {
        let t0 = Instant::now();
        let mut e = Engine::new(model());
        e.add(t0, 1, 0, pieces(5), 100);
        e.add(t0 + Duration::from_millis(5), 2, 100, pieces(1), 100);
        let evs = run(&mut e);
        // Seq 2 joins the iteration starting at 20 ms: 10 ms prefill plus a
        // 2-sequence step of 20.3 ms.
        assert_eq!(
            first_token_at(&evs, 2),
            Some(t0 + Duration::from_micros(20_000 + 10_000 + 20_300))
        );
    }

    #[test]
    fn kv_capacity_queues_the_rest() {
        let t0 = Instant::now();
        let m = LatencyModel {
            kv_capacity: 2,
            batch_slowdown: 0.0,
            ..model()
        };
        let mut e = Engine::new(m);
        e.add(t0, 1, 0, pieces(3), 100);
        e.add(t0, 2, 0, pieces(1), 100);
        e.add(t0, 3, 0, pieces(1), 100);
        assert_eq!(e.running(), 2);
        assert_eq!(e.waiting(), 1);
        let evs = run(&mut e);
        // Seq 2 finishes at 20 ms, so seq 3 runs in the next iteration.
        assert_eq!(
            first_token_at(&evs, 3),
            Some(t0 + Duration::from_millis(40))
        );
        assert_eq!(e.stats().peak_running, 2);
    }

    #[test]
    fn prefill_budget_spreads_admission_over_iterations() {
        let t0 = Instant::now();
        let m = LatencyModel {
            max_prefill_tokens: 1000,
            batch_slowdown: 0.0,
            ..model()
        };
        let mut e = Engine::new(m);
        for s in 0..3 {
            e.add(t0, s, 600, pieces(2), 100);
        }
        assert_eq!(e.running(), 1, "600 + 600 is over the budget");
        let evs = run(&mut e);
        // 60 ms prefill + 20 ms step each time a new one is admitted.
        assert_eq!(
            first_token_at(&evs, 0),
            Some(t0 + Duration::from_millis(80))
        );
        assert_eq!(
            first_token_at(&evs, 1),
            Some(t0 + Duration::from_millis(160))
        );
        assert_eq!(
            first_token_at(&evs, 2),
            Some(t0 + Duration::from_millis(240))
        );
        // A prompt over the budget still runs, alone.
        let mut e = Engine::new(LatencyModel {
            max_prefill_tokens: 10,
            ..model()
        });
        e.add(t0, 1, 500, pieces(1), 1);
        assert_eq!(e.running(), 1);
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let t0 = Instant::now();
        let mut e = Engine::new(model());
        e.add(t0, 1, 10, pieces(10), 2);
        e.add(t0, 2, 10, pieces(10), 0);
        let evs = run(&mut e);
        let fins: Vec<_> = evs
            .iter()
            .filter_map(|(_, e)| match e {
                SimEvent::Finished { seq, reason, usage } => {
                    Some((*seq, *reason, usage.completion_tokens))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            fins,
            [(2, FinishReason::Length, 0), (1, FinishReason::Length, 2)]
        );
    }

    #[test]
    fn cancel_frees_room_and_stops_tokens() {
        let t0 = Instant::now();
        let m = LatencyModel {
            kv_capacity: 1,
            ..model()
        };
        let mut e = Engine::new(m);
        e.add(t0, 1, 0, pieces(100), 100);
        e.add(t0, 2, 0, pieces(1), 100);
        e.advance(t0 + Duration::from_millis(20));
        let mut before = Vec::new();
        e.take_events(&mut before);
        assert_eq!(before.len(), 1, "one token before the cancel");
        assert!(e.cancel(t0 + Duration::from_millis(25), 1));
        assert!(!e.cancel(t0 + Duration::from_millis(25), 1));
        let evs = run(&mut e);
        assert!(evs
            .iter()
            .all(|(_, e)| !matches!(e, SimEvent::Token { seq: 1, .. })));
        // The iteration in progress (20-40 ms) still runs; seq 2 starts at 40.
        assert_eq!(
            first_token_at(&evs, 2),
            Some(t0 + Duration::from_millis(60))
        );
        assert_eq!(e.stats().cancelled, 1);
    }

    #[test]
    fn jitter_is_deterministic_with_a_seed() {
        let timeline = |seed| {
            let t0 = Instant::now();
            let m = LatencyModel {
                jitter: 0.3,
                seed,
                ..model()
            };
            let mut e = Engine::new(m);
            for s in 0..3 {
                e.add(t0, s, 50, pieces(20), 100);
            }
            run(&mut e)
                .into_iter()
                .map(|(t, ev)| (t.duration_since(t0), ev))
                .collect::<Vec<_>>()
        };
        assert_eq!(timeline(7), timeline(7));
        assert_ne!(timeline(7), timeline(8));
        for (d, _) in timeline(7) {
            assert!(d <= Duration::from_millis(600), "{d:?}");
        }
    }
}
