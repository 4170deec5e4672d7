//! `gateway kb add`: a site's knowledge into the data directory the server
//! uses, from files and folders (Markdown, HTML, text), through the
//! `knowledge` crate. The site is made with defaults if it does not exist yet.
//!
//! The embedding model is the one the server would use (`[knowledge]
//! embedder`: by default all-MiniLM-L6-v2 where its files are, `LC_MODEL_DIR`
//! else the user's cache; the pool's `/v1/embeddings` with `"pool"`), BM25
//! alone otherwise, said in the output. A server running on the same data
//! directory picks the change up within seconds.

use std::path::{Path, PathBuf};

use knowledge::EmbedError;

use thiserror::Error;

use crate::config::{Config, EmbedderChoice};
use crate::grounding::embedder::PoolEmbedder;
use crate::sites::{SiteConfig, SiteError, SiteRegistry};

/// Why `kb add` could not run (a file it skips is not an error: the report names it).
#[derive(Debug, Error)]
pub enum KbCliError {
    /// The site's settings could not be read or made.
    #[error(transparent)]
    Site(#[from] SiteError),
    /// The knowledge base could not be opened or written.
    #[error("knowledge base: {0}")]
    Kb(#[from] knowledge::KbError),
    /// The configured embedder cannot be had.
    #[error("embedder: {0}")]
    Embedder(#[from] EmbedError),
    /// A path given does not exist.
    #[error("{0}: no such file or folder")]
    Missing(PathBuf),
}

/// What `kb add` did.
pub struct Added {
    /// Whether the site was made by this call.
    pub site_created: bool,
    /// How retrieval will rank (`lexical`, `hybrid`, ...), and why if lexical.
    pub mode: String,
    /// Per file, and totals.
    pub report: knowledge::IngestReport,
}

/// Ingests `paths` into `site`'s knowledge base under `data_dir`.
pub fn add(
    config: &Config,
    data_dir: &Path,
    site: &str,
    paths: &[PathBuf],
) -> Result<Added, KbCliError> {
    if let Some(p) = paths.iter().find(|p| !p.exists()) {
        return Err(KbCliError::Missing(p.clone()));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| {
        KbCliError::Kb(knowledge::KbError::Io {
            path: data_dir.to_path_buf(),
            source: e,
        })
    })?;
    let sites = SiteRegistry::load(&config.sites, Some(data_dir))?;
    let site_created = if sites.get(site).is_none() {
        sites.put(site, SiteConfig::default())?;
        true
    } else {
        false
    };
    // The pool's embedder needs the inference service, for this run only.
    let service = match config.knowledge.embedder {
        EmbedderChoice::Pool => Some(
            inference_client::Service::start(crate::server::service_config(config))
                .map_err(|e| KbCliError::Embedder(EmbedError::Remote(e.to_string())))?,
        ),
        _ => None,
    };
    let pool = service
        .as_ref()
        .map(|s| PoolEmbedder::new(s, &config.inference.model));
    let (embedder, what) = crate::grounding::embedder::choose(&config.knowledge, pool)?;
    let kb =
        knowledge::KnowledgeBase::open(data_dir, site, embedder, knowledge::KbConfig::default())?;
    let mode = format!("{} ({what})", kb.mode().as_str());
    let report = kb.ingest_paths(paths)?;
    Ok(Added {
        site_created,
        mode,
        report,
    })
}
