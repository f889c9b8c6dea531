//! Typed collectives over any [`Communicator`], and the deterministic reductions.
//!
//! A reduction's result must not depend on message timing: `all_reduce_sum` cuts the buffer
//! into one contiguous chunk per rank ([`chunk_range`]), sends chunk `j` of every rank to rank
//! `j` (all-to-all-v), sums the `size` copies there in rank order (`((x₀ + x₁) + x₂) + …`),
//! and all-gathers the chunks. The same group size gives the same bits, run after run.

use bytemuck::Pod;

use crate::Communicator;
use crate::error::{Error, Result};

/// An element type the reductions can sum.
pub trait Summable: Pod + std::ops::AddAssign {}
impl Summable for f32 {}
impl Summable for f64 {}
impl Summable for u64 {}

/// The part of `0..len` that rank `rank` of `size` owns: contiguous, in rank order, the first
/// `len % size` ranks one element longer.
pub fn chunk_range(len: usize, size: usize, rank: usize) -> std::ops::Range<usize> {
    let (q, r) = (len / size, len % size);
    let start = rank * q + rank.min(r);
    start..start + q + usize::from(rank < r)
}

fn to_bytes<T: Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

fn from_bytes<T: Pod>(b: &[u8]) -> Vec<T> {
    bytemuck::pod_collect_to_vec(b)
}

/// Typed operations, provided for every communicator.
pub trait Collectives: Communicator {
    /// All-to-all-v of elements: `send_counts[j]` elements of `send` go to rank `j`;
    /// `recv_counts[i]` elements come from rank `i`.
    fn all_to_all_v<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv_counts: &[usize],
    ) -> Result<Vec<T>> {
        self.all_to_all_v_with(send, send_counts, recv_counts, &mut || {})
    }

    /// [`Collectives::all_to_all_v`] with `during` run while the exchange is in flight.
    fn all_to_all_v_with<T: Pod>(
        &self,
        send: &[T],
        send_counts: &[usize],
        recv_counts: &[usize],
        during: &mut dyn FnMut(),
    ) -> Result<Vec<T>> {
        let sz = std::mem::size_of::<T>();
        let sc: Vec<usize> = send_counts.iter().map(|c| c * sz).collect();
        let rc: Vec<usize> = recv_counts.iter().map(|c| c * sz).collect();
        let b = self.all_to_all_v_bytes_with(to_bytes(send), &sc, &rc, during)?;
        Ok(from_bytes(&b))
    }

    /// Every rank's `send` concatenated in rank order, with each rank's element count.
    fn all_gather_v<T: Pod>(&self, send: &[T]) -> Result<(Vec<T>, Vec<usize>)> {
        let (b, lens) = self.all_gather_v_bytes(to_bytes(send))?;
        let sz = std::mem::size_of::<T>();
        Ok((from_bytes(&b), lens.into_iter().map(|l| l / sz).collect()))
    }

    /// Every rank's `send` (all the same length) concatenated in rank order.
    fn all_gather<T: Pod>(&self, send: &[T]) -> Result<Vec<T>> {
        let (v, lens) = self.all_gather_v(send)?;
        if lens.iter().any(|&l| l != send.len()) {
            return Err(Error::Usage(format!(
                "all-gather of unequal lengths {lens:?}"
            )));
        }
        Ok(v)
    }

    /// This rank's chunk ([`chunk_range`]) of the element-wise sum of every rank's `send`
    /// (all the same length), summed in rank order.
    fn reduce_scatter_sum<T: Summable>(&self, send: &[T]) -> Result<Vec<T>> {
        let (n, p) = (send.len(), self.size());
        let counts: Vec<usize> = (0..p).map(|j| chunk_range(n, p, j).len()).collect();
        let mine = counts[self.rank()];
        let recv = self.all_to_all_v(send, &counts, &vec![mine; p])?;
        if recv.len() != mine * p {
            return Err(Error::Usage(format!(
                "reduce-scatter: ranks passed different lengths ({} received for {p} × {mine})",
                recv.len()
            )));
        }
        let mut acc = recv[..mine].to_vec();
        for part in recv[mine..].chunks_exact(mine.max(1)).take(p - 1) {
            for (a, &x) in acc.iter_mut().zip(part) {
                *a += x;
            }
        }
        Ok(acc)
    }

    /// The element-wise sum of every rank's `buf` (all the same length), in place, the same
    /// bits on every rank: a [`Collectives::reduce_scatter_sum`] then an all-gather.
    fn all_reduce_sum<T: Summable>(&self, buf: &mut [T]) -> Result<()> {
        if self.size() == 1 {
            return Ok(());
        }
        let mine = self.reduce_scatter_sum(buf)?;
        let (all, _) = self.all_gather_v(&mine)?;
        if all.len() != buf.len() {
            return Err(Error::Usage(format!(
                "all-reduce: {} elements gathered for {}",
                all.len(),
                buf.len()
            )));
        }
        buf.copy_from_slice(&all);
        Ok(())
    }

    /// Root's `buf` on every rank (every rank passes a buffer of the same length).
    fn broadcast<T: Pod>(&self, root: usize, buf: &mut [T]) -> Result<()> {
        let mut b = to_bytes(buf).to_vec();
        self.broadcast_bytes(root, &mut b)?;
        if b.len() != std::mem::size_of_val(buf) {
            return Err(Error::Usage(format!(
                "broadcast: root sent {} bytes for a buffer of {}",
                b.len(),
                std::mem::size_of_val(buf)
            )));
        }
        buf.copy_from_slice(&from_bytes::<T>(&b));
        Ok(())
    }

    /// Sends elements to `dest`.
    fn send<T: Pod>(&self, dest: usize, tag: u16, data: &[T]) -> Result<()> {
        self.send_bytes(dest, tag, to_bytes(data))
    }

    /// Receives elements from `src`.
    fn recv<T: Pod>(&self, src: usize, tag: u16) -> Result<Vec<T>> {
        Ok(from_bytes(&self.recv_bytes(src, tag)?))
    }

    /// Sends to `dest` and receives from `src` at once.
    fn send_recv<T: Pod>(&self, dest: usize, data: &[T], src: usize, tag: u16) -> Result<Vec<T>> {
        Ok(from_bytes(&self.send_recv_bytes(
            dest,
            to_bytes(data),
            src,
            tag,
        )?))
    }
}

impl<C: Communicator + ?Sized> Collectives for C {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_range_in_order() {
        for len in [0, 1, 5, 7, 64] {
            for size in 1..=5 {
                let mut next = 0;
                for r in 0..size {
                    let c = chunk_range(len, size, r);
                    assert_eq!(c.start, next);
                    assert!(c.len() == len / size || c.len() == len / size + 1);
                    next = c.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
