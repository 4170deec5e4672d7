//! Recognises a visitor's typed request for a person ("I want to talk to a
//! human", "kann ich mit einem Mitarbeiter sprechen?"), so that it is handed
//! to the desk exactly as the widget's "Talk to a person" button is, with no
//! AI answer first.
//!
//! Built in: English, German, French, Spanish, Italian, Portuguese and
//! Dutch. A site adds its own phrases through `[[sites.ID.handoff]]` keyword
//! rules. The test is deliberately narrow: a verb of speaking or reaching
//! followed closely by a word for a person ("speak ... a human"), a wish for
//! one ("I want a real person"), or a message that is little more than such
//! a word ("agent please"). A person word alone ("is the person size chart
//! accurate?") or a negated request ("I don't need a human") stays with the
//! AI.

/// Verbs of speaking, reaching or being passed on, as word stems (long
/// enough not to begin other words: "pas" would begin "password").
const VERBS: &[&str] = &[
    // English
    "talk",
    "speak",
    "spoke",
    "chat",
    "connect",
    "transfer",
    "reach",
    "contact",
    // German
    "sprech",
    "sprich",
    "reden",
    "chatt",
    "verbind",
    "erreich",
    "kontaktier",
    // French
    "parler",
    "parle",
    "discuter",
    "joindre",
    "contacter",
    "passer",
    "passez",
    // Spanish
    "hablar",
    "hablo",
    "hable",
    "chatear",
    "comunicar",
    "contactar",
    "pasar",
    "pasame",
    // Italian
    "parlare",
    "parlo",
    "parli",
    "chattare",
    "contattare",
    "passare",
    "passami",
    // Portuguese
    "falar",
    "falo",
    "fale",
    "conversar",
    "contatar",
    "contactar",
    "passar",
    // Dutch
    "praten",
    "praat",
    "spreken",
    "spreek",
    "chatten",
    "bellen",
    "doorverbind",
];

/// German and Dutch verbs that close a clause, the person just before them.
const VERB_LAST: &[&str] = &[
    "sprechen", "reden", "chatten", "spreken", "praten", "bellen",
];

/// Verbs of wanting ("I want / need / would like a person"), as stems.
const WANTS: &[&str] = &[
    "want", "need", "like", "get", "prefer", // English
    "mocht", "brauch", "hatte", "will", "wunsch", // German
    "veux", "voudrais", "besoin", "souhait", // French
    "quiero", "necesito", "quisiera", "prefier", // Spanish
    "voglio", "vorrei", "bisogno", // Italian
    "quero", "preciso", "gostaria", "queria", // Portuguese
    "wil", "zou", // Dutch
];

/// Words for a person who could take over, whole words after folding.
const PEOPLE: &[&str] = &[
    // English
    "human",
    "person",
    "someone",
    "somebody",
    "agent",
    "representative",
    "rep",
    "operator",
    "staff",
    "employee",
    "humans",
    "people",
    "advisor",
    "adviser",
    // German
    "mensch",
    "menschen",
    "mitarbeiter",
    "mitarbeiterin",
    "mitarbeitenden",
    "jemand",
    "jemandem",
    "berater",
    "beraterin",
    "kundenberater",
    "servicemitarbeiter",
    "person",
    // French
    "humain",
    "personne",
    "quelqu",
    "conseiller",
    "conseillere",
    "operateur",
    "operatrice",
    // Spanish
    "humano",
    "persona",
    "alguien",
    "agente",
    "asesor",
    "asesora",
    "operador",
    "operadora",
    "representante",
    // Italian
    "umano",
    "qualcuno",
    "operatore",
    "consulente",
    // Portuguese
    "pessoa",
    "alguem",
    "atendente",
    "consultor",
    "consultora",
    // Dutch
    "mens",
    "medewerker",
    "medewerkster",
    "persoon",
    "iemand",
];

/// Words that make a short message a request on their own ("human!").
const STRONG: &[&str] = &[
    "human",
    "agent",
    "operator",
    "representative",
    "mensch",
    "mitarbeiter",
    "humain",
    "conseiller",
    "humano",
    "agente",
    "asesor",
    "umano",
    "operatore",
    "atendente",
    "medewerker",
];

/// Negations that turn a request round ("I don't want a human").
const NOT: &[&str] = &[
    "not", "dont", "cant", "wont", "didnt", "doesnt", "no", "never", "nicht", "kein", "keinen",
    "keine", "pas", "jamais", "nunca", "non", "nao", "niet", "geen",
];

/// The fillers a short request may carry ("a human please").
const FILLERS: &[&str] = &[
    "a",
    "an",
    "the",
    "please",
    "pls",
    "plz",
    "now",
    "real",
    "live",
    "actual",
    "bitte",
    "jetzt",
    "ein",
    "einen",
    "svp",
    "un",
    "une",
    "por",
    "favor",
    "per",
    "favore",
    "um",
    "uma",
    "een",
    "alstublieft",
    "aub",
    "graag",
];

/// How many words after a verb the person may come ("speak to a real, live
/// person" is six).
const REACH: usize = 6;

/// Folds case and the accents of the seven languages, and splits on
/// everything that is not a letter or digit.
fn words(text_lower: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut w = String::new();
    for c in text_lower.chars() {
        let folded = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
            'ç' => "c",
            'è' | 'é' | 'ê' | 'ë' => "e",
            'ì' | 'í' | 'î' | 'ï' => "i",
            'ñ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' => "o",
            'ù' | 'ú' | 'û' | 'ü' => "u",
            'ß' => "ss",
            // "don't" is one word, "quelqu'un" two.
            '\'' | '’' if ["don", "can", "won", "didn", "doesn"].contains(&w.as_str()) => "",
            c if c.is_alphanumeric() => {
                w.push(c);
                continue;
            }
            _ => {
                if !w.is_empty() {
                    out.push(std::mem::take(&mut w));
                }
                continue;
            }
        };
        w.push_str(folded);
    }
    if !w.is_empty() {
        out.push(w);
    }
    out
}

fn stem_in(word: &str, stems: &[&str]) -> bool {
    stems.iter().any(|s| word.starts_with(s))
}

fn person(word: &str) -> bool {
    PEOPLE.contains(&word)
}

/// Whether a negation stands in the three words before position `i`.
fn negated(ws: &[String], i: usize) -> bool {
    ws[i.saturating_sub(3)..i]
        .iter()
        .any(|w| NOT.contains(&w.as_str()))
}

/// Whether the visitor's message (lowercased) asks for a person.
pub fn asks_for_person(text_lower: &str) -> bool {
    let ws = words(text_lower);
    if ws.is_empty() || ws.len() > 40 {
        return false;
    }
    // "human", "agent please", "a real person now".
    let rest: Vec<&String> = ws
        .iter()
        .filter(|w| !FILLERS.contains(&w.as_str()))
        .collect();
    if rest.len() == 1 && (STRONG.contains(&rest[0].as_str()) || rest[0] == "person") {
        return true;
    }
    for (i, w) in ws.iter().enumerate() {
        // "is there a human (I can talk to)?"
        if w == "there" && i > 0 && ws[i - 1] == "is" {
            let window = &ws[i + 1..ws.len().min(i + 4)];
            if let Some(j) = window.iter().position(|n| person(n)) {
                if wished_for(window, j) {
                    return true;
                }
            }
        }
        let verb = stem_in(w, VERBS) || (w == "put" && ws.get(i + 1).is_some_and(|n| n == "me"));
        let want = stem_in(w, WANTS);
        if !(verb || want) || negated(&ws, i) {
            continue;
        }
        let window = &ws[i + 1..ws.len().min(i + 1 + REACH)];
        if let Some(j) = window.iter().position(|n| person(n)) {
            // A wish must be for the person itself ("I want a human"), not
            // for something of theirs ("I want the person size chart").
            if verb || wished_for(window, j) {
                return true;
            }
        }
        // German and Dutch put the verb last: "mit einem Menschen sprechen",
        // "kan ik iemand spreken?".
        let before = &ws[i.saturating_sub(REACH)..i];
        if verb && with_person_before(before) {
            return true;
        }
        if stem_in(w, VERB_LAST) && before.iter().rev().take(2).any(|n| person(n)) {
            return true;
        }
    }
    false
}

/// Whether the person at `j` of the words after a wish is what is wished
/// for, not a thing of theirs.
fn wished_for(window: &[String], j: usize) -> bool {
    let next = window.get(j + 1).map(String::as_str);
    j <= 3 && next.is_none_or(|n| FILLERS.contains(&n) || is_tail(n))
}

/// "mit einem Mitarbeiter", "met een medewerker": a person after "with".
fn with_person_before(before: &[String]) -> bool {
    before.iter().enumerate().any(|(k, w)| {
        (w == "mit" || w == "met") && before[k + 1..].iter().take(3).any(|n| person(n))
    })
}

/// Words that may follow a wished-for person without making it a thing
/// ("a human to help", "a person about my order").
fn is_tail(word: &str) -> bool {
    const TAILS: &[&str] = &[
        "to", "about", "for", "who", "that", "instead", "please", "zu", "der", "die", "fur",
        "uber", "pour", "qui", "sur", "que", "para", "sobre", "per", "che", "om", "die", "voor",
        "over", "and", "und", "et", "y", "e", "en", "now", "i", "we", "here",
    ];
    TAILS.contains(&word)
}

#[cfg(test)]
mod tests {
    use super::asks_for_person;

    fn asks(s: &str) -> bool {
        asks_for_person(&s.to_lowercase())
    }

    #[test]
    fn english_requests() {
        for s in [
            "I want to talk to a person",
            "can I speak to a human about my refund?",
            "Can I talk to someone please",
            "let me chat with a real person",
            "connect me to an agent",
            "I need a human",
            "I'd like to speak with a representative",
            "transfer me to a live agent",
            "put me through to a person",
            "HUMAN!",
            "agent please",
            "a real person now",
            "Is there a human I can talk to?",
            "I want a human to help me",
        ] {
            assert!(asks(s), "{s}");
        }
    }

    #[test]
    fn other_languages() {
        for s in [
            "Ich möchte mit einem Menschen sprechen",
            "Kann ich bitte mit einem Mitarbeiter reden?",
            "Je veux parler à un humain",
            "Puis-je parler à une personne ?",
            "je voudrais parler à quelqu'un",
            "Quiero hablar con una persona",
            "¿Puedo hablar con un agente?",
            "Vorrei parlare con un operatore",
            "posso parlare con una persona?",
            "Quero falar com um atendente",
            "Posso falar com uma pessoa?",
            "Ik wil met een medewerker praten",
            "Kan ik iemand spreken?",
            "mensch bitte",
        ] {
            assert!(asks(s), "{s}");
        }
    }

    #[test]
    fn near_misses_stay_with_the_ai() {
        for s in [
            "is the person size chart accurate?",
            "what do you do with my personal data?",
            "How long does shipping to Canada take?",
            "I want the person size chart",
            "I don't want to talk to a human",
            "no need to speak to an agent, thanks",
            "personne ne répond au téléphone",
            "can my friend return the jacket for me?",
            "is a travel agent allowed to order for a group?",
            "is there a person size chart?",
            "can I redeem a gift card for someone else?",
            "how many people work at the warehouse?",
            "",
            "the agent told me yesterday the parcel was lost and I would like to know when the refund arrives",
        ] {
            assert!(!asks(s), "{s}");
        }
    }
}
