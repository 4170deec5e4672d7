//! [`KnowledgeBase`]: one site's knowledge, in `DATA/kb/<site>/`.
//!
//! The I/O shell over the sans-IO modules: it reads files and folders
//! (Markdown, HTML and text, recursively), decodes and chunks them, embeds
//! the new chunks, rebuilds the indexes, persists (see [`crate::store`]) and
//! swaps the new state in; searches run on a snapshot, so a search never
//! waits for an ingest. A document whose bytes are unchanged is skipped; a
//! changed one has its chunks replaced (chunks whose id survived keep their
//! vectors, so only new text is embedded); a bad one is reported by name.

use crate::chunker::{self, Chunk, ChunkOptions};
use crate::document::{self, DocLimits, Format};
use crate::embed::{check_shape, Embedder};
use crate::error::{DocumentError, KbError};
use crate::index::{self, VectorIndex};
use crate::lexical::Bm25;
use crate::retrieval::{self, Calibration, Hit, Mode};
use crate::store::{self, DocRecord};
use serde::ser::SerializeStruct;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use crate::store::DocRecord as DocumentInfo;

/// How a knowledge base cuts, indexes and ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct KbConfig {
    /// What documents are accepted.
    pub limits: DocLimits,
    /// How documents are cut.
    pub chunking: ChunkOptions,
    /// Chunks from which the vector index answers approximately (HNSW,
    /// built in the background; exact until it is ready).
    pub ann_threshold: usize,
    /// The ranking; `None` chooses: [`Mode::Hybrid`] with an embedder,
    /// [`Mode::Lexical`] without.
    pub mode: Option<Mode>,
    /// The cosine's weight in [`Mode::Hybrid`].
    pub hybrid_weight: f32,
    /// How scores map to confidence; `None` takes
    /// [`Calibration::for_mode`] (set it for a remote embedding model whose
    /// cosines run higher or lower than MiniLM's).
    pub calibration: Option<Calibration>,
}

impl Default for KbConfig {
    fn default() -> Self {
        KbConfig {
            limits: DocLimits::default(),
            chunking: ChunkOptions::default(),
            ann_threshold: index::DEFAULT_ANN_THRESHOLD,
            mode: None,
            hybrid_weight: retrieval::DEFAULT_HYBRID_WEIGHT,
            calibration: None,
        }
    }
}

/// What happened to one file of an ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// A new document, cut into `chunks`.
    Added {
        /// Its chunks.
        chunks: usize,
    },
    /// A changed document: its `previous` chunks were replaced by `chunks`.
    Replaced {
        /// Its chunks now.
        chunks: usize,
        /// Its chunks before.
        previous: usize,
    },
    /// The same bytes as already ingested: skipped.
    Unchanged,
    /// Not ingested, and why.
    Rejected(DocumentError),
}

/// One file's line of an [`IngestReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The document's name (for a file in a folder, its path relative to
    /// the folder).
    pub name: String,
    /// What happened.
    pub outcome: FileOutcome,
}

impl serde::Serialize for FileReport {
    /// `{"name", "status": "added"|"replaced"|"unchanged"|"rejected",
    /// "chunks"?, "previous"?, "error"?: {"code", "message"}}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("FileReport", 4)?;
        st.serialize_field("name", &self.name)?;
        match &self.outcome {
            FileOutcome::Added { chunks } => {
                st.serialize_field("status", "added")?;
                st.serialize_field("chunks", chunks)?;
            }
            FileOutcome::Replaced { chunks, previous } => {
                st.serialize_field("status", "replaced")?;
                st.serialize_field("chunks", chunks)?;
                st.serialize_field("previous", previous)?;
            }
            FileOutcome::Unchanged => st.serialize_field("status", "unchanged")?,
            FileOutcome::Rejected(e) => {
                st.serialize_field("status", "rejected")?;
                st.serialize_field(
                    "error",
                    &serde_json::json!({"code": e.code(), "message": e.to_string()}),
                )?;
            }
        }
        st.end()
    }
}

/// What an ingest did, file by file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IngestReport {
    /// Each file, in the order met.
    pub files: Vec<FileReport>,
    /// Chunks in the knowledge base afterwards.
    pub total_chunks: usize,
    /// Chunks embedded by this ingest.
    pub embedded: usize,
    /// Chunks of changed documents whose vectors were kept (same id).
    pub reused: usize,
}

impl IngestReport {
    fn count(&self, f: impl Fn(&FileOutcome) -> bool) -> usize {
        self.files.iter().filter(|r| f(&r.outcome)).count()
    }
    /// Files added.
    pub fn added(&self) -> usize {
        self.count(|o| matches!(o, FileOutcome::Added { .. }))
    }
    /// Files replaced.
    pub fn replaced(&self) -> usize {
        self.count(|o| matches!(o, FileOutcome::Replaced { .. }))
    }
    /// Files skipped as unchanged.
    pub fn unchanged(&self) -> usize {
        self.count(|o| matches!(o, FileOutcome::Unchanged))
    }
    /// The rejected files' errors.
    pub fn rejected(&self) -> Vec<&DocumentError> {
        self.files
            .iter()
            .filter_map(|r| match &r.outcome {
                FileOutcome::Rejected(e) => Some(e),
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for IngestReport {
    /// One line per file, then a summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.files {
            match &r.outcome {
                FileOutcome::Added { chunks } => {
                    writeln!(f, "added      {} ({chunks} chunks)", r.name)?
                }
                FileOutcome::Replaced { chunks, previous } => {
                    writeln!(f, "replaced   {} ({previous} -> {chunks} chunks)", r.name)?
                }
                FileOutcome::Unchanged => writeln!(f, "unchanged  {}", r.name)?,
                FileOutcome::Rejected(e) => writeln!(f, "rejected   {e}")?,
            }
        }
        write!(
            f,
            "{} added, {} replaced, {} unchanged, {} rejected; {} chunks in the knowledge base ({} embedded now)",
            self.added(),
            self.replaced(),
            self.unchanged(),
            self.rejected().len(),
            self.total_chunks,
            self.embedded
        )
    }
}

/// One version of the knowledge base, searched without locks.
struct State {
    docs: BTreeMap<String, DocRecord>,
    chunks: Vec<Chunk>,
    bm25: Bm25,
    vectors: Option<VectorIndex>,
}

/// One site's knowledge base (see the module docs). `Send + Sync`: share it
/// in an `Arc`; searches run concurrently with each other and with an ingest.
pub struct KnowledgeBase {
    site: String,
    dir: PathBuf,
    config: KbConfig,
    embedder: Option<Arc<dyn Embedder>>,
    state: RwLock<Arc<State>>,
    writer: Mutex<()>,
    ann: Arc<AnnBuilds>,
}

/// Background HNSW builds: one at a time, and only for the latest version.
#[derive(Default)]
struct AnnBuilds {
    running: Mutex<()>,
    generation: AtomicU64,
}

impl fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnowledgeBase")
            .field("site", &self.site)
            .field("dir", &self.dir)
            .field("mode", &self.mode())
            .field(
                "embedder",
                &self.embedder.as_ref().map(|e| e.id().to_string()),
            )
            .field("chunks", &self.len())
            .finish()
    }
}

/// A chunk with its vector, if it has one yet.
type Slot = (Chunk, Option<Arc<[f32]>>);

/// One input of an ingest: a name and its bytes, or why they could not be read.
type Input = (String, Result<Vec<u8>, DocumentError>);

fn valid_site(site: &str) -> bool {
    !site.is_empty()
        && site.len() <= 128
        && !site.starts_with('.')
        && site
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl KnowledgeBase {
    /// Opens (or creates) the knowledge base of `site` in
    /// `data_dir/kb/<site>/`, loading what is stored. With an `embedder`,
    /// stored vectors of that embedder are loaded, or computed now when
    /// missing or stale (the first start after the model appears).
    pub fn open(
        data_dir: &Path,
        site: &str,
        embedder: Option<Arc<dyn Embedder>>,
        config: KbConfig,
    ) -> Result<KnowledgeBase, KbError> {
        if !valid_site(site) {
            return Err(KbError::BadSite(site.to_string()));
        }
        Self::open_dir(data_dir.join("kb").join(site), site, embedder, config)
    }

    /// Opens (or creates) a knowledge base in `dir` itself.
    pub fn open_dir(
        dir: PathBuf,
        site: &str,
        embedder: Option<Arc<dyn Embedder>>,
        config: KbConfig,
    ) -> Result<KnowledgeBase, KbError> {
        std::fs::create_dir_all(&dir).map_err(|e| KbError::io(&dir, e))?;
        let stored = store::load_chunks(&dir)?.unwrap_or_default();
        let docs: BTreeMap<String, DocRecord> = stored
            .docs
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
        let chunks = stored.chunks;
        let vectors = match &embedder {
            None => None,
            Some(e) => {
                let digest = store::ids_digest(&chunks);
                let loaded = store::load_vectors(&dir, e.id(), e.dim(), chunks.len(), digest);
                let v = match loaded {
                    Some(v) => v,
                    None => {
                        if !chunks.is_empty() {
                            tracing::info!(
                                site,
                                chunks = chunks.len(),
                                embedder = e.id(),
                                "embedding the knowledge base (no stored vectors for this embedder)"
                            );
                        }
                        let texts: Vec<String> = chunks.iter().map(Chunk::index_text).collect();
                        let v = embed_all(e.as_ref(), &texts)?;
                        store::save_vectors(&dir, e.id(), e.dim(), digest, &v)?;
                        v
                    }
                };
                Some(VectorIndex::exact_only(e.dim(), v))
            }
        };
        let bm25 = Bm25::build(
            chunks
                .iter()
                .map(|c| c.index_text())
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        );
        let kb = KnowledgeBase {
            site: site.to_string(),
            dir,
            config,
            embedder,
            state: RwLock::new(Arc::new(State {
                docs,
                chunks,
                bm25,
                vectors,
            })),
            writer: Mutex::new(()),
            ann: Arc::default(),
        };
        kb.build_ann_later();
        Ok(kb)
    }

    /// Starts building the HNSW graph of the current version on a
    /// background thread (one core), if it is large enough; searches are
    /// exact until the graph is ready. Builds run one at a time, and a build
    /// whose version was replaced meanwhile is skipped.
    fn build_ann_later(&self) {
        let st = self.snapshot();
        let Some(v) = st.vectors.as_ref() else { return };
        if v.len() < self.config.ann_threshold || v.has_ann() {
            return;
        }
        let job = v.ann_builder();
        let builds = self.ann.clone();
        let generation = builds.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let site = self.site.clone();
        let n = v.len();
        let spawned = std::thread::Builder::new()
            .name(format!("kb-ann-{site}"))
            .spawn(move || {
                let _one = builds.running.lock().unwrap_or_else(|p| p.into_inner());
                if builds.generation.load(Ordering::SeqCst) != generation {
                    return;
                }
                let started = std::time::Instant::now();
                match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                    Ok(pool) => pool.install(job),
                    Err(_) => job(),
                }
                tracing::info!(
                    site,
                    vectors = n,
                    secs = started.elapsed().as_secs_f64(),
                    "approximate index ready"
                );
            });
        if let Err(e) = spawned {
            tracing::warn!(site = %self.site, error = %e, "cannot start the approximate index build; searches stay exact");
        }
    }

    /// The site's id.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The directory the knowledge base lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The embedder's id, if there is one.
    pub fn embedder_id(&self) -> Option<&str> {
        self.embedder.as_ref().map(|e| e.id())
    }

    /// How chunks are ranked.
    pub fn mode(&self) -> Mode {
        match (self.config.mode, &self.embedder) {
            (_, None) => Mode::Lexical,
            (Some(m), Some(_)) => m,
            (None, Some(_)) => Mode::Hybrid,
        }
    }

    /// How scores map to confidence in this knowledge base's mode.
    pub fn calibration(&self) -> Calibration {
        self.config.calibration.unwrap_or_else(|| {
            Calibration::for_mode(self.mode(), self.embedder_id(), self.config.hybrid_weight)
        })
    }

    fn snapshot(&self) -> Arc<State> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Builds the approximate (HNSW) index of the current version now, on
    /// this thread, whatever its size (for tools and tests; the knowledge
    /// base otherwise builds it in the background above
    /// [`KbConfig::ann_threshold`]). Does nothing without vectors.
    pub fn build_ann_now(&self) {
        if let Some(v) = self.snapshot().vectors.as_ref() {
            v.ann_builder()();
        }
    }

    /// Whether the approximate (HNSW) index is built and in use.
    pub fn ann_ready(&self) -> bool {
        self.snapshot()
            .vectors
            .as_ref()
            .is_some_and(VectorIndex::has_ann)
    }

    /// Chunks in the knowledge base.
    pub fn len(&self) -> usize {
        self.snapshot().chunks.len()
    }

    /// Whether the knowledge base has no chunk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ingested documents, by name.
    pub fn documents(&self) -> Vec<DocumentInfo> {
        self.snapshot().docs.values().cloned().collect()
    }

    /// Every chunk, by document name then position.
    pub fn chunks(&self) -> Vec<Chunk> {
        self.snapshot().chunks.clone()
    }

    /// Ingests files and folders. A folder is walked recursively (entries
    /// whose names start with `.` are skipped, symbolic links to folders are
    /// not followed) and each file is named by its path relative to the
    /// folder; a file given directly is named by its file name. Files that
    /// cannot be read, have no supported extension (in a folder), or fail
    /// [`document::decode`] are reported and skipped; the rest go in.
    ///
    /// Fails as a whole (changing nothing) only when embedding or writing
    /// the knowledge base fails.
    pub fn ingest_paths<P: AsRef<Path>>(&self, paths: &[P]) -> Result<IngestReport, KbError> {
        let mut inputs = Vec::new();
        for p in paths {
            let p = p.as_ref();
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    let mut files = Vec::new();
                    walk(p, p, &mut files);
                    for (name, path) in files {
                        inputs.push(self.read_input(name, &path, true));
                    }
                }
                Ok(_) => {
                    let name = p.file_name().map_or_else(
                        || p.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    );
                    inputs.push(self.read_input(name, p, false));
                }
                Err(e) => {
                    let name = p.display().to_string();
                    inputs.push((
                        name.clone(),
                        Err(DocumentError::Io {
                            name,
                            detail: e.to_string(),
                        }),
                    ));
                }
            }
        }
        self.ingest_inputs(inputs)
    }

    /// Ingests one document from its name (e.g. `help/shipping.md`; its
    /// extension tells the format, and without one the content does) and
    /// bytes, as an upload would bring it.
    pub fn ingest_document(&self, name: &str, bytes: &[u8]) -> Result<IngestReport, KbError> {
        self.ingest_inputs(vec![(name.to_string(), Ok(bytes.to_vec()))])
    }

    fn read_input(&self, name: String, path: &Path, in_folder: bool) -> Input {
        if in_folder && Format::from_name(&name).is_none() {
            return (name.clone(), Err(DocumentError::Unsupported { name }));
        }
        let limit = self.config.limits.max_bytes;
        match std::fs::metadata(path) {
            Ok(m) if m.len() > limit => {
                let e = DocumentError::TooLarge {
                    name: name.clone(),
                    size: m.len(),
                    limit,
                };
                (name, Err(e))
            }
            _ => match std::fs::read(path) {
                Ok(b) => (name, Ok(b)),
                Err(e) => {
                    let detail = e.to_string();
                    (name.clone(), Err(DocumentError::Io { name, detail }))
                }
            },
        }
    }

    /// Removes a document and its chunks; `false` if there was none.
    pub fn remove_document(&self, name: &str) -> Result<bool, KbError> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.snapshot();
        if !cur.docs.contains_key(name) {
            return Ok(false);
        }
        let mut docs = cur.docs.clone();
        docs.remove(name);
        let keep: Vec<usize> = (0..cur.chunks.len())
            .filter(|&i| cur.chunks[i].doc != name)
            .collect();
        let chunks: Vec<Chunk> = keep.iter().map(|&i| cur.chunks[i].clone()).collect();
        let vectors = cur.vectors.as_ref().map(|v| {
            keep.iter()
                .filter_map(|&i| v.vector(i).cloned())
                .collect::<Vec<_>>()
        });
        self.commit(docs, chunks, vectors)?;
        Ok(true)
    }

    fn ingest_inputs(&self, inputs: Vec<Input>) -> Result<IngestReport, KbError> {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.snapshot();
        let mut files = Vec::with_capacity(inputs.len());
        // name -> (record, chunks), last one of a name wins.
        let mut changed: BTreeMap<String, (DocRecord, Vec<Chunk>)> = BTreeMap::new();
        for (name, bytes) in inputs {
            let decoded = bytes.and_then(|b| document::decode(&name, &b, &self.config.limits));
            let doc = match decoded {
                Ok(d) => d,
                Err(e) => {
                    files.push(FileReport {
                        name: e.name().to_string(),
                        outcome: FileOutcome::Rejected(e),
                    });
                    continue;
                }
            };
            let previous = cur.docs.get(&doc.name);
            if previous.is_some_and(|p| {
                p.fingerprint == doc.fingerprint && p.options == self.config.chunking
            }) && !changed.contains_key(&doc.name)
            {
                files.push(FileReport {
                    name: doc.name.clone(),
                    outcome: FileOutcome::Unchanged,
                });
                continue;
            }
            let chunks = chunker::chunk(&doc, &self.config.chunking);
            let outcome = match previous {
                Some(p) => FileOutcome::Replaced {
                    chunks: chunks.len(),
                    previous: p.chunks,
                },
                None => FileOutcome::Added {
                    chunks: chunks.len(),
                },
            };
            files.push(FileReport {
                name: doc.name.clone(),
                outcome,
            });
            let record = DocRecord {
                name: doc.name.clone(),
                url: doc.url.clone(),
                title: doc.title.clone(),
                format: doc.format,
                fingerprint: doc.fingerprint.clone(),
                bytes: doc.bytes,
                chunks: chunks.len(),
                options: self.config.chunking,
            };
            changed.insert(doc.name.clone(), (record, chunks));
        }
        let mut report = IngestReport {
            files,
            total_chunks: cur.chunks.len(),
            embedded: 0,
            reused: 0,
        };
        if changed.is_empty() {
            return Ok(report);
        }
        // The new chunk list: untouched documents' chunks and the changed
        // documents' new ones, by document name then position.
        let mut docs = cur.docs.clone();
        let mut by_doc: BTreeMap<String, Vec<Slot>> = BTreeMap::new();
        let old_vectors: HashMap<&str, Arc<[f32]>> = match &cur.vectors {
            Some(v) => cur
                .chunks
                .iter()
                .enumerate()
                .filter_map(|(i, c)| Some((c.id.as_str(), v.vector(i)?.clone())))
                .collect(),
            None => HashMap::new(),
        };
        for (i, c) in cur.chunks.iter().enumerate() {
            if !changed.contains_key(&c.doc) {
                let v = cur.vectors.as_ref().and_then(|v| v.vector(i).cloned());
                by_doc
                    .entry(c.doc.clone())
                    .or_default()
                    .push((c.clone(), v));
            }
        }
        for (name, (record, chunks)) in changed {
            docs.insert(name.clone(), record);
            let list = by_doc.entry(name).or_default();
            for c in chunks {
                let v = old_vectors.get(c.id.as_str()).cloned();
                report.reused += usize::from(v.is_some() && cur.docs.contains_key(&c.doc));
                list.push((c, v));
            }
        }
        let mut all: Vec<Slot> = by_doc.into_values().flatten().collect();
        let vectors = match &self.embedder {
            None => None,
            Some(e) => {
                let missing: Vec<usize> = (0..all.len()).filter(|&i| all[i].1.is_none()).collect();
                let texts: Vec<String> = missing.iter().map(|&i| all[i].0.index_text()).collect();
                let v = embed_all(e.as_ref(), &texts)?;
                report.embedded = v.len();
                for (i, v) in missing.into_iter().zip(v) {
                    all[i].1 = Some(v);
                }
                Some(
                    all.iter()
                        .filter_map(|(_, v)| v.clone())
                        .collect::<Vec<_>>(),
                )
            }
        };
        let chunks: Vec<Chunk> = all.into_iter().map(|(c, _)| c).collect();
        report.total_chunks = chunks.len();
        self.commit(docs, chunks, vectors)?;
        Ok(report)
    }

    /// Persists a new version and swaps it in.
    fn commit(
        &self,
        docs: BTreeMap<String, DocRecord>,
        chunks: Vec<Chunk>,
        vectors: Option<Vec<Arc<[f32]>>>,
    ) -> Result<(), KbError> {
        let stored = store::save_chunks(&self.dir, docs.into_values().collect(), chunks)?;
        let vectors = match (&self.embedder, vectors) {
            (Some(e), Some(v)) => {
                store::save_vectors(
                    &self.dir,
                    e.id(),
                    e.dim(),
                    store::ids_digest(&stored.chunks),
                    &v,
                )?;
                Some(VectorIndex::exact_only(e.dim(), v))
            }
            _ => None,
        };
        let texts: Vec<String> = stored.chunks.iter().map(Chunk::index_text).collect();
        let bm25 = Bm25::build(texts.iter().map(String::as_str));
        let state = Arc::new(State {
            docs: stored
                .docs
                .into_iter()
                .map(|d| (d.name.clone(), d))
                .collect(),
            chunks: stored.chunks,
            bm25,
            vectors,
        });
        match self.state.write() {
            Ok(mut s) => *s = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
        self.build_ann_later();
        Ok(())
    }

    /// The `k` chunks that best match `query`, best first (see
    /// [`crate::retrieval`] for the scores). If the embedder fails on the
    /// query, the search falls back to the lexical index and logs a warning.
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        let qvec = match self.wants_query_vector() {
            Some(e) => match e.embed(&[query]) {
                Ok(mut v) if v.len() == 1 && v[0].len() == e.dim() => v.pop(),
                Ok(_) => {
                    tracing::warn!(site = %self.site, "the embedder returned a bad shape; searching lexically");
                    None
                }
                Err(err) => {
                    tracing::warn!(site = %self.site, error = %err, "query embedding failed; searching lexically");
                    None
                }
            },
            None => None,
        };
        self.search_embedded(query, qvec.as_deref(), k)
    }

    /// The embedder a search of this knowledge base embeds its query with,
    /// if its mode and its vectors use one: callers that search many
    /// queries at once embed them in one batch with it, then call
    /// [`KnowledgeBase::search_embedded`].
    pub fn wants_query_vector(&self) -> Option<&Arc<dyn Embedder>> {
        match (&self.embedder, self.mode()) {
            (Some(e), Mode::Dense | Mode::Hybrid) if self.snapshot().vectors.is_some() => Some(e),
            _ => None,
        }
    }

    /// [`KnowledgeBase::search`] with the query's embedding given (from
    /// [`KnowledgeBase::wants_query_vector`]'s embedder); without one, or
    /// one of the wrong size, the ranking is lexical.
    pub fn search_embedded(&self, query: &str, qvec: Option<&[f32]>, k: usize) -> Vec<Hit> {
        let st = self.snapshot();
        let mode = self.mode();
        let qvec = qvec.filter(|v| self.embedder.as_ref().is_some_and(|e| e.dim() == v.len()));
        let dense = st.vectors.as_ref().zip(qvec);
        let ranked = retrieval::rank(mode, &st.bm25, dense, query, k, self.config.hybrid_weight);
        ranked
            .into_iter()
            .filter_map(|(i, score)| {
                let c = st.chunks.get(i)?;
                Some(Hit {
                    chunk_id: c.id.clone(),
                    doc: c.doc.clone(),
                    title: c.title.clone(),
                    url: c.url.clone(),
                    heading_path: c.heading_path.clone(),
                    text: c.text.clone(),
                    score,
                })
            })
            .collect()
    }

    /// Confidence in 0..1 that `hits` (from [`KnowledgeBase::search`]) hold
    /// the answer: [`retrieval::confidence`] with this knowledge base's
    /// [`KnowledgeBase::calibration`].
    pub fn confidence(&self, hits: &[Hit]) -> f32 {
        retrieval::confidence(hits, &self.calibration())
    }
}

/// Embeds `texts`, checking the shape, as unit vectors.
fn embed_all(e: &dyn Embedder, texts: &[String]) -> Result<Vec<Arc<[f32]>>, KbError> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let out = e.embed(&refs)?;
    check_shape(&out, refs.len(), e.dim())?;
    Ok(out
        .into_iter()
        .map(|mut v| {
            index::normalize(&mut v);
            Arc::from(v)
        })
        .collect())
}

/// Files under `dir`, sorted, named relative to `root` with `/` separators.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        let is_dir = ft.is_dir();
        let is_file = ft.is_file() || (ft.is_symlink() && path.is_file());
        if is_dir {
            walk(root, &path, out);
        } else if is_file {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((name, path));
        }
    }
}
