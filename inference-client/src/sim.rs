//! A simulated inference server: produces an answer's text in pieces, with the
//! delay before the first piece and between pieces that a latency model gives.
//!
//! The current model is fixed delays; prefill cost per prompt token, batch
//! scaling and KV capacity come with the conversation engine.

use std::time::Duration;

/// Pace of the simulated server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// Time to the first token.
    pub first_token: Duration,
    /// Time between tokens.
    pub token_interval: Duration,
}

/// A planned answer: when and what to stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Delay before the first piece.
    pub first_token: Duration,
    /// Delay between pieces.
    pub token_interval: Duration,
    /// The pieces, in order; joined they are the whole answer.
    pub pieces: Vec<String>,
    /// How sure the answerer is, 0 to 1.
    pub confidence: f32,
}

/// The in-process simulator.
#[derive(Debug, Clone)]
pub struct Simulator {
    cfg: SimConfig,
}

impl Simulator {
    /// A simulator with this pace.
    pub fn new(cfg: SimConfig) -> Self {
        Simulator { cfg }
    }

    /// Plans the answer to `question`.
    pub fn answer(&self, question: &str) -> Answer {
        let q: String = question.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut q: String = q.chars().take(200).collect();
        if q.len() < question.trim().len() {
            q.push('…');
        }
        let text = format!(
            "Thanks for your message! This gateway has no inference server configured yet, \
             so this is the placeholder answerer speaking. You wrote: \u{201c}{q}\u{201d}"
        );
        Answer {
            first_token: self.cfg.first_token,
            token_interval: self.cfg.token_interval,
            pieces: split_pieces(&text),
            confidence: 0.5,
        }
    }
}

/// Splits text into word-sized pieces, each keeping the space before it, the
/// way language models stream.
pub fn split_pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for ch in text.chars() {
        if ch == ' ' && !cur.trim().is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(ch);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_back_to_the_text() {
        let t = "Hello  there, how are you?";
        let p = split_pieces(t);
        assert_eq!(p.concat(), t);
        assert_eq!(p[0], "Hello");
        assert!(p.len() >= 5);
    }

    #[test]
    fn answer_quotes_the_question() {
        let s = Simulator::new(SimConfig {
            first_token: Duration::from_millis(1),
            token_interval: Duration::from_millis(1),
        });
        let a = s.answer("where   is my parcel");
        assert!(a.pieces.concat().contains("where is my parcel"));
    }
}
