//! [`Fp8Gemm::Mma`]: the FP8 GEMMs on the tensor cores by our own kernel — on Hopper
//! (compute capability 9.0, sm_90a) `cu/wgmma.cu`'s `fp8_wgmma_gemm_f32` (the warpgroup
//! instruction on operands copied asynchronously into shared memory), elsewhere from 8.9
//! `cu/mma.cu`'s `fp8_mma_gemm_f32` (`mma.sync`), both on the operands `fp8_quantize_lt_f32`
//! writes for cuBLASLt (E4M3 codes with K contiguous, one scale per 1 × 128 tile or 128 × 128
//! block) and computing the same. A dense GEMM is two quantizations and one launch; the
//! experts' grouped GEMM the same — every expert's operands quantized in one launch per
//! operand, every expert's product in one launch — where cuBLASLt takes a call per expert.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use tokenmill_kernels::backend::{Grouped, GroupedForm, LowpGemm, MatMul};
use tokenmill_kernels::cpu::grouped;

use super::{Cuda, Fp8Gemm, LtLaunch, go, tile_grid};
use crate::device::{Buf, Device};
use crate::error::{Error, Result};
use crate::fp8::Scales;

/// One operand of [`Cuda::mma_launch`] on the device: codes (rows of `ld` bytes), scales (tile
/// `(to, tk)` at `to · strides.0 + tk · strides.1`) and their tiles.
struct Codes {
    codes: Buf<u8>,
    ld: usize,
    scales: Buf<f32>,
    strides: (usize, usize),
    mode: Scales,
}

/// Where one group's operand lies: its source (elements into the source buffer, rows as
/// stored; 0 rows: not quantized), its codes (bytes into the codes) and its first scale.
#[derive(Debug, Clone, Copy, Default)]
struct Part {
    src: usize,
    rows: usize,
    codes: usize,
    scales: usize,
}

/// `TOKENMILL_CUDA_MMA=sync` (or `wgmma`, `tma` or `multicast`) picks the kernels of [`Fp8Gemm::Mma`] and of the
/// experts' BF16 GEMMs instead of the automatic choice ([`MmaKernel`]).
pub const MMA_VAR: &str = "TOKENMILL_CUDA_MMA";

/// Which of our tensor-core kernels computes [`Fp8Gemm::Mma`]'s GEMMs and the experts' BF16
/// GEMMs. Every form computes the same quantity; unless told otherwise
/// ([`Cuda::set_mma_kernel`], [`MMA_VAR`]) the backend takes the first of [`MmaKernel::ALL`]
/// that the device runs and whose probe passes: on compute capability 9.0 the TMA kernels,
/// then wgmma, else `mma.sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmaKernel {
    /// `cu/mma.cu` `fp8_mma_gemm_f32` and `bf16_mma_gemm_f32`: warp-level `mma.sync` m16n8k32
    /// E4M3 (compute capability 8.9 or later) or m16n8k16 BF16 (8.0 or later), fragments read
    /// from shared memory into registers.
    Sync,
    /// `cu/wgmma.cu` `fp8_wgmma_gemm_f32` and `bf16_wgmma_gemm_f32`: warpgroup-level
    /// `wgmma.mma_async` m64n128k32 E4M3 or m64n128k16 BF16 (sm_90a: Hopper), both operands
    /// read by the tensor cores from swizzled shared memory, loaded in five stages by
    /// `cp.async`.
    Wgmma,
    /// `cu/wgmma.cu` `fp8_tma_gemm_f32` and `bf16_tma_gemm_f32`: the same products with the
    /// operands copied by the TMA unit (from tensor maps, [`tensor_maps`]) in six stages, the
    /// block specialised by warpgroup — one producer, two consumers — and its stages handed
    /// over by memory barriers, as DeepSeek-V3's own kernels are built.
    Tma,
    /// `cu/wgmma.cu` `fp8_tma_mc_gemm_f32` and `bf16_tma_mc_gemm_f32`: [`MmaKernel::Tma`]'s
    /// kernels in thread block clusters of two, which take tiles of C in pairs side by side
    /// and multicast A's chunk to both (each block's TMA unit copies half of it), so that A is
    /// read from L2 once for two tiles, as DeepGEMM's kernels do.
    Multicast,
}

impl MmaKernel {
    /// Every kernel, in the automatic choice's order of preference: the TMA kernels without
    /// clusters first until a GPU has timed the multicast ones against them (the device
    /// check's part 2).
    pub const ALL: [MmaKernel; 4] = [
        MmaKernel::Tma,
        MmaKernel::Multicast,
        MmaKernel::Wgmma,
        MmaKernel::Sync,
    ];

    /// Whether its operands come by TMA from tensor maps, its blocks specialised by warpgroup
    /// and taking tiles in turn ([`TmaGrid`]): the TMA kernels, with clusters or without.
    pub fn tma(self) -> bool {
        matches!(self, MmaKernel::Tma | MmaKernel::Multicast)
    }

    /// The blocks of its thread block clusters (along x): 2 for [`MmaKernel::Multicast`], else 1.
    pub fn cluster(self) -> u32 {
        match self {
            MmaKernel::Multicast => 2,
            _ => 1,
        }
    }
}

/// How many blocks the TMA kernels ([`MmaKernel::Tma`]) are launched with; each block takes
/// the tiles of C in turn (cu/wgmma.cu's `tma_tile`), so any number computes the same product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmaGrid {
    /// One block per multiprocessor, each taking tiles until none is left, its producer copying
    /// the next tile's first chunks while its consumers store the last tile's C (as DeepGEMM's
    /// kernels run). The default.
    Persistent,
    /// One block per tile, as the other tensor-core kernels are launched.
    PerTile,
    /// At most this many blocks (at least one): the tests, to give each block several tiles
    /// on small shapes.
    Blocks(u32),
}

/// [`TmaGrid`] as a number: 0 persistent, `u32::MAX` per tile, else the blocks.
static TMA_GRID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// From now on, in this process, the TMA kernels are launched with `grid` (the device check's
/// timing runs both ways).
pub fn set_tma_grid(grid: TmaGrid) {
    let v = match grid {
        TmaGrid::Persistent => 0,
        TmaGrid::PerTile => u32::MAX,
        TmaGrid::Blocks(n) => n.clamp(1, u32::MAX - 1),
    };
    TMA_GRID.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// The grid [`set_tma_grid`] set last ([`TmaGrid::Persistent`] until then).
pub fn tma_grid() -> TmaGrid {
    match TMA_GRID.load(std::sync::atomic::Ordering::Relaxed) {
        0 => TmaGrid::Persistent,
        u32::MAX => TmaGrid::PerTile,
        n => TmaGrid::Blocks(n),
    }
}

/// `f` with the TMA kernels launched on `grid`, and the grid as it was after.
pub fn with_tma_grid<T>(grid: TmaGrid, f: impl FnOnce() -> T) -> T {
    let was = tma_grid();
    set_tma_grid(grid);
    let r = f();
    set_tma_grid(was);
    r
}

/// Set by [`avoid`]: one bit per kernel ([`MmaKernel::bit`]) the automatic choice leaves alone.
static AVOIDED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// From now on, in this process, the automatic choice ([`MmaKernel`]) leaves `kernel` alone:
/// for the device check when its probe of that kernel in a child process failed — a kernel
/// that faults leaves the CUDA context unusable for every later part.
pub fn avoid(kernel: MmaKernel) {
    AVOIDED.fetch_or(kernel.bit(), std::sync::atomic::Ordering::Relaxed);
}

impl MmaKernel {
    fn bit(self) -> u8 {
        1 << self as u8
    }

    /// The FP8 kernel's name in the module.
    pub fn name(self) -> &'static str {
        match self {
            MmaKernel::Sync => "fp8_mma_gemm_f32",
            MmaKernel::Wgmma => "fp8_wgmma_gemm_f32",
            MmaKernel::Tma => "fp8_tma_gemm_f32",
            MmaKernel::Multicast => "fp8_tma_mc_gemm_f32",
        }
    }

    /// The BF16 kernel's name in the module.
    pub fn bf16_name(self) -> &'static str {
        match self {
            MmaKernel::Sync => "bf16_mma_gemm_f32",
            MmaKernel::Wgmma => "bf16_wgmma_gemm_f32",
            MmaKernel::Tma => "bf16_tma_gemm_f32",
            MmaKernel::Multicast => "bf16_tma_mc_gemm_f32",
        }
    }

    /// The tensor-core instruction it is built on (and how its operands come in), as rows,
    /// logs and [`MMA_VAR`] name it.
    pub fn instruction(self) -> &'static str {
        match self {
            MmaKernel::Sync => "mma.sync",
            MmaKernel::Wgmma => "wgmma",
            MmaKernel::Tma => "wgmma+tma",
            MmaKernel::Multicast => "wgmma+multicast",
        }
    }

    /// Its dynamic shared memory per block: cu/mma.cu's MMA_SMEM (two stages of 128 + 128
    /// rows of 144 bytes), cu/wgmma.cu's WG_SMEM (five stages of two 16 KiB tiles and 1 KiB
    /// to align them) and TMA_SMEM (six stages of two tiles and 256 scales, their twelve
    /// 8-byte barriers, 1 KiB).
    pub(crate) fn shared(self) -> u32 {
        match self {
            MmaKernel::Sync => 2 * (128 + 128) * 144,
            MmaKernel::Wgmma => 5 * 2 * 128 * 128 + 1024,
            MmaKernel::Tma | MmaKernel::Multicast => 6 * (2 * 128 * 128 + 256 * 4) + 12 * 8 + 1024,
        }
    }

    /// Threads per block: two warpgroups, and the TMA kernels' producer warpgroup.
    pub(crate) fn threads(self) -> u32 {
        match self {
            MmaKernel::Tma | MmaKernel::Multicast => 384,
            _ => 256,
        }
    }

    /// The launch of `name` (its FP8 or BF16 kernel) over `groups` groups of at most `m × n` on
    /// `dev`: a grid of 128 × 128 tiles
    /// of C for `mma.sync` and wgmma; for the TMA kernels blocks in x alone, as many as
    /// [`tma_grid`] says (in whole clusters: a persistent grid of the multicast kernels has as
    /// many as the device runs at once, `Blocks(n)` n / 2 of them), and the tiles they take
    /// in turn (the kernels' last three arguments: tiles along m and n of the largest group,
    /// and the groups).
    pub(crate) fn grid(
        self,
        dev: &Device,
        name: &str,
        m: usize,
        n: usize,
        groups: usize,
    ) -> Result<(LaunchConfig, [i32; 3])> {
        let (tm, tn) = (m.div_ceil(128), n.div_ceil(128));
        let tiles = [tm, tn, groups].map(|v| i32::try_from(v).unwrap_or(i32::MAX));
        let mut cfg = LaunchConfig {
            grid_dim: tile_grid(m, n, (128, 128), groups).grid_dim,
            block_dim: (self.threads(), 1, 1),
            shared_mem_bytes: self.shared(),
        };
        if self.tma() {
            // Clusters of `c` blocks take `c` tiles side by side along n in turn (the
            // multicast kernels' pairs; the other TMA kernels' clusters are single blocks).
            let c = self.cluster();
            let units = tm * tn.div_ceil(c as usize) * groups;
            let clusters = match tma_grid() {
                TmaGrid::Persistent if c == 1 => units.min(dev.sms.max(1)),
                TmaGrid::Persistent => match dev.active_clusters(name, cfg, c)? {
                    // (On a GPU shared between processes or partitioned, none may fit.)
                    0 => {
                        return Err(Error::Unavailable(format!(
                            "{name}: the device runs no cluster of {c} blocks of {} threads \
                             and {} bytes of shared memory at once \
                             (cuOccupancyMaxActiveClusters)",
                            cfg.block_dim.0, cfg.shared_mem_bytes
                        )));
                    }
                    most => units.min(most),
                },
                TmaGrid::PerTile => units,
                TmaGrid::Blocks(b) => units.min((b / c).max(1) as usize),
            };
            let blocks =
                u32::try_from(clusters.max(1) * c as usize).map_err(|_| Error::Driver {
                    op: format!("{} {m}×{n}, {groups} group(s)", self.name()),
                    message: format!(
                        "{units} units of {c} tile(s) of 128 × 128: more blocks than a grid holds"
                    ),
                })?;
            cfg.grid_dim = (blocks, 1, 1);
        }
        Ok((cfg, tiles))
    }

    /// Whether `dev` runs the FP8 kernel: wgmma (with or without TMA) needs the sm_90a cubin
    /// of a compute capability 9.0 device, `mma.sync` FP8 tensor cores (8.9 or later).
    pub fn runs_on(self, dev: &Device) -> bool {
        match self {
            MmaKernel::Sync => dev.capability >= (8, 9),
            MmaKernel::Wgmma | MmaKernel::Tma | MmaKernel::Multicast => {
                dev.capability == (9, 0) && dev.arch == "sm_90a"
            }
        }
    }

    /// Whether the automatic choice may take the FP8 kernel on `dev`: it runs there, and was
    /// not set aside ([`MmaKernel::set_aside`]).
    pub fn chosen_on(self, dev: &Device) -> bool {
        self.runs_on(dev) && !self.set_aside()
    }

    /// Whether the kernel was set aside in this process ([`avoid`]).
    pub fn set_aside(self) -> bool {
        AVOIDED.load(std::sync::atomic::Ordering::Relaxed) & self.bit() != 0
    }

    /// Whether `dev` runs the BF16 kernel: `mma.sync` from compute capability 8.0.
    pub fn runs_bf16_on(self, dev: &Device) -> bool {
        match self {
            MmaKernel::Sync => dev.capability >= (8, 0),
            _ => self.runs_on(dev),
        }
    }

    /// The kernel [`MMA_VAR`]'s value names ([`MmaKernel::key`]).
    pub fn parse(v: &str) -> Option<MmaKernel> {
        MmaKernel::ALL.into_iter().find(|k| k.key() == v)
    }

    /// Its name for [`MMA_VAR`] and `tokenmill doctor --probe-wgmma`.
    pub fn key(self) -> &'static str {
        match self {
            MmaKernel::Sync => "sync",
            MmaKernel::Wgmma => "wgmma",
            MmaKernel::Tma => "tma",
            MmaKernel::Multicast => "multicast",
        }
    }

    fn from_env() -> Result<Option<MmaKernel>> {
        match std::env::var(MMA_VAR).ok().as_deref() {
            None | Some("") => Ok(None),
            Some(v) => MmaKernel::parse(v).map(Some).ok_or_else(|| {
                Error::Unavailable(format!(
                    "{MMA_VAR}={v}: the tensor-core kernels are `sync`, `wgmma`, `tma` and `multicast`"
                ))
            }),
        }
    }
}

impl Cuda {
    /// Checks that the device has FP8 tensor cores (compute capability 8.9 or later), picks
    /// the kernel ([`MmaKernel`]) and checks that it computes a small exactly known product
    /// right — so that a device or a fragment layout it does not have is an error here, not a
    /// wrong training run. Chosen automatically, a kernel that fails its probe is logged and
    /// the next of [`MmaKernel::ALL`] takes its place; chosen by the caller, it is an error.
    pub(super) fn mma_probe(&mut self) -> Result<()> {
        let cap = self.dev.capability;
        if cap < (8, 9) {
            return Err(Error::Unavailable(format!(
                "fp8_gemm = \"mma\" needs FP8 tensor cores (compute capability 8.9 or later); \
                 {} has {}.{}",
                self.dev.name, cap.0, cap.1
            )));
        }
        let asked = self.mma_asked()?;
        let candidates: Vec<MmaKernel> = match asked {
            Some(k) => vec![k],
            None => MmaKernel::ALL
                .into_iter()
                .filter(|k| k.chosen_on(&self.dev) || *k == MmaKernel::Sync)
                .collect(),
        };
        let last = candidates.len() - 1;
        for (i, kernel) in candidates.into_iter().enumerate() {
            if !kernel.runs_on(&self.dev) {
                return Err(Error::Unavailable(format!(
                    "{} needs Hopper's wgmma (compute capability 9.0, sm_90a); {} has {}.{} ({})",
                    kernel.name(),
                    self.dev.name,
                    cap.0,
                    cap.1,
                    self.dev.arch
                )));
            }
            self.mma_kernel = kernel;
            match self.mma_probe_product()? {
                None => return Ok(()),
                Some(wrong) if i < last => tracing::warn!(
                    "{} failed its probe ({wrong}): the FP8 GEMMs take the next kernel",
                    kernel.name()
                ),
                Some(wrong) => return Err(self.probe_failed(wrong)),
            }
        }
        unreachable!("the last candidate returns")
    }

    /// Runs `kernel`'s probes (FP8 and BF16; a kernel on Hopper's wgmma) on GPU `ordinal`,
    /// asked for by name, and waits for the device: an error names the one that failed, or the
    /// device's error. The device check runs this in a child process first (`tokenmill doctor
    /// --probe-wgmma KERNEL`), so that a kernel that faults or hangs costs that process rather
    /// than the check's context.
    pub fn probe_wgmma(ordinal: usize, kernel: MmaKernel) -> Result<()> {
        let mut cuda = Cuda::new(ordinal)?;
        cuda.set_mma_kernel(Some(kernel));
        cuda.set_fp8_gemm(Fp8Gemm::Mma)?;
        let bf16 = cuda.bf16_grouped_kernel()?;
        cuda.dev.sync()?;
        if bf16 != Some(kernel) {
            return Err(Error::Driver {
                op: format!("{} probe", kernel.bf16_name()),
                message: "its product was wrong (see the warning above)".into(),
            });
        }
        Ok(())
    }

    /// The kernel the caller asked for: [`Cuda::set_mma_kernel`]'s, else [`MMA_VAR`]'s.
    pub(super) fn mma_asked(&self) -> Result<Option<MmaKernel>> {
        match self.mma_asked {
            Some(k) => Ok(Some(k)),
            None => MmaKernel::from_env(),
        }
    }

    fn probe_failed(&self, wrong: String) -> Error {
        Error::Driver {
            op: format!("{} probe 200×160×1700", self.mma_kernel.name()),
            message: wrong,
        }
    }

    /// The probe's product by the kernel in [`Cuda::mma_kernel`]: `None` when right, else
    /// the first wrong element.
    fn mma_probe_product(&mut self) -> Result<Option<String>> {
        // 200 × 160 × 1700: two tiles of 128 rows and of 128 columns, partial ones at the edges
        // (every warp and warpgroup of a tile, every fragment of a row, boxes past the rows),
        // fourteen chunks along K, the last partial (each stage of every kernel refilled, the
        // TMA kernel's six twice over: both parities of its barriers). Integers of at most 4
        // significant bits with 14 in every tile and block, halved in a third of A's tiles and
        // in B's blocks of odd chunks, so every scale is 14 / 448 = 2⁻⁵ or 2⁻⁶ and every code
        // exact, and a scale read for another row, column or chunk shows; the sums need up to
        // 20 bits, so the tensor cores' accumulation may round them: allowed 2⁻¹⁰ of Σ|a·b| —
        // a fragment read at a wrong place is off by far more.
        let (m, n, k) = (200, 160, 1700);
        let int = |x: usize| (x % 29) as f32 - 14.0;
        let mut a: Vec<f32> = (0..m * k).map(|i| int(i * 7 + i / k)).collect();
        let mut b: Vec<f32> = (0..n * k).map(|i| int(i * 11 + 3 * (i / k))).collect();
        for i in 0..m {
            for c in 0..k.div_ceil(128) {
                let width = (k - c * 128).min(128);
                a[i * k + c * 128 + (i * 5 + c) % width] = 14.0;
            }
        }
        for rb in (0..n).step_by(128) {
            for c in 0..k.div_ceil(128) {
                b[rb * k + c * 128 + 9] = -14.0;
            }
        }
        let halve = |v: &mut [f32], row: usize, c: usize| {
            let at = row * k + c * 128;
            v[at..at + (k - c * 128).min(128)]
                .iter_mut()
                .for_each(|x| *x *= 0.5);
        };
        for c in 0..k.div_ceil(128) {
            (0..m)
                .filter(|i| (i + c) % 3 == 0)
                .for_each(|i| halve(&mut a, i, c));
            if c % 2 == 1 {
                (0..n).for_each(|j| halve(&mut b, j, c));
            }
        }
        let mut got = vec![0f32; m * n];
        let format = LowpGemm::Fp8 {
            a_tile: (1, 128),
            b_tile: (128, 128),
        };
        self.fp8 = Fp8Gemm::Mma;
        let done = self.try_matmul_lowp(MatMul::linear(m, n, k), &a, &b, &mut got, format);
        self.fp8 = Fp8Gemm::Model;
        done?;
        for i in 0..m {
            for j in 0..n {
                let (want, size) = (0..k).fold((0f64, 0f64), |(s, z), x| {
                    let p = a[i * k + x] as f64 * b[j * k + x] as f64;
                    (s + p, z + p.abs())
                });
                let v = got[i * n + j] as f64;
                if (v - want).abs() > size / 1024.0 || v.is_nan() {
                    return Ok(Some(format!("C[{i}, {j}] = {v}, not {want}")));
                }
            }
        }
        Ok(None)
    }

    /// `C (+)= op(A)·op(B)` on the tensor cores: each operand quantized as cuBLASLt's (codes
    /// K contiguous, K padded to 16 with zero codes), then one launch, writing C in place.
    pub(super) fn mma_matmul(
        &self,
        p: MatMul,
        (a, b, c): (u64, u64, u64),
        (a_mode, b_mode): (Scales, Scales),
        bad: &mut CudaSlice<u32>,
    ) -> Result<()> {
        if let Some(done) = self.empty_gemm(p, c) {
            return done;
        }
        let k = p.k.next_multiple_of(16);
        let x = self.quantize_lt(a, p.a_stored(), p.ta, (p.m, k), a_mode, bad)?;
        let w = self.quantize_lt(b, p.b_stored(), !p.tb, (p.n, k), b_mode, bad)?;
        let x = Codes {
            ld: k,
            strides: a_mode.strides(p.m, k),
            codes: x.codes,
            scales: x.scales,
            mode: a_mode,
        };
        let w = Codes {
            ld: k,
            strides: b_mode.strides(p.n, k),
            codes: w.codes,
            scales: w.scales,
            mode: b_mode,
        };
        let desc = [p.m, p.n, p.k, 0, 0, 0, 0, 0].map(|v| v as i64);
        self.mma_launch(&x, &w, (c, p.n), &desc, p.accumulate)
    }

    /// The grouped GEMM `g` (every group's product has group 0's transposes and tiles) on the
    /// tensor cores: A and B of every group quantized in one launch each, each group's
    /// operands as a matrix of their own (as the CPU quantizes each expert's; a group without
    /// rows is not quantized, nor its tiles counted), then every group's product in one
    /// launch. `a`, `b`, `c`: the buffers' addresses, group `e`'s weight block (forms forward
    /// and input) or weight gradient (form weight) `stride` elements after the previous one.
    pub(super) fn grouped_mma(
        &self,
        g: &Grouped<'_>,
        (a, b, c): (u64, u64, u64),
        stride: usize,
        (a_mode, b_mode): (Scales, Scales),
        bad: &mut CudaSlice<u32>,
    ) -> Result<()> {
        let (x, w, c_at, ldc) = sides(g, (a, b), stride);
        let (x, xp) = self.quantize_groups(x, a_mode, bad)?;
        let (w, wp) = self.quantize_groups(w, b_mode, bad)?;
        let desc = table(g, &xp, &wp, &c_at);
        self.mma_launch(&x, &w, (c, ldc), &desc, g.accumulate)
    }

    /// The grouped GEMM `g` in BF16 on the tensor cores: both operands of every group
    /// converted to BF16 with K contiguous in one launch each (`to_bf16_rows_f32`), then every
    /// group's product in one launch of `kernel`'s BF16 GEMM ([`MmaKernel::bf16_name`]).
    /// Arguments as [`Cuda::grouped_mma`].
    pub(super) fn grouped_bf16_mma(
        &self,
        kernel: MmaKernel,
        g: &Grouped<'_>,
        (a, b, c): (u64, u64, u64),
        stride: usize,
    ) -> Result<()> {
        let (x, w, c_at, ldc) = sides(g, (a, b), stride);
        let (xs, xld, xp) = self.bf16_groups(x)?;
        let (ws, wld, wp) = self.bf16_groups(w)?;
        let desc = table(g, &xp, &wp, &c_at);
        debug_assert!(
            desc.chunks(8)
                .all(|d| (d[0] as usize).div_ceil(128) <= 65_535),
            "the caller asks `fits` first"
        );
        let Some(groups) =
            Groups::new(&self.dev, kernel, &desc, (*xs.p(), xld), (*ws.p(), wld), 2)?
        else {
            return Ok(());
        };
        launch_bf16(
            &self.dev,
            kernel,
            ((*xs.p(), xld), (*ws.p(), wld)),
            (c, ldc),
            &groups,
            g.accumulate,
        )
    }

    /// The kernel that computes the experts' BF16 GEMMs here: the one asked for
    /// ([`Cuda::mma_asked`]), else wgmma where the device runs it, then `mma.sync` — the first
    /// that passes its probe ([`Cuda::bf16_mma_works`]); `None` (cuBLAS, one `GemmEx` per
    /// expert) when none does.
    pub(super) fn bf16_mma_choose(&self) -> Result<Option<MmaKernel>> {
        let order = match self.mma_asked()? {
            Some(k) => vec![k],
            None => MmaKernel::ALL
                .into_iter()
                .filter(|k| !k.set_aside())
                .collect(),
        };
        for kernel in order {
            if !kernel.runs_bf16_on(&self.dev) {
                tracing::info!(
                    capability = ?self.dev.capability,
                    arch = %self.dev.arch,
                    "{} does not run here",
                    kernel.bf16_name()
                );
                continue;
            }
            if self.bf16_mma_works(kernel)? {
                return Ok(Some(kernel));
            }
        }
        Ok(None)
    }

    /// Whether `kernel`'s BF16 GEMM computes the experts' BF16 GEMMs right here: two groups'
    /// product of integers (exact in BF16 and in FP32 sums) — 150 and 50 rows, 200 columns
    /// (two tiles each way for the first, partial at the edges), K 500 off the 64-value chunks
    /// (eight chunks: more than either kernel's stages) — comes out exact. Otherwise (a
    /// fragment layout or descriptor the hardware does not read as we do) the reason is
    /// logged; a failure of the device itself is returned.
    pub(super) fn bf16_mma_works(&self, kernel: MmaKernel) -> Result<bool> {
        let (n, k, rows, first) = (200usize, 500usize, 200usize, 150usize);
        let offsets = [0usize, first, rows];
        let int = |x: usize| (x % 31) as f32 - 15.0;
        let a: Vec<f32> = (0..rows * k).map(|i| int(i * 7 + i / k)).collect();
        let b: Vec<f32> = (0..2 * n * k).map(|i| int(i * 11 + 3 * (i / k))).collect();
        let g = Grouped {
            form: GroupedForm::Forward,
            offsets: &offsets,
            n,
            k,
            stride: n * k,
            accumulate: false,
        };
        // As training's calls reach the device: copied, or on the host's pages by address.
        let run = || -> Result<Vec<f32>> {
            let da = self.dev.input("probe A", &a)?;
            let db = self.dev.input("probe B", &b)?;
            let mut got = vec![0f32; rows * n];
            let dc = self.dev.output("probe C", &mut got)?;
            self.grouped_bf16_mma(kernel, &g, (*da.p(), *db.p(), *dc.p()), n * k)?;
            self.dev.finish(&dc, &mut got)?;
            // The host reads the product next: a wait even inside a deferred scope (the probe
            // runs at the first grouped BF16 GEMM, where the model may have opened one).
            self.dev.sync()?;
            Ok(got)
        };
        let got = run()?;
        for r in 0..rows {
            let e = usize::from(r >= first);
            for j in 0..n {
                let want: f32 = (0..k)
                    .map(|x| a[r * k + x] * b[e * n * k + j * k + x])
                    .sum();
                if got[r * n + j] != want {
                    tracing::warn!(
                        row = r,
                        col = j,
                        got = got[r * n + j],
                        want,
                        "{} failed its probe",
                        kernel.bf16_name()
                    );
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Every group's operand quantized in one launch of `fp8_quantize_lt_f32` (its groups
    /// mode), placed as [`place`] says. Returns the codes and each group's place in them.
    fn quantize_groups(
        &self,
        side: Side,
        mode: Scales,
        bad: &mut CudaSlice<u32>,
    ) -> Result<(Codes, Vec<Part>)> {
        let (parts, lay) = place(&side, mode.tile_outer());
        // Zeroed: codes past each group's K (to 16) and unused scales are zeros.
        let codes = self.dev.scratch::<u8>("FP8 codes", lay.rows * lay.ld)?;
        let scales = self
            .dev
            .scratch::<f32>("FP8 scales", lay.tile_rows * lay.kb)?;
        let desc: Vec<i64> = parts
            .iter()
            .flat_map(|p| [p.src, p.rows, p.codes, p.scales].map(|v| v as i64))
            .collect();
        let groups = parts.len();
        if groups > 0 && lay.rows * lay.ld > 0 {
            let d = self.dev.copy_in("FP8 quantization groups", &desc)?;
            let q = LtLaunch {
                src: side.src,
                rows: 0,
                cols: side.cols,
                k_on_rows: side.k_on_rows,
                mode,
                codes: (*codes.p(), lay.ld),
                scales: (*scales.p(), (lay.kb, 1)),
                groups: (*d.p(), groups),
                grid: (lay.outer_most, lay.k_most),
            };
            self.launch_quantize_lt(q, bad)?;
        }
        let out = Codes {
            codes,
            ld: lay.ld,
            scales,
            strides: (lay.kb, 1),
            mode,
        };
        Ok((out, parts))
    }

    /// Every group's operand as BF16 with K contiguous in one launch of `to_bf16_rows_f32`,
    /// placed as [`place`] says (in elements). Returns the values, their row length and each
    /// group's place.
    fn bf16_groups(&self, side: Side) -> Result<(Buf<u16>, usize, Vec<Part>)> {
        let (parts, lay) = place(&side, 1);
        // Zeroed: the values past each group's K (to 16) are zeros.
        let values = self
            .dev
            .scratch::<u16>("BF16 operands", lay.rows * lay.ld)?;
        let groups = parts.len();
        if groups > 0 && lay.rows * lay.ld > 0 {
            let desc: Vec<i64> = parts
                .iter()
                .flat_map(|p| [p.src, p.rows, p.codes].map(|v| v as i64))
                .collect();
            let d = self.dev.copy_in("BF16 conversion groups", &desc)?;
            let (c, kr, ld) = (side.cols as i32, side.k_on_rows as i32, lay.ld as i64);
            let mut l = self.k("to_bf16_rows_f32")?;
            l.arg(&side.src)
                .arg(&c)
                .arg(&kr)
                .arg(values.p())
                .arg(&ld)
                .arg(d.p());
            let cfg = LaunchConfig {
                grid_dim: (
                    lay.k_most.div_ceil(32) as u32,
                    lay.outer_most.div_ceil(32).min(65_535) as u32,
                    groups as u32,
                ),
                block_dim: (32, 8, 1),
                shared_mem_bytes: 0,
            };
            go("to_bf16_rows_f32", l, cfg)?;
        }
        Ok((values, lay.ld, parts))
    }

    /// One launch of our FP8 kernel ([`Cuda::mma_kernel`]) over `desc`'s groups (`[groups][8]`:
    /// m, n, k, the groups' places in A's and B's codes and scales, C's first element), C at
    /// `c` with rows of `ldc`; counted in [`Cuda::fast_fp8_calls`].
    fn mma_launch(
        &self,
        x: &Codes,
        w: &Codes,
        c: (u64, usize),
        desc: &[i64],
        accumulate: bool,
    ) -> Result<()> {
        let (x, w) = (x.at(), w.at());
        let kernel = self.mma_kernel;
        let Some(groups) =
            Groups::new(&self.dev, kernel, desc, (x.codes, x.ld), (w.codes, w.ld), 1)?
        else {
            return Ok(());
        };
        launch(&self.dev, kernel, (x, w), c, &groups, accumulate)?;
        self.fast_calls[super::MMA].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// The groups of one launch of our tensor-core kernels, on the device: their table
/// (`[groups][8]`: m, n, k, A's and B's places in elements, the scales' places, C's first
/// element) and, for the TMA kernels, their tensor maps ([`tensor_maps`]); `m` and `n` a
/// group's largest.
pub(crate) struct Groups {
    desc: Buf<i64>,
    maps: Option<Buf<u64>>,
    /// The kernel they were made for (the multicast kernels' maps copy half of A's rows).
    kernel: MmaKernel,
    m: usize,
    n: usize,
    count: usize,
}

impl Groups {
    /// `desc`'s groups for `kernel` over A's values at `a.0` (rows of `a.1` elements of
    /// `elem` bytes) and B's at `b.0`: `None` when there is nothing to compute.
    pub(crate) fn new(
        dev: &Device,
        kernel: MmaKernel,
        desc: &[i64],
        a: (u64, usize),
        b: (u64, usize),
        elem: usize,
    ) -> Result<Option<Groups>> {
        let count = desc.len() / 8;
        let most = |i: usize| desc.chunks(8).map(|d| d[i] as usize).max().unwrap_or(0);
        let (m, n) = (most(0), most(1));
        if count == 0 || m == 0 || n == 0 {
            return Ok(None);
        }
        let maps = if kernel.tma() {
            let a_rows = 128 / kernel.cluster();
            let maps = tensor_maps(desc, a, b, elem, a_rows)?;
            Some(dev.copy_in("tensor maps", &maps)?)
        } else {
            None
        };
        // A tensor map in global memory is 64-byte aligned for the TMA unit (cudarc's
        // `CUtensorMap` 128); device allocations are 256-byte aligned.
        if let Some(m) = &maps
            && *m.p() % 128 != 0
        {
            return Err(Error::Driver {
                op: "tensor maps".into(),
                message: format!("at {:#x}, not 128-byte aligned", *m.p()),
            });
        }
        Ok(Some(Groups {
            desc: dev.copy_in("tensor-core GEMM groups", desc)?,
            maps,
            kernel,
            m,
            n,
            count,
        }))
    }

    fn maps(&self) -> u64 {
        self.maps.as_ref().map_or(0, |m| *m.p())
    }

    /// Refuses a launch of `kernel` (kernel `name`) over groups made for another: a TMA
    /// kernel's copies would not be the boxes its barriers expect.
    fn check(&self, kernel: MmaKernel, name: &str) -> Result<()> {
        if self.kernel == kernel {
            return Ok(());
        }
        Err(Error::Driver {
            op: format!("launch {name}"),
            message: format!(
                "its groups were made for {} (tensor maps with other boxes)",
                self.kernel.instruction()
            ),
        })
    }
}

/// The TMA kernels' tensor maps (`CUtensorMap`, 16 × 64 bits each) for the groups of `desc`:
/// two per group, A's then B's, each over the group's own values — 8-bit elements, its K
/// (`desc` column 2, in values of `elem` bytes) as bytes by its rows (m or n), rows `ld`
/// values apart, from its first value (`desc` column 3 or 4) —, boxes of 128 bytes by 128 rows
/// (A's by `a_rows`: 64 for the multicast kernels, whose blocks each copy half of A's chunk),
/// the 128-byte swizzle, zeros outside. So a box past a group's rows or K reads zeros, as the
/// `cp.async` kernels' copies fill them; a group without rows, columns or K gets no map (its
/// blocks read none).
pub(crate) fn tensor_maps(
    desc: &[i64],
    (a, lda): (u64, usize),
    (b, ldb): (u64, usize),
    elem: usize,
    a_rows: u32,
) -> Result<Vec<u64>> {
    use cudarc::driver::sys;
    let mut maps = vec![0u64; 32 * (desc.len() / 8)];
    for (g, d) in desc.chunks(8).enumerate() {
        let (m, n, k) = (d[0] as u64, d[1] as u64, d[2] as u64);
        if m == 0 || n == 0 || k == 0 {
            continue;
        }
        let sides = [(a, lda, d[3], m), (b, ldb, d[4], n)];
        for (side, (base, ld, at, rows)) in sides.into_iter().enumerate() {
            let addr = base + at as u64 * elem as u64;
            let dims = [k * elem as u64, rows];
            let strides = [(ld * elem) as u64];
            let boxes = [128u32, if side == 0 { a_rows } else { 128 }];
            let unit = [1u32, 1];
            let mut map = sys::CUtensorMap { opaque: [0; 16] };
            #[allow(unsafe_code)]
            // SAFETY: every pointer is to a local array of the rank the call is told (2), the map
            // a local the driver writes; the address is only recorded in the map, whose
            // copies read what the descriptor table says the group holds.
            let r = unsafe {
                sys::cuTensorMapEncodeTiled(
                    &mut map,
                    sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_UINT8,
                    2,
                    addr as *mut std::ffi::c_void,
                    dims.as_ptr(),
                    strides.as_ptr(),
                    boxes.as_ptr(),
                    unit.as_ptr(),
                    sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                    sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                    sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                    sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
                )
            };
            r.result().map_err(|e| Error::Driver {
                op: format!(
                    "cuTensorMapEncodeTiled (group {g}, {}: {} × {} bytes, rows {} bytes apart, at {addr:#x})",
                    ["A", "B"][side],
                    dims[1],
                    dims[0],
                    strides[0]
                ),
                message: e.to_string(),
            })?;
            maps[32 * g + 16 * side..][..16].copy_from_slice(&map.opaque);
        }
    }
    Ok(maps)
}

/// Whether the tensor-core kernels' grid holds `g`: at most 65,535 blocks of 128 rows of C.
pub(super) fn fits(g: &Grouped<'_>) -> bool {
    let rows = match g.form {
        GroupedForm::Weight => g.n,
        _ => g.most_rows(),
    };
    rows.div_ceil(128) <= 65_535
}

/// One side (A or B) of a grouped GEMM's groups, as stored: rows of `cols` floats at `src`,
/// contracted along the rows when `k_on_rows`; group `e`'s operand `dims[e]` = (outer, K) from
/// `parts[e]` (its first element and its stored rows; 0 rows for a group with nothing to
/// compute).
struct Side {
    src: u64,
    cols: usize,
    k_on_rows: bool,
    dims: Vec<(usize, usize)>,
    parts: Vec<Part>,
}

/// The sides of `g` (A, then the weights or the second row operand) at `a` and `b`, each
/// group's first element of C, and C's row length.
fn sides(g: &Grouped<'_>, (a, b): (u64, u64), stride: usize) -> (Side, Side, Vec<usize>, usize) {
    let ps: Vec<_> = (0..g.groups()).map(|e| grouped::group(g, e)).collect();
    let weights = g.form != GroupedForm::Weight;
    let p0 = ps
        .first()
        .map(|(p, _)| *p)
        .unwrap_or(MatMul::linear(0, 0, 0));
    let live = |p: &MatMul| p.m * p.n * p.k > 0;
    let x = Side {
        src: a,
        cols: p0.a_stored().1,
        k_on_rows: p0.ta,
        dims: ps.iter().map(|(p, _)| (p.m, p.k)).collect(),
        parts: ps
            .iter()
            .map(|(p, [ra, _, _])| Part {
                src: ra.start,
                rows: if live(p) { p.a_stored().0 } else { 0 },
                ..Part::default()
            })
            .collect(),
    };
    let w = Side {
        src: b,
        cols: p0.b_stored().1,
        k_on_rows: !p0.tb,
        dims: ps.iter().map(|(p, _)| (p.n, p.k)).collect(),
        parts: ps
            .iter()
            .enumerate()
            .map(|(e, (p, [_, rb, _]))| Part {
                src: if weights { e * stride } else { rb.start },
                rows: if live(p) { p.b_stored().0 } else { 0 },
                ..Part::default()
            })
            .collect(),
    };
    let c_at = ps
        .iter()
        .enumerate()
        .map(|(e, (_, [_, _, rc]))| if weights { rc.start } else { e * stride })
        .collect();
    (x, w, c_at, p0.n)
}

/// The kernels' table of groups `[groups][8]`: m, n, k, A's and B's places (codes, then
/// scales), C's first element.
fn table(g: &Grouped<'_>, xp: &[Part], wp: &[Part], c_at: &[usize]) -> Vec<i64> {
    (0..g.groups())
        .flat_map(|e| {
            let p = grouped::group(g, e).0;
            [
                p.m,
                p.n,
                p.k,
                xp[e].codes,
                wp[e].codes,
                xp[e].scales,
                wp[e].scales,
                c_at[e],
            ]
            .map(|v| v as i64)
        })
        .collect()
}

/// Where a side's groups go: values `[rows, ld]` (K contiguous), scales `[tile_rows, kb]`.
struct Layout {
    rows: usize,
    ld: usize,
    tile_rows: usize,
    kb: usize,
    outer_most: usize,
    k_most: usize,
}

/// Places each group of `side`: with one K for every group (the forward's and input
/// gradient's operands) one after another along the outer dimension — its first row of
/// values and of tiles of `tile_outer` (a group with nothing to compute takes none) —, else
/// (the weight gradient's, K the group's rows) side by side along K, the outer dimension every
/// group's — its first column (K rounded up to 16 each, so every group starts 16-byte aligned)
/// and its first K block of 128. Group `e`'s value `(o, j)` lies at `codes + o · ld + j`, its
/// tile `(to, tk)`'s scale at `scales + to · kb + tk`.
fn place(side: &Side, tile_outer: usize) -> (Vec<Part>, Layout) {
    let dims = &side.dims;
    let mut parts = side.parts.clone();
    let same_k = dims.windows(2).all(|w| w[0].1 == w[1].1);
    let tiles = |outer: usize| outer.div_ceil(tile_outer);
    let (mut rows_at, mut tiles_at, mut k_at, mut kb_at) = (0, 0, 0, 0);
    for (part, &(outer, k)) in parts.iter_mut().zip(dims) {
        if same_k {
            (part.codes, part.scales) = (rows_at, tiles_at);
            let outer = if part.rows == 0 { 0 } else { outer };
            rows_at += outer;
            tiles_at += tiles(outer);
        } else {
            (part.codes, part.scales) = (k_at, kb_at);
            k_at += k.next_multiple_of(16);
            kb_at += k.div_ceil(128);
        }
    }
    let outer_most = dims.iter().map(|d| d.0).max().unwrap_or(0);
    let k_most = dims.iter().map(|d| d.1).max().unwrap_or(0);
    let lay = if same_k {
        Layout {
            rows: rows_at,
            ld: k_most.next_multiple_of(16),
            tile_rows: tiles_at,
            kb: k_most.div_ceil(128),
            outer_most,
            k_most,
        }
    } else {
        Layout {
            rows: outer_most,
            ld: k_at,
            tile_rows: tiles(outer_most),
            kb: kb_at,
            outer_most,
            k_most,
        }
    };
    if same_k {
        for p in parts.iter_mut() {
            (p.codes, p.scales) = (p.codes * lay.ld, p.scales * lay.kb);
        }
    }
    (parts, lay)
}

/// An operand of our FP8 kernels by address: codes with rows of `ld` bytes, scales with
/// tile `(to, tk)` at `to · strides.0 + tk · strides.1`, per 1 × 128 tile or 128 × 128 block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MmaOperand {
    pub codes: u64,
    pub ld: usize,
    pub scales: u64,
    pub strides: (usize, usize),
    pub mode: Scales,
}

impl Codes {
    fn at(&self) -> MmaOperand {
        MmaOperand {
            codes: *self.codes.p(),
            ld: self.ld,
            scales: *self.scales.p(),
            strides: self.strides,
            mode: self.mode,
        }
    }
}

/// Launches `kernel`'s FP8 GEMM (cu/mma.cu's `fp8_mma_gemm_f32`, cu/wgmma.cu's
/// `fp8_wgmma_gemm_f32` or `fp8_tma_gemm_f32`) on `dev`: A and B, C at `c.0` with rows of
/// `c.1`, over `groups` (made for this kernel and these operands).
pub(crate) fn launch(
    dev: &Device,
    kernel: MmaKernel,
    (x, w): (MmaOperand, MmaOperand),
    (c, ldc): (u64, usize),
    groups: &Groups,
    accumulate: bool,
) -> Result<()> {
    let blk = |s: Scales| i32::from(s == Scales::Blk128);
    let (a_blk, b_blk) = (blk(x.mode), blk(w.mode));
    let (lda, ldb, ldc) = (x.ld as i64, w.ld as i64, ldc as i64);
    let (sao, sak) = (x.strides.0 as i64, x.strides.1 as i64);
    let (sbo, sbk) = (w.strides.0 as i64, w.strides.1 as i64);
    let acc = i32::from(accumulate);
    let name = kernel.name();
    let (m, n, count) = (groups.m, groups.n, groups.count);
    // (The TMA kernels' grid is in x alone: no such bound.)
    if !kernel.tma() && m.div_ceil(128) > 65_535 {
        return Err(Error::Driver {
            op: format!("{name} {m}×{n}, {count} group(s)"),
            message: "more than 65,535 blocks of 128 rows".into(),
        });
    }
    let (desc, maps) = (*groups.desc.p(), groups.maps());
    groups.check(kernel, name)?;
    let (cfg, [tm, tn, groups_]) = kernel.grid(dev, name, m, n, count)?;
    if kernel.tma() {
        let scales = [
            arg(&x.scales),
            arg(&sao),
            arg(&sak),
            arg(&a_blk),
            arg(&w.scales),
            arg(&sbo),
            arg(&sbk),
            arg(&b_blk),
        ];
        let rest = (&c, &ldc, &desc, &acc, &maps, &tm, &tn, &groups_);
        #[allow(unsafe_code)]
        // SAFETY: the arguments of cu/wgmma.cu's `fp8_tma_gemm_f32` (and `_mc_`) in order and
        // type; the scales, C, the groups' table and their tensor maps hold what `groups`
        // (made for this kernel and these operands) says each group spans.
        return unsafe { launch_tma(dev, kernel, name, cfg, &scales, rest) };
    }
    let mut l = dev.stream().launch_builder(dev.func(name)?);
    l.arg(&x.codes).arg(&lda);
    l.arg(&x.scales).arg(&sao).arg(&sak).arg(&a_blk);
    l.arg(&w.codes).arg(&ldb);
    l.arg(&w.scales)
        .arg(&sbo)
        .arg(&sbk)
        .arg(&b_blk)
        .arg(&c)
        .arg(&ldc)
        .arg(&desc)
        .arg(&acc);
    go(name, l, cfg)
}

/// A kernel argument's address, as `cuLaunchKernel` takes it.
fn arg<T>(v: &T) -> *mut std::ffi::c_void {
    v as *const T as *mut std::ffi::c_void
}

/// A launch of a TMA kernel (`name`, FP8 or BF16) in `kernel`'s clusters: its arguments are
/// `lead` (the FP8 kernels' scales, by address), then [`TmaTail`]'s.
///
/// # Safety
/// As [`Device::launch_clusters`]: together the arguments are the kernel's, in order and type.
#[allow(unsafe_code)]
unsafe fn launch_tma(
    dev: &Device,
    kernel: MmaKernel,
    name: &str,
    cfg: LaunchConfig,
    lead: &[*mut std::ffi::c_void],
    (c, ldc, desc, acc, maps, tm, tn, count): TmaTail<'_>,
) -> Result<()> {
    let mut params = lead.to_vec();
    params.extend([
        arg(c),
        arg(ldc),
        arg(desc),
        arg(acc),
        arg(maps),
        arg(tm),
        arg(tn),
        arg(count),
    ]);
    // SAFETY: the caller's contract.
    unsafe { dev.launch_clusters(name, cfg, kernel.cluster(), &mut params) }
}

/// The arguments every TMA kernel ends with: C, its row length, the groups' table, accumulate,
/// the tensor maps, tiles along m and n, and the groups.
type TmaTail<'a> = (
    &'a u64,
    &'a i64,
    &'a u64,
    &'a i32,
    &'a u64,
    &'a i32,
    &'a i32,
    &'a i32,
);

/// Launches `kernel`'s BF16 GEMM (`bf16_mma_gemm_f32`, `bf16_wgmma_gemm_f32` or
/// `bf16_tma_gemm_f32`) on `dev`: A's and B's BF16 values at `a.0` and `b.0` with rows of `a.1`
/// and `b.1` values, C at `c.0` with rows of `c.1`, over `groups`.
pub(crate) fn launch_bf16(
    dev: &Device,
    kernel: MmaKernel,
    ((a, lda), (b, ldb)): ((u64, usize), (u64, usize)),
    (c, ldc): (u64, usize),
    groups: &Groups,
    accumulate: bool,
) -> Result<()> {
    let (lda, ldb, ldc, acc) = (lda as i64, ldb as i64, ldc as i64, i32::from(accumulate));
    let (desc, maps) = (*groups.desc.p(), groups.maps());
    let name = kernel.bf16_name();
    groups.check(kernel, name)?;
    let (cfg, [tm, tn, count]) = kernel.grid(dev, name, groups.m, groups.n, groups.count)?;
    if kernel.tma() {
        let rest = (&c, &ldc, &desc, &acc, &maps, &tm, &tn, &count);
        #[allow(unsafe_code)]
        // SAFETY: the arguments of cu/wgmma.cu's `bf16_tma_gemm_f32` (and `_mc_`) in order and
        // type; C, the groups' table and their tensor maps hold what `groups` says each group
        // spans.
        return unsafe { launch_tma(dev, kernel, name, cfg, &[], rest) };
    }
    let mut l = dev.stream().launch_builder(dev.func(name)?);
    l.arg(&a).arg(&lda).arg(&b).arg(&ldb);
    l.arg(&c).arg(&ldc).arg(&desc).arg(&acc);
    go(name, l, cfg)
}
