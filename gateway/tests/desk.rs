//! The agent desk end to end over real sockets: an agent account made through
//! the admin API, an agent socket, a visitor asking for a person, the hand-off
//! both ways, resolve; and every refusal of the agent API.

// A test fails by panicking: unwrapping is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use common::{connect, request, Gateway, Opts};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

const CONFIG: &str = r#"
[admin]
token = "owner-secret-token"

[agents]
offer_timeout_ms = 20000
queue_timeout_ms = 60000
reconnect_grace_ms = 200

[sites.demo]
handoff = [{ keyword = "refund", skill = "billing" }]

[sites.other]
title = "Another shop"
human_below_confidence = 0.9
"#;

fn start(driver: &str) -> Gateway {
    Gateway::with(Opts {
        driver,
        config: Some(CONFIG),
        ..Default::default()
    })
}

fn api(gw: &Gateway, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let r = request(
        gw.addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// The status an API call is answered with.
fn status(gw: &Gateway, method: &str, path: &str, token: &str, body: Value) -> u16 {
    api(gw, method, path, token, body).0
}

/// An `/agent/ws` upgrade with these headers; a refusal gives its HTTP status
/// (`None` for a failure that is not one).
fn agent_upgrade(
    gw: &Gateway,
    headers: &[(&'static str, &str)],
) -> Result<tungstenite::WebSocket<std::net::TcpStream>, Option<u16>> {
    let mut req = gw.ws_url("/agent/ws").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    match tungstenite::client::client(req, common::tcp(gw.addr)) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(Some(resp.status().as_u16()))
        }
        Err(_) => Err(None),
    }
}

/// The status an `/agent/ws` upgrade with these headers is refused with.
fn upgrade_refused(gw: &Gateway, headers: &[(&'static str, &str)]) -> Option<u16> {
    agent_upgrade(gw, headers).err().flatten()
}

/// Makes an agent; returns its id and token.
fn agent(gw: &Gateway, name: &str, role: &str, sites: &[&str]) -> (u64, String) {
    let (st, v) = api(
        gw,
        "POST",
        "/admin/agents",
        "owner-secret-token",
        json!({"name": name, "role": role, "languages": ["en"], "sites": sites}),
    );
    assert_eq!(st, 201, "{v}");
    (
        v["agent"]["id"].as_u64().unwrap(),
        v["token"].as_str().unwrap().to_string(),
    )
}

struct AgentSocket(tungstenite::WebSocket<std::net::TcpStream>);

impl AgentSocket {
    fn open(gw: &Gateway, token: &str) -> AgentSocket {
        let auth = format!("Bearer {token}");
        AgentSocket(agent_upgrade(gw, &[("Authorization", &auth)]).expect("agent upgrade"))
    }

    fn send(&mut self, v: Value) {
        self.0.send(Message::text(v.to_string())).unwrap();
    }

    fn until(&mut self, ty: &str) -> Value {
        for _ in 0..200 {
            match self.0.read().expect("agent socket read") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == ty {
                        return v;
                    }
                }
                _ => continue,
            }
        }
        panic!("no {ty} frame");
    }
}

fn hand_off(driver: &str) {
    let gw = start(driver);
    let (_, token) = agent(&gw, "Ada", "agent", &["demo"]);
    let mut ada = AgentSocket::open(&gw, &token);
    let w = ada.until("welcome");
    assert_eq!(w["agent"]["name"], "Ada");

    let mut v = connect(&gw, "/ws?site=demo", None, None).unwrap();
    v.hello();
    v.send(json!({"type": "message", "id": "m1", "text": "where is my parcel?"}));
    v.recv_until("done");
    v.send(json!({"type": "human", "reason": "I want a person"}));
    let q = v.recv_until("agent");
    let q = q.last().unwrap();
    assert_eq!(
        (q["event"].as_str(), q["position"].as_u64()),
        (Some("queued"), Some(1)),
        "{q}"
    );

    let offer = ada.until("offer");
    let conv = offer["conversation"].as_str().unwrap().to_string();
    assert_eq!(offer["preview"], "where is my parcel?");
    ada.send(json!({"type": "take", "conversation": conv}));
    let assigned = ada.until("assigned");
    let items = assigned["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|i| i["from"] == "visitor" && i["text"] == "where is my parcel?"),
        "{assigned}"
    );
    assert!(
        items.iter().any(|i| i["from"] == "ai"),
        "the AI's reply is in the transcript"
    );
    let joined = v.recv_until("agent");
    assert_eq!(joined.last().unwrap()["name"], "Ada");

    // Both ways; the AI stays silent while Ada holds the conversation.
    v.send(json!({"type": "message", "id": "m2", "text": "it has been a week"}));
    let acked = v.recv_until("ack");
    assert_eq!(acked.last().unwrap()["id"], "m2");
    let m = ada.until("message");
    assert_eq!(m["item"]["text"], "it has been a week");
    v.send(json!({"type": "typing"}));
    assert_eq!(ada.until("typing")["conversation"], conv.as_str());
    ada.send(json!({"type": "typing", "conversation": conv}));
    assert_eq!(v.recv_until("typing").last().unwrap()["name"], "Ada");
    ada.send(json!({"type": "message", "conversation": conv, "id": "a1", "text": "Let me check that for you."}));
    let ack = ada.until("ack");
    assert_eq!(ack["id"], "a1");
    let got = v.recv_until("message");
    let got = got.last().unwrap();
    assert_eq!(
        (
            got["from"].as_str(),
            got["name"].as_str(),
            got["text"].as_str()
        ),
        (
            Some("agent"),
            Some("Ada"),
            Some("Let me check that for you.")
        )
    );
    assert_eq!(got["seq"], ack["seq"]);
    // A resend of the same id is acknowledged again, not stored twice.
    ada.send(json!({"type": "message", "conversation": conv, "id": "a1", "text": "Let me check that for you."}));
    assert_eq!(ada.until("ack")["seq"], ack["seq"]);

    ada.send(json!({"type": "resolve", "conversation": conv}));
    assert_eq!(ada.until("ended")["reason"], "resolved");
    let ended = v.recv_until("ended");
    assert_eq!(ended.last().unwrap()["reason"], "resolved");
    // Nothing the visitor saw came from the AI after the hand-off.
    v.send(json!({"type": "csat", "score": 5}));

    // The whole conversation, for the owner.
    let (st, t) = api(
        &gw,
        "GET",
        &format!("/admin/conversations/{conv}"),
        "owner-secret-token",
        Value::Null,
    );
    assert_eq!(st, 200, "{t}");
    let texts: Vec<&str> = t["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"it has been a week") && texts.contains(&"Let me check that for you."),
        "{texts:?}"
    );
    assert_eq!(
        texts
            .iter()
            .filter(|t| **t == "Let me check that for you.")
            .count(),
        1
    );
    gw.stop();
}

#[test]
fn hand_off_on_io_uring() {
    hand_off("uring");
}

#[test]
fn hand_off_on_epoll() {
    hand_off("epoll");
}

#[test]
fn nobody_online_means_none_available_and_a_message_can_be_left() {
    let gw = start("auto");
    let mut v = connect(&gw, "/ws?site=demo", None, None).unwrap();
    let w = v.hello();
    let conv = w["conversation"].as_str().unwrap().to_string();
    v.send(json!({"type": "human"}));
    let a = v.recv_until("agent");
    assert_eq!(a.last().unwrap()["event"], "none_available");
    v.send(
        json!({"type": "leave_message", "email": "ann@example.com", "text": "Call me back please"}),
    );
    let a = v.recv_until("agent");
    assert_eq!(a.last().unwrap()["event"], "message_left");
    v.send(json!({"type": "leave_message", "email": "not-an-address", "text": "x"}));
    assert_eq!(v.recv_until("error").last().unwrap()["code"], "bad_request");
    let (st, t) = api(
        &gw,
        "GET",
        &format!("/admin/conversations/{conv}"),
        "owner-secret-token",
        Value::Null,
    );
    assert_eq!(st, 200);
    assert_eq!(t["offline"][0]["email"], "ann@example.com");
    gw.stop();
}

#[test]
fn refusals_of_the_agent_api() {
    let gw = start("auto");
    let (_, agent_token) = agent(&gw, "Ada", "agent", &["demo"]);
    let (_, admin_token) = agent(&gw, "Max", "admin", &["demo"]);
    let (_, other_sup) = agent(&gw, "Oli", "supervisor", &["other"]);
    let new_agent = json!({"name": "Zed", "sites": ["demo"]});

    // No credentials, a wrong token.
    assert_eq!(status(&gw, "GET", "/admin/agents", "", Value::Null), 401);
    assert_eq!(
        status(&gw, "GET", "/admin/agents", "lca_wrong", Value::Null),
        401
    );
    // An agent token cannot manage agents.
    assert_eq!(
        status(&gw, "GET", "/admin/agents", &agent_token, Value::Null),
        403
    );
    assert_eq!(
        status(
            &gw,
            "POST",
            "/admin/agents",
            &agent_token,
            new_agent.clone()
        ),
        403
    );
    // An admin manages agents of their sites only.
    assert_eq!(
        status(&gw, "POST", "/admin/agents", &admin_token, new_agent),
        201
    );
    assert_eq!(
        status(
            &gw,
            "POST",
            "/admin/agents",
            &admin_token,
            json!({"name": "Yan", "sites": ["other"]})
        ),
        403
    );
    // Bad input.
    assert_eq!(
        status(
            &gw,
            "POST",
            "/admin/agents",
            &admin_token,
            json!({"name": "", "sites": ["demo"]})
        ),
        400
    );
    assert_eq!(
        status(
            &gw,
            "POST",
            "/admin/agents",
            &admin_token,
            json!({"name": "Q", "sites": ["nope"]})
        ),
        400
    );
    // Canned replies: admins write, agents read, other sites neither.
    assert_eq!(
        status(
            &gw,
            "PUT",
            "/admin/sites/demo/canned/thanks",
            &agent_token,
            json!({"text": "Thanks!"})
        ),
        403
    );
    assert_eq!(
        status(
            &gw,
            "PUT",
            "/admin/sites/demo/canned/thanks",
            &admin_token,
            json!({"text": "Thanks!"})
        ),
        201
    );
    let (st, list) = api(
        &gw,
        "GET",
        "/admin/sites/demo/canned",
        &agent_token,
        Value::Null,
    );
    assert_eq!((st, list[0]["shortcut"].as_str()), (200, Some("thanks")));
    assert_eq!(
        status(
            &gw,
            "GET",
            "/admin/sites/demo/canned",
            &other_sup,
            Value::Null
        ),
        403
    );
    // No token reads another site's conversations.
    let mut v = connect(&gw, "/ws?site=demo", None, None).unwrap();
    let conv = v.hello()["conversation"].as_str().unwrap().to_string();
    v.send(json!({"type": "message", "id": "m1", "text": "hello"}));
    v.recv_until("ack");
    assert_eq!(
        status(
            &gw,
            "GET",
            "/admin/conversations?site=demo",
            &other_sup,
            Value::Null
        ),
        403
    );
    assert_eq!(
        status(
            &gw,
            "GET",
            &format!("/admin/conversations/{conv}"),
            &other_sup,
            Value::Null
        ),
        403
    );
    assert_eq!(
        status(
            &gw,
            "GET",
            &format!("/admin/conversations/{conv}"),
            &agent_token,
            Value::Null
        ),
        403,
        "an agent reads only what they hold"
    );
    let (st, page) = api(
        &gw,
        "GET",
        "/admin/conversations?site=demo",
        &admin_token,
        Value::Null,
    );
    assert_eq!(st, 200);
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["conversation"] == conv.as_str()));
    // The admin token is not an agent: it cannot open an agent socket.
    assert_eq!(
        upgrade_refused(&gw, &[("Authorization", "Bearer owner-secret-token")]),
        Some(403)
    );
    // Nor does a cross-origin page with the agent's cookie get one.
    let login = request(
        gw.addr,
        "POST",
        "/agent/login",
        &[("Content-Type", "application/json")],
        json!({"token": agent_token}).to_string().as_bytes(),
    );
    assert_eq!(login.status, 200);
    let cookie = login.cookie().expect("sign-in cookie");
    assert!(login.header("set-cookie").unwrap().contains("HttpOnly"));
    let me = request(gw.addr, "GET", "/agent/me", &[("Cookie", &cookie)], b"");
    assert_eq!((me.status, me.json()["name"].as_str()), (200, Some("Ada")));
    assert_eq!(
        upgrade_refused(
            &gw,
            &[("Cookie", &cookie), ("Origin", "https://evil.example")]
        ),
        Some(403)
    );
    let bad = request(
        gw.addr,
        "POST",
        "/agent/login",
        &[],
        br#"{"token":"lca_nope"}"#,
    );
    assert_eq!(bad.status, 401);
    gw.stop();
}

#[test]
fn site_rules_and_low_confidence_hand_off_without_asking() {
    let gw = start("auto");
    let (_, t1) = agent(&gw, "Ada", "agent", &["demo", "other"]);
    let mut ada = AgentSocket::open(&gw, &t1);
    ada.until("welcome");

    // A keyword rule: the AI does not answer; the desk gets it with its reason.
    let mut v = connect(&gw, "/ws?site=demo", None, None).unwrap();
    v.hello();
    v.send(json!({"type": "message", "id": "m1", "text": "I want a refund for my boots"}));
    let seen = v.recv_until("agent");
    assert!(seen.iter().any(|m| m["type"] == "ack"), "{seen:?}");
    assert!(
        seen.iter().all(|m| m["type"] != "token"),
        "the AI stays silent: {seen:?}"
    );
    assert_eq!(seen.last().unwrap()["event"], "queued");
    let offer = ada.until("offer");
    assert!(
        offer["reason"].as_str().unwrap().contains("refund"),
        "{offer}"
    );

    // Low confidence (the simulator's ungrounded 0.5 is under this site's 0.9):
    // the AI's answer arrives, then the conversation is offered to a person.
    let mut w = connect(&gw, "/ws?site=other", None, None).unwrap();
    w.hello();
    w.send(json!({"type": "message", "id": "m1", "text": "what is your return policy?"}));
    let seen = w.recv_until("agent");
    assert!(seen.iter().any(|m| m["type"] == "done"), "{seen:?}");
    assert_eq!(seen.last().unwrap()["event"], "queued");
    let offer = ada.until("offer");
    assert!(
        offer["reason"].as_str().unwrap().contains("confidence"),
        "{offer}"
    );
    gw.stop();
}
