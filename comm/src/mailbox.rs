//! Point-to-point messages that never deadlock: a receiving thread takes every message as it
//! arrives and files it by (source, tag); the caller picks the one it needs, in any order.
//!
//! A pipeline schedule sends activations one way and gradients the other, to and from the same
//! neighbours, in orders that differ between ranks. With plain blocking sends two ranks that
//! send large messages to each other at once both wait for the other's receive (MPI's
//! rendezvous protocol). Here every rank always has a receive posted — the mailbox's thread —
//! so every send completes, and a receive waits only for its message to have been sent.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytemuck::Pod;

use crate::Communicator;
use crate::error::{Error, Result};

#[derive(Default)]
struct Boxes {
    /// Messages received and not yet taken, by (source, tag), in arrival order.
    waiting: HashMap<(usize, u16), VecDeque<Vec<u8>>>,
    /// Why the receiving thread stopped, if it failed.
    failed: Option<String>,
}

type Shared = Arc<(Mutex<Boxes>, Condvar)>;

/// Point-to-point messages over a communicator of its own (split for it: the mailbox's thread
/// receives every message sent on it). Dropping it stops the thread; every message sent to it
/// must have been taken by then.
pub struct Mailbox {
    comm: Arc<dyn Communicator>,
    shared: Shared,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("rank", &self.comm.rank())
            .field("size", &self.comm.size())
            .finish()
    }
}

impl Mailbox {
    /// Starts receiving on `comm`, which nothing else may receive on.
    pub fn open(comm: Arc<dyn Communicator>) -> Self {
        let shared: Shared = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (comm.size() > 1).then(|| {
            let (comm, shared, stop) = (comm.clone(), shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("tokenmill-mailbox".into())
                .spawn(move || receive_loop(comm.as_ref(), &shared, &stop))
                .expect("spawn the mailbox thread")
        });
        Mailbox {
            comm,
            shared,
            stop,
            thread,
        }
    }

    /// This rank in the mailbox's group.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Sends `data` to `dest` with `tag` (to this rank itself: filed at once).
    pub fn send_bytes(&self, dest: usize, tag: u16, data: Vec<u8>) -> Result<()> {
        if dest == self.comm.rank() {
            let (lock, cv) = &*self.shared;
            let mut b = lock.lock().expect("mailbox lock");
            b.waiting.entry((dest, tag)).or_default().push_back(data);
            cv.notify_all();
            return Ok(());
        }
        self.comm.send_bytes(dest, tag, &data)
    }

    /// The oldest message from `src` with `tag`, waiting for it to arrive.
    pub fn recv_bytes(&self, src: usize, tag: u16) -> Result<Vec<u8>> {
        let (lock, cv) = &*self.shared;
        let mut b = lock.lock().expect("mailbox lock");
        loop {
            if let Some(m) = b.waiting.get_mut(&(src, tag)).and_then(VecDeque::pop_front) {
                return Ok(m);
            }
            if let Some(e) = &b.failed {
                return Err(Error::Unavailable(format!(
                    "waiting for a message from rank {src} (tag {tag}): {e}"
                )));
            }
            b = cv.wait(b).expect("mailbox lock");
        }
    }

    /// [`Mailbox::send_bytes`] of plain data.
    pub fn send<T: Pod>(&self, dest: usize, tag: u16, data: &[T]) -> Result<()> {
        self.send_bytes(dest, tag, bytemuck::cast_slice(data).to_vec())
    }

    /// [`Mailbox::recv_bytes`] of plain data.
    pub fn recv<T: Pod>(&self, src: usize, tag: u16) -> Result<Vec<T>> {
        Ok(bytemuck::pod_collect_to_vec(&self.recv_bytes(src, tag)?))
    }

    /// Messages received and not taken (0 when every send was matched by a receive).
    pub fn pending(&self) -> usize {
        let b = self.shared.0.lock().expect("mailbox lock");
        b.waiting.values().map(VecDeque::len).sum()
    }
}

fn receive_loop(comm: &dyn Communicator, shared: &Shared, stop: &AtomicBool) {
    let (lock, cv) = &**shared;
    // Polled: a blocking receive could not be stopped. The pause after an empty poll keeps the
    // thread off the cores the ranks compute on.
    while !stop.load(Ordering::Acquire) {
        match comm.try_recv_any_bytes() {
            Ok(Some((src, tag, data))) => {
                let mut b = lock.lock().expect("mailbox lock");
                b.waiting.entry((src, tag)).or_default().push_back(data);
                cv.notify_all();
            }
            Ok(None) => std::thread::sleep(Duration::from_micros(50)),
            Err(e) => {
                lock.lock().expect("mailbox lock").failed = Some(e.to_string());
                cv.notify_all();
                return;
            }
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
