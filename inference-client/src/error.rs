//! Errors: what a request's requester learns ([`InferenceError`]), and what
//! went wrong talking to one upstream server ([`Fault`]), which the pool
//! classifies to decide on failover and its circuit breaker.

use std::time::Duration;

/// Why a request failed (the `error` of [`crate::Event::Failed`]), or why the
/// service could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    /// No endpoint can take the request: every one is down, paused after a
    /// 429/503, or has its circuit breaker open, or every one was tried.
    #[error(
        "no inference endpoint is available (all are down, overloaded or behind an open circuit breaker)"
    )]
    Unavailable,
    /// The request's deadline passed, queued or streaming.
    #[error("the inference request missed its deadline")]
    Deadline,
    /// An endpoint failed after the reply had started (no failover is possible
    /// once a token was delivered).
    #[error("the inference server failed mid-reply: {0}")]
    Upstream(String),
    /// The request was cancelled by its requester.
    #[error("the inference request was cancelled")]
    Cancelled,
    /// The service's queue is full (admission should have refused it).
    #[error("the inference queue is full; call Client::admit before submitting")]
    Overloaded,
    /// The request cannot be served as given.
    #[error("invalid inference request: {0}")]
    Invalid(String),
    /// The service stopped (or its thread is gone) before the request finished.
    #[error("the inference service has shut down")]
    Shutdown,
    /// The configuration cannot be used.
    #[error("invalid inference configuration: {0}")]
    Config(String),
    /// The service thread or its runtime could not start.
    #[error("the inference service cannot start: {0}")]
    Start(String),
}

/// What went wrong with one upstream call. Before the first token these fail
/// over to another endpoint; after it they become [`InferenceError::Upstream`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// Connecting failed (refused, unreachable, timed out).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No bytes arrived within the read timeout.
    #[error("no data from the server for {0:?}")]
    Timeout(Duration),
    /// The server answered with an error status.
    #[error("HTTP {status}{}: {body}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    Status {
        /// The status code.
        status: u16,
        /// The `Retry-After` header, in seconds form.
        retry_after: Option<Duration>,
        /// The start of the response body, for the log.
        body: String,
    },
    /// The response broke HTTP, chunked coding, SSE or the OpenAI schema.
    #[error("malformed response: {0}")]
    Protocol(String),
    /// The connection was reset or closed before the response was complete.
    #[error("connection lost: {0}")]
    Closed(String),
}

impl Fault {
    /// Whether this is the server saying "too busy, come back later" (429,
    /// or 503 with `Retry-After`) rather than a failure.
    pub fn overloaded(&self) -> Option<Duration> {
        match self {
            Fault::Status {
                status: 429,
                retry_after,
                ..
            } => Some(retry_after.unwrap_or(Duration::from_secs(1))),
            Fault::Status {
                status: 503,
                retry_after: Some(d),
                ..
            } => Some(*d),
            _ => None,
        }
    }
}
