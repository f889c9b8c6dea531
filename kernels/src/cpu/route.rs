//! The DeepSeek-V3 router over a batch of tokens (§2.1.2), one call for all rows:
//!
//! ```text
//! s      = sigmoid(logits)                                  [tokens, experts]
//! c      = s + bias                                         for the choice only
//! groups > 1: experts cut into `groups` groups, each scored by the sum of its top-2 c
//!   (top-1 for groups of one); the top `topk_groups` groups kept, the other experts' c = −∞
//!   (as Hugging Face's `DeepseekV3TopkRouter` masks them; some older checkpoints' code filled
//!   0.0, which picks other experts when biased scores are negative)
//! idx    = top-K of c, best first (ties to the lower index, NaN never wins)   [tokens, K]
//! gates  = s[idx] / (Σ_idx s + 1e-20) · scale   (norm; else s[idx] · scale)  [tokens, K]
//! ```
//!
//! Sums add in index order from −0.0 (Rust's float `sum`), the order the CUDA kernel
//! `moe_route_f32` (cu/topk.cu) follows. The fast version runs rows in parallel with the
//! insertion top-k; the reference runs them one by one with the sorting top-k.

use rayon::prelude::*;

use super::topk::{topk, topk_ref};
use crate::backend::Route;
use crate::real::Real;

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 64;

type TopK<T> = fn(&[T], usize, &mut Vec<usize>);

/// Per-thread buffers of one row's routing.
struct Scratch<T> {
    choice: Vec<T>,
    group_scores: Vec<T>,
    pick: Vec<usize>,
    top2: Vec<usize>,
    groups: Vec<usize>,
}

impl<T: Real> Scratch<T> {
    fn new(r: Route) -> Self {
        Scratch {
            choice: vec![T::zero(); r.experts],
            group_scores: vec![T::zero(); r.groups],
            pick: Vec::with_capacity(r.k),
            top2: Vec::with_capacity(2),
            groups: Vec::with_capacity(r.topk_groups),
        }
    }
}

fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

/// One token: `logits`, `scores` `[experts]`, `idx`, `gates` `[K]`.
fn route_row<T: Real>(
    r: Route,
    tk: TopK<T>,
    sc: &mut Scratch<T>,
    (logits, bias): (&[T], &[T]),
    scores: &mut [T],
    idx: &mut [u32],
    gates: &mut [T],
) {
    for (((s, c), &l), &b) in scores.iter_mut().zip(&mut sc.choice).zip(logits).zip(bias) {
        *s = sigmoid(l);
        *c = *s + b;
    }
    if r.groups > 1 {
        let gsize = r.experts / r.groups;
        for (g, chunk) in sc.choice.chunks(gsize).enumerate() {
            tk(chunk, 2.min(gsize), &mut sc.top2);
            sc.group_scores[g] = sc.top2.iter().map(|&i| chunk[i]).sum();
        }
        tk(&sc.group_scores, r.topk_groups, &mut sc.groups);
        for (g, chunk) in sc.choice.chunks_mut(gsize).enumerate() {
            if !sc.groups.contains(&g) {
                chunk.fill(T::of(f64::NEG_INFINITY));
            }
        }
    }
    tk(&sc.choice, r.k, &mut sc.pick);
    let denom = if r.norm {
        sc.pick.iter().map(|&i| scores[i]).sum::<T>() + T::of(1e-20)
    } else {
        T::one()
    };
    for ((i, g), &e) in idx.iter_mut().zip(gates.iter_mut()).zip(&sc.pick) {
        *i = e as u32;
        *g = scores[e] / denom * T::of(r.scale);
    }
}

fn route_rows<T: Real>(
    r: Route,
    tk: TopK<T>,
    (logits, bias): (&[T], &[T]),
    scores: &mut [T],
    idx: &mut [u32],
    gates: &mut [T],
) {
    let mut sc = Scratch::new(r);
    let (e, k) = (r.experts, r.k);
    for (((l, s), i), g) in logits
        .chunks(e)
        .zip(scores.chunks_mut(e))
        .zip(idx.chunks_mut(k))
        .zip(gates.chunks_mut(k))
    {
        route_row(r, tk, &mut sc, (l, bias), s, i, g);
    }
}

/// Reference: the rows one by one, the sorting top-k.
pub fn route_ref<T: Real>(
    r: Route,
    logits: &[T],
    bias: &[T],
    scores: &mut [T],
    idx: &mut [u32],
    gates: &mut [T],
) {
    r.tokens(logits, bias, scores, idx, gates);
    route_rows(r, topk_ref, (logits, bias), scores, idx, gates);
}

/// Fast: blocks of rows in parallel, the insertion top-k (same results as [`route_ref`]).
pub fn route<T: Real>(
    r: Route,
    logits: &[T],
    bias: &[T],
    scores: &mut [T],
    idx: &mut [u32],
    gates: &mut [T],
) {
    r.tokens(logits, bias, scores, idx, gates);
    let (e, k, rows) = (r.experts, r.k, ROWS_PER_TASK);
    logits
        .par_chunks(rows * e)
        .zip(scores.par_chunks_mut(rows * e))
        .zip(idx.par_chunks_mut(rows * k))
        .zip(gates.par_chunks_mut(rows * k))
        .for_each(|(((l, s), i), g)| route_rows(r, topk, (l, bias), s, i, g));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(experts: usize, groups: usize, topk_groups: usize, k: usize, norm: bool) -> Route {
        Route {
            experts,
            groups,
            topk_groups,
            k,
            scale: 2.5,
            norm,
        }
    }

    /// Pseudo-random logits with ties and repeated values, deterministic.
    fn logits(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) % 64) as f32 / 16.0 - 2.0
            })
            .collect()
    }

    type Router = fn(Route, &[f32], &[f32], &mut [f32], &mut [u32], &mut [f32]);

    fn run(f: Router, r: Route, l: &[f32], b: &[f32]) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
        let n = l.len() / r.experts;
        let (mut s, mut i, mut g) = (vec![0.0; l.len()], vec![0; n * r.k], vec![0.0; n * r.k]);
        f(r, l, b, &mut s, &mut i, &mut g);
        (s, i, g)
    }

    #[test]
    fn the_parallel_router_gives_the_reference_bits() {
        for r in [
            setting(8, 1, 1, 2, true),
            setting(16, 4, 2, 4, true),
            setting(64, 8, 4, 6, true),
            setting(64, 8, 4, 6, false),
            setting(12, 12, 3, 3, true),
        ] {
            let n = 3 * ROWS_PER_TASK + 5;
            let l = logits(n * r.experts, r.experts as u64);
            let b = logits(r.experts, 99)
                .iter()
                .map(|v| v / 8.0)
                .collect::<Vec<_>>();
            let (s1, i1, g1) = run(route_ref, r, &l, &b);
            let (s2, i2, g2) = run(route, r, &l, &b);
            assert_eq!(i1, i2, "{r:?}");
            assert_eq!(
                s1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                s2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            assert_eq!(
                g1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                g2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn one_token_by_hand() {
        // 8 experts in 4 groups of 2, 2 groups kept, K = 2; bias 0.
        let r = setting(8, 4, 2, 2, true);
        // Group sums of the sigmoid scores decide: groups 1 (experts 2, 3) and 3 (6, 7).
        let l = [-3.0, -3.0, 1.0, 0.5, 2.0, -4.0, 0.8, 0.9f32];
        let (s, i, g) = run(route_ref, r, &l, &[0.0; 8]);
        // Group scores: 0.095, 1.35, 0.90, 1.40 → groups 3 and 1; then the top 2 of experts
        // {2, 3, 6, 7}: 2 (0.731) and 7 (0.711); expert 4 (0.881) is in a dropped group.
        assert_eq!(i, vec![2, 7]);
        let (a, b) = (s[2], s[7]);
        assert!((g[0] - a / (a + b) * 2.5).abs() < 1e-6 && (g[1] - b / (a + b) * 2.5).abs() < 1e-6);
        assert!((g[0] + g[1] - 2.5).abs() < 1e-6);
        // Without groups, expert 4 wins.
        let (_, i, _) = run(route_ref, setting(8, 1, 1, 2, true), &l, &[0.0; 8]);
        assert_eq!(i, vec![4, 2]);
    }

    #[test]
    fn the_bias_moves_the_choice_but_not_the_gates() {
        let r = setting(4, 1, 1, 1, false);
        let l = [0.0, 1.0, 0.0, 0.0f32];
        let (s, i, g) = run(route_ref, r, &l, &[0.0, 0.0, 2.0, 0.0]);
        assert_eq!(i, vec![2]);
        assert_eq!(g[0], s[2] * 2.5);
    }
}
