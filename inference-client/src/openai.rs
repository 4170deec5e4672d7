//! The OpenAI-compatible API (what vLLM, TGI, llama.cpp's server and Ollama
//! serve), as plain functions over JSON: the request bodies the client sends
//! and the pieces of the responses it reads, and, for the simulator's server,
//! the same schema the other way round. No I/O here.
//!
//! Streams: a `/v1/chat/completions` chunk carries `choices[].delta.content`;
//! a `/v1/completions` chunk carries `choices[].text`; either may carry a
//! `finish_reason` per choice `index`, a `usage` chunk (with empty `choices`)
//! follows when `stream_options.include_usage` was asked for, and `[DONE]`
//! ends the stream. A chunk `{"error": ...}` (or vLLM's older
//! `{"object":"error", ...}`) is the server failing mid-stream.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Who speaks in a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions (the site's, and retrieved sources).
    System,
    /// The visitor.
    User,
    /// The AI (or a human agent's words the AI continues from).
    Assistant,
}

impl Role {
    /// The role's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a chat prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// Why a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model finished (`stop`).
    Stop,
    /// `max_tokens` was reached (`length`).
    Length,
    /// Anything else the server said (`content_filter`, `tool_calls`, ...).
    Other,
}

impl FinishReason {
    /// From the API's string.
    pub fn parse(s: &str) -> Self {
        match s {
            "stop" | "eos" | "stop_sequence" => FinishReason::Stop,
            "length" => FinishReason::Length,
            _ => FinishReason::Other,
        }
    }

    /// The API's string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Other => "other",
        }
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// One thing a stream chunk says.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// Generated text for the choice `index` (empty pieces are dropped).
    Token {
        /// The choice (the prompt's position in a batched request).
        index: u32,
        /// The text.
        text: String,
    },
    /// The choice `index` is complete.
    Finish {
        /// The choice.
        index: u32,
        /// Why.
        reason: FinishReason,
        /// Its own token counts, where the server gives them per choice (the
        /// in-process simulator does; the HTTP API gives only [`StreamItem::Usage`]).
        usage: Option<Usage>,
    },
    /// Token counts for the whole request.
    Usage(Usage),
    /// `[DONE]`: the stream is complete.
    Done,
}

/// Why a JSON body or chunk is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenAiError {
    /// Not JSON, or not the expected shape.
    #[error("unexpected JSON from the server: {0}")]
    Json(String),
    /// The server reported an error.
    #[error("the server reported an error: {0}")]
    Server(String),
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct CompletionsBody<'a> {
    model: &'a str,
    prompt: &'a [String],
    max_tokens: u32,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct EmbeddingsBody<'a> {
    model: &'a str,
    input: &'a [String],
}

fn to_vec(v: &impl Serialize) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// The body of a streamed `/v1/chat/completions` request.
pub fn chat_request(
    model: &str,
    messages: &[ChatMessage],
    max_tokens: u32,
    include_usage: bool,
) -> Vec<u8> {
    to_vec(&ChatBody {
        model,
        messages,
        max_tokens,
        stream: true,
        stream_options: include_usage.then_some(StreamOptions {
            include_usage: true,
        }),
    })
}

/// The body of a streamed `/v1/completions` request for a batch of prompts.
pub fn completions_request(
    model: &str,
    prompts: &[String],
    max_tokens: u32,
    include_usage: bool,
) -> Vec<u8> {
    to_vec(&CompletionsBody {
        model,
        prompt: prompts,
        max_tokens,
        stream: true,
        stream_options: include_usage.then_some(StreamOptions {
            include_usage: true,
        }),
    })
}

/// The body of a `/v1/embeddings` request for a batch of texts.
pub fn embeddings_request(model: &str, inputs: &[String]) -> Vec<u8> {
    to_vec(&EmbeddingsBody {
        model,
        input: inputs,
    })
}

#[derive(Deserialize)]
struct ChunkIn<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceIn<'a>>>,
    #[serde(default)]
    usage: Option<UsageIn>,
    #[serde(borrow, default)]
    error: Option<ErrorIn<'a>>,
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorIn<'a> {
    Object {
        #[serde(borrow, default)]
        message: Option<Cow<'a, str>>,
    },
    Text(#[serde(borrow)] Cow<'a, str>),
}

impl ErrorIn<'_> {
    fn message(&self) -> String {
        match self {
            ErrorIn::Object { message } => message.as_deref().unwrap_or("(no message)").to_string(),
            ErrorIn::Text(t) => t.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct ChoiceIn<'a> {
    #[serde(default)]
    index: u32,
    #[serde(borrow, default)]
    delta: Option<DeltaIn<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaIn<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct UsageIn {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// Parses the `data` of one stream event (a chat or completions chunk, or
/// `[DONE]`) into `out`.
pub fn parse_stream_event(data: &str, out: &mut Vec<StreamItem>) -> Result<(), OpenAiError> {
    let data = data.trim();
    if data == "[DONE]" {
        out.push(StreamItem::Done);
        return Ok(());
    }
    let chunk: ChunkIn<'_> = serde_json::from_str(data)
        .map_err(|e| OpenAiError::Json(format!("{e} in {}", head(data))))?;
    if let Some(err) = &chunk.error {
        return Err(OpenAiError::Server(err.message()));
    }
    if chunk.object.as_deref() == Some("error") {
        return Err(OpenAiError::Server(
            chunk
                .message
                .as_deref()
                .unwrap_or("(no message)")
                .to_string(),
        ));
    }
    for c in chunk.choices.into_iter().flatten() {
        let text = c.delta.and_then(|d| d.content).or(c.text);
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            out.push(StreamItem::Token {
                index: c.index,
                text: t.into_owned(),
            });
        }
        if let Some(r) = c.finish_reason {
            out.push(StreamItem::Finish {
                index: c.index,
                reason: FinishReason::parse(&r),
                usage: None,
            });
        }
    }
    if let Some(u) = chunk.usage {
        out.push(StreamItem::Usage(Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        }));
    }
    Ok(())
}

fn head(s: &str) -> &str {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Deserialize)]
struct EmbeddingsIn {
    data: Vec<EmbeddingIn>,
}

#[derive(Deserialize)]
struct EmbeddingIn {
    #[serde(default)]
    index: usize,
    embedding: Vec<f32>,
}

/// Parses a `/v1/embeddings` response for `n` inputs into vectors in input
/// order.
pub fn parse_embeddings(body: &[u8], n: usize) -> Result<Vec<Vec<f32>>, OpenAiError> {
    let parsed: EmbeddingsIn =
        serde_json::from_slice(body).map_err(|e| OpenAiError::Json(e.to_string()))?;
    if parsed.data.len() != n {
        return Err(OpenAiError::Json(format!(
            "{} embeddings for {n} inputs",
            parsed.data.len()
        )));
    }
    let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
    for e in parsed.data {
        match out.get_mut(e.index) {
            Some(slot @ None) => *slot = Some(e.embedding),
            _ => {
                return Err(OpenAiError::Json(format!(
                    "embedding index {} repeated or out of range",
                    e.index
                )))
            }
        }
    }
    Ok(out.into_iter().flatten().collect())
}

#[derive(Deserialize)]
struct ModelsIn {
    data: Vec<ModelIn>,
}

#[derive(Deserialize)]
struct ModelIn {
    id: String,
}

/// Parses a `/v1/models` response into the model ids.
pub fn parse_models(body: &[u8]) -> Result<Vec<String>, OpenAiError> {
    let m: ModelsIn = serde_json::from_slice(body).map_err(|e| OpenAiError::Json(e.to_string()))?;
    Ok(m.data.into_iter().map(|m| m.id).collect())
}

/// The human-readable message of an error response body: the OpenAI
/// `{"error":{"message"}}`, a top-level `message`, or the text itself.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(c) = serde_json::from_slice::<ChunkIn<'_>>(body) {
        if let Some(e) = c.error {
            return e.message();
        }
        if let Some(m) = c.message {
            return m.into_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    head(text.trim()).to_string()
}

/// Renders a chat as one prompt for `/v1/completions` in the ChatML template
/// (`<|im_start|>role\ncontent<|im_end|>\n`, then the assistant's turn
/// opened). Use it with models trained on ChatML, or serve a completions
/// endpoint whose own template matches.
pub fn render_chatml(messages: &[ChatMessage]) -> String {
    let mut s = String::with_capacity(messages.iter().map(|m| m.content.len() + 32).sum());
    for m in messages {
        s.push_str("<|im_start|>");
        s.push_str(m.role.as_str());
        s.push('\n');
        s.push_str(&m.content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

/// Reads a ChatML prompt back into messages (the simulator does, to answer a
/// `/v1/completions` prompt as it would the chat). `None` if `prompt` is not
/// ChatML.
pub fn parse_chatml(prompt: &str) -> Option<Vec<ChatMessage>> {
    let mut out = Vec::new();
    let mut parts = prompt.split("<|im_start|>");
    if !parts.next()?.trim().is_empty() {
        return None;
    }
    for part in parts {
        let (role, rest) = part.split_once('\n')?;
        let role = match role.trim() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => return None,
        };
        match rest.split_once("<|im_end|>") {
            Some((content, _)) => out.push(ChatMessage::new(role, content)),
            None if rest.trim().is_empty() => {} // the opened assistant turn
            None => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

// ---- The other side: what the simulator's server reads and writes. ----

/// A chat message as a server receives it (content may be a string or an
/// array of parts; roles beyond the three are mapped onto them).
#[derive(Debug, Deserialize)]
pub struct MessageIn {
    /// `system`, `developer`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// A string, or an array of `{"type":"text","text":...}` parts.
    #[serde(default)]
    pub content: serde_json::Value,
}

impl MessageIn {
    /// As a [`ChatMessage`].
    pub fn to_message(&self) -> ChatMessage {
        let role = match self.role.as_str() {
            "system" | "developer" => Role::System,
            "assistant" => Role::Assistant,
            _ => Role::User,
        };
        let content = match &self.content {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        };
        ChatMessage { role, content }
    }
}

/// `stream_options` as a server receives it.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptionsIn {
    /// Send a usage chunk before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// A `/v1/chat/completions` request as a server receives it.
#[derive(Debug, Deserialize)]
pub struct ChatRequestIn {
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<MessageIn>,
    /// Most tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptionsIn>,
}

/// One string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single string.
    One(String),
    /// An array of strings.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A `/v1/completions` request as a server receives it.
#[derive(Debug, Deserialize)]
pub struct CompletionsRequestIn {
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// One prompt, or a batch.
    pub prompt: OneOrMany,
    /// Most tokens to generate per prompt.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Stream the answers as server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptionsIn>,
}

/// A `/v1/embeddings` request as a server receives it.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequestIn {
    /// Model name.
    #[serde(default)]
    pub model: Option<String>,
    /// One text, or a batch.
    pub input: OneOrMany,
}

#[derive(Serialize)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct ChatChoiceOut<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct ChatChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChatChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

#[derive(Serialize)]
struct UsageOut {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl From<Usage> for UsageOut {
    fn from(u: Usage) -> Self {
        UsageOut {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

/// Identifies a response in the chunks a server writes.
#[derive(Debug, Clone, Copy)]
pub struct ChunkMeta<'a> {
    /// `chatcmpl-...` or `cmpl-...`.
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
    /// Model name.
    pub model: &'a str,
}

/// What a streamed chat chunk carries.
#[derive(Debug, Clone, Copy)]
pub enum ChatDelta<'a> {
    /// The first chunk: `{"role":"assistant","content":""}`.
    Role,
    /// A piece of text.
    Content(&'a str),
    /// The end: an empty delta with this finish reason.
    Finish(FinishReason),
}

/// A streamed `chat.completion.chunk` as JSON.
pub fn chat_chunk(meta: ChunkMeta<'_>, delta: ChatDelta<'_>) -> String {
    let (delta, finish_reason) = match delta {
        ChatDelta::Role => (
            DeltaOut {
                role: Some("assistant"),
                content: Some(""),
            },
            None,
        ),
        ChatDelta::Content(t) => (
            DeltaOut {
                role: None,
                content: Some(t),
            },
            None,
        ),
        ChatDelta::Finish(r) => (
            DeltaOut {
                role: None,
                content: None,
            },
            Some(r.as_str()),
        ),
    };
    let choices = [ChatChoiceOut {
        index: 0,
        delta,
        logprobs: None,
        finish_reason,
    }];
    json(&ChatChunkOut {
        id: meta.id,
        object: "chat.completion.chunk",
        created: meta.created,
        model: meta.model,
        choices: &choices,
        usage: None,
    })
}

/// The usage chunk (empty `choices`) of a stream; `object` is
/// `chat.completion.chunk` or `text_completion`.
pub fn usage_chunk(meta: ChunkMeta<'_>, object: &'static str, usage: Usage) -> String {
    json(&ChatChunkOut {
        id: meta.id,
        object,
        created: meta.created,
        model: meta.model,
        choices: &[],
        usage: Some(usage.into()),
    })
}

#[derive(Serialize)]
struct TextChoiceOut<'a> {
    index: u32,
    text: &'a str,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct TextChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [TextChoiceOut<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<UsageOut>,
}

/// A streamed `text_completion` chunk for choice `index` as JSON.
pub fn completion_chunk(
    meta: ChunkMeta<'_>,
    index: u32,
    text: &str,
    finish: Option<FinishReason>,
) -> String {
    json(&TextChunkOut {
        id: meta.id,
        object: "text_completion",
        created: meta.created,
        model: meta.model,
        choices: &[TextChoiceOut {
            index,
            text,
            logprobs: None,
            finish_reason: finish.map(FinishReason::as_str),
        }],
        usage: None,
    })
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct ChatFullChoiceOut<'a> {
    index: u32,
    message: MessageOut<'a>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct ChatFullOut<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [ChatFullChoiceOut<'a>; 1],
    usage: UsageOut,
}

/// A whole (non-streamed) `chat.completion` as JSON.
pub fn chat_response(
    meta: ChunkMeta<'_>,
    text: &str,
    finish: FinishReason,
    usage: Usage,
) -> String {
    json(&ChatFullOut {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices: [ChatFullChoiceOut {
            index: 0,
            message: MessageOut {
                role: "assistant",
                content: text,
            },
            finish_reason: finish.as_str(),
        }],
        usage: usage.into(),
    })
}

/// A whole (non-streamed) `text_completion` with one choice per prompt.
pub fn completion_response(
    meta: ChunkMeta<'_>,
    choices: &[(String, FinishReason)],
    usage: Usage,
) -> String {
    let choices: Vec<TextChoiceOut<'_>> = choices
        .iter()
        .enumerate()
        .map(|(i, (text, f))| TextChoiceOut {
            index: i as u32,
            text,
            logprobs: None,
            finish_reason: Some(f.as_str()),
        })
        .collect();
    json(&TextChunkOut {
        id: meta.id,
        object: "text_completion",
        created: meta.created,
        model: meta.model,
        choices: &choices,
        usage: Some(usage.into()),
    })
}

#[derive(Serialize)]
struct EmbeddingOut<'a> {
    object: &'static str,
    index: usize,
    embedding: &'a [f32],
}

#[derive(Serialize)]
struct EmbeddingsOut<'a> {
    object: &'static str,
    data: Vec<EmbeddingOut<'a>>,
    model: &'a str,
    usage: UsageOut,
}

/// A `/v1/embeddings` response as JSON.
pub fn embeddings_response(model: &str, vectors: &[Vec<f32>], prompt_tokens: u32) -> String {
    json(&EmbeddingsOut {
        object: "list",
        data: vectors
            .iter()
            .enumerate()
            .map(|(index, v)| EmbeddingOut {
                object: "embedding",
                index,
                embedding: v,
            })
            .collect(),
        model,
        usage: Usage {
            prompt_tokens,
            completion_tokens: 0,
        }
        .into(),
    })
}

/// A `/v1/models` response listing these models.
pub fn models_response(models: &[&str]) -> String {
    let data: Vec<serde_json::Value> = models
        .iter()
        .map(|m| serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": "inference-sim"}))
        .collect();
    serde_json::json!({"object": "list", "data": data}).to_string()
}

/// An error body in the OpenAI shape.
pub fn error_body(message: &str, kind: &str, code: u16) -> String {
    serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    })
    .to_string()
}

/// An error body in the OpenAI shape with a string `code`, as OpenAI's own
/// API writes them (`invalid_api_key`, `model_not_found`).
pub fn error_body_coded(message: &str, kind: &str, code: &str) -> String {
    serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    })
    .to_string()
}

fn json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunked::{encode_chunk, LAST_CHUNK};
    use crate::http::{Part, ResponseDecoder};
    use crate::sse::SseDecoder;

    /// Runs a fixture through the whole client pipe: HTTP head, chunked
    /// coding (in `chunk` sized chunks), SSE, then the OpenAI chunk parser,
    /// the bytes split at every position. Returns the items and checks every
    /// split agrees.
    fn pipe_every_split(fixture: &[u8], chunk: usize) -> Result<Vec<StreamItem>, String> {
        let mut wire = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for c in fixture.chunks(chunk) {
            encode_chunk(c, &mut wire);
        }
        wire.extend_from_slice(LAST_CHUNK);
        let run = |pieces: &[&[u8]]| -> Result<Vec<StreamItem>, String> {
            let mut http = ResponseDecoder::new();
            let mut sse = SseDecoder::new();
            let mut items = Vec::new();
            let mut err = None;
            for p in pieces {
                http.feed(p, |part| {
                    if let Part::Data(d) = part {
                        let r = sse.feed(d, |ev| {
                            if let Err(e) = parse_stream_event(ev.data, &mut items) {
                                err.get_or_insert(e.to_string());
                            }
                        });
                        if let Err(e) = r {
                            err.get_or_insert(e.to_string());
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
            }
            match err {
                Some(e) => Err(e),
                None => Ok(items),
            }
        };
        let whole = run(&[&wire]);
        for i in 0..=wire.len() {
            assert_eq!(run(&[&wire[..i], &wire[i..]]), whole, "split at {i}");
        }
        whole
    }

    fn text(items: &[StreamItem], index: u32) -> String {
        items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Token { index: j, text } if *j == index => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn openai_chat_fixture() {
        for chunk in [7, 64, 4096] {
            let items =
                pipe_every_split(include_bytes!("../tests/fixtures/openai_chat.sse"), chunk)
                    .unwrap();
            assert_eq!(
                text(&items, 0),
                "Hello! Café \"René\" opens at 9\n— welcome 😀"
            );
            assert_eq!(
                items[items.len() - 2..],
                [
                    StreamItem::Finish {
                        index: 0,
                        reason: FinishReason::Stop,
                        usage: None
                    },
                    StreamItem::Done
                ]
            );
        }
    }

    #[test]
    fn openai_usage_fixture() {
        let items = pipe_every_split(
            include_bytes!("../tests/fixtures/openai_chat_usage.sse"),
            50,
        )
        .unwrap();
        assert_eq!(text(&items, 0), "Yes.");
        assert!(items.contains(&StreamItem::Usage(Usage {
            prompt_tokens: 19,
            completion_tokens: 2
        })));
        assert_eq!(items.last(), Some(&StreamItem::Done));
    }

    #[test]
    fn vllm_chat_crlf_fixture_with_ping() {
        let items =
            pipe_every_split(include_bytes!("../tests/fixtures/vllm_chat_crlf.sse"), 33).unwrap();
        assert_eq!(text(&items, 0), "Our store opens");
        assert!(items.contains(&StreamItem::Finish {
            index: 0,
            reason: FinishReason::Length,
            usage: None
        }));
        assert!(items.contains(&StreamItem::Usage(Usage {
            prompt_tokens: 42,
            completion_tokens: 3
        })));
    }

    #[test]
    fn vllm_completions_batch_fixture() {
        let items = pipe_every_split(
            include_bytes!("../tests/fixtures/vllm_completions_batch.sse"),
            100,
        )
        .unwrap();
        assert_eq!(text(&items, 0), " Paris is big");
        assert_eq!(text(&items, 1), " Berlin.");
        let finishes: Vec<_> = items
            .iter()
            .filter_map(|i| match i {
                StreamItem::Finish { index, reason, .. } => Some((*index, *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            finishes,
            [(1, FinishReason::Stop), (0, FinishReason::Length)]
        );
    }

    #[test]
    fn keepalive_and_multiline_fixture() {
        let items = pipe_every_split(
            include_bytes!("../tests/fixtures/keepalive_multiline.sse"),
            5,
        )
        .unwrap();
        assert_eq!(text(&items, 0), "multi-line");
        assert_eq!(items.last(), Some(&StreamItem::Done));
    }

    #[test]
    fn error_midstream_is_an_error() {
        let err = pipe_every_split(
            include_bytes!("../tests/fixtures/vllm_error_midstream.sse"),
            64,
        )
        .unwrap_err();
        assert!(err.contains("engine died"), "{err}");
        let mut out = Vec::new();
        assert!(matches!(
            parse_stream_event(r#"{"object":"error","message":"bad","code":400}"#, &mut out),
            Err(OpenAiError::Server(m)) if m == "bad"
        ));
    }

    #[test]
    fn garbage_chunks_are_errors() {
        let mut out = Vec::new();
        for bad in [
            "{",
            "nope",
            r#"{"choices":3}"#,
            r#"{"choices":[{"index":-1}]}"#,
        ] {
            assert!(parse_stream_event(bad, &mut out).is_err(), "{bad}");
        }
        // Unknown fields and shapes are tolerated.
        parse_stream_event(
            r#"{"choices":[{"delta":{"tool_calls":[]}}],"x":1}"#,
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn request_bodies() {
        let msgs = [
            ChatMessage::new(Role::System, "be nice"),
            ChatMessage::new(Role::User, "hi \"there\""),
        ];
        let v: serde_json::Value =
            serde_json::from_slice(&chat_request("m", &msgs, 64, true)).unwrap();
        assert_eq!(v["messages"][1]["role"], "user");
        assert_eq!(v["messages"][1]["content"], "hi \"there\"");
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        let v: serde_json::Value = serde_json::from_slice(&completions_request(
            "m",
            &["a".into(), "b".into()],
            8,
            false,
        ))
        .unwrap();
        assert_eq!(v["prompt"][1], "b");
        assert!(v.get("stream_options").is_none());
        let v: serde_json::Value =
            serde_json::from_slice(&embeddings_request("e", &["x".into()])).unwrap();
        assert_eq!(v["input"][0], "x");
    }

    #[test]
    fn chatml_round_trip() {
        let msgs = vec![
            ChatMessage::new(Role::System, "Sources:\n[1] a"),
            ChatMessage::new(Role::User, "q1"),
            ChatMessage::new(Role::Assistant, "a1"),
            ChatMessage::new(Role::User, "q2\nmore"),
        ];
        assert_eq!(parse_chatml(&render_chatml(&msgs)), Some(msgs));
        assert_eq!(parse_chatml("just a prompt"), None);
    }

    #[test]
    fn server_side_chunks_parse_back() {
        let meta = ChunkMeta {
            id: "chatcmpl-1",
            created: 1,
            model: "m",
        };
        let mut out = Vec::new();
        parse_stream_event(&chat_chunk(meta, ChatDelta::Role), &mut out).unwrap();
        parse_stream_event(&chat_chunk(meta, ChatDelta::Content("x\"y")), &mut out).unwrap();
        parse_stream_event(
            &chat_chunk(meta, ChatDelta::Finish(FinishReason::Length)),
            &mut out,
        )
        .unwrap();
        parse_stream_event(&completion_chunk(meta, 3, "z", None), &mut out).unwrap();
        parse_stream_event(
            &usage_chunk(
                meta,
                "text_completion",
                Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                },
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            [
                StreamItem::Token {
                    index: 0,
                    text: "x\"y".into()
                },
                StreamItem::Finish {
                    index: 0,
                    reason: FinishReason::Length,
                    usage: None
                },
                StreamItem::Token {
                    index: 3,
                    text: "z".into()
                },
                StreamItem::Usage(Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2
                }),
            ]
        );
        let body = embeddings_response("e", &[vec![1.0, 2.0], vec![3.0]], 4);
        assert_eq!(
            parse_embeddings(body.as_bytes(), 2).unwrap(),
            vec![vec![1.0, 2.0], vec![3.0]]
        );
        assert!(parse_embeddings(body.as_bytes(), 3).is_err());
        assert_eq!(
            parse_models(models_response(&["sim"]).as_bytes()).unwrap(),
            ["sim"]
        );
        assert_eq!(
            error_message(error_body("slow down", "x", 429).as_bytes()),
            "slow down"
        );
        assert_eq!(error_message(b"plain text"), "plain text");
    }
}
