//! GEMMs through the vendor libraries: cuBLASLt's block-scaled FP8 matmul (CUDA ≥ 12.9 on
//! sm_90), for the throughput side of the device check and the fast FP8 path of training
//! (`[train] fp8_gemm = "cublaslt"`):
//!
//! - [`Lt::matmul`]: `Y[rows,cols] = X[rows,k] · W[cols,k]ᵀ` with E4M3 operands, K contiguous
//!   in both, each scaled per 1×128 tile ([`Scales::Vec128`]) or per 128×128 block
//!   ([`Scales::Blk128`], not both), accumulated in FP32 with promotion (fast accumulation
//!   off). In cuBLASLt's column-major terms this is `Yᵀ = W·Xᵀ`: cuBLASLt's A is W
//!   (transposed: "TN", which FP8 requires), its B is X. [`Lt::fp8_block_scaled`] is the
//!   forward's case — DeepSeek-V3's scheme, X per token and 128 channels, W per block.
//!
//! The BF16 cuBLAS GEMM it is compared with is [`crate::device::Device::gemm_bf16`], the one
//! training uses.
//!
//! Scale layouts cuBLASLt expects (the cuBLAS manual's "1D and 128x128 2D block scaling for
//! FP8"; converted from ours by [`activation_scales`] and [`weight_scales`], written directly by
//! the `fp8_quantize_lt_f32` kernel): the 1×128 scales with the outer index fastest
//! (`[k/128][outer]`), the 128×128 block scales per row of blocks with the K blocks fastest,
//! padded to a multiple of 4.

use std::collections::HashMap;

use cudarc::cublaslt::sys as lt;
use cudarc::driver::{CudaSlice, DevicePtrMut};

use crate::device::Device;
use crate::error::{Error, Result};

fn status(r: lt::cublasStatus_t, op: &str) -> Result<()> {
    if r == lt::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Blas {
            lib: "cublasLt",
            op: op.into(),
            message: format!("{r:?}"),
        })
    }
}

/// Our 1×128 activation scales `[m][kb]` as cuBLASLt's VEC128 layout `[kb][m]`.
pub fn activation_scales(scales: &[f32], m: usize, kb: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * kb];
    for i in 0..m {
        for j in 0..kb {
            out[j * m + i] = scales[i * kb + j];
        }
    }
    out
}

/// Our 128×128 weight scales `[nb][kb]` as cuBLASLt's BLK128x128 layout `[nb][round_up(kb, 4)]`.
pub fn weight_scales(scales: &[f32], nb: usize, kb: usize) -> Vec<f32> {
    let kp = kb.div_ceil(4) * 4;
    let mut out = vec![1.0; nb * kp];
    for i in 0..nb {
        out[i * kp..i * kp + kb].copy_from_slice(&scales[i * kb..(i + 1) * kb]);
    }
    out
}

/// How an FP8 operand's scales are laid out: cuBLASLt's block scale modes on Hopper, for an
/// operand of `outer` rows of `k` (K contiguous).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scales {
    /// `VEC128_32F`: one scale per outer index and 128 of K (DeepSeek-V3's 1 × 128 activation
    /// tiles), stored outer index fastest: scale `(i, j)` at `i + (j / 128) · outer`.
    Vec128,
    /// `BLK128x128_32F`: one scale per 128 × 128 block (the weights' blocks), K blocks fastest
    /// with the row stride `ceil(k / 128)` rounded up to a multiple of 4: scale `(i, j)` at
    /// `j / 128 + (i / 128) · L4`.
    Blk128,
}

impl Scales {
    /// The scales of an `outer × k` operand (with the block layout's padding).
    pub fn count(self, outer: usize, k: usize) -> usize {
        let l = k.div_ceil(128);
        match self {
            Scales::Vec128 => l * outer,
            Scales::Blk128 => outer.div_ceil(128) * l.div_ceil(4) * 4,
        }
    }
    /// The outer extent of one scale's tile (1 or 128).
    pub fn tile_outer(self) -> usize {
        match self {
            Scales::Vec128 => 1,
            Scales::Blk128 => 128,
        }
    }
    /// Where tile `(to, tk)`'s scale lies, as `to · stride.0 + tk · stride.1` (`to` counting
    /// tiles of [`Scales::tile_outer`] along the outer dimension, `tk` blocks of 128 along K).
    pub fn strides(self, outer: usize, k: usize) -> (usize, usize) {
        match self {
            Scales::Vec128 => (1, outer),
            Scales::Blk128 => (k.div_ceil(128).div_ceil(4) * 4, 1),
        }
    }
    fn mode(self) -> lt::cublasLtMatmulMatrixScale_t {
        match self {
            Scales::Vec128 => {
                lt::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
            }
            Scales::Blk128 => {
                lt::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F
            }
        }
    }
}

/// One operand of [`Lt::matmul`] on the device: `outer × k` E4M3 codes at `codes`, K
/// contiguous, and their scales at `scales` laid out as `mode` says.
#[derive(Debug, Clone, Copy)]
pub struct Fp8Operand {
    /// The codes' address.
    pub codes: u64,
    /// The scales' address.
    pub scales: u64,
    /// Their layout.
    pub mode: Scales,
}

/// Whether cuBLASLt's block-scaled FP8 GEMM takes `y [rows, cols] = x [rows, k] · w [cols, k]ᵀ`:
/// the outer dimensions multiples of 4 (the scale layouts'), the output's 16 (cuBLASLt's FP8
/// kernels, as PyTorch checks), K a multiple of 16 (16-byte leading dimensions). The CUDA
/// backend pads other shapes with zeros to this.
pub fn fits(rows: usize, cols: usize, k: usize) -> bool {
    rows > 0
        && cols > 0
        && k > 0
        && rows.is_multiple_of(4)
        && cols.is_multiple_of(16)
        && k.is_multiple_of(16)
}

/// A cuBLASLt handle with its workspace.
pub struct Lt {
    handle: lt::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    /// The algorithm cuBLASLt's heuristic chose for each shape, pair of scale layouts and the
    /// alignments of A, B and D it was told (asked once per key: the dense GEMMs' shapes repeat
    /// every step, the experts' rows vary with the routing — the backend pads them to 16 to
    /// keep the keys few; at most [`ALGOS`] kept).
    algos: HashMap<AlgoKey, lt::cublasLtMatmulAlgo_t>,
}

/// Shape, scale layouts of x and w, alignments of w, x and y (bytes).
type AlgoKey = (usize, usize, usize, Scales, Scales, [u32; 3]);

/// The most algorithms [`Lt`] keeps (then it forgets them all and asks again).
const ALGOS: usize = 4096;

/// The alignment of an address in bytes, up to cuBLASLt's default assumption of 256.
fn alignment(p: u64) -> u32 {
    if p == 0 {
        256
    } else {
        (p & p.wrapping_neg()).min(256) as u32
    }
}

// SAFETY: the handle is used by one thread at a time: `&mut self` for every call (the CUDA
// backend keeps it in a mutex), and cuBLASLt handles are not tied to the creating thread.
#[allow(unsafe_code)]
unsafe impl Send for Lt {}

impl std::fmt::Debug for Lt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lt").finish_non_exhaustive()
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: the handle was created by cublasLtCreate and is destroyed once.
        unsafe {
            lt::cublasLtDestroy(self.handle);
        }
    }
}

const WORKSPACE: usize = 32 << 20;

/// RAII for the descriptors of one call.
struct Descs {
    op: lt::cublasLtMatmulDesc_t,
    layouts: Vec<lt::cublasLtMatrixLayout_t>,
    pref: lt::cublasLtMatmulPreference_t,
}

impl Drop for Descs {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: each descriptor was created by its cublasLt constructor (null ones are skipped)
        // and is destroyed once.
        unsafe {
            if !self.op.is_null() {
                lt::cublasLtMatmulDescDestroy(self.op);
            }
            for &l in &self.layouts {
                lt::cublasLtMatrixLayoutDestroy(l);
            }
            if !self.pref.is_null() {
                lt::cublasLtMatmulPreferenceDestroy(self.pref);
            }
        }
    }
}

impl Lt {
    /// A handle with its workspace on `dev`.
    pub fn new(dev: &Device) -> Result<Self> {
        let mut handle = std::ptr::null_mut();
        #[allow(unsafe_code)]
        // SAFETY: a valid out-pointer; cuBLASLt was found loadable by `Device::open`.
        status(unsafe { lt::cublasLtCreate(&mut handle) }, "create")?;
        let workspace = dev.zeros::<u8>("cuBLASLt workspace", WORKSPACE)?;
        Ok(Lt {
            handle,
            workspace,
            algos: HashMap::new(),
        })
    }

    /// The algorithms cached (one per shape, scale layouts and alignments met so far).
    pub fn algorithms(&self) -> usize {
        self.algos.len()
    }

    /// `y[m,n] = x[m,k]·w[n,k]ᵀ`, E4M3 codes with cuBLASLt-layout scales (see the module
    /// docs: X per 1 × 128, W per 128 × 128), FP32 output ([`Lt::matmul`] on slices).
    #[allow(clippy::too_many_arguments)]
    pub fn fp8_block_scaled(
        &mut self,
        dev: &Device,
        m: usize,
        n: usize,
        k: usize,
        x: &CudaSlice<u8>,
        x_scales: &CudaSlice<f32>,
        w: &CudaSlice<u8>,
        w_scales: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let x = Fp8Operand {
            codes: dev.addr(x),
            scales: dev.addr(x_scales),
            mode: Scales::Vec128,
        };
        let w = Fp8Operand {
            codes: dev.addr(w),
            scales: dev.addr(w_scales),
            mode: Scales::Blk128,
        };
        let y = dev.addr(y);
        self.matmul(dev, (m, n, k), x, w, y)
    }

    /// `y [rows, cols] = x [rows, k] · w [cols, k]ᵀ` with E4M3 operands (K contiguous in both)
    /// and their block scales, accumulated in FP32 with promotion (fast accumulation off), into
    /// the FP32 `y` at its address (row-major, written whole). Not both operands
    /// [`Scales::Blk128`]; the shape must [`fits`]. Enqueued on `dev`'s stream.
    pub fn matmul(
        &mut self,
        dev: &Device,
        (rows, cols, k): (usize, usize, usize),
        x: Fp8Operand,
        w: Fp8Operand,
        y: u64,
    ) -> Result<()> {
        use lt::cublasLtMatmulDescAttributes_t as A;
        let what = format!("FP8 block-scaled matmul {rows}×{cols}×{k}");
        let stream = dev.stream().clone();
        let mut d = Descs {
            op: std::ptr::null_mut(),
            layouts: Vec::new(),
            pref: std::ptr::null_mut(),
        };
        #[allow(unsafe_code)]
        // SAFETY: plain cuBLASLt descriptor calls with valid out-pointers and attribute buffers
        // of the sizes passed; the caller keeps the operands, scales and output alive and
        // unchanged until the stream has run the matmul; the workspace is WORKSPACE bytes.
        unsafe {
            status(
                lt::cublasLtMatmulDescCreate(
                    &mut d.op,
                    lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    lt::cudaDataType_t::CUDA_R_32F,
                ),
                "matmul descriptor",
            )?;
            let set = |attr: A, v: &[u8]| {
                status(
                    lt::cublasLtMatmulDescSetAttribute(d.op, attr, v.as_ptr().cast(), v.len()),
                    &format!("set {attr:?}"),
                )
            };
            let t = (cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T as i32).to_ne_bytes();
            let nn = (cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_N as i32).to_ne_bytes();
            // Column-major: yᵀ [cols, rows] = w [cols, k] · xᵀ — cuBLASLt's A is w
            // (transposed: "TN", which FP8 requires), its B is x.
            set(A::CUBLASLT_MATMUL_DESC_TRANSA, &t)?;
            set(A::CUBLASLT_MATMUL_DESC_TRANSB, &nn)?;
            set(
                A::CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
                &(w.mode.mode() as i32).to_ne_bytes(),
            )?;
            set(
                A::CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
                &(x.mode.mode() as i32).to_ne_bytes(),
            )?;
            set(
                A::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                &w.scales.to_ne_bytes(),
            )?;
            set(
                A::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                &x.scales.to_ne_bytes(),
            )?;
            // Promotion into FP32 (DeepSeek-V3), not the fast accumulation.
            set(A::CUBLASLT_MATMUL_DESC_FAST_ACCUM, &[0i8 as u8])?;
            let mut layout = |ty: lt::cudaDataType_t, r: usize, c: usize, ld: usize| {
                let mut l = std::ptr::null_mut();
                let st = lt::cublasLtMatrixLayoutCreate(&mut l, ty, r as u64, c as u64, ld as i64);
                status(st, "matrix layout")?;
                d.layouts.push(l);
                Ok::<_, Error>(l)
            };
            let la = layout(lt::cudaDataType_t::CUDA_R_8F_E4M3, k, cols, k)?;
            let lb = layout(lt::cudaDataType_t::CUDA_R_8F_E4M3, k, rows, k)?;
            let lc = layout(lt::cudaDataType_t::CUDA_R_32F, cols, rows, cols)?;
            // cuBLASLt assumes 256-byte aligned pointers unless told otherwise (and would then
            // fail or fault on a less aligned one): it is told each pointer's alignment.
            let aligns = [alignment(w.codes), alignment(x.codes), alignment(y)];
            let key = (rows, cols, k, x.mode, w.mode, aligns);
            let algo = match self.algos.get(&key) {
                Some(a) => *a,
                None => {
                    status(
                        lt::cublasLtMatmulPreferenceCreate(&mut d.pref),
                        "preference",
                    )?;
                    let ws = (WORKSPACE as u64).to_ne_bytes();
                    status(
                        lt::cublasLtMatmulPreferenceSetAttribute(
                            d.pref,
                            lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                            ws.as_ptr().cast(),
                            ws.len(),
                        ),
                        "workspace preference",
                    )?;
                    use lt::cublasLtMatmulPreferenceAttributes_t as P;
                    for (attr, a) in [
                        (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, aligns[0]),
                        (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, aligns[1]),
                        (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, aligns[2]),
                        (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, aligns[2]),
                    ] {
                        let v = a.to_ne_bytes();
                        status(
                            lt::cublasLtMatmulPreferenceSetAttribute(
                                d.pref,
                                attr,
                                v.as_ptr().cast(),
                                v.len(),
                            ),
                            &format!("{attr:?}"),
                        )?;
                    }
                    let mut heur: lt::cublasLtMatmulHeuristicResult_t = std::mem::zeroed();
                    let mut found = 0;
                    status(
                        lt::cublasLtMatmulAlgoGetHeuristic(
                            self.handle,
                            d.op,
                            la,
                            lb,
                            lc,
                            lc,
                            d.pref,
                            1,
                            &mut heur,
                            &mut found,
                        ),
                        &format!("no algorithm for the {what}"),
                    )?;
                    if found == 0 {
                        return Err(Error::Blas {
                            lib: "cublasLt",
                            op: what,
                            message: "no algorithm (needs CUDA ≥ 12.9 and sm_90)".into(),
                        });
                    }
                    if self.algos.len() >= ALGOS {
                        self.algos.clear();
                    }
                    self.algos.insert(key, heur.algo);
                    heur.algo
                }
            };
            let (alpha, beta) = (1.0f32, 0.0f32);
            let (wsp, _g) = self.workspace.device_ptr_mut(&stream);
            status(
                lt::cublasLtMatmul(
                    self.handle,
                    d.op,
                    (&alpha as *const f32).cast(),
                    w.codes as *const _,
                    la,
                    x.codes as *const _,
                    lb,
                    (&beta as *const f32).cast(),
                    y as *const _,
                    lc,
                    y as *mut _,
                    lc,
                    &algo,
                    wsp as *mut _,
                    WORKSPACE,
                    stream.cu_stream() as _,
                ),
                &what,
            )?;
        }
        Ok(())
    }
}
