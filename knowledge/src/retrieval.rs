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
//! [`Calibration`] (a ramp measured on the eval set: 0 at the median score of
//! questions the site cannot answer, 0.5 at the score that best separates
//! them from answerable ones, 1 where only the best tenth of answerable
//! questions score), so one threshold on confidence means the same in every
//! mode.

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

/// How a best-hit score becomes a confidence: a ramp in two straight pieces,
/// 0 at `low`, 0.5 at `mid`, 1 at `high`, measured on the eval set's tuning
/// questions (`eval/questions.toml`; never on the held-out ones):
///
/// - `low`: the median best score of questions the shop cannot answer (half
///   of them score lower);
/// - `mid`: the score that best separates answerable from unanswerable
///   questions (highest balanced accuracy): confidence 0.5 is that line;
/// - `high`: the 90th percentile of answerable questions' best scores (only
///   a tenth of them score higher), so 1 is reserved for matches as good as
///   the best ones, not reached by any middling score above the line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Best-hit score at and below which confidence is 0.
    pub low: f32,
    /// Best-hit score at which confidence is 0.5.
    pub mid: f32,
    /// Best-hit score at and above which confidence is 1.
    pub high: f32,
}

impl Calibration {
    /// BM25's ramp (normalised BM25; separating balanced accuracy 0.87 on
    /// the tuning questions).
    pub const LEXICAL: Calibration = Calibration {
        low: 0.11,
        mid: 0.14,
        high: 0.54,
    };
    /// MiniLM cosine's ramp, dense mode (balanced accuracy 0.95).
    pub const MINILM: Calibration = Calibration {
        low: 0.22,
        mid: 0.31,
        high: 0.67,
    };
    /// Hybrid MiniLM + BM25 at [`DEFAULT_HYBRID_WEIGHT`], the default with
    /// the model (balanced accuracy 0.95). The fused best score runs lower
    /// than the weighted mean of the two ramps, so it is measured on its own.
    pub const MINILM_HYBRID: Calibration = Calibration {
        low: 0.15,
        mid: 0.23,
        high: 0.60,
    };
    /// Feature-hashing cosine's ramp (a poor separator, balanced accuracy
    /// 0.70: unrelated questions score 0.30 at the median).
    pub const HASHED: Calibration = Calibration {
        low: 0.30,
        mid: 0.32,
        high: 0.47,
    };

    /// The calibration for `mode` with the embedder `embedder` (an
    /// [`crate::Embedder::id`]; other embedders than feature hashing get
    /// MiniLM's cosine ramp) and the hybrid weight `weight`. In
    /// [`Mode::Hybrid`] with MiniLM at the default weight it is the measured
    /// [`Calibration::MINILM_HYBRID`]; at other weights (and with feature
    /// hashing) the weighted mean of the dense and the lexical ramps, as the
    /// score is (an approximation: measure your own for a remote model and
    /// set `KbConfig::calibration`).
    pub fn for_mode(mode: Mode, embedder: Option<&str>, weight: f32) -> Calibration {
        let hashed = embedder.is_some_and(|e| e.starts_with("hash-"));
        let dense = if hashed {
            Calibration::HASHED
        } else {
            Calibration::MINILM
        };
        let lex = Calibration::LEXICAL;
        let w = weight.clamp(0.0, 1.0);
        match mode {
            Mode::Lexical => lex,
            Mode::Dense => dense,
            Mode::Hybrid if !hashed && (w - DEFAULT_HYBRID_WEIGHT).abs() < 1e-6 => {
                Calibration::MINILM_HYBRID
            }
            Mode::Hybrid => Calibration {
                low: w * dense.low + (1.0 - w) * lex.low,
                mid: w * dense.mid + (1.0 - w) * lex.mid,
                high: w * dense.high + (1.0 - w) * lex.high,
            },
        }
    }
}

/// Confidence in 0..1 that `hits` (best first) hold the answer: the best
/// score placed on the calibration's ramp (0 at `low`, 0.5 at `mid`, 1 at
/// `high`, straight in between); 0 with no hits.
pub fn confidence(hits: &[Hit], calibration: &Calibration) -> f32 {
    let Some(best) = hits.iter().map(|h| h.score).reduce(f32::max) else {
        return 0.0;
    };
    let Calibration { low, mid, high } = *calibration;
    let piece = |from: f32, to: f32| ((best - from) / (to - from).max(1e-6)).clamp(0.0, 1.0);
    if best < mid {
        0.5 * piece(low, mid)
    } else {
        0.5 + 0.5 * piece(mid, high)
    }
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
            mid: 0.3,
            high: 0.7,
        };
        assert_eq!(confidence(&[], &c), 0.0);
        assert_eq!(confidence(&[hit(0.1)], &c), 0.0);
        assert_eq!(confidence(&[hit(0.9)], &c), 1.0);
        assert!((confidence(&[hit(0.3), hit(0.2)], &c) - 0.5).abs() < 1e-6);
        assert!((confidence(&[hit(0.25)], &c) - 0.25).abs() < 1e-6);
        assert!((confidence(&[hit(0.5)], &c) - 0.75).abs() < 1e-6);
        // The best score counts, whatever the order.
        assert!((confidence(&[hit(0.2), hit(0.5)], &c) - 0.75).abs() < 1e-6);
        for m in [Mode::Lexical, Mode::Dense, Mode::Hybrid] {
            for e in [None, Some("minilm"), Some("hash-384")] {
                for w in [0.0, 0.5, DEFAULT_HYBRID_WEIGHT, 1.0] {
                    let c = Calibration::for_mode(m, e, w);
                    assert!(c.low < c.mid && c.mid < c.high, "{m:?} {e:?} {w}: {c:?}");
                }
            }
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
            Calibration::for_mode(Mode::Hybrid, Some("minilm"), DEFAULT_HYBRID_WEIGHT),
            Calibration::MINILM_HYBRID
        );
        assert_eq!(
            Calibration::for_mode(Mode::Dense, Some("hash-384"), 0.7),
            Calibration::HASHED
        );
    }

    /// Issue 12: the demo's hybrid search gave confidence 1.0 to a best
    /// score of 0.44 (the old ramp ended at 0.346). A middling match above
    /// the line is now above 0.5 and below 1.
    #[test]
    fn a_middling_best_score_is_not_certain() {
        let c = Calibration::for_mode(Mode::Hybrid, Some("minilm"), DEFAULT_HYBRID_WEIGHT);
        let conf = confidence(&[hit(0.44)], &c);
        assert!(conf > 0.5 && conf < 0.9, "{conf}");
        assert_eq!(confidence(&[hit(0.65)], &c), 1.0);
        assert!(confidence(&[hit(0.10)], &c) == 0.0);
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
