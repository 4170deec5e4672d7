//! What the test server answers, as plain functions: `welcome` for `hello`;
//! for `message` an `ack` after a known delay and optionally tokens and
//! `done`, or `error` `busy` with `retry_after_ms` for every Nth message;
//! `pong` for `ping`; and when a configured stall holds frames back.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// How the test server behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// Time from receiving a `message` to sending its `ack`.
    pub ack_delay: Duration,
    /// Tokens of each reply (0: no reply at all, only the ack).
    pub tokens: u32,
    /// Time between the ack and the first token, and between tokens.
    pub token_interval: Duration,
    /// Every Nth message is refused with `busy` (0: never).
    pub busy_every: u64,
    /// `retry_after_ms` of a `busy` refusal.
    pub busy_retry_ms: u64,
    /// Stall: starting this long after the first message, hold every frame for `stall_for`.
    pub stall_after: Option<Duration>,
    /// Length of the stall.
    pub stall_for: Duration,
    /// Messages are served one at a time per server thread, each taking
    /// this long before its ack (zero: no queue): a capacity of
    /// 1 / `service_time` messages a second.
    pub service_time: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            ack_delay: Duration::ZERO,
            tokens: 0,
            token_interval: Duration::from_millis(10),
            busy_every: 0,
            busy_retry_ms: 250,
            stall_after: None,
            stall_for: Duration::ZERO,
            service_time: Duration::ZERO,
        }
    }
}

/// One frame to send `after` the request arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Delay from receipt.
    pub after: Duration,
    /// JSON text.
    pub json: String,
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
}

/// Per-connection counters the answers depend on.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Items stored so far (the `seq` of the next).
    pub seq: u64,
    /// The upgrade's cookie named an earlier conversation: `welcome` says
    /// `resumed: true`.
    pub resumed: bool,
}

/// The frames answering one client text frame. `messages` counts the
/// `message`s the server has seen (for `busy_every`); it is bumped here.
pub fn answer(
    b: &Behaviour,
    conn: &mut ConnState,
    conv: u64,
    messages: &mut u64,
    text: &[u8],
) -> Vec<Planned> {
    let now = |json: String| Planned {
        after: Duration::ZERO,
        json,
    };
    let Ok(m) = serde_json::from_slice::<Incoming>(text) else {
        return vec![now(
            r#"{"type":"error","code":"bad_request","message":"not JSON"}"#.to_string(),
        )];
    };
    let id_json = serde_json::to_string(&m.id.clone().unwrap_or_default()).unwrap_or_default();
    match m.kind.as_str() {
        "hello" => vec![now(format!(
            r#"{{"type":"welcome","conversation":"c-{conv}","resumed":{},"history":[],"config":{{}}}}"#,
            conn.resumed
        ))],
        "ping" => vec![now(format!(r#"{{"type":"pong","id":{id_json}}}"#))],
        "message" if m.id.as_deref().is_none_or(str::is_empty) => vec![now(
            r#"{"type":"error","code":"bad_request","message":"a message needs an id"}"#
                .to_string(),
        )],
        "message" => {
            let message_no = *messages;
            *messages += 1;
            if b.busy_every > 0 && message_no % b.busy_every == b.busy_every - 1 {
                return vec![now(format!(
                    r#"{{"type":"error","code":"busy","message":"over capacity","id":{id_json},"retry_after_ms":{}}}"#,
                    b.busy_retry_ms
                ))];
            }
            conn.seq += 1;
            let mut out = vec![Planned {
                after: b.ack_delay,
                json: format!(r#"{{"type":"ack","id":{id_json},"seq":{}}}"#, conn.seq),
            }];
            if b.tokens > 0 {
                let reply = format!("r{}", conn.seq);
                let mut at = b.ack_delay;
                for k in 0..b.tokens {
                    at += b.token_interval;
                    out.push(Planned {
                        after: at,
                        json: format!(
                            r#"{{"type":"token","reply":"{reply}","in_reply_to":{id_json},"text":"tok{k} "}}"#
                        ),
                    });
                }
                conn.seq += 1;
                out.push(Planned {
                    after: at,
                    json: format!(
                        r#"{{"type":"done","reply":"{reply}","in_reply_to":{id_json},"seq":{},"sources":[],"confidence":0.9}}"#,
                        conn.seq
                    ),
                });
            }
            out
        }
        "typing" | "csat" | "human" => Vec::new(),
        other => vec![now(format!(
            r#"{{"type":"error","code":"unknown_type","message":"unknown type {}"}}"#,
            other.escape_default()
        ))],
    }
}

/// The extra delay of a message arriving at `now` at a single server that
/// works one message at a time for `service` each; `free_at` is when the
/// server's queue empties, and is moved on by this message.
pub fn queue_delay(service: Duration, free_at: &mut Option<Instant>, now: Instant) -> Duration {
    if service.is_zero() {
        return Duration::ZERO;
    }
    let start = free_at.map_or(now, |f| f.max(now));
    let done = start + service;
    *free_at = Some(done);
    done - now
}

/// When a frame due at `due` may leave, given a stall window `[start, end)`.
pub fn release_at(due: Instant, stall: Option<(Instant, Instant)>) -> Instant {
    match stall {
        Some((start, end)) if due >= start && due < end => end,
        _ => due,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_delays_each_message_behind_the_ones_before() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut free = None;
        assert_eq!(queue_delay(ms(10), &mut free, t), ms(10));
        assert_eq!(
            queue_delay(ms(10), &mut free, t + ms(2)),
            ms(18),
            "waits for the first"
        );
        assert_eq!(
            queue_delay(ms(10), &mut free, t + ms(100)),
            ms(10),
            "an idle server starts at once"
        );
        assert_eq!(queue_delay(Duration::ZERO, &mut free, t), Duration::ZERO);
    }

    fn json(p: &Planned) -> serde_json::Value {
        serde_json::from_str(&p.json).unwrap()
    }

    #[test]
    fn answers_hello_and_messages_with_replies() {
        let b = Behaviour {
            ack_delay: Duration::from_millis(20),
            tokens: 2,
            token_interval: Duration::from_millis(5),
            ..Behaviour::default()
        };
        let mut c = ConnState::default();
        let w = answer(&b, &mut c, 7, &mut 0, br#"{"type":"hello"}"#);
        assert_eq!(json(&w[0])["type"], "welcome");
        assert_eq!(json(&w[0])["conversation"], "c-7");
        let a = answer(
            &b,
            &mut c,
            7,
            &mut 0,
            br#"{"type":"message","id":"m1","text":"hi"}"#,
        );
        let kinds: Vec<String> = a
            .iter()
            .map(|p| json(p)["type"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["ack", "token", "token", "done"]);
        assert_eq!(a[0].after, Duration::from_millis(20));
        assert_eq!(a[2].after, Duration::from_millis(30));
        assert_eq!(json(&a[1])["in_reply_to"], "m1");
        assert_eq!(json(&a[3])["in_reply_to"], "m1");
        assert_eq!(json(&a[0])["id"], "m1");
    }

    #[test]
    fn every_nth_message_is_busy() {
        let b = Behaviour {
            busy_every: 3,
            busy_retry_ms: 100,
            ..Behaviour::default()
        };
        let mut c = ConnState::default();
        let mut n = 0;
        let kinds: Vec<String> = (0..6)
            .map(|_| {
                let a = answer(
                    &b,
                    &mut c,
                    1,
                    &mut n,
                    br#"{"type":"message","id":"m1","text":"x"}"#,
                );
                json(&a[0])["type"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(kinds, ["ack", "ack", "error", "ack", "ack", "error"]);
        let a = answer(
            &b,
            &mut c,
            1,
            &mut 2,
            br#"{"type":"message","id":"m9","text":"x"}"#,
        );
        assert_eq!(json(&a[0])["code"], "busy");
        assert_eq!(json(&a[0])["retry_after_ms"], 100);
    }

    #[test]
    fn bad_input_gets_errors() {
        let b = Behaviour::default();
        let mut c = ConnState::default();
        assert_eq!(
            json(&answer(&b, &mut c, 1, &mut 0, b"nope")[0])["code"],
            "bad_request"
        );
        assert_eq!(
            json(&answer(&b, &mut c, 1, &mut 0, br#"{"type":"dance"}"#)[0])["code"],
            "unknown_type"
        );
        assert_eq!(
            json(&answer(&b, &mut c, 1, &mut 0, br#"{"type":"ping","id":"p"}"#)[0])["type"],
            "pong"
        );
    }

    #[test]
    fn stalls_hold_frames_until_the_end() {
        let t = Instant::now();
        let s = Some((t + Duration::from_secs(1), t + Duration::from_secs(2)));
        assert_eq!(release_at(t, s), t);
        assert_eq!(
            release_at(t + Duration::from_millis(1500), s),
            t + Duration::from_secs(2)
        );
        assert_eq!(
            release_at(t + Duration::from_secs(2), s),
            t + Duration::from_secs(2)
        );
        assert_eq!(
            release_at(t + Duration::from_secs(3), None),
            t + Duration::from_secs(3)
        );
    }
}
