//! The one error type of the shards crate.

use std::path::PathBuf;

/// Errors from reading, writing and validating token shards, manifests and tokenizers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file on disk is not what its format says it must be (corrupt, truncated or hostile).
    #[error("{path}: corrupt {what}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The kind of file (`Megatron index`, `manifest`, `provenance table`, …).
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Another process writes into the directory (its lock file names it).
    #[error(
        "{path}: {holder} is writing here; wait for it, or remove the lock if that process is gone"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it (`build pid 123 on host`).
        holder: String,
    },
    /// A checksum recorded in the manifest does not match the file.
    #[error("{path}: checksum mismatch: manifest says {expected:016x}, file has {actual:016x}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The xxh3-64 the manifest records.
        expected: u64,
        /// The xxh3-64 of the file as it is.
        actual: u64,
    },
    /// The tokenizer cannot be used as asked (no such file, no EOS token, a vocabulary too small).
    #[error("tokenizer {path}: {detail}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The `tokenizers` library (or the gzip decoder of a `.json.gz`) failed on a tokenizer.
    #[error("tokenizer {path}: {what}: {source}")]
    TokenizerLib {
        /// The tokenizer file.
        path: PathBuf,
        /// What was being done: loading, encoding, decoding, training, saving.
        what: &'static str,
        /// The library's error.
        #[source]
        source: tokenizers::Error,
    },
    /// A value does not fit the format (e.g. a token id above the dtype, a document over 2^31 tokens).
    #[error("{0}")]
    Limit(String),
    /// Arrow / Parquet failure on a named file.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow failure (building a batch).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// JSON (manifest) failure on a named file.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Data written for another dataset, tokenizer or model than the one it is used with.
    #[error("{path}: {detail}")]
    Mismatch {
        /// The file that says whom the data belongs to.
        path: PathBuf,
        /// What differs.
        detail: String,
    },
    /// A lookup that names something the dataset does not have.
    #[error("{0}")]
    NotFound(String),
    /// A caller broke the writer's contract (this is a bug, not bad input).
    #[error("internal: {0}")]
    Internal(String),
}

/// Result alias of the shards crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        what: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            what,
            detail: detail.into(),
        }
    }
}
