//! Configuration: command-line flags and environment variables over an
//! optional TOML file over built-in defaults.
//!
//! Every setting has a default that runs the gateway with no external service.
//! Unknown keys in the file are refused, so a typo is an error at start, not a
//! setting silently ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use inference_client::IoDriver;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::session::ratelimit::Rate;
use crate::sites::SiteConfig;

/// Command line of the `gateway` binary.
#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Live-chat gateway: WebSocket and long-polling server for website chat widgets"
)]
pub struct Cli {
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server settings.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the effective configuration as TOML and exit.
    PrintConfig,
    /// The sites' knowledge bases.
    #[command(subcommand)]
    Kb(KbCommand),
}

/// `gateway kb ...`
#[derive(Debug, Subcommand)]
pub enum KbCommand {
    /// Ingest files and folders (Markdown, HTML, text) into a site's knowledge
    /// base; the site is made with defaults if it does not exist. Changed
    /// documents replace their chunks, unchanged ones are skipped, bad files are
    /// named and skipped.
    Add {
        /// The site.
        #[arg(long)]
        site: String,
        /// The data directory the server uses [default: the configured one].
        #[arg(long = "data-dir")]
        data_dir: Option<PathBuf>,
        /// Files and folders (folders recursively).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// Flags and environment variables; each overrides the file.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "LC_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Worker threads, one runtime each [default: one per core].
    #[arg(long, env = "LC_WORKERS")]
    pub workers: Option<usize>,
    /// io driver: auto, uring or epoll [default: auto].
    #[arg(long, env = "LC_IO_DRIVER", value_enum)]
    pub io_driver: Option<IoDriver>,
    /// Directory for the gateway's data [default: ./data].
    #[arg(long, env = "LC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long, env = "LC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Serve the `/echo` WebSocket route (for conformance tests).
    #[arg(long, env = "LC_ECHO")]
    pub echo: bool,
    /// Bearer token for the `/admin/` API (disabled when unset).
    #[arg(long, env = "LC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Most open connections before new ones get 503 [default: open-files limit less a reserve].
    #[arg(long, env = "LC_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Log filter, as RUST_LOG [default: info].
    #[arg(long, env = "LC_LOG")]
    pub log: Option<String>,
    /// Do not pin workers to cores.
    #[arg(long, env = "LC_NO_PIN")]
    pub no_pin: bool,
    /// An OpenAI-compatible inference server, `http://host:port` or
    /// `https://host:port`, `/v1` optional (repeatable; none: the in-process
    /// simulator).
    #[arg(long = "inference", env = "LC_INFERENCE", value_delimiter = ',')]
    pub inference: Vec<String>,
    /// The model name sent to the inference servers, e.g. `llama3.1:8b`
    /// [default: "default"].
    #[arg(long, env = "LC_INFERENCE_MODEL")]
    pub model: Option<String>,
    /// Bearer key sent to the inference servers (`Authorization: Bearer ...`).
    #[arg(long, env = "LC_INFERENCE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM file of CA certificates trusted for `https` inference servers,
    /// besides the system's roots.
    #[arg(long = "inference-ca", env = "LC_INFERENCE_CA")]
    pub inference_ca: Option<PathBuf>,
}

/// The whole configuration, as the TOML file spells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// io driver.
    pub io_driver: IoDriver,
    /// Directory for the gateway's data.
    pub data_dir: PathBuf,
    /// Serve `/echo`.
    pub echo: bool,
    /// Pin each worker to a core.
    pub pin_workers: bool,
    /// Log filter.
    pub log: String,
    /// Admin API.
    pub admin: AdminConfig,
    /// Limits and timeouts.
    pub limits: LimitsConfig,
    /// Sessions and their cookie.
    pub session: SessionConfig,
    /// Inference: prompts, the pool, batching, admission.
    pub inference: InferenceConfig,
    /// The transcript store (SQLite in the data directory).
    pub store: StoreConfig,
    /// The agent desk: offers, waits, sign-ins.
    pub agents: AgentsConfig,
    /// Knowledge bases: embeddings, retrieval, the demo site's built-in one.
    pub knowledge: KnowledgeConfig,
    /// Sites by id.
    pub sites: BTreeMap<String, SiteConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            io_driver: IoDriver::Auto,
            data_dir: PathBuf::from("data"),
            echo: false,
            pin_workers: true,
            log: "info".into(),
            admin: AdminConfig::default(),
            limits: LimitsConfig::default(),
            session: SessionConfig::default(),
            inference: InferenceConfig::default(),
            store: StoreConfig::default(),
            agents: AgentsConfig::default(),
            knowledge: KnowledgeConfig::default(),
            sites: BTreeMap::new(),
        }
    }
}

/// Admin API settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token; the admin API answers 403 to everything while unset.
    pub token: Option<String>,
}

/// Limits, timeouts and rates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open connections before new ones get 503; 0 means the open-files limit less a reserve.
    pub max_connections: usize,
    /// Largest WebSocket frame payload on `/ws` (larger: close 1009).
    pub max_frame_bytes: u64,
    /// Largest chat message text (larger: `error` `too_large`).
    pub max_text_bytes: usize,
    /// Largest message on `/echo` (Autobahn sends 16 MiB).
    pub echo_max_message_bytes: usize,
    /// Request line and headers.
    pub max_head_bytes: usize,
    /// Header fields per request.
    pub max_headers: usize,
    /// Request body (`POST /poll/send`, admin API).
    pub max_body_bytes: usize,
    /// Time to receive a whole request before 408.
    pub handshake_timeout_ms: u64,
    /// Idle keep-alive HTTP connection lifetime.
    pub keepalive_timeout_ms: u64,
    /// Quiet time before the server pings a WebSocket.
    pub ping_interval_ms: u64,
    /// Quiet time (no frame, no pong) before a WebSocket is dropped.
    pub idle_timeout_ms: u64,
    /// Bytes queued for a slow reader before it is closed with 1008.
    pub outbound_queue_bytes: usize,
    /// Chat messages per session.
    pub message_rate: Rate,
    /// Frames of any kind per connection.
    pub frame_rate: Rate,
    /// How long `GET /poll/recv` is held.
    pub poll_hold_ms: u64,
    /// Server messages kept per session for long-pollers.
    pub poll_log_messages: usize,
    /// Time given to open connections to close on shutdown.
    pub shutdown_grace_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 0,
            max_frame_bytes: 64 * 1024,
            max_text_bytes: 4096,
            echo_max_message_bytes: 16 * 1024 * 1024,
            max_head_bytes: 8 * 1024,
            max_headers: 64,
            max_body_bytes: 256 * 1024,
            handshake_timeout_ms: 10_000,
            keepalive_timeout_ms: 60_000,
            ping_interval_ms: 30_000,
            idle_timeout_ms: 75_000,
            outbound_queue_bytes: 1024 * 1024,
            message_rate: Rate {
                per_sec: 2.0,
                burst: 10.0,
            },
            frame_rate: Rate {
                per_sec: 50.0,
                burst: 200.0,
            },
            poll_hold_ms: 25_000,
            poll_log_messages: 1000,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// How the session cookie is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CookieMode {
    /// `SameSite=Lax`: the widget's iframe and the page share the gateway's site.
    Lax,
    /// `SameSite=None; Secure; Partitioned`: for embedding on other sites over HTTPS.
    CrossSite,
}

/// Sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Cookie and session lifetime, in seconds (default 30 days).
    pub lifetime_secs: u64,
    /// Cookie attributes.
    pub cookie: CookieMode,
    /// Most items `welcome`'s history carries.
    pub history_items: usize,
    /// Seconds a quiet session stays in memory; the store keeps it after that.
    pub memory_idle_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            lifetime_secs: 30 * 24 * 3600,
            cookie: CookieMode::Lax,
            history_items: 200,
            memory_idle_secs: 3600,
        }
    }
}

/// The agent desk's timing (docs/protocol.md, "Agent desk").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// How long an offer to an agent stays open, milliseconds.
    pub offer_timeout_ms: u64,
    /// How long a conversation waits for a person before `none_available`, milliseconds.
    pub queue_timeout_ms: u64,
    /// How long an agent's conversations wait for one of their sockets to come back, milliseconds.
    pub reconnect_grace_ms: u64,
    /// How long a dashboard sign-in lasts, seconds.
    pub login_ttl_secs: u64,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            offer_timeout_ms: 20_000,
            queue_timeout_ms: 120_000,
            reconnect_grace_ms: 15_000,
            login_ttl_secs: 12 * 3600,
        }
    }
}

/// Where the vectors of a knowledge base come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderChoice {
    /// all-MiniLM-L6-v2 in-process where its files are, else lexical (BM25)
    /// alone, said in the log.
    #[default]
    Auto,
    /// all-MiniLM-L6-v2 in-process; without its files the gateway logs an
    /// error (not the quiet line of `auto`) and serves BM25 alone.
    Minilm,
    /// The inference pool's `/v1/embeddings` (the model `inference.model`
    /// names); lexical alone while the pool cannot answer at start.
    Pool,
    /// No vectors: BM25 alone.
    Lexical,
}

/// Knowledge bases (docs/operations.md, "Knowledge bases").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgeConfig {
    /// Where vectors come from.
    pub embedder: EmbedderChoice,
    /// Chunks given to the model with each question.
    pub top_k: usize,
    /// Threads that retrieve (and ingest uploads); retrieval with MiniLM
    /// costs about 13 ms of CPU per question, never on a worker.
    pub threads: usize,
    /// Give the built-in demo site a small knowledge base (a fictional web
    /// shop's help pages) the first time it starts without one.
    pub demo: bool,
    /// Largest document accepted by `PUT /admin/sites/{site}/kb/{name}`,
    /// bytes (the admin token is checked before a body over
    /// `limits.max_body_bytes` is read).
    pub max_upload_bytes: usize,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        KnowledgeConfig {
            embedder: EmbedderChoice::Auto,
            top_k: 5,
            threads: 1,
            demo: true,
            max_upload_bytes: 4 << 20,
        }
    }
}

/// How durable a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreSync {
    /// SQLite WAL with `synchronous=NORMAL`: a committed message survives a
    /// crash of the gateway process (not a power loss).
    #[default]
    Normal,
    /// `synchronous=FULL`: it also survives a power loss (one fsync per commit).
    Full,
}

/// The transcript store.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Durability of each commit.
    pub sync: StoreSync,
}

/// Inference settings: where answers come from, batching, admission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// OpenAI-compatible servers, each a URL (`http[s]://host:port`) or a
    /// table `{ url, model, api_key, max_sequences }` overriding the settings
    /// below for that server; none means the in-process simulator
    /// (`--inference URL`, repeatable, replaces them).
    pub endpoints: Vec<EndpointSetting>,
    /// `chat` (`/v1/chat/completions`, one stream per request) or
    /// `completions` (`/v1/completions`, a whole batch in one request).
    pub api: InferenceApi,
    /// The model name sent to the servers (`--model`).
    pub model: String,
    /// Bearer key sent to the servers (`--api-key`); never printed.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "redacted")]
    pub api_key: Option<String>,
    /// PEM file of CA certificates trusted for `https` servers besides the
    /// system's roots (`--inference-ca`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Sequences each server runs at once.
    pub max_sequences: usize,
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Longest a request waits for its batch to fill, milliseconds.
    pub max_wait_ms: u64,
    /// A message whose predicted time to first token is longer is refused
    /// with `busy`, milliseconds.
    pub ttft_budget_ms: u64,
    /// Requests waiting for a server, at most.
    pub queue_capacity: usize,
    /// A reply not finished in this long fails (`unavailable`), milliseconds.
    pub deadline_ms: u64,
    /// Tokens per answer, at most.
    pub max_tokens: u32,
    /// Token budget of a prompt: the site's instructions and as much of the
    /// conversation as fits, newest first.
    pub context_tokens: u32,
    /// A reply nobody has watched for this long (the visitor left) is
    /// cancelled upstream, milliseconds.
    pub abandon_after_ms: u64,
    /// The in-process simulator's latency model.
    pub sim: SimSettings,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        InferenceConfig {
            endpoints: Vec::new(),
            api: InferenceApi::Chat,
            model: "default".into(),
            api_key: None,
            ca_file: None,
            max_sequences: 64,
            max_batch: 16,
            max_wait_ms: 2,
            ttft_budget_ms: 1000,
            queue_capacity: 1024,
            deadline_ms: 30_000,
            max_tokens: 256,
            context_tokens: 3000,
            abandon_after_ms: 10_000,
            sim: SimSettings::default(),
        }
    }
}

/// One inference server in `[inference] endpoints`: its URL, or a table
/// that also overrides the model, the key or the sequence cap for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EndpointSetting {
    /// `"http://host:port"`.
    Url(String),
    /// `{ url = "...", model = "...", api_key = "...", max_sequences = N }`.
    Table(EndpointTable),
}

/// An endpoint's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTable {
    /// `http[s]://host:port`.
    pub url: String,
    /// The model name sent to this server (default: `inference.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Its bearer key (default: `inference.api_key`); never printed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub api_key: Option<String>,
    /// Sequences it runs at once (default: `inference.max_sequences`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sequences: Option<usize>,
}

impl EndpointSetting {
    /// The URL.
    pub fn url(&self) -> &str {
        match self {
            EndpointSetting::Url(u) => u,
            EndpointSetting::Table(t) => &t.url,
        }
    }
}

/// Keys are written as `<redacted>` (by `print-config`), never as they are.
fn redacted<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

impl InferenceConfig {
    /// The inference client's endpoint settings: each server's own, else
    /// these.
    pub fn endpoint_configs(&self) -> Vec<inference_client::EndpointConfig> {
        use inference_client::{Api, ApiKey, EndpointConfig};
        self.endpoints
            .iter()
            .map(|s| {
                let mut e = EndpointConfig::new(s.url());
                e.max_sequences = self.max_sequences;
                e.api = match self.api {
                    InferenceApi::Chat => Api::Chat,
                    InferenceApi::Completions => Api::Completions,
                };
                if let EndpointSetting::Table(t) = s {
                    e.model = t.model.clone();
                    e.api_key = t.api_key.as_deref().and_then(ApiKey::new);
                    e.max_sequences = t.max_sequences.unwrap_or(self.max_sequences);
                }
                e
            })
            .collect()
    }

    /// The key for servers that name none of their own.
    pub fn api_key(&self) -> Option<inference_client::ApiKey> {
        self.api_key
            .as_deref()
            .and_then(inference_client::ApiKey::new)
    }
}

/// Which OpenAI API the gateway calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InferenceApi {
    /// `/v1/chat/completions`.
    #[default]
    Chat,
    /// `/v1/completions` with array prompts.
    Completions,
}

/// The simulated GPU server used when no endpoint is configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    /// Prefill cost per prompt token, microseconds.
    pub prefill_us_per_token: f64,
    /// One decode step with one sequence, milliseconds.
    pub decode_step_ms: f64,
    /// Extra step time per additional sequence, as a fraction of a step.
    pub batch_slowdown: f64,
    /// Sequences decoding at once (the KV cache); more wait.
    pub kv_capacity: usize,
    /// Each step's time varies by up to this fraction.
    pub jitter: f64,
    /// Seed of the jitter.
    pub seed: u64,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            prefill_us_per_token: 100.0,
            decode_step_ms: 20.0,
            batch_slowdown: 0.015,
            kv_capacity: 64,
            jitter: 0.0,
            seed: 1,
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Cause, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The file (if any) with flags and environment applied over it, checked.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let mut c = match &args.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        if let Some(v) = args.listen {
            c.listen = v;
        }
        if let Some(v) = args.workers {
            c.workers = v;
        }
        if let Some(v) = args.io_driver {
            c.io_driver = v;
        }
        if let Some(v) = &args.data_dir {
            c.data_dir = v.clone();
        }
        if args.echo {
            c.echo = true;
        }
        if let Some(v) = &args.admin_token {
            c.admin.token = Some(v.clone());
        }
        if let Some(v) = args.max_connections {
            c.limits.max_connections = v;
        }
        if let Some(v) = &args.log {
            c.log = v.clone();
        }
        if args.no_pin {
            c.pin_workers = false;
        }
        if !args.inference.is_empty() {
            c.inference.endpoints = args
                .inference
                .iter()
                .map(|u| EndpointSetting::Url(u.clone()))
                .collect();
        }
        if let Some(v) = &args.model {
            c.inference.model = v.clone();
        }
        if let Some(v) = &args.api_key {
            c.inference.api_key = Some(v.clone());
        }
        if let Some(v) = &args.inference_ca {
            c.inference.ca_file = Some(v.clone());
        }
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if l.max_frame_bytes < 125 {
            return bad("limits.max_frame_bytes", "must be at least 125");
        }
        if l.max_text_bytes == 0 {
            return bad("limits.max_text_bytes", "must be positive");
        }
        if l.poll_log_messages < 1000 {
            return bad(
                "limits.poll_log_messages",
                "the protocol promises at least 1000",
            );
        }
        if l.message_rate.burst < 1.0 || l.frame_rate.burst < 1.0 {
            return bad(
                "limits.message_rate / limits.frame_rate",
                "burst must be at least 1",
            );
        }
        if l.idle_timeout_ms <= l.ping_interval_ms {
            return bad(
                "limits.idle_timeout_ms",
                "must be longer than limits.ping_interval_ms",
            );
        }
        let inf = &self.inference;
        if inf.max_batch == 0 || inf.max_sequences == 0 || inf.queue_capacity == 0 {
            return bad(
                "inference",
                "max_batch, max_sequences and queue_capacity must be positive",
            );
        }
        if inf.max_tokens == 0 || inf.context_tokens < 64 {
            return bad(
                "inference",
                "max_tokens must be positive and context_tokens at least 64",
            );
        }
        if inf.model.trim().is_empty() {
            return bad("inference.model", "must not be empty");
        }
        for e in &inf.endpoints {
            if let EndpointSetting::Table(t) = e {
                if t.model.as_deref().is_some_and(|m| m.trim().is_empty())
                    || t.max_sequences == Some(0)
                {
                    return bad(
                        "inference.endpoints",
                        &format!("{}: model must not be empty, max_sequences positive", t.url),
                    );
                }
            }
        }
        if let Some(p) = &inf.ca_file {
            if !p.is_file() {
                return bad(
                    "inference.ca_file",
                    &format!("{} is not a readable file", p.display()),
                );
            }
        }
        if inf.sim.kv_capacity == 0 || inf.sim.decode_step_ms <= 0.0 {
            return bad(
                "inference.sim",
                "kv_capacity and decode_step_ms must be positive",
            );
        }
        let k = &self.knowledge;
        if k.top_k == 0 || k.top_k > 20 || k.threads == 0 {
            return bad("knowledge", "top_k must be 1 to 20 and threads at least 1");
        }
        if self.admin.token.as_deref().is_some_and(|t| t.len() < 16) {
            return bad("admin.token", "must be at least 16 characters");
        }
        for id in self.sites.keys() {
            if !crate::sites::valid_site_id(id) {
                return bad(
                    "sites",
                    &format!("site id {id:?} must be 1-64 of [A-Za-z0-9_-]"),
                );
            }
        }
        Ok(())
    }

    /// Worker count after resolving 0 to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(&ServeArgs::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.io_driver, IoDriver::Auto);
        assert!(c.worker_count() >= 1);
    }

    #[test]
    fn file_then_flags() {
        let c = Config::from_toml(
            r##"
            listen = "0.0.0.0:9000"
            workers = 3
            [limits]
            max_text_bytes = 100
            [sites.shop]
            allowed_origins = ["https://shop.example"]
            instructions = "Be brief."
            theme = { accent = "#123456" }
            [[sites.shop.triggers]]
            after_seconds = 30
            message = "Need help?"
            "##,
        )
        .unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.limits.max_text_bytes, 100);
        assert_eq!(c.sites["shop"].allowed_origins, ["https://shop.example"]);
        assert_eq!(c.sites["shop"].triggers[0].after_seconds, Some(30));
    }

    #[test]
    fn inference_servers_with_their_own_settings() {
        let c = Config::from_toml(
            r#"
            [inference]
            model = "llama3.1:8b"
            api_key = "sk-all"
            endpoints = [
                "http://127.0.0.1:11434/v1",
                { url = "https://gpu-2.internal:8000", model = "qwen", api_key = "sk-two", max_sequences = 8 },
            ]
            "#,
        )
        .unwrap();
        let eps = c.inference.endpoint_configs();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].url, "http://127.0.0.1:11434/v1");
        assert_eq!(
            (eps[0].model.as_deref(), eps[0].api_key.is_none()),
            (None, true)
        );
        assert_eq!(eps[1].model.as_deref(), Some("qwen"));
        assert_eq!(eps[1].api_key.as_ref().map(|k| k.expose()), Some("sk-two"));
        assert_eq!(eps[1].max_sequences, 8);
        assert_eq!(c.inference.api_key().unwrap().expose(), "sk-all");
        // print-config never shows a key.
        let printed = toml::to_string_pretty(&c).unwrap();
        assert!(!printed.contains("sk-"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(printed.contains("https://gpu-2.internal:8000"), "{printed}");
        assert!(Config::from_toml(
            "[inference]\nendpoints = [{ url = \"http://x\", modle = \"m\" }]"
        )
        .is_err());
    }

    #[test]
    fn inference_flags_override_the_file() {
        let args = ServeArgs {
            inference: vec!["https://a:1".into()],
            model: Some("llama3.1:8b".into()),
            api_key: Some("sk-flag".into()),
            ..Default::default()
        };
        let c = Config::load(&args).unwrap();
        assert_eq!(
            c.inference.endpoints,
            vec![EndpointSetting::Url("https://a:1".into())]
        );
        assert_eq!(c.inference.model, "llama3.1:8b");
        assert_eq!(c.inference.api_key().unwrap().expose(), "sk-flag");
        let args = ServeArgs {
            inference_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = Config::load(&args).unwrap_err().to_string();
        assert!(e.contains("inference.ca_file"), "{e}");
    }

    #[test]
    fn typos_are_errors() {
        let e = Config::from_toml("lisen = \"1.2.3.4:5\"").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        let mut c = Config::default();
        c.limits.poll_log_messages = 10;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("limits.poll_log_messages"));
    }
}
