//! The CUDA backend's own code — device setup through cudarc, NVRTC's cubin loaded, every
//! upload, launch (argument lists, grid shapes, shared memory opt-in) and download — run on
//! the emulated CUDA driver (`tokenmill_cuda_emu::DRIVER_DIR`: the driver API over our kernels
//! compiled for the CPU, and cuBLAS's GEMM contract), checked against the CPU reference by the
//! device check's own kernel table, in both of the backend's memory modes: copying, and on the
//! host's own memory (HMM; the emulated device reports pageable access here). NVRTC is the real
//! one (`TOKENMILL_CUDA_LIB`, which `.ci/run` sets); without it these tests fail and say so.

mod common;

use common::one_at_a_time;
use tokenmill_cuda::device::{Memory, counters};
use tokenmill_cuda::{Cuda, check};

/// The backend on the emulated driver, copying (pageable access reported, so that
/// `Memory::Host` opens too).
fn emulated() -> &'static Cuda {
    common::emulated(Memory::Copy, &[("TOKENMILL_CUDA_EMU_PAGEABLE", "1")])
}

/// The kernel table on `cuda`: every row passes; returns the bytes it copied to the device.
fn table_passes(cuda: &Cuda, what: &str) -> u64 {
    let before = counters();
    let t = std::time::Instant::now();
    let rows = check::kernel_table(cuda, 7);
    let up = (counters() - before).to_device;
    eprintln!("{}", check::render(&rows));
    eprintln!(
        "kernel table on the emulated device, {what}: {:.1} s, {up} bytes up",
        t.elapsed().as_secs_f64()
    );
    let failed: Vec<_> = rows.iter().filter(|r| !r.pass).collect();
    assert!(rows.len() > 50, "rows: {}", rows.len());
    assert!(failed.is_empty(), "{what}: failed rows: {failed:#?}");
    up
}

#[test]
fn every_seam_operation_on_the_emulated_device_matches_the_cpu_reference() {
    let _one = one_at_a_time();
    let cuda = emulated();
    assert!(
        cuda.device().name.contains("emulator"),
        "{}",
        cuda.device().name
    );
    assert_eq!(cuda.device().capability, (9, 0));
    assert_eq!(cuda.device().arch, "sm_90a");
    assert_eq!(cuda.device().memory, Memory::Copy);
    let copied = table_passes(cuda, "copying");
    // On the host's own memory: the same operations, the kernels and cuBLAS on the slices'
    // addresses; operands a kernel converts (the FP8 GEMMs' quantized operands, dense and
    // grouped) are written to device buffers from the slices' addresses. Nothing goes up from
    // the host but the attention kernels' one-element placeholder tables (4 bytes a call) and
    // the tensor-core kernels' tables of groups (8 numbers a group for the GEMM, 3 for each
    // operand's conversion: 560 bytes for each of the table's three grouped BF16 rows, 224 for
    // the kernel's probe at the first of them) and the TMA kernel's tensor maps (two of 128
    // bytes a group: 1,280 bytes a row, 512 for the probe): 6,272 bytes in all.
    let hmm = Cuda::with_memory(0, Memory::Host).expect("the emulated device reaches host memory");
    assert!(hmm.device().host_access().unwrap().pageable);
    let by_address = table_passes(&hmm, "host memory");
    assert!(
        by_address <= 6272 && copied > 100_000_000,
        "host memory copied {by_address} bytes up, the copying backend {copied}"
    );
}

/// The counters the trainer logs per step (`Backend::counters`): an RMSNorm forward (inputs x
/// and w, results y and rstd) copying makes four copies of the slices' bytes and waits once
/// for each result; on host memory it copies nothing and still waits for each result. Each
/// wait is time blocked.
#[test]
fn each_operation_counts_its_copies_and_its_waits_for_the_device() {
    let _one = one_at_a_time();
    use tokenmill_kernels::backend::{Backend, DeviceCounters};
    let (rows, d) = (3usize, 40usize);
    let x: Vec<f32> = (0..rows * d).map(|i| (i % 7) as f32 - 3.0).collect();
    let w = vec![1.5f32; d];
    let copying = emulated();
    let hmm = Cuda::with_memory(0, Memory::Host).expect("the emulated device reaches host memory");
    for (cuda, copying) in [(copying, true), (&hmm, false)] {
        let (mut y, mut rstd) = (vec![0f32; rows * d], vec![0f32; rows]);
        let before = cuda.counters().expect("a device counts");
        cuda.rmsnorm_fwd(&x, &w, 1e-6, &mut y, &mut rstd);
        let c = cuda.counters().unwrap() - before;
        assert!(rstd.iter().all(|&r| r > 0.0) && y[5] != 0.0, "{copying}");
        let want = if copying {
            DeviceCounters {
                copies: 4,
                to_device: 4 * (rows * d + d) as u64,
                to_host: 4 * (rows * d + rows) as u64,
                waits: 2,
                blocked_ns: c.blocked_ns,
            }
        } else {
            DeviceCounters {
                waits: 2,
                blocked_ns: c.blocked_ns,
                ..Default::default()
            }
        };
        assert_eq!(c, want, "copying: {copying}");
        assert!(c.blocked_ns > 0, "copying: {copying}");
    }
}

/// A target outside the vocabulary stops the cross-entropy before anything reaches the device,
/// with the CPU's message, in each of its three operations (the kernels alone would give a
/// NaN loss, and the CPU stops).
#[test]
fn a_target_outside_the_vocabulary_is_refused_as_on_the_cpu() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use tokenmill_kernels::{Backend, Cpu};
    let _one = one_at_a_time();
    let cuda = emulated();
    let vocab = 10;
    let targets = [3u32, 10];
    fn message<B: Backend<f32>>(be: &B, op: usize, targets: &[u32], vocab: usize) -> String {
        let mut logits = vec![0.5f32; 2 * vocab];
        let (mut losses, mut lse, g) = (vec![0f32; 2], vec![1f32; 2], vec![1f32; 2]);
        let err = catch_unwind(AssertUnwindSafe(|| match op {
            0 => be.cross_entropy_fwd(&logits, targets, vocab, &mut losses, &mut lse),
            1 => be.cross_entropy_bwd(&mut logits, targets, &lse, &g, vocab),
            _ => be.cross_entropy_fused(&mut logits, targets, &g, vocab, &mut losses, &mut lse),
        }))
        .expect_err("refused");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }
    let before = counters();
    for op in 0..3 {
        let gpu = message(cuda, op, &targets, vocab);
        let cpu = message(&Cpu, op, &targets, vocab);
        assert!(
            gpu.contains("target 10 outside the vocabulary of 10"),
            "op {op}: {gpu}"
        );
        assert_eq!(gpu, cpu, "op {op}");
    }
    assert_eq!((counters() - before).copies, 0, "nothing copied");
}

/// `Memory::Managed` in a binary whose allocator is not `managed::ManagedOr` (this one's is the
/// system's): nothing would be managed, so it is refused, saying why.
#[test]
fn managed_memory_without_the_managed_allocator_is_refused() {
    let _one = one_at_a_time();
    emulated();
    let err = Cuda::with_memory(0, Memory::Managed).expect_err("refused");
    assert!(err.to_string().contains("global allocator"), "{err}");
    assert!(!tokenmill_cuda::managed::is_on());
}

/// The emulated device in `memory` with its FP8 GEMMs on the tensor cores as `fp8` says (its
/// start-up probe passed and not counted), after the device check's nine rows of training's
/// FP8 GEMMs through that path all passed.
fn tensor_core_rows_pass(memory: Memory, fp8: tokenmill_cuda::backend::Fp8Gemm) -> Cuda {
    tensor_core_rows_pass_with(memory, fp8, None)
}

/// [`tensor_core_rows_pass`] with our FP8 kernel as `kernel` asks (`None`: the automatic
/// choice).
fn tensor_core_rows_pass_with(
    memory: Memory,
    fp8: tokenmill_cuda::backend::Fp8Gemm,
    kernel: Option<tokenmill_cuda::backend::MmaKernel>,
) -> Cuda {
    emulated();
    let mut cuda = Cuda::with_memory(0, memory).expect("the emulated device");
    cuda.set_mma_kernel(kernel);
    cuda.set_fp8_gemm(fp8)
        .unwrap_or_else(|e| panic!("{fp8:?} on the emulated device: {e}"));
    assert_eq!(cuda.fast_fp8_calls(), 0, "the probe is not counted");
    let rows = check::fp8_tensor_core_rows(&cuda, 3);
    eprintln!("{memory:?} {fp8:?}\n{}", check::render(&rows));
    assert_eq!(rows.len(), 9);
    assert!(rows.iter().all(|r| r.pass), "{rows:#?}");
    cuda
}

/// `cuda`'s FP8 GEMM in `tiles` (A's, B's) of values 448 · 2⁻¹⁰ and 448 · 2⁻⁹ — power-of-two
/// scales, every value exact in E4M3, every product and sum exact in FP32 —, 67 × 32 × 120
/// (padded for cuBLASLt to 68 × 32 × 128; K off the 16-byte pieces' multiples of 128 for our
/// kernel): exact, and computed on the tensor cores (`fast`) or by the model.
fn exact_fp8_gemm(cuda: &Cuda, tiles: ((usize, usize), (usize, usize)), fast: bool) {
    use tokenmill_kernels::backend::{Backend, LowpGemm, MatMul};
    let (a, b) = (vec![0.4375f32; 67 * 120], vec![0.875f32; 32 * 120]);
    let format = LowpGemm::Fp8 {
        a_tile: tiles.0,
        b_tile: tiles.1,
    };
    let mut c = vec![0.0f32; 67 * 32];
    let before = cuda.fast_fp8_calls();
    cuda.matmul_lowp(MatMul::linear(67, 32, 120), &a, &b, &mut c, format);
    let by_tensor_cores = cuda.fast_fp8_calls() - before;
    assert_eq!(by_tensor_cores, u64::from(fast), "{tiles:?}");
    assert!(c.iter().all(|&v| v == 45.9375), "{tiles:?}: {:?}", &c[..4]);
}

/// `[train] fp8_gemm = "cublaslt"`: the FP8 GEMMs of training's three forms through the
/// backend's cuBLASLt path — operands quantized by `fp8_quantize_lt_f32` into cuBLASLt's
/// layouts (the input gradient's weight and the weight gradient's operands transposed on the
/// way, shapes padded with zeros to what cuBLASLt takes), the emulated cuBLASLt checking each
/// call against the manual's contract — follow the CPU's FP8 GEMM, dense and grouped (one call
/// per expert with rows), copying and on host memory; tiles cuBLASLt has no scale mode for
/// stay on the model, which computes the CPU's quantity.
#[test]
fn fp8_gemms_through_cublaslt_on_the_emulated_device_follow_the_cpu() {
    let _one = one_at_a_time();
    use tokenmill_cuda::backend::Fp8Gemm;
    for memory in [Memory::Copy, Memory::Host] {
        let cuda = tensor_core_rows_pass(memory, Fp8Gemm::Cublaslt);
        exact_fp8_gemm(&cuda, ((1, 128), (128, 128)), true);
        // 4 × 16 tiles: no cuBLASLt scale mode, so the model computes it.
        exact_fp8_gemm(&cuda, ((4, 16), (4, 16)), false);
    }
}

/// `[train] fp8_gemm = "mma"`: the same forms by our tensor-core kernels — on this compute
/// capability 9.0 device wgmma with TMA by default (`cu/wgmma.cu`'s `fp8_tma_gemm_f32`: the
/// shim's warpgroup instruction reading swizzled shared memory through matrix descriptors,
/// filled by its TMA copies from the tensor maps the emulated driver encodes, handed over by
/// its memory barriers), wgmma on `cp.async` copies and `mma.sync` when asked (`cu/mma.cu`: the
/// shim's warp-collective instruction) —
/// with operands quantized as cuBLASLt's, every expert's in one launch per operand and every
/// expert's product in one launch, follow the CPU's FP8 GEMM, copying and on host memory; the
/// probe that `set_fp8_gemm` runs passes; tiles other than 1 × 128 and 128 × 128 along K stay
/// on the model.
#[test]
fn fp8_gemms_by_the_mma_kernel_on_the_emulated_device_follow_the_cpu() {
    let _one = one_at_a_time();
    use tokenmill_cuda::backend::{Fp8Gemm, MmaKernel, TmaGrid, set_tma_grid};
    for (memory, asked, grid) in [
        (Memory::Copy, None, TmaGrid::Persistent),
        (Memory::Host, None, TmaGrid::Persistent),
        // Two blocks taking every tile in turn (132 on this device would give each of these
        // shapes' tiles a block of its own).
        (Memory::Copy, None, TmaGrid::Blocks(2)),
        // The multicast kernels in clusters of two: one per pair of tiles, and two clusters
        // taking every pair in turn.
        (
            Memory::Copy,
            Some(MmaKernel::Multicast),
            TmaGrid::Persistent,
        ),
        (Memory::Copy, Some(MmaKernel::Multicast), TmaGrid::Blocks(4)),
        (Memory::Copy, Some(MmaKernel::Wgmma), TmaGrid::Persistent),
        (Memory::Copy, Some(MmaKernel::Sync), TmaGrid::Persistent),
        (Memory::Host, Some(MmaKernel::Sync), TmaGrid::Persistent),
    ] {
        set_tma_grid(grid);
        let cuda = tensor_core_rows_pass_with(memory, Fp8Gemm::Mma, asked);
        assert_eq!(
            cuda.mma_kernel(),
            asked.unwrap_or(MmaKernel::Tma),
            "{memory:?} {asked:?}"
        );
        // Both operands in blocks too, which cuBLASLt has no mode for but the kernel has.
        exact_fp8_gemm(&cuda, ((1, 128), (128, 128)), true);
        exact_fp8_gemm(&cuda, ((128, 128), (128, 128)), true);
        exact_fp8_gemm(&cuda, ((4, 16), (4, 16)), false);
        set_tma_grid(TmaGrid::Persistent);
    }
}

/// `[train] fp8_gemm = "cublaslt+mma"`: the dense FP8 GEMMs through cuBLASLt and the experts'
/// grouped ones by our kernel, each row checking which of the two computed it (cuBLASLt's
/// calls and the kernel's launches are counted apart): both probes run, and the rows follow
/// the CPU, copying and on host memory.
#[test]
fn fp8_gemms_split_between_cublaslt_and_the_mma_kernel_follow_the_cpu() {
    let _one = one_at_a_time();
    use tokenmill_cuda::backend::Fp8Gemm;
    for memory in [Memory::Copy, Memory::Host] {
        let cuda = tensor_core_rows_pass(memory, Fp8Gemm::CublasltMma);
        let [lt, mma] = cuda.fast_fp8_calls_by();
        // 5 dense rows by cuBLASLt, 4 grouped by one launch each.
        assert_eq!((lt, mma), (5, 4));
        exact_fp8_gemm(&cuda, ((1, 128), (128, 128)), true);
        // Both operands in blocks: cuBLASLt has no mode for it, so a dense GEMM keeps the model.
        exact_fp8_gemm(&cuda, ((128, 128), (128, 128)), false);
    }
}

/// `Lt::matmul` tells cuBLASLt each pointer's alignment (it assumes 256 bytes otherwise, and
/// the emulated library, like the real one's kernels, refuses a pointer less aligned than the
/// algorithm it chose): an output 16 bytes into its allocation works and gives the exact
/// product; each shape and alignment's algorithm is asked for once.
#[test]
fn cublaslt_is_told_the_alignment_of_an_output_inside_a_buffer() {
    let _one = one_at_a_time();
    use tokenmill_cuda::fp8::{Fp8Operand, Lt, Scales};
    let cuda = emulated();
    let dev = cuda.device();
    let (m, n, k) = (16usize, 32usize, 128usize);
    // Codes of 1.0 (0x38) and 2.0 (0x40), scales 1 and 0.5: every product 1.0.
    let x = dev.upload("x", &vec![0x38u8; m * k]).unwrap();
    let w = dev.upload("w", &vec![0x40u8; n * k]).unwrap();
    let xs = dev
        .upload("x scales", &vec![1.0f32; Scales::Vec128.count(m, k)])
        .unwrap();
    let ws = dev
        .upload("w scales", &vec![0.5f32; Scales::Blk128.count(n, k)])
        .unwrap();
    let y = dev.zeros::<f32>("y", m * n + 4).unwrap();
    let mut lt = Lt::new(dev).unwrap();
    let xo = Fp8Operand {
        codes: dev.addr(&x),
        scales: dev.addr(&xs),
        mode: Scales::Vec128,
    };
    let wo = Fp8Operand {
        codes: dev.addr(&w),
        scales: dev.addr(&ws),
        mode: Scales::Blk128,
    };
    for _ in 0..2 {
        lt.matmul(dev, (m, n, k), xo, wo, dev.addr(&y) + 16)
            .expect("an output 16-byte aligned");
    }
    assert_eq!(lt.algorithms(), 1);
    let mut out = vec![0f32; m * n + 4];
    dev.download(&y, &mut out).unwrap();
    assert!(out[..4].iter().all(|&v| v == 0.0), "{:?}", &out[..4]);
    assert!(out[4..].iter().all(|&v| v == 128.0), "{:?}", &out[4..8]);
}

/// The experts' grouped BF16 GEMMs in one launch of our kernel (the default where its probe
/// passes, as on the emulated device: `bf16_tma_gemm_f32` here, `bf16_wgmma_gemm_f32` and
/// `bf16_mma_gemm_f32` when asked for) and per expert by cuBLAS `GemmEx` follow the CPU's
/// BF16 grouped GEMM in every form — uneven experts, one empty, weight blocks among their
/// expert's other projections, accumulation — copying and on host memory; the environment
/// variable keeps them on cuBLAS.
#[test]
fn grouped_bf16_gemms_in_one_launch_follow_the_cpu_as_the_per_expert_ones_do() {
    let _one = one_at_a_time();
    use tokenmill_kernels::backend::{Backend, CpuReference, Grouped, GroupedForm, LowpGemm};
    use tokenmill_kernels::rng::Rng;
    emulated();
    let offsets = [0usize, 37, 37, 165, 181, 245];
    let (n, k, rows) = (96usize, 200usize, 245usize);
    let stride = 2 * n * k;
    let mut rng = Rng::new(41);
    let mut randn = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.normal() as f32).collect() };
    // TOKENMILL_CUDA_GROUPED_BF16=cublas keeps them on cuBLAS.
    let var = tokenmill_cuda::backend::GROUPED_BF16_VAR;
    // SAFETY: this binary's tests run one at a time (`one_at_a_time`, held here) and read the
    // environment only when they open a backend.
    unsafe { std::env::set_var(var, "cublas") };
    let off = Cuda::new(0).expect("the emulated device");
    // SAFETY: as above.
    unsafe { std::env::remove_var(var) };
    assert!(!off.bf16_grouped_on_tensor_cores().unwrap(), "{var}=cublas");
    use tokenmill_cuda::backend::{MmaKernel, TmaGrid, set_tma_grid};
    for (memory, asked, grid) in [
        (Memory::Copy, None, TmaGrid::Persistent),
        (Memory::Host, None, TmaGrid::Persistent),
        (Memory::Copy, None, TmaGrid::Blocks(2)),
        (
            Memory::Copy,
            Some(MmaKernel::Multicast),
            TmaGrid::Persistent,
        ),
        (Memory::Copy, Some(MmaKernel::Multicast), TmaGrid::Blocks(4)),
        (Memory::Copy, Some(MmaKernel::Wgmma), TmaGrid::Persistent),
        (Memory::Copy, Some(MmaKernel::Sync), TmaGrid::Persistent),
    ] {
        set_tma_grid(grid);
        let mut cuda = Cuda::with_memory(0, memory).expect("the emulated device");
        cuda.set_mma_kernel(asked);
        // wgmma with TMA on this compute capability 9.0 device unless another is asked for; its
        // probe passed.
        assert_eq!(
            cuda.bf16_grouped_kernel().unwrap(),
            Some(asked.unwrap_or(MmaKernel::Tma)),
            "{memory:?} {asked:?}"
        );
        for on in [true, false] {
            cuda.set_bf16_grouped_mma(on);
            assert_eq!(cuda.bf16_grouped_on_tensor_cores().unwrap(), on);
            for (form, accumulate) in [
                (GroupedForm::Forward, false),
                (GroupedForm::Input, true),
                (GroupedForm::Weight, false),
                (GroupedForm::Weight, true),
            ] {
                let g = Grouped {
                    form,
                    offsets: &offsets,
                    n,
                    k,
                    stride,
                    accumulate,
                };
                let weights = 4 * stride + n * k;
                let (a, b, c0) = match form {
                    GroupedForm::Weight => (randn(rows * n), randn(rows * k), randn(weights)),
                    _ => (randn(rows * k), randn(weights), randn(rows * n)),
                };
                let (mut got, mut want) = (c0.clone(), c0);
                cuda.grouped_matmul(g, &a, &b, &mut got, Some(LowpGemm::Bf16));
                CpuReference.grouped_matmul(g, &a, &b, &mut want, Some(LowpGemm::Bf16));
                let (num, den) = got.iter().zip(&want).fold((0f64, 0f64), |(s, z), (x, y)| {
                    (s.max((x - y).abs() as f64), z.max(y.abs() as f64))
                });
                assert!(
                    num <= 1e-5 * den,
                    "{memory:?} {asked:?} {grid:?} mma {on} {form:?} acc {accumulate}: max |Δ| {num:e} of {den:e}"
                );
            }
        }
        set_tma_grid(TmaGrid::Persistent);
    }
}

/// The emulated driver's guard on device allocations: a kernel that writes past the end of its
/// buffer is stopped and named — into the rest of the buffer's last 256 bytes (found once the
/// launch has run) as past its pages (a fault at once). A GPU would have written another
/// buffer, silently. And a kernel whose access is misaligned (floats from 2 bytes into a
/// buffer) is stopped and named, as a GPU faults on it, and so is one that writes a buffer
/// after its free. Each launch runs in a child process
/// (this test binary again, this test alone), which the driver aborts; the first, inside the
/// buffer, shows the child runs.
#[test]
fn a_kernel_writing_past_its_buffer_is_stopped_and_named() {
    const CHILD: &str = "TOKENMILL_TEST_OVERRUN";
    if let Ok(n) = std::env::var(CHILD) {
        let dev = emulated().device();
        let x = dev.zeros::<f32>("overrun test", 100).unwrap();
        // "misaligned": 99 elements from 2 bytes into the buffer; "freed": the buffer's 100
        // after it was freed (in stream order, before the launch).
        let (at, n) = match n.as_str() {
            "misaligned" => (dev.addr(&x) + 2, 99i64),
            "freed" => (dev.addr(&x), 100),
            n => (dev.addr(&x), n.parse::<i64>().unwrap()),
        };
        if std::env::var(CHILD).as_deref() == Ok("freed") {
            drop(x);
        }
        let v = 1.0f32;
        use cudarc::driver::PushKernelArg;
        let mut b = dev.stream().launch_builder(dev.func("fill_f32").unwrap());
        b.arg(&at).arg(&n).arg(&v);
        // SAFETY: fill_f32 writes n elements of x: past its 100 when n is larger, which is
        // what the emulated driver must stop.
        unsafe { b.launch(tokenmill_cuda::device::elementwise(n as usize)) }.unwrap();
        dev.sync().unwrap();
        println!("the launch ended");
        return;
    }
    let name = "a_kernel_writing_past_its_buffer_is_stopped_and_named";
    for (n, want) in [
        ("100", None),
        (
            "110",
            Some("the 40 bytes past the end of a device allocation of 400 bytes at"),
        ),
        (
            "2000",
            Some(
                "kernel fill_f32 touched byte 512, 112 past the end, of a device \
                 allocation of 400 bytes",
            ),
        ),
        (
            "misaligned",
            Some("kernel fill_f32 made an access whose address is not a multiple of its size"),
        ),
        (
            "freed",
            Some("kernel fill_f32 touched a device allocation of 400 bytes after its free"),
        ),
    ] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, n)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        match want {
            None => assert!(
                out.status.success() && stdout.contains("the launch ended"),
                "{n}: {stdout}\n{stderr}"
            ),
            Some(want) => {
                assert!(!out.status.success(), "{n}: {stdout}\n{stderr}");
                assert!(stderr.contains(want), "{n}: {stderr}");
                if n == "110" {
                    assert!(
                        stderr.contains("found after kernel fill_f32 ran"),
                        "{stderr}"
                    );
                }
            }
        }
    }
}
