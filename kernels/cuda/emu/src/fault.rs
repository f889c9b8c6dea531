//! Faults in the emulation's kernel tests, named before the process dies of them: a SIGSEGV
//! (a kernel reaching past a buffer into the guarded heap's guard page, `guard.rs`, or into a
//! freed block) with its address, and a SIGILL at the trap the kernels' alignment check
//! compiles to (`build.rs`: `-fsanitize=alignment` trapping, `ud2` on x86-64) as the
//! misaligned access a GPU faults on. Each message names the test's thread. The first launch
//! installs the handler ([`report_faults`]), after std has installed its own at start-up
//! (which would otherwise replace it); the fault then goes on to the action there was before
//! (std's stack-overflow report, or the default: the process dies of the signal as before).

use std::sync::atomic::{AtomicBool, Ordering};

/// `n` in base `radix` (10 or 16) into the end of `buf`; the digits' slice. No allocation:
/// this runs inside the allocator and the signal handler.
pub(crate) fn digits(mut n: usize, radix: usize, buf: &mut [u8; 20]) -> &[u8] {
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
pub(crate) fn say(parts: &[&[u8]]) {
    for part in parts {
        // SAFETY: writes `part`'s bytes, alive for the call, to the standard error descriptor.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
}

/// Linux's `si_code` for a fault on a mapped page the access is not allowed on (a guard page);
/// `SEGV_MAPERR` (1) is an unmapped address.
const SEGV_ACCERR: libc::c_int = 2;
/// x86-64's `ud2`, the trap the alignment check compiles to.
const UD2: [u8; 2] = [0x0f, 0x0b];

static REPORTING: AtomicBool = AtomicBool::new(false);

/// The SIGSEGV and SIGILL actions in place before [`report_faults`], restored by [`on_fault`]
/// for the fault to reach them.
static mut PREVIOUS_SEGV: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();
static mut PREVIOUS_ILL: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();

/// Says what the fault was, then puts the previous action back: returning re-runs the faulting
/// instruction, which then meets it.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo for this signal, valid during the handler.
    let (addr, code) = unsafe { ((*info).si_addr() as usize, (*info).si_code) };
    let what: &[&[u8]] = if sig == libc::SIGILL {
        // SAFETY: si_addr of a SIGILL is the faulting instruction's address, in mapped code.
        let at = unsafe { std::slice::from_raw_parts(addr as *const u8, 2) };
        if at == UD2 {
            &[b"SIGILL at the alignment check's trap: a kernel's typed access whose address is not a multiple of its size (a GPU faults: misaligned address)"]
        } else {
            &[b"SIGILL, an illegal instruction"]
        }
    } else if code == SEGV_ACCERR {
        &[b"SIGSEGV, an access to a page with no access: a guard, past the end of a test buffer (or a stack's)"]
    } else {
        &[b"SIGSEGV, an access to an unmapped address: a freed test buffer, or a wild pointer (or more than 1 MiB past a buffer's end)"]
    };
    // The test harness names each test's thread after the test (the kernels' CUDA threads are
    // fibers on it); the kernel keeps the name's first 15 bytes (`PR_GET_NAME`, safe in a
    // signal handler, unlike std's thread handle).
    let mut comm = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into `comm`.
    unsafe { libc::prctl(libc::PR_GET_NAME, comm.as_mut_ptr()) };
    let name = &comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())];
    let mut buf = [0u8; 20];
    say(&[b"tokenmill-cuda-emu: "]);
    say(what);
    let at: &[u8] = if sig == libc::SIGILL {
        b"; the instruction at 0x"
    } else {
        b"; address 0x"
    };
    say(&[at, digits(addr, 16, &mut buf), b", thread ", name, b"\n"]);
    let previous = if sig == libc::SIGILL {
        &raw const PREVIOUS_ILL
    } else {
        &raw const PREVIOUS_SEGV
    };
    // SAFETY: the previous actions were written by `report_faults` before this handler was
    // installed and are never written again.
    unsafe {
        libc::sigaction(
            sig,
            previous.cast::<libc::sigaction>(),
            std::ptr::null_mut(),
        )
    };
}

/// Installs [`on_fault`] for SIGSEGV and SIGILL, once per process (the launches call it).
pub(crate) fn report_faults() {
    if REPORTING.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: a zeroed sigaction is a valid empty one; its handler is set to `on_fault`, which
    // takes the three arguments SA_SIGINFO passes (on the alternate stack std set up, if any,
    // so that a stack overflow still reaches std's report). The previous actions are written
    // here only, before the handler that reads them exists.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_fault as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(
            libc::SIGSEGV,
            &sa,
            (&raw mut PREVIOUS_SEGV).cast::<libc::sigaction>(),
        );
        libc::sigaction(
            libc::SIGILL,
            &sa,
            (&raw mut PREVIOUS_ILL).cast::<libc::sigaction>(),
        );
    }
}
