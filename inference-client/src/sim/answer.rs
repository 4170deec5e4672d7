//! What the simulated model says: a deterministic answer to a chat, split
//! into word-sized tokens.
//!
//! With no knowledge behind it, the answer quotes the visitor's last message.
//! When the system prompt carries a `Sources:` block (a line `Sources:`, then
//! one retrieved chunk per line as `[n] (section) text`, best first, as
//! `knowledge::sources_block` writes it; see [`answer_from_sources`]), the
//! answer is extractive instead: the one to three sentences of the sources
//! that answer the question (the most of its rare words; for "how long",
//! "how much", "what is your phone number" and the like, a sentence holding
//! a duration, a price, a phone number...), so the demo answers real
//! questions from its knowledge base. A short follow-up ("and to Japan?") is
//! read with the visitor's previous message. When the system prompt says the
//! help pages do not cover the question ([`NOT_COVERED`], which the gateway
//! writes below a site's confidence line), the answer says so and offers a
//! person ([`NOT_COVERED_ANSWER`]) instead of quoting anything.

use crate::openai::{ChatMessage, Role};

/// Longest quote of the visitor's message, in characters.
const QUOTE_CHARS: usize = 200;

/// The line a prompt's instructions start with when the site's help pages
/// do not cover the question (the gateway's low-confidence guidance): the
/// simulator then answers [`NOT_COVERED_ANSWER`]. A real model reads the
/// rest of the guidance.
pub const NOT_COVERED: &str = "The site's help pages do not cover this question.";

/// What the simulator answers when the prompt carries [`NOT_COVERED`].
pub const NOT_COVERED_ANSWER: &str = "I'm sorry, our help pages don't cover that, so I \
can't give you a reliable answer. Would you like me to bring in a person from our team?";

/// A question with fewer words than this is read as a follow-up of the
/// visitor's previous message (as the gateway searches it).
const FOLLOW_UP_WORDS: usize = 4;

/// The simulated answer to `messages`.
pub fn compose(messages: &[ChatMessage]) -> String {
    let mut asked = messages.iter().rev().filter(|m| m.role == Role::User);
    let question = asked.next().map_or("", |m| m.content.as_str());
    let previous = asked.next().map(|m| m.content.as_str());
    let system = messages.iter().filter(|m| m.role == Role::System);
    if system.clone().any(|m| m.content.contains(NOT_COVERED)) {
        return NOT_COVERED_ANSWER.to_string();
    }
    let sources = system.clone().find_map(|m| sources_block(&m.content));
    let previous = previous.filter(|_| question.split_whitespace().count() < FOLLOW_UP_WORDS);
    if let Some(a) = sources.and_then(|s| answer_in_context(s, question, previous)) {
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

/// Whether `s` is a bare list number ("2.") rather than a sentence.
fn is_list_number(s: &str) -> bool {
    let s = s.trim();
    s.len() > 1 && s.ends_with('.') && s[..s.len() - 1].chars().all(|c| c.is_ascii_digit())
}

/// A list item's marker at the start of `s` ("- ", "* ", "+ ", "12. "), as
/// its length.
fn list_marker(s: &str) -> Option<usize> {
    if s.starts_with("- ") || s.starts_with("* ") || s.starts_with("+ ") {
        return Some(2);
    }
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && s[digits..].starts_with(". ")).then_some(digits + 2)
}

/// Whether `s` starts with a bullet ("- ", "* ", "+ ").
fn bullet(s: &str) -> bool {
    s.starts_with("- ") || s.starts_with("* ") || s.starts_with("+ ")
}

/// Cuts prose into (sentence, is a list item): after `.`, `!` or `?`
/// followed by a space; and, once a bulleted list has begun (a bullet at the
/// start, or after a sentence or a colon), before every bullet (the items of
/// a Markdown list run together once line breaks are gone). A numbered
/// item's "2." does not end a sentence.
fn split_prose(text: &str, out: &mut Vec<(String, bool)>) {
    let text = text.trim();
    let push = |out: &mut Vec<(String, bool)>, s: &str, item: bool| {
        let s = s.trim();
        let s = list_marker(s).map_or(s, |n| &s[n..]).trim();
        if !s.is_empty() {
            out.push((s.to_string(), item));
        }
    };
    let mut in_list = bullet(text);
    let mut item = list_marker(text).is_some();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        let rest = &text[end..];
        if c == ' ' {
            if in_list && start < i && bullet(rest) {
                push(out, &text[start..i], item);
                start = end;
                item = true;
            }
            continue;
        }
        if !rest.starts_with(' ') {
            continue;
        }
        let next = rest.trim_start();
        let ends_sentence = matches!(c, '.' | '!' | '?') && !is_list_number(&text[start..end]);
        if ends_sentence || c == ':' && bullet(next) {
            push(out, &text[start..end], item);
            start = end;
            item = list_marker(next).is_some();
            in_list |= bullet(next);
        }
    }
    push(out, &text[start..], item);
}

/// Sentences of one source line (see [`split_prose`]), each with whether it
/// is a list item. A Markdown table (its rows run together once the line
/// breaks are gone) gives one "sentence" per row, its cells joined by
/// commas, without the `|---|` rule.
fn marked_sentences(text: &str) -> Vec<(String, bool)> {
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
            out.push((format!("{}.", cells.join(", ")), false));
        }
    }
    split_prose(after, &mut out);
    out.into_iter()
        .map(|(s, item)| {
            let s = s
                .trim_start_matches(['*', '-', ' '])
                .replace("**", "")
                .replace("__", "")
                .replace('`', "");
            (s, item)
        })
        .filter(|(s, _)| s.chars().any(char::is_alphanumeric))
        .collect()
}

/// The sentences of one source line (see [`marked_sentences`]).
#[cfg(test)]
fn sentences(text: &str) -> Vec<String> {
    marked_sentences(text).into_iter().map(|(s, _)| s).collect()
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

/// A kind of fact a question asks for, which a sentence either holds or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wants {
    /// "how long", "how soon", "how many days": a number and a time unit.
    Duration,
    /// "how much", "what does it cost", "fee": a price (or "free").
    Price,
    /// "what is your phone number", "call you": a phone number.
    Phone,
    /// "your email": an email address.
    Email,
    /// "opening hours", "what time", "when is ... open": a clock time.
    Hours,
}

/// What `question` (lower-cased) asks for.
fn wants(question: &str) -> Vec<Wants> {
    let q = question.to_lowercase();
    let has = |ps: &[&str]| ps.iter().any(|p| q.contains(p));
    let mut out = Vec::new();
    if has(&[
        "how long",
        "how soon",
        "how quickly",
        "how many days",
        "how many weeks",
        "how many hours",
        "how fast",
        "delivery time",
    ]) {
        out.push(Wants::Duration);
    }
    if has(&["how much", "cost", "price", " fee", "charge"]) {
        out.push(Wants::Price);
    }
    if has(&[
        "phone number",
        "your phone",
        "call you",
        "telephone",
        "your number",
    ]) {
        out.push(Wants::Phone);
    }
    if has(&[
        "your email",
        "email you",
        "e-mail you",
        "email address for",
        "email for",
    ]) {
        out.push(Wants::Email);
    }
    if has(&[
        "hours",
        "what time",
        "open on",
        "opening",
        "when is",
        "when are",
    ]) && !out.contains(&Wants::Duration)
    {
        out.push(Wants::Hours);
    }
    out
}

const TIME_UNITS: &[&str] = &[
    "minute", "minutes", "hour", "hours", "day", "days", "week", "weeks", "month", "months",
    "year", "years",
];
const NUMBER_WORDS: &[&str] = &[
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "a", "few",
    "same", "next",
];

/// Whether `sentence` holds the kind of fact `w` asks for.
fn holds(sentence: &str, w: Wants) -> bool {
    let lower = sentence.to_lowercase();
    let tokens: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '-')
        .filter(|t| !t.is_empty())
        .collect();
    let numeric =
        |t: &str| t.chars().next().is_some_and(|c| c.is_ascii_digit()) || NUMBER_WORDS.contains(&t);
    match w {
        Wants::Duration => {
            tokens.windows(2).any(|p| {
                numeric(p[0]) && TIME_UNITS.contains(&p[1])
                    || TIME_UNITS.contains(&p[1]) && p[0] == "business"
            }) || tokens
                .windows(3)
                .any(|p| numeric(p[0]) && p[1] == "business" && TIME_UNITS.contains(&p[2]))
        }
        Wants::Price => {
            sentence.contains('$')
                || sentence.contains('€')
                || sentence.contains('£')
                || tokens.iter().any(|t| *t == "free" || *t == "nothing")
        }
        Wants::Phone => {
            let mut run = 0;
            let mut longest = 0;
            for c in sentence.chars() {
                if c.is_ascii_digit() {
                    run += 1;
                    longest = longest.max(run);
                } else if !matches!(c, '-' | ' ' | '(' | ')' | '.') {
                    run = 0;
                }
            }
            longest >= 7
        }
        Wants::Email => sentence.contains('@'),
        Wants::Hours => tokens
            .windows(2)
            .any(|p| p[0].chars().all(|c| c.is_ascii_digit()) && matches!(p[1], "am" | "pm")),
    }
}

/// The question's content words with their weight: 1 for the visitor's
/// newest message, 1/2 for words only in the previous one (a follow-up's
/// context).
fn weighted_terms(question: &str, previous: Option<&str>) -> Vec<(String, f64)> {
    let mut q: Vec<(String, f64)> = Vec::new();
    for (text, weight) in [(Some(question), 1.0), (previous, 0.5)] {
        for w in words(text.unwrap_or_default()) {
            if !q.iter().any(|(t, _)| *t == w) {
                q.push((w, weight));
            }
        }
    }
    q
}

/// Factor for a sentence that holds what the question asks for, and for
/// one that does not (when the question asks for something).
const HOLDS_FACTOR: f64 = 1.5;
const LACKS_FACTOR: f64 = 0.6;

/// The answer built from retrieved sources (the knowledge base's seam), for
/// `question` alone; see [`answer_in_context`].
pub fn answer_from_sources(sources: &str, question: &str) -> Option<String> {
    answer_in_context(sources, question, None)
}

/// The answer built from retrieved sources for `question`, a follow-up of
/// `previous` when that is given (its words count half, and what it asks
/// for, such as a duration, carries over).
///
/// `sources` is the text after the `Sources:` line: one source per line,
/// best first, each `[n] (section) text`. The `[n]` marker and the
/// parenthesised section label (the chunk's title and heading path, as
/// `knowledge::sources_block` writes them) are optional; a source's own line
/// breaks are replaced by spaces.
///
/// Every sentence (a Markdown list gives one per item, a table one per row)
/// is scored by the question's words it contains (a word only in its
/// section label counts half, fully for a list item, whose heading is what
/// the list is about), each weighted by its rarity among the sentences
/// (`ln(1 + N / df)`), divided by its length in words to the power
/// [`LENGTH_EXPONENT`], with a bonus for higher-ranked sources (x1.5 for the
/// first, x1.25 for the second, ...: retrieval already ranked them). When
/// the question asks for a kind of fact ([`Wants`]: a duration, a price, a
/// phone number, an email address, opening hours), sentences holding one
/// score x1.5 and the others x0.6, and if none of the chosen sentences holds
/// one, the best sentence of the best one's source that does is added. The
/// best sentence and up to two more make the answer, in the sources' order:
/// sentences of the best one's source that score at least half as well,
/// then those of other sources that score at least nine tenths as well,
/// within [`MAX_ANSWER_CHARS`]. Labels are not quoted, except a list item's
/// own heading before it ("What cannot be returned: Items marked Final
/// Sale."). With no word in common, the first sentence of the first source.
/// `None` when the block is empty. Deterministic.
pub fn answer_in_context(sources: &str, question: &str, previous: Option<&str>) -> Option<String> {
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
    struct Cand {
        rank: usize,
        text: String,
        item: bool,
        heading: String,
        words: Vec<String>,
        label: Vec<String>,
    }
    let cands: Vec<Cand> = lines
        .iter()
        .enumerate()
        .flat_map(|(rank, (label, text))| {
            let heading = label.rsplit(" > ").next().unwrap_or_default().to_string();
            let label = words(label);
            marked_sentences(text)
                .into_iter()
                .map(move |(s, item)| Cand {
                    rank,
                    words: words(&s),
                    text: s,
                    item,
                    heading: heading.clone(),
                    label: label.clone(),
                })
        })
        .collect();
    let first = cands.first()?.text.clone();
    let q = weighted_terms(question, previous);
    let mut want = wants(question);
    if let Some(p) = previous {
        for w in wants(p) {
            if !want.contains(&w) {
                want.push(w);
            }
        }
    }
    let n = cands.len() as f64;
    let idf: Vec<f64> = q
        .iter()
        .map(|(t, _)| {
            let df = cands
                .iter()
                .filter(|c| c.words.iter().chain(&c.label).any(|w| same_word(w, t)))
                .count()
                .max(1);
            (1.0 + n / df as f64).ln()
        })
        .collect();
    let holds_any = |c: &Cand| want.iter().any(|&w| holds(&c.text, w));
    let scores: Vec<f64> = cands
        .iter()
        .map(|c| {
            let label_share = if c.item { 1.0 } else { 0.5 };
            let matched: f64 = q
                .iter()
                .zip(&idf)
                .map(|((t, weight), i)| {
                    if c.words.iter().any(|w| same_word(w, t)) {
                        i * weight
                    } else if c.label.iter().any(|w| same_word(w, t)) {
                        i * weight * label_share
                    } else {
                        0.0
                    }
                })
                .sum();
            let intent = match (want.is_empty(), holds_any(c)) {
                (true, _) => 1.0,
                (false, true) => HOLDS_FACTOR,
                (false, false) => LACKS_FACTOR,
            };
            matched / (c.words.len().max(1) as f64).powf(LENGTH_EXPONENT)
                * (1.0 + 0.5 / (1 + c.rank) as f64)
                * intent
        })
        .collect();
    let mut order: Vec<usize> = (0..cands.len()).collect();
    // Best first; ties to the earlier source and sentence.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut best = order[0];
    if scores[best] == 0.0 {
        return Some(format!("From our help pages: {first}"));
    }
    if !want.is_empty() && !holds_any(&cands[best]) {
        // The best match lacks the fact asked for and its source has none:
        // a sentence of another source that holds it and matches half as
        // well answers better ("what is your phone number?": the number,
        // not a privacy page listing what is stored).
        let same_source =
            (0..cands.len()).any(|i| cands[i].rank == cands[best].rank && holds_any(&cands[i]));
        if !same_source {
            if let Some(&h) = order
                .iter()
                .find(|&&i| holds_any(&cands[i]) && scores[i] >= 0.5 * scores[best])
            {
                best = h;
            }
        }
    }
    let mut extra: Vec<(f64, usize)> = order
        .iter()
        .filter(|&&i| i != best)
        .filter_map(|&i| {
            let same = cands[i].rank == cands[best].rank;
            let need = if same { 0.5 } else { 0.9 };
            // A sentence without the fact asked for adds nothing.
            let relevant = want.is_empty() || holds_any(&cands[i]);
            (relevant && scores[i] > 0.0 && scores[i] >= need * scores[best])
                .then_some((scores[i] * if same { 1.5 } else { 1.0 }, i))
        })
        .collect();
    extra.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen = vec![best];
    let mut len = cands[best].text.len();
    for (_, i) in extra {
        if chosen.len() == MAX_SENTENCES {
            break;
        }
        let s = &cands[i].text;
        if len + 1 + s.len() > MAX_ANSWER_CHARS || chosen.iter().any(|&c| cands[c].text == *s) {
            continue;
        }
        len += 1 + s.len();
        chosen.push(i);
    }
    if !want.is_empty() && !chosen.iter().any(|&i| holds_any(&cands[i])) {
        // The question asks for a fact none of the chosen sentences holds:
        // the best-scoring sentence of the best source that holds one (the
        // nearest to the best sentence on a tie), else none.
        let holder = (0..cands.len())
            .filter(|&i| cands[i].rank == cands[best].rank && holds_any(&cands[i]))
            .max_by(|&a, &b| {
                scores[a]
                    .total_cmp(&scores[b])
                    .then(b.abs_diff(best).cmp(&a.abs_diff(best)))
            });
        if let Some(h) = holder {
            if chosen.len() == MAX_SENTENCES {
                chosen.pop();
            }
            chosen.push(h);
        }
    }
    chosen.sort_unstable();
    // A list item means little without what the list is about: items are
    // quoted after their heading, consecutive ones of a list together.
    let mut text: Vec<String> = Vec::new();
    let mut list: Option<(usize, &str)> = None;
    for &i in &chosen {
        let c = &cands[i];
        let labelled = c.text.chars().take(40).any(|ch| ch == ':');
        if !c.item || c.heading.is_empty() || labelled {
            text.push(c.text.clone());
            list = None;
            continue;
        }
        let t = c.text.trim_end_matches(['.', ';', ',']);
        match (list, text.last_mut()) {
            (Some((rank, heading)), Some(last)) if rank == c.rank && heading == c.heading => {
                last.pop();
                last.push_str(&format!("; {t}."));
            }
            _ => {
                text.push(format!("{}: {t}.", c.heading));
                list = Some((c.rank, c.heading.as_str()));
            }
        }
    }
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

    // The demo's sources as the knowledge base gives them for four questions
    // the demo answered wrongly (issue 12): the reader must find the
    // sentence that answers, wherever it is among the sources.
    const DEMO_PHONE: &str = r#"[1] (Privacy, data and emails > What we collect) We keep what we need to run your orders: your name, addresses, email, phone number, order history and, if you save a card, a token from our payment provider. We never see or store your full card number. We never sell personal data.
[2] (Contacting Fernhill customer care) Email support@fernhill.example and we reply within one business day, usually sooner. Phone: 1-800-555-0148, Monday to Friday 9 am to 6 pm Eastern Time. We do not take orders over the phone, but we can help with any order you placed online.
[3] (Your account > Changing your email address or name) Under Account > Profile you can change your name, email address and phone number. A new email address must be confirmed with the link we send to it before it is used for sign-in.
[4] (Orders and tracking > Order status) - **Received:** we have your order and the payment is authorised. - **Processing:** the order is being picked and packed. - **Shipped:** the parcel has left the warehouse and you have a tracking number. - **Delivered:** the carrier confirmed delivery.
[5] (Your account > Two-step verification) You can turn on two-step verification under Account > Security. We support authenticator apps and text messages. Keep the backup codes we show you: if you lose your phone, a backup code is the only way in without contacting support."#;
    const DEMO_SALE: &str = r#"[1] (Returns and exchanges > What cannot be returned) - Items marked Final Sale on the product page - Personalised or monogrammed items - Underwear and socks once their hygiene seal is broken - Gift cards
[2] (Returns and exchanges > Holiday returns) Items bought between November 1 and December 24 can be returned until January 31 of the next year.
[3] (Refunds | Fernhill Supply Co. > Refunds > What is refunded) We refund the price you paid for the returned items and the sales tax on them. The original shipping charge is not refunded unless the item arrived damaged, was defective, or we sent the wrong item. Express and Overnight upgrades are never refunded for a return.
[4] (Returns and exchanges > Returning a gift) If you received the item as a gift, use the gift receipt number in the returns portal. The refund goes to the person who received the gift as Fernhill store credit, and the buyer is not told.
[5] (Returns and exchanges) Not quite right? You can send back any unworn, unwashed item with its tags attached within **60 days** of delivery. Footwear must be returned in its original box and must not have been worn outdoors."#;
    const DEMO_JAPAN: &str = r#"[1] (Shipping and delivery > International shipping) We ship to the United Kingdom, the European Union, Norway, Switzerland, Australia, New Zealand and Japan. International delivery takes 7 to 14 business days and costs $25 flat, whatever the size of the order.
[2] (Shipping and delivery > Shipping to Canada) Parcels to Canada go with Canada Post via our Toronto partner and usually arrive in 5 to 8 business days. Shipping costs a flat $12 and is free on orders over $150. Prices at checkout include duties and taxes (GST/HST), so nothing is due on delivery.
[3] (Shipping and delivery > Delivery options in the United States > Alaska, Hawaii and Puerto Rico) We ship to Alaska, Hawaii and Puerto Rico with Standard shipping only. Allow 6-10 business days. The free shipping threshold applies there too.
[4] (Shipping and delivery > International shipping) We cannot ship to other countries yet, nor to freight forwarders.
[5] (Shipping and delivery > Delivery options in the United States > PO boxes and military addresses) Standard shipping can go to PO boxes and to APO/FPO/DPO military addresses. Express and Overnight need a street address because UPS does not deliver to PO boxes. Military addresses take 7 to 21 days."#;

    #[test]
    fn a_phone_number_question_gets_the_number_not_the_privacy_page() {
        let a = answer_from_sources(DEMO_PHONE, "what is your phone number?").unwrap();
        assert_eq!(
            a,
            "From our help pages: Phone: 1-800-555-0148, Monday to Friday 9 am to 6 pm Eastern Time."
        );
        // Lexical retrieval ranks the contact page lower: the same answer.
        let lines: Vec<&str> = DEMO_PHONE.lines().collect();
        let lexical = [lines[0], lines[2], lines[3], lines[1]].join("\n");
        let a = answer_from_sources(&lexical, "what is your phone number?").unwrap();
        assert!(a.contains("1-800-555-0148"), "{a}");
        assert!(!a.contains("We keep what we need"), "{a}");
    }

    #[test]
    fn sale_items_get_the_list_of_what_cannot_be_returned() {
        let a = answer_from_sources(DEMO_SALE, "can I return sale items?").unwrap();
        assert!(
            a.starts_with(
                "From our help pages: What cannot be returned: Items marked Final Sale on the product page"
            ),
            "{a}"
        );
        assert!(!a.contains("sales tax"), "{a}");
    }

    #[test]
    fn a_follow_up_keeps_what_the_first_question_asked() {
        let m = [
            ChatMessage::new(Role::System, format!("Be brief.\n\nSources:\n{DEMO_JAPAN}")),
            ChatMessage::new(Role::User, "how long does shipping to Canada take?"),
            ChatMessage::new(Role::Assistant, "5 to 8 business days."),
            ChatMessage::new(Role::User, "and to Japan?"),
        ];
        let a = compose(&m);
        assert!(a.contains("7 to 14 business days"), "{a}");
        assert!(!a.contains("5 to 8"), "{a}");
        // Alone, "and to Japan?" asks for no duration: where it ships is enough.
        let alone = answer_from_sources(DEMO_JAPAN, "and to Japan?").unwrap();
        assert!(alone.contains("and Japan."), "{alone}");
        // A long question is not a follow-up: the previous one is not read.
        let m = [
            ChatMessage::new(Role::System, format!("Sources:\n{DEMO_JAPAN}")),
            ChatMessage::new(Role::User, "how long does shipping to Canada take?"),
            ChatMessage::new(
                Role::User,
                "which countries outside America do you ship to?",
            ),
        ];
        assert!(!compose(&m).contains("business days"), "{}", compose(&m));
    }

    #[test]
    fn not_covered_guidance_gets_the_not_covered_answer() {
        let m = [
            ChatMessage::new(
                Role::System,
                format!("You help.\n\n{NOT_COVERED} Say so and offer a person."),
            ),
            ChatMessage::new(Role::User, "who painted the Mona Lisa?"),
        ];
        assert_eq!(compose(&m), NOT_COVERED_ANSWER);
        assert!(NOT_COVERED_ANSWER.contains("person"));
    }

    #[test]
    fn questions_that_ask_for_a_kind_of_fact() {
        assert_eq!(wants("How long does it take?"), [Wants::Duration]);
        assert_eq!(wants("how much is express?"), [Wants::Price]);
        assert_eq!(wants("what is your phone number?"), [Wants::Phone]);
        assert_eq!(wants("what's your email for support?"), [Wants::Email]);
        assert_eq!(wants("what are your chat hours?"), [Wants::Hours]);
        assert!(wants("I lost my phone and can't sign in").is_empty());
        assert!(wants("can I return sale items?").is_empty());
        assert!(holds(
            "usually arrive in 5 to 8 business days.",
            Wants::Duration
        ));
        assert!(holds("It takes two weeks.", Wants::Duration));
        assert!(!holds("We ship to Japan.", Wants::Duration));
        assert!(holds("Phone: 1-800-555-0148, Monday", Wants::Phone));
        assert!(!holds(
            "your name, phone number and 2 addresses",
            Wants::Phone
        ));
        assert!(holds("from 8 am to 8 pm", Wants::Hours));
        assert!(holds("Shipping costs a flat $12.", Wants::Price));
    }

    #[test]
    fn lists_give_one_sentence_per_item() {
        assert_eq!(
            marked_sentences("- Items marked Final Sale - Gift cards"),
            [
                ("Items marked Final Sale".to_string(), true),
                ("Gift cards".to_string(), true)
            ]
        );
        assert_eq!(
            sentences("Status: - **Received:** we have it. - **Shipped:** it left."),
            ["Status:", "Received: we have it.", "Shipped: it left."]
        );
        assert_eq!(
            sentences("1. Go to fernhill.example/returns. 2. Select the items. Then wait."),
            [
                "Go to fernhill.example/returns.",
                "Select the items.",
                "Then wait."
            ]
        );
        // A dash in running prose is not a list.
        assert_eq!(
            sentences("Fast - and free. Done."),
            ["Fast - and free.", "Done."]
        );
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
