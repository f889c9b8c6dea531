//! The per-shard provenance table (`<shard>.prov.parquet`): one row per document.
//!
//! Columns: `shard` (the shard's name, so tables can be queried together), `index` (document
//! index in the shard), `id`, `source`, `offset` (byte offset of the
//! record in `source`), `url`, `tokens`, `token_start` (first token of the document in the
//! shard), `text_xxh3` (64-bit xxh3 of the document text as tokenized).

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// Where one document of a shard came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DocProvenance {
    /// The shard's name.
    pub shard: String,
    /// Document index in the shard.
    pub index: u64,
    /// The document's id (from the input).
    pub id: String,
    /// The input file.
    pub source: String,
    /// Byte offset of the record in `source`.
    pub offset: u64,
    /// Page URL, if any.
    pub url: Option<String>,
    /// Tokens of the document (EOS included when appended).
    pub tokens: u64,
    /// First token of the document in the shard.
    pub token_start: u64,
    /// xxh3-64 of the document text as tokenized.
    pub text_xxh3: u64,
    /// Language (ISO 639-1 where it has one, else 639-3), when the build identified it (or the
    /// input carried a language).
    #[serde(default)]
    pub lang: Option<String>,
    /// The language identifier's confidence.
    #[serde(default)]
    pub lang_score: Option<f64>,
}

/// The Arrow schema of provenance tables.
pub fn provenance_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("shard", DataType::Utf8, false),
            Field::new("index", DataType::UInt64, false),
            Field::new("id", DataType::Utf8, false),
            Field::new("source", DataType::Utf8, false),
            Field::new("offset", DataType::UInt64, false),
            Field::new("url", DataType::Utf8, true),
            Field::new("tokens", DataType::UInt64, false),
            Field::new("token_start", DataType::UInt64, false),
            Field::new("text_xxh3", DataType::UInt64, false),
            Field::new("lang", DataType::Utf8, true),
            Field::new("lang_score", DataType::Float64, true),
        ]))
    })
    .clone()
}

/// Converts provenance rows to one record batch.
pub fn to_batch(rows: &[DocProvenance]) -> Result<RecordBatch> {
    let mut shard = StringBuilder::new();
    let mut index = UInt64Builder::with_capacity(rows.len());
    let mut id = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut offset = UInt64Builder::with_capacity(rows.len());
    let mut url = StringBuilder::new();
    let mut tokens = UInt64Builder::with_capacity(rows.len());
    let mut start = UInt64Builder::with_capacity(rows.len());
    let mut hash = UInt64Builder::with_capacity(rows.len());
    let mut lang = StringBuilder::new();
    let mut lang_score = arrow::array::Float64Builder::with_capacity(rows.len());
    for r in rows {
        lang.append_option(r.lang.as_deref());
        lang_score.append_option(r.lang_score);
        shard.append_value(&r.shard);
        index.append_value(r.index);
        id.append_value(&r.id);
        source.append_value(&r.source);
        offset.append_value(r.offset);
        url.append_option(r.url.as_deref());
        tokens.append_value(r.tokens);
        start.append_value(r.token_start);
        hash.append_value(r.text_xxh3);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(shard.finish()),
        Arc::new(index.finish()),
        Arc::new(id.finish()),
        Arc::new(source.finish()),
        Arc::new(offset.finish()),
        Arc::new(url.finish()),
        Arc::new(tokens.finish()),
        Arc::new(start.finish()),
        Arc::new(hash.finish()),
        Arc::new(lang.finish()),
        Arc::new(lang_score.finish()),
    ];
    Ok(RecordBatch::try_new(provenance_schema(), cols)?)
}

/// Writes `rows` as a zstd-compressed Parquet file at `path` (the caller renames it into place).
pub fn write_provenance(path: &Path, rows: &[DocProvenance]) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid level"),
        ))
        .set_max_row_group_row_count(Some(64 * 1024))
        .set_created_by("tokenmill".into())
        .build();
    let pq = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let mut w = ArrowWriter::try_new(file, provenance_schema(), Some(props)).map_err(pq)?;
    for chunk in rows.chunks(64 * 1024) {
        w.write(&to_batch(chunk)?).map_err(pq)?;
    }
    let file = w.into_inner().map_err(pq)?;
    file.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Reads a whole provenance table, checking its schema.
pub fn read_provenance(path: &Path) -> Result<Vec<DocProvenance>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let pq = |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    };
    // The Parquet decoder panics on some malformed files (found by fuzzing): a corrupt table.
    let corrupt = |why: String| {
        Error::corrupt(
            path,
            "provenance table",
            format!("malformed Parquet, the decoder failed: {why}"),
        )
    };
    let mut reader = crate::guard::decoding(|| {
        ParquetRecordBatchReaderBuilder::try_new(file).and_then(|b| b.build())
    })
    .map_err(corrupt)?
    .map_err(pq)?;
    let want = provenance_schema();
    let mut rows = Vec::new();
    while let Some(batch) = crate::guard::decoding(|| reader.next()).map_err(corrupt)? {
        let batch = batch?;
        for f in want.fields() {
            if matches!(f.name().as_str(), "lang" | "lang_score") {
                continue; // added later: datasets built before have no such columns
            }
            let ok = batch
                .schema()
                .field_with_name(f.name())
                .map(|g| g.data_type() == f.data_type())
                .unwrap_or(false);
            if !ok {
                return Err(Error::corrupt(
                    path,
                    "provenance table",
                    format!("column `{}` missing or not {}", f.name(), f.data_type()),
                ));
            }
        }
        let u = |name: &str| {
            batch
                .column_by_name(name)
                .expect("checked")
                .as_primitive::<UInt64Type>()
                .clone()
        };
        let s = |name: &str| {
            batch
                .column_by_name(name)
                .expect("checked")
                .as_string::<i32>()
                .clone()
        };
        let (index, offset, tokens, start, hash) = (
            u("index"),
            u("offset"),
            u("tokens"),
            u("token_start"),
            u("text_xxh3"),
        );
        let (shard, id, source, url) = (s("shard"), s("id"), s("source"), s("url"));
        let lang = batch
            .column_by_name("lang")
            .and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok());
        let lang = lang.as_ref().map(|c| c.as_string::<i32>());
        let lang_score = batch
            .column_by_name("lang_score")
            .and_then(|c| arrow::compute::cast(c, &DataType::Float64).ok());
        let lang_score = lang_score
            .as_ref()
            .map(|c| c.as_primitive::<arrow::datatypes::Float64Type>());
        for i in 0..batch.num_rows() {
            rows.push(DocProvenance {
                shard: shard.value(i).to_string(),
                index: index.value(i),
                id: id.value(i).to_string(),
                source: source.value(i).to_string(),
                offset: offset.value(i),
                url: url.is_valid(i).then(|| url.value(i).to_string()),
                tokens: tokens.value(i),
                token_start: start.value(i),
                text_xxh3: hash.value(i),
                lang: lang.and_then(|c| c.is_valid(i).then(|| c.value(i).to_string())),
                lang_score: lang_score.and_then(|c| c.is_valid(i).then(|| c.value(i))),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_round_trips_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.prov.parquet");
        let rows: Vec<_> = (0..5u64)
            .map(|i| DocProvenance {
                shard: "s".into(),
                index: i,
                id: format!("doc-{i}"),
                source: "in.jsonl".into(),
                offset: i * 100,
                url: (i % 2 == 0).then(|| format!("https://example.org/{i}")),
                tokens: i + 1,
                token_start: i * (i + 1) / 2,
                text_xxh3: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                lang: (i % 2 == 1).then(|| "en".to_string()),
                lang_score: (i % 2 == 1).then_some(0.9),
            })
            .collect();
        write_provenance(&p, &rows).unwrap();
        assert_eq!(read_provenance(&p).unwrap(), rows);
    }
}
