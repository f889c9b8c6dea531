//! The dedup run: fingerprints in, one decision per removed document out.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{DedupConfig, KeepRule};
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::spill::BucketSpill;
use crate::unionfind::UnionFind;

/// Which stage removed a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Same normalised text as the kept document.
    Exact,
    /// Same normalised URL as the kept document (URL dedup).
    Url,
    /// Near-duplicate (MinHash LSH candidate, verified when configured).
    Fuzzy,
}

/// A removed document: which one, why, and who was kept in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The removed document.
    pub doc: u64,
    /// The stage that removed it.
    pub stage: Stage,
    /// Cluster id: the smallest document number in the cluster.
    pub cluster: u64,
    /// The document of the cluster that was kept.
    pub kept: u64,
}

/// Counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupStats {
    /// Documents seen.
    pub documents: u64,
    /// Nothing left after normalisation: not deduplicated.
    pub empty: u64,
    /// Shorter than one n-gram: one shingle of the whole text.
    pub short: u64,
    /// Documents removed as exact duplicates.
    pub exact_removed: u64,
    /// Documents removed for their URL.
    pub url_removed: u64,
    /// Documents removed as near-duplicates.
    pub fuzzy_removed: u64,
    /// Clusters of two or more documents.
    pub clusters: u64,
    /// Candidate pairs from the LSH buckets: with verification every distinct pair, without it
    /// the pairs that joined two clusters.
    pub candidate_pairs: u64,
    /// Candidate pairs below the verification threshold.
    pub verified_rejected: u64,
    /// Bucket records written (exact, URL and band hashes).
    pub bucket_records: u64,
    /// Bytes of bucket records spilled to disk.
    pub spilled_bytes: u64,
}

/// The result of a run.
#[derive(Debug, Clone, Default)]
pub struct DedupOutcome {
    /// Removed documents, ascending.
    pub decisions: Vec<Decision>,
    /// Size of every cluster of two or more, by cluster id.
    pub clusters: BTreeMap<u64, u64>,
    /// Counts of the run.
    pub stats: DedupStats,
}

impl DedupOutcome {
    /// Decision for `doc`, if it was removed (binary search).
    pub fn removed(&self, doc: u64) -> Option<&Decision> {
        self.decisions
            .binary_search_by_key(&doc, |d| d.doc)
            .ok()
            .map(|i| &self.decisions[i])
    }
}

/// Exact Jaccard similarity of two sorted, unique sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Supplies the shingle sets of the given documents (for verification), e.g. by re-reading them.
pub type ShingleSource<'a> = dyn FnMut(&[u64]) -> Result<HashMap<u64, Vec<u64>>> + 'a;

/// Bits of a document id that number documents inside one input task; the task index is above
/// them, so ids of different tasks never collide and sort in the global order.
pub const TASK_SHIFT: u32 = 40;

/// The id of document `local` of task `task` (see [`TASK_SHIFT`]).
pub fn task_doc(task: u64, local: u64) -> u64 {
    (task << TASK_SHIFT) | local
}

/// Collects the bucket records of one input task, spilling under its own directory; tasks run
/// in parallel (one collector each) and [`group`] merges them partition by partition.
#[derive(Debug)]
pub struct TaskCollector {
    cfg: DedupConfig,
    exact: BucketSpill,
    urls: BucketSpill,
    bands: BucketSpill,
    lengths: HashMap<u64, u64>,
    stats: DedupStats,
}

impl TaskCollector {
    /// A collector holding at most `budget` bytes of records before spilling under `dir`.
    pub fn new(cfg: &DedupConfig, dir: &Path, budget: usize) -> Result<Self> {
        cfg.validate()?;
        // Band records are 14 per document, exact and URL records one each.
        Ok(TaskCollector {
            cfg: cfg.clone(),
            exact: BucketSpill::new(&dir.join("exact"), cfg.partitions, budget / 8)?,
            urls: BucketSpill::new(&dir.join("urls"), cfg.partitions, budget / 8)?,
            bands: BucketSpill::new(&dir.join("bands"), cfg.partitions, budget - budget / 4)?,
            lengths: HashMap::new(),
            stats: DedupStats::default(),
        })
    }

    /// Moves every record held in memory to disk (for a finished task when more tasks are to
    /// come, so memory stays within the budget of the running ones).
    pub fn seal(&mut self) -> Result<()> {
        self.exact.spill_all()?;
        self.urls.spill_all()?;
        self.bands.spill_all()
    }

    /// Adds document `doc` (ids ascending in the global order).
    pub fn add(&mut self, doc: u64, fp: &Fingerprint) -> Result<()> {
        let (cfg, stats) = (&self.cfg, &mut self.stats);
        stats.documents += 1;
        if fp.empty {
            stats.empty += 1;
            return Ok(());
        }
        stats.short += fp.short as u64;
        if cfg.keep == KeepRule::Longest {
            self.lengths.insert(doc, fp.len);
        }
        if cfg.exact {
            self.exact
                .push([(fp.exact >> 64) as u64, fp.exact as u64, doc])?;
            stats.bucket_records += 1;
        }
        if let Some(u) = fp.url.filter(|_| cfg.url) {
            self.urls.push([(u >> 64) as u64, u as u64, doc])?;
            stats.bucket_records += 1;
        }
        if cfg.fuzzy && fp.signature.len() == cfg.bands * cfg.rows {
            for (b, rows) in fp.signature.chunks_exact(cfg.rows).enumerate() {
                let mut bytes = Vec::with_capacity(4 * cfg.rows);
                for v in rows {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                self.bands
                    .push([b as u64, xxhash_rust::xxh3::xxh3_64(&bytes), doc])?;
                stats.bucket_records += 1;
            }
        }
        Ok(())
    }
}

/// Runs dedup over `fingerprints` (document numbers ascending in the global order), spilling
/// bucket records under `spill_dir` beyond the memory budget. `shingles` is called once with the
/// documents of all candidate pairs when `cfg.verify_threshold` is set.
pub fn run_dedup(
    cfg: &DedupConfig,
    spill_dir: &Path,
    fingerprints: impl IntoIterator<Item = (u64, Fingerprint)>,
    shingles: Option<&mut ShingleSource<'_>>,
) -> Result<DedupOutcome> {
    let mut c = TaskCollector::new(cfg, spill_dir, cfg.memory_budget_bytes)?;
    for (doc, fp) in fingerprints {
        c.add(doc, &fp)?;
    }
    group(cfg, vec![c], None, shingles)
}

/// Merges the collectors of all tasks (in task order) and decides. With `task_docs` (documents
/// per task), ids made by [`task_doc`] are turned into global document numbers in the outcome
/// and in the calls to `shingles`; without it ids are taken as they are.
pub fn group(
    cfg: &DedupConfig,
    tasks: Vec<TaskCollector>,
    task_docs: Option<&[u64]>,
    shingles: Option<&mut ShingleSource<'_>>,
) -> Result<DedupOutcome> {
    let starts: Option<Vec<u64>> = task_docs.map(|n| {
        let mut acc = 0;
        n.iter()
            .map(|&c| {
                let s = acc;
                acc += c;
                s
            })
            .collect()
    });
    let global = |id: u64| match &starts {
        Some(st) => st[(id >> TASK_SHIFT) as usize] + (id & ((1u64 << TASK_SHIFT) - 1)),
        None => id,
    };
    let mut stats = DedupStats::default();
    let mut lengths: HashMap<u64, u64> = HashMap::new();
    let (mut exact, mut urls, mut bands) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        let s = &t.stats;
        stats.documents += s.documents;
        stats.empty += s.empty;
        stats.short += s.short;
        stats.bucket_records += s.bucket_records;
        lengths.extend(t.lengths);
        exact.push(t.exact);
        urls.push(t.urls);
        bands.push(t.bands);
    }

    // Exact and URL groups: every record of a run joins the run's first document, both in the
    // stage's own union-find (to name the stage later) and in the global one.
    let join_runs = |spills: Vec<BucketSpill>, own: &mut UnionFind, all: &mut UnionFind| {
        BucketSpill::merge_partitions(spills, |recs| {
            for run in recs.chunk_by(|a, b| a[0] == b[0] && a[1] == b[1]) {
                for r in &run[1..] {
                    own.union(run[0][2], r[2]);
                    all.union(run[0][2], r[2]);
                }
            }
            Ok(())
        })
    };
    let mut uf = UnionFind::default();
    let mut exact_uf = UnionFind::default();
    let mut url_uf = UnionFind::default();
    stats.spilled_bytes += join_runs(exact, &mut exact_uf, &mut uf)?;
    stats.spilled_bytes += join_runs(urls, &mut url_uf, &mut uf)?;
    let verify = cfg.verify_threshold.is_some() && shingles.is_some();
    let mut edges: Vec<(u64, u64)> = Vec::new();
    stats.spilled_bytes += BucketSpill::merge_partitions(bands, |recs| {
        for run in recs.chunk_by(|a, b| a[0] == b[0] && a[1] == b[1]) {
            for r in &run[1..] {
                let (a, b) = (run[0][2], r[2]);
                if verify {
                    edges.push((a, b));
                } else if uf.find(a) != uf.find(b) {
                    stats.candidate_pairs += 1;
                    uf.union(a, b);
                }
            }
        }
        Ok(())
    })?;
    if verify {
        edges.sort_unstable();
        edges.dedup();
        stats.candidate_pairs = edges.len() as u64;
        let mut docs: Vec<u64> = edges.iter().flat_map(|&(a, b)| [a, b]).collect();
        docs.sort_unstable();
        docs.dedup();
        let wanted: Vec<u64> = docs.iter().map(|&d| global(d)).collect();
        let sets = (shingles.expect("verify implies a source"))(&wanted)?;
        let t = cfg.verify_threshold.expect("verify");
        let empty = Vec::new();
        for (a, b) in edges {
            let j = jaccard(
                sets.get(&global(a)).unwrap_or(&empty),
                sets.get(&global(b)).unwrap_or(&empty),
            );
            if j >= t {
                uf.union(a, b);
            } else {
                stats.verified_rejected += 1;
            }
        }
    }

    let mut by_root: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (doc, root) in uf.members() {
        by_root.entry(root).or_default().push(doc);
    }
    let mut decisions = Vec::new();
    let mut clusters = BTreeMap::new();
    for (root, members) in by_root {
        if members.len() < 2 {
            continue;
        }
        clusters.insert(global(root), members.len() as u64);
        let kept = match cfg.keep {
            KeepRule::Earliest => root,
            KeepRule::Longest => *members
                .iter()
                .max_by(|&&x, &&y| lengths.get(&x).cmp(&lengths.get(&y)).then(y.cmp(&x)))
                .expect("non-empty"),
        };
        let kept_exact = exact_uf.find(kept);
        let kept_url = url_uf.find(kept);
        for &m in &members {
            if m == kept {
                continue;
            }
            let stage = if exact_uf.find(m) == kept_exact {
                Stage::Exact
            } else if url_uf.find(m) == kept_url {
                Stage::Url
            } else {
                Stage::Fuzzy
            };
            match stage {
                Stage::Exact => stats.exact_removed += 1,
                Stage::Url => stats.url_removed += 1,
                Stage::Fuzzy => stats.fuzzy_removed += 1,
            }
            decisions.push(Decision {
                doc: global(m),
                stage,
                cluster: global(root),
                kept: global(kept),
            });
        }
    }
    decisions.sort_unstable_by_key(|d| d.doc);
    stats.clusters = clusters.len() as u64;
    tracing::info!(
        removed = decisions.len(),
        clusters = stats.clusters,
        spilled = stats.spilled_bytes,
        "dedup done"
    );
    Ok(DedupOutcome {
        decisions,
        clusters,
        stats,
    })
}
