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
    /// The loss masks (`.mask.bin`, one byte per token), when the shard has them.
    mask: Option<Bytes>,
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
            mask: None,
        })
    }

    /// Maps `<prefix>.mask.bin` and checks `<prefix>.mask.idx` against this shard's index
    /// ([`crate::mask::validate`]).
    pub fn attach_masks(&mut self, prefix: &Path) -> Result<()> {
        let p = prefix.as_os_str().to_string_lossy();
        let (bin_path, idx_path) = (
            PathBuf::from(format!("{p}.mask.bin")),
            PathBuf::from(format!("{p}.mask.idx")),
        );
        let bin = map(&bin_path)?;
        let idx = map(&idx_path)?;
        let lengths: Vec<u32> = (0..self.len())
            .map(|i| self.index.length(i) as u32)
            .collect();
        crate::mask::validate(idx.as_ref(), &idx_path, bin.as_ref().len() as u64, &lengths)?;
        self.mask = Some(bin);
        Ok(())
    }
    /// Whether the shard carries loss masks.
    pub fn has_masks(&self) -> bool {
        self.mask.is_some()
    }
    /// The masks of shard positions `[start, end)` (`None` without masks; panics out of range,
    /// like [`Shard::bin_bytes`]).
    pub fn mask_bytes(&self, start: u64, end: u64) -> Option<&[u8]> {
        Some(&self.mask.as_ref()?.as_ref()[start as usize..end as usize])
    }
    /// The mask of document `i` (`None` without masks).
    pub fn document_mask(&self, i: usize) -> Option<&[u8]> {
        if i >= self.len() {
            return None;
        }
        let start = self.index.token_start(i);
        self.mask_bytes(start, start + self.index.length(i))
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
    /// Raw bytes `[start, end)` of the `.bin` (panics when out of range: callers derive ranges
    /// from the validated index).
    pub fn bin_bytes(&self, start: usize, end: usize) -> &[u8] {
        &self.bin.as_ref()[start..end]
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
    /// Shard ordinal in the manifest.
    pub shard: usize,
    /// The document's provenance row.
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
    /// The dataset directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The manifest, as read and checked at open.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// Opens shard `s` and checks it against the manifest's counts.
    pub fn shard(&self, s: usize) -> Result<Shard> {
        let e = self.entry(s)?;
        let mut shard = Shard::open(&self.dir.join(&e.name))?;
        if e.masks.is_some() {
            shard.attach_masks(&self.dir.join(&e.name))?;
        }
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
    /// Provenance rows of shard `s`. The table's xxh3 is checked against the manifest before
    /// the Parquet decoder sees it (that decoder can be made to reserve gigabytes by a few
    /// hostile bytes; found by fuzzing).
    pub fn provenance(&self, s: usize) -> Result<Vec<DocProvenance>> {
        let e = self.entry(s)?;
        let path = e.prov_path(&self.dir);
        let expected =
            crate::manifest::parse_hex64(&self.dir.join(crate::MANIFEST_FILE), &e.prov_xxh3)?;
        let actual = crate::checksum::xxh3_file(&path)?;
        if actual != expected {
            return Err(Error::Checksum {
                path,
                expected,
                actual,
            });
        }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::writer::{DocSource, ShardWriter};

    fn write(dir: &Path, name: &str, dtype: TokenDtype, docs: &[Vec<u32>]) {
        let mut w = ShardWriter::create(dir, name, dtype).unwrap();
        for (i, d) in docs.iter().enumerate() {
            let id = format!("d{i}");
            w.push(
                d,
                DocSource {
                    id: &id,
                    source: "prop",
                    offset: i as u64,
                    url: None,
                    text_xxh3: 0,
                    lang: None,
                    lang_score: None,
                },
            )
            .unwrap();
        }
        w.finish().unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any documents written to a shard read back identically, and every token position
        /// resolves to the document that holds it.
        #[test]
        fn shards_round_trip(docs in prop::collection::vec(prop::collection::vec(0u32..200_000, 0..40), 0..30), wide in any::<bool>()) {
            let dtype = if wide { TokenDtype::Int32 } else { TokenDtype::Uint16 };
            let docs: Vec<Vec<u32>> = docs.into_iter().map(|d| d.into_iter().map(|t| if wide { t } else { t % 65_536 }).collect()).collect();
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), "s", dtype, &docs);
            let shard = Shard::open(&dir.path().join("s")).unwrap();
            prop_assert_eq!(shard.len(), docs.len());
            let mut pos = 0u64;
            for (i, d) in docs.iter().enumerate() {
                prop_assert_eq!(&shard.document(i).unwrap(), d);
                for k in 0..d.len() as u64 {
                    prop_assert_eq!(shard.index().sequence_of_token(pos + k), Some(i));
                }
                pos += d.len() as u64;
            }
            prop_assert_eq!(shard.total_tokens(), pos);
            prop_assert_eq!(shard.index().sequence_of_token(pos), None);
            let prov = crate::provenance::read_provenance(&dir.path().join("s.prov.parquet")).unwrap();
            prop_assert_eq!(prov.len(), docs.len());
        }

        /// Random bytes never pass as an index unless they are one, and never panic.
        #[test]
        fn random_index_bytes_are_rejected_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..200), bin_len in 0u64..400) {
            let mut b = bytes;
            if b.len() >= 9 {
                b[..9].copy_from_slice(crate::idx::MAGIC);
            }
            let _ = crate::idx::IndexView::new(&b[..], Path::new("fuzz.idx"), bin_len);
        }
    }

    #[test]
    fn a_shard_without_documents_opens() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "e", TokenDtype::Uint16, &[]);
        let s = Shard::open(&dir.path().join("e")).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.total_tokens(), 0);
    }
}
