//! The cost model of a training step: FLOPs per token, this machine's GEMM peak (the
//! denominator of MFU, model FLOPs utilisation) and the memory a model needs (training state
//! per parameter, saved activations per token). The formulas are derived in
//! `docs/trainer.md` ("Memory and FLOPs").

use std::time::Instant;

use tokenmill_kernels::backend::{Backend, MatMul};

use crate::config::ModelConfig;

/// Forward+backward FLOPs per token of a model at sequence length `s`: 6 × activated
/// non-embedding parameters, plus causal attention `3·H·s·(d_qk + d_v)` per block.
pub fn flops_per_token(c: &ModelConfig, s: u64) -> f64 {
    let p = c.param_counts();
    let d = c.hidden_size as f64;
    let embed = c.vocab_size as f64 * d;
    let blocks = (c.num_hidden_layers + c.num_nextn_predict_layers) as f64;
    let mtp_active = if c.num_nextn_predict_layers > 0 {
        // MTP blocks route like main blocks: count their activated part.
        let routed = (c.n_routed_experts - c.num_experts_per_tok) as f64
            * 3.0
            * d
            * c.moe_intermediate_size as f64;
        p.mtp as f64 - c.num_nextn_predict_layers as f64 * routed
    } else {
        0.0
    };
    let heads = c.num_attention_heads as f64;
    let attn = 3.0 * heads * s as f64 * (c.qk_head_dim() + c.v_head_dim) as f64;
    6.0 * (p.activated as f64 - embed + mtp_active) + blocks * attn
}

/// The f32 GEMM rate (FLOP/s) of backend `be` (on the CPU: on the current thread pool): best
/// of 3 products of 1024³ (what a training run logs its MFU against).
pub fn measure_gemm_peak(be: &dyn Backend<f32>) -> f64 {
    measure_gemm_peak_over(be, 0.0)
}

/// [`measure_gemm_peak`] as the best of at least three products and `seconds` of them — for
/// benchmarks, where three products (33 ms) once caught a busy moment on a shared machine,
/// halved the peak and printed an MFU of 145 %.
pub fn measure_gemm_peak_over(be: &dyn Backend<f32>, seconds: f64) -> f64 {
    let n = 1024;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let p = MatMul {
        m: n,
        n,
        k: n,
        ta: false,
        tb: false,
        accumulate: false,
    };
    let (mut best, start, mut runs) = (f64::MAX, Instant::now(), 0);
    while runs < 3 || start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        be.matmul(p, &a, &b, &mut c);
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    p.flops() / best
}

/// `(bytes per parameter, bytes per token)`: the training state per parameter (FP32 weights,
/// gradients, two AdamW moments) and the activations per token that the forward saves for the
/// backward (they do not depend on the sequence length; see docs/trainer.md).
pub fn memory_model(c: &ModelConfig) -> (f64, f64) {
    let d = c.hidden_size as f64;
    let h = c.num_attention_heads as f64;
    let (qk, v) = (c.qk_head_dim() as f64, c.v_head_dim as f64);
    let attn = 2.0 * d
        + c.q_lora_rank as f64 * 3.0
        + c.kv_lora_rank as f64 * 2.0
        + h * (2.0 * qk + 2.0 * v)
        + h * v
        + h;
    let dense = d + 3.0 * c.intermediate_size as f64;
    let k = c.num_experts_per_tok as f64;
    let moe = d
        + c.n_routed_experts as f64
        + 2.0 * k
        + k * (2.0 * d + 3.0 * c.moe_intermediate_size as f64)
        + 3.0 * (c.n_shared_experts * c.moe_intermediate_size) as f64;
    let block = |l: usize| attn + d * 2.0 + if c.is_moe(l) { moe } else { dense };
    let mut per_tok: f64 = (0..c.num_hidden_layers).map(block).sum();
    // head: hidden, normed, and the logits' gradient (the loss's backward is fused into the
    // forward, in place of the logits)
    per_tok += 3.0 * d + c.vocab_size as f64;
    for k in 0..c.num_nextn_predict_layers {
        per_tok += block(c.num_hidden_layers + k) + 6.0 * d + c.vocab_size as f64;
    }
    (16.0, 4.0 * per_tok)
}
