//! Row gathers and scatters by index: the MoE layer's dispatch (each expert's input rows out of
//! the tokens) and combine (each expert's output rows, weighted by their gates, added back to
//! their tokens) as backend operations. Rows are `d` elements; an optional `scale` multiplies
//! row `i` (one rounded product per element, then, for the scatter, one rounded sum). The
//! scatter's target rows must be distinct (an expert sees a token at most once), so every
//! element gets one term per call and the order of calls is the order of the terms: the bits
//! do not depend on the backend. A row's dot with the table row it came from (a gate's
//! gradient) adds its terms in order from the first. The CUDA kernels are `gather_rows_f32`,
//! `scatter_add_rows_f32` and `dot_rows_f32` (cu/rows.cu).

use rayon::prelude::*;

use crate::real::Real;

/// Rows per parallel task of the fast gather.
const ROWS_PER_TASK: usize = 16;

/// Panics unless the shapes agree and every index is a row of the table: `table` `[n, d]` the
/// side indexed, `dense` `[rows, d]` the other (a device backend checks this before its kernels
/// index unchecked).
pub fn check_rows<T>(table: &[T], d: usize, rows: &[u32], scale: Option<&[T]>, dense: &[T]) {
    assert!(d > 0 || dense.is_empty(), "rows of width 0");
    assert_eq!(dense.len(), rows.len() * d, "{} rows of {d}", rows.len());
    if let Some(s) = scale {
        assert_eq!(s.len(), rows.len(), "one scale per row");
    }
    let n = table.len() / d.max(1);
    assert_eq!(table.len(), n * d, "the table is whole rows of {d}");
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= n) {
        panic!("row {r} outside a table of {n} rows");
    }
}

/// Panics if a target row repeats (`n` rows in the target).
pub fn check_distinct(rows: &[u32], n: usize) {
    let mut seen = vec![false; n];
    for &r in rows {
        assert!(
            !std::mem::replace(&mut seen[r as usize], true),
            "row {r} is a scatter target twice"
        );
    }
}

fn gather_row<T: Real>(src: &[T], scale: Option<T>, dst: &mut [T]) {
    match scale {
        Some(g) => {
            for (y, &x) in dst.iter_mut().zip(src) {
                *y = g * x;
            }
        }
        None => dst.copy_from_slice(src),
    }
}

fn scatter_row<T: Real>(src: &[T], scale: Option<T>, dst: &mut [T]) {
    match scale {
        Some(g) => {
            for (y, &x) in dst.iter_mut().zip(src) {
                *y += g * x;
            }
        }
        None => {
            for (y, &x) in dst.iter_mut().zip(src) {
                *y += x;
            }
        }
    }
}

/// `dst[i] = src[rows[i]] (· scale[i])`; src `[n, d]`, dst `[rows, d]`. One row at a time.
pub fn gather_rows_ref<T: Real>(
    src: &[T],
    d: usize,
    rows: &[u32],
    scale: Option<&[T]>,
    dst: &mut [T],
) {
    check_rows(src, d, rows, scale, dst);
    for (i, &r) in rows.iter().enumerate() {
        let r = r as usize;
        gather_row(
            &src[r * d..(r + 1) * d],
            scale.map(|s| s[i]),
            &mut dst[i * d..(i + 1) * d],
        );
    }
}

/// [`gather_rows_ref`] with blocks of rows in parallel.
pub fn gather_rows<T: Real>(src: &[T], d: usize, rows: &[u32], scale: Option<&[T]>, dst: &mut [T]) {
    check_rows(src, d, rows, scale, dst);
    if d == 0 {
        return;
    }
    dst.par_chunks_mut(ROWS_PER_TASK * d)
        .enumerate()
        .for_each(|(b, block)| {
            for (j, out) in block.chunks_mut(d).enumerate() {
                let i = b * ROWS_PER_TASK + j;
                let r = rows[i] as usize;
                gather_row(&src[r * d..(r + 1) * d], scale.map(|s| s[i]), out);
            }
        });
}

/// `dst[rows[i]] += src[i] (· scale[i])`; src `[rows, d]`, dst `[n, d]`, the rows distinct.
/// One row at a time.
pub fn scatter_add_rows_ref<T: Real>(
    src: &[T],
    d: usize,
    rows: &[u32],
    scale: Option<&[T]>,
    dst: &mut [T],
) {
    check_rows(dst, d, rows, scale, src);
    check_distinct(rows, dst.len() / d.max(1));
    for (i, &r) in rows.iter().enumerate() {
        let r = r as usize;
        scatter_row(
            &src[i * d..(i + 1) * d],
            scale.map(|s| s[i]),
            &mut dst[r * d..(r + 1) * d],
        );
    }
}

/// [`scatter_add_rows_ref`] with the target rows in parallel (each has one source row).
pub fn scatter_add_rows<T: Real>(
    src: &[T],
    d: usize,
    rows: &[u32],
    scale: Option<&[T]>,
    dst: &mut [T],
) {
    check_rows(dst, d, rows, scale, src);
    let n = dst.len() / d.max(1);
    check_distinct(rows, n);
    if d == 0 {
        return;
    }
    // The source row of each target row, if any.
    let mut from = vec![u32::MAX; n];
    for (i, &r) in rows.iter().enumerate() {
        from[r as usize] = i as u32;
    }
    dst.par_chunks_mut(d)
        .zip(from.par_iter())
        .filter(|(_, i)| **i != u32::MAX)
        .for_each(|(out, &i)| {
            let i = i as usize;
            scatter_row(&src[i * d..(i + 1) * d], scale.map(|s| s[i]), out);
        });
}

/// `out[i] = Σ_c table[rows[i], c] · src[i, c]`, the terms added one by one from c = 0 (a
/// rounded product, then a rounded sum): each row of `src` `[rows, d]` dotted with the table row
/// it belongs to (a MoE gate's gradient: the token's output gradient · the expert's output).
pub fn dot_rows_ref<T: Real>(table: &[T], d: usize, rows: &[u32], src: &[T], out: &mut [T]) {
    check_rows(table, d, rows, None, src);
    assert_eq!(out.len(), rows.len(), "one dot per row");
    for (i, &r) in rows.iter().enumerate() {
        out[i] = dot(
            &table[r as usize * d..(r as usize + 1) * d],
            &src[i * d..(i + 1) * d],
        );
    }
}

/// [`dot_rows_ref`] with the rows in parallel (each dot still in order).
pub fn dot_rows<T: Real>(table: &[T], d: usize, rows: &[u32], src: &[T], out: &mut [T]) {
    check_rows(table, d, rows, None, src);
    assert_eq!(out.len(), rows.len(), "one dot per row");
    if d == 0 {
        out.fill(T::zero());
        return;
    }
    out.par_iter_mut()
        .zip(src.par_chunks(d))
        .zip(rows.par_iter())
        .for_each(|((o, x), &r)| *o = dot(&table[r as usize * d..(r as usize + 1) * d], x));
}

fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut s = T::zero();
    for (&x, &y) in a.iter().zip(b) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.normal() as f32).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn gather_and_scatter_match_their_references_and_invert_each_other() {
        let (n, d) = (300, 72);
        let table = random(n * d, 1);
        // An expert's tokens: every third, ascending.
        let rows: Vec<u32> = (0..n as u32).filter(|t| t % 3 == 1).collect();
        let gates = random(rows.len(), 2);
        for scale in [None, Some(&gates[..])] {
            let (mut a, mut f) = (vec![0.0; rows.len() * d], vec![0.0; rows.len() * d]);
            gather_rows_ref(&table, d, &rows, scale, &mut a);
            gather_rows(&table, d, &rows, scale, &mut f);
            assert_eq!(bits(&a), bits(&f));
            let i = 5;
            let r = rows[i] as usize;
            let g = scale.map_or(1.0, |s| s[i]);
            assert_eq!(f[i * d + 7], g * table[r * d + 7]);
            let base = random(n * d, 3);
            let (mut a2, mut f2) = (base.clone(), base.clone());
            scatter_add_rows_ref(&a, d, &rows, scale, &mut a2);
            scatter_add_rows(&a, d, &rows, scale, &mut f2);
            assert_eq!(bits(&a2), bits(&f2));
            // Untouched rows keep their values; a touched one gained its row.
            assert_eq!(f2[0..d], base[0..d]);
            assert_eq!(f2[r * d + 7], base[r * d + 7] + g * a[i * d + 7]);
        }
    }

    #[test]
    fn row_dots_match_their_reference_and_a_plain_sum() {
        let (n, d) = (50, 300);
        let table = random(n * d, 4);
        let rows: Vec<u32> = (0..n as u32).rev().step_by(2).collect();
        let src = random(rows.len() * d, 5);
        let (mut a, mut f) = (vec![0.0; rows.len()], vec![0.0; rows.len()]);
        dot_rows_ref(&table, d, &rows, &src, &mut a);
        dot_rows(&table, d, &rows, &src, &mut f);
        assert_eq!(bits(&a), bits(&f));
        let r = rows[3] as usize;
        let want: f64 = (0..d)
            .map(|c| table[r * d + c] as f64 * src[3 * d + c] as f64)
            .sum();
        assert!((f[3] as f64 - want).abs() < 1e-4, "{} vs {want}", f[3]);
    }

    #[test]
    #[should_panic(expected = "scatter target twice")]
    fn a_repeated_scatter_target_is_refused() {
        let mut dst = vec![0.0f32; 8];
        scatter_add_rows(&[1.0f32; 4], 2, &[1, 1], None, &mut dst);
    }

    #[test]
    #[should_panic(expected = "outside a table of 4 rows")]
    fn an_index_past_the_table_is_refused() {
        let mut dst = vec![0.0f32; 4];
        gather_rows(&[1.0f32; 8], 2, &[0, 4], None, &mut dst);
    }
}
