//! The dedup run cut into phases that run as separate processes — a cluster's job arrays —
//! with the decisions of the one-process run ([`crate::group`]), bit for bit:
//!
//! 1. **signatures**, one job per input task: the task's bucket records sealed on disk under its
//!    own directory ([`TaskCollector::seal_to_disk`]: `exact/`, `urls/`, `bands/`, one file per
//!    partition) with its counts ([`SealedTask`]);
//! 2. **partitions**, one job per partition: partition `p` of every task's records, sorted, cut
//!    into the unions the one-process run makes there ([`partition_edges`]: for each run of one
//!    key, its first document with each other one) and written as an edge file ([`write_edges`]);
//!    a partition holds only documents that share a key, so the edges are far fewer than the
//!    records;
//! 3. **clustering**, one job: the edges of every partition applied in the one-process order —
//!    all exact partitions, then all URL ones, then all bands — give the same union-find, the
//!    same candidate groups and the same decisions ([`group_from_edges`]).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::DedupConfig;
use crate::error::{Error, Result};
use crate::plan::{
    DedupOutcome, DedupStats, TaskCollector, Unions, finish_groups, global_ids, run_edges,
};
use crate::spill::read_partition_file;
use crate::verify::ShingleSource;

/// The record kinds, in the order the unions are made.
pub const KINDS: [&str; 3] = ["exact", "urls", "bands"];

/// A task's counts and lengths, beside its sealed records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedTask {
    /// The task's counts (documents, empty, short, bucket records).
    pub stats: DedupStats,
    /// Length of each document (under the `longest` keep rule), by id.
    pub lengths: Vec<(u64, u64)>,
    /// Bytes of records written.
    pub spilled_bytes: u64,
    /// Bytes of each partition's file, per kind of [`KINDS`]: checked when the partition is
    /// read, so a lost or cut file is named instead of read as fewer records.
    #[serde(default)]
    pub partition_bytes: [Vec<u64>; 3],
}

impl TaskCollector {
    /// Writes every record to the task's partition files and syncs them; the task's counts.
    pub fn seal_to_disk(mut self) -> Result<SealedTask> {
        self.exact.seal()?;
        self.urls.seal()?;
        self.bands.seal()?;
        let mut lengths: Vec<(u64, u64)> = self.lengths.into_iter().collect();
        lengths.sort_unstable();
        Ok(SealedTask {
            stats: self.stats,
            lengths,
            spilled_bytes: self.exact.spilled_bytes()
                + self.urls.spilled_bytes()
                + self.bands.spilled_bytes(),
            partition_bytes: [
                self.exact.partition_bytes().to_vec(),
                self.urls.partition_bytes().to_vec(),
                self.bands.partition_bytes().to_vec(),
            ],
        })
    }
}

/// The edges of partition `p` over the sealed tasks (their directories and records, in task
/// order), one list per kind of [`KINDS`]. Each partition file must hold the bytes its task's
/// record says it wrote.
pub fn partition_edges(tasks: &[(PathBuf, &SealedTask)], p: usize) -> Result<[Vec<(u64, u64)>; 3]> {
    let mut out: [Vec<(u64, u64)>; 3] = Default::default();
    for (k, kind) in KINDS.iter().enumerate() {
        let mut recs = Vec::new();
        for (d, sealed) in tasks {
            let path = d.join(kind).join(format!("part-{p:05}.bin"));
            let want = sealed.partition_bytes[k].get(p).copied().unwrap_or(0);
            let have = std::fs::metadata(&path).map_or(0, |m| m.len());
            if have != want {
                return Err(Error::io(
                    &path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{have} bytes of bucket records, its task's record says {want} (lost or cut: rerun the task's signatures)"
                        ),
                    ),
                ));
            }
            read_partition_file(&path, &mut recs)?;
        }
        {
            use rayon::slice::ParallelSliceMut;
            recs.par_sort_unstable();
        }
        run_edges(&recs, |a, b| out[k].push((a, b)));
    }
    Ok(out)
}

/// Writes an edge file: three counts, then the edges of each kind (16 bytes each).
pub fn write_edges(path: &Path, edges: &[Vec<(u64, u64)>; 3]) -> Result<()> {
    let f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = BufWriter::new(f);
    let mut put = |v: u64| w.write_all(&v.to_le_bytes());
    for e in edges {
        put(e.len() as u64).map_err(|e| Error::io(path, e))?;
    }
    for e in edges {
        for &(a, b) in e {
            put(a).map_err(|e| Error::io(path, e))?;
            put(b).map_err(|e| Error::io(path, e))?;
        }
    }
    let f = w
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Reads the edges of kind `k` (an index into [`KINDS`]) from an edge file, checking its size.
pub fn read_edges(path: &Path, k: usize) -> Result<Vec<(u64, u64)>> {
    let bad = |d: String| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, d),
        )
    };
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len < 24 {
        return Err(bad(format!(
            "{len} bytes, not even the three counts (cut short?)"
        )));
    }
    let mut r = BufReader::new(f);
    let mut word = || -> Result<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).map_err(|e| Error::io(path, e))?;
        Ok(u64::from_le_bytes(b))
    };
    let counts = [word()?, word()?, word()?];
    let total: u64 = counts.iter().sum();
    if len != 24 + 16 * total {
        return Err(bad(format!(
            "{len} bytes, the counts {counts:?} say {} (cut short?)",
            24 + 16 * total
        )));
    }
    let skip: u64 = counts[..k].iter().sum();
    for _ in 0..2 * skip {
        word()?;
    }
    (0..counts[k]).map(|_| Ok((word()?, word()?))).collect()
}

/// The decisions from the sealed tasks (in task order, holding `task_docs` documents each) and
/// the edge files of partitions `0..P` (in order): the unions of [`crate::group`] in its order,
/// then its grouping and verification.
pub fn group_from_edges(
    cfg: &DedupConfig,
    sealed: Vec<SealedTask>,
    edge_files: &[PathBuf],
    task_docs: &[u64],
    spill_dir: &Path,
    shingles: &mut ShingleSource<'_>,
) -> Result<DedupOutcome> {
    if edge_files.len() != cfg.partitions {
        return Err(Error::Config(format!(
            "{} edge files for {} partitions",
            edge_files.len(),
            cfg.partitions
        )));
    }
    let mut stats = DedupStats::default();
    let mut lengths: HashMap<u64, u64> = HashMap::new();
    for t in sealed {
        stats.add_task(&t.stats);
        stats.spilled_bytes += t.spilled_bytes;
        lengths.extend(t.lengths);
    }
    let mut u = Unions::default();
    for k in 0..KINDS.len() {
        for f in edge_files {
            for (a, b) in read_edges(f, k)? {
                match k {
                    0 => u.exact(a, b),
                    1 => u.url(a, b),
                    _ => u.band(a, b),
                }
            }
        }
    }
    let global = global_ids(Some(task_docs));
    finish_groups(cfg, u, lengths, stats, &global, spill_dir, shingles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeepRule;
    use crate::fingerprint::Fingerprint;
    use crate::plan::{group, task_doc};

    /// Document `d` of a corpus with exact copies, shared URLs and near-duplicate families:
    /// its fingerprint (signature values from a small alphabet, so bands collide) and its
    /// shingle set (families of overlapping ranges).
    fn doc(d: u64) -> (Fingerprint, Vec<u64>) {
        let family = d % 7;
        let sig: Vec<u32> = (0..8)
            .map(|i| {
                if (d + i).is_multiple_of(3) {
                    (family * 10 + i) as u32
                } else {
                    (d * 31 + i * 7) as u32
                }
            })
            .collect();
        let fp = Fingerprint {
            exact: if d.is_multiple_of(11) {
                1
            } else {
                1000 + u128::from(d)
            },
            signature: sig,
            len: 100 + (d * 37) % 50,
            url: d.is_multiple_of(13).then_some(5),
            empty: d == 17,
            short: false,
        };
        let set = (family * 5 + d % 3..family * 5 + d % 3 + 40).collect();
        (fp, set)
    }

    #[test]
    fn the_phases_in_separate_steps_decide_what_one_process_decides() {
        for keep in [KeepRule::Earliest, KeepRule::Longest] {
            let cfg = DedupConfig {
                bands: 4,
                rows: 2,
                partitions: 5,
                url: true,
                keep,
                ..Default::default()
            };
            // 3 tasks of 40, 25 and 35 documents.
            let sizes = [40u64, 25, 35];
            let starts = [0u64, 40, 65];
            let dir = tempfile::tempdir().unwrap();
            let mut source = |docs: &[u64], sink: &mut crate::ShingleSink<'_>| -> Result<()> {
                docs.iter().try_for_each(|&d| sink(d, doc(d).1))
            };
            let collect = |root: &Path| -> Vec<TaskCollector> {
                (0..3u64)
                    .map(|t| {
                        let mut c =
                            TaskCollector::new(&cfg, &root.join(format!("task-{t}")), 1 << 20)
                                .unwrap();
                        for l in 0..sizes[t as usize] {
                            c.add(task_doc(t, l), &doc(starts[t as usize] + l).0)
                                .unwrap();
                        }
                        c
                    })
                    .collect()
            };
            let one = group(
                &cfg,
                collect(&dir.path().join("one")),
                Some(&sizes),
                &dir.path().join("one-spill"),
                &mut source,
            )
            .unwrap();
            // Phase 1 per task, phase 2 per partition, phase 3 once.
            let root = dir.path().join("graph");
            let sealed: Vec<SealedTask> = collect(&root)
                .into_iter()
                .map(|c| c.seal_to_disk().unwrap())
                .collect();
            let tasks: Vec<(PathBuf, &SealedTask)> = sealed
                .iter()
                .enumerate()
                .map(|(t, s)| (root.join(format!("task-{t}")), s))
                .collect();
            let edge_files: Vec<PathBuf> = (0..cfg.partitions)
                .map(|p| {
                    let f = root.join(format!("edges-{p}.bin"));
                    write_edges(&f, &partition_edges(&tasks, p).unwrap()).unwrap();
                    f
                })
                .collect();
            // A partition file lost after its task was sealed is named, not read as empty.
            let lost = (0..cfg.partitions)
                .map(|p| root.join(format!("task-1/bands/part-{p:05}.bin")))
                .find(|f| f.is_file())
                .unwrap();
            let saved = std::fs::read(&lost).unwrap();
            std::fs::remove_file(&lost).unwrap();
            let p: usize = lost.file_stem().unwrap().to_string_lossy()[5..]
                .parse()
                .unwrap();
            let e = partition_edges(&tasks, p).unwrap_err().to_string();
            assert!(e.contains("part-") && e.contains("rerun"), "{e}");
            std::fs::write(&lost, saved).unwrap();
            let graph = group_from_edges(
                &cfg,
                sealed,
                &edge_files,
                &sizes,
                &dir.path().join("graph-spill"),
                &mut source,
            )
            .unwrap();
            assert!(
                one.decisions.len() > 10,
                "{keep:?}: a corpus with duplicates: {:?}",
                one.stats
            );
            assert_eq!(one.decisions, graph.decisions, "{keep:?}");
            assert_eq!(one.clusters, graph.clusters, "{keep:?}");
            let mut a = one.stats.clone();
            a.spilled_bytes = graph.stats.spilled_bytes;
            assert_eq!(a, graph.stats, "{keep:?}");
            // A cut edge file is named, not read as fewer edges.
            let f = &edge_files[0];
            let len = std::fs::metadata(f).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(f)
                .unwrap()
                .set_len(len - 8)
                .unwrap();
            let e = read_edges(f, 2).unwrap_err().to_string();
            assert!(e.contains("cut short"), "{e}");
        }
    }
}
