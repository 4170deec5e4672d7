//! The sites' knowledge bases as the server holds them: opened at start
//! (the demo site's built-in one ingested the first time), searched for
//! answers, written by uploads, and reopened when `gateway kb add` changed
//! one on disk while the server ran.
//!
//! Workers only ask [`Library::allowance`] (an `ArcSwap` load, no lock, no
//! I/O) to decide whether an answer goes through retrieval; everything else
//! runs on the retrieval threads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use knowledge::{Embedder, KbConfig, KbError, KnowledgeBase};

use super::Grounding;
use crate::config::KnowledgeConfig;

/// The file whose change means a knowledge base was written.
const STAMP_FILE: &str = "chunks.json";

/// One site's open knowledge base.
struct Base {
    kb: Arc<KnowledgeBase>,
    /// `chunks.json`'s modification time when it was opened or last written here.
    stamp: Option<SystemTime>,
}

/// Every site's knowledge base (see the module docs).
pub struct Library {
    data_dir: PathBuf,
    config: KnowledgeConfig,
    kb_config: KbConfig,
    embedder: Option<Arc<dyn Embedder>>,
    bases: RwLock<HashMap<String, Base>>,
    /// The sites whose knowledge base has chunks, republished after every
    /// change to `bases`: what workers read per message.
    covered: ArcSwap<HashSet<String>>,
    /// Tokens a grounded prompt keeps back for its sources.
    allowance: u32,
}

fn stamp(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join(STAMP_FILE))
        .and_then(|m| m.modified())
        .ok()
}

impl Library {
    /// A library over `data_dir/kb/` whose vectors come from `embedder`
    /// (none: BM25 alone); nothing is opened before [`Library::start`].
    pub fn new(
        data_dir: &Path,
        config: KnowledgeConfig,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Library {
        let kb_config = KbConfig::default();
        Library {
            data_dir: data_dir.to_path_buf(),
            allowance: super::allowance(config.top_k, kb_config.chunking.max_chars),
            config,
            kb_config,
            embedder,
            bases: RwLock::new(HashMap::new()),
            covered: ArcSwap::from_pointee(HashSet::new()),
        }
    }

    /// The retrieval settings.
    pub fn config(&self) -> &KnowledgeConfig {
        &self.config
    }

    /// Opens every knowledge base in the data directory, first ingesting
    /// the built-in one for `demo_site` when asked and it has none yet. A
    /// knowledge base that cannot be opened is logged and left out (its site
    /// answers ungrounded).
    pub fn start(&self, demo_site: Option<&str>) {
        if let Some(site) = demo_site {
            if !self.data_dir.join("kb").join(site).exists() {
                self.ingest_demo(site);
            }
        }
        self.refresh();
    }

    fn ingest_demo(&self, site: &str) {
        let kb = match self.open(site) {
            Ok(kb) => kb,
            Err(e) => {
                tracing::warn!(site, error = %e, "cannot make the demo knowledge base");
                return;
            }
        };
        let mut chunks = 0;
        for (name, bytes) in super::demo::DOCUMENTS {
            match kb.ingest_document(name, bytes) {
                Ok(r) => chunks = r.total_chunks,
                Err(e) => tracing::warn!(site, name, error = %e, "demo document not ingested"),
            }
        }
        self.restamp(site);
        tracing::info!(site, chunks, "built-in demo knowledge base ingested");
    }

    /// Opens knowledge bases that appeared in the data directory and reopens
    /// those changed on disk by someone else (`gateway kb add`).
    pub fn refresh(&self) {
        let Ok(entries) = std::fs::read_dir(self.data_dir.join("kb")) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Some(site) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let dir = entry.path();
            if !dir.is_dir() || !crate::sites::valid_site_id(&site) {
                continue;
            }
            let now = stamp(&dir);
            let known = self.read().get(&site).map(|b| b.stamp);
            if known.is_some_and(|s| s == now) {
                continue;
            }
            match KnowledgeBase::open(
                &self.data_dir,
                &site,
                self.embedder.clone(),
                self.kb_config.clone(),
            ) {
                Ok(kb) => {
                    tracing::info!(
                        site,
                        chunks = kb.len(),
                        mode = kb.mode().as_str(),
                        reopened = known.is_some(),
                        "knowledge base open"
                    );
                    self.write().insert(
                        site,
                        Base {
                            kb: Arc::new(kb),
                            stamp: now,
                        },
                    );
                }
                Err(e) => tracing::warn!(site, error = %e, "knowledge base left out"),
            }
        }
        self.publish();
    }

    /// Republishes which sites have chunks (after any change to `bases`).
    fn publish(&self) {
        let covered = self
            .read()
            .iter()
            .filter(|(_, b)| !b.kb.is_empty())
            .map(|(site, _)| site.clone())
            .collect();
        self.covered.store(Arc::new(covered));
    }

    /// Whether `site` has a knowledge base with something in it.
    pub fn covers(&self, site: &str) -> bool {
        self.covered.load().contains(site)
    }

    /// Tokens a prompt keeps back for `site`'s sources: 0 without a
    /// knowledge base, which is how a session knows its answers are not
    /// grounded. No lock and no I/O: workers call it per message.
    pub fn allowance(&self, site: &str) -> u32 {
        if self.covers(site) {
            self.allowance
        } else {
            0
        }
    }

    /// `site`'s knowledge base, if open.
    pub fn get(&self, site: &str) -> Option<Arc<KnowledgeBase>> {
        self.read().get(site).map(|b| b.kb.clone())
    }

    /// `site`'s knowledge base, opened (and made) if it is not yet.
    pub fn open(&self, site: &str) -> Result<Arc<KnowledgeBase>, KbError> {
        if let Some(kb) = self.get(site) {
            return Ok(kb);
        }
        let kb = KnowledgeBase::open(
            &self.data_dir,
            site,
            self.embedder.clone(),
            self.kb_config.clone(),
        )?;
        let kb = Arc::new(kb);
        let mut bases = self.write();
        // Another thread may have opened it meanwhile: keep the first.
        let b = bases.entry(site.to_string()).or_insert_with(|| Base {
            kb,
            stamp: stamp(&self.data_dir.join("kb").join(site)),
        });
        Ok(b.kb.clone())
    }

    /// Notes that `site`'s knowledge base was written here (so
    /// [`Library::refresh`] does not reopen it, and workers see whether it
    /// has chunks now).
    pub fn restamp(&self, site: &str) {
        let now = stamp(&self.data_dir.join("kb").join(site));
        if let Some(b) = self.write().get_mut(site) {
            b.stamp = now;
        }
        self.publish();
    }

    /// The top chunks for `query` in `site`'s knowledge base, as grounding
    /// for an answer; `None` without one.
    pub fn ground(&self, site: &str, query: &str) -> Option<Grounding> {
        self.ground_many(&[(site, query)]).pop().flatten()
    }

    /// [`Library::ground`] for many (site, query) pairs at once: the queries
    /// are embedded in one batch (one embedder serves every site), which
    /// costs far less than one model run each, so a queue of questions
    /// drains faster the longer it gets.
    pub fn ground_many(&self, asks: &[(&str, &str)]) -> Vec<Option<Grounding>> {
        let kbs: Vec<Option<Arc<KnowledgeBase>>> =
            asks.iter().map(|(site, _)| self.get(site)).collect();
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; asks.len()];
        let wanting: Vec<usize> = (0..asks.len())
            .filter(|&i| {
                kbs[i]
                    .as_ref()
                    .is_some_and(|kb| kb.wants_query_vector().is_some())
            })
            .collect();
        let embedder = wanting
            .first()
            .and_then(|&i| kbs[i].as_ref())
            .and_then(|kb| kb.wants_query_vector().cloned());
        if let Some(e) = embedder {
            let texts: Vec<&str> = wanting.iter().map(|&i| asks[i].1).collect();
            match e.embed(&texts) {
                Ok(v) if v.len() == texts.len() => {
                    for (&i, v) in wanting.iter().zip(v) {
                        vectors[i] = Some(v);
                    }
                }
                Ok(_) => tracing::warn!("the embedder returned a bad shape; searching lexically"),
                Err(err) => {
                    tracing::warn!(error = %err, "query embedding failed; searching lexically")
                }
            }
        }
        asks.iter()
            .zip(kbs)
            .zip(vectors)
            .map(|(((_, query), kb), v)| {
                let kb = kb?;
                let hits = kb.search_embedded(query, v.as_deref(), self.config.top_k);
                Some(Grounding::from_hits(&hits, kb.confidence(&hits)))
            })
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Base>> {
        self.bases.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Base>> {
        self.bases.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_is_ingested_once_and_grounds_answers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lib = Library::new(dir.path(), KnowledgeConfig::default(), None);
        assert!(!lib.covers("demo"));
        lib.start(Some("demo"));
        assert!(lib.covers("demo"));
        assert!(!lib.covers("other"));
        assert!(lib.allowance("demo") > 0);
        assert_eq!(lib.allowance("other"), 0);
        let g = lib
            .ground("demo", "How long does shipping to Canada take?")
            .expect("grounding");
        assert_eq!(g.sources.len(), 5);
        assert_eq!(g.sources[0].url, "https://fernhill.example/help/shipping");
        assert!(g.confidence > 0.5, "{g:?}");
        let off = lib
            .ground("demo", "Who won the football world cup in 1954?")
            .expect("grounding");
        assert!(off.confidence < 0.35, "{off:?}");

        // Emptied by its owner, it is not re-ingested at the next start.
        for d in lib.get("demo").expect("open").documents() {
            lib.get("demo")
                .expect("open")
                .remove_document(&d.name)
                .expect("remove");
        }
        let again = Library::new(dir.path(), KnowledgeConfig::default(), None);
        again.start(Some("demo"));
        assert!(!again.covers("demo"));
    }

    #[test]
    fn a_knowledge_base_written_elsewhere_is_reopened() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lib = Library::new(dir.path(), KnowledgeConfig::default(), None);
        lib.start(None);
        assert!(!lib.covers("shop"));
        // What `gateway kb add` does, from another process.
        let other =
            KnowledgeBase::open(dir.path(), "shop", None, KbConfig::default()).expect("open");
        other
            .ingest_document("gift-cards.txt", b"Gift cards never expire.\n")
            .expect("ingest");
        lib.refresh();
        assert!(lib.covers("shop"));
        let g = lib
            .ground("shop", "do gift cards expire?")
            .expect("grounding");
        assert_eq!(g.sources[0].url, "gift-cards.txt");
    }
}
