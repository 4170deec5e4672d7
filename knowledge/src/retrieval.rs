//! Retrieval: how a query is ranked against a knowledge base's chunks, what
//! a [`Hit`]'s score means, and how scores become a [`confidence`].
//!
//! Three [`Mode`]s:
//! - [`Mode::Lexical`]: BM25, score normalised to 0..1 (see [`crate::lexical`]);
//! - [`Mode::Dense`]: cosine similarity of embeddings (exact, or HNSW on
//!   large sites);
//! - [`Mode::Hybrid`]: `w * max(cosine, 0) + (1 - w) * bm25`, over the union
//!   of both retrievers' candidates, each scored by both.
//!
//! [`confidence`] maps the best hit's score through a per-mode
//! [`Calibration`] (a linear ramp between the score below which answers were
//! not found on the eval set and the score above which they reliably were),
//! so one threshold on confidence means the same in every mode.

use crate::index::VectorIndex;
use crate::lexical::{sort_hits, Bm25};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How chunks are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// BM25 only.
    Lexical,
    /// Embedding cosine only.
    Dense,
    /// Both, fused by a weighted sum.
    Hybrid,
}

impl Mode {
    /// The mode's name: `lexical`, `dense` or `hybrid`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Lexical => "lexical",
            Mode::Dense => "dense",
            Mode::Hybrid => "hybrid",
        }
    }
}

/// Default weight of the cosine in [`Mode::Hybrid`] (chosen on the eval
/// set; see the README).
pub const DEFAULT_HYBRID_WEIGHT: f32 = 0.7;

/// One retrieved chunk, as the gateway grounds and cites it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The chunk's stable id.
    pub chunk_id: String,
    /// The name of the document it belongs to.
    pub doc: String,
    /// The document's title.
    pub title: String,
    /// The document's URL (for an ingested file, its path relative to the
    /// folder ingested).
    pub url: String,
    /// Headings above the chunk, outermost first.
    pub heading_path: Vec<String>,
    /// The chunk's text.
    pub text: String,
    /// The retrieval score, higher is better: cosine in [`Mode::Dense`],
    /// normalised BM25 (0..1) in [`Mode::Lexical`], the fused score in
    /// [`Mode::Hybrid`].
    pub score: f32,
}

/// The score range over which confidence rises from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Best-hit score at and below which confidence is 0.
    pub low: f32,
    /// Best-hit score at and above which confidence is 1.
    pub high: f32,
}

impl Calibration {
    /// BM25's ramp: the separating score on the eval set is 0.15.
    pub const LEXICAL: Calibration = Calibration {
        low: 0.08,
        high: 0.22,
    };
    /// MiniLM cosine's ramp: the separating score on the eval set is 0.30.
    pub const MINILM: Calibration = Calibration {
        low: 0.20,
        high: 0.40,
    };
    /// Feature-hashing cosine's ramp (a poor separator: unrelated questions
    /// score 0.30 at the median).
    pub const HASHED: Calibration = Calibration {
        low: 0.25,
        high: 0.45,
    };

    /// The calibration for `mode` with the embedder `embedder` (an
    /// [`crate::Embedder::id`]; other embedders than feature hashing get
    /// MiniLM's cosine ramp) and the hybrid weight `weight`: in
    /// [`Mode::Hybrid`] the ramp is the weighted mean of the dense and the
    /// lexical ones, as the score is. Measured on the eval set (see the
    /// README): confidence 0.5 sits at the score that best separates
    /// answerable from unanswerable questions.
    pub fn for_mode(mode: Mode, embedder: Option<&str>, weight: f32) -> Calibration {
        let dense = if embedder.is_some_and(|e| e.starts_with("hash-")) {
            Calibration::HASHED
        } else {
            Calibration::MINILM
        };
        let lex = Calibration::LEXICAL;
        let w = weight.clamp(0.0, 1.0);
        match mode {
            Mode::Lexical => lex,
            Mode::Dense => dense,
            Mode::Hybrid => Calibration {
                low: w * dense.low + (1.0 - w) * lex.low,
                high: w * dense.high + (1.0 - w) * lex.high,
            },
        }
    }
}

/// Confidence in 0..1 that `hits` (best first) hold the answer: the best
/// score placed on the calibration's ramp, `(best - low) / (high - low)`
/// clamped to 0..1; 0 with no hits.
pub fn confidence(hits: &[Hit], calibration: &Calibration) -> f32 {
    let Some(best) = hits.iter().map(|h| h.score).reduce(f32::max) else {
        return 0.0;
    };
    let span = (calibration.high - calibration.low).max(1e-6);
    ((best - calibration.low) / span).clamp(0.0, 1.0)
}

/// The `Sources:` block of a prompt for `hits` (best first): a line
/// `Sources:`, then one line per hit, `[n] (Title > Heading > ...) text`,
/// numbered from 1, with the hit's line breaks and runs of spaces made
/// single spaces (parentheses in the label become brackets). The inference
/// simulator answers extractively from exactly this shape
/// (`inference_client::sim::answer`); a real model reads it as numbered
/// sources. Put it last in the system prompt: everything after the
/// `Sources:` line is taken as sources. Empty when there are no hits.
pub fn sources_block(hits: &[Hit]) -> String {
    if hits.is_empty() {
        return String::new();
    }
    let mut out = String::from("Sources:\n");
    for (i, h) in hits.iter().enumerate() {
        let mut label: Vec<&str> = vec![h.title.as_str()];
        for p in &h.heading_path {
            if !label.iter().any(|l| l.eq_ignore_ascii_case(p)) {
                label.push(p);
            }
        }
        let label = label
            .join(" > ")
            .replace('(', "[")
            .replace(')', "]")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let text = h.text.split_whitespace().collect::<Vec<_>>().join(" ");
        out.push_str(&format!("[{}] ({label}) {text}\n", i + 1));
    }
    out
}

/// Candidates taken from each retriever before fusing.
fn pool(k: usize) -> usize {
    (k * 8).max(40)
}

/// Ranks chunk positions for `query`: `dense` is the vector index and the
/// query's embedding, when the mode uses them (without them every mode is
/// lexical); `weight` is the cosine's share in [`Mode::Hybrid`]. Best first,
/// at most `k`, as (position, score).
pub fn rank(
    mode: Mode,
    bm25: &Bm25,
    dense: Option<(&VectorIndex, &[f32])>,
    query: &str,
    k: usize,
    weight: f32,
) -> Vec<(usize, f32)> {
    match (mode, dense) {
        (Mode::Dense, Some((index, q))) => index.search(q, k),
        (Mode::Hybrid, Some((index, q))) => {
            let n = pool(k);
            let mut lex = bm25.scores(query);
            sort_hits(&mut lex);
            lex.truncate(n);
            let lex_map: HashMap<usize, f32> = lex.iter().copied().collect();
            let mut cand: HashMap<usize, f32> = HashMap::new();
            for (i, _) in index.search(q, n).into_iter().chain(lex) {
                cand.entry(i).or_insert_with(|| {
                    let cos = index.cosine(q, i).max(0.0);
                    // Outside BM25's pool its share is (nearly) 0.
                    let l = lex_map.get(&i).copied().unwrap_or(0.0);
                    weight * cos + (1.0 - weight) * l
                });
            }
            let mut out: Vec<(usize, f32)> = cand.into_iter().collect();
            sort_hits(&mut out);
            out.truncate(k);
            out
        }
        _ => bm25.search(query, k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(score: f32) -> Hit {
        Hit {
            chunk_id: "0".into(),
            doc: "d".into(),
            title: "t".into(),
            url: "u".into(),
            heading_path: vec![],
            text: "x".into(),
            score,
        }
    }

    #[test]
    fn confidence_ramps_between_low_and_high() {
        let c = Calibration {
            low: 0.2,
            high: 0.6,
        };
        assert_eq!(confidence(&[], &c), 0.0);
        assert_eq!(confidence(&[hit(0.1)], &c), 0.0);
        assert_eq!(confidence(&[hit(0.9)], &c), 1.0);
        assert!((confidence(&[hit(0.4), hit(0.3)], &c) - 0.5).abs() < 1e-6);
        // The best score counts, whatever the order.
        assert!((confidence(&[hit(0.3), hit(0.4)], &c) - 0.5).abs() < 1e-6);
        for m in [Mode::Lexical, Mode::Dense, Mode::Hybrid] {
            let c = Calibration::for_mode(m, None, DEFAULT_HYBRID_WEIGHT);
            assert!(c.low < c.high, "{m:?}");
        }
        assert_eq!(
            Calibration::for_mode(Mode::Hybrid, None, 1.0),
            Calibration::MINILM
        );
        assert_eq!(
            Calibration::for_mode(Mode::Hybrid, Some("x"), 0.0),
            Calibration::LEXICAL
        );
        assert_eq!(
            Calibration::for_mode(Mode::Dense, Some("hash-384"), 0.7),
            Calibration::HASHED
        );
    }

    #[test]
    fn sources_block_shape() {
        let mut a = hit(0.9);
        a.title = "Shipping".into();
        a.heading_path = vec!["Shipping".into(), "Canada (CA)".into()];
        a.text = "Five to\n\n8 days.\n| a | b |".into();
        let mut b = hit(0.5);
        b.heading_path = vec![];
        assert_eq!(
            sources_block(&[a, b]),
            "Sources:\n[1] (Shipping > Canada [CA]) Five to 8 days. | a | b |\n[2] (t) x\n"
        );
        assert_eq!(sources_block(&[]), "");
    }

    #[test]
    fn hybrid_fuses_both_scores() {
        use crate::index::VectorIndex;
        use std::sync::Arc;
        let bm25 = Bm25::build(["apple banana", "cherry", "banana split"]);
        let v: Vec<Arc<[f32]>> = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
            .iter()
            .map(|x| Arc::from(&x[..]))
            .collect();
        let idx = VectorIndex::new(2, v, usize::MAX);
        let q = [0.0f32, 1.0];
        // Dense alone prefers 1 (cosine 1), lexical alone 0 and 2.
        assert_eq!(
            rank(Mode::Dense, &bm25, Some((&idx, &q)), "banana", 1, 0.5)[0].0,
            1
        );
        assert_eq!(
            rank(Mode::Lexical, &bm25, Some((&idx, &q)), "banana", 3, 0.5).len(),
            2
        );
        // Fused: 2 has both a good cosine (0.8) and the word.
        let fused = rank(Mode::Hybrid, &bm25, Some((&idx, &q)), "banana", 3, 0.5);
        assert_eq!(fused[0].0, 2, "{fused:?}");
        assert_eq!(fused.len(), 3);
        // No vectors: lexical whatever the mode.
        assert_eq!(rank(Mode::Hybrid, &bm25, None, "banana", 3, 0.5).len(), 2);
    }
}
