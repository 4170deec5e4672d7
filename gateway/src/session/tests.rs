//! Session state machine tests: events in, effects out, no sockets.

use super::*;
use crate::chat::client::{ClientMsg, Hello};
use crate::ids::ConversationId;
use std::cell::Cell;

/// A subscriber on worker 0, slot `slot`.
fn sub(slot: usize) -> SubId {
    SubId::new(0, slot, 0)
}

fn config() -> Box<RawValue> {
    RawValue::from_string(r##"{"theme":{"accent":"#0a7"}}"##.to_string()).unwrap()
}

fn words(s: &str) -> u32 {
    s.split_whitespace().count() as u32
}

/// Admission that refuses while `full` is set.
struct Gate {
    full: Cell<bool>,
}

impl Admission for Gate {
    fn admit(&self, _: Ask, _: bool) -> Result<Admitted, Busy> {
        if self.full.get() {
            Err(Busy {
                retry_after: Duration::from_millis(750),
                place: false,
            })
        } else {
            Ok(Admitted::detached())
        }
    }
}

static OPEN: Gate = Gate {
    full: Cell::new(false),
};

// SAFETY-free: the tests run each on their own thread, and `OPEN` is never set.
unsafe impl Sync for Gate {}

fn settings<'a>(cfg: &'a RawValue, gate: &'a dyn Admission) -> Settings<'a> {
    Settings {
        site_config: cfg,
        instructions: "Be brief.",
        grounding_tokens: 0,
        message_rate: Rate {
            per_sec: 1.0,
            burst: 3.0,
        },
        history_items: 200,
        poll_log_cap: 1000,
        context_tokens: 1000,
        count_tokens: words,
        admission: gate,
        handoff: &[],
    }
}

fn session(now: Instant) -> Session {
    Session::new(
        SessionKey::random().unwrap(),
        ConversationId::from_bytes(*b"conversation"),
        "demo".into(),
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

fn commits(out: &[Out]) -> usize {
    out.iter().filter(|o| matches!(o, Out::Commit(_))).count()
}

fn job(out: &[Out]) -> AnswerJob {
    out.iter()
        .find_map(|o| match o {
            Out::Answer(j) => Some(j.clone()),
            _ => None,
        })
        .expect("an answer job")
}

/// Sends `m` and completes every commit it asked for.
fn send_committed(
    sess: &mut Session,
    from: Origin,
    m: ClientMsg,
    now: Now,
    s: &Settings<'_>,
) -> Vec<Out> {
    let mut out = Vec::new();
    sess.on_client(from, m, now, s, &mut out);
    for _ in 0..commits(&out) {
        sess.on_committed(Ok(()), Instant::now(), &mut out);
    }
    out
}

#[test]
fn hello_gets_welcome_then_resumed_welcome() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        ClientMsg::Hello(Default::default()),
        at(t0, 0),
        &s,
    );
    let w = &sent_to(&out, sub(1))[0];
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["conversation"], sess.conversation.to_string());
    assert_eq!(w["resumed"], false);
    assert_eq!(w["config"]["theme"]["accent"], "#0a7");
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        ClientMsg::Hello(Default::default()),
        at(t0, 1),
        &s,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["resumed"], true);
}

#[test]
fn the_ack_waits_for_the_commit_and_goes_to_every_socket() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    sess.attach(sub(2), t0);
    let mut out = Vec::new();
    sess.on_client(
        Origin::Socket(sub(1)),
        msg("m1", "where is my order?"),
        at(t0, 0),
        &s,
        &mut out,
    );
    let Some(Out::Commit(records)) = out.first() else {
        panic!("the message is handed to the store first: {out:?}")
    };
    assert!(
        matches!(&records[0], Record::Item { item, .. } if item.id.as_deref() == Some("m1") && item.seq == 1)
    );
    assert!(sent_to(&out, sub(1)).is_empty(), "no ack before the commit");
    // A resend before the commit does nothing: the ack is on its way.
    let mut resend = Vec::new();
    sess.on_client(
        Origin::Socket(sub(2)),
        msg("m1", "where is my order?"),
        at(t0, 1),
        &s,
        &mut resend,
    );
    assert!(resend.is_empty(), "{resend:?}");

    out.clear();
    sess.on_committed(Ok(()), Instant::now(), &mut out);
    for to in [sub(1), sub(2)] {
        let got = sent_to(&out, to);
        assert_eq!(
            got,
            vec![serde_json::json!({"type": "ack", "id": "m1", "seq": 1})]
        );
    }
    let j = job(&out);
    assert_eq!(j.in_reply_to, "m1");
    assert_eq!(j.prompt[0].content, "Be brief.");
    assert_eq!(j.prompt.last().unwrap().content, "where is my order?");
    assert_eq!(j.prompt_tokens, 2 + 4);

    // After the commit a resend gets the original ack, to the sender only.
    out.clear();
    sess.on_client(
        Origin::Socket(sub(2)),
        msg("m1", "where is my order?"),
        at(t0, 10),
        &s,
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(sent_to(&out, sub(2))[0]["seq"], 1);
    assert_eq!(sess.items().len(), 1);
}

#[test]
fn busy_instead_of_the_ack_and_nothing_stored() {
    let cfg = config();
    let gate = Gate {
        full: Cell::new(true),
    };
    let s = settings(&cfg, &gate);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let mut out = Vec::new();
    sess.on_client(
        Origin::Socket(sub(1)),
        msg("m1", "hi"),
        at(t0, 0),
        &s,
        &mut out,
    );
    let e = &sent_to(&out, sub(1))[0];
    assert_eq!(
        (
            e["code"].as_str(),
            e["id"].as_str(),
            e["retry_after_ms"].as_u64()
        ),
        (Some("busy"), Some("m1"), Some(750))
    );
    assert_eq!(commits(&out), 0);
    assert!(sess.items().is_empty());
    // Once there is room, the same id is accepted.
    gate.full.set(false);
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m1", "hi"),
        at(t0, 900),
        &s,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["type"], "ack");
}

#[test]
fn a_failed_commit_is_reported_and_forgotten() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let mut out = Vec::new();
    sess.on_client(
        Origin::Socket(sub(1)),
        msg("m1", "hi"),
        at(t0, 0),
        &s,
        &mut out,
    );
    out.clear();
    sess.on_committed(Err(NotStored::Failed), Instant::now(), &mut out);
    // Its place in line went back with the dropped job (inference-client's
    // `Admitted` gives it back on drop).
    assert!(!out.iter().any(|o| matches!(o, Out::Answer(_))));
    let e = &sent_to(&out, sub(1))[0];
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("internal"), Some("m1"))
    );
    assert!(sess.items().is_empty());
    // The resend goes through as new.
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m1", "hi"),
        at(t0, 10),
        &s,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["type"], "ack");
}

#[test]
fn reply_streams_then_lands_in_history_after_its_commit() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(7), t0);
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(7)),
        msg("q", "hi"),
        at(t0, 0),
        &s,
    );
    let j = job(&out);
    let mut out = Vec::new();
    assert!(sess.reply_token(&j.reply, "Hel", &mut out));
    // A socket joining mid-stream sees the text so far in its welcome.
    sess.attach(sub(8), t0);
    sess.on_client(
        Origin::Socket(sub(8)),
        ClientMsg::Hello(Default::default()),
        at(t0, 5),
        &s,
        &mut out,
    );
    let w = sent_to(&out, sub(8)).pop().unwrap();
    assert_eq!(w["streaming"][0]["text"], "Hel");
    assert_eq!(
        w["history"].as_array().unwrap().len(),
        1,
        "a streaming reply is not in history"
    );
    while commits(&out) > 0 {
        let n = commits(&out);
        out.retain(|o| !matches!(o, Out::Commit(_)));
        for _ in 0..n {
            sess.on_committed(Ok(()), Instant::now(), &mut out);
        }
    }
    assert!(sess.reply_token(&j.reply, "lo", &mut out));
    assert!(sess.reply_done(&j.reply, vec![], 0.9, 0.0, at(t0, 9), &mut out));
    assert!(
        !sent_to(&out, sub(7)).iter().any(|m| m["type"] == "done"),
        "done waits for its commit"
    );
    let Some(Out::Commit(records)) = out.iter().rev().find(|o| matches!(o, Out::Commit(_))) else {
        panic!()
    };
    assert!(
        matches!(&records[0], Record::Item { item, in_reply_to: Some(q), confidence: Some(_), .. } if item.text == "Hello" && q == "q")
    );
    sess.on_committed(Ok(()), Instant::now(), &mut out);
    let types: Vec<_> = sent_to(&out, sub(7))
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["token", "token", "done"]);
    let done = sent_to(&out, sub(7)).pop().unwrap();
    assert_eq!(
        (done["in_reply_to"].as_str(), done["seq"].as_u64()),
        (Some("q"), Some(2))
    );
    assert_eq!(sess.items()[1].text, "Hello");
    // Finished replies take no more tokens.
    assert!(!sess.reply_token(&j.reply, "late", &mut out));
}

#[test]
fn a_failed_reply_says_unavailable_and_asks_for_a_person() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m1", "hi"),
        at(t0, 0),
        &s,
    );
    let j = job(&out);
    let mut out = Vec::new();
    assert!(sess.reply_failed(&j.reply, ReplyFailure::Unavailable, &mut out));
    let e = &sent_to(&out, sub(1))[0];
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unavailable"), Some("m1"))
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Out::Commit(r) if matches!(r[0], Record::NeedsHuman { .. }))));
    assert!(sess.needs_human().is_some());
    // The visitor's message is kept.
    assert_eq!(sess.items().len(), 1);
}

#[test]
fn replies_nobody_watches_are_cancelled_after_a_grace() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m1", "hi"),
        at(t0, 0),
        &s,
    );
    let j = job(&out);
    let mut out = Vec::new();
    sess.detach(sub(1), t0);
    sess.abandon_unwatched(
        t0 + Duration::from_secs(1),
        Duration::from_secs(5),
        &mut out,
    );
    assert!(out.is_empty(), "a reload is not leaving");
    sess.abandon_unwatched(
        t0 + Duration::from_secs(6),
        Duration::from_secs(5),
        &mut out,
    );
    assert_eq!(out, vec![Out::Cancel(vec![j.reply.clone()])]);
    assert!(!sess.reply_token(&j.reply, "x", &mut out));
}

#[test]
fn restored_session_resumes_and_re_acks() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let items = vec![Item {
        seq: 1,
        from: Author::Visitor,
        text: "before the crash".into(),
        ts: 5,
        id: Some("old".into()),
        reply: None,
        sources: None,
        name: None,
    }];
    let r = Restored {
        items,
        next_seq: 2,
        acked: vec![("old".into(), 1)],
        page: Some(PageInfo::from_parts(Some("fr"), None, None)),
        needs_human: None,
        ended: false,
    };
    let mut sess = Session::restore(
        SessionKey::random().unwrap(),
        ConversationId::from_bytes(*b"conversation"),
        "demo".into(),
        t0,
        r,
    );
    sess.attach(sub(1), t0);
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        ClientMsg::Hello(Default::default()),
        at(t0, 0),
        &s,
    );
    let w = sent_to(&out, sub(1)).pop().unwrap();
    assert_eq!(w["resumed"], true);
    assert_eq!(w["history"][0]["text"], "before the crash");
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("old", "before the crash"),
        at(t0, 1),
        &s,
    );
    assert_eq!(
        sent_to(&out, sub(1)),
        vec![serde_json::json!({"type": "ack", "id": "old", "seq": 1})]
    );
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("new", "after"),
        at(t0, 2),
        &s,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["seq"], 2);
    assert_eq!(
        job(&out).prompt.len(),
        3,
        "instructions, the old message, the new one"
    );
}

#[test]
fn human_request_marks_the_conversation_once() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let mut out = Vec::new();
    sess.on_client(
        Origin::Socket(sub(1)),
        ClientMsg::Human { reason: None },
        at(t0, 0),
        &s,
        &mut out,
    );
    assert_eq!(commits(&out), 1);
    assert!(
        out.iter().any(|o| matches!(
            o,
            Out::Desk(crate::handoff::VisitorEvent::NeedsHuman { .. })
        )),
        "the desk is asked"
    );
    out.clear();
    // The desk has nobody: the visitor is told.
    sess.on_desk(
        crate::handoff::SessionEvent::NoneAvailable,
        at(t0, 0),
        &mut out,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["event"], "none_available");
    out.clear();
    sess.on_client(
        Origin::Socket(sub(1)),
        ClientMsg::Human { reason: None },
        at(t0, 1),
        &s,
        &mut out,
    );
    assert_eq!(commits(&out), 0, "already marked");
}

#[test]
fn flooding_is_rate_limited_without_storing() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let mut out = Vec::new();
    for i in 0..4 {
        out.extend(send_committed(
            &mut sess,
            Origin::Socket(sub(1)),
            msg(&format!("m{i}"), "x"),
            at(t0, 0),
            &s,
        ));
    }
    let last = sent_to(&out, sub(1)).pop().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "rate_limited");
    assert_eq!(last["id"], "m3");
    assert!(last["retry_after_ms"].as_u64().unwrap() > 0);
    assert_eq!(sess.items().len(), 3);
    // After the wait it is accepted.
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m3", "x"),
        at(t0, 1000),
        &s,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["type"], "ack");
}

#[test]
fn long_poll_cursor_flow() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    let mut out = Vec::new();
    // A recv with nothing to say is held.
    sess.poll_recv(sub(50), 0, t0, &s, &mut out);
    assert!(out.is_empty());
    // hello through /poll/send completes it with the welcome.
    out = send_committed(
        &mut sess,
        Origin::Poll,
        ClientMsg::Hello(Default::default()),
        at(t0, 1),
        &s,
    );
    let Some(Out::PollReady {
        to,
        cursor,
        messages,
    }) = out.into_iter().find(|o| matches!(o, Out::PollReady { .. }))
    else {
        panic!("not ready")
    };
    let mut out = Vec::new();
    assert_eq!((to, cursor, messages.len()), (sub(50), 1, 1));
    assert_eq!(json(&messages[0])["type"], "welcome");
    // A message and its ack; the next recv with cursor 1 gets the ack at once.
    send_committed(&mut sess, Origin::Poll, msg("m1", "hi"), at(t0, 2), &s);
    out.clear();
    sess.poll_recv(sub(51), 1, t0, &s, &mut out);
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
    sess.poll_recv(sub(52), 2, t0, &s, &mut out);
    sess.poll_recv(sub(53), 2, t0, &s, &mut out);
    assert_eq!(
        out,
        vec![Out::PollReady {
            to: sub(52),
            cursor: 2,
            messages: vec![]
        }]
    );
    // Timeout ends the held one.
    out.clear();
    sess.poll_timeout(sub(53), &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn expired_cursor_gets_error_then_fresh_welcome() {
    let cfg = config();
    let mut s = settings(&cfg, &OPEN);
    s.poll_log_cap = 2;
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
    sess.poll_recv(sub(9), 0, t0, &s, &mut out);
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
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    let mut out = Vec::new();
    sess.on_client(
        Origin::Socket(sub(1)),
        ClientMsg::Hello(h.clone()),
        at(t0, 0),
        &s,
        &mut out,
    );
    assert_eq!(sess.page_info().and_then(PageInfo::lang), Some("de"));
    assert_eq!(commits(&out), 1, "the page is stored");
    out.clear();
    sess.on_client(
        Origin::Socket(sub(1)),
        ClientMsg::Hello(h),
        at(t0, 1),
        &s,
        &mut out,
    );
    assert_eq!(commits(&out), 0, "an unchanged page is not stored again");
}

#[test]
fn websocket_only_sessions_keep_no_poll_log() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m1", "x"),
        at(t0, 0),
        &s,
    );
    assert!(sess.poll.is_none());
    sess.detach(sub(1), t0);
    assert!(sess.subscribers().is_empty());
}

/// A page that connects after the `agent` events went elsewhere (a reload,
/// a second tab) hears from `welcome` where the hand-off stands.
#[test]
fn welcome_says_where_the_handoff_stands() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let welcome = |sess: &mut Session, ms: u64| {
        let out = send_committed(
            sess,
            Origin::Socket(sub(1)),
            ClientMsg::Hello(Default::default()),
            at(t0, ms),
            &s,
        );
        sent_to(&out, sub(1))[0].get("handoff").cloned()
    };
    assert_eq!(welcome(&mut sess, 0), None, "the AI answers");
    send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        ClientMsg::Human { reason: None },
        at(t0, 1),
        &s,
    );
    assert_eq!(welcome(&mut sess, 2), Some("waiting".into()));
    let mut out = Vec::new();
    sess.on_desk(SessionEvent::Queued { position: 1 }, at(t0, 3), &mut out);
    assert_eq!(welcome(&mut sess, 4), Some("waiting".into()));
    sess.on_desk(
        SessionEvent::Joined { name: "Ada".into() },
        at(t0, 5),
        &mut out,
    );
    assert_eq!(welcome(&mut sess, 6), Some("held".into()));
    sess.on_desk(
        SessionEvent::Left { name: "Ada".into() },
        at(t0, 7),
        &mut out,
    );
    assert_eq!(welcome(&mut sess, 8), None, "released to the AI");
    sess.on_desk(
        SessionEvent::Joined { name: "Bo".into() },
        at(t0, 9),
        &mut out,
    );
    sess.on_desk(
        SessionEvent::End { reason: "resolved" },
        at(t0, 10),
        &mut out,
    );
    assert_eq!(welcome(&mut sess, 11), None, "resolved");
}

#[test]
fn a_typed_request_for_a_person_is_handed_off_with_no_ai_answer() {
    let cfg = config();
    let s = settings(&cfg, &OPEN);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let text = "can I speak to a human about my refund?";
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m1", text),
        at(t0, 0),
        &s,
    );
    assert_eq!(
        sent_to(&out, sub(1))[0]["type"],
        "ack",
        "the message is kept"
    );
    assert!(
        !out.iter().any(|o| matches!(o, Out::Answer(_))),
        "no AI reply"
    );
    let reason = out.iter().find_map(|o| match o {
        Out::Desk(crate::handoff::VisitorEvent::NeedsHuman {
            reason, preview, ..
        }) => Some((reason.clone(), preview.clone())),
        _ => None,
    });
    assert_eq!(
        reason,
        Some((
            "the visitor asked for a person".to_string(),
            Some(text.to_string())
        ))
    );
    // A question that merely names a person stays with the AI.
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let m = msg("m1", "is the person size chart accurate?");
    let out = send_committed(&mut sess, Origin::Socket(sub(1)), m, at(t0, 0), &s);
    assert!(out.iter().any(|o| matches!(o, Out::Answer(_))));
}

/// Admission that refuses the first ask with a place 500 ms on, then
/// admits, and remembers what it was asked.
struct Booking {
    asks: std::cell::RefCell<Vec<Ask>>,
}

impl Admission for Booking {
    fn admit(&self, ask: Ask, _: bool) -> Result<Admitted, Busy> {
        let mut asks = self.asks.borrow_mut();
        asks.push(ask);
        if asks.len() == 1 || (asks.len() == 3 && !ask.holds_place) {
            return Err(Busy {
                retry_after: Duration::from_millis(500),
                place: true,
            });
        }
        Ok(Admitted::detached())
    }
}

#[test]
fn a_resend_at_its_time_holds_the_place_its_busy_kept() {
    let cfg = config();
    let gate = Booking {
        asks: Default::default(),
    };
    let s = settings(&cfg, &gate);
    let t0 = Instant::now();
    let mut sess = session(t0);
    sess.attach(sub(1), t0);
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m1", "hi"),
        at(t0, 0),
        &s,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["retry_after_ms"], 500);
    // Back on time: it holds its place.
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m1", "hi"),
        at(t0, 520),
        &s,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["type"], "ack");
    assert!(gate.asks.borrow()[1].holds_place);
    // Refused again, then back far too late: a fresh request.
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m2", "hi"),
        at(t0, 600),
        &s,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["code"], "busy");
    let out = send_committed(
        &mut sess,
        Origin::Socket(sub(1)),
        msg("m2", "hi"),
        at(t0, 600 + 500 + 2_500),
        &s,
    );
    assert_eq!(sent_to(&out, sub(1))[0]["type"], "ack");
    assert!(!gate.asks.borrow()[3].holds_place);
}
