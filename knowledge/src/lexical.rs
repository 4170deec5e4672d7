//! The lexical index: Okapi BM25 over chunk texts, with English stemming
//! (Snowball) and a short stop-word list. Needs no model and no download:
//! the retriever that always works.
//!
//! Scores are normalised to 0..1 by dividing by the query's ceiling,
//! `sum(idf(t)) * (k1 + 1)` over the query's terms (a term the index has
//! never seen counts with the highest idf), so a score says how much of
//! the query's information a chunk matches, and is comparable between
//! queries.

use rust_stemmers::{Algorithm, Stemmer};
use std::collections::HashMap;

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Words too common to carry meaning in a question.
const STOP: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at",
    "be", "been", "before", "being", "both", "but", "by", "can", "could", "did", "do", "does",
    "doing", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers",
    "him", "his", "how", "i", "i'm", "if", "in", "into", "is", "it", "its", "itself", "just", "me",
    "my", "myself", "of", "on", "once", "or", "other", "our", "ours", "out", "own", "please",
    "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up",
    "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why",
    "will", "with", "would", "you", "your", "yours", "yourself",
];

/// Splits text into index terms: lower-cased alphanumeric words, stop words
/// dropped, stemmed.
pub struct Analyzer {
    stemmer: Stemmer,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Analyzer(english)")
    }
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer {
            stemmer: Stemmer::create(Algorithm::English),
        }
    }
}

impl Analyzer {
    /// The terms of `text`, in order, repeats kept.
    pub fn terms(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for w in text.split(|c: char| !c.is_alphanumeric() && c != '\'') {
            let w = w.trim_matches('\'').to_lowercase();
            if w.is_empty() || STOP.binary_search(&w.as_str()).is_ok() {
                continue;
            }
            let w = w.strip_suffix("'s").unwrap_or(&w);
            out.push(self.stemmer.stem(w).into_owned());
        }
        out
    }
}

/// A BM25 index over a fixed list of texts (rebuilt when the list changes).
#[derive(Debug, Default)]
pub struct Bm25 {
    analyzer: Analyzer,
    /// term -> (text index, term frequency), by text index.
    postings: HashMap<String, Vec<(u32, u32)>>,
    lens: Vec<u32>,
    avg_len: f32,
}

impl Bm25 {
    /// Indexes `texts`; a hit's index is the text's position.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>) -> Bm25 {
        let analyzer = Analyzer::default();
        let mut postings: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
        let mut lens = Vec::new();
        let mut tf: HashMap<String, u32> = HashMap::new();
        for (i, text) in texts.into_iter().enumerate() {
            let terms = analyzer.terms(text);
            lens.push(terms.len() as u32);
            for t in terms {
                *tf.entry(t).or_insert(0) += 1;
            }
            for (t, n) in tf.drain() {
                postings.entry(t).or_default().push((i as u32, n));
            }
        }
        let avg_len = if lens.is_empty() {
            1.0
        } else {
            (lens.iter().map(|&l| l as f64).sum::<f64>() / lens.len() as f64).max(1.0) as f32
        };
        Bm25 {
            analyzer,
            postings,
            lens,
            avg_len,
        }
    }

    /// How many texts are indexed.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    fn idf(&self, df: usize) -> f32 {
        let n = self.lens.len() as f32;
        (1.0 + (n - df as f32 + 0.5) / (df as f32 + 0.5)).ln()
    }

    /// Every text that matches a term of `query`, with its normalised score
    /// (see the module docs), unsorted.
    pub fn scores(&self, query: &str) -> Vec<(usize, f32)> {
        let mut terms = self.analyzer.terms(query);
        terms.sort();
        terms.dedup();
        if terms.is_empty() || self.lens.is_empty() {
            return Vec::new();
        }
        let mut acc: HashMap<u32, f32> = HashMap::new();
        let mut ceiling = 0.0;
        for t in &terms {
            let Some(list) = self.postings.get(t) else {
                ceiling += self.idf(0) * (K1 + 1.0);
                continue;
            };
            let idf = self.idf(list.len());
            ceiling += idf * (K1 + 1.0);
            for &(i, tf) in list {
                let tf = tf as f32;
                let norm = K1 * (1.0 - B + B * self.lens[i as usize] as f32 / self.avg_len);
                *acc.entry(i).or_insert(0.0) += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        acc.into_iter()
            .map(|(i, s)| (i as usize, s / ceiling))
            .collect()
    }

    /// The `k` best texts for `query`, best first (ties by position).
    pub fn search(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let mut s = self.scores(query);
        sort_hits(&mut s);
        s.truncate(k);
        s
    }
}

/// Sorts (index, score) best first, ties by index.
pub(crate) fn sort_hits(hits: &mut [(usize, f32)]) {
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_list_is_sorted() {
        assert!(STOP.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn terms_are_stemmed() {
        let a = Analyzer::default();
        assert_eq!(
            a.terms("How long does Shipping take to Canada?"),
            ["long", "ship", "take", "canada"]
        );
        assert_eq!(a.terms("the customer's returns"), ["custom", "return"]);
    }

    #[test]
    fn ranks_by_matching_terms() {
        let idx = Bm25::build([
            "Shipping to Canada takes five to seven business days.",
            "Returns are free within 30 days.",
            "We ship to the United States in two days. Shipping is free over $50.",
            "",
        ]);
        let hits = idx.search("how long does shipping to canada take", 3);
        assert_eq!(hits[0].0, 0);
        assert_eq!(hits[1].0, 2);
        assert_eq!(hits.len(), 2);
        assert!(hits[0].1 > 0.0 && hits[0].1 < 1.0);
        assert!(idx.search("the of and", 5).is_empty());
        assert!(idx.search("zebra", 5).is_empty());
        assert_eq!(idx.len(), 4);
        // An unknown word lowers the score: less of the question is matched.
        let with_unknown = idx.search("canada zebra", 1)[0].1;
        assert!(with_unknown < idx.search("canada", 1)[0].1);
    }
}
