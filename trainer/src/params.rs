//! Parameter storage: every tensor of the model in one flat buffer, addressed by a
//! [`ParamId`], with its Hugging Face name and shape. Gradients and optimizer moments use the
//! same layout, so clipping, AdamW and checkpointing are loops over one slice.

use std::ops::Range;

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
        for (i, s) in self.specs.iter().enumerate() {
            let dst = &mut data[s.range.clone()];
            match s.kind {
                ParamKind::Linear | ParamKind::Embedding => {
                    let mut rng = Rng::new(seed.wrapping_mul(0x100000001B3).wrapping_add(i as u64));
                    for x in dst {
                        *x = T::of(rng.normal() * std);
                    }
                }
                ParamKind::Norm => dst.fill(T::one()),
                ParamKind::Buffer => dst.fill(T::zero()),
            }
        }
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
