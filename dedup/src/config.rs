//! Dedup settings (the `[dedup]` table of `pipeline.toml`).

use serde::{Deserialize, Serialize};

use crate::normalize::Normalize;

/// Which document of a cluster survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepRule {
    /// The first in the global order (input file, then position in it).
    #[default]
    Earliest,
    /// The longest text; ties go to the earliest.
    Longest,
}

/// Settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupConfig {
    /// Exact dedup on the normalised text.
    pub exact: bool,
    /// Fuzzy dedup with MinHash LSH.
    pub fuzzy: bool,
    /// Also treat documents with the same normalised URL as duplicates.
    pub url: bool,
    /// How text is normalised before hashing and shingling.
    pub normalize: Normalize,
    /// Shingle size in words (characters for CJK text, or with `char_ngrams`).
    pub ngram: usize,
    /// Use character n-grams for every document.
    pub char_ngrams: bool,
    /// LSH bands; bands × rows = MinHash permutations (FineWeb: 14 × 8).
    pub bands: usize,
    /// Rows (signature values) per band.
    pub rows: usize,
    /// Seed of the MinHash functions: the same seed gives the same signatures.
    pub seed: u64,
    /// At most this many shingles per document (the first ones); enormous documents are capped.
    pub max_shingles: usize,
    /// A near-duplicate is removed only when the exact Jaccard similarity of its shingle set
    /// with the document kept for it is at least this (`verify_threshold` in older files).
    #[serde(alias = "verify_threshold")]
    pub threshold: f64,
    /// A document of a candidate group is compared with at most this many of the group's kept
    /// documents (the first in keep order): bounds the work on enormous groups.
    pub max_centers: usize,
    /// Which document of a cluster is kept.
    pub keep: KeepRule,
    /// Bucket records held in memory before a partition is spilled to disk.
    pub memory_budget_bytes: usize,
    /// Partitions of the bucket records (by band hash).
    pub partitions: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            exact: true,
            fuzzy: true,
            url: false,
            normalize: Normalize::default(),
            ngram: 5,
            char_ngrams: false,
            bands: 14,
            rows: 8,
            seed: 42,
            max_shingles: 100_000,
            threshold: DEFAULT_THRESHOLD,
            max_centers: 256,
            keep: KeepRule::Earliest,
            memory_budget_bytes: 256 << 20,
            partitions: 64,
        }
    }
}

/// The default [`DedupConfig::threshold`]: just below the midpoint (1/b)^(1/r) = 0.719 of the
/// default 14 × 8 bands, so verification trims the S-curve's tail, not what it was tuned to find.
pub const DEFAULT_THRESHOLD: f64 = 0.7;

/// The most hash functions (bands × rows) a signature may have.
pub const MAX_PERMUTATIONS: usize = 10_000;
/// The longest shingle, in words.
pub const MAX_NGRAM: usize = 1_000;

impl DedupConfig {
    /// Checks that the counts are positive and the threshold is a probability.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if self.ngram == 0
            || self.bands == 0
            || self.rows == 0
            || self.partitions == 0
            || self.max_centers == 0
        {
            return bad(format!(
                "ngram {}, bands {}, rows {}, partitions {}, max_centers {} must be positive",
                self.ngram, self.bands, self.rows, self.partitions, self.max_centers
            ));
        }
        // Each document costs bands × rows hash functions per shingle: beyond a few thousand
        // (FineWeb: 14 × 8 = 112; MinHash papers: up to ~9,000) the signature, not the data,
        // is the work.
        let perms = self.bands.saturating_mul(self.rows);
        if perms > MAX_PERMUTATIONS {
            return bad(format!(
                "bands {} × rows {} = {perms} hash functions per document, more than the {MAX_PERMUTATIONS} allowed (FineWeb uses 14 × 8 = 112)",
                self.bands, self.rows
            ));
        }
        if self.ngram > MAX_NGRAM {
            return bad(format!(
                "ngram {} words is more than the {MAX_NGRAM} allowed (FineWeb uses 5)",
                self.ngram
            ));
        }
        let t = self.threshold;
        if !(t > 0.0 && t <= 1.0) {
            return bad(format!("threshold {t} is not in (0, 1]"));
        }
        Ok(())
    }
    /// Probability that two documents of Jaccard similarity `s` become candidates: 1 − (1 − sʳ)ᵇ.
    pub fn candidate_probability(&self, s: f64) -> f64 {
        1.0 - (1.0 - s.powi(self.rows as i32)).powi(self.bands as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_too_large_to_be_useful_are_refused_with_the_numbers() {
        let mut c = DedupConfig::default();
        c.validate().unwrap();
        c.bands = 10_000;
        c.rows = 1_000;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("bands 10000 × rows 1000 = 10000000 hash functions per document"),
            "{e}"
        );
        c.bands = usize::MAX;
        assert!(c.validate().is_err(), "no overflow");
        let mut c = DedupConfig {
            ngram: 5_000,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("ngram 5000"));
        c.ngram = 5;
        c.validate().unwrap();
        for t in [0.0, 1.5, f64::NAN] {
            c.threshold = t;
            assert!(c.validate().unwrap_err().to_string().contains("threshold"));
        }
        c.threshold = 1.0;
        c.max_centers = 0;
        assert!(c.validate().is_err());
    }
}
