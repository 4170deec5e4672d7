//! The retrieval threads' shell: knowledge-base work kept off the workers.
//!
//! Workers send [`RetrievalMsg`]s on one flume channel that every retrieval
//! thread receives from (`[knowledge] threads`): an answer job to ground
//! (searched in its site's knowledge base, then handed back to the worker
//! that owns the session) or a knowledge-base admin request (answered
//! through the worker that holds the connection). The first thread also
//! looks every few seconds for knowledge bases `gateway kb add` wrote
//! meanwhile. [`open_library`] runs before the workers start, so the first
//! question is already grounded.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http::Request;

use super::worker::WorkerMsg;
use super::Shared;
use crate::config::KnowledgeConfig;
use crate::grounding::embedder::{self, PoolEmbedder};
use crate::grounding::library::Library;
use crate::ids::SessionKey;
use crate::ids::SubId;
use crate::session::AnswerJob;
use crate::sites::DEMO_SITE;

/// How often the data directory is looked at for knowledge bases written by
/// another process.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// An answer job to ground in its site's knowledge base, and where it goes back.
#[derive(Debug)]
pub(crate) struct Lookup {
    /// The worker that owns the session.
    pub(crate) worker: usize,
    /// The session.
    pub(crate) key: SessionKey,
    /// Its site.
    pub(crate) site: Arc<str>,
    /// The job (its `query` is what is searched).
    pub(crate) job: AnswerJob,
    /// When the worker sent it (for `lc_retrieval_wait_seconds`).
    pub(crate) queued: Instant,
}

/// What a retrieval thread receives.
#[derive(Debug)]
pub(crate) enum RetrievalMsg {
    /// Ground an answer job.
    Lookup(Lookup),
    /// A knowledge-base admin request.
    Http { sub: SubId, req: Request<Vec<u8>> },
    /// Stop (one per thread).
    Shutdown,
}

/// Starts the retrieval threads.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    rx: flume::Receiver<RetrievalMsg>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let n = shared.library.config().threads.max(1);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let shared = shared.clone();
        let rx = rx.clone();
        let t = std::thread::Builder::new()
            .name(format!("lc-retrieval-{i}"))
            .spawn(move || run(&shared, &rx, i))?;
        threads.push(t);
    }
    Ok(threads)
}

/// Loads the embedder and opens the knowledge bases under `data_dir`
/// (ingesting the demo site's the first time); `pool` is the embedder over
/// the inference pool when `[knowledge] embedder = "pool"`.
pub(crate) fn open_library(
    data_dir: &std::path::Path,
    cfg: &KnowledgeConfig,
    sites: &crate::sites::SiteRegistry,
    pool: Option<PoolEmbedder>,
) -> Library {
    let started = Instant::now();
    let embedder = match embedder::choose(cfg, pool) {
        Ok((e, what)) => {
            tracing::info!(retrieval = %what, "knowledge bases: embedder chosen");
            e
        }
        Err(e) => {
            // `embedder = "minilm"` without its files: said loudly, served lexically.
            tracing::error!(error = %e, "knowledge bases: the configured embedder cannot load; BM25 alone");
            None
        }
    };
    let library = Library::new(data_dir, cfg.clone(), embedder);
    let demo = (cfg.demo && sites.get(DEMO_SITE).is_some()).then_some(DEMO_SITE);
    library.start(demo);
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "knowledge bases ready"
    );
    library
}

/// Most questions grounded in one batch.
const MAX_BATCH: usize = 32;

/// Thread `index`'s loop (the first also refreshes).
fn run(shared: &Shared, rx: &flume::Receiver<RetrievalMsg>, index: usize) {
    let refreshes = index == 0;
    let mut next_refresh = Instant::now() + REFRESH_EVERY;
    // A message met while gathering a batch of lookups, handled next.
    let mut held: Option<RetrievalMsg> = None;
    loop {
        let msg = match held.take() {
            Some(m) => Some(m),
            None if refreshes => match rx.recv_deadline(next_refresh) {
                Ok(m) => Some(m),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            },
        };
        if refreshes && Instant::now() >= next_refresh {
            shared.library.refresh();
            next_refresh = Instant::now() + REFRESH_EVERY;
        }
        match msg {
            None => {}
            Some(RetrievalMsg::Lookup(first)) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(RetrievalMsg::Lookup(l)) => batch.push(l),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                lookup(shared, batch, &shared.retrieval_metrics[index]);
            }
            Some(RetrievalMsg::Http { sub, req }) => {
                let resp = crate::grounding::api::handle(
                    &req,
                    shared.admin_token.as_ref(),
                    &shared.sites,
                    &shared.library,
                );
                shared.send_to(sub, WorkerMsg::HttpAnswer { sub, resp });
            }
            Some(RetrievalMsg::Shutdown) => return,
        }
    }
}

/// Grounds a batch of answer jobs and hands each back to its worker.
fn lookup(shared: &Shared, batch: Vec<Lookup>, m: &crate::metrics::RetrievalMetrics) {
    let t = Instant::now();
    for l in &batch {
        m.wait.observe(t.saturating_duration_since(l.queued));
    }
    let asks: Vec<(&str, &str)> = batch
        .iter()
        .map(|l| (&*l.site, l.job.query.as_deref().unwrap_or_default()))
        .collect();
    let found = shared.library.ground_many(&asks);
    let took = t.elapsed();
    shared.retrieval_pace.observe(batch.len(), took);
    for _ in &batch {
        m.search.observe(took);
    }
    tracing::debug!(
        questions = batch.len(),
        us = t.elapsed().as_micros() as u64,
        "retrieved"
    );
    for (l, grounding) in batch.into_iter().zip(found) {
        if let Some(tx) = shared.inboxes.get(l.worker) {
            let _ = tx.send(WorkerMsg::Grounded {
                key: l.key,
                job: l.job,
                grounding,
            });
        }
    }
}
