//! The source of every document span of a batch, for the document detector's per-source
//! reference: the input file a document came from (its provenance `source`), as a small
//! integer. Each shard's provenance table is read once and kept as one `u32` per document.

use std::collections::HashMap;

use tokenmill_shards::loader::{Loader, Sample};

use crate::error::Result;

/// Shards whose sources are kept before the cache starts over (4 bytes per document each).
const MAX_SHARDS: usize = 4096;

/// Interned sources of the shards seen so far.
#[derive(Debug, Default)]
pub(super) struct SourceIndex {
    /// Source path → its number (numbers stay fixed for the run, even when shards are dropped).
    names: HashMap<String, u32>,
    /// (dataset of the blend, shard) → per document, its source's number.
    shards: HashMap<(usize, u32), Vec<u32>>,
}

impl SourceIndex {
    /// Per sample, per document span: the number of its document's source.
    pub(super) fn of_batch(
        &mut self,
        loader: &Loader,
        samples: &[Sample],
    ) -> Result<Vec<Vec<u32>>> {
        let mut out = Vec::with_capacity(samples.len());
        for smp in samples {
            let mut row = Vec::with_capacity(smp.spans.len());
            for sp in &smp.spans {
                let key = (smp.source, sp.shard);
                if !self.shards.contains_key(&key) {
                    if self.shards.len() >= MAX_SHARDS {
                        self.shards.clear();
                    }
                    let prov = loader.dataset(smp.source).provenance(sp.shard as usize)?;
                    let names = &mut self.names;
                    let ids = prov
                        .iter()
                        .map(|p| {
                            let next = names.len() as u32;
                            *names.entry(p.source.clone()).or_insert(next)
                        })
                        .collect();
                    self.shards.insert(key, ids);
                }
                // A document past the table (never, for a verified dataset) counts as source 0.
                row.push(self.shards[&key].get(sp.doc as usize).copied().unwrap_or(0));
            }
            out.push(row);
        }
        Ok(out)
    }
}
