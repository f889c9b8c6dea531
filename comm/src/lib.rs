//! Collective communication for training across processes.
//!
//! [`Communicator`] is the seam: the few primitives a backend must provide (all-to-all-v, a
//! variable all-gather, broadcast, point-to-point, splitting into groups), all on bytes.
//! [`Collectives`] builds the typed operations the trainer uses on top of them — all-to-all-v
//! of any plain-old-data type, all-gather, and **deterministic** reductions (a reduce-scatter
//! that sums each chunk in rank order, then an all-gather), so that the same layout gives the
//! same bits on every run, whatever the backend or the network does.
//!
//! Backends:
//! - [`Solo`]: one process (size 1), what a run without a launcher uses;
//! - `MpiComm` (feature `mpi`, on by default): MPI through rsmpi, for `mpirun -np N` and `srun`;
//! - `NcclComm` (feature `nccl`): NCCL through cudarc, loaded at run time, one GPU per rank,
//!   bootstrapped over another communicator (MPI).
//!
//! [`conformance`] checks any backend against gather-based references (random counts with
//! zeros, blocking and overlapped all-to-all-v, group splits, reductions, point-to-point).

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod collectives;
pub mod conformance;
mod error;
pub mod launch;
mod mailbox;
#[cfg(feature = "mpi")]
mod mpi_backend;
#[cfg(feature = "nccl")]
mod nccl_backend;
mod solo;

pub use collectives::{Collectives, Summable, chunk_range};
pub use error::{Error, Result};
pub use mailbox::Mailbox;
#[cfg(feature = "mpi")]
pub use mpi_backend::{MpiComm, launched};
#[cfg(feature = "nccl")]
pub use nccl_backend::{NcclComm, available as nccl_available};
pub use solo::Solo;

/// A group of processes that exchange data. Rank `0..size`; every collective must be called
/// by every rank of the group, in the same order.
///
/// The data primitives move bytes; [`Collectives`] gives them types and adds the reductions.
pub trait Communicator: std::fmt::Debug + Send + Sync {
    /// This process's rank in the group.
    fn rank(&self) -> usize;
    /// Number of processes in the group.
    fn size(&self) -> usize;
    /// The backend's name (`solo`, `mpi`).
    fn backend(&self) -> &'static str;
    /// A new group of the ranks that pass the same `color`, ordered by `key` (ties by rank).
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>>;
    /// Waits until every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Every rank's `send` (lengths may differ), concatenated in rank order, and each rank's
    /// length.
    fn all_gather_v_bytes(&self, send: &[u8]) -> Result<(Vec<u8>, Vec<usize>)>;
    /// `send[j]` goes to rank `j`; returns what each rank sent to this one, in rank order.
    fn all_to_all_counts(&self, send: &[u64]) -> Result<Vec<u64>>;
    /// All-to-all with variable counts: `send` holds one part per destination rank, in rank
    /// order, of `send_counts` bytes; the result holds one part per source rank, in rank
    /// order, of `recv_counts` bytes. `during` runs while the exchange is in flight (compute
    /// to overlap with it).
    fn all_to_all_v_bytes_with(
        &self,
        send: &[u8],
        send_counts: &[usize],
        recv_counts: &[usize],
        during: &mut dyn FnMut(),
    ) -> Result<Vec<u8>>;
    /// Root's `buf` (length included) on every rank.
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()>;
    /// Sends `data` to `dest` (blocking until the buffer may be reused).
    fn send_bytes(&self, dest: usize, tag: u16, data: &[u8]) -> Result<()>;
    /// Receives the next message from `src` with `tag`.
    fn recv_bytes(&self, src: usize, tag: u16) -> Result<Vec<u8>>;
    /// Sends `data` to `dest` and receives from `src` at once (no deadlock when two ranks
    /// exchange with each other).
    fn send_recv_bytes(&self, dest: usize, data: &[u8], src: usize, tag: u16) -> Result<Vec<u8>>;
    /// A message from any rank with any tag, if one has arrived: `(source, tag, payload)`.
    /// Never blocks; what [`Mailbox`] polls. Backends without a probe (NCCL) refuse it.
    fn try_recv_any_bytes(&self) -> Result<Option<(usize, u16, Vec<u8>)>> {
        Err(Error::Usage(format!(
            "the {} backend cannot receive from any rank (no probe)",
            self.backend()
        )))
    }
    /// Ends every process of the job with `code` (a rank that fails must not leave the others
    /// waiting in a collective).
    fn abort(&self, code: i32) -> !;
}
