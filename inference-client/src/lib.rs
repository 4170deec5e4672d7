//! Inference for the live-chat gateway: an OpenAI-compatible streaming client
//! over a pool of endpoints, a dynamic batcher, surge admission, and a
//! simulator of a GPU inference server (in-process, or served over HTTP by
//! the `inference-sim` binary).
//!
//! # Using it from the gateway
//!
//! ```no_run
//! use inference_client::{
//!     count_prompt_tokens, Ask, Backend, ChatMessage, Event, GenerateRequest, Role, Service,
//!     ServiceConfig,
//! };
//!
//! // One service per process: its own thread and monoio runtime.
//! let cfg = ServiceConfig::with_backend(Backend::from_urls(&["in-process"])?);
//! let service = Service::start(cfg)?;
//!
//! // One client per gateway worker, moved into the worker's thread; its
//! // events go to the sink (here a flume channel, as the workers' inboxes are).
//! let (tx, rx) = flume::unbounded::<Event>();
//! let client = service.client(Box::new(tx));
//!
//! let messages = vec![
//!     ChatMessage::new(Role::System, "You answer briefly."),
//!     ChatMessage::new(Role::User, "Where is my parcel?"),
//! ];
//! match client.admit(Ask::tokens(count_prompt_tokens(&messages))) {
//!     Err(busy) => println!("busy, retry after {:?}", busy.retry_after),
//!     Ok(place) => {
//!         client.submit_admitted(GenerateRequest::new(1, messages, 256), place);
//!         for ev in rx.iter() {
//!             match ev {
//!                 Event::Token { text, .. } => print!("{text}"),
//!                 Event::Done { timings, .. } => { println!(" ({:?})", timings.ttft); break }
//!                 Event::Failed { error, .. } => { println!("failed: {error}"); break }
//!                 Event::Embeddings { .. } => {}
//!             }
//!         }
//!     }
//! }
//! # Ok::<(), inference_client::InferenceError>(())
//! ```
//!
//! The API, in short:
//!
//! - [`Service::start`]`(ServiceConfig) -> Result<Service, InferenceError>`; the
//!   backend is [`Backend::InProcess`] (the default) or [`Backend::Endpoints`]
//!   (see [`Backend::from_urls`] for the gateway's repeatable `--inference URL`).
//! - [`Service::client`]`(Box<dyn EventSink>) -> Client`, [`Service::stats`]
//!   `-> &Stats`, [`Service::shutdown`] (or drop).
//! - [`Client::admit`]`(Ask) -> Result<Admitted, Busy>`, decided at once
//!   on the caller's thread; [`Client::submit_admitted`]`(GenerateRequest, Admitted)`
//!   (or [`Client::submit`] without admission);
//!   [`Client::cancel`]`(RequestId)`; [`Client::embed`]`(RequestId, Vec<String>)`.
//! - Each request's events at the sink: zero or more [`Event::Token`], then
//!   exactly one [`Event::Done`] or [`Event::Failed`] (with an
//!   [`InferenceError`]: `Unavailable`, `Deadline`, `Upstream`, `Cancelled`, ...).
//! - [`count_tokens`] / [`count_prompt_tokens`]: the token estimate used for
//!   budgets and admission.
//!
//! # Layout
//!
//! Sans-IO cores:
//! * [`chunked`], [`sse`], [`http`] (`request`, `response`): HTTP/1.1 chunked
//!   bodies, server-sent events, request encoding and response parsing.
//! * [`openai`]: the OpenAI-compatible chat and completion wire types.
//! * [`pool`]: the endpoint pool: health, failover, circuit breakers.
//! * [`batcher`]: the dynamic batcher in front of the pool.
//! * [`admission`]: surge admission: predicted time to first token, the
//!   virtual line of places, honest retry-after.
//! * [`tokens`]: the token estimate for budgets and admission.
//! * [`probe`]: what a start-time probe of an endpoint learns.
//! * [`sim::engine`], [`sim::model`]: the simulated GPU server's scheduler and
//!   latency model.
//! * [`error`], [`stats`]: the errors requesters see, the service's figures.
//!
//! I/O shells on monoio:
//! * [`http::conn`], [`tls`]: connections to endpoints, rustls driven over
//!   monoio's TCP stream.
//! * [`service`]: the service thread and the clients of the gateway's workers.
//! * [`sim::server`]: the simulator served over HTTP (`inference-sim`).
//! * [`runtime`]: the io driver choice (io_uring, epoll) and the runtime built
//!   on it; [`signal`]: stopping on SIGTERM.

pub mod admission;
pub mod batcher;
pub mod chunked;
pub mod error;
pub mod http;
pub mod openai;
pub mod pool;
pub mod probe;
pub mod runtime;
pub mod service;
pub mod signal;
pub mod sim;
pub mod sse;
pub mod stats;
pub mod tls;
pub mod tokens;

pub use admission::{Ask, Busy};
pub use error::{Fault, InferenceError};
pub use openai::{ChatMessage, FinishReason, Role, Usage};
pub use runtime::{DriverKind, IoDriver};
pub use service::{
    Admitted, Api, ApiKey, Backend, Client, EndpointConfig, Event, EventSink, FnSink,
    GenerateRequest, RequestId, Service, ServiceConfig, Timings,
};
pub use sim::{LatencyModel, SimOptions};
pub use stats::{HistogramSnapshot, Stats};
pub use tokens::{count_prompt_tokens, count_tokens};
