//! [`Cuda`]: the [`Backend`] seam on a GPU. The seam passes host slices. Copying
//! ([`Memory::Copy`]), every operation copies its inputs to the device, runs the kernel (or
//! cuBLAS), and copies the results back: the model trains on the GPU with the same arithmetic
//! as on the CPU — which is what the device check compares — at the cost of the transfers. On
//! a GPU that reaches pageable host memory (HMM), [`Memory::Host`] hands the kernels the
//! slices' own addresses instead ([`crate::device::Buf`]): the driver migrates the pages to the
//! GPU at first touch and they stay there until the host touches them, so weights, optimizer
//! state and activations stay resident without a device buffer type in the seam; operands a
//! kernel converts (the FP8 GEMMs' quantized operands) are written into device buffers by
//! kernels reading the slices' addresses. On any GPU with managed memory, [`Memory::Managed`]
//! does the same for the slices that lie in CUDA managed memory — where the `tokenmill`
//! binary's allocator puts every large block ([`crate::managed`]) — and copies the rest.
//!
//! The seam's operations return no errors; a CUDA failure here (out of memory, a kernel fault)
//! panics with the backend's error message, which names the operation and the sizes.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::ThreadId;

use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};

use tokenmill_kernels::backend::{
    AdamStep, AttnShape, Backend, Balance, DeviceCounters, FP8_ACC_MANTISSA_BITS,
    FP8_PROMOTE_EVERY, Grouped, GroupedForm, KeyStarts, LowpGemm, MatMul, RopeRows, RopeTable,
    Route, Strided,
};

use crate::device::{Buf, Device, Memory, elementwise, elementwise_by};
use crate::error::{Error, Result, driver};
use crate::fp8::{Fp8Operand, Lt, Scales};
use tokenmill_kernels::cpu::grouped;
use tokenmill_kernels::cpu::optim::{check_adamw, check_segments};
use tokenmill_kernels::cpu::route::check_bwd;
use tokenmill_kernels::cpu::rows::{check_distinct, check_rows};

pub(crate) mod mma;
pub use mma::{MMA_VAR, MmaKernel, TmaGrid, avoid, set_tma_grid, tma_grid, with_tma_grid};

/// The CUDA backend over one [`Device`].
#[derive(Debug)]
pub struct Cuda {
    dev: Device,
    fp8: Fp8Gemm,
    /// cuBLASLt, for [`Fp8Gemm::Cublaslt`].
    lt: Mutex<Option<Lt>>,
    /// The kernel of [`Fp8Gemm::Mma`] the caller asked for ([`Cuda::set_mma_kernel`]); `None`:
    /// the automatic choice.
    mma_asked: Option<MmaKernel>,
    /// The kernel that computes [`Fp8Gemm::Mma`]'s GEMMs (settled by its probe).
    mma_kernel: MmaKernel,
    /// FP8 GEMMs computed on the tensor cores: cuBLASLt calls and launches of our kernel.
    fast_calls: [AtomicU64; 2],
    /// The experts' BF16 GEMMs on cuBLAS, one `GemmEx` per expert, whatever the probe says
    /// (`set_bf16_grouped_mma(false)`, or `TOKENMILL_CUDA_GROUPED_BF16=cublas`).
    bf16_mma_off: bool,
    /// Which of our kernels passed its BF16 probe on this device (`None`: neither, cuBLAS
    /// takes them): asked at the first grouped BF16 GEMM.
    bf16_mma: std::sync::OnceLock<Option<MmaKernel>>,
    /// Each thread's count of FP8 tiles with a non-finite amax in its open deferred scope:
    /// the GEMMs there add to it on the device, and the scope's end reads it.
    scope_bad: Mutex<HashMap<ThreadId, CudaSlice<u32>>>,
}

impl Drop for Cuda {
    fn drop(&mut self) {
        if self.dev.defers_waits() {
            // The blocks freed since the last wait are kept once it is done; later backends
            // in this process do not defer unless asked.
            if let Err(e) = self.dev.sync() {
                tracing::warn!("waiting for the device at the end: {e}");
            }
            crate::managed::defer_reuse(false);
        }
        let c = crate::device::counters();
        tracing::info!(
            memory = ?self.dev.memory,
            copies = c.copies,
            bytes_up = c.to_device,
            bytes_back = c.to_host,
            waits = c.waits,
            blocked_s = c.blocked_ns as f64 / 1e9,
            "host-device copies made and waits for the device in this process"
        );
        if self.dev.memory == Memory::Managed {
            let s = crate::managed::stats();
            tracing::info!(
                blocks = s.made,
                bytes = s.made_bytes,
                reused = s.reused,
                fallbacks = s.fallbacks,
                from = s.from,
                "CUDA managed memory served the large allocations"
            );
        }
        let kernel = self.mma_kernel.name();
        let by = match self.fp8 {
            Fp8Gemm::Model => return,
            Fp8Gemm::Cublaslt => "cuBLASLt calls".to_string(),
            Fp8Gemm::Mma => format!("launches of {kernel}"),
            Fp8Gemm::CublasltMma => format!("cuBLASLt calls and launches of {kernel}"),
        };
        let [lt, mma] = self.fast_fp8_calls_by();
        tracing::info!(
            gemms = lt + mma,
            by,
            cublaslt = lt,
            mma,
            "FP8 GEMMs computed on the tensor cores (the others by the model)"
        );
    }
}

/// [`Cuda::fast_fp8_calls_by`]'s counters: cuBLASLt's calls, our kernel's launches.
const LT: usize = 0;
pub(crate) const MMA: usize = 1;

/// `TOKENMILL_CUDA_GROUPED_BF16=cublas` keeps the experts' BF16 GEMMs on cuBLAS, one `GemmEx`
/// per expert, instead of one launch of our tensor-core kernel.
pub const GROUPED_BF16_VAR: &str = "TOKENMILL_CUDA_GROUPED_BF16";

/// How the backend computes its FP8 GEMMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fp8Gemm {
    /// The CPU's accumulator model (fake-quantized operands, each 128-long chunk of K summed by
    /// SGEMM, truncated to the tensor cores' 14 mantissa bits and promoted into FP32): the same
    /// quantity as the CPU computes, so the loss curves compare; CUDA cores.
    #[default]
    Model,
    /// cuBLASLt's block-scaled FP8 matmul on the tensor cores (CUDA ≥ 12.9, sm_90): the same
    /// quantized operands, accumulated as the hardware does; the dense GEMMs one call each, the
    /// experts' grouped GEMMs one call per expert with rows. Shapes are padded with zeros to
    /// what cuBLASLt takes; tiles it has no scale mode for (both operands in 128 × 128 blocks,
    /// or tiles other than 1 × 128 and 128 × 128 along the contraction) keep the model.
    Cublaslt,
    /// Our own kernel on the tensor cores ([`MmaKernel`]: `cu/wgmma.cu`'s warpgroup
    /// instruction on Hopper, `cu/mma.cu`'s `mma.sync` elsewhere from compute capability 8.9)
    /// on the operands cuBLASLt would take, DeepSeek-V3's promotion
    /// every 128 of K: a dense GEMM one launch, the experts' grouped GEMM one launch for every
    /// expert. Tiles other than 1 × 128 and 128 × 128 along the contraction keep the model.
    Mma,
    /// Each where it is fastest: the dense GEMMs by cuBLASLt ([`Fp8Gemm::Cublaslt`]: one call
    /// each), the experts' grouped GEMMs by our kernel ([`Fp8Gemm::Mma`]: one launch for every
    /// expert, where cuBLASLt takes one call per expert with rows).
    CublasltMma,
}

impl Fp8Gemm {
    /// How a dense FP8 GEMM computes.
    pub fn dense(self) -> Fp8Gemm {
        match self {
            Fp8Gemm::CublasltMma => Fp8Gemm::Cublaslt,
            f => f,
        }
    }
    /// How the experts' grouped FP8 GEMM computes.
    pub fn grouped(self) -> Fp8Gemm {
        match self {
            Fp8Gemm::CublasltMma => Fp8Gemm::Mma,
            f => f,
        }
    }
}

impl Cuda {
    /// The backend on GPU `ordinal` (see [`Device::open`] for what is checked), copying each
    /// operation's slices.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::with_memory(ordinal, Memory::Copy)
    }

    /// The backend on GPU `ordinal` with host slices reaching the kernels as `memory` says
    /// ([`Device::open_with`]).
    pub fn with_memory(ordinal: usize, memory: Memory) -> Result<Self> {
        let cuda = Cuda {
            dev: Device::open_with(ordinal, memory)?,
            fp8: Fp8Gemm::Model,
            lt: Mutex::new(None),
            mma_asked: None,
            mma_kernel: MmaKernel::Sync,
            fast_calls: [AtomicU64::new(0), AtomicU64::new(0)],
            bf16_mma_off: std::env::var(GROUPED_BF16_VAR).is_ok_and(|v| v == "cublas"),
            bf16_mma: std::sync::OnceLock::new(),
            scope_bad: Mutex::new(HashMap::new()),
        };
        if cuda.bf16_mma_off {
            tracing::info!("{GROUPED_BF16_VAR}=cublas: the experts' BF16 GEMMs one GemmEx each");
        }
        Ok(cuda)
    }

    /// Whether the experts' grouped BF16 GEMMs run as one launch of our tensor-core kernel
    /// rather than one cuBLAS `GemmEx` per expert ([`Cuda::bf16_grouped_kernel`]).
    pub fn bf16_grouped_on_tensor_cores(&self) -> Result<bool> {
        Ok(self.bf16_grouped_kernel()?.is_some())
    }

    /// Our kernel that computes the experts' grouped BF16 GEMMs, one launch for every expert
    /// (wgmma on Hopper, else `mma.sync`; [`MmaKernel`]), or `None` for one cuBLAS `GemmEx`
    /// per expert: unless switched off, the first that passes its probe (run here the first
    /// time it is asked; an error of the device during it is returned, a wrong product
    /// logged and the next kernel tried).
    pub fn bf16_grouped_kernel(&self) -> Result<Option<MmaKernel>> {
        if self.bf16_mma_off {
            return Ok(None);
        }
        if let Some(&k) = self.bf16_mma.get() {
            return Ok(k);
        }
        let k = self.bf16_mma_choose()?;
        if self.bf16_mma.set(k).is_ok() {
            match k {
                Some(k) => tracing::info!(
                    "the experts' BF16 GEMMs on the tensor cores: one launch of {} each",
                    k.bf16_name()
                ),
                None => tracing::info!("the experts' BF16 GEMMs on cuBLAS, one GemmEx each"),
            }
        }
        Ok(k)
    }

    /// Puts the experts' grouped BF16 GEMMs on cuBLAS, one `GemmEx` per expert (`false`), or
    /// back on our kernel where it passes its probe (`true`): for comparing the two.
    pub fn set_bf16_grouped_mma(&mut self, on: bool) {
        self.bf16_mma_off = !on;
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Under [`Memory::Managed`]: operations inside a deferred scope
    /// ([`Backend::begin_deferred`]) return without waiting for the device; the scope's end
    /// waits once. Refused in the other memory modes.
    pub fn set_defer_waits(&mut self, on: bool) -> Result<()> {
        self.dev.set_defer_waits(on)?;
        if on {
            tracing::info!("operations in deferred scopes return without waiting for the GPU");
        }
        Ok(())
    }

    /// Computes the FP8 GEMMs as `fp8` says. [`Fp8Gemm::Cublaslt`] opens cuBLASLt and
    /// runs one small block-scaled matmul, so that a library without it (CUDA before 12.9, a
    /// GPU other than sm_90) is an error here, naming why, rather than in training;
    /// [`Fp8Gemm::Mma`] checks the device's compute capability and our kernel on a product
    /// known exactly.
    pub fn set_fp8_gemm(&mut self, fp8: Fp8Gemm) -> Result<()> {
        if fp8.grouped() == Fp8Gemm::Mma {
            self.mma_probe()?;
            self.reset_fast_calls();
            tracing::info!(
                "FP8 GEMMs on the tensor cores by {}{}",
                self.mma_kernel.name(),
                if fp8 == Fp8Gemm::Mma {
                    ""
                } else {
                    " (the experts')"
                }
            );
        }
        if fp8.dense() == Fp8Gemm::Cublaslt {
            let probe = MatMul::linear(16, 16, 128);
            // 448, E4M3's largest value: scale 1, so every product is exact in FP8 and FP32.
            let (a, b) = (vec![448.0f32; 16 * 128], vec![448.0f32; 16 * 128]);
            let want = 448.0f32 * 448.0 * 128.0;
            let mut c = vec![0.0f32; 16 * 16];
            self.fp8 = fp8;
            let format = LowpGemm::Fp8 {
                a_tile: (1, 128),
                b_tile: (128, 128),
            };
            let done = self.try_matmul_lowp(probe, &a, &b, &mut c, format);
            if let Err(e) = done.and_then(|_| match c.iter().find(|&&v| v != want) {
                Some(v) => Err(Error::Blas {
                    lib: "cublasLt",
                    op: "FP8 block-scaled probe 16×16×128".into(),
                    message: format!("gave {v}, not {want}"),
                }),
                None => Ok(()),
            }) {
                self.fp8 = Fp8Gemm::Model;
                return Err(e);
            }
            // The probe is not one of the caller's GEMMs.
            self.reset_fast_calls();
            tracing::info!(
                "FP8 GEMMs through cuBLASLt's block-scaled matmul{}",
                if fp8 == Fp8Gemm::Cublaslt {
                    ""
                } else {
                    " (the dense ones)"
                }
            );
        }
        self.fp8 = fp8;
        Ok(())
    }

    /// How the FP8 GEMMs compute.
    pub fn fp8_gemm(&self) -> Fp8Gemm {
        self.fp8
    }

    /// Asks for `kernel` to compute [`Fp8Gemm::Mma`]'s GEMMs and the experts' BF16 GEMMs
    /// (`None`: the automatic choice, [`MmaKernel`]): taken at the next [`Cuda::set_fp8_gemm`],
    /// which refuses a kernel the device does not run or that fails its probe, and at the
    /// first grouped BF16 GEMM, which keeps the experts on cuBLAS then.
    pub fn set_mma_kernel(&mut self, kernel: Option<MmaKernel>) {
        self.mma_asked = kernel;
    }

    /// The kernel that computes [`Fp8Gemm::Mma`]'s GEMMs (meaningful once
    /// [`Cuda::set_fp8_gemm`] has chosen it).
    pub fn mma_kernel(&self) -> MmaKernel {
        self.mma_kernel
    }

    /// The FP8 GEMMs computed on the tensor cores so far: cuBLASLt's calls
    /// ([`Fp8Gemm::Cublaslt`], one per expert of a grouped GEMM) and our kernel's launches
    /// ([`Fp8Gemm::Mma`], one per grouped GEMM); the others fell back to the model.
    pub fn fast_fp8_calls(&self) -> u64 {
        self.fast_fp8_calls_by().iter().sum()
    }

    /// [`Cuda::fast_fp8_calls`]: cuBLASLt's calls, our kernel's launches.
    pub fn fast_fp8_calls_by(&self) -> [u64; 2] {
        self.fast_calls
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed))
    }

    fn reset_fast_calls(&self) {
        for c in &self.fast_calls {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The counter of FP8 tiles with a non-finite amax a low-precision GEMM adds to: inside a
    /// deferred scope the scope's (taken out until [`Cuda::count_bad`] puts it back), else a
    /// new one.
    fn bad_tiles(&self) -> Result<CudaSlice<u32>> {
        let scope = self.dev.deferring().then(|| {
            let mut m = self.scope_bad.lock().expect("bad-tile counters");
            m.remove(&thread_id())
        });
        match scope.flatten() {
            Some(c) => Ok(c),
            None => self.dev.zeros::<u32>("bad tiles", 1),
        }
    }

    /// The count in `c` ([`Cuda::bad_tiles`]): copied back (a wait), or, inside a deferred
    /// scope, 0 and the counter kept for the scope's end ([`Backend::settle`]).
    fn count_bad(&self, c: CudaSlice<u32>) -> Result<u64> {
        if self.dev.deferring() {
            let mut m = self.scope_bad.lock().expect("bad-tile counters");
            m.insert(thread_id(), c);
            return Ok(0);
        }
        self.read_bad(&c)
    }

    /// The count in `c`, copied back: a wait for the device.
    fn read_bad(&self, c: &CudaSlice<u32>) -> Result<u64> {
        let mut h = [0u32];
        self.dev.download(c, &mut h)?;
        Ok(h[0] as u64)
    }

    /// Sets the memory model's estimate reported with out-of-memory errors.
    pub fn set_estimate(&mut self, bytes: u64) {
        self.dev.estimate = Some(bytes);
    }

    /// A launch of kernel `name`, to which the caller pushes the arguments in the order and
    /// types of its signature (cu/*.cu), then hands to [`go`].
    fn k(&self, name: &str) -> Result<LaunchArgs<'_>> {
        Ok(self.dev.stream().launch_builder(self.dev.func(name)?))
    }

    /// A dense product with no element of C, or nothing to contract: done here, as the CPU
    /// does it (C zeros without K, unless it accumulates; no operand read), and `true`. The
    /// device would have to allocate zero bytes, and cuBLAS refuses K = 0's leading
    /// dimensions.
    fn empty_product(&self, p: MatMul, c: &mut [f32]) -> bool {
        if p.m > 0 && p.n > 0 && p.k > 0 {
            return false;
        }
        if !p.accumulate {
            self.fill(c, 0.0);
        }
        true
    }

    fn try_matmul(&self, p: MatMul, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
        p.check(a, b, c);
        if self.empty_product(p, c) {
            return Ok(());
        }
        let da = self.dev.input("matmul A", a)?;
        let db = self.dev.input("matmul B", b)?;
        // cuBLAS reads C only to accumulate (beta 1); with beta 0 it writes all of it.
        let dc = if p.accumulate {
            self.dev.inout("matmul C", c)?
        } else {
            self.dev.written("matmul C", c)?
        };
        let beta = if p.accumulate { 1.0 } else { 0.0 };
        self.dev.sgemm(
            p,
            *da.p(),
            p.a_stored().1,
            *db.p(),
            p.b_stored().1,
            *dc.p(),
            beta,
        )?;
        self.dev.finish(&dc, c)
    }

    /// The grouped GEMM in one call: the row operand(s) up once, each group's weight block up
    /// on its own (not the other projections between them), the result back once. FP32: every
    /// group's product in one launch of our grouped kernel. FP8: the operands fake-quantized
    /// group by group (tiles counted from each expert's first row, as the CPU quantizes each
    /// expert's operands), then every group's product in one launch of the grouped kernel with
    /// the FP8 accumulator model — or, with [`Fp8Gemm::Cublaslt`], each group's product by
    /// cuBLASLt on its own quantized operands, with [`Fp8Gemm::Mma`] every group's product in
    /// one launch of our tensor-core kernel. BF16: every group's product in one launch of our
    /// tensor-core kernel where its probe passed, else the operands converted once and each
    /// group's product by cuBLAS `GemmEx`, all on the device.
    fn try_grouped_matmul(
        &self,
        g: Grouped<'_>,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        format: Option<LowpGemm>,
    ) -> Result<u64> {
        grouped::check(&g, a, b, c);
        if g.n == 0 || g.k == 0 || g.rows() == 0 {
            // No group has rows, columns and a contraction: what the CPU's groups write
            // (`grouped::each_group`), nothing read, no FP8 tile counted. A product over
            // nothing is zeros: the forms' outputs without K, the weight gradients without
            // rows.
            let zeros: Vec<Range<usize>> = match g.form {
                GroupedForm::Weight if g.rows() == 0 && g.n * g.k > 0 => {
                    (0..g.groups()).map(|e| g.block(e)).collect()
                }
                GroupedForm::Forward | GroupedForm::Input if g.k == 0 => {
                    std::iter::once(0..c.len()).collect()
                }
                _ => Vec::new(),
            };
            if !g.accumulate {
                zeros.into_iter().for_each(|r| self.fill(&mut c[r], 0.0));
            }
            return Ok(0);
        }
        let groups = g.groups();
        let weights = g.form != GroupedForm::Weight;
        let nk = g.n * g.k;
        // Which of B and C the kernels take by address (HMM, or managed memory).
        let (b_host, c_host) = (self.dev.reaches(b), self.dev.reaches(c));
        let has_rows = |e: usize| g.offsets[e + 1] > g.offsets[e];
        // By address (host memory): the weight buffer as it lies, its blocks `stride` apart;
        // the kernels write every group's block of a weight gradient (zeros for a group
        // without rows) and every row of the other forms, so nothing is zeroed first. Copied:
        // only the blocks, dense, `n · k` apart.
        let blocks_of = |buf: &[f32], want: &dyn Fn(usize) -> bool| -> Vec<f32> {
            let mut v = vec![0f32; groups * nk];
            for e in (0..groups).filter(|&e| want(e)) {
                v[e * nk..(e + 1) * nk].copy_from_slice(&buf[g.block(e)]);
            }
            v
        };
        let da = self.dev.input("grouped A", a)?;
        let (db, b_stride) = if b_host || !weights {
            (self.dev.input("grouped B", b)?, g.stride)
        } else {
            let blocks = blocks_of(b, &has_rows);
            (self.dev.copy_in("grouped weights", &blocks)?, nk)
        };
        let (dc, c_stride) = match (c_host, weights, g.accumulate) {
            (true, _, _) => (self.dev.inout("grouped C", c)?, g.stride),
            (false, true, true) => (self.dev.copy_in("grouped C", c)?, nk),
            (false, true, false) => (self.dev.scratch::<f32>("grouped C", c.len())?, nk),
            (false, false, true) => {
                let blocks = blocks_of(c, &|_| true);
                (self.dev.copy_in("grouped weight gradients", &blocks)?, nk)
            }
            (false, false, false) => (
                self.dev
                    .scratch::<f32>("grouped weight gradients", groups * nk)?,
                nk,
            ),
        };
        let offsets: Vec<i32> = g
            .offsets
            .iter()
            .map(|&o| i32::try_from(o).expect("grouped GEMM: rows past 2³¹"))
            .collect();
        let goff = self.dev.input("expert offsets", &offsets)?;
        let mut bad = 0u64;
        // Every group's product has the form (transposes) of the first's. Our tensor-core
        // kernel takes at most 65,535 blocks of rows; past that the model computes it.
        let mode = self.fp8.grouped();
        let lt = format
            .filter(|_| groups > 0 && (mode != Fp8Gemm::Mma || mma::fits(&g)))
            .and_then(|f| self.fp8_scales(mode, grouped::group(&g, 0).0, f));
        match (format, lt) {
            (Some(LowpGemm::Fp8 { .. }), Some(modes)) if mode == Fp8Gemm::Mma => {
                let mut dbad = self.bad_tiles()?;
                let stride = if weights { b_stride } else { c_stride };
                let at = (*da.p(), *db.p(), *dc.p());
                self.grouped_mma(&g, at, stride, modes, &mut dbad)?;
                bad = self.count_bad(dbad)?;
            }
            (None, _) => {
                let stride = if weights { b_stride } else { c_stride };
                self.grouped_launch(&g, (*da.p(), *db.p(), *dc.p()), &goff, stride, None)?;
            }
            (Some(LowpGemm::Fp8 { .. }), Some(modes)) => {
                // Each expert's product by cuBLASLt, its operands quantized as a matrix of
                // their own (as the CPU quantizes each expert's), on the device copies or the
                // caller's slices by address; an expert without rows computes nothing (its
                // weight gradient is zeros unless accumulating).
                let mut dbad = self.bad_tiles()?;
                for e in 0..groups {
                    let (p, [ra, rb, rc]) = grouped::group(&g, e);
                    let (b_at, c_at) = if weights {
                        (db.at(e * b_stride), dc.at(rc.start))
                    } else {
                        (db.at(rb.start), dc.at(e * c_stride))
                    };
                    let at = (da.at(ra.start), b_at, c_at, dc.is_copy());
                    self.lt_matmul(p, at, modes, &mut dbad)?;
                }
                bad = self.count_bad(dbad)?;
            }
            (Some(LowpGemm::Fp8 { a_tile, b_tile }), None) => {
                // Quantized in place on device copies; on host memory into device buffers,
                // never the caller's slices.
                let mut dbad = self.bad_tiles()?;
                let a_cols = if weights { g.k } else { g.n };
                let (_qa, qa_at) = self.quantized_dst("grouped FP8 A", &da, a.len())?;
                self.fake_quantize_rows(&g, (*da.p(), qa_at), &goff, a_cols, a_tile, &mut dbad)?;
                let (_qb, b_at, stride) = if weights {
                    // The blocks of experts with rows, as stored: [n, k] forward, [k, n] input.
                    let (rows, cols) = match g.form {
                        GroupedForm::Forward => (g.n, g.k),
                        _ => (g.k, g.n),
                    };
                    let (qb, at) = self.quantized_dst("grouped FP8 weights", &db, groups * nk)?;
                    // A new buffer holds the blocks dense.
                    let dst_stride = if qb.is_some() { nk } else { b_stride };
                    let blocks = Blocks {
                        src: *db.p(),
                        src_stride: b_stride,
                        dst: at,
                        dst_stride,
                        rows,
                        cols,
                    };
                    self.fake_quantize_blocks(&g, blocks, &goff, b_tile, &mut dbad)?;
                    (qb, at, dst_stride)
                } else {
                    let (qb, at) = self.quantized_dst("grouped FP8 B", &db, b.len())?;
                    self.fake_quantize_rows(&g, (*db.p(), at), &goff, g.k, b_tile, &mut dbad)?;
                    (qb, at, c_stride)
                };
                let bits = Some(FP8_ACC_MANTISSA_BITS as i32);
                self.grouped_launch(&g, (qa_at, b_at, *dc.p()), &goff, stride, bits)?;
                bad = self.count_bad(dbad)?;
            }
            (Some(LowpGemm::Bf16), _) if self.bf16_grouped_kernel()?.is_some() && mma::fits(&g) => {
                let kernel = self.bf16_grouped_kernel()?.expect("asked above");
                let stride = if weights { b_stride } else { c_stride };
                self.grouped_bf16_mma(kernel, &g, (*da.p(), *db.p(), *dc.p()), stride)?;
            }
            (Some(LowpGemm::Bf16), _) => {
                // The operands as BF16 once; each group's product on the tensor cores.
                let a16 = self.to_bf16(*da.p(), a.len())?;
                let b16 = if weights {
                    let y = self.dev.zeros::<u16>("BF16 weights", groups * nk)?;
                    let at = self.dev.addr(&y);
                    for e in (0..groups).filter(|&e| has_rows(e)) {
                        self.to_bf16_into(db.at(e * b_stride), at + (e * nk * 2) as u64, nk)?;
                    }
                    y
                } else {
                    self.to_bf16(*db.p(), b.len())?
                };
                let (a16_at, b16_at) = (self.dev.addr(&a16), self.dev.addr(&b16));
                let beta = if g.accumulate { 1.0 } else { 0.0 };
                for e in 0..groups {
                    let (p, [ra, rb, rc]) = grouped::group(&g, e);
                    if p.m == 0 || p.n == 0 {
                        continue;
                    }
                    let (b_at, c_at) = if weights {
                        (b16_at + (e * nk * 2) as u64, dc.at(rc.start))
                    } else {
                        (b16_at + (rb.start * 2) as u64, dc.at(e * c_stride))
                    };
                    if p.k == 0 {
                        // An expert with no rows: its weight gradient is zero.
                        if !g.accumulate {
                            self.fill_at(c_at, nk, 0.0)?;
                        }
                        continue;
                    }
                    let a_at = a16_at + (ra.start * 2) as u64;
                    let (lda, ldb) = (p.a_stored().1, p.b_stored().1);
                    self.dev.gemm_bf16(p, a_at, lda, b_at, ldb, c_at, beta)?;
                }
            }
        }
        if c_host || weights {
            self.dev.finish(&dc, c)?;
        } else {
            let mut blocks = vec![0f32; groups * nk];
            self.dev.finish(&dc, &mut blocks)?;
            for e in 0..groups {
                c[g.block(e)].copy_from_slice(&blocks[e * nk..(e + 1) * nk]);
            }
        }
        Ok(bad)
    }

    /// One launch of the grouped kernel over every group (cu/gemm.cu): `grouped_gemm_forms_f32`,
    /// or with `acc_bits` the FP8 accumulator model's `grouped_gemm_promoted_f32`. `stride`: the
    /// weight blocks' (forms forward and input) or the weight gradient's (form weight) as the
    /// buffers at `b`, `c` hold them.
    fn grouped_launch(
        &self,
        g: &Grouped<'_>,
        (a, b, c): (u64, u64, u64),
        offsets: &Buf<i32>,
        stride: usize,
        acc_bits: Option<i32>,
    ) -> Result<()> {
        let (m_max, n_cols) = match g.form {
            GroupedForm::Weight => (g.n, g.k),
            _ => (g.most_rows(), g.n),
        };
        if m_max == 0 || n_cols == 0 {
            return Ok(());
        }
        let form: i32 = match g.form {
            GroupedForm::Forward => 0,
            GroupedForm::Input => 1,
            GroupedForm::Weight => 2,
        };
        let (experts, n, k) = (g.groups() as i32, g.n as i32, g.k as i32);
        let (stride, acc) = (stride as i64, i32::from(g.accumulate));
        let name = match acc_bits {
            None => "grouped_gemm_forms_f32",
            Some(_) => "grouped_gemm_promoted_f32",
        };
        let cfg = LaunchConfig {
            // The promoted kernel's slices and accumulators (cu/gemm.cu).
            shared_mem_bytes: if acc_bits.is_some() { 99_328 } else { 0 },
            ..tile_grid(m_max, n_cols, (128, 128), g.groups())
        };
        let mut l = self.k(name)?;
        l.arg(&a)
            .arg(&b)
            .arg(&c)
            .arg(offsets.p())
            .arg(&experts)
            .arg(&form)
            .arg(&n)
            .arg(&k)
            .arg(&stride)
            .arg(&acc);
        if let Some(bits) = &acc_bits {
            l.arg(bits);
        }
        go(name, l, cfg)
    }

    /// Where an operand at `src` (`n` values) is quantized, and that place's address: in place
    /// when it is a device copy (no new buffer), into a new device buffer when it is the
    /// caller's own memory.
    fn quantized_dst(
        &self,
        what: &str,
        src: &Buf<f32>,
        n: usize,
    ) -> Result<(Option<Buf<f32>>, u64)> {
        if src.is_copy() {
            Ok((None, *src.p()))
        } else {
            let q = self.dev.scratch::<f32>(what, n)?;
            let at = *q.p();
            Ok((Some(q), at))
        }
    }

    /// The `n` values at `at` set to `v` on the device.
    fn fill_at(&self, at: u64, n: usize, v: f32) -> Result<()> {
        let n64 = n as i64;
        let mut b = self.k("fill_f32")?;
        b.arg(&at).arg(&n64).arg(&v);
        go("fill_f32", b, elementwise(n))
    }

    /// The BF16 bit patterns of the `n` values at `x` (round to nearest even).
    fn to_bf16(&self, x: u64, n: usize) -> Result<CudaSlice<u16>> {
        let y = self.dev.zeros::<u16>("BF16 operand", n)?;
        self.to_bf16_into(x, self.dev.addr(&y), n)?;
        Ok(y)
    }

    /// `y[i]` = the BF16 bit pattern of `x[i]`, `i < n`.
    fn to_bf16_into(&self, x: u64, y: u64, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let n64 = n as i64;
        let mut b = self.k("to_bf16_f32")?;
        b.arg(&x).arg(&y).arg(&n64);
        go("to_bf16_f32", b, elementwise(n))
    }

    /// Each group's rows `offsets[e] .. offsets[e + 1]` of the `[rows, cols]` matrix at `src`
    /// fake-quantized to E4M3 with `tile` scales counted from the group's first row, into the
    /// same places at `dst` (which may be `src`); non-finite tiles are counted into `bad`.
    /// `g` gives the groups' row counts on the host (the grid's bound).
    fn fake_quantize_rows(
        &self,
        g: &Grouped<'_>,
        (src, dst): (u64, u64),
        offsets: &Buf<i32>,
        cols: usize,
        tile: (usize, usize),
        bad: &mut CudaSlice<u32>,
    ) -> Result<()> {
        let max_rows = g.most_rows();
        if cols == 0 || max_rows == 0 {
            return Ok(());
        }
        let (groups, c, tr, tc) = (g.groups() as i32, cols as i32, tile.0 as i32, tile.1 as i32);
        let mut b = self.k("fp8_fake_quantize_rows_f32")?;
        b.arg(&src)
            .arg(&dst)
            .arg(offsets.p())
            .arg(&groups)
            .arg(&c)
            .arg(&tr)
            .arg(&tc)
            .arg(&mut *bad);
        go(
            "fp8_fake_quantize_rows_f32",
            b,
            quantize_cfg(max_rows, cols, tile, g.groups()),
        )
    }

    /// The weight blocks of the groups with rows (`blocks.rows × blocks.cols` each, as stored)
    /// fake-quantized to E4M3 with `tile` scales, each as a matrix of its own; non-finite tiles
    /// are counted into `bad`.
    fn fake_quantize_blocks(
        &self,
        g: &Grouped<'_>,
        blocks: Blocks,
        offsets: &Buf<i32>,
        tile: (usize, usize),
        bad: &mut CudaSlice<u32>,
    ) -> Result<()> {
        if blocks.rows == 0 || blocks.cols == 0 || g.groups() == 0 {
            return Ok(());
        }
        let (ss, ds) = (blocks.src_stride as i64, blocks.dst_stride as i64);
        let (groups, r, c) = (g.groups() as i32, blocks.rows as i32, blocks.cols as i32);
        let (tr, tc) = (tile.0 as i32, tile.1 as i32);
        let mut b = self.k("fp8_fake_quantize_blocks_f32")?;
        b.arg(&blocks.src)
            .arg(&ss)
            .arg(&blocks.dst)
            .arg(&ds)
            .arg(offsets.p())
            .arg(&groups)
            .arg(&r)
            .arg(&c)
            .arg(&tr)
            .arg(&tc)
            .arg(&mut *bad);
        let cfg = quantize_cfg(blocks.rows, blocks.cols, tile, g.groups());
        go("fp8_fake_quantize_blocks_f32", b, cfg)
    }

    /// Fake-quantizes the `rows × cols` matrix (as stored) at `src` to E4M3 with `tile`
    /// scales, into `dst` (which may be `src`); non-finite tiles are counted into `bad`.
    fn fake_quantize(
        &self,
        (src, dst): (u64, u64),
        (rows, cols): (usize, usize),
        tile: (usize, usize),
        bad: &mut CudaSlice<u32>,
    ) -> Result<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        // The kernel's blocks stride over tile rows past the grid's 65,535.
        let cfg = quantize_cfg(rows, cols, tile, 1);
        let (r, c, tr, tc) = (rows as i32, cols as i32, tile.0 as i32, tile.1 as i32);
        let mut b = self.k("fp8_fake_quantize_f32")?;
        b.arg(&src)
            .arg(&dst)
            .arg(&r)
            .arg(&c)
            .arg(&tr)
            .arg(&tc)
            .arg(&mut *bad);
        go("fp8_fake_quantize_f32", b, cfg)
    }

    /// The scale layouts op(A) `[m, k]` and op(B)ᵀ `[n, k]` are quantized in (cuBLASLt's),
    /// when this GEMM goes to the tensor cores by `mode`: [`Fp8Gemm::Cublaslt`] or [`Fp8Gemm::Mma`], FP8
    /// in tiles of 1 × 128 or 128 × 128 along (outer, K) — for cuBLASLt not both blocks;
    /// `None`: the model (or BF16) computes it.
    fn fp8_scales(&self, mode: Fp8Gemm, p: MatMul, format: LowpGemm) -> Option<(Scales, Scales)> {
        let LowpGemm::Fp8 { a_tile, b_tile } = format else {
            return None;
        };
        if mode == Fp8Gemm::Model {
            return None;
        }
        // A is stored [m, k] (K along its columns) unless transposed; B [k, n] (K along its
        // rows) unless transposed.
        let a = lt_mode(a_tile, p.ta)?;
        let b = lt_mode(b_tile, !p.tb)?;
        let both_blocks = (a, b) == (Scales::Blk128, Scales::Blk128);
        (mode == Fp8Gemm::Mma || !both_blocks).then_some((a, b))
    }

    /// `C (+)= op(A)·op(B)` by cuBLASLt, the operands and C at their addresses: each operand
    /// quantized exactly (E4M3 codes, K contiguous, its scales as cuBLASLt lays them out:
    /// `fp8_quantize_lt_f32`; the values are the model path's fake-quantized ones bit for bit),
    /// padded with zeros to the shape cuBLASLt takes ([`crate::fp8::fits`]; rows to 16, more
    /// than the 4 it needs, so that the experts' varying row counts make few distinct shapes;
    /// columns and K to 16; zero codes add nothing), then one block-scaled matmul, into C
    /// directly when C is device memory (`c_device`), 256-byte aligned, unpadded and not
    /// accumulated into, else into a buffer added to C (cuBLASLt writing the host's pageable
    /// memory is not something its documentation promises). Tiles with a non-finite amax (NaN
    /// codes, as the model's NaN) are counted into `bad`.
    fn lt_matmul(
        &self,
        p: MatMul,
        (a, b, c, c_device): (u64, u64, u64, bool),
        (a_mode, b_mode): (Scales, Scales),
        bad: &mut CudaSlice<u32>,
    ) -> Result<()> {
        if let Some(done) = self.empty_gemm(p, c) {
            return done;
        }
        let (m, n, k) = (
            p.m.next_multiple_of(16),
            p.n.next_multiple_of(16),
            p.k.next_multiple_of(16),
        );
        debug_assert!(crate::fp8::fits(m, n, k));
        let x = self.quantize_lt(a, p.a_stored(), p.ta, (m, k), a_mode, bad)?;
        let w = self.quantize_lt(b, p.b_stored(), !p.tb, (n, k), b_mode, bad)?;
        // Directly into C only where no kernel choice can depend on it: 256-byte aligned, as
        // cuBLASLt assumes by default (it is told the real alignments, but whether a
        // block-scaled kernel exists for less is not documented).
        let direct = c_device && !p.accumulate && c % 256 == 0 && (m, n) == (p.m, p.n);
        let part = if direct {
            None
        } else {
            Some(self.dev.scratch::<f32>("FP8 GEMM product", m * n)?)
        };
        let y = part.as_ref().map_or(c, |b| *b.p());
        {
            let mut lt = self.lt.lock().unwrap_or_else(|e| e.into_inner());
            if lt.is_none() {
                *lt = Some(Lt::new(&self.dev)?);
            }
            let lt = lt.as_mut().expect("opened");
            lt.matmul(&self.dev, (m, n, k), x.operand(), w.operand(), y)?;
        }
        self.fast_calls[LT].fetch_add(1, Ordering::Relaxed);
        if let Some(part) = &part {
            if !p.accumulate {
                self.fill_at(c, p.m * p.n, 0.0)?;
            }
            // C += the product's unpadded part, exactly.
            let (ldc, ldp, rows, cols) = (p.n as i64, n as i64, p.m as i32, p.n as i32);
            let mut b = self.k("add_block_f32")?;
            b.arg(&c)
                .arg(&ldc)
                .arg(part.p())
                .arg(&ldp)
                .arg(&rows)
                .arg(&cols);
            let cfg = LaunchConfig {
                grid_dim: (p.n.div_ceil(256) as u32, p.m.min(65_535) as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            go("add_block_f32", b, cfg)?;
        }
        Ok(())
    }

    /// A GEMM with nothing to multiply, done: no output (m or n zero), or K = 0 (C zeroed
    /// unless accumulated into); `None` for any other.
    fn empty_gemm(&self, p: MatMul, c: u64) -> Option<Result<()>> {
        match (p.m * p.n, p.k, p.accumulate) {
            (0, _, _) | (_, 0, true) => Some(Ok(())),
            (_, 0, false) => Some(self.fill_at(c, p.m * p.n, 0.0)),
            _ => None,
        }
    }

    /// The `rows × cols` matrix (as stored) at `src`, contracted along its rows (`k_on_rows`)
    /// or columns, as cuBLASLt's operand padded to `(outer, k)` (at least op's shape): E4M3
    /// codes `[outer, k]` (zeros past op's) and their `mode` scales.
    fn quantize_lt(
        &self,
        src: u64,
        (rows, cols): (usize, usize),
        k_on_rows: bool,
        (outer, k): (usize, usize),
        mode: Scales,
        bad: &mut CudaSlice<u32>,
    ) -> Result<LtOperand> {
        let (op_outer, op_k) = if k_on_rows {
            (cols, rows)
        } else {
            (rows, cols)
        };
        debug_assert!(op_outer <= outer && op_k <= k);
        // Zeroed: the padding's codes and scales are zeros.
        let codes = self.dev.scratch::<u8>("FP8 codes", outer * k)?;
        let scales = self
            .dev
            .scratch::<f32>("FP8 scales", mode.count(outer, k))?;
        let lt = LtLaunch {
            src,
            rows,
            cols,
            k_on_rows,
            mode,
            codes: (*codes.p(), k),
            scales: (*scales.p(), mode.strides(outer, k)),
            // One matrix, no groups.
            groups: (0, 1),
            grid: (op_outer, op_k),
        };
        self.launch_quantize_lt(lt, bad)?;
        Ok(LtOperand {
            codes,
            scales,
            mode,
        })
    }

    /// One launch of `fp8_quantize_lt_f32` (quant.cu) as `q` describes it.
    fn launch_quantize_lt(&self, q: LtLaunch, bad: &mut CudaSlice<u32>) -> Result<()> {
        let (r, c, kr, to) = (
            q.rows as i32,
            q.cols as i32,
            q.k_on_rows as i32,
            q.mode.tile_outer() as i32,
        );
        let (ld, so, sk) = (q.codes.1 as i64, q.scales.1.0 as i64, q.scales.1.1 as i64);
        let mut b = self.k("fp8_quantize_lt_f32")?;
        b.arg(&q.src)
            .arg(&r)
            .arg(&c)
            .arg(&kr)
            .arg(&to)
            .arg(&q.codes.0)
            .arg(&ld)
            .arg(&q.scales.0)
            .arg(&so)
            .arg(&sk)
            .arg(&mut *bad)
            .arg(&q.groups.0);
        // Along the rows a block takes a panel of outer indices (32 tiles of 1 × 128, or one
        // block of 128 × 128: quant.cu).
        let per_block = match (q.k_on_rows, q.mode) {
            (true, Scales::Vec128) => 32,
            _ => q.mode.tile_outer(),
        };
        let cfg = quantize_cfg(q.grid.0, q.grid.1, (per_block, 128), q.groups.1);
        go("fp8_quantize_lt_f32", b, cfg)
    }

    fn try_matmul_lowp(
        &self,
        p: MatMul,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        format: LowpGemm,
    ) -> Result<u64> {
        p.check(a, b, c);
        if self.empty_product(p, c) {
            return Ok(0);
        }
        let da = self.dev.input("low-precision GEMM A", a)?;
        let db = self.dev.input("low-precision GEMM B", b)?;
        // Partial sums are added into C: zeros unless it accumulates.
        let dc = if p.accumulate {
            self.dev.inout("low-precision GEMM C", c)?
        } else {
            self.dev.output("low-precision GEMM C", c)?
        };
        let (lda, ldb) = (p.a_stored().1, p.b_stored().1);
        let mut bad = 0u64;
        let mode = self.fp8.dense();
        match (format, self.fp8_scales(mode, p, format)) {
            (LowpGemm::Bf16, _) => {
                // The operands as BF16 on the tensor cores (products exact, FP32 sums).
                let a16 = self.to_bf16(*da.p(), a.len())?;
                let b16 = self.to_bf16(*db.p(), b.len())?;
                let beta = if p.accumulate { 1.0 } else { 0.0 };
                let (a16, b16) = (self.dev.addr(&a16), self.dev.addr(&b16));
                self.dev.gemm_bf16(p, a16, lda, b16, ldb, *dc.p(), beta)?;
            }
            (LowpGemm::Fp8 { .. }, Some(modes)) => {
                let mut dbad = self.bad_tiles()?;
                if mode == Fp8Gemm::Mma {
                    self.mma_matmul(p, (*da.p(), *db.p(), *dc.p()), modes, &mut dbad)?;
                } else {
                    let c = (*da.p(), *db.p(), *dc.p(), dc.is_copy());
                    self.lt_matmul(p, c, modes, &mut dbad)?;
                }
                bad = self.count_bad(dbad)?;
            }
            (LowpGemm::Fp8 { a_tile, b_tile }, None) => {
                // Quantized in place on device copies; on host memory into device buffers,
                // never the caller's slices.
                let mut dbad = self.bad_tiles()?;
                // (`_qa`, `_qb`: the new buffers, if any, held until the GEMM is done.)
                let (_qa, qa) = self.quantized_dst("FP8 GEMM A", &da, a.len())?;
                let (_qb, qb) = self.quantized_dst("FP8 GEMM B", &db, b.len())?;
                self.fake_quantize((*da.p(), qa), p.a_stored(), a_tile, &mut dbad)?;
                self.fake_quantize((*db.p(), qb), p.b_stored(), b_tile, &mut dbad)?;
                let at = |base: u64, n: usize| base + (n * std::mem::size_of::<f32>()) as u64;
                // Per chunk of K: the product into `part`, truncated to the tensor-core
                // accumulator's mantissa and promoted (added) into C in FP32.
                let part = self.dev.zeros::<f32>("FP8 partial sums", c.len())?;
                let mn = (p.m * p.n) as i64;
                let bits = FP8_ACC_MANTISSA_BITS as i32;
                for k0 in (0..p.k).step_by(FP8_PROMOTE_EVERY) {
                    let kc = FP8_PROMOTE_EVERY.min(p.k - k0);
                    let a_off = if p.ta { k0 * p.m } else { k0 };
                    let b_off = if p.tb { k0 } else { k0 * p.n };
                    let chunk = MatMul {
                        k: kc,
                        accumulate: false,
                        ..p
                    };
                    let pa = self.dev.addr(&part);
                    self.dev
                        .sgemm(chunk, at(qa, a_off), lda, at(qb, b_off), ldb, pa, 0.0)?;
                    {
                        let mut b = self.k("promote_truncated_f32")?;
                        b.arg(dc.p()).arg(&part).arg(&mn).arg(&bits);
                        go("promote_truncated_f32", b, elementwise(c.len()))?;
                    }
                }
                bad = self.count_bad(dbad)?;
            }
        }
        self.dev.finish(&dc, c)?;
        Ok(bad)
    }
}

/// The cuBLASLt scale layout of an operand quantized in `tile`s of its stored form, contracted
/// along its stored rows (`k_on_rows`) or columns: 1 × 128 or 128 × 128 along (outer, K).
fn lt_mode(tile: (usize, usize), k_on_rows: bool) -> Option<Scales> {
    let (outer, k) = if k_on_rows { (tile.1, tile.0) } else { tile };
    match (outer, k) {
        (1, 128) => Some(Scales::Vec128),
        (128, 128) => Some(Scales::Blk128),
        _ => None,
    }
}

/// Launches a kernel whose arguments have been pushed.
pub(crate) fn go(name: &str, mut b: LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: each caller pushes the kernel's arguments in its signature's order and types (see
    // cu/*.cu), with device buffers of the sizes the kernel indexes for this launch shape.
    unsafe { b.launch(cfg) }
        .map(|_| ())
        .map_err(driver(format!("launch {name}")))
}

/// One launch of `fp8_quantize_lt_f32`: the matrix of `rows × cols` floats at `src` (`rows`
/// ignored with a table of groups), contracted along its rows (`k_on_rows`) or columns, in
/// tiles of `mode`; codes at `codes.0` with rows of `codes.1` bytes, scales at `scales.0` with
/// tile `(to, tk)` at `to · scales.1.0 + tk · scales.1.1`; `groups`: the groups' table's
/// address (0: one matrix) and their number; `grid`: (outer, K) of the largest.
#[derive(Debug, Clone, Copy)]
struct LtLaunch {
    src: u64,
    rows: usize,
    cols: usize,
    k_on_rows: bool,
    mode: Scales,
    codes: (u64, usize),
    scales: (u64, (usize, usize)),
    groups: (u64, usize),
    grid: (usize, usize),
}

/// An operand quantized for cuBLASLt: its codes and scales (held until the matmul has run).
struct LtOperand {
    codes: Buf<u8>,
    scales: Buf<f32>,
    mode: Scales,
}

impl LtOperand {
    fn operand(&self) -> Fp8Operand {
        Fp8Operand {
            codes: *self.codes.p(),
            scales: *self.scales.p(),
            mode: self.mode,
        }
    }
}

/// Weight blocks to quantize: `rows × cols` each, group `e`'s at `src + e · src_stride`
/// elements, quantized to `dst + e · dst_stride`.
#[derive(Debug, Clone, Copy)]
struct Blocks {
    src: u64,
    src_stride: usize,
    dst: u64,
    dst_stride: usize,
    rows: usize,
    cols: usize,
}

/// A block of 256 threads per `tile` of a group's `rows × cols` matrix at most, a grid layer
/// per group: the grid of the grouped GEMMs (tiles of 128 × 128 of C) and quantizers.
pub(crate) fn tile_grid(
    rows: usize,
    cols: usize,
    tile: (usize, usize),
    groups: usize,
) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            cols.div_ceil(tile.1) as u32,
            rows.div_ceil(tile.0) as u32,
            groups as u32,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The grid of the grouped quantization kernels (quant.cu): [`tile_grid`] with at most 65,535
/// rows of blocks, over which the kernels stride.
fn quantize_cfg(rows: usize, cols: usize, tile: (usize, usize), groups: usize) -> LaunchConfig {
    tile_grid(rows.min(65_535 * tile.0), cols, tile, groups)
}

/// The calling thread's id (deferred scopes are per thread).
fn thread_id() -> ThreadId {
    std::thread::current().id()
}

/// Unwraps a backend result: the seam has no error channel, so a device failure ends the run
/// with the backend's message.
fn ok<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("CUDA backend: {e}"))
}

/// The kernels index the table by id unchecked (they are not given the vocabulary): checked
/// here as the CPU kernels do.
fn check_ids(ids: &[u32], vocab: usize) {
    if let Some(&i) = ids.iter().find(|&&i| i as usize >= vocab) {
        panic!("token id {i} outside the embedding table of {vocab} rows");
    }
}

fn rows_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per token id (grid-stride past 65,535).
fn per_id(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.clamp(1, 65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per row, four rows per block.
fn warp_rows(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(4).max(1) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl Backend<f32> for Cuda {
    fn name(&self) -> &'static str {
        "cuda"
    }

    /// Copying, every call copies its slices both ways, so the model moves its rows on the
    /// host; on the host's own memory (HMM) or managed memory the device keeps what it
    /// touched, and the model's data movement and optimizer run here.
    fn moves_data(&self) -> bool {
        self.dev.memory != Memory::Copy
    }

    fn counters(&self) -> Option<DeviceCounters> {
        Some(crate::device::counters())
    }

    fn begin_deferred(&self) -> bool {
        self.dev.begin_deferred()
    }

    fn settle(&self) -> u64 {
        ok((|| {
            if !self.dev.end_deferred() {
                return Ok(0);
            }
            // The scope's count of non-finite FP8 tiles, if a GEMM made one: its copy to the
            // host is the scope's wait.
            match self
                .scope_bad
                .lock()
                .expect("bad-tile counters")
                .remove(&thread_id())
            {
                Some(c) => self.read_bad(&c),
                None => self.dev.sync().map(|()| 0),
            }
        })())
    }

    fn matmul(&self, p: MatMul, a: &[f32], b: &[f32], c: &mut [f32]) {
        ok(self.try_matmul(p, a, b, c))
    }

    fn matmul_lowp(&self, p: MatMul, a: &[f32], b: &[f32], c: &mut [f32], format: LowpGemm) -> u64 {
        ok(self.try_matmul_lowp(p, a, b, c, format))
    }

    fn grouped_matmul(
        &self,
        g: Grouped<'_>,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        format: Option<LowpGemm>,
    ) -> u64 {
        ok(self.try_grouped_matmul(g, a, b, c, format))
    }

    fn rmsnorm_fwd(&self, x: &[f32], w: &[f32], eps: f64, y: &mut [f32], rstd: &mut [f32]) {
        ok((|| {
            let (d, rows) = (w.len(), rstd.len());
            let dx = self.dev.input("rmsnorm x", x)?;
            let dw = self.dev.input("rmsnorm w", w)?;
            let dy = self.dev.output("rmsnorm y", y)?;
            let dr = self.dev.output("rmsnorm rstd", rstd)?;
            let (e, r, dd) = (eps as f32, rows as i32, d as i32);
            {
                let mut b = self.k("rmsnorm_fwd_f32")?;
                b.arg(dx.p())
                    .arg(dw.p())
                    .arg(&e)
                    .arg(dy.p())
                    .arg(dr.p())
                    .arg(&r)
                    .arg(&dd);
                go("rmsnorm_fwd_f32", b, rows_cfg(rows))?;
            }
            self.dev.finish(&dy, y)?;
            self.dev.finish(&dr, rstd)
        })())
    }

    fn rmsnorm_bwd_input(
        &self,
        x: &[f32],
        w: &[f32],
        rstd: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        accumulate: bool,
    ) {
        ok((|| {
            let (d, rows) = (w.len(), rstd.len());
            let gx = self.dev.input("rmsnorm x", x)?;
            let gw = self.dev.input("rmsnorm w", w)?;
            let gr = self.dev.input("rmsnorm rstd", rstd)?;
            let gdy = self.dev.input("rmsnorm dy", dy)?;
            let gdx = if accumulate {
                self.dev.inout("rmsnorm dx", dx)?
            } else {
                self.dev.output("rmsnorm dx", dx)?
            };
            let (r, dd, acc) = (rows as i32, d as i32, accumulate as i32);
            {
                let mut b = self.k("rmsnorm_bwd_input_f32")?;
                b.arg(gx.p())
                    .arg(gw.p())
                    .arg(gr.p())
                    .arg(gdy.p())
                    .arg(gdx.p())
                    .arg(&r)
                    .arg(&dd)
                    .arg(&acc);
                go("rmsnorm_bwd_input_f32", b, rows_cfg(rows))?;
            }
            self.dev.finish(&gdx, dx)
        })())
    }

    fn rmsnorm_bwd_weight(&self, x: &[f32], rstd: &[f32], dy: &[f32], dw: &mut [f32]) {
        ok((|| {
            let (d, rows) = (dw.len(), rstd.len());
            let gx = self.dev.input("rmsnorm x", x)?;
            let gr = self.dev.input("rmsnorm rstd", rstd)?;
            let gdy = self.dev.input("rmsnorm dy", dy)?;
            let gdw = self.dev.inout("rmsnorm dw", dw)?;
            let (r, dd) = (rows as i32, d as i32);
            let cfg = LaunchConfig {
                grid_dim: (d.div_ceil(256).max(1) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            {
                let mut b = self.k("rmsnorm_bwd_weight_f32")?;
                b.arg(gx.p())
                    .arg(gr.p())
                    .arg(gdy.p())
                    .arg(gdw.p())
                    .arg(&r)
                    .arg(&dd);
                go("rmsnorm_bwd_weight_f32", b, cfg)?;
            }
            self.dev.finish(&gdw, dw)
        })())
    }

    fn rope_fwd(&self, t: &RopeTable<f32>, x: &mut [f32], r: RopeRows) {
        ok(self.rope("rope_fwd_f32", t, x, r))
    }

    fn rope_bwd(&self, t: &RopeTable<f32>, dx: &mut [f32], r: RopeRows) {
        ok(self.rope("rope_bwd_f32", t, dx, r))
    }

    fn swiglu_fwd(&self, g: &[f32], u: &[f32], h: &mut [f32]) {
        ok((|| {
            let n = h.len();
            let (gg, gu) = (
                self.dev.input("swiglu g", g)?,
                self.dev.input("swiglu u", u)?,
            );
            let gh = self.dev.output("swiglu h", h)?;
            let n64 = n as i64;
            {
                let mut b = self.k("swiglu_fwd_f32")?;
                b.arg(gg.p()).arg(gu.p()).arg(gh.p()).arg(&n64);
                go("swiglu_fwd_f32", b, elementwise(n))?;
            }
            self.dev.finish(&gh, h)
        })())
    }

    fn swiglu_bwd(&self, g: &[f32], u: &[f32], dh: &[f32], dg: &mut [f32], du: &mut [f32]) {
        ok((|| {
            let n = dh.len();
            let gg = self.dev.input("swiglu g", g)?;
            let gu = self.dev.input("swiglu u", u)?;
            let gdh = self.dev.input("swiglu dh", dh)?;
            let gdg = self.dev.output("swiglu dg", dg)?;
            let gdu = self.dev.output("swiglu du", du)?;
            let n64 = n as i64;
            {
                let mut b = self.k("swiglu_bwd_f32")?;
                b.arg(gg.p())
                    .arg(gu.p())
                    .arg(gdh.p())
                    .arg(gdg.p())
                    .arg(gdu.p())
                    .arg(&n64);
                go("swiglu_bwd_f32", b, elementwise(n))?;
            }
            self.dev.finish(&gdg, dg)?;
            self.dev.finish(&gdu, du)
        })())
    }

    fn attention_fwd(
        &self,
        s: AttnShape,
        starts: Option<KeyStarts<'_>>,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &mut [f32],
        lse: &mut [f32],
    ) {
        ok(crate::attention::forward(self, s, starts, q, k, v, o, lse))
    }

    fn attention_bwd(
        &self,
        s: AttnShape,
        starts: Option<KeyStarts<'_>>,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &[f32],
        lse: &[f32],
        d_o: &[f32],
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
    ) {
        ok(crate::attention::backward(
            self, s, starts, q, k, v, o, lse, d_o, dq, dk, dv,
        ))
    }

    fn cross_entropy_fwd(
        &self,
        logits: &[f32],
        targets: &[u32],
        vocab: usize,
        losses: &mut [f32],
        lse: &mut [f32],
    ) {
        tokenmill_kernels::cpu::loss::check_targets(losses.len(), vocab, targets);
        ok((|| {
            let rows = losses.len();
            let gl = self.dev.input("logits", logits)?;
            let gt = self.dev.input("targets", targets)?;
            let gloss = self.dev.output("losses", losses)?;
            let glse = self.dev.output("lse", lse)?;
            let (v, r) = (vocab as i32, rows as i32);
            {
                let mut b = self.k("cross_entropy_fwd_f32")?;
                b.arg(gl.p())
                    .arg(gt.p())
                    .arg(&v)
                    .arg(gloss.p())
                    .arg(glse.p())
                    .arg(&r);
                go("cross_entropy_fwd_f32", b, rows_cfg(rows))?;
            }
            self.dev.finish(&gloss, losses)?;
            self.dev.finish(&glse, lse)
        })())
    }

    fn cross_entropy_bwd(
        &self,
        logits: &mut [f32],
        targets: &[u32],
        lse: &[f32],
        g: &[f32],
        vocab: usize,
    ) {
        tokenmill_kernels::cpu::loss::check_targets(lse.len(), vocab, targets);
        ok((|| {
            let rows = lse.len();
            let gl = self.dev.inout("logits", logits)?;
            let gt = self.dev.input("targets", targets)?;
            let glse = self.dev.input("lse", lse)?;
            let gg = self.dev.input("loss gradients", g)?;
            let (v, r) = (vocab as i32, rows as i32);
            {
                let mut b = self.k("cross_entropy_bwd_f32")?;
                b.arg(gl.p())
                    .arg(gt.p())
                    .arg(glse.p())
                    .arg(gg.p())
                    .arg(&v)
                    .arg(&r);
                go("cross_entropy_bwd_f32", b, rows_cfg(rows))?;
            }
            self.dev.finish(&gl, logits)
        })())
    }

    fn cross_entropy_fused(
        &self,
        logits: &mut [f32],
        targets: &[u32],
        g: &[f32],
        vocab: usize,
        losses: &mut [f32],
        lse: &mut [f32],
    ) {
        tokenmill_kernels::cpu::loss::check_targets(losses.len(), vocab, targets);
        ok((|| {
            let rows = losses.len();
            let gl = self.dev.inout("logits", logits)?;
            let gt = self.dev.input("targets", targets)?;
            let gg = self.dev.input("loss gradients", g)?;
            let gloss = self.dev.output("losses", losses)?;
            let glse = self.dev.output("lse", lse)?;
            let (v, r) = (vocab as i32, rows as i32);
            {
                let mut b = self.k("cross_entropy_fused_f32")?;
                b.arg(gl.p())
                    .arg(gt.p())
                    .arg(gg.p())
                    .arg(&v)
                    .arg(gloss.p())
                    .arg(glse.p())
                    .arg(&r);
                go("cross_entropy_fused_f32", b, rows_cfg(rows))?;
            }
            self.dev.finish(&gl, logits)?;
            self.dev.finish(&gloss, losses)?;
            self.dev.finish(&glse, lse)
        })())
    }

    fn embedding_fwd(&self, table: &[f32], d: usize, ids: &[u32], y: &mut [f32]) {
        check_ids(ids, table.len() / d.max(1));
        ok((|| {
            let gt = self.dev.input("embedding table", table)?;
            let gi = self.dev.input("token ids", ids)?;
            let gy = self.dev.output("embeddings", y)?;
            let (dd, n) = (d as i32, ids.len() as i64);
            {
                let mut b = self.k("embedding_fwd_f32")?;
                b.arg(gt.p()).arg(&dd).arg(gi.p()).arg(gy.p()).arg(&n);
                go("embedding_fwd_f32", b, per_id(ids.len()))?;
            }
            self.dev.finish(&gy, y)
        })())
    }

    fn embedding_bwd(&self, dy: &[f32], d: usize, ids: &[u32], dtable: &mut [f32]) {
        check_ids(ids, dtable.len() / d.max(1));
        ok((|| {
            let gdy = self.dev.input("embedding dy", dy)?;
            let gi = self.dev.input("token ids", ids)?;
            let gt = self.dev.inout("embedding gradient", dtable)?;
            let (dd, n) = (d as i32, ids.len() as i64);
            {
                let mut b = self.k("embedding_bwd_f32")?;
                b.arg(gdy.p()).arg(&dd).arg(gi.p()).arg(gt.p()).arg(&n);
                go("embedding_bwd_f32", b, per_id(ids.len()))?;
            }
            self.dev.finish(&gt, dtable)
        })())
    }

    fn route(
        &self,
        r: Route,
        logits: &[f32],
        bias: &[f32],
        scores: &mut [f32],
        idx: &mut [u32],
        gates: &mut [f32],
    ) {
        let n = r.tokens(logits, bias, scores, idx, gates);
        if n == 0 {
            return;
        }
        // Four warps per block, each with 4 arrays of `experts` 4-byte values in shared
        // memory (cu/topk.cu): 48 KiB, the default limit, holds 768 experts.
        assert!(
            r.experts <= 768,
            "route: {} experts need more than 48 KiB of shared memory per block",
            r.experts
        );
        ok((|| {
            let gl = self.dev.input("router logits", logits)?;
            let gb = self.dev.input("router bias", bias)?;
            let gs = self.dev.output("router scores", scores)?;
            // The kernel writes `int`s; K ≤ experts, so each is an expert index (-1 is written only
            // past them) and its bits are the `u32`'s.
            let gi = self.dev.output("router experts", idx)?;
            let gg = self.dev.output("router gates", gates)?;
            let (t, e, g, tg, k) = (
                n as i32,
                r.experts as i32,
                r.groups as i32,
                r.topk_groups as i32,
                r.k as i32,
            );
            let (scale, norm) = (r.scale as f32, i32::from(r.norm));
            {
                let mut b = self.k("moe_route_f32")?;
                b.arg(gl.p())
                    .arg(gb.p())
                    .arg(&t)
                    .arg(&e)
                    .arg(&g)
                    .arg(&tg)
                    .arg(&k)
                    .arg(&scale)
                    .arg(&norm)
                    .arg(gi.p())
                    .arg(gg.p())
                    .arg(gs.p());
                let cfg = LaunchConfig {
                    shared_mem_bytes: (4 * 16 * r.experts) as u32,
                    ..warp_rows(n)
                };
                go("moe_route_f32", b, cfg)?;
            }
            self.dev.finish(&gi, idx)?;
            self.dev.finish(&gs, scores)?;
            self.dev.finish(&gg, gates)
        })())
    }

    fn route_bwd(
        &self,
        r: Route,
        scores: &[f32],
        idx: &[u32],
        dgates: &[f32],
        balance: Option<Balance<'_>>,
        ds: &mut [f32],
    ) {
        // The CPU's checks first: the kernel indexes with the experts unchecked.
        let n = check_bwd(r, scores, idx, dgates, balance, ds);
        if n == 0 {
            return;
        }
        ok((|| {
            let gs = self.dev.input("router scores", scores)?;
            let gi = self.dev.input("router experts", idx)?;
            let gg = self.dev.input("gate gradients", dgates)?;
            let gc = balance
                .map(|b| self.dev.input("balance coefficients", b.coef))
                .transpose()?;
            let gd = self.dev.output("router logit gradients", ds)?;
            let (tokens, e, k) = (n as i64, r.experts as i32, r.k as i32);
            let (seq, denom) =
                balance.map_or((1, 1.0), |b| (b.seq as i32, (b.seq * b.sequences) as f64));
            let (scale, norm) = (r.scale as f32, i32::from(r.norm));
            // A null device pointer: no balance loss.
            let null: u64 = 0;
            {
                let mut b = self.k("moe_route_bwd_f32")?;
                b.arg(gs.p()).arg(gi.p()).arg(gg.p());
                match &gc {
                    Some(c) => b.arg(c.p()),
                    None => b.arg(&null),
                };
                b.arg(&tokens)
                    .arg(&e)
                    .arg(&k)
                    .arg(&seq)
                    .arg(&denom)
                    .arg(&scale)
                    .arg(&norm)
                    .arg(gd.p());
                go("moe_route_bwd_f32", b, warp_rows(n))?;
            }
            self.dev.finish(&gd, ds)
        })())
    }

    fn fake_quantize_fp8(&self, x: &mut [f32], cols: usize, tile: (usize, usize)) -> u64 {
        let rows = x.len() / cols.max(1);
        assert_eq!(
            x.len(),
            rows * cols,
            "fake quantization: not [rows, {cols}]"
        );
        ok((|| {
            let gx = self.dev.inout("FP8 operand", x)?;
            let mut bad = self.bad_tiles()?;
            self.fake_quantize((*gx.p(), *gx.p()), (rows, cols), tile, &mut bad)?;
            let n = self.count_bad(bad)?;
            self.dev.finish(&gx, x)?;
            Ok(n)
        })())
    }

    fn round_bf16(&self, x: &mut [f32]) {
        if x.is_empty() {
            return;
        }
        ok((|| {
            let gx = self.dev.inout("BF16 rounding", x)?;
            let n = x.len() as i64;
            {
                let mut b = self.k("round_bf16_f32")?;
                b.arg(gx.p()).arg(&n);
                go("round_bf16_f32", b, elementwise(x.len()))?;
            }
            self.dev.finish(&gx, x)
        })())
    }

    fn copy(&self, c: Strided, src: &[f32], dst: &mut [f32]) {
        c.check(src.len(), dst.len());
        if c.count() == 0 {
            return;
        }
        ok((|| {
            let gs = self.dev.input("copy source", src)?;
            // What the copy does not overwrite must come back unchanged.
            let gd = if c.covers(dst.len()) {
                self.dev.output("copy destination", dst)?
            } else {
                self.dev.inout("copy destination", dst)?
            };
            let [n, st, dt] = [c.dims, c.src, c.dst].map(|a| a.map(|v| v as i64));
            let (src_at, dst_at, acc) = (c.src_at as i64, c.dst_at as i64, i32::from(c.accumulate));
            {
                let mut b = self.k("strided_copy_f32")?;
                b.arg(gs.p()).arg(gd.p());
                for v in &n {
                    b.arg(v);
                }
                for v in &st {
                    b.arg(v);
                }
                b.arg(&src_at);
                for v in &dt {
                    b.arg(v);
                }
                b.arg(&dst_at).arg(&acc);
                go("strided_copy_f32", b, elementwise(c.written()))?;
            }
            self.dev.finish(&gd, dst)
        })())
    }

    fn gather_rows(
        &self,
        src: &[f32],
        d: usize,
        rows: &[u32],
        scale: Option<&[f32]>,
        dst: &mut [f32],
    ) {
        self.rows("gather_rows_f32", src, d, rows, scale, dst, false)
    }

    fn scatter_add_rows(
        &self,
        src: &[f32],
        d: usize,
        rows: &[u32],
        scale: Option<&[f32]>,
        dst: &mut [f32],
    ) {
        self.rows("scatter_add_rows_f32", src, d, rows, scale, dst, true)
    }

    fn dot_rows(&self, table: &[f32], d: usize, rows: &[u32], src: &[f32], out: &mut [f32]) {
        check_rows(table, d, rows, None, src);
        assert_eq!(out.len(), rows.len(), "one dot per row");
        if rows.is_empty() {
            return;
        }
        ok((|| {
            let gt = self.dev.input("dot table", table)?;
            let gr = self.dev.input("row indices", rows)?;
            let gs = self.dev.input("dot rows", src)?;
            let go_ = self.dev.output("row dots", out)?;
            let (n, d32) = (rows.len() as i64, d as i32);
            {
                let mut b = self.k("dot_rows_f32")?;
                b.arg(gt.p())
                    .arg(gr.p())
                    .arg(gs.p())
                    .arg(go_.p())
                    .arg(&n)
                    .arg(&d32);
                go("dot_rows_f32", b, elementwise(rows.len()))?;
            }
            self.dev.finish(&go_, out)
        })())
    }

    fn adamw(
        &self,
        s: AdamStep,
        kind: &[u8],
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        check_adamw(kind, p, g, m, v);
        if p.is_empty() {
            return;
        }
        ok((|| {
            let gp = self.dev.inout("parameters", p)?;
            let gg = self.dev.input("gradients", g)?;
            let gm = self.dev.inout("first moments", m)?;
            let gv = self.dev.inout("second moments", v)?;
            let gk = self.dev.input("parameter kinds", kind)?;
            let (n, bf) = (p.len() as i64, i32::from(s.bf16_moments));
            {
                let mut b = self.k("adamw_f32")?;
                b.arg(gp.p())
                    .arg(gg.p())
                    .arg(gm.p())
                    .arg(gv.p())
                    .arg(gk.p())
                    .arg(&n)
                    .arg(&s.step_size)
                    .arg(&s.beta1)
                    .arg(&s.beta2)
                    .arg(&s.eps)
                    .arg(&s.bc2_sqrt)
                    .arg(&s.decay)
                    .arg(&s.grad_scale)
                    .arg(&bf);
                // Four elements a thread a pass (ADAMW_UNROLL in optim.cu).
                go("adamw_f32", b, elementwise_by(p.len(), 4))?;
            }
            self.dev.finish(&gp, p)?;
            self.dev.finish(&gm, m)?;
            self.dev.finish(&gv, v)
        })())
    }

    /// Copying: on the host (a round trip would cost more than the pass); on host memory (HMM)
    /// on the device, so the pages stay there.
    fn fill(&self, x: &mut [f32], v: f32) {
        if !self.moves_data() || x.is_empty() {
            x.fill(v);
            return;
        }
        ok(self.elementwise_in_place("fill_f32", "fill", x, v))
    }

    /// As [`Cuda::fill`]'s placement; `__fmul_rn`, the CPU's one rounding.
    fn scale(&self, x: &mut [f32], s: f32) {
        if !self.moves_data() || x.is_empty() {
            x.iter_mut().for_each(|v| *v *= s);
            return;
        }
        ok(self.elementwise_in_place("scale_f32", "scale", x, s))
    }

    fn sum_squares(&self, x: &[f32], segments: &[Range<usize>], out: &mut [f64]) {
        check_segments(x.len(), segments, out.len());
        // Grid x reaches 2³¹ − 1 blocks: one per segment.
        assert!(
            segments.len() < i32::MAX as usize,
            "sum of squares: {} segments, one block each",
            segments.len()
        );
        if segments.is_empty() {
            return;
        }
        ok((|| {
            let gx = self.dev.input("sum of squares input", x)?;
            let table: Vec<i64> = segments
                .iter()
                .flat_map(|r| [r.start as i64, r.end as i64])
                .collect();
            let gt = self.dev.input("segments", &table)?;
            let go_ = self.dev.output("sums of squares", out)?;
            {
                let mut b = self.k("sum_squares_f32")?;
                b.arg(gx.p()).arg(gt.p()).arg(go_.p());
                let cfg = LaunchConfig {
                    grid_dim: (segments.len() as u32, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                go("sum_squares_f32", b, cfg)?;
            }
            self.dev.finish(&go_, out)
        })())
    }
}

impl Cuda {
    /// A row gather (`scatter` false: `dst` `[rows, d]` out of `src`) or scatter-add (`src`
    /// `[rows, d]` into `dst`), checked as the CPU kernels check them (indices inside the table,
    /// a scatter's rows distinct) before the device indexes with them unchecked.
    #[allow(clippy::too_many_arguments)]
    fn rows(
        &self,
        name: &str,
        src: &[f32],
        d: usize,
        rows: &[u32],
        scale: Option<&[f32]>,
        dst: &mut [f32],
        scatter: bool,
    ) {
        {
            let (table, dense): (&[f32], &[f32]) = if scatter { (dst, src) } else { (src, dst) };
            check_rows(table, d, rows, scale, dense);
        }
        if scatter {
            check_distinct(rows, dst.len() / d.max(1));
        }
        if rows.is_empty() || d == 0 {
            return;
        }
        ok((|| {
            let gs = self.dev.input("rows source", src)?;
            let gr = self.dev.input("row indices", rows)?;
            let gscale = scale.map(|s| self.dev.input("row scales", s)).transpose()?;
            // A scatter adds into the destination; a gather overwrites all of it.
            let gd = if scatter {
                self.dev.inout("rows destination", dst)?
            } else {
                self.dev.output("rows destination", dst)?
            };
            let (n, d32) = (rows.len() as i64, d as i32);
            // A null device pointer: no scale.
            let null: u64 = 0;
            {
                let mut b = self.k(name)?;
                b.arg(gs.p()).arg(gr.p());
                match &gscale {
                    Some(g) => b.arg(g.p()),
                    None => b.arg(&null),
                };
                b.arg(gd.p()).arg(&n).arg(&d32);
                go(name, b, per_id(rows.len()))?;
            }
            self.dev.finish(&gd, dst)
        })())
    }

    fn rope(&self, name: &str, t: &RopeTable<f32>, x: &mut [f32], r: RopeRows) -> Result<()> {
        let gc = self.dev.input("rope cos", t.cos())?;
        let gs = self.dev.input("rope sin", t.sin())?;
        let gx = self.dev.inout("rope rows", x)?;
        let tokens = (x.len() / (r.heads * r.row_len).max(1)) as i64;
        let pairs = tokens as usize * r.heads * (t.d_rope / 2);
        let (dr, seq, heads, row_len, off) = (
            t.d_rope as i32,
            r.seq as i32,
            r.heads as i32,
            r.row_len as i32,
            r.offset as i32,
        );
        let cfg = LaunchConfig {
            grid_dim: (pairs.div_ceil(256).clamp(1, 65_535) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        {
            let mut b = self.k(name)?;
            b.arg(gc.p())
                .arg(gs.p())
                .arg(&dr)
                .arg(gx.p())
                .arg(&tokens)
                .arg(&seq)
                .arg(&heads)
                .arg(&row_len)
                .arg(&off);
            go(name, b, cfg)?;
        }
        self.dev.finish(&gx, x)
    }

    /// `name(float* x, long long n, float v)` over `x` in place.
    fn elementwise_in_place(&self, name: &str, what: &str, x: &mut [f32], v: f32) -> Result<()> {
        let gx = self.dev.inout(what, x)?;
        let n = x.len() as i64;
        {
            let mut b = self.k(name)?;
            b.arg(gx.p()).arg(&n).arg(&v);
            go(name, b, elementwise(x.len()))?;
        }
        self.dev.finish(&gx, x)
    }

    pub(crate) fn dev(&self) -> &Device {
        &self.dev
    }

    pub(crate) fn kernel(&self, name: &str) -> Result<LaunchArgs<'_>> {
        self.k(name)
    }
}
