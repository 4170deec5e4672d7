//! HTTP/1.1, sans-IO: request parsing with limits, content negotiation and
//! response encoding.
//!
//! Built on `httparse` and the `http` crate's types; the connection shell in
//! `server` decides what to do with each request.

pub mod accept;
pub mod request;
pub mod response;
