//! What the simulated model says: a deterministic answer to a chat, split
//! into word-sized tokens.
//!
//! With no knowledge behind it, the answer quotes the visitor's last message.
//! When the system prompt carries a `Sources:` block (a line `Sources:`, then
//! one retrieved chunk per line as `[n] (section) text`, best first, as
//! `knowledge::sources_block` writes it; see [`answer_from_sources`]), the
//! answer is extractive instead: the one to three sentences of the sources
//! that share the most (rare) words with the question, so the demo answers
//! real questions from its knowledge base.

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

/// Most sentences in an extractive answer.
const MAX_SENTENCES: usize = 3;
/// Longest extractive answer, in characters (the best sentence is kept
/// whole even when longer).
const MAX_ANSWER_CHARS: usize = 420;

/// How much longer sentences are penalised: score / words^this (a gentler
/// penalty than a square root, so that a sentence with the answer's details
/// beats a short one that merely repeats the question's words).
const LENGTH_EXPONENT: f64 = 0.3;

/// Words that carry no meaning in a question (and question fillers such as
/// `take` in "how long does it take").
#[rustfmt::skip]
const STOP: &[&str] = &[
    "a", "about", "all", "am", "an", "and", "any", "anything", "are", "as", "at", "be", "been",
    "but", "by", "can", "could", "did", "do", "does", "find", "for", "from", "get", "got", "had",
    "has", "have", "he", "her", "here", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "just", "know", "long", "many", "me", "much", "my", "need", "no", "not", "of", "on", "or",
    "our", "please", "possible", "she", "so", "some", "something", "take", "takes", "tell", "that",
    "the", "their", "them", "then", "there", "these", "they", "this", "to", "too", "us", "want",
    "was", "way", "we", "were", "what", "when", "where", "which", "who", "why", "will", "with",
    "would", "you", "your",
];

/// A question's or sentence's content words, lower-cased, stop words and a
/// possessive `'s` dropped.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .map(|w| w.strip_suffix("'s").map(str::to_string).unwrap_or(w))
        .filter(|w| !w.is_empty() && STOP.binary_search(&w.as_str()).is_err())
        .collect()
}

/// Word endings that [`same_word`] sees through after a short word.
const SUFFIXES: &[&str] = &["s", "es", "ed", "ing", "ment", "ments", "er", "ers", "able"];

/// Whether two words match: equal; or one starts with the other, the
/// shorter having at least 4 characters (`ship`/`shipping`,
/// `return`/`returns`), or 3 and the rest being a common ending
/// (`pay`/`payments`): a stemmer's effect without one.
fn same_word(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if short == long {
        return true;
    }
    let Some(rest) = long.strip_prefix(short) else {
        return false;
    };
    match short.chars().count() {
        0..=2 => false,
        3 => SUFFIXES.contains(&rest),
        _ => true,
    }
}

fn split_prose(text: &str, out: &mut Vec<String>) {
    let mut start = 0;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if matches!(c, '.' | '!' | '?') && text[end..].starts_with(' ') {
            out.push(text[start..end].trim().to_string());
            start = end;
        }
    }
    out.push(text[start..].trim().to_string());
}

/// Sentences of one source line: cut after `.`, `!` or `?` followed by a
/// space. A Markdown table (its rows run together once the line breaks are
/// gone) gives one "sentence" per row, its cells joined by commas, without
/// the `|---|` rule.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    // The table, if any, runs from the first `|` to the last.
    let (before, table, after) = match (text.find('|'), text.rfind('|')) {
        (Some(a), Some(b)) if a < b => (&text[..a], &text[a..=b], &text[b + 1..]),
        _ => (text, "", ""),
    };
    split_prose(before, &mut out);
    for row in table.replace("| |", "|\n|").lines() {
        let cells: Vec<&str> = row
            .split('|')
            .map(str::trim)
            .filter(|c| c.chars().any(char::is_alphanumeric))
            .collect();
        if !cells.is_empty() {
            out.push(format!("{}.", cells.join(", ")));
        }
    }
    split_prose(after, &mut out);
    out.into_iter()
        .map(|s| {
            s.trim_start_matches(['*', '-', ' '])
                .replace("**", "")
                .replace("__", "")
                .replace('`', "")
        })
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .collect()
}

/// A source's (section label, text): the label is a leading `(...)`.
fn split_label(source: &str) -> (&str, &str) {
    if let Some(rest) = source.strip_prefix('(') {
        if let Some((label, text)) = rest.split_once(") ") {
            if !label.contains('(') {
                return (label, text.trim_start());
            }
        }
    }
    ("", source)
}

/// The answer built from retrieved sources (the knowledge base's seam).
///
/// `sources` is the text after the `Sources:` line: one source per line,
/// best first, each `[n] (section) text`. The `[n]` marker and the
/// parenthesised section label (the chunk's title and heading path, as
/// `knowledge::sources_block` writes them) are optional; a source's own line
/// breaks are replaced by spaces.
///
/// Every sentence is scored by the question's words it contains (a word
/// only in its section label counts half), each weighted by its rarity among
/// the sentences (`ln(1 + N / df)`), divided by its length in words to the
/// power [`LENGTH_EXPONENT`], with a bonus for higher-ranked sources
/// (x1.5 for the first, x1.25 for the second, ...: retrieval already ranked
/// them). The best sentence and up to two more make the answer, in the
/// sources' order: sentences of the best one's source that score at least
/// half as well, then those of other sources that score at least nine tenths
/// as well, within [`MAX_ANSWER_CHARS`]. Labels are never quoted. With no
/// word in common, the first sentence of the first source. `None` when the
/// block is empty. Deterministic.
pub fn answer_from_sources(sources: &str, question: &str) -> Option<String> {
    let lines: Vec<(&str, &str)> = sources
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(
            |l| match l.strip_prefix('[').and_then(|r| r.split_once(']')) {
                Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest.trim_start(),
                _ => l,
            },
        )
        .map(split_label)
        .collect();
    // (source rank, sentence, its words, its words and its source's label's)
    let cands: Vec<(usize, String, Vec<String>, Vec<String>)> = lines
        .iter()
        .enumerate()
        .flat_map(|(r, (label, text))| {
            let label = words(label);
            sentences(text).into_iter().map(move |s| {
                let w = words(&s);
                let mut all = w.clone();
                all.extend(label.iter().cloned());
                (r, s, w, all)
            })
        })
        .collect();
    let first = cands.first()?.1.clone();
    let mut q = words(question);
    q.sort();
    q.dedup();
    let n = cands.len() as f64;
    let idf: Vec<f64> = q
        .iter()
        .map(|t| {
            let df = cands
                .iter()
                .filter(|c| c.3.iter().any(|w| same_word(w, t)))
                .count()
                .max(1);
            (1.0 + n / df as f64).ln()
        })
        .collect();
    let scores: Vec<f64> = cands
        .iter()
        .map(|(rank, _, ws, all)| {
            // A word of the sentence counts fully, one only in its section
            // label half.
            let matched: f64 = q
                .iter()
                .zip(&idf)
                .map(|(t, i)| {
                    if ws.iter().any(|w| same_word(w, t)) {
                        *i
                    } else if all.iter().any(|w| same_word(w, t)) {
                        i / 2.0
                    } else {
                        0.0
                    }
                })
                .sum();
            matched / (ws.len().max(1) as f64).powf(LENGTH_EXPONENT)
                * (1.0 + 0.5 / (1 + rank) as f64)
        })
        .collect();
    let mut order: Vec<usize> = (0..cands.len()).collect();
    // Best first; ties to the earlier source and sentence.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let best = order[0];
    if scores[best] == 0.0 {
        return Some(format!("From our help pages: {first}"));
    }
    let mut extra: Vec<(f64, usize)> = order[1..]
        .iter()
        .filter_map(|&i| {
            let same = cands[i].0 == cands[best].0;
            let need = if same { 0.5 } else { 0.9 };
            (scores[i] > 0.0 && scores[i] >= need * scores[best])
                .then_some((scores[i] * if same { 1.5 } else { 1.0 }, i))
        })
        .collect();
    extra.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen = vec![best];
    let mut len = cands[best].1.len();
    for (_, i) in extra {
        if chosen.len() == MAX_SENTENCES {
            break;
        }
        let s = &cands[i].1;
        if len + 1 + s.len() > MAX_ANSWER_CHARS || chosen.iter().any(|&c| cands[c].1 == *s) {
            continue;
        }
        len += 1 + s.len();
        chosen.push(i);
    }
    chosen.sort_unstable();
    let text: Vec<&str> = chosen.iter().map(|&i| cands[i].1.as_str()).collect();
    Some(format!("From our help pages: {}", text.join(" ")))
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

    #[test]
    fn stop_words_are_sorted() {
        assert!(STOP.windows(2).all(|w| w[0] < w[1]));
    }

    const SHOP: &str = "[1] Parcels to Canada go with Canada Post via our Toronto partner and usually arrive in 5 to 8 business days. Shipping costs a flat $12 and is free on orders over $150. Prices at checkout include duties and taxes (GST/HST), so nothing is due on delivery.\n\
        [2] | Option | Delivery time | Price | |---|---|---| | Standard (USPS or UPS Ground) | 3-5 business days | $5.95, free on orders over $75 |\n\
        [3] Not quite right? You can send back any unworn, unwashed item with its tags attached within 60 days of delivery.\n\
        [4] Refunds go back to the original payment method. PayPal refunds appear within 24 hours.";

    #[test]
    fn answers_the_question_from_the_best_sentences() {
        let a = answer_from_sources(SHOP, "How long does shipping take to Canada?").unwrap();
        assert!(
            a.starts_with("From our help pages: Parcels to Canada go with Canada Post"),
            "{a}"
        );
        assert!(a.contains("5 to 8 business days"), "{a}");
        assert!(!a.contains("PayPal"), "{a}");
        let a = answer_from_sources(SHOP, "how many days do I have to send an unworn item back?")
            .unwrap();
        assert!(a.contains("within 60 days of delivery"), "{a}");
        let a = answer_from_sources(SHOP, "when do paypal refunds show up").unwrap();
        assert!(a.contains("PayPal refunds appear within 24 hours."), "{a}");
        assert!(!a.contains("Canada"), "{a}");
        // Deterministic, short, whole sentences.
        assert_eq!(
            a,
            answer_from_sources(SHOP, "when do paypal refunds show up").unwrap()
        );
        for q in [
            "shipping",
            "free shipping over",
            "delivery days price",
            "zebra",
        ] {
            let a = answer_from_sources(SHOP, q).unwrap();
            assert!(a.len() <= MAX_ANSWER_CHARS + 40, "{a}");
            assert!(!a.contains('|'), "{a}");
        }
        // A table row is one sentence, its cells joined by commas.
        let table_first = SHOP
            .lines()
            .nth(1)
            .unwrap()
            .trim_start()
            .replacen("[2]", "[1]", 1);
        let a = answer_from_sources(&table_first, "what does standard delivery cost?").unwrap();
        assert!(
            a.contains("Standard (USPS or UPS Ground), 3-5 business days, $5.95"),
            "{a}"
        );
        // No word in common: the first sentence of the best source.
        assert_eq!(
            answer_from_sources(SHOP, "zebra").unwrap(),
            "From our help pages: Parcels to Canada go with Canada Post via our Toronto partner and usually arrive in 5 to 8 business days."
        );
    }

    #[test]
    fn section_labels_guide_but_are_not_quoted() {
        let src = "[1] (Payment options > Paying in installments with Klarna) With Klarna you can split any order over $35 into 4 interest-free payments, every two weeks. The first payment is taken when the order ships.\n\
                   [2] (Refunds > When will I see my money?) Klarna refunds reduce your remaining installments first.";
        let a = answer_from_sources(src, "can I pay in installments?").unwrap();
        assert!(
            a.starts_with("From our help pages: With Klarna you can split"),
            "{a}"
        );
        assert!(!a.contains("Paying in installments"), "{a}");
        assert_eq!(split_label("(A > B) text (x)"), ("A > B", "text (x)"));
        assert_eq!(split_label("(not closed text"), ("", "(not closed text"));
    }

    #[test]
    fn words_and_matching() {
        assert_eq!(
            words("How long does the customer's Shipping take?"),
            ["customer", "shipping"]
        );
        assert!(same_word("ship", "shipping"));
        assert!(same_word("returns", "return"));
        assert!(!same_word("car", "card"));
        assert!(same_word("pay", "payments"));
        assert!(!same_word("pay", "paypal"));
        assert!(!same_word("us", "uses"));
        assert_eq!(sentences("A b. C d? e"), ["A b.", "C d?", "e"]);
        assert_eq!(
            sentences("Send it **within 60 days** of `delivery`."),
            ["Send it within 60 days of delivery."]
        );
        assert_eq!(
            sentences("Prices: | Option | Price | |---|---| | Express | $14.95 | Done."),
            ["Prices:", "Option, Price.", "Express, $14.95.", "Done."]
        );
    }
}
