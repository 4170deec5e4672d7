//! The live-chat gateway: a thread-per-core WebSocket and long-polling server
//! for website chat widgets, which answers visitors from each site's knowledge
//! base through a pool of inference servers and hands conversations to people.
//!
//! Protocol logic is sans-IO: functions and state machines over bytes and
//! events, tested without sockets. The WebSocket codec and protocol v1's
//! messages are the `wire` crate's, shared with the load generator. The
//! `server` module is the I/O shell that runs one monoio runtime per core,
//! moves bytes, and carries out the effects the cores return.
//!
//! # Layout
//!
//! The public API is what the binary, the benchmarks and other programs
//! embedding the gateway need: [`config`] (the command line and the TOML
//! file), [`server`] ([`server::start`] and the [`server::Running`] it
//! returns), [`sites`], [`first_start`], [`kb`], and the agent desk's sans-IO
//! core ([`desk`], with [`handoff`] and [`ids`]) for its benchmarks. The rest
//! is the crate's own.
//!
//! Shared vocabulary, below everything else:
//! * [`ids`]: session keys, conversation ids, agent ids, subscriber ids.
//! * [`handoff`]: what a visitor's session and the agent desk tell each other.
//!
//! Sans-IO cores:
//! * `http`: HTTP/1.1 requests (httparse, with limits), responses, content
//!   negotiation.
//! * `ws`: `wire::ws` and the opening handshake over `http` types.
//! * `chat`: protocol v1's messages (`wire::chat`).
//! * `router`: a request to a `Route`, and the pure response builders
//!   (cookies, CSP, assets, Origin, long-poll bodies).
//! * `session`: one visitor's session: transcript, acks, streaming replies,
//!   subscribers, the long-poll log, rate limits, the hand-off to a person.
//! * [`desk`]: the agent desk: routing, accounts and sign-ins, the hand-off
//!   state machine, its HTTP API and agent frames.
//! * `grounding`: answers grounded in a site's knowledge base: retrieval
//!   queries, sources, confidence, pace.
//! * [`sites`]: site settings, the Origin policy, the lock-free registry.
//! * `admin`: the admin API as a function from request to response.
//! * `metrics`: per-worker counters and histograms; Prometheus text.
//! * [`config`]: the command line, the TOML file and their defaults.
//!
//! The shell and its stores:
//! * [`server`]: the workers (connections, sessions, answers), the desk and
//!   retrieval threads, start and shutdown.
//! * `store`: the transcript store (SQLite) on its own threads.
//! * [`first_start`]: the admin token and demo agent a first start makes.
//! * [`kb`]: `gateway kb add`, the command-line ingest.
//! * `assets`: the widget, dashboard and demo page, embedded at build time.

mod admin;
mod assets;
pub mod config;
pub mod desk;
pub mod first_start;
mod grounding;
pub mod handoff;
mod http;
pub mod ids;
pub mod kb;
mod metrics;
mod router;
pub mod server;
mod session;
pub mod sites;
mod store;
mod ws;

use wire::chat;

pub use config::Config;
pub use server::{start, Running, ServerError};
