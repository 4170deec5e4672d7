//! The requests direct mode sends, as bytes: the OpenAI JSON body from
//! [`inference_client::openai`] and the HTTP/1.1 request around it from
//! [`inference_client::http::request::encode`]. Sans-IO.
//!
//! Every request streams (`"stream": true`), asks for the server's token
//! counts (`stream_options.include_usage`) and for `max_tokens` = the
//! prompt's output tokens; a chat request also sends vLLM's `ignore_eos` and
//! `min_tokens`, so that the server generates exactly that many whatever the
//! model would have said (as `vllm bench serve` and AIPerf do for their
//! synthetic workloads).

// loadgen does not depend on the `http` crate itself; tungstenite re-exports
// the same crate (one `http` in Cargo.lock), whose `Request` is what
// inference_client's encoder takes.
use tungstenite::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use tungstenite::http::{Method, Request};

use inference_client::http::request::encode;
use inference_client::openai::{chat_request, completions_request};
use inference_client::{ApiKey, ChatMessage, Role};

use super::prompts::Prompt;
use super::Api;
use crate::target::Target;

/// Where requests go and what every one of them carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Chat or completions.
    pub api: Api,
    /// The `model` of every body.
    pub model: String,
    /// The `Host` header.
    pub host: String,
    /// The request target: the URL's path (`/v1` when it has none) with the
    /// API's route, and the URL's query.
    pub target: String,
    /// `Authorization: Bearer ...`.
    pub api_key: Option<ApiKey>,
}

/// A request that cannot be encoded (a header value that HTTP forbids).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("cannot make an HTTP request for {target}: {reason}")]
pub struct EncodeError {
    /// The request target.
    pub target: String,
    /// What `http` refused.
    pub reason: String,
}

impl Endpoint {
    /// The endpoint of `target` (an `http(s)://` URL) for `api`.
    pub fn new(target: &Target, api: Api, model: &str, api_key: Option<ApiKey>) -> Endpoint {
        let (path, query) = match target.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target.path.as_str(), None),
        };
        let base = path.trim_end_matches('/');
        let base = if base.is_empty() { "/v1" } else { base };
        let mut t = format!("{base}{}", api.route());
        if let Some(q) = query {
            t.push('?');
            t.push_str(q);
        }
        Endpoint {
            api,
            model: model.to_string(),
            host: target.host_header(),
            target: t,
            api_key,
        }
    }

    /// The JSON body asking `prompt` for its output tokens.
    pub fn body(&self, prompt: &Prompt) -> Vec<u8> {
        let n = prompt.output_tokens;
        match self.api {
            Api::Chat => {
                let messages = [ChatMessage::new(Role::User, prompt.text.as_str())];
                let body = chat_request(&self.model, &messages, n, true);
                with_exact_length(body, n)
            }
            Api::Completions => {
                completions_request(&self.model, std::slice::from_ref(&prompt.text), n, true)
            }
        }
    }

    /// The whole request (head and body) asking `prompt`.
    pub fn encode(&self, prompt: &Prompt) -> Result<Vec<u8>, EncodeError> {
        let body = self.body(prompt);
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(self.target.as_str())
            .header(HOST, self.host.as_str())
            .header(USER_AGENT, concat!("loadgen/", env!("CARGO_PKG_VERSION")))
            .header(ACCEPT, "text/event-stream")
            .header(CONTENT_TYPE, "application/json");
        if let Some(k) = &self.api_key {
            b = b.header(AUTHORIZATION, format!("Bearer {}", k.expose()));
        }
        let req = b.body(body).map_err(|e| EncodeError {
            target: self.target.clone(),
            reason: e.to_string(),
        })?;
        let mut out = Vec::with_capacity(256 + req.body().len());
        encode(&req, &mut out);
        Ok(out)
    }
}

/// Adds vLLM's `ignore_eos` and `min_tokens` to a chat body, which
/// inference_client's encoder (made for the gateway, which wants the model
/// to stop when it is done) does not write.
fn with_exact_length(body: Vec<u8>, n: u32) -> Vec<u8> {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body) {
        Ok(mut m) => {
            m.insert("ignore_eos".into(), true.into());
            m.insert("min_tokens".into(), n.into());
            serde_json::to_vec(&m).unwrap_or(body)
        }
        Err(_) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_client::http::request::parse;

    fn prompt(text: &str, n: u32) -> Prompt {
        Prompt {
            text: text.into(),
            output_tokens: n,
        }
    }

    fn endpoint(url: &str, api: Api, key: Option<&str>) -> Endpoint {
        let t = Target::parse(url).unwrap();
        Endpoint::new(&t, api, "llama", key.and_then(ApiKey::new))
    }

    /// Parses a request back as a server would: the head and the body's JSON.
    fn server_side(bytes: &[u8]) -> (tungstenite::http::Request<()>, serde_json::Value) {
        let (head, n) = parse(bytes, 1 << 20).unwrap().unwrap();
        assert_eq!(bytes.len(), n + head.content_length, "one whole request");
        let body = serde_json::from_slice(&bytes[n..]).unwrap();
        (head.request, body)
    }

    #[test]
    fn chat_requests_ask_for_exactly_n_streamed_tokens() {
        let ep = endpoint("http://127.0.0.1:8000/v1", Api::Chat, Some("sk-1"));
        let (req, body) = server_side(&ep.encode(&prompt("hi \"you\"", 7)).unwrap());
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/v1/chat/completions");
        assert_eq!(req.headers()[HOST], "127.0.0.1:8000");
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer sk-1");
        assert_eq!(req.headers()[ACCEPT], "text/event-stream");
        assert_eq!(body["model"], "llama");
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["messages"][0]["content"], "hi \"you\"");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 7);
        assert_eq!(body["min_tokens"], 7);
        assert_eq!(body["ignore_eos"], true);
    }

    #[test]
    fn completions_requests_carry_one_prompt() {
        let ep = endpoint("https://h.example/", Api::Completions, None);
        let (req, body) = server_side(&ep.encode(&prompt("Paris is", 3)).unwrap());
        assert_eq!(req.uri().path(), "/v1/completions");
        assert_eq!(req.headers()[HOST], "h.example");
        assert!(req.headers().get(AUTHORIZATION).is_none());
        assert_eq!(body["prompt"][0], "Paris is");
        assert_eq!(body["max_tokens"], 3);
        assert_eq!(body["stream"], true);
        assert!(body.get("ignore_eos").is_none());
    }

    #[test]
    fn the_url_path_and_query_prefix_the_route() {
        let ep = endpoint("http://h:1/openai/v1/?api-version=2", Api::Chat, None);
        assert_eq!(ep.target, "/openai/v1/chat/completions?api-version=2");
        assert_eq!(
            endpoint("http://h:1", Api::Chat, None).target,
            "/v1/chat/completions"
        );
    }

    #[test]
    fn a_key_http_refuses_is_an_error_not_a_panic() {
        let ep = endpoint("http://h:1/v1", Api::Chat, Some("bad\nkey"));
        let e = ep.encode(&prompt("x", 1)).unwrap_err();
        assert!(e.to_string().contains("/v1/chat/completions"), "{e}");
        assert!(!e.to_string().contains("bad\nkey"), "the key is not shown");
    }
}
