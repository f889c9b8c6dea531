//! `tokenmill generate --model DIR --prompt "…"`: text from a model, decoded token by token
//! with MLA's compressed key-value cache ([`tokenmill_trainer::decode`]): the prompt runs once
//! as one chunk, then each new token alone, attending to the cached latents.
//!
//! Choosing the next token: greedy (`temperature = 0`, the default: the first largest logit,
//! as `torch.argmax` and transformers' `generate(do_sample=False)` choose), or sampled from
//! `softmax(logits / temperature)` cut to the smallest set of most likely tokens whose
//! probability reaches `top_p` (nucleus sampling), with a seeded generator.

use std::time::Instant;

use tokenmill_kernels::Backend;
use tokenmill_kernels::rng::Rng;
use tokenmill_trainer::Model;
use tokenmill_trainer::decode::KvCache;

use crate::error::{Error, Result};

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// New tokens at most.
    pub max_tokens: usize,
    /// 0: greedy; else the softmax temperature.
    pub temperature: f64,
    /// Nucleus: keep the most likely tokens up to this probability mass (1: all).
    pub top_p: f64,
    /// Seed of the sampling generator.
    pub seed: u64,
    /// Stop after this token (the end of text), which is kept in the output.
    pub stop: Option<u32>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// The stop token was generated.
    Stop,
    /// The sequence reached `max_position_embeddings`.
    Positions,
}

/// What [`generate`] produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    /// The new tokens.
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
    /// Bytes of the key-value cache at the end.
    pub kv_cache_bytes: usize,
    /// Bytes of the cache per token (`layers · (kv_lora_rank + qk_rope_head_dim) · 4`).
    pub kv_cache_bytes_per_token: usize,
    /// Seconds for the prompt's forward.
    pub prefill_s: f64,
    /// Seconds for the tokens after the first.
    pub decode_s: f64,
}

/// The index of the first largest value (`torch.argmax` on ties).
fn argmax(row: &[f32]) -> u32 {
    crate::eval::argmax(row) as u32
}

/// The next token from one row of logits (see the module documentation).
pub fn choose(row: &[f32], cfg: &GenerateConfig, rng: &mut Rng) -> u32 {
    if cfg.temperature <= 0.0 {
        return argmax(row);
    }
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let mut p: Vec<(f64, u32)> = row
        .iter()
        .enumerate()
        .map(|(i, &x)| (((x as f64 - max) / cfg.temperature).exp(), i as u32))
        .collect();
    let z: f64 = p.iter().map(|x| x.0).sum();
    // Most likely first; ties by token id, so the order is fixed.
    p.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut keep = p.len();
    if cfg.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, &(w, _)) in p.iter().enumerate() {
            acc += w / z;
            if acc >= cfg.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let kept = &p[..keep];
    let mass: f64 = kept.iter().map(|x| x.0).sum();
    let mut u = rng.uniform() * mass;
    for &(w, t) in kept {
        if u < w {
            return t;
        }
        u -= w;
    }
    kept[kept.len() - 1].1
}

/// Generates after `prompt` (see the module documentation).
pub fn generate(
    model: &Model,
    params: &[f32],
    be: &dyn Backend<f32>,
    prompt: &[u32],
    cfg: &GenerateConfig,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::Config(
            "an empty prompt: give at least one token".into(),
        ));
    }
    if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
        return Err(Error::Config(format!(
            "temperature {} must be 0 (greedy) or positive",
            cfg.temperature
        )));
    }
    if !(cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
        return Err(Error::Config(format!(
            "top_p {} must be in (0, 1]",
            cfg.top_p
        )));
    }
    let max_pos = model.cfg.max_position_embeddings;
    if prompt.len() > max_pos {
        return Err(Error::Config(format!(
            "a prompt of {} tokens does not fit in max_position_embeddings = {max_pos}",
            prompt.len()
        )));
    }
    let v = model.cfg.vocab_size;
    let mut rng = Rng::new(cfg.seed);
    let mut cache: KvCache<f32> = model.kv_cache();
    let mut out = Vec::with_capacity(cfg.max_tokens);
    let t0 = Instant::now();
    let logits = model.decode(be, params, &mut cache, prompt)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let mut row = logits[(prompt.len() - 1) * v..].to_vec();
    let t1 = Instant::now();
    let stop = loop {
        if out.len() == cfg.max_tokens {
            break StopReason::MaxTokens;
        }
        let next = choose(&row, cfg, &mut rng);
        out.push(next);
        if cfg.stop == Some(next) {
            break StopReason::Stop;
        }
        if out.len() == cfg.max_tokens {
            break StopReason::MaxTokens;
        }
        if cache.len() == max_pos {
            break StopReason::Positions;
        }
        row = model.decode(be, params, &mut cache, &[next])?;
    };
    Ok(Generation {
        tokens: out,
        stop,
        kv_cache_bytes: cache.bytes(),
        kv_cache_bytes_per_token: KvCache::<f32>::bytes_per_token(&model.cfg),
        prefill_s,
        decode_s: t1.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_keeps_the_nucleus_and_greedy_takes_the_first_maximum() {
        let row = [0.0f32, 3.0, 3.0, 1.0, -2.0];
        let mut rng = Rng::new(1);
        assert_eq!(choose(&row, &GenerateConfig::default(), &mut rng), 1);
        // top_p small: only the most likely token (the first of the tie) is left.
        let cfg = GenerateConfig {
            temperature: 1.0,
            top_p: 0.01,
            ..Default::default()
        };
        for _ in 0..50 {
            assert_eq!(choose(&row, &cfg, &mut rng), 1);
        }
        // p = (0.023, 0.456, 0.456, 0.062, 0.003): top_p 0.9 keeps {1, 2}; 0.95 adds 3.
        for (top_p, kept) in [(0.9, vec![1, 2]), (0.95, vec![1, 2, 3])] {
            let cfg = GenerateConfig {
                temperature: 1.0,
                top_p,
                ..Default::default()
            };
            let mut seen = [0usize; 5];
            for _ in 0..4000 {
                seen[choose(&row, &cfg, &mut rng) as usize] += 1;
            }
            for (t, &c) in seen.iter().enumerate() {
                assert_eq!(c > 100, kept.contains(&t), "top_p {top_p}: {seen:?}");
            }
        }
        // A high temperature flattens: every token appears.
        let cfg = GenerateConfig {
            temperature: 100.0,
            ..Default::default()
        };
        let mut seen = [0usize; 5];
        for _ in 0..2000 {
            seen[choose(&row, &cfg, &mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 250), "{seen:?}");
    }
}
