//! Build statistics: the funnel (read = written + skipped by reason), bytes, tokens, time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokenmill_ingest::ReadStats;

/// What one task (one input file) did. Deterministic: no timings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStats {
    /// What the reader saw.
    pub read: ReadStats,
    /// Documents dropped after reading, by reason (e.g. `empty_text`).
    pub dropped: BTreeMap<String, u64>,
    /// Documents tokenized and written to the task's shards.
    pub documents_written: u64,
    /// Tokens written to the task's shards (EOS included when appended).
    pub tokens: u64,
    /// UTF-8 bytes of the text that was tokenized.
    pub text_bytes: u64,
    /// Documents and bytes into and out of each stage (extraction, filters).
    #[serde(default)]
    pub funnel: crate::stages::Funnel,
}

impl TaskStats {
    /// Adds another task's counts to these (reader skip samples up to the log's limit).
    pub fn merge(&mut self, o: &TaskStats) {
        self.read.merge(&o.read);
        self.funnel.merge(&o.funnel);
        for (k, v) in &o.dropped {
            *self.dropped.entry(k.clone()).or_default() += v;
        }
        self.documents_written += o.documents_written;
        self.tokens += o.tokens;
        self.text_bytes += o.text_bytes;
    }
    /// Skipped documents by reason, reader skips and later drops together.
    pub fn skipped_by_reason(&self) -> BTreeMap<String, u64> {
        let mut m: BTreeMap<String, u64> = self
            .read
            .skipped
            .by_reason
            .iter()
            .map(|(r, n)| (r.name().to_string(), *n))
            .collect();
        for (k, v) in &self.dropped {
            *m.entry(k.clone()).or_default() += v;
        }
        m
    }
    /// Documents read.
    pub fn documents_read(&self) -> u64 {
        self.read.read()
    }
    /// True when read = written + skipped.
    pub fn reconciles(&self) -> bool {
        self.documents_read()
            == self.documents_written + self.skipped_by_reason().values().sum::<u64>()
    }
}

/// `stats.json` of a build.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BuildStats {
    /// Input files (one task each).
    pub inputs: u64,
    /// Total size of the input files in bytes.
    pub input_bytes: u64,
    /// Tasks finished by an earlier run of this build and kept, not redone.
    pub tasks_resumed: u64,
    /// Documents read from the inputs, before any stage (`documents_written` plus everything
    /// in `documents_skipped`); resumed tasks included, as in all the counts below.
    pub documents_read: u64,
    /// Documents tokenized and written to the shards.
    pub documents_written: u64,
    /// Documents not written, by reason: the reader's skips and every later drop (dedup,
    /// extraction, filters, SQL condition).
    pub documents_skipped: BTreeMap<String, u64>,
    /// Input records that are not documents (e.g. WARC `request` or `warcinfo`), by kind.
    pub records_ignored: BTreeMap<String, u64>,
    /// UTF-8 bytes of the text that was tokenized.
    pub text_bytes: u64,
    /// Tokens written (EOS included when appended).
    pub tokens: u64,
    /// Shards in the manifest.
    pub shards: u64,
    /// Worker threads of this run.
    pub threads: usize,
    /// Wall-clock seconds of this run (not of earlier, resumed runs).
    pub seconds: f64,
    /// The text this run tokenized (tasks resumed from an earlier run left out), in MB (10⁶
    /// bytes) per second of `seconds`.
    pub text_mb_per_s: f64,
    /// `text_mb_per_s` divided by `threads`.
    pub text_mb_per_s_per_core: f64,
    /// Peak resident memory of the process in bytes (Linux `VmHWM`), where known.
    pub peak_rss_bytes: Option<u64>,
    /// The first skipped records in full (file, record, offset, reason).
    pub skip_samples: Vec<tokenmill_ingest::Skip>,
    /// The dedup stage, when enabled (its removals are in `documents_skipped` as
    /// `dedup_exact` / `dedup_url` / `dedup_fuzzy`).
    pub dedup: Option<tokenmill_dedup::DedupStats>,
    /// Documents and bytes into and out of each stage after reading (extraction, filters);
    /// what each dropped is in `excluded/*.parquet`.
    #[serde(default)]
    pub funnel: crate::stages::Funnel,
}

impl BuildStats {
    /// Human summary table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| s.push_str(&format!("  {k:<28} {v:>16}\n"));
        row("input files", self.inputs.to_string());
        row("input bytes", self.input_bytes.to_string());
        row(
            "tasks resumed (already done)",
            self.tasks_resumed.to_string(),
        );
        row("documents read", self.documents_read.to_string());
        row("documents written", self.documents_written.to_string());
        for (k, v) in &self.documents_skipped {
            row(&format!("  skipped: {k}"), v.to_string());
        }
        for (k, v) in &self.records_ignored {
            row(&format!("  non-document: {k}"), v.to_string());
        }
        if let Some(d) = &self.dedup {
            row("dedup clusters", d.clusters.to_string());
            row("dedup candidate pairs", d.candidate_pairs.to_string());
            row("dedup spilled bytes", d.spilled_bytes.to_string());
        }
        row("text bytes tokenized", self.text_bytes.to_string());
        row("tokens", self.tokens.to_string());
        row("shards", self.shards.to_string());
        row("threads", self.threads.to_string());
        row("seconds", format!("{:.2}", self.seconds));
        row("text MB/s", format!("{:.2}", self.text_mb_per_s));
        row(
            "text MB/s per core",
            format!("{:.2}", self.text_mb_per_s_per_core),
        );
        if let Some(p) = self.peak_rss_bytes {
            row(
                "peak RSS MiB",
                format!("{:.1}", p as f64 / (1 << 20) as f64),
            );
        }
        if !self.funnel.rows.is_empty() {
            s.push_str("  funnel (after reading):\n");
            s.push_str(&self.funnel.table());
        }
        s
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Current resident set size of this process (Linux `VmRSS`), if known.
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
