//! The DeepSeek-V3 model: embedding, blocks, final norm, output head, and D multi-token
//! prediction modules (DeepSeek-V3 §2.2).
//!
//! A batch is `b` samples of `s + 1` tokens: inputs are tokens `[.. s]`, targets `[1 ..]`.
//! With h⁰ `[b·s, d]` the main model's final hidden state (after `model.norm`, the input of the
//! output head), MTP depth k = 1..D works on `n_k = s − k` positions of each sample:
//!
//! ```text
//! x_i^k  = eh_proj([RMSNorm_e(Emb(t_{i+k})) ; RMSNorm_h(h_i^{k−1})])     [b·n_k, 2d] → [b·n_k, d]
//! h^k    = RMSNorm_k(Block_k(x^k))                                       causal over n_k positions
//! L_k    = CE(head(h^k)_i, t_{i+k+1})
//! ```
//!
//! sharing the embedding and the output head with the main model. The concatenation puts the
//! embedding half first and the chain passes normed states, as Hugging Face's and vLLM's MTP
//! (which run the released DeepSeek-V3 checkpoint) do. The training loss is
//! `L_main + λ · mean_k L_k + Σ_layers L_balance`.

use std::sync::Arc;

use tokenmill_kernels::Real;
use tokenmill_kernels::backend::{Backend, IGNORE, RopeTable, Strided};

use crate::block::{Block, BlockCache, Ffn};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::mla::{Mla, QProj};
use crate::mlp::Mlp;
use crate::moe::{Moe, MoeStats};
use crate::ops::{
    Buf, Ctx, Linear, LowpUse, NonFiniteTiles, Precision, RmsNorm, WgradOp, WgradQueue,
};
use crate::params::{ParamId, ParamKind, ParamLayout};

/// One multi-token-prediction module.
#[derive(Debug, Clone)]
pub struct MtpModule {
    /// `enorm` `[d]`, on the embedding of the token k ahead.
    pub enorm: RmsNorm,
    /// `hnorm` `[d]`, on the previous depth's hidden state.
    pub hnorm: RmsNorm,
    /// `eh_proj` `[d, 2d]`.
    pub eh: Linear,
    /// The module's transformer block.
    pub block: Block,
    /// `shared_head.norm` `[d]`, before the shared output head.
    pub head_norm: RmsNorm,
}

/// The model's structure (parameters live in a separate flat buffer; see [`ParamLayout`]).
#[derive(Debug, Clone)]
pub struct Model {
    /// The configuration.
    pub cfg: ModelConfig,
    /// Every tensor's HF name, shape and offset.
    pub layout: ParamLayout,
    /// `model.embed_tokens.weight` `[V, d]`.
    pub embed: ParamId,
    /// The main blocks.
    pub blocks: Vec<Block>,
    /// `model.norm`.
    pub norm: RmsNorm,
    /// `lm_head.weight` `[V, d]`.
    pub head: Linear,
    /// MTP modules, depth 1..D.
    pub mtp: Vec<MtpModule>,
    /// Number format of the blocks' linear-layer GEMMs (f32 runs; f64 ignores it).
    pub precision: Precision,
    /// Where the rest of the batch and the experts are, when this process holds a slice.
    pub parallel: Parallel,
}

/// The process groups a model runs in, when one process holds only a slice of the batch or
/// of the experts. The default (both `None`) is a single process with everything.
#[derive(Debug, Clone, Default)]
pub struct Parallel {
    /// The ranks whose batch slices make up the global batch (data and expert parallelism):
    /// losses are normalised by the whole batch's target count, and routing loads and the
    /// balance loss are taken over the whole batch.
    pub batch: Option<std::sync::Arc<dyn tokenmill_comm::Communicator>>,
    /// The ranks the routed experts are spread over: rank r of P owns experts
    /// `[r·E/P, (r+1)·E/P)`, and tokens travel to them by all-to-all.
    pub experts: Option<std::sync::Arc<dyn tokenmill_comm::Communicator>>,
}

/// Loss weights of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    /// λ: weight of the mean MTP loss.
    pub mtp_lambda: f64,
    /// α: weight of the sequence-wise balance loss.
    pub balance_alpha: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            mtp_lambda: 0.3,
            balance_alpha: 0.0001,
        }
    }
}

/// One batch: `b` rows of `s + 1` tokens, and optionally a loss mask per target `[b, s]`.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Token ids `[b, s + 1]`.
    pub tokens: &'a [u32],
    /// 1 = the target counts in the loss (`None`: all count).
    pub mask: Option<&'a [u8]>,
    /// Attention reset at document boundaries: for every input position, the position in its
    /// sequence where its document starts `[b, s]` (each ≤ its own position); attention then
    /// stays inside documents. `None`: causal attention over the whole sequence.
    pub starts: Option<&'a [u32]>,
    /// Samples.
    pub b: usize,
    /// Sequence length (inputs per sample).
    pub s: usize,
    /// Distillation: the teacher's top-K at every input position, mixed into the main
    /// next-token loss ([`Distill`]). `None`: cross-entropy alone.
    pub distill: Option<Distill<'a>>,
}

/// The main next-token loss under distillation: `(1 − α)·CE + α·T²·KL(q_T ‖ p_T)`, with `q_T`
/// the teacher's top-K renormalised at temperature `T` and `p_T` the student's softmax at `T`
/// ([`tokenmill_kernels::cpu::distill`]). CE is averaged over the counted targets, KL over the
/// counted targets that have teacher entries. The MTP depths keep their cross-entropy (the
/// teacher predicts the next token only).
#[derive(Debug, Clone, Copy)]
pub struct Distill<'a> {
    /// The teacher's entries `[b·s, k]`.
    pub teacher: tokenmill_kernels::cpu::distill::TeacherTopK<'a>,
    /// α in [0, 1].
    pub alpha: f64,
    /// T > 0.
    pub temperature: f64,
}

/// The result of a forward pass; keeps what the backward needs.
#[derive(Debug)]
pub struct Forward<T> {
    /// `main + λ·mtp + balance`.
    pub loss: f64,
    /// Mean next-token cross-entropy.
    pub main_loss: f64,
    /// Under distillation: the mean KL divergence from the teacher (before `α·T²`).
    pub distill_kl: Option<f64>,
    /// Mean cross-entropy of each MTP depth.
    pub mtp_losses: Vec<f64>,
    /// Sum over MoE layers of the balance loss (α included).
    pub balance_loss: f64,
    /// Next-token loss of every target `[b, s]` (0 where masked).
    pub token_losses: Vec<T>,
    /// Routing statistics of every MoE layer (main blocks, then MTP blocks).
    pub moe: Vec<MoeStats>,
    /// Evaluation forwards (`keep_cache = false`): the logits of the main model `[b·s, V]` and
    /// of each MTP depth `[b·(s−k), V]`.
    pub logits: Option<(Vec<T>, Vec<Vec<T>>)>,
    /// A pipeline stage before the last: its output `[b·s, d]`, the next stage's input.
    pub hidden: Option<Vec<T>>,
    /// FP8 tiles with a non-finite amax in this forward's low-precision GEMMs (their values
    /// became NaN); the backward's are counted in its [`WgradQueue`].
    pub nonfinite_fp8_tiles: u64,
    cache: Option<Cache<T>>,
}

#[derive(Debug)]
struct Head<T> {
    hidden: Buf<T>,
    rstd: Buf<T>,
    normed: Buf<T>,
    /// Training: the gradient of the logits (the loss's backward is fused into the forward,
    /// `∂L/∂loss_row` being known up front). Evaluation: the logits.
    logits: Vec<T>,
}

#[derive(Debug)]
struct MtpCache<T> {
    n: usize,
    ids: Arc<Vec<u32>>,
    emb: Buf<T>,
    emb_rstd: Buf<T>,
    prev: Buf<T>,
    prev_rstd: Buf<T>,
    cat: Buf<T>,
    block: BlockCache<T>,
    head: Head<T>,
}

#[derive(Debug)]
struct Cache<T> {
    b: usize,
    s: usize,
    /// The batch's document starts (attention reset), for the backward.
    starts: Option<Vec<u32>>,
    /// The input tokens, on the first stage (for the embedding's gradient).
    ids: Option<Arc<Vec<u32>>>,
    blocks: Vec<BlockCache<T>>,
    /// On the last stage.
    head: Option<Head<T>>,
    mtp: Vec<MtpCache<T>>,
}

impl<T> Forward<T> {
    /// Main-model logits `[b·s, V]` (evaluation forwards only).
    pub fn logits(&self) -> Option<&[T]> {
        self.logits.as_ref().map(|l| l.0.as_slice())
    }
    /// Logits of MTP depth `k` (1-based) `[b·(s−k), V]` (evaluation forwards only).
    pub fn mtp_logits(&self, k: usize) -> Option<&[T]> {
        self.logits
            .as_ref()
            .and_then(|l| l.1.get(k.wrapping_sub(1)))
            .map(Vec::as_slice)
    }
}

/// A pipeline stage: blocks `blocks`, with the embedding when `first`, and the final norm, the
/// output head and the MTP modules (which share the embedding) when `last`. The whole model is
/// the one stage that is both ([`Model::whole`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The main blocks it runs.
    pub blocks: std::ops::Range<usize>,
    /// Holds the embedding (its input is the tokens).
    pub first: bool,
    /// Holds the head and the MTP modules (its output is the losses).
    pub last: bool,
}

/// The mean of the MTP depths' losses (0 without MTP).
pub fn mtp_mean(losses: &[f64]) -> f64 {
    if losses.is_empty() {
        0.0
    } else {
        losses.iter().sum::<f64>() / losses.len() as f64
    }
}

/// The training loss of a forward: `main + λ · mean MTP + balance`.
pub fn total_loss(main: f64, mtp_losses: &[f64], balance: f64, w: LossWeights) -> f64 {
    main + w.mtp_lambda * mtp_mean(mtp_losses) + balance
}

/// When weight gradients are computed during [`Model::backward`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgradMode {
    /// Right after each layer's input gradient (plain training).
    Immediate,
    /// Left in the queue for the caller to flush (pipeline schedules).
    Deferred,
}

/// Epsilon of the query and key-value latent norms: fixed at 1e-6 in DeepSeek's and Hugging
/// Face's code, whatever `rms_norm_eps` says.
pub const LATENT_NORM_EPS: f64 = 1e-6;

fn name(prefix: &str, rest: &str) -> String {
    format!("{prefix}{rest}")
}

fn linear(l: &mut ParamLayout, n: String, out: usize, inp: usize) -> Linear {
    Linear {
        w: l.add(n, &[out, inp], ParamKind::Linear),
        lowp: LowpUse::All,
        inp,
        out,
    }
}

fn norm(l: &mut ParamLayout, n: String, d: usize, eps: f64) -> RmsNorm {
    RmsNorm {
        w: l.add(n, &[d], ParamKind::Norm),
        d,
        eps,
    }
}

fn mlp(l: &mut ParamLayout, p: &str, d: usize, f: usize) -> Mlp {
    Mlp {
        gate: linear(l, name(p, "gate_proj.weight"), f, d),
        up: linear(l, name(p, "up_proj.weight"), f, d),
        down: linear(l, name(p, "down_proj.weight"), d, f),
    }
}

fn block(l: &mut ParamLayout, c: &ModelConfig, layer: usize) -> Block {
    let p = format!("model.layers.{layer}.");
    let (d, h, eps) = (c.hidden_size, c.num_attention_heads, c.rms_norm_eps);
    let ln1 = norm(l, name(&p, "input_layernorm.weight"), d, eps);
    let q = if c.q_lora_rank == 0 {
        QProj::Plain(linear(
            l,
            name(&p, "self_attn.q_proj.weight"),
            h * c.qk_head_dim(),
            d,
        ))
    } else {
        QProj::Lora {
            a: linear(l, name(&p, "self_attn.q_a_proj.weight"), c.q_lora_rank, d),
            norm: norm(
                l,
                name(&p, "self_attn.q_a_layernorm.weight"),
                c.q_lora_rank,
                LATENT_NORM_EPS,
            ),
            b: linear(
                l,
                name(&p, "self_attn.q_b_proj.weight"),
                h * c.qk_head_dim(),
                c.q_lora_rank,
            ),
        }
    };
    let attn = Mla {
        q,
        kv_a: linear(
            l,
            name(&p, "self_attn.kv_a_proj_with_mqa.weight"),
            c.kv_lora_rank + c.qk_rope_head_dim,
            d,
        ),
        kv_norm: norm(
            l,
            name(&p, "self_attn.kv_a_layernorm.weight"),
            c.kv_lora_rank,
            LATENT_NORM_EPS,
        ),
        kv_b: linear(
            l,
            name(&p, "self_attn.kv_b_proj.weight"),
            h * (c.qk_nope_head_dim + c.v_head_dim),
            c.kv_lora_rank,
        ),
        o: linear(l, name(&p, "self_attn.o_proj.weight"), d, h * c.v_head_dim),
        heads: h,
        nope: c.qk_nope_head_dim,
        rope: c.qk_rope_head_dim,
        v: c.v_head_dim,
        kv_lora: c.kv_lora_rank,
        scale: c.softmax_scale(),
    };
    let ln2 = norm(l, name(&p, "post_attention_layernorm.weight"), d, eps);
    let ffn = if c.is_moe(layer) {
        let e = c.n_routed_experts;
        // The gate stays FP32 in every precision (DeepSeek-V3 §3.3.1).
        let router = Linear {
            lowp: LowpUse::Never,
            ..linear(l, name(&p, "mlp.gate.weight"), e, d)
        };
        let bias = l.add(
            name(&p, "mlp.gate.e_score_correction_bias"),
            &[e],
            ParamKind::Buffer,
        );
        let experts = (0..e)
            .map(|j| {
                mlp(
                    l,
                    &format!("{p}mlp.experts.{j}."),
                    d,
                    c.moe_intermediate_size,
                )
            })
            .collect();
        let shared = (c.n_shared_experts > 0).then(|| {
            mlp(
                l,
                &name(&p, "mlp.shared_experts."),
                d,
                c.n_shared_experts * c.moe_intermediate_size,
            )
        });
        Ffn::Moe(Moe {
            router,
            bias,
            experts,
            shared,
            top_k: c.num_experts_per_tok,
            n_group: c.n_group,
            topk_group: c.topk_group,
            route_scale: c.routed_scaling_factor,
            norm_topk: c.norm_topk_prob,
        })
    } else {
        Ffn::Dense(mlp(l, &name(&p, "mlp."), d, c.intermediate_size))
    };
    Block {
        ln1,
        attn,
        ln2,
        ffn,
    }
}

/// `x [b·m, d]` → the first `keep` rows of each of the `b` groups: `[b·keep, d]`.
fn take_rows<T: Real>(
    cx: &Ctx<'_, T>,
    x: &[T],
    b: usize,
    m: usize,
    keep: usize,
    d: usize,
) -> Vec<T> {
    let mut y = vec![T::zero(); b * keep * d];
    cx.copy(
        Strided::columns(b, keep * d, (m * d, 0), (keep * d, 0)),
        x,
        &mut y,
    );
    y
}

/// Adds `dx [b·keep, d]` into the first `keep` rows of each group of `acc [b·m, d]`.
fn add_rows<T: Real>(
    cx: &Ctx<'_, T>,
    acc: &mut [T],
    dx: &[T],
    b: usize,
    m: usize,
    keep: usize,
    d: usize,
) {
    let c = Strided {
        accumulate: true,
        ..Strided::columns(b, keep * d, (keep * d, 0), (m * d, 0))
    };
    cx.copy(c, dx, acc);
}

impl Model {
    /// Builds the structure and the parameter layout of `cfg` (validated).
    pub fn new(cfg: ModelConfig) -> Result<Self> {
        cfg.validate()?;
        let (d, v, eps) = (cfg.hidden_size, cfg.vocab_size, cfg.rms_norm_eps);
        let mut l = ParamLayout::default();
        let embed = l.add("model.embed_tokens.weight", &[v, d], ParamKind::Embedding);
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| block(&mut l, &cfg, i))
            .collect();
        let norm_ = norm(&mut l, "model.norm.weight".into(), d, eps);
        let head = Linear {
            lowp: LowpUse::Bf16,
            ..linear(&mut l, "lm_head.weight".into(), v, d)
        };
        let mtp = (0..cfg.num_nextn_predict_layers)
            .map(|k| {
                let layer = cfg.num_hidden_layers + k;
                let p = format!("model.layers.{layer}.");
                MtpModule {
                    enorm: norm(&mut l, name(&p, "enorm.weight"), d, eps),
                    hnorm: norm(&mut l, name(&p, "hnorm.weight"), d, eps),
                    eh: linear(&mut l, name(&p, "eh_proj.weight"), d, 2 * d),
                    block: block(&mut l, &cfg, layer),
                    head_norm: norm(&mut l, name(&p, "shared_head.norm.weight"), d, eps),
                }
            })
            .collect();
        Ok(Model {
            cfg,
            layout: l,
            embed,
            blocks,
            norm: norm_,
            head,
            mtp,
            precision: Precision::Fp32,
            parallel: Parallel::default(),
        })
    }

    /// Fresh parameters (HF's initialisation: normal(0, initializer_range), norms 1, bias 0).
    pub fn init<T: Real>(&self, seed: u64) -> Vec<T> {
        self.layout.init(self.cfg.initializer_range, seed)
    }

    /// The routing-bias buffer of every MoE layer, in the order of [`Forward::moe`].
    pub fn moe_biases(&self) -> Vec<ParamId> {
        self.blocks
            .iter()
            .chain(self.mtp.iter().map(|m| &m.block))
            .filter_map(|b| match &b.ffn {
                Ffn::Moe(m) => Some(m.bias),
                Ffn::Dense(_) => None,
            })
            .collect()
    }

    fn check_batch(&self, batch: &Batch<'_>) -> Result<()> {
        let (b, s) = (batch.b, batch.s);
        if batch.tokens.len() != b * (s + 1) {
            return Err(Error::Data(format!(
                "batch holds {} tokens, expected {b}·({s}+1)",
                batch.tokens.len()
            )));
        }
        if let Some(m) = batch.mask
            && m.len() != b * s
        {
            return Err(Error::Data(format!(
                "loss mask holds {} entries, expected {b}·{s}",
                m.len()
            )));
        }
        if let Some(st) = batch.starts {
            if st.len() != b * s {
                return Err(Error::Data(format!(
                    "document starts hold {} entries, expected {b}·{s}",
                    st.len()
                )));
            }
            if let Some(i) = (0..b * s).find(|&i| st[i] as usize > i % s) {
                return Err(Error::Data(format!(
                    "document start {} of position {} of sequence {} lies after it",
                    st[i],
                    i % s,
                    i / s
                )));
            }
        }
        if let Some(dt) = &batch.distill {
            let k = dt.teacher.k;
            if k == 0 || dt.teacher.ids.len() != b * s * k || dt.teacher.logp.len() != b * s * k {
                return Err(Error::Data(format!(
                    "teacher entries hold {} ids and {} log-probabilities, expected {b}·{s}·{k}",
                    dt.teacher.ids.len(),
                    dt.teacher.logp.len()
                )));
            }
            if !(0.0..=1.0).contains(&dt.alpha) || dt.temperature.is_nan() || dt.temperature <= 0.0
            {
                return Err(Error::Config(format!(
                    "distillation needs 0 ≤ alpha ≤ 1 and temperature > 0 (alpha {}, temperature {})",
                    dt.alpha, dt.temperature
                )));
            }
            if let Some(&bad) = dt.teacher.ids.iter().find(|&&i| {
                i != tokenmill_kernels::cpu::distill::ABSENT && i as usize >= self.cfg.vocab_size
            }) {
                return Err(Error::Data(format!(
                    "teacher token id {bad} is outside the model's vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        if s == 0 || s > self.cfg.max_position_embeddings {
            return Err(Error::Data(format!(
                "sequence length {s} outside 1..={} (max_position_embeddings)",
                self.cfg.max_position_embeddings
            )));
        }
        if self.cfg.num_nextn_predict_layers >= s {
            return Err(Error::Data(format!(
                "sequence length {s} too short for {} MTP depths",
                self.cfg.num_nextn_predict_layers
            )));
        }
        if let Some(&t) = batch
            .tokens
            .iter()
            .find(|&&t| t as usize >= self.cfg.vocab_size)
        {
            return Err(Error::Data(format!(
                "token id {t} is outside the model's vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Output head over `hidden` after `norm`, with cross-entropy against `targets`; `weight`
    /// is this loss's weight in the total (split evenly over the counted targets). With
    /// `train`, the cross-entropy's backward runs here too (fused, in place). With `distill`
    /// (the main head), the loss is the distillation mix; returns (head, per-target CE, mean
    /// CE, mean KL).
    #[allow(clippy::too_many_arguments)]
    fn head_fwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        norm: &RmsNorm,
        hidden: Buf<T>,
        targets: Vec<u32>,
        weight: f64,
        train: bool,
        distill: Option<&Distill<'_>>,
    ) -> (Head<T>, Vec<T>, f64, Option<f64>) {
        let rows = targets.len();
        let (mut losses, mut lse) = (vec![T::zero(); rows], vec![T::zero(); rows]);
        let teacher_rows = |dt: &Distill<'_>| {
            (0..rows)
                .filter(|&r| targets[r] != IGNORE && dt.teacher.has(r))
                .count() as u64
        };
        let mut count = [
            targets.iter().filter(|&&t| t != IGNORE).count() as u64,
            distill.map_or(0, teacher_rows),
        ];
        if let Some(g) = cx.batch {
            // The loss is the mean over the global batch's targets.
            tokenmill_comm::Collectives::all_reduce_sum(g, &mut count)
                .expect("data-parallel target count");
        }
        let (count, kl_count) = (count[0].max(1) as usize, count[1].max(1) as f64);
        // The norm, the head's GEMM and (without distillation, which runs on the host) the
        // cross-entropy: backend operations only, one deferred scope.
        let (normed, rstd, mut logits) = cx.deferred(|| {
            let (normed, rstd) = norm.fwd(cx, &hidden);
            let normed = Arc::new(normed);
            let mut logits = self.head.fwd(cx, &normed);
            if distill.is_none() {
                if train {
                    let g: Vec<T> = targets
                        .iter()
                        .map(|&t| {
                            if t == IGNORE {
                                T::zero()
                            } else {
                                T::of(weight / count as f64)
                            }
                        })
                        .collect();
                    cx.be.cross_entropy_fused(
                        &mut logits,
                        &targets,
                        &g,
                        self.cfg.vocab_size,
                        &mut losses,
                        &mut lse,
                    );
                } else {
                    cx.be.cross_entropy_fwd(
                        &logits,
                        &targets,
                        self.cfg.vocab_size,
                        &mut losses,
                        &mut lse,
                    );
                }
            }
            (normed, rstd, logits)
        });
        let kl_mean = if let Some(dt) = distill {
            use tokenmill_kernels::cpu::distill::{DistillGrad, cross_entropy_kl};
            // Only counted targets with a teacher entry take part in the KL term.
            let mut ids = dt.teacher.ids.to_vec();
            let k = dt.teacher.k;
            for r in 0..rows {
                if targets[r] == IGNORE {
                    ids[r * k] = tokenmill_kernels::cpu::distill::ABSENT;
                }
            }
            let teacher = tokenmill_kernels::cpu::distill::TeacherTopK {
                ids: &ids,
                ..dt.teacher
            };
            let g_ce = vec![T::of(weight * (1.0 - dt.alpha) / count as f64); rows];
            let g_kl =
                vec![T::of(weight * dt.alpha * dt.temperature * dt.temperature / kl_count); rows];
            let mut kl = vec![T::zero(); rows];
            cross_entropy_kl(
                &mut logits,
                self.cfg.vocab_size,
                &targets,
                &teacher,
                dt.temperature,
                train.then_some(DistillGrad {
                    ce: &g_ce,
                    kl: &g_kl,
                }),
                &mut losses,
                &mut kl,
            );
            Some(kl.iter().map(|l| l.f64()).sum::<f64>() / kl_count)
        } else {
            None
        };
        let mean = losses.iter().map(|l| l.f64()).sum::<f64>() / count as f64;
        (
            Head {
                hidden,
                rstd,
                normed,
                logits,
            },
            losses,
            mean,
            kl_mean,
        )
    }

    /// Backward of [`Model::head_fwd`], with `dextra` the gradient reaching the normed state
    /// from the next MTP depth; returns the gradient of the hidden state.
    fn head_bwd<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        norm: &RmsNorm,
        h: Head<T>,
        dextra: Option<Vec<T>>,
        wq: &mut WgradQueue<T>,
    ) -> Vec<T> {
        // Backend operations only (the weight gradients are queued): one deferred scope.
        cx.deferred(|| {
            let dlogits = h.logits;
            let mut dnormed = self.head.bwd_input(cx, &dlogits);
            if let Some(e) = dextra {
                cx.copy(Strided::elementwise(e.len(), true), &e, &mut dnormed);
            }
            self.head.wgrad(wq, dlogits, &h.normed);
            let mut dhidden = vec![T::zero(); h.hidden.len()];
            norm.bwd(cx, wq, &h.hidden, &h.rstd, dnormed, &mut dhidden, false);
            dhidden
        })
    }

    /// The whole model as one stage.
    pub fn whole(&self) -> Stage {
        Stage {
            blocks: 0..self.blocks.len(),
            first: true,
            last: true,
        }
    }

    /// The model cut into `n` pipeline stages of equally many blocks, the embedding on the
    /// first, the final norm, output head and MTP modules on the last.
    pub fn stages(&self, n: usize) -> Result<Vec<Stage>> {
        let l = self.blocks.len();
        if n == 0 || !l.is_multiple_of(n) {
            return Err(Error::Config(format!(
                "{l} layers (num_hidden_layers) cannot be cut into {n} pipeline stages of equally many"
            )));
        }
        let per = l / n;
        Ok((0..n)
            .map(|i| Stage {
                blocks: i * per..(i + 1) * per,
                first: i == 0,
                last: i == n - 1,
            })
            .collect())
    }

    /// The index, in the order of [`Model::moe_biases`] and [`Forward::moe`], of the first MoE
    /// layer of `stage`.
    pub fn first_moe_layer(&self, stage: &Stage) -> usize {
        self.blocks[..stage.blocks.start]
            .iter()
            .filter(|b| matches!(b.ffn, Ffn::Moe(_)))
            .count()
    }

    /// Forward pass. `keep_cache = false` for evaluation.
    pub fn forward<T: Real>(
        &self,
        be: &dyn Backend<T>,
        params: &[T],
        batch: &Batch<'_>,
        w: LossWeights,
        keep_cache: bool,
    ) -> Result<Forward<T>> {
        self.forward_stage(be, params, &self.whole(), batch, None, w, keep_cache)
    }

    /// Forward pass of one pipeline stage over `batch`: from the tokens on the first stage,
    /// else from `input`, the previous stage's output `[b·s, d]`. A stage that is not the last
    /// leaves its output in [`Forward::hidden`] and no losses; the last computes the losses
    /// (the balance loss is always this stage's MoE layers').
    #[allow(clippy::too_many_arguments)]
    pub fn forward_stage<T: Real>(
        &self,
        be: &dyn Backend<T>,
        params: &[T],
        stage: &Stage,
        batch: &Batch<'_>,
        input: Option<Vec<T>>,
        w: LossWeights,
        keep_cache: bool,
    ) -> Result<Forward<T>> {
        self.check_batch(batch)?;
        let nonfinite = NonFiniteTiles::default();
        let cx = Ctx {
            be,
            layout: &self.layout,
            params,
            precision: self.precision,
            ep: self.parallel.experts.as_deref(),
            batch: self.parallel.batch.as_deref(),
            nonfinite: &nonfinite,
            key_starts: batch.starts,
        };
        let (b, s, d) = (batch.b, batch.s, self.cfg.hidden_size);
        let rope = RopeTable::new(self.cfg.qk_rope_head_dim, self.cfg.rope_theta, s);
        let tok = |bi: usize, i: usize| batch.tokens[bi * (s + 1) + i];
        let target = |bi: usize, i: usize| {
            // target of input position i is token i + 1, counted when mask[i] is set
            if batch.mask.is_some_and(|m| m[bi * s + i] == 0) {
                IGNORE
            } else {
                tok(bi, i + 1)
            }
        };
        let (mut x, ids) = if stage.first {
            let ids: Arc<Vec<u32>> = Arc::new(
                (0..b)
                    .flat_map(|bi| (0..s).map(move |i| (bi, i)))
                    .map(|(bi, i)| tok(bi, i))
                    .collect(),
            );
            let mut x = vec![T::zero(); b * s * d];
            be.embedding_fwd(cx.w(self.embed), d, &ids, &mut x);
            (x, Some(ids))
        } else {
            let x = input.ok_or_else(|| {
                Error::Data("a pipeline stage after the first needs its input".into())
            })?;
            if x.len() != b * s * d {
                return Err(Error::Data(format!(
                    "a pipeline stage's input holds {} values, expected {b}·{s}·{d}",
                    x.len()
                )));
            }
            (x, None)
        };
        let mut moe = Vec::new();
        let mut block_caches = Vec::with_capacity(stage.blocks.len());
        for l in stage.blocks.clone() {
            let _t = crate::timeline::span("compute", || format!("block {l} forward"));
            let (y, c, st) = self.blocks[l].fwd(&cx, &rope, Arc::new(x), b, s, w.balance_alpha);
            x = y;
            block_caches.push(c);
            moe.extend(st);
        }
        if !stage.last {
            let balance_loss: f64 = moe.iter().map(|m| m.balance_loss).sum();
            return Ok(Forward {
                loss: balance_loss,
                main_loss: 0.0,
                distill_kl: None,
                mtp_losses: Vec::new(),
                balance_loss,
                token_losses: Vec::new(),
                moe,
                logits: None,
                hidden: Some(x),
                nonfinite_fp8_tiles: nonfinite.get(),
                cache: keep_cache.then_some(Cache {
                    b,
                    s,
                    starts: batch.starts.map(<[u32]>::to_vec),
                    ids,
                    blocks: block_caches,
                    head: None,
                    mtp: Vec::new(),
                }),
            });
        }
        let h_last = Arc::new(x);
        let targets: Vec<u32> = (0..b)
            .flat_map(|bi| (0..s).map(move |i| (bi, i)))
            .map(|(bi, i)| target(bi, i))
            .collect();
        let (head, token_losses, main_loss, distill_kl) = self.head_fwd(
            &cx,
            &self.norm,
            h_last,
            targets,
            1.0,
            keep_cache,
            batch.distill.as_ref(),
        );
        let depth = self.mtp.len();
        let mut mtp_losses = Vec::with_capacity(depth);
        let mut mtp_caches = Vec::with_capacity(depth);
        let mut prev = head.normed.clone();
        let mut prev_n = s;
        for (k1, m) in self.mtp.iter().enumerate() {
            let k = k1 + 1;
            let n = s - k;
            let rope_k = RopeTable::new(self.cfg.qk_rope_head_dim, self.cfg.rope_theta, n);
            let ids_k: Arc<Vec<u32>> = Arc::new(
                (0..b)
                    .flat_map(|bi| (0..n).map(move |i| (bi, i)))
                    .map(|(bi, i)| tok(bi, i + k))
                    .collect(),
            );
            // The module's input, backend operations only: one deferred scope.
            let (emb, emb_rstd, hprev, prev_rstd, cat, xk) = cx.deferred(|| {
                let mut emb = vec![T::zero(); b * n * d];
                be.embedding_fwd(cx.w(self.embed), d, &ids_k, &mut emb);
                let emb = Arc::new(emb);
                let (en, emb_rstd) = m.enorm.fwd(&cx, &emb);
                let hprev = Arc::new(take_rows(&cx, &prev, b, prev_n, n, d));
                let (hn, prev_rstd) = m.hnorm.fwd(&cx, &hprev);
                // [embedding, hidden state] side by side: [b·n, 2d].
                let mut cat = vec![T::zero(); b * n * 2 * d];
                cx.copy(
                    Strided::columns(b * n, d, (d, 0), (2 * d, 0)),
                    &en,
                    &mut cat,
                );
                cx.copy(
                    Strided::columns(b * n, d, (d, 0), (2 * d, d)),
                    &hn,
                    &mut cat,
                );
                let cat = Arc::new(cat);
                let xk = m.eh.fwd(&cx, &cat);
                (emb, emb_rstd, hprev, prev_rstd, cat, xk)
            });
            let (hk, bc, st) = m
                .block
                .fwd(&cx, &rope_k, Arc::new(xk), b, n, w.balance_alpha);
            moe.extend(st);
            let hk = Arc::new(hk);
            let targets_k: Vec<u32> = (0..b)
                .flat_map(|bi| (0..n).map(move |i| (bi, i)))
                .map(|(bi, i)| target(bi, i + k))
                .collect();
            let (head_k, _, lk, _) = self.head_fwd(
                &cx,
                &m.head_norm,
                hk,
                targets_k,
                w.mtp_lambda / depth as f64,
                keep_cache,
                None,
            );
            mtp_losses.push(lk);
            let next = head_k.normed.clone();
            mtp_caches.push(MtpCache {
                n,
                ids: ids_k,
                emb,
                emb_rstd,
                prev: hprev,
                prev_rstd,
                cat,
                block: bc,
                head: head_k,
            });
            prev = next;
            prev_n = n;
        }
        let balance_loss: f64 = moe.iter().map(|m| m.balance_loss).sum();
        let main_term = match (&batch.distill, distill_kl) {
            (Some(dt), Some(kl)) => {
                (1.0 - dt.alpha) * main_loss + dt.alpha * dt.temperature * dt.temperature * kl
            }
            _ => main_loss,
        };
        let loss = total_loss(main_term, &mtp_losses, balance_loss, w);
        let (cache, logits) = if keep_cache {
            (
                Some(Cache {
                    b,
                    s,
                    starts: batch.starts.map(<[u32]>::to_vec),
                    ids,
                    blocks: block_caches,
                    head: Some(head),
                    mtp: mtp_caches,
                }),
                None,
            )
        } else {
            (
                None,
                Some((
                    head.logits,
                    mtp_caches.into_iter().map(|m| m.head.logits).collect(),
                )),
            )
        };
        Ok(Forward {
            loss,
            main_loss,
            distill_kl,
            mtp_losses,
            balance_loss,
            token_losses,
            moe,
            logits,
            hidden: None,
            nonfinite_fp8_tiles: nonfinite.get(),
            cache,
        })
    }

    /// Backward pass of `fwd`'s total loss, accumulating into `grads` (same layout as the
    /// parameters). In [`WgradMode::Deferred`] the weight gradients are left in `wq`. FP8
    /// tiles with a non-finite amax are counted in `wq` ([`WgradQueue::nonfinite_fp8_tiles`]).
    pub fn backward<T: Real>(
        &self,
        be: &dyn Backend<T>,
        params: &[T],
        fwd: &mut Forward<T>,
        grads: &mut [T],
        wq: &mut WgradQueue<T>,
        mode: WgradMode,
    ) {
        self.backward_stage(be, params, &self.whole(), fwd, None, grads, wq, mode);
    }

    /// Backward pass of one pipeline stage: from the losses on the last stage, else from
    /// `dout`, the gradient of the stage's output `[b·s, d]` (from the next stage). Returns the
    /// gradient of the stage's input for the previous stage (`None` on the first, whose
    /// gradient ends in the embedding).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_stage<T: Real>(
        &self,
        be: &dyn Backend<T>,
        params: &[T],
        stage: &Stage,
        fwd: &mut Forward<T>,
        dout: Option<Vec<T>>,
        grads: &mut [T],
        wq: &mut WgradQueue<T>,
        mode: WgradMode,
    ) -> Option<Vec<T>> {
        let mut cache = fwd
            .cache
            .take()
            .expect("forward was run with keep_cache = true");
        wq.precision = self.precision;
        let nonfinite = NonFiniteTiles::default();
        let starts = cache.starts.take();
        let cx = Ctx {
            be,
            layout: &self.layout,
            params,
            precision: self.precision,
            ep: self.parallel.experts.as_deref(),
            batch: self.parallel.batch.as_deref(),
            nonfinite: &nonfinite,
            key_starts: starts.as_deref(),
        };
        let (b, s, d) = (cache.b, cache.s, self.cfg.hidden_size);
        let flush = |wq: &mut WgradQueue<T>, grads: &mut [T]| {
            if mode == WgradMode::Immediate {
                wq.flush(be, &self.layout, grads);
            }
        };
        let mut dh = match cache.head {
            Some(head) => {
                // MTP, deepest first: depth k's gradient into h^{k-1} flows to depth k−1's
                // head norm (or the main model's final norm).
                let mut dnext: Option<Vec<T>> = None;
                let mut caches = cache.mtp;
                while let Some(c) = caches.pop() {
                    let k = caches.len() + 1;
                    let m = &self.mtp[k - 1];
                    let rope_k =
                        RopeTable::new(self.cfg.qk_rope_head_dim, self.cfg.rope_theta, c.n);
                    let dh = self.head_bwd(&cx, &m.head_norm, c.head, dnext.take(), wq);
                    let dx = m.block.bwd(&cx, &rope_k, c.block, dh, wq);
                    // Down to the module's inputs, backend operations only (the weight
                    // gradients are queued): one deferred scope.
                    let acc = cx.deferred(|| {
                        let dcat = m.eh.bwd_input(&cx, &dx);
                        m.eh.wgrad(wq, dx, &c.cat);
                        let rows = b * c.n;
                        let (mut de, mut dp) =
                            (vec![T::zero(); rows * d], vec![T::zero(); rows * d]);
                        cx.copy(
                            Strided::columns(rows, d, (2 * d, 0), (d, 0)),
                            &dcat,
                            &mut de,
                        );
                        cx.copy(
                            Strided::columns(rows, d, (2 * d, d), (d, 0)),
                            &dcat,
                            &mut dp,
                        );
                        let mut demb = vec![T::zero(); b * c.n * d];
                        m.enorm
                            .bwd(&cx, wq, &c.emb, &c.emb_rstd, de, &mut demb, false);
                        wq.push(WgradOp::Embedding {
                            w: self.embed,
                            dy: demb,
                            ids: c.ids,
                        });
                        let mut dprev = vec![T::zero(); b * c.n * d];
                        m.hnorm
                            .bwd(&cx, wq, &c.prev, &c.prev_rstd, dp, &mut dprev, false);
                        let prev_n = c.n + 1;
                        let mut acc = vec![T::zero(); b * prev_n * d];
                        add_rows(&cx, &mut acc, &dprev, b, prev_n, c.n, d);
                        acc
                    });
                    dnext = Some(acc);
                    flush(wq, grads);
                }
                let dh = self.head_bwd(&cx, &self.norm, head, dnext, wq);
                flush(wq, grads);
                dh
            }
            None => dout.expect("a stage before the last needs its output's gradient"),
        };
        let rope = RopeTable::new(self.cfg.qk_rope_head_dim, self.cfg.rope_theta, s);
        let mut blocks = cache.blocks;
        for l in stage.blocks.clone().rev() {
            let _t = crate::timeline::span("compute", || format!("block {l} backward"));
            let c = blocks.pop().expect("one cache per block");
            dh = self.blocks[l].bwd(&cx, &rope, c, dh, wq);
            flush(wq, grads);
        }
        let out = match cache.ids {
            Some(ids) => {
                wq.push(WgradOp::Embedding {
                    w: self.embed,
                    dy: dh,
                    ids,
                });
                None
            }
            None => Some(dh),
        };
        wq.count_nonfinite_fp8_tiles(nonfinite.get());
        flush(wq, grads);
        out
    }
}
