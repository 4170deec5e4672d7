//! Feature-hashing embedder: each lower-cased word and each of its character
//! trigrams is hashed (FNV-1a) into one of `dim` signed buckets, and the
//! vector is L2-normalised. Identical to the inference simulator's
//! `/v1/embeddings` (`inference_client::sim::embed`), so vectors from the
//! simulated pool and from this embedder agree.

use super::Embedder;
use crate::error::EmbedError;

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

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

    /// The vector of one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let dim = self.dim;
        let mut v = vec![0f32; dim];
        let mut add = |h: u64, w: f32| {
            let i = (h % dim as u64) as usize;
            v[i] += if h >> 63 == 1 { -w } else { w };
        };
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let word = word.to_lowercase();
            add(fnv1a(&[b"w:", word.as_bytes()]), 1.0);
            let padded: Vec<char> = format!("^{word}$").chars().collect();
            for tri in padded.windows(3) {
                let s: String = tri.iter().collect();
                add(fnv1a(&[b"t:", s.as_bytes()]), 0.5);
            }
        }
        crate::index::normalize(&mut v);
        v
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
