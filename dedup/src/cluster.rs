//! Star clustering of one candidate group: which documents are kept and which are removed, each
//! against a kept document it was verified against.
//!
//! A candidate group (the documents that exact hashes, URLs and LSH buckets connect) is only a
//! place to look: A ~ B and B ~ C put A and C in one group even when A and C have little in
//! common. So the group's members are taken in keep order ([`crate::KeepRule`]): the first is
//! kept (a *center*); each next one is removed against the first center that
//!
//! 1. has the same normalised text (stage `exact`, Jaccard 1), else
//! 2. has the same normalised URL (stage `url`), else
//! 3. has an exact Jaccard similarity of shingle sets of at least the threshold (stage `fuzzy`),
//!    comparing with the first `max_centers` centers only;
//!
//! and otherwise it becomes a center itself. Every removed document is thus within the threshold
//! of the one recorded as kept for it, and the result depends on the group and the keep order
//! only, not on the order in which pairs were found.

use std::collections::HashMap;

use crate::plan::Stage;

/// One member of a candidate group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// The document.
    pub doc: u64,
    /// Its exact class: the smallest document with the same normalised text (itself if none).
    /// Members of one class share their shingle set, stored under this id.
    pub exact: u64,
    /// Its URL class: the smallest document with the same normalised URL (itself if none).
    pub url: u64,
}

/// A removed member and the center it was verified against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Removal {
    /// The removed document.
    pub doc: u64,
    /// The kept document (a center) it duplicates.
    pub kept: u64,
    /// Why: same text, same URL or near-duplicate.
    pub stage: Stage,
    /// Exact Jaccard similarity with `kept` (1 for exact copies; not computed for URL ones).
    pub jaccard: Option<f64>,
}

/// The outcome for one group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assigned {
    /// Removed members, in keep order.
    pub removals: Vec<Removal>,
    /// Kept members (centers), in keep order.
    pub centers: Vec<u64>,
    /// Exact Jaccard similarities computed.
    pub compared: u64,
}

/// Exact Jaccard similarity of two sorted, unique sets (1 for two empty sets).
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

/// Assigns the members of one group, given in keep order. `sets` maps an exact class to its
/// shingle set; without it (fuzzy dedup off) only exact and URL matches remove documents.
pub fn assign(
    members: &[Member],
    sets: Option<&HashMap<u64, Vec<u64>>>,
    threshold: f64,
    max_centers: usize,
) -> Assigned {
    let mut out = Assigned::default();
    let mut centers: Vec<Member> = Vec::new();
    // Centers by exact and URL class: a class has at most one center (a second member of it is
    // removed against the first).
    let mut by_exact: HashMap<u64, u64> = HashMap::new();
    let mut by_url: HashMap<u64, u64> = HashMap::new();
    let empty: Vec<u64> = Vec::new();
    for m in members {
        let removal = if let Some(&c) = by_exact.get(&m.exact) {
            Some((c, Stage::Exact, Some(1.0)))
        } else if let Some(&c) = by_url.get(&m.url) {
            Some((c, Stage::Url, None))
        } else if let Some(sets) = sets {
            let mine = sets.get(&m.exact).unwrap_or(&empty);
            let mut found = None;
            for c in centers.iter().take(max_centers) {
                let theirs = sets.get(&c.exact).unwrap_or(&empty);
                // |A ∩ B| / |A ∪ B| ≤ min / max: skip pairs whose sizes alone rule them out.
                let (lo, hi) = if mine.len() < theirs.len() {
                    (mine.len(), theirs.len())
                } else {
                    (theirs.len(), mine.len())
                };
                if lo == 0 || (lo as f64 / hi as f64) < threshold {
                    continue;
                }
                out.compared += 1;
                let j = jaccard(mine, theirs);
                if j >= threshold {
                    found = Some((c.doc, Stage::Fuzzy, Some(j)));
                    break;
                }
            }
            found
        } else {
            None
        };
        match removal {
            Some((kept, stage, jaccard)) => out.removals.push(Removal {
                doc: m.doc,
                kept,
                stage,
                jaccard,
            }),
            None => {
                by_exact.insert(m.exact, m.doc);
                by_url.insert(m.url, m.doc);
                centers.push(*m);
                out.centers.push(m.doc);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(doc: u64) -> Member {
        Member {
            doc,
            exact: doc,
            url: doc,
        }
    }

    /// A = {0..100}, B = {10..110}, C = {20..120}: J(A,B) = J(B,C) = 90/110 = 0.818,
    /// J(A,C) = 80/120 = 0.667.
    fn chain() -> HashMap<u64, Vec<u64>> {
        HashMap::from([
            (1, (0..100).collect()),
            (2, (10..110).collect()),
            (3, (20..120).collect()),
        ])
    }

    #[test]
    fn a_chain_keeps_both_ends_and_removes_the_middle_against_the_first() {
        let sets = chain();
        let a = assign(&[member(1), member(2), member(3)], Some(&sets), 0.7, 8);
        assert_eq!(a.centers, vec![1, 3], "A and C are far apart: both kept");
        assert_eq!(a.removals.len(), 1);
        let r = a.removals[0];
        assert_eq!((r.doc, r.kept, r.stage), (2, 1, Stage::Fuzzy));
        assert!((r.jaccard.unwrap() - 90.0 / 110.0).abs() < 1e-12);
        // Keep order C, B, A (say C is the longest): B goes against C, A stays.
        let a = assign(&[member(3), member(2), member(1)], Some(&sets), 0.7, 8);
        assert_eq!(a.centers, vec![3, 1]);
        assert_eq!((a.removals[0].doc, a.removals[0].kept), (2, 3));
    }

    #[test]
    fn exact_and_url_matches_come_first_and_need_no_sets() {
        let ms = [
            member(1),
            Member {
                doc: 2,
                exact: 1,
                url: 2,
            },
            member(3),
            Member {
                doc: 4,
                exact: 4,
                url: 3,
            },
        ];
        let a = assign(&ms, None, 0.7, 8);
        assert_eq!(a.centers, vec![1, 3]);
        let got: Vec<_> = a
            .removals
            .iter()
            .map(|r| (r.doc, r.kept, r.stage, r.jaccard))
            .collect();
        assert_eq!(
            got,
            vec![(2, 1, Stage::Exact, Some(1.0)), (4, 3, Stage::Url, None)]
        );
        assert_eq!(a.compared, 0);
    }

    #[test]
    fn only_the_first_centers_are_compared() {
        // 1 and 2 are disjoint; 3 duplicates 2, the second center.
        let sets = HashMap::from([
            (1, (0..50).collect()),
            (2, (100..150).collect()),
            (3, (100..150).collect()),
        ]);
        let ms = [member(1), member(2), member(3)];
        assert_eq!(assign(&ms, Some(&sets), 0.7, 2).centers, vec![1, 2]);
        assert_eq!(assign(&ms, Some(&sets), 0.7, 1).centers, vec![1, 2, 3]);
    }

    proptest! {
        /// Random groups: every removed member is at or above the threshold with the center
        /// recorded for it (recomputed here), every center stays, each member is either a center
        /// or removed once, and no two centers are within the threshold of each other.
        #[test]
        fn every_removal_is_verified_against_a_kept_center(
            raw in proptest::collection::vec(proptest::collection::btree_set(0u64..40, 1..25), 2..14),
            t in 0.3f64..0.95,
        ) {
            let sets: HashMap<u64, Vec<u64>> =
                raw.iter().enumerate().map(|(i, s)| (i as u64, s.iter().copied().collect())).collect();
            let ms: Vec<Member> = (0..raw.len() as u64).map(member).collect();
            let a = assign(&ms, Some(&sets), t, usize::MAX);
            prop_assert_eq!(a.removals.len() + a.centers.len(), ms.len());
            for r in &a.removals {
                prop_assert!(a.centers.contains(&r.kept));
                let j = jaccard(&sets[&r.doc], &sets[&r.kept]);
                prop_assert!(j >= t, "removed {} against {} at J = {}", r.doc, r.kept, j);
                prop_assert_eq!(r.jaccard, Some(j));
                prop_assert!(r.kept < r.doc, "kept first in keep order");
            }
            for (i, &x) in a.centers.iter().enumerate() {
                for &y in &a.centers[i + 1..] {
                    prop_assert!(jaccard(&sets[&x], &sets[&y]) < t);
                }
            }
        }
    }
}
