//! The live-chat wire: what the gateway and its clients say to each other,
//! as plain functions and types over bytes.
//!
//! This crate promises no I/O: no sockets, no files, no clock, no threads of
//! its own. Callers (the gateway's server shell, the load generator) read the
//! bytes, hand them in, and write the bytes that come out.
//!
//! # Layout
//!
//! * [`ws`]: the WebSocket codec (RFC 6455), both roles.
//!   * [`ws::frame`]: frame headers, masking, frame encoding.
//!   * [`ws::message`]: one connection's [`ws::Receiver`]: fragmentation,
//!     control frames between fragments, UTF-8 validation, close frames.
//!   * [`ws::close`]: the close status codes.
//! * [`chat`]: protocol v1's messages and the [`chat::ErrorCode`] of its
//!   `error` frames.
//!   * [`chat::client`]: client frames ([`chat::client::ClientMsg`]) parsed in
//!     place by simd-json onto a reused tape.
//!   * [`chat::server`]: server frames ([`chat::server::ServerMsg`]) serialized
//!     once, then shared by every socket of a session.

pub mod chat;
pub mod ws;
