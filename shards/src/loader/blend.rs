//! Blending datasets with weights: a periodic, error-minimising interleave.
//!
//! Weights are turned into integer counts per period of `P` samples (largest remainder, so they
//! sum to `P`); inside a period, position `k` goes to the dataset furthest behind its target
//! (`count_i · (k + 1) / P − taken_i`, Megatron's greedy rule). The pattern and each position's
//! index within its dataset are stored for one period only (6 bytes per position), so global
//! sample `g` maps to (dataset, index in dataset) in O(1) with memory independent of the run
//! length, and proportions are exact at every period boundary.

/// A blend of `weights.len()` datasets.
#[derive(Debug, Clone)]
pub struct Blend {
    counts: Vec<u64>,
    pattern: Vec<u16>,
    within: Vec<u32>,
}

/// Default period.
pub const DEFAULT_PERIOD: usize = 10_000;

impl Blend {
    /// `weights` must be positive and finite; at most 65,535 datasets.
    pub fn new(weights: &[f64], period: usize) -> Result<Self, String> {
        if weights.is_empty() || weights.len() > u16::MAX as usize {
            return Err(format!(
                "a blend needs 1 to 65535 datasets, got {}",
                weights.len()
            ));
        }
        if weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
            return Err(format!(
                "blend weights must be positive and finite: {weights:?}"
            ));
        }
        let period = period.max(weights.len());
        let total: f64 = weights.iter().sum();
        let exact: Vec<f64> = weights.iter().map(|w| w / total * period as f64).collect();
        let mut counts: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
        let mut short = period as u64 - counts.iter().sum::<u64>();
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor())
                .total_cmp(&(exact[a] - exact[a].floor()))
                .then(a.cmp(&b))
        });
        for &i in order.iter().cycle() {
            if short == 0 {
                break;
            }
            counts[i] += 1;
            short -= 1;
        }
        if let Some(i) = counts.iter().position(|&c| c == 0) {
            return Err(format!(
                "dataset {i}'s weight is too small for a period of {period} samples"
            ));
        }
        let mut taken = vec![0u64; weights.len()];
        let mut pattern = Vec::with_capacity(period);
        let mut within = Vec::with_capacity(period);
        for k in 0..period as u64 {
            let best = (0..weights.len())
                .max_by(|&a, &b| {
                    let ea = counts[a] as f64 * (k + 1) as f64 / period as f64 - taken[a] as f64;
                    let eb = counts[b] as f64 * (k + 1) as f64 / period as f64 - taken[b] as f64;
                    ea.total_cmp(&eb).then(b.cmp(&a))
                })
                .expect("non-empty");
            pattern.push(best as u16);
            within.push(taken[best] as u32);
            taken[best] += 1;
        }
        debug_assert_eq!(taken, counts);
        Ok(Blend {
            counts,
            pattern,
            within,
        })
    }

    /// Samples of each dataset per period.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }
    /// Samples per period of the pattern (the sum of [`Blend::counts`]).
    pub fn period(&self) -> u64 {
        self.pattern.len() as u64
    }

    /// (dataset, index of the sample within that dataset's stream) of global sample `g`.
    pub fn locate(&self, g: u64) -> (usize, u64) {
        let p = self.period();
        let (q, r) = (g / p, (g % p) as usize);
        let d = self.pattern[r] as usize;
        (d, q * self.counts[d] + self.within[r] as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportions_are_exact_per_period_and_indices_are_dense() {
        let b = Blend::new(&[0.5, 0.3, 0.2], 1000).unwrap();
        assert_eq!(b.counts(), &[500, 300, 200]);
        let mut next = [0u64; 3];
        for g in 0..5000 {
            let (d, j) = b.locate(g);
            assert_eq!(
                j, next[d],
                "each dataset's samples are taken in order, none skipped"
            );
            next[d] += 1;
        }
        assert_eq!(next, [2500, 1500, 1000]);
        // Error-minimising: after any prefix, each count is within 1 of its target.
        let mut taken = [0f64; 3];
        for g in 0..1000 {
            taken[b.locate(g).0] += 1.0;
            for (i, w) in [0.5, 0.3, 0.2].iter().enumerate() {
                assert!(
                    (taken[i] - w * (g + 1) as f64).abs() <= 1.0,
                    "{g} {taken:?}"
                );
            }
        }
    }

    #[test]
    fn uneven_weights_round_by_largest_remainder() {
        let b = Blend::new(&[1.0, 1.0, 1.0], 10).unwrap();
        assert_eq!(b.counts().iter().sum::<u64>(), 10);
        assert!(Blend::new(&[1.0, -1.0], 10).is_err());
        assert!(Blend::new(&[1.0, 1e-9], 100).is_err());
    }
}
