//! Token shards: the on-disk format tokenmill datasets are made of.
//!
//! A dataset directory holds, per shard, a Megatron-LM indexed dataset (`<name>.bin` of raw
//! little-endian token ids and `<name>.idx` in the `MMIDIDX` v1 format) plus a Parquet
//! provenance table (`<name>.prov.parquet`, one row per document), and a `manifest.json`
//! written last. Readers memory-map shards and validate every index before use.
//!
//! The crate also holds the tokenizer stage ([`tokenizer`]), since a shard is defined by the
//! tokenizer that produced it, and [`bpe`] training for users without a tokenizer.

#![warn(missing_docs)]

pub mod bpe;
pub mod checksum;
pub mod dtype;
pub mod error;
pub mod fastbpe;
pub mod guard;
pub mod idx;
pub mod loader;
pub mod lock;
pub mod manifest;
pub mod mask;
pub mod provenance;
pub mod reader;
pub mod teacher;
pub mod tokenizer;
pub mod verify;
pub mod writer;

pub use dtype::TokenDtype;
pub use error::{Error, Result};
pub use manifest::{MANIFEST_FILE, Manifest, ShardEntry, TokenizerIdentity};
pub use provenance::DocProvenance;
pub use reader::{Dataset, Shard};
pub use tokenizer::{TextTokenizer, TokenizeConfig, TokenizerEngine};
pub use verify::{VerifyReport, verify};
pub use writer::{DocSource, ShardWriter, atomic_write};
