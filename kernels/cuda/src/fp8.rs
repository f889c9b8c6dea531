//! GEMMs through the vendor libraries, for the throughput side of the device check and the
//! FP8 path of training on Hopper:
//!
//! - [`Lt::fp8_block_scaled`]: `Y[m,n] = X[m,k] · W[n,k]ᵀ` with E4M3 operands, X scaled per
//!   1×128 tile (per token, per 128 channels) and W per 128×128 block — DeepSeek-V3's scheme —
//!   accumulated in FP32 with promotion (fast accumulation off), by cuBLASLt's block-scaled
//!   FP8 matmul (CUDA ≥ 12.9 on sm_90). In cuBLASLt's column-major terms this is
//!   `Yᵀ = W·Xᵀ`: cuBLASLt's A is W (transposed: "TN", which FP8 requires), its B is X.
//!
//! The BF16 cuBLAS GEMM it is compared with is [`crate::device::Device::gemm_bf16`], the one
//! training uses.
//!
//! Scale layouts cuBLASLt expects (converted from ours by [`activation_scales`] and
//! [`weight_scales`]): the 1×128 scales with the token index fastest (`[k/128][m]`), the 128×128
//! block scales per row of blocks with the K blocks fastest, padded to a multiple of 4.

use cudarc::cublaslt::sys as lt;
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

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

/// A cuBLASLt handle with its workspace.
pub struct Lt<'d> {
    dev: &'d Device,
    handle: lt::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
}

impl std::fmt::Debug for Lt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lt").finish_non_exhaustive()
    }
}

impl Drop for Lt<'_> {
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

impl<'d> Lt<'d> {
    /// A handle on `dev`'s stream.
    pub fn new(dev: &'d Device) -> Result<Self> {
        let mut handle = std::ptr::null_mut();
        #[allow(unsafe_code)]
        // SAFETY: a valid out-pointer; cuBLASLt was found loadable by `Device::open`.
        status(unsafe { lt::cublasLtCreate(&mut handle) }, "create")?;
        let workspace = dev.zeros::<u8>("cuBLASLt workspace", WORKSPACE)?;
        Ok(Lt {
            dev,
            handle,
            workspace,
        })
    }

    /// `y[m,n] = x[m,k]·w[n,k]ᵀ`, E4M3 codes with cuBLASLt-layout scales (see the module
    /// docs), FP32 output. `k` a multiple of 16, `m`, `n` multiples of 16 (cuBLASLt's FP8
    /// alignment).
    #[allow(clippy::too_many_arguments)]
    pub fn fp8_block_scaled(
        &mut self,
        m: usize,
        n: usize,
        k: usize,
        x: &CudaSlice<u8>,
        x_scales: &CudaSlice<f32>,
        w: &CudaSlice<u8>,
        w_scales: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        use lt::cublasLtMatmulDescAttributes_t as A;
        let stream = self.dev.stream().clone();
        let mut d = Descs {
            op: std::ptr::null_mut(),
            layouts: Vec::new(),
            pref: std::ptr::null_mut(),
        };
        #[allow(unsafe_code)]
        // SAFETY: plain cuBLASLt descriptor calls with valid out-pointers and attribute buffers
        // of the sizes passed; the device pointers stay alive (their guards are held) until the
        // matmul is enqueued, and the workspace is WORKSPACE bytes.
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
            set(A::CUBLASLT_MATMUL_DESC_TRANSA, &t)?;
            set(A::CUBLASLT_MATMUL_DESC_TRANSB, &nn)?;
            let blk = (lt::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F
                as i32)
                .to_ne_bytes();
            let vec = (lt::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
                as i32)
                .to_ne_bytes();
            set(A::CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &blk)?;
            set(A::CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec)?;
            let (ws_ptr, _g0) = w_scales.device_ptr(&stream);
            let (xs_ptr, _g1) = x_scales.device_ptr(&stream);
            set(
                A::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                &ws_ptr.to_ne_bytes(),
            )?;
            set(
                A::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                &xs_ptr.to_ne_bytes(),
            )?;
            // Promotion into FP32 (DeepSeek-V3), not the fast accumulation.
            set(A::CUBLASLT_MATMUL_DESC_FAST_ACCUM, &[0i8 as u8])?;
            let mut layout = |ty: lt::cudaDataType_t, rows: usize, cols: usize, ld: usize| {
                let mut l = std::ptr::null_mut();
                let r =
                    lt::cublasLtMatrixLayoutCreate(&mut l, ty, rows as u64, cols as u64, ld as i64);
                status(r, "matrix layout")?;
                d.layouts.push(l);
                Ok::<_, Error>(l)
            };
            let la = layout(lt::cudaDataType_t::CUDA_R_8F_E4M3, k, n, k)?;
            let lb = layout(lt::cudaDataType_t::CUDA_R_8F_E4M3, k, m, k)?;
            let lc = layout(lt::cudaDataType_t::CUDA_R_32F, n, m, n)?;
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
                &format!("no FP8 block-scaled algorithm for {m}×{n}×{k}"),
            )?;
            if found == 0 {
                return Err(Error::Blas {
                    lib: "cublasLt",
                    op: format!("FP8 block-scaled {m}×{n}×{k}"),
                    message: "no algorithm (needs CUDA ≥ 12.9 and sm_90)".into(),
                });
            }
            let (alpha, beta) = (1.0f32, 0.0f32);
            let (wp, _g2) = w.device_ptr(&stream);
            let (xp, _g3) = x.device_ptr(&stream);
            let (yp, _g4) = y.device_ptr_mut(&stream);
            let (wsp, _g5) = self.workspace.device_ptr_mut(&stream);
            status(
                lt::cublasLtMatmul(
                    self.handle,
                    d.op,
                    (&alpha as *const f32).cast(),
                    wp as *const _,
                    la,
                    xp as *const _,
                    lb,
                    (&beta as *const f32).cast(),
                    yp as *const _,
                    lc,
                    yp as *mut _,
                    lc,
                    &heur.algo,
                    wsp as *mut _,
                    WORKSPACE,
                    stream.cu_stream() as _,
                ),
                &format!("FP8 block-scaled matmul {m}×{n}×{k}"),
            )?;
        }
        Ok(())
    }
}
