//! Fine-grained FP8 quantization, DeepSeek-V3 style: one scale per tile — 1 × 128 for
//! activations (per token, per 128 channels), 128 × 128 for weights, 128 × 1 for the activation
//! of the weight-gradient GEMM (quantized along the other axis). Scale = amax / max(format),
//! computed online per tile, optionally rounded up to a power of two (UE8M0). Edge tiles are
//! partial. An all-zero tile gets scale 1 (its codes are all zero).

use crate::fp8::Fp8Format;

/// How a tile's scale is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleRounding {
    /// amax / max, as is (an f32).
    Exact,
    /// Rounded up to a power of two: the UE8M0 scales of DeepSeek-V3's successors, so scaling
    /// is exact and overflow impossible.
    PowerOfTwo,
}

/// A row-major `rows × cols` matrix in FP8 with one scale per `tile_rows × tile_cols` tile.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// The FP8 format of the codes.
    pub format: Fp8Format,
    /// Rows of the matrix.
    pub rows: usize,
    /// Columns of the matrix.
    pub cols: usize,
    /// Rows of a tile (the last tile row may be shorter).
    pub tile_rows: usize,
    /// Columns of a tile (the last tile column may be narrower).
    pub tile_cols: usize,
    /// rows × cols codes, row-major.
    pub codes: Vec<u8>,
    /// ceil(rows / tile_rows) × ceil(cols / tile_cols) scales, row-major.
    pub scales: Vec<f32>,
}

impl Quantized {
    /// Tiles across a row of the matrix: `ceil(cols / tile_cols)`.
    pub fn tiles_per_row(&self) -> usize {
        self.cols.div_ceil(self.tile_cols)
    }
    /// Scale of the tile holding element (r, c).
    pub fn scale_at(&self, r: usize, c: usize) -> f32 {
        self.scales[(r / self.tile_rows) * self.tiles_per_row() + c / self.tile_cols]
    }
    /// Decoded value of (r, c) without its scale.
    pub fn raw(&self, r: usize, c: usize) -> f32 {
        self.format.decode(self.codes[r * self.cols + c])
    }
    /// The matrix back in f32: code value × tile scale.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            for c in 0..self.cols {
                out[r * self.cols + c] = self.raw(r, c) * self.scale_at(r, c);
            }
        }
        out
    }
}

/// Quantizes `x` (`rows × cols`, row-major) with `tile_rows × tile_cols` tiles.
pub fn quantize(
    x: &[f32],
    rows: usize,
    cols: usize,
    tile_rows: usize,
    tile_cols: usize,
    format: Fp8Format,
    rounding: ScaleRounding,
) -> Quantized {
    assert_eq!(x.len(), rows * cols, "x is not {rows} × {cols}");
    assert!(tile_rows > 0 && tile_cols > 0);
    let (tr, tc) = (rows.div_ceil(tile_rows), cols.div_ceil(tile_cols));
    let mut scales = vec![1.0f32; tr * tc];
    for ti in 0..tr {
        for tj in 0..tc {
            let mut amax = 0.0f32;
            for r in ti * tile_rows..((ti + 1) * tile_rows).min(rows) {
                for c in tj * tile_cols..((tj + 1) * tile_cols).min(cols) {
                    amax = amax.max(x[r * cols + c].abs());
                }
            }
            if amax > 0.0 && amax.is_finite() {
                let s = amax / format.max();
                scales[ti * tc + tj] = match rounding {
                    ScaleRounding::Exact => s,
                    ScaleRounding::PowerOfTwo => 2f32.powi(s.log2().ceil() as i32),
                };
            }
        }
    }
    let mut codes = vec![0u8; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let s = scales[(r / tile_rows) * tc + c / tile_cols];
            codes[r * cols + c] = format.encode_saturating(x[r * cols + c] / s);
        }
    }
    Quantized {
        format,
        rows,
        cols,
        tile_rows,
        tile_cols,
        codes,
        scales,
    }
}

/// Quantizes `x` (`rows × cols`, row-major) to FP8 with `tile_rows × tile_cols` tiles and
/// writes back the values an FP8 GEMM computes with: code value × tile scale (exactly
/// representable in f32). Rows are processed in bands of `tile_rows` in parallel. A tile whose
/// amax is not finite cannot be scaled: it is set to NaN (so the loss shows it) and counted in
/// the return value, never silently saturated.
pub fn fake_quantize(
    x: &mut [f32],
    rows: usize,
    cols: usize,
    tile_rows: usize,
    tile_cols: usize,
    format: Fp8Format,
    rounding: ScaleRounding,
) -> usize {
    use rayon::prelude::*;
    assert_eq!(x.len(), rows * cols, "x is not {rows} × {cols}");
    assert!(tile_rows > 0 && tile_cols > 0);
    if cols == 0 {
        return 0;
    }
    x.par_chunks_mut(tile_rows * cols)
        .map(|band| {
            let band_rows = band.len() / cols;
            let mut bad = 0;
            for c0 in (0..cols).step_by(tile_cols) {
                let c1 = (c0 + tile_cols).min(cols);
                let mut amax = 0.0f32;
                let mut nan = false;
                for r in 0..band_rows {
                    for v in &band[r * cols + c0..r * cols + c1] {
                        amax = amax.max(v.abs());
                        nan |= v.is_nan();
                    }
                }
                if nan || !amax.is_finite() {
                    bad += 1;
                    for r in 0..band_rows {
                        band[r * cols + c0..r * cols + c1].fill(f32::NAN);
                    }
                    continue;
                }
                if amax == 0.0 {
                    continue;
                }
                let s = amax / format.max();
                let s = match rounding {
                    ScaleRounding::Exact => s,
                    ScaleRounding::PowerOfTwo => 2f32.powi(s.log2().ceil() as i32),
                };
                for r in 0..band_rows {
                    for v in &mut band[r * cols + c0..r * cols + c1] {
                        *v = match format {
                            // Bit-arithmetic rounding, equal to the codec (test in fp8.rs).
                            Fp8Format::E4M3 => crate::fp8::round_e4m3(*v / s) * s,
                            _ => format.decode(format.encode_saturating(*v / s)) * s,
                        };
                    }
                }
            }
            bad
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                ((i * 2_654_435_761usize % 1000) as f32 / 500.0 - 1.0)
                    * (1.0 + (i % 7) as f32 * 10.0)
            })
            .collect()
    }

    #[test]
    fn fake_quantize_equals_quantize_then_dequantize_and_flags_non_finite_tiles() {
        let (rows, cols) = (300, 260);
        let x = data(rows, cols);
        for (tr, tc) in [(1, 128), (128, 128), (128, 1)] {
            let q = quantize(
                &x,
                rows,
                cols,
                tr,
                tc,
                Fp8Format::E4M3,
                ScaleRounding::Exact,
            );
            let mut y = x.clone();
            assert_eq!(
                fake_quantize(
                    &mut y,
                    rows,
                    cols,
                    tr,
                    tc,
                    Fp8Format::E4M3,
                    ScaleRounding::Exact
                ),
                0
            );
            assert_eq!(y, q.dequantize(), "tiles {tr}×{tc}");
        }
        let mut y = x.clone();
        y[5 * cols + 200] = f32::INFINITY;
        y[290 * cols + 3] = f32::NAN;
        assert_eq!(
            fake_quantize(
                &mut y,
                rows,
                cols,
                1,
                128,
                Fp8Format::E4M3,
                ScaleRounding::Exact
            ),
            2
        );
        assert!(
            y[5 * cols + 130].is_nan() && y[5 * cols + 127].is_finite(),
            "only the bad tile"
        );
        assert!(
            y[4 * cols + 130].is_finite(),
            "1 × 128 tiles: the row above is untouched"
        );
    }

    #[test]
    fn scales_are_amax_over_448_and_errors_are_bounded_per_tile() {
        let (rows, cols) = (3, 300); // 1 × 128 tiles: 3 per row, the last one partial (44 wide)
        let x = data(rows, cols);
        let q = quantize(
            &x,
            rows,
            cols,
            1,
            128,
            Fp8Format::E4M3,
            ScaleRounding::Exact,
        );
        assert_eq!(q.scales.len(), 9);
        for r in 0..rows {
            for t in 0..3 {
                let tile: Vec<f32> = (t * 128..((t + 1) * 128).min(cols))
                    .map(|c| x[r * cols + c])
                    .collect();
                let amax = tile.iter().fold(0f32, |a, v| a.max(v.abs()));
                assert_eq!(q.scales[r * 3 + t], amax / 448.0, "row {r} tile {t}");
            }
        }
        let back = q.dequantize();
        for (i, (a, b)) in x.iter().zip(&back).enumerate() {
            // E4M3 keeps 3 mantissa bits: relative error ≤ 2^-4 for normal values; below the
            // normal range the absolute error is ≤ half the subnormal step times the scale.
            let s = q.scale_at(i / cols, i % cols);
            let bound = (a.abs() * 2f32.powi(-4)).max(s * 2f32.powi(-10));
            assert!((a - b).abs() <= bound * 1.0001, "element {i}: {a} → {b}");
        }
    }

    #[test]
    fn power_of_two_scales_and_zero_tiles() {
        let mut x = data(130, 130);
        for v in x.iter_mut().take(130 * 128) {
            *v = 0.0; // rows 0..128: the first 128 × 128 block is all zero
        }
        let q = quantize(
            &x,
            130,
            130,
            128,
            128,
            Fp8Format::E4M3,
            ScaleRounding::PowerOfTwo,
        );
        assert_eq!(q.scales.len(), 4);
        assert_eq!(q.scales[0], 1.0, "all-zero tile");
        for &s in &q.scales {
            assert_eq!(s.log2().fract(), 0.0, "{s} is a power of two");
        }
        // No code saturates: a power-of-two scale ≥ amax / 448.
        for (i, &c) in q.codes.iter().enumerate() {
            let v = q.format.decode(c).abs();
            assert!(
                v <= 448.0
                    && (v < 448.0 || x[i].abs() / q.scale_at(i / 130, i % 130) >= 448.0 - 16.0)
            );
        }
    }

    #[test]
    fn transposed_tiles_for_the_weight_gradient() {
        let x = data(256, 4);
        let q = quantize(&x, 256, 4, 128, 1, Fp8Format::E4M3, ScaleRounding::Exact);
        assert_eq!((q.scales.len(), q.tiles_per_row()), (8, 4));
        let col0: f32 = (0..128).map(|r| x[r * 4].abs()).fold(0.0, f32::max);
        assert_eq!(q.scale_at(5, 0), col0 / 448.0);
    }
}
