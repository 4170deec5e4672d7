//! What can go wrong, said so that an operator can act on it.

use std::path::PathBuf;

/// An error of the transcript store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The folder for the database file could not be created.
    #[error("cannot create the folder {path} for the transcript store: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The database file could not be opened or set up.
    #[error("cannot open the transcript store {path} ({what}): {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file system refused write-ahead logging (some network file systems do).
    #[error(
        "the transcript store {path} cannot use write-ahead logging (journal mode is {mode}); \
         put it on a local file system"
    )]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The file is a SQLite database of something else.
    #[error(
        "{path} is not a transcript store (application_id {application_id:#x}, or tables of \
         another program); point the store at a new or an existing transcript file"
    )]
    ForeignFile {
        /// The database file.
        path: PathBuf,
        /// Its `application_id`.
        application_id: i32,
    },
    /// The file was written by a newer gateway.
    #[error(
        "the transcript store {path} has schema version {found}, newer than the {supported} this \
         gateway knows; run a newer gateway or restore a copy of the file"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
    /// A migration failed; the file stays at the previous version.
    #[error("migrating the transcript store {path} to schema version {version} ({name}) failed: {source}")]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version the migration would have produced.
        version: u32,
        /// What the migration does.
        name: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A store thread could not be started.
    #[error("cannot start the transcript store's {thread} thread: {source}")]
    Spawn {
        /// Which thread.
        thread: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A write or read failed in SQLite.
    #[error("transcript store {path}: {what} failed: {source}")]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What was being done (the write's kind and conversation, or the query).
        what: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A write named a conversation the store does not have.
    #[error("transcript store: {what}: conversation {conversation} is not stored")]
    UnknownConversation {
        /// The write.
        what: &'static str,
        /// The conversation, as the gateway writes it.
        conversation: String,
    },
    /// A write named a session the store does not have.
    #[error("transcript store: {what}: the session is not stored")]
    UnknownSession {
        /// The write.
        what: &'static str,
    },
    /// A value does not fit the store (a number over 2^63, a CSAT score out of 1-5).
    #[error("transcript store: {what}: {problem}")]
    Invalid {
        /// The write.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The store was closed (or its thread stopped) before the request ran.
    #[error("the transcript store is closed")]
    Closed,
    /// A caller that waits for the store gave up.
    #[error("the transcript store did not answer within {0:?}")]
    NoAnswer(std::time::Duration),
    /// A store thread panicked.
    #[error("the transcript store's {thread} thread panicked")]
    Panicked {
        /// Which thread.
        thread: &'static str,
    },
}
