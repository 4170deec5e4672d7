//! The simulated GPU server's latency model: what a prefill and a decode step
//! cost, how a step slows as the batch grows, and how many sequences fit in
//! the KV cache. Plain arithmetic; [`super::engine`] runs it over time.
//!
//! The defaults are a small (7-8B) model on one data-centre GPU with a
//! continuous-batching server such as vLLM: prefill about 0.1 ms per prompt
//! token, a decode step of 20 ms at batch 1 that grows by 1.5% per extra
//! sequence in the batch (so 64 sequences step in about 39 ms: 1,600 tokens/s
//! against 50 alone), room for 64 sequences, and at most 8,192 prompt tokens
//! prefilled per iteration. A 500-token prompt on an idle server gets its
//! first token after 50 ms of prefill and one 20 ms step: 70 ms.

use std::time::Duration;

/// Parameters of the simulated server.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyModel {
    /// Prefill cost per prompt token, microseconds (`--prefill-us-per-token`).
    pub prefill_us_per_token: f64,
    /// One decode step with one sequence in the batch (`--decode-step-ms`).
    pub decode_step: Duration,
    /// Extra step time per additional sequence in the batch, as a fraction of
    /// `decode_step` (`--batch-slowdown`).
    pub batch_slowdown: f64,
    /// Most sequences decoding at once (the KV cache); more wait in a queue
    /// (`--kv-capacity`).
    pub kv_capacity: usize,
    /// Most prompt tokens prefilled in one iteration (vLLM's
    /// `max_num_batched_tokens`); a longer prompt still goes alone
    /// (`--max-prefill-tokens`).
    pub max_prefill_tokens: u32,
    /// Each step's time is scaled by a uniform factor in `1 ± jitter`
    /// (`--jitter`, 0 for none).
    pub jitter: f64,
    /// Seed of the jitter (`--seed`).
    pub seed: u64,
}

impl Default for LatencyModel {
    fn default() -> Self {
        LatencyModel {
            prefill_us_per_token: 100.0,
            decode_step: Duration::from_millis(20),
            batch_slowdown: 0.015,
            kv_capacity: 64,
            max_prefill_tokens: 8192,
            jitter: 0.0,
            seed: 0,
        }
    }
}

impl LatencyModel {
    /// A model whose steps are all instant (for tests of everything but time).
    pub fn instant() -> Self {
        LatencyModel {
            prefill_us_per_token: 0.0,
            decode_step: Duration::ZERO,
            batch_slowdown: 0.0,
            ..Default::default()
        }
    }

    /// Time to prefill `tokens` prompt tokens.
    pub fn prefill(&self, tokens: u64) -> Duration {
        Duration::from_secs_f64((self.prefill_us_per_token.max(0.0) * tokens as f64) / 1e6)
    }

    /// Time of one decode step with `running` sequences in the batch.
    pub fn decode(&self, running: usize) -> Duration {
        let extra = running.saturating_sub(1) as f64 * self.batch_slowdown.max(0.0);
        self.decode_step.mul_f64(1.0 + extra)
    }

    /// Time to the first token of a `prompt_tokens` prompt on an idle server:
    /// its prefill and one decode step.
    pub fn ttft_idle(&self, prompt_tokens: u32) -> Duration {
        self.prefill(prompt_tokens as u64) + self.decode(1)
    }

    /// Tokens per second the server generates with `running` sequences
    /// decoding (prefill aside).
    pub fn decode_throughput(&self, running: usize) -> f64 {
        let step = self.decode(running).as_secs_f64();
        if step == 0.0 {
            f64::INFINITY
        } else {
            running as f64 / step
        }
    }

    /// Checks the parameters are usable.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.prefill_us_per_token.is_finite() && self.prefill_us_per_token >= 0.0) {
            return Err("prefill cost per token must be a non-negative number".into());
        }
        if !(self.batch_slowdown.is_finite() && self.batch_slowdown >= 0.0) {
            return Err("batch slowdown must be a non-negative number".into());
        }
        if !(self.jitter.is_finite() && (0.0..1.0).contains(&self.jitter)) {
            return Err("jitter must be in [0, 1)".into());
        }
        if self.kv_capacity == 0 {
            return Err("KV capacity must be at least one sequence".into());
        }
        if self.max_prefill_tokens == 0 {
            return Err("the prefill budget must be at least one token".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_documented_figures() {
        let m = LatencyModel::default();
        assert_eq!(m.prefill(500), Duration::from_millis(50));
        assert_eq!(m.ttft_idle(500), Duration::from_millis(70));
        assert_eq!(m.decode(1), Duration::from_millis(20));
        // 20 ms * (1 + 0.015 * 63) = 38.9 ms
        assert_eq!(m.decode(64), Duration::from_micros(38_900));
        assert!((m.decode_throughput(1) - 50.0).abs() < 1e-9);
        assert!((m.decode_throughput(64) - 64.0 / 0.0389).abs() < 1e-6);
        assert!(m.validate().is_ok());
    }

    #[test]
    fn validation() {
        let bad = [
            LatencyModel {
                jitter: 1.0,
                ..Default::default()
            },
            LatencyModel {
                kv_capacity: 0,
                ..Default::default()
            },
            LatencyModel {
                prefill_us_per_token: f64::NAN,
                ..Default::default()
            },
            LatencyModel {
                batch_slowdown: -1.0,
                ..Default::default()
            },
        ];
        for m in bad {
            assert!(m.validate().is_err(), "{m:?}");
        }
    }
}
