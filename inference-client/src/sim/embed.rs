//! The simulated embedding model: deterministic vectors by feature hashing.
//!
//! A text's lower-cased words, and the character trigrams of each word, are
//! hashed (FNV-1a) into `dim` signed buckets and the vector is L2-normalised,
//! so texts sharing words (or word stems) have a high cosine similarity: good
//! enough to exercise retrieval without a model. An empty text embeds to the
//! zero vector.

/// Dimensions of a vector by default (that of MiniLM-class models).
pub const DEFAULT_DIM: usize = 384;

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

/// The embedding of `text`, `dim` numbers (at least one).
pub fn embed(text: &str, dim: usize) -> Vec<f32> {
    let dim = dim.max(1);
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
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn similar_texts_are_close() {
        let a = embed("Where is my parcel?", DEFAULT_DIM);
        let b = embed("where is my parcel", DEFAULT_DIM);
        let c = embed("Tracking parcels after dispatch", DEFAULT_DIM);
        let d = embed("Opening hours of the Berlin store", DEFAULT_DIM);
        assert!((cos(&a, &b) - 1.0).abs() < 1e-5);
        assert!(
            cos(&a, &c) > cos(&a, &d),
            "{} vs {}",
            cos(&a, &c),
            cos(&a, &d)
        );
        assert!((cos(&d, &d) - 1.0).abs() < 1e-5);
        assert_eq!(embed("x", 8), embed("x", 8));
        assert!(embed("", 4).iter().all(|&x| x == 0.0));
        assert_eq!(embed("y", 0).len(), 1);
    }
}
