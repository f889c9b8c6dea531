//! Loss masks stored beside a shard: `<shard>.mask.bin` and `<shard>.mask.idx`, a second
//! Megatron indexed dataset parallel to the tokens.
//!
//! `.mask.bin` holds one byte per token of `.bin` (1 = the loss counts the token, 0 = it does
//! not), in the same order; `.mask.idx` is an `MMIDIDX` v1 index with dtype code 1
//! (`numpy.uint8`) and the same sequence lengths, so Megatron's `IndexedDataset` opens it as is
//! (`IndexedDataset("<shard>.mask")`). Reading validates it against the token index: same
//! sequence count and lengths, byte for byte the index tokenmill writes, and a `.mask.bin` of
//! exactly one byte per token. The manifest lists a shard's masks with their checksums
//! ([`MaskEntry`]); a dataset without masks has none and reads as before.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Megatron-LM's dtype code of `numpy.uint8`.
pub const MASK_DTYPE_CODE: u8 = 1;

/// A shard's masks in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskEntry {
    /// Masked-in tokens of the shard.
    pub trained_tokens: u64,
    /// xxh3-64 of `<name>.mask.bin`, hex.
    pub bin_xxh3: String,
    /// xxh3-64 of `<name>.mask.idx`, hex.
    pub idx_xxh3: String,
}

/// `<dir>/<name>.mask.bin`.
pub fn mask_bin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.mask.bin"))
}

/// `<dir>/<name>.mask.idx`.
pub fn mask_idx_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.mask.idx"))
}

/// The `.mask.idx` of sequences of `lengths` tokens (one mask byte each).
pub fn encode_mask_index(lengths: &[u32]) -> Result<Vec<u8>> {
    crate::idx::encode_index_with(MASK_DTYPE_CODE, 1, lengths)
}

/// Checks `idx` and `bin_len` as the masks of a shard whose sequences have `lengths` tokens.
pub fn validate(idx: &[u8], idx_path: &Path, bin_len: u64, lengths: &[u32]) -> Result<()> {
    let want = encode_mask_index(lengths)?;
    if idx != want.as_slice() {
        let at = idx
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(idx.len().min(want.len()));
        return Err(Error::corrupt(
            idx_path,
            "mask index",
            format!(
                "differs from the index of the shard's {} sequences at byte {at} ({} bytes, want {})",
                lengths.len(),
                idx.len(),
                want.len()
            ),
        ));
    }
    let tokens: u64 = lengths.iter().map(|&l| l as u64).sum();
    if bin_len != tokens {
        return Err(Error::corrupt(
            idx_path.with_extension("bin"),
            "mask data",
            format!("{bin_len} bytes for {tokens} tokens (one byte per token)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Dataset;
    use crate::writer::{DocSource, ShardWriter};
    use crate::{Manifest, TokenDtype};

    fn src(id: &str) -> DocSource<'_> {
        DocSource {
            id,
            source: "t",
            offset: 0,
            url: None,
            text_xxh3: 0,
            lang: None,
            lang_score: None,
        }
    }

    #[test]
    fn masks_round_trip_and_a_tampered_mask_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::create(dir.path(), "s", TokenDtype::Uint16).unwrap();
        w.enable_masks().unwrap();
        w.push_masked(&[5, 6, 7], &[0, 1, 1], src("a")).unwrap();
        w.push_masked(&[8, 9], &[1, 0], src("b")).unwrap();
        assert!(w.push_masked(&[1], &[1, 1], src("c")).is_err());
        let e = w.finish().unwrap();
        let m = e.masks.as_ref().unwrap();
        assert_eq!(m.trained_tokens, 3);
        let idx = std::fs::read(mask_idx_path(dir.path(), "s")).unwrap();
        assert_eq!(idx[17], MASK_DTYPE_CODE);
        assert_eq!(
            std::fs::read(mask_bin_path(dir.path(), "s")).unwrap(),
            [0, 1, 1, 1, 0]
        );
        let manifest = Manifest::new(
            crate::TokenizerIdentity {
                file: "t.json".into(),
                sha256: "0".into(),
                vocab_size: 16,
                eos_token: None,
                eos_id: None,
                engine: "hf".into(),
            },
            TokenDtype::Uint16,
            vec![e],
        );
        manifest.store(dir.path()).unwrap();
        let ds = Dataset::open(dir.path()).unwrap();
        let shard = ds.shard(0).unwrap();
        assert_eq!(shard.document_mask(1).unwrap(), &[1, 0]);
        assert_eq!(shard.mask_bytes(1, 4), Some(&[1, 1, 1][..]));
        // A mask file of the wrong length is named on open.
        std::fs::write(mask_bin_path(dir.path(), "s"), [0u8, 1, 1, 1]).unwrap();
        let err = Dataset::open(dir.path()).unwrap().shard(0).unwrap_err();
        assert!(err.to_string().contains("4 bytes for 5 tokens"), "{err}");
    }
}
