//! Session state machine tests: events in, effects out, no sockets.

use super::*;
use crate::chat::client::{ClientMsg, Hello};
use crate::session::token::ConversationId;
use std::time::Duration;

fn config() -> Box<RawValue> {
    RawValue::from_string(r##"{"theme":{"accent":"#0a7"}}"##.to_string()).unwrap()
}

fn settings(cfg: &RawValue) -> Settings<'_> {
    Settings {
        site_config: cfg,
        message_rate: Rate {
            per_sec: 1.0,
            burst: 3.0,
        },
        history_items: 200,
        poll_log_cap: 1000,
    }
}

fn session(now: Instant) -> Session {
    let rate = Rate {
        per_sec: 1.0,
        burst: 3.0,
    };
    Session::new(
        SessionKey::random().unwrap(),
        ConversationId::from_bytes(*b"conversation"),
        "demo".into(),
        rate,
        now,
    )
}

fn at(t0: Instant, ms: u64) -> Now {
    Now {
        mono: t0 + Duration::from_millis(ms),
        unix_ms: 1_700_000_000_000 + ms,
    }
}

fn msg(id: &str, text: &str) -> ClientMsg {
    ClientMsg::Message {
        id: id.into(),
        text: text.into(),
    }
}

fn json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b).unwrap()
}

/// The JSON of every `Send` to `to`.
fn sent_to(out: &[Out], to: SubId) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|o| match o {
            Out::Send { to: t, msg } if *t == to => Some(json(msg)),
            _ => None,
        })
        .collect()
}

#[test]
fn hello_gets_welcome_then_resumed_welcome() {
    let cfg = config();
    let s = settings(&cfg);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(1, t0);
    let mut out = Vec::new();
    sess.on_client(
        Origin::Socket(1),
        ClientMsg::Hello(Default::default()),
        at(t0, 0),
        &s,
        &mut out,
    );
    let w = &sent_to(&out, 1)[0];
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["conversation"], sess.conversation.to_string());
    assert_eq!(w["resumed"], false);
    assert_eq!(w["config"]["theme"]["accent"], "#0a7");
    out.clear();
    sess.on_client(
        Origin::Socket(1),
        ClientMsg::Hello(Default::default()),
        at(t0, 1),
        &s,
        &mut out,
    );
    assert_eq!(sent_to(&out, 1)[0]["resumed"], true);
}

#[test]
fn message_is_acked_to_every_socket_and_answered_once() {
    let cfg = config();
    let s = settings(&cfg);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(1, t0);
    sess.attach(2, t0);
    let mut out = Vec::new();
    sess.on_client(
        Origin::Socket(1),
        msg("m1", "where is my order?"),
        at(t0, 0),
        &s,
        &mut out,
    );
    for sub in [1, 2] {
        let got = sent_to(&out, sub);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (
                got[0]["type"].as_str(),
                got[0]["id"].as_str(),
                got[0]["seq"].as_u64()
            ),
            (Some("ack"), Some("m1"), Some(1))
        );
    }
    let jobs: Vec<_> = out.iter().filter(|o| matches!(o, Out::Answer(_))).collect();
    assert_eq!(jobs.len(), 1);

    // The same id again: the original ack, to the sender only, and no new answer.
    out.clear();
    sess.on_client(
        Origin::Socket(2),
        msg("m1", "where is my order?"),
        at(t0, 10),
        &s,
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(sent_to(&out, 2)[0]["seq"], 1);
    assert_eq!(sess.items().len(), 1);
}

#[test]
fn reply_streams_then_lands_in_history() {
    let cfg = config();
    let s = settings(&cfg);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(7, t0);
    let mut out = Vec::new();
    sess.on_client(Origin::Socket(7), msg("q", "hi"), at(t0, 0), &s, &mut out);
    let Some(Out::Answer(job)) = out.iter().find(|o| matches!(o, Out::Answer(_))) else {
        panic!("no answer job")
    };
    let job = job.clone();
    out.clear();
    assert!(sess.reply_token(&job.reply, "Hel", &mut out));
    // A socket joining mid-stream sees the text so far in its welcome.
    sess.attach(8, t0);
    sess.on_client(
        Origin::Socket(8),
        ClientMsg::Hello(Default::default()),
        at(t0, 5),
        &s,
        &mut out,
    );
    let w = sent_to(&out, 8).pop().unwrap();
    assert_eq!(w["streaming"][0]["text"], "Hel");
    assert_eq!(
        w["history"].as_array().unwrap().len(),
        1,
        "a streaming reply is not in history"
    );
    assert!(sess.reply_token(&job.reply, "lo", &mut out));
    assert!(sess.reply_done(&job.reply, vec![], 0.9, at(t0, 9), &mut out));
    let seen7 = sent_to(&out, 7);
    let types: Vec<_> = seen7
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["token", "token", "done"]);
    assert_eq!(seen7[0]["in_reply_to"], "q");
    assert_eq!(seen7[2]["seq"], 2);
    assert_eq!(sess.items()[1].text, "Hello");
    // Finished replies take no more tokens.
    assert!(!sess.reply_token(&job.reply, "late", &mut out));
}

#[test]
fn flooding_is_rate_limited_without_storing() {
    let cfg = config();
    let s = settings(&cfg);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(1, t0);
    let mut out = Vec::new();
    for i in 0..4 {
        sess.on_client(
            Origin::Socket(1),
            msg(&format!("m{i}"), "x"),
            at(t0, 0),
            &s,
            &mut out,
        );
    }
    let last = sent_to(&out, 1).pop().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "rate_limited");
    assert_eq!(last["id"], "m3");
    assert!(last["retry_after_ms"].as_u64().unwrap() > 0);
    assert_eq!(sess.items().len(), 3);
    // After the wait it is accepted.
    out.clear();
    sess.on_client(
        Origin::Socket(1),
        msg("m3", "x"),
        at(t0, 1000),
        &s,
        &mut out,
    );
    assert_eq!(sent_to(&out, 1)[0]["type"], "ack");
}

#[test]
fn long_poll_cursor_flow() {
    let cfg = config();
    let s = settings(&cfg);
    let t0 = Instant::now();
    let mut sess = session(t0);
    let mut out = Vec::new();
    // A recv with nothing to say is held.
    sess.poll_recv(50, 0, t0, &s, &mut out);
    assert!(out.is_empty());
    // hello through /poll/send completes it with the welcome.
    sess.on_client(
        Origin::Poll,
        ClientMsg::Hello(Default::default()),
        at(t0, 1),
        &s,
        &mut out,
    );
    let Some(Out::PollReady {
        to,
        cursor,
        messages,
    }) = out.pop()
    else {
        panic!("not ready")
    };
    assert_eq!((to, cursor, messages.len()), (50, 1, 1));
    assert_eq!(json(&messages[0])["type"], "welcome");
    // A message and its ack; the next recv with cursor 1 gets the ack at once.
    sess.on_client(Origin::Poll, msg("m1", "hi"), at(t0, 2), &s, &mut out);
    out.clear();
    sess.poll_recv(51, 1, t0, &s, &mut out);
    let Some(Out::PollReady {
        cursor, messages, ..
    }) = out.pop()
    else {
        panic!("not ready")
    };
    assert_eq!(
        (cursor, json(&messages[0])["type"].as_str()),
        (2, Some("ack"))
    );
    // A new recv ends a held one with nothing.
    out.clear();
    sess.poll_recv(52, 2, t0, &s, &mut out);
    sess.poll_recv(53, 2, t0, &s, &mut out);
    assert_eq!(
        out,
        vec![Out::PollReady {
            to: 52,
            cursor: 2,
            messages: vec![]
        }]
    );
    // Timeout ends the held one.
    out.clear();
    sess.poll_timeout(53, &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn expired_cursor_gets_error_then_fresh_welcome() {
    let cfg = config();
    let mut s = settings(&cfg);
    s.poll_log_cap = 2;
    s.message_rate.burst = 100.0;
    let t0 = Instant::now();
    let mut sess = session(t0);
    let mut out = Vec::new();
    for i in 0..3 {
        sess.on_client(
            Origin::Poll,
            ClientMsg::Ping {
                id: format!("p{i}"),
            },
            at(t0, 0),
            &s,
            &mut out,
        );
    }
    out.clear();
    sess.poll_recv(9, 0, t0, &s, &mut out);
    let Some(Out::PollReady {
        cursor, messages, ..
    }) = out.into_iter().find(|o| matches!(o, Out::PollReady { .. }))
    else {
        panic!("not ready")
    };
    let types: Vec<_> = messages
        .iter()
        .map(|m| json(m)["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["error", "welcome"]);
    assert_eq!(json(&messages[0])["code"], "cursor_expired");
    assert_eq!(cursor, 5);
}

#[test]
fn page_info_round_trip() {
    let h = Hello {
        lang: Some("de".into()),
        page: Some("https://shop.example/p".into()),
        referrer: None,
    };
    let p = PageInfo::new(&h);
    assert_eq!(
        (p.lang(), p.page(), p.referrer()),
        (Some("de"), Some("https://shop.example/p"), None)
    );
    let cfg = config();
    let s = settings(&cfg);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.on_client(
        Origin::Socket(1),
        ClientMsg::Hello(h),
        at(t0, 0),
        &s,
        &mut Vec::new(),
    );
    assert_eq!(sess.page_info().and_then(PageInfo::lang), Some("de"));
}

#[test]
fn websocket_only_sessions_keep_no_poll_log() {
    let cfg = config();
    let s = settings(&cfg);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(1, t0);
    let mut out = Vec::new();
    sess.on_client(Origin::Socket(1), msg("m1", "x"), at(t0, 0), &s, &mut out);
    assert!(sess.poll.is_none());
    sess.detach(1);
    assert!(sess.subscribers().is_empty());
}
