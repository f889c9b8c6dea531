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
use crate::backend::{Balance, Route};
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

/// The router's backward for one token `t` (of its sequence `b`): `ds` `[experts]` from its
/// scores, its experts and their gates' gradients, through the gates' normalisation, the
/// balance loss and the sigmoid:
///
/// ```text
/// norm:  z = Σ_j s[idx_j] + 1e-20;  dot = Σ_j dg_j · s[idx_j] / z;  ds[idx_j] += scale / z · (dg_j − dot)
/// else:  ds[idx_j] += scale · dg_j
/// balance (f64):  Z = Σ_i s_i;  c_i = coef[b, i] / (S·B);  ds_i += (c_i − Σ_i c_i·s_i/Z) / Z
/// ds_i ·= s_i · (1 − s_i)
/// ```
///
/// Sums from −0.0 in index order, as the trainer always added them.
fn route_bwd_row<T: Real>(
    r: Route,
    (st, sel, dg): (&[T], &[u32], &[T]),
    balance: Option<(&[f64], f64)>,
    ds: &mut [T],
) {
    ds.fill(T::zero());
    let scale = T::of(r.scale);
    if r.norm {
        let z = sel.iter().map(|&i| st[i as usize]).sum::<T>() + T::of(1e-20);
        let dot: T = sel
            .iter()
            .zip(dg)
            .map(|(&i, &g)| g * st[i as usize])
            .sum::<T>()
            / z;
        for (&i, &g) in sel.iter().zip(dg) {
            ds[i as usize] += scale / z * (g - dot);
        }
    } else {
        for (&i, &g) in sel.iter().zip(dg) {
            ds[i as usize] += scale * g;
        }
    }
    if let Some((coef, denom)) = balance {
        let z: f64 = st.iter().map(|v| v.f64()).sum();
        let c = |i: usize| coef[i] / denom;
        let dot: f64 = (0..st.len()).map(|i| c(i) * st[i].f64() / z).sum();
        for (i, d) in ds.iter_mut().enumerate() {
            *d += T::of((c(i) - dot) / z);
        }
    }
    for (d, &sv) in ds.iter_mut().zip(st) {
        *d *= sv * (T::one() - sv);
    }
}

/// Checks the router backward's buffers (a device backend checks them so before its kernel
/// indexes with the experts unchecked); returns the tokens.
pub fn check_bwd<T>(
    r: Route,
    scores: &[T],
    idx: &[u32],
    dgates: &[T],
    balance: Option<Balance<'_>>,
    ds: &[T],
) -> usize {
    let (e, k) = (r.experts, r.k);
    let n = scores.len() / e.max(1);
    assert_eq!(
        scores.len(),
        n * e,
        "route backward: scores not [tokens, {e}]"
    );
    assert_eq!(idx.len(), n * k, "route backward: idx");
    assert_eq!(dgates.len(), n * k, "route backward: gate gradients");
    assert_eq!(ds.len(), n * e, "route backward: logit gradients");
    assert!(
        idx.iter().all(|&i| (i as usize) < e),
        "route backward: an expert past {e}"
    );
    if let Some(b) = balance {
        assert!(
            b.seq > 0 && n.is_multiple_of(b.seq),
            "route backward: {n} tokens in sequences of {}",
            b.seq
        );
        assert_eq!(
            b.coef.len(),
            n / b.seq * e,
            "route backward: balance coefficients"
        );
    }
    n
}

/// The balance coefficients of token `t` and the divisor S·B.
fn balance_of<'a>(b: Option<Balance<'a>>, e: usize, t: usize) -> Option<(&'a [f64], f64)> {
    b.map(|b| {
        let s = t / b.seq;
        (&b.coef[s * e..(s + 1) * e], (b.seq * b.sequences) as f64)
    })
}

/// Reference backward of [`route_ref`]: `ds` `[tokens, experts]`, the gradient of the router's
/// logits, token by token (`route_bwd_row`).
pub fn route_bwd_ref<T: Real>(
    r: Route,
    scores: &[T],
    idx: &[u32],
    dgates: &[T],
    balance: Option<Balance<'_>>,
    ds: &mut [T],
) {
    let n = check_bwd(r, scores, idx, dgates, balance, ds);
    let (e, k) = (r.experts, r.k);
    for t in 0..n {
        route_bwd_row(
            r,
            (
                &scores[t * e..(t + 1) * e],
                &idx[t * k..(t + 1) * k],
                &dgates[t * k..(t + 1) * k],
            ),
            balance_of(balance, e, t),
            &mut ds[t * e..(t + 1) * e],
        );
    }
}

/// [`route_bwd_ref`] with the tokens in parallel (each token's arithmetic unchanged).
pub fn route_bwd<T: Real>(
    r: Route,
    scores: &[T],
    idx: &[u32],
    dgates: &[T],
    balance: Option<Balance<'_>>,
    ds: &mut [T],
) {
    check_bwd(r, scores, idx, dgates, balance, ds);
    let (e, k) = (r.experts, r.k);
    ds.par_chunks_mut(e).enumerate().for_each(|(t, d)| {
        route_bwd_row(
            r,
            (
                &scores[t * e..(t + 1) * e],
                &idx[t * k..(t + 1) * k],
                &dgates[t * k..(t + 1) * k],
            ),
            balance_of(balance, e, t),
            d,
        )
    });
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

    #[test]
    fn the_parallel_backward_gives_the_reference_bits_and_the_finite_difference() {
        for (r, bal) in [
            (setting(16, 4, 2, 4, true), true),
            (setting(16, 4, 2, 4, false), false),
            (setting(64, 8, 4, 6, true), false),
        ] {
            let (seq, b) = (ROWS_PER_TASK + 3, 2);
            let n = seq * b;
            let l = logits(n * r.experts, 3 + r.experts as u64);
            let bias = vec![0.0f32; r.experts];
            let (s, i, _) = run(route, r, &l, &bias);
            let dg: Vec<f32> = logits(n * r.k, 5).iter().map(|v| v / 3.0).collect();
            let coef: Vec<f64> = (0..b * r.experts).map(|x| 0.01 * (x % 7) as f64).collect();
            let balance = bal.then_some(Balance {
                coef: &coef,
                seq,
                sequences: b,
            });
            let (mut d1, mut d2) = (vec![0.0f32; n * r.experts], vec![0.0f32; n * r.experts]);
            route_bwd_ref(r, &s, &i, &dg, balance, &mut d1);
            route_bwd(r, &s, &i, &dg, balance, &mut d2);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&d1), bits(&d2), "{r:?}");
            // Against a central difference of L = Σ dg·gates (+ the balance loss) in f64, at
            // one logit of token 1, with the experts held fixed.
            let (t, x) = (1usize, i[r.k] as usize);
            let loss = |lx: f64| -> f64 {
                let e = r.experts;
                let mut row: Vec<f64> = l[t * e..(t + 1) * e].iter().map(|&v| v as f64).collect();
                row[x] = lx;
                let sg: Vec<f64> = row.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
                let sel = &i[t * r.k..(t + 1) * r.k];
                let z: f64 = if r.norm {
                    sel.iter().map(|&j| sg[j as usize]).sum()
                } else {
                    1.0
                };
                let mut out: f64 = sel
                    .iter()
                    .zip(&dg[t * r.k..(t + 1) * r.k])
                    .map(|(&j, &g)| g as f64 * sg[j as usize] / z * r.scale)
                    .sum();
                if bal {
                    let zz: f64 = sg.iter().sum();
                    out += (0..e)
                        .map(|j| coef[j] / (seq * b) as f64 * sg[j] / zz)
                        .sum::<f64>();
                }
                out
            };
            let l0 = l[t * r.experts + x] as f64;
            let h = 1e-4;
            let fd = (loss(l0 + h) - loss(l0 - h)) / (2.0 * h);
            let got = d1[t * r.experts + x] as f64;
            assert!(
                (got - fd).abs() < 1e-4 * (1.0 + fd.abs()),
                "{r:?}: {got} vs {fd}"
            );
        }
    }
}
