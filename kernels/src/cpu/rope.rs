//! Rotary position embedding, DeepSeek-V3 style: only the `rope` part of a head is rotated, and
//! the rotated pairs are interleaved channels `(2i, 2i+1)` with frequency
//! `θ_i = base^(−2i/d_rope)`.
//!
//! Rows are laid out `[tokens, heads, row_len]` ([`RopeRows`]); the rope part of each row is the
//! slice `[offset, offset + d_rope)`; token `t` sits at position `t % seq`; the angles come from a
//! [`RopeTable`].

use rayon::prelude::*;

use crate::backend::{RopeRows, RopeTable};
use crate::real::Real;

/// Rotates the rope part `row` (`d_rope` channels) of a row at position `pos`; `inverse`
/// rotates by the opposite angle (the backward).
fn rotate_row<T: Real>(t: &RopeTable<T>, row: &mut [T], pos: usize, inverse: bool) {
    let half = t.d_rope / 2;
    assert!(
        pos < t.max_pos(),
        "position {pos} beyond the RoPE table ({})",
        t.max_pos()
    );
    let (c, s) = (
        &t.cos()[pos * half..(pos + 1) * half],
        &t.sin()[pos * half..(pos + 1) * half],
    );
    for i in 0..half {
        let (x0, x1) = (row[2 * i], row[2 * i + 1]);
        let (ci, si) = (c[i], if inverse { -s[i] } else { s[i] });
        row[2 * i] = x0 * ci - x1 * si;
        row[2 * i + 1] = x0 * si + x1 * ci;
    }
}

fn apply<T: Real>(t: &RopeTable<T>, x: &mut [T], r: RopeRows, inverse: bool, parallel: bool) {
    let token_len = r.heads * r.row_len;
    let f = |(tok, chunk): (usize, &mut [T])| {
        let pos = tok % r.seq;
        for h in 0..r.heads {
            let row = &mut chunk[h * r.row_len + r.offset..h * r.row_len + r.offset + t.d_rope];
            rotate_row(t, row, pos, inverse);
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
