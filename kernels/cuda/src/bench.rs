//! GEMM throughput on the device, for the device check: FP32 and BF16 through cuBLAS, FP8
//! with DeepSeek-V3's block scaling through cuBLASLt, each timed over repeated calls after a
//! warm-up; and the cuBLASLt FP8 result checked against the CPU emulation of the same GEMM.

use serde::Serialize;
use tokenmill_kernels::backend::{Backend, CpuReference, LowpGemm, MatMul};
use tokenmill_kernels::fp8::Fp8Format;
use tokenmill_kernels::quant::{ScaleRounding, quantize};
use tokenmill_kernels::rng::Rng;

use cudarc::driver::{CudaSlice, HostSlice, LaunchArgs, PushKernelArg};

use crate::backend::mma::MmaOperand;
use crate::backend::{MmaKernel, TmaGrid, with_tma_grid};
use crate::check::Row;
use crate::device::Device;
use crate::error::{Error, Result, driver};
use crate::fp8::{Lt, activation_scales, weight_scales};

/// One benchmark line.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// What ran.
    pub what: String,
    /// m × n × k.
    pub shape: (usize, usize, usize),
    /// Mean milliseconds per call.
    pub ms: f64,
    /// 2·m·n·k / time.
    pub tflops: f64,
}

fn time(dev: &Device, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    dev.sync()?;
    let t = std::time::Instant::now();
    for _ in 0..iters {
        f()?;
    }
    dev.sync()?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / iters as f64)
}

fn row(what: &str, (m, n, k): (usize, usize, usize), ms: f64) -> BenchRow {
    BenchRow {
        what: what.into(),
        shape: (m, n, k),
        ms,
        tflops: 2.0 * m as f64 * n as f64 * k as f64 / (ms * 1e-3) / 1e12,
    }
}

/// `row`, its name marked when the product at `c` (of all-ones operands) is not `k` everywhere:
/// a timing of a kernel that computes something else is no figure.
fn checked_row(
    dev: &Device,
    what: &str,
    shape: (usize, usize, usize),
    ms: f64,
    c: &CudaSlice<f32>,
) -> Result<BenchRow> {
    let mut got = vec![0f32; shape.0 * shape.1];
    dev.download(c, &mut got)?;
    let want = shape.2 as f32;
    let mut r = row(what, shape, ms);
    if let Some((i, v)) = got.iter().enumerate().find(|(_, v)| **v != want) {
        r.what = format!("{what} — WRONG: C[{i}] = {v}, not {want}");
        r.tflops = f64::NAN;
    }
    Ok(r)
}

/// One host↔device copy line.
#[derive(Debug, Clone, Serialize)]
pub struct CopyRow {
    /// Direction and host memory.
    pub what: String,
    /// Bytes per copy.
    pub bytes: u64,
    /// Mean milliseconds per copy.
    pub ms: f64,
    /// Bytes / time, in GB/s (10⁹).
    pub gb_per_s: f64,
}

impl CopyRow {
    fn new(what: &str, bytes: u64, ms: f64) -> Self {
        CopyRow {
            what: what.into(),
            bytes,
            ms,
            gb_per_s: bytes as f64 / (ms * 1e-3) / 1e9,
        }
    }
}

/// [`CopyRow::what`] of the copy to the device from pageable memory (the seam's uploads).
pub const TO_DEVICE_PAGEABLE: &str = "to device, pageable host memory";
/// ... and of the copy back (the seam's downloads).
pub const TO_HOST_PAGEABLE: &str = "to host, pageable host memory";

/// Host↔device copy rates of `bytes`: from and to pageable host memory, which is what the
/// seam's host slices get ([`Device::upload`], [`Device::download`]), and from and to
/// page-locked memory, the rate a staging buffer would reach. With `bench seam`'s bytes per
/// step they give the seconds a step spends copying.
pub fn copy_table(dev: &Device, bytes: usize) -> Result<Vec<CopyRow>> {
    let n = bytes / 4;
    let row = |what: &str, ms: f64| CopyRow::new(what, (n * 4) as u64, ms);
    let mut d = dev.zeros::<f32>("copy bench", n)?;
    let (up, down) = both_ways(dev, &mut d, &mut vec![1.0f32; n])?;
    // SAFETY: the page-locked buffer is written whole (`fill`) before any copy reads it.
    let mut pinned = unsafe { dev.context().alloc_pinned_with_flags::<f32>(n, 0) }
        .map_err(driver("page-locked host memory"))?;
    pinned
        .as_mut_slice()
        .map_err(driver("page-locked host memory"))?
        .fill(1.0);
    let (pinned_up, pinned_down) = both_ways(dev, &mut d, &mut pinned)?;
    Ok(vec![
        row(TO_DEVICE_PAGEABLE, up),
        row(TO_HOST_PAGEABLE, down),
        row("to device, page-locked host memory", pinned_up),
        row("to host, page-locked host memory", pinned_down),
    ])
}

/// Kernels on pageable host memory, for a device that reports pageable memory access
/// ([`Device::host_access`]; HMM on x86 with the open kernel modules): the elementwise
/// `swiglu_fwd_f32` over `malloc`'d host memory passed by pointer — the first launch (the
/// driver moves the pages to the GPU), the second (they stay there), then the host reading
/// the result (its pages come back) — against the same launch on device buffers. Rates count
/// the kernel's traffic (two inputs read, one output written; `bytes` in all). Resident
/// training could let the driver migrate the seam's host slices instead of copying them every
/// call, if these rates allow it.
pub fn hmm_table(dev: &Device, bytes: usize) -> Result<Vec<CopyRow>> {
    if !dev.host_access()?.pageable {
        return Err(crate::error::Error::Unavailable(format!(
            "{} reports no pageable memory access",
            dev.name
        )));
    }
    let n = bytes / 12;
    let moved = (n * 12) as u64;
    let row = |what: &str, ms: f64| CopyRow::new(what, moved, ms);
    let n64 = n as i64;
    let timed = |b: LaunchArgs<'_>| -> Result<f64> {
        let t = std::time::Instant::now();
        crate::backend::go("swiglu_fwd_f32", b, crate::device::elementwise(n))?;
        dev.sync()?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let launch = || -> Result<LaunchArgs<'_>> {
        Ok(dev.stream().launch_builder(dev.func("swiglu_fwd_f32")?))
    };
    let dg = dev.upload("HMM probe g", &vec![0.5f32; n])?;
    let du = dev.upload("HMM probe u", &vec![2.0f32; n])?;
    let mut dh = dev.zeros::<f32>("HMM probe h", n)?;
    let mut device_ms = 0.0;
    for _ in 0..2 {
        let mut b = launch()?;
        b.arg(&dg).arg(&du).arg(&mut dh).arg(&n64);
        device_ms = timed(b)?;
    }
    drop((dg, du, dh));
    // Host memory by address: the kernel's pointer parameters get the host addresses, which
    // the device may dereference (pageable memory access, checked above).
    let (g, u) = (vec![0.5f32; n], vec![2.0f32; n]);
    let mut h = vec![0.0f32; n];
    let (pg, pu, ph) = (g.as_ptr() as u64, u.as_ptr() as u64, h.as_mut_ptr() as u64);
    let on_host = || -> Result<f64> {
        let mut b = launch()?;
        b.arg(&pg).arg(&pu).arg(&ph).arg(&n64);
        timed(b)
    };
    let first = on_host()?;
    let again = on_host()?;
    let t = std::time::Instant::now();
    let sum: f64 = h.iter().map(|&x| x as f64).sum();
    let back = t.elapsed().as_secs_f64() * 1e3;
    // swiglu(0.5, 2) = 0.5 · sigmoid(0.5) · 2 per element: the kernel wrote the host memory.
    let want = n as f64 * (0.5 / (1.0 + (-0.5f64).exp())) * 2.0;
    if (sum - want).abs() > 1e-4 * want {
        return Err(crate::error::Error::Driver {
            op: "HMM probe".into(),
            message: format!("the kernel's output in host memory sums to {sum}, not {want}"),
        });
    }
    drop((g, u));
    Ok(vec![
        row("swiglu on device buffers", device_ms),
        row("swiglu on pageable host memory, first launch", first),
        row("swiglu on pageable host memory, again", again),
        CopyRow {
            bytes: (n * 4) as u64,
            gb_per_s: (n * 4) as f64 / (back * 1e-3) / 1e9,
            ..row("the host reading the result back", back)
        },
    ])
}

/// The optimizer's memory-bound kernels on `n` elements in device memory, beside the driver's
/// device-to-device copy of `n` FP32 values (read once, written once) as the rate they could
/// reach: one AdamW step (`adamw_f32`: kind, gradient, moments and parameters read, moments and
/// parameters written, 29 bytes an element), and the gradient norm's sums of squares
/// (`sum_squares_f32` over segments of `segment`, 4 bytes an element). Each is timed over
/// repeated calls and then checked: every parameter took the same updates, every segment's sum
/// is its length (of ones).
pub fn optimizer_table(dev: &Device, n: usize, segment: usize) -> Result<Vec<CopyRow>> {
    use tokenmill_kernels::backend::AdamStep;
    let row = |what: &str, bytes: usize, ms: f64| CopyRow::new(what, bytes as u64, ms);
    let ones = vec![1.0f32; n];
    let src = dev.upload("optimizer bench gradients", &ones)?;
    let mut dst = dev.zeros::<f32>("optimizer bench copy", n)?;
    let stream = dev.stream().clone();
    let copy = time(dev, 10, || {
        stream
            .memcpy_dtod(&src, &mut dst)
            .map_err(driver("device-to-device copy"))
    })?;
    drop(dst);
    let mut out = vec![row("device-to-device copy (the driver's)", 8 * n, copy)];

    let mut p = dev.upload("optimizer bench parameters", &ones)?;
    let mut m = dev.zeros::<f32>("optimizer bench first moments", n)?;
    let mut v = dev.zeros::<f32>("optimizer bench second moments", n)?;
    let kind = dev.zeros::<u8>("optimizer bench kinds", n)?;
    let s = AdamStep::new(0.9, 0.95, 1e-8, 0.1, 3e-4, 1, 1.0, false);
    let (n64, bf) = (n as i64, 0i32);
    let mut steps = 0usize;
    let ms = time(dev, 10, || {
        steps += 1;
        let mut b = launch_on(dev, "adamw_f32")?;
        b.arg(&mut p)
            .arg(&src)
            .arg(&mut m)
            .arg(&mut v)
            .arg(&kind)
            .arg(&n64);
        b.arg(&s.step_size).arg(&s.beta1).arg(&s.beta2).arg(&s.eps);
        b.arg(&s.bc2_sqrt).arg(&s.decay).arg(&s.grad_scale).arg(&bf);
        crate::backend::go("adamw_f32", b, crate::device::elementwise_by(n, 4))
    })?;
    let mut got = vec![0f32; n];
    dev.download(&p, &mut got)?;
    // With gradients of one every step moves every parameter down by the same amount.
    let mut what = "AdamW step (adamw_f32)".to_string();
    if let Some((i, x)) = got.iter().enumerate().find(|(_, x)| **x != got[0]) {
        what = format!("{what} — WRONG: p[{i}] = {x}, p[0] = {}", got[0]);
    } else if got[0] >= 1.0 {
        what = format!("{what} — WRONG: {steps} steps left p at {}", got[0]);
    }
    out.push(row(&what, 29 * n, ms));
    drop((p, m, v, kind, got));

    let segs: Vec<i64> = (0..n)
        .step_by(segment.max(1))
        .flat_map(|a| [a as i64, (a + segment).min(n) as i64])
        .collect();
    let count = segs.len() / 2;
    let table = dev.upload("optimizer bench segments", &segs)?;
    let mut sums = dev.zeros::<f64>("optimizer bench sums", count)?;
    let cfg = cudarc::driver::LaunchConfig {
        grid_dim: (count as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let ms = time(dev, 10, || {
        let mut b = launch_on(dev, "sum_squares_f32")?;
        b.arg(&src).arg(&table).arg(&mut sums);
        crate::backend::go("sum_squares_f32", b, cfg)
    })?;
    let mut got = vec![0f64; count];
    dev.download(&sums, &mut got)?;
    let mut what = format!("gradient sums of squares (sum_squares_f32, segments of {segment})");
    if let Some(i) = (0..count).find(|&i| got[i] != (segs[2 * i + 1] - segs[2 * i]) as f64) {
        what = format!("{what} — WRONG: segment {i} sums to {}", got[i]);
    }
    out.push(row(&what, 4 * n, ms));
    Ok(out)
}

/// Milliseconds per copy of `host` to `d` and back.
fn both_ways<H: HostSlice<f32> + ?Sized>(
    dev: &Device,
    d: &mut CudaSlice<f32>,
    host: &mut H,
) -> Result<(f64, f64)> {
    let stream = dev.stream().clone();
    let up = time(dev, 5, || {
        stream
            .memcpy_htod(&*host, d)
            .map_err(driver("copy to the device"))
    })?;
    let down = time(dev, 5, || {
        stream
            .memcpy_dtoh(d, host)
            .map_err(driver("copy to the host"))
    })?;
    Ok((up, down))
}

/// FP32 (cuBLAS), BF16 (cuBLAS) and block-scaled FP8 (cuBLASLt) GEMMs at `sizes`³. Without a
/// usable cuBLASLt (a CUDA before 12.9) the FP8 rows are left out and the
/// error is returned beside the other rows.
pub fn gemm_table(dev: &Device, sizes: &[usize]) -> Result<(Vec<BenchRow>, Option<Error>)> {
    let mut out = Vec::new();
    let (mut lt, vendor) = match Lt::new(dev) {
        Ok(lt) => (Some(lt), None),
        Err(e) => (None, Some(e)),
    };
    for &s in sizes {
        let (m, n, k) = (s, s, s);
        // Random bits are enough for timing: BF16 values from small integers, FP8 codes
        // avoiding NaN (0x7f/0xff), scales 1.
        let bf: Vec<u16> = (0..m * k).map(|i| 0x3f80 | (i % 64) as u16).collect();
        let x16 = dev.upload("bench X bf16", &bf)?;
        let w16 = dev.upload("bench W bf16", &bf[..n * k])?;
        let y32 = dev.zeros::<f32>("bench Y f32", m * n)?;
        let p = MatMul::linear(m, n, k);
        let (xa, wa, ya) = (dev.addr(&x16), dev.addr(&w16), dev.addr(&y32));
        let ms = time(dev, 10, || dev.gemm_bf16(p, xa, k, wa, k, ya, 0.0))?;
        out.push(row(
            "BF16 cuBLAS (FP32 accumulate and output)",
            (m, n, k),
            ms,
        ));
        drop((x16, w16, y32));
        if let Some(lt) = lt.as_mut() {
            let codes: Vec<u8> = (0..m * k).map(|i| (i % 0x70) as u8).collect();
            let x8 = dev.upload("bench X fp8", &codes)?;
            let w8 = dev.upload("bench W fp8", &codes[..n * k])?;
            let xs = dev.upload("bench X scales", &vec![1.0f32; m * k.div_ceil(128)])?;
            let ws = dev.upload(
                "bench W scales",
                &vec![1.0f32; n.div_ceil(128) * k.div_ceil(128).div_ceil(4) * 4],
            )?;
            let mut y = dev.zeros::<f32>("bench Y", m * n)?;
            let ms = time(dev, 10, || {
                lt.fp8_block_scaled(dev, m, n, k, &x8, &xs, &w8, &ws, &mut y)
            })?;
            out.push(row("FP8 cuBLASLt 1×128·128×128 (promoted)", (m, n, k), ms));
            drop((x8, w8, xs, ws, y));
        }
        if s <= 4096 {
            let a = dev.upload("bench A f32", &vec![0.5f32; m * k])?;
            let b = dev.upload("bench B f32", &vec![0.25f32; k * n])?;
            let c = dev.zeros::<f32>("bench C f32", m * n)?;
            let p = MatMul::linear(m, n, k);
            let (aa, ba, ca) = (dev.addr(&a), dev.addr(&b), dev.addr(&c));
            let ms = time(dev, 5, || dev.sgemm(p, aa, k, ba, k, ca, 0.0))?;
            out.push(row("FP32 cuBLAS", (m, n, k), ms));
        }
    }
    Ok((out, vendor))
}

/// cuBLASLt's block-scaled FP8 GEMM against the CPU emulation (the same quantized operands;
/// the CPU truncates each 128-chunk's partial sum to 14 bits, the tensor cores accumulate in
/// their own order, so the tolerance is normwise).
pub fn fp8_cublaslt_check(dev: &Device, seed: u64) -> Result<Row> {
    let (m, n, k) = (256usize, 384usize, 640usize);
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
    let w: Vec<f32> = (0..n * k).map(|_| (rng.normal() * 0.02) as f32).collect();
    let qx = quantize(&x, m, k, 1, 128, Fp8Format::E4M3, ScaleRounding::Exact);
    let qw = quantize(&w, n, k, 128, 128, Fp8Format::E4M3, ScaleRounding::Exact);
    let (kb, nb) = (k.div_ceil(128), n.div_ceil(128));
    let gx = dev.upload("check X", &qx.codes)?;
    let gw = dev.upload("check W", &qw.codes)?;
    let gxs = dev.upload("check X scales", &activation_scales(&qx.scales, m, kb))?;
    let gws = dev.upload("check W scales", &weight_scales(&qw.scales, nb, kb))?;
    let mut gy = dev.zeros::<f32>("check Y", m * n)?;
    Lt::new(dev)?.fp8_block_scaled(dev, m, n, k, &gx, &gxs, &gw, &gws, &mut gy)?;
    let mut y = vec![0.0f32; m * n];
    dev.download(&gy, &mut y)?;
    let mut want = vec![0.0f32; m * n];
    CpuReference.matmul_lowp(
        MatMul::linear(m, n, k),
        &x,
        &w,
        &mut want,
        LowpGemm::Fp8 {
            a_tile: (1, 128),
            b_tile: (128, 128),
        },
    );
    Ok(crate::check::compare_normwise(
        "FP8 cuBLASLt vs CPU emulation",
        format!("{m}×{n}×{k}"),
        &y,
        &want,
        1e-3,
    ))
}

fn launch_on<'a>(dev: &'a Device, name: &str) -> Result<cudarc::driver::LaunchArgs<'a>> {
    Ok(dev.stream().launch_builder(dev.func(name)?))
}

fn fp8_gemm_cfg(m: usize, n: usize) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 99_328,
    }
}

/// Our own FP8 GEMM kernel (cu/gemm.cu: CUDA cores, the accumulator model of the CPU) against
/// the CPU emulation, normwise.
pub fn own_fp8_check(dev: &Device, seed: u64) -> Result<Row> {
    use cudarc::driver::PushKernelArg;
    let (m, n, k) = (200usize, 300usize, 520usize);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let x: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
    let w: Vec<f32> = (0..n * k).map(|_| (rng.normal() * 0.05) as f32).collect();
    let qx = quantize(&x, m, k, 1, 128, Fp8Format::E4M3, ScaleRounding::Exact);
    let qw = quantize(&w, n, k, 128, 128, Fp8Format::E4M3, ScaleRounding::Exact);
    let (ga, gas) = (
        dev.upload("A codes", &qx.codes)?,
        dev.upload("A scales", &qx.scales)?,
    );
    let (gb, gbs) = (
        dev.upload("B codes", &qw.codes)?,
        dev.upload("B scales", &qw.scales)?,
    );
    let mut gc = dev.zeros::<f32>("C", m * n)?;
    let (mi, ni, ki, bits, acc) = (m as i32, n as i32, k as i32, 14i32, 0i32);
    let mut b = launch_on(dev, "fp8_gemm_f32")?;
    b.arg(&ga).arg(&gas).arg(&gb).arg(&gbs).arg(&mut gc);
    b.arg(&mi).arg(&ni).arg(&ki).arg(&bits).arg(&acc);
    crate::backend::go("fp8_gemm_f32", b, fp8_gemm_cfg(m, n))?;
    let mut got = vec![0.0f32; m * n];
    dev.download(&gc, &mut got)?;
    let mut want = vec![0.0f32; m * n];
    CpuReference.matmul_lowp(
        MatMul::linear(m, n, k),
        &x,
        &w,
        &mut want,
        LowpGemm::Fp8 {
            a_tile: (1, 128),
            b_tile: (128, 128),
        },
    );
    Ok(crate::check::compare_normwise(
        "FP8 GEMM kernel (own) vs CPU",
        format!("{m}×{n}×{k}"),
        &got,
        &want,
        1e-4,
    ))
}

/// DeepSeek-V3's routed experts for the grouped GEMM's timing: (experts, experts per token,
/// output columns, inputs) — 256 experts, top-8, 7168 → 2048.
pub const DEEPSEEK_V3_EXPERTS: (usize, usize, usize, usize) = (256, 8, 2048, 7168);

/// Our tensor-core kernels of one format (FP8, or `bf16`) that `dev` runs: `mma.sync`, and
/// on Hopper wgmma, wgmma with TMA and wgmma with TMA multicast in clusters of two (unless set
/// aside after its probe failed, [`crate::backend::avoid`]) — the TMA kernels on both grids
/// ([`TmaGrid`]), persistent and a tile (a pair of tiles) per block (cluster) —, each with the
/// words its rows name it by.
fn tensor_core_kernels(dev: &Device, bf16: bool) -> Vec<(MmaKernel, TmaGrid, String)> {
    let mut all = MmaKernel::ALL;
    all.reverse();
    let runs = |k: &MmaKernel| {
        !k.set_aside()
            && if bf16 {
                k.runs_bf16_on(dev)
            } else {
                k.runs_on(dev)
            }
    };
    all.into_iter()
        .filter(runs)
        .flat_map(|k| match k {
            k if k.tma() => vec![
                (
                    k,
                    TmaGrid::Persistent,
                    format!("{}, persistent", k.instruction()),
                ),
                (
                    k,
                    TmaGrid::PerTile,
                    format!("{}, a tile per block", k.instruction()),
                ),
            ],
            _ => vec![(k, TmaGrid::Persistent, k.instruction().to_string())],
        })
        .collect()
}

/// The codes and scales of our FP8 tensor-core kernels' timing as they lay them out: A
/// `[rows, k]` with 1 × 128 scales `[rows][kb]`, B `[rows, k]` with 128 × 128 block scales
/// `[row blocks][kb]`.
fn mma_operands(
    dev: &Device,
    (a, sa): (&CudaSlice<u8>, &CudaSlice<f32>),
    (b, sb): (&CudaSlice<u8>, &CudaSlice<f32>),
    k: usize,
) -> (MmaOperand, MmaOperand) {
    use crate::fp8::Scales;
    let operand = |codes, scales, mode| MmaOperand {
        codes,
        ld: k,
        scales,
        strides: (k.div_ceil(128), 1),
        mode,
    };
    (
        operand(dev.addr(a), dev.addr(sa), Scales::Vec128),
        operand(dev.addr(b), dev.addr(sb), Scales::Blk128),
    )
}

/// Times `kernel`'s FP8 GEMM over the groups of `desc` (made once, outside the timing: the
/// table and the TMA kernels' tensor maps), C at `c` with rows of `ldc`, written or (`add`)
/// added to.
fn time_mma(
    dev: &Device,
    kernel: MmaKernel,
    (x, w): (MmaOperand, MmaOperand),
    (c, ldc): (&CudaSlice<f32>, usize),
    desc: &[i64],
    add: bool,
) -> Result<f64> {
    use crate::backend::mma::{Groups, launch};
    let groups = Groups::new(dev, kernel, desc, (x.codes, x.ld), (w.codes, w.ld), 1)?
        .expect("the timing's groups are not empty");
    let c = dev.addr(c);
    time(dev, 5, || {
        launch(dev, kernel, (x, w), (c, ldc), &groups, add)
    })
}

/// Our own kernels' throughput: the FP8 GEMMs at each of `sizes`³ (on the CUDA cores; on the
/// tensor cores by `mma.sync`, wgmma and wgmma with TMA, `fp8_gemm = "mma"`) and the grouped
/// expert GEMM at DeepSeek-V3's expert shape (hidden 7168, expert width 2048, 256 experts, top-8 of `tokens` tokens: the up
/// projection, n = 2048, k = 7168) in FP32, in the FP8 accumulator model, in FP8 and BF16 on the
/// tensor cores (one launch for every expert), and by the vendor libraries one expert at a time
/// (FP8 cuBLASLt, BF16 cuBLAS). The FP8 timings are the GEMMs alone, on operands quantized
/// beforehand, as cuBLASLt's in [`gemm_table`].
pub fn own_kernels_table(
    dev: &Device,
    sizes: &[usize],
    tokens: usize,
    experts: (usize, usize, usize, usize),
) -> Result<Vec<BenchRow>> {
    let mut out = Vec::new();
    for &size in sizes {
        own_dense_rows(dev, size, &mut out)?;
    }
    own_grouped_rows(dev, tokens, experts, &mut out)?;
    Ok(out)
}

/// [`own_kernels_table`]'s dense FP8 rows at `size`³.
fn own_dense_rows(dev: &Device, size: usize, out: &mut Vec<BenchRow>) -> Result<()> {
    use cudarc::driver::PushKernelArg;
    let (m, n, k) = (size, size, size);
    let codes: Vec<u8> = (0..m * k).map(|i| (i % 0x70) as u8).collect();
    let ga = dev.upload("A codes", &codes)?;
    let gb = dev.upload("B codes", &codes[..n * k])?;
    let gas = dev.upload("A scales", &vec![1.0f32; m * k.div_ceil(128)])?;
    let gbs = dev.upload("B scales", &vec![1.0f32; n.div_ceil(128) * k.div_ceil(128)])?;
    let mut gc = dev.zeros::<f32>("C", m * n)?;
    let (mi, ni, ki, bits, acc) = (m as i32, n as i32, k as i32, 14i32, 0i32);
    let ms = time(dev, 5, || {
        let mut b = launch_on(dev, "fp8_gemm_f32")?;
        b.arg(&ga).arg(&gas).arg(&gb).arg(&gbs).arg(&mut gc);
        b.arg(&mi).arg(&ni).arg(&ki).arg(&bits).arg(&acc);
        crate::backend::go("fp8_gemm_f32", b, fp8_gemm_cfg(m, n))
    })?;
    out.push(row("FP8 GEMM kernel (own, CUDA cores)", (m, n, k), ms));
    // The tensor cores: the same codes, A's scales per 1 × 128 ([m][kb]), B's per block; by
    // mma.sync, and by wgmma (on cp.async and on TMA copies) where the device runs it.
    let desc = [m, n, k, 0, 0, 0, 0, 0].map(|v| v as i64);
    let ops = mma_operands(dev, (&ga, &gas), (&gb, &gbs), k);
    for (kernel, grid, words) in tensor_core_kernels(dev, false) {
        let ms = with_tma_grid(grid, || time_mma(dev, kernel, ops, (&gc, n), &desc, false))?;
        out.push(row(
            &format!("FP8 GEMM kernel (own, tensor cores: {words})"),
            (m, n, k),
            ms,
        ));
        // The TMA kernels adding into C, as the trainer's weight gradients do: each thread
        // reads its 64 values of C before it writes any (session 21; before, one trip to
        // memory per value, in turn), which these rows beside the ones above measure.
        if kernel.tma() && grid == TmaGrid::Persistent {
            let ms = with_tma_grid(grid, || time_mma(dev, kernel, ops, (&gc, n), &desc, true))?;
            out.push(row(
                &format!("FP8 GEMM kernel (own, tensor cores: {words}, adding into C)"),
                (m, n, k),
                ms,
            ));
        }
    }
    drop((ga, gb, gas, gbs, gc));
    // BF16 on the tensor cores at the same size, beside `gemm_table`'s BF16 cuBLAS row (the
    // issue's goal: ≥ 90 % of cuBLAS), every product of ones checked.
    let one = 0x3f80u16; // 1.0
    let ga = dev.upload("A (BF16)", &vec![one; m * k])?;
    let gb = dev.upload("B (BF16)", &vec![one; n * k])?;
    let desc = [m, n, k, 0, 0, 0, 0, 0].map(|v| v as i64);
    let ops = (dev.addr(&ga), dev.addr(&gb));
    own_bf16_rows(dev, &desc, ops, (m, n, k), out, |words| {
        format!("BF16 GEMM kernel (own, tensor cores: {words})")
    })?;
    Ok(())
}

/// Our BF16 GEMM on the tensor cores over the groups of `desc`, operands of ones at `a` and
/// `b` (rows of `k` values), by each kernel the device runs, each into zeros of its own: a row
/// each, named by `what` from the kernel's words, timed and checked (every product is K).
fn own_bf16_rows(
    dev: &Device,
    desc: &[i64],
    (a, b): (u64, u64),
    (rows, n, k): (usize, usize, usize),
    out: &mut Vec<BenchRow>,
    what: impl Fn(&str) -> String,
) -> Result<()> {
    use crate::backend::mma::{Groups, launch_bf16};
    let (a, b) = ((a, k), (b, k));
    for (kernel, grid, words) in tensor_core_kernels(dev, true) {
        let gc = dev.zeros::<f32>("C (BF16 product)", rows * n)?;
        let groups =
            Groups::new(dev, kernel, desc, a, b, 2)?.expect("the timing's groups are not empty");
        let c = (dev.addr(&gc), n);
        let ms = with_tma_grid(grid, || {
            time(dev, 5, || {
                launch_bf16(dev, kernel, (a, b), c, &groups, false)
            })
        })?;
        out.push(checked_row(dev, &what(&words), (rows, n, k), ms, &gc)?);
    }
    Ok(())
}

/// [`own_kernels_table`]'s grouped expert rows.
fn own_grouped_rows(
    dev: &Device,
    tokens: usize,
    (experts, topk, out_cols, inputs): (usize, usize, usize, usize),
    out: &mut Vec<BenchRow>,
) -> Result<()> {
    use cudarc::driver::PushKernelArg;
    let (n, k) = (out_cols, inputs);
    let rows = tokens * topk;
    let per = rows / experts;
    let offsets: Vec<i32> = (0..=experts).map(|e| (e * per) as i32).collect();
    let gx = dev.zeros::<f32>("expert inputs", rows * k)?;
    let gw = dev.zeros::<f32>("expert weights", experts * n * k)?;
    let go_ = dev.upload("offsets", &offsets)?;
    let mut gy = dev.zeros::<f32>("expert outputs", rows * n)?;
    let (e, ni, ki, acc) = (experts as i32, n as i32, k as i32, 0i32);
    let cfg = crate::backend::tile_grid(per, n, (128, 128), experts);
    // The forward form; the FP8 one on operands as the quantization kernels leave them
    // (f32 values), with the accumulator model's truncation every 128 of K.
    let (form, stride) = (0i32, (n * k) as i64);
    for (name, bits, smem) in [
        ("grouped_gemm_forms_f32", None, 0u32),
        ("grouped_gemm_promoted_f32", Some(14i32), 99_328),
    ] {
        let cfg = cudarc::driver::LaunchConfig {
            shared_mem_bytes: smem,
            ..cfg
        };
        let ms = time(dev, 5, || {
            let mut b = launch_on(dev, name)?;
            b.arg(&gx)
                .arg(&gw)
                .arg(&mut gy)
                .arg(&go_)
                .arg(&e)
                .arg(&form)
                .arg(&ni)
                .arg(&ki)
                .arg(&stride)
                .arg(&acc);
            if let Some(bits) = &bits {
                b.arg(bits);
            }
            crate::backend::go(name, b, cfg)
        })?;
        let what = if bits.is_some() { "FP8 model" } else { "f32" };
        out.push(row(
            &format!("grouped expert GEMM {what} (own), {experts} experts × {per} rows"),
            (rows, n, k),
            ms,
        ));
    }
    drop((gx, gw, gy));
    // On the tensor cores: every expert's product in one launch, on E4M3 codes.
    let kb = k.div_ceil(128);
    let ga = dev.upload("expert input codes", &vec![0x38u8; rows * k])?;
    let gb = dev.upload("expert weight codes", &vec![0x38u8; experts * n * k])?;
    let gas = dev.upload("expert input scales", &vec![1.0f32; rows * kb])?;
    // (Room for cuBLASLt's block rows of kb rounded up to 4, read per expert below.)
    let gbs = dev.upload(
        "expert weight scales",
        &vec![1.0f32; experts * n.div_ceil(128) * kb.next_multiple_of(4)],
    )?;
    let desc: Vec<i64> = (0..experts)
        .flat_map(|e| {
            [
                per,
                n,
                k,
                e * per * k,
                e * n * k,
                e * per * kb,
                e * n.div_ceil(128) * kb,
                e * per * n,
            ]
            .map(|v| v as i64)
        })
        .collect();
    let ops = mma_operands(dev, (&ga, &gas), (&gb, &gbs), k);
    for (kernel, grid, words) in tensor_core_kernels(dev, false) {
        // Into zeros of its own, so that the check sees what this kernel wrote.
        let gy = dev.zeros::<f32>("expert outputs", rows * n)?;
        let ms = with_tma_grid(grid, || time_mma(dev, kernel, ops, (&gy, n), &desc, false))?;
        out.push(checked_row(
            dev,
            &format!(
                "grouped expert GEMM FP8 (own, tensor cores: {words}), {experts} experts × {per} rows"
            ),
            (rows, n, k),
            ms,
            &gy,
        )?);
    }
    // The same by cuBLASLt, one call per expert (`fp8_gemm = "cublaslt"`), into zeros of its
    // own; a cuBLASLt without block scaling is a row that says so.
    let gy_lt = dev.zeros::<f32>("expert outputs (cuBLASLt)", rows * n)?;
    let what =
        format!("grouped expert GEMM FP8 (cuBLASLt per expert), {experts} experts × {per} rows");
    let timed = Lt::new(dev).and_then(|mut lt| {
        use crate::fp8::{Fp8Operand, Scales};
        let (a0, b0, c0) = (dev.addr(&ga), dev.addr(&gb), dev.addr(&gy_lt));
        let (sa0, sb0) = (dev.addr(&gas), dev.addr(&gbs));
        // Every scale is 1, so any layout reads ones; each expert's are at its own offset.
        let (sa_n, sb_n) = (Scales::Vec128.count(per, k), Scales::Blk128.count(n, k));
        debug_assert!(sa_n == per * kb && sb_n <= n.div_ceil(128) * kb.next_multiple_of(4));
        time(dev, 5, || {
            for e in 0..experts {
                let x = Fp8Operand {
                    codes: a0 + (e * per * k) as u64,
                    scales: sa0 + (e * per * kb * 4) as u64,
                    mode: Scales::Vec128,
                };
                let w = Fp8Operand {
                    codes: b0 + (e * n * k) as u64,
                    scales: sb0 + (e * n.div_ceil(128) * kb * 4) as u64,
                    mode: Scales::Blk128,
                };
                lt.matmul(dev, (per, n, k), x, w, c0 + (e * per * n * 4) as u64)?;
            }
            Ok(())
        })
    });
    match timed {
        Ok(ms) => out.push(checked_row(dev, &what, (rows, n, k), ms, &gy_lt)?),
        Err(e) => out.push(BenchRow {
            what: format!("{what} — unavailable: {e}"),
            shape: (rows, n, k),
            ms: f64::NAN,
            tflops: f64::NAN,
        }),
    }
    drop((ga, gb, gas, gbs, gy_lt));
    // BF16 (training's bf16 precision): every expert in one launch of our kernel, against one
    // cuBLAS GemmEx per expert (what the backend falls back to).
    let one = 0x3f80u16; // 1.0
    let ga = dev.upload("expert inputs (BF16)", &vec![one; rows * k])?;
    let gb = dev.upload("expert weights (BF16)", &vec![one; experts * n * k])?;
    let desc: Vec<i64> = (0..experts)
        .flat_map(|e| [per, n, k, e * per * k, e * n * k, 0, 0, e * per * n].map(|v| v as i64))
        .collect();
    own_bf16_rows(
        dev,
        &desc,
        (dev.addr(&ga), dev.addr(&gb)),
        (rows, n, k),
        out,
        |words| {
            format!(
                "grouped expert GEMM BF16 (own, tensor cores: {words}), {experts} experts × {per} rows"
            )
        },
    )?;
    // Into zeros of its own, so that the check below sees what cuBLAS wrote.
    let gy = dev.zeros::<f32>("expert outputs (cuBLAS)", rows * n)?;
    let (a0, b0, c0) = (dev.addr(&ga), dev.addr(&gb), dev.addr(&gy));
    let ms = time(dev, 5, || {
        for e in 0..experts {
            let p = MatMul::linear(per, n, k);
            let (a, b, c) = (
                a0 + (e * per * k * 2) as u64,
                b0 + (e * n * k * 2) as u64,
                c0 + (e * per * n * 4) as u64,
            );
            dev.gemm_bf16(p, a, k, b, k, c, 0.0)?;
        }
        Ok(())
    })?;
    out.push(checked_row(
        dev,
        &format!(
            "grouped expert GEMM BF16 (cuBLAS GemmEx per expert), {experts} experts × {per} rows"
        ),
        (rows, n, k),
        ms,
        &gy,
    )?);
    Ok(())
}
