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
    /// xxh3-128 of the normalised URL, when URL dedup is on and the document has one.
    pub url: Option<u128>,
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
    /// A fingerprinter for `cfg` (its MinHash functions drawn from `cfg.seed`).
    pub fn new(cfg: &DedupConfig) -> Self {
        Fingerprinter {
            cfg: cfg.clone(),
            hasher: MinHasher::new(cfg.bands * cfg.rows, cfg.seed),
        }
    }
    /// The settings it fingerprints with.
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

    /// Fingerprint of a document with its URL (used when `url` dedup is on).
    pub fn fingerprint_with_url(&self, text: &str, url: Option<&str>) -> Fingerprint {
        let mut f = self.fingerprint(text);
        if self.cfg.url {
            f.url = url
                .map(normalize_url)
                .filter(|u| !u.is_empty())
                .map(|u| xxh3_128(u.as_bytes()));
        }
        f
    }

    /// Fingerprint of a document's text (no URL).
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
            url: None,
            empty: norm.is_empty(),
            short,
        }
    }
}

/// A URL reduced to what identifies the page: scheme and host lower-cased, `www.` and default
/// ports dropped, the fragment removed, a trailing slash removed, `http` and `https` merged.
pub fn normalize_url(url: &str) -> String {
    let u = url.trim();
    let u = u.split('#').next().unwrap_or("");
    let (scheme, rest) = match u.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => (String::new(), u),
    };
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let mut host = host.to_ascii_lowercase();
    for port in [":80", ":443"] {
        if let Some(h) = host.strip_suffix(port) {
            host = h.to_string();
        }
    }
    let host = host.strip_prefix("www.").unwrap_or(&host).to_string();
    let path = path.strip_suffix('/').unwrap_or(path);
    let scheme = if scheme == "https" {
        "http".to_string()
    } else {
        scheme
    };
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_normalise_to_the_page() {
        let n = normalize_url;
        assert_eq!(
            n("HTTPS://WWW.Example.org:443/a/b/#top"),
            n("http://example.org/a/b")
        );
        assert_ne!(n("http://example.org/a?x=1"), n("http://example.org/a?x=2"));
        assert_eq!(n("http://example.org/A"), "http://example.org/A");
    }
}
