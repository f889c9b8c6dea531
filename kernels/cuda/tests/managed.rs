//! `Memory::Managed` on the emulated CUDA driver: this test binary's allocator is the one the
//! `tokenmill` binary uses (`managed::ManagedOr`), so once the backend opened in that mode the
//! process's large blocks are CUDA managed memory. Checked: what the allocator hands out (in
//! managed memory from any thread, zeroed by the device when asked, reused by size class,
//! small blocks left to the system), and the device check's kernel table passing with the
//! kernels on the slices' own addresses — nothing copied but the slices under the threshold.

mod common;

use common::one_at_a_time;
use tokenmill_cuda::device::{Memory, counters};
use tokenmill_cuda::managed::{self, ManagedOr};
use tokenmill_cuda::{Cuda, check};

#[global_allocator]
static ALLOC: ManagedOr<std::alloc::System> = ManagedOr(std::alloc::System);

/// The threshold here: 4 KiB, so that the kernel table's slices are nearly all managed.
const FROM: usize = 4096;

/// The backend on the emulated driver, managed memory on (no pageable access reported: a kernel
/// handed a host address fails).
fn managed_backend() -> &'static Cuda {
    common::emulated(Memory::Managed, &[(managed::FROM_VAR, "4096")])
}

fn is_managed<T>(v: &[T]) -> bool {
    managed::contains(v.as_ptr() as u64, std::mem::size_of_val(v))
}

#[test]
fn large_blocks_are_managed_memory_zeroed_on_the_device_and_reused_by_size() {
    let _one = one_at_a_time();
    managed_backend();
    assert!(managed::is_on());
    assert_eq!(managed::stats().from, FROM);
    // Zeroed by the device: the emulated driver fills fresh managed memory with 0xA5.
    let z = vec![0f32; 300_000];
    assert!(is_managed(&z));
    assert!(z.iter().all(|&v| v == 0.0));
    // A range inside the block is reached; one past its end, or a small block, is not.
    assert!(is_managed(&z[1000..2000]));
    assert!(!managed::contains(
        z.as_ptr() as u64,
        2 * 4 * 300_000 + 4096
    ));
    let small = vec![1u8; FROM - 1];
    assert!(!is_managed(&small));
    // Freed, the block serves the next allocation of its size class, also a little smaller,
    // and keeps what was written (not zeroed unless asked).
    let at = z.as_ptr() as usize;
    drop(z);
    let before = managed::stats();
    let mut again: Vec<f32> = Vec::with_capacity(299_000);
    assert_eq!(again.as_ptr() as usize, at, "the kept block");
    assert_eq!(managed::stats().reused, before.reused + 1);
    assert_eq!(managed::stats().made, before.made);
    again.extend((0..299_000).map(|i| i as f32));
    // Grown past its class: moved into another managed block, contents kept.
    again.reserve(1_000_000);
    assert!(is_managed(&again));
    assert_ne!(again.as_ptr() as usize, at);
    assert!(again.iter().enumerate().all(|(i, &v)| v == i as f32));
    // Any thread: the driver refuses managed memory to a thread without a current context, so
    // a block from a fresh thread shows the allocator binds it.
    let from_thread = std::thread::spawn(|| {
        let v = vec![7u32; 100_000];
        (is_managed(&v), v.iter().all(|&x| x == 7))
    })
    .join()
    .unwrap();
    assert_eq!(from_thread, (true, true));
    assert_eq!(managed::stats().fallbacks, 0);
}

/// Copies to and from managed memory are asynchronous on a GPU (the emulated driver holds them
/// until the next operation or wait): an upload from a managed `Vec` has read it, and a
/// download into one has written it, by the time the call returns.
#[test]
fn copies_to_and_from_managed_memory_are_done_when_the_call_returns() {
    let _one = one_at_a_time();
    let dev = managed_backend().device();
    let mut src = vec![1f32; 100_000];
    assert!(is_managed(&src));
    let d = dev.upload("managed source", &src).unwrap();
    src.fill(2.0);
    let mut back = vec![0f32; 100_000];
    assert!(is_managed(&back));
    dev.download(&d, &mut back).unwrap();
    assert!(back.iter().all(|&v| v == 1.0), "{:?}", &back[..4]);
}

#[test]
fn reallocation_keeps_a_block_inside_its_class_and_moves_it_across_the_threshold() {
    let _one = one_at_a_time();
    managed_backend();
    // Shrunk inside its size class: the same block, nothing copied.
    // Grown by pushes: a system block until it passes the threshold, then managed.
    let mut v: Vec<u8> = Vec::new();
    for i in 0..100_000u32 {
        v.push(i as u8);
    }
    assert!(
        is_managed(&v),
        "a system block grown past the threshold moves into managed memory"
    );
    v.truncate(90_000);
    let at = v.as_ptr();
    v.shrink_to_fit();
    assert_eq!(v.as_ptr(), at);
    assert!(is_managed(&v));
    // Shrunk below the threshold: to the system allocator, contents kept (freed there later).
    v.truncate(FROM / 2);
    v.shrink_to_fit();
    assert!(!is_managed(&v));
    assert!(v.iter().enumerate().all(|(i, &b)| b == i as u8));
}

#[test]
fn blocks_from_many_threads_are_never_handed_out_twice() {
    let _one = one_at_a_time();
    managed_backend();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            std::thread::spawn(move || {
                for round in 0..60u32 {
                    // Sizes spread over a few classes, so blocks go back and forth between
                    // the threads through the kept lists.
                    let n = 2_000 + ((round * 7 + t * 13) % 9) as usize * 3_000;
                    let tag = t * 1_000 + round;
                    let v = vec![tag; n];
                    std::thread::yield_now();
                    assert!(
                        v.iter().all(|&x| x == tag),
                        "a block shared with another thread"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = managed::stats();
    assert!(s.reused > 100, "{s:?}");
    assert_eq!(s.fallbacks, 0);
}

#[test]
fn after_disable_blocks_are_system_ones_and_the_kept_ones_go_back() {
    let _one = one_at_a_time();
    managed_backend();
    let kept_before = vec![1f32; 50_000];
    managed::disable();
    let plain = vec![2f32; 50_000];
    assert!(!is_managed(&plain), "no managed block once disabled");
    // A block made before still goes back where it came from.
    assert!(is_managed(&kept_before));
    drop(kept_before);
    drop(plain);
    assert!(managed::stats().kept > 0);
    assert!(managed::release() > 0);
    assert_eq!(managed::stats().kept, 0);
    // Opening the backend in managed memory again turns serving back on.
    let again = Cuda::with_memory(0, Memory::Managed).expect("enabled again");
    drop(again);
    assert!(managed::is_on());
    assert!(is_managed(&vec![3f32; 50_000]));
}

#[test]
fn every_seam_operation_on_managed_memory_matches_the_cpu_reference_without_copies() {
    let _one = one_at_a_time();
    let cuda = managed_backend();
    assert_eq!(cuda.device().memory, Memory::Managed);
    let before = (counters(), managed::stats());
    let rows = check::kernel_table(cuda, 7);
    let up = (counters() - before.0).to_device;
    let after = managed::stats();
    eprintln!("{}", check::render(&rows));
    eprintln!("kernel table on managed memory: {up} bytes up; {after:?}");
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    assert!(rows.len() > 50, "rows: {}", rows.len());
    assert!(failed.is_empty(), "failed rows: {failed:#?}");
    // The copying backend sends over 100 MB up for the same table (tests/emulated.rs); here
    // only the slices under 4 KiB go up.
    assert!(up < 1_000_000, "{up} bytes up");
    assert!(after.made + after.reused > before.1.made + before.1.reused + 100);
    assert_eq!(after.fallbacks, 0);
}

/// Deferred waits (`[train] defer_waits`): inside a deferred scope a chain of operations on
/// managed memory returns without waiting for the device — the emulated driver runs the queued
/// kernels only at a wait, so a result read before the scope's end is still the old bytes —
/// and the scope's end waits once, with the results of waiting after each operation. A block
/// freed inside the scope is not handed out again until the wait (queued kernels may still use
/// it); after it, it is.
#[test]
fn a_deferred_scope_waits_once_at_its_end_and_keeps_freed_blocks_until_then() {
    use tokenmill_kernels::backend::Backend;
    let _one = one_at_a_time();
    managed_backend();
    let mut cuda = Cuda::with_memory(0, Memory::Managed).expect("the emulated device");
    cuda.set_defer_waits(true).expect("managed memory defers");
    // rstd (a value per row) over the 4 KiB threshold too, so nothing is copied back.
    let (rows, d) = (1024usize, 64usize);
    let x: Vec<f32> = (0..rows * d).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
    let w: Vec<f32> = (0..d).map(|i| 1.0 + (i % 5) as f32 / 8.0).collect();
    // Waiting after each operation: the reference.
    let chain = |be: &dyn Backend<f32>| {
        let (mut y, mut rstd) = (vec![0f32; rows * d], vec![0f32; rows]);
        be.rmsnorm_fwd(&x, &w, 1e-6, &mut y, &mut rstd);
        let mut h = vec![0f32; rows * d];
        be.swiglu_fwd(&y, &x, &mut h);
        (y, rstd, h)
    };
    let want = chain(managed_backend());
    assert!(want.2.iter().any(|&v| v != 0.0));
    let before = counters();
    assert!(cuda.begin_deferred());
    let (y, rstd, h) = chain(&cuda);
    assert!(is_managed(&h) && is_managed(&y));
    // Queued, not done: the output is still the zeros it was allocated with.
    assert!(
        h.iter().all(|&v| v == 0.0),
        "the kernels ran before the wait"
    );
    // A block a queued kernel reads, freed inside the scope: not handed out before the wait.
    let freed = x.clone();
    let at = freed.as_ptr() as usize;
    drop(freed);
    let next: Vec<f32> = Vec::with_capacity(rows * d);
    let next_at = next.as_ptr() as usize;
    assert_ne!(next_at, at, "a freed block handed out before the wait");
    drop(next);
    // Many blocks freed while deferring: the allocator's own list of them grows through the
    // system allocator (from inside the allocator), without deadlocking.
    let many: Vec<Vec<u8>> = (0..400).map(|_| vec![1u8; 8192]).collect();
    drop(many);
    cuda.settle();
    let c = counters() - before;
    assert_eq!(c.waits, 1, "{c:?}");
    assert_eq!((y, rstd, h), want);
    // After the wait the blocks freed in the scope are the next ones of their class.
    let again: Vec<f32> = Vec::with_capacity(rows * d);
    let again_at = again.as_ptr() as usize;
    assert!(again_at == at || again_at == next_at, "{again_at:x}");
    // Deferring is managed memory's only: refused elsewhere, saying so.
    let mut copying = Cuda::with_memory(0, Memory::Copy).unwrap();
    let err = copying.set_defer_waits(true).expect_err("refused");
    assert!(err.to_string().contains("managed memory"), "{err}");
}

/// Inside a deferred scope the FP8 GEMMs count their tiles with a non-finite amax on the
/// device and return 0 (reading the count would wait); the scope's end returns the sum, the
/// same as the GEMMs return one by one outside a scope, with the same products, in one wait.
#[test]
fn a_deferred_scope_returns_its_fp8_gemms_non_finite_tiles_at_its_end() {
    use tokenmill_kernels::backend::{Backend, Grouped, GroupedForm, LowpGemm, MatMul};
    let _one = one_at_a_time();
    managed_backend();
    let mut cuda = Cuda::with_memory(0, Memory::Managed).expect("the emulated device");
    cuda.set_defer_waits(true).expect("managed memory defers");
    let (m, n, k) = (256usize, 128usize, 256usize);
    let mut a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7) % 19) as f32 / 9.0 - 1.0)
        .collect();
    let mut b: Vec<f32> = (0..n * k)
        .map(|i| ((i * 5) % 23) as f32 / 11.0 - 1.0)
        .collect();
    // Two of A's 1 × 128 tiles and one of B's 128 × 128 blocks cannot be scaled.
    a[3] = f32::NAN;
    a[5 * k + 200] = f32::INFINITY;
    b[7] = f32::NEG_INFINITY;
    let dense = MatMul {
        m,
        n,
        k,
        ta: false,
        tb: true,
        accumulate: false,
    };
    let fp8 = |a_tile, b_tile| LowpGemm::Fp8 { a_tile, b_tile };
    // The experts' forward: two groups of rows over two [n, k] weight blocks.
    let offsets = [0usize, 100, m];
    let grouped = Grouped {
        form: GroupedForm::Forward,
        offsets: &offsets,
        n,
        k,
        stride: n * k,
        accumulate: false,
    };
    let w: Vec<f32> = b.iter().chain(b.iter()).copied().collect();
    let gemms = |be: &Cuda| {
        let (mut c, mut cg) = (vec![0f32; m * n], vec![0f32; m * n]);
        let bad = [
            be.matmul_lowp(dense, &a, &b, &mut c, fp8((1, 128), (128, 128))),
            be.grouped_matmul(grouped, &a, &w, &mut cg, Some(fp8((1, 128), (128, 128)))),
        ];
        (bad, c, cg)
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    // Outside a scope each GEMM returns its own count.
    let (want_bad, want_c, want_cg) = gemms(&cuda);
    assert!(want_bad.iter().all(|&b| b > 0), "{want_bad:?}");
    let before = counters();
    assert!(cuda.begin_deferred());
    let (bad, c, cg) = gemms(&cuda);
    assert_eq!(bad, [0, 0], "a count read inside the scope");
    let at_end = cuda.settle();
    assert_eq!(at_end, want_bad.iter().sum::<u64>());
    assert_eq!(counters().waits - before.waits, 1);
    // (Read once the scope has ended: the products are the device's until then.)
    assert!(
        bits(&c) == bits(&want_c) && bits(&cg) == bits(&want_cg),
        "other products in the scope"
    );
    // The next scope counts from zero.
    assert!(cuda.begin_deferred());
    assert_eq!(cuda.settle(), 0);
}
