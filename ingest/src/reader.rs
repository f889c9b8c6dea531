//! `DocumentReader`: any input file as a stream of document `RecordBatch`es.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::schema::{DocBatchBuilder, Document};
use crate::skip::{OnError, Skip, SkipLog};

/// Input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// WARC, WET or WAT, plain or gzip (per record or whole file).
    Warc,
    /// JSON lines, plain, `.gz` or `.zst`.
    Jsonl,
    /// Apache Parquet.
    Parquet,
    /// Plain UTF-8 text, plain, `.gz` or `.zst`.
    Text,
}

impl Format {
    /// Guesses the format from the file name.
    pub fn detect(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let base = name
            .strip_suffix(".gz")
            .or_else(|| name.strip_suffix(".zst"))
            .unwrap_or(&name);
        let ext = base.rsplit('.').next()?;
        Some(match ext {
            "warc" | "wet" | "wat" | "arc" => Format::Warc,
            "jsonl" | "json" | "ndjson" => Format::Jsonl,
            "parquet" => Format::Parquet,
            "txt" | "text" | "md" => Format::Text,
            _ => return None,
        })
    }
}

/// How plain text files are split into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextMode {
    /// The whole file is one document (id = the file name).
    #[default]
    File,
    /// Each block of lines separated by blank lines is a document (id = `<file>:<line>`).
    Blocks,
}

/// Field names of JSON line records. Dotted names (`metadata.url`) look into nested objects;
/// where a list is given, the first field present wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JsonlFields {
    /// The document text (required: a record without it is skipped).
    pub text: String,
    /// The document id (`<file>:<line>` when none is present).
    pub id: Vec<String>,
    /// The page URL.
    pub url: Vec<String>,
    /// The crawl or creation date.
    pub date: Vec<String>,
    /// The language.
    pub lang: Vec<String>,
}

impl Default for JsonlFields {
    fn default() -> Self {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        JsonlFields {
            text: "text".into(),
            id: v(&["id"]),
            url: v(&[
                "url",
                "metadata.url",
                "metadata.warc_url",
                "metadata.WARC-Target-URI",
            ]),
            date: v(&["date", "created", "timestamp", "metadata.date_download"]),
            lang: v(&["lang", "language", "metadata.language"]),
        }
    }
}

/// Column names of Parquet inputs. `text` is required; the others are used when present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParquetColumns {
    /// The document text.
    pub text: String,
    /// The document id (`<file>:<row>` when absent).
    pub id: Option<String>,
    /// The page URL.
    pub url: Option<String>,
    /// The crawl or creation date.
    pub date: Option<String>,
    /// The language.
    pub lang: Option<String>,
}

impl Default for ParquetColumns {
    fn default() -> Self {
        ParquetColumns {
            text: "text".into(),
            id: Some("id".into()),
            url: Some("url".into()),
            date: Some("date".into()),
            lang: Some("lang".into()),
        }
    }
}

/// Settings of all readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReadConfig {
    /// What a bad record does: a counted skip, or an error.
    pub on_error: OnError,
    /// Force a format instead of guessing it from the file name.
    pub format: Option<Format>,
    /// Documents per record batch.
    pub batch_rows: usize,
    /// Text bytes per record batch.
    pub batch_bytes: usize,
    /// Largest record (decompressed WARC record, JSON line) accepted; larger ones are skipped.
    pub max_record_bytes: usize,
    /// Largest remote plain WARC or Parquet object read (they are fetched into memory; remote
    /// JSONL, text and gzip WARC stream); a larger one is an error naming it.
    pub remote_max_bytes: u64,
    /// Bytes a remote gzip WARC's read window holds ahead of the member being decoded (grown
    /// for a larger member, up to twice `max_record_bytes` more).
    #[serde(skip_serializing_if = "is_default_window")]
    pub remote_window_bytes: usize,
    /// Field names of JSON line records.
    pub jsonl: JsonlFields,
    /// Column names of Parquet inputs.
    pub parquet: ParquetColumns,
    /// How plain text files are split into documents.
    pub text_mode: TextMode,
    /// Conversation records (`[input.chat]`): JSONL lines and Parquet rows are read as
    /// conversations ([`crate::chat`]) instead of texts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<crate::chat::ChatFields>,
}

/// Default [`ReadConfig::remote_window_bytes`]: 8 MiB.
pub const DEFAULT_WINDOW_BYTES: usize = 8 << 20;

fn is_default_window(n: &usize) -> bool {
    *n == DEFAULT_WINDOW_BYTES
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            on_error: OnError::Skip,
            format: None,
            batch_rows: 1024,
            batch_bytes: 32 << 20,
            max_record_bytes: 64 << 20,
            remote_max_bytes: 4 << 30,
            remote_window_bytes: DEFAULT_WINDOW_BYTES,
            jsonl: JsonlFields::default(),
            parquet: ParquetColumns::default(),
            text_mode: TextMode::File,
            chat: None,
        }
    }
}

/// What one record of an input became.
#[derive(Debug)]
pub enum Outcome {
    /// A document.
    Doc(Document),
    /// A bad record, skipped (or an error, with [`OnError::Fail`]).
    Skip(Skip),
    /// A record that is not a document by design (a WARC `request` or `warcinfo`), by kind.
    Ignored(&'static str),
}

/// A format's record-level parser.
pub trait RecordSource: Send {
    /// The next record, `None` at the end of the input.
    fn next_record(&mut self) -> Option<Result<Outcome>>;
    /// Bytes of the input file consumed so far (for progress and ETA).
    fn input_position(&self) -> u64;
}

/// Counts of what a reader saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadStats {
    /// Documents produced.
    pub documents: u64,
    /// Text + HTML bytes of produced documents.
    pub bytes: u64,
    /// Skipped documents by reason.
    pub skipped: SkipLog,
    /// Records that are not documents (WARC request/warcinfo/...), by kind.
    pub ignored: BTreeMap<String, u64>,
}

impl ReadStats {
    /// Documents read = produced + skipped.
    pub fn read(&self) -> u64 {
        self.documents + self.skipped.total()
    }
    /// Adds another reader's counts (skip samples up to the log's limit).
    pub fn merge(&mut self, o: &ReadStats) {
        self.documents += o.documents;
        self.bytes += o.bytes;
        self.skipped.merge(&o.skipped);
        for (k, v) in &o.ignored {
            *self.ignored.entry(k.clone()).or_default() += v;
        }
    }
}

/// A stream of document record batches (schema: [`crate::document_schema`]) from one file.
pub struct DocumentReader {
    source: String,
    inner: Box<dyn RecordSource>,
    opts: ReadConfig,
    builder: DocBatchBuilder,
    stats: ReadStats,
    done: bool,
    /// Skips since the last [`DocumentReader::take_skips`].
    pending: Vec<crate::Skip>,
}

impl std::fmt::Debug for DocumentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentReader")
            .field("source", &self.source)
            .field("stats", &self.stats)
            .finish()
    }
}

impl DocumentReader {
    /// Opens `path` with the reader for its format.
    pub fn open(path: &Path, opts: &ReadConfig) -> Result<Self> {
        let local = path.to_str().and_then(crate::remote::local_path);
        let path = local.as_deref().unwrap_or(path);
        let format = opts.format.or_else(|| Format::detect(path)).ok_or_else(|| Error::Input {
            path: path.to_path_buf(),
            detail: "unknown input format (expected .warc/.wet/.wat, .jsonl/.json, .parquet or .txt, optionally .gz/.zst); set the format explicitly".into(),
        })?;
        let source = path.display().to_string();
        let inner: Box<dyn RecordSource> = match format {
            Format::Warc => Box::new(crate::warc::WarcSource::open(path, opts)?),
            Format::Jsonl => Box::new(crate::jsonl::JsonlSource::open(path, opts)?),
            Format::Parquet => Box::new(crate::parquet_input::ParquetSource::open(path, opts)?),
            Format::Text => Box::new(crate::text::TextSource::open(path, opts)?),
        };
        Ok(DocumentReader {
            source,
            inner,
            opts: opts.clone(),
            builder: DocBatchBuilder::default(),
            stats: ReadStats::default(),
            done: false,
            pending: Vec::new(),
        })
    }

    /// Every record skipped since the last call, in full (the stats keep counts and the
    /// first few): for a per-document record of what was dropped.
    pub fn take_skips(&mut self) -> Vec<crate::Skip> {
        std::mem::take(&mut self.pending)
    }

    /// What was read so far (complete once the iterator is exhausted).
    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }
    /// Bytes of the input file consumed so far (compressed bytes for compressed inputs).
    pub fn input_position(&self) -> u64 {
        self.inner.input_position()
    }
    /// The input file, as it appears in the `source` column.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl Iterator for DocumentReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.inner.next_record() {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(Outcome::Doc(d))) => {
                    self.stats.documents += 1;
                    self.stats.bytes += d.payload_bytes() as u64;
                    self.builder.push(&self.source, &d);
                    if self.builder.len() >= self.opts.batch_rows
                        || self.builder.bytes() >= self.opts.batch_bytes
                    {
                        return Some(Ok(self.builder.finish()));
                    }
                }
                Some(Ok(Outcome::Skip(s))) => match self.opts.on_error {
                    OnError::Skip => {
                        self.pending.push(s.clone());
                        self.stats.skipped.record(s)
                    }
                    OnError::Fail => {
                        self.done = true;
                        return Some(Err(Error::BadRecord(Box::new(s))));
                    }
                },
                Some(Ok(Outcome::Ignored(kind))) => {
                    *self.stats.ignored.entry(kind.to_string()).or_default() += 1
                }
            }
        }
        (!self.builder.is_empty()).then(|| Ok(self.builder.finish()))
    }
}

/// Counts the bytes read from the underlying file.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Opens the raw bytes of an input: a local file, or a remote object's byte stream.
pub(crate) fn open_raw(path: &Path) -> Result<Box<dyn Read + Send>> {
    if crate::remote::is_remote(path) {
        Ok(Box::new(crate::remote::open_stream(
            &path.to_string_lossy(),
        )?))
    } else {
        Ok(Box::new(File::open(path).map_err(|e| Error::io(path, e))?))
    }
}

/// Opens a possibly compressed line-oriented file (`.gz` = gzip, possibly multi-member; `.zst`),
/// local or remote (streamed), with a counter of the (compressed) bytes consumed.
pub(crate) fn open_decompressed(path: &Path) -> Result<(Box<dyn BufRead + Send>, Arc<AtomicU64>)> {
    let count = Arc::new(AtomicU64::new(0));
    let f = Counting {
        inner: open_raw(path)?,
        count: count.clone(),
    };
    let name = path.to_string_lossy();
    let r: Box<dyn BufRead + Send> = if name.ends_with(".gz") {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(BufReader::new(f)),
        ))
    } else if name.ends_with(".zst") {
        let d = zstd::stream::read::Decoder::new(f).map_err(|e| Error::from_io(path, e))?;
        Box::new(BufReader::with_capacity(1 << 20, d))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    Ok((r, count))
}

/// Whether an I/O error came from a remote read that failed after retries (not bad data).
pub(crate) fn is_remote_failure(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<Error>())
}

/// Reads one `\n`-terminated line into `buf` (cleared first), at most `cap` bytes kept;
/// returns the bytes consumed (0 at end of input) and whether the line was cut at `cap`.
pub(crate) fn read_line_capped(
    r: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<(usize, bool)> {
    buf.clear();
    let mut consumed = 0;
    let mut cut = false;
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok((consumed, cut));
        }
        let (take, found) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let room = cap.saturating_sub(buf.len());
        if room < take {
            cut = true;
        }
        buf.extend_from_slice(&avail[..take.min(room)]);
        r.consume(take);
        consumed += take;
        if found {
            return Ok((consumed, cut));
        }
    }
}

pub(crate) fn display(path: &Path) -> String {
    path.display().to_string()
}

pub(crate) fn path_buf(path: &Path) -> PathBuf {
    path.to_path_buf()
}
