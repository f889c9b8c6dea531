//! The dedup stage of `tokenmill build`: decided once over all inputs before the tokenize tasks
//! (documents are numbered in the global order: input file, then record), persisted in
//! `.build/dedup.json` so a resumed build does not redo it, and applied by each task to its own
//! file. The decisions are also written beside the shards as `dedup-removed.parquet` (stage,
//! cluster, and the id/source/offset/url of the document kept in each removed one's place) and
//! `dedup-clusters.parquet`, queryable with `tokenmill sql DATASET`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenmill_dedup::{DedupStats, Stage};
use tokenmill_shards::atomic_write;

use super::decide::{decide, write_tables};
use crate::config::BuildConfig;
use crate::error::{Error, Result};

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    file_docs: Vec<u64>,
    removed: Vec<(u64, Stage)>,
    stats: DedupStats,
}

/// Which documents the dedup stage removed.
#[derive(Debug)]
pub struct DedupFilter {
    file_starts: Vec<u64>,
    removed: HashMap<u64, Stage>,
}

/// The filter seen from one input file.
#[derive(Debug, Clone, Copy)]
pub struct FileFilter<'a> {
    filter: &'a DedupFilter,
    start: u64,
}

impl FileFilter<'_> {
    /// The drop reason of document `doc_in_file` of this file, if dedup removed it.
    pub fn removed(&self, doc_in_file: u64) -> Option<&'static str> {
        self.filter
            .removed
            .get(&(self.start + doc_in_file))
            .map(|s| match s {
                Stage::Exact => "dedup_exact",
                Stage::Url => "dedup_url",
                Stage::Fuzzy => "dedup_fuzzy",
            })
    }
}

impl DedupFilter {
    /// The filter for input file `i` (in the build's input order), whose documents are numbered
    /// from 0. Panics if `i` is not an input of the build.
    pub fn for_file(&self, i: usize) -> FileFilter<'_> {
        FileFilter {
            filter: self,
            start: self.file_starts[i],
        }
    }
}

fn stored_path(build_dir: &Path) -> PathBuf {
    build_dir.join("dedup.json")
}

/// The stage's statistics, if it ran for this build.
pub fn stored_stats(build_dir: &Path) -> Option<DedupStats> {
    let bytes = std::fs::read(stored_path(build_dir)).ok()?;
    serde_json::from_slice::<Stored>(&bytes)
        .ok()
        .map(|s| s.stats)
}

/// Loads the decisions of an earlier run of this build, or decides now.
pub fn load_or_run(
    build_dir: &Path,
    out: &Path,
    inputs: &[PathBuf],
    cfg: &BuildConfig,
) -> Result<DedupFilter> {
    let path = stored_path(build_dir);
    let stored: Stored = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?,
        Err(_) => {
            let _span = tracing::info_span!("dedup").entered();
            let graph = super::graph::graph_dir(build_dir);
            // Submitted to Slurm: signatures and edges came from their job arrays (a partial
            // graph, e.g. from a Slurm attempt abandoned for the local executor, is decided
            // here from the inputs instead).
            let d = if super::graph::complete(&graph, inputs.len(), cfg.dedup.config.partitions) {
                super::graph::decide_from_graph(
                    inputs,
                    &cfg.input.read,
                    &cfg.dedup.config,
                    &graph,
                    &build_dir.join("dedup-spill"),
                )?
            } else {
                decide(
                    inputs,
                    &cfg.input.read,
                    &cfg.dedup.config,
                    &build_dir.join("dedup-spill"),
                )?
            };
            write_tables(
                inputs,
                &cfg.input.read,
                &d.outcome,
                &out.join("dedup-removed.parquet"),
                &out.join("dedup-clusters.parquet"),
                None,
            )?;
            let s = Stored {
                file_docs: d.file_docs,
                removed: d
                    .outcome
                    .decisions
                    .iter()
                    .map(|x| (x.doc, x.stage))
                    .collect(),
                stats: d.outcome.stats,
            };
            let mut json = serde_json::to_vec(&s).expect("serialises");
            json.push(b'\n');
            atomic_write(&path, &json)?;
            // The decisions stand: the graph's records and edges are no longer needed.
            let _ = std::fs::remove_dir_all(super::graph::graph_dir(build_dir));
            s
        }
    };
    if stored.file_docs.len() != inputs.len() {
        return Err(Error::Config(format!(
            "{}: dedup decisions cover {} inputs, the build has {}",
            path.display(),
            stored.file_docs.len(),
            inputs.len()
        )));
    }
    let mut file_starts = Vec::with_capacity(inputs.len());
    let mut acc = 0;
    for n in &stored.file_docs {
        file_starts.push(acc);
        acc += n;
    }
    Ok(DedupFilter {
        file_starts,
        removed: stored.removed.into_iter().collect(),
    })
}
