//! loss.cu against kernels/src/cpu/loss.rs: cross-entropy forward (losses, log-sum-exp),
//! backward from a saved log-sum-exp, and the fused pass, with ignored targets, vocabularies
//! smaller than a warp and not multiples of the block, large logits, and the reference's
//! results for NaN, +inf and −inf logits.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::backend::IGNORE;
use tokenmill_kernels::cpu::loss::{
    cross_entropy_bwd_ref, cross_entropy_fused_ref, cross_entropy_fwd_ref,
};
use tokenmill_kernels::rng::Rng;

// Every buffer ends at a page with no access: a kernel reading past one faults.
#[global_allocator]
static HEAP: tokenmill_cuda_emu::GuardedAlloc = tokenmill_cuda_emu::GuardedAlloc;

unsafe extern "C" {
    fn cross_entropy_fwd_f32(
        logits: *const f32,
        targets: *const u32,
        vocab: i32,
        losses: *mut f32,
        lse: *mut f32,
        rows: i32,
    );
    fn cross_entropy_bwd_f32(
        logits: *mut f32,
        targets: *const u32,
        lse: *const f32,
        g: *const f32,
        vocab: i32,
        rows: i32,
    );
    fn cross_entropy_fused_f32(
        logits: *mut f32,
        targets: *const u32,
        g: *const f32,
        vocab: i32,
        losses: *mut f32,
        lse: *mut f32,
        rows: i32,
    );
}

const BLOCK: u32 = 256;

/// `a` equals `b` within `tol`, NaN matching NaN and infinities matching exactly.
fn close(a: f32, b: f32, tol: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol
}

struct Case {
    logits: Vec<f32>,
    targets: Vec<u32>,
    g: Vec<f32>,
    vocab: usize,
}

impl Case {
    fn rows(&self) -> usize {
        self.targets.len()
    }

    fn random(rng: &mut Rng, rows: usize, vocab: usize, scale: f32) -> Case {
        let logits = (0..rows * vocab)
            .map(|_| rng.normal() as f32 * scale)
            .collect();
        let targets = (0..rows)
            .map(|r| {
                if r % 3 == 1 {
                    IGNORE
                } else {
                    rng.below(vocab) as u32
                }
            })
            .collect();
        let g = (0..rows).map(|_| rng.uniform() as f32 + 0.1).collect();
        Case {
            logits,
            targets,
            g,
            vocab,
        }
    }

    /// The kernels' forward: (losses, lse).
    fn fwd(&self) -> (Vec<f32>, Vec<f32>) {
        let rows = self.rows();
        let (mut losses, mut lse) = (vec![0f32; rows], vec![0f32; rows]);
        let (lp, tp, op, sp) = (
            Ptr::of_const(&self.logits),
            Ptr::of_const(&self.targets),
            Ptr::of(&mut losses),
            Ptr::of(&mut lse),
        );
        let vocab = self.vocab as i32;
        launch((rows as u32, 1, 1), (BLOCK, 1, 1), 0, || {
            // SAFETY: logits: rows × vocab; targets, losses, lse: rows; alive for the launch.
            unsafe { cross_entropy_fwd_f32(lp.c(), tp.c(), vocab, op.p(), sp.p(), rows as i32) }
        });
        (losses, lse)
    }

    /// The kernels' backward from `lse`: dlogits.
    fn bwd(&self, lse: &[f32]) -> Vec<f32> {
        let rows = self.rows();
        let mut d = self.logits.clone();
        let (dp, tp, sp, gp) = (
            Ptr::of(&mut d),
            Ptr::of_const(&self.targets),
            Ptr::of_const(lse),
            Ptr::of_const(&self.g),
        );
        let vocab = self.vocab as i32;
        launch((rows as u32, 1, 1), (BLOCK, 1, 1), 0, || {
            // SAFETY: logits: rows × vocab; targets, lse, g: rows; alive for the launch.
            unsafe { cross_entropy_bwd_f32(dp.p(), tp.c(), sp.c(), gp.c(), vocab, rows as i32) }
        });
        d
    }

    /// The kernels' fused pass: (dlogits, losses, lse).
    fn fused(&self) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let rows = self.rows();
        let mut d = self.logits.clone();
        let (mut losses, mut lse) = (vec![0f32; rows], vec![0f32; rows]);
        let (dp, tp, gp, op, sp) = (
            Ptr::of(&mut d),
            Ptr::of_const(&self.targets),
            Ptr::of_const(&self.g),
            Ptr::of(&mut losses),
            Ptr::of(&mut lse),
        );
        let vocab = self.vocab as i32;
        launch((rows as u32, 1, 1), (BLOCK, 1, 1), 0, || {
            // SAFETY: logits: rows × vocab; targets, g, losses, lse: rows; alive for the launch.
            unsafe {
                cross_entropy_fused_f32(dp.p(), tp.c(), gp.c(), vocab, op.p(), sp.p(), rows as i32)
            }
        });
        (d, losses, lse)
    }

    fn check(&self, what: &str) {
        let (rows, vocab) = (self.rows(), self.vocab);
        let (mut rl, mut rs) = (vec![0f32; rows], vec![0f32; rows]);
        cross_entropy_fwd_ref(&self.logits, &self.targets, vocab, &mut rl, &mut rs);
        let (losses, lse) = self.fwd();
        // The sums are in another order: the log-sum-exp agrees to a few ulp of its size.
        let tol = |r: usize| 4e-6 * rs[r].abs().max(1.0);
        for r in 0..rows {
            assert!(
                close(lse[r], rs[r], tol(r)),
                "{what}: lse[{r}] {} vs {}",
                lse[r],
                rs[r]
            );
            assert!(
                close(losses[r], rl[r], tol(r)),
                "{what}: loss[{r}] {} vs {}",
                losses[r],
                rl[r]
            );
            if self.targets[r] == IGNORE {
                assert_eq!(losses[r], 0.0, "{what}: ignored row {r}");
            }
        }
        // The backward from the reference's lse: the same operations, so to the last bits.
        let mut rd = self.logits.clone();
        cross_entropy_bwd_ref(&mut rd, &self.targets, &rs, &self.g, vocab);
        let d = self.bwd(&rs);
        for i in 0..rows * vocab {
            let g = self.g[i / vocab];
            assert!(
                close(d[i], rd[i], 1e-7 * g),
                "{what}: bwd dlogits[{i}] {} vs {}",
                d[i],
                rd[i]
            );
        }
        // Fused: the forward's lse, then its gradient.
        let mut fd = self.logits.clone();
        let (mut fl, mut fs) = (vec![0f32; rows], vec![0f32; rows]);
        cross_entropy_fused_ref(&mut fd, &self.targets, &self.g, vocab, &mut fl, &mut fs);
        let (d, losses, lse) = self.fused();
        for r in 0..rows {
            assert!(
                close(lse[r], fs[r], tol(r)) && close(losses[r], fl[r], tol(r)),
                "{what}: fused row {r}: ({}, {}) vs ({}, {})",
                losses[r],
                lse[r],
                fl[r],
                fs[r]
            );
        }
        for i in 0..rows * vocab {
            let r = i / vocab;
            // exp(x − lse) carries the lse's error relative to the probability.
            assert!(
                close(d[i], fd[i], 2.0 * tol(r) * self.g[r]),
                "{what}: fused dlogits[{i}] {} vs {}",
                d[i],
                fd[i]
            );
            if self.targets[r] == IGNORE {
                assert_eq!(d[i], 0.0, "{what}: ignored row {r} has a zero gradient");
            }
        }
    }
}

#[test]
fn random_rows_with_ignored_targets() {
    let mut rng = Rng::new(9);
    for (rows, vocab, scale) in [
        (6, 1000, 3.0),
        (4, 7, 1.0),
        (3, 256, 2.0),
        (2, 1, 1.0),
        (3, 4099, 1.0),
    ] {
        Case::random(&mut rng, rows, vocab, scale).check(&format!("{rows}×{vocab}"));
    }
}

#[test]
fn large_logits() {
    let mut rng = Rng::new(10);
    // Spread logits (most probabilities underflow), and a large common offset.
    Case::random(&mut rng, 3, 500, 300.0).check("spread");
    let mut c = Case::random(&mut rng, 3, 500, 1.0);
    for v in c.logits.iter_mut() {
        *v += 1e6;
    }
    c.check("offset");
    let mut c = Case::random(&mut rng, 2, 300, 1.0);
    c.logits[5] = 3e38;
    c.logits[300 + 7] = -3e38;
    c.check("near the f32 limits");
}

#[test]
fn non_finite_logits_as_the_reference() {
    let mut rng = Rng::new(11);
    let vocab = 300;
    let mut c = Case::random(&mut rng, 7, vocab, 1.0);
    c.targets = vec![2, 5, 9, 0, 1, 299, IGNORE];
    c.logits[10] = f32::NAN; // row 0: NaN
    c.logits[vocab + 100] = f32::INFINITY; // row 1: +inf maximum
    c.logits[2 * vocab..3 * vocab].fill(f32::NEG_INFINITY); // row 2: all −inf
    // Row 3: −inf logits among finite ones (the first ones each thread sees), not the target.
    for j in (1..vocab).step_by(2) {
        c.logits[3 * vocab + j] = f32::NEG_INFINITY;
    }
    c.logits[4 * vocab + 1] = f32::NEG_INFINITY; // row 4: the target's logit −inf: loss +inf
    c.logits[5 * vocab..6 * vocab].fill(f32::NAN); // row 5: all NaN
    c.logits[6 * vocab + 3] = f32::NAN; // row 6: NaN in an ignored row
    c.check("non-finite");
    // A NaN in a lane whose warp-reduction partner has no finite logit either (lane 0: −inf,
    // lane 16: NaN): the NaN must survive that merge.
    let mut c = Case::random(&mut rng, 2, 20, 1.0);
    c.targets = vec![3, IGNORE];
    for r in 0..2 {
        c.logits[r * 20] = f32::NEG_INFINITY;
        c.logits[r * 20 + 16] = f32::NAN;
    }
    c.check("NaN against −inf in the warp reduction");
}

#[test]
fn a_target_outside_the_vocabulary_gives_a_nan_loss_and_no_read_past_the_row() {
    // The backends refuse such targets before launching (`check_targets`); the kernels still
    // must not read the logit at a target past the row (the next row's, or past the buffer on
    // the last row) and report it as a loss. Rows 0 and 2: targets vocab and vocab + 5, the
    // first on row 1's logits, the second past the three rows.
    let mut rng = Rng::new(12);
    let vocab = 40;
    let mut c = Case::random(&mut rng, 3, vocab, 1.0);
    c.targets = vec![vocab as u32, 3, vocab as u32 + 5];
    // One more row of logits after the case's three (the kernels run on the targets' rows),
    // so that a read past the last row stays inside the allocation and would give a number.
    c.logits.extend(std::iter::repeat_n(1.0f32, vocab));
    let (losses, lse) = c.fwd();
    let (_, fl, fs) = c.fused();
    for r in [0, 2] {
        assert!(losses[r].is_nan(), "forward loss of row {r}: {}", losses[r]);
        assert!(fl[r].is_nan(), "fused loss of row {r}: {}", fl[r]);
        assert!(lse[r].is_finite() && fs[r].is_finite(), "lse of row {r}");
    }
    assert!(losses[1].is_finite() && fl[1].is_finite(), "the valid row");
}
