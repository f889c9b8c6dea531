//! Writes the parity fixture: a `tiny` DeepSeek-V3 model in Hugging Face layout with every
//! tensor kind away from its trivial value (random norm scales and routing biases too), and a
//! batch. `tests/peers/deepseek_v3_golden.py` then runs it through `transformers`.
//!
//! `cargo run -p tokenmill-trainer --example hf_fixture -- tests/fixtures/deepseek_v3/tiny`

use std::path::PathBuf;

use tokenmill_trainer::params::ParamKind;
use tokenmill_trainer::rng::Rng;
use tokenmill_trainer::{Model, ModelConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: hf_fixture OUT_DIR")?);
    let mut cfg = ModelConfig::preset("tiny")?;
    cfg.vocab_size = 128;
    cfg.initializer_range = 0.1;
    let model = Model::new(cfg)?;
    let mut params: Vec<f32> = model.init(2024);
    let mut rng = Rng::new(77);
    for s in &model.layout.specs {
        let r = s.range.clone();
        match s.kind {
            ParamKind::Norm => params[r]
                .iter_mut()
                .for_each(|x| *x = 1.0 + 0.1 * rng.normal() as f32),
            ParamKind::Buffer => params[r]
                .iter_mut()
                .for_each(|x| *x = 0.05 * rng.normal() as f32),
            _ => {}
        }
    }
    tokenmill_trainer::hf::save(&out, &model, &params)?;
    let (b, s) = (2usize, 16usize);
    let tokens: Vec<Vec<u32>> = (0..b)
        .map(|_| (0..=s).map(|_| (rng.next_u64() % 128) as u32).collect())
        .collect();
    let batch = serde_json::json!({ "tokens": tokens, "mtp_lambda": 0.3 });
    std::fs::write(out.join("batch.json"), serde_json::to_string(&batch)?)?;
    println!("wrote {} ({} parameters)", out.display(), params.len());
    Ok(())
}
