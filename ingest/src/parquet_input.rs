//! Parquet inputs: one document per row, configurable columns.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::error::{Error, Result};
use crate::reader::{Outcome, ParquetColumns, ReadConfig, RecordSource, display, path_buf};
use crate::schema::Document;
use crate::skip::{Skip, SkipReason};

/// Rows of a Parquet file. The `offset` of a row is its row number (the way to re-read it).
pub(crate) struct ParquetSource {
    source: String,
    reader: Option<ParquetRecordBatchReader>,
    cols: ParquetColumns,
    chat: Option<crate::chat::ChatFields>,
    row: u64,
    pending: VecDeque<Outcome>,
    missing: Option<Skip>,
    total_rows: u64,
    file_bytes: u64,
}

/// Runs a step of the Parquet decoder on `path`, a panic on malformed bytes becoming an error
/// naming the file.
fn malformed<R>(path: &Path, f: impl FnOnce() -> R) -> Result<R> {
    crate::guard::decoding(f).map_err(|why| Error::Input {
        path: path_buf(path),
        detail: format!("malformed Parquet file: the decoder failed: {why}"),
    })
}

/// Refuses a dictionary page that claims more values than its bytes can hold, before the
/// decoder sees it: parquet 59 reserves room for the claimed count up front (a 4 KB file whose
/// dictionary page claimed 1.9 × 10⁹ values asked for 7.5 GB; found by fuzzing). Reads the
/// first page (a dictionary page comes first) of the column chunks of the `roots` columns that
/// will be decoded, with the metadata already parsed.
fn check_dictionaries<R: parquet::file::reader::ChunkReader + 'static>(
    path: &Path,
    chunk: std::sync::Arc<R>,
    meta: &parquet::file::metadata::ParquetMetaData,
    roots: &[usize],
) -> Result<()> {
    use parquet::basic::Type as Physical;
    use parquet::column::page::{Page, PageReader};
    use parquet::file::serialized_reader::SerializedPageReader;
    let pq = |source| Error::Parquet {
        path: path_buf(path),
        source,
    };
    let descr = meta.file_metadata().schema_descr();
    for (rg, g) in meta.row_groups().iter().enumerate() {
        for c in (0..g.num_columns()).filter(|&c| roots.contains(&descr.get_column_root_idx(c))) {
            let col = g.column(c);
            // Bits a value takes at least in a plain-encoded dictionary.
            let min_bits: u64 = match col.column_type() {
                Physical::BOOLEAN => 1,
                Physical::INT32 | Physical::FLOAT | Physical::BYTE_ARRAY => 32,
                Physical::INT64 | Physical::DOUBLE => 64,
                Physical::INT96 => 96,
                Physical::FIXED_LEN_BYTE_ARRAY => {
                    8 * col.column_descr().type_length().max(1) as u64
                }
            };
            let rows = g.num_rows().max(0) as usize;
            let mut pages =
                SerializedPageReader::new(chunk.clone(), col, rows, None).map_err(pq)?;
            if let Some(Page::DictionaryPage {
                buf, num_values, ..
            }) = pages.get_next_page().map_err(pq)?
                && u64::from(num_values) * min_bits > 8 * buf.len() as u64
            {
                return Err(Error::Input {
                    path: path_buf(path),
                    detail: format!(
                        "malformed Parquet file: row group {rg}, column `{}`: its dictionary page claims {num_values} values in {} bytes",
                        col.column_path().string(),
                        buf.len()
                    ),
                });
            }
        }
    }
    Ok(())
}

impl ParquetSource {
    pub(crate) fn open(path: &Path, opts: &ReadConfig) -> Result<Self> {
        let pq = |source| Error::Parquet {
            path: path_buf(path),
            source,
        };
        if crate::remote::is_remote(path) {
            // Fetched whole (Parquet's footer is at the end), up to `remote_max_bytes`.
            let bytes = crate::remote::fetch(&path.to_string_lossy(), opts.remote_max_bytes)?;
            let file_bytes = bytes.len() as u64;
            let bytes = bytes::Bytes::from(bytes);
            let builder = malformed(path, || {
                ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            })?
            .map_err(pq)?;
            return Self::from_builder(path, opts, builder, bytes, file_bytes);
        }
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let check = file.try_clone().map_err(|e| Error::io(path, e))?;
        let builder =
            malformed(path, || ParquetRecordBatchReaderBuilder::try_new(file))?.map_err(pq)?;
        let file_bytes = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        Self::from_builder(path, opts, builder, check, file_bytes)
    }

    /// `chunk`: the same bytes as the builder's, for [`check_dictionaries`].
    fn from_builder<T: parquet::file::reader::ChunkReader + 'static>(
        path: &Path,
        opts: &ReadConfig,
        builder: ParquetRecordBatchReaderBuilder<T>,
        chunk: T,
        file_bytes: u64,
    ) -> Result<Self> {
        let pq = |source| Error::Parquet {
            path: path_buf(path),
            source,
        };
        let schema = builder.schema().clone();
        let total_rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
        let cols = &opts.parquet;
        let mut src = ParquetSource {
            source: display(path),
            reader: None,
            cols: cols.clone(),
            chat: opts.chat.clone(),
            row: 0,
            pending: VecDeque::new(),
            missing: None,
            total_rows,
            file_bytes,
        };
        // Conversations: the record's turns (or Alpaca's instruction) stand for the text.
        let required = match &opts.chat {
            Some(c) => c
                .required_field()
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string(),
            None => cols.text.clone(),
        };
        if schema.field_with_name(&required).is_err() {
            let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
            let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            src.missing = Some(Skip {
                reason: SkipReason::MissingColumn,
                source: src.source.clone(),
                record: 0,
                offset: 0,
                documents: rows,
                detail: format!(
                    "no column `{}` (columns: {}); all {rows} rows skipped",
                    required,
                    names.join(", ")
                ),
                id: None,
                url: None,
            });
            return Ok(src);
        }
        let wanted: Vec<&str> = std::iter::once(cols.text.as_str())
            .chain(
                [&cols.id, &cols.url, &cols.date, &cols.lang]
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            )
            .collect();
        let leaves: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| opts.chat.is_some() || wanted.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        let chunk = std::sync::Arc::new(chunk);
        malformed(path, || {
            check_dictionaries(path, chunk, builder.metadata(), &leaves)
        })??;
        let mask = ProjectionMask::roots(builder.parquet_schema(), leaves);
        src.reader = Some(
            malformed(path, || {
                builder.with_projection(mask).with_batch_size(1024).build()
            })?
            .map_err(pq)?,
        );
        Ok(src)
    }

    fn strings(batch: &RecordBatch, name: Option<&String>) -> Option<StringArray> {
        let col = batch.column_by_name(name?)?;
        let c = cast(col, &DataType::Utf8).ok()?;
        Some(c.as_string::<i32>().clone())
    }

    fn load(&mut self, batch: RecordBatch) {
        if self.chat.is_some() {
            return self.load_conversations(batch);
        }
        let text = Self::strings(&batch, Some(&self.cols.text));
        let id = Self::strings(&batch, self.cols.id.as_ref());
        let url = Self::strings(&batch, self.cols.url.as_ref());
        let date = Self::strings(&batch, self.cols.date.as_ref());
        let lang = Self::strings(&batch, self.cols.lang.as_ref());
        let get = |a: &Option<StringArray>, i: usize| {
            a.as_ref()
                .filter(|a| a.is_valid(i))
                .map(|a| a.value(i).to_string())
        };
        for i in 0..batch.num_rows() {
            let row = self.row;
            self.row += 1;
            let out = match get(&text, i) {
                None => Outcome::Skip(Skip {
                    reason: SkipReason::MissingText,
                    source: self.source.clone(),
                    record: row,
                    offset: row,
                    documents: 1,
                    detail: match &text {
                        None => format!("column `{}` is not a string column", self.cols.text),
                        Some(_) => format!("column `{}` is null", self.cols.text),
                    },
                    id: None,
                    url: None,
                }),
                Some(t) => Outcome::Doc(Document {
                    id: get(&id, i).unwrap_or_else(|| format!("{}:{row}", self.source)),
                    offset: row,
                    url: get(&url, i),
                    date: get(&date, i),
                    lang: get(&lang, i),
                    text: Some(t),
                    html: None,
                    metadata: None,
                }),
            };
            self.pending.push_back(out);
        }
    }
}

impl ParquetSource {
    /// Rows of a batch as conversations: each row as a JSON object (nested lists and structs
    /// included), read like a JSON line.
    fn load_conversations(&mut self, batch: RecordBatch) {
        let chat = self.chat.clone().expect("conversation mode");
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = {
            let mut w = arrow::json::ArrayWriter::new(Vec::new());
            let json = w
                .write(&batch)
                .and_then(|_| w.finish())
                .map(|_| w.into_inner())
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            match json {
                Ok(rows) => rows,
                Err(e) => {
                    let n = batch.num_rows() as u64;
                    self.pending.push_back(Outcome::Skip(Skip {
                        reason: SkipReason::BadConversation,
                        source: self.source.clone(),
                        record: self.row,
                        offset: self.row,
                        documents: n,
                        detail: format!(
                            "rows {}..{} do not convert to JSON: {e}",
                            self.row,
                            self.row + n
                        ),
                        id: None,
                        url: None,
                    }));
                    self.row += n;
                    return;
                }
            }
        };
        for v in rows {
            let row = self.row;
            self.row += 1;
            let v = serde_json::Value::Object(v);
            let id = self
                .cols
                .id
                .as_ref()
                .and_then(|c| match v.get(c) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| format!("{}:{row}", self.source));
            self.pending.push_back(match chat.conversation(&v) {
                Ok(m) => Outcome::Doc(crate::chat::document(id, row, &m)),
                Err(why) => Outcome::Skip(Skip {
                    reason: SkipReason::BadConversation,
                    source: self.source.clone(),
                    record: row,
                    offset: row,
                    documents: 1,
                    detail: format!("conversation `{id}`: {why}"),
                    id: Some(id),
                    url: None,
                }),
            });
        }
    }
}

impl RecordSource for ParquetSource {
    fn input_position(&self) -> u64 {
        match self.total_rows {
            0 => 0,
            n => (self.row as u128 * self.file_bytes as u128 / n as u128) as u64,
        }
    }

    fn next_record(&mut self) -> Option<Result<Outcome>> {
        if let Some(s) = self.missing.take() {
            return Some(Ok(Outcome::Skip(s)));
        }
        loop {
            if let Some(o) = self.pending.pop_front() {
                return Some(Ok(o));
            }
            let reader = self.reader.as_mut()?;
            let next = crate::guard::decoding(|| reader.next()).unwrap_or_else(|why| {
                Some(Err(arrow::error::ArrowError::ParquetError(format!(
                    "malformed data, the Parquet decoder failed: {why}"
                ))))
            });
            match next? {
                Ok(b) => self.load(b),
                Err(e) => {
                    self.reader = None;
                    return Some(Err(Error::Input {
                        path: self.source.clone().into(),
                        detail: format!("row {}: {e}", self.row),
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::ArrayRef;
    use std::sync::Arc;

    /// A real Parquet file (parquet's writer, dictionary-encoded strings, uncompressed) whose
    /// dictionary page header then claims `claim` values instead of its 100.
    fn lying_dictionary(claim: u32) -> Vec<u8> {
        let texts: Vec<String> = (0..300).map(|i| format!("document {}", i % 100)).collect();
        let col: ArrayRef = Arc::new(StringArray::from(texts));
        let batch = RecordBatch::try_from_iter([("text", col)]).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::UNCOMPRESSED)
            .set_dictionary_enabled(true)
            .build();
        let mut out = Vec::new();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        if claim == 100 {
            return out;
        }
        // The page header (Thrift compact): …, field 7 `dictionary_page_header` (0x4C), whose
        // field 1 `num_values` (0x15) is a zigzag varint: 100 → 200 = [0xC8, 0x01].
        let at = out
            .windows(4)
            .position(|w| w == [0x4C, 0x15, 0xC8, 0x01])
            .expect("the dictionary page header");
        let z = claim * 2;
        assert!(z < 1 << 14, "a two-byte varint keeps the file's layout");
        out[at + 2] = (z & 0x7F) as u8 | 0x80;
        out[at + 3] = (z >> 7) as u8;
        out
    }

    #[test]
    fn a_dictionary_page_claiming_more_values_than_its_bytes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let honest = dir.path().join("honest.parquet");
        std::fs::write(&honest, lying_dictionary(100)).unwrap();
        let src = ParquetSource::open(&honest, &ReadConfig::default()).unwrap();
        assert_eq!(src.total_rows, 300);
        // 8,000 values of at least 4 bytes each cannot fit in a page of ~1.4 KB: refused at
        // open, naming the file, the row group and the column, before any decoder reserves by
        // the claim.
        let lying = dir.path().join("lying.parquet");
        std::fs::write(&lying, lying_dictionary(8000)).unwrap();
        let e = ParquetSource::open(&lying, &ReadConfig::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("lying.parquet")
                && e.contains("row group 0, column `text`")
                && e.contains("claims 8000 values"),
            "{e}"
        );
    }
}
