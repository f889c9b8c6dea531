//! The model configuration: DeepSeek-V3's architecture at any size, with the field names of
//! Hugging Face's `DeepseekV3Config` (so a `config.json` round-trips), presets, validation and
//! parameter counts.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The names [`ModelConfig::preset`] knows.
pub const PRESETS: [&str; 5] = ["tiny", "small", "1b", "deepseek-v3", "deepseek-v2-lite"];

/// Architecture hyper-parameters. Field names follow HF's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Rows of the embedding table and the output head.
    pub vocab_size: usize,
    /// Model width d.
    pub hidden_size: usize,
    /// Width of the dense SwiGLU layers.
    pub intermediate_size: usize,
    /// Width of each routed (and shared) expert.
    pub moe_intermediate_size: usize,
    /// Transformer blocks of the main model (MTP modules not included).
    pub num_hidden_layers: usize,
    /// The first this many blocks use a dense SwiGLU, the rest DeepSeekMoE.
    pub first_k_dense_replace: usize,
    /// Attention heads H.
    pub num_attention_heads: usize,
    /// Rank of the query latent; 0 = a plain query projection (HF: `null`).
    #[serde(with = "zero_is_null")]
    pub q_lora_rank: usize,
    /// Rank of the joint key-value latent.
    pub kv_lora_rank: usize,
    /// Per-head query/key dims without RoPE.
    pub qk_nope_head_dim: usize,
    /// Per-head query/key dims with RoPE (the key part is shared by all heads).
    pub qk_rope_head_dim: usize,
    /// Per-head value dim.
    pub v_head_dim: usize,
    /// Fine-grained routed experts per MoE layer.
    pub n_routed_experts: usize,
    /// Shared experts per MoE layer (run as one MLP of `n_shared × moe_intermediate`).
    pub n_shared_experts: usize,
    /// Routed experts per token.
    pub num_experts_per_tok: usize,
    /// Expert groups for group-limited routing.
    pub n_group: usize,
    /// Groups a token may route to.
    pub topk_group: usize,
    /// Scale of the gate weights.
    pub routed_scaling_factor: f64,
    /// Normalise the selected affinities to sum 1.
    pub norm_topk_prob: bool,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest sequence (RoPE table size).
    pub max_position_embeddings: usize,
    /// Multi-token prediction depth D (0 = none).
    #[serde(default)]
    pub num_nextn_predict_layers: usize,
    /// Std of the normal initialisation of linear and embedding weights.
    #[serde(default = "default_init")]
    pub initializer_range: f64,
}

fn default_init() -> f64 {
    0.02
}

/// HF writes `q_lora_rank: null` for a plain query projection.
mod zero_is_null {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &usize, s: S) -> Result<S::Ok, S::Error> {
        if *v == 0 {
            s.serialize_none()
        } else {
            s.serialize_u64(*v as u64)
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        Ok(Option::<usize>::deserialize(d)?.unwrap_or(0))
    }
}

/// Total and activated parameter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    /// Every parameter of the main model (embedding, blocks, head).
    pub total: u64,
    /// Parameters used per token (only `num_experts_per_tok` routed experts per MoE layer).
    pub activated: u64,
    /// Parameters of the MTP modules (not in `total`, as DeepSeek reports 671B).
    pub mtp: u64,
}

impl ModelConfig {
    /// A named preset (one of [`PRESETS`]): `tiny` (tests), `small` (CPU benchmark, tens of
    /// millions of parameters), `1b` (~1B parameters, ~0.25B activated: the GPU throughput
    /// preset), `deepseek-v3` (671B, the published config) and `deepseek-v2-lite` (15.7B, the
    /// published 16B-class config with this attention and MoE layout).
    pub fn preset(name: &str) -> Result<Self> {
        let c = match name {
            "tiny" => ModelConfig {
                vocab_size: 512,
                hidden_size: 32,
                intermediate_size: 64,
                moe_intermediate_size: 16,
                num_hidden_layers: 2,
                first_k_dense_replace: 1,
                num_attention_heads: 2,
                q_lora_rank: 16,
                kv_lora_rank: 16,
                qk_nope_head_dim: 8,
                qk_rope_head_dim: 4,
                v_head_dim: 8,
                n_routed_experts: 8,
                n_shared_experts: 1,
                num_experts_per_tok: 2,
                n_group: 2,
                topk_group: 1,
                routed_scaling_factor: 2.5,
                norm_topk_prob: true,
                rms_norm_eps: 1e-6,
                rope_theta: 10000.0,
                max_position_embeddings: 256,
                num_nextn_predict_layers: 1,
                initializer_range: 0.02,
            },
            "small" => ModelConfig {
                vocab_size: 50304,
                hidden_size: 256,
                intermediate_size: 768,
                moe_intermediate_size: 128,
                num_hidden_layers: 6,
                first_k_dense_replace: 1,
                num_attention_heads: 4,
                q_lora_rank: 128,
                kv_lora_rank: 64,
                qk_nope_head_dim: 32,
                qk_rope_head_dim: 16,
                v_head_dim: 32,
                n_routed_experts: 16,
                n_shared_experts: 1,
                num_experts_per_tok: 4,
                n_group: 4,
                topk_group: 2,
                routed_scaling_factor: 2.5,
                norm_topk_prob: true,
                rms_norm_eps: 1e-6,
                rope_theta: 10000.0,
                max_position_embeddings: 1024,
                num_nextn_predict_layers: 1,
                initializer_range: 0.02,
            },
            // DeepSeek-V3's layout at 1/7 of its width: one dense block, then DeepSeekMoE
            // blocks of 64 fine-grained experts (top-6 of 8 groups, 4 groups per token) and
            // one shared expert, MLA with latent ranks of the same proportions.
            "1b" => ModelConfig {
                vocab_size: 50304,
                hidden_size: 1024,
                intermediate_size: 2816,
                moe_intermediate_size: 256,
                num_hidden_layers: 18,
                first_k_dense_replace: 1,
                num_attention_heads: 16,
                q_lora_rank: 384,
                kv_lora_rank: 256,
                qk_nope_head_dim: 64,
                qk_rope_head_dim: 32,
                v_head_dim: 64,
                n_routed_experts: 64,
                n_shared_experts: 1,
                num_experts_per_tok: 6,
                n_group: 8,
                topk_group: 4,
                routed_scaling_factor: 2.5,
                norm_topk_prob: true,
                rms_norm_eps: 1e-6,
                rope_theta: 10000.0,
                max_position_embeddings: 4096,
                num_nextn_predict_layers: 1,
                initializer_range: 0.02,
            },
            "deepseek-v3" => ModelConfig {
                vocab_size: 129280,
                hidden_size: 7168,
                intermediate_size: 18432,
                moe_intermediate_size: 2048,
                num_hidden_layers: 61,
                first_k_dense_replace: 3,
                num_attention_heads: 128,
                q_lora_rank: 1536,
                kv_lora_rank: 512,
                qk_nope_head_dim: 128,
                qk_rope_head_dim: 64,
                v_head_dim: 128,
                n_routed_experts: 256,
                n_shared_experts: 1,
                num_experts_per_tok: 8,
                n_group: 8,
                topk_group: 4,
                routed_scaling_factor: 2.5,
                norm_topk_prob: true,
                rms_norm_eps: 1e-6,
                rope_theta: 10000.0,
                max_position_embeddings: 163840,
                num_nextn_predict_layers: 1,
                initializer_range: 0.006,
            },
            "deepseek-v2-lite" => ModelConfig {
                vocab_size: 102400,
                hidden_size: 2048,
                intermediate_size: 10944,
                moe_intermediate_size: 1408,
                num_hidden_layers: 27,
                first_k_dense_replace: 1,
                num_attention_heads: 16,
                q_lora_rank: 0,
                kv_lora_rank: 512,
                qk_nope_head_dim: 128,
                qk_rope_head_dim: 64,
                v_head_dim: 128,
                n_routed_experts: 64,
                n_shared_experts: 2,
                num_experts_per_tok: 6,
                n_group: 1,
                topk_group: 1,
                routed_scaling_factor: 1.0,
                norm_topk_prob: false,
                rms_norm_eps: 1e-6,
                rope_theta: 10000.0,
                max_position_embeddings: 163840,
                num_nextn_predict_layers: 0,
                initializer_range: 0.02,
            },
            other => {
                return Err(Error::Config(format!(
                    "unknown preset {other:?} (known: {})",
                    PRESETS.join(", ")
                )));
            }
        };
        Ok(c)
    }

    /// Per-head query/key dim: nope + rope.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Softmax scale 1/sqrt(nope + rope).
    pub fn softmax_scale(&self) -> f64 {
        1.0 / (self.qk_head_dim() as f64).sqrt()
    }

    /// Whether block `layer` (MTP blocks: `num_hidden_layers + k`) is an MoE block.
    pub fn is_moe(&self, layer: usize) -> bool {
        self.n_routed_experts > 0 && layer >= self.first_k_dense_replace
    }

    /// Checks that the dimensions fit together.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::Config(m));
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (name, v) in positive {
            if v == 0 {
                return err(format!("{name} must be positive"));
            }
        }
        if !self.qk_rope_head_dim.is_multiple_of(2) {
            return err(format!(
                "qk_rope_head_dim = {} must be even (RoPE rotates pairs)",
                self.qk_rope_head_dim
            ));
        }
        if self.first_k_dense_replace > 0 && self.intermediate_size == 0 {
            return err("intermediate_size must be positive when there are dense layers".into());
        }
        let moe_layers =
            self.first_k_dense_replace < self.num_hidden_layers + self.num_nextn_predict_layers;
        if moe_layers && self.n_routed_experts > 0 {
            if self.moe_intermediate_size == 0 {
                return err("moe_intermediate_size must be positive".into());
            }
            if self.num_experts_per_tok == 0 || self.num_experts_per_tok > self.n_routed_experts {
                return err(format!(
                    "num_experts_per_tok = {} must be in 1..={} (n_routed_experts)",
                    self.num_experts_per_tok, self.n_routed_experts
                ));
            }
            if self.n_group == 0 || !self.n_routed_experts.is_multiple_of(self.n_group) {
                return err(format!(
                    "n_routed_experts = {} is not divisible by n_group = {}",
                    self.n_routed_experts, self.n_group
                ));
            }
            if self.topk_group == 0 || self.topk_group > self.n_group {
                return err(format!(
                    "topk_group = {} must be in 1..={} (n_group)",
                    self.topk_group, self.n_group
                ));
            }
            let reachable = self.topk_group * (self.n_routed_experts / self.n_group);
            if self.num_experts_per_tok > reachable {
                return err(format!(
                    "num_experts_per_tok = {} exceeds the {reachable} experts in topk_group = {} groups",
                    self.num_experts_per_tok, self.topk_group
                ));
            }
        }
        if self.rms_norm_eps.is_nan()
            || self.rms_norm_eps <= 0.0
            || self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
            || !self.routed_scaling_factor.is_finite()
        {
            return err(
                "rms_norm_eps and rope_theta must be positive, routed_scaling_factor finite".into(),
            );
        }
        Ok(())
    }

    fn attention_params(&self) -> u64 {
        let (d, h) = (self.hidden_size as u64, self.num_attention_heads as u64);
        let qk = self.qk_head_dim() as u64;
        let q = if self.q_lora_rank == 0 {
            d * h * qk
        } else {
            let r = self.q_lora_rank as u64;
            d * r + r + r * h * qk
        };
        let kvr = self.kv_lora_rank as u64;
        let kv = d * (kvr + self.qk_rope_head_dim as u64)
            + kvr
            + kvr * h * (self.qk_nope_head_dim + self.v_head_dim) as u64;
        q + kv + h * self.v_head_dim as u64 * d
    }

    /// (all, activated) parameters of block `layer`.
    fn block_params(&self, layer: usize) -> (u64, u64) {
        let d = self.hidden_size as u64;
        let common = self.attention_params() + 2 * d;
        if self.is_moe(layer) {
            let e = 3 * d * self.moe_intermediate_size as u64;
            let router = self.n_routed_experts as u64 * d;
            let shared = self.n_shared_experts as u64 * e;
            (
                common + router + shared + self.n_routed_experts as u64 * e,
                common + router + shared + self.num_experts_per_tok as u64 * e,
            )
        } else {
            let p = common + 3 * d * self.intermediate_size as u64;
            (p, p)
        }
    }

    /// Parameter counts (the expert-bias vectors are state, not parameters).
    pub fn param_counts(&self) -> ParamCounts {
        let d = self.hidden_size as u64;
        let outer = 2 * self.vocab_size as u64 * d + d;
        let (mut total, mut activated) = (outer, outer);
        for l in 0..self.num_hidden_layers {
            let (t, a) = self.block_params(l);
            total += t;
            activated += a;
        }
        let mtp = (0..self.num_nextn_predict_layers)
            .map(|k| 3 * d + 2 * d * d + self.block_params(self.num_hidden_layers + k).0)
            .sum();
        ParamCounts {
            total,
            activated,
            mtp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deepseek_v3_counts_671b_total_37b_activated() {
        let c = ModelConfig::preset("deepseek-v3").unwrap();
        c.validate().unwrap();
        let p = c.param_counts();
        // The report: 671B total, 37B activated per token; the MTP module adds 14B (685B on HF).
        assert!(
            (670.5e9..671.5e9).contains(&(p.total as f64)),
            "{}",
            p.total
        );
        assert!(
            (36.5e9..37.9e9).contains(&(p.activated as f64)),
            "{}",
            p.activated
        );
        assert!((11.0e9..15.0e9).contains(&(p.mtp as f64)), "{}", p.mtp);
    }

    /// Validates `preset` and checks its total and activated parameter counts.
    fn counts_in(preset: &str, total: std::ops::Range<f64>, activated: std::ops::Range<f64>) {
        let c = ModelConfig::preset(preset).unwrap();
        c.validate().unwrap();
        let p = c.param_counts();
        assert!(total.contains(&(p.total as f64)), "{preset}: {}", p.total);
        assert!(
            activated.contains(&(p.activated as f64)),
            "{preset}: {}",
            p.activated
        );
    }

    #[test]
    fn v2_lite_counts_15_7b() {
        counts_in("deepseek-v2-lite", 15.6e9..15.8e9, 2.3e9..2.8e9);
    }

    #[test]
    fn one_b_counts_about_1b_total() {
        // transformers' DeepseekV3ForCausalLM built from its config.json: 1,033,158,912.
        counts_in("1b", 0.95e9..1.1e9, 0.2e9..0.3e9);
        let p = ModelConfig::preset("1b").unwrap().param_counts();
        assert_eq!(p.total, 1_033_158_912);
    }

    #[test]
    fn small_is_tens_of_millions_and_presets_validate() {
        for name in PRESETS {
            ModelConfig::preset(name).unwrap().validate().unwrap();
        }
        let p = ModelConfig::preset("small").unwrap().param_counts();
        assert!((10e6..100e6).contains(&(p.total as f64)), "{}", p.total);
        assert!(ModelConfig::preset("huge").is_err());
    }

    #[test]
    fn bad_dimensions_are_named() {
        let base = ModelConfig::preset("tiny").unwrap();
        let mut c = base.clone();
        c.n_group = 3;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not divisible by n_group")
        );
        let mut c = base.clone();
        c.num_experts_per_tok = 9;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("num_experts_per_tok")
        );
        let mut c = base.clone();
        c.qk_rope_head_dim = 3;
        assert!(c.validate().unwrap_err().to_string().contains("even"));
        let mut c = base;
        c.topk_group = 3;
        assert!(c.validate().unwrap_err().to_string().contains("topk_group"));
    }

    #[test]
    fn hf_json_round_trip_with_null_q_lora() {
        let c = ModelConfig::preset("deepseek-v2-lite").unwrap();
        let j = serde_json::to_string(&c).unwrap();
        assert!(j.contains("\"q_lora_rank\":null"));
        assert_eq!(serde_json::from_str::<ModelConfig>(&j).unwrap(), c);
    }
}
