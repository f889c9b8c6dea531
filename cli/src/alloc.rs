//! The binary's allocator: the system allocator, with every allocation of 4 MiB or more advised
//! to Linux as a transparent-huge-page candidate (`madvise(MADV_HUGEPAGE)`).
//!
//! Why: a training step allocates its activations afresh (the output head's logits alone are
//! `tokens × vocabulary` floats: 824 MB at 4,096 tokens and 50,304 entries), and glibc serves
//! such sizes with fresh `mmap`s, so every step faults them in 4 KiB at a time — measured with
//! `perf` on `bench train` (small preset, 8 × 512): page clearing, faults and their locks took
//! ~15 % of the step. Where THP is `madvise` (the common default, and this machine's), advised
//! ranges fault in 2 MiB pages, 512 times fewer faults. Where THP is `always` this changes
//! nothing; where it is `never`, or the call fails, the allocation is unchanged.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

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

// SAFETY: every call is forwarded to `System` with the caller's layout unchanged; `advise`
// only gives the kernel a hint about pages of a block this allocator returned.
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
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
