//! Criterion benchmarks for the gateway's hot paths; the code is in `benches/`.
//!
//! Each benchmark measures our implementation beside a peer doing the same
//! work in the same run, so results read as ratios on a noisy machine:
//!
//! - `ws_codec`: WebSocket frame decoding (unmask, UTF-8 check, message
//!   assembly) and encoding, ours against tungstenite 0.30's protocol engine.
//! - `chat_json`: parsing a chat frame into a typed message, simd-json against
//!   serde_json.
//!
//! Run with `cargo bench -p benches`.
