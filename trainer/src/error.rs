//! The trainer's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while building, checking, training or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model or training configuration that does not fit together.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A configuration section whose values do not have the types its fields need.
    #[error("invalid configuration: {section}: {source}")]
    ConfigValue {
        /// The section, e.g. `[model]`.
        section: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A model configuration read from a file that does not validate.
    #[error("{path}: {source}")]
    ConfigFile {
        /// The file (a `config.json`).
        path: PathBuf,
        /// What is wrong with it (a [`Error::Config`]).
        #[source]
        source: Box<Error>,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or weight file that does not match the model.
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What does not match.
        msg: String,
    },
    /// A JSON file of a model, checkpoint or run (`config.json`, `state.json`,
    /// `quarantine.json`) that does not parse.
    #[error("{path}: {what}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What the file should have held.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file that cannot be read or written.
    #[error("{path}: {what}: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// Reading or writing.
        what: &'static str,
        /// The library's error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A file of the per-document loss table (`RUN/losses/`) that cannot be written or read.
    #[error("{path}: loss table: {source}")]
    LossTable {
        /// The file.
        path: PathBuf,
        /// The Parquet (or Arrow, wrapped) error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The dataset cannot feed this model.
    #[error("dataset: {0}")]
    Data(String),
    /// The dataset (or the loader over it) failed to open or read.
    #[error("dataset: {0}")]
    Dataset(#[from] tokenmill_shards::Error),
    /// A parallel layout that does not fit the world, the model or the batch.
    #[error("parallel layout: {0}")]
    Layout(String),
    /// A collective failed.
    #[error(transparent)]
    Comm(#[from] tokenmill_comm::Error),
    /// Another rank failed a step every rank takes together (writing its shard of a
    /// checkpoint); that rank reports its own error.
    #[error("{path}: rank {rank} of {size} could not {what}: {msg}")]
    RankFailed {
        /// What was being written (a checkpoint's directory).
        path: PathBuf,
        /// The rank that failed.
        rank: usize,
        /// Ranks in the group.
        size: usize,
        /// The step it failed.
        what: String,
        /// Its error.
        msg: String,
    },
    /// An evaluation hook ([`crate::train::EvalHook`]) failed.
    #[error("evaluation: {0}")]
    EvalHook(Box<dyn std::error::Error + Send + Sync>),
    /// A loss or gradient that is not finite.
    #[error("non-finite {what} at step {step}")]
    NonFinite {
        /// Loss or gradient.
        what: String,
        /// The step.
        step: u64,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// A checkpoint mismatch on `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// A JSON file on `path` that does not hold `what`.
    pub fn json(path: impl Into<PathBuf>, what: &'static str, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.into(),
            what,
            source,
        }
    }
}
