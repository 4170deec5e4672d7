//! Feature-hashing embedder: each lower-cased word and each of its character
//! trigrams is hashed (FNV-1a) into one of `dim` signed buckets, and the
//! vector is L2-normalised. Identical to the inference simulator's
//! `/v1/embeddings`: it calls `inference_client::sim::embed`, so vectors from
//! the simulated pool and from this embedder agree.

use super::Embedder;
use crate::error::EmbedError;

/// Feature hashing into `dim` dimensions (see the module docs).
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dim: usize,
    id: String,
}

impl HashEmbedder {
    /// An embedder of `dim` dimensions (at least 1).
    pub fn new(dim: usize) -> HashEmbedder {
        let dim = dim.max(1);
        HashEmbedder {
            dim,
            id: format!("hash-{dim}"),
        }
    }

    /// The vector of one text: the simulator's own function, so the two
    /// cannot drift apart.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        inference_client::sim::embed::embed(text, self.dim)
    }
}

impl Embedder for HashEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::dot;

    #[test]
    fn similar_texts_are_close() {
        let e = HashEmbedder::new(384);
        let v = e
            .embed(&[
                "Where is my parcel?",
                "where is my parcel",
                "Tracking parcels",
                "Opening hours",
            ])
            .unwrap();
        assert!((dot(&v[0], &v[1]) - 1.0).abs() < 1e-5);
        assert!(dot(&v[0], &v[2]) > dot(&v[0], &v[3]));
        assert!(e.embed_one("").iter().all(|&x| x == 0.0));
        assert_eq!(e.id(), "hash-384");
        assert_eq!(HashEmbedder::new(0).dim(), 1);
    }
}
