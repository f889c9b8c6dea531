//! Documents a build dropped after reading, one Parquet file per task in `DATASET/excluded/`:
//! id, source file, byte offset, URL, the stage and rule that dropped it, the measured value
//! and the threshold, and (with `[output] keep_excluded_text`) the text. `tokenmill sql
//! DATASET` reads them as the table `excluded`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, RecordBatch, StringBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::stages::{Dropped, RowMeta};

/// The table's schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new("url", DataType::Utf8, true),
        Field::new("stage", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
        Field::new("threshold", DataType::Float64, true),
        Field::new("text", DataType::Utf8, true),
    ]))
}

/// The file of task `task`.
pub fn path(out: &Path, task: usize) -> PathBuf {
    out.join("excluded").join(format!("task-{task:06}.parquet"))
}

/// Streams a task's dropped documents into its file (temp file, renamed by [`finish`]).
///
/// [`finish`]: DropWriter::finish
pub struct DropWriter {
    tmp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<File>,
    keep_text: bool,
    cols: Builders,
    rows: usize,
}

impl std::fmt::Debug for DropWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish()
    }
}

#[derive(Default)]
struct Builders {
    id: StringBuilder,
    source: StringBuilder,
    offset: UInt64Builder,
    url: StringBuilder,
    stage: StringBuilder,
    rule: StringBuilder,
    value: Float64Builder,
    threshold: Float64Builder,
    text: StringBuilder,
}

impl DropWriter {
    /// Opens task `task`'s file under `out`.
    pub fn create(out: &Path, task: usize, keep_text: bool) -> Result<Self> {
        let path = path(out, task);
        let dir = path.parent().expect("has a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let tmp = path.with_extension("parquet.tmp");
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_created_by("tokenmill".into())
            .build();
        let writer = ArrowWriter::try_new(file, schema(), Some(props))
            .map_err(|e| Error::parquet(&tmp, e))?;
        Ok(DropWriter {
            tmp,
            path,
            writer,
            keep_text,
            cols: Builders::default(),
            rows: 0,
        })
    }

    /// Records one dropped document (`text`: what its stage judged, kept when asked).
    pub fn push(&mut self, d: &RowMeta<'_>, text: Option<&str>, why: &Dropped) -> Result<()> {
        let c = &mut self.cols;
        c.id.append_value(d.id);
        c.source.append_value(d.source);
        c.offset.append_value(d.offset);
        c.url.append_option(d.url);
        c.stage.append_value(why.stage);
        c.rule.append_value(&why.rule);
        c.value
            .append_option(why.value.is_finite().then_some(why.value));
        c.threshold
            .append_option(why.threshold.is_finite().then_some(why.threshold));
        c.text
            .append_option(if self.keep_text { text } else { None });
        self.rows += 1;
        if self.rows.is_multiple_of(8192) {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Records records the reader skipped (stage `read`, the reason as the rule); the id is the
    /// record's where the reader got that far, else `source:offset`.
    pub fn push_skips(&mut self, skips: Vec<tokenmill_ingest::Skip>) -> Result<()> {
        for k in skips {
            let id =
                k.id.clone()
                    .unwrap_or_else(|| format!("{}:{}", k.source, k.offset));
            let why = Dropped {
                stage: "read",
                rule: k.reason.name().to_string(),
                value: f64::NAN,
                threshold: f64::NAN,
                text: None,
            };
            let meta = RowMeta {
                id: &id,
                source: &k.source,
                offset: k.offset,
                url: k.url.as_deref(),
            };
            self.push(&meta, None, &why)?;
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<()> {
        let c = &mut self.cols;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(c.id.finish()),
            Arc::new(c.source.finish()),
            Arc::new(c.offset.finish()),
            Arc::new(c.url.finish()),
            Arc::new(c.stage.finish()),
            Arc::new(c.rule.finish()),
            Arc::new(c.value.finish()),
            Arc::new(c.threshold.finish()),
            Arc::new(c.text.finish()),
        ];
        let batch = RecordBatch::try_new(schema(), cols)?;
        if batch.num_rows() > 0 {
            self.writer
                .write(&batch)
                .map_err(|e| Error::parquet(&self.tmp, e))?;
        }
        Ok(())
    }

    /// Writes the rest and renames the file into place.
    pub fn finish(mut self) -> Result<usize> {
        self.write_batch()?;
        let file = self
            .writer
            .into_inner()
            .map_err(|e| Error::parquet(&self.tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.rows)
    }
}
