//! The binary's allocator: the system allocator, with every allocation of 4 MiB or more advised
//! to Linux as a transparent-huge-page candidate (`madvise(MADV_HUGEPAGE)`), and freed blocks of
//! 64 MiB or more kept (up to 8 blocks, 2 GiB together) for the next allocation of exactly
//! their size and alignment.
//!
//! Why: a training step allocates its activations afresh (the output head's logits alone are
//! `tokens × vocabulary` floats: 824 MB at 4,096 tokens and 50,304 entries), and glibc serves
//! such sizes with fresh `mmap`s, so every step faults them in 4 KiB at a time — measured with
//! `perf` on `bench train` (small preset, 8 × 512): page clearing, faults and their locks took
//! ~15 % of the step. Where THP is `madvise` (the common default, and this machine's), advised
//! ranges fault in 2 MiB pages, 512 times fewer faults. Where THP is `always` this changes
//! nothing; where it is `never`, or the call fails, the allocation is unchanged.
//!
//! Keeping the largest blocks goes further: a step frees and allocates the same activations
//! (same shapes, same sizes) every step, and glibc returns blocks this large to the kernel at
//! once, so each step faults them in and has the kernel clear them again. A kept block is
//! handed back already mapped (zeroed by `memset` when asked for zeroed memory). Measured on
//! `bench train` (small preset, 8 × 512, 2 threads, `--profile perf`, back to back): bf16 step
//! 1.93–1.95 s → 1.81–1.82 s, fp32 unchanged within noise (2.92–2.97 s against 2.95–3.03 s);
//! peak memory +40 MiB.

//!
//! Training on the GPU through the host's own memory (`device = "cuda-hmm"`) wants the
//! opposite: a buffer's pages should be fresh, so that the GPU touches them first and they are
//! made on the device, where a kept block zeroed by the host's `memset` (or a heap chunk glibc
//! reuses and clears for `calloc`) pulls its pages back to the CPU every step. [`fresh_pages`]
//! switches the keeping off and has glibc map every block from 128 KiB on afresh.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator with huge pages advised for large blocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct HugePages;

/// Allocations from this size on are advised.
const ADVISE_FROM: usize = 4 << 20;
/// The huge page size advised for (x86-64, aarch64 with 4 KiB base pages).
const HUGE: usize = 2 << 20;

/// Advises the whole 2 MiB pages inside `[p, p + size)`.
fn advise(p: *mut u8, size: usize) {
    if p.is_null() || size < ADVISE_FROM {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = (p as usize).next_multiple_of(HUGE);
        let end = (p as usize + size) / HUGE * HUGE;
        if end > start {
            // SAFETY: [start, end) lies inside the block just allocated (start is rounded up
            // from its first byte, end down from one past its last); MADV_HUGEPAGE changes
            // only how the kernel backs those pages, never their contents. Errors are ignored:
            // the memory is valid either way.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// Freed blocks from this size on are kept for the next allocation of the same size and
/// alignment (a training step frees and allocates the same activations every step; a block
/// kept is already faulted in).
const KEEP_FROM: usize = 64 << 20;
/// Kept blocks hold at most this many bytes together.
const KEEP_BYTES: usize = 2 << 30;
const SLOTS: usize = 8;

#[derive(Clone, Copy)]
struct Kept {
    ptr: usize,
    size: usize,
    align: usize,
}

static KEPT: Mutex<[Option<Kept>; SLOTS]> = Mutex::new([None; SLOTS]);

/// A kept block for `layout`, if there is one.
fn take(layout: Layout) -> Option<*mut u8> {
    if layout.size() < KEEP_FROM {
        return None;
    }
    let mut k = KEPT.lock().ok()?;
    let slot = k
        .iter_mut()
        .find(|s| s.is_some_and(|b| b.size == layout.size() && b.align == layout.align()))?;
    slot.take().map(|b| b.ptr as *mut u8)
}

/// Set by [`fresh_pages`]: no block is kept.
static FRESH: AtomicBool = AtomicBool::new(false);

/// Keeps a freed block when it is large and there is room; false when the caller must free it.
fn keep(ptr: *mut u8, layout: Layout) -> bool {
    if layout.size() < KEEP_FROM || FRESH.load(Ordering::Relaxed) {
        return false;
    }
    let Ok(mut k) = KEPT.lock() else {
        return false;
    };
    let held: usize = k.iter().flatten().map(|b| b.size).sum();
    if held + layout.size() > KEEP_BYTES {
        return false;
    }
    match k.iter_mut().find(|s| s.is_none()) {
        Some(s) => {
            *s = Some(Kept {
                ptr: ptr as usize,
                size: layout.size(),
                align: layout.align(),
            });
            true
        }
        None => false,
    }
}

/// Frees the kept blocks and hands glibc's free heap memory back to the kernel
/// (`malloc_trim`): for a phase that needs the memory more than the next step needs its
/// blocks already mapped (`bench seam` before the optimizer's moments on the `1b` preset).
pub fn release() {
    let blocks: Vec<Kept> = match KEPT.lock() {
        Ok(mut k) => k.iter_mut().filter_map(Option::take).collect(),
        Err(_) => Vec::new(),
    };
    for b in blocks {
        // SAFETY: a kept block came from `System` with exactly this size and alignment (both
        // were valid for a `Layout` when it was allocated) and, taken out of its slot above, is
        // owned by nobody else.
        unsafe {
            System.dealloc(
                b.ptr as *mut u8,
                Layout::from_size_align_unchecked(b.size, b.align),
            )
        };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of glibc's heaps to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Bytes in kept blocks now.
pub fn kept_bytes() -> usize {
    KEPT.lock()
        .map(|k| k.iter().flatten().map(|b| b.size).sum())
        .unwrap_or(0)
}

/// From now on, large blocks come as fresh pages for the process's life: the kept blocks are
/// freed and none is kept again, and glibc maps every allocation of 128 KiB or more on its own
/// (`M_MMAP_THRESHOLD`, which also stops glibc raising that threshold as it frees blocks), so
/// zeroed memory is the kernel's zero pages, never a `memset` by the host. For training on
/// host memory through HMM, where the GPU should be the first to touch a buffer.
pub fn fresh_pages() {
    FRESH.store(true, Ordering::Relaxed);
    release();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's policy for later allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

// SAFETY: every call is forwarded to `System` with the caller's layout unchanged; `advise`
// only gives the kernel a hint about pages of a block this allocator returned.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = take(layout) {
            return p;
        }
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = take(layout) {
            // SAFETY: a kept block of exactly `layout.size()` bytes, owned by nobody else.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if keep(ptr, layout) {
            return;
        }
        // SAFETY: `ptr` came from `System` with this layout (every block of this allocator
        // does).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; the caller's contract for `realloc` is `System.realloc`'s.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        advise(p, new_size);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_large_block_is_handed_back_for_the_same_size_and_zeroed_when_asked() {
        let a = HugePages;
        // sizes no other test in this process allocates, so the slots' contents are ours
        let l = Layout::from_size_align(KEEP_FROM + 4096 * 3, 4096).unwrap();
        let other = Layout::from_size_align(KEEP_FROM + 4096 * 5, 4096).unwrap();
        // SAFETY: valid layouts; every block is freed below with the layout it was allocated
        // with.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            p.add(100).write(9);
            a.dealloc(p, l);
            // another size does not get it
            let q = a.alloc(other);
            assert_ne!(q, p);
            // the same size does, zeroed when zeroed memory is asked for
            let z = a.alloc_zeroed(l);
            assert_eq!(z, p);
            assert!(
                std::slice::from_raw_parts(z, l.size())
                    .iter()
                    .all(|&b| b == 0)
            );
            a.dealloc(z, l);
            let again = a.alloc(l);
            assert_eq!(again, p, "kept again after the second free");
            a.dealloc(again, l);
            a.dealloc(q, other);
            // small blocks are never kept
            let s = Layout::from_size_align(1 << 20, 64).unwrap();
            assert!(!keep(std::ptr::null_mut(), s));
        }
        // no more than KEEP_BYTES are held
        let k = KEPT.lock().unwrap();
        assert!(k.iter().flatten().map(|b| b.size).sum::<usize>() <= KEEP_BYTES);
    }

    #[test]
    fn large_blocks_are_usable_and_keep_their_contents() {
        let a = HugePages;
        for size in [16, ADVISE_FROM - 1, ADVISE_FROM, 9 << 20] {
            let l = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: a non-zero size and a valid alignment; every block is freed below.
            unsafe {
                let z = a.alloc_zeroed(l);
                assert!(!z.is_null());
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                z.add(size - 1).write(7);
                let r = a.realloc(z, l, size * 2);
                assert_eq!(r.add(size - 1).read(), 7);
                a.dealloc(r, Layout::from_size_align(size * 2, 64).unwrap());
            }
        }
    }
}
