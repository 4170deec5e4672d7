//! A site's knowledge base: documents ingested, cut into chunks that follow
//! headings and paragraphs, indexed (BM25 always; vectors when an embedder is
//! there), and searched for the top chunks that ground an answer, with their
//! sources and a confidence.
//!
//! Sans-IO modules, each a function of its input:
//! - [`document`]: name + bytes to a [`Document`] or a [`DocumentError`];
//! - [`chunker`]: a document to [`Chunk`]s with stable ids;
//! - [`lexical`]: BM25 over chunk texts;
//! - [`embed`]: the [`Embedder`] seam, MiniLM (candle) and feature hashing;
//! - [`index`]: exact and approximate (HNSW) cosine top-k;
//! - [`retrieval`]: how the two indexes are combined, scored and turned into
//!   a confidence.
//!
//! The I/O shell is [`KnowledgeBase`] (one per site, in `DATA/kb/<site>/`):
//! ingest from paths or one uploaded document, persist, reload, search.
//! Everything is synchronous and `Send + Sync`; call it off the event loop.

pub mod chunker;
pub mod document;
pub mod embed;
mod error;
mod hash;
pub mod index;
mod kb;
pub mod lexical;
pub mod retrieval;
mod store;

pub use chunker::{Chunk, ChunkOptions};
pub use document::{DocLimits, Document, Format};
pub use embed::{Embedder, HashEmbedder, MiniLm};
pub use error::{DocumentError, EmbedError, KbError};
pub use kb::{FileOutcome, FileReport, IngestReport, KbConfig, KnowledgeBase};
pub use retrieval::{confidence, sources_block, Calibration, Hit, Mode};
