//! [`Fp8Gemm::Mma`]: the FP8 GEMMs on the tensor cores by our own kernel (`cu/mma.cu`
//! `fp8_mma_gemm_f32`, `mma.sync` with E4M3 operands, sm_89 and later), on the operands
//! `fp8_quantize_lt_f32` writes for cuBLASLt (E4M3 codes with K contiguous, one scale per 1 ×
//! 128 tile or 128 × 128 block). A dense GEMM is two quantizations and one launch; the experts'
//! grouped GEMM the same — every expert's operands quantized in one launch per operand, every
//! expert's product in one launch — where cuBLASLt takes a call per expert.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use tokenmill_kernels::backend::{Grouped, GroupedForm, LowpGemm, MatMul};
use tokenmill_kernels::cpu::grouped;

use super::{Cuda, Fp8Gemm, go, quantize_cfg};
use crate::device::Buf;
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

impl Cuda {
    /// Checks that the device has FP8 `mma.sync` (compute capability 8.9 or later) and that
    /// the kernel computes a small exactly known product right — so that a device or a
    /// fragment layout it does not have is an error here, not a wrong training run.
    pub(super) fn mma_probe(&mut self) -> Result<()> {
        let cap = self.dev.capability;
        if cap < (8, 9) {
            return Err(Error::Unavailable(format!(
                "fp8_gemm = \"mma\" needs FP8 tensor cores (compute capability 8.9 or later); \
                 {} has {}.{}",
                self.dev.name, cap.0, cap.1
            )));
        }
        // 48 × 40 × 256 (3 × 5 fragments, two chunks): integers of at most 4 significant bits
        // with 14 in every tile, so every scale is 14 / 448 = 2⁻⁵ and every code exact; the
        // sums need 15 bits, so the tensor cores' accumulation may round them: allowed 2⁻¹⁰ of
        // Σ|a·b| — a fragment read at a wrong place is off by far more.
        let (m, n, k) = (48, 40, 256);
        let int = |x: usize| (x % 29) as f32 - 14.0;
        let mut a: Vec<f32> = (0..m * k).map(|i| int(i * 7 + i / k)).collect();
        let mut b: Vec<f32> = (0..n * k).map(|i| int(i * 11 + 3 * (i / k))).collect();
        for i in 0..m {
            for c in 0..k / 128 {
                a[i * k + c * 128 + (i * 5 + c) % 128] = 14.0;
            }
        }
        for c in 0..k / 128 {
            b[c * 128 + 9] = -14.0;
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
                    return Err(Error::Driver {
                        op: "fp8_mma_gemm_f32 probe 48×40×256".into(),
                        message: format!("C[{i}, {j}] = {v}, not {want}"),
                    });
                }
            }
        }
        Ok(())
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
        if p.m == 0 || p.n == 0 {
            return Ok(());
        }
        if p.k == 0 {
            return if p.accumulate {
                Ok(())
            } else {
                self.fill_at(c, p.m * p.n, 0.0)
            };
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
        let groups = g.groups();
        let ps: Vec<_> = (0..groups).map(|e| grouped::group(g, e)).collect();
        let weights = g.form != GroupedForm::Weight;
        let a_parts: Vec<Part> = ps
            .iter()
            .map(|(p, [ra, _, _])| Part {
                src: ra.start,
                rows: if p.m * p.n * p.k > 0 {
                    p.a_stored().0
                } else {
                    0
                },
                ..Part::default()
            })
            .collect();
        let b_parts: Vec<Part> = ps
            .iter()
            .enumerate()
            .map(|(e, (p, [_, rb, _]))| Part {
                src: if weights { e * stride } else { rb.start },
                rows: if p.m * p.n * p.k > 0 {
                    p.b_stored().0
                } else {
                    0
                },
                ..Part::default()
            })
            .collect();
        let dims = |outer: fn(&MatMul) -> usize| -> Vec<(usize, usize)> {
            ps.iter().map(|(p, _)| (outer(p), p.k)).collect()
        };
        let p0 = ps
            .first()
            .map(|(p, _)| *p)
            .unwrap_or(MatMul::linear(0, 0, 0));
        let (x, xp) = self.quantize_groups(
            a,
            p0.a_stored().1,
            p0.ta,
            a_mode,
            &dims(|p| p.m),
            a_parts,
            bad,
        )?;
        let (w, wp) = self.quantize_groups(
            b,
            p0.b_stored().1,
            !p0.tb,
            b_mode,
            &dims(|p| p.n),
            b_parts,
            bad,
        )?;
        let desc: Vec<i64> = ps
            .iter()
            .enumerate()
            .flat_map(|(e, (p, [_, _, rc]))| {
                let c_off = if weights { rc.start } else { e * stride };
                [
                    p.m,
                    p.n,
                    p.k,
                    xp[e].codes,
                    wp[e].codes,
                    xp[e].scales,
                    wp[e].scales,
                    c_off,
                ]
                .map(|v| v as i64)
            })
            .collect();
        self.mma_launch(&x, &w, (c, p0.n), &desc, g.accumulate)
    }

    /// Every group's operand quantized in one launch of `fp8_quantize_lt_f32` (its groups
    /// mode): group `e`'s `dims[e]` = (outer, K) operand from `parts[e]` (rows of `cols` floats
    /// at `src`, K along the rows when `k_on_rows`), its codes and scales placed one after
    /// another along the outer dimension when every group has the same K (the forward's and
    /// input gradient's operands), else along K (the weight gradient's, K the group's rows).
    /// Returns the codes and each group's place in them.
    #[allow(clippy::too_many_arguments)]
    fn quantize_groups(
        &self,
        src: u64,
        cols: usize,
        k_on_rows: bool,
        mode: Scales,
        dims: &[(usize, usize)],
        mut parts: Vec<Part>,
        bad: &mut CudaSlice<u32>,
    ) -> Result<(Codes, Vec<Part>)> {
        let same_k = dims.windows(2).all(|w| w[0].1 == w[1].1);
        let tiles = |outer: usize| outer.div_ceil(mode.tile_outer());
        // Each group's place: with one K for all, its first row of codes and of tiles (a group
        // not quantized takes none); else its first column of codes (16-byte aligned) and its
        // first K block, the outer dimension being every group's.
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
        let (outer_most, k_most) = (
            dims.iter().map(|d| d.0).max().unwrap_or(0),
            dims.iter().map(|d| d.1).max().unwrap_or(0),
        );
        // Codes `[code_rows, ld]`, scales `[tile_rows, kb]`: tile (to, tk) of group e at
        // scales[e's scales + to · kb + tk], code (o, j) at codes[e's codes + o · ld + j].
        let (code_rows, ld, tile_rows, kb) = if same_k {
            (
                rows_at,
                k_most.next_multiple_of(16),
                tiles_at,
                k_most.div_ceil(128),
            )
        } else {
            (outer_most, k_at, tiles(outer_most), kb_at)
        };
        if same_k {
            for p in parts.iter_mut() {
                (p.codes, p.scales) = (p.codes * ld, p.scales * kb);
            }
        }
        // Zeroed: codes past each group's K (to 16) and unused scales are zeros.
        let codes = self.dev.scratch::<u8>("FP8 codes", code_rows * ld)?;
        let scales = self.dev.scratch::<f32>("FP8 scales", tile_rows * kb)?;
        let desc: Vec<i64> = parts
            .iter()
            .flat_map(|p| [p.src, p.rows, p.codes, p.scales].map(|v| v as i64))
            .collect();
        let groups = parts.len();
        if groups > 0 && code_rows * ld > 0 {
            let d = self.dev.copy_in("FP8 quantization groups", &desc)?;
            let (r, c, kr, to) = (
                0i32,
                cols as i32,
                k_on_rows as i32,
                mode.tile_outer() as i32,
            );
            let (ld64, so, sk) = (ld as i64, kb as i64, 1i64);
            let mut l = self.k("fp8_quantize_lt_f32")?;
            l.arg(&src)
                .arg(&r)
                .arg(&c)
                .arg(&kr)
                .arg(&to)
                .arg(codes.p())
                .arg(&ld64)
                .arg(scales.p())
                .arg(&so)
                .arg(&sk)
                .arg(&mut *bad)
                .arg(d.p());
            let per_block = match (k_on_rows, mode) {
                (true, Scales::Vec128) => 32,
                _ => mode.tile_outer(),
            };
            let cfg = quantize_cfg(outer_most, k_most, (per_block, 128), groups);
            go("fp8_quantize_lt_f32", l, cfg)?;
        }
        let out = Codes {
            codes,
            ld,
            scales,
            strides: (kb, 1),
            mode,
        };
        Ok((out, parts))
    }

    /// One launch of `fp8_mma_gemm_f32` over `desc`'s groups (`[groups][8]`: m, n, k, the
    /// groups' places in A's and B's codes and scales, C's first element), C at `c` with rows
    /// of `ldc`.
    fn mma_launch(
        &self,
        x: &Codes,
        w: &Codes,
        (c, ldc): (u64, usize),
        desc: &[i64],
        accumulate: bool,
    ) -> Result<()> {
        let groups = desc.len() / 8;
        let most = |i: usize| desc.chunks(8).map(|d| d[i] as usize).max().unwrap_or(0);
        let (m, n) = (most(0), most(1));
        if groups == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        let d = self.dev.copy_in("FP8 GEMM groups", desc)?;
        let blk = |s: Scales| i32::from(s == Scales::Blk128);
        let (a_blk, b_blk) = (blk(x.mode), blk(w.mode));
        let (lda, ldb, ldc) = (x.ld as i64, w.ld as i64, ldc as i64);
        let (sao, sak) = (x.strides.0 as i64, x.strides.1 as i64);
        let (sbo, sbk) = (w.strides.0 as i64, w.strides.1 as i64);
        let acc = i32::from(accumulate);
        let mut l = self.k("fp8_mma_gemm_f32")?;
        l.arg(x.codes.p())
            .arg(&lda)
            .arg(x.scales.p())
            .arg(&sao)
            .arg(&sak)
            .arg(&a_blk)
            .arg(w.codes.p())
            .arg(&ldb)
            .arg(w.scales.p())
            .arg(&sbo)
            .arg(&sbk)
            .arg(&b_blk)
            .arg(&c)
            .arg(&ldc)
            .arg(d.p())
            .arg(&acc);
        let cfg = LaunchConfig {
            grid_dim: (
                n.div_ceil(128) as u32,
                m.div_ceil(128) as u32,
                groups as u32,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        go("fp8_mma_gemm_f32", l, cfg)?;
        self.fast_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}
