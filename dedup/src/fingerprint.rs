//! Per-document fingerprints: the exact hash of the normalised text and the MinHash signature.

use xxhash_rust::xxh3::xxh3_128;

use crate::config::DedupConfig;
use crate::minhash::MinHasher;
use crate::shingle::shingles;

/// What dedup needs to know about one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// xxh3-128 of the normalised text.
    pub exact: u128,
    /// MinHash signature (`bands × rows` values); empty when fuzzy dedup is off or the text is empty.
    pub signature: Vec<u32>,
    /// Bytes of the original text (for the `longest` keep rule).
    pub len: u64,
    /// Nothing left after normalisation.
    pub empty: bool,
    /// Shorter than one n-gram (one shingle of all of it).
    pub short: bool,
}

/// Computes fingerprints; cheap to share across threads.
#[derive(Debug, Clone)]
pub struct Fingerprinter {
    cfg: DedupConfig,
    hasher: MinHasher,
}

impl Fingerprinter {
    pub fn new(cfg: &DedupConfig) -> Self {
        Fingerprinter {
            cfg: cfg.clone(),
            hasher: MinHasher::new(cfg.bands * cfg.rows, cfg.seed),
        }
    }
    pub fn config(&self) -> &DedupConfig {
        &self.cfg
    }

    /// The shingle set of `text` (sorted, unique), as MinHash sees it.
    pub fn shingle_set(&self, text: &str) -> Vec<u64> {
        let norm = self.cfg.normalize.apply(text);
        let (mut scratch, mut out) = (Vec::new(), Vec::new());
        shingles(
            &norm,
            self.cfg.ngram,
            self.cfg.char_ngrams,
            self.cfg.max_shingles,
            &mut scratch,
            &mut out,
        );
        out
    }

    pub fn fingerprint(&self, text: &str) -> Fingerprint {
        let norm = self.cfg.normalize.apply(text);
        let exact = xxh3_128(norm.as_bytes());
        let mut signature = Vec::new();
        let mut short = false;
        if self.cfg.fuzzy && !norm.is_empty() {
            let (mut scratch, mut set) = (Vec::new(), Vec::new());
            short = shingles(
                &norm,
                self.cfg.ngram,
                self.cfg.char_ngrams,
                self.cfg.max_shingles,
                &mut scratch,
                &mut set,
            );
            self.hasher.signature(&set, &mut signature);
        }
        Fingerprint {
            exact,
            signature,
            len: text.len() as u64,
            empty: norm.is_empty(),
            short,
        }
    }
}
