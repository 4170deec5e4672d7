//! loadgen: the load generator for the live-chat gateway.
//!
//! It opens very many WebSocket sessions speaking protocol v1, offers load in
//! stages under the open model (constant, Poisson or gamma arrivals; latency
//! counted from the due time, so no coordinated omission) or the closed model
//! (think time), records `connect`, `rtt`, `ttft`, `itl` and `reply` as
//! HdrHistograms, checks budgets, and writes JSON, HDR interval logs, JUnit and
//! an SVG plot.
//!
//! # Layout
//!
//! Sans-IO cores, plain functions and state machines tested without sockets:
//! * [`conversation`]: scripted multi-turn visitors (`[[conversation]]`);
//!   [`trace`]: production traffic replayed from a JSONL trace.
//! * [`tls`]: rustls for `wss://`, bytes in and bytes out.
//! * [`scenario`]: the scenario file and its stages; [`arrivals`]: constant,
//!   Poisson and gamma arrival schedules; [`units`]: durations and rates.
//! * [`session`]: one simulated visitor's protocol v1 state machine;
//!   [`protocol`]: the frames it sends; [`handshake`]: the client side of the
//!   opening handshake.
//! * [`metrics`]: the HdrHistograms and counts; [`budget`], [`slo`]: budgets
//!   and their verdict.
//! * [`report`]: JSON, HDR interval logs, JUnit, the SVG plot, the summary,
//!   the per-second series and each stage's figures.
//!   [`report::html`]: all of it as one self-contained HTML page, for people.
//! * [`sweep`]: capacity at SLO: the plan of rates and the sweep's report.
//! * [`direct`]: direct mode's core: OpenAI-compatible requests and streamed responses, prompts.
//! * [`poll`]: one session over the long-polling fallback (cookie, cursor, requests).
//!
//! I/O shells:
//! * [`run`]: the monoio workers that only move bytes and time;
//!   [`target`]: resolving the URL and the source addresses; [`system`]: the
//!   machine's limits; [`progress`]: the live line.
//! * [`live`]: live metrics during a run: `/metrics` and Prometheus remote write.
//! * [`cli`]: the command line.
//! * [`testserver`]: a small protocol v1 server for tests and for measuring
//!   loadgen itself.

pub mod arrivals;
pub mod budget;
pub mod cli;
pub mod conversation;
pub mod direct;
pub mod handshake;
pub mod live;
pub mod metrics;
pub mod poll;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod run;
pub mod scenario;
pub mod session;
pub mod slo;
pub mod sweep;
pub mod system;
pub mod target;
pub mod testserver;
pub mod tls;
pub mod trace;
pub mod units;
