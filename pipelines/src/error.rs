//! The one error type of the pipelines library.

use std::path::PathBuf;

/// Errors from configuring and running pipelines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an input failed: I/O, an input the read settings cannot handle, or a bad record
    /// under `--on-error fail`.
    #[error(transparent)]
    Ingest(#[from] tokenmill_ingest::Error),
    /// The tokenizer or a dataset file failed: I/O, a corrupt file, a checksum mismatch.
    #[error(transparent)]
    Shards(#[from] tokenmill_shards::Error),
    /// A configuration that cannot run.
    #[error("config: {0}")]
    Config(String),
    /// A `[filters]` table that cannot run: a setting out of range, or a URL blocklist that
    /// cannot be read or parsed.
    #[error("config: {table}: {0}", table = filters_table(.0))]
    Filters(#[from] tokenmill_filters::Error),
    /// An input no stage can handle (e.g. a `.html` file whose bytes are not HTML).
    #[error("{0}")]
    Unsupported(String),
    /// A file-system operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A DataFusion query failed: bad SQL, an unknown column, or an error while executing.
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    /// A query a person typed failed, said once in their terms: the SQL syntax error, the
    /// unknown table with the tables there are, the unknown column with the columns.
    #[error("query: {0}")]
    Sql(String),
    /// Something asked for is not there: a document id, a shard index, a training step or
    /// attempt, a sample past the epoch.
    #[error("{0}")]
    NotFound(String),
    /// A broken invariant: a bug, not bad input.
    #[error("internal: {0}")]
    Internal(String),
    /// A conversation that cannot be made into SFT tokens (e.g. its chat template fails).
    #[error("conversation `{id}` ({file} at offset {offset}): {detail}")]
    Conversation {
        /// The conversation's id.
        id: String,
        /// The file it was read from.
        file: String,
        /// Its byte offset (JSONL) or row (Parquet) there.
        offset: u64,
        /// What went wrong.
        detail: String,
    },
    /// Building an Arrow batch failed: a bug, not bad input.
    #[error("internal: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Reading or writing a Parquet file failed.
    #[error("{}: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the Parquet library said.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A worker thread pool could not be started.
    #[error("thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),
    /// The dedup library failed: its settings, its spill files, or re-reading documents to
    /// verify candidate pairs.
    #[error(transparent)]
    Dedup(#[from] tokenmill_dedup::Error),
    /// The trainer failed: a model or training configuration, a checkpoint, or a run's files.
    #[error(transparent)]
    Trainer(#[from] tokenmill_trainer::Error),
    /// The CUDA backend could not start or failed (`[train] device = "cuda"`).
    #[error(transparent)]
    Cuda(#[from] tokenmill_cuda::Error),
}

/// The table a filters error is reported under: `[filters.url]` for the blocklists, else
/// `[filters]`.
fn filters_table(e: &tokenmill_filters::Error) -> &'static str {
    use tokenmill_filters::Error as F;
    match e {
        F::Io { .. } | F::Blocklist { .. } | F::Config { filter: "url", .. } => "[filters.url]",
        _ => "[filters]",
    }
}

/// Result alias of the pipelines library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A Parquet error on `path`.
    pub(crate) fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.into(),
            source,
        }
    }
}
