//! The live-chat gateway: a thread-per-core WebSocket and long-polling server
//! for website chat widgets.
//!
//! Protocol logic is sans-IO (`http`, `ws`, `chat`, `session`, `admin`):
//! functions over bytes and events, tested without sockets. The WebSocket
//! codec and protocol v1's messages (`chat`) are the `wire` crate's, shared
//! with the load generator. The `server` module is the I/O shell that runs one
//! monoio runtime per core and only moves bytes.

pub mod admin;
pub mod assets;
pub mod config;
pub mod desk;
pub mod first_start;
pub mod grounding;
pub mod handoff;
pub mod http;
pub mod ids;
pub mod kb;
pub mod metrics;
pub mod router;
pub mod server;
pub mod session;
pub mod sites;
pub mod store;
pub mod ws;

pub use wire::chat;
