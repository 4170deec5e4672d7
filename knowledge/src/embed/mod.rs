//! Embedders: text to unit vectors, for the vector index.
//!
//! - [`Embedder`] is the seam; the gateway implements it over the inference
//!   pool's `/v1/embeddings` as well.
//! - [`MiniLm`]: all-MiniLM-L6-v2 run in-process by candle (384 dimensions;
//!   mean pooling and L2 normalisation, as sentence-transformers does), from
//!   files that `knowledge/fetch-model.sh` puts in place.
//! - [`HashEmbedder`]: feature hashing of words and character trigrams, the
//!   same vectors as the inference simulator's `/v1/embeddings`; needs no
//!   files, measured as a candidate.
//!
//! [`load_minilm`] finds the model directory ([`MODEL_DIR_ENV`] or
//! [`default_model_dir`]) and loads it, or says why not, for the caller to
//! log and fall back to the lexical index.

mod hashing;
mod minilm;

pub use hashing::HashEmbedder;
pub use minilm::MiniLm;

use crate::error::EmbedError;
use std::path::PathBuf;

/// The environment variable that names the MiniLM model directory.
pub const MODEL_DIR_ENV: &str = "LC_MODEL_DIR";

/// Turns texts into vectors. Implementations return one unit-length (or
/// zero) vector of [`Embedder::dim`] numbers per text, in order, and are
/// deterministic: the same text gives the same vector.
pub trait Embedder: Send + Sync {
    /// A stable name of the model (stored with the vectors: vectors made by
    /// another embedder are recomputed at load).
    fn id(&self) -> &str;
    /// Dimensions of the vectors.
    fn dim(&self) -> usize;
    /// Embeds `texts` (any number; implementations batch as they need).
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Where the MiniLM files are looked for: `$LC_MODEL_DIR`, else
/// `$HOME/.cache/livechat/models/all-MiniLM-L6-v2` (where
/// `knowledge/fetch-model.sh` puts them by default).
pub fn default_model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(MODEL_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/livechat/models/all-MiniLM-L6-v2")
}

/// Loads MiniLM from `dir` (or [`default_model_dir`]).
pub fn load_minilm(dir: Option<PathBuf>) -> Result<MiniLm, EmbedError> {
    MiniLm::load(&dir.unwrap_or_else(default_model_dir))
}

/// Checks an embedder's answer: one vector per text, each `dim` long.
pub(crate) fn check_shape(out: &[Vec<f32>], texts: usize, dim: usize) -> Result<(), EmbedError> {
    if out.len() != texts {
        return Err(EmbedError::Shape {
            expected: texts,
            got: out.len(),
        });
    }
    match out.iter().find(|v| v.len() != dim) {
        Some(v) => Err(EmbedError::Shape {
            expected: dim,
            got: v.len(),
        }),
        None => Ok(()),
    }
}
