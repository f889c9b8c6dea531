//! adamw.cu against the AdamW step of trainer/src/optim.rs (`AdamW::step`), transcribed below
//! with its f64 scalar set-up (the trainer crate is not a dependency of the emulator): bit for
//! bit over several steps, decayed and not, with BF16 moments and a clip scale.
use tokenmill_cuda_emu::{Ptr, launch};
use tokenmill_kernels::bf16::round_bf16;
use tokenmill_kernels::rng::Rng;

unsafe extern "C" {
    fn adamw_f32(
        p: *mut f32,
        g: *const f32,
        m: *mut f32,
        v: *mut f32,
        n: i64,
        step_size: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        bc2_sqrt: f32,
        decay: f32,
        grad_scale: f32,
        decayed: i32,
        bf16_moments: i32,
    );
}

const BLOCK: u32 = 256;

/// optim.rs's `AdamWConfig`.
#[derive(Debug, Clone, Copy)]
struct Cfg {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    bf16_moments: bool,
}

/// The step's f32 scalars, computed as `AdamW::step` does:
/// (step_size, beta1, beta2, eps, bc2_sqrt, decay, grad_scale).
fn scalars(c: Cfg, t: u64, lr: f64, clip_scale: f64) -> [f32; 7] {
    let bc1 = 1.0 - c.beta1.powi(t as i32);
    let bc2 = 1.0 - c.beta2.powi(t as i32);
    [
        (lr / bc1) as f32,
        c.beta1 as f32,
        c.beta2 as f32,
        c.eps as f32,
        bc2.sqrt() as f32,
        (1.0 - lr * c.weight_decay) as f32,
        clip_scale as f32,
    ]
}

/// The element loop of `AdamW::step` for a buffer of one kind (1 = decayed, 0 = not).
#[allow(clippy::needless_range_loop)] // optim.rs's loop, as written there
fn step_ref(c: Cfg, t: u64, lr: f64, clip: f64, decayed: bool, st: &mut State, g: &[f32]) {
    let [step, b1, b2, eps, bc2_sqrt, decay, scale] = scalars(c, t, lr, clip);
    for i in 0..st.p.len() {
        let gi = g[i] * scale;
        st.m[i] = b1 * st.m[i] + (1.0 - b1) * gi;
        st.v[i] = b2 * st.v[i] + (1.0 - b2) * gi * gi;
        if c.bf16_moments {
            st.m[i] = round_bf16(st.m[i]);
            st.v[i] = round_bf16(st.v[i]);
        }
        if decayed {
            st.p[i] *= decay;
        }
        st.p[i] -= step * st.m[i] / (st.v[i].sqrt() / bc2_sqrt + eps);
    }
}

#[derive(Debug, Clone, PartialEq)]
struct State {
    p: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

fn step_gpu(c: Cfg, t: u64, lr: f64, clip: f64, decayed: bool, st: &mut State, g: &[f32]) {
    let [step, b1, b2, eps, bc2_sqrt, decay, scale] = scalars(c, t, lr, clip);
    let n = st.p.len();
    let (pp, gp, mp, vp) = (
        Ptr::of(&mut st.p),
        Ptr::of_const(g),
        Ptr::of(&mut st.m),
        Ptr::of(&mut st.v),
    );
    let grid = n.div_ceil(BLOCK as usize).clamp(1, 65535) as u32;
    let (dec, bf) = (i32::from(decayed), i32::from(c.bf16_moments));
    launch((grid, 1, 1), (BLOCK, 1, 1), 0, || {
        // SAFETY: p, g, m, v: n elements each, alive for the launch.
        unsafe {
            adamw_f32(
                pp.p(),
                gp.c(),
                mp.p(),
                vp.p(),
                n as i64,
                step,
                b1,
                b2,
                eps,
                bc2_sqrt,
                decay,
                scale,
                dec,
                bf,
            )
        }
    });
}

fn bits(s: &State) -> Vec<[u32; 3]> {
    (0..s.p.len())
        .map(|i| [s.p[i].to_bits(), s.m[i].to_bits(), s.v[i].to_bits()])
        .collect()
}

#[test]
fn steps_are_the_trainers_bit_for_bit() {
    let mut rng = Rng::new(17);
    let n = 700; // not a multiple of the block
    for (decayed, bf16_moments, clip) in [
        (true, false, 1.0),
        (false, false, 1.0),
        (true, true, 0.37),
        (false, true, 1.0),
    ] {
        let c = Cfg {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            bf16_moments,
        };
        let p: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.02).collect();
        let mut a = State {
            p,
            m: vec![0.0; n],
            v: vec![0.0; n],
        };
        let mut b = a.clone();
        for t in 1..=4u64 {
            // Gradients over many scales, some exactly zero.
            let g: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 17 == 0 {
                        0.0
                    } else {
                        rng.normal() as f32 * 10f32.powi(i as i32 % 7 - 4)
                    }
                })
                .collect();
            let lr = 2.2e-4 * t as f64;
            step_gpu(c, t, lr, clip, decayed, &mut a, &g);
            step_ref(c, t, lr, clip, decayed, &mut b, &g);
            assert_eq!(
                bits(&a),
                bits(&b),
                "decayed {decayed} bf16 {bf16_moments} step {t}"
            );
        }
    }
}
