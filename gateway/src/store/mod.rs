//! Durable transcripts: the embedded SQLite store behind `ack`.
//!
//! One **writer thread** owns the only writing connection. The gateway's
//! worker threads each hold a [`StoreHandle`] and queue [`Write`]s on a flume
//! channel with a `done` callback. The writer takes every write queued (up to
//! `max_batch`), applies them in one transaction, commits once, and only then
//! calls each `done`: group commit, one WAL append (and in [`SyncMode::Full`]
//! one sync) for many messages. A `done` with `Ok` means the write survives a
//! crash of the gateway process ([`SyncMode::Normal`]) or of the machine
//! ([`SyncMode::Full`]); that is when the gateway may send `ack`.
//!
//! A **checkpoint thread** copies the WAL into the database file beside the
//! writer (SQLite's automatic checkpoint, which runs inside a commit and made
//! an `ack` wait for it, is off). Once the WAL is long and the checkpoint
//! thread has caught up, the writer restarts it with a short checkpoint of
//! its own; `Store::close` checkpoints everything and truncates the WAL.
//!
//! **Reader threads** (one by default) each own a read-only connection and
//! answer [`StoreHandle::load_session`], [`StoreHandle::list_conversations`]
//! and [`StoreHandle::transcript`]. With WAL, reads and the writer never block
//! each other; a read still sees every write queued before it (see `reader`).
//!
//! Callbacks run on the store's threads: they must be quick and must not block
//! (send a message to the worker's inbox and return). A callback is always
//! called exactly once: if the store closes before a request runs, it gets
//! [`StoreError::Closed`].
//!
//! The module is self-contained (plain byte arrays, strings and millisecond
//! timestamps), so it builds and is tested on its own.

mod error;
mod reader;
mod records;
pub mod schema;
mod stats;
mod writer;

#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::ids::{ConversationId, SessionKey};
pub use error::StoreError;
#[cfg(test)]
pub(crate) use records::{
    Assignment, ConversationState, CsatRating, Mark, OfflineMessage, PageInfo,
};
pub use records::{
    Author, CannedReply, ConversationSummary, DeskDirectory, PageCursor, StoredAgent, StoredItem,
    StoredSession, Transcript, Write,
};
pub use stats::StoreStats;
#[cfg(test)]
use stats::BATCH_BUCKETS;

use reader::{ReadCmd, ReadConn};
use writer::{Pending, Unit, WriteCmd, Writer};

/// A callback with the result of a request; runs on a store thread.
pub type Reply<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send>;

/// The callback of a write: `Ok` once the write is committed.
pub type Done = Reply<()>;

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `synchronous=NORMAL`: a commit is in the WAL file (the operating
    /// system's cache) before `done`; it survives a crash or kill of the
    /// gateway process, not a power loss. The WAL is synced at checkpoints.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is synced to disk before `done`; it
    /// also survives a power loss or kernel crash. Group commit shares one
    /// sync among a batch.
    Full,
}

impl SyncMode {
    fn pragma(self) -> &'static str {
        match self {
            SyncMode::Normal => "NORMAL",
            SyncMode::Full => "FULL",
        }
    }
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The database file; created (with its folder) if missing. The WAL and
    /// shared-memory files sit beside it (`-wal`, `-shm`).
    pub path: PathBuf,
    /// Durability of a commit.
    pub sync: SyncMode,
    /// Most writes in one transaction.
    pub max_batch: usize,
    /// Most items [`StoreHandle::load_session`] returns (the newest ones).
    pub history_limit: usize,
    /// Reader threads, each with its own read-only connection (at least 1).
    pub readers: usize,
    /// How long a statement waits for a lock held by another process (a backup, the sqlite3 shell).
    pub busy_timeout: Duration,
    /// WAL pages (4 KiB each) between two checkpoints. Checkpoints copy the
    /// WAL into the database file on a thread of their own, so a commit never
    /// waits for one (unless the WAL grows past 16 times this).
    pub checkpoint_pages: u32,
}

impl StoreConfig {
    /// The defaults for a file: `Normal` sync, batches of up to 512 writes,
    /// 200 history items, one reader, 5 s busy timeout, a checkpoint every
    /// 1000 WAL pages.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            path: path.into(),
            sync: SyncMode::Normal,
            max_batch: 512,
            history_limit: 200,
            readers: 1,
            busy_timeout: Duration::from_secs(5),
            checkpoint_pages: 1000,
        }
    }
}

/// Runs a callback exactly once: with the result, or with
/// [`StoreError::Closed`] if it is dropped unanswered (the store closed, a
/// thread stopped). A panicking callback is caught and logged, so it cannot
/// take a store thread down.
pub(crate) struct Callback<T>(Option<Reply<T>>);

impl<T> Callback<T> {
    fn new(reply: Option<Reply<T>>) -> Self {
        Callback(reply)
    }

    /// Answers the request.
    pub(crate) fn call(mut self, result: Result<T, StoreError>) {
        if let Some(f) = self.0.take() {
            run_callback(f, result);
        }
    }
}

impl<T> Drop for Callback<T> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            run_callback(f, Err(StoreError::Closed));
        }
    }
}

fn run_callback<T>(f: Reply<T>, result: Result<T, StoreError>) {
    if catch_unwind(AssertUnwindSafe(move || f(result))).is_err() {
        tracing::error!("a transcript store callback panicked");
    }
}

/// How far the writer has got, for reads that must see earlier writes.
#[derive(Debug, Default)]
struct Progress {
    /// Writes taken from the queue and finished (committed or failed).
    applied: u64,
    /// The writer thread has stopped.
    closed: bool,
}

/// State shared by the handles and the store's threads.
pub(crate) struct Shared {
    stats: Arc<StoreStats>,
    /// Writes handed to the queue, counted *before* each send: when a thread's
    /// send has returned, its write is within the first `sent` of the queue.
    sent: AtomicU64,
    progress: Mutex<Progress>,
    applied_cv: Condvar,
    /// Set once the store is closing: writes are refused at once.
    closing: AtomicBool,
    /// WAL frames the checkpoint thread's last checkpoint had copied.
    checkpointed_frames: AtomicU64,
    #[cfg(test)]
    fail_commits: std::sync::atomic::AtomicU32,
}

impl Shared {
    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        // The lock guards two numbers; a panic cannot leave them half-written.
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer finished `n` more writes.
    fn writes_applied(&self, n: u64) {
        self.progress().applied += n;
        self.applied_cv.notify_all();
    }

    /// The writer thread is gone.
    fn writer_closed(&self) {
        self.progress().closed = true;
        self.applied_cv.notify_all();
    }

    /// Blocks until the first `after` writes are finished or the writer is gone.
    fn wait_applied(&self, after: u64) {
        let p = self.progress();
        let _p = self
            .applied_cv
            .wait_while(p, |p| p.applied < after && !p.closed)
            .unwrap_or_else(|e| e.into_inner());
    }

    #[cfg(test)]
    fn take_commit_failure(&self) -> bool {
        self.fail_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The transcript store: owns the writer, checkpoint and reader threads.
///
/// Call [`Store::close`] on graceful shutdown; dropping it does the same
/// (errors are then only logged). Either way nothing committed is lost: a
/// commit is in the WAL file before its `done` runs.
pub struct Store {
    handle: StoreHandle,
    path: PathBuf,
    writer: Option<JoinHandle<Connection>>,
    checkpointer: Option<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
}

/// A cheap, cloneable way to reach the store from any thread.
#[derive(Clone)]
pub struct StoreHandle {
    writes: flume::Sender<WriteCmd>,
    reads: flume::Sender<ReadCmd>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn open_err(path: &Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Open { path, what, source }
}

fn migrate_err(path: &Path, e: schema::MigrateError) -> StoreError {
    let path = path.to_path_buf();
    match e {
        schema::MigrateError::ForeignFile { application_id } => StoreError::ForeignFile {
            path,
            application_id,
        },
        schema::MigrateError::TooNew { found, supported } => StoreError::SchemaTooNew {
            path,
            found,
            supported,
        },
        schema::MigrateError::Step {
            version,
            name,
            source,
        } => StoreError::Migrate {
            path,
            version,
            name,
            source,
        },
        schema::MigrateError::Sql(source) => StoreError::Open {
            path,
            what: "reading the schema version",
            source,
        },
    }
}

impl Store {
    /// Opens (creating if needed) the store at `cfg.path`, brings its schema
    /// up to date, and starts the writer and reader threads.
    pub fn open(cfg: StoreConfig) -> Result<Store, StoreError> {
        let path = cfg.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err(&path, "opening the file"))?;
        conn.busy_timeout(cfg.busy_timeout)
            .map_err(open_err(&path, "setting busy_timeout"))?;
        // Refuse another program's file (or a newer schema) before touching it.
        schema::inspect(&conn, schema::MIGRATIONS).map_err(|e| migrate_err(&path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err(&path, "switching to WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal { path, mode });
        }
        // Our values only: PRAGMA takes no bound parameters.
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {};
             PRAGMA foreign_keys = ON;
             PRAGMA journal_size_limit = {};
             PRAGMA temp_store = MEMORY;",
            cfg.sync.pragma(),
            64 * 1024 * 1024,
        ))
        .map_err(open_err(&path, "setting pragmas"))?;
        let from =
            schema::migrate(&mut conn, schema::MIGRATIONS).map_err(|e| migrate_err(&path, e))?;
        conn.set_prepared_statement_cache_capacity(32);
        // Replaces SQLite's automatic checkpoint on this connection.
        conn.wal_hook(Some(writer::record_wal_pages));

        // The checkpoint thread's connection: same durability as the writer's,
        // since a checkpoint syncs the WAL (Normal) and the database file.
        let checkpoint_conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err(&path, "opening the checkpoint connection"))?;
        checkpoint_conn
            .execute_batch(&format!(
                "PRAGMA synchronous = {}; PRAGMA wal_autocheckpoint = 0;",
                cfg.sync.pragma()
            ))
            .map_err(open_err(&path, "setting pragmas"))?;

        let mut read_conns = Vec::new();
        for _ in 0..cfg.readers.max(1) {
            let rc = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err(&path, "opening a read-only connection"))?;
            rc.busy_timeout(cfg.busy_timeout)
                .map_err(open_err(&path, "setting busy_timeout"))?;
            rc.set_prepared_statement_cache_capacity(16);
            read_conns.push(ReadConn {
                conn: rc,
                path: path.clone(),
                history_limit: cfg.history_limit,
            });
        }

        let shared = Arc::new(Shared {
            stats: Arc::new(StoreStats::default()),
            sent: AtomicU64::new(0),
            progress: Mutex::new(Progress::default()),
            applied_cv: Condvar::new(),
            closing: AtomicBool::new(false),
            checkpointed_frames: AtomicU64::new(0),
            #[cfg(test)]
            fail_commits: Default::default(),
        });
        let (write_tx, write_rx) = flume::unbounded();
        let (read_tx, read_rx) = flume::unbounded();
        let (checkpoint_tx, checkpoint_rx) = flume::bounded(1);
        let interval = u64::from(cfg.checkpoint_pages.max(1));
        let handle = StoreHandle {
            writes: write_tx,
            reads: read_tx,
            shared: Arc::clone(&shared),
        };
        let writer = Writer {
            conn,
            path: path.clone(),
            max_batch: cfg.max_batch.max(1),
            rx: write_rx,
            shared: Arc::clone(&shared),
            checkpoint_pages: interval,
            checkpoint_tx,
            last_wake: Default::default(),
            last_own: Default::default(),
        };
        let writer = std::thread::Builder::new()
            .name("lc-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| StoreError::Spawn {
                thread: "writer",
                source,
            })?;
        let mut store = Store {
            handle,
            path: path.clone(),
            writer: Some(writer),
            checkpointer: None,
            readers: Vec::new(),
        };
        let for_checkpoints = Arc::clone(&shared);
        let checkpointer = std::thread::Builder::new()
            .name("lc-store-checkpoint".into())
            .spawn(move || {
                run_checkpoints(checkpoint_conn, checkpoint_rx, &for_checkpoints, interval)
            })
            .map_err(|source| StoreError::Spawn {
                thread: "checkpoint",
                source,
            })?;
        store.checkpointer = Some(checkpointer);
        for (i, rc) in read_conns.into_iter().enumerate() {
            let rx = read_rx.clone();
            let shared = Arc::clone(&shared);
            let reader = std::thread::Builder::new()
                .name(format!("lc-store-reader-{i}"))
                .spawn(move || reader::run(rc, rx, &shared))
                .map_err(|source| StoreError::Spawn {
                    thread: "reader",
                    source,
                })?;
            store.readers.push(reader);
        }
        tracing::info!(
            path = %path.display(),
            sync = ?cfg.sync,
            schema_version = schema::current_version(),
            migrated_from = from,
            max_batch = cfg.max_batch,
            readers = cfg.readers.max(1),
            "transcript store open"
        );
        Ok(store)
    }

    /// A handle for a worker thread.
    pub fn handle(&self) -> StoreHandle {
        self.handle.clone()
    }

    /// The store's counters.
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.handle.shared.stats
    }

    /// Applies every write already queued, answers the reads already queued,
    /// checkpoints the WAL into the database file (`TRUNCATE`), and stops the
    /// threads. Call it after the workers have stopped writing: a write queued
    /// after this gets [`StoreError::Closed`].
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let shared = &self.handle.shared;
        // Refuse new writes at once; what is queued is still applied.
        shared.closing.store(true, Ordering::SeqCst);
        let _ = self.handle.writes.send(WriteCmd::Shutdown);
        let conn = writer.join();
        // The writer dropped the checkpoint thread's channel: it ends.
        if let Some(c) = self.checkpointer.take() {
            if c.join().is_err() {
                tracing::error!("transcript store: the checkpoint thread panicked");
            }
        }
        for _ in &self.readers {
            let _ = self.handle.reads.send(ReadCmd::Shutdown);
        }
        let mut result = Ok(());
        for r in self.readers.drain(..) {
            if r.join().is_err() {
                result = Err(StoreError::Panicked { thread: "reader" });
            }
        }
        let conn = conn.map_err(|_| StoreError::Panicked { thread: "writer" })?;
        // The other connections are gone: the checkpoint can move the whole
        // WAL into the file and truncate it.
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|source| StoreError::Sql {
                path: self.path.clone(),
                what: "the checkpoint on close".into(),
                source,
            })?;
        if busy != 0 {
            tracing::warn!(
                path = %self.path.display(),
                "transcript store: the checkpoint on close could not finish (another process reads the file); the WAL stays"
            );
        }
        conn.close().map_err(|(_, source)| StoreError::Sql {
            path: self.path.clone(),
            what: "closing the database".into(),
            source,
        })?;
        tracing::info!(path = %self.path.display(), "transcript store closed");
        result
    }
}

/// The checkpoint thread: a `PASSIVE` checkpoint each time the writer asks.
/// It runs beside the writer (WAL allows it), so commits do not wait for the
/// database file to be written and synced. While the WAL is long it goes
/// again at once: each pass has less to copy, until the writer can restart
/// the WAL with a short checkpoint of its own (see `writer::RESTART_FACTOR`).
fn run_checkpoints(conn: Connection, wake: flume::Receiver<()>, shared: &Shared, interval: u64) {
    let stats = &shared.stats;
    while wake.recv().is_ok() {
        for _pass in 0..8 {
            let start = Instant::now();
            // (busy, frames in the WAL, frames copied into the database file)
            let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
            let (frames, copied) = match r {
                Ok((f, c)) => (u64::try_from(f).unwrap_or(0), u64::try_from(c).unwrap_or(0)),
                Err(e) => {
                    tracing::warn!(error = %e, "transcript store: checkpoint failed");
                    break;
                }
            };
            shared.checkpointed_frames.store(copied, Ordering::Relaxed);
            stats.checkpoints.fetch_add(1, Ordering::Relaxed);
            stats.checkpoint_latency.observe(start.elapsed());
            if frames < writer::RESTART_FACTOR * interval {
                break;
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "transcript store: closing on drop failed");
        }
    }
}

impl StoreHandle {
    /// Queues a write. `done` runs on the writer thread once the write is
    /// committed (`Ok`), or with the error that stopped it; a write that fails
    /// fails alone, the rest of its batch is stored. Writes queued from one
    /// thread are applied in the order queued.
    pub fn write(&self, write: Write, done: Option<Done>) {
        self.queue(Unit::One(write), done);
    }

    /// Queues several writes to be stored all or none (one savepoint inside
    /// the batch's transaction), with one `done`: for a session's first
    /// message, say, `SessionCreated` and the `Item` together. If one fails,
    /// none is stored and `done` gets that write's error.
    pub fn write_many(&self, writes: Vec<Write>, done: Option<Done>) {
        self.queue(Unit::Many(writes), done);
    }

    fn queue(&self, unit: Unit, done: Option<Done>) {
        let done = Callback::new(done);
        if self.shared.closing.load(Ordering::Relaxed) {
            done.call(Err(StoreError::Closed));
            return;
        }
        let stats = &self.shared.stats;
        // Counted before the send (see `Shared::sent`).
        self.shared.sent.fetch_add(1, Ordering::SeqCst);
        stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        let p = Pending {
            unit,
            done,
            queued_at: Instant::now(),
        };
        if let Err(flume::SendError(cmd)) = self.writes.send(WriteCmd::Write(p)) {
            // The writer is gone; dropping the write answers `done` with `Closed`.
            stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
            drop(cmd);
        }
    }

    /// Loads a session by its token: its current conversation with the last
    /// `history_limit` items (ascending seq), the next seq, and every visitor
    /// message id with its seq. `None` for an unknown token.
    pub fn load_session(&self, key: &SessionKey, reply: Reply<Option<StoredSession>>) {
        let key = *key;
        self.read(reply, move |rc| rc.load_session(&key));
    }

    /// A site's conversations, newest first (by start time), at most `limit`,
    /// continuing after `before` (the last line of the previous page, see
    /// [`ConversationSummary::cursor`]).
    pub fn list_conversations(
        &self,
        site: &str,
        limit: usize,
        before: Option<PageCursor>,
        reply: Reply<Vec<ConversationSummary>>,
    ) {
        let site = site.to_owned();
        self.read(reply, move |rc| rc.list_conversations(&site, limit, before));
    }

    /// A whole conversation with every item; `None` if it is not stored.
    pub fn transcript(&self, conversation: &ConversationId, reply: Reply<Option<Transcript>>) {
        let conversation = *conversation;
        self.read(reply, move |rc| rc.transcript(&conversation));
    }

    /// Every agent account and canned reply (the agent desk loads them at start).
    pub fn load_desk(&self, reply: Reply<DeskDirectory>) {
        self.read(reply, move |rc| rc.load_desk());
    }

    /// Writes queued and not yet taken by the writer: the gateway can refuse
    /// new messages (`busy`) when this grows past what its ack budget allows.
    #[cfg(test)]
    pub fn queue_depth(&self) -> u64 {
        self.shared.stats.queue_depth.load(Ordering::Relaxed).max(0) as u64
    }

    fn read<T: Send + 'static>(
        &self,
        reply: Reply<T>,
        query: impl FnOnce(&mut ReadConn) -> Result<T, StoreError> + Send + 'static,
    ) {
        let reply = Callback::new(Some(reply));
        let shared = Arc::clone(&self.shared);
        // Every write queued before this read is applied before it runs.
        let after = self.shared.sent.load(Ordering::SeqCst);
        let job: reader::ReadJob = Box::new(move |rc| {
            let r = query(rc);
            if r.is_err() {
                shared.stats.read_errors.fetch_add(1, Ordering::Relaxed);
            }
            reply.call(r);
        });
        let stats = &self.shared.stats;
        stats.read_queue_depth.fetch_add(1, Ordering::Relaxed);
        let cmd = ReadCmd::Read {
            after,
            queued_at: Instant::now(),
            job,
        };
        if let Err(flume::SendError(cmd)) = self.reads.send(cmd) {
            stats.read_queue_depth.fetch_sub(1, Ordering::Relaxed);
            drop(cmd);
        }
    }
}
