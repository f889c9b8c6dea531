//! The CUDA backend's errors: what is missing, what failed to compile (with NVRTC's log), what
//! the driver or a library refused, and out-of-memory with the size asked for.

/// Errors of the CUDA backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A library the backend needs cannot be loaded, or there is no device.
    #[error("CUDA unavailable: {0}")]
    Unavailable(String),
    /// NVRTC refused a kernel source; the log says where and why.
    #[error("NVRTC could not compile the kernels for {arch}:\n{log}")]
    Compile {
        /// The target architecture (`sm_90a`, …).
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// A driver call failed.
    #[error("CUDA driver: {op}: {message}")]
    Driver {
        /// What was being done.
        op: String,
        /// The driver's error.
        message: String,
    },
    /// A cuBLAS or cuBLASLt call failed.
    #[error("{lib}: {op}: {message}")]
    Blas {
        /// `cublas` or `cublasLt`.
        lib: &'static str,
        /// What was being done.
        op: String,
        /// The library's status.
        message: String,
    },
    /// An allocation did not fit in device memory.
    #[error(
        "out of device memory: {what} asked for {asked} bytes with {free} of {total} free{}",
        estimate.map(|e| format!(" (the memory model estimates {e} bytes for this run)")).unwrap_or_default()
    )]
    OutOfMemory {
        /// The buffer.
        what: String,
        /// Bytes requested.
        asked: usize,
        /// Free bytes on the device at the time.
        free: usize,
        /// The device's memory.
        total: usize,
        /// The memory model's estimate for the whole run, when known.
        estimate: Option<u64>,
    },
    /// A setting this backend's mode does not take.
    #[error("{0}")]
    Unsupported(String),
    /// A kernel is missing from the compiled module (a source and its launcher disagree).
    #[error("no kernel named {0} in the compiled module")]
    MissingKernel(String),
    /// An I/O error on the compile cache.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The backend's result type.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn driver(op: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    let op = op.into();
    move |e| Error::Driver {
        op,
        message: e.to_string(),
    }
}
