//! Incremental decoding with MLA's compressed key-value cache (DeepSeek-V2 §2.1, DeepSeek-V3
//! §2.1.1): what generation runs, one new token (or a prompt's chunk) at a time.
//!
//! Per main block and past token the cache keeps only what MLA's keys and values are made
//! of — the normalised joint latent `c_kv` `[kv_lora]` and the rotated shared key `k_pe`
//! `[rope]` — not the per-head keys and values: `num_hidden_layers · (kv_lora_rank +
//! qk_rope_head_dim)` values per token ([`KvCache::bytes_per_token`]). DeepSeek-V3: 61 · (512 +
//! 64) = 35,136 values (70 KB in BF16), where full keys and values would take 61 · 128 · (192 +
//! 128) = 2,498,560 (71× more).
//!
//! `W_UK` is absorbed into the query, as the papers describe: with `kv_b` = `[W_UK_h ; W_UV_h]`
//! per head h (rows `h·(nope+v) ..` of `kv_b_proj`), for a new token's query:
//!
//! ```text
//! q̃_h     = W_UK_hᵀ q_nope_h                          [kv_lora]   (absorbed query)
//! score_j  = (q̃_h · c_kv_j + q_pe_h · k_pe_j) · scale    for every cached position j ≤ t
//! ō_h      = Σ_j softmax(score)_j · c_kv_j              [kv_lora]   (attention in latent space)
//! o_h      = W_UV_h ō_h                                 [v]         (W_UV applied once, after)
//! ```
//!
//! so keys and values are never reconstructed; the softmax and both sums run in f64. The rest of
//! a block (norms, query path, MoE or dense FFN) is the training forward's, on the new rows.

use std::sync::Arc;

use rayon::prelude::*;
use tokenmill_kernels::Real;
use tokenmill_kernels::backend::{Backend, RopeTable};

use crate::block::Ffn;
use crate::error::{Error, Result};
use crate::mla::{Mla, QProj};
use crate::model::Model;
use crate::ops::{Ctx, NonFiniteTiles};

/// The compressed key-value cache of one sequence.
#[derive(Debug, Clone)]
pub struct KvCache<T> {
    /// Per main block: the normalised latents `[len, kv_lora]`.
    ckv: Vec<Vec<T>>,
    /// Per main block: the rotated shared keys `[len, rope]`.
    kpe: Vec<Vec<T>>,
    len: usize,
    rope: RopeTable<T>,
}

impl<T: Real> KvCache<T> {
    /// Tokens cached (the position of the next one).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Nothing cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Values kept per token over all blocks: `layers · (kv_lora + rope)`.
    pub fn values_per_token(cfg: &crate::ModelConfig) -> usize {
        cfg.num_hidden_layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    }
    /// Bytes kept per token, at `T`'s width.
    pub fn bytes_per_token(cfg: &crate::ModelConfig) -> usize {
        Self::values_per_token(cfg) * std::mem::size_of::<T>()
    }
    /// Bytes the cache holds now.
    pub fn bytes(&self) -> usize {
        (self.ckv.iter().map(Vec::len).sum::<usize>()
            + self.kpe.iter().map(Vec::len).sum::<usize>())
            * std::mem::size_of::<T>()
    }
}

/// Rotates `row` (`rope` interleaved pairs, as the backend's RoPE does) to position `pos`.
fn rotate<T: Real>(t: &RopeTable<T>, row: &mut [T], pos: usize) {
    let half = t.d_rope / 2;
    let (c, s) = (
        &t.cos()[pos * half..(pos + 1) * half],
        &t.sin()[pos * half..(pos + 1) * half],
    );
    for i in 0..half {
        let (x0, x1) = (row[2 * i], row[2 * i + 1]);
        row[2 * i] = x0 * c[i] - x1 * s[i];
        row[2 * i + 1] = x0 * s[i] + x1 * c[i];
    }
}

impl Mla {
    /// Attention of `n` new tokens x `[n, d]` at positions `pos0..pos0+n` over the cached
    /// ones and themselves (causal), appending their latents to `ckv`/`kpe`; → `[n, d]`.
    #[allow(clippy::too_many_arguments)]
    fn decode<T: Real>(
        &self,
        cx: &Ctx<'_, T>,
        rope: &RopeTable<T>,
        x: &[T],
        pos0: usize,
        ckv: &mut Vec<T>,
        kpe: &mut Vec<T>,
    ) -> Vec<T> {
        let (h, nope, r, vd, lat) = (self.heads, self.nope, self.rope, self.v, self.kv_lora);
        let qk = nope + r;
        let n = x.len() / self.kv_a.inp;
        let mut q = match self.q {
            QProj::Plain(l) => l.fwd(cx, x),
            QProj::Lora { a, norm, b } => b.fwd(cx, &norm.fwd(cx, &a.fwd(cx, x)).0),
        };
        for i in 0..n {
            for hi in 0..h {
                let at = (i * h + hi) * qk + nope;
                rotate(rope, &mut q[at..at + r], pos0 + i);
            }
        }
        let kva = self.kv_a.fwd(cx, x);
        let w = lat + r;
        let raw: Vec<T> = kva.chunks(w).flat_map(|row| &row[..lat]).copied().collect();
        ckv.extend_from_slice(&self.kv_norm.fwd(cx, &raw).0);
        for (i, row) in kva.chunks(w).enumerate() {
            let mut k = row[lat..].to_vec();
            rotate(rope, &mut k, pos0 + i);
            kpe.extend_from_slice(&k);
        }
        let wkv = cx.w(self.kv_b.w);
        let (ckv, kpe) = (&ckv[..], &kpe[..]);
        let mut o_in = vec![T::zero(); n * h * vd];
        // One (token, head) pair per task: each writes its own `v` outputs, so the result
        // does not depend on the thread count.
        o_in.par_chunks_mut(vd).enumerate().for_each(|(ih, out)| {
            let (i, hi) = (ih / h, ih % h);
            let len = pos0 + i + 1;
            let qrow = &q[ih * qk..(ih + 1) * qk];
            let wuk = &wkv[hi * (nope + vd) * lat..(hi * (nope + vd) + nope) * lat];
            let wuv = &wkv[(hi * (nope + vd) + nope) * lat..(hi + 1) * (nope + vd) * lat];
            let mut qabs = vec![0f64; lat];
            for (a, wr) in wuk.chunks(lat).enumerate() {
                let qa = qrow[a].f64();
                for (acc, &wv) in qabs.iter_mut().zip(wr) {
                    *acc += qa * wv.f64();
                }
            }
            let mut p = Vec::with_capacity(len);
            let mut max = f64::NEG_INFINITY;
            for j in 0..len {
                let c = &ckv[j * lat..(j + 1) * lat];
                let k = &kpe[j * r..(j + 1) * r];
                let mut s = 0f64;
                for (a, &cv) in qabs.iter().zip(c) {
                    s += a * cv.f64();
                }
                for (&qv, &kv) in qrow[nope..].iter().zip(k) {
                    s += qv.f64() * kv.f64();
                }
                s *= self.scale;
                max = max.max(s);
                p.push(s);
            }
            let mut z = 0f64;
            for s in p.iter_mut() {
                *s = (*s - max).exp();
                z += *s;
            }
            let mut olat = vec![0f64; lat];
            for (j, &pj) in p.iter().enumerate() {
                let c = &ckv[j * lat..(j + 1) * lat];
                for (acc, &cv) in olat.iter_mut().zip(c) {
                    *acc += pj / z * cv.f64();
                }
            }
            for (e, wr) in wuv.chunks(lat).enumerate() {
                out[e] = T::of(wr.iter().zip(&olat).map(|(&wv, &o)| wv.f64() * o).sum());
            }
        });
        self.o.fwd(cx, &o_in)
    }
}

impl Model {
    /// An empty compressed key-value cache for one sequence of this model.
    pub fn kv_cache<T: Real>(&self) -> KvCache<T> {
        let l = self.blocks.len();
        KvCache {
            ckv: vec![Vec::new(); l],
            kpe: vec![Vec::new(); l],
            len: 0,
            rope: RopeTable::new(
                self.cfg.qk_rope_head_dim,
                self.cfg.rope_theta,
                self.cfg.max_position_embeddings,
            ),
        }
    }

    /// Runs the main model on `tokens`, the continuation of the sequence `cache` holds (a
    /// whole prompt, or one generated token), and returns their next-token logits `[n, V]`;
    /// the tokens' latents join the cache. Row i equals row `cache.len() + i` of a full
    /// forward over the whole sequence (test `decode::tests`).
    pub fn decode<T: Real>(
        &self,
        be: &dyn Backend<T>,
        params: &[T],
        cache: &mut KvCache<T>,
        tokens: &[u32],
    ) -> Result<Vec<T>> {
        let (n, d, v) = (tokens.len(), self.cfg.hidden_size, self.cfg.vocab_size);
        let pos0 = cache.len;
        if n == 0 {
            return Err(Error::Data("nothing to decode".into()));
        }
        if pos0 + n > self.cfg.max_position_embeddings {
            return Err(Error::Data(format!(
                "{} tokens exceed max_position_embeddings = {}",
                pos0 + n,
                self.cfg.max_position_embeddings
            )));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(Error::Data(format!(
                "token id {t} is outside the model's vocabulary of {v}"
            )));
        }
        if cache.ckv.len() != self.blocks.len() {
            return Err(Error::Data(
                "a key-value cache made for another model".into(),
            ));
        }
        let nonfinite = NonFiniteTiles::default();
        let cx = Ctx {
            be,
            layout: &self.layout,
            params,
            precision: self.precision,
            ep: None,
            batch: None,
            nonfinite: &nonfinite,
            key_starts: None,
        };
        let mut x = vec![T::zero(); n * d];
        be.embedding_fwd(cx.w(self.embed), d, tokens, &mut x);
        for (l, b) in self.blocks.iter().enumerate() {
            let (xn, _) = b.ln1.fwd(&cx, &x);
            let a = b.attn.decode(
                &cx,
                &cache.rope,
                &xn,
                pos0,
                &mut cache.ckv[l],
                &mut cache.kpe[l],
            );
            let mut h = a;
            for (hv, &xv) in h.iter_mut().zip(&x) {
                *hv += xv;
            }
            let hn = Arc::new(b.ln2.fwd(&cx, &h).0);
            let f = match &b.ffn {
                Ffn::Dense(m) => m.fwd(&cx, hn).0,
                Ffn::Moe(m) => m.fwd(&cx, hn, 1, n, 0.0).0,
            };
            x = f;
            for (yv, &hv) in x.iter_mut().zip(&h) {
                *yv += hv;
            }
        }
        cache.len += n;
        let (normed, _) = self.norm.fwd(&cx, &x);
        Ok(self.head.fwd(&cx, &normed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::model::{Batch, LossWeights};
    use crate::rng::Rng;
    use tokenmill_kernels::Cpu;

    /// The logits of a full forward over `tokens` (rows for every input position) and of the
    /// cached decode: the first `chunk` tokens at once, then one at a time.
    fn both<T: Real>(cfg: &ModelConfig, tokens: &[u32], chunk: usize) -> (Vec<T>, Vec<T>, usize) {
        let model = Model::new(cfg.clone()).unwrap();
        let mut params: Vec<T> = model.init(11);
        // Routing biases away from zero, so the bias takes part in the choice.
        let mut rng = Rng::new(5);
        for id in model.moe_biases() {
            for b in &mut params[model.layout.range(id)] {
                *b = T::of(0.1 * rng.normal());
            }
        }
        let s = tokens.len() - 1;
        let batch = Batch {
            starts: None,
            distill: None,
            tokens,
            mask: None,
            b: 1,
            s,
        };
        let w = LossWeights {
            mtp_lambda: 0.0,
            balance_alpha: 0.0,
        };
        let full = model.forward(&Cpu, &params, &batch, w, false).unwrap();
        let full = full.logits().unwrap().to_vec();
        let mut cache = model.kv_cache::<T>();
        let mut inc = model
            .decode(&Cpu, &params, &mut cache, &tokens[..chunk])
            .unwrap();
        for i in chunk..s {
            inc.extend(
                model
                    .decode(&Cpu, &params, &mut cache, &tokens[i..i + 1])
                    .unwrap(),
            );
        }
        assert_eq!(cache.len(), s);
        assert_eq!(
            cache.bytes(),
            s * KvCache::<T>::bytes_per_token(cfg),
            "the cache holds the latent and the rope key only"
        );
        (full, inc, s)
    }

    fn configs() -> Vec<ModelConfig> {
        let mut a = ModelConfig::preset("tiny").unwrap();
        a.vocab_size = 64;
        // Weights of a scale that gives logits of order one.
        a.initializer_range = 0.3;
        let mut b = a.clone();
        b.q_lora_rank = 0;
        b.num_nextn_predict_layers = 0;
        b.n_group = 1;
        b.topk_group = 1;
        vec![a, b]
    }

    fn tokens(n: usize, v: u32) -> Vec<u32> {
        let mut rng = Rng::new(3);
        (0..n).map(|_| rng.below(v as usize) as u32).collect()
    }

    #[test]
    fn cached_incremental_decode_gives_the_logits_of_a_full_forward() {
        for cfg in configs() {
            let toks = tokens(41, cfg.vocab_size as u32);
            for chunk in [1, 7] {
                let (full, inc, _) = both::<f32>(&cfg, &toks, chunk);
                assert_eq!(full.len(), inc.len());
                let big = full.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert!(big > 0.5, "logits too small to tell: {big}");
                let worst = full
                    .iter()
                    .zip(&inc)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= 1e-5, "max |Δlogit| {worst} (largest logit {big})");
                eprintln!("chunk {chunk}: f32 max |Δlogit| {worst:.2e}, largest logit {big:.2}");
                let (full, inc, _) = both::<f64>(&cfg, &toks, chunk);
                let worst = full
                    .iter()
                    .zip(&inc)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f64, f64::max);
                assert!(worst <= 1e-12, "f64: max |Δlogit| {worst}");
                eprintln!("chunk {chunk}: f64 max |Δlogit| {worst:.2e}");
            }
        }
    }

    #[test]
    fn decode_refuses_positions_past_the_table_and_foreign_tokens() {
        let mut cfg = ModelConfig::preset("tiny").unwrap();
        cfg.vocab_size = 64;
        cfg.max_position_embeddings = 8;
        let model = Model::new(cfg).unwrap();
        let params: Vec<f32> = model.init(1);
        let mut cache = model.kv_cache::<f32>();
        let e = model.decode(&Cpu, &params, &mut cache, &[64]).unwrap_err();
        assert!(e.to_string().contains("token id 64"), "{e}");
        model.decode(&Cpu, &params, &mut cache, &[1; 8]).unwrap();
        let e = model.decode(&Cpu, &params, &mut cache, &[1]).unwrap_err();
        assert!(e.to_string().contains("max_position_embeddings"), "{e}");
    }

    #[test]
    fn deepseek_v3_keeps_576_values_per_layer_and_token() {
        let c = ModelConfig::preset("deepseek-v3").unwrap();
        assert_eq!(KvCache::<f32>::values_per_token(&c), 61 * 576);
        let full = c.num_hidden_layers * c.num_attention_heads * (c.qk_head_dim() + c.v_head_dim);
        assert_eq!(full / KvCache::<f32>::values_per_token(&c), 71);
    }
}
