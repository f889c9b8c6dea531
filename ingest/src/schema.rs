//! The document schema every reader produces.
//!
//! | column     | type   | meaning |
//! |------------|--------|---------|
//! | `id`       | utf8   | stable id: WARC-Record-ID, the input's id field, or `<file>:<line>` / `<file>:<row>` |
//! | `source`   | utf8   | input file |
//! | `offset`   | uint64 | byte offset of the record in `source` (gzip member offset for `.warc.gz`, offset in the decompressed stream for `.jsonl.gz`/`.zst`, row number for Parquet) |
//! | `url`      | utf8?  | page URL |
//! | `date`     | utf8?  | crawl or creation date as the input gives it |
//! | `lang`     | utf8?  | language where the input has one |
//! | `text`     | utf8?  | document text |
//! | `html`     | utf8?  | decoded HTML of a WARC response (until extraction runs) |
//! | `metadata` | utf8?  | JSON object of format-specific extras (WARC type, HTTP status, charset, WAT JSON) |

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// The shared document schema.
pub fn document_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("offset", DataType::UInt64, false),
            Field::new("url", DataType::Utf8, true),
            Field::new("date", DataType::Utf8, true),
            Field::new("lang", DataType::Utf8, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("html", DataType::Utf8, true),
            Field::new("metadata", DataType::Utf8, true),
        ]))
    })
    .clone()
}

/// One document as a reader produces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// Stable id (the `id` column).
    pub id: String,
    /// Byte offset of the record in its source (the `offset` column).
    pub offset: u64,
    /// Page URL.
    pub url: Option<String>,
    /// Crawl or creation date, as the input gives it.
    pub date: Option<String>,
    /// Language, where the input has one.
    pub lang: Option<String>,
    /// Document text.
    pub text: Option<String>,
    /// Decoded HTML of a WARC response.
    pub html: Option<String>,
    /// JSON object of format-specific extras.
    pub metadata: Option<String>,
}

impl Document {
    /// Bytes of text and HTML (for batch sizing and throughput figures).
    pub fn payload_bytes(&self) -> usize {
        self.text.as_ref().map_or(0, String::len) + self.html.as_ref().map_or(0, String::len)
    }
}

/// Accumulates documents of one source into a record batch.
#[derive(Debug, Default)]
pub struct DocBatchBuilder {
    id: StringBuilder,
    source: StringBuilder,
    offset: UInt64Builder,
    url: StringBuilder,
    date: StringBuilder,
    lang: StringBuilder,
    text: StringBuilder,
    html: StringBuilder,
    metadata: StringBuilder,
    rows: usize,
    bytes: usize,
}

impl DocBatchBuilder {
    /// Appends document `d` read from `source`.
    pub fn push(&mut self, source: &str, d: &Document) {
        self.id.append_value(&d.id);
        self.source.append_value(source);
        self.offset.append_value(d.offset);
        self.url.append_option(d.url.as_deref());
        self.date.append_option(d.date.as_deref());
        self.lang.append_option(d.lang.as_deref());
        self.text.append_option(d.text.as_deref());
        self.html.append_option(d.html.as_deref());
        self.metadata.append_option(d.metadata.as_deref());
        self.rows += 1;
        self.bytes += d.payload_bytes();
    }
    /// Documents buffered.
    pub fn len(&self) -> usize {
        self.rows
    }
    /// Whether no document is buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
    /// Payload bytes buffered.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.date.finish()),
            Arc::new(self.lang.finish()),
            Arc::new(self.text.finish()),
            Arc::new(self.html.finish()),
            Arc::new(self.metadata.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(document_schema(), cols).expect("columns match the document schema")
    }
}
