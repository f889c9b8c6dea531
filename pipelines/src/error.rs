//! The one error type of the pipelines library.

use std::path::PathBuf;

/// Errors from configuring and running pipelines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Ingest(#[from] tokenmill_ingest::Error),
    #[error(transparent)]
    Shards(#[from] tokenmill_shards::Error),
    /// A configuration that cannot run.
    #[error("config: {0}")]
    Config(String),
    /// An input the stage cannot handle yet or at all (e.g. HTML before extraction exists).
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("{0}")]
    NotFound(String),
    /// Building an Arrow batch failed: a bug, not bad input.
    #[error("internal: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Dedup(#[from] tokenmill_dedup::Error),
    #[error(transparent)]
    Trainer(#[from] tokenmill_trainer::TrainerError),
}

/// Result alias of the pipelines library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
