//! A simulated GPU inference server, for machines without a GPU.
//!
//! - `model`: the latency model (prefill per prompt token, a decode step that
//!   slows with the batch, KV capacity, jitter, seed) and its defaults;
//! - `engine`: the continuous-batching scheduler over that model, sans-IO;
//! - `answer`, `embed`: what it says (a deterministic answer quoting the
//!   visitor, or built from a `Sources:` block) and its embedding vectors;
//! - `server`: the same served over the OpenAI-compatible HTTP API (the
//!   `inference-sim` binary), with fault injection for tests.
//!
//! The service runs `engine` in-process as its default backend (see
//! [`crate::service::Backend::InProcess`]).

pub mod answer;
pub mod embed;
pub mod engine;
pub mod model;
pub mod server;

pub use engine::{Engine, SeqId, SimEvent};
pub use model::LatencyModel;

/// The in-process simulator's settings ([`crate::service::Backend::InProcess`]).
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The latency model.
    pub latency: LatencyModel,
    /// Most tokens per answer, whatever the request asks.
    pub max_tokens: u32,
    /// Dimensions of embeddings.
    pub embedding_dim: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            latency: LatencyModel::default(),
            max_tokens: 256,
            embedding_dim: embed::DEFAULT_DIM,
        }
    }
}
