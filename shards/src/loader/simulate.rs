//! Simulated datasets at full scale for tests and benchmarks: sparse `.bin` files (apparent size
//! only, no disk blocks) with small, valid `.idx` files of a few long documents, so the loader's
//! behaviour at 14.8T tokens in 10,000+ shards can be checked on a laptop. Their manifests carry
//! no real checksum of the `.bin` (all zeros: `verify` reports them), everything else is real.

use std::fs::File;
use std::path::Path;

use crate::dtype::TokenDtype;
use crate::error::{Error, Result};
use crate::idx::encode_index;
use crate::manifest::{Manifest, ShardEntry, TokenizerIdentity, hex64};

/// Writes a sparse dataset of `shards` shards of `tokens_per_shard` tokens each, split into
/// `docs_per_shard` documents (each below 2^31 tokens), into `dir`. Returns the manifest.
pub fn write_sparse_dataset(
    dir: &Path,
    shards: usize,
    tokens_per_shard: u64,
    docs_per_shard: u64,
    dtype: TokenDtype,
) -> Result<Manifest> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let docs = docs_per_shard.max(1);
    let base = tokens_per_shard / docs;
    let mut lengths: Vec<u32> = Vec::with_capacity(docs as usize);
    for d in 0..docs {
        let len = if d + 1 == docs {
            tokens_per_shard - base * (docs - 1)
        } else {
            base
        };
        lengths.push(u32::try_from(len).ok().filter(|&l| l <= i32::MAX as u32).ok_or_else(|| {
            Error::Limit(format!("simulated documents of {len} tokens exceed the int32 index; use more documents per shard"))
        })?);
    }
    let idx = encode_index(dtype, &lengths)?;
    let idx_hash = hex64(xxhash_rust::xxh3::xxh3_64(&idx));
    let mut entries = Vec::with_capacity(shards);
    for s in 0..shards {
        let name = format!("sim-{s:06}");
        let bin = dir.join(format!("{name}.bin"));
        let bytes = tokens_per_shard * dtype.size() as u64;
        File::create(&bin)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| Error::io(&bin, e))?;
        std::fs::write(dir.join(format!("{name}.idx")), &idx)
            .map_err(|e| Error::io(dir.join(format!("{name}.idx")), e))?;
        entries.push(ShardEntry {
            name,
            documents: docs,
            tokens: tokens_per_shard,
            bin_bytes: bytes,
            bin_xxh3: hex64(0),
            idx_xxh3: idx_hash.clone(),
            prov_xxh3: hex64(0),
            masks: None,
        });
    }
    let tok = TokenizerIdentity {
        file: "simulated".into(),
        sha256: "0".repeat(64),
        vocab_size: if dtype == TokenDtype::Uint16 {
            65_536
        } else {
            129_280
        },
        eos_token: None,
        eos_id: Some(0),
        engine: "hf".into(),
    };
    let m = Manifest::new(tok, dtype, entries);
    m.store(dir)?;
    Ok(m)
}
