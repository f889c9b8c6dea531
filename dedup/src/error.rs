//! The one error type of the dedup crate.

use std::path::PathBuf;

/// Errors of a dedup run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file (a spill file or its directory).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Settings that do not fit together (see [`crate::DedupConfig::validate`]).
    #[error("config: {0}")]
    Config(String),
    /// The caller's [`crate::ShingleSource`] failed (re-reading documents to compare them).
    #[error("{what}: {source}")]
    ShingleSource {
        /// What the source was doing.
        what: &'static str,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The [`crate::ShingleSource`] did not deliver a document it was asked for (did the inputs
    /// change while they were deduplicated?).
    #[error(
        "document {doc}: its shingle set was asked for and not delivered (did the inputs change during dedup?)"
    )]
    MissingShingles {
        /// The document, in the global order.
        doc: u64,
    },
}

/// Result alias of the dedup crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
