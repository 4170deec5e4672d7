//! The desk's HTTP API: signing in (`/agent/login`, `/agent/logout`,
//! `/agent/me`), agents, canned replies and conversations under `/admin/`
//! (docs/protocol.md, "Agent HTTP API"), and who may open `/agent/ws`.
//!
//! Every refusal says why: 401 without credentials, 403 for a role or a site
//! the caller may not use, 404 for what does not exist, 400 for bad input.

use std::time::Instant;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::directory::{valid_shortcut, AccountInput, Caller, Role};
use super::{Desk, DeskOut, ReadPurpose};
use crate::http::request::{cookie, query_param};
use crate::http::response::{self, Body};
use crate::ids::SubId;
use crate::ids::{AgentId, ConversationId};
use crate::sites::SiteRegistry;
use crate::store::{CannedReply, PageCursor, Write};

/// Name of the dashboard's sign-in cookie.
pub const AGENT_COOKIE: &str = "lc_agent";

/// A 403 with its reason.
pub fn forbidden(msg: &str) -> Response<Body> {
    response::text(StatusCode::FORBIDDEN, msg.to_string())
}

fn unauthorized(msg: &str) -> Response<Body> {
    let mut r = response::text(StatusCode::UNAUTHORIZED, msg.to_string());
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"agents\""),
    );
    r
}

fn bad(msg: impl Into<String>) -> Response<Body> {
    response::text(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> Response<Body> {
    response::text(StatusCode::NOT_FOUND, msg.into())
}

impl Desk {
    /// Who a request comes from: a bearer token (the admin token or an
    /// agent's), or under `/agent/` the sign-in cookie.
    pub fn caller(&self, req: &Request<Vec<u8>>, now: Instant) -> Option<Caller> {
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(t) = bearer {
            if let Some(admin) = &self.cfg.admin_token {
                if admin.matches(t.as_bytes()) {
                    return Some(Caller::Owner);
                }
            }
            return self.dir.by_token(t).map(Caller::Agent);
        }
        if req.uri().path().starts_with("/agent") {
            if let Some(c) = cookie(req, AGENT_COOKIE) {
                return self.dir.session(&c, now).map(Caller::Agent);
            }
        }
        None
    }

    /// May this request open `/agent/ws`? Pushes [`DeskOut::Upgrade`].
    pub fn on_agent_upgrade(&mut self, sub: SubId, req: &Request<Vec<u8>>, now: Instant) {
        let result = match self.caller(req, now) {
            Some(Caller::Agent(id)) => {
                // A browser always sends Origin: a page of another origin must
                // not ride the agent's cookie into their desk.
                let origin = req
                    .headers()
                    .get(header::ORIGIN)
                    .and_then(|v| v.to_str().ok());
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok());
                let same = match (origin, host) {
                    (None, _) => true,
                    (Some(o), Some(h)) => o
                        .split_once("://")
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(h)),
                    (Some(_), None) => false,
                };
                if same {
                    Ok(id)
                } else {
                    Err(forbidden("cross-origin agent sockets are refused"))
                }
            }
            Some(Caller::Owner) => Err(forbidden(
                "the admin token is not an agent: sign in with an agent's token",
            )),
            None => Err(unauthorized(
                "sign in first (POST /agent/login) or send 'Authorization: Bearer <agent token>'",
            )),
        };
        self.out.push(DeskOut::Upgrade { sub, result });
    }

    /// One HTTP request of the desk's API; the answer comes out as
    /// [`DeskOut::Http`] (at once, or after a store write or read).
    pub fn on_http(
        &mut self,
        sub: SubId,
        req: Request<Vec<u8>>,
        sites: &SiteRegistry,
        now: Instant,
        now_ms: u64,
    ) {
        if let Some(resp) = self.http(sub, &req, sites, now, now_ms) {
            self.out.push(DeskOut::Http { sub, resp });
        }
    }

    fn http(
        &mut self,
        sub: SubId,
        req: &Request<Vec<u8>>,
        sites: &SiteRegistry,
        now: Instant,
        now_ms: u64,
    ) -> Option<Response<Body>> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let m = req.method().clone();
        // Signing in needs no caller.
        match (&m, parts.as_slice()) {
            (&Method::POST, ["agent", "login"]) => return Some(self.login(req, now)),
            (&Method::POST, ["agent", "logout"]) => {
                if let Some(c) = cookie(req, AGENT_COOKIE) {
                    self.dir.logout(&c);
                }
                let mut r = response::empty(StatusCode::NO_CONTENT);
                r.headers_mut().insert(
                    header::SET_COOKIE,
                    HeaderValue::from_static(
                        "lc_agent=; HttpOnly; SameSite=Strict; Path=/agent; Max-Age=0",
                    ),
                );
                return Some(r);
            }
            _ => {}
        }
        let Some(caller) = self.caller(req, now) else {
            return Some(unauthorized(
                "send 'Authorization: Bearer <token>' (or sign in at /agent)",
            ));
        };
        match (&m, parts.as_slice()) {
            (&Method::GET, ["agent", "me"]) => Some(match caller {
                Caller::Agent(id) => match self.dir.get(id) {
                    Some(a) => response::json(StatusCode::OK, a),
                    None => unauthorized("the account is gone"),
                },
                Caller::Owner => response::json(StatusCode::OK, &json!({"owner": true})),
            }),
            (&Method::GET, ["admin", "agents"]) => {
                if !self.is_admin(caller) {
                    return Some(forbidden("only admins manage agents"));
                }
                let list: Vec<_> = self
                    .dir
                    .all()
                    .filter(|a| self.dir.may_manage(caller, &a.sites))
                    .collect();
                Some(response::json(StatusCode::OK, &list))
            }
            (&Method::POST, ["admin", "agents"]) => {
                let input = match parse_input(req, sites) {
                    Ok(i) => i,
                    Err(r) => return Some(*r),
                };
                if !self.dir.may_manage(caller, &input.sites) {
                    return Some(forbidden(
                        "only admins manage agents, and only for their own sites",
                    ));
                }
                let (a, token) = self.dir.create(input, now_ms);
                let stored = a.to_stored();
                self.account_changed(a.id, now);
                let resp =
                    response::json(StatusCode::CREATED, &json!({"agent": a, "token": token}));
                self.out.push(DeskOut::Write {
                    write: Write::AgentSaved(stored),
                    then: Some((sub, resp)),
                });
                None
            }
            (_, ["admin", "agents", id, rest @ ..]) => {
                let Some(id) = id
                    .parse::<u64>()
                    .ok()
                    .map(AgentId::new)
                    .filter(|i| self.dir.get(*i).is_some())
                else {
                    return Some(not_found(format!("no agent '{id}'")));
                };
                let current = self
                    .dir
                    .get(id)
                    .map(|a| a.sites.clone())
                    .unwrap_or_default();
                if !self.dir.may_manage(caller, &current) {
                    return Some(forbidden(
                        "only admins of the agent's sites manage this agent",
                    ));
                }
                match (&m, rest) {
                    (&Method::GET, []) => {
                        self.dir.get(id).map(|a| response::json(StatusCode::OK, a))
                    }
                    (&Method::PUT, []) => {
                        let input = match parse_input(req, sites) {
                            Ok(i) => i,
                            Err(r) => return Some(*r),
                        };
                        if !self.dir.may_manage(caller, &input.sites) {
                            return Some(forbidden(
                                "you may not give the agent sites you do not administer",
                            ));
                        }
                        let a = self.dir.update(id, input)?;
                        self.account_changed(id, now);
                        let resp = response::json(StatusCode::OK, &a);
                        self.out.push(DeskOut::Write {
                            write: Write::AgentSaved(a.to_stored()),
                            then: Some((sub, resp)),
                        });
                        None
                    }
                    (&Method::DELETE, []) => {
                        self.dir.delete(id);
                        self.account_removed(id, now);
                        self.out.push(DeskOut::Write {
                            write: Write::AgentDeleted { id: id.get() },
                            then: Some((sub, response::empty(StatusCode::NO_CONTENT))),
                        });
                        None
                    }
                    (&Method::POST, ["token"]) => {
                        let (a, token) = self.dir.rotate_token(id)?;
                        let resp = response::json(StatusCode::OK, &json!({"token": token}));
                        self.out.push(DeskOut::Write {
                            write: Write::AgentSaved(a.to_stored()),
                            then: Some((sub, resp)),
                        });
                        None
                    }
                    _ => Some(response::text(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "see docs/protocol.md, Agent HTTP API",
                    )),
                }
            }
            (_, ["admin", "sites", site, "canned", rest @ ..]) => {
                let site = site.to_string();
                if sites.get(&site).is_none() {
                    return Some(not_found(format!("no site '{site}'")));
                }
                match (&m, rest) {
                    (&Method::GET, []) => {
                        if !self.dir.may(caller, &site, Role::Agent) {
                            return Some(forbidden("not an agent of this site"));
                        }
                        let list: Vec<_> = self
                            .dir
                            .canned(&site)
                            .into_iter()
                            .map(|(shortcut, text)| json!({"shortcut": shortcut, "text": text}))
                            .collect();
                        Some(response::json(StatusCode::OK, &list))
                    }
                    (&Method::PUT, [shortcut]) | (&Method::DELETE, [shortcut]) => {
                        if !self.dir.may(caller, &site, Role::Admin) {
                            return Some(forbidden(
                                "only admins of this site manage its canned replies",
                            ));
                        }
                        if !valid_shortcut(shortcut) {
                            return Some(bad("a shortcut is 1-32 letters, digits, - or _"));
                        }
                        let shortcut = shortcut.to_string();
                        if m == Method::DELETE {
                            if !self.dir.delete_canned(&site, &shortcut) {
                                return Some(not_found(format!("no canned reply '{shortcut}'")));
                            }
                            self.out.push(DeskOut::Write {
                                write: Write::CannedDeleted { site, shortcut },
                                then: Some((sub, response::empty(StatusCode::NO_CONTENT))),
                            });
                            return None;
                        }
                        #[derive(Deserialize)]
                        #[serde(deny_unknown_fields)]
                        struct Canned {
                            text: String,
                        }
                        let c: Canned = match serde_json::from_slice(req.body()) {
                            Ok(c) => c,
                            Err(e) => return Some(bad(format!("expected {{\"text\": ...}}: {e}"))),
                        };
                        if c.text.trim().is_empty() || c.text.len() > 4096 {
                            return Some(bad("text must be 1 to 4096 bytes"));
                        }
                        let created = self.dir.put_canned(&site, &shortcut, &c.text);
                        let status = if created {
                            StatusCode::CREATED
                        } else {
                            StatusCode::OK
                        };
                        let resp =
                            response::json(status, &json!({"shortcut": shortcut, "text": c.text}));
                        self.out.push(DeskOut::Write {
                            write: Write::CannedSaved(CannedReply {
                                site,
                                shortcut,
                                text: c.text,
                            }),
                            then: Some((sub, resp)),
                        });
                        None
                    }
                    _ => Some(response::text(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "GET the list; PUT or DELETE one shortcut",
                    )),
                }
            }
            (&Method::GET, ["admin", "conversations"]) => {
                let Some(site) = query_param(req.uri(), "site") else {
                    return Some(bad("name the site: ?site=ID"));
                };
                if !self.dir.may(caller, &site, Role::Supervisor) {
                    return Some(forbidden(
                        "only supervisors and admins of this site list its conversations",
                    ));
                }
                let limit = query_param(req.uri(), "limit")
                    .and_then(|l| l.parse::<usize>().ok())
                    .unwrap_or(50)
                    .clamp(1, 500);
                let before = match query_param(req.uri(), "before") {
                    None => None,
                    Some(b) => match parse_cursor(&b) {
                        Some(c) => Some(c),
                        None => {
                            return Some(bad(
                                "invalid ?before= cursor: pass the `next` of the previous page",
                            ))
                        }
                    },
                };
                self.out.push(DeskOut::ListConversations {
                    site,
                    limit,
                    before,
                    sub,
                });
                None
            }
            (&Method::GET, ["admin", "conversations", id]) => {
                let Some(conv) = ConversationId::parse(id) else {
                    return Some(not_found(format!("no conversation '{id}'")));
                };
                self.out.push(DeskOut::ReadTranscript {
                    conv,
                    purpose: ReadPurpose::Http { caller, sub },
                });
                None
            }
            _ => Some(not_found(format!(
                "no such resource: {path}; see docs/protocol.md"
            ))),
        }
    }

    fn is_admin(&self, caller: Caller) -> bool {
        match caller {
            Caller::Owner => true,
            Caller::Agent(id) => self.dir.get(id).is_some_and(|a| a.role == Role::Admin),
        }
    }

    fn login(&mut self, req: &Request<Vec<u8>>, now: Instant) -> Response<Body> {
        #[derive(Deserialize)]
        struct Login {
            token: String,
        }
        let Ok(l) = serde_json::from_slice::<Login>(req.body()) else {
            return bad("expected {\"token\": \"<agent token>\"}");
        };
        let Some((id, cookie)) = self.dir.login(l.token.trim(), now, self.cfg.login_ttl) else {
            return unauthorized("unknown token");
        };
        let Some(a) = self.dir.get(id) else {
            return unauthorized("unknown token");
        };
        let mut r = response::json(StatusCode::OK, a);
        let v = format!(
            "{AGENT_COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/agent; Max-Age={}",
            self.cfg.login_ttl.as_secs()
        );
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }

    /// A page of conversations from the store, for `GET /admin/conversations`.
    pub fn on_list(
        &mut self,
        sub: SubId,
        result: Result<Vec<crate::store::ConversationSummary>, crate::store::StoreError>,
    ) {
        let resp = match result {
            Ok(list) => {
                let next = list.last().map(|s| {
                    let c = s.cursor();
                    format!("{}.{}", c.started_ms, c.conversation)
                });
                let items: Vec<_> = list
                    .iter()
                    .map(|s| {
                        let c = &s.conversation;
                        json!({
                            "conversation": c.id.to_string(),
                            "site": c.site,
                            "started_ms": c.started_ms,
                            "lang": c.page.lang,
                            "page": c.page.page,
                            "needs_human": c.needs_human.as_ref().map(|m| &m.reason),
                            "agent": c.assigned.as_ref().map(|a| &a.agent),
                            "ended": c.ended.as_ref().map(|m| &m.reason),
                            "csat": c.csat.as_ref().map(|r| r.score),
                            "items": s.items,
                            "last_item_ms": s.last_item_ms,
                        })
                    })
                    .collect();
                response::json(StatusCode::OK, &json!({"items": items, "next": next}))
            }
            Err(e) => {
                tracing::error!(error = %e, "agent desk: cannot list conversations");
                response::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the conversations could not be read",
                )
            }
        };
        self.out.push(DeskOut::Http { sub, resp });
    }
}

fn parse_input(
    req: &Request<Vec<u8>>,
    sites: &SiteRegistry,
) -> Result<AccountInput, Box<Response<Body>>> {
    let input: AccountInput = serde_json::from_slice(req.body())
        .map_err(|e| Box::new(bad(format!("invalid agent: {e}"))))?;
    input
        .validate(|s| sites.get(s).is_some())
        .map_err(|e| Box::new(bad(e)))?;
    Ok(input)
}

fn parse_cursor(s: &str) -> Option<PageCursor> {
    let (ms, id) = s.split_once('.')?;
    Some(PageCursor {
        started_ms: ms.parse().ok()?,
        conversation: ConversationId::parse(id)?,
    })
}
