//! Grounded answers: what a site's knowledge base adds to a turn.
//!
//! The sans-IO part lives here: the search query for a visitor's message,
//! the sources and confidence a search yields, and how they enter the prompt.
//! The knowledge bases themselves (opened, reloaded, searched, written) are
//! in [`library`], their admin HTTP API in [`api`], where vectors come from in
//! [`embedder`], the demo site's built-in help pages in [`demo`], and how
//! fast the retrieval threads go (for admission) in [`pace`]. The
//! server runs all of it on its retrieval threads, never on a worker: a
//! query embedding costs milliseconds of CPU.

pub mod api;
pub mod demo;
pub mod embedder;
pub mod library;
pub mod pace;

use knowledge::Hit;

use crate::chat::server::Source;
use crate::session::prompt::{PromptMessage, Role};

/// Confidence reported for an answer no knowledge base could ground (the site
/// has none): neither sure nor unsure, so only a site threshold above it
/// hands such answers to a person.
pub const UNGROUNDED_CONFIDENCE: f32 = 0.5;

/// What the model is told before the sources.
const GUIDANCE: &str = "Answer from the numbered sources below. If they do not \
hold the answer, say so plainly and offer to bring in a person; never make up \
facts, prices or dates.";

/// What the model is told when the knowledge base has nothing on the
/// question, or nothing it is confident enough in (below the site's
/// `human_below_confidence`): it starts with the line the inference
/// simulator recognises ([`inference_client::sim::answer::NOT_COVERED`]),
/// and asks a real model for the same answer the simulator gives.
fn not_covered() -> String {
    format!(
        "{} Do not answer it from general knowledge and do not guess: say \
         plainly that the help pages do not cover it, and offer to bring in a \
         person from the team. Never make up facts, prices or dates.",
        inference_client::sim::answer::NOT_COVERED
    )
}

/// What retrieval found for one question.
#[derive(Debug, Clone, PartialEq)]
pub struct Grounding {
    /// The chunks given to the model, best first, as `done.sources` names them.
    pub sources: Vec<Source>,
    /// 0 to 1, from the retrieval scores (the knowledge base's calibration).
    pub confidence: f32,
    /// The prompt's `Sources:` block (empty with no hits).
    block: String,
}

impl Grounding {
    /// The grounding for `hits` (best first) with the knowledge base's
    /// `confidence` in them.
    pub fn from_hits(hits: &[Hit], confidence: f32) -> Grounding {
        Grounding {
            sources: hits
                .iter()
                .map(|h| Source {
                    chunk: h.chunk_id.clone(),
                    title: h.title.clone(),
                    url: h.url.clone(),
                    score: round3(h.score),
                })
                .collect(),
            confidence: round3(confidence.clamp(0.0, 1.0)),
            block: knowledge::sources_block(hits),
        }
    }

    /// This grounding for a site that hands answers below `human_below`
    /// confidence to a person: below it, the sources are dropped (neither
    /// quoted nor cited: the nearest passage of an unrelated page answers
    /// nothing) and [`Grounding::apply`] tells the model that the help pages
    /// do not cover the question and to offer a person. The confidence
    /// stays, so the reply is still offered to a person.
    pub fn below(mut self, human_below: f32) -> Grounding {
        if self.confidence < human_below {
            self.sources.clear();
            self.block.clear();
        }
        self
    }

    /// Whether the answer will say the help pages do not cover the question
    /// (no sources to answer from).
    pub fn not_covered(&self) -> bool {
        self.block.is_empty()
    }

    /// Adds the guidance and the sources to the end of the prompt's system
    /// message (the `Sources:` block must end it: everything after its first
    /// line is read as sources); with no sources, the not-covered guidance.
    pub fn apply(&self, prompt: &mut Vec<PromptMessage>) {
        let addition = if self.block.is_empty() {
            not_covered()
        } else {
            format!("{GUIDANCE}\n\n{}", self.block.trim_end())
        };
        match prompt.first_mut().filter(|m| m.role == Role::System) {
            Some(system) => {
                system.content.push_str("\n\n");
                system.content.push_str(&addition);
            }
            None => prompt.insert(
                0,
                PromptMessage {
                    role: Role::System,
                    content: addition,
                },
            ),
        }
    }
}

/// Tokens to keep back in a prompt for `top_k` sources of chunks up to
/// `max_chars` characters (about four characters a token, plus the label and
/// the guidance).
pub fn allowance(top_k: usize, max_chars: usize) -> u32 {
    let per_chunk = max_chars / 4 + 24;
    (top_k * per_chunk + 64).min(u32::MAX as usize) as u32
}

/// Scores and confidence go on the wire with three decimals: more is noise.
fn round3(x: f32) -> f32 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32, text: &str) -> Hit {
        Hit {
            chunk_id: id.into(),
            doc: "help/shipping.md".into(),
            title: "Shipping".into(),
            url: "help/shipping.md".into(),
            heading_path: vec!["Canada".into()],
            text: text.into(),
            score,
        }
    }

    #[test]
    fn sources_and_confidence_come_from_the_hits() {
        let g = Grounding::from_hits(
            &[
                hit("c1", 0.81234, "Parcels to Canada take 5 to 8 days."),
                hit("c2", 0.4, "Other."),
            ],
            0.912345,
        );
        assert_eq!(g.sources.len(), 2);
        assert_eq!(g.sources[0].chunk, "c1");
        assert_eq!(g.sources[0].url, "help/shipping.md");
        assert_eq!(g.sources[0].score, 0.812);
        assert_eq!(g.confidence, 0.912);
    }

    #[test]
    fn the_sources_block_ends_the_system_message() {
        let g = Grounding::from_hits(
            &[hit("c1", 0.8, "Parcels to Canada take 5 to 8 days.")],
            0.9,
        );
        let mut prompt = vec![
            PromptMessage {
                role: Role::System,
                content: "You help.".into(),
            },
            PromptMessage {
                role: Role::User,
                content: "Canada?".into(),
            },
        ];
        g.apply(&mut prompt);
        let system = &prompt[0].content;
        assert!(system.starts_with("You help.\n\nAnswer from the numbered sources"));
        assert!(
            system
                .ends_with("Sources:\n[1] (Shipping > Canada) Parcels to Canada take 5 to 8 days."),
            "{system}"
        );
        assert_eq!(prompt.len(), 2);
        // The simulator reads exactly this shape.
        let answer = inference_client::sim::answer::compose(&[
            inference_client::ChatMessage::new(inference_client::Role::System, system.clone()),
            inference_client::ChatMessage::new(inference_client::Role::User, "how long to Canada?"),
        ]);
        assert!(answer.contains("5 to 8 days"), "{answer}");
    }

    #[test]
    fn nothing_found_says_so_without_a_sources_block() {
        let g = Grounding::from_hits(&[], 0.0);
        assert!(g.sources.is_empty());
        assert_eq!(g.confidence, 0.0);
        let mut prompt = vec![PromptMessage {
            role: Role::User,
            content: "What is the airspeed of a swallow?".into(),
        }];
        g.apply(&mut prompt);
        assert_eq!(prompt[0].role, Role::System);
        assert!(prompt[0].content.contains("do not cover this question"));
        assert!(!prompt[0].content.contains("Sources:"));
    }

    fn ask_sim(prompt: &[PromptMessage]) -> String {
        let messages: Vec<inference_client::ChatMessage> = prompt
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::System => inference_client::Role::System,
                    Role::User => inference_client::Role::User,
                    Role::Assistant => inference_client::Role::Assistant,
                };
                inference_client::ChatMessage::new(role, m.content.clone())
            })
            .collect();
        inference_client::sim::answer::compose(&messages)
    }

    #[test]
    fn below_the_sites_line_the_answer_says_the_pages_do_not_cover_it() {
        let nearest = || {
            Grounding::from_hits(
                &[hit(
                    "c1",
                    0.06,
                    "Take photos of the damaged item and of the box.",
                )],
                0.0,
            )
        };
        let mut prompt = vec![
            PromptMessage {
                role: Role::System,
                content: "You help.".into(),
            },
            PromptMessage {
                role: Role::User,
                content: "who painted the Mona Lisa?".into(),
            },
        ];
        // Without a line (0): the nearest passage is still given.
        let g = nearest().below(0.0);
        assert!(!g.not_covered());
        assert_eq!(g.sources.len(), 1);
        // Below the site's line: no source, the not-covered guidance, and the
        // simulator honours it.
        let g = nearest().below(0.35);
        assert!(g.not_covered());
        assert!(g.sources.is_empty());
        assert_eq!(g.confidence, 0.0);
        g.apply(&mut prompt);
        let system = &prompt[0].content;
        assert!(system.contains("do not cover this question"), "{system}");
        assert!(system.contains("offer to bring in a"), "{system}");
        assert!(!system.contains("Sources:"), "{system}");
        let answer = ask_sim(&prompt);
        assert_eq!(answer, inference_client::sim::answer::NOT_COVERED_ANSWER);
        assert!(!answer.contains("damaged"), "{answer}");
        // At or above the line, the sources stay.
        let g = Grounding::from_hits(&[hit("c1", 0.5, "Parcels take 5 days.")], 0.35).below(0.35);
        assert!(!g.not_covered());
    }

    #[test]
    fn the_allowance_covers_five_full_chunks() {
        // 1000-character chunks: about 250 tokens each.
        let a = allowance(5, 1000);
        assert!((1300..=1500).contains(&a), "{a}");
    }
}
