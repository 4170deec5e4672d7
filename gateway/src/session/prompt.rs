//! The prompt for one turn: the site's standing instructions (composed once
//! per site by [`system_text`]: instructions, tone, rules, examples), then the
//! conversation, cut to a token budget from the oldest side.
//!
//! The newest visitor message is always kept whole; older items go first when
//! the conversation no longer fits, so a long chat keeps its recent context.
//! The grounding sources are added later, off the worker (see
//! `crate::grounding`), inside a budget the caller keeps back for them.

use crate::chat::server::{Author, Item};

/// A question this short is probably a follow-up ("and to Canada?"): the
/// visitor's previous message is searched with it.
const FOLLOW_UP_WORDS: usize = 4;

/// The text to search the knowledge base for when answering `newest`: the
/// message itself, with the visitor's previous message before it when the new
/// one is a short follow-up.
pub fn retrieval_query(history: &[Item], newest: &str) -> String {
    if newest.split_whitespace().count() >= FOLLOW_UP_WORDS {
        return newest.to_string();
    }
    match history.iter().rev().find(|i| i.from == Author::Visitor) {
        Some(prev) => format!("{} {newest}", prev.text),
        None => newest.to_string(),
    }
}

/// Who speaks in a prompt message (the OpenAI roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Instructions.
    System,
    /// The visitor.
    User,
    /// The AI (and human agents, whose words the AI should continue from).
    Assistant,
}

/// One message of the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptMessage {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
}

/// Used when a site gives the AI no instructions at all.
const DEFAULT_INSTRUCTIONS: &str =
    "You are a helpful assistant on a website's chat. Answer briefly and kindly.";

/// The standing part of a site's system prompt: its instructions, then its
/// tone, its rules as a list, and its example exchanges, each section only
/// when the site has one.
pub fn system_text<'a>(
    instructions: &str,
    tone: Option<&str>,
    rules: &[String],
    examples: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut s = match instructions.trim() {
        "" => DEFAULT_INSTRUCTIONS.to_string(),
        t => t.to_string(),
    };
    if let Some(t) = tone.map(str::trim).filter(|t| !t.is_empty()) {
        s.push_str("\n\nTone: ");
        s.push_str(t);
    }
    let rules: Vec<&str> = rules
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .collect();
    if !rules.is_empty() {
        s.push_str("\n\nRules you must keep:");
        for r in rules {
            s.push_str("\n- ");
            s.push_str(r);
        }
    }
    let mut examples = examples.into_iter().peekable();
    if examples.peek().is_some() {
        s.push_str("\n\nExamples of good answers:");
        for (q, a) in examples {
            s.push_str("\nVisitor: ");
            s.push_str(q.trim());
            s.push_str("\nYou: ");
            s.push_str(a.trim());
        }
    }
    s
}

/// Builds the prompt for answering `newest` (a visitor message) after `history`.
///
/// `system` is the site's [`system_text`]; `count` estimates the tokens of a
/// text; `budget` bounds the whole prompt. The system message always goes
/// first; one alone over the budget is still sent (the budget then covers
/// only the newest message).
pub fn build(
    system: &str,
    history: &[Item],
    newest: &Item,
    budget: u32,
    count: impl Fn(&str) -> u32,
) -> Vec<PromptMessage> {
    let system = match system.trim() {
        "" => DEFAULT_INSTRUCTIONS.to_string(),
        _ => system.to_string(),
    };
    let mut used = count(&system);
    // Walk back from the newest item, keeping what fits.
    let mut kept: Vec<PromptMessage> = Vec::new();
    let newest_first = std::iter::once(newest).chain(history.iter().rev());
    for (i, item) in newest_first.enumerate() {
        let content = match (item.from, &item.name) {
            (Author::Agent, Some(name)) => format!("{name} (support agent): {}", item.text),
            _ => item.text.clone(),
        };
        let cost = count(&content);
        if i > 0 && used + cost > budget {
            break;
        }
        used += cost;
        kept.push(PromptMessage {
            role: match item.from {
                Author::Visitor => Role::User,
                Author::Ai | Author::Agent => Role::Assistant,
            },
            content,
        });
    }
    // A prompt should open with the visitor speaking: drop a leading reply
    // whose question was cut off.
    while kept.last().is_some_and(|m| m.role == Role::Assistant) && kept.len() > 1 {
        kept.pop();
    }
    let mut out = Vec::with_capacity(kept.len() + 1);
    out.push(PromptMessage {
        role: Role::System,
        content: system,
    });
    out.extend(kept.into_iter().rev());
    out
}

/// Total estimated tokens of a prompt.
pub fn tokens(prompt: &[PromptMessage], count: impl Fn(&str) -> u32) -> u32 {
    prompt.iter().map(|m| count(&m.content)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, from: Author, text: &str) -> Item {
        Item {
            seq,
            from,
            text: text.into(),
            ts: 0,
            id: None,
            reply: None,
            sources: None,
            name: (from == Author::Agent).then(|| "Ana".to_string()),
        }
    }

    /// One token per word.
    fn words(s: &str) -> u32 {
        s.split_whitespace().count() as u32
    }

    #[test]
    fn instructions_then_conversation_in_order() {
        let items = [
            item(1, Author::Visitor, "hi there"),
            item(2, Author::Ai, "hello how can I help"),
            item(3, Author::Visitor, "where is my order"),
        ];
        let p = build(
            "Be brief.",
            &items[..items.len() - 1],
            items.last().unwrap(),
            1000,
            words,
        );
        let roles: Vec<_> = p.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(p[0].content, "Be brief.");
        assert_eq!(p[3].content, "where is my order");
    }

    #[test]
    fn cut_from_the_oldest_side() {
        let items = [
            item(1, Author::Visitor, "one two three four five"),
            item(2, Author::Ai, "six seven eight nine ten"),
            item(3, Author::Visitor, "eleven twelve"),
        ];
        // System 2 words + newest 2 words = 4; the older items do not fit in 8.
        let p = build(
            "Be brief.",
            &items[..items.len() - 1],
            items.last().unwrap(),
            8,
            words,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[1].content, "eleven twelve");
        assert!(tokens(&p, words) <= 8);
        // With room for the reply but not its question, the orphan reply is dropped too.
        let p = build(
            "Be brief.",
            &items[..items.len() - 1],
            items.last().unwrap(),
            9,
            words,
        );
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn the_newest_message_is_never_cut() {
        let items = [item(1, Author::Visitor, "a very long question indeed")];
        let p = build(
            "Rules.",
            &items[..items.len() - 1],
            items.last().unwrap(),
            1,
            words,
        );
        assert_eq!(p.last().unwrap().content, "a very long question indeed");
    }

    #[test]
    fn system_text_composes_the_sections_a_site_has() {
        assert_eq!(system_text("", None, &[], []), DEFAULT_INSTRUCTIONS);
        let rules = vec!["Never discuss competitor pricing.".to_string(), " ".into()];
        let s = system_text(
            "You help Fernhill's visitors.",
            Some("Warm."),
            &rules,
            [("Can I return shoes?", "Yes, within 30 days.")],
        );
        assert_eq!(
            s,
            "You help Fernhill's visitors.\n\nTone: Warm.\n\nRules you must keep:\n\
             - Never discuss competitor pricing.\n\nExamples of good answers:\n\
             Visitor: Can I return shoes?\nYou: Yes, within 30 days."
        );
        // Sections a site leaves empty are left out.
        assert_eq!(system_text("Be brief.", Some(" "), &[], []), "Be brief.");
    }

    #[test]
    fn agents_are_named_and_default_instructions_exist() {
        let items = [
            item(1, Author::Visitor, "help"),
            item(2, Author::Agent, "I am here"),
            item(3, Author::Visitor, "thanks"),
        ];
        let p = build(
            "  ",
            &items[..items.len() - 1],
            items.last().unwrap(),
            1000,
            words,
        );
        assert!(p[0].content.contains("helpful assistant"));
        assert_eq!(p[2].content, "Ana (support agent): I am here");
    }

    #[test]
    fn short_follow_ups_are_searched_with_the_previous_question() {
        let history = [
            item(1, Author::Visitor, "How long does shipping to the US take?"),
            item(2, Author::Ai, "Three to five business days."),
        ];
        assert_eq!(
            retrieval_query(&history, "and to Canada?"),
            "How long does shipping to the US take? and to Canada?"
        );
        assert_eq!(
            retrieval_query(&history, "What is your return policy for shoes?"),
            "What is your return policy for shoes?"
        );
        assert_eq!(retrieval_query(&[], "returns?"), "returns?");
    }
}
