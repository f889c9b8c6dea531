//! The guarded heap (`GuardedAlloc`) that the kernel tests run on and the report of their faults
//! (`src/fault.rs`): a kernel reading one element past a buffer's end faults, named with the
//! test's thread; a kernel handed a float 2 bytes off stops at the alignment check's trap, named
//! as a misaligned access; a kernel reading where nothing is mapped is named as such; a signal
//! a process raises passes unnamed; a write into the bytes between a block's end and its guard
//! is named when the block is freed. Each case runs in a child process (this test binary again,
//! told by an environment variable which case to run) whose death is the assertion.
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use tokenmill_cuda_emu::{Ptr, launch};

#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn swiglu_fwd_f32(g: *const f32, u: *const f32, h: *mut f32, n: i64);
}

const CASE: &str = "TOKENMILL_EMU_GUARD_CASE";

/// Runs `test` in a child with `CASE` set to `case`; its exit status and standard error.
fn child(test: &str, case: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_kernel_reading_past_the_end_of_a_buffer_faults_and_is_named() {
    const TEST: &str = "a_kernel_reading_past_the_end_of_a_buffer_faults_and_is_named";
    match std::env::var(CASE).as_deref() {
        Ok("unmapped") => {
            // A page mapped and unmapped again: nothing lives there now (until a later mmap).
            // SAFETY: a new anonymous mapping, then that mapping removed; no memory of anyone
            // else's is touched.
            let gone = unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert_ne!(p, libc::MAP_FAILED);
                libc::munmap(p, 4096);
                p.cast::<f32>()
            };
            let mut h = vec![0.0f32; 4];
            let (gp, hp) = (Ptr(gone), Ptr::of(&mut h));
            launch((1, 1, 1), (32, 1, 1), 0, || {
                // SAFETY: deliberately not: g and u point to the unmapped page.
                unsafe { swiglu_fwd_f32(gp.c(), gp.c(), hp.p(), 4) }
            });
        }
        Ok(case @ ("past" | "far" | "inside")) => {
            // g and u hold 100 floats (400 bytes, a multiple of 16: they end at their guards);
            // the launch covers 100 elements, or 101 (one past the end), or 100 from 64 KiB
            // past g's end (a tile of rows skipped, far into its 1 MiB guard).
            let n = if case == "past" { 101 } else { 100 };
            let g = vec![0.5f32; 100];
            let u = vec![2.0f32; 100];
            let mut h = vec![0.0f32; 101];
            let from = if case == "far" {
                100 + (64 << 10) / 4
            } else {
                0
            };
            let (gp, up, hp) = (
                Ptr(g.as_ptr().wrapping_add(from) as *mut f32),
                Ptr::of_const(&u),
                Ptr::of(&mut h),
            );
            launch((1, 1, 1), (128, 1, 1), 0, || {
                // SAFETY: deliberately not, for "past" and "far": g is short of n elements
                // from where the kernel reads it.
                unsafe { swiglu_fwd_f32(gp.c(), up.c(), hp.p(), n) }
            });
            assert!(h[99] > 0.0);
        }
        _ => {
            let (status, err) = child(TEST, "inside");
            assert!(
                status.success(),
                "the launch inside the buffers failed: {status:?}: {err}"
            );
            for case in ["past", "far"] {
                let (status, err) = child(TEST, case);
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGSEGV),
                    "{case}: {status:?}: {err}"
                );
                assert!(
                    err.contains(
                        "tokenmill-cuda-emu: SIGSEGV, an access to a page this access is not \
                         allowed on: a guard, past the end of a test buffer (or a stack's \
                         guard); address 0x"
                    ),
                    "{case}: {err}"
                );
                assert!(err.contains(", thread a_kernel_readin\n"), "{case}: {err}");
            }
            let (status, err) = child(TEST, "unmapped");
            assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}: {err}");
            assert!(
                err.contains(
                    "tokenmill-cuda-emu: SIGSEGV, an access to an unmapped address: more than \
                     1 MiB past a test buffer's end, a freed one, or a wild pointer; address 0x"
                ),
                "{err}"
            );
        }
    }
}

#[test]
fn a_misaligned_access_stops_at_the_trap_and_is_named() {
    const TEST: &str = "a_misaligned_access_stops_at_the_trap_and_is_named";
    match std::env::var(CASE).as_deref() {
        Ok("raised") => {
            // The handler is in place after a launch; a SIGILL sent, not faulted, is passed on.
            let mut h = vec![0.0f32; 4];
            let (u, hp) = (vec![1.0f32; 4], Ptr::of(&mut h));
            let up = Ptr::of_const(&u);
            launch((1, 1, 1), (32, 1, 1), 0, || {
                // SAFETY: 4 elements of each, inside their blocks.
                unsafe { swiglu_fwd_f32(up.c(), up.c(), hp.p(), 4) }
            });
            // SAFETY: raises a signal at this process; no memory is involved.
            unsafe { libc::raise(libc::SIGILL) };
        }
        Ok(case @ ("off" | "on")) => {
            // A float at an address 2 bytes off its alignment (or on it): the kernels' typed
            // accesses are checked as a GPU checks them.
            let shift = if case == "off" { 2 } else { 4 };
            let bytes = vec![0u8; 4 * 65];
            // SAFETY: `shift` < 8 bytes into the 260-byte block: 64 floats' room after it.
            let g = Ptr(unsafe { bytes.as_ptr().add(shift) } as *mut f32);
            let u = vec![2.0f32; 64];
            let mut h = vec![0.0f32; 64];
            let (up, hp) = (Ptr::of_const(&u), Ptr::of(&mut h));
            launch((1, 1, 1), (64, 1, 1), 0, || {
                // SAFETY: 64 elements of each, inside their blocks; g deliberately misaligned
                // for "off".
                unsafe { swiglu_fwd_f32(g.c(), up.c(), hp.p(), 64) }
            });
            assert_eq!(h[0], 0.0);
        }
        _ => {
            let (status, err) = child(TEST, "on");
            assert!(
                status.success(),
                "the aligned launch failed: {status:?}: {err}"
            );
            let (status, err) = child(TEST, "off");
            assert_eq!(status.signal(), Some(libc::SIGILL), "{status:?}: {err}");
            assert!(
                err.contains(
                    "tokenmill-cuda-emu: SIGILL at the alignment check's trap: a kernel's typed \
                     access whose address is not a multiple of its size (a GPU faults: \
                     misaligned address); the instruction at 0x"
                ),
                "{err}"
            );
            assert!(err.contains(", thread a_misaligned_ac\n"), "{err}");
            let (status, err) = child(TEST, "raised");
            assert_eq!(status.signal(), Some(libc::SIGILL), "{status:?}: {err}");
            assert!(!err.contains("tokenmill-cuda-emu:"), "{err}");
        }
    }
}

#[test]
fn a_write_short_of_the_guard_is_named_when_the_block_is_freed() {
    match std::env::var(CASE).as_deref() {
        Ok("write") => {
            // 99 floats: 396 bytes, 4 short of the 16-byte step, so 4 bytes of pattern lie
            // between the block's end and its guard.
            let mut v = vec![1.0f32; 99];
            // SAFETY: deliberately not: the element past the end, inside the pattern.
            unsafe { std::ptr::write_volatile(v.as_mut_ptr().add(99), 2.0) };
            drop(v);
            println!("freed a block written past its end");
        }
        _ => {
            let (status, err) = child(
                "a_write_short_of_the_guard_is_named_when_the_block_is_freed",
                "write",
            );
            assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}: {err}");
            assert!(
                err.contains("a write past the end of a block of 396 bytes"),
                "{err}"
            );
        }
    }
}
