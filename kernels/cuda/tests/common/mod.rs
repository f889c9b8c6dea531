//! What the emulated-device test binaries share: one test at a time (the copy counters and the
//! managed-memory pool are the process's), and the backend on the emulated driver, opened once
//! per binary.

use std::sync::{Mutex, MutexGuard, OnceLock};

use tokenmill_cuda::Cuda;
use tokenmill_cuda::device::Memory;

/// Held by each test of a binary for its whole run.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The backend on the emulated driver in `memory`, opened once per test binary (later calls
/// return it whatever they ask): the emulated libraries' directory named first in
/// `TOKENMILL_CUDA_LIB` (NVRTC the real one after it) and `env` set before any library loads.
pub fn emulated(memory: Memory, env: &[(&str, &str)]) -> &'static Cuda {
    static CUDA: OnceLock<usize> = OnceLock::new();
    static mut BACKEND: Option<Cuda> = None;
    CUDA.get_or_init(|| {
        let nvrtc = std::env::var(tokenmill_cuda::libs::LIB_DIR_VAR).unwrap_or_default();
        // SAFETY: runs once, inside the OnceLock's initialiser, before any library is loaded;
        // the tests of a binary read the environment only through it.
        unsafe {
            std::env::set_var(
                tokenmill_cuda::libs::LIB_DIR_VAR,
                format!("{}:{nvrtc}", tokenmill_cuda_emu::DRIVER_DIR),
            );
            for (k, v) in env {
                std::env::set_var(k, v);
            }
        }
        let cuda = Cuda::with_memory(0, memory)
            .unwrap_or_else(|e| panic!("the emulated device in {memory:?}: {e}"));
        // SAFETY: written once here, before any reader (readers go through this OnceLock).
        unsafe { BACKEND = Some(cuda) };
        0
    });
    // SAFETY: set above before the OnceLock completed; never written again.
    unsafe { (*std::ptr::addr_of!(BACKEND)).as_ref().expect("set") }
}
