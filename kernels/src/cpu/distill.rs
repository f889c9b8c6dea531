//! The distillation loss over rows of logits `[rows, vocab]`: softmax cross-entropy against
//! the targets beside the KL divergence from a teacher's top-K next-token distribution.
//!
//! For a row with logits `z`, target `t` and teacher entries `(id_i, ℓ_i)`, i < K (log-
//! probabilities of the teacher at temperature 1), at temperature `T`:
//!
//! ```text
//! q_i   = softmax(ℓ / T)_i                       the teacher's top-K, renormalised
//! log p = z / T − logsumexp(z / T)               the student over the whole vocabulary
//! KL    = Σ_i q_i · (log q_i − log p_{id_i})
//! ∂KL/∂z_j = (p_j − Σ_{i: id_i = j} q_i) / T
//! ```
//!
//! Storing the teacher at temperature 1 is enough: `ℓ / T` differs from the teacher's logits
//! divided by `T` by a constant per row, which the renormalisation removes. The caller weights
//! the two terms (`g_ce`, `g_kl` per row; Hinton's `α·T²` goes into `g_kl`). A row whose first
//! teacher id is [`ABSENT`] has no teacher entry: its KL is 0 and only the cross-entropy acts.
//! Sums run in f64 whatever `T` is.

use rayon::prelude::*;

use crate::backend::IGNORE;
use crate::real::Real;

/// Teacher id marking a position without teacher entries (a document's last token, padding).
pub const ABSENT: u32 = u32::MAX;

/// A teacher's top-K entries per row: `ids [rows, k]`, `logp [rows, k]`.
#[derive(Debug, Clone, Copy)]
pub struct TeacherTopK<'a> {
    /// Entries per row.
    pub k: usize,
    /// Token ids; `ids[r·k] == ABSENT` when row `r` has none.
    pub ids: &'a [u32],
    /// The teacher's log-probabilities of those ids (temperature 1).
    pub logp: &'a [f32],
}

impl TeacherTopK<'_> {
    /// Whether row `r` has teacher entries.
    pub fn has(&self, r: usize) -> bool {
        self.ids[r * self.k] != ABSENT
    }
}

/// Per-row weights of the backward: `∂L/∂ce_r` and `∂L/∂kl_r`.
#[derive(Debug, Clone, Copy)]
pub struct DistillGrad<'a, T> {
    /// Weight of each row's cross-entropy.
    pub ce: &'a [T],
    /// Weight of each row's KL term.
    pub kl: &'a [T],
}

/// The renormalised teacher distribution at temperature `t` of one row.
fn teacher_q(logp: &[f32], t: f64, q: &mut [f64]) {
    let m = logp
        .iter()
        .fold(f64::NEG_INFINITY, |a, &b| a.max(f64::from(b) / t));
    let mut s = 0.0;
    for (qi, &l) in q.iter_mut().zip(logp) {
        *qi = (f64::from(l) / t - m).exp();
        s += *qi;
    }
    for qi in q.iter_mut() {
        *qi /= s;
    }
}

/// One row: returns (cross-entropy, KL); with `g = Some((g_ce, g_kl))` the row becomes its
/// gradient.
fn row<T: Real>(
    z: &mut [T],
    target: u32,
    teacher: Option<(&[u32], &[f32])>,
    t: f64,
    g: Option<(f64, f64)>,
) -> (f64, f64) {
    let m = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b.f64()));
    let lse1 = m + z.iter().map(|&x| (x.f64() - m).exp()).sum::<f64>().ln();
    let ce = if target == IGNORE {
        0.0
    } else {
        lse1 - z[target as usize].f64()
    };
    let mut kl = 0.0;
    let mut q = Vec::new();
    let mut lse_t = 0.0;
    if let Some((ids, logp)) = teacher {
        lse_t = m / t
            + z.iter()
                .map(|&x| ((x.f64() - m) / t).exp())
                .sum::<f64>()
                .ln();
        q = vec![0.0; ids.len()];
        teacher_q(logp, t, &mut q);
        for (&id, &qi) in ids.iter().zip(&q) {
            if qi > 0.0 {
                kl += qi * (qi.ln() - (z[id as usize].f64() / t - lse_t));
            }
        }
    }
    if let Some((g_ce, g_kl)) = g {
        let g_ce = if target == IGNORE { 0.0 } else { g_ce };
        let g_kl = if teacher.is_some() { g_kl / t } else { 0.0 };
        for x in z.iter_mut() {
            let v = x.f64();
            let mut d = g_ce * (v - lse1).exp();
            if g_kl != 0.0 {
                d += g_kl * (v / t - lse_t).exp();
            }
            *x = T::of(d);
        }
        if target != IGNORE {
            z[target as usize] -= T::of(g_ce);
        }
        if let Some((ids, _)) = teacher {
            for (&id, &qi) in ids.iter().zip(&q) {
                z[id as usize] -= T::of(g_kl * qi);
            }
        }
    }
    (ce, kl)
}

fn check(rows: usize, vocab: usize, targets: &[u32], teacher: &TeacherTopK<'_>) {
    assert_eq!(targets.len(), rows, "targets");
    assert!(teacher.k > 0, "a teacher with no entries per row");
    assert_eq!(teacher.ids.len(), rows * teacher.k, "teacher ids");
    assert_eq!(
        teacher.logp.len(),
        rows * teacher.k,
        "teacher log-probabilities"
    );
    for &t in targets {
        assert!(
            t == IGNORE || (t as usize) < vocab,
            "target {t} outside the vocabulary of {vocab}"
        );
    }
    for r in 0..rows {
        let ids = &teacher.ids[r * teacher.k..(r + 1) * teacher.k];
        assert!(
            ids[0] == ABSENT || ids.iter().all(|&i| (i as usize) < vocab),
            "teacher id outside the vocabulary of {vocab} in row {r}: {ids:?}"
        );
    }
}

/// The distillation loss of every row (`ce [rows]`, `kl [rows]`, 0 where the target is
/// [`IGNORE`] or the teacher [`ABSENT`]); with `grad`, the logits `[rows, vocab]` become
/// `g.ce[r]·∂CE/∂z + g.kl[r]·∂KL/∂z` in place. Rows in parallel; `temperature` > 0.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_kl<T: Real>(
    logits: &mut [T],
    vocab: usize,
    targets: &[u32],
    teacher: &TeacherTopK<'_>,
    temperature: f64,
    grad: Option<DistillGrad<'_, T>>,
    ce: &mut [T],
    kl: &mut [T],
) {
    let rows = ce.len();
    assert_eq!(logits.len(), rows * vocab, "logits");
    assert_eq!(kl.len(), rows, "kl");
    assert!(temperature > 0.0, "temperature {temperature}");
    check(rows, vocab, targets, teacher);
    let k = teacher.k;
    logits
        .par_chunks_mut(vocab)
        .zip(ce.par_iter_mut().zip(kl.par_iter_mut()))
        .enumerate()
        .for_each(|(r, (z, (c, l)))| {
            let te = teacher.has(r).then(|| {
                (
                    &teacher.ids[r * k..(r + 1) * k],
                    &teacher.logp[r * k..(r + 1) * k],
                )
            });
            let g = grad.map(|g| (g.ce[r].f64(), g.kl[r].f64()));
            let (a, b) = row(z, targets[r], te, temperature, g);
            *c = T::of(a);
            *l = T::of(b);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// Rows: a normal one, one without teacher, one with an ignored target, one whose teacher
    /// repeats the target.
    fn case() -> (Vec<f64>, Vec<u32>, Vec<u32>, Vec<f32>, usize) {
        let v = 11;
        let mut seed = 7;
        let logits: Vec<f64> = (0..4 * v).map(|_| 3.0 * lcg(&mut seed)).collect();
        let targets = vec![2, 5, IGNORE, 9];
        let ids = vec![2, 7, 0, ABSENT, ABSENT, ABSENT, 4, 1, 10, 9, 3, 6];
        // log-probabilities of a distribution whose top-3 these are (sum < 1)
        let logp = vec![
            -0.4f32, -1.6, -2.5, 0.0, 0.0, 0.0, -0.9, -1.1, -3.0, -0.2, -2.2, -2.9,
        ];
        (logits, targets, ids, logp, v)
    }

    fn loss(z: &[f64], targets: &[u32], t: &TeacherTopK<'_>, temp: f64, wce: f64, wkl: f64) -> f64 {
        let rows = targets.len();
        let (mut ce, mut kl) = (vec![0.0; rows], vec![0.0; rows]);
        let mut z = z.to_vec();
        let v = z.len() / rows;
        cross_entropy_kl(&mut z, v, targets, t, temp, None, &mut ce, &mut kl);
        wce * ce.iter().sum::<f64>() + wkl * kl.iter().sum::<f64>()
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let (logits, targets, ids, logp, v) = case();
        let t = TeacherTopK {
            k: 3,
            ids: &ids,
            logp: &logp,
        };
        for temp in [1.0, 2.0, 0.7] {
            let (wce, wkl) = (0.3, 1.7);
            let rows = targets.len();
            let mut g = logits.clone();
            let (mut ce, mut kl) = (vec![0.0; rows], vec![0.0; rows]);
            let gce = vec![wce; rows];
            let gkl = vec![wkl; rows];
            cross_entropy_kl(
                &mut g,
                v,
                &targets,
                &t,
                temp,
                Some(DistillGrad { ce: &gce, kl: &gkl }),
                &mut ce,
                &mut kl,
            );
            let h = 1e-6;
            let mut worst = 0.0f64;
            for j in 0..logits.len() {
                let mut a = logits.clone();
                a[j] += h;
                let mut b = logits.clone();
                b[j] -= h;
                let fd = (loss(&a, &targets, &t, temp, wce, wkl)
                    - loss(&b, &targets, &t, temp, wce, wkl))
                    / (2.0 * h);
                worst = worst.max((fd - g[j]).abs());
            }
            assert!(worst < 1e-8, "T = {temp}: worst |fd − analytic| {worst:e}");
            // the ignored row keeps only its KL gradient, the teacher-less row only its CE's
            assert!(g[2 * v..3 * v].iter().any(|&x| x != 0.0));
            assert!(kl[1] == 0.0 && ce[2] == 0.0 && kl[0] > 0.0 && ce[0] > 0.0);
        }
    }

    #[test]
    fn kl_is_zero_when_the_student_is_the_teacher() {
        // A student whose softmax equals the teacher's renormalised top-K (the other logits
        // far below): KL ≈ 0 at any temperature, and the gradient vanishes.
        let v = 6;
        let ids = [4u32, 1];
        let logp = [(0.75f64).ln() as f32, (0.25f64).ln() as f32];
        let mut z = vec![-80.0f64; v];
        z[4] = 0.75f64.ln();
        z[1] = 0.25f64.ln();
        let t = TeacherTopK {
            k: 2,
            ids: &ids,
            logp: &logp,
        };
        for temp in [1.0, 3.0] {
            let (mut ce, mut kl) = ([0.0], [0.0]);
            let mut g = z.clone();
            cross_entropy_kl(
                &mut g,
                v,
                &[IGNORE],
                &t,
                temp,
                Some(DistillGrad {
                    ce: &[1.0],
                    kl: &[1.0],
                }),
                &mut ce,
                &mut kl,
            );
            assert!(kl[0].abs() < 1e-7, "T = {temp}: KL {}", kl[0]);
            assert!(g.iter().all(|x| x.abs() < 1e-7), "T = {temp}: {g:?}");
        }
    }

    #[test]
    fn f32_rows_agree_with_f64() {
        let (logits, targets, ids, logp, v) = case();
        let t = TeacherTopK {
            k: 3,
            ids: &ids,
            logp: &logp,
        };
        let rows = targets.len();
        let (mut ce64, mut kl64) = (vec![0.0f64; rows], vec![0.0f64; rows]);
        let mut g64 = logits.clone();
        let w64 = vec![0.5f64; rows];
        cross_entropy_kl(
            &mut g64,
            v,
            &targets,
            &t,
            2.0,
            Some(DistillGrad { ce: &w64, kl: &w64 }),
            &mut ce64,
            &mut kl64,
        );
        let mut g32: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
        let (mut ce32, mut kl32) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        let w32 = vec![0.5f32; rows];
        cross_entropy_kl(
            &mut g32,
            v,
            &targets,
            &t,
            2.0,
            Some(DistillGrad { ce: &w32, kl: &w32 }),
            &mut ce32,
            &mut kl32,
        );
        for (a, b) in g32.iter().zip(&g64) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{a} vs {b}");
        }
        for r in 0..rows {
            assert!((f64::from(kl32[r]) - kl64[r]).abs() < 1e-6);
            assert!((f64::from(ce32[r]) - ce64[r]).abs() < 1e-5);
        }
    }
}
