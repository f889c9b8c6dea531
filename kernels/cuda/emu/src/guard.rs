//! A guarded heap for the emulation's kernel tests, so that a kernel reaching past the end of a
//! buffer faults there as it would in the emulated driver's device allocations, instead of
//! reading the next allocation's bytes and going unnoticed when they change no value.
//!
//! Each allocation gets its own mapping: its pages, then one page with no access. The block
//! ends as close to that page as its alignment lets it (at most 15 bytes short, since every
//! block starts 16-byte aligned, as the system allocator's do, so that the kernels' 16-byte
//! vector paths are taken as before). Those few bytes between the end and the guard hold
//! a pattern that is checked when the block is freed: a write there aborts naming the block,
//! a read there goes unseen. A freed block is unmapped, so a later access through a stale
//! pointer faults too (until the address is mapped again). The first launch installs a SIGSEGV
//! handler that names the address, whether it was a guard page or unmapped, and the test's
//! thread (its name's first 15 bytes), then lets the fault go on as it would have. A test
//! binary opts in with
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
//! Every allocation costs a system call to map and two to protect and unmap, and at least two
//! pages of address space (Linux allows 65,530 mappings, so about 32,000 live blocks): for tests,
//! not for the driver or the trainer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The allocator; see the module's documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedAlloc;

/// The byte written between a block's end and its guard page.
const PATTERN: u8 = 0xa5;
/// Every block's start is a multiple of this (or of its own, larger, alignment).
const MIN_ALIGN: usize = 16;

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

/// `n` in base `radix` (10 or 16) into the end of `buf`; the digits' slice. No allocation:
/// this runs inside the allocator and the signal handler.
fn digits(mut n: usize, radix: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[n % radix];
        n /= radix;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Writes the parts to stderr, unbuffered and without allocating.
fn say(parts: &[&[u8]]) {
    for part in parts {
        // SAFETY: writes `part`'s bytes, alive for the call, to the standard error descriptor.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}

/// Writes `msg` and the block's size to stderr and aborts.
fn die(msg: &str, size: usize) -> ! {
    let mut buf = [0u8; 20];
    say(&[msg.as_bytes(), digits(size, 10, &mut buf), b" bytes\n"]);
    std::process::abort()
}

/// Linux's `si_code` for a fault on a mapped page the access is not allowed on (a guard page);
/// `SEGV_MAPERR` (1) is an unmapped address.
const SEGV_ACCERR: libc::c_int = 2;

static REPORTING: AtomicBool = AtomicBool::new(false);

/// The SIGSEGV action in place before [`report_faults`] (std's stack-overflow handler in a
/// Rust program), restored by [`on_segv`] for the fault to reach it.
static mut PREVIOUS: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();

/// Names a SIGSEGV's address and cause, then puts the previous action back: returning re-runs
/// the faulting access, which then meets it (std's handler reports a stack overflow; anything
/// else dies of the SIGSEGV as before).
extern "C" fn on_segv(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo for this SIGSEGV, valid during the handler.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    let why: &[u8] = if code == SEGV_ACCERR {
        b" in a page with no access: a guard page, past the end of a test buffer (or a stack)"
    } else {
        b", not mapped: a freed test buffer, or a wild pointer"
    };
    // The test harness names each test's thread after the test (the kernels' CUDA threads are
    // fibers on it); the kernel keeps the name's first 15 bytes (`PR_GET_NAME`, safe in a
    // signal handler, unlike std's thread handle).
    let mut comm = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into `comm`.
    unsafe { libc::prctl(libc::PR_GET_NAME, comm.as_mut_ptr()) };
    let name = &comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())];
    let mut buf = [0u8; 20];
    say(&[
        b"tokenmill-cuda-emu guarded heap: SIGSEGV, an access to 0x",
        digits(addr, 16, &mut buf),
        why,
        b"; thread ",
        name,
        b"\n",
    ]);
    // SAFETY: PREVIOUS was written by `report_faults` before this handler was installed and
    // is never written again.
    unsafe {
        libc::sigaction(
            libc::SIGSEGV,
            (&raw const PREVIOUS).cast::<libc::sigaction>(),
            std::ptr::null_mut(),
        )
    };
}

/// Installs [`on_segv`] for SIGSEGV, once per process; the emulation's launches call it, after
/// std has installed its own handler at start-up (which would otherwise replace this one).
pub(crate) fn report_faults() {
    if REPORTING.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: a zeroed sigaction is a valid empty one; its handler is set to `on_segv`, which
    // takes the three arguments SA_SIGINFO passes (on the alternate stack std set up, if any,
    // so that a stack overflow still reaches std's report). PREVIOUS is written here only,
    // before the handler that reads it exists.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_segv as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(
            libc::SIGSEGV,
            &sa,
            (&raw mut PREVIOUS).cast::<libc::sigaction>(),
        );
    }
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
        // SAFETY: a new anonymous private mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                pages + page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let base = base.cast::<u8>();
        // SAFETY: `base + pages` is the mapping's last page, inside it.
        let guard = unsafe { base.add(pages) };
        // SAFETY: the last page of the mapping just made.
        if unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) } != 0 {
            // SAFETY: the whole mapping just made, not yet handed out.
            unsafe { libc::munmap(base.cast(), pages + page) };
            return std::ptr::null_mut();
        }
        let end = guard as usize;
        let start = (end - layout.size()) & !(align - 1);
        // `pages` ≥ size rounded up to the page, and the page a multiple of `align`, so the
        // rounding down stays inside the mapping.
        debug_assert!(start >= base as usize);
        let block = start as *mut u8;
        // SAFETY: the bytes from the block's end to the guard page, inside the readable pages.
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
        // SAFETY: the pattern's bytes, after the block and before its guard page.
        let slack = unsafe { std::slice::from_raw_parts(ptr.add(layout.size()), tail) };
        if slack.iter().any(|&b| b != PATTERN) {
            die(
                "tokenmill-cuda-emu guarded heap: a write past the end of a block of ",
                layout.size(),
            );
        }
        // SAFETY: the mapping `alloc` made for this block (`pages` readable, then the guard);
        // the caller frees the block once and never touches it again.
        if unsafe { libc::munmap((end - pages) as *mut libc::c_void, pages + page) } != 0 {
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
    fn blocks_end_at_their_guard_page_aligned_as_asked() {
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
}
