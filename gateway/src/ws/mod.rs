//! The WebSocket engine (RFC 6455), sans-IO.
//!
//! The codec (`frame`, `message`, `close`) is the `wire` crate's, shared with
//! the load generator and re-exported here; `handshake` answers the opening
//! handshake over the gateway's `http` types. Nothing here touches a socket:
//! the I/O shell in `server` feeds bytes in and writes the bytes that come out.

pub mod handshake;

pub use wire::ws::{close, frame, message};
pub use wire::ws::{Event, Limits, OpCode, Receiver, Role};
