//! The model's gradients against central finite differences in f64 (every tensor, MoE routing
//! and MTP included), the fast backend against the reference, and deferred weight gradients
//! against immediate ones.

use tokenmill_kernels::{Backend, Cpu, CpuReference};
use tokenmill_trainer::ModelConfig;
use tokenmill_trainer::model::{Batch, LossWeights, Model, WgradMode};
use tokenmill_trainer::ops::WgradQueue;
use tokenmill_trainer::params::ParamKind;
use tokenmill_trainer::rng::Rng;

fn tiny(mtp: usize, q_lora: bool, n_group: usize) -> ModelConfig {
    let mut c = ModelConfig::preset("tiny").unwrap();
    c.vocab_size = 48;
    c.num_nextn_predict_layers = mtp;
    c.n_group = n_group;
    c.topk_group = if n_group > 1 { n_group / 2 } else { 1 };
    if !q_lora {
        c.q_lora_rank = 0;
    }
    c.initializer_range = 0.2;
    c
}

/// Parameters with every kind of tensor away from its trivial value: random norm scales and
/// routing biases too.
fn params(m: &Model, seed: u64) -> Vec<f64> {
    let mut p: Vec<f64> = m.init(seed);
    let mut rng = Rng::new(seed + 99);
    for s in &m.layout.specs {
        match s.kind {
            ParamKind::Norm => p[s.range.clone()]
                .iter_mut()
                .for_each(|x| *x = 1.0 + 0.2 * rng.normal()),
            ParamKind::Buffer => p[s.range.clone()]
                .iter_mut()
                .for_each(|x| *x = 0.05 * rng.normal()),
            _ => {}
        }
    }
    p
}

fn batch(m: &Model, b: usize, s: usize, seed: u64) -> (Vec<u32>, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let v = m.cfg.vocab_size as u64;
    let tokens = (0..b * (s + 1))
        .map(|_| (rng.next_u64() % v) as u32)
        .collect();
    let mask = (0..b * s).map(|i| u8::from(i % 7 != 3)).collect();
    (tokens, mask)
}

fn loss(m: &Model, be: &dyn Backend<f64>, p: &[f64], bt: &Batch<'_>, w: LossWeights) -> f64 {
    m.forward(be, p, bt, w, false).unwrap().loss
}

fn grads(
    m: &Model,
    be: &dyn Backend<f64>,
    p: &[f64],
    bt: &Batch<'_>,
    w: LossWeights,
    mode: WgradMode,
) -> Vec<f64> {
    let mut f = m.forward(be, p, bt, w, true).unwrap();
    let mut g = vec![0.0; p.len()];
    let mut q = WgradQueue::new();
    m.backward(be, p, &mut f, &mut g, &mut q, mode);
    q.flush(be, &m.layout, &mut g);
    g
}

/// Every trainable tensor: a directional derivative along a random direction, and three
/// single entries, against central differences.
fn gradcheck(cfg: ModelConfig, w: LossWeights) {
    gradcheck_with(cfg, w, None, None)
}

/// Teacher records for `rows` positions: `k` distinct ids with the log-probabilities of a
/// random distribution's top-k (every fifth position without records).
fn teacher_records(vocab: usize, rows: usize, k: usize, seed: u64) -> (Vec<u32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let (mut ids, mut logp) = (Vec::new(), Vec::new());
    for r in 0..rows {
        if r % 5 == 2 {
            ids.extend(std::iter::repeat_n(u32::MAX, k));
            logp.extend(std::iter::repeat_n(0.0f32, k));
            continue;
        }
        let z: Vec<f64> = (0..vocab).map(|_| 2.0 * rng.normal()).collect();
        let lse = z.iter().map(|x| x.exp()).sum::<f64>().ln();
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
        for &i in &order[..k] {
            ids.push(i as u32);
            logp.push((z[i] - lse) as f32);
        }
    }
    (ids, logp)
}

/// [`gradcheck`] over a batch of 2 × 9 with document starts `starts` (attention reset) and
/// distillation `(k, α, T)`.
fn gradcheck_with(
    cfg: ModelConfig,
    w: LossWeights,
    starts: Option<&[u32]>,
    distill: Option<(usize, f64, f64)>,
) {
    let m = Model::new(cfg).unwrap();
    let p = params(&m, 7);
    let (tokens, mask) = batch(&m, 2, 9, 8);
    let records = distill.map(|(k, _, _)| teacher_records(m.cfg.vocab_size, 18, k, 5));
    let bt = Batch {
        starts,
        distill: distill
            .zip(records.as_ref())
            .map(
                |((k, alpha, temperature), (ids, logp))| tokenmill_trainer::model::Distill {
                    teacher: tokenmill_kernels::cpu::distill::TeacherTopK { k, ids, logp },
                    alpha,
                    temperature,
                },
            ),
        tokens: &tokens,
        mask: Some(&mask),
        b: 2,
        s: 9,
    };
    let be = CpuReference;
    let g = grads(&m, &be, &p, &bt, w, WgradMode::Immediate);
    let h = 1e-5;
    let mut rng = Rng::new(3);
    let mut checked = 0;
    for s in m.layout.specs.iter() {
        let r = s.range.clone();
        if !s.trainable() {
            assert!(
                g[r].iter().all(|&x| x == 0.0),
                "{}: a buffer gets no gradient",
                s.name
            );
            continue;
        }
        let dir: Vec<f64> = (0..r.len()).map(|_| rng.normal()).collect();
        let mut entries: Vec<Option<usize>> = vec![None];
        entries.extend((0..3).map(|_| Some((rng.next_u64() % r.len() as u64) as usize)));
        for e in entries {
            let (mut pp, mut pm) = (p.clone(), p.clone());
            let mut analytic = 0.0;
            for (i, &dv) in dir.iter().enumerate() {
                let dv = match e {
                    None => dv,
                    Some(j) if j == i => 1.0,
                    Some(_) => 0.0,
                };
                pp[r.start + i] += h * dv;
                pm[r.start + i] -= h * dv;
                analytic += g[r.start + i] * dv;
            }
            let numeric = (loss(&m, &be, &pp, &bt, w) - loss(&m, &be, &pm, &bt, w)) / (2.0 * h);
            let tol = 1e-7 + 1e-5 * numeric.abs().max(analytic.abs());
            assert!(
                (numeric - analytic).abs() <= tol,
                "{} {e:?}: numeric {numeric:e} vs analytic {analytic:e}",
                s.name
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} checks");
}

#[test]
fn gradcheck_full_model_with_moe_routing_mtp_and_balance_loss() {
    gradcheck(
        tiny(2, true, 2),
        LossWeights {
            mtp_lambda: 0.3,
            balance_alpha: 0.01,
        },
    );
}

#[test]
fn gradcheck_with_attention_reset_at_document_boundaries() {
    // Sample 0 packs documents of 4, 1 and 4 tokens; sample 1 is one document.
    let starts = [0, 0, 0, 0, 4, 5, 5, 5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    gradcheck_with(
        tiny(1, true, 2),
        LossWeights {
            mtp_lambda: 0.3,
            balance_alpha: 0.01,
        },
        Some(&starts),
        None,
    );
}

#[test]
fn gradcheck_with_distillation_from_a_teacher_top_k() {
    // The main loss is (1 − α)·CE + α·T²·KL against 4 teacher entries per position (some
    // positions without), at two temperatures; MoE, MTP and the balance loss stay on.
    for (alpha, t) in [(0.5, 2.0), (0.8, 1.0)] {
        gradcheck_with(
            tiny(1, true, 2),
            LossWeights {
                mtp_lambda: 0.3,
                balance_alpha: 0.01,
            },
            None,
            Some((4, alpha, t)),
        );
    }
}

/// Distillation with α = 0 is the plain cross-entropy (same loss, same gradient), and the
/// KL it reports is positive; with α = 1 the cross-entropy no longer acts.
#[test]
fn distillation_alpha_zero_is_cross_entropy() {
    let m = Model::new(tiny(1, true, 2)).unwrap();
    let p = params(&m, 7);
    let (tokens, mask) = batch(&m, 2, 9, 8);
    let (ids, logp) = teacher_records(m.cfg.vocab_size, 18, 4, 5);
    let w = LossWeights {
        mtp_lambda: 0.3,
        balance_alpha: 0.01,
    };
    let plain = Batch {
        starts: None,
        distill: None,
        tokens: &tokens,
        mask: Some(&mask),
        b: 2,
        s: 9,
    };
    let with = |alpha: f64| Batch {
        distill: Some(tokenmill_trainer::model::Distill {
            teacher: tokenmill_kernels::cpu::distill::TeacherTopK {
                k: 4,
                ids: &ids,
                logp: &logp,
            },
            alpha,
            temperature: 2.0,
        }),
        ..plain
    };
    let be = CpuReference;
    let f0 = m.forward(&be, &p, &plain, w, false).unwrap();
    let f1 = m.forward(&be, &p, &with(0.0), w, false).unwrap();
    assert!(
        (f0.loss - f1.loss).abs() < 1e-12,
        "{} vs {}",
        f0.loss,
        f1.loss
    );
    assert!(f1.distill_kl.unwrap() > 0.0);
    let g0 = grads(&m, &be, &p, &plain, w, WgradMode::Immediate);
    let g1 = grads(&m, &be, &p, &with(0.0), w, WgradMode::Immediate);
    let worst = g0
        .iter()
        .zip(&g1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-12, "α = 0 changes the gradient by {worst:e}");
    let f2 = m.forward(&be, &p, &with(1.0), w, false).unwrap();
    let kl = f2.distill_kl.unwrap();
    let expect = 4.0 * kl + 0.3 * f2.mtp_losses[0] + f2.balance_loss;
    assert!((f2.loss - expect).abs() < 1e-10, "{} vs {expect}", f2.loss);
}

/// With attention reset, a document packed after another gets the same per-token losses as
/// when it is the whole sample (RoPE depends on relative positions only, and routing is per
/// token), to rounding; without reset it sees the first document and its losses change.
#[test]
fn attention_reset_makes_packed_documents_independent() {
    let m = Model::new(tiny(1, true, 2)).unwrap();
    let p = params(&m, 21);
    let (tokens, _) = batch(&m, 1, 16, 22);
    let w = LossWeights {
        mtp_lambda: 0.3,
        balance_alpha: 0.0,
    };
    // Document A: tokens 0..6; document B: tokens 6..17 (inputs 6..16, targets 7..17).
    let a = 6;
    let starts: Vec<u32> = (0..16).map(|i| if i < a { 0 } else { a as u32 }).collect();
    let packed = |starts: Option<&[u32]>| {
        let bt = Batch {
            starts,
            distill: None,
            tokens: &tokens,
            mask: None,
            b: 1,
            s: 16,
        };
        m.forward(&CpuReference, &p, &bt, w, false)
            .unwrap()
            .token_losses
    };
    let alone = {
        let bt = Batch {
            starts: None,
            distill: None,
            tokens: &tokens[a..],
            mask: None,
            b: 1,
            s: 16 - a,
        };
        m.forward(&CpuReference, &p, &bt, w, false)
            .unwrap()
            .token_losses
    };
    let reset = packed(Some(&starts));
    for (i, (x, y)) in reset[a..].iter().zip(&alone).enumerate() {
        // Rounding only: RoPE angles of other absolute positions (the table holds f32 angles).
        assert!(
            (x - y).abs() < 1e-7,
            "token {i} of B: {x} packed vs {y} alone"
        );
    }
    let plain = packed(None);
    let moved = plain[a..]
        .iter()
        .zip(&alone)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        moved > 1e-3,
        "without reset B's losses should see A (moved {moved})"
    );
    // Document A's losses are the same either way: causal attention never looks ahead.
    for i in 0..a {
        assert!((reset[i] - plain[i]).abs() < 1e-12, "token {i} of A");
    }
}

#[test]
fn gradcheck_plain_query_single_group_no_mtp() {
    gradcheck(
        tiny(0, false, 1),
        LossWeights {
            mtp_lambda: 0.0,
            balance_alpha: 0.0,
        },
    );
}

#[test]
fn fast_backend_matches_reference() {
    let m = Model::new(tiny(1, true, 2)).unwrap();
    let p = params(&m, 11);
    let (tokens, mask) = batch(&m, 3, 12, 12);
    let bt = Batch {
        starts: None,
        distill: None,
        tokens: &tokens,
        mask: Some(&mask),
        b: 3,
        s: 12,
    };
    let w = LossWeights {
        mtp_lambda: 0.3,
        balance_alpha: 0.01,
    };
    let fr = m.forward(&CpuReference, &p, &bt, w, false).unwrap();
    let ff = m.forward(&Cpu, &p, &bt, w, false).unwrap();
    assert!(
        (fr.loss - ff.loss).abs() < 1e-12,
        "{} vs {}",
        fr.loss,
        ff.loss
    );
    for (a, b) in fr.moe.iter().zip(&ff.moe) {
        assert_eq!(a.load, b.load, "same routing");
        assert!((a.balance_loss - b.balance_loss).abs() < 1e-15);
    }
    let gr = grads(&m, &CpuReference, &p, &bt, w, WgradMode::Immediate);
    let gf = grads(&m, &Cpu, &p, &bt, w, WgradMode::Immediate);
    let scale = gr.iter().fold(0.0f64, |a, &b| a.max(b.abs()));
    for (i, (a, b)) in gr.iter().zip(&gf).enumerate() {
        assert!((a - b).abs() <= 1e-10 * scale, "param {i}: {a} vs {b}");
    }
}

#[test]
fn deferred_weight_gradients_equal_immediate_ones_bitwise() {
    let m = Model::new(tiny(1, true, 2)).unwrap();
    let p: Vec<f32> = m.init(5);
    let (tokens, mask) = batch(&m, 2, 16, 6);
    let bt = Batch {
        starts: None,
        distill: None,
        tokens: &tokens,
        mask: Some(&mask),
        b: 2,
        s: 16,
    };
    let w = LossWeights::default();
    let run = |mode: WgradMode| {
        let mut f = m.forward(&Cpu, &p, &bt, w, true).unwrap();
        let mut g = vec![0f32; p.len()];
        let mut q = WgradQueue::new();
        m.backward(&Cpu, &p, &mut f, &mut g, &mut q, mode);
        let pending = q.len();
        let before = g.clone();
        q.flush(&Cpu, &m.layout, &mut g);
        (before, g, pending)
    };
    let (imm_before, imm, imm_pending) = run(WgradMode::Immediate);
    let (def_before, def, def_pending) = run(WgradMode::Deferred);
    assert_eq!(imm_pending, 0);
    assert!(def_pending > 20, "{def_pending} deferred operations");
    assert_eq!(imm_before, imm);
    assert!(
        def_before.iter().all(|&x| x == 0.0),
        "the input-gradient pass writes no weight gradient"
    );
    assert_eq!(imm, def);
    assert!(imm.iter().any(|&x| x != 0.0));
}

#[test]
fn token_losses_and_loads_are_reported() {
    let mut cfg = tiny(1, true, 2);
    cfg.initializer_range = 0.02;
    let m = Model::new(cfg).unwrap();
    let p: Vec<f64> = m.init(1);
    let (tokens, mask) = batch(&m, 2, 10, 2);
    let bt = Batch {
        starts: None,
        distill: None,
        tokens: &tokens,
        mask: Some(&mask),
        b: 2,
        s: 10,
    };
    let f = m
        .forward(&Cpu, &p, &bt, LossWeights::default(), false)
        .unwrap();
    assert_eq!(f.token_losses.len(), 20);
    let counted: Vec<f64> = f
        .token_losses
        .iter()
        .zip(&mask)
        .filter(|(_, m)| **m == 1)
        .map(|(l, _)| *l)
        .collect();
    let mean = counted.iter().sum::<f64>() / counted.len() as f64;
    assert!((mean - f.main_loss).abs() < 1e-12);
    // A fresh model predicts nearly uniformly: loss ≈ ln V.
    assert!((f.main_loss - (48f64).ln()).abs() < 0.1, "{}", f.main_loss);
    // One MoE layer in the main model and one in the MTP block; every token routes to K experts.
    assert_eq!(f.moe.len(), 2);
    assert_eq!(f.moe[0].load.iter().sum::<u64>(), 20 * 2);
    assert_eq!(f.moe[1].load.iter().sum::<u64>(), 18 * 2);
}

#[test]
fn bad_batches_are_refused() {
    let m = Model::new(tiny(1, true, 2)).unwrap();
    let p: Vec<f32> = m.init(1);
    let toks = vec![1u32; 2 * 9];
    let w = LossWeights::default();
    let e = m
        .forward(
            &Cpu,
            &p,
            &Batch {
                starts: None,
                distill: None,
                tokens: &toks,
                mask: None,
                b: 2,
                s: 9,
            },
            w,
            false,
        )
        .unwrap_err();
    assert!(e.to_string().contains("expected"), "{e}");
    let mut toks = vec![1u32; 2 * 10];
    toks[5] = 48;
    let e = m
        .forward(
            &Cpu,
            &p,
            &Batch {
                starts: None,
                distill: None,
                tokens: &toks,
                mask: None,
                b: 2,
                s: 9,
            },
            w,
            false,
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("token id 48 is outside the model's vocabulary of 48"),
        "{e}"
    );
}

#[test]
fn bf16_and_fp8_gemms_perturb_the_loss_slightly_and_only_where_they_apply() {
    use tokenmill_trainer::ops::Precision;
    let mut cfg = tiny(1, true, 2);
    cfg.initializer_range = 0.1;
    let mut m = Model::new(cfg).unwrap();
    let p: Vec<f32> = m.init(3);
    let (tokens, mask) = batch(&m, 2, 40, 4);
    let bt = Batch {
        starts: None,
        distill: None,
        tokens: &tokens,
        mask: Some(&mask),
        b: 2,
        s: 40,
    };
    let w = LossWeights::default();
    let mut run = |pr: Precision| {
        m.precision = pr;
        let mut f = m.forward(&Cpu, &p, &bt, w, true).unwrap();
        let mut g = vec![0f32; p.len()];
        let mut q = WgradQueue::new();
        m.backward(&Cpu, &p, &mut f, &mut g, &mut q, WgradMode::Immediate);
        (f.loss, g)
    };
    let (l32, g32) = run(Precision::Fp32);
    let (l16, g16) = run(Precision::Bf16);
    let (l8, g8) = run(Precision::Fp8);
    let rel = |a: f64| (a - l32).abs() / l32;
    eprintln!(
        "loss fp32 {l32:.6} bf16 {l16:.6} ({:.2e}) fp8 {l8:.6} ({:.2e})",
        rel(l16),
        rel(l8)
    );
    assert!(
        rel(l16) > 0.0 && rel(l16) < 1e-2,
        "bf16 {l16} vs fp32 {l32}"
    );
    assert!(rel(l8) > 0.0 && rel(l8) < 3e-2, "fp8 {l8} vs fp32 {l32}");
    assert!(g8.iter().chain(&g16).all(|x| x.is_finite()));
    // Gradients agree in direction with FP32's.
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
        let na: f64 = a.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        dot / (na * nb)
    };
    assert!(cos(&g32, &g16) > 0.999, "{}", cos(&g32, &g16));
    assert!(cos(&g32, &g8) > 0.95, "{}", cos(&g32, &g8));
}

/// The model moves its rows (head reshapes, residual adds, MoE gathers and scatters) with the
/// backend's operations, or on the host for a backend that copies every call (the CUDA one;
/// `Metered` says the same): the same bits either way.
#[test]
fn rows_moved_on_the_host_or_by_the_backend_give_the_same_bits() {
    use tokenmill_kernels::backend::Metered;
    let m = Model::new(tiny(1, true, 2)).unwrap();
    let p: Vec<f32> = m.init(8);
    let (tokens, mask) = batch(&m, 2, 16, 9);
    let bt = Batch {
        starts: None,
        distill: None,
        tokens: &tokens,
        mask: Some(&mask),
        b: 2,
        s: 16,
    };
    let w = LossWeights {
        mtp_lambda: 0.3,
        balance_alpha: 0.01,
    };
    let host = Metered::new(&Cpu as &dyn Backend<f32>);
    assert!(!host.moves_data() && Backend::<f32>::moves_data(&Cpu));
    let on = |be: &dyn Backend<f32>| {
        let mut f = m.forward(be, &p, &bt, w, true).unwrap();
        let mut g = vec![0f32; p.len()];
        let mut q = WgradQueue::new();
        m.backward(be, &p, &mut f, &mut g, &mut q, WgradMode::Immediate);
        q.flush(be, &m.layout, &mut g);
        (
            f.loss.to_bits(),
            g.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        )
    };
    let (a, b) = (on(&host), on(&Cpu));
    assert_eq!(a.0, b.0, "loss");
    assert!(a.1 == b.1, "gradients differ");
    // Both paths ran: the metered backend saw no data movement, only compute.
    let t = host.traffic();
    assert!(t.contains_key("matmul") && !t.contains_key("copy") && !t.contains_key("gather_rows"));
}
