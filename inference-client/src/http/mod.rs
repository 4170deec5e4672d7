//! HTTP/1.1 for the OpenAI-compatible client and the simulator's server.
//!
//! `request` and `response` are sans-IO (httparse into `http` types, bodies by
//! their framing, with limits); `conn` is the monoio shell of one client
//! connection. The simulator's server shell lives in `crate::sim::server`.

pub mod conn;
pub mod request;
pub mod response;

pub use conn::{Collect, Conn, ReadFailure, ResponseSink, TlsTarget};
pub use response::{Framing, HttpError, Part, ResponseDecoder, ResponseHead};
