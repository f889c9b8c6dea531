//! `verify`: recompute every checksum and re-validate every index of a dataset.

use std::path::Path;

use serde::Serialize;

use crate::checksum::xxh3_file;
use crate::error::{Error, Result};
use crate::manifest::parse_hex64;
use crate::reader::Dataset;

/// What `verify` checked.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Shards checked.
    pub shards: u64,
    /// Documents in them.
    pub documents: u64,
    /// Tokens in them.
    pub tokens: u64,
    /// Bytes of the files whose checksums were recomputed.
    pub bytes_hashed: u64,
}

/// Checks the manifest, the `tokenizer.json` beside it against the manifest's sha256, all
/// checksums, every index against its `.bin`, every provenance row against the index (position,
/// token count and start, shard name, a non-empty id, a (source, offset) found once in the
/// dataset), and that every
/// token id is below the tokenizer's vocabulary size.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    let ds = Dataset::open(dir)?;
    let m = ds.manifest();
    let mut r = VerifyReport::default();
    let tok = dir.join("tokenizer.json");
    let bytes = std::fs::read(&tok).map_err(|e| Error::io(&tok, e))?;
    let sha = crate::checksum::sha256_hex(&bytes);
    if sha != m.tokenizer.sha256 {
        return Err(Error::corrupt(
            tok,
            "tokenizer",
            format!(
                "sha256 {sha} is not the manifest's {} (the ids were made by another tokenizer)",
                m.tokenizer.sha256
            ),
        ));
    }
    // Documents seen, by (source, offset) as 128-bit hashes (16 bytes a document).
    let mut ids = std::collections::HashSet::new();
    for (s, e) in m.shards.iter().enumerate() {
        for (path, want) in [
            (e.bin_path(dir), &e.bin_xxh3),
            (e.idx_path(dir), &e.idx_xxh3),
            (e.prov_path(dir), &e.prov_xxh3),
        ] {
            let expected = parse_hex64(&dir.join("manifest.json"), want)?;
            let actual = xxh3_file(&path)?;
            if actual != expected {
                return Err(Error::Checksum {
                    path,
                    expected,
                    actual,
                });
            }
            r.bytes_hashed += std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, e))?
                .len();
        }
        if let Some(mk) = &e.masks {
            for (path, want) in [
                (crate::mask::mask_bin_path(dir, &e.name), &mk.bin_xxh3),
                (crate::mask::mask_idx_path(dir, &e.name), &mk.idx_xxh3),
            ] {
                let expected = parse_hex64(&dir.join("manifest.json"), want)?;
                let actual = xxh3_file(&path)?;
                if actual != expected {
                    return Err(Error::Checksum {
                        path,
                        expected,
                        actual,
                    });
                }
            }
        }
        let shard = ds.shard(s)?;
        let prov = ds.provenance(s)?;
        for (i, p) in prov.iter().enumerate() {
            if p.shard != e.name {
                return Err(Error::corrupt(
                    e.prov_path(dir),
                    "provenance table",
                    format!("row {i} names shard `{}`, not `{}`", p.shard, e.name),
                ));
            }
            if p.id.is_empty() || p.source.is_empty() {
                return Err(Error::corrupt(
                    e.prov_path(dir),
                    "provenance table",
                    format!("row {i} has an empty document id or source"),
                ));
            }
            // A document is its (source, offset): ids may repeat across inputs (copies of a
            // file, without dedup), places may not.
            let mut key = p.source.as_bytes().to_vec();
            key.extend_from_slice(&p.offset.to_le_bytes());
            if !ids.insert(xxhash_rust::xxh3::xxh3_128(&key)) {
                return Err(Error::corrupt(
                    e.prov_path(dir),
                    "provenance table",
                    format!(
                        "row {i} ({}, offset {}) is already in the dataset",
                        p.source, p.offset
                    ),
                ));
            }
            if p.index != i as u64
                || p.tokens != shard.index().length(i)
                || p.token_start != shard.index().token_start(i)
            {
                return Err(Error::corrupt(
                    e.prov_path(dir),
                    "provenance table",
                    format!("row {i} does not match the index"),
                ));
            }
        }
        let all = shard.tokens(0, shard.total_tokens())?;
        if let Some(bad) = all.iter().find(|&&t| t as u64 >= m.tokenizer.vocab_size) {
            return Err(Error::corrupt(
                e.bin_path(dir),
                "tokens",
                format!(
                    "token id {bad} >= vocabulary size {}",
                    m.tokenizer.vocab_size
                ),
            ));
        }
        r.shards += 1;
        r.documents += e.documents;
        r.tokens += e.tokens;
    }
    Ok(r)
}
