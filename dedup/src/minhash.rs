//! MinHash signatures: `k = bands × rows` hash functions from the multiply-shift family
//! `h_i(x) = (a_i·x + b_i) >> 32` over 64-bit shingle hashes (`a_i` odd), seeded and reproducible.

/// The `k` hash functions of a seed.
#[derive(Debug, Clone)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl MinHasher {
    /// `k` hash functions drawn from `seed`.
    pub fn new(k: usize, seed: u64) -> Self {
        let mut s = seed;
        let a = (0..k).map(|_| splitmix(&mut s) | 1).collect();
        let b = (0..k).map(|_| splitmix(&mut s)).collect();
        MinHasher { a, b }
    }
    /// Number of hash functions (the signature length).
    pub fn len(&self) -> usize {
        self.a.len()
    }
    /// Whether there are no hash functions.
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }

    /// Signature of a shingle set into `sig` (length `k`); all `u32::MAX` for an empty set.
    pub fn signature(&self, shingles: &[u64], sig: &mut Vec<u32>) {
        sig.clear();
        sig.resize(self.a.len(), u32::MAX);
        for &x in shingles {
            for ((s, &a), &b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                let v = (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32;
                *s = (*s).min(v);
            }
        }
    }
}

/// Fraction of equal components: the MinHash estimate of Jaccard similarity.
pub fn estimate(a: &[u32], b: &[u32]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_track_true_jaccard() {
        let h = MinHasher::new(512, 7);
        let a: Vec<u64> = (0..1000)
            .map(|i| xxhash_rust::xxh3::xxh3_64(&(i as u64).to_le_bytes()))
            .collect();
        // b shares 600 of a's 1000 and adds 400: J = 600 / 1400.
        let mut b: Vec<u64> = a[..600].to_vec();
        b.extend((5000..5400).map(|i| xxhash_rust::xxh3::xxh3_64(&(i as u64).to_le_bytes())));
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        h.signature(&a, &mut sa);
        h.signature(&b, &mut sb);
        let est = estimate(&sa, &sb);
        let truth = 600.0 / 1400.0;
        // Standard error sqrt(J(1-J)/k) ≈ 0.022; allow 4 sigma.
        assert!((est - truth).abs() < 0.09, "{est} vs {truth}");
    }
}
