//! Protocol v1's chat messages (PROTOCOL.md): what clients send (`client`),
//! what the server sends (`server`), and the error codes both sides share.

pub mod client;
pub mod server;

use serde::Serialize;

/// The `code` of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, a missing or wrong field.
    BadRequest,
    /// A `type` the server does not know.
    UnknownType,
    /// The text is over the chat message limit; the session lives on.
    TooLarge,
    /// Too many messages; resend after `retry_after_ms`.
    RateLimited,
    /// Over capacity: sent instead of the `ack`; the message was not stored.
    Busy,
    /// The inference pool failed: sent after the `ack`; a person is offered.
    Unavailable,
    /// A long-poll cursor older than what the server keeps.
    CursorExpired,
    /// A fault of the server's own.
    Internal,
}

impl ErrorCode {
    /// Every code, in a fixed order (metrics are indexed by it).
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Busy,
        ErrorCode::Unavailable,
        ErrorCode::CursorExpired,
        ErrorCode::Internal,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::CursorExpired => "cursor_expired",
            ErrorCode::Internal => "internal",
        }
    }

    /// The code with this wire name.
    pub fn from_wire(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Position in [`ErrorCode::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
