//! `Loader`: the deterministic, resumable, distributed stream of batches a training job reads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blend::{Blend, DEFAULT_PERIOD};
use super::packing::{Layout, Packing, Span};
use super::permutation::{FeistelPermutation, LocalShuffle};
use super::space::{TokenSpace, check_compatible};
use crate::error::{Error, Result};
use crate::provenance::DocProvenance;
use crate::reader::Dataset;

/// Sample order within an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Shuffle {
    /// Storage order.
    None,
    /// A Feistel permutation of all samples per (seed, epoch).
    Full,
    /// Blocks of `block` neighbouring samples permuted, then samples within `window` blocks.
    Local {
        /// Neighbouring samples per block.
        block: u64,
        /// Consecutive blocks whose samples are permuted together.
        window: u64,
    },
}

/// Settings of a loader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Input tokens per sample (a sample holds `seq_len + 1`).
    pub seq_len: u64,
    /// Samples per global batch (all ranks together); a multiple of `world`.
    pub global_batch: u64,
    /// This rank (0-based): it takes the `rank`-th slice of each global batch.
    pub rank: u64,
    /// Ranks reading the stream together.
    pub world: u64,
    /// Seed of the sample order (each dataset of a blend derives its own from it).
    pub seed: u64,
    /// How the token stream is cut into samples.
    pub packing: Packing,
    /// Sample order within an epoch.
    pub shuffle: Shuffle,
    /// Document ids to leave out: samples holding them are skipped (documents packing) or their
    /// tokens are masked out of the loss (windows).
    pub exclude: Vec<String>,
    /// Recompute every checksum at open (`verify`).
    pub verify: bool,
    /// Period of the blend pattern.
    pub blend_period: usize,
    /// Document packing: samples between checkpoints of the packer (memory 24 B per checkpoint
    /// vs a replay of up to this many samples per random access).
    pub checkpoint_every: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            seq_len: 2048,
            global_batch: 8,
            rank: 0,
            world: 1,
            seed: 1234,
            packing: Packing::Windows,
            shuffle: Shuffle::Full,
            exclude: Vec::new(),
            verify: false,
            blend_period: DEFAULT_PERIOD,
            checkpoint_every: super::packing::CHECKPOINT_EVERY,
        }
    }
}

/// Where the stream is: serialise it into a training checkpoint and pass it to [`Loader::resume`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    /// The epoch being read (0-based).
    pub epoch: u64,
    /// Stream positions consumed in this epoch (skipped, excluded samples included).
    pub samples_consumed: u64,
    /// Batches served so far.
    pub step: u64,
}

/// One sample as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Dataset of the blend.
    pub source: usize,
    /// That dataset's epoch.
    pub epoch: u64,
    /// The sample's id in that dataset's layout.
    pub index: u64,
    /// Position in the global stream.
    pub position: u64,
    /// `seq_len + 1` token ids: inputs are `[..seq_len]`, targets `[1..]`.
    pub tokens: Vec<u32>,
    /// Per target position (`seq_len`): 1 = counts in the loss.
    pub loss_mask: Vec<u8>,
    /// The documents the sample is made of, in order.
    pub spans: Vec<Span>,
}

/// This rank's part of one global batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Batches served before this one.
    pub step: u64,
    /// This rank's samples, in stream order.
    pub samples: Vec<Sample>,
}

#[derive(Debug)]
struct Source {
    dataset: Dataset,
    space: TokenSpace,
    layout: Layout,
    excluded: HashSet<(u32, u64)>,
    seed: u64,
}

/// A dataset to read, with its blend weight.
#[derive(Debug, Clone)]
pub struct DatasetSpec {
    /// The dataset directory.
    pub dir: PathBuf,
    /// Its weight in the blend, positive: the datasets' shares of the samples are proportional
    /// to their weights.
    pub weight: f64,
}

/// The loader. See the module docs of [`crate::loader`].
#[derive(Debug)]
pub struct Loader {
    sources: Vec<Source>,
    blend: Blend,
    cfg: LoaderConfig,
    pad_id: u32,
    epoch_len: u64,
    position: u64,
    step: u64,
    spans: Vec<Span>,
    /// The last permutation built per dataset (key derivation costs more than an application).
    perms: std::cell::RefCell<Vec<Option<(u64, Order)>>>,
}

#[derive(Debug, Clone)]
enum Order {
    Full(FeistelPermutation),
    Local(LocalShuffle),
}

fn limit(msg: String) -> Error {
    Error::Limit(msg)
}

impl Loader {
    /// Opens one dataset.
    pub fn open(dir: &Path, cfg: LoaderConfig) -> Result<Self> {
        Self::open_blend(
            &[DatasetSpec {
                dir: dir.to_path_buf(),
                weight: 1.0,
            }],
            cfg,
        )
    }

    /// Opens a weighted blend of datasets (same tokenizer required).
    pub fn open_blend(specs: &[DatasetSpec], cfg: LoaderConfig) -> Result<Self> {
        if cfg.seq_len == 0 || cfg.seq_len > u32::MAX as u64 - 1 {
            return Err(limit(format!("seq_len {} out of range", cfg.seq_len)));
        }
        if cfg.world == 0
            || cfg.rank >= cfg.world
            || cfg.global_batch == 0
            || !cfg.global_batch.is_multiple_of(cfg.world)
        {
            return Err(limit(format!(
                "global batch {} must be a positive multiple of world size {} and rank {} below it",
                cfg.global_batch, cfg.world, cfg.rank
            )));
        }
        let mut datasets = Vec::with_capacity(specs.len());
        for s in specs {
            if cfg.verify {
                crate::verify::verify(&s.dir)?;
            }
            datasets.push(Dataset::open(&s.dir)?);
        }
        let dirs: Vec<&Path> = specs.iter().map(|s| s.dir.as_path()).collect();
        let manifests: Vec<_> = datasets.iter().map(|d| d.manifest()).collect();
        check_compatible(&dirs, &manifests)?;
        let pad_id = datasets[0].manifest().tokenizer.eos_id.unwrap_or(0);
        let exclude: HashSet<&str> = cfg.exclude.iter().map(String::as_str).collect();
        let mut sources = Vec::with_capacity(datasets.len());
        for (k, dataset) in datasets.into_iter().enumerate() {
            let space = TokenSpace::open(&dataset)?;
            let layout = Layout::new(&space, cfg.packing, cfg.seq_len, cfg.checkpoint_every);
            if layout.is_empty() {
                return Err(limit(format!(
                    "{}: {} tokens make no sample of seq_len + 1 = {} tokens",
                    dataset.dir().display(),
                    space.total_tokens(),
                    cfg.seq_len + 1
                )));
            }
            let excluded = if exclude.is_empty() {
                HashSet::new()
            } else {
                find_documents(&dataset, &exclude)?
            };
            let seed = xxhash_rust::xxh3::xxh3_64_with_seed(&(k as u64).to_le_bytes(), cfg.seed);
            sources.push(Source {
                dataset,
                space,
                layout,
                excluded,
                seed,
            });
        }
        let weights: Vec<f64> = specs.iter().map(|s| s.weight).collect();
        let blend = Blend::new(&weights, cfg.blend_period).map_err(limit)?;
        let epoch_len = sources.iter().map(|s| s.layout.len()).sum();
        Ok(Loader {
            sources,
            blend,
            cfg,
            pad_id,
            epoch_len,
            position: 0,
            step: 0,
            spans: Vec::new(),
            perms: std::cell::RefCell::new(vec![None; specs.len()]),
        })
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }
    /// Samples in one epoch (of all datasets together, for a blend).
    pub fn epoch_len(&self) -> u64 {
        self.epoch_len
    }
    /// Samples per epoch of dataset `k`.
    pub fn samples_of(&self, k: usize) -> u64 {
        self.sources[k].layout.len()
    }
    /// Dataset `k` of the blend.
    pub fn dataset(&self, k: usize) -> &Dataset {
        &self.sources[k].dataset
    }
    /// Documents excluded in dataset `k`, as (shard, document).
    pub fn excluded(&self, k: usize) -> &HashSet<(u32, u64)> {
        &self.sources[k].excluded
    }

    /// The current state.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            epoch: self.position / self.epoch_len,
            samples_consumed: self.position % self.epoch_len,
            step: self.step,
        }
    }
    /// Continues from a saved state.
    pub fn resume(&mut self, s: LoaderState) {
        self.position = s.epoch * self.epoch_len + s.samples_consumed;
        self.step = s.step;
    }

    /// (dataset, its epoch, sample id in its layout) at global stream position `g`.
    pub fn resolve(&self, g: u64) -> (usize, u64, u64) {
        let (d, j) = self.blend.locate(g);
        let src = &self.sources[d];
        let n = src.layout.len();
        let (epoch, pos) = (j / n, j % n);
        let id = match self.cfg.shuffle {
            Shuffle::None => pos,
            shuffle => {
                let mut perms = self.perms.borrow_mut();
                let slot = &mut perms[d];
                if slot.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    let order = match shuffle {
                        Shuffle::Local { block, window } => {
                            Order::Local(LocalShuffle::new(n, block, window, src.seed, epoch))
                        }
                        _ => Order::Full(FeistelPermutation::new(n, src.seed, epoch)),
                    };
                    *slot = Some((epoch, order));
                }
                match &slot.as_ref().expect("just set").1 {
                    Order::Full(p) => p.apply(pos),
                    Order::Local(p) => p.apply(pos),
                }
            }
        };
        (d, epoch, id)
    }

    /// Sample `id` of dataset `d`'s layout (no shuffling involved), with tokens and mask.
    pub fn sample(&self, d: usize, id: u64) -> Sample {
        let mut spans = Vec::new();
        let mut s = Sample {
            source: d,
            epoch: 0,
            index: id,
            position: 0,
            tokens: Vec::new(),
            loss_mask: Vec::new(),
            spans: Vec::new(),
        };
        self.fill(d, id, &mut spans, &mut s);
        s
    }

    fn fill(&self, d: usize, id: u64, spans: &mut Vec<Span>, out: &mut Sample) {
        let src = &self.sources[d];
        src.layout.spans(&src.space, id, spans);
        let cap = (self.cfg.seq_len + 1) as usize;
        out.tokens.clear();
        out.tokens.reserve(cap);
        out.loss_mask.clear();
        out.loss_mask.reserve(cap - 1);
        // Spans cover [0, filled) in order, so tokens and mask are written once, front to back.
        for sp in spans.iter() {
            let (a, b) = (sp.start as usize, (sp.start + sp.len) as usize);
            debug_assert_eq!(a, out.tokens.len());
            let idx = src.space.shards()[sp.shard as usize].index();
            let start = idx.token_start(sp.doc as usize) + sp.doc_offset;
            src.space
                .read_local(sp.shard as usize, start, sp.len as usize, &mut out.tokens);
            // Target j predicts token j + 1. Windows: the stream is continuous, token a is
            // predicted from token a - 1. Documents: attention resets at each document, so its
            // first token has no context.
            let first_target = match self.cfg.packing {
                Packing::Windows => a.max(1),
                Packing::Documents => a + 1,
            };
            let counts = !src.excluded.contains(&(sp.shard, sp.doc));
            if first_target < b {
                let m = &mut out.loss_mask;
                m.resize(first_target - 1, 0);
                m.resize(b - 1, counts as u8);
                // Stored loss masks (SFT): target j counts only when token j + 1 is masked in.
                let shard = &src.space.shards()[sp.shard as usize];
                let from = start + (first_target - a) as u64;
                if counts && let Some(stored) = shard.mask_bytes(from, start + sp.len as u64) {
                    for (t, &s) in m[first_target - 1..].iter_mut().zip(stored) {
                        *t &= s;
                    }
                }
            }
        }
        out.tokens.resize(cap, self.pad_id);
        out.loss_mask.resize(cap - 1, 0);
        out.spans.clone_from(spans);
    }

    fn skip(&self, d: usize) -> bool {
        self.cfg.packing == Packing::Documents
            && !self.sources[d].excluded.is_empty()
            && self
                .spans
                .iter()
                .any(|s| self.sources[d].excluded.contains(&(s.shard, s.doc)))
    }

    /// Skips `n` batches: arithmetic when no sample can be skipped (windows, or nothing
    /// excluded), else the batches are drawn and dropped.
    pub fn skip_batches(&mut self, n: u64) -> Result<()> {
        let any_skips = self.cfg.packing == Packing::Documents
            && self.sources.iter().any(|s| !s.excluded.is_empty());
        if any_skips {
            let mut b = Batch {
                step: 0,
                samples: Vec::new(),
            };
            for _ in 0..n {
                self.next_batch_into(&mut b)?;
            }
        } else {
            self.position += n * self.cfg.global_batch;
            self.step += n;
        }
        Ok(())
    }

    /// The next batch of this rank.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let mut b = Batch {
            step: 0,
            samples: Vec::new(),
        };
        self.next_batch_into(&mut b)?;
        Ok(b)
    }

    /// The next batch of this rank, written into `batch` so its buffers are reused (no
    /// allocation or page faults in the steady state).
    pub fn next_batch_into(&mut self, batch: &mut Batch) -> Result<()> {
        let g_batch = self.cfg.global_batch;
        let per_rank = g_batch / self.cfg.world;
        let mine = self.cfg.rank * per_rank..(self.cfg.rank + 1) * per_rank;
        let any_skips = self.cfg.packing == Packing::Documents
            && self.sources.iter().any(|s| !s.excluded.is_empty());
        let mut picked: Vec<(u64, usize, u64, u64)> = Vec::with_capacity(per_rank as usize);
        let mut taken = 0u64;
        let mut g = self.position;
        let scan_limit = self.position + g_batch + self.epoch_len;
        while taken < g_batch {
            if g >= scan_limit {
                return Err(limit(format!(
                    "every sample of an epoch holds an excluded document ({} excluded ids)",
                    self.cfg.exclude.len()
                )));
            }
            let (d, epoch, id) = self.resolve(g);
            let keep = if any_skips {
                let src = &self.sources[d];
                let mut spans = std::mem::take(&mut self.spans);
                src.layout.spans(&src.space, id, &mut spans);
                self.spans = spans;
                !self.skip(d)
            } else {
                true
            };
            if keep {
                if mine.contains(&taken) {
                    picked.push((g, d, epoch, id));
                }
                taken += 1;
            }
            g += 1;
        }
        let mut spans = std::mem::take(&mut self.spans);
        batch.samples.truncate(picked.len());
        for (k, (g, d, epoch, id)) in picked.into_iter().enumerate() {
            if k == batch.samples.len() {
                batch.samples.push(Sample {
                    source: 0,
                    epoch: 0,
                    index: 0,
                    position: 0,
                    tokens: Vec::new(),
                    loss_mask: Vec::new(),
                    spans: Vec::new(),
                });
            }
            let s = &mut batch.samples[k];
            (s.source, s.epoch, s.index, s.position) = (d, epoch, id, g);
            self.fill(d, id, &mut spans, s);
        }
        self.spans = spans;
        self.position = g;
        batch.step = self.step;
        self.step += 1;
        Ok(())
    }

    /// Provenance of each span of `sample` (document id, source, offset, url), through the
    /// provenance tables (each table read once per call; cache upstream for hot paths).
    pub fn provenance(&self, sample: &Sample) -> Result<Vec<(Span, DocProvenance)>> {
        Ok(self
            .provenance_batch(std::slice::from_ref(sample))?
            .pop()
            .unwrap_or_default())
    }

    /// [`Loader::provenance`] of several samples (e.g. a batch), each provenance table read
    /// once for all of them.
    pub fn provenance_batch(&self, samples: &[Sample]) -> Result<Vec<Vec<(Span, DocProvenance)>>> {
        let mut tables: HashMap<(usize, u32), Vec<DocProvenance>> = HashMap::new();
        let mut all = Vec::with_capacity(samples.len());
        for sample in samples {
            let src = &self.sources[sample.source];
            let mut out = Vec::with_capacity(sample.spans.len());
            for sp in &sample.spans {
                let key = (sample.source, sp.shard);
                if let std::collections::hash_map::Entry::Vacant(e) = tables.entry(key) {
                    e.insert(src.dataset.provenance(sp.shard as usize)?);
                }
                let p = tables[&key].get(sp.doc as usize).cloned().ok_or_else(|| {
                    Error::NotFound(format!(
                        "shard {} has no provenance row {}",
                        sp.shard, sp.doc
                    ))
                })?;
                out.push((*sp, p));
            }
            all.push(out);
        }
        Ok(all)
    }
}

/// (shard, document) of every document of `ds` whose id is in `ids`, from the provenance tables.
pub fn find_documents(ds: &Dataset, ids: &HashSet<&str>) -> Result<HashSet<(u32, u64)>> {
    use rayon::prelude::*;
    let found: Vec<Vec<(u32, u64)>> = (0..ds.manifest().shards.len())
        .into_par_iter()
        .map(|s| {
            Ok(ds
                .provenance(s)?
                .into_iter()
                .filter(|p| ids.contains(p.id.as_str()))
                .map(|p| (s as u32, p.index))
                .collect())
        })
        .collect::<Result<_>>()?;
    let set: HashSet<(u32, u64)> = found.into_iter().flatten().collect();
    tracing::info!(dataset = %ds.dir().display(), excluded = set.len(), "exclusion list resolved");
    Ok(set)
}
