//! Ingest: every input format as one stream of Arrow record batches of documents.
//!
//! Readers ([`DocumentReader`]) exist for WARC/WET/WAT (plain or gzip, parsed here with the
//! quirks of real crawls in mind), JSON lines (`.jsonl`/`.json`/`.ndjson`, plain, `.gz` or
//! `.zst`), Parquet and plain text. All produce the [`document_schema`]. A bad record is either a
//! counted, recorded [`Skip`] or, with [`OnError::Fail`], an error naming the file, the record and
//! its byte offset. Inputs may be `s3://` or `https://` URLs ([`remote`]).
//!
//! ```no_run
//! use tokenmill_ingest::{DocumentReader, ReadConfig};
//! let mut reader = DocumentReader::open("crawl.warc.wet.gz".as_ref(), &ReadConfig::default())?;
//! for batch in &mut reader {
//!     println!("{} documents", batch?.num_rows());
//! }
//! println!("{:?}", reader.stats().skipped.by_reason);
//! # Ok::<(), tokenmill_ingest::Error>(())
//! ```

#![warn(missing_docs)]

pub mod chat;
pub mod error;
pub mod guard;
pub mod http;
mod jsonl;
mod parquet_input;
pub mod reader;
pub mod remote;
pub mod schema;
pub mod skip;
mod text;
pub mod texts;
mod warc;

pub use error::{Error, Result};
pub use reader::{
    DocumentReader, Format, JsonlFields, Outcome, ParquetColumns, ReadConfig, ReadStats,
    RecordSource, TextMode,
};
pub use schema::{DocBatchBuilder, Document, document_schema};
pub use skip::{OnError, Skip, SkipLog, SkipReason};
pub use texts::read_texts;
