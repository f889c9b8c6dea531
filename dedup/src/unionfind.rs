//! Union-find over the documents that appear in candidate pairs only (a hash map), so its memory
//! grows with the number of duplicates, not of documents. The root of a set is its smallest
//! member, which makes the result independent of the order of unions.

use std::collections::HashMap;

/// Disjoint sets of document numbers; a set's root is its smallest member.
#[derive(Debug, Default, Clone)]
pub struct UnionFind {
    parent: HashMap<u64, u64>,
}

impl UnionFind {
    /// The root of `x`'s set (`x` itself when it was never joined), compressing the path.
    pub fn find(&mut self, x: u64) -> u64 {
        let mut root = x;
        while let Some(&p) = self.parent.get(&root) {
            if p == root {
                break;
            }
            root = p;
        }
        // Path compression.
        let mut cur = x;
        while cur != root {
            let next = self.parent.get(&cur).copied().unwrap_or(root);
            self.parent.insert(cur, root);
            cur = next;
        }
        root
    }
    /// Joins the sets of `a` and `b`; the smaller root wins.
    pub fn union(&mut self, a: u64, b: u64) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent.insert(lo, lo);
        self.parent.insert(hi, lo);
    }
    /// Every member seen, with its root.
    pub fn members(&mut self) -> Vec<(u64, u64)> {
        let keys: Vec<u64> = self.parent.keys().copied().collect();
        let mut v: Vec<(u64, u64)> = keys.into_iter().map(|k| (k, self.find(k))).collect();
        v.sort_unstable();
        v
    }
    /// Members seen (documents in some union).
    pub fn len(&self) -> usize {
        self.parent.len()
    }
    /// Whether no union was made.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_the_smallest_member_whatever_the_order() {
        let mut a = UnionFind::default();
        let mut b = UnionFind::default();
        let edges = [(5, 9), (9, 2), (7, 8), (2, 11), (8, 3)];
        for &(x, y) in &edges {
            a.union(x, y);
        }
        for &(x, y) in edges.iter().rev() {
            b.union(y, x);
        }
        assert_eq!(a.members(), b.members());
        assert_eq!(a.find(11), 2);
        assert_eq!(a.find(7), 3);
    }
}
