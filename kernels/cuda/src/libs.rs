//! Finding the CUDA libraries before cudarc opens them: cudarc panics when a library is missing,
//! so each is asked for first, and a directory named by `TOKENMILL_CUDA_LIB` (for example the
//! `nvidia/cu13/lib` of the `nvidia-cuda-nvrtc` wheel, which CI installs) is loaded from by
//! absolute path, after which cudarc's lookup by name finds the already-loaded library. The
//! variable may name several directories, separated by `:`, searched in order: CI puts the
//! emulated driver's (`tokenmill_cuda_emu::DRIVER_DIR`: `libcuda.so`, `libcublas.so`,
//! `libcublasLt.so`) before NVRTC's, so that the backend runs without a GPU.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The environment variable naming the directories (`:`-separated) of CUDA libraries to load
/// from.
pub const LIB_DIR_VAR: &str = "TOKENMILL_CUDA_LIB";

/// Loads the libraries of `TOKENMILL_CUDA_LIB` (once), so that cudarc finds them by soname:
/// of each name, the first directory's that has it. Returns the directories when given.
fn preload() -> Option<&'static str> {
    static DIRS: OnceLock<Option<String>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let dirs = std::env::var(LIB_DIR_VAR).ok()?;
        // NVRTC opens its builtins library by name at compile time: load it first, globally.
        // `libcuda.so` and the unversioned cuBLAS names are the emulated driver's.
        for name in [
            "libnvrtc-builtins.so.13.0",
            "libnvrtc.so.13",
            "libcuda.so",
            "libcublasLt.so",
            "libcublas.so",
            "libcublasLt.so.13",
            "libcublas.so.13",
        ] {
            if let Some(path) = dirs
                .split(':')
                .map(|d| PathBuf::from(d).join(name))
                .find(|p| p.exists())
            {
                load_global(&path);
            }
        }
        Some(dirs)
    })
    .as_deref()
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
        dir.map(|d| format!(" in {d} or on the library path"))
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
