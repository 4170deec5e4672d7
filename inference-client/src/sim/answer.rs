//! What the simulated model says: a deterministic answer to a chat, split
//! into word-sized tokens.
//!
//! With no knowledge behind it, the answer quotes the visitor's last message.
//! The seam for the knowledge base (issue 7) is [`answer_from_sources`]: when
//! the system prompt carries a `Sources:` block (a line `Sources:`, then one
//! source per line), the answer is built from it instead; today that is the
//! first sentence of the first source, which the extractive answerer will
//! replace.

use crate::openai::{ChatMessage, Role};

/// Longest quote of the visitor's message, in characters.
const QUOTE_CHARS: usize = 200;

/// The simulated answer to `messages`.
pub fn compose(messages: &[ChatMessage]) -> String {
    let question = messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map_or("", |m| m.content.as_str());
    let sources = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .find_map(|m| sources_block(&m.content));
    if let Some(a) = sources.and_then(|s| answer_from_sources(s, question)) {
        return a;
    }
    let mut q: String = question.split_whitespace().collect::<Vec<_>>().join(" ");
    if q.chars().count() > QUOTE_CHARS {
        q = q.chars().take(QUOTE_CHARS).collect();
        q.push('…');
    }
    format!(
        "Thanks for your message! This is the simulated inference server answering, \
         so there is no real model behind this reply. You wrote: \u{201c}{q}\u{201d}"
    )
}

/// The text after a `Sources:` line, if the prompt has one.
pub fn sources_block(system: &str) -> Option<&str> {
    let mut offset = 0;
    for line in system.split_inclusive('\n') {
        offset += line.len();
        if line.trim().eq_ignore_ascii_case("sources:") {
            return Some(&system[offset..]);
        }
    }
    None
}

/// The answer built from retrieved sources (the knowledge base's seam):
/// today the first sentence of the first non-empty source, its `[n]` marker
/// dropped. `None` when the block is empty.
pub fn answer_from_sources(sources: &str, _question: &str) -> Option<String> {
    let first = sources.lines().map(str::trim).find(|l| !l.is_empty())?;
    let first = match first.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((_, rest)) => rest.trim_start(),
        None => first,
    };
    let end = first
        .char_indices()
        .find(|&(i, c)| matches!(c, '.' | '!' | '?') && first[i + c.len_utf8()..].starts_with(' '))
        .map_or(first.len(), |(i, c)| i + c.len_utf8());
    Some(format!("From our help pages: {}", &first[..end]))
}

/// Splits text into word-sized pieces, each keeping the space before it, the
/// way language models stream; joined they are the text.
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
    fn quotes_the_last_user_message() {
        let m = [
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::User, "first"),
            ChatMessage::new(Role::Assistant, "ok"),
            ChatMessage::new(Role::User, "where   is\nmy parcel"),
        ];
        let a = compose(&m);
        assert!(a.ends_with("\u{201c}where is my parcel\u{201d}"), "{a}");
        assert_eq!(a, compose(&m), "deterministic");
        let long = "x".repeat(500);
        assert!(compose(&[ChatMessage::new(Role::User, long)]).contains('…'));
    }

    #[test]
    fn answers_from_a_sources_block() {
        let m = [
            ChatMessage::new(
                Role::System,
                "You help.\nSources:\n\n[1] Returns are free within 30 days. Keep the receipt.\n[2] Other.",
            ),
            ChatMessage::new(Role::User, "can I return it?"),
        ];
        assert_eq!(
            compose(&m),
            "From our help pages: Returns are free within 30 days."
        );
        assert_eq!(sources_block("no block"), None);
        assert_eq!(answer_from_sources("\n  \n", "q"), None);
    }

    #[test]
    fn pieces_join_back_to_the_text() {
        let t = "Hello  there, how are you?";
        let p = split_pieces(t);
        assert_eq!(p.concat(), t);
        assert_eq!(p[0], "Hello");
        assert_eq!(p.len(), 5);
        assert!(split_pieces("").is_empty());
    }
}
