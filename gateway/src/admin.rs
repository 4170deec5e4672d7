//! The admin API under `/admin/`: sites to begin with, behind a bearer token;
//! and that token's kept form, [`AdminToken`].
//!
//! A function from a request to a response, with no socket in sight.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/admin/sites` | 200, every site's settings by id |
//! | GET | `/admin/sites/{id}` | 200 or 404 |
//! | PUT | `/admin/sites/{id}` | 201 created or 200 replaced; 400 with the reason |
//! | DELETE | `/admin/sites/{id}` | 204 or 404 |

use std::collections::BTreeMap;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};

use crate::http::response::{self, Body};
use crate::sites::{SiteConfig, SiteRegistry};

/// The admin API's bearer token as the gateway keeps it: its SHA-256 only,
/// whether it came from the configuration or was made at first start (whose
/// token is shown once and never stored), so a presented token is hashed and
/// the hashes compared.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken([u8; 32]);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The kept form of a token in clear (`admin.token`, `--admin-token`).
    pub fn from_secret(secret: &str) -> Self {
        AdminToken(Sha256::digest(secret.as_bytes()).into())
    }

    /// A token's kept form, as [`AdminToken::hash`] gave it.
    pub fn from_hash(hash: [u8; 32]) -> Self {
        AdminToken(hash)
    }

    /// A new random token (128 bits, `lcadm_`-prefixed) and its kept form.
    pub fn generate() -> (String, Self) {
        let secret = crate::desk::directory::new_secret("lcadm_");
        let token = Self::from_secret(&secret);
        (secret, token)
    }

    /// The SHA-256 kept.
    pub fn hash(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `presented` is the token, in time that does not depend on
    /// how much of it is right.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let h: [u8; 32] = Sha256::digest(presented).into();
        constant_time_eq(&h, &self.0)
    }
}

/// Answers one admin request. `token` is the admin token, if any.
pub fn handle(
    req: &Request<Vec<u8>>,
    token: Option<&AdminToken>,
    sites: &SiteRegistry,
) -> Response<Body> {
    if let Err(refusal) = authorize(req, token) {
        return *refusal;
    }
    let path = req.uri().path().trim_end_matches('/');
    let rest: Vec<&str> = path
        .trim_start_matches("/admin")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (req.method(), rest.as_slice()) {
        (&Method::GET, ["sites"]) => {
            let all = sites.all();
            let view: BTreeMap<&str, &SiteConfig> =
                all.iter().map(|(id, s)| (id.as_str(), &s.config)).collect();
            response::json(StatusCode::OK, &view)
        }
        (&Method::GET, ["sites", id]) => match sites.get(id) {
            Some(s) => response::json(StatusCode::OK, &s.config),
            None => response::text(StatusCode::NOT_FOUND, format!("no site '{id}'")),
        },
        (&Method::PUT, ["sites", id]) => {
            let cfg: SiteConfig = match serde_json::from_slice(req.body()) {
                Ok(c) => c,
                Err(e) => {
                    return response::text(
                        StatusCode::BAD_REQUEST,
                        format!("invalid site settings: {e}"),
                    )
                }
            };
            match sites.put(id, cfg) {
                Ok(true) => response::json(
                    StatusCode::CREATED,
                    &serde_json::json!({ "site": id, "created": true }),
                ),
                Ok(false) => response::json(
                    StatusCode::OK,
                    &serde_json::json!({ "site": id, "created": false }),
                ),
                Err(e @ crate::sites::SiteError::Save { .. }) => {
                    tracing::error!(error = %e, "cannot persist a site change");
                    response::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                }
                Err(e) => response::text(StatusCode::BAD_REQUEST, e.to_string()),
            }
        }
        (&Method::DELETE, ["sites", id]) => match sites.delete(id) {
            Ok(true) => response::empty(StatusCode::NO_CONTENT),
            Ok(false) => response::text(StatusCode::NOT_FOUND, format!("no site '{id}'")),
            Err(e) => response::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        (_, ["sites"] | ["sites", _]) => {
            let mut r = response::text(StatusCode::METHOD_NOT_ALLOWED, "use GET, PUT or DELETE");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, PUT, DELETE"));
            r
        }
        _ => response::text(
            StatusCode::NOT_FOUND,
            "unknown admin resource; see docs/operations.md",
        ),
    }
}

/// Checks the request's bearer token against the admin `token`; the refusal
/// (403 when the admin API is off or the token is wrong, 401 without one)
/// otherwise. Every admin route, wherever it runs, starts with this.
pub fn authorize<B>(
    req: &Request<B>,
    token: Option<&AdminToken>,
) -> Result<(), Box<Response<Body>>> {
    let Some(token) = token else {
        return Err(Box::new(response::text(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set admin.token in the config file or --admin-token",
        )));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(presented) = presented else {
        let mut r = response::text(
            StatusCode::UNAUTHORIZED,
            "send 'Authorization: Bearer <admin token>'",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"admin\""),
        );
        return Err(Box::new(r));
    };
    if !token.matches(presented.as_bytes()) {
        return Err(Box::new(response::text(
            StatusCode::FORBIDDEN,
            "the bearer token is not the admin token",
        )));
    }
    Ok(())
}

/// Compares secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-admin";

    fn token() -> AdminToken {
        AdminToken::from_secret(TOKEN)
    }

    fn req(method: &str, path: &str, auth: Option<&str>, body: &str) -> Request<Vec<u8>> {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            b = b.header("Authorization", a);
        }
        b.body(body.as_bytes().to_vec()).unwrap()
    }

    fn registry() -> SiteRegistry {
        SiteRegistry::load(&BTreeMap::new(), None).unwrap()
    }

    #[test]
    fn refusals() {
        let sites = registry();
        let r = handle(&req("GET", "/admin/sites", None, ""), None, &sites);
        assert_eq!(r.status(), 403);
        let r = handle(
            &req("GET", "/admin/sites", None, ""),
            Some(&token()),
            &sites,
        );
        assert_eq!(r.status(), 401);
        let r = handle(
            &req("GET", "/admin/sites", Some("Bearer wrong"), ""),
            Some(&token()),
            &sites,
        );
        assert_eq!(r.status(), 403);
    }

    #[test]
    fn tokens_are_kept_hashed_and_compared_whole() {
        let t = token();
        assert!(t.matches(TOKEN.as_bytes()));
        assert!(!t.matches(b"0123456789abcdef-admiN"));
        assert!(!t.matches(b""));
        assert_eq!(AdminToken::from_hash(*t.hash()), t);
        assert_eq!(format!("{t:?}"), "AdminToken(..)", "no hash in logs");
        let (secret, made) = AdminToken::generate();
        assert!(
            secret.starts_with("lcadm_") && secret.len() >= 28,
            "{secret}"
        );
        assert!(made.matches(secret.as_bytes()));
        assert_ne!(AdminToken::generate().0, secret);
    }

    #[test]
    fn site_lifecycle() {
        let sites = registry();
        let auth = format!("Bearer {TOKEN}");
        let put = |body: &str| {
            handle(
                &req("PUT", "/admin/sites/shop", Some(&auth), body),
                Some(&token()),
                &sites,
            )
        };
        assert_eq!(
            put(r#"{"allowed_origins":["https://shop.example"]}"#).status(),
            201
        );
        assert_eq!(
            put(r#"{"allowed_origins":["https://shop.example"]}"#).status(),
            200
        );
        assert_eq!(
            put(r#"{"allowed_origins":["not an origin"]}"#).status(),
            400
        );
        assert_eq!(put(r#"{"bogus":1}"#).status(), 400);
        let r = handle(
            &req("GET", "/admin/sites", Some(&auth), ""),
            Some(&token()),
            &sites,
        );
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["shop"]["allowed_origins"][0], "https://shop.example");
        assert!(v.get("demo").is_some());
        let del = |id: &str| {
            handle(
                &req("DELETE", &format!("/admin/sites/{id}"), Some(&auth), ""),
                Some(&token()),
                &sites,
            )
        };
        assert_eq!(del("shop").status(), 204);
        assert_eq!(del("shop").status(), 404);
        let r = handle(
            &req("POST", "/admin/sites", Some(&auth), ""),
            Some(&token()),
            &sites,
        );
        assert_eq!(r.status(), 405);
    }
}
