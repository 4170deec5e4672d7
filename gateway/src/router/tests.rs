use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};

use super::respond::{self, SESSION_COOKIE};
use super::{route, session_key, Route, Switches};
use crate::assets::{self, Asset};
use crate::config::{CookieMode, SessionConfig};
use crate::ids::SessionKey;
use crate::sites::{Site, SiteConfig};

const ECHO_ON: Switches = Switches { echo: true };
const ECHO_OFF: Switches = Switches { echo: false };

fn req(method: &str, uri: &str) -> Request<()> {
    with_headers(method, uri, &[])
}

fn with_headers(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        b = b.header(*name, *value);
    }
    b.body(()).unwrap()
}

fn at(method: &str, uri: &str) -> Route {
    route(&req(method, uri), ECHO_ON)
}

/// Asserts that each `(method, uri)` routes to `want(method, uri)`.
fn assert_routes(cases: &[(&str, &str)], want: impl Fn(&str, &str) -> Route) {
    for (method, uri) in cases {
        assert_eq!(at(method, uri), want(method, uri), "{method} {uri}");
    }
}

#[test]
fn every_route_of_the_table() {
    let table = [
        ("GET", "/ws?site=demo", Route::ChatUpgrade),
        ("GET", "/echo", Route::EchoUpgrade),
        ("POST", "/poll/send?site=demo", Route::PollSend),
        ("GET", "/poll/recv?site=demo&cursor=0", Route::PollRecv),
        ("GET", "/healthz", Route::Health),
        ("HEAD", "/healthz", Route::Health),
        ("GET", "/metrics", Route::Metrics),
        ("HEAD", "/metrics", Route::Metrics),
        ("GET", "/agent/ws", Route::AgentUpgrade),
        ("GET", "/agent", Route::AgentPage),
        ("HEAD", "/agent", Route::AgentPage),
        ("GET", "/", Route::Asset("demo.html")),
        ("HEAD", "/?site=demo", Route::Asset("demo.html")),
        ("GET", "/chat?site=demo", Route::ChatFrame),
        ("HEAD", "/chat", Route::ChatFrame),
        ("GET", "/admin", Route::Admin),
        ("GET", "/admin/sites", Route::Admin),
        ("PUT", "/admin/sites/shop", Route::Admin),
        ("DELETE", "/admin/sites/shop", Route::Admin),
    ];
    for (method, uri, want) in table {
        assert_eq!(at(method, uri), want, "{method} {uri}");
    }
}

#[test]
fn the_desk_api_goes_to_the_desk() {
    let cases = [
        ("POST", "/agent/login"),
        ("POST", "/agent/logout"),
        ("GET", "/agent/me"),
        ("GET", "/agent/me/"),
        ("GET", "/admin/agents"),
        ("PUT", "/admin/agents/ana"),
        ("GET", "/admin/conversations"),
        ("GET", "/admin/conversations/c_AAAAAAAAAAAAAAAA"),
        ("GET", "/admin/sites/shop/canned"),
        ("PUT", "/admin/sites/shop/canned/"),
    ];
    assert_routes(&cases, |_, _| Route::Desk);
    // Only `canned` under a site is the desk's; the rest is the admin API.
    assert_eq!(at("GET", "/admin/sites/shop/cannedx"), Route::Admin);
    assert_eq!(at("GET", "/admin/agentsx"), Route::Admin);
}

#[test]
fn the_knowledge_base_api_goes_to_retrieval() {
    let cases = [
        ("GET", "/admin/sites/shop/kb"),
        ("PUT", "/admin/sites/shop/kb/help/shipping.md"),
        ("DELETE", "/admin/sites/shop/kb/returns.md"),
        ("GET", "/admin/sites/shop/kb/search?q=refund&k=5"),
    ];
    assert_routes(&cases, |_, _| Route::KnowledgeBase);
    // A site id is required for the path to be the knowledge base's.
    assert_eq!(at("GET", "/admin/sites//kb"), Route::Admin);
}

#[test]
fn built_in_files_are_served_by_name() {
    for a in assets::ASSETS {
        let uri = format!("/{}", a.name);
        assert_eq!(at("GET", &uri), Route::Asset(a.name));
        assert_eq!(at("HEAD", &uri), Route::Asset(a.name));
        assert_eq!(
            at("POST", &uri),
            Route::NotFound(format!("no such resource: {uri}"))
        );
    }
}

#[test]
fn known_paths_refuse_other_methods() {
    let cases = [
        ("DELETE", "/healthz"),
        ("POST", "/metrics"),
        ("HEAD", "/ws"),
        ("POST", "/ws"),
        ("GET", "/poll/send"),
        ("POST", "/poll/recv"),
        ("POST", "/"),
        ("PUT", "/chat"),
    ];
    assert_routes(&cases, |method, path| {
        Route::MethodNotAllowed(format!("{method} is not allowed on {path}"))
    });
}

#[test]
fn unknown_paths_are_not_found() {
    let cases = [
        ("GET", "/nope"),
        ("GET", "/ws/"),
        ("POST", "/agent"),
        ("POST", "/agent/ws"),
        ("POST", "/echo"),
        ("GET", "/agent/ws/x"),
        ("GET", "/healthz/"),
    ];
    assert_routes(&cases, |_, path| {
        Route::NotFound(format!("no such resource: {path}"))
    });
    // The message names the path, never the query.
    assert_eq!(
        at("GET", "/nope?site=x"),
        Route::NotFound("no such resource: /nope".into())
    );
}

#[test]
fn echo_only_when_enabled() {
    assert_eq!(route(&req("GET", "/echo"), ECHO_ON), Route::EchoUpgrade);
    assert_eq!(
        route(&req("GET", "/echo"), ECHO_OFF),
        Route::NotFound("no such resource: /echo".into())
    );
    // The other routes do not depend on it.
    assert_eq!(route(&req("GET", "/ws"), ECHO_OFF), Route::ChatUpgrade);
}

fn key() -> SessionKey {
    SessionKey::from_bytes([7; 16])
}

fn cookie_for(mode: CookieMode) -> String {
    let session = SessionConfig {
        cookie: mode,
        lifetime_secs: 3600,
        ..Default::default()
    };
    let v = respond::session_cookie(&key(), &session);
    v.to_str().unwrap().to_owned()
}

#[test]
fn lax_cookie_attributes() {
    assert_eq!(
        cookie_for(CookieMode::Lax),
        format!(
            "{SESSION_COOKIE}={}; HttpOnly; SameSite=Lax; Path=/; Max-Age=3600",
            key().to_cookie()
        )
    );
}

#[test]
fn cross_site_cookie_attributes() {
    assert_eq!(
        cookie_for(CookieMode::CrossSite),
        format!(
            "{SESSION_COOKIE}={}; HttpOnly; SameSite=None; Partitioned; Secure; Path=/; Max-Age=3600",
            key().to_cookie()
        )
    );
}

#[test]
fn a_lifetime_beyond_i64_is_capped() {
    let session = SessionConfig {
        lifetime_secs: u64::MAX,
        ..Default::default()
    };
    let v = respond::session_cookie(&key(), &session);
    assert!(v
        .to_str()
        .unwrap()
        .ends_with(&format!("Max-Age={}", i64::MAX)));
}

#[test]
fn the_session_key_comes_from_its_cookie() {
    let cookie = format!("theme=dark; {SESSION_COOKIE}={}", key().to_cookie());
    let r = with_headers("GET", "/ws", &[("cookie", &cookie)]);
    assert_eq!(session_key(&r), Some(key()));
    let bad = format!("{SESSION_COOKIE}=short");
    assert_eq!(
        session_key(&with_headers("GET", "/ws", &[("cookie", &bad)])),
        None
    );
    assert_eq!(session_key(&req("GET", "/ws")), None);
}

fn shop() -> Site {
    Site::new(
        "shop",
        SiteConfig {
            allowed_origins: vec!["https://shop.example".into()],
            ..Default::default()
        },
    )
    .unwrap()
}

fn origin_headers(origin: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("chat.gw:8080"));
    if let Some(o) = origin {
        h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
    }
    h
}

#[test]
fn origin_allowed() {
    let site = shop();
    assert!(respond::check_origin(&origin_headers(Some("https://shop.example")), &site).is_ok());
    // The gateway's own pages (the chat frame) use every site.
    assert!(respond::check_origin(&origin_headers(Some("http://chat.gw:8080")), &site).is_ok());
}

#[test]
fn origin_refused() {
    let refusal =
        respond::check_origin(&origin_headers(Some("https://evil.example")), &shop()).unwrap_err();
    assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        refusal.body().as_ref(),
        b"origin https://evil.example may not use site 'shop'; add it to the site's allowed_origins\n"
    );
    // An Origin that is not one at all is refused too.
    assert!(respond::check_origin(&origin_headers(Some("not an origin")), &shop()).is_err());
}

#[test]
fn origin_absent() {
    // No Origin: not a browser page, so nothing to protect against.
    assert!(respond::check_origin(&origin_headers(None), &shop()).is_ok());
    assert!(respond::check_origin(&HeaderMap::new(), &shop()).is_ok());
}

#[test]
fn chat_requests_name_their_site() {
    assert_eq!(
        respond::site_id(&req("GET", "/ws?site=sh%6Fp")).unwrap(),
        "shop"
    );
    let r = respond::site_id(&req("GET", "/ws")).unwrap_err();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body().as_ref(),
        b"missing ?site=ID: every chat request names its site\n"
    );
    let r = respond::unknown_site("nope");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.body().as_ref(), b"unknown site 'nope'\n");
}

#[test]
fn poll_cursor() {
    let cursor = |uri| respond::poll_cursor(&req("GET", uri));
    assert_eq!(cursor("/poll/recv?site=s&cursor=42").unwrap(), 42);
    for bad in [
        "/poll/recv?site=s",
        "/poll/recv?cursor=",
        "/poll/recv?cursor=-1",
    ] {
        let r = cursor(bad).unwrap_err();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            r.body().as_ref(),
            b"missing or invalid ?cursor=N (send 0 on the first call)\n"
        );
    }
}

static FILE: Asset = Asset {
    name: "widget.js",
    content_type: "text/javascript; charset=utf-8",
    etag: "\"0123456789abcdef\"",
    raw: b"console.log(1)",
    gzip: b"\x1f\x8bgzipped",
};

fn serve(headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let r = with_headers("GET", "/widget.js", headers);
    respond::asset_response(&r, &FILE, respond::cache_policy(FILE.name))
}

fn assert_file_headers(r: &http::Response<Bytes>, cache: &str) {
    let h = r.headers();
    assert_eq!(h[header::ETAG], FILE.etag);
    assert_eq!(h[header::CACHE_CONTROL], cache);
    assert_eq!(h[header::VARY], "Accept-Encoding");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

#[test]
fn gzip_when_accepted() {
    for accept in ["gzip", "gzip, deflate, br", "br;q=1, gzip;q=0.5", "*"] {
        let r = serve(&[("accept-encoding", accept)]);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip", "{accept}");
        assert_eq!(r.headers()[header::CONTENT_TYPE], FILE.content_type);
        assert_eq!(r.body().as_ref(), FILE.gzip);
        assert_file_headers(&r, "public, max-age=300");
    }
}

#[test]
fn identity_otherwise() {
    // The gateway holds no brotli copy: `br` alone gets the file as is.
    for accept in [None, Some("br"), Some("gzip;q=0"), Some("identity")] {
        let headers: Vec<_> = accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let r = serve(&headers);
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers().get(header::CONTENT_ENCODING).is_none(),
            "{accept:?}"
        );
        assert_eq!(r.body().as_ref(), FILE.raw);
        assert_file_headers(&r, "public, max-age=300");
    }
}

#[test]
fn revalidation_answers_304() {
    for inm in [
        "\"0123456789abcdef\"",
        "W/\"0123456789abcdef\"",
        "\"other\", \"0123456789abcdef\"",
        "*",
    ] {
        let r = serve(&[("if-none-match", inm), ("accept-encoding", "gzip")]);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{inm}");
        assert!(r.body().is_empty());
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert_file_headers(&r, "public, max-age=300");
    }
    assert_eq!(
        serve(&[("if-none-match", "\"other\"")]).status(),
        StatusCode::OK
    );
}

#[test]
fn documents_always_revalidate() {
    assert_eq!(respond::cache_policy("chat.html"), "no-cache");
    assert_eq!(respond::cache_policy("widget.js"), "public, max-age=300");
}

#[test]
fn a_file_not_built_in_says_so() {
    let r = respond::asset(&req("GET", "/x"), "missing.html");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.body().as_ref(),
        b"missing.html is not built into this gateway; build the widget (see README)\n"
    );
}

#[test]
fn the_chat_frame_names_who_may_embed_it() {
    assert_eq!(
        respond::frame_policy(&["https://a.example".into(), "https://b.example".into()]).unwrap(),
        "frame-ancestors 'self' https://a.example https://b.example"
    );
    assert_eq!(
        respond::frame_policy(&[]).unwrap(),
        "frame-ancestors 'self'"
    );
    let r = respond::chat_frame(&req("GET", "/chat?site=shop"), &shop());
    if assets::find("chat.html").is_some() {
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors 'self' https://shop.example"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
    } else {
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}

#[test]
fn the_poll_body() {
    assert_eq!(respond::poll_body(0, &[]), br#"{"cursor":0,"messages":[]}"#);
    let messages = [
        Bytes::from_static(br#"{"type":"ack","id":"1"}"#),
        Bytes::from_static(br#"{"type":"message","text":"hi"}"#),
    ];
    assert_eq!(
        respond::poll_body(17, &messages),
        br#"{"cursor":17,"messages":[{"type":"ack","id":"1"},{"type":"message","text":"hi"}]}"#
    );
}

#[test]
fn the_poll_answers() {
    let cookie = HeaderValue::from_static("lc_session=x");
    let r = respond::poll_answer(3, &[], Some(cookie.clone()));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.headers()[header::SET_COOKIE], cookie);
    assert_eq!(r.body().as_ref(), br#"{"cursor":3,"messages":[]}"#);
    let r = respond::poll_answer(3, &[], None);
    assert!(r.headers().get(header::SET_COOKIE).is_none());

    let r = respond::poll_sent(Some(cookie.clone()));
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()[header::SET_COOKIE], cookie);
    assert!(respond::poll_sent(None).headers().is_empty());
}

#[test]
fn health_and_metrics() {
    let h = respond::health();
    assert_eq!(
        (h.status(), h.body().as_ref()),
        (StatusCode::OK, &b"ok\n"[..])
    );
    let m = respond::metrics("lc_up 1\n".into());
    assert_eq!(
        m.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(m.body().as_ref(), b"lc_up 1\n");
}

#[test]
fn methods_are_matched_exactly() {
    // Methods are case-sensitive: `get` is an extension method, not GET.
    let r = Request::builder()
        .method(Method::from_bytes(b"get").unwrap())
        .uri("/healthz")
        .body(())
        .unwrap();
    assert_eq!(
        route(&r, ECHO_ON),
        Route::MethodNotAllowed("get is not allowed on /healthz".into())
    );
}
