//! Top-k selection: the indices of the k largest values of a row, largest first; ties go to
//! the lower index. NaN never wins.

use crate::real::Real;

fn better<T: Real>(a: (T, usize), b: (T, usize)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1) || (b.0.is_nan() && !a.0.is_nan())
}

/// Reference: a full stable sort.
pub fn topk_ref<T: Real>(row: &[T], k: usize, out: &mut Vec<usize>) {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| {
        if better((row[a], a), (row[b], b)) {
            std::cmp::Ordering::Less
        } else if better((row[b], b), (row[a], a)) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    out.clear();
    out.extend_from_slice(&idx[..k.min(row.len())]);
}

/// Fast: one pass with a sorted insertion buffer of size k (k is small: 8 of 256 experts).
pub fn topk<T: Real>(row: &[T], k: usize, out: &mut Vec<usize>) {
    out.clear();
    let k = k.min(row.len());
    if k == 0 {
        return;
    }
    for (i, &x) in row.iter().enumerate() {
        if out.len() == k && !better((x, i), (row[out[k - 1]], out[k - 1])) {
            continue;
        }
        let mut pos = out.len();
        while pos > 0 && better((x, i), (row[out[pos - 1]], out[pos - 1])) {
            pos -= 1;
        }
        if out.len() == k {
            out.pop();
        }
        out.insert(pos, i);
    }
}
