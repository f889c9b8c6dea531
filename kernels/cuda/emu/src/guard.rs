//! A guarded heap for the emulation's kernel tests, so that a kernel reaching past the end of a
//! buffer faults there as it would in the emulated driver's device allocations, instead of
//! reading the next allocation's bytes and going unnoticed when they change no value.
//!
//! Each allocation gets its own mapping: its pages, then 1 MiB with no access (address space
//! only, no memory). The block ends as close to that guard as its alignment lets it: every
//! block starts 16-byte aligned, as the system allocator's do, so that the kernels' 16-byte
//! vector paths are taken as before, which leaves at most 15 bytes (align − 1 for a block
//! aligned beyond 16) between its end and the guard. Those bytes hold a pattern that is checked
//! when the block is freed: a write there aborts naming the block, a read there goes unseen.
//! A block aligned beyond a page comes from the system allocator, unguarded. A freed block is
//! unmapped; an access through a stale pointer faults only while nothing else is mapped
//! there, and a later allocation may well be (no quarantine, unlike the driver's). `fault.rs`
//! names the faults. A test binary opts in with
//!
//! ```
//! #[global_allocator]
//! static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;
//! # fn main() {
//! #     let v = vec![1.0f32; 100];
//! #     assert_eq!(v.as_ptr() as usize % 16, 0);
//! # }
//! ```
//!
//! Every allocation costs a system call to map, one to protect and one to unmap, a page of
//! memory and 1 MiB of address space, and two of the process's mappings (Linux allows 65,530:
//! about 32,000 live blocks): for tests, not for the driver or the trainer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::say::{digits, say};

/// The allocator; see the module's documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedAlloc;

/// The byte written between a block's end and its guard.
const PATTERN: u8 = 0xa5;
/// Every block's start is a multiple of this (or of its own, larger, alignment).
const MIN_ALIGN: usize = 16;
/// The inaccessible bytes after each block, as the emulated driver's device allocations have:
/// a kernel's loads past a buffer may skip far beyond its last row (a tile of rows at a time),
/// and only address space is spent on them.
const GUARD: usize = 1 << 20;

static PAGE: AtomicUsize = AtomicUsize::new(0);

fn page() -> usize {
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let p = if p > 0 { p as usize } else { 4096 };
            PAGE.store(p, Ordering::Relaxed);
            p
        }
        p => p,
    }
}

/// The block's geometry: (alignment, bytes of readable pages before the guard).
fn geometry(layout: Layout, page: usize) -> (usize, usize) {
    let align = layout.align().max(MIN_ALIGN);
    (align, layout.size().max(1).next_multiple_of(page))
}

/// Writes `msg` and the block's size to stderr and aborts.
fn die(msg: &str, size: usize) -> ! {
    let mut buf = [0u8; 20];
    say(&[msg.as_bytes(), digits(size, 10, &mut buf), b" bytes\n"]);
    std::process::abort()
}

// SAFETY: every block handed out is `layout.size()` bytes inside its own fresh mapping, aligned
// to at least `layout.align()`, and never handed out again until it is freed; blocks aligned
// beyond a page go to the system allocator both ways.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let page = page();
        let (align, pages) = geometry(layout, page);
        if align > page {
            // SAFETY: the caller's layout, passed on.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: a new anonymous private mapping, all of it inaccessible and no memory
        // reserved for it; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages + GUARD,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            // Null, as the contract asks (a `try_reserve` may recover); said first, since the
            // likely cause here is not memory but the count of mappings.
            let mut buf = [0u8; 20];
            say(&[
                b"tokenmill-cuda-emu guarded heap: mmap refused a block of ",
                digits(layout.size(), 10, &mut buf),
                b" bytes (each block is two mappings, and a process may have \
                  vm.max_map_count of them)\n",
            ]);
            return std::ptr::null_mut();
        }
        let base = base.cast::<u8>();
        // SAFETY: the mapping's first `pages` bytes made readable and writable; the rest stays
        // the guard.
        if unsafe { libc::mprotect(base.cast(), pages, libc::PROT_READ | libc::PROT_WRITE) } != 0 {
            // SAFETY: the whole mapping just made, not yet handed out.
            unsafe { libc::munmap(base.cast(), pages + GUARD) };
            return std::ptr::null_mut();
        }
        // SAFETY: `base + pages` is the guard's start, inside the mapping.
        let guard = unsafe { base.add(pages) };
        let end = guard as usize;
        let start = (end - layout.size()) & !(align - 1);
        // `pages` ≥ size rounded up to the page, and the page a multiple of `align`, so the
        // rounding down stays inside the mapping.
        debug_assert!(start >= base as usize);
        let block = start as *mut u8;
        // SAFETY: the bytes from the block's end to the guard, inside the readable pages.
        unsafe {
            std::ptr::write_bytes(
                block.add(layout.size()),
                PATTERN,
                end - start - layout.size(),
            )
        };
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() > page() {
            // SAFETY: the caller's layout, passed on (`alloc` would not zero this block).
            return unsafe { System.alloc_zeroed(layout) };
        }
        // A fresh anonymous mapping reads as zeros up to the block's end.
        // SAFETY: the caller's layout, passed on.
        unsafe { self.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let page = page();
        let (align, pages) = geometry(layout, page);
        if align > page {
            // SAFETY: allocated by `System.alloc` with this layout (above).
            return unsafe { System.dealloc(ptr, layout) };
        }
        let end = (ptr as usize + layout.size()).next_multiple_of(page);
        let tail = end - ptr as usize - layout.size();
        // SAFETY: the pattern's bytes, after the block and before its guard.
        let slack = unsafe { std::slice::from_raw_parts(ptr.add(layout.size()), tail) };
        if slack.iter().any(|&b| b != PATTERN) {
            die(
                "tokenmill-cuda-emu guarded heap: a write past the end of a block of ",
                layout.size(),
            );
        }
        // SAFETY: the mapping `alloc` made for this block (`pages` readable, then the guard);
        // the caller frees the block once and never touches it again.
        if unsafe { libc::munmap((end - pages) as *mut libc::c_void, pages + GUARD) } != 0 {
            die(
                "tokenmill-cuda-emu guarded heap: could not unmap a block of ",
                layout.size(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_end_at_their_guard_aligned_as_asked() {
        let page = page();
        for (size, align) in [(1, 1), (4, 4), (12, 4), (4096, 4), (4100, 8), (40, 64)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero layout; the block is freed with it below.
            let p = unsafe { GuardedAlloc.alloc(layout) };
            assert!(!p.is_null());
            let (start, end) = (p as usize, p as usize + size);
            assert_eq!(
                start % align.max(MIN_ALIGN),
                0,
                "{size} bytes aligned {align}"
            );
            let guard = end.next_multiple_of(page);
            assert!(
                guard - end < align.max(MIN_ALIGN),
                "{size} bytes aligned {align}"
            );
            // SAFETY: the block's own bytes.
            unsafe { std::ptr::write_bytes(p, 7, size) };
            // SAFETY: allocated above with this layout.
            unsafe { GuardedAlloc.dealloc(p, layout) };
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_guarded_or_aligned_beyond_a_page() {
        let page = page();
        for (size, align) in [(4, 4), (5000, 16), (64, 2 * page), (3 * page, 2 * page)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            for _ in 0..4 {
                // SAFETY: a non-zero layout; the block is freed with it below.
                let p = unsafe { GuardedAlloc.alloc_zeroed(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "{size} bytes aligned {align}");
                // SAFETY: the block's own `size` bytes, initialised (zeroed) by the allocator.
                let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                assert!(
                    bytes.iter().all(|&b| b == 0),
                    "{size} bytes aligned {align}"
                );
                // Dirty it, so that a block handed out again unzeroed would show (the system
                // allocator hands the 3-page one back: without `System.alloc_zeroed` above,
                // this test fails, at 12,288 bytes aligned 8,192).
                // SAFETY: the block's own bytes.
                unsafe { std::ptr::write_bytes(p, 0xff, size) };
                // SAFETY: allocated above with this layout.
                unsafe { GuardedAlloc.dealloc(p, layout) };
            }
        }
    }
}
