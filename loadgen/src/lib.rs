//! loadgen: the load generator for the live-chat gateway.
//!
//! It opens very many WebSocket sessions speaking protocol v1, offers load in
//! stages under the open model (constant, Poisson or gamma arrivals; latency
//! counted from the due time, so no coordinated omission) or the closed model
//! (think time), records `connect`, `rtt`, `ttft`, `itl` and `reply` as
//! HdrHistograms, checks budgets, and writes JSON, HDR interval logs, JUnit and
//! an SVG plot.
//!
//! The core is sans-IO: [`scenario`], [`arrivals`], [`budget`], [`slo`],
//! [`session`], [`metrics`] and [`report`] are plain functions and state
//! machines tested without sockets. [`run`] is the monoio shell that only moves
//! bytes and time; [`testserver`] is a small protocol v1 server for tests and
//! for measuring loadgen itself.

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
