//! Inference for the live-chat gateway.
//!
//! Today this crate holds the in-process simulator that stands in for a GPU
//! inference server (`sim`). The OpenAI-compatible streaming client, the
//! endpoint pool, the dynamic batcher and admission control come next; the
//! gateway already consumes answers through [`sim::Simulator::answer`]'s shape (a
//! first-token delay, then pieces at an interval) so those parts slot in
//! behind it.

pub mod sim;
