//! The HTTP router, sans-IO: which part of the gateway answers a request.
//!
//! [`route`] is the one table from a request's method and path (and the
//! configured switches, such as whether `/echo` is served) to a [`Route`];
//! [`respond`] holds the pure answers and request decisions the routes share
//! (the session cookie, static files and their content coding, the chat
//! frame's CSP, the long-poll body, the Origin check). Neither touches a
//! socket, a thread or a session: the shell in `server` matches on the
//! `Route` and performs the effects, so both are tested over plain
//! `http::Request` values.

pub mod respond;

#[cfg(test)]
mod tests;

use http::{Method, Request};

use crate::assets;
use crate::ids::SessionKey;

/// What a request asks for, as the shell acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET`/`HEAD` of a file built into the gateway, by its asset name (`/`
    /// is the demo page). The name may be one this build lacks: the answer
    /// then says how to build it.
    Asset(&'static str),
    /// `GET`/`HEAD /chat`: the chat window's document, embeddable only by the
    /// pages of the site it names.
    ChatFrame,
    /// `GET`/`HEAD /agent`: the agent desk's page.
    AgentPage,
    /// `GET`/`HEAD /healthz`.
    Health,
    /// `GET`/`HEAD /metrics`: the Prometheus exposition.
    Metrics,
    /// `GET /ws`: a visitor's chat WebSocket upgrade.
    ChatUpgrade,
    /// `POST /poll/send`: a visitor's messages by long-polling.
    PollSend,
    /// `GET /poll/recv`: a visitor's held long-poll for what is new.
    PollRecv,
    /// `GET /echo`: a WebSocket that echoes (only when the config enables it).
    EchoUpgrade,
    /// `GET /agent/ws`: an agent's WebSocket upgrade, authorized by the desk.
    AgentUpgrade,
    /// The agent desk's HTTP API (docs/protocol.md, "Agent HTTP API"),
    /// answered on the desk's thread.
    Desk,
    /// The knowledge-base part of the admin API, answered on a retrieval
    /// thread.
    KnowledgeBase,
    /// The rest of the admin API (`/admin`, `/admin/...`).
    Admin,
    /// A path the gateway serves, with a method it does not take; the
    /// sentence to answer 405 with.
    MethodNotAllowed(String),
    /// Nothing here; the sentence to answer 404 with.
    NotFound(String),
}

/// The configured switches that change the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// Whether `GET /echo` is served (`echo` in the config).
    pub echo: bool,
}

/// Paths the gateway serves under some method: any other method on them is
/// answered 405 rather than 404.
const KNOWN_PATHS: [&str; 7] = [
    "/ws",
    "/poll/send",
    "/poll/recv",
    "/healthz",
    "/metrics",
    "/",
    "/chat",
];

/// The route for `req`. The order matters where paths overlap: the desk's
/// and the knowledge base's admin paths are matched before the generic
/// admin API, and named pages before the static files.
pub fn route<B>(req: &Request<B>, switches: Switches) -> Route {
    let method = req.method();
    let get = method == Method::GET;
    // HEAD is answered as GET without the body, on the pages and files only.
    let read = get || method == Method::HEAD;
    let post = method == Method::POST;
    let path = req.uri().path();
    match path {
        "/ws" if get => Route::ChatUpgrade,
        "/echo" if get && switches.echo => Route::EchoUpgrade,
        "/poll/send" if post => Route::PollSend,
        "/poll/recv" if get => Route::PollRecv,
        "/healthz" if read => Route::Health,
        "/metrics" if read => Route::Metrics,
        "/agent/ws" if get => Route::AgentUpgrade,
        "/agent" if read => Route::AgentPage,
        p if is_desk_route(p) => Route::Desk,
        p if crate::grounding::api::is_kb_route(p) => Route::KnowledgeBase,
        p if p == "/admin" || p.starts_with("/admin/") => Route::Admin,
        "/" if read => Route::Asset("demo.html"),
        "/chat" if read => Route::ChatFrame,
        p if read => match p.strip_prefix('/').and_then(assets::find) {
            Some(a) => Route::Asset(a.name),
            None => not_allowed_or_found(method, p),
        },
        p => not_allowed_or_found(method, p),
    }
}

/// 405 for a path served under another method, else 404.
fn not_allowed_or_found(method: &Method, path: &str) -> Route {
    if KNOWN_PATHS.contains(&path) {
        Route::MethodNotAllowed(format!("{method} is not allowed on {path}"))
    } else {
        Route::NotFound(format!("no such resource: {path}"))
    }
}

/// Paths the agent desk answers (docs/protocol.md, "Agent HTTP API").
pub fn is_desk_route(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    matches!(p, "/agent/login" | "/agent/logout" | "/agent/me")
        || p == "/admin/agents"
        || p.starts_with("/admin/agents/")
        || p == "/admin/conversations"
        || p.starts_with("/admin/conversations/")
        || (p.starts_with("/admin/sites/") && p.split('/').nth(4) == Some("canned"))
}

/// The session token the request's cookie carries, if it is well formed.
pub fn session_key<B>(req: &Request<B>) -> Option<SessionKey> {
    crate::http::request::cookie(req, respond::SESSION_COOKIE)
        .and_then(|c| SessionKey::from_cookie(&c))
}
