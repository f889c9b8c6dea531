//! The Megatron-LM `MMIDIDX` index (`.idx`) format: writer and validating reader.
//!
//! Layout (all little-endian), as Megatron-LM's `indexed_dataset.py` writes it:
//!
//! ```text
//! offset  size            field
//! 0       9               magic  b"MMIDIDX\x00\x00"
//! 9       8   u64         version = 1
//! 17      1   u8          dtype code (8 = uint16, 4 = int32, ...)
//! 18      8   u64         S = sequence count
//! 26      8   u64         D = document count = len(document_indices)
//! 34      4*S i32         sequence lengths (tokens)
//! ..      8*S i64         sequence pointers (byte offsets into .bin)
//! ..      8*D i64         document indices (sequence index where each document starts; 0 .. S)
//! ```
//!
//! tokenmill writes one sequence per document, so `document_indices = [0, 1, ..., S]`.
//! The header is 34 bytes, so the arrays are not aligned: the reader decodes each element
//! with `from_le_bytes` instead of casting the map.

use std::path::{Path, PathBuf};

use crate::dtype::TokenDtype;
use crate::error::{Error, Result};

/// The 9-byte magic at the start of every `.idx` file.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The only index version Megatron-LM writes and tokenmill reads.
pub const VERSION: u64 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 9 + 8 + 1 + 8 + 8;

/// Serialises an index for sequences of the given token lengths, one sequence per document.
pub fn encode_index(dtype: TokenDtype, lengths: &[u32]) -> Result<Vec<u8>> {
    encode_index_with(dtype.code(), dtype.size(), lengths)
}

/// [`encode_index`] for any Megatron dtype: its `code` and element `size` in bytes (the loss
/// masks beside a shard are uint8, code 1: [`crate::mask`]).
pub fn encode_index_with(code: u8, size: usize, lengths: &[u32]) -> Result<Vec<u8>> {
    let s = lengths.len();
    let mut out = Vec::with_capacity(HEADER_LEN + s * 20 + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(code);
    out.extend_from_slice(&(s as u64).to_le_bytes());
    out.extend_from_slice(&(s as u64 + 1).to_le_bytes());
    for &len in lengths {
        let len = i32::try_from(len).map_err(|_| {
            Error::Limit(format!(
                "a document of {len} tokens exceeds the int32 length field of the Megatron index"
            ))
        })?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    let mut pointer: i64 = 0;
    for &len in lengths {
        out.extend_from_slice(&pointer.to_le_bytes());
        pointer += len as i64 * size as i64;
    }
    for d in 0..=s as i64 {
        out.extend_from_slice(&d.to_le_bytes());
    }
    Ok(out)
}

/// A validated view of an index held in memory or memory-mapped.
///
/// Construction checks every field against the format and against the size of the `.bin`
/// file, so accessors can index without further checks and never read out of bounds.
#[derive(Debug)]
pub struct IndexView<B: AsRef<[u8]>> {
    bytes: B,
    path: PathBuf,
    dtype: TokenDtype,
    sequences: usize,
    documents: usize,
    total_tokens: u64,
}

impl<B: AsRef<[u8]>> IndexView<B> {
    /// Validates `bytes` as an index over a `.bin` of `bin_len` bytes. `path` names the file in errors.
    pub fn new(bytes: B, path: &Path, bin_len: u64) -> Result<Self> {
        let b = bytes.as_ref();
        let bad = |detail: String| Error::corrupt(path, "Megatron index", detail);
        if b.len() < HEADER_LEN {
            return Err(bad(format!(
                "{} bytes, shorter than the {HEADER_LEN}-byte header",
                b.len()
            )));
        }
        if &b[..9] != MAGIC {
            return Err(bad(format!(
                "bad magic {:02x?} at offset 0 (want MMIDIDX\\0\\0)",
                &b[..9]
            )));
        }
        let version = u64::from_le_bytes(b[9..17].try_into().expect("8 bytes"));
        if version != VERSION {
            return Err(bad(format!(
                "version {version} at offset 9, only version 1 is known"
            )));
        }
        let dtype = TokenDtype::from_code(b[17]).ok_or_else(|| {
            bad(format!(
                "dtype code {} at offset 17 is not uint16 (8) or int32 (4)",
                b[17]
            ))
        })?;
        let s = u64::from_le_bytes(b[18..26].try_into().expect("8 bytes"));
        let d = u64::from_le_bytes(b[26..34].try_into().expect("8 bytes"));
        let expected = s
            .checked_mul(12)
            .and_then(|x| d.checked_mul(8).and_then(|y| x.checked_add(y)))
            .and_then(|x| x.checked_add(HEADER_LEN as u64))
            .ok_or_else(|| bad(format!("sequence count {s} / document count {d} overflow")))?;
        if expected != b.len() as u64 {
            return Err(bad(format!(
                "{} sequences and {} document indices need {expected} bytes, file has {}",
                s,
                d,
                b.len()
            )));
        }
        if d == 0 {
            return Err(bad(
                "document index array is empty (it must start with 0)".into()
            ));
        }
        let view = IndexView {
            bytes,
            path: path.to_path_buf(),
            dtype,
            sequences: s as usize,
            documents: d as usize,
            total_tokens: 0,
        };
        view.validate(bin_len)
    }

    fn validate(mut self, bin_len: u64) -> Result<Self> {
        let size = self.dtype.size() as u64;
        let mut expect_ptr: u64 = 0;
        for i in 0..self.sequences {
            let len = self.raw_length(i);
            if len < 0 {
                return Err(self.bad(format!("sequence {i} has negative length {len}")));
            }
            let ptr = self.raw_pointer(i);
            if ptr < 0 || ptr as u64 != expect_ptr {
                return Err(self.bad(format!("sequence {i} pointer {ptr}, expected {expect_ptr} (sequences must be contiguous)")));
            }
            expect_ptr += len as u64 * size;
        }
        if expect_ptr != bin_len {
            return Err(self.bad(format!(
                "index covers {expect_ptr} bytes of tokens but the .bin file has {bin_len}"
            )));
        }
        let mut prev = -1i64;
        for j in 0..self.documents {
            let v = self.raw_doc(j);
            let ok = if j == 0 {
                v == 0
            } else {
                v >= prev && v as u64 <= self.sequences as u64
            };
            if !ok {
                return Err(self.bad(format!(
                    "document index {j} = {v} is out of order or past {} sequences",
                    self.sequences
                )));
            }
            prev = v;
        }
        if prev as u64 != self.sequences as u64 {
            return Err(self.bad(format!(
                "last document index {prev} != sequence count {}",
                self.sequences
            )));
        }
        self.total_tokens = expect_ptr / size;
        Ok(self)
    }

    fn bad(&self, detail: String) -> Error {
        Error::corrupt(&self.path, "Megatron index", detail)
    }
    fn b(&self) -> &[u8] {
        self.bytes.as_ref()
    }
    fn raw_length(&self, i: usize) -> i32 {
        let o = HEADER_LEN + 4 * i;
        i32::from_le_bytes(self.b()[o..o + 4].try_into().expect("4 bytes"))
    }
    fn raw_pointer(&self, i: usize) -> i64 {
        let o = HEADER_LEN + 4 * self.sequences + 8 * i;
        i64::from_le_bytes(self.b()[o..o + 8].try_into().expect("8 bytes"))
    }
    fn raw_doc(&self, j: usize) -> i64 {
        let o = HEADER_LEN + 12 * self.sequences + 8 * j;
        i64::from_le_bytes(self.b()[o..o + 8].try_into().expect("8 bytes"))
    }

    /// Token dtype of the `.bin`.
    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }
    /// Number of sequences (= documents, for tokenmill shards).
    pub fn len(&self) -> usize {
        self.sequences
    }
    /// True when the index holds no sequences.
    pub fn is_empty(&self) -> bool {
        self.sequences == 0
    }
    /// Number of entries of the document index array (sequences + 1 for tokenmill shards).
    pub fn document_index_len(&self) -> usize {
        self.documents
    }
    /// Tokens in all sequences.
    pub fn total_tokens(&self) -> u64 {
        self.total_tokens
    }
    /// Length in tokens of sequence `i` (panics if `i >= len()`).
    pub fn length(&self, i: usize) -> u64 {
        assert!(i < self.sequences, "sequence {i} out of range");
        self.raw_length(i) as u64
    }
    /// First token of sequence `i` (panics if `i >= len()`).
    pub fn token_start(&self, i: usize) -> u64 {
        assert!(i < self.sequences, "sequence {i} out of range");
        // Sizes are 2 or 4: a shift, not a division, on this hot path.
        (self.raw_pointer(i) as u64) >> self.dtype.size().trailing_zeros()
    }
    /// Sequence holding token position `t` of this shard, in O(log S). Empty sequences are skipped.
    pub fn sequence_of_token(&self, t: u64) -> Option<usize> {
        if t >= self.total_tokens {
            return None;
        }
        // Largest i with token_start(i) <= t and length(i) > 0.
        let (mut lo, mut hi) = (0usize, self.sequences);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.token_start(mid) <= t {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        // Several sequences may start at t when some are empty; the last of them holds it.
        Some(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lookup() {
        let lengths = [3u32, 0, 5, 1];
        let bytes = encode_index(TokenDtype::Uint16, &lengths).unwrap();
        assert_eq!(&bytes[..9], MAGIC);
        let v = IndexView::new(&bytes[..], Path::new("x.idx"), 18).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v.document_index_len(), 5);
        assert_eq!(v.total_tokens(), 9);
        assert_eq!(v.token_start(2), 3);
        assert_eq!(v.sequence_of_token(0), Some(0));
        assert_eq!(v.sequence_of_token(3), Some(2));
        assert_eq!(v.sequence_of_token(7), Some(2));
        assert_eq!(v.sequence_of_token(8), Some(3));
        assert_eq!(v.sequence_of_token(9), None);
    }

    #[test]
    fn every_truncation_and_bin_mismatch_is_an_error() {
        let bytes = encode_index(TokenDtype::Int32, &[4, 2, 7]).unwrap();
        for cut in 0..bytes.len() {
            let err = IndexView::new(&bytes[..cut], Path::new("t.idx"), 52).unwrap_err();
            assert!(err.to_string().contains("t.idx"), "{err}");
        }
        assert!(IndexView::new(&bytes[..], Path::new("t.idx"), 52).is_ok());
        assert!(IndexView::new(&bytes[..], Path::new("t.idx"), 51).is_err());
    }

    #[test]
    fn hostile_fields_are_rejected() {
        let good = encode_index(TokenDtype::Uint16, &[4, 2]).unwrap();
        let mut cases = Vec::new();
        let mut b = good.clone();
        b[9] = 2; // version
        cases.push(b);
        let mut b = good.clone();
        b[17] = 99; // dtype
        cases.push(b);
        let mut b = good.clone();
        b[18..26].copy_from_slice(&u64::MAX.to_le_bytes()); // huge count
        cases.push(b);
        let mut b = good.clone();
        b[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&(-1i32).to_le_bytes()); // negative length
        cases.push(b);
        let mut b = good.clone();
        let p1 = HEADER_LEN + 8 + 8;
        b[p1..p1 + 8].copy_from_slice(&(1i64 << 40).to_le_bytes()); // pointer out of the bin
        cases.push(b);
        let mut b = good.clone();
        let d = HEADER_LEN + 24 + 8;
        b[d..d + 8].copy_from_slice(&7i64.to_le_bytes()); // document index past the sequences
        cases.push(b);
        for (k, b) in cases.iter().enumerate() {
            assert!(
                IndexView::new(&b[..], Path::new("h.idx"), 12).is_err(),
                "case {k} accepted"
            );
        }
    }
}
