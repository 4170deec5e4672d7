//! The desk driven directly: hand-off, routing effects, timeouts, refusals.

use std::time::{Duration, Instant};

use http::Request;
use serde_json::Value;

use super::directory::{AccountInput, Directory, Role};
use super::*;

const SUB_A: SubId = sub(11);
const SUB_B: SubId = sub(22);
const SUB_S: SubId = sub(33);
/// The socket of a reload: the same slot as `SUB_B`, a later generation.
const SUB_B2: SubId = SubId::new(0, 22, 1);

/// A subscriber on worker 0, slot `slot`.
const fn sub(slot: usize) -> SubId {
    SubId::new(0, slot, 0)
}

fn cfg() -> DeskConfig {
    DeskConfig {
        offer_timeout: Duration::from_secs(20),
        queue_timeout: Duration::from_secs(120),
        reconnect_grace: Duration::from_secs(15),
        login_ttl: Duration::from_secs(3600),
        max_text_bytes: 100,
        admin_token: Some(crate::admin::AdminToken::from_secret("owner-secret")),
    }
}

fn input(name: &str, role: Role, langs: &[&str]) -> AccountInput {
    AccountInput {
        name: name.into(),
        role,
        languages: langs.iter().map(|s| s.to_string()).collect(),
        skills: vec![],
        capacity: 2,
        sites: vec!["shop".into()],
    }
}

struct T {
    desk: Desk,
    t0: Instant,
    ada: AgentId,
    bob: AgentId,
    sue: AgentId,
}

fn setup() -> T {
    let mut dir = Directory::default();
    let (ada, _) = dir.create(input("Ada", Role::Agent, &["en"]), 1);
    let (bob, _) = dir.create(input("Bob", Role::Agent, &["fr"]), 1);
    let (sue, _) = dir.create(input("Sue", Role::Supervisor, &["en"]), 1);
    T {
        desk: Desk::new(cfg(), dir),
        t0: Instant::now(),
        ada: ada.id,
        bob: bob.id,
        sue: sue.id,
    }
}

fn needs(conv: u8, lang: &str) -> VisitorEvent {
    VisitorEvent::NeedsHuman {
        conv: ConversationId::from_bytes([conv; 12]),
        key: crate::ids::SessionKey::random().unwrap(),
        site: "shop".into(),
        reason: "the visitor asked for a person".into(),
        lang: Some(lang.into()),
        page: Some("https://shop.example/cart".into()),
        referrer: None,
        preview: Some("where is my order?".into()),
        skill: None,
    }
}

fn frames(out: &[DeskOut], to: SubId) -> Vec<Value> {
    out.iter()
        .filter_map(|o| match o {
            DeskOut::Frame { to: t, msg } if *t == to => serde_json::from_slice(msg).ok(),
            _ => None,
        })
        .collect()
}

fn session_events(out: &[DeskOut]) -> Vec<SessionEvent> {
    out.iter()
        .filter_map(|o| match o {
            DeskOut::Session { ev, .. } => Some(ev.clone()),
            _ => None,
        })
        .collect()
}

fn name(conv: u8) -> String {
    ConversationId::from_bytes([conv; 12]).to_string()
}

#[test]
fn no_agent_online_means_none_available() {
    let mut t = setup();
    t.desk.on_visitor(needs(1, "en"), t.t0, 0);
    assert_eq!(
        session_events(&t.desk.take_out()),
        vec![SessionEvent::NoneAvailable]
    );
    assert_eq!(t.desk.counts(), (0, 0));
}

#[test]
fn hand_off_from_queue_to_resolved() {
    let mut t = setup();
    t.desk.on_agent_open(t.ada, SUB_A, t.t0);
    let out = t.desk.take_out();
    let w = &frames(&out, SUB_A)[0];
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["agent"]["name"], "Ada");

    t.desk.on_visitor(needs(1, "en"), t.t0, 5);
    let out = t.desk.take_out();
    assert_eq!(
        session_events(&out),
        vec![SessionEvent::Queued { position: 1 }]
    );
    let f = frames(&out, SUB_A);
    assert_eq!(f[0]["type"], "offer");
    assert_eq!(f[0]["conversation"], name(1));
    // The line is pushed to agents at most every QUEUE_PUSH_INTERVAL.
    let push = t.desk.next_deadline().unwrap();
    assert_eq!(push, t.t0 + QUEUE_PUSH_INTERVAL);
    t.desk.tick(push);
    let f = frames(&t.desk.take_out(), SUB_A);
    assert_eq!(f[0]["type"], "queue");
    assert_eq!(f[0]["items"][0]["preview"], "where is my order?");
    assert_eq!(f[0]["total"], 1);

    t.desk.on_agent_frame(
        t.ada,
        SUB_A,
        format!(r#"{{"type":"take","conversation":"{}"}}"#, name(1)).as_bytes(),
        t.t0,
    );
    let out = t.desk.take_out();
    assert_eq!(
        session_events(&out),
        vec![SessionEvent::Joined { name: "Ada".into() }]
    );
    assert!(out.iter().any(|o| matches!(o, DeskOut::ReadTranscript { purpose: ReadPurpose::Assigned { agent }, .. } if *agent == t.ada)));

    // Visitor's words reach the agent; the agent's reach the visitor.
    t.desk.on_visitor(
        VisitorEvent::Item {
            conv: ConversationId::from_bytes([1; 12]),
            item: serde_json::json!({"seq": 3, "from": "visitor", "text": "hi"}),
        },
        t.t0,
        6,
    );
    let f = frames(&t.desk.take_out(), SUB_A);
    assert_eq!(f[0]["type"], "message");
    assert_eq!(f[0]["item"]["text"], "hi");
    t.desk.on_agent_frame(
        t.ada,
        SUB_A,
        format!(
            r#"{{"type":"message","conversation":"{}","id":"m1","text":"Hello!"}}"#,
            name(1)
        )
        .as_bytes(),
        t.t0,
    );
    assert_eq!(
        session_events(&t.desk.take_out()),
        vec![SessionEvent::AgentMessage {
            conv: ConversationId::from_bytes([1; 12]),
            agent: t.ada,
            name: "Ada".into(),
            id: "m1".into(),
            text: "Hello!".into()
        }]
    );
    t.desk.on_visitor(
        VisitorEvent::AgentMessageStored {
            conv: ConversationId::from_bytes([1; 12]),
            agent: t.ada,
            id: "m1".into(),
            seq: 4,
        },
        t.t0,
        7,
    );
    let f = frames(&t.desk.take_out(), SUB_A);
    assert_eq!(
        (f[0]["type"].as_str(), f[0]["seq"].as_u64()),
        (Some("ack"), Some(4))
    );

    t.desk.on_agent_frame(
        t.ada,
        SUB_A,
        format!(r#"{{"type":"resolve","conversation":"{}"}}"#, name(1)).as_bytes(),
        t.t0,
    );
    let out = t.desk.take_out();
    assert_eq!(
        session_events(&out),
        vec![SessionEvent::End { reason: "resolved" }]
    );
    assert_eq!(frames(&out, SUB_A)[0]["type"], "ended");
    assert_eq!(t.desk.counts(), (0, 0));
}

#[test]
fn positions_move_up_and_routing_prefers_language() {
    let mut t = setup();
    t.desk.on_agent_open(t.ada, SUB_A, t.t0);
    t.desk.on_agent_open(t.bob, SUB_B, t.t0);
    t.desk.take_out();
    t.desk.on_visitor(needs(1, "fr-FR"), t.t0, 0);
    let out = t.desk.take_out();
    assert_eq!(frames(&out, SUB_B)[0]["type"], "offer", "Bob speaks French");
    assert!(frames(&out, SUB_A).iter().all(|f| f["type"] != "offer"));
    // Fill both agents (capacity 2 each), then one more waits at position...
    for n in 2..=5 {
        t.desk
            .on_visitor(needs(n, "en"), t.t0 + Duration::from_millis(n as u64), 0);
    }
    t.desk.take_out();
    t.desk
        .on_visitor(needs(6, "en"), t.t0 + Duration::from_millis(6), 0);
    let out = t.desk.take_out();
    assert_eq!(
        session_events(&out),
        vec![SessionEvent::Queued { position: 6 }]
    );
    // The first leaves the line (taken): everyone behind moves up and is told.
    t.desk.on_agent_frame(
        t.bob,
        SUB_B,
        format!(r#"{{"type":"take","conversation":"{}"}}"#, name(1)).as_bytes(),
        t.t0,
    );
    let ev = session_events(&t.desk.take_out());
    assert_eq!(
        ev,
        vec![SessionEvent::Joined { name: "Bob".into() }],
        "positions wait for the next push"
    );
    t.desk.tick(t.t0 + QUEUE_PUSH_INTERVAL);
    let ev = session_events(&t.desk.take_out());
    assert!(ev.contains(&SessionEvent::Queued { position: 5 }), "{ev:?}");
}

#[test]
fn refusals_have_codes() {
    let mut t = setup();
    t.desk.on_agent_open(t.ada, SUB_A, t.t0);
    t.desk.on_agent_open(t.bob, SUB_B, t.t0);
    t.desk.on_visitor(needs(1, "en"), t.t0, 0);
    t.desk.take_out();
    let (ada, bob) = (t.ada, t.bob);
    let send = |t: &mut T, agent, sub, s: String| {
        t.desk.on_agent_frame(agent, sub, s.as_bytes(), t.t0);
        frames(&t.desk.take_out(), sub)
    };
    let f = send(
        &mut t,
        bob,
        SUB_B,
        format!(r#"{{"type":"take","conversation":"{}"}}"#, name(1)),
    );
    assert_eq!(f[0]["code"], "conflict", "offered to Ada");
    let f = send(
        &mut t,
        bob,
        SUB_B,
        format!(
            r#"{{"type":"message","conversation":"{}","id":"x","text":"hi"}}"#,
            name(1)
        ),
    );
    assert_eq!(f[0]["code"], "forbidden");
    let f = send(
        &mut t,
        bob,
        SUB_B,
        format!(
            r#"{{"type":"transfer","conversation":"{}","to":1}}"#,
            name(1)
        ),
    );
    assert_eq!(f[0]["code"], "forbidden", "agents do not transfer");
    let f = send(
        &mut t,
        bob,
        SUB_B,
        r#"{"type":"take","conversation":"c_nope"}"#.into(),
    );
    assert_eq!(f[0]["code"], "not_found");
    let f = send(&mut t, bob, SUB_B, r#"{"type":"fly"}"#.into());
    assert_eq!(f[0]["code"], "unknown_type");
    let f = send(
        &mut t,
        ada,
        SUB_A,
        format!(r#"{{"type":"take","conversation":"{}"}}"#, name(1)),
    );
    assert!(f.iter().all(|x| x["type"] != "error"));
    let long = "x".repeat(101);
    let f = send(
        &mut t,
        ada,
        SUB_A,
        format!(
            r#"{{"type":"message","conversation":"{}","id":"x","text":"{long}"}}"#,
            name(1)
        ),
    );
    assert_eq!(f[0]["code"], "too_large");
}

#[test]
fn supervisor_transfers() {
    let mut t = setup();
    t.desk.on_agent_open(t.ada, SUB_A, t.t0);
    t.desk.on_agent_open(t.sue, SUB_S, t.t0);
    t.desk.on_agent_open(t.bob, SUB_B, t.t0);
    t.desk.on_visitor(needs(1, "en"), t.t0, 0);
    t.desk.take_out();
    t.desk.on_agent_frame(
        t.ada,
        SUB_A,
        format!(r#"{{"type":"take","conversation":"{}"}}"#, name(1)).as_bytes(),
        t.t0,
    );
    t.desk.take_out();
    t.desk.on_agent_frame(
        t.sue,
        SUB_S,
        format!(
            r#"{{"type":"transfer","conversation":"{}","to":{}}}"#,
            name(1),
            t.bob
        )
        .as_bytes(),
        t.t0,
    );
    let out = t.desk.take_out();
    assert_eq!(
        session_events(&out),
        vec![SessionEvent::Joined { name: "Bob".into() }]
    );
    assert_eq!(frames(&out, SUB_A)[0]["reason"], "transferred");
    assert!(out.iter().any(|o| matches!(o, DeskOut::ReadTranscript { purpose: ReadPurpose::Assigned { agent }, .. } if *agent == t.bob)));
}

#[test]
fn timeouts_offer_queue_and_disconnect() {
    let mut t = setup();
    t.desk.on_agent_open(t.ada, SUB_A, t.t0);
    t.desk.on_agent_open(t.bob, SUB_B, t.t0);
    t.desk.on_visitor(needs(1, "en"), t.t0, 0);
    t.desk.tick(t.t0 + QUEUE_PUSH_INTERVAL);
    t.desk.take_out();
    // Ada lets the offer lapse: it goes to Bob.
    let lapse = t.desk.next_deadline().unwrap();
    assert_eq!(lapse, t.t0 + Duration::from_secs(20));
    t.desk.tick(lapse);
    let out = t.desk.take_out();
    assert_eq!(frames(&out, SUB_A)[0]["type"], "unassigned");
    assert_eq!(frames(&out, SUB_B)[0]["type"], "offer");
    t.desk.on_agent_frame(
        t.bob,
        SUB_B,
        format!(r#"{{"type":"take","conversation":"{}"}}"#, name(1)).as_bytes(),
        lapse,
    );
    t.desk.take_out();
    // Bob's socket drops; a reload within the grace keeps the conversation.
    t.desk.on_agent_closed(t.bob, SUB_B, lapse);
    t.desk
        .on_agent_open(t.bob, SUB_B2, lapse + Duration::from_secs(1));
    t.desk.tick(lapse + Duration::from_secs(30));
    assert!(session_events(&t.desk.take_out())
        .iter()
        .all(|e| !matches!(e, SessionEvent::Left { .. })));
    // Gone for good: back in line, and offered to Ada.
    t.desk
        .on_agent_closed(t.bob, SUB_B2, lapse + Duration::from_secs(31));
    t.desk.tick(lapse + Duration::from_secs(46));
    let out = t.desk.take_out();
    let ev = session_events(&out);
    assert!(
        ev.contains(&SessionEvent::Left { name: "Bob".into() }),
        "{ev:?}"
    );
    assert_eq!(
        frames(&out, SUB_A)
            .iter()
            .filter(|f| f["type"] == "offer")
            .count(),
        1,
        "back in line, offered afresh"
    );
    // Ada lets it lapse again; nobody takes it: after the queue timeout
    // (counted from the first request) the visitor hears none_available.
    t.desk.tick(lapse + Duration::from_secs(66));
    assert!(!session_events(&t.desk.take_out()).contains(&SessionEvent::NoneAvailable));
    t.desk.tick(t.t0 + Duration::from_secs(121));
    assert!(session_events(&t.desk.take_out()).contains(&SessionEvent::NoneAvailable));
}

#[test]
fn http_roles_and_sites() {
    let mut t = setup();
    let sites = crate::sites::SiteRegistry::load(&Default::default(), None).unwrap();
    let req = |method: &str, path: &str, auth: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("Authorization", format!("Bearer {auth}"))
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    let status = |t: &mut T, r: Request<Vec<u8>>| {
        t.desk.on_http(sub(1), r, &sites, t.t0, 0);
        t.desk
            .take_out()
            .into_iter()
            .find_map(|o| match o {
                DeskOut::Http { resp, .. } => Some(resp.status().as_u16()),
                DeskOut::Write {
                    then: Some((_, resp)),
                    ..
                } => Some(resp.status().as_u16()),
                _ => None,
            })
            .unwrap()
    };
    let agent = r#"{"name":"Zed","sites":["demo"]}"#;
    assert_eq!(
        status(&mut t, req("POST", "/admin/agents", "owner-secret", agent)),
        201
    );
    assert_eq!(
        status(&mut t, req("POST", "/admin/agents", "wrong", agent)),
        401
    );
    assert_eq!(
        status(
            &mut t,
            req(
                "POST",
                "/admin/agents",
                "owner-secret",
                r#"{"name":"Zed","sites":["nope"]}"#
            )
        ),
        400
    );
}

#[test]
fn gauges_count_agents_online_and_the_line() {
    let mut t = setup();
    let g = t.desk.gauges();
    assert_eq!((g.agents_online, g.waiting, g.oldest_since), (0, 0, None));
    t.desk.on_agent_open(t.ada, SUB_A, t.t0);
    t.desk.on_agent_open(t.bob, SUB_B, t.t0);
    t.desk.on_visitor(needs(1, "en"), t.t0, 5);
    t.desk
        .on_visitor(needs(2, "en"), t.t0 + Duration::from_secs(1), 6);
    let g = t.desk.gauges();
    // Offered, not yet taken: still in line.
    assert_eq!(
        (g.agents_online, g.waiting, g.oldest_since),
        (2, 2, Some(t.t0))
    );
    t.desk.on_agent_closed(t.bob, SUB_B, t.t0);
    assert_eq!(t.desk.gauges().agents_online, 1);
}
