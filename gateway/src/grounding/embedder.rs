//! Where a knowledge base's vectors come from (`[knowledge] embedder`):
//! all-MiniLM-L6-v2 in-process, the inference pool's `/v1/embeddings`
//! ([`PoolEmbedder`]), or none (BM25 alone).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inference_client::{Client, Event, RequestId, Service};
use knowledge::{EmbedError, Embedder};

use crate::config::{EmbedderChoice, KnowledgeConfig};

/// Texts per `/v1/embeddings` call when a knowledge base embeds its chunks.
const POOL_BATCH: usize = 64;

/// How long one embeddings call may take before the search falls back to
/// BM25 (and an ingest fails, changing nothing).
const POOL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the start-up probe waits for the pool.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// An [`Embedder`] over the inference pool's `/v1/embeddings`, through the
/// inference service (which batches array inputs with other requests).
///
/// Calls are made one at a time (the embedder is shared by the retrieval
/// threads); each waits for its own answer with a deadline.
pub struct PoolEmbedder {
    client: Mutex<Client>,
    events: flume::Receiver<Event>,
    next: AtomicU64,
    id: String,
    dim: usize,
}

impl PoolEmbedder {
    /// A client of `service` for embeddings with the pool's model `model`,
    /// not usable before [`PoolEmbedder::probe`] (made on the thread that
    /// starts the server, probed on the one that may wait).
    pub fn new(service: &Service, model: &str) -> PoolEmbedder {
        let (tx, events) = flume::unbounded();
        PoolEmbedder {
            client: Mutex::new(service.client(Box::new(tx))),
            events,
            next: AtomicU64::new(1),
            id: format!("pool-{model}"),
            dim: 0,
        }
    }

    /// One call learns the vectors' size; fails when the pool cannot embed
    /// now (within [`PROBE_TIMEOUT`]: the server waits for it at start).
    pub fn probe(mut self) -> Result<PoolEmbedder, EmbedError> {
        let probe = self.call(vec!["dimension probe".to_string()], PROBE_TIMEOUT)?;
        self.dim = probe.first().map_or(0, Vec::len);
        if self.dim == 0 {
            return Err(EmbedError::Remote(
                "the pool's /v1/embeddings returned an empty vector".into(),
            ));
        }
        Ok(self)
    }

    /// One embeddings request, answered within `timeout`.
    fn call(&self, texts: Vec<String>, timeout: Duration) -> Result<Vec<Vec<f32>>, EmbedError> {
        let client = match self.client.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let id: RequestId = self.next.fetch_add(1, Ordering::Relaxed);
        client.embed(id, texts);
        let deadline = Instant::now() + timeout;
        loop {
            match self.events.recv_deadline(deadline) {
                Ok(Event::Embeddings { id: got, vectors }) if got == id => return Ok(vectors),
                Ok(Event::Failed { id: got, error }) if got == id => {
                    return Err(EmbedError::Remote(error.to_string()))
                }
                // The late answer of a call that timed out.
                Ok(_) => continue,
                Err(_) => {
                    client.cancel(id);
                    return Err(EmbedError::Remote(format!(
                        "no answer from /v1/embeddings within {} s",
                        timeout.as_secs()
                    )));
                }
            }
        }
    }
}

impl Embedder for PoolEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(POOL_BATCH) {
            let owned = batch.iter().map(|t| t.to_string()).collect();
            out.extend(self.call(owned, POOL_TIMEOUT)?);
        }
        Ok(out)
    }
}

/// The embedder `[knowledge] embedder` asks for, and how to say it in a
/// log line. `pool` is needed for [`EmbedderChoice::Pool`] only.
///
/// Every choice but an explicit `minilm` falls back to BM25 alone when its
/// model cannot be had, with the reason in the description; an explicit
/// `minilm` without its files is an error.
pub fn choose(
    cfg: &KnowledgeConfig,
    pool: Option<PoolEmbedder>,
) -> Result<(Option<Arc<dyn Embedder>>, String), EmbedError> {
    match cfg.embedder {
        EmbedderChoice::Lexical => Ok((None, "BM25 alone (embedder = \"lexical\")".into())),
        EmbedderChoice::Minilm => {
            let m = knowledge::embed::load_minilm(None)?;
            Ok((Some(Arc::new(m)), "all-MiniLM-L6-v2 with BM25".into()))
        }
        EmbedderChoice::Auto => match knowledge::embed::load_minilm(None) {
            Ok(m) => Ok((Some(Arc::new(m)), "all-MiniLM-L6-v2 with BM25".into())),
            Err(e) => Ok((None, format!("BM25 alone: {e}"))),
        },
        EmbedderChoice::Pool => {
            let Some(pool) = pool else {
                return Ok((
                    None,
                    "BM25 alone: no inference service to embed with".into(),
                ));
            };
            match pool.probe() {
                Ok(p) => {
                    let what =
                        format!("the pool's /v1/embeddings ({} dimensions) with BM25", p.dim);
                    Ok((Some(Arc::new(p)), what))
                }
                Err(e) => Ok((None, format!("BM25 alone: {e}"))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inference_client::{Backend, ServiceConfig, SimOptions};

    #[test]
    fn the_pool_embeds_in_batches_and_in_order() {
        let service = Service::start(ServiceConfig::with_backend(Backend::InProcess(
            SimOptions::default(),
        )))
        .expect("service");
        let e = PoolEmbedder::new(&service, "default")
            .probe()
            .expect("probe");
        assert_eq!(e.id(), "pool-default");
        assert!(e.dim() > 0);
        let texts: Vec<String> = (0..150).map(|i| format!("text number {i}")).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let v = e.embed(&refs).expect("embed");
        assert_eq!(v.len(), 150);
        // The same text gives the same vector wherever it sits in a batch.
        let again = e.embed(&[refs[130]]).expect("embed one");
        assert_eq!(again[0], v[130]);
        assert_ne!(v[0], v[1]);
    }

    #[test]
    fn lexical_needs_no_model() {
        let cfg = KnowledgeConfig {
            embedder: EmbedderChoice::Lexical,
            ..KnowledgeConfig::default()
        };
        let (e, what) = choose(&cfg, None).expect("choose");
        assert!(e.is_none());
        assert!(what.contains("BM25"));
    }
}
