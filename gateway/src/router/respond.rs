//! The answers routes build without touching anything but the request and
//! the configuration: the session cookie, static files (revalidation,
//! content coding, cache policy), the chat frame and its CSP, the long-poll
//! body, and the refusals of a chat request (no site named, or an Origin the
//! site does not allow).

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};

use crate::assets::{self, Asset};
use crate::config::{CookieMode, SessionConfig};
use crate::http::accept::{self, Encoding};
use crate::http::request::query_param;
use crate::http::response::{self, Body};
use crate::ids::SessionKey;
use crate::sites::Site;

/// Name of the session cookie (PROTOCOL.md).
pub const SESSION_COOKIE: &str = "lc_session";

/// A refusal, boxed: it is the rare arm of a `Result` on every chat request.
pub type Refusal = Box<Response<Body>>;

/// The `Set-Cookie` value that carries (or refreshes) a session token, with
/// the attributes `session.cookie` asks for and `session.lifetime_secs` as
/// its `Max-Age`.
pub fn session_cookie(key: &SessionKey, session: &SessionConfig) -> HeaderValue {
    let lifetime = session.lifetime_secs.min(i64::MAX as u64) as i64;
    let mut b = cookie::Cookie::build((SESSION_COOKIE, key.to_cookie()))
        .http_only(true)
        .path("/")
        .max_age(cookie::time::Duration::seconds(lifetime));
    b = match session.cookie {
        CookieMode::Lax => b.same_site(cookie::SameSite::Lax),
        CookieMode::CrossSite => b
            .same_site(cookie::SameSite::None)
            .secure(true)
            .partitioned(true),
    };
    // Token characters are base64url: always a valid header value.
    HeaderValue::from_str(&b.build().to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Cache policy by file: the loader revalidates often, so a new widget reaches
/// visitors within minutes; documents always revalidate.
pub fn cache_policy(name: &str) -> &'static str {
    if name.ends_with(".html") {
        "no-cache"
    } else {
        "public, max-age=300"
    }
}

/// The built-in file `name` as [`asset_response`] serves it, or a 404 that
/// says the widget was not built into this gateway.
pub fn asset<B>(req: &Request<B>, name: &str) -> Response<Body> {
    match assets::find(name) {
        Some(a) => asset_response(req, a, cache_policy(name)),
        None => response::text(
            StatusCode::NOT_FOUND,
            format!("{name} is not built into this gateway; build the widget (see README)"),
        ),
    }
}

/// `GET /agent`: the agent desk's page.
pub fn agent_page<B>(req: &Request<B>) -> Response<Body> {
    asset(req, "agent.html")
}

/// A static file: 304 on a matching `If-None-Match`, else the body in the
/// coding `Accept-Encoding` prefers of the two the gateway holds (gzip, or
/// as is).
pub fn asset_response<B>(
    req: &Request<B>,
    a: &'static Asset,
    cache: &'static str,
) -> Response<Body> {
    let inm = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t == a.etag || t.strip_prefix("W/") == Some(a.etag)
        });
    let mut r = if inm {
        response::empty(StatusCode::NOT_MODIFIED)
    } else {
        let accept = req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let gzip = accept::negotiate(accept) == Encoding::Gzip;
        let mut r = response::with_body(
            StatusCode::OK,
            a.content_type,
            Bytes::from_static(if gzip { a.gzip } else { a.raw }),
        );
        if gzip {
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        r
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// The chat frame's `Content-Security-Policy`: only the gateway's own pages
/// and the site's allowed origins may embed it. `None` if an origin cannot
/// go in a header (a site's origins are checked when it is defined).
pub fn frame_policy(allowed_origins: &[String]) -> Option<HeaderValue> {
    let mut ancestors = String::from("frame-ancestors 'self'");
    for o in allowed_origins {
        ancestors.push(' ');
        ancestors.push_str(o);
    }
    HeaderValue::from_str(&ancestors).ok()
}

/// `GET /chat` for `site`: the chat window's document with its
/// [`frame_policy`].
pub fn chat_frame<B>(req: &Request<B>, site: &Site) -> Response<Body> {
    const NAME: &str = "chat.html";
    let Some(a) = assets::find(NAME) else {
        return asset(req, NAME);
    };
    let mut resp = asset_response(req, a, cache_policy(NAME));
    if let Some(csp) = frame_policy(&site.config.allowed_origins) {
        resp.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    resp
}

/// The site id a chat request names (`?site=ID`), or the 400 that asks for it.
pub fn site_id<B>(req: &Request<B>) -> Result<String, Refusal> {
    query_param(req.uri(), "site").ok_or_else(|| {
        refusal(
            StatusCode::BAD_REQUEST,
            "missing ?site=ID: every chat request names its site".into(),
        )
    })
}

/// The 404 for a site id no site has.
pub fn unknown_site(id: &str) -> Refusal {
    refusal(StatusCode::NOT_FOUND, format!("unknown site '{id}'"))
}

/// Whether a request with these headers may use `site`'s WebSocket and
/// long-poll endpoints (its `Origin` against the site's allowed origins and
/// the gateway's own `Host`); the 403 if not.
pub fn check_origin(headers: &HeaderMap, site: &Site) -> Result<(), Refusal> {
    let header_str = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = header_str(header::ORIGIN);
    if site.origin_allowed(origin, header_str(header::HOST)) {
        return Ok(());
    }
    Err(refusal(
        StatusCode::FORBIDDEN,
        format!(
            "origin {} may not use site '{}'; add it to the site's allowed_origins",
            origin.unwrap_or(""),
            site.id
        ),
    ))
}

/// The cursor a `GET /poll/recv` asks from (`?cursor=N`), or the 400.
pub fn poll_cursor<B>(req: &Request<B>) -> Result<u64, Refusal> {
    query_param(req.uri(), "cursor")
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| {
            refusal(
                StatusCode::BAD_REQUEST,
                "missing or invalid ?cursor=N (send 0 on the first call)".into(),
            )
        })
}

/// The JSON a long-poll answers with: the cursor to ask from next and the
/// messages since the last one, each already encoded.
pub fn poll_body(cursor: u64, messages: &[Bytes]) -> Vec<u8> {
    let len: usize = messages.iter().map(|m| m.len() + 1).sum();
    let mut body = Vec::with_capacity(48 + len);
    body.extend_from_slice(format!("{{\"cursor\":{cursor},\"messages\":[").as_bytes());
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(m);
    }
    body.extend_from_slice(b"]}");
    body
}

/// The answer to a `GET /poll/recv`: [`poll_body`], never cached, with the
/// cookie of a session the poll started.
pub fn poll_answer(
    cursor: u64,
    messages: &[Bytes],
    set_cookie: Option<HeaderValue>,
) -> Response<Body> {
    let mut r = response::with_body(
        StatusCode::OK,
        "application/json",
        poll_body(cursor, messages),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = set_cookie {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// The answer to a `POST /poll/send` its session took, with the cookie of a
/// session it started.
pub fn poll_sent(set_cookie: Option<HeaderValue>) -> Response<Body> {
    let mut r = response::empty(StatusCode::NO_CONTENT);
    if let Some(c) = set_cookie {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `GET /healthz`.
pub fn health() -> Response<Body> {
    response::text(StatusCode::OK, "ok")
}

/// `GET /metrics`, around the rendered exposition.
pub fn metrics(exposition: String) -> Response<Body> {
    response::with_body(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        exposition,
    )
}

fn refusal(status: StatusCode, msg: String) -> Refusal {
    Box::new(response::text(status, msg))
}
