//! The WebSocket engine (RFC 6455), sans-IO.
//!
//! `frame` reads and writes frame headers, `message` assembles messages and
//! enforces the protocol's rules, `handshake` answers the opening handshake,
//! `close` names the status codes. Nothing here touches a socket: the I/O
//! shell in `server` feeds bytes in and writes the bytes that come out.

pub mod close;
pub mod frame;
pub mod handshake;
pub mod message;

pub use frame::OpCode;
pub use message::{Event, Limits, ProtocolError, Receiver, Role};
