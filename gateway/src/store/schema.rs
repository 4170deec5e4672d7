//! The tables, and the migrations that bring a file to the current schema.
//!
//! The schema version is SQLite's `PRAGMA user_version`: version N means the
//! first N entries of [`MIGRATIONS`] have been applied. Opening a file applies
//! the missing ones, each in its own transaction with the version bump, so a
//! crash mid-migration leaves the file at the previous version. A migration is
//! only ever appended, never edited: a later feature adds a migration (a new
//! table, `ALTER TABLE .. ADD COLUMN`, an index).
//!
//! `PRAGMA application_id` marks the file as a transcript store, so pointing
//! the gateway at some other SQLite file fails at once instead of adding our
//! tables to it.

use rusqlite::Connection;

/// `application_id` of a transcript store: "LCST".
pub const APPLICATION_ID: i32 = 0x4C43_5354;

/// One step of the schema's history.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// What it does, for logs and errors.
    pub name: &'static str,
    /// The SQL, run as one batch.
    pub sql: &'static str,
}

/// Version 1: sessions, conversations, items, offline messages.
///
/// Design notes:
/// - Sessions are found by the SHA-256 of the token: a copy of the database
///   does not hand out live sessions.
/// - Tables refer to each other by integer row ids; public conversation ids
///   appear once, in `conversations.public_id`.
/// - A session's current conversation is its newest (`max(conversations.id)`);
///   an ended conversation stays current until a new one is opened.
/// - Conversation states that come later (needs a human, assigned agent,
///   ended, CSAT, page info) are nullable columns of `conversations`.
/// - `items` is unique per (conversation, seq) and, for visitor messages, per
///   (conversation, client id): a resend is stored once.
/// - The agents' list (by site, newest first, paged) reads one index range.
pub const V1: &str = r#"
CREATE TABLE sessions (
    id            INTEGER PRIMARY KEY,
    key_hash      BLOB    NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    site          TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
);

CREATE TABLE conversations (
    id                  INTEGER PRIMARY KEY,
    public_id           BLOB    NOT NULL UNIQUE CHECK (length(public_id) = 12),
    session_id          INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    site                TEXT    NOT NULL,
    started_ms          INTEGER NOT NULL,
    lang                TEXT,
    page                TEXT,
    referrer            TEXT,
    needs_human_reason  TEXT,
    needs_human_ms      INTEGER,
    agent               TEXT,
    assigned_ms         INTEGER,
    ended_reason        TEXT,
    ended_ms            INTEGER,
    csat_score          INTEGER CHECK (csat_score BETWEEN 1 AND 5),
    csat_comment        TEXT
);
CREATE INDEX conversations_by_session ON conversations (session_id, id);
CREATE INDEX conversations_by_site ON conversations (site, started_ms DESC, public_id DESC);

CREATE TABLE items (
    id           INTEGER PRIMARY KEY,
    conv         INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL CHECK (seq >= 1),
    author       TEXT    NOT NULL CHECK (author IN ('visitor', 'ai', 'agent')),
    text         TEXT    NOT NULL,
    ts_ms        INTEGER NOT NULL,
    client_id    TEXT,
    reply_id     TEXT,
    in_reply_to  TEXT,
    sources      TEXT,
    confidence   REAL,
    ttft_ms      INTEGER,
    total_ms     INTEGER,
    agent_name   TEXT,
    UNIQUE (conv, seq)
);
CREATE UNIQUE INDEX items_by_client_id ON items (conv, client_id) WHERE client_id IS NOT NULL;

CREATE TABLE offline_messages (
    id     INTEGER PRIMARY KEY,
    conv   INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    email  TEXT    NOT NULL,
    text   TEXT    NOT NULL,
    at_ms  INTEGER NOT NULL
);
CREATE INDEX offline_messages_by_conv ON offline_messages (conv, id);
"#;

/// Version 2: the agent desk's accounts and canned replies.
///
/// - An agent's API token is kept as its SHA-256 (tokens are 128 random bits,
///   so a fast hash is enough: there is nothing to brute-force).
/// - Lists (languages, skills, sites) are JSON arrays: they are read whole,
///   never queried by element.
pub const V2: &str = r#"
CREATE TABLE agents (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin')),
    languages   TEXT    NOT NULL,
    skills      TEXT    NOT NULL,
    capacity    INTEGER NOT NULL CHECK (capacity >= 1),
    sites       TEXT    NOT NULL,
    token_hash  BLOB    NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_ms  INTEGER NOT NULL
);

CREATE TABLE canned_replies (
    site      TEXT NOT NULL,
    shortcut  TEXT NOT NULL,
    text      TEXT NOT NULL,
    PRIMARY KEY (site, shortcut)
);
"#;

/// The schema's history, oldest first. Append only.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "sessions, conversations, items, offline messages",
        sql: V1,
    },
    Migration {
        name: "agents and canned replies",
        sql: V2,
    },
];

/// The version a file has once every migration is applied.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Why a file cannot be brought to the current schema.
#[derive(Debug)]
pub enum MigrateError {
    /// The file belongs to another application.
    ForeignFile {
        /// Its `application_id`.
        application_id: i32,
    },
    /// The file was written by a newer gateway.
    TooNew {
        /// Its version.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
    /// A migration failed.
    Step {
        /// The version it would have produced.
        version: u32,
        /// Its name.
        name: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Reading the version failed.
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sql(e)
    }
}

/// Checks, without changing anything, that `conn` is a transcript store (or a
/// new, empty file) no newer than `migrations`; returns its version.
pub fn inspect(conn: &Connection, migrations: &[Migration]) -> Result<u32, MigrateError> {
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    // Ours, or a fresh file: no mark, no version, no tables.
    let ours = app == APPLICATION_ID || (app == 0 && found == 0 && !has_tables(conn)?);
    if !ours {
        return Err(MigrateError::ForeignFile {
            application_id: app,
        });
    }
    let supported = migrations.len() as u32;
    if found > supported {
        return Err(MigrateError::TooNew { found, supported });
    }
    Ok(found)
}

/// Brings `conn` to the last of `migrations`; returns the version it had.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<u32, MigrateError> {
    let found = inspect(conn, migrations)?;
    for (i, m) in migrations.iter().enumerate().skip(found as usize) {
        let version = i as u32 + 1;
        let step = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(m.sql)?;
            // PRAGMA takes no bound parameters; both values are numbers of ours.
            tx.execute_batch(&format!(
                "PRAGMA user_version = {version}; PRAGMA application_id = {APPLICATION_ID};"
            ))?;
            tx.commit()
        };
        step(conn).map_err(|source| MigrateError::Step {
            version,
            name: m.name,
            source,
        })?;
        tracing::info!(version, migration = m.name, "transcript store migrated");
    }
    Ok(found)
}

fn has_tables(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table')",
        [],
        |r| r.get(0),
    )
}
