//! Persistence of a knowledge base in its directory:
//!
//! - `chunks.json`: the documents (name, URL, title, fingerprint, ...) and
//!   their chunks, the source of truth, written whole and renamed into place
//!   (so it is always one consistent version);
//! - `vectors-<embedder>.bin`: the chunks' embeddings by one embedder, in
//!   chunk order: a header (magic, dimensions, count, a digest of the chunk
//!   ids) then little-endian f32s. A file whose digest does not match
//!   `chunks.json` (a crash between the two renames, another embedder) is
//!   ignored and the vectors are recomputed from the chunks.

use crate::chunker::{Chunk, ChunkOptions};
use crate::document::Format;
use crate::error::KbError;
use crate::hash;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const CHUNKS_FILE: &str = "chunks.json";
const VECTOR_MAGIC: &[u8; 8] = b"LCKBVEC1";
const FORMAT_VERSION: u32 = 1;

/// What the knowledge base knows of one ingested document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocRecord {
    /// The name it was ingested under (the re-ingest key).
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Its title.
    pub title: String,
    /// Its format.
    pub format: Format,
    /// Fingerprint of its bytes.
    pub fingerprint: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// How many chunks it has.
    pub chunks: usize,
    /// The chunking it was cut with (a change re-cuts it on re-ingest).
    pub options: ChunkOptions,
}

/// The contents of `chunks.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub version: u32,
    pub docs: Vec<DocRecord>,
    pub chunks: Vec<Chunk>,
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), KbError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| KbError::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| KbError::io(&tmp, e))?;
    f.sync_all().map_err(|e| KbError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(|e| KbError::io(&path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub(crate) fn save_chunks(
    dir: &Path,
    docs: Vec<DocRecord>,
    chunks: Vec<Chunk>,
) -> Result<Stored, KbError> {
    let stored = Stored {
        version: FORMAT_VERSION,
        docs,
        chunks,
    };
    let json = serde_json::to_vec(&stored).map_err(|e| KbError::Corrupt {
        path: dir.join(CHUNKS_FILE),
        reason: e.to_string(),
    })?;
    write_atomic(dir, CHUNKS_FILE, &json)?;
    Ok(stored)
}

/// `chunks.json`, or `None` when there is none yet.
pub(crate) fn load_chunks(dir: &Path) -> Result<Option<Stored>, KbError> {
    let path = dir.join(CHUNKS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KbError::io(path, e)),
    };
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| KbError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if stored.version != FORMAT_VERSION {
        return Err(KbError::Corrupt {
            path,
            reason: format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                stored.version
            ),
        });
    }
    Ok(Some(stored))
}

/// Digest of the chunk ids in order: ties a vector file to `chunks.json`.
pub(crate) fn ids_digest(chunks: &[Chunk]) -> u64 {
    let ids: Vec<&[u8]> = chunks.iter().map(|c| c.id.as_bytes()).collect();
    hash::fnv1a(&ids)
}

fn vector_file(dir: &Path, embedder: &str) -> PathBuf {
    let safe: String = embedder
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("vectors-{safe}.bin"))
}

pub(crate) fn save_vectors(
    dir: &Path,
    embedder: &str,
    dim: usize,
    digest: u64,
    vectors: &[Arc<[f32]>],
) -> Result<(), KbError> {
    let mut buf = Vec::with_capacity(32 + vectors.len() * dim * 4);
    buf.extend_from_slice(VECTOR_MAGIC);
    buf.extend_from_slice(&(dim as u32).to_le_bytes());
    buf.extend_from_slice(&(vectors.len() as u32).to_le_bytes());
    buf.extend_from_slice(&digest.to_le_bytes());
    for v in vectors {
        for x in v.iter() {
            buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    let path = vector_file(dir, embedder);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("vectors.bin");
    write_atomic(dir, name, &buf)
}

/// The stored vectors of `embedder`, if they match `dim`, `n` and `digest`.
pub(crate) fn load_vectors(
    dir: &Path,
    embedder: &str,
    dim: usize,
    n: usize,
    digest: u64,
) -> Option<Vec<Arc<[f32]>>> {
    let bytes = std::fs::read(vector_file(dir, embedder)).ok()?;
    let header = bytes.get(..24)?;
    let u32_at = |i: usize| header[i..i + 4].try_into().ok().map(u32::from_le_bytes);
    if &header[..8] != VECTOR_MAGIC
        || u32_at(8)? as usize != dim
        || u32_at(12)? as usize != n
        || u64::from_le_bytes(header[16..24].try_into().ok()?) != digest
        || bytes.len() != 24 + n * dim * 4
    {
        return None;
    }
    let floats: Vec<f32> = bytes[24..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some(floats.chunks_exact(dim.max(1)).map(Arc::from).collect())
}
