//! Finding the CUDA libraries before cudarc opens them: cudarc panics when a library is missing,
//! so each is asked for first, and a directory named by `TOKENMILL_CUDA_LIB` (for example the
//! `nvidia/cu13/lib` of the `nvidia-cuda-nvrtc` wheel, which CI installs) is loaded from by
//! absolute path, after which cudarc's lookup by name finds the already-loaded library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The environment variable naming a directory of CUDA libraries to load from.
pub const LIB_DIR_VAR: &str = "TOKENMILL_CUDA_LIB";

/// Loads the libraries of `TOKENMILL_CUDA_LIB` (once), so that cudarc finds them by soname.
/// Returns the directory when one was given.
fn preload() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(std::env::var_os(LIB_DIR_VAR)?);
        // NVRTC opens its builtins library by name at compile time: load it first, globally.
        for name in [
            "libnvrtc-builtins.so.13.0",
            "libnvrtc.so.13",
            "libcublasLt.so.13",
            "libcublas.so.13",
        ] {
            let path = dir.join(name);
            if path.exists() {
                load_global(&path);
            }
        }
        Some(dir)
    })
    .as_ref()
}

fn load_global(path: &Path) {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    #[allow(unsafe_code)]
    // SAFETY: loading a CUDA library runs its initialisers, which have no preconditions; the
    // handle is leaked on purpose so the library stays loaded for the process's life.
    match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(lib) => std::mem::forget(lib),
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot preload"),
    }
}

/// Succeeds when NVRTC can be loaded; otherwise says how to get it.
pub fn nvrtc() -> Result<()> {
    let dir = preload();
    #[allow(unsafe_code)]
    // SAFETY: `is_culib_present` only tries to open the library by name; nothing is called.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Ok(());
    }
    Err(Error::Unavailable(format!(
        "no NVRTC library (libnvrtc.so.13){}: install the CUDA 13 toolkit, or `pip install \
         nvidia-cuda-nvrtc==13.0.88` and set {LIB_DIR_VAR} to its nvidia/cu13/lib",
        dir.map(|d| format!(" in {} or on the library path", d.display()))
            .unwrap_or_default()
    )))
}

/// Succeeds when the CUDA driver library can be loaded (a GPU machine); otherwise says so.
pub fn driver() -> Result<()> {
    preload();
    #[allow(unsafe_code)]
    // SAFETY: as in `nvrtc`.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        return Ok(());
    }
    Err(Error::Unavailable(
        "no CUDA driver (libcuda.so): this machine has no NVIDIA GPU driver; use device = \"cpu\""
            .into(),
    ))
}

/// Succeeds when cuBLAS and cuBLASLt can be loaded.
pub fn blas() -> Result<()> {
    preload();
    #[allow(unsafe_code)]
    // SAFETY: as in `nvrtc`.
    let (b, lt) = unsafe {
        (
            cudarc::cublas::sys::is_culib_present(),
            cudarc::cublaslt::sys::is_culib_present(),
        )
    };
    match (b, lt) {
        (true, true) => Ok(()),
        (false, _) => Err(Error::Unavailable(
            "no cuBLAS library (libcublas.so.13): install the CUDA 13 toolkit or the \
             nvidia-cublas wheel"
                .into(),
        )),
        (_, false) => Err(Error::Unavailable(
            "no cuBLASLt library (libcublasLt.so.13)".into(),
        )),
    }
}
