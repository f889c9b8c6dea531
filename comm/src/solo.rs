//! The single-process communicator: every collective is a copy.

use crate::Communicator;
use crate::error::{Error, Result};

/// A group of one process (rank 0 of 1).
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

fn only(rank: usize, what: &str) -> Result<()> {
    if rank == 0 {
        Ok(())
    } else {
        Err(Error::Usage(format!("{what}: rank {rank} in a group of 1")))
    }
}

impl Communicator for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "solo"
    }
    fn split(&self, _color: usize, _key: usize) -> Result<Box<dyn Communicator>> {
        Ok(Box::new(Solo))
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn all_gather_v_bytes(&self, send: &[u8]) -> Result<(Vec<u8>, Vec<usize>)> {
        Ok((send.to_vec(), vec![send.len()]))
    }
    fn all_to_all_counts(&self, send: &[u64]) -> Result<Vec<u64>> {
        if send.len() != 1 {
            return Err(Error::Usage(format!("{} counts for 1 rank", send.len())));
        }
        Ok(send.to_vec())
    }
    fn all_to_all_v_bytes_with(
        &self,
        send: &[u8],
        send_counts: &[usize],
        recv_counts: &[usize],
        during: &mut dyn FnMut(),
    ) -> Result<Vec<u8>> {
        if send_counts != [send.len()] || recv_counts != [send.len()] {
            return Err(Error::Usage(format!(
                "all-to-all-v on 1 rank: {} bytes, send counts {send_counts:?}, receive counts {recv_counts:?}",
                send.len()
            )));
        }
        during();
        Ok(send.to_vec())
    }
    fn broadcast_bytes(&self, root: usize, _buf: &mut Vec<u8>) -> Result<()> {
        only(root, "broadcast root")
    }
    fn send_bytes(&self, dest: usize, _tag: u16, _data: &[u8]) -> Result<()> {
        only(dest, "send")?;
        Err(Error::Usage("send to self in a group of 1".into()))
    }
    fn recv_bytes(&self, src: usize, _tag: u16) -> Result<Vec<u8>> {
        only(src, "receive")?;
        Err(Error::Usage("receive from self in a group of 1".into()))
    }
    fn send_recv_bytes(&self, dest: usize, data: &[u8], src: usize, _tag: u16) -> Result<Vec<u8>> {
        only(dest, "send")?;
        only(src, "receive")?;
        Ok(data.to_vec())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
