//! The dedup run: fingerprints in, one decision per removed document out.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cluster::Member;
use crate::config::{DedupConfig, KeepRule};
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::spill::BucketSpill;
use crate::unionfind::UnionFind;
use crate::verify::{Decided, ShingleSource, decide_groups};

/// Which stage removed a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Same normalised text as the kept document.
    Exact,
    /// Same normalised URL as the kept document (URL dedup).
    Url,
    /// Near-duplicate: in an LSH candidate group with the kept document, and at least the
    /// threshold in exact Jaccard similarity with it.
    Fuzzy,
}

/// A removed document: which one, why, and who was kept in its place.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The removed document.
    pub doc: u64,
    /// The stage that removed it.
    pub stage: Stage,
    /// Cluster id: the smallest document number in the cluster (the kept document and the
    /// documents removed against it).
    pub cluster: u64,
    /// The kept document this one was found to duplicate.
    pub kept: u64,
    /// Exact Jaccard similarity of the shingle sets of `doc` and `kept` (1 for exact copies;
    /// `None` for URL duplicates, whose texts are not compared).
    pub jaccard: Option<f64>,
}

/// Counts of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
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
    /// Clusters: a kept document with the documents removed against it.
    pub clusters: u64,
    /// Candidate groups of two or more documents (connected by exact hashes, URLs and LSH
    /// buckets); each holds one cluster or more, and documents kept alone.
    pub components: u64,
    /// LSH bucket pairs that joined two candidate groups.
    pub candidate_pairs: u64,
    /// Documents of candidate groups kept besides the first, because no kept document of their
    /// group matched them (connected components would have removed them).
    pub verified_rejected: u64,
    /// Exact Jaccard similarities computed.
    pub compared: u64,
    /// Documents whose shingle sets were fetched again to compare them (one per distinct text of
    /// the candidate groups with two texts or more).
    pub shingled_documents: u64,
    /// Bucket records written (exact, URL and band hashes).
    pub bucket_records: u64,
    /// Bytes of bucket records and shingle sets spilled to disk.
    pub spilled_bytes: u64,
}

impl DedupStats {
    /// Adds one input task's counts (documents, empty, short, bucket records).
    pub fn add_task(&mut self, t: &DedupStats) {
        self.documents += t.documents;
        self.empty += t.empty;
        self.short += t.short;
        self.bucket_records += t.bucket_records;
    }
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
    pub(crate) exact: BucketSpill,
    pub(crate) urls: BucketSpill,
    pub(crate) bands: BucketSpill,
    pub(crate) lengths: HashMap<u64, u64>,
    pub(crate) stats: DedupStats,
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
/// bucket records and shingle sets under `spill_dir` beyond the memory budget. `shingles` is
/// called once, with the documents whose shingle sets the candidate groups need (none when no
/// group holds two different texts).
pub fn run_dedup(
    cfg: &DedupConfig,
    spill_dir: &Path,
    fingerprints: impl IntoIterator<Item = (u64, Fingerprint)>,
    shingles: &mut ShingleSource<'_>,
) -> Result<DedupOutcome> {
    let mut c = TaskCollector::new(cfg, spill_dir, cfg.memory_budget_bytes)?;
    for (doc, fp) in fingerprints {
        c.add(doc, &fp)?;
    }
    group(cfg, vec![c], None, spill_dir, shingles)
}

/// The map from ids made by [`task_doc`] to global document numbers, for tasks holding
/// `task_docs` documents each (`None`: ids are global already).
pub(crate) fn global_ids(task_docs: Option<&[u64]>) -> impl Fn(u64) -> u64 + use<> {
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
    move |id: u64| match &starts {
        Some(st) => st[(id >> TASK_SHIFT) as usize] + (id & ((1u64 << TASK_SHIFT) - 1)),
        None => id,
    }
}

/// Merges the collectors of all tasks (in task order) into candidate groups and decides each
/// ([`crate::cluster`]), spilling shingle sets under `spill_dir`. With `task_docs` (documents per
/// task), ids made by [`task_doc`] are turned into global document numbers in the outcome and in
/// the calls to `shingles`; without it ids are taken as they are.
pub fn group(
    cfg: &DedupConfig,
    tasks: Vec<TaskCollector>,
    task_docs: Option<&[u64]>,
    spill_dir: &Path,
    shingles: &mut ShingleSource<'_>,
) -> Result<DedupOutcome> {
    let global = global_ids(task_docs);
    let mut stats = DedupStats::default();
    let mut lengths: HashMap<u64, u64> = HashMap::new();
    let (mut exact, mut urls, mut bands) = (Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        stats.add_task(&t.stats);
        lengths.extend(t.lengths);
        exact.push(t.exact);
        urls.push(t.urls);
        bands.push(t.bands);
    }

    // Exact and URL classes: every record of a run joins the run's first document, both in the
    // stage's own union-find (the classes) and in the one of candidate groups.
    let mut u = Unions::default();
    stats.spilled_bytes += BucketSpill::merge_partitions(exact, |recs| {
        run_edges(recs, |a, b| u.exact(a, b));
        Ok(())
    })?;
    stats.spilled_bytes += BucketSpill::merge_partitions(urls, |recs| {
        run_edges(recs, |a, b| u.url(a, b));
        Ok(())
    })?;
    stats.spilled_bytes += BucketSpill::merge_partitions(bands, |recs| {
        run_edges(recs, |a, b| u.band(a, b));
        Ok(())
    })?;
    finish_groups(cfg, u, lengths, stats, &global, spill_dir, shingles)
}

/// The unions a dedup run makes, in its order: exact and URL classes, then LSH bands.
#[derive(Debug, Default)]
pub(crate) struct Unions {
    uf: UnionFind,
    exact_uf: UnionFind,
    url_uf: UnionFind,
    candidate_pairs: u64,
}

impl Unions {
    /// Documents `a` and `b` have the same normalised text.
    pub(crate) fn exact(&mut self, a: u64, b: u64) {
        self.exact_uf.union(a, b);
        self.uf.union(a, b);
    }
    /// Documents `a` and `b` have the same normalised URL.
    pub(crate) fn url(&mut self, a: u64, b: u64) {
        self.url_uf.union(a, b);
        self.uf.union(a, b);
    }
    /// Documents `a` and `b` share an LSH band: a candidate pair when it joins two groups.
    pub(crate) fn band(&mut self, a: u64, b: u64) {
        if self.uf.find(a) != self.uf.find(b) {
            self.candidate_pairs += 1;
            self.uf.union(a, b);
        }
    }
}

/// The edges of sorted bucket records: for every run of one key, (its first document, each
/// other document), in order.
pub(crate) fn run_edges(recs: &[crate::spill::Record], mut f: impl FnMut(u64, u64)) {
    for run in recs.chunk_by(|a, b| a[0] == b[0] && a[1] == b[1]) {
        for r in &run[1..] {
            f(run[0][2], r[2]);
        }
    }
}

/// Candidate groups from the unions (members in keep order, ids global), each decided.
pub(crate) fn finish_groups(
    cfg: &DedupConfig,
    u: Unions,
    lengths: HashMap<u64, u64>,
    mut stats: DedupStats,
    global: &dyn Fn(u64) -> u64,
    spill_dir: &Path,
    shingles: &mut ShingleSource<'_>,
) -> Result<DedupOutcome> {
    let Unions {
        mut uf,
        mut exact_uf,
        mut url_uf,
        candidate_pairs,
    } = u;
    stats.candidate_pairs += candidate_pairs;
    let mut by_root: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (doc, root) in uf.members() {
        by_root.entry(root).or_default().push(doc);
    }
    drop(uf);
    let groups: Vec<Vec<Member>> = by_root
        .into_values()
        .filter(|docs| docs.len() >= 2)
        .map(|docs| {
            let mut ms: Vec<(u64, Member)> = docs
                .into_iter()
                .map(|d| {
                    let m = Member {
                        doc: global(d),
                        exact: global(exact_uf.find(d)),
                        url: global(url_uf.find(d)),
                    };
                    (lengths.get(&d).copied().unwrap_or(0), m)
                })
                .collect();
            match cfg.keep {
                KeepRule::Earliest => ms.sort_unstable_by_key(|(_, m)| m.doc),
                KeepRule::Longest => {
                    ms.sort_unstable_by_key(|&(len, m)| (std::cmp::Reverse(len), m.doc))
                }
            }
            ms.into_iter().map(|(_, m)| m).collect()
        })
        .collect();
    drop((exact_uf, url_uf, lengths));
    let Decided {
        decisions,
        clusters,
    } = decide_groups(cfg, &groups, spill_dir, shingles, &mut stats)?;
    stats.clusters = clusters.len() as u64;
    tracing::info!(
        removed = decisions.len(),
        clusters = stats.clusters,
        groups = stats.components,
        compared = stats.compared,
        spilled = stats.spilled_bytes,
        "dedup done"
    );
    Ok(DedupOutcome {
        decisions,
        clusters,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    /// Fingerprints whose 2 × 2 signatures chain A ~ B (band 0) and B ~ C (band 1), A and C
    /// sharing no band; `len` decides the `longest` keep rule.
    fn chain_fingerprints(lens: [u64; 3]) -> Vec<(u64, Fingerprint)> {
        let sigs = [[1, 2, 3, 4], [1, 2, 5, 6], [7, 8, 5, 6]];
        (0..3)
            .map(|i| {
                let fp = Fingerprint {
                    exact: 100 + i as u128,
                    signature: sigs[i].to_vec(),
                    len: lens[i],
                    url: None,
                    empty: false,
                    short: false,
                };
                (i as u64, fp)
            })
            .collect()
    }

    /// A = {0..100}, B = {10..110}, C = {20..120}: J(A,B) = J(B,C) = 0.818, J(A,C) = 0.667.
    fn chain_sets(doc: u64) -> Vec<u64> {
        (10 * doc..10 * doc + 100).collect()
    }

    fn run(keep: KeepRule, lens: [u64; 3], asked: &mut Vec<u64>) -> DedupOutcome {
        let cfg = DedupConfig {
            bands: 2,
            rows: 2,
            keep,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut source = |docs: &[u64], sink: &mut crate::ShingleSink<'_>| -> Result<()> {
            asked.extend_from_slice(docs);
            docs.iter().try_for_each(|&d| sink(d, chain_sets(d)))
        };
        run_dedup(&cfg, dir.path(), chain_fingerprints(lens), &mut source).unwrap()
    }

    #[test]
    fn a_chain_of_candidates_removes_only_what_is_near_the_kept_document() {
        let mut asked = Vec::new();
        let o = run(KeepRule::Earliest, [10, 10, 10], &mut asked);
        assert_eq!(asked, vec![0, 1, 2], "one candidate group of three texts");
        // A kept; B removed against A; C, far from A, kept (connected components removed it).
        assert_eq!(o.decisions.len(), 1);
        let d = o.decisions[0];
        assert_eq!((d.doc, d.kept, d.cluster, d.stage), (1, 0, 0, Stage::Fuzzy));
        assert!((d.jaccard.unwrap() - 90.0 / 110.0).abs() < 1e-12);
        assert_eq!(o.clusters, BTreeMap::from([(0, 2)]));
        let s = &o.stats;
        assert_eq!((s.components, s.clusters, s.verified_rejected), (1, 1, 1));
        assert_eq!((s.fuzzy_removed, s.shingled_documents), (1, 3));

        // C the longest: C kept, B removed against C, A kept.
        let o = run(KeepRule::Longest, [10, 20, 30], &mut Vec::new());
        assert_eq!(o.decisions.len(), 1);
        let d = o.decisions[0];
        assert_eq!((d.doc, d.kept, d.cluster), (1, 2, 1));
    }

    #[test]
    fn a_document_the_source_does_not_deliver_is_an_error() {
        let cfg = DedupConfig {
            bands: 2,
            rows: 2,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut source = |docs: &[u64], sink: &mut crate::ShingleSink<'_>| -> Result<()> {
            docs.iter()
                .filter(|&&d| d != 2)
                .try_for_each(|&d| sink(d, chain_sets(d)))
        };
        let e = run_dedup(&cfg, dir.path(), chain_fingerprints([1; 3]), &mut source).unwrap_err();
        assert!(matches!(e, Error::MissingShingles { doc: 2 }), "{e}");
    }
}
