//! The build's progress bar: input bytes with rate and ETA, documents/s and tokens.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

/// Shared by all tasks of a build; cheap to update from any thread.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    docs: AtomicU64,
    tokens: AtomicU64,
    started: Instant,
}

impl Progress {
    /// A bar over `total_bytes` of input; hidden when `quiet` (or when stderr is not a terminal).
    pub fn new(total_bytes: u64, quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total_bytes)
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, ETA {eta}) {msg}")
                .expect("valid template"),
        );
        Progress {
            bar,
            docs: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Records `bytes` more input consumed and `docs`/`tokens` more written.
    pub fn advance(&self, bytes: u64, docs: u64, tokens: u64) {
        let d = self.docs.fetch_add(docs, Ordering::Relaxed) + docs;
        let t = self.tokens.fetch_add(tokens, Ordering::Relaxed) + tokens;
        self.bar.inc(bytes);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "{d} docs ({:.0}/s), {t} tokens ({:.2} M/s)",
            d as f64 / secs,
            t as f64 / secs / 1e6
        ));
    }

    /// Ends the bar and clears it from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
