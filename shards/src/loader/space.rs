//! The global token space of a dataset: all shards end to end, addressed by a 64-bit position.
//! A position maps to (shard, local position) in O(log shards) through prefix sums, and to its
//! document in O(log documents) through the shard's memory-mapped index.

use std::path::Path;

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::reader::{Dataset, Shard};

/// Shards of one dataset, opened (memory-mapped and validated) once.
#[derive(Debug)]
pub struct TokenSpace {
    shards: Vec<Shard>,
    /// `starts[s]` = first global position of shard `s`; `starts[len]` = total tokens.
    starts: Vec<u64>,
}

impl TokenSpace {
    /// Opens every shard of `ds` (cost: two `mmap`s and a validation pass over each index).
    pub fn open(ds: &Dataset) -> Result<Self> {
        let n = ds.manifest().shards.len();
        let mut shards = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(n + 1);
        let mut acc = 0u64;
        for s in 0..n {
            let shard = ds.shard(s)?;
            starts.push(acc);
            acc += shard.total_tokens();
            shards.push(shard);
        }
        starts.push(acc);
        Ok(TokenSpace { shards, starts })
    }

    /// Tokens of all shards together.
    pub fn total_tokens(&self) -> u64 {
        *self.starts.last().expect("starts has len + 1 entries")
    }
    /// The shards, in manifest order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }
    /// First global position of shard `s`.
    pub fn shard_start(&self, s: usize) -> u64 {
        self.starts[s]
    }

    /// (shard, position in shard) of global position `t < total_tokens()`.
    pub fn locate(&self, t: u64) -> (usize, u64) {
        debug_assert!(t < self.total_tokens());
        // Last shard whose start is <= t and that is not empty.
        let s = self.starts.partition_point(|&x| x <= t) - 1;
        (s, t - self.starts[s])
    }

    /// Appends tokens `[start, start + len)` of shard `s` to `out`, writing each element once.
    pub fn read_local(&self, s: usize, start: u64, len: usize, out: &mut Vec<u32>) {
        let shard = &self.shards[s];
        let size = shard.dtype().size() as u64;
        let bytes = shard.bin_bytes(
            (start * size) as usize,
            ((start + len as u64) * size) as usize,
        );
        out.reserve(len);
        let old = out.len();
        let dst = &mut out.spare_capacity_mut()[..len];
        match shard.dtype() {
            crate::TokenDtype::Uint16 => widen_u16(bytes, dst),
            crate::TokenDtype::Int32 => {
                for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(4)) {
                    d.write(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                }
            }
        }
        // SAFETY: `bytes` holds exactly `len` tokens (the index validated every range against
        // the .bin), so the loop above initialised all `len` spare elements.
        unsafe { out.set_len(old + len) };
    }
}

/// Widens little-endian u16 tokens into `dst` (the loader's hot loop). The same loop is
/// compiled twice: for the baseline target and with AVX2 (16 tokens per instruction), picked
/// at run time, since release builds target generic x86-64.
fn widen_u16(bytes: &[u8], dst: &mut [std::mem::MaybeUninit<u32>]) {
    fn plain(bytes: &[u8], dst: &mut [std::mem::MaybeUninit<u32>]) {
        for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
            d.write(u16::from_le_bytes([c[0], c[1]]) as u32);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2(bytes: &[u8], dst: &mut [std::mem::MaybeUninit<u32>]) {
            for (d, c) in dst.iter_mut().zip(bytes.chunks_exact(2)) {
                d.write(u16::from_le_bytes([c[0], c[1]]) as u32);
            }
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
            // safe function compiled with `target_feature(enable = "avx2")`.
            return unsafe { avx2(bytes, dst) };
        }
    }
    plain(bytes, dst)
}

/// Checks that datasets can be mixed: same tokenizer (sha256) and dtype.
pub fn check_compatible(dirs: &[&Path], manifests: &[&Manifest]) -> Result<()> {
    for (d, m) in dirs.iter().zip(manifests).skip(1) {
        let (d0, m0) = (dirs[0], manifests[0]);
        if m.tokenizer.sha256 != m0.tokenizer.sha256 || m.dtype != m0.dtype {
            return Err(Error::Limit(format!(
                "datasets {} and {} were tokenized differently ({} sha256 {}… vs {} sha256 {}…); they cannot be blended",
                d0.display(),
                d.display(),
                m0.tokenizer.file,
                &m0.tokenizer.sha256[..12.min(m0.tokenizer.sha256.len())],
                m.tokenizer.file,
                &m.tokenizer.sha256[..12.min(m.tokenizer.sha256.len())]
            )));
        }
    }
    Ok(())
}
