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
//! Kept blocks go back to the driver only with the process (or [`release`]): the pool holds
//! each size class's peak.
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
/// Set by [`shadow`]: large allocations stay the inner allocator's and are only recorded.
static SHADOW: AtomicBool = AtomicBool::new(false);
/// Set by the first [`enable`] that succeeds, never cleared: whether any block may be managed.
/// [`FROM`], [`RAW_CTX`] and [`RAW_STREAM`] are written before it and never after.
static EVER: AtomicBool = AtomicBool::new(false);
static FROM: AtomicUsize = AtomicUsize::new(DEFAULT_FROM);
/// The context every allocating thread is bound to; kept alive for the process, since a
/// released primary context frees its managed memory under the `Vec`s that hold it.
static CTX: OnceLock<Arc<CudaContext>> = OnceLock::new();
/// The raw handle of [`CTX`], for the allocator (which must not touch the `Arc`'s machinery).
static RAW_CTX: AtomicUsize = AtomicUsize::new(0);
/// A stream of the allocator's own (non-blocking: it waits for no other stream) on which
/// zeroed blocks are cleared, so that an allocating thread never queues behind the backend's
/// or NCCL's work on the legacy stream. A block handed out is idle: every backend operation
/// synchronises before it returns, or (deferred waits, [`defer_reuse`]) a freed block waits
/// for the next synchronisation before it is kept, so no kernel still uses a block handed out.
static RAW_STREAM: AtomicUsize = AtomicUsize::new(0);

struct Blocks {
    /// Live managed blocks: address → size class.
    live: BTreeMap<usize, usize>,
    /// Freed blocks by size class.
    kept: BTreeMap<usize, Vec<usize>>,
    /// Under [`defer_reuse`]: freed blocks that queued work may still use, with the
    /// [`EPOCH`] at their freeing and their size class; kept after the next wait ([`settled`]).
    waiting: Vec<(u64, usize, usize)>,
}

static BLOCKS: Mutex<Blocks> = Mutex::new(Blocks {
    live: BTreeMap::new(),
    kept: BTreeMap::new(),
    waiting: Vec::new(),
});

/// Set once a device defers its waits ([`defer_reuse`]).
static DEFER_REUSE: AtomicBool = AtomicBool::new(false);
/// Waits for the device begun so far ([`epoch`]).
static EPOCH: AtomicU64 = AtomicU64::new(0);

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
        // Not `then_some(Busy)`: its argument is made either way, and dropping the guard a
        // nested call did not get would clear the outer call's flag.
        BUSY.with(|b| if b.replace(true) { None } else { Some(Busy) })
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
    /// Allocations the driver refused (or made on a thread bound to another context), left to
    /// the system allocator.
    pub fallbacks: u64,
    /// Blocks live now.
    pub live: usize,
    /// Blocks kept for reuse now.
    pub kept: usize,
    /// The allocation threshold, bytes.
    pub from: usize,
}

/// The counts so far.
pub fn stats() -> Stats {
    let (live, kept) = BLOCKS
        .lock()
        .map(|b| (b.live.len(), b.kept.values().map(Vec::len).sum()))
        .unwrap_or((0, 0));
    Stats {
        made: MADE.load(Ordering::Relaxed),
        made_bytes: MADE_BYTES.load(Ordering::Relaxed),
        reused: REUSED.load(Ordering::Relaxed),
        fallbacks: FALLBACKS.load(Ordering::Relaxed),
        live,
        kept,
        from: FROM.load(Ordering::Relaxed),
    }
}

/// The size class of an allocation of `n` bytes: `n` rounded up to a quarter of its power of
/// two (at least 4 KiB), so a block serves any size within 25 % below its own.
pub fn class_of(n: usize) -> usize {
    let top = 1usize << (usize::BITS - 1 - n.max(1).leading_zeros());
    n.next_multiple_of((top / 4).max(4 << 10))
}

fn ok(r: sys::CUresult) -> bool {
    r == sys::CUresult::CUDA_SUCCESS
}

/// Serves the process's large allocations from managed memory on `ctx`'s GPU from now on
/// (what [`alloc`] and [`free`] do once this returned). Refused, naming what is missing, where
/// the GPU has no managed memory, where the host may not touch it while kernels run
/// (`CONCURRENT_MANAGED_ACCESS`: the model's host code runs beside the GPU's), and where the
/// binary's global allocator is not [`ManagedOr`] (nothing would be managed). The threshold
/// is [`FROM_VAR`]'s, else [`DEFAULT_FROM`], fixed by the first call that succeeds. One
/// context per process: a later call with another context is refused; with the same one it
/// turns serving back on after [`disable`].
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
    if EVER.load(Ordering::Acquire) {
        if RAW_CTX.load(Ordering::Relaxed) != ctx.cu_ctx() as usize {
            return Err(Error::Unavailable(
                "managed memory is already served from another CUDA context in this process".into(),
            ));
        }
        ON.store(true, Ordering::Release);
        return Ok(());
    }
    let from = match std::env::var(FROM_VAR) {
        Ok(v) => v
            .parse::<usize>()
            .map_err(|_| Error::Unavailable(format!("{FROM_VAR}={v:?}: expected bytes")))?
            .max(MIN_FROM),
        Err(_) => DEFAULT_FROM,
    };
    // Every driver entry point the allocator uses is resolved here, outside it (cudarc loads
    // each symbol at its first call): the allocator's stream made, one block made, zeroed on
    // it and freed.
    ctx.bind_to_thread()
        .map_err(crate::error::driver("bind the context"))?;
    // SAFETY: the context is current on this thread (bound above); a fresh managed block of
    // 4 KiB is zeroed within its size on the stream made here and freed once; the stream is
    // kept for the process (or destroyed when the probe fails).
    let stream = unsafe {
        let mut s: sys::CUstream = std::ptr::null_mut();
        let mut p: sys::CUdeviceptr = 0;
        let mut cur: sys::CUcontext = std::ptr::null_mut();
        let non_blocking = sys::CUstream_flags_enum::CU_STREAM_NON_BLOCKING as std::ffi::c_uint;
        let mut r = sys::cuCtxGetCurrent(&mut cur);
        if ok(r) {
            r = sys::cuStreamCreate(&mut s, non_blocking);
        }
        if ok(r) {
            r = sys::cuMemAllocManaged(&mut p, 4 << 10, attach_global());
        }
        if ok(r) {
            r = sys::cuMemsetD8Async(p, 0, 4 << 10, s);
        }
        if ok(r) {
            r = sys::cuStreamSynchronize(s);
        }
        if ok(r) {
            r = sys::cuMemFree_v2(p);
        }
        if !ok(r) {
            let e = r;
            if !s.is_null() {
                let _ = sys::cuStreamDestroy_v2(s);
            }
            return Err(Error::Unavailable(format!(
                "{name}: managed memory does not work here ({e:?} making a stream, or making, \
                 zeroing or freeing a 4 KiB block); use device = \"cuda\", which copies"
            )));
        }
        s
    };
    CTX.get_or_init(|| ctx.clone());
    RAW_CTX.store(ctx.cu_ctx() as usize, Ordering::Relaxed);
    RAW_STREAM.store(stream as usize, Ordering::Relaxed);
    FROM.store(from, Ordering::Relaxed);
    EVER.store(true, Ordering::Release);
    ON.store(true, Ordering::Release);
    // The binary's allocator must be `ManagedOr`, or nothing is managed and every operation
    // would copy while the model moves its data on the device.
    let probe: Vec<u8> = Vec::with_capacity(from);
    if !owns(probe.as_ptr()) {
        ON.store(false, Ordering::Release);
        return Err(Error::Unavailable(
            "device = \"cuda-managed\" needs the binary's global allocator to be \
             tokenmill_cuda::managed::ManagedOr (the tokenmill binary's is); this one's is not"
                .into(),
        ));
    }
    drop(probe);
    tracing::info!(
        from,
        "allocations from this size on are CUDA managed memory"
    );
    Ok(())
}

/// Records, on any machine, which allocations `device = "cuda-managed"` would make managed:
/// from now on every allocation of `from` bytes or more (at least [`MIN_FROM`]) through
/// [`ManagedOr`] stays the inner allocator's, and [`contains`] answers for it as for a managed
/// block. For `tokenmill bench seam`, which counts what the seam would still copy with the
/// model's large buffers in managed memory, without a GPU. Refused once managed memory was
/// enabled for real.
pub fn shadow(from: usize) -> Result<()> {
    if EVER.load(Ordering::Acquire) && !SHADOW.load(Ordering::Relaxed) {
        return Err(Error::Unavailable(
            "managed memory is served for real in this process: no shadow records".into(),
        ));
    }
    FROM.store(from.max(MIN_FROM), Ordering::Relaxed);
    SHADOW.store(true, Ordering::Relaxed);
    EVER.store(true, Ordering::Release);
    ON.store(true, Ordering::Release);
    Ok(())
}

/// Under [`shadow`], records the inner allocator's block at `p` of `size` bytes when it is
/// one that managed memory would serve.
fn shadow_note(p: *mut u8, size: usize) {
    if p.is_null()
        || !SHADOW.load(Ordering::Relaxed)
        || !ON.load(Ordering::Acquire)
        || size < FROM.load(Ordering::Relaxed)
    {
        return;
    }
    let Some(_busy) = Busy::take() else {
        return;
    };
    if let Ok(mut b) = BLOCKS.lock() {
        b.live.insert(p as usize, size);
    }
}

/// Stops serving new allocations from managed memory (blocks already made stay valid and are
/// freed as usual; [`release`] gives the kept ones back).
pub fn disable() {
    ON.store(false, Ordering::Release);
}

/// Whether [`alloc`] serves allocations now.
pub fn is_on() -> bool {
    ON.load(Ordering::Acquire)
}

/// The allocation threshold, bytes.
pub fn from() -> usize {
    FROM.load(Ordering::Relaxed)
}

fn attach_global() -> std::ffi::c_uint {
    sys::CUmemAttach_flags_enum::CU_MEM_ATTACH_GLOBAL as std::ffi::c_uint
}

/// Makes the allocator's context current on this thread when none is; false when another
/// context is current (the allocator then leaves the allocation to the system rather than
/// switch the thread's context under its owner) or the driver fails.
///
/// # Safety
/// Only after [`EVER`] was set (the context is then alive for the process).
unsafe fn bind() -> bool {
    let ctx = RAW_CTX.load(Ordering::Relaxed) as sys::CUcontext;
    let mut cur: sys::CUcontext = std::ptr::null_mut();
    // SAFETY: plain driver calls on the calling thread's context stack.
    unsafe {
        if !ok(sys::cuCtxGetCurrent(&mut cur)) {
            return false;
        }
        cur == ctx || (cur.is_null() && ok(sys::cuCtxSetCurrent(ctx)))
    }
}

/// A managed block for an allocation of `size` bytes aligned to `align`, zeroed by the device
/// when `zeroed`; `None` when managed memory is off, the allocation is below the threshold or
/// more aligned than [`ALIGN`], this thread is already inside this module, another context is
/// current on it, or the driver refused (the caller then asks the system allocator).
///
/// # Safety
/// The block must be given back by [`free`] (with any size of at least the threshold), never
/// to another allocator.
pub unsafe fn alloc(size: usize, align: usize, zeroed: bool) -> Option<*mut u8> {
    if !ON.load(Ordering::Acquire)
        || size < FROM.load(Ordering::Relaxed)
        || align > ALIGN
        || SHADOW.load(Ordering::Relaxed)
    {
        return None;
    }
    let _busy = Busy::take()?;
    let class = class_of(size);
    // SAFETY: `ON` was set after the context, its stream and the threshold (acquired above);
    // making a block of `class` bytes and zeroing the first `size` of them are the driver's
    // documented calls on memory it returned.
    unsafe {
        if !bind() {
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
                if !ok(sys::cuMemAllocManaged(&mut p, class, attach_global())) {
                    FALLBACKS.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                MADE.fetch_add(1, Ordering::Relaxed);
                MADE_BYTES.fetch_add(class as u64, Ordering::Relaxed);
                p as usize
            }
        };
        if zeroed {
            // On the device, so the pages are made (or stay) there.
            let s = RAW_STREAM.load(Ordering::Relaxed) as sys::CUstream;
            if !ok(sys::cuMemsetD8Async(p as sys::CUdeviceptr, 0, size, s))
                || !ok(sys::cuStreamSynchronize(s))
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
///
/// # Safety
/// `ptr` is an allocation of `size` bytes that nobody uses any more (a global allocator's
/// `dealloc`): a managed block taken back is handed out again.
pub unsafe fn free(ptr: *mut u8, size: usize) -> bool {
    if !EVER.load(Ordering::Acquire) || size < FROM.load(Ordering::Relaxed) {
        return false;
    }
    let Some(_busy) = Busy::take() else {
        return false;
    };
    let Ok(mut b) = BLOCKS.lock() else {
        return false;
    };
    match b.live.remove(&(ptr as usize)) {
        // Under `shadow` the block is the inner allocator's: forgotten, freed there.
        Some(_) if SHADOW.load(Ordering::Relaxed) => false,
        Some(class) if DEFER_REUSE.load(Ordering::Acquire) => {
            let at = EPOCH.load(Ordering::SeqCst);
            b.waiting.push((at, class, ptr as usize));
            true
        }
        Some(class) => {
            b.kept.entry(class).or_default().push(ptr as usize);
            true
        }
        None => false,
    }
}

/// With `on`, a freed block is handed out again only after the device was waited for
/// ([`settled`]): operations that return before the device is done with them (the CUDA
/// backend's deferred waits) may have queued work that still uses a block the host freed.
/// Stream order covers that work against later kernels, but not against the host writing
/// into the block's next allocation, nor the allocator zeroing it on its own stream. Blocks
/// freed while it was on wait for a wait (or [`release`]) even after it is off.
pub fn defer_reuse(on: bool) {
    DEFER_REUSE.store(on, Ordering::Release);
}

/// A wait for the device begins: its number, for [`settled`] once it has returned.
pub fn epoch() -> u64 {
    EPOCH.fetch_add(1, Ordering::SeqCst)
}

/// The wait numbered `e` ([`epoch`]) returned: the work queued before it is done, so the
/// blocks freed before it began may be handed out again.
pub fn settled(e: u64) {
    let Some(_busy) = Busy::take() else {
        return;
    };
    let Ok(mut b) = BLOCKS.lock() else {
        return;
    };
    let b = &mut *b;
    let mut i = 0;
    while i < b.waiting.len() {
        if b.waiting[i].0 <= e {
            let (_, class, p) = b.waiting.swap_remove(i);
            b.kept.entry(class).or_default().push(p);
        } else {
            i += 1;
        }
    }
}

/// The size class of the live managed block at `ptr`, if it is one (`None` while this thread
/// is inside this module: its own bookkeeping is the system allocator's).
fn class_at(ptr: *const u8) -> Option<usize> {
    if !EVER.load(Ordering::Acquire) {
        return None;
    }
    let _busy = Busy::take()?;
    BLOCKS
        .lock()
        .ok()
        .and_then(|b| b.live.get(&(ptr as usize)).copied())
}

/// Whether the block at `ptr` is a live managed one.
pub fn owns(ptr: *const u8) -> bool {
    class_at(ptr).is_some()
}

/// Whether `[ptr, ptr + bytes)` lies inside one live managed block (so a kernel may use the
/// address itself).
pub fn contains(ptr: u64, bytes: usize) -> bool {
    if !EVER.load(Ordering::Acquire) {
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
    if !EVER.load(Ordering::Acquire) {
        return 0;
    }
    let Some(_busy) = Busy::take() else {
        return 0;
    };
    // Taken whole (no allocation under the lock), freed after; blocks waiting for the device
    // too (the caller waited for it: nothing runs).
    let (mut kept, waiting) = match BLOCKS.lock() {
        Ok(mut b) => (std::mem::take(&mut b.kept), std::mem::take(&mut b.waiting)),
        Err(_) => return 0,
    };
    for (_, class, p) in waiting {
        kept.entry(class).or_default().push(p);
    }
    let mut bytes = 0;
    // SAFETY: `EVER` is set; the blocks were made by `cuMemAllocManaged` and, taken out of the
    // kept lists above, are held by nobody.
    unsafe {
        let bound = bind();
        for (class, ptrs) in kept {
            for p in ptrs {
                if bound && ok(sys::cuMemFree_v2(p as sys::CUdeviceptr)) {
                    bytes += class;
                }
            }
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
                None => {
                    let p = self.0.alloc(layout);
                    shadow_note(p, layout.size());
                    p
                }
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            match alloc(layout.size(), layout.align(), true) {
                Some(p) => p,
                None => {
                    let p = self.0.alloc_zeroed(layout);
                    shadow_note(p, layout.size());
                    p
                }
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller gives up the block.
        if !unsafe { free(ptr, layout.size()) } {
            // SAFETY: not a managed block, so `A`'s, with this layout.
            unsafe { self.0.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if SHADOW.load(Ordering::Relaxed) {
            // SAFETY: `A`'s block with this layout (under `shadow` every block is), forgotten
            // by `free` (which frees nothing then) and recorded again where it moved.
            unsafe {
                free(ptr, layout.size());
                let p = self.0.realloc(ptr, layout, new_size);
                shadow_note(p, new_size);
                return p;
            }
        }
        // SAFETY: the caller guarantees `new_size` with `layout`'s alignment is a valid layout.
        let new =
            unsafe { std::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
        let moved = match class_at(ptr) {
            // Still inside its block and still over the threshold (so `free` finds it):
            // unchanged, its pages where they are.
            Some(class) if new_size <= class && new_size >= from() => return ptr,
            Some(_) => true,
            // `A`'s block grown past the threshold while serving: into managed memory, so
            // that the kernels reach it.
            None => is_on() && new_size >= from() && layout.align() <= ALIGN,
        };
        if !moved {
            // SAFETY: `A`'s block with this layout.
            return unsafe { self.0.realloc(ptr, layout, new_size) };
        }
        // SAFETY: the new block holds at least the bytes copied, and the old one is freed
        // once, by whichever allocator it came from (`dealloc` tells them apart).
        unsafe {
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
