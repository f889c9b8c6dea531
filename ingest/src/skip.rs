//! Skipped records: why, where, and how many.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What to do with a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Count it, record it, and go on.
    #[default]
    Skip,
    /// Stop with an error naming the file, record and offset.
    Fail,
}

/// Why a record was not turned into a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A line that is not a JSON object.
    MalformedJson,
    /// A JSON record without the configured text field (or with a non-string one).
    MissingText,
    /// Bytes that are not valid UTF-8 where UTF-8 is required.
    InvalidUtf8,
    /// A WARC record cut short by the end of the file or of its gzip member.
    TruncatedRecord,
    /// A gzip member that does not decode; reading resumes at the next member.
    CorruptGzip,
    /// A compressed stream (JSONL/text `.gz`/`.zst`) that stops decoding; the rest of the file is lost.
    CorruptCompression,
    /// Bytes that are not a WARC record (bad header, unparsable Content-Length).
    MalformedWarc,
    /// A WARC response whose HTTP message cannot be parsed or decoded.
    MalformedHttp,
    /// A WARC response with a non-2xx HTTP status.
    HttpStatus,
    /// A payload that is not text or HTML (images, PDFs, binaries).
    NonTextPayload,
    /// A record larger than the configured cap.
    TooLarge,
    /// A Parquet file without the configured column: all its rows.
    MissingColumn,
    /// A document with no text to tokenize (empty, or a metadata-only WAT record).
    EmptyText,
    /// A conversation record with an unknown role, an empty turn, or no turns.
    BadConversation,
}

impl SkipReason {
    /// The snake_case name used in `stats.json`.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::MalformedJson => "malformed_json",
            SkipReason::MissingText => "missing_text",
            SkipReason::InvalidUtf8 => "invalid_utf8",
            SkipReason::TruncatedRecord => "truncated_record",
            SkipReason::CorruptGzip => "corrupt_gzip",
            SkipReason::CorruptCompression => "corrupt_compression",
            SkipReason::MalformedWarc => "malformed_warc",
            SkipReason::MalformedHttp => "malformed_http",
            SkipReason::HttpStatus => "http_status",
            SkipReason::NonTextPayload => "non_text_payload",
            SkipReason::TooLarge => "too_large",
            SkipReason::MissingColumn => "missing_column",
            SkipReason::EmptyText => "empty_text",
            SkipReason::BadConversation => "bad_conversation",
        }
    }
}

/// One skipped record: the reason and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    /// Why it was skipped.
    pub reason: SkipReason,
    /// Input file.
    pub source: String,
    /// Record number in the file (1-based line for line formats, 0-based record/row otherwise).
    pub record: u64,
    /// Byte offset of the record (compressed offset of its gzip member for `.warc.gz`).
    pub offset: u64,
    /// How many documents the skip stands for (1, or all rows of a Parquet file).
    pub documents: u64,
    /// What exactly was wrong (the parser's or decoder's message).
    pub detail: String,
    /// The record's id, where the reader got that far (WARC responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The record's URL, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: record {} at byte offset {}: {}: {}",
            self.source,
            self.record,
            self.offset,
            self.reason.name(),
            self.detail
        )
    }
}

/// Counts of skipped documents by reason, and the first few skips in full.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipLog {
    /// Documents skipped, by reason.
    pub by_reason: BTreeMap<SkipReason, u64>,
    /// The first [`SKIP_SAMPLES`] skips in full.
    pub samples: Vec<Skip>,
}

/// How many skips are kept in full per log.
pub const SKIP_SAMPLES: usize = 20;

impl SkipLog {
    /// Records a skip.
    pub fn record(&mut self, skip: Skip) {
        tracing::debug!(%skip, "skipped");
        *self.by_reason.entry(skip.reason).or_default() += skip.documents;
        if self.samples.len() < SKIP_SAMPLES {
            self.samples.push(skip);
        }
    }
    /// Adds another log's counts and samples.
    pub fn merge(&mut self, other: &SkipLog) {
        for (r, n) in &other.by_reason {
            *self.by_reason.entry(*r).or_default() += n;
        }
        for s in &other.samples {
            if self.samples.len() < SKIP_SAMPLES {
                self.samples.push(s.clone());
            }
        }
    }
    /// Documents skipped, all reasons.
    pub fn total(&self) -> u64 {
        self.by_reason.values().sum()
    }
}
