//! The service's settings: where inference runs (in-process, or a pool of
//! OpenAI-compatible endpoints by URL), the model name and bearer key sent,
//! TLS trust, batching, admission, deadlines, health checks, timeouts; and
//! the parsing of endpoint URLs.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::InferenceError;
use crate::pool::PoolConfig;
use crate::runtime::IoDriver;
use crate::sim::SimOptions;

/// The word that selects the in-process simulator where URLs are expected.
pub const IN_PROCESS: &str = "in-process";

/// Where inference runs.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The simulator, inside the service thread (no HTTP): the embedded
    /// default.
    InProcess(SimOptions),
    /// A pool of OpenAI-compatible servers.
    Endpoints(Vec<EndpointConfig>),
}

impl Backend {
    /// From the gateway's `--inference` values: none, or `in-process`, is the
    /// in-process simulator; otherwise each is an endpoint URL with default
    /// settings.
    pub fn from_urls<S: AsRef<str>>(urls: &[S]) -> Result<Backend, InferenceError> {
        let in_process = urls.iter().filter(|u| u.as_ref() == IN_PROCESS).count();
        if urls.is_empty() || in_process == urls.len() {
            return Ok(Backend::InProcess(SimOptions::default()));
        }
        if in_process > 0 {
            return Err(InferenceError::Config(format!(
                "{IN_PROCESS:?} cannot be mixed with endpoint URLs"
            )));
        }
        Ok(Backend::Endpoints(
            urls.iter()
                .map(|u| EndpointConfig::new(u.as_ref()))
                .collect(),
        ))
    }
}

/// A bearer key for an endpoint (`Authorization: Bearer ...`). `Debug` and
/// `Display` never show it, so a logged or printed configuration cannot leak
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key; `None` for an empty string (an unset environment variable is
    /// often an empty one).
    pub fn new(key: impl Into<String>) -> Option<ApiKey> {
        let k = key.into();
        (!k.trim().is_empty()).then(|| ApiKey(k.trim().to_string()))
    }

    /// The key itself, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which API an endpoint is called with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Api {
    /// `/v1/chat/completions`, one stream per request; a batch goes out as
    /// concurrent streams. Works with every server, using the model's own
    /// chat template.
    #[default]
    Chat,
    /// `/v1/completions` with an array `prompt`: one HTTP request carries a
    /// whole batch, choices told apart by `index`. The chat is rendered with
    /// the ChatML template ([`crate::openai::render_chatml`]).
    Completions,
}

/// One OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// `http://host[:port]` or `https://host[:port]`, optionally with a
    /// path prefix (a trailing `/v1` is accepted and dropped). `https` is
    /// checked against the system's roots and [`ServiceConfig::ca_file`].
    pub url: String,
    /// Most sequences in flight on it at once (beyond, requests wait in the
    /// service's queue).
    pub max_sequences: usize,
    /// The API used.
    pub api: Api,
    /// The model name to send (default: [`ServiceConfig::model`]).
    pub model: Option<String>,
    /// Sent as `Authorization: Bearer ...` (default:
    /// [`ServiceConfig::api_key`]).
    pub api_key: Option<ApiKey>,
    /// Ask for a usage chunk (`stream_options.include_usage`); turn off for
    /// servers that reject the field.
    pub include_usage: bool,
    /// Path of the health check (`GET`, any 2xx passes). `/v1/models` works
    /// on every OpenAI-compatible server; vLLM, TGI and llama.cpp also serve
    /// `/health`.
    pub health_path: String,
}

impl EndpointConfig {
    /// An endpoint with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        EndpointConfig {
            url: url.into(),
            max_sequences: 64,
            api: Api::Chat,
            model: None,
            api_key: None,
            include_usage: true,
            health_path: "/v1/models".into(),
        }
    }
}

/// The service's settings. [`ServiceConfig::default`] is the in-process
/// simulator with the documented defaults.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Where inference runs.
    pub backend: Backend,
    /// The model name sent to endpoints (each may name its own).
    pub model: String,
    /// The bearer key sent to endpoints that name none of their own.
    pub api_key: Option<ApiKey>,
    /// A PEM file of CA certificates trusted for `https` endpoints besides
    /// the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Probe each endpoint with `GET /v1/models` at start and log what it
    /// serves (see [`crate::probe`]).
    pub probe_at_start: bool,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Longest a request waits for its batch to fill.
    pub max_wait: Duration,
    /// Predicted time to first token above which admission refuses (`busy`).
    pub ttft_budget: Duration,
    /// Most requests waiting in the service's queue.
    pub queue_capacity: usize,
    /// A request's deadline when it names none.
    pub request_deadline: Duration,
    /// Between health checks of each endpoint (zero: none).
    pub health_interval: Duration,
    /// A health check's timeout.
    pub health_timeout: Duration,
    /// Connecting to an endpoint (a refused connection fails at once; this
    /// bounds an unreachable host, and covers one SYN retransmission).
    pub connect_timeout: Duration,
    /// Longest silence on an upstream response before it counts as failed.
    pub read_timeout: Duration,
    /// Endpoint selection, circuit breaker, health thresholds.
    pub pool: PoolConfig,
    /// Admission's prefill cost per prompt token (default: the in-process
    /// model's, else 100 µs).
    pub prefill_per_token: Option<Duration>,
    /// Admission's base TTFT before any is measured (default: the in-process
    /// model's decode step, else 50 ms).
    pub initial_ttft: Option<Duration>,
    /// Admission's service time per sequence before any is measured
    /// (default: 40 decode steps of the in-process model, else 1 s).
    pub initial_service: Option<Duration>,
    /// The service thread's io driver.
    pub io_driver: IoDriver,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            backend: Backend::InProcess(SimOptions::default()),
            model: "default".into(),
            api_key: None,
            ca_file: None,
            probe_at_start: true,
            max_batch: 16,
            max_wait: Duration::from_millis(2),
            ttft_budget: Duration::from_secs(1),
            queue_capacity: 1024,
            request_deadline: Duration::from_secs(30),
            health_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(10),
            pool: PoolConfig::default(),
            prefill_per_token: None,
            initial_ttft: None,
            initial_service: None,
            io_driver: IoDriver::Auto,
        }
    }
}

impl ServiceConfig {
    /// The defaults with this backend.
    pub fn with_backend(backend: Backend) -> Self {
        ServiceConfig {
            backend,
            ..Default::default()
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), InferenceError> {
        let bad = |m: &str| Err(InferenceError::Config(m.into()));
        if self.max_batch == 0 {
            return bad("max_batch must be at least 1");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be at least 1");
        }
        if self.request_deadline.is_zero() {
            return bad("request_deadline must be positive");
        }
        match &self.backend {
            Backend::InProcess(o) => o
                .latency
                .validate()
                .map_err(|e| InferenceError::Config(format!("in-process simulator: {e}"))),
            Backend::Endpoints(eps) if eps.is_empty() => bad("no endpoints"),
            Backend::Endpoints(eps) if eps.len() > 64 => bad("at most 64 endpoints"),
            Backend::Endpoints(eps) => {
                for e in eps {
                    if e.max_sequences == 0 {
                        return bad(&format!("{}: max_sequences must be at least 1", e.url));
                    }
                    if !e.health_path.starts_with('/') {
                        return bad(&format!("{}: health_path must start with /", e.url));
                    }
                    parse_url(&e.url)?;
                    let model = e.model.as_deref().unwrap_or(&self.model);
                    if model.trim().is_empty() {
                        return bad(&format!("{}: the model name is empty", e.url));
                    }
                }
                Ok(())
            }
        }
    }
}

/// An endpoint URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Host name or address, as in the URL.
    pub host: String,
    /// Port (80, or 443 for `https`, by default).
    pub port: u16,
    /// `https`.
    pub tls: bool,
    /// The `Host` header.
    pub authority: String,
    /// Path prefix before `/v1/...`, without a trailing slash (often empty).
    pub base: String,
}

/// Parses `http[s]://host[:port][/prefix][/v1]`.
pub(crate) fn parse_url(url: &str) -> Result<Target, InferenceError> {
    let bad = |why: &str| InferenceError::Config(format!("endpoint URL {url:?}: {why}"));
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("use http://host:port or https://host:port")),
    };
    let auth = uri.authority().ok_or_else(|| bad("no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad("credentials in the URL are not supported; use api_key"));
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let mut base = uri.path().trim_end_matches('/').to_string();
    if base.ends_with("/v1") {
        base.truncate(base.len() - 3);
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not supported"));
    }
    if tls {
        crate::tls::server_name(host).map_err(|e| bad(&e))?;
    }
    Ok(Target {
        host: host.to_string(),
        port: auth.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        tls,
        authority: auth.as_str().to_string(),
        base,
    })
}

/// Resolves a target's address (the first the resolver gives).
pub(crate) fn resolve(t: &Target) -> Result<SocketAddr, InferenceError> {
    (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| InferenceError::Config(format!("cannot resolve {}: {e}", t.host)))?
        .next()
        .ok_or_else(|| InferenceError::Config(format!("{} resolves to no address", t.host)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:8000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.base.as_str()),
            ("127.0.0.1", 8000, "")
        );
        assert_eq!(t.authority, "127.0.0.1:8000");
        let t = parse_url("http://gpu-1.internal/v1/").unwrap();
        assert_eq!((t.port, t.base.as_str()), (80, ""));
        let t = parse_url("http://[::1]:9000/proxy/v1").unwrap();
        assert_eq!((t.host.as_str(), t.base.as_str()), ("::1", "/proxy"));
        let t = parse_url("https://gpu.example/v1").unwrap();
        assert_eq!(
            (t.port, t.tls, t.authority.as_str()),
            (443, true, "gpu.example")
        );
        let t = parse_url("https://127.0.0.1:8443").unwrap();
        assert_eq!((t.port, t.tls), (8443, true));
        assert!(!parse_url("http://x:1").unwrap().tls);
        for bad in [
            "x:1",
            "ftp://x",
            "http://u:p@x:1",
            "http://x:1/?a=b",
            "not a url",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            resolve(&parse_url("http://127.0.0.1:8000").unwrap()).unwrap(),
            "127.0.0.1:8000".parse().unwrap()
        );
    }

    #[test]
    fn backends_from_urls() {
        assert!(matches!(
            Backend::from_urls::<&str>(&[]).unwrap(),
            Backend::InProcess(_)
        ));
        assert!(matches!(
            Backend::from_urls(&["in-process"]).unwrap(),
            Backend::InProcess(_)
        ));
        match Backend::from_urls(&["http://a:1", "http://b:2"]).unwrap() {
            Backend::Endpoints(e) => assert_eq!(e.len(), 2),
            _ => panic!("endpoints expected"),
        }
        assert!(Backend::from_urls(&["in-process", "http://a:1"]).is_err());
    }

    #[test]
    fn validation() {
        assert!(ServiceConfig::default().validate().is_ok());
        let c =
            ServiceConfig::with_backend(Backend::Endpoints(vec![EndpointConfig::new("ftp://x")]));
        assert!(c.validate().is_err());
        let c = ServiceConfig {
            model: " ".into(),
            ..ServiceConfig::with_backend(Backend::Endpoints(vec![EndpointConfig::new("http://x")]))
        };
        assert!(c.validate().is_err(), "an empty model name");
        let c = ServiceConfig {
            max_batch: 0,
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn keys_never_print() {
        let k = ApiKey::new("sk-secret-123").unwrap();
        assert_eq!(k.expose(), "sk-secret-123");
        let mut e = EndpointConfig::new("http://x:1");
        e.api_key = Some(k.clone());
        let cfg = ServiceConfig {
            api_key: Some(k),
            ..ServiceConfig::with_backend(Backend::Endpoints(vec![e]))
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("sk-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
        assert!(ApiKey::new("  ").is_none());
    }
}
