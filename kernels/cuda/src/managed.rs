//! Managed memory (CUDA unified memory, `cuMemAllocManaged`) for the process's large
//! allocations: resident training on any GPU, HMM or not (`[train] device = "cuda-managed"`).
//!
//! The seam hands the backend host slices. On a GPU with HMM the kernels can take those slices'
//! own addresses ([`crate::device::Memory::Host`]); without HMM they cannot, and every
//! operation copies. Managed memory closes that gap from the other side: the binary's
//! allocator ([`alloc`], [`free`]) serves every block of [`DEFAULT_FROM`] bytes or more from
//! managed memory once [`enable`] was called, so the model's weights, gradients, optimizer
//! state and activations are `Vec`s whose pages any CUDA kernel may read and write, and the
//! driver migrates them to whichever processor touches them. The backend
//! ([`crate::device::Memory::Managed`]) passes a slice by address when it lies inside one
//! managed block ([`contains`]) and copies it otherwise (small slices, and whatever was
//! allocated before [`enable`]).
//!
//! Blocks are kept when freed, by size class (at most a quarter over the size asked for), and
//! handed out again: a training step frees and allocates the same activations every step, and
//! a kept block's pages stay where the GPU last put them. Zeroed blocks are zeroed by the
//! device (`cuMemsetD8`), so a fresh activation's pages are made on the GPU, not by the host.
//! Kept blocks go back to the driver only with the process (or [`release`]).
//!
//! Everything here runs inside the global allocator: no call allocates through it (a
//! thread-local flag sends any allocation made while this module is at work to the system
//! allocator), nothing panics, and a failure of the driver is a `None` that the caller answers
//! with the system allocator (counted in [`Stats::fallbacks`]).

#![allow(unsafe_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::CudaContext;
use cudarc::driver::sys;

use crate::error::{Error, Result};

/// `TOKENMILL_CUDA_MANAGED_FROM=BYTES`: the smallest allocation served from managed memory
/// (at least [`MIN_FROM`]; read by [`enable`]).
pub const FROM_VAR: &str = "TOKENMILL_CUDA_MANAGED_FROM";
/// Allocations from this size on are managed by default: below it a copy costs less than the
/// bookkeeping and page migration.
pub const DEFAULT_FROM: usize = 64 << 10;
/// The smallest threshold [`FROM_VAR`] may set.
pub const MIN_FROM: usize = 4 << 10;
/// Managed blocks are aligned to at least this (the driver's allocations are); a larger
/// alignment is left to the system allocator.
const ALIGN: usize = 256;

static ON: AtomicBool = AtomicBool::new(false);
/// Set by [`enable`], never cleared: whether any block may be managed.
static EVER: AtomicBool = AtomicBool::new(false);
static FROM: AtomicUsize = AtomicUsize::new(DEFAULT_FROM);
/// The context every allocating thread is bound to; kept alive for the process, since a
/// released primary context frees its managed memory under the `Vec`s that hold it.
static CTX: OnceLock<Arc<CudaContext>> = OnceLock::new();
/// The raw handle of [`CTX`], for the allocator (which must not touch the `Arc`'s machinery).
static RAW_CTX: AtomicUsize = AtomicUsize::new(0);

struct Blocks {
    /// Live managed blocks: address → size class.
    live: BTreeMap<usize, usize>,
    /// Freed blocks by size class.
    kept: BTreeMap<usize, Vec<usize>>,
}

static BLOCKS: Mutex<Blocks> = Mutex::new(Blocks {
    live: BTreeMap::new(),
    kept: BTreeMap::new(),
});

static MADE: AtomicU64 = AtomicU64::new(0);
static MADE_BYTES: AtomicU64 = AtomicU64::new(0);
static REUSED: AtomicU64 = AtomicU64::new(0);
static FALLBACKS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set while this module works inside the allocator: allocations then go to the system.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// Holds [`BUSY`] for a scope; `None` when it was already held (a nested call).
struct Busy;

impl Busy {
    fn take() -> Option<Busy> {
        BUSY.with(|b| (!b.replace(true)).then_some(Busy))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(false));
    }
}

/// What managed memory served so far in this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blocks made by `cuMemAllocManaged`.
    pub made: u64,
    /// Their bytes (size classes).
    pub made_bytes: u64,
    /// Allocations served by a kept block.
    pub reused: u64,
    /// Allocations the driver refused, left to the system allocator.
    pub fallbacks: u64,
    /// Blocks live now.
    pub live: usize,
    /// The allocation threshold, bytes.
    pub from: usize,
}

/// The counts so far.
pub fn stats() -> Stats {
    let live = BLOCKS.lock().map(|b| b.live.len()).unwrap_or(0);
    Stats {
        made: MADE.load(Ordering::Relaxed),
        made_bytes: MADE_BYTES.load(Ordering::Relaxed),
        reused: REUSED.load(Ordering::Relaxed),
        fallbacks: FALLBACKS.load(Ordering::Relaxed),
        live,
        from: FROM.load(Ordering::Relaxed),
    }
}

/// The size class of an allocation of `n` bytes: `n` rounded up to a quarter of its power of
/// two (at least 4 KiB), so a block serves any size within 25 % below its own.
pub fn class_of(n: usize) -> usize {
    let top = 1usize << (usize::BITS - 1 - n.max(1).leading_zeros());
    n.next_multiple_of((top / 4).max(4 << 10))
}

/// Serves the process's large allocations from managed memory on `ctx`'s GPU from now on
/// (what [`alloc`] and [`free`] do once this returned). Refused, naming what is missing, where
/// the GPU has no managed memory or where the host may not touch it while kernels run
/// (`CONCURRENT_MANAGED_ACCESS`: the model's host code runs beside the GPU's). The threshold
/// is [`FROM_VAR`]'s, else [`DEFAULT_FROM`]. One context per process: a second call with
/// another context is refused.
pub fn enable(ctx: &Arc<CudaContext>) -> Result<()> {
    use sys::CUdevice_attribute as A;
    let attr = |a: A| {
        ctx.attribute(a)
            .map(|v| v != 0)
            .map_err(crate::error::driver("device attribute"))
    };
    let name = ctx.name().unwrap_or_else(|_| "the GPU".into());
    if !attr(A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY)? {
        return Err(Error::Unavailable(format!(
            "{name} has no managed memory (cuMemAllocManaged); use device = \"cuda\", which copies"
        )));
    }
    if !attr(A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS)? {
        return Err(Error::Unavailable(format!(
            "{name} does not let the host touch managed memory while kernels run \
             (CONCURRENT_MANAGED_ACCESS: a GPU before Pascal, or Windows); use device = \"cuda\", \
             which copies"
        )));
    }
    let held = CTX.get_or_init(|| ctx.clone());
    if held.cu_ctx() != ctx.cu_ctx() {
        return Err(Error::Unavailable(
            "managed memory is already served from another CUDA context in this process".into(),
        ));
    }
    RAW_CTX.store(ctx.cu_ctx() as usize, Ordering::Relaxed);
    if let Ok(from) = std::env::var(FROM_VAR) {
        let n: usize = from
            .parse()
            .map_err(|_| Error::Unavailable(format!("{FROM_VAR}={from:?}: expected bytes")))?;
        FROM.store(n.max(MIN_FROM), Ordering::Relaxed);
    }
    // Every driver entry point the allocator uses is resolved here, outside it (cudarc loads
    // each symbol at its first call), by one block made, zeroed and freed.
    ctx.bind_to_thread()
        .map_err(crate::error::driver("bind the context"))?;
    // SAFETY: a fresh managed block of 4 KiB, zeroed by the driver within its size and freed
    // once; the context is current on this thread (bound above).
    unsafe {
        let mut p: sys::CUdeviceptr = 0;
        let mut cur: sys::CUcontext = std::ptr::null_mut();
        let r = [
            sys::cuCtxGetCurrent(&mut cur),
            sys::cuMemAllocManaged(&mut p, 4 << 10, attach_global()),
            sys::cuMemsetD8Async(p, 0, 4 << 10, std::ptr::null_mut()),
            sys::cuStreamSynchronize(std::ptr::null_mut()),
            sys::cuMemFree_v2(p),
        ];
        if let Some(e) = r.iter().find(|r| **r != sys::CUresult::CUDA_SUCCESS) {
            return Err(Error::Unavailable(format!(
                "{name}: managed memory does not work here ({e:?} making, zeroing or freeing a \
                 4 KiB block); use device = \"cuda\", which copies"
            )));
        }
        let _ = sys::cuCtxSetCurrent(cur);
    }
    EVER.store(true, Ordering::Relaxed);
    ON.store(true, Ordering::Release);
    tracing::info!(
        from = FROM.load(Ordering::Relaxed),
        "allocations from this size on are CUDA managed memory"
    );
    Ok(())
}

/// Stops serving new allocations from managed memory (blocks already made stay valid and are
/// freed as usual).
pub fn disable() {
    ON.store(false, Ordering::Release);
}

/// Whether [`alloc`] serves allocations now.
pub fn is_on() -> bool {
    ON.load(Ordering::Acquire)
}

fn attach_global() -> std::ffi::c_uint {
    sys::CUmemAttach_flags_enum::CU_MEM_ATTACH_GLOBAL as std::ffi::c_uint
}

/// A managed block for an allocation of `size` bytes aligned to `align`, zeroed by the device
/// when `zeroed`; `None` when managed memory is off, the allocation is below the threshold or
/// more aligned than [`ALIGN`], this thread is already inside this module, or the driver
/// refused (the caller then asks the system allocator).
///
/// # Safety
/// The block must be given back by [`free`] (with any size of at least the threshold), never
/// to another allocator.
pub unsafe fn alloc(size: usize, align: usize, zeroed: bool) -> Option<*mut u8> {
    if !ON.load(Ordering::Relaxed) || size < FROM.load(Ordering::Relaxed) || align > ALIGN {
        return None;
    }
    let _busy = Busy::take()?;
    let class = class_of(size);
    // SAFETY: the raw context was stored by `enable` from a context kept alive in `CTX`;
    // binding it to this thread, making a block of `class` bytes and zeroing the first `size`
    // of them are the driver's documented calls on memory it returned.
    unsafe {
        let ctx = RAW_CTX.load(Ordering::Relaxed) as sys::CUcontext;
        let mut cur: sys::CUcontext = std::ptr::null_mut();
        if sys::cuCtxGetCurrent(&mut cur) != sys::CUresult::CUDA_SUCCESS {
            FALLBACKS.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if cur != ctx && sys::cuCtxSetCurrent(ctx) != sys::CUresult::CUDA_SUCCESS {
            FALLBACKS.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let kept = BLOCKS
            .lock()
            .ok()
            .and_then(|mut b| b.kept.get_mut(&class).and_then(Vec::pop));
        let p = match kept {
            Some(p) => {
                REUSED.fetch_add(1, Ordering::Relaxed);
                p
            }
            None => {
                let mut p: sys::CUdeviceptr = 0;
                if sys::cuMemAllocManaged(&mut p, class, attach_global())
                    != sys::CUresult::CUDA_SUCCESS
                {
                    FALLBACKS.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                MADE.fetch_add(1, Ordering::Relaxed);
                MADE_BYTES.fetch_add(class as u64, Ordering::Relaxed);
                p as usize
            }
        };
        if zeroed {
            // On the device, so the pages are made (or stay) there. The null stream: ordered
            // after whatever the backend launched, and waited for here.
            let z = sys::cuMemsetD8Async(p as sys::CUdeviceptr, 0, size, std::ptr::null_mut());
            if z != sys::CUresult::CUDA_SUCCESS
                || sys::cuStreamSynchronize(std::ptr::null_mut()) != sys::CUresult::CUDA_SUCCESS
            {
                std::ptr::write_bytes(p as *mut u8, 0, size);
            }
        }
        match BLOCKS.lock() {
            Ok(mut b) => {
                b.live.insert(p, class);
            }
            Err(_) => {
                // Unreachable in practice (nothing panics while holding the lock); a block
                // that cannot be recorded is not handed out.
                let _ = sys::cuMemFree_v2(p as sys::CUdeviceptr);
                FALLBACKS.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        Some(p as *mut u8)
    }
}

/// Takes back the block at `ptr` (an allocation of `size` bytes) when it is a managed one,
/// keeping it for the next allocation of its size class; false when it is not (the caller
/// frees it where it came from).
pub fn free(ptr: *mut u8, size: usize) -> bool {
    if !EVER.load(Ordering::Relaxed) || size < FROM.load(Ordering::Relaxed) {
        return false;
    }
    let Some(_busy) = Busy::take() else {
        return false;
    };
    let Ok(mut b) = BLOCKS.lock() else {
        return false;
    };
    match b.live.remove(&(ptr as usize)) {
        Some(class) => {
            b.kept.entry(class).or_default().push(ptr as usize);
            true
        }
        None => false,
    }
}

/// Whether the block at `ptr` is a live managed one (false while this thread is inside this
/// module: its own bookkeeping is the system allocator's).
pub fn owns(ptr: *const u8) -> bool {
    if !EVER.load(Ordering::Relaxed) {
        return false;
    }
    let Some(_busy) = Busy::take() else {
        return false;
    };
    BLOCKS
        .lock()
        .is_ok_and(|b| b.live.contains_key(&(ptr as usize)))
}

/// Whether `[ptr, ptr + bytes)` lies inside one live managed block (so a kernel may use the
/// address itself).
pub fn contains(ptr: u64, bytes: usize) -> bool {
    if !EVER.load(Ordering::Relaxed) {
        return false;
    }
    let p = ptr as usize;
    BLOCKS.lock().is_ok_and(|b| {
        b.live
            .range(..=p)
            .next_back()
            .is_some_and(|(&start, &class)| p + bytes <= start + class)
    })
}

/// Gives the kept (freed) blocks back to the driver; returns their bytes.
pub fn release() -> usize {
    let blocks: Vec<(usize, Vec<usize>)> = match BLOCKS.lock() {
        Ok(mut b) => std::mem::take(&mut b.kept).into_iter().collect(),
        Err(_) => return 0,
    };
    let mut bytes = 0;
    for (class, ptrs) in blocks {
        for p in ptrs {
            // SAFETY: a block `cuMemAllocManaged` made, no longer live (taken out of the kept
            // lists above, so nobody else holds it).
            unsafe {
                let _ = sys::cuMemFree_v2(p as sys::CUdeviceptr);
            }
            bytes += class;
        }
    }
    bytes
}

/// A global allocator that serves large blocks from managed memory while [`enable`]d and
/// everything else from `A`: `#[global_allocator] static A: ManagedOr<System> =
/// ManagedOr(System);` in a binary that trains with `device = "cuda-managed"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManagedOr<A>(pub A);

// SAFETY: a block is either a managed one (made by `alloc`, recorded as live, given back only
// through `free`, which recognises it by its address) or `A`'s, handed to `A` with the
// caller's layout unchanged; `realloc` of a managed block moves the contents into a block of
// the new layout and frees the old one.
unsafe impl<A: std::alloc::GlobalAlloc> std::alloc::GlobalAlloc for ManagedOr<A> {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: managed blocks come back through `free` (in `dealloc`); else `A`'s contract.
        unsafe {
            match alloc(layout.size(), layout.align(), false) {
                Some(p) => p,
                None => self.0.alloc(layout),
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            match alloc(layout.size(), layout.align(), true) {
                Some(p) => p,
                None => self.0.alloc_zeroed(layout),
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if !free(ptr, layout.size()) {
            // SAFETY: not a managed block, so `A`'s, with this layout.
            unsafe { self.0.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if !owns(ptr) {
            // SAFETY: `A`'s block with this layout.
            return unsafe { self.0.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size` with `layout`'s alignment is a valid layout;
        // the new block holds at least the bytes copied, and the old one is freed once.
        unsafe {
            let new = std::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
            let p = self.alloc(new);
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::class_of;

    #[test]
    fn a_size_class_is_at_most_a_quarter_over_the_size_and_whole_pages() {
        for n in [
            1usize,
            4095,
            4096,
            65_536,
            65_537,
            100_000,
            1 << 20,
            (3 << 20) + 1,
            1 << 33,
        ] {
            let c = class_of(n);
            assert!(c >= n && c.is_multiple_of(4096), "{n} → {c}");
            assert!(n < 16 << 10 || c as f64 <= n as f64 * 1.25, "{n} → {c}");
        }
        // sizes a little apart share a class, so a step's varying expert rows reuse blocks
        assert_eq!(class_of(1_000_000), class_of(1_040_000));
        assert_eq!(class_of(1 << 20), 1 << 20);
    }
}
