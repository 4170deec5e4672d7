//! The eval set (`eval/shop/`; the tuning questions `eval/questions.toml`
//! and the held-out ones `eval/questions-holdout.toml`) and its measures,
//! shared by the tests and the retrieval bench.
#![allow(dead_code)]

use knowledge::{Hit, KnowledgeBase};
use std::path::PathBuf;

/// One eval question.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Question {
    /// The visitor's question.
    pub text: String,
    /// The document that answers it ("" for none).
    pub doc: String,
}

#[derive(serde::Deserialize)]
struct File {
    question: Vec<Question>,
}

/// The eval knowledge base's folder.
pub fn shop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("eval/shop")
}

/// Every question of `eval/questions.toml` (the set things are tuned on).
pub fn questions() -> Vec<Question> {
    questions_in("questions.toml")
}

/// Every question of `eval/questions-holdout.toml` (never tuned on).
pub fn holdout() -> Vec<Question> {
    questions_in("questions-holdout.toml")
}

/// Every question of `eval/NAME`.
pub fn questions_in(name: &str) -> Vec<Question> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("eval")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("eval/{name}: {e}"));
    let f: File = toml::from_str(&text).unwrap_or_else(|e| panic!("eval/{name}: {e}"));
    f.question
}

/// Retrieval quality over the answerable questions, and the confidence of
/// answerable vs unanswerable ones.
#[derive(Debug, Clone, Default)]
pub struct Quality {
    /// Answerable questions.
    pub n: usize,
    /// Share whose document is among the top 5 hits.
    pub recall5: f64,
    /// Share whose document is the top hit.
    pub recall1: f64,
    /// Mean reciprocal rank of the first hit from the document (top 10).
    pub mrr: f64,
    /// Best-hit scores of answerable questions.
    pub top_answerable: Vec<f32>,
    /// Best-hit scores of unanswerable questions.
    pub top_unanswerable: Vec<f32>,
    /// Confidence of answerable questions.
    pub conf_answerable: Vec<f32>,
    /// Confidence of unanswerable questions.
    pub conf_unanswerable: Vec<f32>,
    /// Questions whose document was not in the top 5.
    pub misses: Vec<(String, String, Vec<String>)>,
}

/// Runs every question against `kb`.
pub fn measure(kb: &KnowledgeBase, qs: &[Question]) -> Quality {
    let mut q = Quality::default();
    let (mut r5, mut r1, mut rr) = (0usize, 0usize, 0f64);
    for question in qs {
        let hits: Vec<Hit> = kb.search(&question.text, 10);
        let top = hits.first().map_or(0.0, |h| h.score);
        let conf = kb.confidence(&hits[..hits.len().min(5)]);
        if question.doc.is_empty() {
            q.top_unanswerable.push(top);
            q.conf_unanswerable.push(conf);
            continue;
        }
        q.n += 1;
        q.top_answerable.push(top);
        q.conf_answerable.push(conf);
        match hits.iter().position(|h| h.doc == question.doc) {
            Some(p) => {
                rr += 1.0 / (p + 1) as f64;
                r5 += usize::from(p < 5);
                r1 += usize::from(p == 0);
                if p >= 5 {
                    q.misses.push(miss(question, &hits));
                }
            }
            None => q.misses.push(miss(question, &hits)),
        }
    }
    let n = q.n.max(1) as f64;
    q.recall5 = r5 as f64 / n;
    q.recall1 = r1 as f64 / n;
    q.mrr = rr / n;
    q
}

fn miss(q: &Question, hits: &[Hit]) -> (String, String, Vec<String>) {
    (
        q.text.clone(),
        q.doc.clone(),
        hits.iter().take(5).map(|h| h.doc.clone()).collect(),
    )
}

/// The `p`-th percentile (0..100) of `v`.
pub fn percentile(v: &[f32], p: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i.min(s.len() - 1)]
}

/// The best-hit score threshold that best separates answerable from
/// unanswerable questions (highest balanced accuracy), and that accuracy.
pub fn best_threshold(answerable: &[f32], unanswerable: &[f32]) -> (f32, f64) {
    let mut cands: Vec<f32> = answerable.iter().chain(unanswerable).copied().collect();
    cands.sort_by(f32::total_cmp);
    let mut best = (0.0, 0.0);
    for w in cands.windows(2) {
        let t = (w[0] + w[1]) / 2.0;
        let tpr =
            answerable.iter().filter(|&&s| s >= t).count() as f64 / answerable.len().max(1) as f64;
        let tnr = unanswerable.iter().filter(|&&s| s < t).count() as f64
            / unanswerable.len().max(1) as f64;
        let acc = (tpr + tnr) / 2.0;
        if acc > best.1 {
            best = (t, acc);
        }
    }
    best
}

/// The demo's four questions of issue 12 (the first a follow-up of the one
/// before it), with what the answer must hold, as (previous, question,
/// expected words).
pub const DEMO_QUESTIONS: &[(Option<&str>, &str, &str)] = &[
    (None, "what is your phone number?", "1-800-555-0148"),
    (None, "can I return sale items?", "Final Sale"),
    (
        Some("how long does shipping to Canada take?"),
        "and to Japan?",
        "7 to 14 business days",
    ),
];

/// The simulator's answer for `question` from `kb`'s top 5, searched as the
/// gateway does (a short follow-up with the question before it), and the
/// confidence.
pub fn demo_answer(kb: &KnowledgeBase, previous: Option<&str>, question: &str) -> (String, f32) {
    let query = match previous {
        Some(p) => format!("{p} {question}"),
        None => question.to_string(),
    };
    let hits = kb.search(&query, 5);
    let block = knowledge::sources_block(&hits);
    let sources = block.strip_prefix("Sources:\n").unwrap_or_default();
    let answer = inference_client::sim::answer::answer_in_context(sources, question, previous)
        .unwrap_or_default();
    (answer, kb.confidence(&hits))
}
