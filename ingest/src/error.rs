//! The one error type of the ingest crate.

use std::path::PathBuf;

use crate::skip::Skip;

/// Errors from reading input documents.
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
    /// A bad record, reported as an error because the run was asked to fail on bad input
    /// (`--on-error fail`). Names the file, the record and its byte offset.
    #[error("{0}")]
    BadRecord(Box<Skip>),
    /// The input cannot be read at all with the given settings (unknown format, missing column).
    #[error("{path}: {detail}")]
    Input {
        /// The input file.
        path: PathBuf,
        /// Why it cannot be read.
        detail: String,
    },
    /// Parquet failure on a named file.
    #[error("{path}: {source}")]
    Parquet {
        /// The input file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A remote input (`s3://`, `https://`) that cannot be listed, found or opened, or that
    /// is too large to read into memory.
    #[error("{url}: {detail}")]
    Remote {
        /// The URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// Reading a remote object failed after `object_store`'s retries.
    #[error("{url}: read failed at byte {offset} after retries: {source}")]
    RemoteRead {
        /// The URL.
        url: String,
        /// Bytes of the object read before the failure.
        offset: u64,
        /// The last error.
        #[source]
        source: object_store::Error,
    },
    /// Arrow failure while building a batch: a bug, not bad input.
    #[error("internal: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Result alias of the ingest crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An I/O error of `path`, or the [`Error::RemoteRead`] it carries when it came from a
    /// remote reader (possibly through a decompressor).
    pub fn from_io(path: impl Into<PathBuf>, e: std::io::Error) -> Self {
        if e.get_ref().is_some_and(|i| i.is::<Error>()) {
            let inner = e.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        Error::io(path, e)
    }
}
