//! NCCL through cudarc (loaded at run time, so it builds without CUDA): for ranks that each
//! drive one GPU. The NCCL unique id is made by rank 0 and shared over a bootstrap
//! communicator (MPI), which also carries the small control messages (lengths, counts).
//!
//! The [`Communicator`] seam moves host bytes: each operation copies to the device, runs the
//! NCCL collective (all-to-all-v as grouped sends and receives, NCCL having none), and copies
//! back. A device-resident path comes with the CUDA backend; this one lets the conformance
//! checks run on GPUs unchanged. Paired exchanges (`send_recv_bytes`) go over NCCL; messages
//! by tag that a receiver takes from any source (`send_bytes`, `recv_bytes`,
//! `try_recv_any_bytes`: the pipeline's mailbox) go over the bootstrap, NCCL having no probe.

use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use cudarc::nccl::{Comm, Id};

use crate::Communicator;
use crate::error::{Error, Result};

/// Whether the CUDA driver and NCCL libraries can be loaded (cudarc panics when a library it
/// needs is missing, so this is asked first).
pub fn available() -> Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `is_culib_present` only tries to open the shared libraries by name with
    // libloading; no symbol is resolved or called.
    let (cuda, nccl) = unsafe {
        (
            cudarc::driver::sys::is_culib_present(),
            cudarc::nccl::sys::is_culib_present(),
        )
    };
    match (cuda, nccl) {
        (true, true) => Ok(()),
        (false, _) => Err(Error::Unavailable(
            "NCCL backend: no CUDA driver library (libcuda.so) on this machine".into(),
        )),
        (_, false) => Err(Error::Unavailable(
            "NCCL backend: no NCCL library (libnccl.so) on this machine: the NCCL wheels \
             (nvidia-nccl-cu*) ship only libnccl.so.2, which is not looked for — link it as \
             libnccl.so in a directory on LD_LIBRARY_PATH (tests/device/check.sh does)"
                .into(),
        )),
    }
}

/// The NCCL communicator, owned behind a lock (NCCL calls on one communicator must not run
/// concurrently).
struct Owned(Comm);

#[allow(unsafe_code)]
// SAFETY: a NCCL communicator may be used from any thread as long as calls do not overlap;
// every use goes through the `Mutex` in `NcclComm`.
unsafe impl Send for Owned {}

/// A NCCL group over the ranks of a bootstrap communicator, one CUDA device per rank.
pub struct NcclComm {
    comm: Mutex<Owned>,
    stream: Arc<CudaStream>,
    device: usize,
    boot: Box<dyn Communicator>,
}

impl std::fmt::Debug for NcclComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclComm")
            .field("rank", &self.boot.rank())
            .field("size", &self.boot.size())
            .field("device", &self.device)
            .finish()
    }
}

fn cuda(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::Backend {
        backend: "cuda",
        op,
        message: e.to_string(),
    }
}

fn nccl(op: &'static str) -> impl Fn(cudarc::nccl::result::NcclError) -> Error {
    move |e| Error::Backend {
        backend: "nccl",
        op,
        message: format!("{:?}", e.0),
    }
}

impl NcclComm {
    /// NCCL over the ranks of `boot`, this rank on CUDA device `device`. Every rank of `boot`
    /// calls it.
    pub fn new(boot: Box<dyn Communicator>, device: usize) -> Result<Self> {
        available()?;
        let ctx = CudaContext::new(device).map_err(cuda("open the device"))?;
        let stream = ctx.default_stream();
        let mut id = vec![0u8; 128];
        if boot.rank() == 0 {
            let made = Id::new().map_err(nccl("make the unique id"))?;
            id = made.internal().iter().map(|&c| c as u8).collect();
        }
        boot.broadcast_bytes(0, &mut id)?;
        let mut raw = [0 as std::ffi::c_char; 128];
        for (r, &b) in raw.iter_mut().zip(&id) {
            *r = b as std::ffi::c_char;
        }
        let comm = Comm::from_rank(stream.clone(), boot.rank(), boot.size(), Id::uninit(raw))
            .map_err(nccl("create the communicator"))?;
        tracing::info!(
            rank = boot.rank(),
            size = boot.size(),
            device,
            "NCCL communicator ready"
        );
        Ok(NcclComm {
            comm: Mutex::new(Owned(comm)),
            stream,
            device,
            boot,
        })
    }

    fn to_device(&self, bytes: &[u8]) -> Result<CudaSlice<u8>> {
        // A real allocation for empty buffers too.
        let padded;
        let src = if bytes.is_empty() {
            padded = [0u8; 1];
            &padded[..]
        } else {
            bytes
        };
        self.stream
            .clone_htod(src)
            .map_err(cuda("copy to the device"))
    }

    fn to_host(&self, d: &CudaSlice<u8>, len: usize) -> Result<Vec<u8>> {
        let mut v = self
            .stream
            .clone_dtoh(d)
            .map_err(cuda("copy to the host"))?;
        // Into a large `Vec`, which is managed memory under `device = "cuda-managed"`, the
        // copy is asynchronous: the bytes are there once the stream is done.
        self.stream
            .synchronize()
            .map_err(cuda("copy to the host"))?;
        v.truncate(len);
        Ok(v)
    }

    fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda("synchronize"))
    }

    fn peer(&self, r: usize, what: &str) -> Result<i32> {
        if r < self.size() {
            Ok(r as i32)
        } else {
            Err(Error::Usage(format!(
                "{what}: rank {r} in a group of {}",
                self.size()
            )))
        }
    }
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.boot.rank()
    }
    fn size(&self) -> usize {
        self.boot.size()
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Communicator>> {
        let sub = self.boot.split(color, key)?;
        Ok(Box::new(NcclComm::new(sub, self.device)?))
    }
    fn barrier(&self) -> Result<()> {
        self.boot.barrier()
    }
    fn all_gather_v_bytes(&self, send: &[u8]) -> Result<(Vec<u8>, Vec<usize>)> {
        let (lens, _) = self
            .boot
            .all_gather_v_bytes(&(send.len() as u64).to_le_bytes())?;
        let lens: Vec<usize> = lens
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
            .collect();
        let most = lens.iter().copied().max().unwrap_or(0).max(1);
        let mut padded = send.to_vec();
        padded.resize(most, 0);
        let src = self.to_device(&padded)?;
        let mut dst = self
            .stream
            .alloc_zeros::<u8>(most * self.size())
            .map_err(cuda("allocate"))?;
        {
            let c = self.comm.lock().expect("nccl lock");
            c.0.all_gather(&src, &mut dst).map_err(nccl("all-gather"))?;
        }
        self.sync()?;
        let all = self.to_host(&dst, most * self.size())?;
        let mut out = Vec::with_capacity(lens.iter().sum());
        for (r, &l) in lens.iter().enumerate() {
            out.extend_from_slice(&all[r * most..r * most + l]);
        }
        Ok((out, lens))
    }
    fn all_to_all_counts(&self, send: &[u64]) -> Result<Vec<u64>> {
        self.boot.all_to_all_counts(send)
    }
    fn all_to_all_v_bytes_with(
        &self,
        send: &[u8],
        send_counts: &[usize],
        recv_counts: &[usize],
        during: &mut dyn FnMut(),
    ) -> Result<Vec<u8>> {
        let p = self.size();
        if send_counts.len() != p || recv_counts.len() != p {
            return Err(Error::Usage(format!(
                "all-to-all-v: {} send and {} receive counts for {p} ranks",
                send_counts.len(),
                recv_counts.len()
            )));
        }
        if send_counts.iter().sum::<usize>() != send.len() {
            return Err(Error::Usage(format!(
                "all-to-all-v: send counts {send_counts:?} do not add up to {} bytes",
                send.len()
            )));
        }
        let src = self.to_device(send)?;
        let mut parts: Vec<CudaSlice<u8>> = recv_counts
            .iter()
            .map(|&n| self.stream.alloc_zeros::<u8>(n.max(1)))
            .collect::<std::result::Result<_, _>>()
            .map_err(cuda("allocate"))?;
        {
            let c = self.comm.lock().expect("nccl lock");
            let mut g = c.0.group();
            let mut at = 0;
            for (q, part) in parts.iter_mut().enumerate() {
                let (n, m) = (send_counts[q], recv_counts[q]);
                if n > 0 {
                    g.send(src.slice(at..at + n), q as i32)
                        .map_err(nccl("send"))?;
                }
                at += n;
                if m > 0 {
                    g.recv(part.slice_mut(0..m), q as i32)
                        .map_err(nccl("receive"))?;
                }
            }
            // Dropping the group launches the transfers on the stream.
        }
        during();
        self.sync()?;
        let mut out = Vec::with_capacity(recv_counts.iter().sum());
        for (part, &m) in parts.iter().zip(recv_counts) {
            out.extend(self.to_host(part, m)?);
        }
        Ok(out)
    }
    fn broadcast_bytes(&self, root: usize, buf: &mut Vec<u8>) -> Result<()> {
        let root_i = self.peer(root, "broadcast root")?;
        let mut len = (buf.len() as u64).to_le_bytes().to_vec();
        self.boot.broadcast_bytes(root, &mut len)?;
        let n = u64::from_le_bytes(len[..8].try_into().expect("8 bytes")) as usize;
        buf.resize(n, 0);
        let mut d = self.to_device(buf)?;
        {
            let c = self.comm.lock().expect("nccl lock");
            c.0.broadcast_in_place(&mut d, root_i)
                .map_err(nccl("broadcast"))?;
        }
        self.sync()?;
        *buf = self.to_host(&d, n)?;
        Ok(())
    }
    /// Over the bootstrap communicator (MPI), as [`NcclComm::recv_bytes`] and
    /// [`NcclComm::try_recv_any_bytes`]: messages by tag from a source that a receiver may not
    /// know (the pipeline's mailbox polls for any) need a probe, which NCCL lacks — a NCCL
    /// receive names its source and size beforehand, and a NCCL send waits for its receive,
    /// which two pipeline ranks sending to each other would deadlock on.
    fn send_bytes(&self, dest: usize, tag: u16, data: &[u8]) -> Result<()> {
        self.peer(dest, "send")?;
        self.boot.send_bytes(dest, tag, data)
    }
    fn recv_bytes(&self, src: usize, tag: u16) -> Result<Vec<u8>> {
        self.peer(src, "receive")?;
        self.boot.recv_bytes(src, tag)
    }
    fn try_recv_any_bytes(&self) -> Result<Option<(usize, u16, Vec<u8>)>> {
        self.boot.try_recv_any_bytes()
    }
    fn send_recv_bytes(&self, dest: usize, data: &[u8], src: usize, _tag: u16) -> Result<Vec<u8>> {
        let (to, from) = (self.peer(dest, "send")?, self.peer(src, "receive")?);
        // Lengths first, then the payloads, each pair in one group (no deadlock in a ring).
        let len_out = self.to_device(&(data.len() as u64).to_le_bytes())?;
        let mut len_in = self.stream.alloc_zeros::<u8>(8).map_err(cuda("allocate"))?;
        {
            let c = self.comm.lock().expect("nccl lock");
            let mut g = c.0.group();
            g.send(len_out.slice(0..8), to).map_err(nccl("send"))?;
            g.recv(len_in.slice_mut(0..8), from)
                .map_err(nccl("receive"))?;
        }
        self.sync()?;
        let n = u64::from_le_bytes(self.to_host(&len_in, 8)?[..8].try_into().expect("8 bytes"))
            as usize;
        let out = self.to_device(data)?;
        let mut inp = self
            .stream
            .alloc_zeros::<u8>(n.max(1))
            .map_err(cuda("allocate"))?;
        {
            let c = self.comm.lock().expect("nccl lock");
            let mut g = c.0.group();
            if !data.is_empty() {
                g.send(out.slice(0..data.len()), to).map_err(nccl("send"))?;
            }
            if n > 0 {
                g.recv(inp.slice_mut(0..n), from).map_err(nccl("receive"))?;
            }
        }
        self.sync()?;
        self.to_host(&inp, n)
    }
    fn abort(&self, code: i32) -> ! {
        self.boot.abort(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without CUDA the backend says which library is missing; with one, NCCL
    /// over a single rank passes the conformance checks.
    #[test]
    fn missing_libraries_are_named_and_a_gpu_conforms() {
        match available() {
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains("libcuda") || m.contains("libnccl"), "{m}");
                let err = NcclComm::new(Box::new(crate::Solo), 0).unwrap_err();
                assert_eq!(err.to_string(), m);
            }
            Ok(()) => {
                let c = NcclComm::new(Box::new(crate::Solo), 0).unwrap();
                for (name, r) in crate::conformance::run(&c, 3).unwrap() {
                    assert!(r.is_ok(), "{name}: {r:?}");
                }
            }
        }
    }
}
