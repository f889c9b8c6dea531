//! The crate's error type.

/// Errors of `tokenmill-comm`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call whose arguments do not fit the group (counts of the wrong length, a rank out
    /// of range, sizes that differ between ranks).
    #[error("communicator: {0}")]
    Usage(String),
    /// A message or count too large for the backend (MPI counts are 32-bit).
    #[error("communicator: {what} of {value} exceeds the backend's limit {limit}")]
    TooLarge {
        /// What overflowed.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The limit.
        limit: usize,
    },
    /// A backend library call failed (CUDA, NCCL).
    #[error("communicator: {backend} could not {op}: {message}")]
    Backend {
        /// `cuda` or `nccl`.
        backend: &'static str,
        /// What was being done.
        op: &'static str,
        /// The library's error.
        message: String,
    },
    /// The backend could not start (e.g. MPI not initialised, no launcher, library missing).
    #[error("communicator: {0}")]
    Unavailable(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
