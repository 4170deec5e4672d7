//! The I/O shell: one monoio runtime per core, each on its own thread, pinned,
//! with its own `SO_REUSEPORT` listener.
//!
//! Workers share no mutable state behind locks: each owns the sessions whose
//! tokens hash to it and the connections it accepted, and they talk through
//! flume channels. The sans-IO cores (`http`, `ws`, `chat`, `session`) decide;
//! this module moves bytes and carries out their effects.

mod answer;
mod conn;
mod desk;
mod persist;
mod retrieval;
mod routes;
mod sessions;
mod sweep;
pub mod sys;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use thiserror::Error;

use inference_client::{DriverKind, IoDriver};

use crate::config::Config;
use crate::metrics::WorkerMetrics;
use crate::sites::{SiteError, SiteRegistry};
use worker::WorkerMsg;

/// Descriptors kept back from the connection limit for listeners, rings,
/// event fds, logs and the store.
const FD_RESERVE: usize = 128;

/// What every worker can read: configuration, sites, metrics, and the way to
/// reach every other worker.
pub struct Shared {
    /// Effective configuration.
    pub config: Config,
    /// Sites.
    pub sites: SiteRegistry,
    /// One block per worker.
    pub metrics: Vec<WorkerMetrics>,
    /// The store's figures.
    pub store_stats: Arc<crate::store::StoreStats>,
    /// One block per retrieval thread.
    pub retrieval_metrics: Vec<crate::metrics::RetrievalMetrics>,
    /// The desk thread's gauges.
    pub desk_metrics: crate::metrics::DeskMetrics,
    /// The admin API's token (configured, or made at first start).
    pub admin_token: Option<crate::admin::AdminToken>,
    inboxes: Vec<flume::Sender<WorkerMsg>>,
    /// The agent desk's thread.
    desk: flume::Sender<desk::DeskMsg>,
    /// The sites' knowledge bases.
    pub library: Arc<crate::grounding::library::Library>,
    /// The retrieval threads.
    retrieval: flume::Sender<retrieval::RetrievalMsg>,
    /// How fast they go (admission counts a grounded answer's wait for them).
    retrieval_pace: crate::grounding::pace::RetrievalPace,
    /// Connections open across all workers.
    open_conns: AtomicUsize,
    /// Connections allowed before 503.
    pub max_connections: usize,
    /// Set once shutdown has begun.
    stopping: AtomicBool,
}

impl Shared {
    /// Sends `msg` to the worker that holds the connection `sub`.
    fn send_to(&self, sub: crate::ids::SubId, msg: WorkerMsg) {
        let worker = sub.worker();
        if let Some(tx) = self.inboxes.get(worker) {
            let _ = tx.send(msg);
        }
    }
}

/// Why the server cannot start or did not stop cleanly.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Sites in the configuration or data directory are invalid.
    #[error(transparent)]
    Sites(#[from] SiteError),
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// Directory.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The inference service cannot start (a bad endpoint URL, say).
    #[error("inference: {0}")]
    Inference(#[from] inference_client::InferenceError),
    /// The transcript store cannot be opened or closed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The agent desk's directory (accounts, canned replies) cannot be loaded.
    #[error("cannot load the agent desk: {0}")]
    DeskDirectory(#[source] crate::store::StoreError),
    /// The agent desk's thread cannot start.
    #[error("cannot start the agent desk: {0}")]
    DeskThread(#[source] std::io::Error),
    /// The admin token cannot be read or made.
    #[error(transparent)]
    FirstStart(#[from] crate::first_start::FirstStartError),
    /// The retrieval threads cannot start.
    #[error("cannot start the retrieval threads: {0}")]
    Retrieval(std::io::Error),
    /// A worker failed to start or stopped with an error.
    #[error("worker {worker}: {source}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// Cause.
        source: std::io::Error,
    },
}

/// A started server.
pub struct Running {
    /// The address it listens on (with the port resolved when 0 was asked).
    pub addr: SocketAddr,
    /// io driver of each worker (`None` for one that never reported it started).
    pub drivers: Vec<Option<DriverKind>>,
    /// The secrets this start made (the first start without `admin.token`),
    /// for the binary to show once.
    pub made: Option<crate::first_start::Made>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    desk: Option<JoinHandle<()>>,
    retrieval: Vec<JoinHandle<()>>,
    store: Option<crate::store::Store>,
    inference: Option<inference_client::Service>,
}

impl Running {
    /// Begins a graceful shutdown: stop accepting, close sessions with 1001,
    /// flush what is pending. Returns at once; [`Running::join`] waits.
    pub fn shutdown(&self) {
        if !self.shared.stopping.swap(true, Ordering::SeqCst) {
            for tx in &self.shared.inboxes {
                let _ = tx.send(WorkerMsg::Shutdown);
            }
            let _ = self.shared.desk.send(desk::DeskMsg::Shutdown);
        }
    }

    /// Waits for every worker to finish, then closes the store (its queue
    /// drained and committed).
    pub fn join(mut self) -> Result<(), ServerError> {
        let threads = std::mem::take(&mut self.threads);
        let mut first_err = None;
        for (worker, t) in threads.into_iter().enumerate() {
            let r = match t.join() {
                Ok(r) => r,
                Err(_) => Err(std::io::Error::other("worker thread panicked")),
            };
            if let Err(source) = r {
                first_err.get_or_insert(ServerError::Worker { worker, source });
            }
        }
        if let Some(d) = self.desk.take() {
            let _ = self.shared.desk.send(desk::DeskMsg::Shutdown);
            if d.join().is_err() {
                tracing::error!("the agent desk's thread panicked");
            }
        }
        // No worker asks for sources any more: stop retrieval (an embedding
        // call in progress still has the inference service)...
        for _ in &self.retrieval {
            let _ = self
                .shared
                .retrieval
                .send(retrieval::RetrievalMsg::Shutdown);
        }
        for t in std::mem::take(&mut self.retrieval) {
            if t.join().is_err() {
                tracing::error!("a retrieval thread panicked");
            }
        }
        // ...nor answers: stop the inference service, then make everything
        // durable.
        if let Some(service) = self.inference.take() {
            service.shutdown();
        }
        if let Some(store) = self.store.take() {
            if let Err(e) = store.close() {
                first_err.get_or_insert(ServerError::Store(e));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The inference service's settings from the gateway's configuration.
pub(crate) fn service_config(c: &Config) -> inference_client::ServiceConfig {
    use inference_client::{Backend, LatencyModel, ServiceConfig, SimOptions};
    use std::time::Duration;
    let inf = &c.inference;
    let backend = if inf.endpoints.is_empty() {
        let sim = &inf.sim;
        Backend::InProcess(SimOptions {
            latency: LatencyModel {
                prefill_us_per_token: sim.prefill_us_per_token,
                decode_step: Duration::from_secs_f64(sim.decode_step_ms / 1000.0),
                batch_slowdown: sim.batch_slowdown,
                kv_capacity: sim.kv_capacity,
                jitter: sim.jitter,
                seed: sim.seed,
                ..LatencyModel::default()
            },
            max_tokens: inf.max_tokens,
            ..SimOptions::default()
        })
    } else {
        Backend::Endpoints(inf.endpoint_configs())
    };
    ServiceConfig {
        backend,
        model: inf.model.clone(),
        api_key: inf.api_key(),
        ca_file: inf.ca_file.clone(),
        max_batch: inf.max_batch,
        max_wait: Duration::from_millis(inf.max_wait_ms),
        ttft_budget: Duration::from_millis(inf.ttft_budget_ms),
        queue_capacity: inf.queue_capacity,
        request_deadline: Duration::from_millis(inf.deadline_ms),
        io_driver: c.io_driver,
        ..ServiceConfig::default()
    }
}

/// Binds one `SO_REUSEPORT` listener.
fn bind_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Starts the workers and returns once every one of them is listening.
pub fn start(config: Config) -> Result<Running, ServerError> {
    let nofile = match sys::raise_nofile_limit() {
        Ok(n) => n as usize,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit");
            1024
        }
    };
    let max_connections = match config.limits.max_connections {
        0 => nofile.saturating_sub(FD_RESERVE).max(16),
        n => n,
    };
    if config.limits.max_connections + FD_RESERVE > nofile && config.limits.max_connections > 0 {
        tracing::warn!(
            max_connections,
            nofile,
            "max_connections is above the open-files limit: accepts will fail before 503 is sent"
        );
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let sites = SiteRegistry::load(&config.sites, Some(&config.data_dir))?;
    let n = config.worker_count();
    let mut store_cfg = crate::store::StoreConfig::new(config.data_dir.join("chat.sqlite3"));
    store_cfg.sync = match config.store.sync {
        crate::config::StoreSync::Normal => crate::store::SyncMode::Normal,
        crate::config::StoreSync::Full => crate::store::SyncMode::Full,
    };
    store_cfg.history_limit = config.session.history_items;
    let store = crate::store::Store::open(store_cfg)?;
    let mut directory = desk::load_directory(&store.handle(), std::time::Duration::from_secs(30))
        .map_err(ServerError::DeskDirectory)?;

    let first = bind_listener(config.listen).map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let addr = first.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut listeners = vec![first];
    for _ in 1..n {
        listeners.push(bind_listener(addr).map_err(|source| ServerError::Bind { addr, source })?);
    }
    // After the bind: a first start that cannot listen makes no secret it
    // would never show.
    let credentials = crate::first_start::credentials(
        config.admin.token.as_deref(),
        &config.data_dir,
        sites
            .get(crate::sites::DEMO_SITE)
            .map(|_| crate::sites::DEMO_SITE),
        &mut directory,
        |agent| desk::save_agent(&store.handle(), agent, std::time::Duration::from_secs(30)),
        persist::unix_ms(),
    )?;
    if let Some(m) = &credentials.made {
        tracing::info!(
            file = %config.data_dir.join(crate::first_start::ADMIN_TOKEN_FILE).display(),
            agent = ?m.agent.as_ref().map(|(a, _)| a.id),
            "first start: an admin token and a demo admin agent were made (shown once on stdout)"
        );
    }

    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| flume::unbounded()).unzip();
    let service = inference_client::Service::start(service_config(&config))?;
    // One client per worker; its events arrive in that worker's inbox.
    let clients: Vec<inference_client::Client> = txs
        .iter()
        .map(|tx| service.client(Box::new(worker::InboxSink(tx.clone()))))
        .collect();
    let (desk_tx, desk_rx) = flume::unbounded();
    let (retrieval_tx, retrieval_rx) = flume::unbounded();
    let pool_embedder = (config.knowledge.embedder == crate::config::EmbedderChoice::Pool)
        .then(|| crate::grounding::embedder::PoolEmbedder::new(&service, &config.inference.model));
    let library = Arc::new(retrieval::open_library(
        &config.data_dir,
        &config.knowledge,
        &sites,
        pool_embedder,
    ));
    let shared = Arc::new(Shared {
        desk: desk_tx.clone(),
        library,
        retrieval: retrieval_tx,
        retrieval_pace: Default::default(),
        metrics: (0..n).map(|_| WorkerMetrics::default()).collect(),
        store_stats: store.stats().clone(),
        retrieval_metrics: (0..config.knowledge.threads.max(1))
            .map(|_| crate::metrics::RetrievalMetrics::default())
            .collect(),
        desk_metrics: crate::metrics::DeskMetrics::default(),
        admin_token: Some(credentials.admin),
        sites,
        inboxes: txs,
        open_conns: AtomicUsize::new(0),
        max_connections,
        stopping: AtomicBool::new(false),
        config,
    });

    let desk_thread = desk::spawn(shared.clone(), store.handle(), directory, desk_tx, desk_rx)
        .map_err(ServerError::DeskThread)?;
    let retrieval_threads =
        retrieval::spawn(shared.clone(), retrieval_rx).map_err(ServerError::Retrieval)?;

    let store_handles: Vec<_> = (0..n).map(|_| store.handle()).collect();
    // Built once, before any worker starts: whatever fails from here on
    // stops and joins exactly what did start.
    let mut running = Running {
        addr,
        drivers: vec![None; n],
        made: credentials.made,
        shared: shared.clone(),
        threads: Vec::with_capacity(n),
        desk: Some(desk_thread),
        retrieval: retrieval_threads,
        store: Some(store),
        inference: Some(service),
    };
    let fail = |running: Running, worker: usize, source: std::io::Error| {
        running.shutdown();
        let _ = running.join();
        Err(ServerError::Worker { worker, source })
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<worker::Ready>();
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let workers = listeners
        .into_iter()
        .zip(rxs)
        .zip(clients)
        .zip(store_handles);
    for (id, (((listener, inbox), client), store_handle)) in workers.enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let choice = shared.config.io_driver;
        let pin = shared.config.pin_workers;
        let spawned = std::thread::Builder::new()
            .name(format!("lc-worker-{id}"))
            .spawn(move || {
                if pin {
                    if let Err(e) = monoio::utils::bind_to_cpu_set([id % cores]) {
                        tracing::warn!(worker = id, error = ?e, "cannot pin worker to its core");
                    }
                }
                let ready_on_err = ready.clone();
                let r = inference_client::runtime::block_on(choice, move |driver| {
                    worker::run(worker::Parts {
                        id,
                        shared,
                        listener,
                        inbox,
                        store: store_handle,
                        inference: client,
                        driver,
                        ready,
                    })
                });
                match r {
                    Ok(result) => result,
                    Err(e) => {
                        let copy = std::io::Error::new(e.kind(), e.to_string());
                        let _ = ready_on_err.send(Err((id, copy)));
                        Err(e)
                    }
                }
            });
        match spawned {
            Ok(t) => running.threads.push(t),
            Err(source) => return fail(running, id, source),
        }
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok((id, d))) => running.drivers[id] = Some(d),
            Ok(Err((worker, source))) => return fail(running, worker, source),
            Err(_) => break,
        }
    }
    let drivers = &running.drivers;
    let uring = drivers
        .iter()
        .filter(|d| **d == Some(DriverKind::Uring))
        .count();
    tracing::info!(
        %addr,
        workers = n,
        io_uring = uring,
        epoll = n - uring,
        max_connections,
        requested = ?shared.config.io_driver,
        "gateway listening"
    );
    if shared.config.io_driver == IoDriver::Auto && uring < n {
        tracing::warn!("some workers run on epoll: io_uring is unavailable here");
    }
    Ok(running)
}
