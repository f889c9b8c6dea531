//! What a user writes or a run left behind: pipeline and training TOML, checkpoints.

use tokenmill_trainer::ModelConfig;
use tokenmill_trainer::model::Model;
use tokenmill_trainer::optim::{AdamW, AdamWConfig};
use tokenmill_trainer::train::{TrainConfig, load_checkpoint};

/// The first byte picks the file: even, a pipeline configuration (`build --config`); odd, a
/// training configuration (`train --config`), whose model is resolved and whose layout is
/// validated as `train` does before any allocation.
pub fn config(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(c) = toml::from_str::<tokenmill_pipelines::config::BuildConfig>(text) {
            let _ = c.dedup.config.validate();
            if let Some(f) = &c.filters {
                let _ = f.validate();
            }
        }
        return;
    }
    let Ok(cfg) = toml::from_str::<TrainConfig>(text) else {
        return;
    };
    for step in [0, 1, cfg.train.steps / 2, cfg.train.steps, u64::MAX] {
        let lr = cfg.lr.at(step);
        let finite = cfg.lr.peak.is_finite() && cfg.lr.min.is_finite();
        assert!(
            !lr.is_nan() || !finite,
            "lr NaN at step {step} from finite settings"
        );
        let _ = cfg.mtp_lambda(step);
    }
    let Ok(model) = cfg.model.resolve() else {
        return;
    };
    let _ = model.param_counts();
    let world = cfg
        .parallel
        .dp
        .saturating_mul(cfg.parallel.ep)
        .saturating_mul(cfg.parallel.pp);
    let _ = cfg.parallel.validate(
        world,
        &model,
        cfg.data.batch as usize,
        cfg.data.batch as usize,
    );
}

/// The model every fuzzed checkpoint is loaded into: the `tiny` preset cut down to a few
/// thousand parameters (one dense block and one MoE block, MTP, 64 tokens), so a whole
/// checkpoint fits in a fuzz input.
pub fn micro_model() -> Model {
    let cfg = ModelConfig {
        vocab_size: 64,
        hidden_size: 16,
        intermediate_size: 16,
        moe_intermediate_size: 8,
        num_attention_heads: 1,
        q_lora_rank: 8,
        kv_lora_rank: 8,
        qk_nope_head_dim: 4,
        qk_rope_head_dim: 4,
        v_head_dim: 4,
        n_routed_experts: 4,
        num_experts_per_tok: 2,
        max_position_embeddings: 16,
        ..ModelConfig::preset("tiny").expect("a preset")
    };
    Model::new(cfg).expect("the micro model is valid")
}

/// Parts: `config.json`, `model.safetensors`, `optimizer.safetensors`,
/// `optimizer_v.safetensors`, `state.json` of one checkpoint directory, loaded as `--resume`
/// loads it into [`micro_model`].
pub fn checkpoint(data: &[u8]) {
    let parts = crate::split(data, 5);
    let dir = crate::scratch().join("checkpoint");
    std::fs::create_dir_all(&dir).expect("scratch checkpoint directory");
    for (name, bytes) in CHECKPOINT_FILES.iter().zip(&parts) {
        std::fs::write(dir.join(name), bytes).expect("write");
    }
    let _ = tokenmill_trainer::hf::read_config(&dir.join("config.json"));
    let model = micro_model();
    let mut params = vec![0f32; model.layout.len()];
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout);
    if let Ok(state) = load_checkpoint(&dir, &model, &mut params, &mut opt) {
        assert_eq!(opt.t, state.optimizer_t);
    }
}

/// The files of a one-process checkpoint, in the order of [`checkpoint`]'s parts.
pub const CHECKPOINT_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "optimizer.safetensors",
    "optimizer_v.safetensors",
    "state.json",
];
