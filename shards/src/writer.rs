//! `ShardWriter`: appends tokenized documents to one shard and publishes it atomically.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::checksum::xxh3_file;
use crate::dtype::TokenDtype;
use crate::error::{Error, Result};
use crate::idx::encode_index;
use crate::manifest::{ShardEntry, hex64};
use crate::provenance::{DocProvenance, write_provenance};

/// Where a document came from, as the writer records it.
#[derive(Debug, Clone, Copy)]
pub struct DocSource<'a> {
    /// The document's id.
    pub id: &'a str,
    /// The input file.
    pub source: &'a str,
    /// Byte offset of the record in `source`.
    pub offset: u64,
    /// Page URL, if any.
    pub url: Option<&'a str>,
    /// xxh3-64 of the document text that was tokenized.
    pub text_xxh3: u64,
    /// Language, where known.
    pub lang: Option<&'a str>,
    /// The language identifier's confidence.
    pub lang_score: Option<f64>,
}

/// Writes `<dir>/<name>.{bin,idx,prov.parquet}` through `.tmp` names; nothing is visible under
/// the final names until [`ShardWriter::finish`] renames them.
pub struct ShardWriter {
    dir: PathBuf,
    name: String,
    dtype: TokenDtype,
    bin: BufWriter<File>,
    bin_tmp: PathBuf,
    bin_hash: Xxh3,
    bytes: u64,
    lengths: Vec<u32>,
    prov: Vec<DocProvenance>,
    scratch: Vec<u8>,
    /// The loss masks' `.mask.bin` (temporary name), its hash and masked-in count.
    mask: Option<(BufWriter<File>, PathBuf, Xxh3, u64)>,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("documents", &self.lengths.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

fn tmp(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!("{file}.tmp"))
}

impl ShardWriter {
    /// Starts a shard named `name` in `dir`.
    pub fn create(dir: &Path, name: &str, dtype: TokenDtype) -> Result<Self> {
        let bin_tmp = tmp(dir, &format!("{name}.bin"));
        let f = File::create(&bin_tmp).map_err(|e| Error::io(&bin_tmp, e))?;
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            dtype,
            bin: BufWriter::with_capacity(1 << 20, f),
            bin_tmp,
            bin_hash: Xxh3::new(),
            bytes: 0,
            lengths: Vec::new(),
            prov: Vec::new(),
            scratch: Vec::new(),
            mask: None,
        })
    }

    /// Makes the shard carry a loss mask per token ([`crate::mask`]): documents are then
    /// pushed with [`ShardWriter::push_masked`]. Call before the first push.
    pub fn enable_masks(&mut self) -> Result<()> {
        if !self.lengths.is_empty() {
            return Err(Error::Internal(
                "masks enabled after documents were pushed".into(),
            ));
        }
        let path = tmp(&self.dir, &format!("{}.mask.bin", self.name));
        let f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        self.mask = Some((BufWriter::with_capacity(1 << 18, f), path, Xxh3::new(), 0));
        Ok(())
    }

    /// Appends one document's tokens with its loss mask (one 0/1 byte per token).
    pub fn push_masked(&mut self, tokens: &[u32], mask: &[u8], src: DocSource<'_>) -> Result<()> {
        if mask.len() != tokens.len() || mask.iter().any(|&m| m > 1) {
            return Err(Error::Internal(format!(
                "document {}: a mask of {} bytes (0 or 1 each) for {} tokens",
                src.id,
                mask.len(),
                tokens.len()
            )));
        }
        let Some((w, path, hash, trained)) = self.mask.as_mut() else {
            return Err(Error::Internal(
                "push_masked on a shard without masks".into(),
            ));
        };
        w.write_all(mask).map_err(|e| Error::io(&*path, e))?;
        hash.update(mask);
        *trained += mask.iter().map(|&m| m as u64).sum::<u64>();
        self.push_unmasked(tokens, src)
    }

    /// Appends one document's tokens (EOS already included if wanted).
    pub fn push(&mut self, tokens: &[u32], src: DocSource<'_>) -> Result<()> {
        if self.mask.is_some() {
            return Err(Error::Internal(format!(
                "document {}: pushed without a mask into a shard with masks",
                src.id
            )));
        }
        self.push_unmasked(tokens, src)
    }

    fn push_unmasked(&mut self, tokens: &[u32], src: DocSource<'_>) -> Result<()> {
        let len = u32::try_from(tokens.len())
            .ok()
            .filter(|&l| l <= i32::MAX as u32)
            .ok_or_else(|| {
                Error::Limit(format!(
                    "document {} has {} tokens, over the int32 limit of the Megatron index",
                    src.id,
                    tokens.len()
                ))
            })?;
        self.scratch.clear();
        self.dtype
            .encode_into(tokens, &mut self.scratch)
            .map_err(|id| {
                Error::Limit(format!(
                    "document {}: token id {id} does not fit the shard dtype {:?}",
                    src.id, self.dtype
                ))
            })?;
        self.bin
            .write_all(&self.scratch)
            .map_err(|e| Error::io(&self.bin_tmp, e))?;
        self.bin_hash.update(&self.scratch);
        let token_start = self.bytes / self.dtype.size() as u64;
        self.bytes += self.scratch.len() as u64;
        self.prov.push(DocProvenance {
            shard: self.name.clone(),
            index: self.lengths.len() as u64,
            id: src.id.to_string(),
            source: src.source.to_string(),
            offset: src.offset,
            url: src.url.map(str::to_string),
            tokens: tokens.len() as u64,
            token_start,
            text_xxh3: src.text_xxh3,
            lang: src.lang.map(str::to_string),
            lang_score: src.lang_score,
        });
        self.lengths.push(len);
        Ok(())
    }

    /// Bytes of tokens written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Documents written so far.
    pub fn documents(&self) -> u64 {
        self.lengths.len() as u64
    }

    /// Writes the index and provenance, fsyncs, and renames all three files into place.
    pub fn finish(self) -> Result<ShardEntry> {
        let ShardWriter {
            dir,
            name,
            dtype,
            bin,
            bin_tmp,
            bin_hash,
            bytes,
            lengths,
            prov,
            mask,
            ..
        } = self;
        let f = bin
            .into_inner()
            .map_err(|e| Error::io(&bin_tmp, e.into_error()))?;
        f.sync_all().map_err(|e| Error::io(&bin_tmp, e))?;
        drop(f);

        let idx = encode_index(dtype, &lengths)?;
        let idx_tmp = tmp(&dir, &format!("{name}.idx"));
        write_synced(&idx_tmp, &idx)?;
        let prov_tmp = tmp(&dir, &format!("{name}.prov.parquet"));
        write_provenance(&prov_tmp, &prov)?;
        let prov_hash = xxh3_file(&prov_tmp)?;

        let masks = match mask {
            Some((w, path, hash, trained)) => {
                let f = w
                    .into_inner()
                    .map_err(|e| Error::io(&path, e.into_error()))?;
                f.sync_all().map_err(|e| Error::io(&path, e))?;
                let idx = crate::mask::encode_mask_index(&lengths)?;
                let idx_tmp = tmp(&dir, &format!("{name}.mask.idx"));
                write_synced(&idx_tmp, &idx)?;
                for (t, dst) in [
                    (&path, crate::mask::mask_bin_path(&dir, &name)),
                    (&idx_tmp, crate::mask::mask_idx_path(&dir, &name)),
                ] {
                    std::fs::rename(t, &dst).map_err(|e| Error::io(&dst, e))?;
                }
                Some(crate::mask::MaskEntry {
                    trained_tokens: trained,
                    bin_xxh3: hex64(hash.digest()),
                    idx_xxh3: hex64(xxh3_64(&idx)),
                })
            }
            None => None,
        };
        let entry = ShardEntry {
            name: name.clone(),
            documents: lengths.len() as u64,
            tokens: bytes / dtype.size() as u64,
            bin_bytes: bytes,
            bin_xxh3: hex64(bin_hash.digest()),
            idx_xxh3: hex64(xxh3_64(&idx)),
            prov_xxh3: hex64(prov_hash),
            masks,
        };
        for (t, ext) in [
            (&bin_tmp, "bin"),
            (&idx_tmp, "idx"),
            (&prov_tmp, "prov.parquet"),
        ] {
            let dst = dir.join(format!("{name}.{ext}"));
            std::fs::rename(t, &dst).map_err(|e| Error::io(&dst, e))?;
        }
        tracing::debug!(shard = %name, documents = entry.documents, tokens = entry.tokens, "shard written");
        Ok(entry)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Writes `bytes` to `path` atomically: a `.tmp` sibling, fsync, rename.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("out");
    let t = path.with_file_name(format!("{file}.tmp"));
    write_synced(&t, bytes)?;
    std::fs::rename(&t, path).map_err(|e| Error::io(path, e))?;
    // The rename itself survives a crash once the directory is synced.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
