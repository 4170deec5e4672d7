//! The writer thread: the only connection that writes, and group commit.
//!
//! The thread blocks for the first queued write, takes whatever else is queued
//! (up to `max_batch`), applies the lot in one transaction, commits once (one
//! WAL append, and in `Full` mode one sync, for the whole batch), and only then
//! calls each write's `done`, in queue order. Nothing waits on a timer: while
//! one commit syncs, the next batch gathers in the queue by itself.
//!
//! A write that fails inside a batch (a constraint, an unknown conversation)
//! fails alone: each write is one statement, or a savepoint around several,
//! so SQLite undoes just it and the batch goes on. Should the transaction
//! itself fail (SQLite rolled it back, or `COMMIT` failed: disk full, I/O
//! error), the batch is retried one write per transaction, so every write gets
//! its own verdict and none is lost silently.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::records::{StoredItem, Write};
use super::{Callback, Shared, StoreError};
use crate::ids::{ConversationId, SessionKey};

/// What one `done` answers for: a write, or several applied all or nothing.
pub(super) enum Unit {
    One(Write),
    Many(Vec<Write>),
}

impl Unit {
    /// The first write's kind, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Unit::One(w) => w.kind(),
            Unit::Many(ws) => ws.first().map_or("an empty group of writes", Write::kind),
        }
    }

    fn describe(&self) -> String {
        match self {
            Unit::One(w) => describe(w),
            Unit::Many(ws) => format!(
                "{} writes starting with {}",
                ws.len(),
                ws.first().map_or_else(String::new, describe)
            ),
        }
    }
}

/// A write waiting in the queue.
pub(super) struct Pending {
    pub unit: Unit,
    pub done: Callback<()>,
    pub queued_at: Instant,
}

/// What the writer thread receives.
// Nearly every message is a write: boxing it would cost an allocation per write.
#[allow(clippy::large_enum_variant)]
pub(super) enum WriteCmd {
    Write(Pending),
    /// Apply everything queued, then stop.
    Shutdown,
}

/// How a write that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stored,
    /// A visitor item already stored: a resend.
    Duplicate,
}

pub(super) struct Writer {
    pub conn: Connection,
    pub path: PathBuf,
    pub max_batch: usize,
    pub rx: flume::Receiver<WriteCmd>,
    pub shared: Arc<Shared>,
    /// WAL pages between two checkpoints.
    pub checkpoint_pages: u64,
    /// Wakes the checkpoint thread (bounded to 1: requests coalesce).
    pub checkpoint_tx: flume::Sender<()>,
    /// WAL size when the checkpoint thread was last woken.
    pub last_wake: Cell<u64>,
    /// WAL size when the writer last checkpointed by itself.
    pub last_own: Cell<u64>,
}

/// The WAL starts again from its beginning only when it is wholly copied into
/// the database file before the writer's next transaction starts, which a
/// checkpoint beside a busy writer never achieves. So once the WAL holds this
/// many checkpoint intervals and the checkpoint thread has caught up to
/// within a quarter interval, the writer copies that rest itself (a short
/// stall: a few pages and the syncs), and the WAL restarts.
pub(super) const RESTART_FACTOR: u64 = 4;

/// Past this many intervals the checkpoint thread is not keeping up at all:
/// the writer checkpoints whatever is left, however long it takes, so the WAL
/// (and the time to read through it) stays bounded.
const FORCE_FACTOR: u64 = 16;

thread_local! {
    /// Pages in the WAL after the writer thread's last commit (SQLite's WAL
    /// hook runs on the committing thread, and each store has its own writer
    /// thread).
    static WAL_PAGES: Cell<u64> = const { Cell::new(0) };
}

/// SQLite's WAL hook: records the WAL's size. Installing it also turns off
/// SQLite's automatic checkpoint on the writer's connection (the two share
/// the hook), which is the point: checkpoints run on their own thread.
pub(super) fn record_wal_pages(
    _: &rusqlite::hooks::Wal,
    pages: std::ffi::c_int,
) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(u64::try_from(pages).unwrap_or(0)));
    Ok(())
}

/// Tells waiting readers that no more writes will be applied, however the
/// writer thread ends (a panic included).
struct ClosedOnExit<'a>(&'a Shared);

impl Drop for ClosedOnExit<'_> {
    fn drop(&mut self) {
        self.0.writer_closed();
    }
}

impl Writer {
    /// The thread's body. Returns its connection when the store is closed
    /// (after applying everything queued) or every handle is gone; the caller
    /// checkpoints and closes it once the readers have stopped.
    pub fn run(self) -> Connection {
        let shared = Arc::clone(&self.shared);
        let _closed = ClosedOnExit(&shared);
        let mut batch: Vec<Pending> = Vec::with_capacity(self.max_batch);
        let mut shutdown = false;
        loop {
            if !shutdown {
                match self.rx.recv() {
                    Ok(cmd) => self.take(cmd, &mut batch, &mut shutdown),
                    Err(flume::RecvError::Disconnected) => break,
                }
            }
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(cmd) => self.take(cmd, &mut batch, &mut shutdown),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                if shutdown {
                    break;
                }
                continue;
            }
            self.run_batch(&mut batch);
        }
        self.conn
    }

    fn take(&self, cmd: WriteCmd, batch: &mut Vec<Pending>, shutdown: &mut bool) {
        match cmd {
            WriteCmd::Write(p) => {
                self.shared.stats.queue_depth.fetch_sub(1, Relaxed);
                batch.push(p);
            }
            WriteCmd::Shutdown => *shutdown = true,
        }
    }

    /// Applies, commits, then answers: every `done` of the batch runs after
    /// the commit that made its write durable.
    fn run_batch(&self, batch: &mut Vec<Pending>) {
        let stats = &self.shared.stats;
        let results = match self.apply_batch(batch) {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    writes = batch.len(),
                    path = %self.path.display(),
                    "transcript store: a batch's transaction failed; retrying its writes one by one"
                );
                stats.batch_retries.fetch_add(1, Relaxed);
                self.apply_each(batch)
            }
        };
        // Readers waiting for these writes may go now.
        self.shared.writes_applied(batch.len() as u64);
        for (p, r) in batch.drain(..).zip(results) {
            let r = match r {
                Ok(Outcome::Stored) => {
                    stats.writes.fetch_add(1, Relaxed);
                    Ok(())
                }
                Ok(Outcome::Duplicate) => {
                    stats.writes.fetch_add(1, Relaxed);
                    stats.duplicates.fetch_add(1, Relaxed);
                    Ok(())
                }
                Err(e) => {
                    stats.write_errors.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, "transcript store: a write failed");
                    Err(e)
                }
            };
            stats.ack_latency.observe(p.queued_at.elapsed());
            p.done.call(r);
        }
        // After the acks: a checkpoint of the writer's own should not delay them.
        self.maybe_checkpoint();
    }

    /// One transaction for the whole batch. `Err` when the transaction itself
    /// failed, so nothing of the batch is stored.
    fn apply_batch(
        &self,
        batch: &[Pending],
    ) -> Result<Vec<Result<Outcome, StoreError>>, rusqlite::Error> {
        let start = Instant::now();
        exec(&self.conn, "BEGIN IMMEDIATE")?;
        let mut results = Vec::with_capacity(batch.len());
        for p in batch {
            let r = apply_unit(&self.conn, &self.path, &p.unit);
            if r.is_err() && self.conn.is_autocommit() {
                // SQLite rolled the whole transaction back (disk full, I/O error).
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                    Some(format!(
                        "the transaction was rolled back by SQLite during a {} write",
                        p.unit.kind()
                    )),
                ));
            }
            results.push(r);
        }
        if let Err(e) = self.commit() {
            self.rollback();
            return Err(e);
        }
        self.committed(start, batch.len());
        Ok(results)
    }

    /// The fallback: one transaction per write.
    fn apply_each(&self, batch: &[Pending]) -> Vec<Result<Outcome, StoreError>> {
        batch
            .iter()
            .map(|p| {
                let start = Instant::now();
                let sql_err = |source| StoreError::Sql {
                    path: self.path.clone(),
                    what: p.unit.describe(),
                    source,
                };
                exec(&self.conn, "BEGIN IMMEDIATE").map_err(sql_err)?;
                let r = apply_unit(&self.conn, &self.path, &p.unit);
                if r.is_err() {
                    self.rollback();
                    return r;
                }
                if let Err(e) = exec(&self.conn, "COMMIT") {
                    self.rollback();
                    return Err(sql_err(e));
                }
                self.committed(start, 1);
                r
            })
            .collect()
    }

    fn commit(&self) -> Result<(), rusqlite::Error> {
        #[cfg(test)]
        if self.shared.take_commit_failure() {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                Some("commit failure injected by a test".into()),
            ));
        }
        exec(&self.conn, "COMMIT")
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = exec(&self.conn, "ROLLBACK") {
                tracing::warn!(error = %e, "transcript store: ROLLBACK failed");
            }
        }
    }

    fn committed(&self, start: Instant, writes: usize) {
        let stats = &self.shared.stats;
        stats.commits.fetch_add(1, Relaxed);
        stats.commit_latency.observe(start.elapsed());
        stats.observe_batch(writes);
    }

    /// Wakes the checkpoint thread each time another `checkpoint_pages` pages
    /// are in the WAL, and restarts the WAL when it is long (see [`RESTART_FACTOR`]).
    fn maybe_checkpoint(&self) {
        let pages = WAL_PAGES.with(Cell::get);
        let interval = self.checkpoint_pages;
        if pages < self.last_wake.get() {
            // The WAL was restarted from its beginning.
            self.last_wake.set(0);
            self.last_own.set(0);
            self.shared.checkpointed_frames.store(0, Relaxed);
        }
        if pages >= self.last_wake.get() + interval {
            self.last_wake.set(pages);
            let _ = self.checkpoint_tx.try_send(());
        }
        if pages < RESTART_FACTOR * interval || pages < self.last_own.get() + interval {
            return;
        }
        let behind = pages.saturating_sub(self.shared.checkpointed_frames.load(Relaxed));
        if behind <= interval / 4 || pages >= FORCE_FACTOR * interval {
            self.last_own.set(pages);
            let start = Instant::now();
            match self
                .conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            {
                Ok(()) => {
                    let stats = &self.shared.stats;
                    stats.writer_checkpoints.fetch_add(1, Relaxed);
                    stats.writer_checkpoint_latency.observe(start.elapsed());
                }
                Err(e) => tracing::warn!(error = %e, "transcript store: checkpoint failed"),
            }
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    run(conn, sql, []).map(drop)
}

/// Runs one cached statement; the rows it changed.
fn run(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// The SHA-256 of a session token: what the `sessions` table keys on.
pub(super) fn key_hash(key: &SessionKey) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn describe(w: &Write) -> String {
    match w.conversation() {
        Some(c) => format!("storing {} of conversation {}", w.kind(), c),
        None => format!("storing {}", w.kind()),
    }
}

/// Applies a unit inside the open transaction: several writes under a
/// savepoint, so that they are stored all or not at all.
fn apply_unit(conn: &Connection, path: &Path, unit: &Unit) -> Result<Outcome, StoreError> {
    let ws = match unit {
        Unit::One(w) => return apply(conn, path, w),
        Unit::Many(ws) => ws,
    };
    let sql_err = |source| StoreError::Sql {
        path: path.to_path_buf(),
        what: unit.describe(),
        source,
    };
    exec(conn, "SAVEPOINT unit").map_err(sql_err)?;
    let mut outcome = Outcome::Duplicate;
    for w in ws {
        match apply(conn, path, w) {
            Ok(Outcome::Stored) => outcome = Outcome::Stored,
            Ok(Outcome::Duplicate) => {}
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = exec(conn, "ROLLBACK TO unit");
                    let _ = exec(conn, "RELEASE unit");
                }
                return Err(e);
            }
        }
    }
    exec(conn, "RELEASE unit").map_err(sql_err)?;
    // A group of resends only is reported as one.
    Ok(if ws.is_empty() {
        Outcome::Stored
    } else {
        outcome
    })
}

/// Applies one write inside the open transaction.
fn apply(conn: &Connection, path: &Path, w: &Write) -> Result<Outcome, StoreError> {
    let sql_err = |source| StoreError::Sql {
        path: path.to_path_buf(),
        what: describe(w),
        source,
    };
    let unknown_conversation = |c: &ConversationId| StoreError::UnknownConversation {
        what: w.kind(),
        conversation: c.to_string(),
    };
    // An UPDATE or INSERT .. SELECT of one conversation: no row means no such conversation.
    let one_row = |changed: usize, c: &ConversationId| {
        if changed == 0 {
            Err(unknown_conversation(c))
        } else {
            Ok(Outcome::Stored)
        }
    };
    match w {
        Write::SessionCreated {
            key,
            conversation,
            site,
            created_ms,
        } => {
            // Two statements: a savepoint makes them one change, undone together.
            exec(conn, "SAVEPOINT session_created").map_err(sql_err)?;
            let r = (|| {
                conn.prepare_cached(
                    "INSERT INTO sessions (key_hash, site, created_ms, last_seen_ms)
                     VALUES (?1, ?2, ?3, ?3)",
                )?
                .execute(params![key_hash(key), site, created_ms])?;
                let session_id = conn.last_insert_rowid();
                conn.prepare_cached(
                    "INSERT INTO conversations (public_id, session_id, site, started_ms)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![conversation, session_id, site, created_ms])?;
                Ok(())
            })();
            match r {
                Ok(()) => {
                    exec(conn, "RELEASE session_created").map_err(sql_err)?;
                    Ok(Outcome::Stored)
                }
                Err(e) => {
                    if !conn.is_autocommit() {
                        let _ = exec(conn, "ROLLBACK TO session_created");
                        let _ = exec(conn, "RELEASE session_created");
                    }
                    Err(sql_err(e))
                }
            }
        }
        Write::SessionSeen { key, at_ms } => {
            let n = run(
                conn,
                "UPDATE sessions SET last_seen_ms = max(last_seen_ms, ?2) WHERE key_hash = ?1",
                params![key_hash(key), at_ms],
            )
            .map_err(sql_err)?;
            if n == 0 {
                return Err(StoreError::UnknownSession { what: w.kind() });
            }
            Ok(Outcome::Stored)
        }
        Write::ConversationOpened {
            key,
            conversation,
            site,
            started_ms,
        } => {
            // The new conversation inherits the page info of the session's newest one.
            let n = run(
                conn,
                "INSERT INTO conversations
                         (public_id, session_id, site, started_ms, lang, page, referrer)
                     SELECT ?2, s.id, ?3, ?4, p.lang, p.page, p.referrer
                     FROM sessions s
                     LEFT JOIN conversations p
                       ON p.id = (SELECT max(id) FROM conversations WHERE session_id = s.id)
                     WHERE s.key_hash = ?1",
                params![key_hash(key), conversation, site, started_ms],
            )
            .map_err(sql_err)?;
            if n == 0 {
                return Err(StoreError::UnknownSession { what: w.kind() });
            }
            Ok(Outcome::Stored)
        }
        Write::PageInfo {
            conversation,
            lang,
            page,
            referrer,
        } => {
            let n = run(
                conn,
                "UPDATE conversations SET lang = ?2, page = ?3, referrer = ?4
                     WHERE public_id = ?1",
                params![conversation, lang, page, referrer],
            )
            .map_err(sql_err)?;
            one_row(n, conversation)
        }
        Write::Item(item) => {
            let conv: Option<i64> = conn
                .prepare_cached("SELECT id FROM conversations WHERE public_id = ?1")
                .and_then(|mut s| s.query_row([&item.conversation], |r| r.get(0)).optional())
                .map_err(sql_err)?;
            let Some(conv) = conv else {
                return Err(unknown_conversation(&item.conversation));
            };
            let n = insert_item(conn, conv, item).map_err(sql_err)?;
            Ok(if n == 0 {
                Outcome::Duplicate
            } else {
                Outcome::Stored
            })
        }
        Write::NeedsHuman {
            conversation,
            reason,
            at_ms,
        } => {
            let n = run(
                conn,
                "UPDATE conversations SET needs_human_reason = ?2, needs_human_ms = ?3
                     WHERE public_id = ?1",
                params![conversation, reason, at_ms],
            )
            .map_err(sql_err)?;
            one_row(n, conversation)
        }
        Write::Assigned {
            conversation,
            agent,
            at_ms,
        } => {
            let n = run(
                conn,
                "UPDATE conversations SET agent = ?2, assigned_ms = ?3 WHERE public_id = ?1",
                params![conversation, agent, at_ms],
            )
            .map_err(sql_err)?;
            one_row(n, conversation)
        }
        Write::Ended {
            conversation,
            reason,
            at_ms,
        } => {
            let n = run(
                conn,
                "UPDATE conversations SET ended_reason = ?2, ended_ms = ?3
                     WHERE public_id = ?1",
                params![conversation, reason, at_ms],
            )
            .map_err(sql_err)?;
            one_row(n, conversation)
        }
        Write::Csat {
            conversation,
            score,
            comment,
        } => {
            if !(1..=5).contains(score) {
                return Err(StoreError::Invalid {
                    what: w.kind(),
                    problem: format!("score {score} is not between 1 and 5"),
                });
            }
            let n = run(
                conn,
                "UPDATE conversations SET csat_score = ?2, csat_comment = ?3
                     WHERE public_id = ?1",
                params![conversation, score, comment],
            )
            .map_err(sql_err)?;
            one_row(n, conversation)
        }
        Write::OfflineMessage {
            conversation,
            email,
            text,
            at_ms,
        } => {
            let n = run(
                conn,
                "INSERT INTO offline_messages (conv, email, text, at_ms)
                     SELECT id, ?2, ?3, ?4 FROM conversations WHERE public_id = ?1",
                params![conversation, email, text, at_ms],
            )
            .map_err(sql_err)?;
            one_row(n, conversation)
        }
        Write::AgentSaved(a) => {
            let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
            conn.prepare_cached(
                "INSERT INTO agents (id, name, role, languages, skills, capacity, sites, token_hash, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET name = ?2, role = ?3, languages = ?4, skills = ?5,
                     capacity = ?6, sites = ?7, token_hash = ?8",
            )
            .and_then(|mut s| {
                s.execute(params![
                    a.id,
                    a.name,
                    a.role,
                    json(&a.languages),
                    json(&a.skills),
                    a.capacity,
                    json(&a.sites),
                    a.token_hash,
                    a.created_ms
                ])
            })
            .map_err(sql_err)?;
            Ok(Outcome::Stored)
        }
        Write::AgentDeleted { id } => {
            run(conn, "DELETE FROM agents WHERE id = ?1", params![id]).map_err(sql_err)?;
            Ok(Outcome::Stored)
        }
        Write::CannedSaved(c) => {
            run(
                conn,
                "INSERT INTO canned_replies (site, shortcut, text) VALUES (?1, ?2, ?3)
                 ON CONFLICT (site, shortcut) DO UPDATE SET text = ?3",
                params![c.site, c.shortcut, c.text],
            )
            .map_err(sql_err)?;
            Ok(Outcome::Stored)
        }
        Write::CannedDeleted { site, shortcut } => {
            run(
                conn,
                "DELETE FROM canned_replies WHERE site = ?1 AND shortcut = ?2",
                params![site, shortcut],
            )
            .map_err(sql_err)?;
            Ok(Outcome::Stored)
        }
    }
}

/// Inserts an item; 0 rows when its (conversation, client id) is already stored.
fn insert_item(conn: &Connection, conv: i64, item: &StoredItem) -> rusqlite::Result<usize> {
    // The conflict target names only the client-id index: a clash on
    // (conversation, seq) with another client id stays an error.
    conn.prepare_cached(
        "INSERT INTO items (conv, seq, author, text, ts_ms, client_id, reply_id, in_reply_to,
                            sources, confidence, ttft_ms, total_ms, agent_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (conv, client_id) WHERE client_id IS NOT NULL DO NOTHING",
    )?
    .execute(params![
        conv,
        item.seq,
        item.author.as_str(),
        item.text,
        item.ts_ms,
        item.client_id,
        item.reply_id,
        item.in_reply_to,
        item.sources_json,
        item.confidence,
        item.ttft_ms,
        item.total_ms,
        item.agent_name,
    ])
}
