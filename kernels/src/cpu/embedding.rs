//! Embedding lookup: `y[t] = table[ids[t]]`, table `[vocab, d]`, y `[tokens, d]`; the backward
//! scatter-adds rows of `dy` into `dtable`.

use rayon::prelude::*;

use crate::real::Real;

fn check(ids: &[u32], vocab: usize) {
    for &i in ids {
        assert!(
            (i as usize) < vocab,
            "token id {i} outside the embedding table of {vocab} rows"
        );
    }
}

/// Reference forward.
pub fn embedding_fwd_ref<T: Real>(table: &[T], d: usize, ids: &[u32], y: &mut [T]) {
    check(ids, table.len() / d);
    for (t, &id) in ids.iter().enumerate() {
        y[t * d..(t + 1) * d].copy_from_slice(&table[id as usize * d..(id as usize + 1) * d]);
    }
}

/// Fast forward: rows copied in parallel.
pub fn embedding_fwd<T: Real>(table: &[T], d: usize, ids: &[u32], y: &mut [T]) {
    check(ids, table.len() / d);
    y.par_chunks_mut(d)
        .zip(ids.par_iter())
        .for_each(|(row, &id)| {
            row.copy_from_slice(&table[id as usize * d..(id as usize + 1) * d]);
        });
}

/// Reference backward: `dtable[ids[t]] += dy[t]`, in token order.
pub fn embedding_bwd_ref<T: Real>(dy: &[T], d: usize, ids: &[u32], dtable: &mut [T]) {
    for (t, &id) in ids.iter().enumerate() {
        for j in 0..d {
            dtable[id as usize * d + j] += dy[t * d + j];
        }
    }
}

/// Fast backward: token positions sorted by id, then rows of the table in parallel, each
/// adding its tokens in token order (so the result is the reference's bit for bit).
pub fn embedding_bwd<T: Real>(dy: &[T], d: usize, ids: &[u32], dtable: &mut [T]) {
    let mut order: Vec<u32> = (0..ids.len() as u32).collect();
    order.sort_unstable_by_key(|&t| (ids[t as usize], t));
    dtable.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
        let lo = order.partition_point(|&t| (ids[t as usize] as usize) < r);
        let hi = order.partition_point(|&t| (ids[t as usize] as usize) <= r);
        for &t in &order[lo..hi] {
            let src = &dy[t as usize * d..(t as usize + 1) * d];
            for j in 0..d {
                row[j] += src[j];
            }
        }
    });
}
