//! MPI through rsmpi: `mpirun -np N` or `srun` start the ranks; [`MpiComm::world`] joins them.

use std::sync::Arc;

use mpi::Count;
use mpi::Threading;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::{Color, SimpleCommunicator};
use mpi::traits::{Communicator as _, CommunicatorCollectives, Destination, Root, Source};

use crate::Communicator;
use crate::error::{Error, Result};

/// The process's MPI environment: finalised when the last communicator made from it is dropped
/// (each communicator frees its handle first: `comm` is dropped before `_env`).
struct Env {
    universe: Universe,
}

/// An MPI communicator (the world, or a group split from it).
///
/// MPI is initialised with `MPI_THREAD_MULTIPLE`, so a communicator may be used from any
/// thread; collectives on one communicator must still be called in the same order on every
/// rank (the trainer calls them from one thread at a time).
pub struct MpiComm {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    _env: Arc<Env>,
}

#[allow(unsafe_code)]
// SAFETY: MPI was initialised with MPI_THREAD_MULTIPLE (checked in `world`), under which the
// MPI library may be called from any thread; the handle types are plain integers/pointers that
// rsmpi leaves un-marked only because it cannot know the thread level.
unsafe impl Send for MpiComm {}
#[allow(unsafe_code)]
// SAFETY: as for `Send`: concurrent calls are allowed by MPI_THREAD_MULTIPLE.
unsafe impl Sync for MpiComm {}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

fn count(what: &'static str, v: usize) -> Result<Count> {
    Count::try_from(v).map_err(|_| Error::TooLarge {
        what,
        value: v,
        limit: Count::MAX as usize,
    })
}

fn displs(counts: &[Count]) -> Result<Vec<Count>> {
    let mut out = Vec::with_capacity(counts.len());
    let mut at: usize = 0;
    for &c in counts {
        out.push(count("displacement", at)?);
        at += c as usize;
    }
    Ok(out)
}

/// Whether this process was started by an MPI launcher (Open MPI, MPICH/Hydra, PMIx, Slurm).
pub fn launched() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MPI_LOCALNRANKS",
        "SLURM_STEP_NUM_TASKS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

impl MpiComm {
    /// Initialises MPI and returns the world communicator; call it once per process (MPI
    /// cannot be initialised twice). MPI is finalised when the world and every group split from
    /// it are dropped.
    pub fn world() -> Result<Self> {
        let (universe, level) =
            mpi::initialize_with_threading(Threading::Multiple).ok_or_else(|| {
                Error::Unavailable("MPI is already initialised in this process".into())
            })?;
        if level != Threading::Multiple {
            return Err(Error::Unavailable(format!(
                "this MPI library provides thread level {level:?}, and tokenmill needs MPI_THREAD_MULTIPLE (compute threads may start collectives)"
            )));
        }
        let env = Arc::new(Env { universe });
        let comm = env.universe.world();
        Ok(Self::wrap(comm, env))
    }

    fn wrap(comm: SimpleCommunicator, env: Arc<Env>) -> Self {
        MpiComm {
            rank: comm.rank() as usize,
            size: comm.size() as usize,
            comm,
            _env: env,
        }
    }

    fn check_parts(&self, what: &str, counts: &[usize], total: usize) -> Result<Vec<Count>> {
        if counts.len() != self.size {
            return Err(Error::Usage(format!(
                "{what}: {} counts for {} ranks",
                counts.len(),
                self.size
            )));
        }
        if counts.iter().sum::<usize>() != total {
            return Err(Error::Usage(format!(
                "{what}: counts {counts:?} do not add up to {total} bytes"
            )));
        }
        counts.iter().map(|&c| count("message", c)).collect()
    }

    fn rank_ok(&self, r: usize, what: &str) -> Result<i32> {
        if r < self.size {
            Ok(r as i32)
        } else {
            Err(Error::Usage(format!(
                "{what}: rank {r} in a group of {}",
                self.size
            )))
        }
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn backend(&self) -> &'static str {
        "mpi"
    }
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>> {
        let c = self
            .comm
            .split_by_color_with_key(
                Color::with_value(count("color", color)?),
                count("key", key)?,
            )
            .ok_or_else(|| Error::Usage("split: this rank is in no group".into()))?;
        Ok(Box::new(Self::wrap(c, Arc::clone(&self._env))))
    }
    fn barrier(&self) -> Result<()> {
        self.comm.barrier();
        Ok(())
    }
    fn all_gather_v_bytes(&self, send: &[u8]) -> Result<(Vec<u8>, Vec<usize>)> {
        let mut lens = vec![0u64; self.size];
        self.comm
            .all_gather_into(&(send.len() as u64), &mut lens[..]);
        let counts: Vec<Count> = lens
            .iter()
            .map(|&l| count("message", l as usize))
            .collect::<Result<_>>()?;
        let d = displs(&counts)?;
        let total: usize = lens.iter().map(|&l| l as usize).sum();
        // Real (non-dangling, distinct) addresses even for empty buffers: Open MPI rejects a
        // send buffer equal to the receive buffer, which two empty slices can be.
        let pad = [0u8; 1];
        let send = if send.is_empty() { &pad[..0] } else { send };
        let mut out = vec![0u8; total.max(1)];
        {
            let mut part = PartitionMut::new(&mut out[..total], counts, d);
            self.comm.all_gather_varcount_into(send, &mut part);
        }
        out.truncate(total);
        Ok((out, lens.into_iter().map(|l| l as usize).collect()))
    }
    fn all_to_all_counts(&self, send: &[u64]) -> Result<Vec<u64>> {
        if send.len() != self.size {
            return Err(Error::Usage(format!(
                "all-to-all counts: {} values for {} ranks",
                send.len(),
                self.size
            )));
        }
        let mut out = vec![0u64; self.size];
        self.comm.all_to_all_into(send, &mut out[..]);
        Ok(out)
    }
    fn all_to_all_v_bytes_with(
        &self,
        send: &[u8],
        send_counts: &[usize],
        recv_counts: &[usize],
        during: &mut dyn FnMut(),
    ) -> Result<Vec<u8>> {
        let sc = self.check_parts("all-to-all-v send", send_counts, send.len())?;
        let total: usize = recv_counts.iter().sum();
        let rc = self.check_parts("all-to-all-v receive", recv_counts, total)?;
        let (sd, rd) = (displs(&sc)?, displs(&rc)?);
        // Distinct, real addresses for empty buffers (see `all_gather_v_bytes`).
        let pad = [0u8; 1];
        let send = if send.is_empty() { &pad[..0] } else { send };
        let mut out = vec![0u8; total.max(1)];
        {
            let sp = Partition::new(send, sc, sd);
            let mut rp = PartitionMut::new(&mut out[..total], rc, rd);
            mpi::request::scope(|scope| {
                let req = self
                    .comm
                    .immediate_all_to_all_varcount_into(scope, &sp, &mut rp);
                during();
                req.wait();
            });
        }
        out.truncate(total);
        Ok(out)
    }
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        let root = self
            .comm
            .process_at_rank(self.rank_ok(root, "broadcast root")?);
        let mut len = buf.len() as u64;
        root.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        count("message", buf.len())?;
        root.broadcast_into(&mut buf[..]);
        Ok(())
    }
    fn send_bytes(&self, dest: usize, tag: u16, data: &[u8]) -> Result<()> {
        count("message", data.len())?;
        let p = self.comm.process_at_rank(self.rank_ok(dest, "send")?);
        p.send_with_tag(data, tag as i32);
        Ok(())
    }
    fn recv_bytes(&self, src: usize, tag: u16) -> Result<Vec<u8>> {
        let p = self.comm.process_at_rank(self.rank_ok(src, "receive")?);
        let (v, _) = p.receive_vec_with_tag::<u8>(tag as i32);
        Ok(v)
    }
    fn try_recv_any_bytes(&self) -> Result<Option<(usize, u16, Vec<u8>)>> {
        use mpi::point_to_point::MatchedReceiveVec;
        // A matched probe: the message found is the one received, even with other threads
        // receiving on this communicator.
        let Some(found) = self.comm.any_process().immediate_matched_probe() else {
            return Ok(None);
        };
        let (data, status) = found.matched_receive_vec::<u8>();
        let tag = u16::try_from(status.tag()).map_err(|_| {
            Error::Usage(format!(
                "a message with tag {} outside 0..=65535",
                status.tag()
            ))
        })?;
        Ok(Some((status.source_rank() as usize, tag, data)))
    }
    fn send_recv_bytes(&self, dest: usize, data: &[u8], src: usize, tag: u16) -> Result<Vec<u8>> {
        count("message", data.len())?;
        let d = self.comm.process_at_rank(self.rank_ok(dest, "send")?);
        let s = self.comm.process_at_rank(self.rank_ok(src, "receive")?);
        // The length first, then the payload, both with send-receive (no deadlock in a ring).
        let mut len = 0u64;
        mpi::point_to_point::send_receive_into_with_tags(
            &(data.len() as u64),
            &d,
            tag as i32,
            &mut len,
            &s,
            tag as i32,
        );
        let mut out = vec![0u8; len as usize];
        mpi::point_to_point::send_receive_into_with_tags(
            data,
            &d,
            tag as i32,
            &mut out[..],
            &s,
            tag as i32,
        );
        Ok(out)
    }
    fn abort(&self, code: i32) -> ! {
        self.comm.abort(code)
    }
}
