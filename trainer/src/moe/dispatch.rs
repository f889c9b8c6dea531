//! Moving rows between the tokens' rank and their experts' rank (expert parallelism).
//!
//! With the routed experts spread over a group of `P` ranks (rank `r` owns experts
//! `[r·E/P, (r+1)·E/P)`), each token's chosen experts may live elsewhere. One row travels per
//! (token, chosen expert): the **dispatch** sends each row to its expert's owner, the experts
//! run, and the **combine** sends the results back to the token's rank, where the weighted sum
//! is done. A rank sends its rows grouped by destination, then by expert, then in token order;
//! the owner receives them grouped by source rank, so an expert's rows are in (source rank,
//! token) order — the global token order when the ranks hold consecutive slices of the batch,
//! the same rows in the same order as on one process, hence the same bits.
//!
//! The backward of a dispatch is a combine and the backward of a combine is a dispatch: the
//! gradients travel the same routes in the other direction, with the same plan.
//!
//! Shapes: a row is `d` elements; `rows_by_expert[e]` lists `(token, slot)` pairs, token-major.

use tokenmill_comm::{Collectives, Communicator};

/// Who sends what where, for one layer's routing: built once per forward, reused by the
/// backward.
#[derive(Debug, Clone)]
pub struct DispatchPlan {
    /// Experts per rank.
    per_rank: usize,
    /// Ranks in the group.
    size: usize,
    /// The rows this rank sends, in send order: `(token, slot)`, grouped by destination rank,
    /// then expert, then token.
    send_rows: Vec<(usize, usize)>,
    /// Rows sent to each rank.
    send_counts: Vec<usize>,
    /// Rows received from each source rank for each of this rank's experts: `[src][local]`.
    recv: Vec<Vec<usize>>,
}

/// The experts rank `rank` of `size` owns, out of `n_experts`.
pub fn owned(n_experts: usize, size: usize, rank: usize) -> std::ops::Range<usize> {
    let per = n_experts / size;
    rank * per..(rank + 1) * per
}

impl DispatchPlan {
    /// The plan for `rows_by_expert` (one list per global expert) over `group` (`None`: all
    /// experts on this process). Exchanges the row counts.
    pub fn new(rows_by_expert: &[Vec<(usize, usize)>], group: Option<&dyn Communicator>) -> Self {
        let e = rows_by_expert.len();
        let size = group.map_or(1, |g| g.size());
        assert!(
            e.is_multiple_of(size),
            "{e} experts cannot be split over {size} ranks"
        );
        let per_rank = e / size;
        let send_rows: Vec<(usize, usize)> = rows_by_expert.iter().flatten().copied().collect();
        let send_counts: Vec<usize> = (0..size)
            .map(|q| owned(e, size, q).map(|x| rows_by_expert[x].len()).sum())
            .collect();
        let recv = match group {
            None => vec![rows_by_expert.iter().map(Vec::len).collect()],
            Some(g) => {
                // Each rank tells each owner how many rows it sends to each of its experts.
                let counts: Vec<u64> = rows_by_expert.iter().map(|r| r.len() as u64).collect();
                let got = g
                    .all_to_all_v(&counts, &vec![per_rank; size], &vec![per_rank; size])
                    .expect("expert-parallel count exchange");
                got.chunks(per_rank.max(1))
                    .take(size)
                    .map(|c| c.iter().map(|&n| n as usize).collect())
                    .collect()
            }
        };
        DispatchPlan {
            per_rank,
            size,
            send_rows,
            send_counts,
            recv,
        }
    }

    /// Rows this rank sends (and gets back from the combine), in send order.
    pub fn send_rows(&self) -> &[(usize, usize)] {
        &self.send_rows
    }

    /// Rows of each of this rank's experts (all sources).
    pub fn local_rows(&self) -> Vec<usize> {
        (0..self.per_rank)
            .map(|l| self.recv.iter().map(|s| s[l]).sum())
            .collect()
    }

    fn recv_counts(&self) -> Vec<usize> {
        self.recv.iter().map(|s| s.iter().sum()).collect()
    }

    /// Sends `rows` (`[send_rows.len(), d]` elements of any plain type: values, FP8 codes,
    /// scales; in send order) to the experts' owners; returns
    /// each local expert's input `[rows_l, d]` in (source rank, token) order. `during` runs
    /// while the rows are in flight.
    pub fn dispatch<T: bytemuck::Pod>(
        &self,
        group: Option<&dyn Communicator>,
        rows: Vec<T>,
        d: usize,
        during: &mut dyn FnMut(),
    ) -> Vec<Vec<T>> {
        let received = match group {
            None => {
                during();
                rows
            }
            Some(g) => {
                let sc: Vec<usize> = self.send_counts.iter().map(|c| c * d).collect();
                let rc: Vec<usize> = self.recv_counts().iter().map(|c| c * d).collect();
                g.all_to_all_v_with(&rows, &sc, &rc, during)
                    .expect("expert-parallel dispatch")
            }
        };
        // received: for each source, for each local expert, its rows → regroup by expert.
        let mut per_expert: Vec<Vec<T>> = self
            .local_rows()
            .iter()
            .map(|&n| Vec::with_capacity(n * d))
            .collect();
        let mut at = 0;
        for src in &self.recv {
            for (l, &n) in src.iter().enumerate() {
                per_expert[l].extend_from_slice(&received[at..at + n * d]);
                at += n * d;
            }
        }
        per_expert
    }

    /// The inverse of [`DispatchPlan::dispatch`]: each local expert's output rows (`[rows_l,
    /// d]`, in the order they arrived) go back to their token's rank; returns this rank's rows
    /// `[send_rows.len(), d]` in send order.
    pub fn combine<T: bytemuck::Pod>(
        &self,
        group: Option<&dyn Communicator>,
        per_expert: &[Vec<T>],
        d: usize,
        during: &mut dyn FnMut(),
    ) -> Vec<T> {
        let total: usize = self.local_rows().iter().sum();
        let mut out = Vec::with_capacity(total * d);
        let mut taken = vec![0usize; self.per_rank];
        for src in &self.recv {
            for (l, &n) in src.iter().enumerate() {
                out.extend_from_slice(&per_expert[l][taken[l] * d..(taken[l] + n) * d]);
                taken[l] += n;
            }
        }
        match group {
            None => {
                during();
                out
            }
            Some(g) => {
                let sc: Vec<usize> = self.recv_counts().iter().map(|c| c * d).collect();
                let rc: Vec<usize> = self.send_counts.iter().map(|c| c * d).collect();
                g.all_to_all_v_with(&out, &sc, &rc, during)
                    .expect("expert-parallel combine")
            }
        }
    }

    /// Ranks in the group.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The rank each row goes to, in send order (parallel to [`DispatchPlan::send_rows`]).
    pub fn destinations(&self) -> Vec<usize> {
        self.send_counts
            .iter()
            .enumerate()
            .flat_map(|(q, &n)| std::iter::repeat_n(q, n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_then_combine_is_the_identity_on_one_process() {
        // 4 experts, 5 tokens, K = 2.
        let rows: Vec<Vec<(usize, usize)>> = vec![
            vec![(0, 0), (3, 1)],
            vec![],
            vec![(0, 1), (1, 0), (4, 0)],
            vec![(1, 1), (2, 0), (2, 1), (3, 0), (4, 1)],
        ];
        let plan = DispatchPlan::new(&rows, None);
        let d = 3;
        let data: Vec<f32> = (0..plan.send_rows().len() * d).map(|i| i as f32).collect();
        let per = plan.dispatch(None, data.clone(), d, &mut || {});
        assert_eq!(
            per.iter().map(|v| v.len() / d).collect::<Vec<_>>(),
            [2, 0, 3, 5]
        );
        assert_eq!(per[2][..d], data[2 * d..3 * d]);
        let back = plan.combine(None, &per, d, &mut || {});
        assert_eq!(back, data);
        assert_eq!(owned(8, 4, 3), 6..8);
    }
}
