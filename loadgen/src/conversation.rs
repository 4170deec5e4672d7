//! Scripted multi-turn visitors: the `[[conversation]]` tables of a scenario
//! and the state of one visitor playing one.
//!
//! A conversation is a list of turns: say a text (and wait for its answer),
//! ask for a person, rate the conversation, reload the page (a new socket
//! that resumes the session), go offline for a while (the socket lost, then
//! a reconnect that resumes). Each turn may be followed by a think time,
//! stretched by the conversation's jitter so that many sessions replaying
//! one script do not move in lockstep. A session plays one conversation
//! (chosen by weight) and leaves; the stage's session target brings the
//! next visitor. Messages are marked with their turn, so the report has
//! per-turn figures: the fifth message of a conversation carries a longer
//! history than the first.
//!
//! Everything here is plain data and decisions; the worker carries them out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::Dur;

/// One `[[conversation]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// A name for reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How often it is chosen relative to the others.
    #[serde(default = "one")]
    pub weight: f64,
    /// Think times are scaled by a uniform factor in 1 +- jitter.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// The turns, in order.
    pub turns: Vec<Turn>,
}

fn one() -> f64 {
    1.0
}

fn default_jitter() -> f64 {
    0.25
}

/// Think time after a turn when the turn names none.
pub const DEFAULT_THINK: Duration = Duration::from_secs(2);

/// What a turn does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this text as a `message` and wait for it to settle.
    Say(String),
    /// Ask for a person (`human`), with an optional reason.
    Human(Option<String>),
    /// Rate the conversation (`csat`, 1-5).
    Csat(u8),
    /// Reload the page: close the socket and open a new one with the
    /// session's cookie, which resumes the session.
    Reload,
    /// Lose the connection for this long, then reconnect and resume.
    Offline(Duration),
}

/// One turn: an action, then a pause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTurn", into = "RawTurn")]
pub struct Turn {
    /// What it does.
    pub action: Action,
    /// The pause after it [default: [`DEFAULT_THINK`]].
    pub think: Option<Dur>,
}

/// `human = true` or `human = "reason"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum HumanArg {
    Asked(bool),
    Reason(String),
}

/// A turn as written: exactly one action key, and `think`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    say: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    human: Option<HumanArg>,
    #[serde(default, alias = "rate", skip_serializing_if = "Option::is_none")]
    csat: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reload: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offline: Option<Dur>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    think: Option<Dur>,
}

impl TryFrom<RawTurn> for Turn {
    type Error = String;
    fn try_from(r: RawTurn) -> Result<Turn, String> {
        let mut actions = Vec::new();
        if let Some(t) = r.say {
            if t.trim().is_empty() {
                return Err("a turn's `say` is empty".into());
            }
            actions.push(Action::Say(t));
        }
        match r.human {
            Some(HumanArg::Asked(true)) => actions.push(Action::Human(None)),
            Some(HumanArg::Reason(why)) => actions.push(Action::Human(Some(why))),
            Some(HumanArg::Asked(false)) | None => {}
        }
        if let Some(score) = r.csat {
            if !(1..=5).contains(&score) {
                return Err(format!(
                    "a turn's rating is {score}: give csat (or rate) 1 to 5"
                ));
            }
            actions.push(Action::Csat(score));
        }
        if r.reload == Some(true) {
            actions.push(Action::Reload);
        }
        if let Some(d) = r.offline {
            actions.push(Action::Offline(d.0));
        }
        match actions.len() {
            1 => Ok(Turn {
                action: actions.remove(0),
                think: r.think,
            }),
            0 => Err("a turn needs one of say, human, csat (or rate), reload, offline".into()),
            _ => Err(
                "a turn does one thing: give one of say, human, csat, reload, offline per turn"
                    .into(),
            ),
        }
    }
}

impl From<Turn> for RawTurn {
    fn from(t: Turn) -> RawTurn {
        let mut r = RawTurn {
            think: t.think,
            ..RawTurn::default()
        };
        match t.action {
            Action::Say(s) => r.say = Some(s),
            Action::Human(None) => r.human = Some(HumanArg::Asked(true)),
            Action::Human(Some(why)) => r.human = Some(HumanArg::Reason(why)),
            Action::Csat(n) => r.csat = Some(n),
            Action::Reload => r.reload = Some(true),
            Action::Offline(d) => r.offline = Some(Dur(d)),
        }
        r
    }
}

impl Conversation {
    /// Checks it can be played: a positive weight, a jitter in [0, 1), a `say`.
    pub fn validate(&self, index: usize) -> Result<(), String> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("conversation {}", index + 1));
        if !(self.weight > 0.0 && self.weight.is_finite()) {
            return Err(format!("{name}: weight must be positive"));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(format!("{name}: jitter must be at least 0 and below 1"));
        }
        if !self
            .turns
            .iter()
            .any(|t| matches!(t.action, Action::Say(_)))
        {
            return Err(format!(
                "{name}: a conversation needs at least one `say` turn"
            ));
        }
        Ok(())
    }

    /// The number of `say` turns: the messages one playing sends.
    pub fn messages(&self) -> usize {
        self.turns
            .iter()
            .filter(|t| matches!(t.action, Action::Say(_)))
            .count()
    }
}

/// What a visitor does next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next<'a> {
    /// Send `text` as the `turn`th message (1-based) and wait for it.
    Say {
        /// The text.
        text: &'a str,
        /// Its place among the conversation's messages.
        turn: u16,
    },
    /// Ask for a person.
    Human(Option<&'a str>),
    /// Rate the conversation.
    Csat(u8),
    /// Reconnect at once, resuming the session.
    Reload,
    /// Drop the connection and reconnect after this long.
    Offline(Duration),
    /// The script is over: the visitor leaves.
    Leave,
}

/// One visitor playing one conversation.
#[derive(Debug, Clone)]
pub struct Visitor {
    conversation: usize,
    at: usize,
    said: u16,
}

impl Visitor {
    /// A visitor playing one of `all`, chosen by weight with `u` uniform in [0, 1).
    pub fn choose(all: &[Conversation], u: f64) -> Visitor {
        let total: f64 = all.iter().map(|c| c.weight).sum();
        let mut x = u * total;
        let mut chosen = all.len().saturating_sub(1);
        for (i, c) in all.iter().enumerate() {
            if x < c.weight {
                chosen = i;
                break;
            }
            x -= c.weight;
        }
        Visitor {
            conversation: chosen,
            at: 0,
            said: 0,
        }
    }

    /// Which conversation it plays.
    pub fn conversation(&self) -> usize {
        self.conversation
    }

    /// The next action and the think time after it (`u` uniform in [0, 1)
    /// draws its jitter).
    pub fn next<'a>(&mut self, all: &'a [Conversation], u: f64) -> (Next<'a>, Duration) {
        let Some(conv) = all.get(self.conversation) else {
            return (Next::Leave, Duration::ZERO);
        };
        let Some(turn) = conv.turns.get(self.at) else {
            return (Next::Leave, Duration::ZERO);
        };
        self.at += 1;
        let base = turn.think.map_or(DEFAULT_THINK, |d| d.0);
        let think = jittered(base, conv.jitter, u);
        let next = match &turn.action {
            Action::Say(text) => {
                self.said += 1;
                Next::Say {
                    text,
                    turn: self.said,
                }
            }
            Action::Human(why) => Next::Human(why.as_deref()),
            Action::Csat(n) => Next::Csat(*n),
            Action::Reload => Next::Reload,
            Action::Offline(d) => Next::Offline(*d),
        };
        (next, think)
    }
}

/// `base` scaled by a uniform factor in 1 +- `jitter` (`u` uniform in [0, 1)).
pub fn jittered(base: Duration, jitter: f64, u: f64) -> Duration {
    base.mul_f64((1.0 - jitter + 2.0 * jitter * u).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<Conversation>, String> {
        #[derive(Deserialize)]
        struct File {
            conversation: Vec<Conversation>,
        }
        toml::from_str::<File>(toml_text)
            .map(|f| f.conversation)
            .map_err(|e| e.to_string())
    }

    const SCRIPT: &str = r#"
[[conversation]]
name = "order"
weight = 3
turns = [
  { say = "Where is my order?", think = "1s" },
  { say = "It is order 1234" },
  { human = "it is late" },
  { rate = 4 },
  { reload = true, think = "0s" },
  { offline = "5s" },
  { say = "Thanks" },
]

[[conversation]]
turns = [{ say = "Do you ship to Canada?" }]
"#;

    #[test]
    fn a_script_reads_as_written_and_writes_back() {
        let all = parse(SCRIPT).unwrap();
        assert_eq!(all.len(), 2);
        let order = &all[0];
        assert_eq!(order.turns.len(), 7);
        assert_eq!(order.messages(), 3);
        assert_eq!(
            order.turns[2].action,
            Action::Human(Some("it is late".into()))
        );
        assert_eq!(order.turns[3].action, Action::Csat(4));
        assert_eq!(
            order.turns[5].action,
            Action::Offline(Duration::from_secs(5))
        );
        assert_eq!(all[1].weight, 1.0);
        for (i, c) in all.iter().enumerate() {
            c.validate(i).unwrap();
        }
        // The report carries the scenario: it serializes back to the same script.
        let json = serde_json::to_string(&all).unwrap();
        let back: Vec<Conversation> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn bad_turns_say_what_to_write() {
        for (text, want) in [
            ("turns = [{ think = \"1s\" }]", "needs one of"),
            ("turns = [{ say = \"a\", reload = true }]", "does one thing"),
            ("turns = [{ csat = 9 }]", "1 to 5"),
            ("turns = [{ shout = \"a\" }]", "unknown field"),
        ] {
            let e = parse(&format!("[[conversation]]\n{text}\n")).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let only_rating = parse("[[conversation]]\nturns = [{ csat = 5 }]\n").unwrap();
        assert!(only_rating[0].validate(0).unwrap_err().contains("`say`"));
        let mut heavy = parse(SCRIPT).unwrap();
        heavy[0].weight = 0.0;
        assert!(heavy[0].validate(0).unwrap_err().contains("weight"));
    }

    #[test]
    fn a_visitor_plays_its_turns_in_order_then_leaves() {
        let all = parse(SCRIPT).unwrap();
        let mut v = Visitor::choose(&all, 0.1);
        assert_eq!(v.conversation(), 0);
        let (first, think) = v.next(&all, 0.5);
        assert_eq!(
            first,
            Next::Say {
                text: "Where is my order?",
                turn: 1
            }
        );
        assert_eq!(think, Duration::from_secs(1), "u = 0.5: no stretch");
        let mut seen = vec![first];
        loop {
            let (n, _) = v.next(&all, 0.5);
            seen.push(n);
            if n == Next::Leave {
                break;
            }
        }
        assert_eq!(
            seen[1..],
            [
                Next::Say {
                    text: "It is order 1234",
                    turn: 2
                },
                Next::Human(Some("it is late")),
                Next::Csat(4),
                Next::Reload,
                Next::Offline(Duration::from_secs(5)),
                Next::Say {
                    text: "Thanks",
                    turn: 3
                },
                Next::Leave,
            ]
        );
        assert_eq!(v.next(&all, 0.5).0, Next::Leave, "and stays gone");
    }

    #[test]
    fn conversations_are_chosen_by_weight_and_think_times_jitter() {
        let all = parse(SCRIPT).unwrap();
        // Weights 3 and 1: the first three quarters choose the first.
        assert_eq!(Visitor::choose(&all, 0.0).conversation(), 0);
        assert_eq!(Visitor::choose(&all, 0.74).conversation(), 0);
        assert_eq!(Visitor::choose(&all, 0.76).conversation(), 1);
        assert_eq!(Visitor::choose(&all, 0.999_999).conversation(), 1);
        let s = Duration::from_secs(2);
        assert_eq!(jittered(s, 0.25, 0.0), Duration::from_millis(1500));
        assert_eq!(jittered(s, 0.25, 0.5), s);
        assert!(jittered(s, 0.25, 0.999) < Duration::from_millis(2500));
        assert_eq!(jittered(s, 0.0, 0.9), s);
    }
}
