//! Parameter storage: every tensor of the model in one flat buffer, addressed by a
//! [`ParamId`], with its Hugging Face name and shape. Gradients and optimizer moments use the
//! same layout, so clipping, AdamW and checkpointing are loops over one slice.

use std::ops::Range;

use rayon::prelude::*;
use tokenmill_kernels::Real;

use crate::rng::Rng;

/// Index of a tensor in a [`ParamLayout`].
pub type ParamId = usize;

/// What a tensor is, which decides initialisation and weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A linear layer's weight `[out, in]`: normal init, decayed.
    Linear,
    /// An embedding table `[vocab, d]`: normal init, not decayed.
    Embedding,
    /// An RMSNorm weight `[d]`: ones, not decayed.
    Norm,
    /// State that is not trained by gradients (the routing bias `[experts]`): zeros.
    Buffer,
}

/// One tensor.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Hugging Face name, e.g. `model.layers.3.self_attn.kv_b_proj.weight`.
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Position in the flat buffer.
    pub range: Range<usize>,
    /// Kind.
    pub kind: ParamKind,
}

impl ParamSpec {
    /// Whether the optimizer updates this tensor.
    pub fn trainable(&self) -> bool {
        self.kind != ParamKind::Buffer
    }
    /// Whether AdamW decays it (linear weights only: no decay on norms, biases, embeddings).
    pub fn decayed(&self) -> bool {
        self.kind == ParamKind::Linear
    }
}

/// The names, shapes and offsets of every tensor.
#[derive(Debug, Clone, Default)]
pub struct ParamLayout {
    /// Tensors in allocation order.
    pub specs: Vec<ParamSpec>,
    len: usize,
}

impl ParamLayout {
    /// Appends a tensor.
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize], kind: ParamKind) -> ParamId {
        let n: usize = shape.iter().product();
        self.specs.push(ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
            range: self.len..self.len + n,
            kind,
        });
        self.len += n;
        self.specs.len() - 1
    }
    /// Elements in all tensors.
    pub fn len(&self) -> usize {
        self.len
    }
    /// No tensors.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The range of tensor `id`.
    pub fn range(&self, id: ParamId) -> Range<usize> {
        self.specs[id].range.clone()
    }
    /// Looks a tensor up by name.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.specs.iter().position(|s| s.name == name)
    }
    /// Fresh parameters: normal(0, std) for linear and embedding weights, ones for norms,
    /// zeros for buffers. Each tensor draws from its own stream (seed, index), so adding a
    /// tensor does not change the others.
    pub fn init<T: Real>(&self, std: f64, seed: u64) -> Vec<T> {
        let mut data = vec![T::zero(); self.len];
        // The tensors' disjoint slices, filled in parallel (a 1B model's billion normal
        // draws take 41 s on one core); each stream depends only on (seed, index), so the
        // values do not depend on the thread count.
        let mut parts = Vec::with_capacity(self.specs.len());
        let mut rest = &mut data[..];
        let mut at = 0;
        for (i, s) in self.specs.iter().enumerate() {
            assert_eq!(
                s.range.start, at,
                "tensor {} is not where the layout ends",
                s.name
            );
            let (part, tail) = rest.split_at_mut(s.range.len());
            parts.push((i, s.kind, part));
            rest = tail;
            at = s.range.end;
        }
        parts.into_par_iter().for_each(|(i, kind, dst)| match kind {
            ParamKind::Linear | ParamKind::Embedding => {
                let mut rng = Rng::new(seed.wrapping_mul(0x100000001B3).wrapping_add(i as u64));
                for x in dst {
                    *x = T::of(rng.normal() * std);
                }
            }
            ParamKind::Norm => dst.fill(T::one()),
            ParamKind::Buffer => dst.fill(T::zero()),
        });
        data
    }
}

/// Borrow tensor `id` of a flat buffer.
#[inline]
pub fn view<'a, T>(layout: &ParamLayout, data: &'a [T], id: ParamId) -> &'a [T] {
    &data[layout.range(id)]
}

/// Mutably borrow tensor `id` of a flat buffer.
#[inline]
pub fn view_mut<'a, T>(layout: &ParamLayout, data: &'a mut [T], id: ParamId) -> &'a mut [T] {
    &mut data[layout.range(id)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel fill is every tensor's own stream, bit for bit, in any thread pool.
    #[test]
    fn init_is_each_tensors_stream_whatever_the_threads() {
        let mut l = ParamLayout::default();
        l.add("embed", &[50, 8], ParamKind::Embedding);
        for i in 0..20 {
            l.add(format!("w{i}"), &[7, 3 + i], ParamKind::Linear);
            l.add(format!("norm{i}"), &[7], ParamKind::Norm);
        }
        l.add("bias", &[4], ParamKind::Buffer);
        let (std, seed) = (0.02, 9u64);
        let mut want = Vec::with_capacity(l.len());
        for (i, s) in l.specs.iter().enumerate() {
            let mut rng = Rng::new(seed.wrapping_mul(0x100000001B3).wrapping_add(i as u64));
            for _ in s.range.clone() {
                want.push(match s.kind {
                    ParamKind::Linear | ParamKind::Embedding => (rng.normal() * std) as f32,
                    ParamKind::Norm => 1.0,
                    ParamKind::Buffer => 0.0,
                });
            }
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got: Vec<f32> = pool.install(|| l.init(std, seed));
            assert_eq!(
                got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{threads} threads"
            );
        }
    }
}
