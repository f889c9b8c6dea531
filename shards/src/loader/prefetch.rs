//! A background thread that prepares batches ahead of the training step, into a bounded queue.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::stream::{Batch, Loader, LoaderState};
use crate::error::Result;

/// Batches from a loader running on its own thread, at most `depth` ahead.
#[derive(Debug)]
pub struct Prefetcher {
    rx: Option<Receiver<Result<(Batch, LoaderState)>>>,
    handle: Option<JoinHandle<Loader>>,
    state: LoaderState,
}

impl Prefetcher {
    /// Moves `loader` to a thread that keeps up to `depth` batches ready.
    pub fn new(mut loader: Loader, depth: usize) -> Self {
        let state = loader.state();
        let (tx, rx): (SyncSender<_>, _) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("tokenmill-prefetch".into())
            .spawn(move || {
                loop {
                    let item = loader.next_batch().map(|b| (b, loader.state()));
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        break;
                    }
                }
                loader
            })
            .expect("spawn prefetch thread");
        Prefetcher {
            rx: Some(rx),
            handle: Some(handle),
            state,
        }
    }

    /// The next batch (blocks until it is ready).
    pub fn next_batch(&mut self) -> Result<Batch> {
        let (b, s) = self
            .rx
            .as_ref()
            .expect("open")
            .recv()
            .expect("prefetch thread alive")?;
        self.state = s;
        Ok(b)
    }

    /// State after the last batch returned: what to checkpoint.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    /// Stops the thread and gives the loader back, positioned after the last batch returned.
    pub fn into_loader(mut self) -> Loader {
        drop(self.rx.take());
        let mut loader = self
            .handle
            .take()
            .expect("joined once")
            .join()
            .expect("prefetch thread panicked");
        loader.resume(self.state);
        loader
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
