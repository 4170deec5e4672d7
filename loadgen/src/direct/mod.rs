//! Direct mode: load on an OpenAI-compatible inference server (vLLM, TGI,
//! llama.cpp's server, `inference-sim`) without the gateway, measured as
//! `vllm bench serve` and NVIDIA AIPerf measure it, so that the gateway's
//! own cost is one subtraction (the same run through `/ws` and directly).
//!
//! # Map
//!
//! Sans-IO, tested over byte strings:
//! * this file: the scenario's `[direct]` options ([`DirectOptions`]),
//!   their validation, and the [`Workload`] every worker thread shares (the
//!   requests to send, the TLS settings).
//! * [`prompts`]: prompts from a JSONL file, from token-count distributions
//!   (synthetic), or from the scenario's texts.
//! * [`request`]: a prompt as the bytes of one streamed HTTP request.
//! * [`response`]: one response as it arrives ([`response::Exchange`]: HTTP,
//!   then server-sent events, then OpenAI chunks), what it measured
//!   ([`response::Outcome`]) and how that is recorded ([`response::settle`]).
//!
//! The I/O shell is `crate::run::direct`: a worker thread like the WebSocket
//! one, with a pool of keep-alive connections at most `sessions` large.

pub mod prompts;
pub mod request;
pub mod response;

use std::path::PathBuf;

use inference_client::http::TlsTarget;
use inference_client::tls::TlsError;
use inference_client::{count_tokens, ApiKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::scenario::Scenario;
use crate::target::{Scheme, Target, TargetTlsError};
use prompts::{Prompt, PromptsError, TokenDist};
use request::{EncodeError, Endpoint};

/// Which API requests go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST {base}/chat/completions` with the prompt as the user message.
    #[default]
    Chat,
    /// `POST {base}/completions` with the prompt as is.
    Completions,
}

impl Api {
    /// The route under the URL's base path (`/v1`).
    pub fn route(self) -> &'static str {
        match self {
            Api::Chat => "/chat/completions",
            Api::Completions => "/completions",
        }
    }
}

/// The scenario's options for an `http(s)://` target (its `[direct]` table).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DirectOptions {
    /// Chat or completions.
    pub api: Api,
    /// The model name the server serves (vLLM's `--served-model-name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_model: Option<String>,
    /// A JSONL file of prompts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<PathBuf>,
    /// Prompt lengths of synthetic prompts, in tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<TokenDist>,
    /// Answer lengths asked for, in tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<TokenDist>,
    /// A PEM CA file trusted for `https` (besides the system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// `Authorization: Bearer ...`: from the command line or the
    /// environment only, never read from or written to a file.
    #[serde(skip)]
    pub api_key: Option<ApiKey>,
}

impl DirectOptions {
    /// Whether nothing is set (the table is left out of files and reports).
    pub fn is_unset(&self) -> bool {
        self.api == Api::Chat
            && self.served_model.is_none()
            && self.prompts.is_none()
            && self.input_tokens.is_none()
            && self.output_tokens.is_none()
            && self.ca.is_none()
    }
}

/// Why direct mode cannot start.
#[derive(Debug, Error)]
pub enum DirectError {
    /// The prompts file.
    #[error(transparent)]
    Prompts(#[from] PromptsError),
    /// The TLS settings (`--ca`).
    #[error("https: {0}")]
    Tls(#[from] TlsError),
    /// The host is not a name a certificate can carry.
    #[error("https: the host {0}")]
    ServerName(String),
    /// A request cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The target is not an inference server's URL.
    #[error("direct mode needs an http:// or https:// URL")]
    NotDirect,
}

/// Checks the direct-mode options against the target; the message says what
/// to change. Called by [`Scenario::validate`].
pub fn check_scenario(sc: &Scenario, target: &Target) -> Result<(), String> {
    let d = &sc.direct;
    if !target.is_direct() {
        // The key is not checked: LOADGEN_API_KEY may well be set in a shell
        // that also runs the gateway's tests, and the gateway never sees it.
        // --ca also names the CA of a wss:// gateway.
        let only_ca = DirectOptions {
            ca: None,
            ..d.clone()
        }
        .is_unset();
        if d.is_unset() || (target.scheme == Scheme::Wss && only_ca) {
            return Ok(());
        }
        return Err("--api, --served-model, --ca, --prompts, --input-tokens and --output-tokens apply to an inference server directly: give --url http(s)://HOST:PORT/v1".into());
    }
    if d.served_model
        .as_deref()
        .is_none_or(|m| m.trim().is_empty())
    {
        return Err("direct mode needs --served-model NAME: the model the server serves (vLLM's --served-model-name; GET /v1/models lists it)".into());
    }
    if d.prompts.is_some() && d.input_tokens.is_some() {
        return Err("--prompts and --input-tokens are two sources of prompts: give one".into());
    }
    if (d.prompts.is_some() || d.input_tokens.is_some())
        && (!sc.texts.is_empty() || sc.texts_file.is_some())
    {
        return Err("--text/--texts-file and --prompts/--input-tokens are different sources of prompts: give one".into());
    }
    if d.ca.is_some() && target.scheme != Scheme::Https {
        return Err("--ca is for https:// URLs".into());
    }
    if !sc.replies {
        return Err("direct mode reads every stream to its end: drop --no-replies".into());
    }
    if sc.resend_busy {
        return Err("--resend-busy is for the gateway's busy frames; direct mode counts a 429 or 503 as busy and does not send it again".into());
    }
    Ok(())
}

/// Where a run's requests come from.
#[derive(Debug, Clone)]
enum Source {
    /// Prompts from a file or the texts, sent in turn, each encoded once.
    Pool(Vec<Prepared>),
    /// A new synthetic prompt for every request.
    Synthetic {
        input: TokenDist,
        output: TokenDist,
        seed: u64,
    },
}

/// One request, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The whole HTTP request.
    pub bytes: Vec<u8>,
    /// Output tokens asked for.
    pub output_tokens: u32,
    /// loadgen's estimate of the prompt's tokens (when the server sends no usage).
    pub input_estimate: u32,
}

/// What every worker thread of a direct run shares, read-only.
#[derive(Debug)]
pub struct Workload {
    endpoint: Endpoint,
    source: Source,
    /// TLS for `https` targets.
    pub tls: Option<TlsTarget>,
}

impl Workload {
    /// The workload of a scenario whose target is `http(s)://`: reads the
    /// prompts file, loads the TLS settings, encodes the requests once.
    /// `texts` (the scenario's resolved texts) are the prompts when neither
    /// a prompts file nor synthetic prompts are given.
    pub fn new(sc: &Scenario, target: &Target, texts: &[String]) -> Result<Workload, DirectError> {
        if !target.is_direct() {
            return Err(DirectError::NotDirect);
        }
        let d = &sc.direct;
        let model = d.served_model.clone().unwrap_or_default();
        let endpoint = Endpoint::new(target, d.api, &model, d.api_key.clone());
        let output = d.output_tokens.as_ref();
        let source = match (&d.prompts, &d.input_tokens) {
            (_, Some(input)) => Source::Synthetic {
                input: *input,
                output: d
                    .output_tokens
                    .unwrap_or(TokenDist::Constant(prompts::DEFAULT_OUTPUT_TOKENS)),
                seed: sc.seed,
            },
            (Some(path), None) => Source::Pool(prepare_all(
                &endpoint,
                prompts::load_jsonl(path, output, sc.seed)?,
            )?),
            (None, None) => Source::Pool(prepare_all(
                &endpoint,
                prompts::from_texts(texts, output, sc.seed),
            )?),
        };
        let tls = target.tls(d.ca.as_deref()).map_err(|e| match e {
            TargetTlsError::Tls(e) => DirectError::Tls(e),
            TargetTlsError::ServerName(n) => DirectError::ServerName(n),
        })?;
        let w = Workload {
            endpoint,
            source,
            tls,
        };
        // A header HTTP refuses (a key with a newline) fails here, not per request.
        w.request(0)?;
        Ok(w)
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Request number `k` of the run (numbered over every worker and shard):
    /// the pool's prompts in turn, or a new synthetic one.
    pub fn request(&self, k: u64) -> Result<Prepared, EncodeError> {
        match &self.source {
            Source::Pool(pool) => {
                let i = usize::try_from(k % pool.len().max(1) as u64).unwrap_or(0);
                Ok(pool.get(i).cloned().unwrap_or_else(|| Prepared {
                    bytes: Vec::new(),
                    output_tokens: 0,
                    input_estimate: 0,
                }))
            }
            Source::Synthetic {
                input,
                output,
                seed,
            } => prepare(&self.endpoint, &prompts::synthetic(input, output, *seed, k)),
        }
    }
}

fn prepare(endpoint: &Endpoint, p: &Prompt) -> Result<Prepared, EncodeError> {
    Ok(Prepared {
        bytes: endpoint.encode(p)?,
        output_tokens: p.output_tokens,
        input_estimate: count_tokens(&p.text),
    })
}

fn prepare_all(endpoint: &Endpoint, ps: Vec<Prompt>) -> Result<Vec<Prepared>, EncodeError> {
    ps.iter().map(|p| prepare(endpoint, p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scenario(url: &str) -> Scenario {
        let mut sc = Scenario::simple(url, 4, 2.0, Duration::from_secs(1));
        sc.direct.served_model = Some("m".into());
        sc
    }

    fn check(sc: &Scenario) -> Result<(), String> {
        check_scenario(sc, &Target::parse(&sc.url).unwrap())
    }

    #[test]
    fn options_are_checked_against_the_target() {
        let mut sc = scenario("http://127.0.0.1:1/v1");
        check(&sc).unwrap();
        sc.direct.served_model = None;
        assert!(check(&sc).unwrap_err().contains("--served-model"));
        let mut sc = scenario("http://127.0.0.1:1/v1");
        sc.direct.prompts = Some("p.jsonl".into());
        sc.direct.input_tokens = Some(TokenDist::Constant(3));
        assert!(check(&sc).unwrap_err().contains("one"));
        let mut sc = scenario("http://127.0.0.1:1/v1");
        sc.direct.input_tokens = Some(TokenDist::Constant(3));
        sc.texts = vec!["x".into()];
        assert!(check(&sc).unwrap_err().contains("--text"));
        let mut sc = scenario("http://127.0.0.1:1/v1");
        sc.direct.ca = Some("ca.pem".into());
        assert!(check(&sc).unwrap_err().contains("https"));
        let mut sc = scenario("http://127.0.0.1:1/v1");
        sc.replies = false;
        assert!(check(&sc).unwrap_err().contains("--no-replies"));
        let sc = scenario("ws://127.0.0.1:1/ws");
        assert!(check(&sc).unwrap_err().contains("http(s)://"));
        let mut sc = scenario("ws://127.0.0.1:1/ws");
        sc.direct = DirectOptions::default();
        check(&sc).unwrap();
        sc.direct.api_key = ApiKey::new("from-the-environment");
        check(&sc).unwrap();
    }

    #[test]
    fn the_api_key_is_never_serialized() {
        let mut sc = scenario("http://127.0.0.1:1/v1");
        sc.direct.api_key = ApiKey::new("sk-secret");
        sc.direct.input_tokens = Some("normal:100,10".parse().unwrap());
        let toml = toml::to_string(&sc).unwrap();
        let json = serde_json::to_string(&sc).unwrap();
        for text in [&toml, &json] {
            assert!(!text.contains("sk-secret"), "{text}");
            assert!(text.contains("normal:100,10"), "{text}");
        }
        let back: Scenario = toml::from_str(&toml).unwrap();
        assert_eq!(back.direct.api_key, None);
        assert_eq!(back.direct.input_tokens, sc.direct.input_tokens);
        let plain = toml::to_string(&scenario("ws://h:1/ws")).unwrap();
        assert!(plain.contains("[direct]"), "a served model is set: {plain}");
        let mut none = scenario("ws://h:1/ws");
        none.direct = DirectOptions::default();
        assert!(!toml::to_string(&none).unwrap().contains("direct"));
        let keyed = "url = \"http://h:1/v1\"\nstages = []\n[direct]\napi_key = \"x\"\n";
        let e = toml::from_str::<Scenario>(keyed).unwrap_err().to_string();
        assert!(e.contains("api_key"), "a key in a file is refused: {e}");
    }

    #[test]
    fn workloads_cycle_a_pool_or_draw_each_request() {
        let mut sc = scenario("http://127.0.0.1:1/v1");
        sc.texts = vec!["one".into(), "two".into()];
        let t = Target::parse(&sc.url).unwrap();
        let w = Workload::new(&sc, &t, &sc.texts).unwrap();
        let (a, b, c) = (
            w.request(0).unwrap(),
            w.request(1).unwrap(),
            w.request(2).unwrap(),
        );
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.output_tokens, prompts::DEFAULT_OUTPUT_TOKENS);
        assert_eq!(a.input_estimate, 1);
        let mut sc = scenario("http://127.0.0.1:1/v1");
        sc.direct.input_tokens = Some(TokenDist::Constant(50));
        sc.direct.output_tokens = Some(TokenDist::Constant(7));
        let w = Workload::new(&sc, &t, &[]).unwrap();
        let r = w.request(5).unwrap();
        assert_eq!((r.input_estimate, r.output_tokens), (50, 7));
        assert_ne!(
            r,
            w.request(6).unwrap(),
            "every synthetic request is its own"
        );
        assert_eq!(r, w.request(5).unwrap());
        assert!(w.tls.is_none());
        let mut sc = scenario("http://127.0.0.1:1/v1");
        sc.direct.prompts = Some("/nonexistent/prompts.jsonl".into());
        let e = Workload::new(&sc, &t, &[]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/prompts.jsonl"), "{e}");
    }
}
