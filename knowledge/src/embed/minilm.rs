//! all-MiniLM-L6-v2 in-process: a 6-layer BERT (candle-transformers'
//! `BertModel`, CPU, f32) over the model's WordPiece tokenizer (`tokenizers`),
//! mean pooling over the attention mask and L2 normalisation, which is what
//! sentence-transformers does for this model (modules Transformer, Pooling
//! with `pooling_mode_mean_tokens`, Normalize). Inputs are cut at 256
//! tokens, the model's `max_seq_length`.
//!
//! The directory must hold `config.json`, `tokenizer.json` and
//! `model.safetensors` (`knowledge/fetch-model.sh` puts them there).

use super::{check_shape, Embedder};
use crate::error::EmbedError;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Longest input in tokens (sentence-transformers' `max_seq_length`).
const MAX_TOKENS: usize = 256;
/// Texts per forward pass.
const BATCH: usize = 16;

/// all-MiniLM-L6-v2 (see the module docs).
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    dir: PathBuf,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .finish()
    }
}

impl MiniLm {
    /// The files [`MiniLm::load`] needs in its directory.
    pub const FILES: [&'static str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

    /// Whether `dir` holds the model's files.
    pub fn present(dir: &Path) -> bool {
        Self::FILES.iter().all(|f| dir.join(f).is_file())
    }

    /// Loads the model from `dir`.
    pub fn load(dir: &Path) -> Result<MiniLm, EmbedError> {
        for f in Self::FILES {
            if !dir.join(f).is_file() {
                return Err(EmbedError::MissingFile(dir.join(f)));
            }
        }
        let load = |what: &str, e: &dyn std::fmt::Display| {
            EmbedError::Load(format!("{}: {what}: {e}", dir.display()))
        };
        let config = std::fs::read(dir.join("config.json")).map_err(|e| load("config.json", &e))?;
        let config: Config =
            serde_json::from_slice(&config).map_err(|e| load("config.json", &e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| load("tokenizer.json", &e))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load("tokenizer.json", &e))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| load("model.safetensors", &e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| load("model.safetensors", &e))?;
        let model = BertModel::load(vb, &config).map_err(|e| load("model.safetensors", &e))?;
        Ok(MiniLm {
            model,
            tokenizer,
            dim: config.hidden_size,
            dir: dir.to_path_buf(),
        })
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let err = |e: &dyn std::fmt::Display| EmbedError::Inference(e.to_string());
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| err(&e))?;
        let rows = enc.len();
        let len = enc.first().map_or(0, |e| e.get_ids().len());
        let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            enc.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let dev = &Device::Cpu;
        let ids = Tensor::from_vec(flat(|e| e.get_ids()), (rows, len), dev).map_err(|e| err(&e))?;
        let types =
            Tensor::from_vec(flat(|e| e.get_type_ids()), (rows, len), dev).map_err(|e| err(&e))?;
        let mask = Tensor::from_vec(flat(|e| e.get_attention_mask()), (rows, len), dev)
            .map_err(|e| err(&e))?;
        let pooled = (|| -> candle_core::Result<Vec<Vec<f32>>> {
            let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (rows, len, dim)
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, len, 1)
            let sum = hidden.broadcast_mul(&m)?.sum(1)?; // (rows, dim)
            let count = m.sum(1)?.clamp(1e-9, f64::MAX)?; // (rows, 1)
            let mean = sum.broadcast_div(&count)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            mean.broadcast_div(&norm)?.to_vec2::<f32>()
        })()
        .map_err(|e| err(&e))?;
        Ok(pooled)
    }
}

impl Embedder for MiniLm {
    fn id(&self) -> &str {
        "all-MiniLM-L6-v2"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds in batches of 16, texts of similar length together (less
    /// padding), answers in the order given.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for group in order.chunks(BATCH) {
            let batch: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
            let vecs = self.embed_batch(&batch)?;
            check_shape(&vecs, batch.len(), self.dim)?;
            for (&i, v) in group.iter().zip(vecs) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}
