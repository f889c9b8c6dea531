//! How the token stream is cut into samples of `seq_len + 1` tokens (inputs = the first
//! `seq_len`, targets = the last `seq_len`).
//!
//! * [`Packing::Windows`] — Megatron's layout: sample `i` is global tokens
//!   `[i·S, i·S + S + 1)` of the concatenated stream (documents end with EOS), so consecutive
//!   samples share one token and every token is a target exactly once per epoch.
//! * [`Packing::Documents`] — document-aware packing within each shard: whole documents are added
//!   to a sample while they fit in `S + 1` tokens; the rest is padding (masked). A document longer
//!   than `S + 1` is split into chunks of `S + 1` tokens with a stride of `S` (so no target is
//!   lost). Each sample lists its documents, for attention masks and position resets.
//!
//! Neither layout builds a per-sample or per-document array. Windows are pure arithmetic. For
//! documents, one pass over each shard's `.idx` lengths at open records the packer's state at
//! most every `checkpoint_every` samples (default [`CHECKPOINT_EVERY`] = 64; 24 bytes each, so
//! 0.375 byte per sample; chunks of long documents are skipped arithmetically, so a shard of a
//! few huge documents needs a few checkpoints); sample `i` is rebuilt by replaying fewer than
//! `checkpoint_every` samples from the nearest checkpoint, reading lengths from the
//! memory-mapped index.

use serde::{Deserialize, Serialize};

use super::space::TokenSpace;
use crate::idx::IndexView;

/// Sample layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Packing {
    /// Consecutive windows of the concatenated token stream (Megatron's layout).
    Windows,
    /// Whole documents packed into samples, padded; long documents split.
    Documents,
}

/// Part of a sample that comes from one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Shard ordinal in the dataset's manifest.
    pub shard: u32,
    /// Document index in the shard.
    pub doc: u64,
    /// First token of the span inside the document.
    pub doc_offset: u64,
    /// Position of the span in the sample.
    pub start: u32,
    /// Tokens in the span.
    pub len: u32,
}

/// Document packer state between samples: the next token to place is token `off` of doc `doc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    doc: u64,
    off: u64,
}

/// Default spacing of document-packing checkpoints, in samples ([`LoaderConfig::checkpoint_every`]).
///
/// [`LoaderConfig::checkpoint_every`]: super::LoaderConfig::checkpoint_every
pub const CHECKPOINT_EVERY: u64 = 64;

#[derive(Debug)]
struct PackedShard {
    samples: u64,
    /// (first sample, packer state there), ascending; at most one per `CHECKPOINT_EVERY`
    /// samples and one per long document, so a shard of a few huge documents needs only a few.
    checkpoints: Vec<(u64, Cursor)>,
}

/// Moves past empty documents.
fn normalize<B: AsRef<[u8]>>(idx: &IndexView<B>, c: &mut Cursor) {
    let n = idx.len() as u64;
    while c.doc < n && idx.length(c.doc as usize) == c.off {
        c.doc += 1;
        c.off = 0;
    }
}

/// At a sample boundary inside a document longer than a sample, skips up to `max` of its
/// chunks arithmetically; returns how many.
fn skip_chunks<B: AsRef<[u8]>>(idx: &IndexView<B>, cap: u64, c: &mut Cursor, max: u64) -> u64 {
    if c.doc >= idx.len() as u64 {
        return 0;
    }
    let rem = idx.length(c.doc as usize) - c.off;
    if rem <= cap {
        return 0;
    }
    let k = (rem - cap).div_ceil(cap - 1).min(max);
    c.off += k * (cap - 1);
    k
}

/// Packs the next sample of a shard from `c`; calls `emit(doc, doc_offset, start, len)` for each
/// span. Returns false when the shard has no tokens left.
fn pack_one<B: AsRef<[u8]>>(
    idx: &IndexView<B>,
    cap: u64,
    c: &mut Cursor,
    mut emit: impl FnMut(u64, u64, u64, u64),
) -> bool {
    let n = idx.len() as u64;
    let mut fill = 0u64;
    while c.doc < n {
        let rem = idx.length(c.doc as usize) - c.off;
        if rem == 0 {
            c.doc += 1;
            c.off = 0;
            continue;
        }
        if fill == 0 && rem > cap {
            // A document longer than a sample: a chunk of cap tokens; the next chunk starts at
            // this chunk's last token (stride cap - 1), so every target is kept.
            emit(c.doc, c.off, 0, cap);
            c.off += cap - 1;
            return true;
        }
        if fill + rem > cap {
            break;
        }
        emit(c.doc, c.off, fill, rem);
        fill += rem;
        c.doc += 1;
        c.off = 0;
    }
    fill > 0
}

/// The samples of one dataset under a packing.
#[derive(Debug)]
pub struct Layout {
    packing: Packing,
    seq_len: u64,
    samples: u64,
    /// Documents: per shard packing, and prefix sums of samples per shard.
    shards: Vec<PackedShard>,
    starts: Vec<u64>,
}

impl Layout {
    /// Computes the layout (for documents: one pass over every shard's lengths).
    /// `every`: document packing records its state at most once per `every` samples.
    pub fn new(space: &TokenSpace, packing: Packing, seq_len: u64, every: u64) -> Self {
        assert!(seq_len >= 1);
        let every = every.max(1);
        match packing {
            Packing::Windows => Layout {
                packing,
                seq_len,
                samples: space.total_tokens().saturating_sub(1) / seq_len,
                shards: Vec::new(),
                starts: Vec::new(),
            },
            Packing::Documents => {
                use rayon::prelude::*;
                let cap = seq_len + 1;
                let shards: Vec<PackedShard> = space
                    .shards()
                    .par_iter()
                    .map(|sh| {
                        let idx = sh.index();
                        let mut c = Cursor { doc: 0, off: 0 };
                        let mut checkpoints: Vec<(u64, Cursor)> = Vec::new();
                        let mut samples = 0u64;
                        loop {
                            normalize(idx, &mut c);
                            if c.doc >= idx.len() as u64 {
                                break;
                            }
                            if checkpoints
                                .last()
                                .is_none_or(|&(s, _)| samples - s >= every)
                            {
                                checkpoints.push((samples, c));
                            }
                            let k = skip_chunks(idx, cap, &mut c, u64::MAX);
                            if k == 0 {
                                pack_one(idx, cap, &mut c, |_, _, _, _| {});
                                samples += 1;
                            }
                            samples += k;
                        }
                        PackedShard {
                            samples,
                            checkpoints,
                        }
                    })
                    .collect();
                let mut starts = Vec::with_capacity(shards.len() + 1);
                let mut acc = 0;
                for s in &shards {
                    starts.push(acc);
                    acc += s.samples;
                }
                starts.push(acc);
                Layout {
                    packing,
                    seq_len,
                    samples: acc,
                    shards,
                    starts,
                }
            }
        }
    }

    /// The layout.
    pub fn packing(&self) -> Packing {
        self.packing
    }
    /// Tokens per sample's inputs (a sample holds one more).
    pub fn seq_len(&self) -> u64 {
        self.seq_len
    }
    /// Samples per epoch.
    pub fn len(&self) -> u64 {
        self.samples
    }
    /// Whether the epoch has no sample.
    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// The spans of sample `i` (cleared first): O(log shards + log documents) per document in
    /// the sample for windows; a replay of < 256 samples for documents.
    pub fn spans(&self, space: &TokenSpace, i: u64, out: &mut Vec<Span>) {
        assert!(i < self.samples, "sample {i} of {}", self.samples);
        out.clear();
        let cap = self.seq_len + 1;
        match self.packing {
            Packing::Windows => {
                let base = i * self.seq_len;
                let end = base + cap;
                // One binary search for the first token; the documents after it are consecutive
                // (next index in the shard, or the first non-empty one of the next shard).
                let (mut s, local) = space.locate(base);
                let mut d = space.shards()[s]
                    .index()
                    .sequence_of_token(local)
                    .expect("inside the shard");
                let mut t = base;
                while t < end {
                    let idx = space.shards()[s].index();
                    if d >= idx.len() {
                        s += 1;
                        d = 0;
                        continue;
                    }
                    let doc_start = space.shard_start(s) + idx.token_start(d);
                    let doc_end = doc_start + idx.length(d);
                    if doc_end <= t {
                        d += 1;
                        continue;
                    }
                    let span_end = end.min(doc_end);
                    out.push(Span {
                        shard: s as u32,
                        doc: d as u64,
                        doc_offset: t - doc_start,
                        start: (t - base) as u32,
                        len: (span_end - t) as u32,
                    });
                    t = span_end;
                    d += 1;
                }
            }
            Packing::Documents => {
                let s = self.starts.partition_point(|&x| x <= i) - 1;
                let local = i - self.starts[s];
                let ps = &self.shards[s];
                let k = ps.checkpoints.partition_point(|&(first, _)| first <= local) - 1;
                let (mut at, mut c) = ps.checkpoints[k];
                let idx = space.shards()[s].index();
                while at < local {
                    normalize(idx, &mut c);
                    let k = skip_chunks(idx, cap, &mut c, local - at);
                    if k == 0 {
                        pack_one(idx, cap, &mut c, |_, _, _, _| {});
                        at += 1;
                    }
                    at += k;
                }
                pack_one(idx, cap, &mut c, |doc, doc_offset, start, len| {
                    out.push(Span {
                        shard: s as u32,
                        doc,
                        doc_offset,
                        start: start as u32,
                        len: len as u32,
                    })
                });
            }
        }
    }
}
