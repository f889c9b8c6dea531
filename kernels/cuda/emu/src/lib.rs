//! The CUDA execution model on the CPU, for testing tokenmill's CUDA kernels without a GPU.
//!
//! `build.rs` compiles every kernel source in `kernels/cuda/cu` as C++ with `shim/emu.h`
//! force-included: `threadIdx`, `blockIdx`, `__syncthreads`, warp shuffles, shared memory and
//! atomics become their CPU equivalents, and a kernel becomes an `extern "C"` function that
//! one CUDA thread calls. [`launch`] runs a grid: block after block (so function-local
//! `__shared__` statics are that block's shared memory), each CUDA thread a fiber on the
//! calling OS thread (`shim/emu.cpp`), run in turn until it waits at a barrier or returns.
//!
//! What this checks: each kernel's indexing, reductions, synchronisation and arithmetic,
//! against the CPU reference kernels (`tests/`). The tensor-core instructions (`mma.sync`,
//! `wgmma`), asynchronous copies (`cp.async`, TMA, TMA multicast), memory barriers and thread
//! block clusters ([`launch_clusters`]) are the shim's (`shim/emu.h`): the PTX ISA's layouts,
//! exact products, copies landing when waited for. What it cannot: timing, the GPU memory
//! model beyond the barriers, the tensor cores' own accumulation order and precision, and the
//! device's libm (`expf` may differ in the last ulp, so comparisons use tolerances).

use std::ffi::c_void;
use std::sync::Mutex;

mod fault;
mod guard;
mod say;
pub use guard::GuardedAlloc;

unsafe extern "C" {
    fn tm_emu_block_new(
        gx: u32,
        gy: u32,
        gz: u32,
        bx: u32,
        by: u32,
        bz: u32,
        ix: u32,
        iy: u32,
        iz: u32,
        dyn_smem: usize,
    ) -> *mut c_void;
    fn tm_emu_block_free(b: *mut c_void);
    fn tm_emu_run_block(b: *mut c_void, f: unsafe extern "C" fn(*mut c_void), arg: *mut c_void);
    fn tm_emu_run_cluster(
        b: *mut *mut c_void,
        count: u32,
        f: unsafe extern "C" fn(*mut c_void),
        arg: *mut c_void,
    );
}

/// A grid or block extent `(x, y, z)`.
pub type Dim3 = (u32, u32, u32);

/// One launch at a time: `__shared__` variables are process-wide statics.
static LAUNCH: Mutex<()> = Mutex::new(());

/// A raw pointer that a launch's closure may capture (the kernels only touch what their
/// indexing gives each CUDA thread, as on the GPU).
#[derive(Debug)]
pub struct Ptr<T>(pub *mut T);

impl<T> Clone for Ptr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Ptr<T> {}

// SAFETY: the pointer is only dereferenced by the kernel, whose CUDA threads write disjoint
// elements or use atomics, exactly as on the device; they run as fibers on the launching
// thread, all returned before `launch` returns and the owning buffer can be touched again.
unsafe impl<T> Send for Ptr<T> {}
// SAFETY: as for `Send`.
unsafe impl<T> Sync for Ptr<T> {}

impl<T> Ptr<T> {
    /// A pointer to a buffer the kernel writes.
    pub fn of(v: &mut [T]) -> Self {
        Ptr(v.as_mut_ptr())
    }
    /// A pointer to a buffer the kernel only reads.
    pub fn of_const(v: &[T]) -> Self {
        Ptr(v.as_ptr() as *mut T)
    }
    /// The pointer, for a kernel argument that is written (a method, so that a closure
    /// captures the whole `Ptr`, which is `Sync`, and not its raw field).
    pub fn p(self) -> *mut T {
        self.0
    }
    /// The pointer, for a kernel argument that is only read.
    pub fn c(self) -> *const T {
        self.0
    }
}

/// Runs `kernel` as a grid of `grid` blocks of `block` threads with `dyn_smem` bytes of dynamic
/// shared memory: `kernel` is called once per CUDA thread, each on its own fiber, and must call
/// the `extern "C"` kernel function with the launch's arguments.
///
/// # Panics
/// When a block has no threads or more than 1024.
pub fn launch(grid: Dim3, block: Dim3, dyn_smem: usize, kernel: impl Fn() + Sync) {
    launch_clusters(grid, block, dyn_smem, 1, kernel)
}

/// [`launch`] in thread block clusters of `cluster` blocks along x (`cuLaunchKernelEx` with a
/// cluster dimension): the blocks of a cluster run together, their threads' fibers in one
/// round robin, so that they may wait on one another's barriers and copies.
///
/// # Panics
/// As [`launch`]; and when `cluster` is not 1 to 8 or does not divide the grid's x.
pub fn launch_clusters(
    grid: Dim3,
    block: Dim3,
    dyn_smem: usize,
    cluster: u32,
    kernel: impl Fn() + Sync,
) {
    assert!(
        (1..=8).contains(&cluster) && grid.0.is_multiple_of(cluster),
        "clusters of 1..=8 blocks dividing the grid's {} along x, not {cluster}",
        grid.0
    );
    let threads = block.0 * block.1 * block.2;
    assert!(
        (1..=1024).contains(&threads),
        "a block has 1..=1024 threads, not {threads}"
    );
    unsafe extern "C" fn call<F: Fn()>(f: *mut c_void) {
        // SAFETY: `f` is the `&F` passed to `tm_emu_run_block` below, alive for the call.
        unsafe { (*(f as *const F))() }
    }
    fn trampoline<F: Fn()>(_: &F) -> unsafe extern "C" fn(*mut c_void) {
        call::<F>
    }
    let _one = LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
    fault::report_faults();
    for bz in 0..grid.2 {
        for by in 0..grid.1 {
            for bx in (0..grid.0).step_by(cluster as usize) {
                let mut blocks: Vec<*mut c_void> = (bx..bx + cluster)
                    .map(|x| {
                        // SAFETY: plain allocation of the block's bookkeeping; freed below
                        // after every fiber of the block has returned.
                        unsafe {
                            tm_emu_block_new(
                                grid.0, grid.1, grid.2, block.0, block.1, block.2, x, by, bz,
                                dyn_smem,
                            )
                        }
                    })
                    .collect();
                let (f, arg) = (trampoline(&kernel), &kernel as *const _ as *mut c_void);
                if cluster == 1 {
                    // SAFETY: the live block made above; `kernel` outlives the call, which
                    // runs every fiber to its end before it returns.
                    unsafe { tm_emu_run_block(blocks[0], f, arg) };
                } else {
                    // SAFETY: as above, for each of the cluster's `cluster` live blocks.
                    unsafe { tm_emu_run_cluster(blocks.as_mut_ptr(), cluster, f, arg) };
                }
                for b in blocks {
                    // SAFETY: every fiber of the block has returned.
                    unsafe { tm_emu_block_free(b) };
                }
            }
        }
    }
}

/// The directory of the emulated CUDA libraries (`libcuda.so`, `libcublas.so`,
/// `libcublasLt.so`, `libnccl.so`) that `build.rs` links: the CUDA driver API over these
/// kernels on CPU threads (`driver/driver.cpp`), cuBLAS's GEMMs by their contract
/// (`driver/cublas.cpp`), and NCCL's point-to-point and gather primitives between the
/// processes of one machine (`driver/nccl.cpp`). Named first in `TOKENMILL_CUDA_LIB`, they let
/// the CUDA backend's own code run without a GPU; on the loader's path (`LD_LIBRARY_PATH`), the
/// NCCL communicator's.
pub const DRIVER_DIR: &str = concat!(env!("OUT_DIR"), "/driver");
