//! The knowledge-base part of the admin API, behind the admin token. It runs
//! on a retrieval thread (an upload is chunked and embedded, which takes
//! from milliseconds to seconds), as a function from a request to a response.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/admin/sites/{site}/kb` | 200: mode, embedder, chunks, documents |
//! | PUT | `/admin/sites/{site}/kb/{name}` | the body is the document: 201 added, 200 replaced or unchanged, 422 rejected with the reason |
//! | DELETE | `/admin/sites/{site}/kb/{name}` | 204, or 404 |
//! | GET | `/admin/sites/{site}/kb/search?q=...&k=5` | 200: confidence and hits, as an answer would get them |
//!
//! `{name}` may hold slashes (`help/shipping.md`) and is percent-decoded; its
//! extension tells the format (`.md`, `.html`, `.txt`).

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use knowledge::{FileOutcome, KnowledgeBase};
use percent_encoding::percent_decode_str;
use serde_json::json;

use super::library::Library;
use crate::http::request::query_param;
use crate::http::response::{self, Body};
use crate::sites::SiteRegistry;

/// Whether `path` is one of this module's routes.
pub fn is_kb_route(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').splitn(5, '/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("admin"), Some("sites"), Some(site), Some("kb")) if !site.is_empty()
    )
}

/// Answers one knowledge-base admin request (see the module docs).
pub fn handle(
    req: &Request<Vec<u8>>,
    token: Option<&crate::admin::AdminToken>,
    sites: &SiteRegistry,
    library: &Library,
) -> Response<Body> {
    if let Err(refusal) = crate::admin::authorize(req, token) {
        return *refusal;
    }
    let path = req.uri().path();
    let mut parts = path.trim_start_matches('/').splitn(5, '/').skip(2);
    let site = parts.next().unwrap_or_default();
    let name = parts.nth(1).unwrap_or_default().trim_end_matches('/');
    let name = match percent_decode_str(name).decode_utf8() {
        Ok(n) => n.into_owned(),
        Err(_) => return response::text(StatusCode::BAD_REQUEST, "the document name is not UTF-8"),
    };
    if sites.get(site).is_none() {
        return response::text(StatusCode::NOT_FOUND, format!("no site '{site}'"));
    }
    let kb = match library.open(site) {
        Ok(kb) => kb,
        Err(e) => {
            tracing::error!(site, error = %e, "cannot open a knowledge base");
            return response::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
    };
    match (req.method(), name.as_str()) {
        (&Method::GET, "") => list(site, &kb),
        (&Method::GET, "search") => search(req, library, site, &kb),
        (&Method::PUT, "") => response::text(
            StatusCode::BAD_REQUEST,
            "name the document: PUT /admin/sites/{site}/kb/{name} with the file as the body",
        ),
        (&Method::PUT, name) => {
            let r = upload(&kb, name, req.body());
            library.restamp(site);
            r
        }
        (&Method::DELETE, name) if !name.is_empty() => match kb.remove_document(name) {
            Ok(true) => {
                library.restamp(site);
                response::empty(StatusCode::NO_CONTENT)
            }
            Ok(false) => response::text(
                StatusCode::NOT_FOUND,
                format!("site '{site}' has no document '{name}'"),
            ),
            Err(e) => response::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        _ => {
            let mut r = response::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET on .../kb or .../kb/search?q=, PUT or DELETE on .../kb/{name}",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, PUT, DELETE"));
            r
        }
    }
}

fn list(site: &str, kb: &KnowledgeBase) -> Response<Body> {
    response::json(
        StatusCode::OK,
        &json!({
            "site": site,
            "mode": kb.mode().as_str(),
            "embedder": kb.embedder_id(),
            "chunks": kb.len(),
            "documents": kb.documents(),
        }),
    )
}

fn search(
    req: &Request<Vec<u8>>,
    library: &Library,
    site: &str,
    kb: &KnowledgeBase,
) -> Response<Body> {
    let Some(q) = query_param(req.uri(), "q").filter(|q| !q.trim().is_empty()) else {
        return response::text(StatusCode::BAD_REQUEST, "give the question as ?q=");
    };
    let k = match query_param(req.uri(), "k").map(|k| k.parse::<usize>()) {
        None => library.config().top_k,
        Some(Ok(k)) if (1..=50).contains(&k) => k,
        Some(_) => return response::text(StatusCode::BAD_REQUEST, "k must be 1 to 50"),
    };
    let hits = kb.search(&q, k);
    response::json(
        StatusCode::OK,
        &json!({
            "site": site,
            "query": q,
            "confidence": kb.confidence(&hits),
            "hits": hits.iter().map(|h| json!({
                "chunk": h.chunk_id,
                "title": h.title,
                "url": h.url,
                "headings": h.heading_path,
                "score": h.score,
                "text": h.text,
            })).collect::<Vec<_>>(),
        }),
    )
}

fn upload(kb: &KnowledgeBase, name: &str, body: &[u8]) -> Response<Body> {
    let report = match kb.ingest_document(name, body) {
        Ok(r) => r,
        Err(e) => {
            // Embedding or writing failed: nothing was changed.
            tracing::warn!(site = kb.site(), name, error = %e, "upload not ingested");
            return response::text(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
    };
    let status = match report.files.first().map(|f| &f.outcome) {
        Some(FileOutcome::Added { .. }) => StatusCode::CREATED,
        Some(FileOutcome::Rejected(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    response::json(status, &report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const TOKEN: &str = "0123456789abcdef-admin";

    fn req(method: &str, path: &str, body: &[u8]) -> Request<Vec<u8>> {
        Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Bearer {TOKEN}"))
            .body(body.to_vec())
            .expect("request")
    }

    fn body(r: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(r.body().as_ref()).unwrap_or_default()
    }

    #[test]
    fn routes() {
        assert!(is_kb_route("/admin/sites/demo/kb"));
        assert!(is_kb_route("/admin/sites/demo/kb/help/a.md"));
        assert!(!is_kb_route("/admin/sites/demo"));
        assert!(!is_kb_route("/admin/sites/demo/canned"));
        assert!(!is_kb_route("/admin/sites//kb"));
    }

    #[test]
    fn upload_search_list_and_delete() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sites = SiteRegistry::load(&BTreeMap::new(), None).expect("sites");
        let lib = Library::new(dir.path(), crate::config::KnowledgeConfig::default(), None);
        lib.start(None);
        let admin = crate::admin::AdminToken::from_secret(TOKEN);
        let run = |r: Request<Vec<u8>>| handle(&r, Some(&admin), &sites, &lib);

        let doc = b"# Gift cards\n\nGift cards never expire and work online and in stores.\n";
        let r = run(req("PUT", "/admin/sites/demo/kb/help%2Fgift-cards.md", doc));
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", body(&r));
        assert_eq!(body(&r)["files"][0]["status"], "added");
        let r = run(req("PUT", "/admin/sites/demo/kb/help/gift-cards.md", doc));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(&r)["files"][0]["status"], "unchanged");
        assert!(lib.covers("demo"));

        let r = run(req(
            "GET",
            "/admin/sites/demo/kb/search?q=do+gift+cards+expire",
            b"",
        ));
        assert_eq!(r.status(), StatusCode::OK);
        let b = body(&r);
        assert_eq!(b["hits"][0]["url"], "help/gift-cards.md");
        assert!(b["confidence"].as_f64().unwrap_or(0.0) > 0.5, "{b}");

        let r = run(req("GET", "/admin/sites/demo/kb", b""));
        assert_eq!(body(&r)["documents"][0]["name"], "help/gift-cards.md");

        // A binary file is refused by name; nothing else changes.
        let r = run(req(
            "PUT",
            "/admin/sites/demo/kb/logo.txt",
            b"\x89PNG\r\n\x1a\n\0\0\0",
        ));
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body(&r)["files"][0]["error"]["code"], "binary");
        assert_eq!(body(&r)["total_chunks"], 1);

        let r = run(req(
            "DELETE",
            "/admin/sites/demo/kb/help/gift-cards.md",
            b"",
        ));
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = run(req(
            "DELETE",
            "/admin/sites/demo/kb/help/gift-cards.md",
            b"",
        ));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(!lib.covers("demo"));
    }

    #[test]
    fn refusals() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sites = SiteRegistry::load(&BTreeMap::new(), None).expect("sites");
        let lib = Library::new(dir.path(), crate::config::KnowledgeConfig::default(), None);
        lib.start(None);
        let admin = crate::admin::AdminToken::from_secret(TOKEN);
        let unauth = Request::builder()
            .method("GET")
            .uri("/admin/sites/demo/kb")
            .body(Vec::new())
            .expect("request");
        let r = handle(&unauth, Some(&admin), &sites, &lib);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = handle(
            &req("GET", "/admin/sites/nope/kb", b""),
            Some(&admin),
            &sites,
            &lib,
        );
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = handle(
            &req("PUT", "/admin/sites/demo/kb", b"x"),
            Some(&admin),
            &sites,
            &lib,
        );
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = handle(
            &req("GET", "/admin/sites/demo/kb/search", b""),
            Some(&admin),
            &sites,
            &lib,
        );
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let r = handle(
            &req("POST", "/admin/sites/demo/kb/a.md", b""),
            Some(&admin),
            &sites,
            &lib,
        );
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
