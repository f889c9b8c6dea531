//! Byte-pair merging of one piece: its bytes as single-byte tokens, then the adjacent pair of
//! lowest merge rank merged, the leftmost first among equals, until no pair has a merge — HF
//! `tokenizers`' BPE without dropout.
//!
//! Short pieces (most words) scan for the best pair, which for a dozen symbols beats any
//! structure; long ones (a megabyte without a space) keep a heap of candidate merges over a
//! linked list, `O(n log n)`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// The merges: `(left, right)` → `(rank, merged id)`. Pairs of the most common tokens — the
/// 256 bytes and the results of the 256 lowest-ranked merges — are also in a dense table
/// (2 MiB), looked up without hashing.
#[derive(Debug, Clone, Default)]
pub struct Merges {
    map: FxHashMap<u64, (u32, u32)>,
    /// Token id → its row and column in `dense` (`NONE`: not a dense token).
    slot: Vec<u16>,
    /// `[DENSE × DENSE]`: `(rank, merged id)`, rank `u32::MAX` for no merge.
    dense: Vec<(u32, u32)>,
}

/// Tokens in the dense table.
const DENSE: usize = 512;
const NONE: u16 = u16::MAX;

fn key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// A candidate merge in the heap: (rank, position, left id, right id, merged id), ordered by
/// the lowest rank, then the leftmost position.
type Candidate = (u32, usize, u32, u32, u32);

/// Pieces up to this many symbols are merged by scanning.
const SCAN_MAX: usize = 48;

impl Merges {
    /// Adds the merge of rank `rank`.
    pub fn insert(&mut self, left: u32, right: u32, rank: u32, merged: u32) {
        self.map.entry(key(left, right)).or_insert((rank, merged));
    }

    /// Merges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No merges.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Builds the dense table once every merge is in: `bytes` are the byte tokens.
    pub fn finish(&mut self, bytes: &[u32; 256]) {
        let mut by_rank: Vec<(u32, u32)> = self.map.values().copied().collect();
        by_rank.sort_unstable();
        let mut dense_ids: Vec<u32> = bytes.to_vec();
        for &(_, id) in &by_rank {
            if dense_ids.len() >= DENSE {
                break;
            }
            if !dense_ids.contains(&id) {
                dense_ids.push(id);
            }
        }
        let max = self
            .map
            .iter()
            .flat_map(|(&k, &(_, id))| [(k >> 32) as u32, k as u32, id])
            .chain(bytes.iter().copied())
            .max()
            .unwrap_or(0);
        self.slot = vec![NONE; max as usize + 1];
        for (i, &id) in dense_ids.iter().enumerate() {
            self.slot[id as usize] = i as u16;
        }
        self.dense = vec![(u32::MAX, 0); DENSE * DENSE];
        for (&k, &v) in &self.map {
            let (a, b) = (self.slot[(k >> 32) as usize], self.slot[k as u32 as usize]);
            if a != NONE && b != NONE {
                self.dense[a as usize * DENSE + b as usize] = v;
            }
        }
    }

    #[inline]
    fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        if let (Some(&sa), Some(&sb)) = (self.slot.get(a as usize), self.slot.get(b as usize))
            && sa != NONE
            && sb != NONE
        {
            let v = self.dense[sa as usize * DENSE + sb as usize];
            return (v.0 != u32::MAX).then_some(v);
        }
        self.map.get(&key(a, b)).copied()
    }

    /// Merges `symbols` (a piece's single-byte tokens) in place into its tokens.
    pub fn apply(&self, symbols: &mut Vec<u32>) {
        if symbols.len() <= SCAN_MAX {
            self.scan(symbols);
        } else {
            self.heap(symbols);
        }
    }

    fn scan(&self, s: &mut Vec<u32>) {
        // The rank and result of each adjacent pair (u32::MAX: no merge), looked up once and
        // then only where a merge changed the neighbours.
        let none = (u32::MAX, 0);
        let mut pairs: Vec<(u32, u32)> = s
            .windows(2)
            .map(|w| self.get(w[0], w[1]).unwrap_or(none))
            .collect();
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, &(rank, _)) in pairs.iter().enumerate() {
                if rank < best {
                    best = rank;
                    at = i;
                }
            }
            if best == u32::MAX {
                return;
            }
            s[at] = pairs[at].1;
            s.remove(at + 1);
            pairs.remove(at);
            if at > 0 {
                pairs[at - 1] = self.get(s[at - 1], s[at]).unwrap_or(none);
            }
            if at < pairs.len() {
                pairs[at] = self.get(s[at], s[at + 1]).unwrap_or(none);
            }
        }
    }

    fn heap(&self, s: &mut Vec<u32>) {
        let n = s.len();
        // A doubly linked list over the symbols; a removed symbol has `len` 0.
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut alive = vec![true; n];
        // (rank, position, left id, right id, merged id): the lowest rank, then the leftmost.
        let mut heap: BinaryHeap<Reverse<Candidate>> = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some((rank, id)) = self.get(s[i], s[i + 1]) {
                heap.push(Reverse((rank, i, s[i], s[i + 1], id)));
            }
        }
        while let Some(Reverse((_, i, left, right, id))) = heap.pop() {
            let j = next[i];
            // Stale: the symbols changed since this candidate was pushed.
            if !alive[i] || j >= n || s[i] != left || s[j] != right {
                continue;
            }
            s[i] = id;
            alive[j] = false;
            next[i] = next[j];
            if next[j] < n {
                prev[next[j]] = i;
            }
            let p = prev[i];
            if p < n
                && let Some((rank, nid)) = self.get(s[p], s[i])
            {
                heap.push(Reverse((rank, p, s[p], s[i], nid)));
            }
            let q = next[i];
            if q < n
                && let Some((rank, nid)) = self.get(s[i], s[q])
            {
                heap.push(Reverse((rank, i, s[i], s[q], nid)));
            }
        }
        let mut w = 0;
        for r in 0..n {
            if alive[r] {
                s[w] = s[r];
                w += 1;
            }
        }
        s.truncate(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heap_and_the_scan_merge_alike() {
        // Byte tokens 0..4; merges of random pairs with random ranks, ids from 10.
        let mut rng = 12345u64;
        let mut rand = |m: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % m
        };
        let mut m = Merges::default();
        let mut next_id = 10;
        let mut known: Vec<u32> = (0..4).collect();
        for rank in 0..40 {
            let (a, b) = (
                known[rand(known.len() as u64) as usize],
                known[rand(known.len() as u64) as usize],
            );
            if m.get(a, b).is_none() {
                m.insert(a, b, rank, next_id);
                known.push(next_id);
                next_id += 1;
            }
        }
        let mut dense = m.clone();
        dense.finish(&std::array::from_fn(|i| i as u32));
        for len in [2usize, 5, 30, 100, 1000] {
            for _ in 0..20 {
                let word: Vec<u32> = (0..len).map(|_| rand(4) as u32).collect();
                let (mut a, mut b, mut c) = (word.clone(), word.clone(), word.clone());
                m.scan(&mut a);
                m.heap(&mut b);
                dense.scan(&mut c);
                assert_eq!(a, b, "{word:?}");
                assert_eq!(a, c, "{word:?}: the dense table");
            }
        }
    }
}
