//! Faults in the emulation's kernel tests, named before the process dies of them: a SIGSEGV
//! with its address (a kernel reaching past a buffer into the guarded heap's guard, `guard.rs`,
//! or to an address nothing is mapped at), and a SIGILL at the trap the kernels' alignment
//! check compiles to (`build.rs`: `-fsanitize=alignment` trapping, `ud2` on x86-64) as the
//! misaligned access a GPU faults on. Each message names the test's thread. The first launch
//! installs the handler ([`report_faults`]): std installs its own (the stack-overflow report,
//! with its alternate stacks) at start-up only where the action is still the default, so this
//! one comes after it, and each fault then goes on to the action there was before (std's
//! handler, or the default: the process dies of the signal as before). A signal sent by a
//! process (`kill`, `raise`) rather than raised by a fault is passed on unnamed.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::say::{digits, say};

/// Linux's `si_code`s (asm-generic/siginfo.h; not in the `libc` crate for Linux): a SIGSEGV on
/// a mapped page the access is not allowed on (`SEGV_MAPERR`, 1, is an unmapped address), and
/// a SIGILL at an illegal operand, which x86-64's `ud2` raises.
const SEGV_ACCERR: libc::c_int = 2;
const ILL_ILLOPN: libc::c_int = 2;
/// x86-64's `ud2`, the trap the alignment check compiles to.
const UD2: [u8; 2] = [0x0f, 0x0b];

static REPORTING: AtomicBool = AtomicBool::new(false);

/// The SIGSEGV and SIGILL actions in place before [`report_faults`], restored by [`on_fault`]
/// for the fault to reach them.
static mut PREVIOUS_SEGV: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();
static mut PREVIOUS_ILL: std::mem::MaybeUninit<libc::sigaction> = std::mem::MaybeUninit::zeroed();

/// Says what the fault was, then puts the previous action back: returning re-runs the faulting
/// instruction, which then meets it. A signal a process sent (`si_code` ≤ 0) is raised again
/// instead, as returning would not repeat it.
extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo for this signal, valid during the handler.
    let code = unsafe { (*info).si_code };
    let previous = if sig == libc::SIGILL {
        &raw const PREVIOUS_ILL
    } else {
        &raw const PREVIOUS_SEGV
    };
    // SAFETY: the previous actions were saved by `report_faults` before it installed this
    // handler and are never written again.
    unsafe {
        libc::sigaction(
            sig,
            previous.cast::<libc::sigaction>(),
            std::ptr::null_mut(),
        )
    };
    if code <= 0 {
        // SAFETY: raises the signal again, now under the previous action.
        unsafe { libc::raise(sig) };
        return;
    }
    // SAFETY: for a signal the kernel raised at a fault, si_addr is the faulting address (the
    // instruction's, for SIGILL).
    let addr = unsafe { (*info).si_addr() } as usize;
    let what: &[u8] = if sig == libc::SIGILL {
        // SAFETY: an illegal-operand SIGILL's address is the instruction's, in mapped code, and
        // ud2 is two bytes long.
        let trap = code == ILL_ILLOPN
            && unsafe { std::slice::from_raw_parts(addr as *const u8, 2) } == UD2;
        if trap {
            b"SIGILL at the alignment check's trap: a kernel's typed access whose address is not a multiple of its size (a GPU faults: misaligned address)"
        } else {
            b"SIGILL, an illegal instruction"
        }
    } else if code == SEGV_ACCERR {
        b"SIGSEGV, an access to a page this access is not allowed on: a guard, past the end of a test buffer (or a stack's guard)"
    } else {
        b"SIGSEGV, an access to an unmapped address: more than 1 MiB past a test buffer's end, a freed one, or a wild pointer"
    };
    // The test harness names each test's thread after the test (the kernels' CUDA threads are
    // fibers on it); the kernel keeps the name's first 15 bytes (`PR_GET_NAME`, safe in a
    // signal handler, unlike std's thread handle).
    let mut comm = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into `comm`.
    unsafe { libc::prctl(libc::PR_GET_NAME, comm.as_mut_ptr()) };
    let name = &comm[..comm.iter().position(|&b| b == 0).unwrap_or(comm.len())];
    let at: &[u8] = if sig == libc::SIGILL {
        b"; the instruction at 0x"
    } else {
        b"; address 0x"
    };
    let mut buf = [0u8; 20];
    say(&[
        b"tokenmill-cuda-emu: ",
        what,
        at,
        digits(addr, 16, &mut buf),
        b", thread ",
        name,
        b"\n",
    ]);
}

/// Installs [`on_fault`] for SIGSEGV and SIGILL, once per process (the launches call it, under
/// their lock). Each previous action is saved before the handler goes in, so a fault on another
/// thread in between finds it; where a call fails, that signal is left as it was.
pub(crate) fn report_faults() {
    if REPORTING.swap(true, Ordering::AcqRel) {
        return;
    }
    for (sig, previous) in [
        (libc::SIGSEGV, &raw mut PREVIOUS_SEGV),
        (libc::SIGILL, &raw mut PREVIOUS_ILL),
    ] {
        // SAFETY: a zeroed sigaction is a valid empty one; its handler is set to `on_fault`,
        // which takes the three arguments SA_SIGINFO passes (on the alternate stack std set
        // up, if any, so that a stack overflow still reaches std's report). The previous
        // action is written here only, before the handler that reads it is installed.
        unsafe {
            let previous = previous.cast::<libc::sigaction>();
            if libc::sigaction(sig, std::ptr::null(), previous) != 0 {
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_fault as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}
