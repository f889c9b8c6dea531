//! A small deterministic generator (SplitMix64) for initialisation, tests and benchmarks: the
//! same seed gives the same numbers on every machine and thread count.
//!
//! The stream is part of tokenmill's reproducibility: the trainer's initial weights come from
//! it, so a change here changes every model. `tests::stream_is_fixed` pins it.

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit counter stepped by the golden-ratio
/// increment and passed through a bijective mixer.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x6A09E667F3BCC909)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0), from the top 53 bits.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) % n as u64) as usize
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    /// The generator's state (for checkpoints).
    pub fn state(&self) -> u64 {
        self.0
    }
    /// A generator resumed from [`Rng::state`].
    pub fn from_state(state: u64) -> Self {
        Rng(state)
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn stream_is_fixed() {
        let mut r = Rng::new(0);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(got, EXPECTED);
        let resumed = Rng::from_state(Rng::new(0).state()).next_u64();
        assert_eq!(resumed, EXPECTED[0]);
    }

    /// SplitMix64 from state `0x6A09E667F3BCC909` (seed 0), computed outside Rust.
    const EXPECTED: [u64; 3] = [0x63CFC62A2B097592, 0xDC0746B419466AEC, 0x08264674F98AA19E];
}
