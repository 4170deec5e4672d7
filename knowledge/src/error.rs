//! Errors: why one document was rejected ([`DocumentError`], reported per
//! file and never fatal to an ingest), why an embedder failed
//! ([`EmbedError`]), and why a knowledge-base operation failed as a whole
//! ([`KbError`]).

use std::path::PathBuf;

/// Why one document was not ingested. Every variant names the file (its
/// name as given, or its path relative to the folder ingested), so a report
/// can be read line by line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// The file is over the configured size limit.
    #[error("{name}: too large ({size} bytes; the limit is {limit})")]
    TooLarge {
        /// The document's name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The content is binary (NUL bytes or mostly control characters).
    #[error("{name}: binary content, not a text document")]
    Binary {
        /// The document's name.
        name: String,
    },
    /// The content is not UTF-8 text.
    #[error("{name}: not UTF-8 text ({detail})")]
    BadEncoding {
        /// The document's name.
        name: String,
        /// What is wrong, e.g. the offset of the first bad byte.
        detail: String,
    },
    /// The file's type is not Markdown, HTML or plain text.
    #[error("{name}: unsupported file type (expected .md, .markdown, .html, .htm or .txt)")]
    Unsupported {
        /// The document's name.
        name: String,
    },
    /// The document has no text to index.
    #[error("{name}: no text to index")]
    Empty {
        /// The document's name.
        name: String,
    },
    /// The name cannot be used as a document URL (empty, absolute, or with
    /// `..` components).
    #[error("{name}: bad document name")]
    BadName {
        /// The document's name.
        name: String,
    },
    /// The file could not be read.
    #[error("{name}: cannot read: {detail}")]
    Io {
        /// The document's name.
        name: String,
        /// The operating system's message.
        detail: String,
    },
}

impl DocumentError {
    /// The name of the document this error is about.
    pub fn name(&self) -> &str {
        match self {
            DocumentError::TooLarge { name, .. }
            | DocumentError::Binary { name }
            | DocumentError::BadEncoding { name, .. }
            | DocumentError::Unsupported { name }
            | DocumentError::Empty { name }
            | DocumentError::BadName { name }
            | DocumentError::Io { name, .. } => name,
        }
    }

    /// A short machine-readable code: `too_large`, `binary`, `bad_encoding`,
    /// `unsupported`, `empty`, `bad_name` or `io`.
    pub fn code(&self) -> &'static str {
        match self {
            DocumentError::TooLarge { .. } => "too_large",
            DocumentError::Binary { .. } => "binary",
            DocumentError::BadEncoding { .. } => "bad_encoding",
            DocumentError::Unsupported { .. } => "unsupported",
            DocumentError::Empty { .. } => "empty",
            DocumentError::BadName { .. } => "bad_name",
            DocumentError::Io { .. } => "io",
        }
    }
}

/// Why an embedder could not be loaded or could not embed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// A model file is missing from the model directory.
    #[error("model file {0} is missing (run knowledge/fetch-model.sh)")]
    MissingFile(PathBuf),
    /// The model files are there but cannot be used.
    #[error("cannot load the embedding model: {0}")]
    Load(String),
    /// Running the model failed.
    #[error("embedding failed: {0}")]
    Inference(String),
    /// A remote embedding service failed (for implementations over the
    /// inference pool).
    #[error("the embedding service failed: {0}")]
    Remote(String),
    /// The embedder returned vectors of the wrong size or count.
    #[error("the embedder returned {got} numbers where {expected} were expected")]
    Shape {
        /// What was expected.
        expected: usize,
        /// What came back.
        got: usize,
    },
}

/// Why a knowledge-base operation failed as a whole (a bad document is not
/// such a failure: it is reported in the [`crate::IngestReport`]).
#[derive(Debug, thiserror::Error)]
pub enum KbError {
    /// The site id cannot name a directory (empty, or with characters other
    /// than ASCII letters, digits, `-`, `_` and `.`, or starting with `.`).
    #[error("bad site id {0:?}")]
    BadSite(String),
    /// Reading or writing the knowledge base's directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A stored file cannot be understood.
    #[error("{}: corrupt knowledge base file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Embedding the new chunks failed; nothing was changed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
}

impl KbError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KbError::Io {
            path: path.into(),
            source,
        }
    }
}
