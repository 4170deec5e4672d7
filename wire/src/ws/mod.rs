//! The WebSocket codec (RFC 6455), sans-IO.
//!
//! `frame` reads and writes frame headers, `message` assembles messages and
//! enforces the protocol's rules, `close` names the status codes. Nothing here
//! touches a socket: the caller feeds bytes in and writes the bytes that come
//! out. The opening handshake is HTTP and lives with each side's HTTP code
//! (the gateway's `ws::handshake`, loadgen's `handshake`).

pub mod close;
pub mod frame;
pub mod message;

pub use frame::OpCode;
pub use message::{Event, Limits, ProtocolError, Receiver, Role};
