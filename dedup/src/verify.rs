//! Deciding candidate groups: the shingle sets their members need are fetched once (through the
//! caller's [`ShingleSource`], e.g. by re-reading the inputs), partitioned by group in a
//! [`SetSpill`], and the groups are assigned ([`crate::cluster::assign`]) one partition at a time,
//! the groups of a partition in parallel.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rayon::prelude::*;

use crate::cluster::{Assigned, Member, assign};
use crate::config::DedupConfig;
use crate::error::{Error, Result};
use crate::plan::{Decision, DedupStats, Stage};
use crate::setspill::SetSpill;

/// Receives the shingle set (sorted, unique) of a document: `sink(doc, set)`.
pub type ShingleSink<'a> = dyn FnMut(u64, Vec<u64>) -> Result<()> + 'a;

/// Supplies the shingle sets of documents, e.g. by re-reading them: called with document numbers
/// (ascending), it passes the set of each of them to the sink, in any order.
pub type ShingleSource<'a> = dyn FnMut(&[u64], &mut ShingleSink<'_>) -> Result<()> + 'a;

/// The decisions over all candidate groups.
#[derive(Debug, Default)]
pub(crate) struct Decided {
    /// Removed documents, ascending.
    pub decisions: Vec<Decision>,
    /// Size of every cluster (a kept document and those removed against it), by cluster id.
    pub clusters: BTreeMap<u64, u64>,
}

/// The shingle sets of one group, by exact class.
type Sets = HashMap<u64, Vec<u64>>;

/// Whether a group needs shingle sets: fuzzy dedup is on and it holds two different texts.
fn needs_sets(cfg: &DedupConfig, members: &[Member]) -> bool {
    cfg.fuzzy && members.iter().any(|m| m.exact != members[0].exact)
}

/// Decides every group (members in keep order, groups ascending by smallest member), spilling
/// shingle sets under `dir`. Adds its counts to `stats`.
pub(crate) fn decide_groups(
    cfg: &DedupConfig,
    groups: &[Vec<Member>],
    dir: &Path,
    shingles: &mut ShingleSource<'_>,
    stats: &mut DedupStats,
) -> Result<Decided> {
    // One set per exact class of the groups that need them: (document, group), by document.
    let mut wanted: Vec<(u64, u64)> = Vec::new();
    for (g, members) in groups.iter().enumerate() {
        if needs_sets(cfg, members) {
            let mut classes: Vec<u64> = members.iter().map(|m| m.exact).collect();
            classes.sort_unstable();
            classes.dedup();
            wanted.extend(classes.into_iter().map(|d| (d, g as u64)));
        }
    }
    wanted.sort_unstable();
    let mut spill = SetSpill::new(&dir.join("sets"), cfg.partitions, cfg.memory_budget_bytes)?;
    if !wanted.is_empty() {
        let docs: Vec<u64> = wanted.iter().map(|w| w.0).collect();
        let mut got = vec![false; wanted.len()];
        let mut sink = |doc: u64, set: Vec<u64>| -> Result<()> {
            let Ok(i) = docs.binary_search(&doc) else {
                return Ok(()); // not asked for
            };
            if !std::mem::replace(&mut got[i], true) {
                spill.push(wanted[i].1, doc, set)?;
            }
            Ok(())
        };
        shingles(&docs, &mut sink)?;
        if let Some(i) = got.iter().position(|g| !g) {
            return Err(Error::MissingShingles { doc: docs[i] });
        }
        stats.shingled_documents += docs.len() as u64;
    }

    let mut out = Decided::default();
    let partitions = cfg.partitions;
    for p in 0..partitions {
        let mut sets: HashMap<u64, Sets> = HashMap::new();
        for (g, doc, set) in spill.take_partition(p)? {
            sets.entry(g).or_default().insert(doc, set);
        }
        let todo: Vec<(usize, Option<Sets>)> = (p..groups.len())
            .step_by(partitions)
            .map(|g| (g, sets.remove(&(g as u64))))
            .collect();
        let assigned: Vec<(usize, Assigned)> = todo
            .into_par_iter()
            .map(|(g, s)| {
                let a = assign(&groups[g], s.as_ref(), cfg.threshold, cfg.max_centers);
                (g, a)
            })
            .collect();
        for (_, a) in assigned {
            record(&a, &mut out, stats);
        }
    }
    stats.spilled_bytes += spill.spilled_bytes();
    out.decisions.sort_unstable_by_key(|d| d.doc);
    Ok(out)
}

/// Adds one group's removals as decisions: a cluster is a kept document and the documents
/// removed against it, named by its smallest document.
fn record(a: &Assigned, out: &mut Decided, stats: &mut DedupStats) {
    stats.components += 1;
    stats.compared += a.compared;
    stats.verified_rejected += a.centers.len().saturating_sub(1) as u64;
    let mut stars: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for r in &a.removals {
        let s = stars.entry(r.kept).or_insert((r.kept, 1));
        s.0 = s.0.min(r.doc);
        s.1 += 1;
    }
    for r in &a.removals {
        match r.stage {
            Stage::Exact => stats.exact_removed += 1,
            Stage::Url => stats.url_removed += 1,
            Stage::Fuzzy => stats.fuzzy_removed += 1,
        }
        out.decisions.push(Decision {
            doc: r.doc,
            stage: r.stage,
            cluster: stars[&r.kept].0,
            kept: r.kept,
            jaccard: r.jaccard,
        });
    }
    for (id, size) in stars.into_values() {
        out.clusters.insert(id, size);
    }
}
