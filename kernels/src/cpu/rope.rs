//! Rotary position embedding, DeepSeek-V3 style: only the `rope` part of a head is rotated, and
//! the rotated pairs are interleaved channels `(2i, 2i+1)` with frequency
//! `θ_i = base^(−2i/d_rope)`.
//!
//! Rows are laid out `[tokens, heads, row_len]`; the rope part of each row is the slice
//! `[offset, offset + d_rope)`; token `t` sits at position `t % seq`.

use rayon::prelude::*;

use crate::real::Real;

/// cos/sin of every (position, pair): `[max_pos, d_rope/2]` each.
#[derive(Debug, Clone)]
pub struct RopeTable<T> {
    /// Rotated channels per row (even).
    pub d_rope: usize,
    cos: Vec<T>,
    sin: Vec<T>,
}

impl<T: Real> RopeTable<T> {
    /// Table for positions `0..max_pos`. The inverse frequencies are computed in f32, as
    /// Hugging Face's implementation does, so f32 models agree to the last bit of the angle.
    pub fn new(d_rope: usize, base: f64, max_pos: usize) -> Self {
        assert!(d_rope.is_multiple_of(2), "d_rope must be even");
        let half = d_rope / 2;
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for p in 0..max_pos {
            for i in 0..half {
                let inv = 1.0f32 / (base as f32).powf((2 * i) as f32 / d_rope as f32);
                let ang = (p as f32 * inv) as f64;
                cos.push(T::of(ang.cos()));
                sin.push(T::of(ang.sin()));
            }
        }
        RopeTable { d_rope, cos, sin }
    }

    /// Largest position + 1.
    pub fn max_pos(&self) -> usize {
        self.cos.len() / (self.d_rope / 2).max(1)
    }

    fn rotate_row(&self, row: &mut [T], pos: usize, inverse: bool) {
        let half = self.d_rope / 2;
        assert!(
            pos < self.max_pos(),
            "position {pos} beyond the RoPE table ({})",
            self.max_pos()
        );
        let (c, s) = (
            &self.cos[pos * half..(pos + 1) * half],
            &self.sin[pos * half..(pos + 1) * half],
        );
        for i in 0..half {
            let (x0, x1) = (row[2 * i], row[2 * i + 1]);
            let (ci, si) = (c[i], if inverse { -s[i] } else { s[i] });
            row[2 * i] = x0 * ci - x1 * si;
            row[2 * i + 1] = x0 * si + x1 * ci;
        }
    }
}

/// Shape of a buffer of rows to rotate.
#[derive(Debug, Clone, Copy)]
pub struct RopeRows {
    /// Sequence length (positions restart every `seq` tokens).
    pub seq: usize,
    /// Rows per token.
    pub heads: usize,
    /// Elements per row.
    pub row_len: usize,
    /// Start of the rotated part within a row.
    pub offset: usize,
}

fn apply<T: Real>(t: &RopeTable<T>, x: &mut [T], r: RopeRows, inverse: bool, parallel: bool) {
    let token_len = r.heads * r.row_len;
    let f = |(tok, chunk): (usize, &mut [T])| {
        let pos = tok % r.seq;
        for h in 0..r.heads {
            let row = &mut chunk[h * r.row_len + r.offset..h * r.row_len + r.offset + t.d_rope];
            t.rotate_row(row, pos, inverse);
        }
    };
    if parallel {
        x.par_chunks_mut(token_len).enumerate().for_each(f);
    } else {
        x.chunks_mut(token_len).enumerate().for_each(f);
    }
}

/// Reference forward (in place).
pub fn rope_fwd_ref<T: Real>(t: &RopeTable<T>, x: &mut [T], r: RopeRows) {
    apply(t, x, r, false, false);
}
/// Fast forward (in place, tokens in parallel).
pub fn rope_fwd<T: Real>(t: &RopeTable<T>, x: &mut [T], r: RopeRows) {
    apply(t, x, r, false, true);
}
/// Reference backward: the gradient goes through the inverse rotation (in place).
pub fn rope_bwd_ref<T: Real>(t: &RopeTable<T>, dx: &mut [T], r: RopeRows) {
    apply(t, dx, r, true, false);
}
/// Fast backward (in place, tokens in parallel).
pub fn rope_bwd<T: Real>(t: &RopeTable<T>, dx: &mut [T], r: RopeRows) {
    apply(t, dx, r, true, true);
}
