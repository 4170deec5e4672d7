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
//! * [`scenario`]: the scenario file and its stages; [`arrivals`]: constant,
//!   Poisson and gamma arrival schedules; [`units`]: durations and rates.
//! * [`session`]: one simulated visitor's protocol v1 state machine;
//!   [`protocol`]: the frames it sends; [`handshake`]: the client side of the
//!   opening handshake.
//! * [`metrics`]: the HdrHistograms and counts; [`budget`], [`slo`]: budgets
//!   and their verdict.
//! * [`report`]: JSON, HDR interval logs, JUnit, the SVG plot, the summary.
//!
//! I/O shells:
//! * [`run`]: the monoio workers that only move bytes and time;
//!   [`target`]: resolving the URL and the source addresses; [`system`]: the
//!   machine's limits; [`progress`]: the live line.
//! * [`cli`]: the command line.
//! * [`testserver`]: a small protocol v1 server for tests and for measuring
//!   loadgen itself.

pub mod arrivals;
pub mod budget;
pub mod cli;
pub mod handshake;
pub mod metrics;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod run;
pub mod scenario;
pub mod session;
pub mod slo;
pub mod system;
pub mod target;
pub mod testserver;
pub mod units;
