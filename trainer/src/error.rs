//! The trainer's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while building, checking, training or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A model or training configuration that does not fit together.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
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
    /// The dataset cannot feed this model.
    #[error("dataset: {0}")]
    Data(String),
    /// A loss or gradient that is not finite.
    #[error("non-finite {what} at step {step}")]
    NonFinite {
        /// Loss or gradient.
        what: String,
        /// The step.
        step: u64,
    },
}

/// Result with [`TrainerError`].
pub type Result<T, E = TrainerError> = std::result::Result<T, E>;

impl TrainerError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainerError::Io {
            path: path.into(),
            source,
        }
    }
    /// A checkpoint mismatch on `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        TrainerError::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
}
