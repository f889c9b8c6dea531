//! `manifest.json`: the dataset's table of contents, written last.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::dtype::TokenDtype;
use crate::error::{Error, Result};

/// Name of the manifest file inside a dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Format tag of the manifest.
pub const FORMAT: &str = "tokenmill-dataset";
/// Current manifest format version.
pub const FORMAT_VERSION: u32 = 1;

/// Which tokenizer produced the token ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerIdentity {
    /// File name the tokenizer was loaded from.
    pub file: String,
    /// sha256 of the (uncompressed) `tokenizer.json` contents.
    pub sha256: String,
    /// Vocabulary size including added tokens.
    pub vocab_size: u64,
    /// End-of-document token appended to each document, if any.
    pub eos_token: Option<String>,
    /// Its id.
    pub eos_id: Option<u32>,
    /// The encoder that produced the ids: `fast` ([`crate::fastbpe`], HF `tokenizers` for
    /// texts with added tokens) or `hf` (HF `tokenizers` alone). Both give the same ids.
    #[serde(default = "hf_engine")]
    pub engine: String,
}

fn hf_engine() -> String {
    "hf".into()
}

/// One shard: `<name>.bin`, `<name>.idx`, `<name>.prov.parquet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name stem of the shard's three files.
    pub name: String,
    /// Documents (sequences) in the shard.
    pub documents: u64,
    /// Tokens in the shard.
    pub tokens: u64,
    /// Size of the `.bin` in bytes.
    pub bin_bytes: u64,
    /// xxh3-64 of the `.bin`, hex.
    pub bin_xxh3: String,
    /// xxh3-64 of the `.idx`, hex.
    pub idx_xxh3: String,
    /// xxh3-64 of the `.prov.parquet`, hex.
    pub prov_xxh3: String,
    /// The loss masks beside the tokens (`<name>.mask.bin/.idx`, SFT datasets), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<crate::mask::MaskEntry>,
}

/// The manifest of a dataset directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`]; a reader refuses any other.
    pub format_version: u32,
    /// The tokenizer that produced the token ids.
    pub tokenizer: TokenizerIdentity,
    /// The token id type of every shard.
    pub dtype: TokenDtype,
    /// Documents in all shards.
    pub documents: u64,
    /// Tokens in all shards.
    pub tokens: u64,
    /// The shards, in dataset order.
    pub shards: Vec<ShardEntry>,
}

impl ShardEntry {
    /// `<dir>/<name>.bin`: the token ids.
    pub fn bin_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.bin", self.name))
    }
    /// `<dir>/<name>.idx`: the Megatron index.
    pub fn idx_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.idx", self.name))
    }
    /// `<dir>/<name>.prov.parquet`: the provenance table.
    pub fn prov_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.prov.parquet", self.name))
    }
}

/// The fingerprint of the dataset in `dir`: the xxh3-64 of its `manifest.json`, hex (the
/// manifest holds every shard's checksums, so this names the dataset's bytes).
pub fn fingerprint(dir: &Path) -> Result<String> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    Ok(hex64(xxhash_rust::xxh3::xxh3_64(&bytes)))
}

/// Whether `name` is a plain file name that stays in its directory: not empty, no `/` or `\\`,
/// no leading `.` (so neither `..` nor a hidden or temporary file), no NUL.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\', '\0']) && !name.starts_with('.')
}

/// The target of `path` when it is a symbolic link that resolves outside `dir` (or does not
/// resolve at all); `None` for a plain file, a missing one, or a link that stays inside `dir`.
pub fn link_out_of(dir: &Path, path: &Path) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let target = std::fs::read_link(path).unwrap_or_default();
    match (std::fs::canonicalize(path), std::fs::canonicalize(dir)) {
        (Ok(t), Ok(d)) if t.starts_with(&d) => None,
        _ => Some(target),
    }
}

/// Formats a checksum the way the manifest stores it.
pub fn hex64(v: u64) -> String {
    format!("{v:016x}")
}

/// Parses a manifest checksum.
pub fn parse_hex64(path: &Path, s: &str) -> Result<u64> {
    u64::from_str_radix(s, 16).map_err(|_| {
        Error::corrupt(
            path,
            "manifest",
            format!("checksum `{s}` is not 16 hex digits"),
        )
    })
}

impl Manifest {
    /// A manifest over `shards`, with totals summed from them.
    pub fn new(tokenizer: TokenizerIdentity, dtype: TokenDtype, shards: Vec<ShardEntry>) -> Self {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            documents: shards.iter().map(|s| s.documents).sum(),
            tokens: shards.iter().map(|s| s.tokens).sum(),
            tokenizer,
            dtype,
            shards,
        }
    }

    /// Reads and checks `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        let bad = |d: String| Error::corrupt(&path, "manifest", d);
        if m.format != FORMAT || m.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format {} v{} is not {FORMAT} v{FORMAT_VERSION}",
                m.format, m.format_version
            )));
        }
        if m.documents != m.shards.iter().map(|s| s.documents).sum::<u64>()
            || m.tokens != m.shards.iter().map(|s| s.tokens).sum::<u64>()
        {
            return Err(bad("totals do not equal the sum over shards".into()));
        }
        for s in &m.shards {
            if !is_plain_name(&s.name) {
                return Err(bad(format!(
                    "shard name `{}` is not a plain file name",
                    s.name
                )));
            }
            for f in [s.bin_path(dir), s.idx_path(dir), s.prov_path(dir)] {
                if let Some(target) = link_out_of(dir, &f) {
                    return Err(bad(format!(
                        "shard file {} is a symbolic link to {}, outside the dataset",
                        f.display(),
                        target.display()
                    )));
                }
            }
            if s.bin_bytes != s.tokens * m.dtype.size() as u64 {
                return Err(bad(format!(
                    "shard {} has {} tokens but {} bytes",
                    s.name, s.tokens, s.bin_bytes
                )));
            }
        }
        Ok(m)
    }

    /// Writes `dir/manifest.json` atomically (temp file, fsync, rename).
    pub fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let mut json = serde_json::to_vec_pretty(self).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        json.push(b'\n');
        crate::atomic_write(&path, &json)
    }

    /// Index of the shard holding global token position `t` and the position inside it, O(log shards).
    pub fn locate_token(&self, t: u64) -> Option<(usize, u64)> {
        if t >= self.tokens {
            return None;
        }
        // Prefix sums computed on the fly are O(shards); shards are few (a 14.8T-token corpus of
        // 1 GiB shards has ~30k), so a partition_point over cumulative starts is enough.
        let mut starts = Vec::with_capacity(self.shards.len());
        let mut acc = 0u64;
        for s in &self.shards {
            starts.push(acc);
            acc += s.tokens;
        }
        let i = starts.partition_point(|&s| s <= t) - 1;
        // Skip shards with no tokens that share a start.
        let mut i = i;
        while self.shards[i].tokens == 0 {
            i -= 1;
        }
        Some((i, t - starts[i]))
    }
}
