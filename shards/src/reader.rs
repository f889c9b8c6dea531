//! Memory-mapped, validated shard and dataset readers.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dtype::TokenDtype;
use crate::error::{Error, Result};
use crate::idx::IndexView;
use crate::manifest::{Manifest, ShardEntry};
use crate::provenance::{DocProvenance, read_provenance};

/// An empty file cannot be mapped; this stands in for its (empty) contents.
#[derive(Debug)]
enum Bytes {
    Map(Mmap),
    Empty,
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Bytes::Map(m) => m,
            Bytes::Empty => &[],
        }
    }
}

fn map(path: &Path) -> Result<Bytes> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(Bytes::Empty);
    }
    // SAFETY: the file is opened read-only and tokenmill never writes a published shard in
    // place (writers use temporary names and rename). Another process truncating the file while
    // it is mapped could still fault; that is the documented contract of shard directories.
    let m = unsafe { Mmap::map(&f) }.map_err(|e| Error::io(path, e))?;
    Ok(Bytes::Map(m))
}

/// One shard, `.bin` and `.idx` memory-mapped; the index is validated against the `.bin` on open.
#[derive(Debug)]
pub struct Shard {
    bin_path: PathBuf,
    bin: Bytes,
    index: IndexView<Bytes>,
}

impl Shard {
    /// Opens `<prefix>.bin` and `<prefix>.idx`.
    pub fn open(prefix: &Path) -> Result<Self> {
        let p = prefix.as_os_str().to_string_lossy();
        let bin_path = PathBuf::from(format!("{p}.bin"));
        let idx_path = PathBuf::from(format!("{p}.idx"));
        let bin = map(&bin_path)?;
        let idx = map(&idx_path)?;
        let index = IndexView::new(idx, &idx_path, bin.as_ref().len() as u64)?;
        Ok(Shard {
            bin_path,
            bin,
            index,
        })
    }
    /// The validated index.
    pub fn index(&self) -> &IndexView<impl AsRef<[u8]> + use<>> {
        &self.index
    }
    /// Token dtype.
    pub fn dtype(&self) -> TokenDtype {
        self.index.dtype()
    }
    /// Number of documents.
    pub fn len(&self) -> usize {
        self.index.len()
    }
    /// True when the shard holds no documents.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    /// Total tokens.
    pub fn total_tokens(&self) -> u64 {
        self.index.total_tokens()
    }
    /// Raw little-endian bytes of document `i`.
    pub fn document_bytes(&self, i: usize) -> Result<&[u8]> {
        if i >= self.len() {
            return Err(Error::NotFound(format!(
                "{}: document {i} out of {} documents",
                self.bin_path.display(),
                self.len()
            )));
        }
        let size = self.dtype().size() as u64;
        let start = (self.index.token_start(i) * size) as usize;
        let end = start + (self.index.length(i) * size) as usize;
        // In bounds: IndexView::new checked that every sequence lies inside the .bin.
        Ok(&self.bin.as_ref()[start..end])
    }
    /// Token ids of document `i`.
    pub fn document(&self, i: usize) -> Result<Vec<u32>> {
        Ok(self.dtype().decode(self.document_bytes(i)?))
    }
    /// Token ids at shard positions `[start, end)`.
    pub fn tokens(&self, start: u64, end: u64) -> Result<Vec<u32>> {
        if start > end || end > self.total_tokens() {
            return Err(Error::NotFound(format!(
                "{}: tokens {start}..{end} out of {}",
                self.bin_path.display(),
                self.total_tokens()
            )));
        }
        let size = self.dtype().size() as u64;
        Ok(self
            .dtype()
            .decode(&self.bin.as_ref()[(start * size) as usize..(end * size) as usize]))
    }
}

/// A dataset directory: its manifest, and shards opened on demand.
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
}

/// A document located in a dataset.
#[derive(Debug, Clone)]
pub struct Located {
    pub shard: usize,
    pub provenance: DocProvenance,
}

impl Dataset {
    /// Opens a dataset directory (reads and checks `manifest.json`).
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Dataset {
            dir: dir.to_path_buf(),
            manifest: Manifest::load(dir)?,
        })
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// Opens shard `s` and checks it against the manifest's counts.
    pub fn shard(&self, s: usize) -> Result<Shard> {
        let e = self.entry(s)?;
        let shard = Shard::open(&self.dir.join(&e.name))?;
        if shard.len() as u64 != e.documents
            || shard.total_tokens() != e.tokens
            || shard.dtype() != self.manifest.dtype
        {
            return Err(Error::corrupt(
                e.idx_path(&self.dir),
                "shard",
                format!(
                    "{} documents / {} tokens / {:?}, manifest says {} / {} / {:?}",
                    shard.len(),
                    shard.total_tokens(),
                    shard.dtype(),
                    e.documents,
                    e.tokens,
                    self.manifest.dtype
                ),
            ));
        }
        Ok(shard)
    }
    fn entry(&self, s: usize) -> Result<&ShardEntry> {
        self.manifest.shards.get(s).ok_or_else(|| {
            Error::NotFound(format!(
                "shard {s} out of {} shards",
                self.manifest.shards.len()
            ))
        })
    }
    /// Provenance rows of shard `s`.
    pub fn provenance(&self, s: usize) -> Result<Vec<DocProvenance>> {
        let e = self.entry(s)?;
        let path = e.prov_path(&self.dir);
        let rows = read_provenance(&path)?;
        if rows.len() as u64 != e.documents {
            return Err(Error::corrupt(
                path,
                "provenance table",
                format!("{} rows for {} documents", rows.len(), e.documents),
            ));
        }
        Ok(rows)
    }
    /// The document holding global token position `t`: (shard, document index, position in shard).
    pub fn locate_token(&self, t: u64) -> Result<(usize, usize, u64)> {
        let (s, local) = self.manifest.locate_token(t).ok_or_else(|| {
            Error::NotFound(format!(
                "token {t} is past the dataset's {} tokens",
                self.manifest.tokens
            ))
        })?;
        let shard = self.shard(s)?;
        let d = shard
            .index()
            .sequence_of_token(local)
            .expect("local position inside the shard");
        Ok((s, d, local))
    }
}
